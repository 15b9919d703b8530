//! Human-readable durations (`"30s"`, `"1h30m"`) and sizes (`"512MiB"`, `"10MB"`) as written in
//! the configuration file.

use std::time::Duration;

use super::error::UnitError;

const DURATION_UNITS: &str = "ms, s, m, h or d";
const SIZE_UNITS: &str = "B, kB, MB, GB, TB, KiB, MiB, GiB or TiB";

/// Duration units, largest first, in milliseconds.
const DURATION_SCALE: [(&str, u64); 5] = [
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

const SIZE_SCALE: [(&str, u64); 9] = [
    ("B", 1),
    ("kB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("TB", 1_000_000_000_000),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("TiB", 1 << 40),
];

/// Parses one or more `<integer><unit>` parts, units from largest to smallest, e.g. `"1h30m"`.
pub(super) fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let syntax = UnitError::Syntax {
        units: DURATION_UNITS,
    };
    if text.is_empty() {
        return Err(syntax);
    }
    let mut rest = text;
    let mut total: u64 = 0;
    // Index into DURATION_SCALE of the next unit allowed, so each appears once and in order.
    let mut next_unit = 0;
    while !rest.is_empty() {
        let (count, after_count) = split_count(rest, syntax)?;
        let unit_len = after_count
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(after_count.len());
        let (unit, after_unit) = after_count.split_at(unit_len);
        let position = DURATION_SCALE
            .iter()
            .position(|(name, _)| *name == unit)
            .ok_or(syntax)?;
        if position < next_unit {
            return Err(UnitError::Order);
        }
        next_unit = position + 1;
        let millis = count
            .checked_mul(DURATION_SCALE[position].1)
            .ok_or(UnitError::Overflow)?;
        total = total.checked_add(millis).ok_or(UnitError::Overflow)?;
        rest = after_unit;
    }
    Ok(Duration::from_millis(total))
}

/// Parses `<integer>` (bytes) or `<integer><unit>`, e.g. `"512MiB"`, `"10MB"`, `"1000"`.
pub(super) fn parse_size(text: &str) -> Result<u64, UnitError> {
    let syntax = UnitError::Syntax { units: SIZE_UNITS };
    let (count, unit) = split_count(text, syntax)?;
    let scale = if unit.is_empty() {
        1
    } else {
        SIZE_SCALE
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|(_, scale)| *scale)
            .ok_or(syntax)?
    };
    count.checked_mul(scale).ok_or(UnitError::Overflow)
}

/// Splits the leading ASCII digits off `text` and parses them; `syntax` if there are none.
fn split_count(text: &str, syntax: UnitError) -> Result<(u64, &str), UnitError> {
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    if digits == 0 {
        return Err(syntax);
    }
    let (count, rest) = text.split_at(digits);
    // Only ASCII digits remain, so the only way parsing fails is a count beyond `u64`.
    let count = count.parse().map_err(|_| UnitError::Overflow)?;
    Ok((count, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let good = [
            ("0s", Duration::ZERO),
            ("250ms", Duration::from_millis(250)),
            ("30s", Duration::from_secs(30)),
            ("5m", Duration::from_secs(300)),
            ("2h", Duration::from_secs(7_200)),
            ("7d", Duration::from_secs(604_800)),
            ("1h30m", Duration::from_secs(5_400)),
            ("1d2h3m4s5ms", Duration::from_millis(93_784_005)),
            ("1500ms", Duration::from_millis(1_500)),
        ];
        for (text, expected) in good {
            assert_eq!(parse_duration(text), Ok(expected), "{text}");
        }
        let syntax = UnitError::Syntax {
            units: DURATION_UNITS,
        };
        let bad = [
            ("", syntax),
            ("5", syntax),
            ("s", syntax),
            ("-5s", syntax),
            ("+5s", syntax),
            ("5 minutes", syntax),
            ("5 s", syntax),
            (" 5s", syntax),
            ("5s ", syntax),
            ("1.5s", syntax),
            ("5w", syntax),
            ("5S", syntax),
            ("5sec", syntax),
            ("1h30", syntax),
            ("30m1h", UnitError::Order),
            ("5s5s", UnitError::Order),
            ("99999999999999999999s", UnitError::Overflow),
            ("18446744073709551615d", UnitError::Overflow),
            ("18446744073709551615ms1ms", UnitError::Order),
            ("213503982334d15h", UnitError::Overflow),
        ];
        for (text, expected) in bad {
            assert_eq!(parse_duration(text), Err(expected), "{text:?}");
        }
    }

    #[test]
    fn sizes() {
        let good = [
            ("0", 0),
            ("1000", 1_000),
            ("1000B", 1_000),
            ("10kB", 10_000),
            ("10MB", 10_000_000),
            ("2GB", 2_000_000_000),
            ("1TB", 1_000_000_000_000),
            ("64KiB", 65_536),
            ("512MiB", 536_870_912),
            ("1GiB", 1_073_741_824),
            ("1TiB", 1_099_511_627_776),
            ("18446744073709551615", u64::MAX),
        ];
        for (text, expected) in good {
            assert_eq!(parse_size(text), Ok(expected), "{text}");
        }
        let syntax = UnitError::Syntax { units: SIZE_UNITS };
        let bad = [
            ("", syntax),
            ("MiB", syntax),
            ("-1", syntax),
            ("1.5GiB", syntax),
            ("512 MiB", syntax),
            ("512mib", syntax),
            ("10KB", syntax),
            ("10kb", syntax),
            ("1PiB", syntax),
            ("1MiB1KiB", syntax),
            ("18446744073709551616", UnitError::Overflow),
            ("16777216TiB", UnitError::Overflow),
        ];
        for (text, expected) in bad {
            assert_eq!(parse_size(text), Err(expected), "{text:?}");
        }
    }

    #[test]
    fn messages_list_the_units() {
        assert_eq!(
            parse_duration("5 minutes").map_err(|error| error.to_string()),
            Err("expected a number followed by ms, s, m, h or d".to_owned())
        );
        assert_eq!(
            parse_size("5 bytes").map_err(|error| error.to_string()),
            Err("expected a number followed by B, kB, MB, GB, TB, KiB, MiB, GiB or TiB".to_owned())
        );
    }
}
