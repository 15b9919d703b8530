//! `edge-gateway rules test`: recorded events replayed through the rules, with their own
//! timestamps, printing each alert transition. How a user tries a rule before deploying it.
//!
//! Input is JSON Lines, one event per line, in the device format (`device`, `boot`, `seq`,
//! `readings`) with its time in `ts` (ms since the Unix epoch); uplink messages, which carry
//! `received_at`, work too. Time passes second by second between events, so `for`, windows and
//! silence behave as they would live.

use std::fmt::Write as _;

use super::engine::{Engine, Observation, Transition};
use super::model::Rule;
use crate::decode::{self, DeviceEvent};

/// Ticks simulated between two events at most; a longer gap is jumped over in one tick.
const MAX_TICKS_PER_GAP: i64 = 7 * 24 * 3600;

/// A line that could not be replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub message: String,
}

/// What a replay found.
#[derive(Debug, Default)]
pub struct Replay {
    /// Events replayed.
    pub events: usize,
    /// Every transition, in order.
    pub transitions: Vec<Transition>,
    /// Lines skipped, with the reason.
    pub errors: Vec<LineError>,
}

/// Replays `jsonl` through `rules`.
pub fn replay(rules: Vec<Rule>, jsonl: &str) -> Replay {
    let mut result = Replay::default();
    let mut engine: Option<Engine> = None;
    let mut rules = Some(rules);
    let mut clock: Option<i64> = None;
    for (index, line) in jsonl.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let (event, at) = match parse_line(line) {
            Ok(parsed) => parsed,
            Err(message) => {
                result.errors.push(LineError {
                    line: index + 1,
                    message,
                });
                continue;
            }
        };
        let engine =
            engine.get_or_insert_with(|| Engine::new(rules.take().unwrap_or_default(), at, 0));
        // Let time pass up to this event, a second at a time.
        if let Some(mut now) = clock {
            let steps = (at.saturating_sub(now) / 1000).clamp(0, MAX_TICKS_PER_GAP);
            for _ in 0..steps {
                now = now.saturating_add(1000);
                result.transitions.extend(engine.tick(now));
            }
        }
        result.transitions.extend(engine.tick(at));
        clock = Some(clock.map_or(at, |now| now.max(at)));
        result.transitions.extend(engine.observe(&Observation {
            device: &event.device,
            event_id: &event.id(),
            at_ms: at,
            readings: &event.readings,
        }));
        result.events += 1;
    }
    result
}

/// The event of one line and its time.
fn parse_line(line: &str) -> Result<(DeviceEvent, i64), String> {
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|error| format!("not JSON: {error}"))?;
    let at = ["ts", "received_at"]
        .iter()
        .find_map(|key| value.get(*key).and_then(serde_json::Value::as_i64))
        .ok_or("no time: give each event `ts` (ms since the Unix epoch)")?;
    let device = value
        .get("device")
        .and_then(serde_json::Value::as_str)
        .ok_or("no `device`")?;
    let event =
        decode::decode_payload(device, line.as_bytes()).map_err(|rejection| rejection.detail)?;
    Ok((event, at))
}

/// One line per transition, for people.
pub fn render(gateway: &str, transitions: &[Transition]) -> String {
    let mut out = String::new();
    for transition in transitions {
        let value = transition
            .value
            .map(|value| format!("  value={value}"))
            .unwrap_or_default();
        let event = transition
            .event_id
            .as_deref()
            .map(|event| format!("  event={event}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{}  {:<8}  {}  device={}  id={gateway}:alert:{}{value}{event}",
            utc(transition.at_ms),
            transition.state.as_str(),
            transition.rule,
            transition.device,
            transition.alert,
        );
    }
    out
}

/// `2026-11-27T10:00:00.000Z` for ms since the Unix epoch.
pub fn utc(ms: i64) -> String {
    let (days, ms_of_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        ms_of_day / 3_600_000,
        ms_of_day / 60_000 % 60,
        ms_of_day / 1000 % 60,
        ms_of_day % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    const CONFIG: &str = r#"
[gateway]
id = "gw"
[uplink]
url = "mqtt://127.0.0.1"
[devices]
listen = "127.0.0.1:1883"

[[rule]]
name = "hot"
devices = "g-*"
reading = "temp_c"
above = 35
clear_below = 33
for = "10s"
"#;

    #[test]
    fn times_render_in_utc() {
        assert_eq!(utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc(1_795_773_600_123), "2026-11-27T10:00:00.123Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn a_recording_replays_with_its_own_time() {
        let rules = config::parse(CONFIG, "test.toml").expect("config").rules;
        let t0 = 1_795_773_600_000_i64;
        let mut jsonl = String::new();
        for (second, temp) in [(0, 30.0), (5, 36.0), (8, 37.0), (30, 32.0)] {
            let _ = writeln!(
                jsonl,
                r#"{{"device":"g-1","boot":1,"seq":{second},"ts":{},"readings":{{"temp_c":{temp}}}}}"#,
                t0 + second * 1000
            );
        }
        jsonl.push_str("not json\n");
        jsonl.push_str(r#"{"device":"g-1","boot":1,"seq":99,"readings":{"temp_c":1}}"#);
        jsonl.push('\n');
        let result = replay(rules, &jsonl);
        assert_eq!(result.events, 4);
        assert_eq!(
            render("gw", &result.transitions),
            "2026-11-27T10:00:15.000Z  firing    hot  device=g-1  id=gw:alert:1  value=37  event=g-1:1:8\n\
             2026-11-27T10:00:30.000Z  resolved  hot  device=g-1  id=gw:alert:1  value=32  event=g-1:1:30\n",
            "fires 10 s after the condition began (on the clock, not at the next event)"
        );
        assert_eq!(
            result
                .errors
                .iter()
                .map(|error| error.line)
                .collect::<Vec<_>>(),
            [5, 6]
        );
        assert!(result.errors[1].message.contains("no time"));
    }
}
