//! The rule engine: events and clock ticks in, alert transitions out. Sans-IO and
//! deterministic: time is whatever the caller says it is (the gateway's receive time, or the
//! timestamps of recorded events in `edge-gateway rules test`).
//!
//! # Lifecycle of an alert, per (rule, device)
//! ```text
//!   idle ──condition true──▶ pending ──held for `for`──▶ FIRING ──condition cleared──▶ RESOLVED
//!    ▲  ◀──condition false──┘                                                          │
//!    └──────────────────────────── after `cooldown` ◀───────────────────────────────────┘
//! ```
//! A transition is emitted only on a change of state: `firing` once per episode, `resolved`
//! once. Each episode gets a new alert number, so `{gateway}:alert:{n}` names it for good.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use super::model::{Aggregate, Condition, Rule, Window};

/// What happened to an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertState {
    /// The condition held (for its `for`): the alert starts.
    Firing,
    /// The condition cleared: the alert ends.
    Resolved,
}

impl AlertState {
    /// `firing` or `resolved`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Firing => "firing",
            Self::Resolved => "resolved",
        }
    }
}

/// One alert transition.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// The episode's number; with the gateway id, the alert's stable id.
    pub alert: u64,
    /// The rule's name.
    pub rule: String,
    /// The device.
    pub device: String,
    /// What happened.
    pub state: AlertState,
    /// When, in ms since the Unix epoch.
    pub at_ms: i64,
    /// The value that decided it (the reading, or the window's aggregate); none for silence.
    pub value: Option<f64>,
    /// The event that decided it, if an event did (a tick decides `for` and silence).
    pub event_id: Option<String>,
}

/// An event as the engine sees it.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    /// The device.
    pub device: &'a str,
    /// Its stable id, `{device}:{boot}:{seq}`.
    pub event_id: &'a str,
    /// When, in ms since the Unix epoch.
    pub at_ms: i64,
    /// Its readings.
    pub readings: &'a [(String, f64)],
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Idle { quiet_until: i64 },
    Pending { since: i64 },
    Firing { alert: u64 },
}

/// The state of one rule for one device.
#[derive(Debug, Clone)]
struct Track {
    phase: Phase,
    /// Values in the window (threshold rules with a window), oldest first.
    window: VecDeque<(i64, f64)>,
    /// Last time the device (or its reading) was heard of (silence rules).
    last_heard: i64,
    /// The last value evaluated, and the event it came from.
    last_value: Option<f64>,
    last_event: Option<String>,
}

impl Track {
    fn new(now: i64) -> Self {
        Self {
            phase: Phase::Idle {
                quiet_until: i64::MIN,
            },
            window: VecDeque::new(),
            last_heard: now,
            last_value: None,
            last_event: None,
        }
    }
}

/// The rules and their state.
#[derive(Debug)]
pub struct Engine {
    rules: Vec<Rule>,
    /// Per rule (by index), per device.
    tracks: Vec<HashMap<String, Track>>,
    next_alert: u64,
}

impl Engine {
    /// An engine for `rules`, starting at `now_ms`; alert numbers start after `last_alert`.
    /// Devices named exactly by a silence rule are expected from `now_ms` on.
    pub fn new(rules: Vec<Rule>, now_ms: i64, last_alert: u64) -> Self {
        let mut engine = Self {
            tracks: vec![HashMap::new(); rules.len()],
            rules,
            next_alert: last_alert + 1,
        };
        engine.expect_named_devices(now_ms);
        engine
    }

    /// Puts back an alert that was firing when the gateway stopped, so that it goes on (and
    /// resolves under its own number). Ignored if its rule no longer exists.
    pub fn restore_firing(&mut self, rule: &str, device: &str, alert: u64, now_ms: i64) {
        let Some(index) = self.rules.iter().position(|known| known.name == rule) else {
            return;
        };
        let track = self.tracks[index]
            .entry(device.to_owned())
            .or_insert_with(|| Track::new(now_ms));
        track.phase = Phase::Firing { alert };
        self.next_alert = self.next_alert.max(alert + 1);
    }

    /// The rules.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The last alert number handed out.
    pub fn last_alert(&self) -> u64 {
        self.next_alert - 1
    }

    /// Replaces the rules. A rule whose name and definition are unchanged keeps its state (a
    /// firing alert goes on firing); an alert firing under a rule that was removed or changed
    /// is resolved.
    pub fn reload(&mut self, rules: Vec<Rule>, now_ms: i64) -> Vec<Transition> {
        let mut old: HashMap<String, (Rule, HashMap<String, Track>)> = self
            .rules
            .drain(..)
            .zip(self.tracks.drain(..))
            .map(|(rule, tracks)| (rule.name.clone(), (rule, tracks)))
            .collect();
        let mut tracks = Vec::with_capacity(rules.len());
        for rule in &rules {
            match old.remove(&rule.name) {
                Some((previous, kept)) if previous == *rule => tracks.push(kept),
                Some((previous, kept)) => {
                    old.insert(previous.name.clone(), (previous, kept));
                    tracks.push(HashMap::new());
                }
                None => tracks.push(HashMap::new()),
            }
        }
        let mut transitions = Vec::new();
        for (name, (_, kept)) in old {
            for (device, track) in kept {
                if let Phase::Firing { alert } = track.phase {
                    transitions.push(Transition {
                        alert,
                        rule: name.clone(),
                        device,
                        state: AlertState::Resolved,
                        at_ms: now_ms,
                        value: None,
                        event_id: None,
                    });
                }
            }
        }
        self.rules = rules;
        self.tracks = tracks;
        self.expect_named_devices(now_ms);
        transitions.sort_by_key(|transition| transition.alert);
        transitions
    }

    /// Evaluates an event against every rule that watches its device.
    pub fn observe(&mut self, event: &Observation<'_>) -> Vec<Transition> {
        let mut transitions = Vec::new();
        for index in 0..self.rules.len() {
            let rule = &self.rules[index];
            if !rule.devices.matches(event.device) {
                continue;
            }
            let track = self.tracks[index]
                .entry(event.device.to_owned())
                .or_insert_with(|| Track::new(event.at_ms));
            match &rule.condition {
                Condition::Threshold {
                    reading, window, ..
                } => {
                    let Some(raw) = reading_of(event.readings, reading) else {
                        continue;
                    };
                    let value = match window {
                        None => Some(raw),
                        Some(window) => {
                            track.window.push_back((event.at_ms, raw));
                            aggregate(&mut track.window, window, event.at_ms)
                        }
                    };
                    let Some(value) = value else {
                        continue;
                    };
                    track.last_value = Some(value);
                    track.last_event = Some(event.event_id.to_owned());
                    transitions.extend(self.evaluate(
                        index,
                        event.device,
                        value,
                        event.at_ms,
                        Some(event.event_id),
                    ));
                }
                Condition::Silent { reading, .. } => {
                    let heard = reading
                        .as_deref()
                        .is_none_or(|reading| reading_of(event.readings, reading).is_some());
                    if !heard {
                        continue;
                    }
                    track.last_heard = track.last_heard.max(event.at_ms);
                    if let Phase::Firing { alert } = track.phase {
                        track.phase = Phase::Idle {
                            quiet_until: event.at_ms.saturating_add(millis(rule.cooldown)),
                        };
                        transitions.push(Transition {
                            alert,
                            rule: rule.name.clone(),
                            device: event.device.to_owned(),
                            state: AlertState::Resolved,
                            at_ms: event.at_ms,
                            value: None,
                            event_id: Some(event.event_id.to_owned()),
                        });
                    }
                }
            }
        }
        transitions
    }

    /// Lets time pass: `for` durations complete, windows age, silences are noticed.
    pub fn tick(&mut self, now_ms: i64) -> Vec<Transition> {
        let mut transitions = Vec::new();
        let mut due: Vec<(String, f64)> = Vec::new();
        for index in 0..self.rules.len() {
            let rule = &self.rules[index];
            due.clear();
            for (device, track) in &mut self.tracks[index] {
                match &rule.condition {
                    Condition::Threshold { window, .. } => {
                        let value = match window {
                            // Values leave the window as time passes: the aggregate changes.
                            Some(window) => aggregate(&mut track.window, window, now_ms),
                            // Only a pending `for` can change without a new value.
                            None if matches!(track.phase, Phase::Pending { .. }) => {
                                track.last_value
                            }
                            None => None,
                        };
                        if let Some(value) = value {
                            due.push((device.clone(), value));
                        }
                    }
                    Condition::Silent { after, .. } => {
                        let Phase::Idle { quiet_until } = track.phase else {
                            continue;
                        };
                        if now_ms.saturating_sub(track.last_heard) >= millis(*after)
                            && now_ms >= quiet_until
                        {
                            let alert = self.next_alert;
                            self.next_alert += 1;
                            track.phase = Phase::Firing { alert };
                            transitions.push(Transition {
                                alert,
                                rule: rule.name.clone(),
                                device: device.clone(),
                                state: AlertState::Firing,
                                at_ms: now_ms,
                                value: None,
                                event_id: None,
                            });
                        }
                    }
                }
            }
            for (device, value) in std::mem::take(&mut due) {
                transitions.extend(self.evaluate(index, &device, value, now_ms, None));
            }
        }
        transitions
    }

    /// Moves one (rule, device) on, given the value now; returns its transition, if any.
    fn evaluate(
        &mut self,
        index: usize,
        device: &str,
        value: f64,
        now: i64,
        event_id: Option<&str>,
    ) -> Option<Transition> {
        let rule = &self.rules[index];
        let Condition::Threshold { bounds, .. } = &rule.condition else {
            return None;
        };
        let track = self.tracks[index].get_mut(device)?;
        let hold = millis(rule.hold);
        match track.phase {
            Phase::Idle { quiet_until } => {
                if !bounds.triggers(value) || now < quiet_until {
                    return None;
                }
                if hold > 0 {
                    track.phase = Phase::Pending { since: now };
                    return None;
                }
            }
            Phase::Pending { since } => {
                if !bounds.triggers(value) {
                    // Interrupted: `for` starts over the next time.
                    track.phase = Phase::Idle {
                        quiet_until: i64::MIN,
                    };
                    return None;
                }
                if now.saturating_sub(since) < hold {
                    return None;
                }
            }
            Phase::Firing { alert } => {
                if bounds.holds(value) {
                    return None;
                }
                track.phase = Phase::Idle {
                    quiet_until: now.saturating_add(millis(rule.cooldown)),
                };
                return Some(Transition {
                    alert,
                    rule: rule.name.clone(),
                    device: device.to_owned(),
                    state: AlertState::Resolved,
                    at_ms: now,
                    value: Some(value),
                    event_id: event_id.map(str::to_owned),
                });
            }
        }
        let alert = self.next_alert;
        self.next_alert += 1;
        track.phase = Phase::Firing { alert };
        Some(Transition {
            alert,
            rule: rule.name.clone(),
            device: device.to_owned(),
            state: AlertState::Firing,
            at_ms: now,
            value: Some(value),
            event_id: event_id
                .map(str::to_owned)
                .or_else(|| track.last_event.clone()),
        })
    }

    /// Silence rules naming an exact device expect it from the start, heard of or not.
    fn expect_named_devices(&mut self, now_ms: i64) {
        for (index, rule) in self.rules.iter().enumerate() {
            if let (Condition::Silent { .. }, Some(device)) =
                (&rule.condition, rule.devices.exact())
            {
                self.tracks[index]
                    .entry(device.to_owned())
                    .or_insert_with(|| Track::new(now_ms));
            }
        }
    }
}

fn reading_of(readings: &[(String, f64)], name: &str) -> Option<f64> {
    readings
        .iter()
        .find(|(reading, _)| reading == name)
        .map(|(_, value)| *value)
}

/// Drops values older than the window at `now`, then aggregates what is left.
fn aggregate(values: &mut VecDeque<(i64, f64)>, window: &Window, now: i64) -> Option<f64> {
    let oldest = now - millis(window.over);
    while values.front().is_some_and(|(at, _)| *at <= oldest) {
        values.pop_front();
    }
    let count = values.len();
    match window.aggregate {
        Aggregate::Count => Some(count as f64),
        _ if count == 0 => None,
        Aggregate::Avg => Some(values.iter().map(|(_, value)| value).sum::<f64>() / count as f64),
        Aggregate::Min => values.iter().map(|(_, value)| *value).reduce(f64::min),
        Aggregate::Max => values.iter().map(|(_, value)| *value).reduce(f64::max),
        Aggregate::Rate => {
            let (first_at, first) = *values.front()?;
            let (last_at, last) = *values.back()?;
            if last_at <= first_at {
                return None;
            }
            Some((last - first) / ((last_at - first_at) as f64 / 1000.0))
        }
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
