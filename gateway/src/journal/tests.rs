use std::collections::VecDeque;
use std::time::Duration;

use proptest::prelude::*;

use super::batch::{AppendResult, Batch};
use super::eviction::Budget;
use super::store::Store;
use super::*;
use crate::config::{Synchronous, WhenFull};

fn options(dir: &tempfile::TempDir, max_size: u64, when_full: WhenFull) -> JournalOptions {
    JournalOptions {
        path: dir.path().join("journal.db"),
        max_size,
        max_age: Duration::from_secs(7 * 24 * 3600),
        when_full,
        synchronous: Synchronous::Normal,
        commit_interval: Duration::ZERO,
        destinations: vec![DestinationRoute::all("cloud")],
    }
}

/// A batch that confirms every event up to `through` for the first destination.
fn confirm(through: i64) -> Batch {
    Batch {
        confirms: vec![Confirm {
            destination: 0,
            lane: Lane::Events,
            through,
        }],
        ..Batch::default()
    }
}

/// Arrival times of test records: recent, so that `max_age` leaves them alone.
static START_MS: std::sync::LazyLock<i64> = std::sync::LazyLock::new(|| {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or(0)
});

fn record(device: &str, n: usize, size: usize) -> Record {
    let mut payload = format!("{device}:{n}:").into_bytes();
    payload.resize(size.max(payload.len()), b'x');
    Record {
        device: device.to_owned(),
        received_at_ms: *START_MS + n as i64,
        payload,
    }
}

fn appends(records: Vec<Record>) -> Batch {
    Batch {
        appends: records,
        ..Batch::default()
    }
}

fn all_rows(path: &std::path::Path) -> Vec<(i64, Vec<u8>)> {
    let conn = rusqlite::Connection::open(path).expect("open");
    let mut statement = conn
        .prepare("SELECT id, payload FROM events ORDER BY id")
        .expect("prepare");
    statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

fn stored_ids(results: &[AppendResult]) -> Vec<i64> {
    results
        .iter()
        .filter_map(|result| match result {
            AppendResult::Stored(id) => Some(*id),
            AppendResult::Refused | AppendResult::Unrouted => None,
        })
        .collect()
}

#[test]
fn appended_rows_survive_reopen_and_confirmed_rows_leave() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut store, report) =
        Store::open(options(&dir, 64 << 20, WhenFull::DropOldest)).expect("open");
    assert_eq!(report.recovered_rows, 0);
    let outcome = store
        .apply(appends((0..10).map(|n| record("a", n, 100)).collect()), 0)
        .expect("apply");
    let ids = stored_ids(&outcome.results);
    assert_eq!(ids, (1..=10).collect::<Vec<_>>());
    let outcome = store.apply(confirm(3), 0).expect("confirm");
    assert_eq!(outcome.released, 3);
    let outcome = store.apply(confirm(2), 0).expect("confirm");
    assert_eq!(outcome.released, 0, "a position never moves back");
    drop(store);

    let (store, report) =
        Store::open(options(&dir, 64 << 20, WhenFull::DropOldest)).expect("reopen");
    assert_eq!(report.recovered_rows, 7);
    assert_eq!(store.rows(), 7);
    let rows = all_rows(&dir.path().join("journal.db"));
    assert_eq!(rows.first().map(|row| row.0), Some(4));
    assert_eq!(
        rows.last().map(|row| row.1.clone()),
        Some(record("a", 9, 100).payload)
    );
}

#[test]
fn ids_keep_growing_after_the_journal_empties() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut store, _) = Store::open(options(&dir, 64 << 20, WhenFull::DropOldest)).expect("open");
    let first = stored_ids(
        &store
            .apply(appends(vec![record("a", 0, 10)]), 0)
            .expect("apply")
            .results,
    );
    store.apply(confirm(first[0]), 0).expect("confirm");
    let second = stored_ids(
        &store
            .apply(appends(vec![record("a", 1, 10)]), 0)
            .expect("apply")
            .results,
    );
    assert!(
        second[0] > first[0],
        "a sink's cursor must never see an id reused"
    );
}

#[test]
fn drop_oldest_evicts_from_the_head_and_stays_within_budget() {
    let dir = tempfile::tempdir().expect("tempdir");
    let max_size = 256 * 1024;
    let (mut store, _) = Store::open(options(&dir, max_size, WhenFull::DropOldest)).expect("open");
    let budget = store.budget();
    let mut evicted = 0;
    for chunk in 0..40 {
        let records = (0..100)
            .map(|n| record("a", chunk * 100 + n, 200))
            .collect();
        let outcome = store.apply(appends(records), 0).expect("apply");
        evicted += outcome
            .dropped
            .iter()
            .filter(|(reason, _)| *reason == DropReason::EvictedOldest)
            .map(|(_, count)| count)
            .sum::<u64>();
        assert!(store.row_bytes() <= budget.rows);
        assert!(
            store.file_bytes() <= max_size,
            "file {} > {max_size}",
            store.file_bytes()
        );
    }
    let rows = all_rows(&dir.path().join("journal.db"));
    assert_eq!(rows.len() as u64 + evicted, 4000);
    assert_eq!(
        rows.last().map(|row| row.0),
        Some(4000),
        "the newest row is kept"
    );
    let ids: Vec<i64> = rows.iter().map(|row| row.0).collect();
    assert!(
        ids.windows(2).all(|pair| pair[1] == pair[0] + 1),
        "survivors are one contiguous tail"
    );
}

#[test]
fn drop_newest_refuses_new_rows_and_keeps_old_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut store, _) =
        Store::open(options(&dir, 256 * 1024, WhenFull::DropNewest)).expect("open");
    let outcome = store
        .apply(appends((0..4000).map(|n| record("a", n, 200)).collect()), 0)
        .expect("apply");
    let stored = stored_ids(&outcome.results);
    assert!(stored.len() < 4000);
    assert_eq!(stored.first(), Some(&1));
    assert_eq!(outcome.results.len(), 4000);
    assert_eq!(
        outcome.dropped,
        vec![(DropReason::RejectedNewest, 4000 - stored.len() as u64)]
    );
    assert!(store.row_bytes() <= store.budget().rows);
}

#[test]
fn block_defers_what_does_not_fit_until_acks_make_room() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut store, _) = Store::open(options(&dir, 256 * 1024, WhenFull::Block)).expect("open");
    let outcome = store
        .apply(appends((0..2000).map(|n| record("a", n, 200)).collect()), 0)
        .expect("apply");
    let stored = stored_ids(&outcome.results);
    assert!(!outcome.deferred.is_empty());
    assert_eq!(stored.len() + outcome.deferred.len(), 2000);
    assert_eq!(
        outcome.deferred[0],
        record("a", stored.len(), 200),
        "deferred rows keep their order"
    );
    assert!(outcome.dropped.is_empty(), "block never drops");
    let acked = Batch {
        appends: outcome.deferred,
        ..confirm(stored[99])
    };
    let outcome = store.apply(acked, 0).expect("apply");
    assert!(
        !stored_ids(&outcome.results).is_empty(),
        "room made by acks is used"
    );
}

#[test]
fn rows_older_than_max_age_expire() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = options(&dir, 64 << 20, WhenFull::DropOldest);
    opts.max_age = Duration::from_secs(60);
    let (mut store, _) = Store::open(opts).expect("open");
    let now = 1_700_000_000_000;
    let records = (0..10)
        .map(|n| Record {
            received_at_ms: now - 120_000 + n as i64 * 20_000,
            ..record("a", n, 10)
        })
        .collect();
    store.apply(appends(records), now).expect("apply");
    let outcome = store
        .apply(
            Batch {
                expire: true,
                ..Batch::default()
            },
            now,
        )
        .expect("expire");
    // arrivals at -120 s, -100 s, -80 s are older than 60 s; -60 s is not
    assert_eq!(outcome.dropped, vec![(DropReason::Expired, 3)]);
    assert_eq!(store.rows(), 7);
}

#[test]
fn dead_letters_are_kept_and_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut store, _) = Store::open(options(&dir, 1 << 20, WhenFull::DropOldest)).expect("open");
    for n in 0..100 {
        let letter = DeadLetter {
            received_at_ms: n,
            source: "mqtt",
            topic: "devices/x/events".into(),
            reason: "invalid_json",
            detail: format!("bad {n}"),
            payload: vec![b'!'; 5000],
        };
        store
            .apply(
                Batch {
                    dead_letters: vec![letter],
                    ..Batch::default()
                },
                0,
            )
            .expect("apply");
    }
    let summary = summarize(&dir.path().join("journal.db"), &[]).expect("summary");
    let kept = Budget::for_max_size(1 << 20).dead_letters / (DeadLetter::MAX_PAYLOAD as u64 + 512);
    assert_eq!(summary.dead_letters, kept.clamp(8, 1000));
}

#[test]
fn summary_counts_rows_per_device() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut store, _) = Store::open(options(&dir, 64 << 20, WhenFull::DropOldest)).expect("open");
    let mut records: Vec<Record> = (0..3).map(|n| record("a", n, 10)).collect();
    records.push(record("b", 9, 10));
    store.apply(appends(records), 0).expect("apply");
    let summary = summarize(&dir.path().join("journal.db"), &[]).expect("summary");
    assert_eq!(summary.rows, 4);
    assert_eq!(
        summary.per_device,
        vec![("a".to_owned(), 3), ("b".to_owned(), 1)]
    );
    assert_eq!(summary.oldest_received_at_ms, Some(*START_MS));
}

fn corrupt_and_reopen(damage: impl FnOnce(&std::path::Path)) {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = options(&dir, 64 << 20, WhenFull::DropOldest);
    {
        let (mut store, _) = Store::open(opts.clone()).expect("open");
        store
            .apply(appends((0..5000).map(|n| record("a", n, 200)).collect()), 0)
            .expect("apply");
        store.checkpoint();
    }
    damage(&opts.path);
    let (mut store, report) = Store::open(opts).expect("a damaged journal never stops the gateway");
    let moved = report
        .moved_aside
        .expect("the damaged journal is moved aside");
    assert!(moved.exists(), "the damaged file is kept for inspection");
    assert_eq!(store.rows(), 0);
    let outcome = store
        .apply(appends(vec![record("a", 1, 10)]), 0)
        .expect("the fresh journal works");
    assert_eq!(stored_ids(&outcome.results).len(), 1);
}

#[test]
fn a_garbage_journal_is_moved_aside() {
    corrupt_and_reopen(|path| {
        std::fs::write(path, vec![0x5a; 64 * 1024]).expect("write garbage");
    });
}

#[test]
fn a_truncated_journal_is_moved_aside() {
    corrupt_and_reopen(|path| {
        let len = std::fs::metadata(path).expect("meta").len();
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .expect("open");
        file.set_len(len / 3).expect("truncate");
    });
}

#[test]
fn a_journal_with_a_scribbled_page_is_moved_aside() {
    corrupt_and_reopen(|path| {
        use std::io::{Seek, SeekFrom, Write};
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .expect("open");
        // page 3 onwards: b-tree pages of the events table
        file.seek(SeekFrom::Start(2 * 4096)).expect("seek");
        file.write_all(&[0xff; 4096 * 4]).expect("scribble");
    });
}

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<usize>),
    /// Confirm everything up to the live row at this position (modulo their count).
    Confirm(usize),
    /// Confirm through a position already passed.
    ConfirmOld,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop::collection::vec(1usize..600, 1..40).prop_map(Op::Append),
        3 => any::<usize>().prop_map(Op::Confirm),
        1 => Just(Op::ConfirmOld),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// The journal behaves like a queue: it holds exactly the appended, unacked rows in order,
    /// except for a head that `drop_oldest` evicted — only when over budget, and counted.
    #[test]
    fn journal_matches_a_queue_model(ops in prop::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = options(&dir, 128 * 1024, WhenFull::DropOldest);
        let (mut store, _) = Store::open(opts.clone()).expect("open");
        let mut model: VecDeque<(i64, Vec<u8>)> = VecDeque::new();
        let mut next = 0usize;
        for op in ops {
            let mut evicted = 0;
            match op {
                Op::Append(sizes) => {
                    let records: Vec<Record> = sizes
                        .iter()
                        .map(|size| {
                            next += 1;
                            record("dev", next, *size)
                        })
                        .collect();
                    let outcome = store.apply(appends(records.clone()), 0).expect("apply");
                    let ids = stored_ids(&outcome.results);
                    prop_assert_eq!(ids.len(), records.len());
                    model.extend(ids.into_iter().zip(records.into_iter().map(|r| r.payload)));
                    evicted = outcome.dropped.iter().map(|(_, count)| count).sum::<u64>();
                }
                Op::Confirm(position) => {
                    if !model.is_empty() {
                        let through = model[position % model.len()].0;
                        let outcome = store.apply(confirm(through), 0).expect("confirm");
                        let before = model.len();
                        model.retain(|(id, _)| *id > through);
                        prop_assert_eq!(outcome.released, (before - model.len()) as u64);
                    }
                }
                Op::ConfirmOld => {
                    let outcome = store.apply(confirm(1), 0).expect("confirm");
                    prop_assert_eq!(outcome.released, u64::from(model.front().is_some_and(|(id, _)| *id == 1)));
                    model.retain(|(id, _)| *id > 1);
                }
                Op::Reopen => {
                    drop(store);
                    let (reopened, report) = Store::open(opts.clone()).expect("reopen");
                    prop_assert_eq!(report.recovered_rows, model.len() as u64);
                    store = reopened;
                }
            }
            let rows = all_rows(&opts.path);
            // The store holds a tail of the model: what is missing is an evicted head.
            prop_assert!(rows.len() <= model.len());
            let head = model.len() - rows.len();
            prop_assert_eq!(head as u64, evicted, "rows vanish only by counted eviction");
            model.drain(..head);
            prop_assert!(rows.iter().eq(model.iter()), "rows, ids and payloads match the model");
            prop_assert_eq!(store.rows(), model.len() as u64);
            prop_assert!(store.row_bytes() <= store.budget().rows);
        }
    }
}

#[tokio::test]
async fn writer_commits_groups_and_acks_in_the_background() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (journal, _) =
        Journal::start(options(&dir, 64 << 20, WhenFull::DropOldest)).expect("start");
    let handle = journal.handle();
    let mut committed = handle.committed(Lane::Events);
    let mut tasks = Vec::new();
    for device in 0..8 {
        let handle = handle.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..250 {
                handle
                    .append(vec![record(&format!("d{device}"), n, 100)])
                    .await
                    .expect("append");
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    let ids = handle
        .append_and_wait(vec![record("last", 0, 10)])
        .await
        .expect("append_and_wait");
    assert_eq!(
        ids,
        vec![Some(2001)],
        "the waited-for record is committed after all before it"
    );
    assert_eq!(*committed.borrow_and_update(), 2001);
    assert!(
        handle.stats().commits() < 2001,
        "group commit: {} commits for 2001 rows",
        handle.stats().commits()
    );
    let reader = JournalReader::open(handle.path()).expect("reader");
    let first = reader.read(Lane::Events, 0, 10).await.expect("read");
    assert_eq!(first.len(), 10);
    handle
        .confirm(Confirm {
            destination: 0,
            lane: Lane::Events,
            through: 2000,
        })
        .expect("confirm");
    journal.close().await;
    let summary = summarize(&dir.path().join("journal.db"), &[]).expect("summary");
    assert_eq!(
        summary.rows, 1,
        "acked rows are deleted before close returns"
    );
    assert_eq!(summary.per_device, vec![("last".to_owned(), 1)]);
}

#[tokio::test]
async fn a_writer_stuck_in_a_commit_misses_heartbeats_and_answers_once_free() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (journal, _) =
        Journal::start(options(&dir, 64 << 20, WhenFull::DropOldest)).expect("start");
    let handle = journal.handle();
    tokio::time::timeout(Duration::from_secs(5), handle.heartbeat())
        .await
        .expect("an idle writer answers")
        .expect("writer running");

    // Another process holds the database's write lock: the writer's next commit waits for it
    // (SQLite's busy timeout), as it would for a storage device that stopped answering.
    let blocker = rusqlite::Connection::open(handle.path()).expect("open");
    blocker.execute_batch("BEGIN EXCLUSIVE").expect("lock");
    let mut committed = handle.committed(Lane::Events);
    handle
        .append(vec![record("a", 0, 10)])
        .await
        .expect("append");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while handle.queued_appends() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the writer never took the append"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The writer may still answer while it gathers its batch, between taking the append and
    // beginning the commit (a slow machine, an emulator, widens that moment); once in the
    // commit it must stop answering.
    let mut unanswered = false;
    for _ in 0..5 {
        if tokio::time::timeout(Duration::from_millis(1500), handle.heartbeat())
            .await
            .is_err()
        {
            unanswered = true;
            break;
        }
    }
    assert!(unanswered, "a writer waiting on a lock must not answer");
    assert!(
        handle.stats().writable(),
        "the stuck commit has not failed yet"
    );

    blocker.execute_batch("ROLLBACK").expect("unlock");
    tokio::time::timeout(Duration::from_secs(5), handle.heartbeat())
        .await
        .expect("a freed writer answers")
        .expect("writer running");
    tokio::time::timeout(Duration::from_secs(5), committed.wait_for(|&id| id == 1))
        .await
        .expect("the held-up record is committed once the lock is gone")
        .expect("writer running");
    assert!(handle.stats().writable());
    journal.close().await;
}

fn alert(n: u64, firing: bool) -> AlertRecord {
    AlertRecord {
        rule: "hot".into(),
        device: format!("d{}", n % 3),
        alert: n,
        firing,
        at_ms: 1,
        payload: format!("alert {n}").into_bytes(),
    }
}

#[test]
fn alerts_come_first_survive_reopen_and_are_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut store, _) = Store::open(options(&dir, 64 << 20, WhenFull::DropOldest)).expect("open");
    store
        .apply(appends((0..3).map(|n| record("a", n, 10)).collect()), 0)
        .expect("events");
    let batch = Batch {
        alerts: vec![alert(1, true), alert(2, true), alert(1, false)],
        ..Batch::default()
    };
    store.apply(batch, 0).expect("alerts");
    drop(store);

    let (mut store, report) =
        Store::open(options(&dir, 64 << 20, WhenFull::DropOldest)).expect("reopen");
    assert_eq!(report.last_alert, 2);
    assert_eq!(
        report.firing_alerts,
        [FiringAlert {
            rule: "hot".into(),
            device: "d2".into(),
            alert: 2
        }],
        "alert 1 resolved, alert 2 still firing"
    );
    let conn = rusqlite::Connection::open(dir.path().join("journal.db")).expect("open");
    let alerts = super::read::read_lane(&conn, Lane::Alerts, 0, 10).expect("alerts");
    assert_eq!(
        alerts
            .iter()
            .map(|row| row.payload.clone())
            .collect::<Vec<_>>(),
        [
            b"alert 1".to_vec(),
            b"alert 2".to_vec(),
            b"alert 1".to_vec()
        ],
        "the priority lane, in the order raised"
    );
    assert_eq!(
        alerts.iter().map(|row| row.id).collect::<Vec<_>>(),
        [1, 2, 3],
        "alerts have a lane, and ids, of their own"
    );
    let events = super::read::read_lane(&conn, Lane::Events, 0, 10).expect("events");
    assert_eq!(events.len(), 3, "events are read apart from alerts");

    // A flapping rule cannot fill the journal: the oldest alerts give way, counted.
    let batch = Batch {
        alerts: (3..3 + super::store::MAX_ALERT_ROWS as u64)
            .map(|n| alert(n, n % 2 == 0))
            .collect(),
        ..Batch::default()
    };
    let outcome = store.apply(batch, 0).expect("many alerts");
    assert_eq!(outcome.dropped, [(DropReason::EvictedOldest, 3)]);
    let held = super::read::read_lane(&conn, Lane::Alerts, 0, 20_000).expect("alerts");
    assert_eq!(held.len() as i64, super::store::MAX_ALERT_ROWS);
    assert_eq!(held[0].payload, b"alert 3".to_vec());
}

fn two_destinations(dir: &tempfile::TempDir, max_size: u64) -> JournalOptions {
    JournalOptions {
        destinations: vec![DestinationRoute::all("cloud"), DestinationRoute::all("bus")],
        ..options(dir, max_size, WhenFull::DropOldest)
    }
}

fn confirm_for(destination: usize, lane: Lane, through: i64) -> Batch {
    Batch {
        confirms: vec![Confirm {
            destination,
            lane,
            through,
        }],
        ..Batch::default()
    }
}

#[test]
fn a_row_leaves_once_every_destination_confirmed_it_and_positions_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = two_destinations(&dir, 64 << 20);
    let (mut store, _) = Store::open(opts.clone()).expect("open");
    store
        .apply(appends((0..10).map(|n| record("a", n, 50)).collect()), 0)
        .expect("append");
    let outcome = store
        .apply(confirm_for(0, Lane::Events, 8), 0)
        .expect("confirm");
    assert_eq!(outcome.released, 0, "bus has confirmed nothing");
    assert_eq!(store.backlog(0, Lane::Events), 2);
    assert_eq!(store.backlog(1, Lane::Events), 10);
    let outcome = store
        .apply(confirm_for(1, Lane::Events, 5), 0)
        .expect("confirm");
    assert_eq!(outcome.released, 5, "rows both have confirmed leave");
    drop(store);

    let (store, report) = Store::open(opts).expect("reopen");
    assert_eq!(report.positions, vec![[0, 8], [0, 5]]);
    assert_eq!(store.rows(), 5);
    assert_eq!(store.backlog(0, Lane::Events), 2);
    assert_eq!(store.backlog(1, Lane::Events), 5);
    drop(store);

    // A destination no longer configured is forgotten: nothing is held for it any more.
    let (mut store, report) =
        Store::open(options(&dir, 64 << 20, WhenFull::DropOldest)).expect("reopen");
    assert_eq!(report.forgotten_destinations, vec!["bus".to_owned()]);
    assert_eq!(report.positions, vec![[0, 8]]);
    let outcome = store.apply(confirm(10), 0).expect("confirm");
    assert_eq!(outcome.released, 5);
    assert_eq!(store.rows(), 0);
}

#[test]
fn eviction_is_counted_for_each_destination_that_had_not_confirmed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut store, _) = Store::open(two_destinations(&dir, 128 * 1024)).expect("open");
    let first = stored_ids(
        &store
            .apply(appends((0..40).map(|n| record("a", n, 500)).collect()), 0)
            .expect("append")
            .results,
    );
    // cloud has everything so far, bus nothing: the rows stay for bus.
    store
        .apply(
            confirm_for(0, Lane::Events, *first.last().expect("rows")),
            0,
        )
        .expect("confirm");
    let mut dropped_total = 0;
    let mut dropped_for = [0u64; 2];
    for round in 1..10 {
        let outcome = store
            .apply(
                appends((0..40).map(|n| record("a", round * 100 + n, 500)).collect()),
                0,
            )
            .expect("append");
        dropped_total += outcome.dropped.iter().map(|(_, count)| count).sum::<u64>();
        for (destination, reason, count) in outcome.dropped_for {
            assert_eq!(reason, DropReason::EvictedOldest);
            dropped_for[destination] += count;
        }
    }
    assert!(
        dropped_total > 40,
        "the journal had to evict: {dropped_total}"
    );
    assert_eq!(dropped_for[1], dropped_total, "bus lost every evicted row");
    assert_eq!(
        dropped_for[0],
        dropped_total - 40,
        "cloud had the first 40 and lost only rows after them"
    );
}

#[test]
fn a_journal_of_the_first_release_is_migrated_with_its_backlog() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("journal.db");
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/journal-v1.db");
    std::fs::copy(&fixture, &path).expect("copy the fixture");
    let mut opts = two_destinations(&dir, 64 << 20);
    opts.max_age = Duration::from_secs(100 * 365 * 24 * 3600);
    let (mut store, report) = Store::open(opts.clone()).expect("open");
    assert_eq!(report.migrated_from, Some(1));
    assert_eq!(report.recovered_rows, 113, "110 events and 3 alerts");
    assert_eq!(
        report.positions,
        vec![[0, 10], [0, 10]],
        "every destination gets it all: the events left start at 11"
    );
    assert_eq!(store.backlog(0, Lane::Events), 110);
    assert_eq!(store.backlog(1, Lane::Alerts), 3);
    assert_eq!(report.last_alert, 3);
    assert_eq!(
        report.journal, 0,
        "alerts of the first release keep their ids: the firing one resolves under its own"
    );
    assert!(report.firing_alerts.iter().any(|alert| alert.alert == 3));
    let conn = rusqlite::Connection::open(&path).expect("open");
    let alerts = super::read::read_lane(&conn, Lane::Alerts, 0, 10).expect("alerts");
    assert_eq!(alerts.len(), 3);
    for (n, alert) in alerts.iter().enumerate() {
        let text = String::from_utf8_lossy(&alert.payload);
        assert!(text.contains(&format!("gw-v1:alert:{}", n + 1)), "{text}");
    }
    let events = super::read::read_lane(&conn, Lane::Events, 0, 200).expect("events");
    assert_eq!(events.len(), 110);
    assert_eq!(events.first().map(|event| event.id), Some(11));
    assert_eq!(events.last().map(|event| event.id), Some(120));
    assert!(events.iter().any(|event| event.device == "greenhouse.3"));
    // New rows continue after the old ones, and the schema is current.
    let ids = stored_ids(
        &store
            .apply(appends(vec![record("a", 1, 10)]), 0)
            .expect("append")
            .results,
    );
    assert_eq!(ids, vec![121]);
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .expect("version");
    assert_eq!(version, super::schema::SCHEMA_VERSION);
    drop(store);
    let (_, report) = Store::open(opts).expect("reopen");
    assert_eq!(report.migrated_from, None, "migrated once");
}

#[test]
fn a_journal_from_a_later_release_is_refused_not_damaged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("journal.db");
    rusqlite::Connection::open(&path)
        .and_then(|conn| conn.execute_batch("PRAGMA user_version = 99"))
        .expect("make a future journal");
    let error = Store::open(options(&dir, 64 << 20, WhenFull::DropOldest)).expect_err("refused");
    assert!(error.to_string().contains("schema version 99"), "{error}");
}

#[test]
fn events_no_destination_takes_are_not_stored_but_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = JournalOptions {
        destinations: vec![DestinationRoute {
            devices: crate::rules::DevicePattern::new("a-*"),
            ..DestinationRoute::all("cloud")
        }],
        ..options(&dir, 64 << 20, WhenFull::DropOldest)
    };
    let (mut store, _) = Store::open(opts).expect("open");
    let outcome = store
        .apply(
            appends(vec![
                record("a-1", 0, 10),
                record("b-1", 0, 10),
                record("a-2", 0, 10),
            ]),
            0,
        )
        .expect("append");
    assert_eq!(
        outcome.results,
        [
            AppendResult::Stored(1),
            AppendResult::Unrouted,
            AppendResult::Stored(2)
        ]
    );
    assert_eq!(outcome.dropped, [(DropReason::Unrouted, 1)]);
    assert_eq!(store.rows(), 2);
}

/// Whatever the writer did (appends, confirmations, eviction under `drop_oldest`), a read the
/// tail answers returns exactly what the same read of the database returns.
#[tokio::test]
async fn the_tail_in_memory_answers_reads_exactly_as_the_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (journal, _) =
        Journal::start(options(&dir, 256 * 1024, WhenFull::DropOldest)).expect("start");
    let handle = journal.handle();
    let reader = JournalReader::open(handle.path()).expect("reader");
    // A fixed pseudo-random sequence: reproducible, and varied enough to cross every boundary.
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move |bound: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % bound
    };
    let mut appended = 0usize;
    let mut confirmed = 0i64;
    let mut answered = 0;
    for round in 0..100 {
        if next(4) == 0 {
            confirmed += next(200) as i64;
            handle
                .confirm(Confirm {
                    destination: 0,
                    lane: Lane::Events,
                    through: confirmed,
                })
                .expect("confirm");
        }
        if round % 10 == 0 {
            handle
                .append_alert(AlertRecord {
                    rule: "hot".to_owned(),
                    device: "a".to_owned(),
                    alert: round,
                    firing: true,
                    at_ms: *START_MS,
                    payload: format!("alert {round}").into_bytes(),
                })
                .await
                .expect("alert");
        }
        let records = (0..1 + next(40))
            .map(|_| {
                appended += 1;
                record(&format!("d{}", next(5)), appended, 10 + next(3000) as usize)
            })
            .collect();
        // Waiting for this commit also waits for the confirmation and alert sent before it.
        handle.append_and_wait(records).await.expect("append");
        let last = *handle.committed(Lane::Events).borrow();
        for lane in Lane::ALL {
            for after in (last - 150).max(0)..=last {
                let limit = 1 + next(64) as usize;
                if let Some(recent) = handle.read_recent(lane, after, limit) {
                    let stored = reader.read(lane, after, limit).await.expect("read");
                    let ids =
                        |rows: &[StoredEvent]| rows.iter().map(|row| row.id).collect::<Vec<_>>();
                    assert!(
                        recent == stored,
                        "{lane:?} after {after}, limit {limit}: memory has {:?}, the database {:?}",
                        ids(&recent),
                        ids(&stored)
                    );
                    answered += 1;
                }
            }
        }
        assert!(
            handle.read_recent(Lane::Events, last - 1, 10).is_some(),
            "the row committed last is in memory"
        );
    }
    assert!(
        handle.stats().dropped(DropReason::EvictedOldest) > 0,
        "the journal evicted rows: the tail had to follow"
    );
    assert!(answered > 5_000, "{answered} reads answered from memory");
    journal.close().await;
}

/// Alert ids carry the journal's number: drawn when a journal is created, kept across reopens,
/// and drawn anew for the journal that replaces one lost, so that ids are never handed out twice.
#[test]
fn a_journal_keeps_its_number_and_a_replacement_draws_a_new_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = options(&dir, 64 << 20, WhenFull::DropOldest);
    let (store, created) = Store::open(opts.clone()).expect("open");
    assert_ne!(created.journal, 0, "a new journal draws its number");
    drop(store);
    let (store, reopened) = Store::open(opts.clone()).expect("reopen");
    assert_eq!(reopened.journal, created.journal, "kept across a restart");
    drop(store);
    std::fs::write(&opts.path, vec![0x5a; 64 * 1024]).expect("write garbage");
    let _ = std::fs::remove_file(super::store::wal_path(&opts.path));
    let (_store, replaced) = Store::open(opts).expect("open the replacement");
    assert!(replaced.moved_aside.is_some());
    assert_ne!(replaced.journal, 0);
    assert_ne!(
        replaced.journal, created.journal,
        "a replacement draws anew"
    );
}

fn windowed(dir: &tempfile::TempDir, commit_interval: Duration) -> JournalOptions {
    JournalOptions {
        commit_interval,
        ..options(dir, 64 << 20, WhenFull::DropOldest)
    }
}

#[tokio::test]
async fn a_commit_window_commits_at_most_once_per_interval_and_acks_only_what_is_on_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let interval = Duration::from_millis(200);
    let (journal, _) = Journal::start(windowed(&dir, interval)).expect("start");
    let handle = journal.handle();
    let before = handle.stats().commits();
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for device in 0..4 {
        let handle = handle.clone();
        let path = handle.path().to_path_buf();
        tasks.push(tokio::spawn(async move {
            for n in 0..5 {
                let ids = handle
                    .append_and_wait(vec![record(&format!("d{device}"), n, 50)])
                    .await
                    .expect("append_and_wait");
                let id = ids[0].expect("stored");
                // Acknowledged means committed: another connection finds the row.
                let reader = rusqlite::Connection::open(&path).expect("open");
                let found: i64 = reader
                    .query_row("SELECT count(*) FROM events WHERE id = ?1", [id], |row| {
                        row.get(0)
                    })
                    .expect("query");
                assert_eq!(found, 1, "row {id} acknowledged before it was committed");
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    let elapsed = started.elapsed();
    let commits = handle.stats().commits() - before;
    // One commit per interval at most, plus the first (nothing to wait for) and the expiry
    // pass that runs each second (a transaction that writes nothing here).
    let most = elapsed.as_millis() / interval.as_millis() + elapsed.as_secs() as u128 + 2;
    assert!(
        u128::from(commits) <= most,
        "{commits} commits in {elapsed:?} with a {interval:?} window (at most {most})"
    );
    assert_eq!(handle.stats().appended(), 20);
    journal.close().await;
}

#[tokio::test]
async fn an_alert_ends_the_commit_window_and_takes_the_waiting_events_with_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A window no test run outlives: the alert's commit can only come from the alert.
    let interval = Duration::from_secs(3600);
    let (journal, _) = Journal::start(windowed(&dir, interval)).expect("start");
    let handle = journal.handle();
    // Nothing was written yet: this one is committed at once, and opens a window.
    let first = handle
        .append_and_wait(vec![record("d", 0, 10)])
        .await
        .expect("append_and_wait");
    let mut events = handle.committed(Lane::Events);
    let mut alerts = handle.committed(Lane::Alerts);
    events.borrow_and_update();
    alerts.borrow_and_update();
    handle
        .append(vec![record("d", 1, 10)])
        .await
        .expect("append");
    handle.append_alert(alert(1, true)).await.expect("alert");
    tokio::time::timeout(Duration::from_secs(60), alerts.changed())
        .await
        .expect("the alert is committed without waiting out the window")
        .expect("writer running");
    assert_eq!(
        *events.borrow_and_update(),
        first[0].expect("stored") + 1,
        "the event that waited went in the alert's commit"
    );
    journal.close().await;
}

/// The events position stored for `destination` in the journal in `dir`, if it has a row.
fn stored_position(dir: &tempfile::TempDir, destination: &str) -> Option<i64> {
    let conn = rusqlite::Connection::open(dir.path().join("journal.db")).expect("open");
    conn.query_row(
        "SELECT confirmed FROM positions WHERE destination = ?1 AND lane = 'events'",
        [destination],
        |row| row.get(0),
    )
    .ok()
}

#[test]
fn with_a_commit_window_positions_are_written_later_and_a_crash_meanwhile_only_sends_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = JournalOptions {
        commit_interval: Duration::from_secs(1),
        ..two_destinations(&dir, 64 << 20)
    };
    let stored = |name: &str| stored_position(&dir, name);
    let (mut store, _) = Store::open(opts.clone()).expect("open");
    assert_eq!(
        (stored("cloud"), stored("bus")),
        (Some(0), Some(0)),
        "each name is known from its first start"
    );
    store
        .apply(appends((0..10).map(|n| record("a", n, 50)).collect()), 0)
        .expect("append");
    store
        .apply(confirm_for(0, Lane::Events, 8), 0)
        .expect("confirm");
    let outcome = store
        .apply(confirm_for(1, Lane::Events, 6), 0)
        .expect("confirm");
    assert_eq!(outcome.released, 6, "the deletes are committed at once");
    assert_eq!(
        (stored("cloud"), stored("bus")),
        (Some(0), Some(0)),
        "the positions are not written with every commit"
    );
    store.save_positions().expect("save");
    assert_eq!(
        (stored("cloud"), stored("bus")),
        (Some(8), Some(0)),
        "only what the deletes do not tell is written: bus has confirmed what is gone"
    );

    // cloud moves again, and the process dies before its position is written.
    store
        .apply(confirm_for(0, Lane::Events, 10), 0)
        .expect("confirm");
    assert_eq!(stored("cloud"), Some(8), "lags: not written yet");
    drop(store);

    let (mut store, report) = Store::open(opts).expect("reopen");
    assert_eq!(
        report.positions,
        vec![[0, 8], [0, 6]],
        "cloud is sent 9 and 10 again; bus starts after the rows that left"
    );
    assert_eq!(store.backlog(0, Lane::Events), 2);
    assert_eq!(store.backlog(1, Lane::Events), 4);
    // New rows get ids past every row and stored position: no destination passes over them.
    let ids = stored_ids(
        &store
            .apply(appends((10..13).map(|n| record("a", n, 50)).collect()), 0)
            .expect("append")
            .results,
    );
    assert!(ids.iter().all(|id| *id > 10), "{ids:?}");
    assert_eq!(store.backlog(0, Lane::Events), 5);
    assert_eq!(store.backlog(1, Lane::Events), 7);
}

#[test]
fn one_destination_never_writes_its_position_and_a_reopen_sends_nothing_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = options(&dir, 64 << 20, WhenFull::DropOldest);
    let stored = || stored_position(&dir, "cloud");
    let (mut store, _) = Store::open(opts.clone()).expect("open");
    for round in 0..3 {
        let ids = stored_ids(
            &store
                .apply(
                    appends((0..10).map(|n| record("a", round * 10 + n, 50)).collect()),
                    0,
                )
                .expect("append")
                .results,
        );
        let last = *ids.last().expect("stored");
        store
            .apply(confirm_for(0, Lane::Events, last - 3), 0)
            .expect("confirm");
    }
    assert_eq!(
        stored(),
        Some(0),
        "the deletes tell where the only destination is: its row is never rewritten"
    );
    assert_eq!(store.backlog(0, Lane::Events), 3);
    drop(store);

    let (store, report) = Store::open(opts).expect("reopen");
    assert_eq!(report.positions, vec![[0, 27]]);
    assert_eq!(store.backlog(0, Lane::Events), 3, "28, 29 and 30, no more");
}

#[test]
fn a_journal_that_cannot_record_a_new_uplink_name_still_opens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut store, _) = Store::open(options(&dir, 64 << 20, WhenFull::DropOldest)).expect("open");
    store
        .apply(appends((0..3).map(|n| record("a", n, 50)).collect()), 0)
        .expect("append");
    drop(store);
    // Every insert into `positions` fails from now on, as on a full disk.
    rusqlite::Connection::open(dir.path().join("journal.db"))
        .and_then(|conn| {
            conn.execute_batch(
                "CREATE TRIGGER refuse BEFORE INSERT ON positions
                 BEGIN SELECT RAISE(ABORT, 'no room'); END",
            )
        })
        .expect("trigger");

    let (store, report) =
        Store::open(two_destinations(&dir, 64 << 20)).expect("opens all the same");
    assert_eq!(report.positions, vec![[0, 0], [0, 0]]);
    assert_eq!(
        store.backlog(1, Lane::Events),
        3,
        "the new uplink gets everything"
    );
    assert_eq!(stored_position(&dir, "bus"), None, "no row for bus");
}

#[tokio::test]
async fn with_a_commit_window_closing_the_journal_writes_the_last_positions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = JournalOptions {
        commit_interval: Duration::from_millis(100),
        ..two_destinations(&dir, 64 << 20)
    };
    let (journal, _) = Journal::start(opts).expect("start");
    let handle = journal.handle();
    let ids = handle
        .append_and_wait((0..5).map(|n| record("d", n, 10)).collect())
        .await
        .expect("append_and_wait");
    let last = ids.iter().flatten().max().copied().expect("stored");
    // cloud has them all, bus nothing: cloud's position is ahead of the deletes.
    handle
        .confirm(Confirm {
            destination: 0,
            lane: Lane::Events,
            through: last,
        })
        .expect("confirm");
    journal.close().await;
    assert_eq!(
        stored_position(&dir, "cloud"),
        Some(last),
        "a position is written"
    );
}

#[tokio::test]
async fn a_confirmation_alone_waits_for_an_append_and_shares_its_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A linger no machine is slow enough to outwait between the confirmation and the append.
    let (journal, _) = Journal::start_lingering(
        options(&dir, 64 << 20, WhenFull::DropOldest),
        Duration::from_secs(3600),
    )
    .expect("start");
    let handle = journal.handle();
    // The expiry pass commits once a second on its own: a round it falls into is tried again.
    // Without the linger no round can take a single commit.
    let mut rounds = Vec::new();
    for n in 0..5 {
        let ids = handle
            .append_and_wait(vec![record("d", n, 10)])
            .await
            .expect("append");
        let id = ids[0].expect("stored");
        let before = handle.stats().commits();
        handle
            .confirm(Confirm {
                destination: 0,
                lane: Lane::Events,
                through: id,
            })
            .expect("confirm");
        // Answered once the writer has taken the confirmation (the channel is in order).
        handle.heartbeat().await.expect("heartbeat");
        handle
            .append_and_wait(vec![record("d", n + 100, 10)])
            .await
            .expect("append");
        rounds.push(handle.stats().commits() - before);
        if rounds.last() == Some(&1) {
            break;
        }
    }
    assert_eq!(
        rounds.last(),
        Some(&1),
        "the confirmation and the next append in one commit: {rounds:?} commits per round"
    );
    journal.close().await;
    let summary = summarize(&dir.path().join("journal.db"), &[]).expect("summary");
    assert_eq!(
        summary.rows, 1,
        "every confirmed row left; the last append stays"
    );
}
