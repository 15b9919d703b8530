//! End to end: bad payloads and wrong topics are rejected, counted and dead-lettered, and good
//! events keep flowing.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn bad_input_is_counted_and_dead_lettered_and_good_events_flow() {
    let cloud = RumqttdCloud::start();
    let gateway = Gateway::start(cloud.port, JournalSettings::default());
    let good = |device: &str, seq: u32| {
        (
            format!("devices/{device}/events"),
            format!(r#"{{"device":"{device}","boot":1,"seq":{seq},"readings":{{"temp_c":21.5}}}}"#)
                .into_bytes(),
        )
    };
    let mut messages = vec![good("dev-a", 0)];
    messages.push(("devices/dev-a/events".into(), b"\x00\xffgarbage".to_vec()));
    messages.push((
        "devices/dev-a/events".into(),
        b"{\"device\":\"dev-a\",\"seq\":".to_vec(),
    ));
    // dev-b's event on dev-a's topic
    messages.push(("devices/dev-a/events".into(), good("dev-b", 0).1));
    messages.push(("devices/dev-a/events".into(), vec![b' '; 70 * 1024]));
    messages.push((
        "devices/dev-a/events".into(),
        br#"{"device":"dev-a","boot":1,"seq":5,"readings":{"temp_c":"hot"}}"#.to_vec(),
    ));
    messages.push(("devices/bad$id/events".into(), good("dev-a", 9).1));
    messages.push(good("dev-a", 1));
    publish_raw(gateway.device_port, &messages);

    wait_until(
        "the good events in the cloud",
        Duration::from_secs(20),
        || cloud.inbox.unique() == 2,
    );
    let ids: Vec<String> = cloud
        .inbox
        .all()
        .into_iter()
        .map(|message| message.id)
        .collect();
    assert_eq!(ids, ["dev-a:1:0", "dev-a:1:1"]);

    for (reason, count) in [
        ("invalid_cbor", 1.0),
        ("invalid_json", 2.0),
        ("device_mismatch", 1.0),
        ("oversized", 1.0),
        ("invalid_topic", 1.0),
    ] {
        let series = format!("edge_events_rejected_total{{reason=\"{reason}\"}}");
        wait_until(&series, Duration::from_secs(5), || {
            gateway.metric(&series) == count
        });
    }
    let inspection = edge_gateway::journal::inspect(&gateway.journal_path(), 100).expect("inspect");
    assert_eq!(
        inspection.dead_letters.len(),
        6,
        "{:#?}",
        inspection.dead_letters
    );
    let mismatch = inspection
        .dead_letters
        .iter()
        .find(|letter| letter.reason == "device_mismatch")
        .expect("device_mismatch dead letter");
    assert_eq!(mismatch.topic, "devices/dev-a/events");
    assert!(
        mismatch.detail.contains("dev-b"),
        "the detail says what was wrong: {}",
        mismatch.detail
    );
    let oversized = inspection
        .dead_letters
        .iter()
        .find(|letter| letter.reason == "oversized")
        .expect("oversized");
    assert_eq!(
        oversized.payload.len(),
        1024,
        "dead-lettered payloads are truncated"
    );
    let log = gateway.log();
    assert!(
        log.contains("rejected input"),
        "rejections are logged:\n{log}"
    );
}
