//! End to end: a `kill -9` in the middle of steady MQTT ingest loses no event a device was
//! acknowledged for.
//!
//! The gateway sends a QoS 1 PUBACK only after the journal has committed the event, so whatever
//! a device holds a PUBACK for is on disk when the process dies. This test kills the gateway
//! while 20 devices publish about 10 000 events/s, restarts it, and checks that every
//! acknowledged event reaches the cloud.

mod common;

use std::time::{Duration, Instant};

use common::*;

const DEVICES: usize = 20;

#[test]
fn kill_9_during_ingest_loses_no_acknowledged_event() {
    let broker = Mosquitto::start();
    let cloud = Subscriber::connect(broker.port);
    let mut gateway = Gateway::start(broker.port, JournalSettings::default());

    // 20 devices, one event every 2 ms each: about 10 000 events/s.
    let fleet = Fleet::start(gateway.device_port, DEVICES, Duration::from_millis(2));
    let started = Instant::now();
    wait_until("steady ingest", Duration::from_secs(20), || {
        gateway.metric("edge_journal_appended_total") > 5_000.0
    });
    gateway.kill();
    let elapsed = started.elapsed();
    fleet.stop();
    // Let PUBACKs already in the devices' sockets be counted.
    std::thread::sleep(Duration::from_millis(300));
    let acked = fleet.acked();
    let total_acked: u64 = acked.iter().sum();

    gateway.spawn();
    let received = || {
        let per_device = cloud.inbox.check_order_and_duplicates();
        acked
            .iter()
            .enumerate()
            .map(|(index, &count)| {
                let seqs = per_device
                    .get(&format!("dev-{index:03}"))
                    .cloned()
                    .unwrap_or_default();
                seqs.iter().filter(|seq| **seq < count).count() as u64
            })
            .sum::<u64>()
    };
    // Everything committed before the kill arrives; wait until the count stops growing.
    let mut last = 0;
    wait_until(
        "the journal to drain after restart",
        Duration::from_secs(60),
        || {
            let now = received();
            let settled = now == last && gateway.metric("edge_journal_rows") == 0.0;
            last = now;
            settled
        },
    );
    let lost = total_acked - received();
    let rate = total_acked as f64 / elapsed.as_secs_f64();
    eprintln!(
        "kill -9 at {rate:.0} events/s: {total_acked} events acknowledged to devices, {lost} of them lost"
    );
    assert_eq!(lost, 0, "acknowledged events lost to kill -9");
}
