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

use std::collections::{BTreeMap, VecDeque};
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
    /// The sliding window of threshold rules with one.
    window: Sliding,
    /// Last time the device (or its reading) was heard of (silence rules).
    last_heard: i64,
    /// When the track began: a window is whole only `over` after that.
    created_at: i64,
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
            window: Sliding::default(),
            created_at: now,
            last_heard: now,
            last_value: None,
            last_event: None,
        }
    }
}

/// The rules and their state.
///
/// State is kept per device: the first time a device is seen, the rules whose pattern matches it
/// are found once, and each gets a track. An event then costs one lookup and the evaluation of
/// the rules that watch its device, however many rules there are.
#[derive(Debug)]
pub struct Engine {
    rules: Vec<Rule>,
    /// Ordered, so that ticks (and the alert numbers they hand out) are deterministic.
    devices: BTreeMap<String, Vec<(usize, Track)>>,
    next_alert: u64,
}

impl Engine {
    /// An engine for `rules`, starting at `now_ms`; alert numbers start after `last_alert`.
    /// Devices named exactly by a silence rule are expected from `now_ms` on.
    pub fn new(rules: Vec<Rule>, now_ms: i64, last_alert: u64) -> Self {
        let mut engine = Self {
            rules,
            devices: BTreeMap::new(),
            next_alert: last_alert + 1,
        };
        engine.expect_named_devices(now_ms);
        engine
    }

    /// Puts back an alert that was firing when the gateway stopped, so that it goes on (and
    /// resolves under its own number). Ignored if its rule no longer exists or does not watch
    /// the device.
    ///
    /// Returns the alert's resolution when its rule no longer exists or no longer watches the
    /// device: nothing else would ever end it.
    pub fn restore_firing(
        &mut self,
        rule: &str,
        device: &str,
        alert: u64,
        now_ms: i64,
    ) -> Option<Transition> {
        self.next_alert = self.next_alert.max(alert + 1);
        let restored = self
            .rules
            .iter()
            .position(|known| known.name == rule)
            .and_then(|index| {
                let tracks = self.tracks_of(device, now_ms);
                tracks.iter_mut().find(|(known, _)| *known == index)
            })
            .map(|(_, track)| track.phase = Phase::Firing { alert });
        match restored {
            Some(()) => None,
            None => Some(Transition {
                alert,
                rule: rule.to_owned(),
                device: device.to_owned(),
                state: AlertState::Resolved,
                at_ms: now_ms,
                value: None,
                event_id: None,
            }),
        }
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
        // Where each old rule went: the index of the same rule in the new set, if unchanged.
        let moved: Vec<Option<usize>> = self
            .rules
            .iter()
            .map(|old| rules.iter().position(|new| new == old))
            .collect();
        let mut transitions = Vec::new();
        let devices = std::mem::take(&mut self.devices);
        for (device, tracks) in devices {
            let mut kept: Vec<(usize, Track)> = Vec::new();
            for (index, track) in tracks {
                match moved.get(index).copied().flatten() {
                    Some(new_index) => kept.push((new_index, track)),
                    None => {
                        if let Phase::Firing { alert } = track.phase {
                            transitions.push(Transition {
                                alert,
                                rule: self.rules[index].name.clone(),
                                device: device.clone(),
                                state: AlertState::Resolved,
                                at_ms: now_ms,
                                value: None,
                                event_id: None,
                            });
                        }
                    }
                }
            }
            let mut tracks: Vec<(usize, Track)> = rules
                .iter()
                .enumerate()
                .filter(|(_, rule)| rule.devices.matches(&device))
                .map(|(index, _)| {
                    let track = kept
                        .iter()
                        .position(|(kept_index, _)| *kept_index == index)
                        .map(|at| kept.swap_remove(at).1)
                        .unwrap_or_else(|| Track::new(now_ms));
                    (index, track)
                })
                .collect();
            tracks.shrink_to_fit();
            self.devices.insert(device, tracks);
        }
        self.rules = rules;
        self.expect_named_devices(now_ms);
        transitions.sort_by_key(|transition| transition.alert);
        transitions
    }

    /// Evaluates an event against every rule that watches its device.
    pub fn observe(&mut self, event: &Observation<'_>) -> Vec<Transition> {
        let mut transitions = Vec::new();
        if !self.devices.contains_key(event.device) {
            if self.devices.len() >= MAX_DEVICES
                && !self
                    .rules
                    .iter()
                    .any(|rule| rule.devices.matches(event.device))
            {
                return transitions;
            }
            self.tracks_of(event.device, event.at_ms);
        }
        let Some(tracks) = self.devices.get_mut(event.device) else {
            return transitions;
        };
        for (index, track) in tracks.iter_mut() {
            let rule = &self.rules[*index];
            match &rule.condition {
                Condition::Threshold {
                    reading,
                    window,
                    bounds,
                } => {
                    let Some(raw) = reading_of(event.readings, reading) else {
                        continue;
                    };
                    let value = match window {
                        None => Some(raw),
                        Some(window) => {
                            track.window.push(event.at_ms, raw);
                            track.window.aggregate(
                                window,
                                event.at_ms,
                                track.created_at,
                                bounds.below.is_some(),
                            )
                        }
                    };
                    let Some(value) = value else {
                        continue;
                    };
                    track.last_value = Some(value);
                    transitions.extend(evaluate(
                        rule,
                        track,
                        &mut self.next_alert,
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
        for (device, tracks) in &mut self.devices {
            for (index, track) in tracks.iter_mut() {
                let rule = &self.rules[*index];
                match &rule.condition {
                    Condition::Threshold { window, bounds, .. } => {
                        let value = match window {
                            // Values leave the window as time passes: the aggregate changes.
                            Some(window) => track.window.aggregate(
                                window,
                                now_ms,
                                track.created_at,
                                bounds.below.is_some(),
                            ),
                            // Only a pending `for` can change without a new value.
                            None if matches!(track.phase, Phase::Pending { .. }) => {
                                track.last_value
                            }
                            None => None,
                        };
                        if let Some(value) = value {
                            transitions.extend(evaluate(
                                rule,
                                track,
                                &mut self.next_alert,
                                device,
                                value,
                                now_ms,
                                None,
                            ));
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
        }
        transitions.sort_by_key(|transition| transition.alert);
        transitions
    }

    /// The tracks of `device`, made (one per rule that watches it) the first time it is seen.
    fn tracks_of(&mut self, device: &str, now_ms: i64) -> &mut Vec<(usize, Track)> {
        let rules = &self.rules;
        self.devices.entry(device.to_owned()).or_insert_with(|| {
            rules
                .iter()
                .enumerate()
                .filter(|(_, rule)| rule.devices.matches(device))
                .map(|(index, _)| (index, Track::new(now_ms)))
                .collect()
        })
    }

    /// Silence rules naming an exact device expect it from the start, heard of or not.
    fn expect_named_devices(&mut self, now_ms: i64) {
        let named: Vec<String> = self
            .rules
            .iter()
            .filter(|rule| matches!(rule.condition, Condition::Silent { .. }))
            .filter_map(|rule| rule.devices.exact().map(str::to_owned))
            .collect();
        for device in named {
            self.tracks_of(&device, now_ms);
        }
    }
}

/// Moves one (rule, device) on, given the value now; returns its transition, if any.
fn evaluate(
    rule: &Rule,
    track: &mut Track,
    next_alert: &mut u64,
    device: &str,
    value: f64,
    now: i64,
    event_id: Option<&str>,
) -> Option<Transition> {
    let Condition::Threshold { bounds, .. } = &rule.condition else {
        return None;
    };
    let hold = millis(rule.hold);
    match track.phase {
        Phase::Idle { quiet_until } => {
            if !bounds.triggers(value) || now < quiet_until {
                return None;
            }
            if hold > 0 {
                track.phase = Phase::Pending { since: now };
                // The event that started the condition's stretch, should `for` complete on a tick.
                track.last_event = event_id.map(str::to_owned);
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
            if let Some(event_id) = event_id {
                track.last_event = Some(event_id.to_owned());
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
    let alert = *next_alert;
    *next_alert += 1;
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
            .or_else(|| track.last_event.take()),
    })
}

fn reading_of(readings: &[(String, f64)], name: &str) -> Option<f64> {
    readings
        .iter()
        .find(|(reading, _)| reading == name)
        .map(|(_, value)| *value)
}

/// Most values one window keeps; past it the oldest give way (see docs/rules.md).
const MAX_WINDOW_VALUES: usize = 10_000;
/// Devices the engine keeps state for; past it, new devices that no rule watches are not
/// remembered (their patterns are matched again on each event).
const MAX_DEVICES: usize = 100_000;

/// The values of a sliding window, with what its aggregates need kept up to date as values come
/// and go: every aggregate costs O(1) per value (amortised), however many values the window holds.
#[derive(Debug, Clone, Default)]
struct Sliding {
    /// Every value in the window, oldest first.
    values: VecDeque<(i64, f64)>,
    /// Their sum (for the mean).
    sum: f64,
    /// Candidates for the minimum: increasing values, oldest first (a monotonic queue).
    mins: VecDeque<(i64, f64)>,
    /// Candidates for the maximum: decreasing values, oldest first.
    maxs: VecDeque<(i64, f64)>,
}

impl Sliding {
    fn push(&mut self, at: i64, value: f64) {
        if self.values.len() >= MAX_WINDOW_VALUES
            && let Some((_, oldest)) = self.values.pop_front()
        {
            // A device far faster than its window needs: the oldest value gives way.
            self.sum -= oldest;
            let oldest_at = self.values.front().map_or(at, |(at, _)| *at);
            self.mins.retain(|(kept_at, _)| *kept_at >= oldest_at);
            self.maxs.retain(|(kept_at, _)| *kept_at >= oldest_at);
        }
        self.values.push_back((at, value));
        self.sum += value;
        while self.mins.back().is_some_and(|(_, kept)| *kept >= value) {
            self.mins.pop_back();
        }
        self.mins.push_back((at, value));
        while self.maxs.back().is_some_and(|(_, kept)| *kept <= value) {
            self.maxs.pop_back();
        }
        self.maxs.push_back((at, value));
    }

    /// Drops values that have left the window at `now`, then aggregates what is left. With
    /// `thin_is_unknown` (a rule that fires on too few values), a count is only known once the
    /// window has been watched for its whole length (since `since`).
    fn aggregate(
        &mut self,
        window: &Window,
        now: i64,
        since: i64,
        thin_is_unknown: bool,
    ) -> Option<f64> {
        let oldest = now.saturating_sub(millis(window.over));
        while let Some(&(at, value)) = self.values.front() {
            if at > oldest {
                break;
            }
            self.values.pop_front();
            self.sum -= value;
        }
        if self.values.is_empty() {
            // No rounding error survives an empty window.
            self.sum = 0.0;
        }
        while self.mins.front().is_some_and(|(at, _)| *at <= oldest) {
            self.mins.pop_front();
        }
        while self.maxs.front().is_some_and(|(at, _)| *at <= oldest) {
            self.maxs.pop_front();
        }
        let count = self.values.len();
        match window.aggregate {
            // Too few values is only known once the window has been watched for its whole
            // length: before that, an empty (or thin) window says "not yet", not "too few".
            Aggregate::Count
                if thin_is_unknown && now.saturating_sub(since) < millis(window.over) =>
            {
                None
            }
            Aggregate::Count => Some(count as f64),
            _ if count == 0 => None,
            Aggregate::Avg => Some(self.sum / count as f64),
            Aggregate::Min => self.mins.front().map(|(_, value)| *value),
            Aggregate::Max => self.maxs.front().map(|(_, value)| *value),
            Aggregate::Rate => {
                let (first_at, first) = *self.values.front()?;
                let (last_at, last) = *self.values.back()?;
                if last_at <= first_at {
                    return None;
                }
                Some((last - first) / ((last_at - first_at) as f64 / 1000.0))
            }
        }
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The aggregate by brute force over the values inside the window.
    fn naive(values: &[(i64, f64)], window: &Window, now: i64) -> Option<f64> {
        let oldest = now - millis(window.over);
        let inside: Vec<f64> = values
            .iter()
            .filter(|(at, _)| *at > oldest)
            .map(|(_, value)| *value)
            .collect();
        let kept: Vec<&(i64, f64)> = values.iter().filter(|(at, _)| *at > oldest).collect();
        match window.aggregate {
            Aggregate::Count => Some(inside.len() as f64),
            _ if inside.is_empty() => None,
            Aggregate::Avg => Some(inside.iter().sum::<f64>() / inside.len() as f64),
            Aggregate::Min => inside.iter().copied().reduce(f64::min),
            Aggregate::Max => inside.iter().copied().reduce(f64::max),
            Aggregate::Rate => {
                let (first, last) = (kept.first()?, kept.last()?);
                (last.0 > first.0)
                    .then(|| (last.1 - first.1) / ((last.0 - first.0) as f64 / 1000.0))
            }
        }
    }

    proptest! {
        #[test]
        fn sliding_aggregates_match_brute_force(
            steps in proptest::collection::vec((0i64..3000, -100i32..100), 1..200),
            over_ms in 1u64..10_000,
            which in 0usize..5,
        ) {
            let window = Window {
                over: Duration::from_millis(over_ms),
                aggregate: Aggregate::ALL[which].0,
            };
            let mut sliding = Sliding::default();
            let mut all = Vec::new();
            let mut now = 0;
            for (dt, value) in steps {
                now += dt;
                let value = f64::from(value) / 4.0;
                sliding.push(now, value);
                all.push((now, value));
                let got = sliding.aggregate(&window, now, i64::MIN, true);
                let want = naive(&all, &window, now);
                match (got, want) {
                    (Some(got), Some(want)) => prop_assert!((got - want).abs() < 1e-9, "{got} vs {want}"),
                    (got, want) => prop_assert_eq!(got, want),
                }
            }
        }
    }
}
