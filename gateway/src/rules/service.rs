//! The rule engine at work in the gateway: a task that owns the [`Engine`], takes every accepted
//! event from the sources, lets time pass once a second, and journals each alert transition in
//! the journal's priority lane (forwarded before any event). Its state starts from what the
//! journal kept: the last alert number and the alerts that were firing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use edge_schema::AlertMessage;
use tokio::sync::{mpsc, oneshot, watch};

use super::engine::{AlertState, Engine, Observation, Transition};
use super::model::Rule;
use crate::admin::Metrics;
use crate::journal::{AlertRecord, FiringAlert, JournalHandle};
use crate::sources::now_ms;

/// Batches of events waiting for the engine before sources drop (and count) evaluations.
const QUEUE: usize = 1024;
/// Most batches taken per wake-up.
const BATCH: usize = 64;
/// How often time passes for `for`, windows and silence.
const TICK: Duration = Duration::from_secs(1);

/// An accepted event, for the engine.
#[derive(Debug)]
pub struct Observed {
    /// The device.
    pub device: String,
    /// `{device}:{boot}:{seq}`.
    pub event_id: String,
    /// When the gateway received it, in ms since the Unix epoch.
    pub at_ms: i64,
    /// Its readings.
    pub readings: Vec<(String, f64)>,
}

/// A request to replace the rules; the answer says how many alerts the change resolved.
#[derive(Debug)]
pub struct Reload {
    /// The new rules.
    pub rules: Vec<Rule>,
    /// Where the answer goes.
    pub done: oneshot::Sender<usize>,
}

/// How sources hand events to the engine.
#[derive(Debug, Clone)]
pub struct RulesHandle {
    events: mpsc::Sender<Vec<Observed>>,
    /// Whether any rule is loaded: without rules, sources skip the hand-over altogether.
    active: Arc<AtomicBool>,
    reloads: mpsc::Sender<Reload>,
    metrics: Arc<Metrics>,
}

impl RulesHandle {
    /// Whether any rule is loaded.
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    /// Offers events to the engine without waiting; counted when the engine is behind.
    pub fn observe(&self, observed: Vec<Observed>) {
        if observed.is_empty() {
            return;
        }
        let count = observed.len() as u64;
        if self.events.try_send(observed).is_err() {
            self.metrics.add_rule_events_dropped(count);
        }
    }

    /// Replaces the rules; returns how many firing alerts the change resolved, or `None` if the
    /// engine has stopped.
    pub async fn reload(&self, rules: Vec<Rule>) -> Option<usize> {
        let (done, answer) = oneshot::channel();
        self.reloads.send(Reload { rules, done }).await.ok()?;
        answer.await.ok()
    }
}

/// Where alert numbering stands, as the journal kept it.
#[derive(Debug, Clone, Copy)]
pub struct Numbering<'a> {
    /// The journal's number, part of every alert id ([`edge_schema::alert_id`]).
    pub journal: u32,
    /// The last alert number handed out: new alerts are numbered after it.
    pub last_alert: u64,
    /// The alerts that were firing, to go on.
    pub firing: &'a [FiringAlert],
}

/// Starts the engine's task with `rules`, restoring the alerts that were firing and numbering
/// new ones after the last. The task ends when `shutdown` turns true.
pub fn spawn(
    rules: Vec<Rule>,
    gateway_id: &str,
    Numbering {
        journal: journal_number,
        last_alert,
        firing,
    }: Numbering<'_>,
    journal: JournalHandle,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) -> (RulesHandle, RulesTask) {
    let (events, mut incoming) = mpsc::channel(QUEUE);
    let (reloads, mut reload_requests) = mpsc::channel::<Reload>(4);
    let active = Arc::new(AtomicBool::new(!rules.is_empty()));
    let handle = RulesHandle {
        events,
        active: Arc::clone(&active),
        reloads,
        metrics: Arc::clone(&metrics),
    };
    let now = now_ms();
    let mut engine = Engine::new(rules, now, last_alert);
    // Alerts of rules removed while the gateway was stopped are resolved at start.
    let orphans: Vec<Transition> = firing
        .iter()
        .filter_map(|alert| engine.restore_firing(&alert.rule, &alert.device, alert.alert, now))
        .collect();
    let alerts = Alerts {
        gateway: gateway_id.to_owned(),
        journal_number,
        journal,
        metrics,
    };
    // The engine runs on a thread of its own (named `rules`), like the journal's writer: rule
    // evaluation never competes with the I/O tasks for a runtime worker, and its CPU time can be
    // read on its own (`/proc/PID/task/TID`).
    let run = async move {
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for transition in &orphans {
            if !alerts.journal(&engine, transition).await {
                return;
            }
        }
        let mut batches: Vec<Vec<Observed>> = Vec::with_capacity(BATCH);
        loop {
            let transitions = tokio::select! {
                // Whatever has queued up is taken in one go: one wake-up for many events.
                received = incoming.recv_many(&mut batches, BATCH) => {
                    if received == 0 {
                        return;
                    }
                    let mut transitions = Vec::new();
                    for observed in batches.drain(..).flatten() {
                        transitions.extend(engine.observe(&Observation {
                            device: &observed.device,
                            event_id: &observed.event_id,
                            at_ms: observed.at_ms,
                            readings: &observed.readings,
                        }));
                    }
                    transitions
                }
                _ = ticker.tick() => engine.tick(now_ms()),
                reload = reload_requests.recv() => match reload {
                    Some(Reload { rules, done }) => {
                        active.store(!rules.is_empty(), Ordering::Relaxed);
                        let resolved = engine.reload(rules, now_ms());
                        let _ = done.send(resolved.len());
                        resolved
                    }
                    None => Vec::new(),
                },
                _ = shutdown.changed() => return,
            };
            for transition in transitions {
                if !alerts.journal(&engine, &transition).await {
                    return;
                }
            }
        }
    };
    let thread = std::thread::Builder::new()
        .name("rules".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
            {
                Ok(runtime) => runtime.block_on(run),
                Err(error) => tracing::error!(%error, "failed to start the rule engine"),
            }
        });
    let thread = match thread {
        Ok(thread) => Some(thread),
        Err(error) => {
            tracing::error!(%error, "failed to start the rule engine's thread; alerts are off");
            None
        }
    };
    (handle, RulesTask { thread })
}

/// The engine's thread; [`RulesTask::join`] waits for it to end (after shutdown).
#[derive(Debug)]
pub struct RulesTask {
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RulesTask {
    /// Waits for the engine to stop.
    pub async fn join(self) {
        if let Some(thread) = self.thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

/// Turns transitions into journaled alert messages.
struct Alerts {
    gateway: String,
    /// The journal's number, in every alert id.
    journal_number: u32,
    journal: JournalHandle,
    metrics: Arc<Metrics>,
}

impl Alerts {
    /// Journals one transition; `false` if the journal has stopped.
    async fn journal(&self, engine: &Engine, transition: &Transition) -> bool {
        let rule = engine
            .rules()
            .iter()
            .find(|rule| rule.name == transition.rule);
        let id = edge_schema::alert_id(&self.gateway, self.journal_number, transition.alert);
        let firing = transition.state == AlertState::Firing;
        // The shared message type: the cloud parses what this writes into the same type.
        let message = AlertMessage {
            id,
            gateway: self.gateway.clone(),
            rule: transition.rule.clone(),
            device: transition.device.clone(),
            state: if firing {
                edge_schema::AlertState::Firing
            } else {
                edge_schema::AlertState::Resolved
            },
            severity: rule.map(|rule| rule.severity.as_str().to_owned()),
            at: transition.at_ms,
            value: transition.value,
            event: transition.event_id.clone(),
            labels: rule.map(|rule| rule.labels.clone()),
        };
        // Strings, numbers and a map with string keys: serde_json cannot fail on them.
        let payload = match serde_json::to_vec(&message) {
            Ok(payload) => payload,
            Err(error) => {
                tracing::error!(%error, alert = message.id, "failed to render an alert");
                return true;
            }
        };
        let id = message.id;
        tracing::info!(
            alert = id,
            rule = transition.rule,
            device = transition.device,
            state = transition.state.as_str(),
            value = transition.value,
            "alert"
        );
        self.metrics.add_alert(firing);
        let record = AlertRecord {
            rule: transition.rule.clone(),
            device: transition.device.clone(),
            alert: transition.alert,
            firing,
            at_ms: transition.at_ms,
            payload,
        };
        self.journal.append_alert(record).await.is_ok()
    }
}
