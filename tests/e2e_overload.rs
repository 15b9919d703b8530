//! End to end: when devices outrun the journal, the embedded broker drops events it has already
//! acknowledged. The gateway cannot prevent that (rumqttd acknowledges on receipt), but it must
//! count every one: acknowledged = delivered + counted as dropped, exactly.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn events_the_broker_drops_under_overload_are_counted_exactly() {
    let mut broker = Mosquitto::start();
    let cloud = Subscriber::connect(broker.port);
    broker.pause();
    // A small journal that holds devices back when full: with the cloud down, the source stops
    // reading, and the broker's bounded log (4 × 1 MiB) overflows.
    let gateway = Gateway::start(
        broker.port,
        JournalSettings {
            max_size: "1MiB".into(),
            when_full: "block",
            ..JournalSettings::default()
        },
    );
    let (devices, per_device) = (50usize, 2000u32);
    let acked = publish_events(gateway.device_port, devices, per_device);
    assert_eq!(
        acked,
        u64::from(per_device) * devices as u64,
        "the broker acknowledges everything"
    );
    let dropped_series = "edge_events_dropped_total{reason=\"broker_overflow\"}";
    // The gap shows when the source reads again, once the cloud takes events and the journal
    // has room.
    broker.resume();
    let settled = || {
        let dropped = gateway.metric(dropped_series);
        cloud.inbox.unique() as f64 + dropped == acked as f64
    };
    wait_until(
        "every acknowledged event delivered or counted",
        Duration::from_secs(120),
        settled,
    );
    let dropped = gateway.metric(dropped_series);
    eprintln!(
        "{acked} acknowledged, {} delivered, {dropped} counted as dropped",
        cloud.inbox.unique()
    );
    assert!(dropped > 0.0, "the overload made the broker drop events");
    assert!(
        gateway
            .log()
            .contains("the embedded broker dropped acknowledged events")
    );
    cloud.inbox.check_order_and_duplicates();
    assert_eq!(
        gateway.metric("edge_journal_dropped_total{reason=\"evicted_oldest\"}"),
        0.0,
        "block never evicts"
    );
}
