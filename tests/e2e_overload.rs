//! End to end: when devices publish faster than the journal can take (here: a full journal with
//! `when_full = "block"` while the cloud is down), the gateway holds them back by withholding
//! PUBACKs; it never acknowledges an event it has not committed, and never drops one it has.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn devices_are_held_back_instead_of_losing_acknowledged_events() {
    let mut broker = Mosquitto::start();
    let cloud = Subscriber::connect(broker.port);
    broker.pause();
    let gateway = Gateway::start(
        broker.port,
        JournalSettings {
            max_size: "1MiB".into(),
            when_full: "block",
            ..JournalSettings::default()
        },
    );
    // 20 devices trying 1 000 events/s each, far more than a full journal takes.
    let fleet = Fleet::start(gateway.device_port, 20, Duration::from_millis(1));
    let total = || fleet.acked().iter().sum::<u64>();
    // The journal fills, then acknowledgements stop: the total must hold still across polls.
    let (mut last, mut still) = (0, 0);
    wait_until(
        "acknowledgements to stop with the journal full",
        Duration::from_secs(60),
        || {
            let now = total();
            still = if now == last && now > 0 { still + 1 } else { 0 };
            last = now;
            still >= 10
        },
    );
    let acked = total();
    let appended = gateway.metric("edge_journal_appended_total");
    assert!(
        acked as f64 <= appended,
        "{acked} events acknowledged to devices, only {appended} committed"
    );
    // Held-back devices do not stall the gateway.
    assert_eq!(
        http_get(gateway.admin(), "/healthz").map(|(status, _)| status),
        Some(200)
    );
    assert!(gateway.metric("edge_device_connections") >= 1.0);
    fleet.stop();

    broker.resume();
    let acked_per_device = fleet.acked();
    let delivered_all = || {
        let per_device = cloud.inbox.check_order_and_duplicates();
        acked_per_device.iter().enumerate().all(|(index, &count)| {
            let seqs = per_device
                .get(&format!("dev-{index:03}"))
                .map(Vec::as_slice)
                .unwrap_or_default();
            (0..count).all(|seq| seqs.binary_search(&seq).is_ok())
        })
    };
    wait_until(
        "every acknowledged event to reach the cloud",
        Duration::from_secs(120),
        delivered_all,
    );
    eprintln!(
        "{acked} acknowledged while the journal was full, {appended} committed; {} delivered",
        cloud.inbox.unique()
    );
    for reason in ["evicted_oldest", "rejected_newest", "write_failed"] {
        assert_eq!(
            gateway.metric(&format!(
                "edge_journal_dropped_total{{reason=\"{reason}\"}}"
            )),
            0.0,
            "{reason}"
        );
    }
}
