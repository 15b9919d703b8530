//! End to end: alert rules evaluated at the edge. A device crosses a threshold while the cloud
//! broker is down; when the broker comes back, the alert arrives before the buffered telemetry,
//! and an alert that was firing when the gateway restarted resolves under its own id.

mod common;

use std::time::Duration;

use common::*;

const RULES: &str = r#"
[[rule]]
name = "greenhouse too hot"
devices = "greenhouse-*"
reading = "temp_c"
above = 35.0
clear_below = 33.0
severity = "critical"
labels = { zone = "north" }
"#;

fn event(device: &str, seq: u32, temp: f64) -> (String, Vec<u8>) {
    (
        format!("devices/{device}/events"),
        format!(r#"{{"device":"{device}","boot":1,"seq":{seq},"readings":{{"temp_c":{temp}}}}}"#)
            .into_bytes(),
    )
}

/// Checks that `id` is `test-gw:alert:{journal}:{number}`, the journal number 8 hex digits;
/// returns it.
fn assert_alert_id(id: &serde_json::Value, number: u64) -> String {
    let id = id.as_str().expect("a string id").to_owned();
    let parts: Vec<&str> = id.split(':').collect();
    assert!(
        parts.len() == 4
            && parts[..2] == ["test-gw", "alert"]
            && parts[2].len() == 8
            && parts[2]
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            && parts[3] == number.to_string(),
        "`{id}` is not test-gw:alert:{{journal}}:{number}"
    );
    id
}

/// A gateway with [`RULES`], forwarding to `broker`.
fn gateway_with_rules(broker: &Mosquitto) -> Gateway {
    let mut gateway = Gateway::prepare(
        &format!("mqtt://127.0.0.1:{}", broker.port),
        "",
        "",
        JournalSettings::default(),
    );
    let mut config = std::fs::read_to_string(&gateway.config_path).expect("read config");
    config.push_str(RULES);
    std::fs::write(&gateway.config_path, config).expect("write config");
    gateway.spawn();
    gateway
}

#[test]
fn an_alert_raised_offline_arrives_before_the_buffered_telemetry() {
    let mut broker = Mosquitto::start();
    let cloud = Subscriber::connect(broker.port);
    broker.pause();
    let gateway = gateway_with_rules(&broker);

    // 100 events at 20 °C, then 100 at 40 °C: the rule fires at the 101st, while the cloud is down.
    let events: Vec<_> = (0..200)
        .map(|seq| event("greenhouse-1", seq, if seq < 100 { 20.0 } else { 40.0 }))
        .collect();
    publish_raw(gateway.device_port, &events);
    wait_until("the alert raised offline", Duration::from_secs(10), || {
        gateway.metric("edge_alerts_total{state=\"firing\"}") == 1.0
    });
    wait_until(
        "events and the alert journaled",
        Duration::from_secs(10),
        || gateway.metric("edge_journal_rows") == 201.0,
    );

    broker.resume();
    wait_until("everything at the cloud", Duration::from_secs(30), || {
        cloud.inbox.unique() == 200 && !cloud.inbox.alerts().is_empty()
    });
    let alerts = cloud.inbox.alerts();
    let alert = &alerts[0].body;
    assert_alert_id(&alert["id"], 1);
    assert_eq!(alert["rule"], "greenhouse too hot");
    assert_eq!(alert["device"], "greenhouse-1");
    assert_eq!(alert["state"], "firing");
    assert_eq!(alert["severity"], "critical");
    assert_eq!(alert["value"], 40.0);
    assert_eq!(
        alert["event"], "greenhouse-1:1:100",
        "the event that crossed the threshold"
    );
    assert_eq!(alert["labels"]["zone"], "north");
    let first_event = cloud
        .inbox
        .all()
        .iter()
        .map(|received| received.order)
        .min()
        .expect("events");
    assert!(
        alerts[0].order < first_event,
        "the alert (arrival {}) came after buffered telemetry (first at {first_event})",
        alerts[0].order
    );
    cloud.inbox.check_order_and_duplicates();
}

#[test]
fn a_firing_alert_survives_a_restart_and_resolves_under_its_id() {
    let broker = Mosquitto::start();
    let cloud = Subscriber::connect(broker.port);
    let mut gateway = gateway_with_rules(&broker);
    publish_raw(gateway.device_port, &[event("greenhouse-2", 0, 36.0)]);
    wait_until("the alert at the cloud", Duration::from_secs(10), || {
        cloud.inbox.alerts().len() == 1
    });
    assert_eq!(gateway.stop().code(), Some(0));
    gateway.spawn();
    // Between the clear level and the threshold: nothing; below the clear level: resolved.
    publish_raw(
        gateway.device_port,
        &[
            event("greenhouse-2", 1, 34.0),
            event("greenhouse-2", 2, 32.0),
        ],
    );
    wait_until(
        "the resolution at the cloud",
        Duration::from_secs(10),
        || cloud.inbox.alerts().len() == 2,
    );
    let alerts = cloud.inbox.alerts();
    let first = assert_alert_id(&alerts[0].body["id"], 1);
    assert_eq!(alerts[1].body["id"], first, "the same alert, resolved");
    assert_eq!(alerts[1].body["state"], "resolved");
    assert_eq!(alerts[1].body["value"], 32.0);
    // A new episode gets the next number, not one used before the restart.
    publish_raw(gateway.device_port, &[event("greenhouse-2", 3, 37.0)]);
    wait_until("a new alert", Duration::from_secs(10), || {
        cloud.inbox.alerts().len() == 3
    });
    let next = assert_alert_id(&cloud.inbox.alerts()[2].body["id"], 2);
    assert_eq!(
        next.rsplit_once(':').map(|(journal, _)| journal.to_owned()),
        first
            .rsplit_once(':')
            .map(|(journal, _)| journal.to_owned()),
        "the same journal: the same journal number"
    );
}

#[test]
fn reload_replaces_rules_keeps_state_and_refuses_a_bad_file() {
    let broker = Mosquitto::start();
    let cloud = Subscriber::connect(broker.port);
    let gateway = gateway_with_rules(&broker);
    let inbox = cloud.inbox.clone();
    let alert_count = |n: usize| {
        let inbox = inbox.clone();
        move || inbox.alerts().len() == n
    };
    publish_raw(gateway.device_port, &[event("greenhouse-3", 0, 36.0)]);
    wait_until("the first alert", Duration::from_secs(10), alert_count(1));

    // A second rule joins; the first is unchanged, so its firing alert carries over.
    let original = std::fs::read_to_string(&gateway.config_path).expect("read config");
    let with_cold = format!(
        "{original}\n[[rule]]\nname = \"greenhouse cold\"\ndevices = \"greenhouse-*\"\nreading = \"temp_c\"\nbelow = 10.0\n"
    );
    std::fs::write(&gateway.config_path, &with_cold).expect("write config");
    let (status, body) = http_post(gateway.admin(), "/reload").expect("POST /reload");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("reloaded 2 rules"), "{body}");
    publish_raw(gateway.device_port, &[event("greenhouse-3", 1, 37.0)]);
    publish_raw(gateway.device_port, &[event("greenhouse-3", 2, 5.0)]);
    wait_until(
        "hot resolved and cold fired",
        Duration::from_secs(10),
        alert_count(3),
    );
    let alerts = cloud.inbox.alerts();
    let summary: Vec<(String, String)> = alerts
        .iter()
        .map(|alert| {
            (
                alert.body["id"].as_str().unwrap_or_default().to_owned(),
                alert.body["state"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let first = assert_alert_id(&alerts[0].body["id"], 1);
    let journal = first.trim_end_matches(":1");
    assert_eq!(
        summary,
        [
            (format!("{journal}:1"), "firing".to_owned()),
            (format!("{journal}:1"), "resolved".to_owned()),
            (format!("{journal}:2"), "firing".to_owned()),
        ],
        "37 °C after the reload raised nothing new: the alert was still firing"
    );

    // A bad file is refused, by SIGHUP and by POST, and the running rules stay.
    std::fs::write(
        &gateway.config_path,
        with_cold.replace(
            "devices = \"greenhouse-*\"\nreading = \"temp_c\"\nbelow",
            "devices = \"green/house\"\nreading = \"temp_c\"\nbelow",
        ),
    )
    .expect("write config");
    signal(gateway.pid().expect("running"), "HUP");
    wait_until("the refusal logged", Duration::from_secs(10), || {
        gateway.log().contains("rules not reloaded")
    });
    let (status, body) = http_post(gateway.admin(), "/reload").expect("POST /reload");
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("invalid value `green/house`"), "{body}");
    publish_raw(gateway.device_port, &[event("greenhouse-3", 3, 20.0)]);
    wait_until(
        "cold resolved by the rules still running",
        Duration::from_secs(10),
        alert_count(4),
    );
}

/// The journal is lost (here: deleted while the gateway is stopped): the new one numbers alerts
/// from 1 again, under a journal number of its own, so edge-alerts takes the next alert for a new
/// one, stores it and shows it, rather than dropping it as a repeat of the old journal's first.
#[test]
fn edge_alerts_stores_the_next_alert_after_the_journal_is_replaced() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret\n").expect("token");
    let api = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut cloud = built_program(edge_alerts_program())
        .args([
            "--port",
            &broker.port.to_string(),
            "--listen",
            &api.to_string(),
        ])
        .arg("--token-file")
        .arg(&token_file)
        .arg("--sqlite")
        .arg(dir.path().join("alerts.db"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("edge-alerts.log")).expect("log"))
        .spawn()
        .expect("spawn edge-alerts");
    let stored = || -> Vec<String> {
        let Some((200, body)) = http_get_with_token(api, "/api/alerts", "s3cret") else {
            return Vec::new();
        };
        let alerts: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let mut ids: Vec<String> = alerts
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|alert| alert["id"].as_str().map(str::to_owned))
            .collect();
        ids.sort();
        ids
    };

    let mut gateway = gateway_with_rules(&broker);
    // edge-alerts hears of the gateway's retained `online` only once it has subscribed (after its
    // alert subscription): an alert published before that would never reach it.
    wait_until("edge-alerts subscribed", Duration::from_secs(20), || {
        http_get_with_token(api, "/api/gateways", "s3cret")
            .is_some_and(|(status, body)| status == 200 && body.contains("\"status\":\"online\""))
    });
    publish_raw(gateway.device_port, &[event("greenhouse-1", 0, 36.0)]);
    wait_until("the first alert stored", Duration::from_secs(20), || {
        stored().len() == 1
    });
    let before = stored();
    assert_alert_id(&serde_json::Value::from(before[0].clone()), 1);

    assert_eq!(gateway.stop().code(), Some(0));
    let data = gateway.config_path.with_file_name("data");
    for file in ["journal.db", "journal.db-wal", "journal.db-shm"] {
        let _ = std::fs::remove_file(data.join(file));
    }
    gateway.spawn();
    publish_raw(gateway.device_port, &[event("greenhouse-2", 0, 36.0)]);
    wait_until("the next alert stored", Duration::from_secs(20), || {
        stored().len() == 2
    });
    let after = stored();
    let next = after
        .iter()
        .find(|id| !before.contains(id))
        .expect("a new alert id");
    assert_alert_id(&serde_json::Value::from(next.clone()), 1);
    assert_ne!(
        next.rsplit_once(':').map(|(journal, _)| journal),
        before[0].rsplit_once(':').map(|(journal, _)| journal),
        "a new journal, a new journal number"
    );
    let _ = cloud.kill();
    let _ = cloud.wait();
}
