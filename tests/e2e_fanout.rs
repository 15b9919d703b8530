//! End to end with several destinations at once: one gateway feeding Mosquitto, NATS JetStream
//! and RabbitMQ, each with its own delivery position; one of them away, a crash in the middle,
//! routing by lane and by device, and a journal written by the first release.

mod common;

use std::time::Duration;

use common::*;

const DEVICES: usize = 50;
const PER_DEVICE: u32 = 400;
const TOTAL: usize = DEVICES * PER_DEVICE as usize;

/// Three destinations: `cloud` (MQTT), `bus` (NATS), `rabbit` (RabbitMQ), each with a reader.
struct Three {
    mosquitto: Mosquitto,
    subscriber: Subscriber,
    nats: NatsServer,
    stream: String,
    prefix: String,
    exchange: String,
    rabbit: AmqpQueueReader,
}

impl Three {
    fn start() -> Self {
        let mosquitto = Mosquitto::start();
        let subscriber = Subscriber::connect(mosquitto.port);
        let exchange = unique_name("edge");
        Self {
            subscriber,
            mosquitto,
            nats: NatsServer::start(),
            stream: unique_name("EDGE").replace('-', "_"),
            prefix: unique_name("edge"),
            rabbit: AmqpQueueReader::start(&exchange),
            exchange,
        }
    }

    fn uplinks(&self) -> [Uplink; 3] {
        [
            Uplink::mqtt(self.mosquitto.port).set("name", "cloud"),
            Uplink::nats(self.nats.port, &self.stream, &self.prefix).set("name", "bus"),
            Uplink::amqp(RABBITMQ_PORT, &self.exchange).set("name", "rabbit"),
        ]
    }
}

#[test]
fn a_destination_away_does_not_hold_up_the_others_and_gets_everything_back() {
    let mut three = Three::start();
    let gateway = Gateway::start_setup(GatewaySetup::with(three.uplinks()));
    wait_until("every uplink connected", Duration::from_secs(20), || {
        gateway.metric("edge_uplink_connected") == 3.0
    });
    three.nats.pause();
    assert_eq!(
        publish_events(gateway.device_port, DEVICES, PER_DEVICE),
        TOTAL as u64
    );
    wait_until(
        "MQTT and RabbitMQ to get everything meanwhile",
        Duration::from_secs(90),
        || three.subscriber.inbox.unique() == TOTAL && three.rabbit.inbox.unique() == TOTAL,
    );
    three.subscriber.inbox.assert_complete(DEVICES, PER_DEVICE);
    three.rabbit.inbox.assert_complete(DEVICES, PER_DEVICE);
    // The journal holds what NATS has not confirmed, and says whose backlog it is.
    wait_until("the backlog to be NATS's", Duration::from_secs(20), || {
        gateway.metric("edge_uplink_backlog_rows{uplink=\"bus\",lane=\"events\"}") == TOTAL as f64
            && gateway.metric("edge_uplink_backlog_rows{uplink=\"cloud\",lane=\"events\"}") == 0.0
            && gateway.metric("edge_uplink_backlog_rows{uplink=\"rabbit\",lane=\"events\"}") == 0.0
    });
    assert_eq!(gateway.metric("edge_journal_rows"), TOTAL as f64);
    let stats = gateway.journal_command("stats");
    assert!(
        stats.lines().any(|line| line
            .split_whitespace()
            .take(3)
            .eq(["bus", "events", "20000"])),
        "{stats}"
    );

    three.nats.resume();
    let bus = NatsStreamReader::start(three.nats.port, &three.stream, &three.prefix);
    wait_until(
        "NATS to get everything once back",
        Duration::from_secs(90),
        || bus.inbox.unique() == TOTAL,
    );
    bus.inbox.assert_complete(DEVICES, PER_DEVICE);
    wait_until("the journal to drain", Duration::from_secs(20), || {
        gateway.metric("edge_journal_rows") == 0.0
    });
}

#[test]
fn kill_9_in_the_middle_still_gets_every_event_to_every_destination() {
    let three = Three::start();
    let bus = NatsStreamReader::start(three.nats.port, &three.stream, &three.prefix);
    let mut gateway = Gateway::start_setup(GatewaySetup::with(three.uplinks()));
    assert_eq!(
        publish_events(gateway.device_port, DEVICES, PER_DEVICE),
        TOTAL as u64
    );
    wait_until("every event committed", Duration::from_secs(30), || {
        gateway.metric("edge_journal_appended_total") == TOTAL as f64
    });
    gateway.kill();
    gateway.spawn();
    wait_until(
        "every destination to get everything",
        Duration::from_secs(120),
        || {
            three.subscriber.inbox.unique() == TOTAL
                && bus.inbox.unique() == TOTAL
                && three.rabbit.inbox.unique() == TOTAL
        },
    );
    // Duplicates (resent after the crash) carry the same id and content as the original.
    for inbox in [&three.subscriber.inbox, &bus.inbox, &three.rabbit.inbox] {
        inbox.assert_complete(DEVICES, PER_DEVICE);
    }
}

const RULES: &str = r#"
[[rule]]
name = "too hot"
devices = "dev-*"
reading = "temp_c"
above = 35.0
clear_below = 33.0
severity = "critical"
"#;

fn reading(device: &str, seq: u32, temp: f64) -> (String, Vec<u8>) {
    (
        format!("devices/{device}/events"),
        format!(r#"{{"device":"{device}","boot":1,"seq":{seq},"readings":{{"temp_c":{temp}}}}}"#)
            .into_bytes(),
    )
}

#[test]
fn routing_by_lane_and_device_and_alerts_that_fire_and_resolve_everywhere() {
    let three = Three::start();
    let bus = NatsStreamReader::start(three.nats.port, &three.stream, &three.prefix);
    let [cloud, nats, rabbit] = three.uplinks();
    let setup = GatewaySetup {
        extra: RULES.to_owned(),
        ..GatewaySetup::with([
            cloud,
            // NATS takes alerts only; RabbitMQ only dev-a* (events and alerts), and a device
            // id with a dot.
            nats.set_toml("lanes", r#"["alerts", "status"]"#),
            rabbit.set("devices", "dev-a*"),
        ])
    };
    let gateway = Gateway::start_setup(setup);
    publish_raw(
        gateway.device_port,
        &[
            reading("dev-a.1", 0, 20.0),
            reading("dev-a.1", 1, 40.0),
            reading("dev-b", 0, 41.0),
            reading("dev-a.1", 2, 30.0),
            reading("dev-b", 1, 20.0),
        ],
    );
    wait_until(
        "MQTT gets all events and alerts",
        Duration::from_secs(30),
        || three.subscriber.inbox.unique() == 5 && three.subscriber.inbox.alerts().len() == 4,
    );
    wait_until(
        "NATS gets the four alert transitions",
        Duration::from_secs(30),
        || bus.inbox.alerts().len() == 4,
    );
    let states: Vec<(String, String)> = bus
        .inbox
        .alerts()
        .iter()
        .map(|alert| {
            (
                alert.body["device"].as_str().unwrap_or_default().to_owned(),
                alert.body["state"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    for expected in [
        ("dev-a.1", "firing"),
        ("dev-b", "firing"),
        ("dev-a.1", "resolved"),
        ("dev-b", "resolved"),
    ] {
        assert!(
            states.contains(&(expected.0.to_owned(), expected.1.to_owned())),
            "a resolved must not be taken for a repeat of its firing: {states:?}"
        );
    }
    assert_eq!(bus.inbox.unique(), 0, "NATS takes no events");
    wait_until(
        "RabbitMQ gets dev-a.1 only",
        Duration::from_secs(30),
        || three.rabbit.inbox.unique() == 3 && three.rabbit.inbox.alerts().len() == 2,
    );
    assert!(
        three
            .rabbit
            .inbox
            .all()
            .iter()
            .all(|event| event.device == "dev-a.1" && event.topic.contains("/devices/dev-a.1/"))
    );
    wait_until("the journal to drain", Duration::from_secs(20), || {
        gateway.metric("edge_journal_rows") == 0.0
    });
}

#[test]
fn a_journal_of_the_first_release_is_delivered_to_every_destination() {
    let three = Three::start();
    let bus = NatsStreamReader::start(three.nats.port, &three.stream, &three.prefix);
    let mut setup = GatewaySetup::with(three.uplinks());
    // The old journal's events are from 2025: keep them.
    setup.journal.max_age = "3650d".into();
    let mut gateway = Gateway::prepare_with(setup);
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/journal-v1.db");
    std::fs::create_dir_all(gateway.journal_path().parent().expect("data dir")).expect("mkdir");
    std::fs::copy(fixture, gateway.journal_path()).expect("copy the old journal");
    gateway.spawn();
    // 110 events of three devices (one named greenhouse.3) and 3 alerts were waiting; alert 3
    // was firing under a rule this configuration no longer has, so it resolves: a fourth.
    wait_until(
        "the old backlog everywhere",
        Duration::from_secs(60),
        || {
            [&three.subscriber.inbox, &bus.inbox, &three.rabbit.inbox]
                .iter()
                .all(|inbox| inbox.unique() == 110 && inbox.alerts().len() == 4)
        },
    );
    let dotted = bus
        .inbox
        .all()
        .into_iter()
        .filter(|event| event.device == "greenhouse.3")
        .count();
    assert!(
        dotted > 0,
        "a device id with a dot travels as a subject token"
    );
    assert!(
        gateway.log().contains("journal migrated"),
        "{}",
        gateway.log()
    );
    wait_until("the journal to drain", Duration::from_secs(20), || {
        gateway.metric("edge_journal_rows") == 0.0
    });
}
