//! A shared cache of SPF *answers* in front of DNS, with single-flight.
//!
//! [`CachingVerifier`] is an [`SpfVerifier`] for all connections of a
//! process (put it in an `Arc`). It evaluates SPF with viaspf over a
//! [`TtlLookup`], so it knows the smallest TTL among the DNS answers an
//! evaluation used, and keeps the answer no longer than that.
//!
//! # What a cached answer depends on
//!
//! An answer is a function of the request and of the viaspf configuration.
//! The key holds every per-request input:
//!
//! - the client IP (IPv4-mapped IPv6 folded to IPv4, as viaspf does);
//! - the full sender identity, local part included (`%{l}`, `%{s}` macros),
//!   the local part byte for byte and the domain as viaspf normalised it
//!   (A-labels, lower case: SPF treats domains case-insensitively);
//! - the HELO domain (`%{h}`), likewise normalised, or none.
//!
//! The viaspf configuration (receiver host name for `%{r}`, lookup limits,
//! timeout, explanation rewriting) is fixed when the verifier is built and is
//! the same for every entry; a different configuration needs a new
//! verifier. So a cached answer is the answer a fresh evaluation would give
//! while the DNS data it used is unchanged.
//!
//! # What is cached, and for how long
//!
//! An entry lives `min(smallest DNS TTL used, max_ttl)`. Negative answers
//! (NXDOMAIN, no records) count with their negative TTL (SOA minimum), or
//! with [`CacheSettings::negative_ttl`] when the resolver gave none.
//! Not cached, ever:
//!
//! - `temperror` (a transient failure must be retried);
//! - any evaluation during which a DNS query failed (timeout, SERVFAIL),
//!   even when SPF carried on (RFC 7208 §5.5 skips a failing name in
//!   `ptr`): its answer may differ once the failure is gone;
//! - an evaluation that used no DNS answer at all, so no TTL is known. Every
//!   real evaluation queries at least the sender's TXT record; this only
//!   happens when all queries failed, which the rule above already covers;
//! - an answer whose lifetime is zero (a TTL of 0).
//!
//! Entries are checked against the [`Clock`] when read: an expired entry is
//! dropped and counted in [`CacheStats::expirations`]. If the clock goes
//! backwards, entries stored "in the future" count as expired.
//!
//! # Size
//!
//! The cache holds at most [`CacheSettings::capacity`] entries and evicts the
//! least recently used. One entry takes about **340 bytes** for a typical
//! request (334 measured with 1,000,000 entries, docs/PERFORMANCE.md item
//! c): about 180 bytes fixed (key with IP and two string pointers,
//! answer, timestamps, the LRU node's links and hash table slot; checked by a
//! unit test) plus the heap strings: sender (`user@example.org`, ~25
//! bytes), HELO (~20), cause text (`matched ip4:192.0.2.0/24`, ~25), an
//! explanation when a `fail` came with one, and allocator overhead (~16 bytes
//! each); at large capacities the hash table's slots add ~36 bytes per
//! entry. 100 000 entries, the default, take about 34 MB; of that, the hash
//! table (about 2 MB at the default) is allocated up front.
//!
//! # Single-flight
//!
//! Concurrent requests with the same key share one evaluation: the first
//! (the leader) evaluates, the others wait on a [`tokio::sync::watch`]
//! channel and get its answer (`temperror` included: it is not stored, but
//! it is the answer of the DNS at that moment). If the leader's future is
//! dropped (the client went away), its channel closes and a waiter takes
//! over: it looks at the cache again and becomes the new leader or joins
//! another one. Nobody hangs.

use crate::{
    clock::Clock,
    dns::{RecordingLookup, TtlLookup, TtlLookupError, TtlResult},
    spf::{cause_text, SpfAnswer, SpfConfig, SpfRequest, SpfVerifier},
};
use async_trait::async_trait;
use lru::LruCache;
use std::{
    collections::HashMap,
    fmt::{self, Debug, Formatter},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    num::NonZeroUsize,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::{Duration, SystemTime},
};
use tokio::sync::watch;
use tracing::debug;
use viaspf::{lookup::Name, SpfResult};

/// Negative TTL used when the resolver reports "no records" without one.
pub const DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(300);

/// Sizing and lifetime of a [`CachingVerifier`].
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct CacheSettings {
    /// Most entries kept; `0` stores nothing (requests are still coalesced).
    pub capacity: usize,
    /// Upper bound on an entry's lifetime.
    pub max_ttl: Duration,
    /// TTL assumed for a negative DNS answer that came without one.
    pub negative_ttl: Duration,
}

impl CacheSettings {
    /// The settings of `spf.cache_size` and `spf.cache_max_ttl`.
    pub fn from_config(config: &SpfConfig) -> Self {
        Self {
            capacity: config.cache_size,
            max_ttl: config.cache_max_ttl,
            negative_ttl: DEFAULT_NEGATIVE_TTL,
        }
    }
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self::from_config(&SpfConfig::default())
    }
}

/// Counters of a [`CachingVerifier`] since it was built.
///
/// Every request ends as a hit, a miss or a coalesced wait; a waiter whose
/// leader was dropped tries again and may count twice.
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub struct CacheStats {
    /// Requests answered from the cache.
    pub hits: u64,
    /// Requests that ran a DNS evaluation themselves.
    pub misses: u64,
    /// Requests that joined an evaluation already running for the same key.
    pub coalesced: u64,
    /// Entries dropped to make room (least recently used first).
    pub evictions: u64,
    /// Entries found expired when read, and dropped.
    pub expirations: u64,
    /// Entries stored now.
    pub entries: usize,
}

/// The inputs an answer depends on, besides the fixed viaspf configuration.
#[derive(Clone, Debug, Eq, Hash, PartialEq)]
struct Key {
    ip: IpAddr,
    /// `local@domain`: the local part verbatim, the domain as normalised by
    /// viaspf. The domain cannot hold `@`, so this is unambiguous.
    sender: Box<str>,
    helo: Option<Box<str>>,
}

impl Key {
    fn of(request: &SpfRequest) -> Self {
        Self {
            ip: request.ip.to_canonical(),
            sender: format!(
                "{}@{}",
                request.sender.local_part(),
                normalise_domain(&request.sender.domain().to_string())
            )
            .into(),
            helo: request
                .helo
                .as_ref()
                .map(|h| normalise_domain(&h.to_string()).into()),
        }
    }
}

/// viaspf already gives domains as lower-case A-labels; this makes the key
/// independent of that detail. Only ASCII letters change, as in DNS.
fn normalise_domain(domain: &str) -> String {
    domain.to_ascii_lowercase()
}

#[derive(Debug)]
struct Entry {
    /// The answer, with `ttl` = the smallest DNS TTL at `stored`.
    answer: SpfAnswer,
    stored: SystemTime,
    /// `min(answer.ttl, max_ttl)`.
    lifetime: Duration,
}

impl Entry {
    /// The answer if still valid at `now`, with the remaining DNS TTL.
    fn answer_at(&self, now: SystemTime) -> Option<SpfAnswer> {
        let age = now.duration_since(self.stored).ok()?;
        if age >= self.lifetime {
            return None;
        }
        let mut answer = self.answer.clone();
        answer.ttl = answer.ttl.map(|t| t.saturating_sub(age));
        Some(answer)
    }
}

type Flight = watch::Receiver<Option<SpfAnswer>>;

#[derive(Debug)]
struct State {
    entries: Option<LruCache<Key, Entry>>,
    /// Evaluations running now, by key, with the leader's id.
    in_flight: HashMap<Key, (u64, Flight)>,
    next_id: u64,
}

#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    coalesced: AtomicU64,
    evictions: AtomicU64,
    expirations: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// An [`SpfVerifier`] that caches answers by TTL and coalesces concurrent
/// identical requests. See the [module documentation](self).
pub struct CachingVerifier<L> {
    lookup: L,
    config: viaspf::Config,
    settings: CacheSettings,
    clock: Arc<dyn Clock>,
    // A std Mutex: every critical section is a few map operations and never
    // awaits.
    state: Mutex<State>,
    counters: Counters,
}

impl<L> Debug for CachingVerifier<L> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachingVerifier")
            .field("config", &self.config)
            .field("settings", &self.settings)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// What a request found under the lock.
enum Step {
    Hit(SpfAnswer),
    Wait(Flight),
    Lead(LeaderGuard),
}

/// Held by the leader of an evaluation: its in-flight entry and the sending
/// side of the waiters' channel. Dropping the sender closes the channel.
struct LeaderGuard {
    id: u64,
    key: Key,
    tx: watch::Sender<Option<SpfAnswer>>,
}

impl<L: TtlLookup> CachingVerifier<L> {
    /// A verifier over `lookup` with the SPF settings of `config`
    /// (`timeout`, `cache_size`, `cache_max_ttl`).
    pub fn new(lookup: L, config: &SpfConfig, clock: Arc<dyn Clock>) -> Self {
        let viaspf_config = viaspf::Config::builder().timeout(config.timeout).build();
        Self::with_config(
            lookup,
            viaspf_config,
            CacheSettings::from_config(config),
            clock,
        )
    }

    /// A verifier with a viaspf configuration of your own. It applies to
    /// every entry: to change it, build a new verifier.
    pub fn with_config(
        lookup: L,
        config: viaspf::Config,
        settings: CacheSettings,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            lookup,
            config,
            settings,
            clock,
            state: Mutex::new(State {
                entries: NonZeroUsize::new(settings.capacity).map(LruCache::new),
                in_flight: HashMap::new(),
                next_id: 0,
            }),
            counters: Counters::default(),
        }
    }

    /// The settings this verifier was built with.
    pub fn settings(&self) -> CacheSettings {
        self.settings
    }

    /// Forgets every stored answer (running evaluations go on).
    pub fn clear(&self) {
        if let Some(entries) = &mut self.lock().entries {
            entries.clear();
        }
    }
}

impl<L> CachingVerifier<L> {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The counters so far, and the number of entries.
    pub fn stats(&self) -> CacheStats {
        let c = &self.counters;
        CacheStats {
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            coalesced: c.coalesced.load(Ordering::Relaxed),
            evictions: c.evictions.load(Ordering::Relaxed),
            expirations: c.expirations.load(Ordering::Relaxed),
            entries: self.lock().entries.as_ref().map_or(0, LruCache::len),
        }
    }

    /// Looks in the cache, then among running evaluations; else leads.
    fn step(&self, key: &Key) -> Step {
        let now = self.clock.now();
        let mut state = self.lock();
        if let Some(entries) = &mut state.entries {
            if let Some(entry) = entries.get(key) {
                match entry.answer_at(now) {
                    Some(answer) => {
                        bump(&self.counters.hits);
                        return Step::Hit(answer);
                    }
                    None => {
                        entries.pop(key);
                        bump(&self.counters.expirations);
                    }
                }
            }
        }
        if let Some((_, flight)) = state.in_flight.get(key) {
            bump(&self.counters.coalesced);
            return Step::Wait(flight.clone());
        }
        let id = state.next_id;
        state.next_id = state.next_id.wrapping_add(1);
        let (tx, rx) = watch::channel(None);
        state.in_flight.insert(key.clone(), (id, rx));
        bump(&self.counters.misses);
        Step::Lead(LeaderGuard {
            id,
            key: key.clone(),
            tx,
        })
    }

    /// Publishes the leader's answer: stores it if cacheable, withdraws the
    /// in-flight entry and wakes the waiters.
    fn finish(&self, guard: LeaderGuard, answer: &SpfAnswer, cacheable: bool) {
        let now = self.clock.now();
        let mut state = self.lock();
        let lifetime = answer
            .ttl
            .map_or(Duration::ZERO, |t| t.min(self.settings.max_ttl));
        if cacheable && !lifetime.is_zero() {
            if let Some(entries) = &mut state.entries {
                let entry = Entry {
                    answer: answer.clone(),
                    stored: now,
                    lifetime,
                };
                if let Some((old, _)) = entries.push(guard.key.clone(), entry) {
                    if old != guard.key {
                        bump(&self.counters.evictions);
                    }
                }
            }
        }
        if state
            .in_flight
            .get(&guard.key)
            .is_some_and(|(id, _)| *id == guard.id)
        {
            state.in_flight.remove(&guard.key);
        }
        drop(state);
        // An error only means nobody was waiting. Waiters read the value
        // even though the sender is dropped right after.
        let _ = guard.tx.send(Some(answer.clone()));
    }

    /// Withdraws the in-flight entry of an abandoned evaluation; `guard`
    /// (and so the channel) drops after the lock is released.
    fn release(&self, guard: LeaderGuard) {
        let mut state = self.lock();
        if state
            .in_flight
            .get(&guard.key)
            .is_some_and(|(id, _)| *id == guard.id)
        {
            state.in_flight.remove(&guard.key);
        }
    }
}

/// Drops the leader's in-flight entry when the leader's future is dropped
/// mid-evaluation. Holds the state so it can do that from `Drop`.
struct Abandon<'a, L> {
    verifier: &'a CachingVerifier<L>,
    guard: Option<LeaderGuard>,
}

impl<L> Drop for Abandon<'_, L> {
    fn drop(&mut self) {
        if let Some(guard) = self.guard.take() {
            // Withdraw first, then close the channel (when `guard` drops at
            // the end of this block): a waiter woken by the close must not
            // find the dead entry again.
            self.verifier.release(guard);
        }
    }
}

impl<L: TtlLookup> CachingVerifier<L> {
    /// Evaluates `request` against DNS. Returns the answer (with the
    /// smallest DNS TTL used, or none when it must not be cached) and whether
    /// it may be cached.
    async fn evaluate(&self, request: &SpfRequest) -> (SpfAnswer, bool) {
        let watched = FailureWatch {
            inner: &self.lookup,
            failed: AtomicBool::new(false),
        };
        let recording = RecordingLookup::new(&watched, self.settings.negative_ttl);
        let r = viaspf::evaluate_sender(
            &recording,
            &self.config,
            request.ip,
            &request.sender,
            request.helo.as_ref(),
        )
        .await;
        let dns_failed = watched.failed.load(Ordering::Relaxed);
        let ttl = recording.min_ttl();
        let cacheable = r.spf_result != SpfResult::Temperror && !dns_failed && ttl.is_some();
        let answer = SpfAnswer {
            cause: cause_text(r.cause.as_ref()),
            result: r.spf_result,
            ttl: if cacheable { ttl } else { None },
        };
        (answer, cacheable)
    }
}

#[async_trait]
impl<L: TtlLookup> SpfVerifier for CachingVerifier<L> {
    async fn verify(&self, request: &SpfRequest) -> SpfAnswer {
        let key = Key::of(request);
        loop {
            match self.step(&key) {
                Step::Hit(answer) => return answer,
                Step::Wait(mut flight) => {
                    if let Ok(answer) = flight.wait_for(Option::is_some).await {
                        if let Some(answer) = answer.as_ref() {
                            return answer.clone();
                        }
                    }
                    // The leader was dropped before answering: try again.
                    debug!(
                        target: "nobounce::spf",
                        "SPF evaluation abandoned by its leader, retrying"
                    );
                }
                Step::Lead(guard) => {
                    let mut abandon = Abandon {
                        verifier: self,
                        guard: Some(guard),
                    };
                    let (answer, cacheable) = self.evaluate(request).await;
                    let guard = abandon
                        .guard
                        .take()
                        .expect("the guard is only taken here or on drop");
                    self.finish(guard, &answer, cacheable);
                    return answer;
                }
            }
        }
    }
}

/// Passes queries through and notes whether any failed (other than "no
/// records", which is an answer).
#[derive(Debug)]
struct FailureWatch<'a, L> {
    inner: &'a L,
    failed: AtomicBool,
}

impl<L> FailureWatch<'_, L> {
    fn note<T>(&self, r: TtlResult<T>) -> TtlResult<T> {
        if matches!(r, Err(TtlLookupError::Timeout | TtlLookupError::Dns(_))) {
            self.failed.store(true, Ordering::Relaxed);
        }
        r
    }
}

#[async_trait]
impl<L: TtlLookup> TtlLookup for FailureWatch<'_, L> {
    async fn lookup_a(&self, name: &Name) -> TtlResult<Ipv4Addr> {
        self.note(self.inner.lookup_a(name).await)
    }
    async fn lookup_aaaa(&self, name: &Name) -> TtlResult<Ipv6Addr> {
        self.note(self.inner.lookup_aaaa(name).await)
    }
    async fn lookup_mx(&self, name: &Name) -> TtlResult<Name> {
        self.note(self.inner.lookup_mx(name).await)
    }
    async fn lookup_txt(&self, name: &Name) -> TtlResult<String> {
        self.note(self.inner.lookup_txt(name).await)
    }
    async fn lookup_ptr(&self, ip: IpAddr) -> TtlResult<Name> {
        self.note(self.inner.lookup_ptr(ip).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        clock::ManualClock,
        dns::{Answer, TtlAsLookup},
        spf::LookupVerifier,
    };
    use std::{collections::HashMap, sync::atomic::AtomicUsize, time::UNIX_EPOCH};
    use viaspf::{DomainName, ExplanationString, Sender};

    #[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
    enum Kind {
        A,
        Txt,
        Ptr,
    }

    #[derive(Clone, Debug)]
    enum Data {
        Records(Vec<String>, u64),
        Nothing(u64),
        Timeout,
    }

    /// A zone in memory. Counts TXT queries; TXT queries wait while the
    /// gate is closed.
    #[derive(Debug)]
    struct Zone {
        data: Mutex<HashMap<(String, Kind), Data>>,
        txt_queries: AtomicUsize,
        gate: watch::Receiver<bool>,
    }

    #[derive(Clone, Debug)]
    struct Fake(Arc<Zone>);

    impl Fake {
        /// A zone with the gate open, and the gate's control.
        fn new() -> (Self, watch::Sender<bool>) {
            let (tx, rx) = watch::channel(true);
            let zone = Zone {
                data: Mutex::new(HashMap::new()),
                txt_queries: AtomicUsize::new(0),
                gate: rx,
            };
            (Self(Arc::new(zone)), tx)
        }

        fn set(&self, name: &str, kind: Kind, data: Data) {
            self.0
                .data
                .lock()
                .unwrap()
                .insert((name.to_ascii_lowercase(), kind), data);
        }

        fn txt(&self, name: &str, record: &str, ttl: u64) {
            self.set(name, Kind::Txt, Data::Records(vec![record.into()], ttl));
        }

        fn txt_queries(&self) -> usize {
            self.0.txt_queries.load(Ordering::SeqCst)
        }

        fn get<T>(&self, name: &str, kind: Kind, parse: impl Fn(&str) -> T) -> TtlResult<T> {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            let data = self.0.data.lock().unwrap().get(&(name, kind)).cloned();
            match data {
                Some(Data::Records(r, ttl)) => Ok(Answer {
                    records: r.iter().map(|s| parse(s)).collect(),
                    ttl: Duration::from_secs(ttl),
                }),
                Some(Data::Nothing(ttl)) => Err(TtlLookupError::NoRecords {
                    ttl: Some(Duration::from_secs(ttl)),
                }),
                Some(Data::Timeout) => Err(TtlLookupError::Timeout),
                None => Err(TtlLookupError::NoRecords { ttl: None }),
            }
        }
    }

    #[async_trait]
    impl TtlLookup for Fake {
        async fn lookup_a(&self, name: &Name) -> TtlResult<Ipv4Addr> {
            self.get(name.as_str(), Kind::A, |s| s.parse().unwrap())
        }
        async fn lookup_aaaa(&self, _name: &Name) -> TtlResult<Ipv6Addr> {
            Err(TtlLookupError::NoRecords { ttl: None })
        }
        async fn lookup_mx(&self, _name: &Name) -> TtlResult<Name> {
            Err(TtlLookupError::NoRecords { ttl: None })
        }
        async fn lookup_txt(&self, name: &Name) -> TtlResult<String> {
            self.0.txt_queries.fetch_add(1, Ordering::SeqCst);
            let mut gate = self.0.gate.clone();
            gate.wait_for(|open| *open).await.expect("gate kept open");
            self.get(name.as_str(), Kind::Txt, str::to_owned)
        }
        async fn lookup_ptr(&self, ip: IpAddr) -> TtlResult<Name> {
            self.get(&ip.to_string(), Kind::Ptr, |s| Name::new(s).unwrap())
        }
    }

    const IP: &str = "192.0.2.1";

    fn request(ip: &str, sender: &str, helo: Option<&str>) -> SpfRequest {
        SpfRequest {
            ip: ip.parse().unwrap(),
            sender: Sender::new(sender).unwrap(),
            helo: helo.map(|h| DomainName::new(h).unwrap()),
        }
    }

    fn settings(capacity: usize, max_ttl: u64) -> CacheSettings {
        CacheSettings {
            capacity,
            max_ttl: Duration::from_secs(max_ttl),
            negative_ttl: Duration::from_secs(300),
        }
    }

    fn verifier(
        fake: &Fake,
        settings: CacheSettings,
    ) -> (Arc<CachingVerifier<Fake>>, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(
            UNIX_EPOCH + Duration::from_secs(1_000_000),
        ));
        let v = CachingVerifier::with_config(
            fake.clone(),
            viaspf::Config::default(),
            settings,
            clock.clone(),
        );
        (Arc::new(v), clock)
    }

    async fn fresh(fake: &Fake, r: &SpfRequest) -> SpfAnswer {
        let v = LookupVerifier::with_config(TtlAsLookup(fake.clone()), viaspf::Config::default());
        v.verify(r).await
    }

    #[tokio::test]
    async fn answer_lives_until_smallest_ttl() {
        let (fake, _gate) = Fake::new();
        fake.txt("example.org", "v=spf1 ip4:192.0.2.0/24 -all", 60);
        let (v, clock) = verifier(&fake, settings(10, 3600));
        let r = request(IP, "a@example.org", None);

        let first = v.verify(&r).await;
        assert_eq!(first.result, SpfResult::Pass);
        assert_eq!(first.ttl, Some(Duration::from_secs(60)));
        assert_eq!(fake.txt_queries(), 1);

        clock.advance(Duration::from_secs(59));
        let hit = v.verify(&r).await;
        assert_eq!(hit.result, SpfResult::Pass);
        assert_eq!(hit.ttl, Some(Duration::from_secs(1)), "remaining TTL");
        assert_eq!(fake.txt_queries(), 1);

        clock.advance(Duration::from_secs(1));
        v.verify(&r).await;
        assert_eq!(fake.txt_queries(), 2, "expired entry is evaluated again");
        let s = v.stats();
        assert_eq!((s.hits, s.misses, s.expirations), (1, 2, 1));
        assert_eq!(s.entries, 1);
    }

    #[tokio::test]
    async fn lifetime_is_capped_and_uses_the_smallest_ttl_of_all_answers() {
        let (fake, _gate) = Fake::new();
        fake.txt("example.org", "v=spf1 a:host.example.org -all", 7200);
        fake.set(
            "host.example.org",
            Kind::A,
            Data::Records(vec!["192.0.2.9".into()], 500),
        );
        let (v, clock) = verifier(&fake, settings(10, 3600));
        let r = request(IP, "a@example.org", None);
        let a = v.verify(&r).await;
        assert!(matches!(a.result, SpfResult::Fail(_)));
        assert_eq!(a.ttl, Some(Duration::from_secs(500)), "A record's TTL");
        clock.advance(Duration::from_secs(499));
        v.verify(&r).await;
        assert_eq!(fake.txt_queries(), 1);
        clock.advance(Duration::from_secs(1));
        v.verify(&r).await;
        assert_eq!(fake.txt_queries(), 2);

        // A long TTL is capped by max_ttl.
        let (v, clock) = verifier(&fake, settings(10, 100));
        fake.set(
            "host.example.org",
            Kind::A,
            Data::Records(vec!["192.0.2.9".into()], 7200),
        );
        v.verify(&r).await;
        clock.advance(Duration::from_secs(99));
        v.verify(&r).await;
        assert_eq!(fake.txt_queries(), 3);
        clock.advance(Duration::from_secs(1));
        v.verify(&r).await;
        assert_eq!(fake.txt_queries(), 4);
    }

    #[tokio::test]
    async fn negative_answers_count_with_their_ttl() {
        let (fake, _gate) = Fake::new();
        fake.set("none.example", Kind::Txt, Data::Nothing(30));
        let (v, clock) = verifier(&fake, settings(10, 3600));
        let r = request(IP, "a@none.example", None);
        assert_eq!(v.verify(&r).await.result, SpfResult::None);
        clock.advance(Duration::from_secs(29));
        assert_eq!(v.verify(&r).await.result, SpfResult::None);
        assert_eq!(fake.txt_queries(), 1);
        clock.advance(Duration::from_secs(1));
        v.verify(&r).await;
        assert_eq!(fake.txt_queries(), 2);
    }

    #[tokio::test]
    async fn least_recently_used_entry_is_evicted_at_capacity() {
        let (fake, _gate) = Fake::new();
        fake.txt("example.org", "v=spf1 ip4:192.0.2.0/24 -all", 3600);
        let (v, _clock) = verifier(&fake, settings(2, 3600));
        let a = request(IP, "a@example.org", None);
        let b = request(IP, "b@example.org", None);
        let c = request(IP, "c@example.org", None);
        v.verify(&a).await;
        v.verify(&b).await;
        v.verify(&a).await; // a is now the most recently used
        v.verify(&c).await; // evicts b
        let s = v.stats();
        assert_eq!((s.entries, s.evictions, s.hits, s.misses), (2, 1, 1, 3));
        v.verify(&a).await;
        assert_eq!(v.stats().hits, 2, "a stayed");
        v.verify(&b).await;
        assert_eq!(v.stats().misses, 4, "b was evicted");
        assert_eq!(fake.txt_queries(), 4);
    }

    #[tokio::test]
    async fn temperror_is_never_cached() {
        let (fake, _gate) = Fake::new();
        fake.set("slow.example", Kind::Txt, Data::Timeout);
        let (v, _clock) = verifier(&fake, settings(10, 3600));
        let r = request(IP, "a@slow.example", None);
        for n in 1..=3 {
            let a = v.verify(&r).await;
            assert_eq!(a.result, SpfResult::Temperror);
            assert_eq!(a.ttl, None);
            assert_eq!(fake.txt_queries(), n);
        }
        assert_eq!(v.stats().entries, 0);
        assert_eq!(v.stats().hits, 0);
    }

    #[tokio::test]
    async fn answer_reached_despite_a_dns_failure_is_not_cached() {
        // RFC 7208 §5.5: a ptr name whose A lookup fails is skipped, so the
        // result is "fail", but it rests on a failed query.
        let (fake, _gate) = Fake::new();
        fake.txt("example.org", "v=spf1 ptr -all", 3600);
        fake.set(
            IP,
            Kind::Ptr,
            Data::Records(vec!["mail.example.org".into()], 3600),
        );
        fake.set("mail.example.org", Kind::A, Data::Timeout);
        let (v, _clock) = verifier(&fake, settings(10, 3600));
        let r = request(IP, "a@example.org", None);
        assert!(matches!(v.verify(&r).await.result, SpfResult::Fail(_)));
        assert!(matches!(v.verify(&r).await.result, SpfResult::Fail(_)));
        assert_eq!(fake.txt_queries(), 2);
        assert_eq!(v.stats().entries, 0);

        // Once the A lookup works, the answer is pass and is cached.
        fake.set(
            "mail.example.org",
            Kind::A,
            Data::Records(vec![IP.into()], 3600),
        );
        assert_eq!(v.verify(&r).await.result, SpfResult::Pass);
        assert_eq!(v.verify(&r).await.result, SpfResult::Pass);
        assert_eq!(fake.txt_queries(), 3);
    }

    #[tokio::test]
    async fn zero_capacity_stores_nothing() {
        let (fake, _gate) = Fake::new();
        fake.txt("example.org", "v=spf1 -all", 3600);
        let (v, _clock) = verifier(&fake, settings(0, 3600));
        let r = request(IP, "a@example.org", None);
        v.verify(&r).await;
        v.verify(&r).await;
        assert_eq!(fake.txt_queries(), 2);
        assert_eq!(v.stats().entries, 0);
    }

    async fn settle(v: &CachingVerifier<Fake>, done: impl Fn(CacheStats) -> bool) {
        // Lets spawned tasks run until they reach the expected state; no
        // sleeping, no wall-clock time.
        for _ in 0..10_000 {
            if done(v.stats()) {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("tasks did not reach the expected state: {:?}", v.stats());
    }

    #[tokio::test]
    async fn concurrent_identical_requests_share_one_evaluation() {
        let (fake, gate) = Fake::new();
        fake.txt("example.org", "v=spf1 ip4:192.0.2.0/24 -all", 3600);
        let (v, _clock) = verifier(&fake, settings(10, 3600));
        gate.send_replace(false);
        let r = request(IP, "a@example.org", None);
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let v = v.clone();
                let r = r.clone();
                tokio::spawn(async move { v.verify(&r).await })
            })
            .collect();
        settle(&v, |s| s.misses == 1 && s.coalesced == 49).await;
        assert_eq!(fake.txt_queries(), 1, "only the leader queried");
        gate.send_replace(true);
        for t in tasks {
            assert_eq!(t.await.unwrap().result, SpfResult::Pass);
        }
        assert_eq!(fake.txt_queries(), 1);
        let s = v.stats();
        assert_eq!((s.misses, s.coalesced, s.hits), (1, 49, 0));
    }

    #[tokio::test]
    async fn waiters_take_over_when_the_leader_is_dropped() {
        let (fake, gate) = Fake::new();
        fake.txt("example.org", "v=spf1 ip4:192.0.2.0/24 -all", 3600);
        let (v, _clock) = verifier(&fake, settings(10, 3600));
        gate.send_replace(false);
        let r = request(IP, "a@example.org", None);
        let spawn = || {
            let v = v.clone();
            let r = r.clone();
            tokio::spawn(async move { v.verify(&r).await })
        };
        let leader = spawn();
        settle(&v, |s| s.misses == 1).await;
        let waiters: Vec<_> = (0..5).map(|_| spawn()).collect();
        settle(&v, |s| s.coalesced == 5).await;
        leader.abort();
        assert!(leader.await.unwrap_err().is_cancelled());
        // One waiter leads now; the others joined it.
        settle(&v, |s| s.misses == 2 && s.coalesced == 9).await;
        gate.send_replace(true);
        for w in waiters {
            assert_eq!(w.await.unwrap().result, SpfResult::Pass);
        }
        assert_eq!(fake.txt_queries(), 2);
        assert_eq!(v.stats().entries, 1);
    }

    #[tokio::test]
    async fn key_holds_ip_local_part_and_helo() {
        let (fake, _gate) = Fake::new();
        // %{l} and %{h} make the answer depend on local part and HELO.
        fake.txt(
            "example.org",
            "v=spf1 ip4:198.51.100.0/24 exists:%{l}.users.example.org \
             exists:%{h}.helos.example.org -all",
            3600,
        );
        let a = |ip: &str| Data::Records(vec![ip.into()], 3600);
        fake.set("alice.users.example.org", Kind::A, a("127.0.0.2"));
        fake.set(
            "good.example.net.helos.example.org",
            Kind::A,
            a("127.0.0.2"),
        );
        let (v, _clock) = verifier(&fake, settings(100, 3600));
        let cases = [
            (IP, "alice@example.org", None, true),
            (IP, "bob@example.org", None, false),
            // A key of its own (the local part is case-sensitive, e.g. in
            // an explanation), though DNS matches Alice. like alice.
            (IP, "Alice@example.org", None, true),
            ("198.51.100.7", "bob@example.org", None, true),
            (IP, "bob@example.org", Some("good.example.net"), true),
            (IP, "bob@example.org", Some("bad.example.net"), false),
        ];
        // Twice: the second round is all hits and must give the same results.
        for round in 0..2 {
            for (ip, sender, helo, pass) in cases {
                let r = request(ip, sender, helo);
                let got = v.verify(&r).await;
                assert_eq!(
                    got.result == SpfResult::Pass,
                    pass,
                    "round {round}: {ip} {sender} {helo:?}: {got:?}"
                );
            }
        }
        let s = v.stats();
        assert_eq!((s.misses, s.hits, s.entries), (6, 6, 6));
        // The IPv4-mapped form is the same client.
        v.verify(&request("::ffff:192.0.2.1", "alice@example.org", None))
            .await;
        assert_eq!(v.stats().hits, 7);
    }

    #[tokio::test]
    async fn a_hit_is_the_answer_of_a_fresh_evaluation() {
        let (fake, _gate) = Fake::new();
        fake.txt(
            "example.org",
            "v=spf1 ip4:198.51.100.0/24 exp=why.example.org -all",
            3600,
        );
        fake.txt(
            "why.example.org",
            "%{l} may not send via %{i} for %{o}",
            3600,
        );
        let (v, _clock) = verifier(&fake, settings(100, 3600));
        // The domain in differing case is one key: SPF domains are
        // case-insensitive and viaspf normalises them before expanding.
        let first = request(IP, "Alice@EXAMPLE.org", Some("Mail.Example.NET"));
        let second = request(IP, "Alice@example.ORG", Some("mail.example.net"));
        let missed = v.verify(&first).await;
        let hit = v.verify(&second).await;
        assert_eq!(v.stats().hits, 1);
        let fresh_answer = fresh(&fake, &second).await;
        assert_eq!(
            fresh_answer.result,
            SpfResult::Fail(ExplanationString::External(
                "Alice may not send via 192.0.2.1 for example.org".into()
            ))
        );
        for a in [&missed, &hit] {
            assert_eq!(a.result, fresh_answer.result);
            assert_eq!(a.cause, fresh_answer.cause);
        }
    }

    #[test]
    fn fixed_size_of_an_entry_fits_the_documented_estimate() {
        // Key and entry inline in the LRU node, plus its two links, plus the
        // hash table slot (a pointer and a control byte, at 7/8 load).
        let fixed = size_of::<Key>() + size_of::<Entry>() + 2 * size_of::<usize>() + 10;
        assert!(fixed <= 180, "{fixed} bytes: update the rustdoc estimate");
    }
}
