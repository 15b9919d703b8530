//! The dashboard in a real browser: headless Chromium logs in, sees an alert published to the
//! broker appear without a reload, acknowledges it, and sees it resolve. A device with a clock
//! gone wrong (a timestamp of 9e15 ms, past what a browser's `Date` holds) shows as bad without
//! stopping the rest of the page; all of it under the service's Content Security Policy.
//!
//! Set `EDGE_SCREENSHOT=path.png` to keep a screenshot of the dashboard as the test leaves it.

mod common;

use std::time::{Duration, Instant};

use common::*;
use fantoccini::Locator;

/// An alert transition of alert `id`, `ago_ms` ago.
fn transition(
    id: u32,
    state: &str,
    device: &str,
    severity: &str,
    value: f64,
    ago_ms: i64,
) -> (String, Vec<u8>) {
    (
        "edge/greenhouse-gw/alerts".into(),
        format!(
            r#"{{"id":"greenhouse-gw:alert:{id}","gateway":"greenhouse-gw","rule":"too-hot","device":"{device}","state":"{state}","severity":"{severity}","at":{at},"value":{value},"event":"{device}:1:9","labels":{{"zone":"north"}}}}"#,
            at = edge_alerts::consumer::now_ms() - ago_ms,
        )
        .into_bytes(),
    )
}

fn events(device: &str, count: u32) -> Vec<(String, Vec<u8>)> {
    let now = edge_alerts::consumer::now_ms();
    (0..count)
        .map(|seq| {
            let at = now - i64::from(count - seq) * 10_000;
            let temp = 24.0 + f64::from(seq % 12) * 0.9;
            (
                format!("edge/greenhouse-gw/devices/{device}/events"),
                format!(
                    r#"{{"id":"{device}:1:{seq}","gateway":"greenhouse-gw","device":"{device}","boot":1,"seq":{seq},"received_at":{at},"readings":{{"temp_c":{temp:.1},"rh":{rh:.1}}}}}"#,
                    rh = 40.0 + f64::from(seq % 7),
                )
                .into_bytes(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_a_new_alert_live_and_acknowledges_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_broker, port) = mosquitto(dir.path());
    let db = dir.path().join("alerts.db");
    let (_service, api) = edge_alerts_with_api(
        port,
        &["--sqlite", db.to_str().expect("utf-8 path")],
        dir.path(),
        "edge-alerts",
    );
    // Something to show: a gateway, two devices with a history, a resolved alert.
    tokio::task::spawn_blocking(move || announce_and_wait_subscribed(port, api, "greenhouse-gw"))
        .await
        .expect("subscribed");
    let mut history = events("bench-3", 30);
    history.extend(events("shed-1", 5));
    history.push(transition(
        1, "firing", "shed-1", "warning", 31.0, 1_500_000,
    ));
    history.push(transition(
        1, "resolved", "shed-1", "warning", 27.5, 1_200_000,
    ));
    // A device whose clock is out of any range: its event and its alert's resolution at 9e15.
    history.push((
        "edge/greenhouse-gw/devices/bad-clock/events".into(),
        br#"{"id":"bad-clock:1:1","gateway":"greenhouse-gw","device":"bad-clock","boot":1,"seq":1,"received_at":9000000000000000,"readings":{"temp_c":20.0}}"#.to_vec(),
    ));
    history.push((
        "edge/greenhouse-gw/alerts".into(),
        br#"{"id":"greenhouse-gw:alert:3","gateway":"greenhouse-gw","rule":"too-hot","device":"bad-clock","state":"resolved","severity":"info","at":9000000000000000,"value":20.0,"event":"bad-clock:1:1","labels":{}}"#.to_vec(),
    ));
    tokio::task::spawn_blocking(move || publish(port, &history))
        .await
        .expect("publish");
    wait_until("the history stored", Duration::from_secs(20), || {
        let (_, body) = http_get(api, "/api/devices", Some("s3cret"));
        body.contains("bench-3") && body.contains("shed-1") && body.contains("bad-clock")
    });

    let browser = Browser::start().await;
    let client = &browser.client;
    let base = format!("http://127.0.0.1:{api}/");
    browser.log_in(&base, "Ana", "s3cret").await;
    client
        .wait()
        .at_most(Duration::from_secs(5))
        .for_element(Locator::Css(
            "[data-alert-id=\"greenhouse-gw:alert:1\"][data-state=\"resolved\"]",
        ))
        .await
        .expect("the resolved alert listed");
    // The out-of-range times show as bad, and every other row is there.
    let bad = client
        .wait()
        .at_most(Duration::from_secs(5))
        .for_element(Locator::Css(
            "[data-alert-id=\"greenhouse-gw:alert:3\"] .bad",
        ))
        .await
        .expect("the alert with a time out of range, shown as bad");
    assert!(
        bad.text().await.expect("text").contains("invalid time"),
        "the bad time is named"
    );
    for device in ["bad-clock", "shed-1", "bench-3"] {
        client
            .find(Locator::Css(&format!(
                "[data-device=\"greenhouse-gw/{device}\"]"
            )))
            .await
            .unwrap_or_else(|_| panic!("device {device} listed"));
    }

    // A marker that a reload would wipe.
    client
        .execute("window.__noReload = 'still here'; return null;", vec![])
        .await
        .expect("script");

    // Timed from the broker's PUBACK: from then on the alert is the broker's to deliver.
    let published = tokio::task::spawn_blocking(move || {
        publish(
            port,
            &[transition(2, "firing", "bench-3", "critical", 36.4, 0)],
        );
        Instant::now()
    })
    .await
    .expect("publish");
    let row = client
        .wait()
        .at_most(Duration::from_secs(5))
        .every(Duration::from_millis(10))
        .for_element(Locator::Css(
            "[data-alert-id=\"greenhouse-gw:alert:2\"][data-state=\"firing\"]",
        ))
        .await
        .expect("the new alert on the page");
    let elapsed = Instant::now().saturating_duration_since(published);
    assert!(
        elapsed < Duration::from_secs(1),
        "the alert took {elapsed:?} from the broker to the page"
    );
    let marker = client
        .execute("return window.__noReload || null;", vec![])
        .await
        .expect("script");
    assert_eq!(marker, "still here", "the page was reloaded");
    let text = row.text().await.expect("text");
    assert!(
        text.contains("too-hot") && text.contains("bench-3"),
        "{text}"
    );
    // Firing alerts come first.
    let first = client
        .find(Locator::Css("[data-alert-id]"))
        .await
        .expect("an alert")
        .attr("data-alert-id")
        .await
        .expect("attribute");
    assert_eq!(first.as_deref(), Some("greenhouse-gw:alert:2"));

    // Acknowledge it: the page shows it, and the store has who did.
    row.find(Locator::Css("button.ack"))
        .await
        .expect("an acknowledge button")
        .click()
        .await
        .expect("click");
    client
        .wait()
        .at_most(Duration::from_secs(5))
        .for_element(Locator::Css(
            "[data-alert-id=\"greenhouse-gw:alert:2\"][data-acked=\"true\"]",
        ))
        .await
        .expect("the alert acknowledged on the page");
    let (_, body) = http_get(api, "/api/alerts?state=firing", Some("s3cret"));
    assert!(body.contains(r#""acknowledged_by":"Ana""#), "{body}");

    // Open a device's chart, as an operator would.
    client
        .find(Locator::Css(
            "[data-device=\"greenhouse-gw/bench-3\"] button",
        ))
        .await
        .expect("the device")
        .click()
        .await
        .expect("click");
    client
        .wait()
        .at_most(Duration::from_secs(5))
        .for_element(Locator::Css("[data-device=\"greenhouse-gw/bench-3\"] svg"))
        .await
        .expect("a chart of its readings");

    if let Ok(path) = std::env::var("EDGE_SCREENSHOT") {
        let png = client.screenshot().await.expect("screenshot");
        std::fs::write(&path, png).expect("write the screenshot");
    }
    client.clone().close().await.expect("close the browser");
}
