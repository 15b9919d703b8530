//! The engine with fake time: each case is a script of events and ticks, and the transitions it
//! must produce, in a compact form: `"firing greenhouse-1 @ 30000 = 36"`.

use std::collections::BTreeMap;
use std::time::Duration;

use super::*;

const SECOND: i64 = 1000;

fn rule(name: &str, devices: &str, condition: Condition) -> Rule {
    Rule {
        name: name.to_owned(),
        devices: DevicePattern::new(devices).expect("pattern"),
        condition,
        hold: Duration::ZERO,
        severity: Severity::Warning,
        cooldown: Duration::ZERO,
        labels: BTreeMap::new(),
    }
}

fn above(reading: &str, limit: f64, clear_below: f64) -> Condition {
    Condition::Threshold {
        reading: reading.to_owned(),
        window: None,
        bounds: Bounds {
            above: Some(limit),
            clear_below,
            below: None,
            clear_above: f64::NEG_INFINITY,
        },
    }
}

fn windowed(reading: &str, over_secs: u64, aggregate: Aggregate, limit: f64) -> Condition {
    Condition::Threshold {
        reading: reading.to_owned(),
        window: Some(Window {
            over: Duration::from_secs(over_secs),
            aggregate,
        }),
        bounds: Bounds {
            above: Some(limit),
            clear_below: limit,
            below: None,
            clear_above: f64::NEG_INFINITY,
        },
    }
}

/// One step of a script.
enum Step {
    /// An event: device, time (ms), readings.
    Event(&'static str, i64, &'static [(&'static str, f64)]),
    /// The clock reaches this time (ms).
    Tick(i64),
}
use Step::{Event, Tick};

/// Runs `steps` and returns every transition, summarised.
fn run(engine: &mut Engine, steps: &[Step]) -> Vec<String> {
    let mut out = Vec::new();
    for (n, step) in steps.iter().enumerate() {
        let transitions = match step {
            Event(device, at, readings) => {
                let readings: Vec<(String, f64)> = readings
                    .iter()
                    .map(|(name, value)| ((*name).to_owned(), *value))
                    .collect();
                let id = format!("{device}:1:{n}");
                engine.observe(&Observation {
                    device,
                    event_id: &id,
                    at_ms: *at,
                    readings: &readings,
                })
            }
            Tick(at) => engine.tick(*at),
        };
        out.extend(transitions.iter().map(summary));
    }
    out
}

fn summary(transition: &Transition) -> String {
    let value = transition
        .value
        .map(|value| format!(" = {value}"))
        .unwrap_or_default();
    format!(
        "{} {} {} @ {}{value}",
        transition.state.as_str(),
        transition.rule,
        transition.device,
        transition.at_ms
    )
}

#[test]
fn threshold_fires_once_and_resolves_with_hysteresis_at_the_boundary() {
    let mut engine = Engine::new(
        vec![rule("hot", "greenhouse-*", above("temp_c", 35.0, 33.0))],
        0,
        0,
    );
    let transitions = run(
        &mut engine,
        &[
            Event("greenhouse-1", SECOND, &[("temp_c", 35.0)]), // at the threshold: nothing
            Event("greenhouse-1", 2 * SECOND, &[("temp_c", 35.5)]), // fires
            Event("greenhouse-1", 3 * SECOND, &[("temp_c", 36.0)]), // still firing: no transition
            Event("greenhouse-1", 4 * SECOND, &[("temp_c", 34.0)]), // between clear and threshold
            Event("greenhouse-1", 5 * SECOND, &[("temp_c", 33.0)]), // at the clear level: holds
            Event("greenhouse-1", 6 * SECOND, &[("temp_c", 32.9)]), // clears
            Event("barn-1", 7 * SECOND, &[("temp_c", 50.0)]),   // not watched
            Event("greenhouse-1", 8 * SECOND, &[("rh", 99.0)]), // no temp_c: ignored
        ],
    );
    assert_eq!(
        transitions,
        [
            "firing hot greenhouse-1 @ 2000 = 35.5",
            "resolved hot greenhouse-1 @ 6000 = 32.9"
        ]
    );
}

#[test]
fn below_and_outside() {
    let cold = Condition::Threshold {
        reading: "temp_c".into(),
        window: None,
        bounds: Bounds {
            above: None,
            clear_below: f64::INFINITY,
            below: Some(5.0),
            clear_above: 7.0,
        },
    };
    let band = Condition::Threshold {
        reading: "rh".into(),
        window: None,
        bounds: Bounds {
            above: Some(80.0),
            clear_below: 78.0,
            below: Some(30.0),
            clear_above: 32.0,
        },
    };
    let mut engine = Engine::new(
        vec![rule("cold", "*", cold), rule("rh band", "*", band)],
        0,
        0,
    );
    let transitions = run(
        &mut engine,
        &[
            Event("d", SECOND, &[("temp_c", 4.0), ("rh", 50.0)]),
            Event("d", 2 * SECOND, &[("temp_c", 6.0), ("rh", 29.0)]),
            Event("d", 3 * SECOND, &[("temp_c", 7.5), ("rh", 31.0)]),
            Event("d", 4 * SECOND, &[("rh", 33.0)]),
            Event("d", 5 * SECOND, &[("rh", 81.0)]),
        ],
    );
    assert_eq!(
        transitions,
        [
            "firing cold d @ 1000 = 4",
            "firing rh band d @ 2000 = 29",
            "resolved cold d @ 3000 = 7.5",
            "resolved rh band d @ 4000 = 33",
            "firing rh band d @ 5000 = 81",
        ]
    );
}

#[test]
fn for_must_hold_and_starts_over_when_interrupted() {
    let mut hot = rule("hot", "*", above("temp_c", 35.0, 35.0));
    hot.hold = Duration::from_secs(30);
    let mut engine = Engine::new(vec![hot], 0, 0);
    let transitions = run(
        &mut engine,
        &[
            Event("d", 0, &[("temp_c", 36.0)]),           // pending from 0
            Tick(29 * SECOND),                            // not yet
            Event("d", 29_500, &[("temp_c", 34.0)]),      // interrupted
            Tick(31 * SECOND),                            // nothing: it starts over
            Event("d", 40 * SECOND, &[("temp_c", 36.0)]), // pending from 40 s
            Tick(69_999),                                 // 1 ms short
            Tick(70 * SECOND),                            // held 30 s: fires on the tick
            Event("d", 71 * SECOND, &[("temp_c", 37.0)]),
        ],
    );
    assert_eq!(transitions, ["firing hot d @ 70000 = 36"]);
    // The alert names the event that started the condition's last stretch.
    let mut engine = Engine::new(vec![rule("hot", "*", above("temp_c", 35.0, 35.0))], 0, 0);
    let fired = engine.observe(&Observation {
        device: "d",
        event_id: "d:1:7",
        at_ms: 0,
        readings: &[("temp_c".into(), 40.0)],
    });
    assert_eq!(fired[0].event_id.as_deref(), Some("d:1:7"));
}

#[test]
fn windows_at_their_edges() {
    let mut engine = Engine::new(
        vec![
            rule("avg", "*", windowed("t", 10, Aggregate::Avg, 20.0)),
            rule("count", "*", windowed("t", 10, Aggregate::Count, 2.0)),
            rule("rate", "*", windowed("t", 10, Aggregate::Rate, 1.0)),
        ],
        0,
        0,
    );
    let transitions = run(
        &mut engine,
        &[
            Event("d", 0, &[("t", 10.0)]),
            Event("d", 5 * SECOND, &[("t", 25.0)]), // avg 17.5; rate 3/s: rate fires; count 2
            Event("d", 9 * SECOND, &[("t", 30.0)]), // avg 21.7: fires; count 3: fires
            // At 10 s the first value (at 0) is exactly one window old: it leaves.
            Tick(10 * SECOND), // avg 27.5; count 2: count resolves; rate 1.25
            Tick(15 * SECOND), // only the value at 9 s: count 1, rate none
            Tick(19_999),
            Tick(20 * SECOND), // empty: avg has nothing, count 0
        ],
    );
    assert_eq!(
        transitions,
        [
            "firing rate d @ 5000 = 3",
            "firing avg d @ 9000 = 21.666666666666668",
            "firing count d @ 9000 = 3",
            "resolved count d @ 15000 = 1",
        ]
    );
    // Rate and avg have no value once too few remain: they keep their state until one comes.
    let transitions = run(&mut engine, &[Event("d", 21 * SECOND, &[("t", 0.0)])]);
    assert_eq!(transitions, ["resolved avg d @ 21000 = 0"]);
}

#[test]
fn silence_fires_after_its_duration_and_resolves_on_the_next_event() {
    let silent = Condition::Silent {
        reading: None,
        after: Duration::from_secs(60),
    };
    let named = Condition::Silent {
        reading: Some("rh".into()),
        after: Duration::from_secs(60),
    };
    let mut engine = Engine::new(
        vec![
            rule("silent", "greenhouse-*", silent),
            rule("no rh", "barn-1", named),
        ],
        0,
        0,
    );
    let transitions = run(
        &mut engine,
        &[
            // barn-1 is named exactly: expected from the start, heard of or not.
            Tick(59 * SECOND),
            Tick(60 * SECOND),
            Event("greenhouse-1", 61 * SECOND, &[("t", 1.0)]),
            Event("barn-1", 62 * SECOND, &[("t", 1.0)]), // no rh: still silent for that rule
            Tick(120 * SECOND),                          // greenhouse-1 heard at 61 s: not yet
            Tick(121 * SECOND),                          // 60 s of silence: fires once
            Tick(200 * SECOND),
            Event("greenhouse-1", 201 * SECOND, &[("t", 1.0)]),
            Event("barn-1", 202 * SECOND, &[("rh", 40.0)]),
        ],
    );
    assert_eq!(
        transitions,
        [
            "firing no rh barn-1 @ 60000",
            "firing silent greenhouse-1 @ 121000",
            "resolved silent greenhouse-1 @ 201000",
            "resolved no rh barn-1 @ 202000",
        ]
    );
}

#[test]
fn cooldown_keeps_a_resolved_alert_quiet() {
    let mut hot = rule("hot", "*", above("temp_c", 35.0, 35.0));
    hot.cooldown = Duration::from_secs(60);
    let mut engine = Engine::new(vec![hot], 0, 0);
    let transitions = run(
        &mut engine,
        &[
            Event("d", 0, &[("temp_c", 36.0)]),
            Event("d", 10 * SECOND, &[("temp_c", 30.0)]), // resolves; quiet until 70 s
            Event("d", 20 * SECOND, &[("temp_c", 40.0)]), // within the cooldown: nothing
            Event("d", 69_999, &[("temp_c", 40.0)]),
            Event("d", 70 * SECOND, &[("temp_c", 40.0)]), // cooldown over: a new episode
        ],
    );
    assert_eq!(
        transitions,
        [
            "firing hot d @ 0 = 36",
            "resolved hot d @ 10000 = 30",
            "firing hot d @ 70000 = 40",
        ]
    );
}

#[test]
fn each_episode_gets_a_new_alert_number_per_rule_and_device() {
    let mut engine = Engine::new(vec![rule("hot", "*", above("t", 1.0, 1.0))], 0, 41);
    let mut alerts = Vec::new();
    for (device, at, value) in [("a", 0, 2.0), ("b", 1, 2.0), ("a", 2, 0.0), ("a", 3, 2.0)] {
        let readings = [("t".to_owned(), value)];
        for transition in engine.observe(&Observation {
            device,
            event_id: "x",
            at_ms: at,
            readings: &readings,
        }) {
            alerts.push((transition.device, transition.state, transition.alert));
        }
    }
    assert_eq!(
        alerts,
        [
            ("a".to_owned(), AlertState::Firing, 42),
            ("b".to_owned(), AlertState::Firing, 43),
            ("a".to_owned(), AlertState::Resolved, 42),
            ("a".to_owned(), AlertState::Firing, 44),
        ]
    );
    assert_eq!(engine.last_alert(), 44);
}

#[test]
fn reload_keeps_the_state_of_unchanged_rules_and_resolves_the_rest() {
    let hot = rule("hot", "*", above("t", 30.0, 30.0));
    let cold = rule("cold", "*", above("c", 1.0, 1.0));
    let mut engine = Engine::new(vec![hot.clone(), cold], 0, 0);
    let fired = run(&mut engine, &[Event("d", 0, &[("t", 31.0), ("c", 2.0)])]);
    assert_eq!(fired, ["firing hot d @ 0 = 31", "firing cold d @ 0 = 2"]);
    // `hot` unchanged, `cold` changed: its alert is resolved, its state starts over.
    let changed = rule("cold", "*", above("c", 5.0, 5.0));
    let resolved = engine.reload(vec![hot, changed], SECOND);
    assert_eq!(
        resolved.iter().map(summary).collect::<Vec<_>>(),
        ["resolved cold d @ 1000"]
    );
    let after = run(
        &mut engine,
        &[Event("d", 2 * SECOND, &[("t", 32.0), ("c", 6.0)])],
    );
    assert_eq!(
        after,
        ["firing cold d @ 2000 = 6"],
        "hot is still firing from before the reload: no new transition"
    );
}

#[test]
fn a_count_below_waits_for_a_whole_window() {
    let too_few = Condition::Threshold {
        reading: "t".into(),
        window: Some(Window {
            over: Duration::from_secs(60),
            aggregate: Aggregate::Count,
        }),
        bounds: Bounds {
            above: None,
            clear_below: f64::INFINITY,
            below: Some(3.0),
            clear_above: 3.0,
        },
    };
    let mut engine = Engine::new(vec![rule("too few", "d", too_few)], 0, 0);
    let transitions = run(
        &mut engine,
        &[
            Event("d", SECOND, &[("t", 1.0)]), // first seen at 1 s: the window is not whole yet
            Event("d", 30 * SECOND, &[("t", 1.0)]),
            Tick(60 * SECOND),
            Tick(61 * SECOND), // whole 60 s after the device was first seen: 1 value < 3
        ],
    );
    assert_eq!(transitions, ["firing too few d @ 61000 = 1"]);
}

#[test]
fn an_alert_restored_for_a_removed_rule_is_resolved() {
    let mut engine = Engine::new(vec![rule("hot", "*", above("t", 1.0, 1.0))], 0, 7);
    assert_eq!(
        engine.restore_firing("hot", "d", 5, 0),
        None,
        "its rule goes on"
    );
    let orphan = engine.restore_firing("gone", "d", 6, 0).expect("resolved");
    assert_eq!((orphan.alert, orphan.state), (6, AlertState::Resolved));
    // The restored alert resolves under its own number; new ones come after the last seen.
    let resolved = run(&mut engine, &[Event("d", SECOND, &[("t", 0.0)])]);
    assert_eq!(resolved, ["resolved hot d @ 1000 = 0"]);
    assert_eq!(engine.last_alert(), 7);
}
