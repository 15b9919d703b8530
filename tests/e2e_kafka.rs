//! End to end over Apache Kafka: devices → the real `edge-gateway` binary → librdkafka's mock
//! cluster (three brokers speaking the real protocol on loopback), read back by a consumer;
//! through every broker going away, a crash, a broker that stops answering, and a record too
//! large for the topic.

mod common;

use std::time::Duration;

use common::*;

const DEVICES: usize = 50;
const PER_DEVICE: u32 = 400;
const TOTAL: usize = DEVICES * PER_DEVICE as usize;
const GATEWAY: &str = "test-gw";

/// A mock cluster with the topics of a gateway sending to it, and that gateway.
fn cluster_and_gateway(extra: &[(&str, &str)]) -> (KafkaCluster, KafkaTopics, Gateway) {
    let cluster = KafkaCluster::start(3);
    let prefix = unique_name("edge");
    let topics = KafkaTopics::named(&prefix);
    cluster.create_topics(&topics, 4);
    let mut uplink = Uplink::kafka(&cluster.bootstrap, &prefix).set("name", "stream");
    for (key, value) in extra {
        uplink = uplink.set(key, value);
    }
    let gateway = Gateway::start_setup(GatewaySetup::with([uplink]));
    (cluster, topics, gateway)
}

#[test]
fn twenty_thousand_events_from_fifty_devices_reach_kafka_in_order_keyed_by_device() {
    let (cluster, topics, gateway) = cluster_and_gateway(&[]);
    let reader = KafkaReader::start(&cluster.bootstrap, &topics, GATEWAY);
    assert_eq!(
        publish_events(gateway.device_port, DEVICES, PER_DEVICE),
        TOTAL as u64
    );
    wait_until("all events in Kafka", Duration::from_secs(120), || {
        reader.inbox.unique() == TOTAL
    });
    reader.inbox.assert_complete(DEVICES, PER_DEVICE);
    assert_eq!(reader.mismatches(), Vec::<String>::new());
    wait_until("the journal to drain", Duration::from_secs(10), || {
        gateway.metric("edge_journal_rows") == 0.0
    });
    assert!(gateway.metric("edge_uplink_acked_total{uplink=\"stream\"}") >= TOTAL as f64);
    wait_until("the status record", Duration::from_secs(10), || {
        reader.inbox.statuses().first().map(String::as_str) == Some("online")
    });
    assert_eq!(
        http_get(gateway.admin(), "/readyz").map(|(status, _)| status),
        Some(200)
    );
}

#[test]
fn every_broker_away_while_events_come_in_then_back_gets_all_of_them() {
    let (cluster, topics, gateway) = cluster_and_gateway(&[]);
    wait_until("the uplink to connect", Duration::from_secs(20), || {
        gateway.metric("edge_uplink_connected{uplink=\"stream\"}") == 1.0
    });
    cluster.all_down();
    assert_eq!(
        publish_events(gateway.device_port, DEVICES, PER_DEVICE),
        TOTAL as u64
    );
    wait_until(
        "the journal to hold what no broker confirmed",
        Duration::from_secs(30),
        || gateway.metric("edge_journal_appended_total") == TOTAL as f64,
    );
    wait_until("readyz to name the uplink", Duration::from_secs(60), || {
        http_get(gateway.admin(), "/readyz")
            .is_some_and(|(status, body)| status == 503 && body.contains("stream"))
    });

    cluster.all_up();
    let reader = KafkaReader::start(&cluster.bootstrap, &topics, GATEWAY);
    wait_until("all events in Kafka", Duration::from_secs(120), || {
        reader.inbox.unique() == TOTAL
    });
    reader.inbox.assert_complete(DEVICES, PER_DEVICE);
    wait_until("the journal to drain", Duration::from_secs(20), || {
        gateway.metric("edge_journal_rows") == 0.0
    });
    wait_until("ready again", Duration::from_secs(20), || {
        http_get(gateway.admin(), "/readyz").is_some_and(|(status, _)| status == 200)
    });
}

#[test]
fn kill_9_with_a_backlog_loses_no_acknowledged_event() {
    let (cluster, topics, mut gateway) = cluster_and_gateway(&[]);
    wait_until("the uplink to connect", Duration::from_secs(20), || {
        gateway.metric("edge_uplink_connected") == 1.0
    });
    cluster.all_down();
    assert_eq!(
        publish_events(gateway.device_port, DEVICES, PER_DEVICE),
        TOTAL as u64
    );
    gateway.kill();
    cluster.all_up();
    gateway.spawn();
    let reader = KafkaReader::start(&cluster.bootstrap, &topics, GATEWAY);
    wait_until("all events in Kafka", Duration::from_secs(120), || {
        reader.inbox.unique() == TOTAL
    });
    reader.inbox.assert_complete(DEVICES, PER_DEVICE);
}

#[test]
fn a_broker_that_stops_answering_is_left_within_ack_timeout_and_nothing_is_lost() {
    let (cluster, topics, gateway) = cluster_and_gateway(&[("ack_timeout", "2s")]);
    let reader = KafkaReader::start(&cluster.bootstrap, &topics, GATEWAY);
    wait_until("the uplink to connect", Duration::from_secs(20), || {
        gateway.metric("edge_uplink_connected") == 1.0
    });
    // The brokers take records and answer only after a minute.
    cluster.slow(Duration::from_secs(60));
    publish_events(gateway.device_port, 10, 100);
    wait_until("the stall to be noticed", Duration::from_secs(30), || {
        gateway.metric("edge_uplink_stalls_total{uplink=\"stream\"}") >= 1.0
    });
    let (status, body) = http_get(gateway.admin(), "/readyz").expect("readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("stream"), "readyz names the uplink: {body}");
    assert!(
        gateway.log().contains("uplink stalled"),
        "the stall is logged:\n{}",
        gateway.log()
    );
    cluster.slow(Duration::ZERO);
    wait_until("every event in Kafka", Duration::from_secs(60), || {
        reader.inbox.unique() == 1000
    });
    let per_device = reader.inbox.check_order_and_duplicates();
    assert!(
        per_device
            .values()
            .all(|seqs| seqs == &(0..100).collect::<Vec<u64>>()),
        "{per_device:?}"
    );
}

#[test]
fn a_record_too_large_for_the_topic_is_dead_lettered_and_the_rest_flows() {
    let (cluster, topics, gateway) = cluster_and_gateway(&[]);
    let gateway = {
        // The same gateway, told the topics' limit.
        drop(gateway);
        let uplink = Uplink::kafka(
            &cluster.bootstrap,
            topics.events.trim_end_matches(".events"),
        )
        .set("name", "stream")
        .set_toml("max_message_bytes", "1000");
        Gateway::start_setup(GatewaySetup::with([uplink]))
    };
    let reader = KafkaReader::start(&cluster.bootstrap, &topics, GATEWAY);
    // 30 readings (the most is 32) with long names: about 1 500 bytes as the uplink writes it.
    let readings: Vec<String> = (0..30)
        .map(|n| format!("\"a_rather_long_reading_name_to_fill_{n:02}\":{n}.5"))
        .collect();
    let event = |seq: u32, readings: &str| {
        (
            "devices/big-dev/events".to_owned(),
            format!(r#"{{"device":"big-dev","boot":1,"seq":{seq},"readings":{{{readings}}}}}"#)
                .into_bytes(),
        )
    };
    publish_raw(
        gateway.device_port,
        &[
            event(0, "\"t\":1.0"),
            event(1, &readings.join(",")),
            event(2, "\"t\":2.0"),
        ],
    );
    wait_until(
        "the events around it in Kafka",
        Duration::from_secs(60),
        || reader.inbox.unique() == 2,
    );
    let seqs: Vec<u64> = reader.inbox.all().iter().map(|event| event.seq).collect();
    assert_eq!(seqs, [0, 2]);
    let refused = "edge_uplink_rejected_total{uplink=\"stream\",kind=\"permanent\"}";
    wait_until("the refusal counted", Duration::from_secs(10), || {
        gateway.metric(refused) >= 1.0
    });
    assert_eq!(
        gateway.metric(refused),
        1.0,
        "refused once, not again:\n{}",
        gateway.metrics()
    );
    wait_until("the journal to drain", Duration::from_secs(10), || {
        gateway.metric("edge_journal_rows") == 0.0
    });
    let inspection = edge_gateway::journal::inspect(&gateway.journal_path(), 100).expect("inspect");
    let letter = inspection
        .dead_letters
        .iter()
        .find(|letter| letter.payload.windows(6).any(|window| window == b"seq\":1"))
        .unwrap_or_else(|| panic!("a dead letter for seq 1: {:#?}", inspection.dead_letters));
    assert!(
        letter.detail.contains("too large") || letter.detail.contains("size"),
        "the dead letter says why: {letter:?}"
    );
}

#[test]
fn a_topic_that_does_not_exist_is_refused_clearly() {
    let cluster = KafkaCluster::start(1);
    let prefix = unique_name("missing");
    let uplink = Uplink::kafka(&cluster.bootstrap, &prefix).set("name", "stream");
    let gateway = Gateway::start_setup(GatewaySetup::with([uplink]));
    wait_until("the refusal in the log", Duration::from_secs(30), || {
        gateway.log().contains("does not exist")
    });
    assert!(
        gateway.log().contains(&format!("{prefix}.events")),
        "the error names the topic:\n{}",
        gateway.log()
    );
    let (status, body) = http_get(gateway.admin(), "/readyz").expect("readyz");
    assert_eq!(status, 503);
    assert!(body.contains("stream"), "{body}");
}
