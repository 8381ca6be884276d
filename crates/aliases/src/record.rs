//! How an [`Alias`](nobounce_core::alias::Alias)'s fields are written in
//! the stores: times as whole milliseconds since the Unix epoch, the
//! correspondent's domains as a JSON array of strings.

use nobounce_core::store::{from_millis, to_millis};
use std::time::SystemTime;

/// `t` in whole milliseconds, as SQLite's signed integer.
pub(crate) fn millis_to_sql(t: SystemTime) -> i64 {
    i64::try_from(to_millis(t)).unwrap_or(i64::MAX)
}

/// A time read from SQLite (negative values, which nobounce never writes,
/// are the epoch).
pub(crate) fn millis_from_sql(ms: i64) -> SystemTime {
    from_millis(u64::try_from(ms).unwrap_or(0))
}

/// The domains as a JSON array.
pub(crate) fn encode_domains(domains: &[String]) -> String {
    serde_json::to_string(domains).unwrap_or_else(|_| "[]".to_owned())
}

/// The domains from a JSON array.
pub(crate) fn decode_domains(text: &str) -> Result<Vec<String>, String> {
    serde_json::from_str(text).map_err(|e| format!("corrupt domain list {text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn fields_round_trip() {
        let d = vec!["shop.example".to_string(), "a \"b\"".to_string()];
        assert_eq!(decode_domains(&encode_domains(&d)).unwrap(), d);
        assert!(decode_domains("shop.example").is_err());
        let t = UNIX_EPOCH + Duration::from_millis(1_800_000_000_123);
        assert_eq!(millis_from_sql(millis_to_sql(t)), t);
        assert_eq!(millis_from_sql(-5), UNIX_EPOCH);
    }
}
