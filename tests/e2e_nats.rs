//! End to end over NATS JetStream: devices → the real `edge-gateway` binary → a NATS server of
//! the test's own (with JetStream), read back from the stream; through outages, crashes and a
//! broker that stops acknowledging.

mod common;

use std::time::Duration;

use common::*;

const DEVICES: usize = 50;
const PER_DEVICE: u32 = 400;
const TOTAL: usize = DEVICES * PER_DEVICE as usize;

/// A gateway sending to `port` through a stream and prefix of its own.
fn gateway_to(port: u16, extra: &[(&str, &str)]) -> (Gateway, String, String) {
    let stream = unique_name("EDGE").replace('-', "_");
    let prefix = unique_name("edge");
    let mut uplink = Uplink::nats(port, &stream, &prefix).set("name", "bus");
    for (key, value) in extra {
        uplink = uplink.set(key, value);
    }
    let gateway = Gateway::start_setup(GatewaySetup::with([uplink]));
    (gateway, stream, prefix)
}

#[test]
fn twenty_thousand_events_from_fifty_devices_reach_jetstream_in_order() {
    let server = NatsServer::start();
    let (gateway, stream, prefix) = gateway_to(server.port, &[]);
    let reader = NatsStreamReader::start(server.port, &stream, &prefix);
    assert_eq!(
        publish_events(gateway.device_port, DEVICES, PER_DEVICE),
        TOTAL as u64
    );
    wait_until("all events in the stream", Duration::from_secs(90), || {
        reader.inbox.unique() == TOTAL
    });
    reader.inbox.assert_complete(DEVICES, PER_DEVICE);
    wait_until("the journal to drain", Duration::from_secs(10), || {
        gateway.metric("edge_journal_rows") == 0.0
    });
    assert!(gateway.metric("edge_uplink_acked_total{uplink=\"bus\"}") >= TOTAL as f64);
    assert_eq!(
        reader.inbox.statuses().first().map(String::as_str),
        Some("online"),
        "the gateway says it is online on its status subject"
    );
    assert_eq!(
        http_get(gateway.admin(), "/readyz").map(|(status, _)| status),
        Some(200)
    );
}

#[test]
fn the_broker_away_while_events_come_in_then_back_gets_all_of_them() {
    let mut server = NatsServer::start();
    let (gateway, stream, prefix) = gateway_to(server.port, &[]);
    wait_until("the uplink to connect", Duration::from_secs(10), || {
        gateway.metric("edge_uplink_connected{uplink=\"bus\"}") == 1.0
    });
    server.pause();
    assert_eq!(
        publish_events(gateway.device_port, DEVICES, PER_DEVICE),
        TOTAL as u64
    );
    wait_until(
        "the journal to hold what the broker did not confirm",
        Duration::from_secs(30),
        || gateway.metric("edge_journal_appended_total") == TOTAL as f64,
    );
    let (status, body) = http_get(gateway.admin(), "/readyz").expect("readyz");
    assert_eq!(status, 503, "not ready while the broker is away");
    assert!(body.contains("uplink is not connected: bus"), "{body}");

    server.resume();
    let reader = NatsStreamReader::start(server.port, &stream, &prefix);
    wait_until("all events in the stream", Duration::from_secs(90), || {
        reader.inbox.unique() == TOTAL
    });
    reader.inbox.assert_complete(DEVICES, PER_DEVICE);
    wait_until("the journal to drain", Duration::from_secs(10), || {
        gateway.metric("edge_journal_rows") == 0.0
    });
}

#[test]
fn kill_9_with_a_backlog_loses_no_acknowledged_event() {
    let mut server = NatsServer::start();
    let (mut gateway, stream, prefix) = gateway_to(server.port, &[]);
    wait_until("the uplink to connect", Duration::from_secs(10), || {
        gateway.metric("edge_uplink_connected") == 1.0
    });
    server.pause();
    assert_eq!(
        publish_events(gateway.device_port, DEVICES, PER_DEVICE),
        TOTAL as u64
    );
    gateway.kill();
    server.resume();
    gateway.spawn();
    let reader = NatsStreamReader::start(server.port, &stream, &prefix);
    wait_until("all events in the stream", Duration::from_secs(90), || {
        reader.inbox.unique() == TOTAL
    });
    reader.inbox.assert_complete(DEVICES, PER_DEVICE);
}

#[test]
fn a_stalled_broker_is_left_within_ack_timeout_and_nothing_is_lost() {
    let server = NatsServer::start();
    let proxy = Proxy::start(server.port);
    let (gateway, stream, prefix) = gateway_to(proxy.port, &[("ack_timeout", "2s")]);
    let reader = NatsStreamReader::start(server.port, &stream, &prefix);
    wait_until("the uplink to connect", Duration::from_secs(10), || {
        gateway.metric("edge_uplink_connected") == 1.0
    });
    // The broker takes the connection's bytes and never answers: publishes vanish.
    proxy.swallow();
    publish_events(gateway.device_port, 10, 100);
    wait_until("the stall to be noticed", Duration::from_secs(30), || {
        gateway.metric("edge_uplink_stalls_total{uplink=\"bus\"}") >= 1.0
    });
    let (status, body) = http_get(gateway.admin(), "/readyz").expect("readyz");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("bus"),
        "readyz names the uplink that is stalled or not connected: {body}"
    );
    assert!(
        gateway.log().contains("uplink stalled"),
        "the stall is logged:\n{}",
        gateway.log()
    );
    proxy.pass();
    wait_until("every event in the stream", Duration::from_secs(60), || {
        reader.inbox.unique() == 1000
    });
    let per_device = reader.inbox.check_order_and_duplicates();
    assert!(
        per_device
            .values()
            .all(|seqs| seqs == &(0..100).collect::<Vec<u64>>())
    );
    wait_until("ready again", Duration::from_secs(10), || {
        http_get(gateway.admin(), "/readyz").is_some_and(|(status, _)| status == 200)
    });
}

#[test]
fn a_stream_that_does_not_cover_our_subjects_is_refused_clearly() {
    let server = NatsServer::start();
    let stream = unique_name("OTHER").replace('-', "_");
    // Someone else's stream, under the name the gateway is told to use.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let client = async_nats::connect(format!("127.0.0.1:{}", server.port))
            .await
            .expect("connect");
        async_nats::jetstream::new(client)
            .create_stream(async_nats::jetstream::stream::Config {
                name: stream.clone(),
                subjects: vec!["somebody.else.>".into()],
                ..Default::default()
            })
            .await
            .expect("create stream");
    });
    let uplink = Uplink::nats(server.port, &stream, "edge").set("name", "bus");
    let gateway = Gateway::start_setup(GatewaySetup::with([uplink]));
    wait_until("the refusal in the log", Duration::from_secs(20), || {
        gateway.log().contains("do not cover")
    });
    assert!(
        gateway.log().contains("edge.>"),
        "the error says what to add:\n{}",
        gateway.log()
    );
    let (status, body) = http_get(gateway.admin(), "/readyz").expect("readyz");
    assert_eq!(status, 503);
    assert!(body.contains("bus"), "{body}");
}
