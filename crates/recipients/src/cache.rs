//! A bounded cache of directory answers with one TTL per kind of answer.
//!
//! Errors are never cached. Quota answers depend on the message size, so an
//! entry remembers the size it was asked with:
//!
//! - `Deliverable` for size *s* also answers queries for sizes ≤ *s*
//!   (a smaller message fits too);
//! - `OverQuota` for size *s* also answers queries for sizes ≥ *s*;
//! - `Unknown` and `Disabled` do not depend on the size;
//! - an answer obtained without telling the backend any size (the server
//!   did not advertise `SIZE`) answers every size.
//!
//! Defaults (see [`CacheConfig`]) are deliberately short for quota: quota
//! changes within minutes as users delete mail, unlike existence. For
//! comparison, Postfix address verification keeps positive answers 31 days
//! and negative ones 3 days, and Exim callouts 24 h / 2 h: far too long for
//! a mailbox that fills up and empties.

use lru::LruCache;
use nobounce_core::{clock::serialize_duration, Clock, RecipientStatus};
use serde::Serialize;
use std::{
    num::NonZeroUsize,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

/// Cache settings of a network backend (`[recipients.backends.NAME.cache]`).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct CacheConfig {
    /// Maximum number of addresses kept (least recently used go first).
    /// `0` disables the cache. Default: `10000`.
    pub capacity: usize,
    /// How long a "deliverable" answer is kept. Default: 60 s.
    #[serde(serialize_with = "serialize_duration")]
    pub deliverable_ttl: Duration,
    /// How long an "unknown" or "disabled" answer is kept. A mailbox created
    /// meanwhile is refused (with a 5xx the sender sees) until it expires,
    /// or until nobounce restarts. Default: 10 minutes.
    #[serde(serialize_with = "serialize_duration")]
    pub unknown_ttl: Duration,
    /// How long an "over quota" answer is kept. Default: 30 s.
    #[serde(serialize_with = "serialize_duration")]
    pub over_quota_ttl: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            capacity: 10_000,
            deliverable_ttl: Duration::from_secs(60),
            unknown_ttl: Duration::from_secs(600),
            over_quota_ttl: Duration::from_secs(30),
        }
    }
}

#[derive(Clone, Debug)]
struct Entry {
    status: RecipientStatus,
    /// The size the backend was told; `None` when the answer does not
    /// depend on it.
    size: Option<u64>,
    stored: SystemTime,
    expires: SystemTime,
}

/// The cache itself; cheap to share.
#[derive(Debug)]
pub(crate) struct StatusCache {
    config: CacheConfig,
    clock: Arc<dyn Clock>,
    // A std Mutex is right: every critical section is a hash-map operation
    // and never awaits.
    entries: Option<Mutex<LruCache<String, Entry>>>,
}

impl StatusCache {
    pub(crate) fn new(config: CacheConfig, clock: Arc<dyn Clock>) -> Self {
        let entries = NonZeroUsize::new(config.capacity).map(|n| Mutex::new(LruCache::new(n)));
        Self {
            config,
            clock,
            entries,
        }
    }

    fn ttl(&self, status: &RecipientStatus) -> Duration {
        match status {
            RecipientStatus::Deliverable => self.config.deliverable_ttl,
            RecipientStatus::Unknown | RecipientStatus::Disabled => self.config.unknown_ttl,
            RecipientStatus::OverQuota { .. } => self.config.over_quota_ttl,
            RecipientStatus::NotHandled => Duration::ZERO,
        }
    }

    /// A cached answer for `key` and a message of `size` bytes, if any.
    pub(crate) fn get(&self, key: &str, size: Option<u64>) -> Option<RecipientStatus> {
        let entries = self.entries.as_ref()?;
        let now = self.clock.now();
        let mut entries = entries.lock().unwrap_or_else(|e| e.into_inner());
        let entry = entries.get(key)?;
        // A clock that went backwards invalidates the entry too.
        if now >= entry.expires || now < entry.stored {
            entries.pop(key);
            return None;
        }
        let asked = size.unwrap_or(0);
        let applies = match (&entry.status, entry.size) {
            (_, None) => true,
            (RecipientStatus::Deliverable, Some(s)) => asked <= s,
            (RecipientStatus::OverQuota { .. }, Some(s)) => asked >= s,
            (RecipientStatus::Unknown | RecipientStatus::Disabled, _) => true,
            (RecipientStatus::NotHandled, _) => false,
        };
        applies.then(|| entry.status.clone())
    }

    /// Remembers an answer. `size` is the size the backend was told, or
    /// `None` if the answer does not depend on the size.
    pub(crate) fn put(&self, key: &str, size: Option<u64>, status: &RecipientStatus) {
        let Some(entries) = &self.entries else { return };
        let ttl = self.ttl(status);
        if ttl.is_zero() {
            return;
        }
        let now = self.clock.now();
        let Some(expires) = now.checked_add(ttl) else {
            return;
        };
        let size = match status {
            RecipientStatus::Unknown | RecipientStatus::Disabled => None,
            _ => size,
        };
        entries.lock().unwrap_or_else(|e| e.into_inner()).put(
            key.to_owned(),
            Entry {
                status: status.clone(),
                size,
                stored: now,
                expires,
            },
        );
    }

    /// Forgets everything.
    #[cfg(test)]
    pub(crate) fn clear(&self) {
        if let Some(entries) = &self.entries {
            entries.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nobounce_core::ManualClock;

    fn cache(clock: &Arc<ManualClock>) -> StatusCache {
        StatusCache::new(CacheConfig::default(), Arc::clone(clock) as Arc<dyn Clock>)
    }

    fn clock() -> Arc<ManualClock> {
        Arc::new(ManualClock::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000),
        ))
    }

    #[test]
    fn ttls_differ_by_answer() {
        let clock = clock();
        let cache = cache(&clock);
        let over = RecipientStatus::OverQuota { room_left: None };
        cache.put("d@x", None, &RecipientStatus::Deliverable);
        cache.put("u@x", None, &RecipientStatus::Unknown);
        cache.put("q@x", None, &over);
        cache.put("n@x", None, &RecipientStatus::NotHandled);
        assert_eq!(cache.get("n@x", None), None, "NotHandled is not cached");

        clock.advance(Duration::from_secs(29));
        assert_eq!(cache.get("q@x", None), Some(over.clone()));
        clock.advance(Duration::from_secs(1));
        assert_eq!(
            cache.get("q@x", None),
            None,
            "over quota expires after 30 s"
        );
        assert_eq!(cache.get("d@x", None), Some(RecipientStatus::Deliverable));
        clock.advance(Duration::from_secs(30));
        assert_eq!(
            cache.get("d@x", None),
            None,
            "deliverable expires after 60 s"
        );
        assert_eq!(cache.get("u@x", None), Some(RecipientStatus::Unknown));
        clock.advance(Duration::from_secs(540));
        assert_eq!(cache.get("u@x", None), None, "unknown expires after 10 min");
    }

    #[test]
    fn size_dependent_answers_only_cover_compatible_sizes() {
        let clock = clock();
        let cache = cache(&clock);
        cache.put("d@x", Some(1000), &RecipientStatus::Deliverable);
        assert_eq!(
            cache.get("d@x", Some(500)),
            Some(RecipientStatus::Deliverable)
        );
        assert_eq!(cache.get("d@x", None), Some(RecipientStatus::Deliverable));
        assert_eq!(cache.get("d@x", Some(1001)), None);

        let over = RecipientStatus::OverQuota {
            room_left: Some(10),
        };
        cache.put("q@x", Some(1000), &over);
        assert_eq!(cache.get("q@x", Some(5000)), Some(over.clone()));
        assert_eq!(cache.get("q@x", Some(999)), None);

        cache.put("u@x", Some(1000), &RecipientStatus::Unknown);
        assert_eq!(cache.get("u@x", Some(1)), Some(RecipientStatus::Unknown));
    }

    #[test]
    fn clock_going_back_invalidates() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let clock = Arc::new(ManualClock::new(start));
        let cache = cache(&clock);
        cache.put("d@x", None, &RecipientStatus::Deliverable);
        let earlier = Arc::new(ManualClock::new(start - Duration::from_secs(3600)));
        let cache2 = StatusCache {
            clock: earlier as Arc<dyn Clock>,
            ..cache
        };
        assert_eq!(cache2.get("d@x", None), None);
    }

    #[test]
    fn capacity_bounds_and_zero_disables() {
        let clock = clock();
        let small = StatusCache::new(
            CacheConfig {
                capacity: 2,
                ..CacheConfig::default()
            },
            Arc::clone(&clock) as Arc<dyn Clock>,
        );
        small.put("a@x", None, &RecipientStatus::Deliverable);
        small.put("b@x", None, &RecipientStatus::Deliverable);
        small.put("c@x", None, &RecipientStatus::Deliverable);
        assert_eq!(small.get("a@x", None), None, "least recently used evicted");
        assert!(small.get("c@x", None).is_some());
        small.clear();
        assert_eq!(small.get("c@x", None), None);

        let off = StatusCache::new(
            CacheConfig {
                capacity: 0,
                ..CacheConfig::default()
            },
            clock as Arc<dyn Clock>,
        );
        off.put("a@x", None, &RecipientStatus::Deliverable);
        assert_eq!(off.get("a@x", None), None);
    }
}
