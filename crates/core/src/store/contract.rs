//! The contract every [`StateStore`] keeps, as a test suite.
//!
//! Backends run it from their own tests (feature `store-contract` of
//! `nobounce-core`):
//!
//! ```
//! # async fn demo() {
//! use nobounce_core::store::{contract, MemoryStore};
//!
//! contract::run_all(|| async {
//!     let store = MemoryStore::default();
//!     (store.clone(), store)
//! })
//! .await;
//! # }
//! ```
//!
//! `make_pair` returns two handles on one fresh, empty state, as two MX
//! hosts sharing one backend would hold them; the checks use both to show
//! that what one host writes the other sees, and that concurrent writers
//! agree. Time is virtual: the checks pass `now` from a clock of their own,
//! starting at the real time and only moving forward, so expiry is tested
//! without sleeping (backends that also expire data by their own clock, like
//! Redis TTLs, see that data expire later than the checks do, never earlier).
//!
//! Every check panics with a message naming the broken rule.

use super::{from_millis, to_millis, BanRule, StateStore, MAX_DISTINCT_MEMBERS};
use std::{
    future::{poll_fn, Future},
    pin::Pin,
    task::Poll,
    time::{Duration, SystemTime},
};

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

/// A virtual clock for the checks: starts at the current real time (to the
/// millisecond) and moves only when told.
#[derive(Debug)]
struct Clock(SystemTime);

impl Clock {
    fn new() -> Self {
        Self(from_millis(to_millis(SystemTime::now())))
    }

    fn now(&self) -> SystemTime {
        self.0
    }

    fn advance(&mut self, d: Duration) {
        self.0 += d;
    }
}

fn rule(escalate: bool) -> BanRule {
    BanRule {
        base: HOUR,
        escalate,
        max: 4 * HOUR,
        forget_after: 24 * HOUR,
    }
}

/// Runs all checks, each on a fresh pair from `make_pair`.
pub async fn run_all<S, F, Fut>(mut make_pair: F)
where
    S: StateStore,
    F: FnMut() -> Fut,
    Fut: Future<Output = (S, S)>,
{
    let (a, b) = make_pair().await;
    distinct_members_count_once(&a, &b).await;
    let (a, b) = make_pair().await;
    window_slides(&a, &b).await;
    let (a, b) = make_pair().await;
    counters_are_per_key(&a, &b).await;
    let (a, b) = make_pair().await;
    concurrent_adds_get_distinct_counts(&a, &b).await;
    let (a, b) = make_pair().await;
    strike_bans_until_the_ban_ends(&a, &b).await;
    let (a, b) = make_pair().await;
    strike_while_banned_changes_nothing(&a, &b).await;
    let (a, b) = make_pair().await;
    concurrent_strikes_make_one_ban(&a, &b).await;
    let (a, b) = make_pair().await;
    escalation_doubles_up_to_the_cap(&a, &b).await;
    let (a, b) = make_pair().await;
    strikes_are_forgotten(&a, &b).await;
    let (a, b) = make_pair().await;
    without_escalation_bans_stay_the_same(&a, &b).await;
    let (a, b) = make_pair().await;
    strike_resets_the_counter(&a, &b).await;
    let (a, b) = make_pair().await;
    manual_ban_replaces_and_keeps_strikes(&a, &b).await;
    let (a, b) = make_pair().await;
    lift_forgives_everything(&a, &b).await;
    let (a, b) = make_pair().await;
    list_shows_active_bans_sorted(&a, &b).await;
    let (a, b) = make_pair().await;
    odd_keys_members_and_reasons_round_trip(&a, &b).await;
    let (a, b) = make_pair().await;
    distinct_count_is_capped(&a, &b).await;
    let (a, b) = make_pair().await;
    records_are_shared_replaced_and_expire(&a, &b).await;
}

/// A record written by one host is read by the other, replaced by the
/// next write, gone after its time to live, and independent of bans.
pub async fn records_are_shared_replaced_and_expire(a: &impl StateStore, b: &impl StateStore) {
    let now = Clock::new().now();
    let key = "msg:mx.example:4NJQ1X6Zq2z9sR";
    assert_eq!(b.get_record(key, now).await.unwrap(), None);
    a.put_record(key, "spf=pass; auth=-", HOUR, now)
        .await
        .unwrap();
    assert_eq!(
        b.get_record(key, now + Duration::from_secs(60))
            .await
            .unwrap()
            .as_deref(),
        Some("spf=pass; auth=-")
    );
    b.put_record(key, "spf=softfail \"x\" é", HOUR, now)
        .await
        .unwrap();
    assert_eq!(
        a.get_record(key, now).await.unwrap().as_deref(),
        Some("spf=softfail \"x\" é")
    );
    assert_eq!(
        a.get_record(key, now + HOUR).await.unwrap(),
        None,
        "expired"
    );
    // A record beside a ban of the same key: neither disturbs the other.
    let other = "192.0.2.9";
    a.put_record(other, "r", HOUR, now).await.unwrap();
    a.ban(other, now + HOUR, "test", now).await.unwrap();
    assert_eq!(
        b.get_record(other, now).await.unwrap().as_deref(),
        Some("r")
    );
    assert!(b.ban_status(other, now).await.unwrap().is_some());
    // A zero time to live removes it.
    a.put_record(key, "gone", Duration::ZERO, now)
        .await
        .unwrap();
    assert_eq!(b.get_record(key, now).await.unwrap(), None);
}

/// Adding the same member again does not count it twice, whichever host
/// adds it.
pub async fn distinct_members_count_once(a: &impl StateStore, b: &impl StateStore) {
    let c = Clock::new();
    let w = 10 * MINUTE;
    let k = "192.0.2.1";
    assert_eq!(a.add_distinct(k, "x", w, c.now()).await.expect("store"), 1);
    assert_eq!(
        a.add_distinct(k, "x", w, c.now()).await.expect("store"),
        1,
        "same member twice"
    );
    assert_eq!(
        b.add_distinct(k, "x", w, c.now()).await.expect("store"),
        1,
        "same member, other host"
    );
    assert_eq!(b.add_distinct(k, "y", w, c.now()).await.expect("store"), 2);
    assert_eq!(
        a.add_distinct(k, "z", w, c.now()).await.expect("store"),
        3,
        "other host's member"
    );
}

/// A member counts while its latest addition is less than `window` old.
pub async fn window_slides(a: &impl StateStore, b: &impl StateStore) {
    let mut c = Clock::new();
    let w = 10 * MINUTE;
    let k = "198.51.100.7";
    assert_eq!(a.add_distinct(k, "m1", w, c.now()).await.expect("store"), 1);
    c.advance(4 * MINUTE);
    assert_eq!(b.add_distinct(k, "m2", w, c.now()).await.expect("store"), 2);
    c.advance(5 * MINUTE);
    // m1 is 9 minutes old: still in.
    assert_eq!(a.add_distinct(k, "m3", w, c.now()).await.expect("store"), 3);
    c.advance(MINUTE);
    // m1 is exactly 10 minutes old: out.
    assert_eq!(b.add_distinct(k, "m4", w, c.now()).await.expect("store"), 3);
    // Re-adding refreshes: m2 (6 min old) re-added now stays after m3 leaves.
    assert_eq!(a.add_distinct(k, "m2", w, c.now()).await.expect("store"), 3);
    c.advance(6 * MINUTE);
    // m3 (7 min), m4 and m2 (6 min) are all still in.
    assert_eq!(a.add_distinct(k, "m5", w, c.now()).await.expect("store"), 4);
    c.advance(4 * MINUTE);
    // m3 (11 min), m4 and m2 (10 min) are out; only m5 (4 min) and m6.
    assert_eq!(b.add_distinct(k, "m6", w, c.now()).await.expect("store"), 2);
    c.advance(HOUR);
    assert_eq!(a.add_distinct(k, "m6", w, c.now()).await.expect("store"), 1);
}

/// Counters of different keys do not mix.
pub async fn counters_are_per_key(a: &impl StateStore, b: &impl StateStore) {
    let c = Clock::new();
    let w = 10 * MINUTE;
    a.add_distinct("k1", "m1", w, c.now()).await.expect("store");
    a.add_distinct("k1", "m2", w, c.now()).await.expect("store");
    assert_eq!(
        b.add_distinct("k2", "m1", w, c.now()).await.expect("store"),
        1
    );
    assert_eq!(
        b.add_distinct("k1", "m3", w, c.now()).await.expect("store"),
        3
    );
    assert_eq!(b.ban_status("k1", c.now()).await.expect("store"), None);
}

/// Concurrent additions of distinct members from two hosts each get their
/// own count: the counts are exactly 1..=n.
pub async fn concurrent_adds_get_distinct_counts(a: &impl StateStore, b: &impl StateStore) {
    let c = Clock::new();
    let w = 10 * MINUTE;
    let n = 40;
    let members: Vec<String> = (0..n).map(|i| format!("rcpt{i}@example.org")).collect();
    let futs: Vec<_> = members
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let s: &dyn StateStore = if i % 2 == 0 { a } else { b };
            s.add_distinct("203.0.113.9", m, w, c.now())
        })
        .collect();
    let mut counts: Vec<u64> = join_all(futs)
        .await
        .into_iter()
        .map(|r| r.expect("store"))
        .collect();
    counts.sort_unstable();
    let expected: Vec<u64> = (1..=n).collect();
    assert_eq!(
        counts, expected,
        "each concurrent addition sees its own count"
    );
}

/// A first strike bans for `base`; the ban is seen by both hosts until it
/// ends, and not after.
pub async fn strike_bans_until_the_ban_ends(a: &impl StateStore, b: &impl StateStore) {
    let mut c = Clock::new();
    let k = "192.0.2.10";
    assert_eq!(a.ban_status(k, c.now()).await.expect("store"), None);
    let s = a
        .strike(k, &rule(true), "too many unknown recipients", c.now())
        .await
        .expect("store");
    assert!(s.new);
    assert_eq!(s.ban.key, k);
    assert_eq!(s.ban.until, c.now() + HOUR);
    assert_eq!(s.ban.reason, "too many unknown recipients");
    assert_eq!(s.ban.strikes, 1);
    assert_eq!(
        b.ban_status(k, c.now()).await.expect("store"),
        Some(s.ban.clone()),
        "the other host sees the ban"
    );
    c.advance(HOUR - Duration::from_millis(1));
    assert_eq!(
        b.ban_status(k, c.now()).await.expect("store"),
        Some(s.ban.clone()),
        "a millisecond before it ends"
    );
    c.advance(Duration::from_millis(1));
    assert_eq!(
        a.ban_status(k, c.now()).await.expect("store"),
        None,
        "ended"
    );
    assert_eq!(
        b.ban_status(k, c.now()).await.expect("store"),
        None,
        "ended"
    );
}

/// Striking a banned key returns the ban unchanged and adds no strike.
pub async fn strike_while_banned_changes_nothing(a: &impl StateStore, b: &impl StateStore) {
    let mut c = Clock::new();
    let k = "192.0.2.11";
    let first = a
        .strike(k, &rule(true), "first", c.now())
        .await
        .expect("store");
    c.advance(MINUTE);
    let again = b
        .strike(k, &rule(true), "second", c.now())
        .await
        .expect("store");
    assert!(!again.new);
    assert_eq!(again.ban, first.ban);
    // After the ban, the next strike is the second one (not the third).
    c.advance(HOUR);
    let next = a
        .strike(k, &rule(true), "third", c.now())
        .await
        .expect("store");
    assert!(next.new);
    assert_eq!(next.ban.strikes, 2);
}

/// Two hosts striking at once make one ban with one strike.
pub async fn concurrent_strikes_make_one_ban(a: &impl StateStore, b: &impl StateStore) {
    let c = Clock::new();
    let k = "2001:db8:1:2::/64";
    let r = rule(true);
    let futs: Vec<_> = (0..10)
        .map(|i| {
            let s: &dyn StateStore = if i % 2 == 0 { a } else { b };
            s.strike(k, &r, "dictionary attack", c.now())
        })
        .collect();
    let strikes: Vec<_> = join_all(futs)
        .await
        .into_iter()
        .map(|r| r.expect("store"))
        .collect();
    assert_eq!(strikes.iter().filter(|s| s.new).count(), 1, "one new ban");
    for s in &strikes {
        assert_eq!(s.ban, strikes[0].ban, "everyone sees the same ban");
        assert_eq!(s.ban.strikes, 1);
    }
}

/// Repeat offences double the ban up to the cap.
pub async fn escalation_doubles_up_to_the_cap(a: &impl StateStore, b: &impl StateStore) {
    let mut c = Clock::new();
    let k = "192.0.2.12";
    let r = rule(true);
    let mut lengths = Vec::new();
    for i in 0..5 {
        let s: &dyn StateStore = if i % 2 == 0 { a } else { b };
        let strike = s.strike(k, &r, "again", c.now()).await.expect("store");
        assert!(strike.new);
        assert_eq!(strike.ban.strikes, i + 1);
        let len = strike
            .ban
            .until
            .duration_since(c.now())
            .expect("the ban ends after now");
        lengths.push(len);
        // Come back a minute after the ban ends.
        c.advance(len + MINUTE);
    }
    assert_eq!(lengths, [HOUR, 2 * HOUR, 4 * HOUR, 4 * HOUR, 4 * HOUR]);
}

/// A strike is forgotten `forget_after` past the end of its ban.
pub async fn strikes_are_forgotten(a: &impl StateStore, b: &impl StateStore) {
    let mut c = Clock::new();
    let k = "192.0.2.13";
    let r = rule(true);
    a.strike(k, &r, "x", c.now()).await.expect("store");
    // The ban ends after 1 h; the strike is remembered 24 h more.
    c.advance(HOUR + 24 * HOUR - Duration::from_millis(1));
    let s = b.strike(k, &r, "x", c.now()).await.expect("store");
    assert_eq!(s.ban.strikes, 2, "remembered just before it is forgotten");
    // That second ban lasts 2 h; its strike is forgotten 24 h after.
    c.advance(2 * HOUR + 24 * HOUR);
    let s = a.strike(k, &r, "x", c.now()).await.expect("store");
    assert_eq!(s.ban.strikes, 1, "forgotten");
    assert_eq!(s.ban.until, c.now() + HOUR);
}

/// With escalation off every ban lasts `base`, though strikes are counted.
pub async fn without_escalation_bans_stay_the_same(a: &impl StateStore, b: &impl StateStore) {
    let mut c = Clock::new();
    let k = "192.0.2.14";
    let r = rule(false);
    for (i, s) in [a as &dyn StateStore, b, a].into_iter().enumerate() {
        let strike = s.strike(k, &r, "x", c.now()).await.expect("store");
        assert_eq!(strike.ban.until, c.now() + HOUR);
        assert_eq!(strike.ban.strikes as usize, i + 1);
        c.advance(HOUR);
    }
}

/// A new ban clears the distinct counter, so counting starts afresh.
pub async fn strike_resets_the_counter(a: &impl StateStore, b: &impl StateStore) {
    let mut c = Clock::new();
    let k = "192.0.2.15";
    let w = 10 * MINUTE;
    for m in ["m1", "m2", "m3"] {
        a.add_distinct(k, m, w, c.now()).await.expect("store");
    }
    b.strike(k, &rule(true), "x", c.now()).await.expect("store");
    c.advance(MINUTE);
    assert_eq!(a.add_distinct(k, "m1", w, c.now()).await.expect("store"), 1);
}

/// A ban set by hand replaces the current one and carries the remembered
/// strikes without adding one; an already ended `until` does nothing.
pub async fn manual_ban_replaces_and_keeps_strikes(a: &impl StateStore, b: &impl StateStore) {
    let mut c = Clock::new();
    let k = "192.0.2.16";
    a.ban(k, c.now() + MINUTE, "by hand", c.now())
        .await
        .expect("store");
    let ban = b
        .ban_status(k, c.now())
        .await
        .expect("store")
        .expect("banned");
    assert_eq!(
        (ban.until, ban.reason.as_str(), ban.strikes),
        (c.now() + MINUTE, "by hand", 0)
    );
    c.advance(MINUTE);
    assert_eq!(b.ban_status(k, c.now()).await.expect("store"), None);

    a.strike(k, &rule(true), "struck", c.now())
        .await
        .expect("store");
    b.ban(k, c.now() + 10 * HOUR, "longer", c.now())
        .await
        .expect("store");
    let ban = a
        .ban_status(k, c.now())
        .await
        .expect("store")
        .expect("banned");
    assert_eq!(
        (ban.until, ban.reason.as_str(), ban.strikes),
        (c.now() + 10 * HOUR, "longer", 1)
    );
    b.ban(k, c.now() + MINUTE, "shorter", c.now())
        .await
        .expect("store");
    let ban = a
        .ban_status(k, c.now())
        .await
        .expect("store")
        .expect("banned");
    assert_eq!(
        (ban.until, ban.reason.as_str()),
        (c.now() + MINUTE, "shorter")
    );
    // An until at or before now changes nothing.
    a.ban(k, c.now(), "ended", c.now()).await.expect("store");
    a.ban(k, c.now() - MINUTE, "ended", c.now())
        .await
        .expect("store");
    let ban = b
        .ban_status(k, c.now())
        .await
        .expect("store")
        .expect("banned");
    assert_eq!(ban.reason, "shorter");
    // The manual ban added no strike: the next strike is the second.
    c.advance(MINUTE);
    let s = a
        .strike(k, &rule(true), "again", c.now())
        .await
        .expect("store");
    assert_eq!(s.ban.strikes, 2);
}

/// Lifting removes the ban, the strikes and the counter of a key, and only
/// of that key.
pub async fn lift_forgives_everything(a: &impl StateStore, b: &impl StateStore) {
    let mut c = Clock::new();
    let k = "192.0.2.17";
    let other = "192.0.2.18";
    let w = 10 * MINUTE;
    a.strike(k, &rule(true), "x", c.now()).await.expect("store");
    a.strike(other, &rule(true), "x", c.now())
        .await
        .expect("store");
    c.advance(HOUR);
    a.strike(k, &rule(true), "x", c.now()).await.expect("store");
    a.add_distinct(k, "m1", w, c.now()).await.expect("store");
    a.add_distinct(k, "m2", w, c.now()).await.expect("store");
    b.lift(k, c.now()).await.expect("store");
    assert_eq!(a.ban_status(k, c.now()).await.expect("store"), None);
    assert_eq!(a.add_distinct(k, "m3", w, c.now()).await.expect("store"), 1);
    let s = a.strike(k, &rule(true), "x", c.now()).await.expect("store");
    assert_eq!(s.ban.strikes, 1, "strikes forgiven");
    assert_eq!(s.ban.until, c.now() + HOUR);
    // Lifting an unknown key is fine.
    b.lift("192.0.2.99", c.now()).await.expect("store");
    // The other key's strike is still remembered.
    let s = b
        .strike(other, &rule(true), "x", c.now())
        .await
        .expect("store");
    assert_eq!(s.ban.strikes, 2);
}

/// `list` shows the bans active at `now`, sorted by key, from either host.
pub async fn list_shows_active_bans_sorted(a: &impl StateStore, b: &impl StateStore) {
    let mut c = Clock::new();
    assert_eq!(a.list(c.now()).await.expect("store"), []);
    a.ban("192.0.2.3", c.now() + 2 * HOUR, "b", c.now())
        .await
        .expect("store");
    b.ban("192.0.2.1", c.now() + HOUR, "a", c.now())
        .await
        .expect("store");
    a.strike("2001:db8::/64", &rule(true), "c", c.now())
        .await
        .expect("store");
    // A counter alone is not a ban.
    b.add_distinct("192.0.2.2", "m", MINUTE, c.now())
        .await
        .expect("store");
    let keys = |bans: Vec<super::Ban>| bans.into_iter().map(|b| b.key).collect::<Vec<_>>();
    assert_eq!(
        keys(b.list(c.now()).await.expect("store")),
        ["192.0.2.1", "192.0.2.3", "2001:db8::/64"]
    );
    let bans = a.list(c.now()).await.expect("store");
    assert_eq!(bans[1].until, c.now() + 2 * HOUR);
    assert_eq!(bans[1].reason, "b");
    assert_eq!(bans[2].strikes, 1);
    c.advance(HOUR);
    assert_eq!(keys(a.list(c.now()).await.expect("store")), ["192.0.2.3"]);
    b.lift("192.0.2.3", c.now()).await.expect("store");
    assert_eq!(a.list(c.now()).await.expect("store"), []);
}

/// Keys, members and reasons with spaces, separators, glob characters and
/// non-ASCII text come back as they went in.
pub async fn odd_keys_members_and_reasons_round_trip(a: &impl StateStore, b: &impl StateStore) {
    let c = Clock::new();
    let keys = ["a b", "*", "k[1]?", "x:y\\z", "ключ", ""];
    let reason = "too many  unknown | recipients: 100% ü\ttab";
    for k in keys {
        a.add_distinct(k, "m *?", MINUTE, c.now())
            .await
            .expect("store");
        assert_eq!(
            b.add_distinct(k, "m *?", MINUTE, c.now())
                .await
                .expect("store"),
            1
        );
        a.ban(k, c.now() + HOUR, reason, c.now())
            .await
            .expect("store");
        let ban = b
            .ban_status(k, c.now())
            .await
            .expect("store")
            .expect("banned");
        assert_eq!((ban.key.as_str(), ban.reason.as_str()), (k, reason));
    }
    let mut listed: Vec<String> = b
        .list(c.now())
        .await
        .expect("store")
        .into_iter()
        .map(|b| b.key)
        .collect();
    let mut expected: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
    expected.sort();
    listed.sort();
    assert_eq!(listed, expected);
}

/// A counter never reports more than [`MAX_DISTINCT_MEMBERS`].
pub async fn distinct_count_is_capped(a: &impl StateStore, b: &impl StateStore) {
    let mut c = Clock::new();
    let n = MAX_DISTINCT_MEMBERS + 3;
    let mut last = 0;
    for i in 0..n {
        let s: &dyn StateStore = if i % 2 == 0 { a } else { b };
        last = s
            .add_distinct("192.0.2.20", &format!("m{i}"), HOUR, c.now())
            .await
            .expect("store");
        assert!(last <= MAX_DISTINCT_MEMBERS, "count {last} over the cap");
        c.advance(Duration::from_millis(1));
    }
    assert_eq!(last, MAX_DISTINCT_MEMBERS);
}

/// Polls all futures concurrently until each is done; results in order.
///
/// A few lines instead of a dependency on `futures`: core stays free of any
/// async runtime or helper crate.
async fn join_all<'a, T>(futs: Vec<Pin<Box<dyn Future<Output = T> + Send + 'a>>>) -> Vec<T> {
    let mut futs: Vec<_> = futs.into_iter().map(Some).collect();
    let mut out: Vec<Option<T>> = futs.iter().map(|_| None).collect();
    poll_fn(|cx| {
        let mut pending = false;
        for (slot, result) in futs.iter_mut().zip(out.iter_mut()) {
            if let Some(fut) = slot {
                match fut.as_mut().poll(cx) {
                    Poll::Ready(v) => {
                        *result = Some(v);
                        *slot = None;
                    }
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    out.into_iter()
        .map(|v| v.expect("every future completed"))
        .collect()
}
