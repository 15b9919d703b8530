//! End to end to AWS EventBridge: devices → the real `edge-gateway` binary → moto's server (a
//! bus whose rule sends every entry to a CloudWatch Logs group, read back by the test), through
//! an HTTP
//! proxy that can cut the endpoint away, throttle every call, or spoil one device's entries.

mod common;

use std::time::Duration;

use common::*;

const GATEWAY: &str = "test-gw";
const DEVICES: usize = 50;
const PER_DEVICE: u32 = 100;
const TOTAL: usize = DEVICES * PER_DEVICE as usize;

/// moto with a bus and its log group, a proxy in front, a gateway sending through the proxy,
/// and a reader of the log group.
struct Setup {
    moto: Moto,
    proxy: AwsProxy,
    gateway: Gateway,
    reader: LogReader,
}

fn setup() -> Setup {
    let moto = Moto::start();
    let bus = unique_name("edge");
    let group = moto.bus_to_log(&bus);
    let proxy = AwsProxy::start(moto.port);
    let gateway =
        Gateway::with_aws_credentials(GatewaySetup::with([
            Uplink::eventbridge(proxy.port, &bus).set("name", "bus")
        ]));
    let reader = LogReader::start(moto.port, &group, GATEWAY);
    Setup {
        moto,
        proxy,
        gateway,
        reader,
    }
}

#[test]
fn five_thousand_events_reach_the_bus_in_order_in_full_batches() {
    let Setup {
        moto: _moto,
        proxy,
        gateway,
        reader,
    } = setup();
    wait_until("the status entry", Duration::from_secs(30), || {
        reader.inbox.statuses().first().map(String::as_str) == Some("online")
    });
    let calls_before = proxy.put_events_calls();
    assert_eq!(
        publish_events(gateway.device_port, DEVICES, PER_DEVICE),
        TOTAL as u64
    );
    wait_until("every event in the log", Duration::from_secs(120), || {
        reader.inbox.unique() == TOTAL
    });
    reader.inbox.assert_complete(DEVICES, PER_DEVICE);
    wait_until("the journal to drain", Duration::from_secs(20), || {
        gateway.metric("edge_journal_rows") == 0.0
    });
    let envelopes = reader.envelopes.lock().expect("lock").clone();
    assert!(
        envelopes
            .iter()
            .all(|(_, source, _)| source == "edge-gateway"),
        "every entry's source is edge-gateway"
    );
    assert!(
        envelopes
            .iter()
            .filter(|(kind, _, _)| kind == "edge.event")
            .count()
            >= TOTAL
    );
    let calls = proxy.put_events_calls() - calls_before;
    assert!(
        calls * 10 >= TOTAL as u64 && calls <= TOTAL as u64 / 5,
        "{calls} PutEvents calls for {TOTAL} events: at most ten entries a call, and batches \
         mostly full while a backlog waits"
    );
}

#[test]
fn an_entry_the_bus_refuses_is_dead_lettered_while_its_neighbours_arrive() {
    let Setup {
        moto: _moto,
        proxy,
        gateway,
        reader,
    } = setup();
    wait_until("the uplink to connect", Duration::from_secs(30), || {
        gateway.metric("edge_uplink_connected{uplink=\"bus\"}") == 1.0
    });
    proxy.spoil_device("spoiled-dev");
    let event = |device: &str, seq: u32| {
        (
            format!("devices/{device}/events"),
            format!(r#"{{"device":"{device}","boot":1,"seq":{seq},"readings":{{"t":1.5}}}}"#)
                .into_bytes(),
        )
    };
    publish_raw(
        gateway.device_port,
        &[
            event("good-a", 0),
            event("spoiled-dev", 0),
            event("good-b", 0),
            event("good-a", 1),
        ],
    );
    wait_until(
        "the good entries in the log",
        Duration::from_secs(30),
        || reader.inbox.unique() == 3,
    );
    let refused = "edge_uplink_rejected_total{uplink=\"bus\",kind=\"permanent\"}";
    wait_until("the refusal counted", Duration::from_secs(10), || {
        gateway.metric(refused) >= 1.0
    });
    assert_eq!(gateway.metric(refused), 1.0);
    wait_until("the journal to drain", Duration::from_secs(10), || {
        gateway.metric("edge_journal_rows") == 0.0
    });
    let devices: Vec<String> = reader.inbox.all().into_iter().map(|e| e.device).collect();
    assert!(!devices.contains(&"spoiled-dev".to_owned()), "{devices:?}");
    let inspection = edge_gateway::journal::inspect(&gateway.journal_path(), 100).expect("inspect");
    let letter = inspection
        .dead_letters
        .iter()
        .find(|letter| String::from_utf8_lossy(&letter.payload).contains("spoiled-dev"))
        .unwrap_or_else(|| panic!("a dead letter: {:#?}", inspection.dead_letters));
    assert!(
        letter.detail.contains("MalformedDetail"),
        "the dead letter says why: {letter:?}"
    );
}

#[test]
fn an_entry_refused_for_now_is_sent_again_before_the_later_ones_of_its_device() {
    let Setup {
        moto: _moto,
        proxy,
        gateway,
        reader,
    } = setup();
    wait_until("the uplink to connect", Duration::from_secs(30), || {
        gateway.metric("edge_uplink_connected{uplink=\"bus\"}") == 1.0
    });
    proxy.refuse_device_for_now("hot", 3);
    let event = |device: &str, seq: u32| {
        (
            format!("devices/{device}/events"),
            format!(r#"{{"device":"{device}","boot":1,"seq":{seq},"readings":{{"t":1.5}}}}"#)
                .into_bytes(),
        )
    };
    let events: Vec<(String, Vec<u8>)> = (0..30)
        .flat_map(|seq| [event("hot", seq), event("cool", seq)])
        .collect();
    publish_raw(gateway.device_port, &events);
    wait_until("every event on the bus", Duration::from_secs(60), || {
        reader.inbox.unique() == 60
    });
    wait_until("the journal to drain", Duration::from_secs(20), || {
        gateway.metric("edge_journal_rows") == 0.0
    });
    let received = reader.inbox.all();
    let hot: Vec<u64> = received
        .iter()
        .filter(|event| event.device == "hot")
        .map(|event| event.seq)
        .collect();
    assert!(
        hot.len() > 30,
        "the entries of hot put after its refused one were sent again: {hot:?}"
    );
    // The last copy of each event keeps the device's order.
    let mut last: Vec<(usize, u64)> = Vec::new();
    for (position, event) in received.iter().enumerate() {
        if event.device == "hot" {
            last.retain(|(_, seq)| *seq != event.seq);
            last.push((position, event.seq));
        }
    }
    let order: Vec<u64> = last.iter().map(|(_, seq)| *seq).collect();
    assert_eq!(
        order,
        (0..30).collect::<Vec<u64>>(),
        "all received: {hot:?}"
    );
    let cool: Vec<u64> = received
        .iter()
        .filter(|event| event.device == "cool")
        .map(|event| event.seq)
        .collect();
    assert_eq!(
        cool,
        (0..30).collect::<Vec<u64>>(),
        "the other device unaffected"
    );
    assert_eq!(
        gateway.metric("edge_uplink_rejected_total{uplink=\"bus\",kind=\"permanent\"}"),
        0.0,
        "nothing refused for good"
    );
}

#[test]
fn the_endpoint_away_then_back_gets_everything() {
    let Setup {
        moto: _moto,
        proxy,
        gateway,
        reader,
    } = setup();
    wait_until("the uplink to connect", Duration::from_secs(30), || {
        gateway.metric("edge_uplink_connected{uplink=\"bus\"}") == 1.0
    });
    proxy.cut();
    assert_eq!(
        publish_events(gateway.device_port, DEVICES, PER_DEVICE),
        TOTAL as u64
    );
    wait_until("readyz to name the uplink", Duration::from_secs(60), || {
        http_get(gateway.admin(), "/readyz")
            .is_some_and(|(status, body)| status == 503 && body.contains("bus"))
    });
    proxy.pass();
    wait_until("every event in the log", Duration::from_secs(120), || {
        reader.inbox.unique() == TOTAL
    });
    reader.inbox.assert_complete(DEVICES, PER_DEVICE);
    wait_until("the journal to drain", Duration::from_secs(20), || {
        gateway.metric("edge_journal_rows") == 0.0
    });
}

#[test]
fn throttling_backs_off_and_loses_nothing() {
    let Setup {
        moto: _moto,
        proxy,
        gateway,
        reader,
    } = setup();
    wait_until("the uplink to connect", Duration::from_secs(30), || {
        gateway.metric("edge_uplink_connected{uplink=\"bus\"}") == 1.0
    });
    proxy.throttle();
    publish_events(gateway.device_port, 10, 50);
    wait_until("calls throttled", Duration::from_secs(30), || {
        proxy.throttled_calls() >= 3
    });
    assert!(
        gateway.log().contains("backing off"),
        "the throttling is logged:\n{}",
        gateway.log()
    );
    proxy.pass();
    wait_until("every event in the log", Duration::from_secs(60), || {
        reader.inbox.unique() == 500
    });
    reader.inbox.assert_complete(10, 50);
}

#[test]
fn fanned_out_to_mqtt_kafka_and_eventbridge_one_away_holds_up_nothing() {
    const PER_DEVICE: u32 = 40;
    const TOTAL: usize = DEVICES * PER_DEVICE as usize;
    let moto = Moto::start();
    let bus = unique_name("edge");
    let group = moto.bus_to_log(&bus);
    let cluster = KafkaCluster::start(3);
    let prefix = unique_name("edge");
    let topics = KafkaTopics::named(&prefix);
    cluster.create_topics(&topics, 4);
    let mosquitto = Mosquitto::start();
    let subscriber = Subscriber::connect(mosquitto.port);
    let gateway = Gateway::with_aws_credentials(GatewaySetup::with([
        Uplink::mqtt(mosquitto.port).set("name", "cloud"),
        Uplink::kafka(&cluster.bootstrap, &prefix).set("name", "stream"),
        Uplink::eventbridge(moto.port, &bus).set("name", "bus"),
    ]));
    let log = LogReader::start(moto.port, &group, GATEWAY);
    wait_until("every uplink connected", Duration::from_secs(30), || {
        gateway.metric("edge_uplink_connected") == 3.0
    });
    cluster.all_down();
    assert_eq!(
        publish_events(gateway.device_port, DEVICES, PER_DEVICE),
        TOTAL as u64
    );
    wait_until(
        "everything at the MQTT broker",
        Duration::from_secs(90),
        || subscriber.inbox.unique() == TOTAL,
    );
    wait_until("everything on the bus", Duration::from_secs(120), || {
        log.inbox.unique() == TOTAL
    });
    subscriber.inbox.assert_complete(DEVICES, PER_DEVICE);
    log.inbox.assert_complete(DEVICES, PER_DEVICE);
    assert!(
        gateway.metric("edge_journal_rows") >= TOTAL as f64,
        "the journal keeps what Kafka has not confirmed"
    );
    cluster.all_up();
    let reader = KafkaReader::start(&cluster.bootstrap, &topics, GATEWAY);
    wait_until("everything in Kafka too", Duration::from_secs(120), || {
        reader.inbox.unique() == TOTAL
    });
    reader.inbox.assert_complete(DEVICES, PER_DEVICE);
    wait_until("the journal to drain", Duration::from_secs(20), || {
        gateway.metric("edge_journal_rows") == 0.0
    });
}
