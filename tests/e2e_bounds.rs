//! End to end: a tiny journal overfilled tenfold during an outage stays within its bound,
//! counts what it drops, keeps ingesting, and delivers the newest events afterwards.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::*;

const MAX_SIZE: u64 = 1024 * 1024;
/// What the journal's files may exceed `max_size` by: none. The budget leaves SQLite's page
/// overhead and the WAL inside the bound (see docs/durability.md).
const SLACK: u64 = 0;

#[test]
fn an_overfilled_journal_stays_bounded_drops_the_oldest_and_delivers_the_newest() {
    let mut broker = Mosquitto::start();
    let cloud = Subscriber::connect(broker.port);
    broker.pause();
    let gateway = Gateway::start(
        broker.port,
        JournalSettings {
            max_size: "1MiB".into(),
            ..JournalSettings::default()
        },
    );
    let journal = gateway.journal_path();

    // Watch the files while they fill.
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let watcher = {
        let (done, peak) = (Arc::clone(&done), Arc::clone(&peak));
        std::thread::spawn(move || {
            let wal = journal.with_file_name("journal.db-wal");
            while !done.load(Ordering::Relaxed) {
                let (db, wal) = (file_size(&journal), file_size(&wal));
                peak.fetch_max(db + wal, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };

    // ~30 000 events of ~250 journal bytes each: about ten times what 1 MiB holds.
    let (devices, per_device) = (50usize, 600u32);
    let total = devices as f64 * f64::from(per_device);
    // Paced, so that the devices' events interleave as they would in the field.
    let sent = publish_events_paced(
        gateway.device_port,
        devices,
        per_device,
        Duration::from_millis(1),
    );
    assert_eq!(sent, total as u64);
    wait_until("every event received", Duration::from_secs(30), || {
        gateway.metric("edge_events_received_total{source=\"mqtt\"}") == total
    });
    wait_until(
        "every event journaled or dropped",
        Duration::from_secs(30),
        || gateway.metric("edge_journal_appended_total") == total,
    );
    done.store(true, Ordering::Relaxed);
    watcher.join().expect("watcher");

    let peak = peak.load(Ordering::Relaxed);
    eprintln!("journal peak on disk: {peak} bytes for max_size {MAX_SIZE}");
    assert!(
        peak <= MAX_SIZE + SLACK,
        "journal files reached {peak} bytes"
    );
    assert!(gateway.metric("edge_journal_bytes") <= (MAX_SIZE + SLACK) as f64);
    let rows = gateway.metric("edge_journal_rows");
    let evicted = gateway.metric("edge_journal_dropped_total{reason=\"evicted_oldest\"}");
    assert!(
        evicted >= total * 0.8,
        "about nine tenths are evicted, {evicted} were"
    );
    assert_eq!(
        rows + evicted,
        total,
        "every event is either kept or counted as dropped"
    );

    broker.resume();
    wait_until(
        "the kept events in the cloud",
        Duration::from_secs(60),
        || cloud.inbox.unique() == rows as usize,
    );
    // drop_oldest keeps the newest events in arrival order: each device that still has events
    // in the journal has its newest ones, without a gap.
    let received = cloud.inbox.check_order_and_duplicates();
    assert!(!received.is_empty());
    for (device, seqs) in received {
        assert_eq!(
            seqs.last(),
            Some(&u64::from(per_device - 1)),
            "{device}: the newest event arrives"
        );
        assert!(
            seqs.windows(2).all(|pair| pair[1] == pair[0] + 1),
            "{device}: what arrives is the newest tail"
        );
    }
}
