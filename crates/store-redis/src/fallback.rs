//! [`FallbackStore`]: a shared store with local memory behind it.

use crate::redis_store::{RedisConfig, RedisStore};
use async_trait::async_trait;
use nobounce_core::store::{Ban, BanRule, MemoryStore, StateStore, StoreError, Strike};
use std::{
    collections::BTreeMap,
    future::Future,
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant, SystemTime},
};

/// A change made locally during an outage, to replay on the shared store.
#[derive(Clone, Debug)]
enum Pending {
    Ban(Ban),
    Lift,
}

#[derive(Debug)]
struct Outage {
    since: Instant,
    /// When the next operation may try the shared store again.
    next_probe: Instant,
    /// The latest local ban or lift of each key during the outage.
    pending: BTreeMap<String, Pending>,
}

/// Where one operation goes.
enum Route {
    /// The shared store is up.
    Primary,
    /// The shared store is down but due for a try: push these first.
    Probe(Vec<(String, Pending)>),
    /// The shared store is down: local memory only.
    Local,
}

/// A shared store (by default [`RedisStore`]) with a local [`MemoryStore`]
/// behind it, so that an outage of the shared store never stops the policy
/// nor refuses mail. Its operations never fail.
///
/// While the shared store answers, every operation goes to it, and bans
/// seen there (made, set, or found by `ban_status`) are mirrored into local
/// memory, so that they still apply during an outage.
///
/// When an operation of the shared store fails (unreachable, timeout), the
/// outage begins: one `warn!` (event `store_unreachable`) and from then on
/// operations are served from local memory. Every `retry` interval one
/// operation tries the shared store again; when it succeeds the outage ends
/// with one `info!` (event `store_recovered`) and a resynchronisation:
///
/// - **merged**: the bans made (by strike or by hand) and the lifts done
///   locally during the outage, the latest per key. A pushed ban never
///   shortens a longer one already in the shared store; a lift removes the
///   shared ban, strikes and counter of its key.
/// - **not merged**: the distinct counters and strike counts of the outage
///   (the shared ones win; a ban pushed from an outage does not raise the
///   shared strike count), and bans the shared store lost by itself (say a
///   Redis restarted without persistence) unless they were made during the
///   outage.
///
/// The embedder should call [`MemoryStore::purge`] on [`Self::local`] now
/// and then.
#[derive(Debug)]
pub struct FallbackStore<P = RedisStore> {
    primary: P,
    local: MemoryStore,
    retry: Duration,
    // A std Mutex is right here: the state is read and changed in a few
    // instructions, never across an await.
    outage: Mutex<Option<Outage>>,
}

impl FallbackStore<RedisStore> {
    /// A Redis store for `config` with a default memory store behind it.
    pub fn redis(config: &RedisConfig) -> Result<Self, StoreError> {
        Ok(Self::new(
            RedisStore::new(config)?,
            MemoryStore::default(),
            config.retry,
        ))
    }
}

impl<P: StateStore> FallbackStore<P> {
    /// `primary` with `local` behind it; during an outage the primary is
    /// tried again at most once per `retry`.
    pub fn new(primary: P, local: MemoryStore, retry: Duration) -> Self {
        Self {
            primary,
            local,
            retry,
            outage: Mutex::new(None),
        }
    }

    /// The shared store.
    pub fn primary(&self) -> &P {
        &self.primary
    }

    /// The local memory store.
    pub fn local(&self) -> &MemoryStore {
        &self.local
    }

    /// `true` during an outage of the shared store.
    pub fn is_degraded(&self) -> bool {
        self.lock().is_some()
    }

    fn lock(&self) -> MutexGuard<'_, Option<Outage>> {
        // The state stays consistent at every instruction; a panic elsewhere
        // while holding the lock does not make it unusable.
        self.outage.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn route(&self) -> Route {
        let mut outage = self.lock();
        let Some(o) = outage.as_mut() else {
            return Route::Primary;
        };
        let now = Instant::now();
        if now < o.next_probe {
            return Route::Local;
        }
        o.next_probe = now + self.retry;
        Route::Probe(std::mem::take(&mut o.pending).into_iter().collect())
    }

    /// The shared store failed: start an outage (logged once) or go on with
    /// it, keeping `unpushed` changes for the next try.
    fn failed(&self, error: &StoreError, unpushed: Vec<(String, Pending)>) {
        let mut outage = self.lock();
        if outage.is_some() {
            tracing::debug!(event = "store_still_unreachable", error = %error);
        } else {
            tracing::warn!(
                event = "store_unreachable",
                error = %error,
                retry_ms = u64::try_from(self.retry.as_millis()).unwrap_or(u64::MAX),
                "shared store unreachable; counting and banning in local memory until it is back"
            );
        }
        let o = outage.get_or_insert_with(|| {
            let now = Instant::now();
            Outage {
                since: now,
                next_probe: now + self.retry,
                pending: BTreeMap::new(),
            }
        });
        for (key, change) in unpushed {
            // A change made while the push was under way is newer.
            o.pending.entry(key).or_insert(change);
        }
    }

    /// Records a local change during an outage; `false` if the outage ended
    /// meanwhile (the caller then pushes the change itself).
    fn record(&self, key: &str, change: Pending) -> bool {
        match self.lock().as_mut() {
            Some(o) => {
                o.pending.insert(key.to_owned(), change);
                true
            }
            None => false,
        }
    }

    /// Ends the outage after a successful probe and pushes what was recorded
    /// while the probe ran.
    async fn recovered(&self, pushed: usize, now: SystemTime) {
        let Some(o) = self.lock().take() else {
            return;
        };
        let late: Vec<_> = o.pending.into_iter().collect();
        tracing::info!(
            event = "store_recovered",
            outage_ms = u64::try_from(o.since.elapsed().as_millis()).unwrap_or(u64::MAX),
            pushed = pushed + late.len(),
            "shared store reachable again; local bans and lifts of the outage pushed to it"
        );
        if let Err((e, rest)) = self.push(late, now).await {
            self.failed(&e, rest);
        }
    }

    /// Replays local changes on the shared store, in key order; on failure
    /// returns the error and the changes not yet replayed.
    async fn push(
        &self,
        changes: Vec<(String, Pending)>,
        now: SystemTime,
    ) -> Result<usize, (StoreError, Vec<(String, Pending)>)> {
        let mut done = 0;
        let mut changes = changes.into_iter();
        while let Some((key, change)) = changes.next() {
            let result = match &change {
                Pending::Ban(ban) => self.push_ban(ban, now).await,
                Pending::Lift => self.primary.lift(&key, now).await,
            };
            if let Err(e) = result {
                let mut rest = vec![(key, change)];
                rest.extend(changes);
                return Err((e, rest));
            }
            done += 1;
        }
        Ok(done)
    }

    async fn push_ban(&self, ban: &Ban, now: SystemTime) -> Result<(), StoreError> {
        if ban.until <= now {
            return Ok(());
        }
        if let Some(shared) = self.primary.ban_status(&ban.key, now).await? {
            if shared.until >= ban.until {
                return Ok(());
            }
        }
        self.primary
            .ban(&ban.key, ban.until, &ban.reason, now)
            .await
    }

    /// Runs `op` on the shared store unless in an outage; `None` means
    /// "serve it locally".
    async fn shared<T, Fut>(&self, now: SystemTime, op: impl FnOnce() -> Fut) -> Option<T>
    where
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let pushed = match self.route() {
            Route::Local => return None,
            Route::Primary => None,
            Route::Probe(pending) => match self.push(pending, now).await {
                Ok(n) => Some(n),
                Err((e, rest)) => {
                    self.failed(&e, rest);
                    return None;
                }
            },
        };
        match op().await {
            Ok(v) => {
                if let Some(n) = pushed {
                    self.recovered(n, now).await;
                }
                Some(v)
            }
            Err(e) => {
                self.failed(&e, Vec::new());
                None
            }
        }
    }

    /// Records a local change, or pushes it if the outage just ended.
    async fn local_change(&self, key: &str, change: Pending, now: SystemTime) {
        if !self.record(key, change.clone()) {
            if let Err((e, rest)) = self.push(vec![(key.to_owned(), change)], now).await {
                self.failed(&e, rest);
            }
        }
    }
}

#[async_trait]
impl<P: StateStore> StateStore for FallbackStore<P> {
    async fn add_distinct(
        &self,
        key: &str,
        member: &str,
        window: Duration,
        now: SystemTime,
    ) -> Result<u64, StoreError> {
        let shared = self
            .shared(now, || self.primary.add_distinct(key, member, window, now))
            .await;
        match shared {
            Some(n) => Ok(n),
            None => self.local.add_distinct(key, member, window, now).await,
        }
    }

    async fn strike(
        &self,
        key: &str,
        rule: &BanRule,
        reason: &str,
        now: SystemTime,
    ) -> Result<Strike, StoreError> {
        if let Some(strike) = self
            .shared(now, || self.primary.strike(key, rule, reason, now))
            .await
        {
            self.local.mirror(&strike.ban, now);
            return Ok(strike);
        }
        let strike = self.local.strike(key, rule, reason, now).await?;
        if strike.new {
            self.local_change(key, Pending::Ban(strike.ban.clone()), now)
                .await;
        }
        Ok(strike)
    }

    async fn ban(
        &self,
        key: &str,
        until: SystemTime,
        reason: &str,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let shared = self
            .shared(now, || self.primary.ban(key, until, reason, now))
            .await;
        self.local.ban(key, until, reason, now).await?;
        if shared.is_none() {
            if let Some(ban) = self.local.ban_status(key, now).await? {
                self.local_change(key, Pending::Ban(ban), now).await;
            }
        }
        Ok(())
    }

    async fn ban_status(&self, key: &str, now: SystemTime) -> Result<Option<Ban>, StoreError> {
        match self.shared(now, || self.primary.ban_status(key, now)).await {
            Some(Some(ban)) => {
                self.local.mirror(&ban, now);
                Ok(Some(ban))
            }
            Some(None) => {
                // Lifted or ended in the shared store: drop any mirror.
                self.local.lift(key, now).await?;
                Ok(None)
            }
            None => self.local.ban_status(key, now).await,
        }
    }

    async fn lift(&self, key: &str, now: SystemTime) -> Result<(), StoreError> {
        let shared = self.shared(now, || self.primary.lift(key, now)).await;
        self.local.lift(key, now).await?;
        if shared.is_none() {
            self.local_change(key, Pending::Lift, now).await;
        }
        Ok(())
    }

    async fn list(&self, now: SystemTime) -> Result<Vec<Ban>, StoreError> {
        match self.shared(now, || self.primary.list(now)).await {
            Some(bans) => Ok(bans),
            None => self.local.list(now).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nobounce_core::store::from_millis;
    use nobounce_test_support::LogCapture;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// A primary that fails while `down` is set.
    #[derive(Debug, Default)]
    struct Flaky {
        inner: MemoryStore,
        down: AtomicBool,
        calls: AtomicUsize,
    }

    impl Flaky {
        fn check(&self) -> Result<(), StoreError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.down.load(Ordering::SeqCst) {
                Err(StoreError::new("connection refused"))
            } else {
                Ok(())
            }
        }
    }

    #[async_trait]
    impl StateStore for Flaky {
        async fn add_distinct(
            &self,
            key: &str,
            member: &str,
            window: Duration,
            now: SystemTime,
        ) -> Result<u64, StoreError> {
            self.check()?;
            self.inner.add_distinct(key, member, window, now).await
        }
        async fn strike(
            &self,
            key: &str,
            rule: &BanRule,
            reason: &str,
            now: SystemTime,
        ) -> Result<Strike, StoreError> {
            self.check()?;
            self.inner.strike(key, rule, reason, now).await
        }
        async fn ban(
            &self,
            key: &str,
            until: SystemTime,
            reason: &str,
            now: SystemTime,
        ) -> Result<(), StoreError> {
            self.check()?;
            self.inner.ban(key, until, reason, now).await
        }
        async fn ban_status(&self, key: &str, now: SystemTime) -> Result<Option<Ban>, StoreError> {
            self.check()?;
            self.inner.ban_status(key, now).await
        }
        async fn lift(&self, key: &str, now: SystemTime) -> Result<(), StoreError> {
            self.check()?;
            self.inner.lift(key, now).await
        }
        async fn list(&self, now: SystemTime) -> Result<Vec<Ban>, StoreError> {
            self.check()?;
            self.inner.list(now).await
        }
    }

    const HOUR: Duration = Duration::from_secs(3600);

    fn t0() -> SystemTime {
        from_millis(1_800_000_000_000)
    }

    fn rule() -> BanRule {
        BanRule {
            base: HOUR,
            escalate: true,
            max: 24 * HOUR,
            forget_after: 24 * HOUR,
        }
    }

    fn store(retry: Duration) -> FallbackStore<Flaky> {
        FallbackStore::new(Flaky::default(), MemoryStore::default(), retry)
    }

    #[tokio::test]
    async fn outage_is_served_locally_and_logged_once() {
        let logs = LogCapture::default();
        let _guard = logs.install();
        let s = store(Duration::ZERO);
        let banned = s.strike("k1", &rule(), "r", t0()).await.unwrap().ban;
        s.primary.down.store(true, Ordering::SeqCst);
        for i in 0..20 {
            let n = s
                .add_distinct("k2", &format!("m{i}"), HOUR, t0())
                .await
                .unwrap();
            assert_eq!(n, i + 1);
        }
        assert!(s.is_degraded());
        // The ban seen before the outage still applies.
        assert_eq!(s.ban_status("k1", t0()).await.unwrap(), Some(banned));
        assert_eq!(s.list(t0()).await.unwrap().len(), 1);
        assert_eq!(logs.count("store_unreachable"), 1, "one warning per outage");
        assert_eq!(logs.count("store_recovered"), 0);

        s.primary.down.store(false, Ordering::SeqCst);
        assert_eq!(s.add_distinct("k2", "x", HOUR, t0()).await.unwrap(), 1);
        assert!(!s.is_degraded());
        assert_eq!(logs.count("store_recovered"), 1);
        // A second outage is a new one, logged again.
        s.primary.down.store(true, Ordering::SeqCst);
        s.add_distinct("k2", "y", HOUR, t0()).await.unwrap();
        assert_eq!(logs.count("store_unreachable"), 2);
    }

    #[tokio::test]
    async fn recovery_pushes_the_bans_and_lifts_of_the_outage() {
        let s = store(Duration::ZERO);
        let shared = &s.primary.inner;
        s.strike("lifted", &rule(), "r", t0()).await.unwrap();
        s.primary.down.store(true, Ordering::SeqCst);

        s.lift("lifted", t0()).await.unwrap();
        let struck = s.strike("struck", &rule(), "dict", t0()).await.unwrap();
        assert!(struck.new);
        s.ban("by-hand", t0() + 2 * HOUR, "admin", t0())
            .await
            .unwrap();
        // Meanwhile another host banned "longer" for longer in the shared store.
        s.ban("longer", t0() + HOUR, "short", t0()).await.unwrap();
        shared
            .ban("longer", t0() + 5 * HOUR, "long", t0())
            .await
            .unwrap();
        // Nothing reached the shared store yet.
        assert!(shared.ban_status("lifted", t0()).await.unwrap().is_some());
        assert_eq!(shared.ban_status("struck", t0()).await.unwrap(), None);

        s.primary.down.store(false, Ordering::SeqCst);
        s.ban_status("anything", t0()).await.unwrap();
        assert!(!s.is_degraded());
        assert_eq!(shared.ban_status("lifted", t0()).await.unwrap(), None);
        let pushed = shared.ban_status("struck", t0()).await.unwrap().unwrap();
        assert_eq!(
            (pushed.until, pushed.reason.as_str()),
            (struck.ban.until, "dict")
        );
        let pushed = shared.ban_status("by-hand", t0()).await.unwrap().unwrap();
        assert_eq!(
            (pushed.until, pushed.reason.as_str()),
            (t0() + 2 * HOUR, "admin")
        );
        let kept = shared.ban_status("longer", t0()).await.unwrap().unwrap();
        assert_eq!(
            kept.reason, "long",
            "a pushed ban never shortens a longer one"
        );
    }

    #[tokio::test]
    async fn the_shared_store_is_tried_again_only_after_the_retry_interval() {
        let s = store(HOUR);
        s.primary.down.store(true, Ordering::SeqCst);
        s.add_distinct("k", "a", HOUR, t0()).await.unwrap();
        let calls = s.primary.calls.load(Ordering::SeqCst);
        s.primary.down.store(false, Ordering::SeqCst);
        for _ in 0..10 {
            s.add_distinct("k", "b", HOUR, t0()).await.unwrap();
        }
        assert_eq!(
            s.primary.calls.load(Ordering::SeqCst),
            calls,
            "no probe yet"
        );
        assert!(s.is_degraded());
    }

    #[tokio::test]
    async fn changes_survive_a_failed_probe() {
        let s = store(Duration::ZERO);
        s.primary.down.store(true, Ordering::SeqCst);
        let struck = s.strike("k", &rule(), "r", t0()).await.unwrap().ban;
        // Probes while still down: the pending ban must not be lost.
        for _ in 0..3 {
            assert_eq!(s.ban_status("k", t0()).await.unwrap(), Some(struck.clone()));
        }
        s.primary.down.store(false, Ordering::SeqCst);
        s.list(t0()).await.unwrap();
        assert_eq!(
            s.primary
                .inner
                .ban_status("k", t0())
                .await
                .unwrap()
                .map(|b| b.until),
            Some(struck.until)
        );
    }
}
