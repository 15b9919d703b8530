//! End to end over RabbitMQ: devices → the real `edge-gateway` binary → the machine's RabbitMQ
//! (through a proxy the test can cut or stall) → a queue bound to the exchange; through
//! outages, crashes, a broker that stops answering, and an exchange no queue is bound to.

mod common;

use std::time::Duration;

use common::*;

const DEVICES: usize = 50;
const PER_DEVICE: u32 = 400;
const TOTAL: usize = DEVICES * PER_DEVICE as usize;

/// A gateway sending through `proxy` to RabbitMQ, into an exchange of its own.
fn gateway_through(proxy: &Proxy, exchange: &str, extra: &[(&str, &str)]) -> Gateway {
    let mut uplink = Uplink::amqp(proxy.port, exchange).set("name", "rabbit");
    for (key, value) in extra {
        uplink = uplink.set(key, value);
    }
    Gateway::start_setup(GatewaySetup::with([uplink]))
}

#[test]
fn twenty_thousand_events_from_fifty_devices_reach_a_bound_queue_in_order() {
    let exchange = unique_name("edge");
    let reader = AmqpQueueReader::start(&exchange);
    let proxy = Proxy::start(RABBITMQ_PORT);
    let gateway = gateway_through(&proxy, &exchange, &[]);
    assert_eq!(
        publish_events(gateway.device_port, DEVICES, PER_DEVICE),
        TOTAL as u64
    );
    wait_until("all events in the queue", Duration::from_secs(90), || {
        reader.inbox.unique() == TOTAL
    });
    reader.inbox.assert_complete(DEVICES, PER_DEVICE);
    wait_until("the journal to drain", Duration::from_secs(10), || {
        gateway.metric("edge_journal_rows") == 0.0
    });
    assert!(gateway.metric("edge_uplink_acked_total{uplink=\"rabbit\"}") >= TOTAL as f64);
    assert_eq!(
        reader.inbox.statuses().first().map(String::as_str),
        Some("online")
    );
}

#[test]
fn the_broker_away_while_events_come_in_then_back_gets_all_of_them() {
    let exchange = unique_name("edge");
    let reader = AmqpQueueReader::start(&exchange);
    let proxy = Proxy::start(RABBITMQ_PORT);
    let gateway = gateway_through(&proxy, &exchange, &[]);
    wait_until("the uplink to connect", Duration::from_secs(10), || {
        gateway.metric("edge_uplink_connected") == 1.0
    });
    proxy.cut();
    assert_eq!(
        publish_events(gateway.device_port, DEVICES, PER_DEVICE),
        TOTAL as u64
    );
    wait_until(
        "the connection loss noticed",
        Duration::from_secs(30),
        || gateway.metric("edge_uplink_connected") == 0.0,
    );
    let (status, body) = http_get(gateway.admin(), "/readyz").expect("readyz");
    assert_eq!(status, 503);
    assert!(body.contains("uplink is not connected: rabbit"), "{body}");
    proxy.pass();
    wait_until("all events in the queue", Duration::from_secs(90), || {
        reader.inbox.unique() == TOTAL
    });
    reader.inbox.assert_complete(DEVICES, PER_DEVICE);
}

#[test]
fn kill_9_with_a_backlog_loses_no_acknowledged_event() {
    let exchange = unique_name("edge");
    let reader = AmqpQueueReader::start(&exchange);
    let proxy = Proxy::start(RABBITMQ_PORT);
    let mut gateway = gateway_through(&proxy, &exchange, &[]);
    wait_until("the uplink to connect", Duration::from_secs(10), || {
        gateway.metric("edge_uplink_connected") == 1.0
    });
    proxy.cut();
    assert_eq!(
        publish_events(gateway.device_port, DEVICES, PER_DEVICE),
        TOTAL as u64
    );
    gateway.kill();
    proxy.pass();
    gateway.spawn();
    wait_until("all events in the queue", Duration::from_secs(90), || {
        reader.inbox.unique() == TOTAL
    });
    reader.inbox.assert_complete(DEVICES, PER_DEVICE);
}

#[test]
fn a_stalled_broker_is_left_within_ack_timeout_and_nothing_is_lost() {
    let exchange = unique_name("edge");
    let reader = AmqpQueueReader::start(&exchange);
    let proxy = Proxy::start(RABBITMQ_PORT);
    let gateway = gateway_through(&proxy, &exchange, &[("ack_timeout", "2s")]);
    wait_until("the uplink to connect", Duration::from_secs(10), || {
        gateway.metric("edge_uplink_connected") == 1.0
    });
    proxy.swallow();
    publish_events(gateway.device_port, 10, 100);
    wait_until("the stall to be noticed", Duration::from_secs(30), || {
        gateway.metric("edge_uplink_stalls_total{uplink=\"rabbit\"}") >= 1.0
    });
    let (status, body) = http_get(gateway.admin(), "/readyz").expect("readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("rabbit"), "{body}");
    proxy.pass();
    wait_until("every event in the queue", Duration::from_secs(60), || {
        reader.inbox.unique() == 1000
    });
    reader.inbox.assert_complete(10, 100);
}

#[test]
fn a_message_no_queue_takes_is_retried_never_acknowledged_into_nothing() {
    let exchange = unique_name("edge");
    let proxy = Proxy::start(RABBITMQ_PORT);
    let gateway = gateway_through(&proxy, &exchange, &[]);
    wait_until("the uplink to connect", Duration::from_secs(10), || {
        gateway.metric("edge_uplink_connected") == 1.0
    });
    // Nothing is bound to the exchange yet: every event comes back.
    publish_events(gateway.device_port, 2, 10);
    wait_until("returned messages counted", Duration::from_secs(30), || {
        gateway.metric("edge_uplink_rejected_total{uplink=\"rabbit\",kind=\"retryable\"}") >= 1.0
    });
    assert_eq!(gateway.metric("edge_uplink_acked_total"), 0.0);
    assert_eq!(
        gateway.metric("edge_journal_rows"),
        20.0,
        "what no queue took stays in the journal"
    );
    let reader = AmqpQueueReader::start(&exchange);
    wait_until(
        "every event once a queue is bound",
        Duration::from_secs(60),
        || reader.inbox.unique() == 20,
    );
    reader.inbox.assert_complete(2, 10);
    wait_until("the journal to drain", Duration::from_secs(10), || {
        gateway.metric("edge_journal_rows") == 0.0
    });
}
