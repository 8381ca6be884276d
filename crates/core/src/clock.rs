//! Time as a port: the engine never reads the system clock directly, so tests
//! can move time by hand.

use std::{
    fmt::Debug,
    sync::Mutex,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// A source of the current time.
pub trait Clock: Send + Sync + Debug {
    /// The current wall-clock time.
    fn now(&self) -> SystemTime;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that only moves when told to; for tests and simulations.
#[derive(Debug)]
pub struct ManualClock {
    // A std Mutex is right here: the critical section is a copy of a
    // SystemTime and never awaits.
    now: Mutex<SystemTime>,
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: SystemTime) -> Self {
        Self {
            now: Mutex::new(start),
        }
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        let mut now = self.now.lock().unwrap_or_else(|e| e.into_inner());
        *now += d;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.now.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Serialises a duration as humantime writes it (`"20s"`, `"1h"`, `"7days"`),
/// which the configuration file reads back.
pub fn serialize_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_duration(*d))
}

/// The last second RFC 3339 can write (9999-12-31T23:59:59Z).
const MAX_RFC3339_SECS: u64 = 253_402_300_799;

/// `t` in RFC 3339 UTC to the second, rounded up (a ban is never said to
/// end before it does): `2026-11-27T13:05:00Z`. Times before 1970 print as
/// the epoch, times after 9999 as its last second.
///
/// ```
/// use nobounce_core::clock::rfc3339_utc;
/// use std::time::{Duration, UNIX_EPOCH};
///
/// let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_001);
/// assert_eq!(rfc3339_utc(t), "2023-11-14T22:13:21Z");
/// ```
pub fn rfc3339_utc(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let mut secs = since.as_secs();
    if since.subsec_nanos() > 0 {
        secs = secs.saturating_add(1);
    }
    let t = UNIX_EPOCH + Duration::from_secs(secs.min(MAX_RFC3339_SECS));
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_instants() {
        for (ms, want) in [
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400_000, "2000-02-29T00:00:00Z"),
            (1_700_000_000_000, "2023-11-14T22:13:20Z"),
            (1_700_000_000_001, "2023-11-14T22:13:21Z"),
            (4_107_542_399_000, "2100-02-28T23:59:59Z"),
            (4_107_542_400_000, "2100-03-01T00:00:00Z"),
        ] {
            let t = UNIX_EPOCH + Duration::from_millis(ms);
            assert_eq!(rfc3339_utc(t), want, "{ms}");
        }
        assert_eq!(
            rfc3339_utc(UNIX_EPOCH - Duration::from_secs(5)),
            "1970-01-01T00:00:00Z"
        );
        assert_eq!(
            rfc3339_utc(UNIX_EPOCH + Duration::from_secs(400 * 365 * 86_400 * 100)),
            "9999-12-31T23:59:59Z"
        );
    }
}
