//! Durations in the configuration: `"250ms"`, `"30s"`, `"10m"`, `"1h"`,
//! `"2d"`, or a bare integer meaning seconds.
//!
//! Use with `#[serde(with = "crate::duration")]`.

use serde::{de, Deserializer, Serializer};
use std::{fmt, time::Duration};

/// Parses `"250ms"`, `"30s"`, `"10m"`, `"1h"`, `"2d"` or `"30"` (seconds).
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    if digits.is_empty() {
        return Err(format!(
            "invalid duration {text:?}: expected a number with unit ms, s, m, h or d"
        ));
    }
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("invalid duration {text:?}: number too large"))?;
    let secs = |factor: u64| {
        n.checked_mul(factor)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("invalid duration {text:?}: too large"))
    };
    match unit.trim() {
        "ms" => Ok(Duration::from_millis(n)),
        "" | "s" => secs(1),
        "m" => secs(60),
        "h" => secs(3600),
        "d" => secs(86400),
        other => Err(format!(
            "invalid duration {text:?}: unknown unit {other:?} (use ms, s, m, h or d)"
        )),
    }
}

/// Formats a duration the way [`parse`] reads it, in the largest exact unit.
pub fn format(d: Duration) -> String {
    if d.subsec_nanos() != 0 || d.as_secs() == 0 {
        return format!("{}ms", d.as_millis());
    }
    let s = d.as_secs();
    for (unit, factor) in [("d", 86400), ("h", 3600), ("m", 60)] {
        if s.is_multiple_of(factor) {
            return format!("{}{unit}", s / factor);
        }
    }
    format!("{s}s")
}

/// Serde `serialize` for `with = "crate::duration"`.
pub fn serialize<S: Serializer>(d: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format(*d))
}

/// Serde `deserialize` for `with = "crate::duration"`.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    struct Visitor;
    impl de::Visitor<'_> for Visitor {
        type Value = Duration;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration such as \"30s\", \"10m\", \"250ms\", or seconds as an integer")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
            Ok(Duration::from_secs(v))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
            u64::try_from(v)
                .map(Duration::from_secs)
                .map_err(|_| E::custom("a duration cannot be negative"))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            parse(v).map_err(E::custom)
        }
    }
    deserializer.deserialize_any(Visitor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_round_trips() {
        for (text, d) in [
            ("250ms", Duration::from_millis(250)),
            ("30s", Duration::from_secs(30)),
            ("30", Duration::from_secs(30)),
            ("10m", Duration::from_secs(600)),
            ("1h", Duration::from_secs(3600)),
            ("2d", Duration::from_secs(172_800)),
            ("0s", Duration::ZERO),
        ] {
            assert_eq!(parse(text), Ok(d), "{text}");
            assert_eq!(parse(&format(d)), Ok(d), "{text} round trip");
        }
        assert_eq!(format(Duration::from_secs(90)), "90s");
        assert_eq!(format(Duration::from_secs(600)), "10m");
        for bad in ["", "s", "10w", "-5s", "1.5s", "99999999999999999999s"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
