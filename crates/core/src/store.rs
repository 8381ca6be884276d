//! Shared state as a port: distinct-member counters and client bans.
//!
//! The dictionary-attack policy ([`crate::dictionary`]) counts the distinct
//! unknown recipients a client tries and bans it for a while when there are
//! too many. Several MX hosts of one domain must agree on those counts and
//! bans, so they live behind the [`StateStore`] trait: [`MemoryStore`] (this
//! module) serves a single host with nothing but the binary; a Redis store
//! (crate `nobounce-store-redis`) shares the state between hosts.
//!
//! # Rules every implementation keeps
//!
//! - **Time comes in as `now`.** Whether a ban is active, a strike is still
//!   remembered or a member is still inside its window is judged against the
//!   `now` the caller passes, never against a clock of the store. All hosts
//!   with synchronised clocks therefore agree, and tests drive stores with a
//!   virtual clock. Backends that expire data by themselves (Redis TTLs) set
//!   the expiry from the same `now`, so data leaves by itself when it is no
//!   longer of use.
//! - **Every operation is atomic.** N hosts calling [`StateStore::add_distinct`]
//!   at once get N different counts; two hosts striking the same client at
//!   once produce one ban, not two strikes (see [`StateStore::strike`]).
//! - **Times are kept to the millisecond.** `until` values are whole
//!   milliseconds since the Unix epoch (see [`to_millis`], [`from_millis`]),
//!   the same in every backend.
//! - **`Err` means the store failed** ([`StoreError`]): unreachable, timed
//!   out, corrupt. Callers never refuse mail because of it; they carry on as
//!   if the client were not banned.
//!
//! # Keys
//!
//! The three kinds of state of one client (its distinct counter, its ban and
//! its strike count) share one key, for example `192.0.2.1` or
//! `2001:db8::/64`, so that [`StateStore::lift`] can forgive a client
//! entirely and [`StateStore::strike`] can reset its counter.

use async_trait::async_trait;
use lru::LruCache;
use std::{
    collections::HashMap,
    fmt::Debug,
    num::NonZeroUsize,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

#[cfg(any(test, feature = "store-contract"))]
pub mod contract;

/// How many distinct members one counter keeps at most.
///
/// A counter that reaches this many members in its window keeps only the
/// most recent ones, so [`StateStore::add_distinct`] never returns more than
/// this. It bounds the memory one client can make a store use; thresholds
/// must stay below it.
pub const MAX_DISTINCT_MEMBERS: u64 = 1000;

pub use crate::error::StoreError;

/// An active ban of one client key.
#[derive(Clone, Debug, Eq, Hash, PartialEq)]
pub struct Ban {
    /// The client key (an address or a network, see the module docs).
    pub key: String,
    /// When the ban ends (whole milliseconds).
    pub until: SystemTime,
    /// Why the client was banned, for logs and the reply text.
    pub reason: String,
    /// How many strikes the client had when it was banned (1 for a first
    /// offence; 0 for a ban set by hand on a client without strikes).
    pub strikes: u32,
}

/// How long a ban lasts, by strike.
///
/// The first strike bans for `base`; with `escalate`, each further strike
/// (while earlier ones are remembered) doubles the ban, up to `max`. A strike
/// is remembered until `forget_after` has passed since the end of the ban it
/// caused.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct BanRule {
    /// The length of a first ban.
    pub base: Duration,
    /// Whether repeat offences double the ban.
    pub escalate: bool,
    /// The longest ban escalation gives (never less than `base`).
    pub max: Duration,
    /// How long a strike is remembered after its ban ends.
    pub forget_after: Duration,
}

impl BanRule {
    /// The length of the ban for the `strikes`-th strike, in milliseconds.
    ///
    /// Every backend computes exactly this (the Redis one in Lua).
    ///
    /// ```
    /// use nobounce_core::store::BanRule;
    /// use std::time::Duration;
    ///
    /// let rule = BanRule {
    ///     base: Duration::from_secs(3600),
    ///     escalate: true,
    ///     max: Duration::from_secs(86400),
    ///     forget_after: Duration::from_secs(86400),
    /// };
    /// assert_eq!(rule.ban_millis(1), 3_600_000);
    /// assert_eq!(rule.ban_millis(2), 7_200_000);
    /// assert_eq!(rule.ban_millis(6), 86_400_000); // 32 h capped to 24 h
    /// ```
    pub fn ban_millis(&self, strikes: u32) -> u64 {
        let base = duration_millis(self.base);
        let cap = duration_millis(self.max).max(base);
        if !self.escalate {
            return base;
        }
        let mut d = base;
        for _ in 1..strikes {
            if d >= cap {
                break;
            }
            d = d.saturating_mul(2);
        }
        d.min(cap)
    }
}

/// The outcome of [`StateStore::strike`].
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Strike {
    /// The client's active ban.
    pub ban: Ban,
    /// `true` if this call made the ban; `false` if the client was already
    /// banned (by this host or another one) and nothing changed.
    pub new: bool,
}

/// Shared state for policies that span connections and hosts.
///
/// All methods are atomic (see the module docs). Implementations are cheap
/// to share behind an `Arc` and do their own timeouts: a slow backend must
/// fail fast rather than stall the SMTP dialog.
#[async_trait]
pub trait StateStore: Send + Sync + Debug {
    /// Adds `member` to the distinct counter of `key` and returns how many
    /// distinct members were added within `window` before `now` (this one
    /// included), at most [`MAX_DISTINCT_MEMBERS`].
    ///
    /// A member counts while its latest addition is less than `window` old:
    /// adding the same member again refreshes it but does not count twice.
    async fn add_distinct(
        &self,
        key: &str,
        member: &str,
        window: Duration,
        now: SystemTime,
    ) -> Result<u64, StoreError>;

    /// Strikes `key`: bans it for as long as `rule` says for its strike count.
    ///
    /// If `key` is already banned at `now`, returns that ban unchanged with
    /// `new: false` (so two hosts striking at once make one ban and one
    /// strike). Otherwise adds a strike to the remembered ones, bans for
    /// [`BanRule::ban_millis`] of the new count, remembers the strike until
    /// `forget_after` past the end of the ban, and clears the distinct
    /// counter of `key` so counting starts afresh after the ban.
    async fn strike(
        &self,
        key: &str,
        rule: &BanRule,
        reason: &str,
        now: SystemTime,
    ) -> Result<Strike, StoreError>;

    /// Bans `key` until `until` (set by hand, or replayed from elsewhere),
    /// replacing any ban it has. Adds no strike: the ban carries the strike
    /// count remembered at `now`. An `until` not after `now` does nothing.
    async fn ban(
        &self,
        key: &str,
        until: SystemTime,
        reason: &str,
        now: SystemTime,
    ) -> Result<(), StoreError>;

    /// The ban of `key` active at `now`, if any.
    async fn ban_status(&self, key: &str, now: SystemTime) -> Result<Option<Ban>, StoreError>;

    /// Forgives `key`: removes its ban, its strikes and its distinct counter.
    ///
    /// `now` orders the lift against other operations in stores that record
    /// and replay them.
    async fn lift(&self, key: &str, now: SystemTime) -> Result<(), StoreError>;

    /// All bans active at `now`, sorted by key.
    async fn list(&self, now: SystemTime) -> Result<Vec<Ban>, StoreError>;

    /// Keeps the record `value` under `key` until `ttl` after `now`,
    /// replacing any record of `key` (what the bounce guard remembers of an
    /// accepted message). A zero `ttl` removes the record.
    async fn put_record(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<(), StoreError>;

    /// The record of `key`, unless it expired by `now`.
    async fn get_record(&self, key: &str, now: SystemTime) -> Result<Option<String>, StoreError>;
}

/// Whole milliseconds since the Unix epoch (0 for earlier times, saturating
/// far in the future).
pub fn to_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(duration_millis)
        .unwrap_or(0)
}

/// The time `ms` milliseconds after the Unix epoch.
pub fn from_millis(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// A duration in whole milliseconds, saturating.
pub fn duration_millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Bans sorted by key, as [`StateStore::list`] returns them.
pub fn sorted_by_key(mut bans: Vec<Ban>) -> Vec<Ban> {
    bans.sort_by(|a, b| a.key.cmp(&b.key));
    bans
}

/// What [`MemoryStore`] keeps for one key. Times in ms since the epoch.
#[derive(Debug, Default)]
struct Entry {
    /// Distinct members with the time each was last added, and the window
    /// they were last counted with.
    seen: HashMap<String, u64>,
    seen_window: u64,
    ban: Option<BanRecord>,
    /// Strike count and when it is forgotten.
    strikes: Option<(u32, u64)>,
    /// A record and when it expires.
    record: Option<(String, u64)>,
}

#[derive(Debug)]
struct BanRecord {
    until: u64,
    reason: String,
    strikes: u32,
}

impl Entry {
    /// Drops what has expired at `now`.
    fn expire(&mut self, now: u64) {
        let cutoff = now.saturating_sub(self.seen_window);
        self.seen.retain(|_, &mut at| at > cutoff);
        if self.ban.as_ref().is_some_and(|b| b.until <= now) {
            self.ban = None;
        }
        if self.strikes.is_some_and(|(_, forget)| forget <= now) {
            self.strikes = None;
        }
        if self.record.as_ref().is_some_and(|(_, until)| *until <= now) {
            self.record = None;
        }
    }

    fn is_empty(&self) -> bool {
        self.seen.is_empty()
            && self.ban.is_none()
            && self.strikes.is_none()
            && self.record.is_none()
    }

    fn live_strikes(&self, now: u64) -> u32 {
        match self.strikes {
            Some((n, forget)) if forget > now => n,
            _ => 0,
        }
    }

    fn active_ban(&self, key: &str, now: u64) -> Option<Ban> {
        self.ban.as_ref().filter(|b| b.until > now).map(|b| Ban {
            key: key.to_owned(),
            until: from_millis(b.until),
            reason: b.reason.clone(),
            strikes: b.strikes,
        })
    }
}

/// A [`StateStore`] in this process's memory: for a single MX host, and as
/// the local fallback of shared stores.
///
/// Memory is bounded: at most `max_keys` client keys are kept (the least
/// recently used one without an active ban goes when a new one comes), and
/// each counter keeps at most [`MAX_DISTINCT_MEMBERS`] members. An active
/// ban is never evicted (issue 13, defect 6): when every key holds one, the
/// store grows by the keys it needs, and gives the room back once the bans
/// are over and [`MemoryStore::purge`] ran. Bans are short and one is won
/// only by crossing the threshold, so their number stays small. Expired data goes lazily when its
/// key is touched, and all of it when [`MemoryStore::purge`] is called
/// (the embedder calls it now and then, say every minute).
///
/// Cloning gives another handle on the same state.
#[derive(Clone, Debug)]
pub struct MemoryStore {
    // A std Mutex is right here: every critical section is a few map
    // operations that never await and never block, and core depends on no
    // async runtime. An async mutex would only add overhead.
    inner: Arc<Mutex<LruCache<String, Entry>>>,
    /// The configured bound (the cache's capacity grows past it only for
    /// active bans).
    max_keys: NonZeroUsize,
}

impl MemoryStore {
    /// The default bound on client keys; roughly 10 kB each at worst.
    pub const DEFAULT_MAX_KEYS: usize = 65_536;

    /// A store keeping at most `max_keys` client keys.
    pub fn new(max_keys: NonZeroUsize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(LruCache::new(max_keys))),
            max_keys,
        }
    }

    /// Removes everything that has expired at `now`; returns how many keys
    /// went.
    pub fn purge(&self, now: SystemTime) -> usize {
        let now = to_millis(now);
        let mut map = self.lock();
        let mut dead = Vec::new();
        for (key, entry) in map.iter_mut() {
            entry.expire(now);
            if entry.is_empty() {
                dead.push(key.clone());
            }
        }
        for key in &dead {
            map.pop(key);
        }
        // Give back the room lent to bans that are over.
        if map.cap() > self.max_keys && map.len() <= self.max_keys.get() {
            map.resize(self.max_keys);
        }
        dead.len()
    }

    /// How many keys are held, expired ones included until purged.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// `true` when no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records `ban` as it is (strike count included), replacing any ban of
    /// its key; does nothing if it is not active at `now`.
    ///
    /// For mirroring bans learnt from a shared store into a local fallback.
    pub fn mirror(&self, ban: &Ban, now: SystemTime) {
        let now = to_millis(now);
        let until = to_millis(ban.until);
        if until <= now {
            return;
        }
        self.with_entry(&ban.key, now, |e| {
            e.ban = Some(BanRecord {
                until,
                reason: ban.reason.clone(),
                strikes: ban.strikes,
            });
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<String, Entry>> {
        // A panic while holding the lock cannot leave an entry half-updated
        // in a way that matters (worst case: one counter off by one), so a
        // poisoned lock is used as is.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the entry of `key` (created if absent, expired parts
    /// dropped first), evicting the least recently used key if full.
    fn with_entry<T>(&self, key: &str, now: u64, f: impl FnOnce(&mut Entry) -> T) -> T {
        let mut map = self.lock();
        if !map.contains(key) {
            if map.len() >= map.cap().get() {
                Self::make_room(&mut map, now);
            }
            map.put(key.to_owned(), Entry::default());
        }
        let entry = map.get_mut(key).expect("the key was just inserted");
        entry.expire(now);
        let out = f(entry);
        if entry.is_empty() {
            map.pop(key);
        }
        out
    }

    /// Evicts the least recently used key without an active ban; when every
    /// key holds one, grows the cache by one instead. Banned keys met on the
    /// way are moved to the front, so the next search does not meet them.
    fn make_room(map: &mut LruCache<String, Entry>, now: u64) {
        for _ in 0..map.len() {
            let Some((key, entry)) = map.peek_lru() else {
                break;
            };
            if entry.ban.as_ref().is_some_and(|b| b.until > now) {
                let key = key.clone();
                map.promote(&key);
                continue;
            }
            if let Some((old, _)) = map.pop_lru() {
                tracing::debug!(event = "store_evict", key = %old, "memory store full, evicted least recently used key");
            }
            return;
        }
        let grown = NonZeroUsize::new(map.cap().get() + 1).expect("one more than a capacity");
        tracing::debug!(
            event = "store_grow",
            keys = grown.get(),
            "memory store full of active bans, growing"
        );
        map.resize(grown);
    }

    /// Runs `f` on the entry of `key` if there is one, without creating it.
    fn peek_entry<T>(&self, key: &str, now: u64, f: impl FnOnce(&Entry) -> T) -> Option<T> {
        let mut map = self.lock();
        let entry = map.get_mut(key)?;
        entry.expire(now);
        if entry.is_empty() {
            map.pop(key);
            return None;
        }
        Some(f(entry))
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new(NonZeroUsize::new(Self::DEFAULT_MAX_KEYS).expect("the default is not zero"))
    }
}

#[async_trait]
impl StateStore for MemoryStore {
    async fn add_distinct(
        &self,
        key: &str,
        member: &str,
        window: Duration,
        now: SystemTime,
    ) -> Result<u64, StoreError> {
        let now = to_millis(now);
        let window = duration_millis(window);
        Ok(self.with_entry(key, now, |e| {
            e.seen_window = window;
            e.expire(now);
            if window == 0 {
                return 0;
            }
            let at = e.seen.entry(member.to_owned()).or_insert(now);
            *at = (*at).max(now);
            let cap = usize::try_from(MAX_DISTINCT_MEMBERS).unwrap_or(usize::MAX);
            while e.seen.len() > cap {
                let oldest = e
                    .seen
                    .iter()
                    .min_by_key(|(m, &at)| (at, (*m).clone()))
                    .map(|(m, _)| m.clone())
                    .expect("the map is not empty");
                e.seen.remove(&oldest);
            }
            e.seen.len() as u64
        }))
    }

    async fn strike(
        &self,
        key: &str,
        rule: &BanRule,
        reason: &str,
        now: SystemTime,
    ) -> Result<Strike, StoreError> {
        let now = to_millis(now);
        Ok(self.with_entry(key, now, |e| {
            if let Some(ban) = e.active_ban(key, now) {
                return Strike { ban, new: false };
            }
            let strikes = e.live_strikes(now).saturating_add(1);
            let until = now.saturating_add(rule.ban_millis(strikes));
            e.ban = Some(BanRecord {
                until,
                reason: reason.to_owned(),
                strikes,
            });
            e.strikes = Some((
                strikes,
                until.saturating_add(duration_millis(rule.forget_after)),
            ));
            e.seen.clear();
            Strike {
                ban: e.active_ban(key, now).expect("the ban was just set"),
                new: true,
            }
        }))
    }

    async fn ban(
        &self,
        key: &str,
        until: SystemTime,
        reason: &str,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let now = to_millis(now);
        let until = to_millis(until);
        if until <= now {
            return Ok(());
        }
        self.with_entry(key, now, |e| {
            e.ban = Some(BanRecord {
                until,
                reason: reason.to_owned(),
                strikes: e.live_strikes(now),
            });
        });
        Ok(())
    }

    async fn ban_status(&self, key: &str, now: SystemTime) -> Result<Option<Ban>, StoreError> {
        let now = to_millis(now);
        Ok(self
            .peek_entry(key, now, |e| e.active_ban(key, now))
            .flatten())
    }

    async fn lift(&self, key: &str, _now: SystemTime) -> Result<(), StoreError> {
        self.lock().pop(key);
        Ok(())
    }

    async fn list(&self, now: SystemTime) -> Result<Vec<Ban>, StoreError> {
        let now = to_millis(now);
        let map = self.lock();
        let bans: Vec<Ban> = map
            .iter()
            .filter_map(|(key, e)| e.active_ban(key, now))
            .collect();
        Ok(sorted_by_key(bans))
    }

    async fn put_record(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let now = to_millis(now);
        let until = now.saturating_add(duration_millis(ttl));
        self.with_entry(key, now, |e| {
            e.record = (until > now).then(|| (value.to_owned(), until));
        });
        Ok(())
    }

    async fn get_record(&self, key: &str, now: SystemTime) -> Result<Option<String>, StoreError> {
        let now = to_millis(now);
        Ok(self
            .peek_entry(key, now, |e| e.record.as_ref().map(|(v, _)| v.clone()))
            .flatten())
    }
}

/// The store of a dry-run engine: reads the shared store, writes only to
/// a private memory store (issue 13, defect 10). A dry-run host thus counts
/// and "bans" for its own logs, sees the bans of the production hosts, and
/// never bans anyone for them.
#[derive(Debug)]
pub struct DryRunStore {
    shared: Arc<dyn StateStore>,
    local: MemoryStore,
}

impl DryRunStore {
    /// Reads `shared`, writes a private memory store.
    pub fn new(shared: Arc<dyn StateStore>) -> Self {
        Self {
            shared,
            local: MemoryStore::default(),
        }
    }
}

#[async_trait]
impl StateStore for DryRunStore {
    async fn add_distinct(
        &self,
        key: &str,
        member: &str,
        window: Duration,
        now: SystemTime,
    ) -> Result<u64, StoreError> {
        self.local.add_distinct(key, member, window, now).await
    }

    async fn strike(
        &self,
        key: &str,
        rule: &BanRule,
        reason: &str,
        now: SystemTime,
    ) -> Result<Strike, StoreError> {
        self.local.strike(key, rule, reason, now).await
    }

    async fn ban(
        &self,
        key: &str,
        until: SystemTime,
        reason: &str,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        self.local.ban(key, until, reason, now).await
    }

    async fn ban_status(&self, key: &str, now: SystemTime) -> Result<Option<Ban>, StoreError> {
        match self.local.ban_status(key, now).await? {
            Some(ban) => Ok(Some(ban)),
            None => self.shared.ban_status(key, now).await,
        }
    }

    async fn lift(&self, key: &str, now: SystemTime) -> Result<(), StoreError> {
        self.local.lift(key, now).await
    }

    async fn list(&self, now: SystemTime) -> Result<Vec<Ban>, StoreError> {
        let mut bans = self.shared.list(now).await?;
        for ban in self.local.list(now).await? {
            if !bans.iter().any(|b| b.key == ban.key) {
                bans.push(ban);
            }
        }
        Ok(sorted_by_key(bans))
    }

    async fn put_record(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        self.local.put_record(key, value, ttl, now).await
    }

    async fn get_record(&self, key: &str, now: SystemTime) -> Result<Option<String>, StoreError> {
        match self.local.get_record(key, now).await? {
            Some(v) => Ok(Some(v)),
            None => self.shared.get_record(key, now).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> SystemTime {
        from_millis(1_800_000_000_000)
    }

    #[tokio::test]
    async fn memory_store_passes_the_contract() {
        contract::run_all(|| async {
            let s = MemoryStore::default();
            (s.clone(), s)
        })
        .await;
    }

    #[tokio::test]
    async fn least_recently_used_key_is_evicted_when_full() {
        let s = MemoryStore::new(NonZeroUsize::new(2).unwrap());
        let w = Duration::from_secs(60);
        s.add_distinct("a", "x", w, t0()).await.unwrap();
        s.add_distinct("b", "x", w, t0()).await.unwrap();
        // Touch "a" so that "b" is the least recently used.
        s.add_distinct("a", "y", w, t0()).await.unwrap();
        s.add_distinct("c", "x", w, t0()).await.unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s.add_distinct("a", "z", w, t0()).await.unwrap(), 3);
        assert_eq!(s.add_distinct("b", "y", w, t0()).await.unwrap(), 1);
    }

    /// Issue 13, defect 6: a full store evicted active bans, manual ones
    /// included, to make room for new counters. Bans are never evicted now.
    #[tokio::test]
    async fn issue13_active_bans_are_never_evicted() {
        let s = MemoryStore::new(NonZeroUsize::new(3).unwrap());
        let w = Duration::from_secs(60);
        let until = t0() + Duration::from_secs(3600);
        for key in ["ban1", "ban2", "ban3"] {
            s.ban(key, until, "by hand", t0()).await.unwrap();
        }
        for i in 0..50 {
            s.add_distinct(&format!("counter{i}"), "x", w, t0())
                .await
                .unwrap();
        }
        for key in ["ban1", "ban2", "ban3"] {
            assert!(
                s.ban_status(key, t0()).await.unwrap().is_some(),
                "{key} was evicted"
            );
        }
        // Counters still make room for one another, and the store does not
        // grow past its bans plus room for counting.
        assert!(s.len() <= 4, "{}", s.len());
        assert_eq!(s.add_distinct("counter49", "y", w, t0()).await.unwrap(), 2);
        // Once the bans are over, purge gives the room back.
        s.purge(until);
        assert!(s.len() <= 3, "{}", s.len());
    }

    #[tokio::test]
    async fn purge_removes_expired_keys_only() {
        let s = MemoryStore::default();
        let rule = BanRule {
            base: Duration::from_secs(100),
            escalate: false,
            max: Duration::from_secs(100),
            forget_after: Duration::from_secs(10),
        };
        s.add_distinct("counted", "m", Duration::from_secs(10), t0())
            .await
            .unwrap();
        s.strike("banned", &rule, "r", t0()).await.unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s.purge(t0() + Duration::from_secs(11)), 1);
        assert_eq!(s.len(), 1);
        // The ban ends at 100 s, its strike is forgotten at 110 s.
        assert_eq!(s.purge(t0() + Duration::from_secs(105)), 0);
        assert_eq!(s.purge(t0() + Duration::from_secs(110)), 1);
        assert!(s.is_empty());
    }

    #[tokio::test]
    async fn members_per_key_are_capped() {
        let s = MemoryStore::default();
        let w = Duration::from_secs(60);
        let mut last = 0;
        for i in 0..MAX_DISTINCT_MEMBERS + 5 {
            last = s
                .add_distinct("k", &format!("m{i}"), w, t0() + Duration::from_millis(i))
                .await
                .unwrap();
        }
        assert_eq!(last, MAX_DISTINCT_MEMBERS);
        // The oldest members went: re-adding m0 counts it as new again
        // (and pushes out the next oldest).
        assert_eq!(
            s.add_distinct("k", "m0", w, t0() + Duration::from_secs(2))
                .await
                .unwrap(),
            MAX_DISTINCT_MEMBERS
        );
    }

    #[test]
    fn ban_millis_doubles_up_to_the_cap() {
        let rule = BanRule {
            base: Duration::from_secs(3),
            escalate: true,
            max: Duration::from_secs(10),
            forget_after: Duration::ZERO,
        };
        let got: Vec<u64> = (1..=5).map(|n| rule.ban_millis(n)).collect();
        assert_eq!(got, [3000, 6000, 10000, 10000, 10000]);
        assert_eq!(rule.ban_millis(u32::MAX), 10000);
        let flat = BanRule {
            escalate: false,
            ..rule
        };
        assert_eq!(flat.ban_millis(4), 3000);
        let small_cap = BanRule {
            max: Duration::from_secs(1),
            ..rule
        };
        assert_eq!(small_cap.ban_millis(3), 3000, "the cap never shortens base");
    }
}
