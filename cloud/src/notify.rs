//! Webhook notifications: each alert transition, posted once to each route that wants it, as
//! Slack-compatible JSON (`text` plus a coloured attachment; Mattermost and most chat tools take
//! the same).
//!
//! Routes come from the configuration file (`[[route]]`, see `docs/cloud.md`). The consumer
//! asks [`Routes::matching`] which routes want a transition and the store queues one outbox row
//! per route in the transaction that stores the transition (see [`crate::store`]): nothing
//! stored goes unnotified, and a redelivered transition queues nothing.
//! [`run`] then claims due rows, posts them, and deletes each once its webhook answered 2xx;
//! a failure is retried with exponential backoff until `max_attempts`, then dropped and
//! counted. A crash between a webhook's 2xx and the row's deletion posts that one again: the
//! delivery is at least once, and once in every run that does not crash at that instant.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use tokio::sync::{Notify, watch};

use crate::consumer::now_ms;
use crate::message::{AlertMessage, AlertState};
use crate::store::{Notification, Store};

/// The configuration file: webhook routes and how hard to try them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    route: Vec<Route>,
    #[serde(default = "default_max_attempts")]
    max_attempts: u32,
    #[serde(default = "default_retry_base_ms")]
    retry_base_ms: u64,
    #[serde(default = "default_timeout_ms")]
    timeout_ms: u64,
}

fn default_max_attempts() -> u32 {
    12
}

fn default_retry_base_ms() -> u64 {
    1_000
}

fn default_timeout_ms() -> u64 {
    10_000
}

/// One webhook and the transitions it wants. Every condition given must hold; an empty one
/// holds for all.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Unique name, kept with each queued notification.
    pub name: String,
    /// Where to post.
    pub url: String,
    /// Only these severities.
    #[serde(default)]
    pub severity: Vec<String>,
    /// Only these gateways.
    #[serde(default)]
    pub gateway: Vec<String>,
    /// Only alerts with these labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Only these transitions (`firing`, `resolved`).
    #[serde(default)]
    pub states: Vec<AlertState>,
}

impl Route {
    fn wants(&self, alert: &AlertMessage) -> bool {
        let severity = alert.severity.as_deref().unwrap_or("");
        (self.severity.is_empty() || self.severity.iter().any(|s| s == severity))
            && (self.gateway.is_empty() || self.gateway.contains(&alert.gateway))
            && (self.states.is_empty() || self.states.contains(&alert.state))
            && self.labels.iter().all(|(key, value)| {
                alert
                    .labels
                    .as_ref()
                    .and_then(|labels| labels.get(key))
                    .is_some_and(|have| have == value)
            })
    }
}

/// The routes, and the delivery policy.
#[derive(Debug, Clone)]
pub struct Routes {
    routes: Vec<Route>,
    /// Attempts before a notification is dropped (and counted).
    pub max_attempts: u32,
    /// The first retry's delay; each next one doubles, up to five minutes.
    pub retry_base: Duration,
    /// How long a webhook may take to answer.
    pub timeout: Duration,
}

impl Default for Routes {
    fn default() -> Self {
        Self {
            routes: Vec::new(),
            max_attempts: default_max_attempts(),
            retry_base: Duration::from_millis(default_retry_base_ms()),
            timeout: Duration::from_millis(default_timeout_ms()),
        }
    }
}

impl Routes {
    /// Reads the configuration file at `path`.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| format!("{}: {error}", path.display()))?;
        Self::parse(&text).map_err(|error| format!("{}: {error}", path.display()))
    }

    /// Parses a configuration file's text; says what is wrong and where.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: File = toml::from_str(text).map_err(|error| error.to_string())?;
        let mut names = BTreeSet::new();
        for route in &file.route {
            let name = &route.name;
            if name.trim().is_empty() {
                return Err("a [[route]] has an empty `name`".to_owned());
            }
            if !names.insert(name.as_str()) {
                return Err(format!("route `{name}` is defined twice"));
            }
            match reqwest::Url::parse(&route.url) {
                Ok(url) if matches!(url.scheme(), "http" | "https") => {}
                Ok(url) => {
                    return Err(format!(
                        "route `{name}`: url scheme `{}` is not http or https",
                        url.scheme()
                    ));
                }
                Err(error) => return Err(format!("route `{name}`: url `{}`: {error}", route.url)),
            }
            if let Some(bad) = route
                .severity
                .iter()
                .find(|severity| !matches!(severity.as_str(), "info" | "warning" | "critical"))
            {
                return Err(format!(
                    "route `{name}`: severity `{bad}` is not info, warning or critical"
                ));
            }
        }
        if file.max_attempts == 0 {
            return Err("`max_attempts` must be at least 1".to_owned());
        }
        if file.timeout_ms > MAX_TIMEOUT_MS {
            return Err(format!(
                "`timeout_ms` must be at most {MAX_TIMEOUT_MS}: a post has to end well within \
                 the {} s lease that keeps other instances from posting it too",
                LEASE.as_secs()
            ));
        }
        Ok(Self {
            routes: file.route,
            max_attempts: file.max_attempts,
            retry_base: Duration::from_millis(file.retry_base_ms.max(1)),
            timeout: Duration::from_millis(file.timeout_ms.max(1)),
        })
    }

    /// No routes at all.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The names of the routes that want `alert`.
    pub fn matching(&self, alert: &AlertMessage) -> Vec<String> {
        self.routes
            .iter()
            .filter(|route| route.wants(alert))
            .map(|route| route.name.clone())
            .collect()
    }

    fn get(&self, name: &str) -> Option<&Route> {
        self.routes.iter().find(|route| route.name == name)
    }

    /// The wait before attempt `attempts + 1`: doubling from the base, capped at five
    /// minutes, spread by up to a quarter so that a burst does not retry in lockstep.
    fn backoff(&self, attempts: i32, key: &str) -> Duration {
        let doublings = u32::try_from(attempts.saturating_sub(1))
            .unwrap_or(0)
            .min(20);
        let ceiling = self
            .retry_base
            .saturating_mul(1 << doublings)
            .min(Duration::from_secs(300));
        let spread = key.bytes().fold(u64::from(doublings), |hash, byte| {
            hash.wrapping_mul(31).wrapping_add(u64::from(byte))
        }) % 1000;
        ceiling - ceiling.mul_f64(spread as f64 / 4000.0)
    }
}

/// What the notifier did.
#[derive(Debug, Default)]
pub struct NotifyStats {
    /// Notifications delivered (2xx).
    pub sent: AtomicU64,
    /// Failed attempts that will be retried.
    pub retried: AtomicU64,
    /// Notifications dropped after `max_attempts`, or whose route is gone.
    pub dropped: AtomicU64,
}

/// The Slack-compatible message for an alert transition.
pub fn slack_message(alert: &AlertMessage) -> serde_json::Value {
    let severity = alert.severity.as_deref().unwrap_or("unknown");
    let (verb, color) = match alert.state {
        AlertState::Firing => (
            "FIRING",
            match severity {
                "critical" => "#d92d20",
                "warning" => "#f79009",
                _ => "#2e90fa",
            },
        ),
        AlertState::Resolved => ("RESOLVED", "#12b76a"),
    };
    let value = alert
        .value
        .map_or_else(String::new, |value| format!(" (value {value})"));
    let text = format!(
        "[{verb}] {severity}: {} on {} at {}{value}",
        alert.rule, alert.device, alert.gateway
    );
    let mut fields = vec![
        json!({ "title": "Gateway", "value": alert.gateway, "short": true }),
        json!({ "title": "Device", "value": alert.device, "short": true }),
        json!({ "title": "Severity", "value": severity, "short": true }),
        json!({ "title": "Alert", "value": alert.id, "short": true }),
    ];
    for (key, value) in alert.labels.iter().flatten() {
        fields.push(json!({ "title": key, "value": value, "short": true }));
    }
    json!({
        "text": text,
        "attachments": [{
            "color": color,
            "fallback": text,
            "title": format!("{} {}", alert.rule, alert.state.as_str()),
            "fields": fields,
            "ts": alert.at / 1000,
        }],
    })
}

/// How long a notifier holds claimed rows before another may take them. Instances compare it
/// with their own clocks: keep them synchronised (NTP).
const LEASE: Duration = Duration::from_secs(60);
/// The longest webhook timeout allowed: a claimed row's post must end well within the lease.
const MAX_TIMEOUT_MS: u64 = 20_000;
/// Rows claimed (and posted concurrently) at a time.
const BATCH: u32 = 16;

/// Delivers queued notifications until `shutdown` turns true. `wake` is signalled when new
/// ones are queued; due retries are picked up at least every second.
pub async fn run<S: Store>(
    store: Arc<S>,
    routes: Arc<Routes>,
    stats: Arc<NotifyStats>,
    wake: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    // Idempotent: the binary installs the same provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = match reqwest::Client::builder().timeout(routes.timeout).build() {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "cannot build the webhook client; notifications stay queued");
            return;
        }
    };
    while !*shutdown.borrow() {
        let now = now_ms();
        let lease_until = now.saturating_add(i64::try_from(LEASE.as_millis()).unwrap_or(60_000));
        let claimed = match store.claim_notifications(now, lease_until, BATCH).await {
            Ok(claimed) => claimed,
            Err(error) => {
                tracing::warn!(%error, "cannot read the outbox");
                Vec::new()
            }
        };
        let busy = claimed.len() == BATCH as usize;
        // Alerts are posted concurrently, each alert's transitions in order (firing before
        // resolved), so that a chat never shows an alert resolved before it fired.
        let mut by_alert: BTreeMap<(String, String), Vec<Notification>> = BTreeMap::new();
        for notification in claimed {
            let alert = notification
                .key
                .split_once('#')
                .map_or(notification.key.as_str(), |(alert, _)| alert)
                .to_owned();
            by_alert
                .entry((alert, notification.route.clone()))
                .or_default()
                .push(notification);
        }
        let deliveries = by_alert.into_values().map(|mut transitions| {
            transitions.sort_by_key(|notification| !notification.key.ends_with("#firing"));
            let (client, store, routes, stats) = (&client, &*store, &*routes, &*stats);
            async move {
                for notification in transitions {
                    deliver(client, store, routes, stats, notification).await;
                }
            }
        });
        futures_util::future::join_all(deliveries).await;
        if busy {
            continue;
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.changed() => {}
        }
    }
}

async fn deliver<S: Store>(
    client: &reqwest::Client,
    store: &S,
    routes: &Routes,
    stats: &NotifyStats,
    notification: Notification,
) {
    let Notification {
        key,
        route,
        payload,
        attempts,
    } = notification;
    let Some(target) = routes.get(&route) else {
        // Another instance may know the route (a configuration rolling out): retried like a
        // failure, so it is dropped only once every attempt found no such route.
        let failure = "no route of that name is configured here".to_owned();
        give_up_or_retry(store, routes, stats, (&key, &route, attempts), failure).await;
        return;
    };
    let alert: AlertMessage = match serde_json::from_str(&payload) {
        Ok(alert) => alert,
        Err(error) => {
            stats.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::error!(key, route, %error, "dropping an unreadable notification");
            let _ = store.notification_done(&key, &route).await;
            return;
        }
    };
    let outcome = client
        .post(&target.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(slack_message(&alert).to_string())
        .send()
        .await;
    let failure = match outcome {
        Ok(response) if response.status().is_success() => None,
        Ok(response) => Some(format!("the webhook answered {}", response.status())),
        Err(error) => Some(error.to_string()),
    };
    let Some(failure) = failure else {
        stats.sent.fetch_add(1, Ordering::Relaxed);
        if let Err(error) = store.notification_done(&key, &route).await {
            tracing::warn!(key, route, %error, "delivered, but cannot clear the outbox row (it may be posted again)");
        }
        return;
    };
    give_up_or_retry(store, routes, stats, (&key, &route, attempts), failure).await;
}

/// After a failed attempt: drops the notification once `max_attempts` are spent, or
/// schedules the next attempt.
async fn give_up_or_retry<S: Store>(
    store: &S,
    routes: &Routes,
    stats: &NotifyStats,
    (key, route, attempts): (&str, &str, i32),
    failure: String,
) {
    if u32::try_from(attempts).unwrap_or(u32::MAX) >= routes.max_attempts {
        stats.dropped.fetch_add(1, Ordering::Relaxed);
        tracing::error!(key, route, attempts, failure, "giving up on a notification");
        let _ = store.notification_done(key, route).await;
        return;
    }
    stats.retried.fetch_add(1, Ordering::Relaxed);
    let delay = routes.backoff(attempts, key);
    tracing::warn!(key, route, attempts, failure, retry_in = ?delay, "notification failed; will retry");
    let due = now_ms().saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
    if let Err(error) = store.notification_retry(key, route, due).await {
        tracing::warn!(key, route, %error, "cannot reschedule a notification (it is retried when its lease ends)");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn alert(severity: &str, state: AlertState, zone: &str) -> AlertMessage {
        AlertMessage {
            id: "gw:alert:1".into(),
            gateway: "gw".into(),
            rule: "hot".into(),
            device: "d1".into(),
            state,
            severity: Some(severity.into()),
            at: 1_764_230_400_000,
            value: Some(36.5),
            event: Some("d1:1:1".into()),
            labels: Some(BTreeMap::from([("zone".to_owned(), zone.to_owned())])),
        }
    }

    #[test]
    fn routes_pick_transitions_by_every_condition() {
        let routes = Routes::parse(
            r#"
            [[route]]
            name = "everything"
            url = "http://127.0.0.1:9/all"

            [[route]]
            name = "north-critical-firing"
            url = "https://hooks.example.com/x"
            severity = ["critical"]
            labels = { zone = "north" }
            states = ["firing"]
            "#,
        )
        .unwrap();
        assert_eq!(
            routes.matching(&alert("critical", AlertState::Firing, "north")),
            ["everything", "north-critical-firing"]
        );
        assert_eq!(
            routes.matching(&alert("critical", AlertState::Resolved, "north")),
            ["everything"]
        );
        assert_eq!(
            routes.matching(&alert("warning", AlertState::Firing, "north")),
            ["everything"]
        );
        assert_eq!(
            routes.matching(&alert("critical", AlertState::Firing, "south")),
            ["everything"]
        );
    }

    #[test]
    fn a_bad_file_says_what_and_where() {
        for (text, expected) in [
            (
                "[[route]]\nname = \"a\"\nurl = \"ftp://x\"\n",
                "scheme `ftp`",
            ),
            (
                "[[route]]\nname = \"a\"\nurl = \"not a url\"\n",
                "route `a`: url",
            ),
            (
                "[[route]]\nname = \"a\"\nurl = \"http://x\"\nseverity = [\"loud\"]\n",
                "severity `loud`",
            ),
            (
                "[[route]]\nname = \"a\"\nurl = \"http://x\"\n[[route]]\nname = \"a\"\nurl = \"http://y\"\n",
                "defined twice",
            ),
            (
                "[[route]]\nname = \"a\"\nurl = \"http://x\"\ncolour = 1\n",
                "line 4",
            ),
            ("max_attempts = 0\n", "at least 1"),
            ("timeout_ms = 60000\n", "at most 20000"),
        ] {
            let error = Routes::parse(text).unwrap_err();
            assert!(error.contains(expected), "{text:?} -> {error}");
        }
    }

    #[test]
    fn the_message_is_slack_shaped() {
        let message = slack_message(&alert("critical", AlertState::Firing, "north"));
        assert_eq!(
            message["text"],
            "[FIRING] critical: hot on d1 at gw (value 36.5)"
        );
        assert_eq!(message["attachments"][0]["color"], "#d92d20");
        assert_eq!(message["attachments"][0]["ts"], 1_764_230_400);
        let resolved = slack_message(&alert("critical", AlertState::Resolved, "north"));
        assert!(resolved["text"].as_str().unwrap().starts_with("[RESOLVED]"));
    }

    #[test]
    fn retries_back_off_to_a_cap() {
        let routes = Routes::default();
        let first = routes.backoff(1, "k");
        let third = routes.backoff(3, "k");
        assert!(first <= Duration::from_secs(1) && first >= Duration::from_millis(750));
        assert!(third <= Duration::from_secs(4) && third >= Duration::from_secs(3));
        assert!(routes.backoff(30, "k") <= Duration::from_secs(300));
    }
}
