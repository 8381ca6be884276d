//! [`FallbackStore`]: a shared store with local memory behind it.

use crate::redis_store::{RedisConfig, RedisStore};
use async_trait::async_trait;
use nobounce_core::store::{Ban, BanRule, MemoryStore, StateStore, StoreError, Strike};
use std::{
    collections::BTreeMap,
    future::Future,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant, SystemTime},
};

/// The most changes of one outage kept for replay. A longer outage keeps
/// its bans locally but stops queueing them (logged once): the replay after
/// it stays bounded in time.
pub const MAX_PENDING: usize = 100_000;

/// Changes replayed on the shared store per batch of a recovery.
const BATCH: usize = 256;

/// The key a recovery probe reads: any read tells that the store answers.
const PROBE_KEY: &str = "__nobounce_probe__";

/// A change made locally during an outage, to replay on the shared store.
#[derive(Clone, Debug)]
enum Pending {
    Ban(Ban),
    Lift,
}

#[derive(Debug)]
struct Outage {
    since: Instant,
    /// When the shared store may be tried again.
    next_probe: Instant,
    /// A background recovery is under way.
    recovering: bool,
    /// The latest local ban or lift of each key during the outage.
    pending: BTreeMap<String, Pending>,
    /// Changes not queued because `pending` was full.
    dropped: u64,
}

/// Where one operation goes.
enum Route {
    /// The shared store is up.
    Primary,
    /// The shared store is down (or being recovered): local memory only.
    Local,
}

#[derive(Debug)]
struct Inner<P> {
    primary: P,
    local: MemoryStore,
    retry: Duration,
    // A std Mutex is right here: the state is read and changed in a few
    // instructions, never across an await.
    outage: Mutex<Option<Outage>>,
}

/// A shared store (by default [`RedisStore`]) with a local [`MemoryStore`]
/// behind it, so that an outage of the shared store never stops the policy
/// nor refuses mail. Its operations never fail.
///
/// While the shared store answers, every operation goes to it, and bans
/// seen there (made, set, or found by `ban_status`) are mirrored into local
/// memory, so that they still apply during an outage. Mirrors of bans that
/// the shared store no longer has (lifted with `nobounce ban lift`, which
/// talks to Redis directly) are dropped by [`Self::reconcile`], which
/// [`Self::spawn_maintenance`] runs every `retry` interval, so a lifted ban
/// does not come back in the next outage.
///
/// When an operation of the shared store fails (unreachable, timeout), the
/// outage begins: one `warn!` (event `store_unreachable`) and from then on
/// operations are served from local memory. Every `retry` interval a
/// background task tries the shared store again; once it answers, the task
/// replays the outage's changes in batches, and the outage ends with one
/// `info!` (event `store_recovered`) when all are pushed. SMTP commands
/// never wait for a replay (issue 13, item 9); at most [`MAX_PENDING`]
/// changes are queued.
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
/// Background work needs a tokio runtime; without one, a recovery runs
/// inline in the operation that finds the store due for a try. The
/// embedder should call [`MemoryStore::purge`] on [`Self::local`] now and
/// then. Clones share the same state.
#[derive(Debug)]
pub struct FallbackStore<P = RedisStore> {
    inner: Arc<Inner<P>>,
}

impl<P> Clone for FallbackStore<P> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
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

impl<P: StateStore + 'static> FallbackStore<P> {
    /// `primary` with `local` behind it; during an outage the primary is
    /// tried again at most once per `retry`.
    pub fn new(primary: P, local: MemoryStore, retry: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                primary,
                local,
                retry,
                outage: Mutex::new(None),
            }),
        }
    }

    /// The shared store.
    pub fn primary(&self) -> &P {
        &self.inner.primary
    }

    /// The local memory store.
    pub fn local(&self) -> &MemoryStore {
        &self.inner.local
    }

    /// `true` during an outage of the shared store (recovery included).
    pub fn is_degraded(&self) -> bool {
        self.inner.lock().is_some()
    }

    /// How many changes wait for the shared store.
    pub fn pending(&self) -> usize {
        self.inner.lock().as_ref().map_or(0, |o| o.pending.len())
    }

    /// Every `retry` interval (at least every second): drops stale mirrors
    /// while the shared store is up ([`Self::reconcile`]), and tries to
    /// recover during an outage. Runs until the task is aborted.
    pub fn spawn_maintenance(&self) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        let every = self.inner.retry.max(Duration::from_secs(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if store.is_degraded() {
                    let _ = store.route();
                } else {
                    store.reconcile(SystemTime::now()).await;
                }
            }
        })
    }

    /// Drops the local mirrors of bans the shared store no longer has (a
    /// ban lifted there by another program). Does nothing during an outage.
    pub async fn reconcile(&self, now: SystemTime) {
        let Ok(local) = self.inner.local.list(now).await else {
            return;
        };
        if local.is_empty() || self.is_degraded() {
            return;
        }
        let shared = match self.inner.primary.list(now).await {
            Ok(bans) => bans,
            Err(e) => {
                self.inner.failed(&e, Vec::new(), self.inner.retry);
                return;
            }
        };
        for ban in local {
            if !shared.iter().any(|b| b.key == ban.key) && !self.is_degraded() {
                tracing::debug!(event = "store_mirror_dropped", key = %ban.key, "ban lifted in the shared store; local mirror dropped");
                let _ = self.inner.local.lift(&ban.key, now).await;
            }
        }
    }

    /// Where the next operation goes; starts a recovery when one is due.
    fn route(&self) -> Route {
        let mut outage = self.inner.lock();
        let Some(o) = outage.as_mut() else {
            return Route::Primary;
        };
        let now = Instant::now();
        if o.recovering || now < o.next_probe {
            return Route::Local;
        }
        o.recovering = true;
        o.next_probe = now + self.inner.retry;
        drop(outage);
        let inner = Arc::clone(&self.inner);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move { inner.recover().await });
            }
            // No runtime to run it in the background: the caller does not
            // block on it either, it just stays local until a runtime runs
            // an operation.
            Err(_) => self
                .inner
                .lock()
                .as_mut()
                .map_or((), |o| o.recovering = false),
        }
        Route::Local
    }

    /// Runs `op` on the shared store unless in an outage; `None` means
    /// "serve it locally".
    async fn shared<T, Fut>(&self, op: impl FnOnce() -> Fut) -> Option<T>
    where
        Fut: Future<Output = Result<T, StoreError>>,
    {
        match self.route() {
            Route::Local => None,
            Route::Primary => match op().await {
                Ok(v) => Some(v),
                Err(e) => {
                    self.inner.failed(&e, Vec::new(), self.inner.retry);
                    None
                }
            },
        }
    }

    /// Records a local change of the outage; if the outage ended meanwhile,
    /// pushes it now.
    async fn local_change(&self, key: &str, change: Pending, now: SystemTime) {
        let recorded = match self.inner.lock().as_mut() {
            Some(o) => {
                o.queue(key, change.clone());
                true
            }
            None => false,
        };
        if !recorded {
            if let Err((e, rest)) = self.inner.push(vec![(key.to_owned(), change)], now).await {
                self.inner.failed(&e, rest, self.inner.retry);
            }
        }
    }
}

impl Outage {
    fn queue(&mut self, key: &str, change: Pending) {
        if self.pending.len() >= MAX_PENDING && !self.pending.contains_key(key) {
            if self.dropped == 0 {
                tracing::warn!(
                    event = "store_backlog_full",
                    max = MAX_PENDING,
                    "shared store down for long: further local bans stay local only"
                );
            }
            self.dropped += 1;
            return;
        }
        self.pending.insert(key.to_owned(), change);
    }
}

impl<P: StateStore> Inner<P> {
    fn lock(&self) -> MutexGuard<'_, Option<Outage>> {
        // The state stays consistent at every instruction; a panic elsewhere
        // while holding the lock does not make it unusable.
        self.outage.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The shared store failed: start an outage (logged once) or go on with
    /// it, keeping `unpushed` changes for the next try, which is due after
    /// `wait`.
    fn failed(&self, error: &StoreError, unpushed: Vec<(String, Pending)>, wait: Duration) {
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
        let now = Instant::now();
        let o = outage.get_or_insert_with(|| Outage {
            since: now,
            next_probe: now,
            recovering: false,
            pending: BTreeMap::new(),
            dropped: 0,
        });
        o.next_probe = now + wait;
        o.recovering = false;
        for (key, change) in unpushed {
            // A change made while the push was under way is newer.
            if !o.pending.contains_key(&key) {
                o.queue(&key, change);
            }
        }
    }

    /// The background recovery: probe, replay the outage's changes in
    /// batches, end the outage once nothing is left.
    async fn recover(&self) {
        let now = SystemTime::now();
        if let Err(e) = self.primary.ban_status(PROBE_KEY, now).await {
            self.failed(&e, Vec::new(), self.retry);
            return;
        }
        let mut pushed = 0;
        loop {
            let batch: Vec<(String, Pending)> = {
                let mut outage = self.lock();
                let Some(o) = outage.as_mut() else { return };
                let keys: Vec<String> = o.pending.keys().take(BATCH).cloned().collect();
                if keys.is_empty() {
                    let o = outage.take().expect("checked above");
                    tracing::info!(
                        event = "store_recovered",
                        outage_ms = u64::try_from(o.since.elapsed().as_millis()).unwrap_or(u64::MAX),
                        pushed,
                        not_queued = o.dropped,
                        "shared store reachable again; local bans and lifts of the outage pushed to it"
                    );
                    return;
                }
                keys.into_iter()
                    .filter_map(|k| o.pending.remove(&k).map(|c| (k, c)))
                    .collect()
            };
            match self.push(batch, now).await {
                Ok(n) => pushed += n,
                Err((e, rest)) => {
                    self.failed(&e, rest, self.retry);
                    return;
                }
            }
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
}

#[async_trait]
impl<P: StateStore + 'static> StateStore for FallbackStore<P> {
    async fn add_distinct(
        &self,
        key: &str,
        member: &str,
        window: Duration,
        now: SystemTime,
    ) -> Result<u64, StoreError> {
        let inner = &self.inner;
        match self
            .shared(|| inner.primary.add_distinct(key, member, window, now))
            .await
        {
            Some(n) => Ok(n),
            None => inner.local.add_distinct(key, member, window, now).await,
        }
    }

    async fn strike(
        &self,
        key: &str,
        rule: &BanRule,
        reason: &str,
        now: SystemTime,
    ) -> Result<Strike, StoreError> {
        let inner = &self.inner;
        if let Some(strike) = self
            .shared(|| inner.primary.strike(key, rule, reason, now))
            .await
        {
            inner.local.mirror(&strike.ban, now);
            return Ok(strike);
        }
        let strike = inner.local.strike(key, rule, reason, now).await?;
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
        let inner = &self.inner;
        let shared = self
            .shared(|| inner.primary.ban(key, until, reason, now))
            .await;
        inner.local.ban(key, until, reason, now).await?;
        if shared.is_none() {
            if let Some(ban) = inner.local.ban_status(key, now).await? {
                self.local_change(key, Pending::Ban(ban), now).await;
            }
        }
        Ok(())
    }

    async fn ban_status(&self, key: &str, now: SystemTime) -> Result<Option<Ban>, StoreError> {
        let inner = &self.inner;
        match self.shared(|| inner.primary.ban_status(key, now)).await {
            Some(Some(ban)) => {
                inner.local.mirror(&ban, now);
                Ok(Some(ban))
            }
            Some(None) => {
                // Lifted or ended in the shared store: drop any mirror.
                inner.local.lift(key, now).await?;
                Ok(None)
            }
            None => inner.local.ban_status(key, now).await,
        }
    }

    async fn lift(&self, key: &str, now: SystemTime) -> Result<(), StoreError> {
        let inner = &self.inner;
        let shared = self.shared(|| inner.primary.lift(key, now)).await;
        inner.local.lift(key, now).await?;
        if shared.is_none() {
            self.local_change(key, Pending::Lift, now).await;
        }
        Ok(())
    }

    /// Written to Redis, or locally while it is away (records are not
    /// replayed: a bounce whose record is lost is held, never let out).
    async fn put_record(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let inner = &self.inner;
        match self
            .shared(|| inner.primary.put_record(key, value, ttl, now))
            .await
        {
            Some(()) => Ok(()),
            None => inner.local.put_record(key, value, ttl, now).await,
        }
    }

    /// Read from Redis; the local store answers for what was written there
    /// during an outage, and while Redis is away.
    async fn get_record(&self, key: &str, now: SystemTime) -> Result<Option<String>, StoreError> {
        let inner = &self.inner;
        match self.shared(|| inner.primary.get_record(key, now)).await {
            Some(Some(v)) => Ok(Some(v)),
            Some(None) | None => inner.local.get_record(key, now).await,
        }
    }

    async fn list(&self, now: SystemTime) -> Result<Vec<Ban>, StoreError> {
        let inner = &self.inner;
        match self.shared(|| inner.primary.list(now)).await {
            Some(bans) => Ok(bans),
            None => inner.local.list(now).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nobounce_core::store::from_millis;
    use nobounce_test_support::LogCapture;
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

    /// A primary that fails while `down` is set, and takes `slow_ms` per
    /// operation.
    #[derive(Debug, Default)]
    struct Flaky {
        inner: MemoryStore,
        down: AtomicBool,
        calls: AtomicUsize,
        slow_ms: AtomicU64,
    }

    impl Flaky {
        async fn check(&self) -> Result<(), StoreError> {
            let slow = self.slow_ms.load(Ordering::SeqCst);
            if slow > 0 {
                tokio::time::sleep(Duration::from_millis(slow)).await;
            }
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
            self.check().await?;
            self.inner.add_distinct(key, member, window, now).await
        }
        async fn strike(
            &self,
            key: &str,
            rule: &BanRule,
            reason: &str,
            now: SystemTime,
        ) -> Result<Strike, StoreError> {
            self.check().await?;
            self.inner.strike(key, rule, reason, now).await
        }
        async fn ban(
            &self,
            key: &str,
            until: SystemTime,
            reason: &str,
            now: SystemTime,
        ) -> Result<(), StoreError> {
            self.check().await?;
            self.inner.ban(key, until, reason, now).await
        }
        async fn ban_status(&self, key: &str, now: SystemTime) -> Result<Option<Ban>, StoreError> {
            self.check().await?;
            self.inner.ban_status(key, now).await
        }
        async fn lift(&self, key: &str, now: SystemTime) -> Result<(), StoreError> {
            self.check().await?;
            self.inner.lift(key, now).await
        }
        async fn list(&self, now: SystemTime) -> Result<Vec<Ban>, StoreError> {
            self.check().await?;
            self.inner.list(now).await
        }
        async fn put_record(
            &self,
            key: &str,
            value: &str,
            ttl: Duration,
            now: SystemTime,
        ) -> Result<(), StoreError> {
            self.check().await?;
            self.inner.put_record(key, value, ttl, now).await
        }
        async fn get_record(
            &self,
            key: &str,
            now: SystemTime,
        ) -> Result<Option<String>, StoreError> {
            self.check().await?;
            self.inner.get_record(key, now).await
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

    /// Lets the store notice that the shared store is back (one operation)
    /// and waits for the background recovery to finish.
    async fn recover(s: &FallbackStore<Flaky>) {
        s.ban_status("poke", t0()).await.unwrap();
        for _ in 0..60_000 {
            if !s.is_degraded() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("no recovery");
    }

    #[tokio::test]
    async fn outage_is_served_locally_and_logged_once() {
        let logs = LogCapture::default();
        let _guard = logs.install();
        let s = store(Duration::ZERO);
        let banned = s.strike("k1", &rule(), "r", t0()).await.unwrap().ban;
        s.primary().down.store(true, Ordering::SeqCst);
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

        s.primary().down.store(false, Ordering::SeqCst);
        recover(&s).await;
        assert_eq!(s.add_distinct("k2", "x", HOUR, t0()).await.unwrap(), 1);
        assert!(!s.is_degraded());
        assert_eq!(logs.count("store_recovered"), 1);
        // A second outage is a new one, logged again.
        s.primary().down.store(true, Ordering::SeqCst);
        s.add_distinct("k2", "y", HOUR, t0()).await.unwrap();
        assert_eq!(logs.count("store_unreachable"), 2);
    }

    #[tokio::test]
    async fn recovery_pushes_the_bans_and_lifts_of_the_outage() {
        let s = store(Duration::ZERO);
        let shared = &s.primary().inner;
        s.strike("lifted", &rule(), "r", t0()).await.unwrap();
        s.primary().down.store(true, Ordering::SeqCst);

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

        s.primary().down.store(false, Ordering::SeqCst);
        recover(&s).await;
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
        s.primary().down.store(true, Ordering::SeqCst);
        s.add_distinct("k", "a", HOUR, t0()).await.unwrap();
        let calls = s.primary().calls.load(Ordering::SeqCst);
        s.primary().down.store(false, Ordering::SeqCst);
        for _ in 0..10 {
            s.add_distinct("k", "b", HOUR, t0()).await.unwrap();
        }
        assert_eq!(
            s.primary().calls.load(Ordering::SeqCst),
            calls,
            "no probe yet"
        );
        assert!(s.is_degraded());
    }

    #[tokio::test]
    async fn changes_survive_a_failed_probe() {
        let s = store(Duration::ZERO);
        s.primary().down.store(true, Ordering::SeqCst);
        let struck = s.strike("k", &rule(), "r", t0()).await.unwrap().ban;
        // Probes while still down: the pending ban must not be lost.
        for _ in 0..3 {
            assert_eq!(s.ban_status("k", t0()).await.unwrap(), Some(struck.clone()));
        }
        s.primary().down.store(false, Ordering::SeqCst);
        recover(&s).await;
        assert_eq!(
            s.primary()
                .inner
                .ban_status("k", t0())
                .await
                .unwrap()
                .map(|b| b.until),
            Some(struck.until)
        );
    }

    /// Issue 13, item 9: the recovery pushed the whole backlog inline,
    /// during the first SMTP command after Redis came back, beyond any MTA
    /// timeout. It runs in the background now; the command does not wait.
    #[tokio::test(start_paused = true)]
    async fn issue13_recovery_runs_in_the_background() {
        let s = store(Duration::ZERO);
        s.primary().down.store(true, Ordering::SeqCst);
        for i in 0..500 {
            s.strike(&format!("k{i}"), &rule(), "dict", t0())
                .await
                .unwrap();
        }
        assert_eq!(s.pending(), 500);
        s.primary().down.store(false, Ordering::SeqCst);
        // Redis is slow to answer: 10 ms per operation, 2 per pushed ban.
        s.primary().slow_ms.store(10, Ordering::SeqCst);
        let start = tokio::time::Instant::now();
        s.ban_status("k1", t0()).await.unwrap();
        let took = start.elapsed();
        assert!(
            took < Duration::from_millis(100),
            "the command waited {took:?}"
        );
        recover(&s).await;
        assert_eq!(s.pending(), 0);
        for i in [0, 250, 499] {
            assert!(
                s.primary()
                    .inner
                    .ban_status(&format!("k{i}"), t0())
                    .await
                    .unwrap()
                    .is_some(),
                "k{i} pushed"
            );
        }
    }

    /// Issue 13, item 9: `nobounce ban lift` with Redis lifts in Redis only;
    /// the milters' local copies came back during the next outage. The
    /// maintenance drops mirrors the shared store no longer has.
    #[tokio::test]
    async fn issue13_a_ban_lifted_in_the_shared_store_does_not_come_back() {
        let s = store(HOUR);
        let shared = &s.primary().inner;
        shared.ban("k", t0() + HOUR, "dict", t0()).await.unwrap();
        assert!(s.ban_status("k", t0()).await.unwrap().is_some(), "mirrored");
        // The admin lifts it in Redis directly (another process).
        shared.lift("k", t0()).await.unwrap();
        s.reconcile(t0()).await;
        // Redis goes down: the lifted ban is not served from the mirror.
        s.primary().down.store(true, Ordering::SeqCst);
        assert_eq!(s.ban_status("k", t0()).await.unwrap(), None);
        assert!(s.is_degraded());
    }
}
