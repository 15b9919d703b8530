//! End to end: devices → the real `edge-gateway` binary → a real cloud broker, through outages
//! and crashes.

mod common;

use std::time::Duration;

use common::*;

const DEVICES: usize = 50;
const PER_DEVICE: u32 = 400;
const TOTAL: usize = DEVICES * PER_DEVICE as usize;

fn assert_complete(inbox: &Inbox) {
    let per_device = inbox.check_order_and_duplicates();
    assert_eq!(per_device.len(), DEVICES, "every device arrived");
    for (device, seqs) in per_device {
        assert_eq!(
            seqs,
            (0..u64::from(PER_DEVICE)).collect::<Vec<_>>(),
            "{device} is missing events"
        );
    }
}

/// Stops the cloud broker once the gateway is connected to it, and waits for the gateway to
/// notice.
fn cut_off(gateway: &Gateway, broker: &mut Mosquitto) {
    wait_until("uplink connected", Duration::from_secs(10), || {
        gateway.metric("edge_uplink_connected") == 1.0
    });
    broker.pause();
    wait_until(
        "uplink to notice the outage",
        Duration::from_secs(10),
        || gateway.metric("edge_uplink_connected") == 0.0,
    );
}

/// Sends every event of every device and waits until the journal holds them all.
fn build_backlog(gateway: &Gateway) {
    assert_eq!(
        publish_events(gateway.device_port, DEVICES, PER_DEVICE),
        TOTAL as u64
    );
    wait_until(
        "the journal to hold every event",
        Duration::from_secs(30),
        || gateway.metric("edge_journal_rows") == TOTAL as f64,
    );
}

#[test]
fn twenty_thousand_events_from_fifty_devices_reach_rumqttd_in_order() {
    let cloud = RumqttdCloud::start();
    let gateway = Gateway::start(cloud.port, JournalSettings::default());
    assert_eq!(
        publish_events(gateway.device_port, DEVICES, PER_DEVICE),
        TOTAL as u64
    );
    wait_until("all events in the cloud", Duration::from_secs(60), || {
        cloud.inbox.unique() == TOTAL
    });
    assert_complete(&cloud.inbox);
    wait_until("the journal to drain", Duration::from_secs(10), || {
        gateway.metric("edge_journal_rows") == 0.0
    });
    assert_eq!(
        gateway.metric("edge_events_received_total{source=\"mqtt\"}"),
        TOTAL as f64
    );
}

#[test]
fn twenty_thousand_events_from_fifty_devices_reach_mosquitto_in_order() {
    let broker = Mosquitto::start();
    let cloud = Subscriber::connect(broker.port);
    let gateway = Gateway::start(broker.port, JournalSettings::default());
    wait_until(
        "the gateway's retained online status",
        Duration::from_secs(10),
        || {
            cloud
                .inbox
                .statuses()
                .last()
                .is_some_and(|status| status == "online")
        },
    );
    assert_eq!(
        publish_events(gateway.device_port, DEVICES, PER_DEVICE),
        TOTAL as u64
    );
    wait_until("all events in the cloud", Duration::from_secs(60), || {
        cloud.inbox.unique() == TOTAL
    });
    assert_complete(&cloud.inbox);
    assert!(gateway.metric("edge_uplink_acked_total") >= TOTAL as f64);
    assert!(gateway.metric("edge_uplink_ack_latency_seconds_count") >= TOTAL as f64);
}

#[test]
fn a_cloud_outage_buffers_everything_and_delivers_it_in_order_afterwards() {
    let mut broker = Mosquitto::start();
    let cloud = Subscriber::connect(broker.port);
    let gateway = Gateway::start(broker.port, JournalSettings::default());
    cut_off(&gateway, &mut broker);
    let (status, body) = http_get(gateway.admin(), "/readyz").expect("readyz");
    assert_eq!(status, 503, "not ready while the uplink is down");
    assert!(body.contains("uplink is not connected"), "{body}");
    build_backlog(&gateway);
    assert!(gateway.metric("edge_journal_oldest_age_seconds") >= 0.0);

    broker.resume();
    wait_until("all events in the cloud", Duration::from_secs(60), || {
        cloud.inbox.unique() == TOTAL
    });
    assert_complete(&cloud.inbox);
    wait_until("the journal to drain", Duration::from_secs(10), || {
        gateway.metric("edge_journal_rows") == 0.0
    });
    assert_eq!(
        http_get(gateway.admin(), "/readyz").map(|(status, _)| status),
        Some(200)
    );
}

#[test]
fn kill_9_with_a_backlog_loses_no_committed_event() {
    let mut broker = Mosquitto::start();
    let cloud = Subscriber::connect(broker.port);
    broker.pause();
    let mut gateway = Gateway::start(broker.port, JournalSettings::default());
    assert_eq!(
        publish_events(gateway.device_port, DEVICES, PER_DEVICE),
        TOTAL as u64
    );
    wait_until(
        "the journal to commit every event",
        Duration::from_secs(30),
        || gateway.metric("edge_journal_rows") == TOTAL as f64,
    );

    gateway.kill();
    broker.resume();
    gateway.spawn();
    wait_until("all events in the cloud", Duration::from_secs(60), || {
        cloud.inbox.unique() == TOTAL
    });
    assert_complete(&cloud.inbox);
}

#[test]
fn kill_9_while_forwarding_then_restart_delivers_everything() {
    let broker = Mosquitto::start();
    let cloud = Subscriber::connect(broker.port);
    let mut gateway = Gateway::start(broker.port, JournalSettings::default());
    assert_eq!(
        publish_events(gateway.device_port, DEVICES, PER_DEVICE),
        TOTAL as u64
    );
    wait_until("every event committed", Duration::from_secs(30), || {
        gateway.metric("edge_journal_appended_total") == TOTAL as f64
    });
    // The write load is visible: synced commits reached storage.
    assert!(gateway.metric("edge_journal_commits_total") >= 1.0);
    assert!(
        gateway.metric("edge_storage_written_bytes_total") > 0.0,
        "{}",
        gateway.metrics()
    );
    // Some rows are in flight, some acked, some not yet sent: kill it in the middle.
    gateway.kill();
    gateway.spawn();
    wait_until("all events in the cloud", Duration::from_secs(60), || {
        cloud.inbox.unique() == TOTAL
    });
    assert_complete(&cloud.inbox);
}

#[test]
fn a_broker_that_takes_publishes_and_never_acknowledges_is_left_after_ack_timeout() {
    let broker = Mosquitto::start();
    let cloud = Subscriber::connect(broker.port);
    let proxy = Proxy::start(broker.port);
    let gateway = Gateway::start_with(
        &format!("mqtt://127.0.0.1:{}", proxy.port),
        "ack_timeout = \"2s\"\n",
        "",
        JournalSettings::default(),
    );
    wait_until("the uplink to connect", Duration::from_secs(10), || {
        gateway.metric("edge_uplink_connected") == 1.0
    });
    // The connection stays open, publishes go in, and nothing comes back.
    proxy.swallow();
    assert_eq!(publish_events(gateway.device_port, 5, 51), 255);
    wait_until("the stall to be noticed", Duration::from_secs(30), || {
        gateway.metric("edge_uplink_stalls_total") >= 1.0
    });
    let (status, body) = http_get(gateway.admin(), "/readyz").expect("readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("mqtt"), "readyz names the uplink: {body}");
    assert!(
        gateway.log().contains("uplink stalled"),
        "{}",
        gateway.log()
    );
    proxy.pass();
    wait_until("every event in the cloud", Duration::from_secs(60), || {
        cloud.inbox.unique() == 255
    });
    let per_device = cloud.inbox.check_order_and_duplicates();
    assert!(
        per_device
            .values()
            .all(|seqs| seqs == &(0..51).collect::<Vec<u64>>())
    );
    wait_until("ready again", Duration::from_secs(10), || {
        http_get(gateway.admin(), "/readyz").is_some_and(|(status, _)| status == 200)
    });
}

#[test]
fn with_batches_a_backlog_arrives_in_order_many_events_to_a_publish() {
    let mut broker = Mosquitto::start();
    let cloud = Subscriber::connect(broker.port);
    let gateway =
        Gateway::start_setup(GatewaySetup::with([Uplink::mqtt(broker.port)
            .set_toml("batch", r#"{ max_events = 50, max_delay = "20ms" }"#)]));
    cut_off(&gateway, &mut broker);
    build_backlog(&gateway);
    broker.resume();
    wait_until("all events in the cloud", Duration::from_secs(60), || {
        cloud.inbox.unique() == TOTAL
    });
    assert_complete(&cloud.inbox);
    let batches = cloud.inbox.batches();
    assert!(
        batches.iter().all(|&size| (1..=50).contains(&size)),
        "max_events holds: {batches:?}"
    );
    assert!(
        batches.iter().sum::<usize>() >= TOTAL,
        "every event came in a batch"
    );
    // A backlog fills its batches: 400 publishes would carry 20 000 events if all were full.
    assert!(
        batches.len() <= TOTAL / 10,
        "{} publishes for {TOTAL} events",
        batches.len()
    );
    // One PUBACK confirmed each batch's rows: every row is confirmed and the journal drains.
    wait_until("the journal to drain", Duration::from_secs(10), || {
        gateway.metric("edge_journal_rows") == 0.0
    });
    assert!(gateway.metric("edge_uplink_acked_total") >= TOTAL as f64);
}
