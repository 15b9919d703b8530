//! Rule engine throughput: evaluations per second with 1 000 rules over 10 000 devices, and the
//! time an event spends in the engine with 100 rules.
//!
//! `cargo bench -p edge-gateway --bench rules` prints `result name=… value=… unit=…` lines.
//!
//! The rules are a realistic mix for a fleet in zones (`zone-{z}-{n}` devices): per zone, seven
//! thresholds on the latest value (some with `for`), two window aggregates, one silence rule.
//! Values wander so that some alerts fire and resolve along the way.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use edge_gateway::rules::{
    Aggregate, Bounds, Condition, DevicePattern, Engine, Observation, Rule, Severity, Window,
};

const DEVICES: usize = 10_000;
const ZONES: usize = 100;

fn threshold(reading: &str, above: f64, window: Option<Window>) -> Condition {
    Condition::Threshold {
        reading: reading.to_owned(),
        window,
        bounds: Bounds {
            above: Some(above),
            clear_below: above - 1.0,
            below: None,
            clear_above: f64::NEG_INFINITY,
        },
    }
}

/// `per_zone` rules for each of `zones` zones.
fn rules(zones: usize, per_zone: usize) -> Vec<Rule> {
    let mut rules = Vec::new();
    for zone in 0..zones {
        for n in 0..per_zone {
            let condition = match n % 10 {
                7 => threshold(
                    "temp_c",
                    30.0,
                    Some(Window {
                        over: Duration::from_secs(300),
                        aggregate: Aggregate::Avg,
                    }),
                ),
                8 => threshold(
                    "rh",
                    5.0,
                    Some(Window {
                        over: Duration::from_secs(60),
                        aggregate: Aggregate::Rate,
                    }),
                ),
                9 => Condition::Silent {
                    reading: None,
                    after: Duration::from_secs(600),
                },
                k => threshold(
                    if k % 2 == 0 { "temp_c" } else { "rh" },
                    30.0 + k as f64,
                    None,
                ),
            };
            rules.push(Rule {
                name: format!("zone {zone} rule {n}"),
                devices: DevicePattern::new(&format!("zone-{zone}-*")).expect("pattern"),
                condition,
                hold: Duration::from_secs(if n % 3 == 0 { 30 } else { 0 }),
                severity: Severity::Warning,
                cooldown: Duration::from_secs(60),
                labels: BTreeMap::new(),
            });
        }
    }
    rules
}

/// Feeds `events` events round-robin over the devices, one second of simulated time per device
/// round; returns (elapsed, transitions, evaluations).
fn run(
    engine: &mut Engine,
    zones: usize,
    events: usize,
    rules_per_device: usize,
) -> (Duration, usize, u64) {
    let devices: Vec<String> = (0..DEVICES)
        .map(|index| format!("zone-{}-{index}", index % zones))
        .collect();
    let ids: Vec<String> = (0..DEVICES)
        .map(|index| format!("zone-x-{index}:1:0"))
        .collect();
    let mut readings = vec![("temp_c".to_owned(), 0.0), ("rh".to_owned(), 0.0)];
    let mut transitions = 0;
    let started = Instant::now();
    let t0 = 1_795_773_600_000_i64;
    for n in 0..events {
        let device = n % DEVICES;
        let round = (n / DEVICES) as i64;
        let at = t0 + round * 1000 + (device as i64 % 1000);
        // A slow wave per device: now and then over a threshold.
        let phase = (round as f64 / 20.0 + device as f64).sin();
        readings[0].1 = 28.0 + 10.0 * phase;
        readings[1].1 = 50.0 + 30.0 * phase;
        transitions += engine
            .observe(&Observation {
                device: &devices[device],
                event_id: &ids[device],
                at_ms: at,
                readings: &readings,
            })
            .len();
        if device == DEVICES - 1 {
            transitions += engine.tick(at).len();
        }
    }
    let elapsed = started.elapsed();
    (elapsed, transitions, (events * rules_per_device) as u64)
}

fn main() {
    // 1 000 rules (10 per zone) over 10 000 devices (100 per zone): each event meets the 10
    // rules of its zone, and is matched against all 1 000 patterns.
    let mut engine = Engine::new(rules(ZONES, 10), 0, 0);
    run(&mut engine, ZONES, DEVICES * 2, 10); // warm up: every device's state exists
    let events = DEVICES * 30;
    let (elapsed, transitions, evaluations) = run(&mut engine, ZONES, events, 10);
    let seconds = elapsed.as_secs_f64();
    eprintln!(
        "1000 rules, {DEVICES} devices: {events} events in {seconds:.2} s, {transitions} transitions"
    );
    println!(
        "result name=rules_1000_events_per_s value={:.0} unit=events/s",
        events as f64 / seconds
    );
    println!(
        "result name=rules_1000_evaluations_per_s value={:.0} unit=evaluations/s",
        evaluations as f64 / seconds
    );

    // 100 rules (10 zones of 10, every device in one of them): the time an event spends in
    // the engine, meeting the 10 rules of its zone.
    let mut engine = Engine::new(rules(10, 10), 0, 0);
    run(&mut engine, 10, DEVICES * 2, 10);
    let events = DEVICES * 50;
    let (elapsed, _, _) = run(&mut engine, 10, events, 10);
    println!(
        "result name=rules_100_us_per_event value={:.3} unit=us",
        elapsed.as_secs_f64() * 1e6 / events as f64
    );
}
