//! The contract every [`AliasStore`] keeps, as a test suite.
//!
//! Implementations run it from their tests:
//!
//! ```
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use nobounce_aliases::{contract, SqliteAliasStore};
//!
//! let dir = tempfile::tempdir()?;
//! let mut n = 0;
//! contract::run(|| {
//!     n += 1;
//!     let path = dir.path().join(format!("{n}.db"));
//!     async move {
//!         // Two connections to one file: the CLI and the daemon.
//!         (SqliteAliasStore::open(&path).unwrap(), SqliteAliasStore::open(&path).unwrap())
//!     }
//! })
//! .await;
//! # Ok(()) }
//! ```
//!
//! `make_pair` returns two handles on one fresh, empty store, as two hosts
//! (or the CLI and the daemon) would hold them; the checks write through
//! one and read through the other, and race them against each other. Every
//! check panics with a message naming the broken rule.

use nobounce_core::{
    alias::{Alias, AliasStore, Created, ListFilter, Update},
    store::{from_millis, to_millis},
};
use std::{
    future::Future,
    sync::OnceLock,
    time::{Duration, SystemTime},
};

/// `offset_secs` after a whole second near the time the checks started
/// (the same for every check, so two calls never straddle a second).
fn t(offset_secs: u64) -> SystemTime {
    static BASE: OnceLock<u64> = OnceLock::new();
    let base = *BASE.get_or_init(|| to_millis(SystemTime::now()) / 1000 * 1000);
    from_millis(base) + Duration::from_secs(offset_secs)
}

fn alias(address: &str, created: SystemTime) -> Alias {
    let mut a = Alias::new(address, "shop.example", "me@example.org", created);
    a.correspondent_domains = vec!["shop.example".into()];
    a
}

/// Runs every check, each on a fresh pair from `make_pair`.
pub async fn run<S, F, Fut>(mut make_pair: F)
where
    S: AliasStore,
    F: FnMut() -> Fut,
    Fut: Future<Output = (S, S)>,
{
    let (a, b) = make_pair().await;
    created_aliases_are_read_back_whole(&a, &b).await;
    let (a, b) = make_pair().await;
    lookups_ignore_case(&a, &b).await;
    let (a, b) = make_pair().await;
    create_never_overwrites(&a, &b).await;
    let (a, b) = make_pair().await;
    concurrent_creates_make_one_alias(&a, &b).await;
    let (a, b) = make_pair().await;
    list_filters_and_sorts(&a, &b).await;
    let (a, b) = make_pair().await;
    retire_keeps_the_first_retirement(&a, &b).await;
    let (a, b) = make_pair().await;
    concurrent_retires_change_once(&a, &b).await;
    let (a, b) = make_pair().await;
    restore_puts_an_alias_back(&a, &b).await;
    let (a, b) = make_pair().await;
    reject_foreign_is_a_switch(&a, &b).await;
    let (a, b) = make_pair().await;
    unknown_aliases_are_not_errors(&a, &b).await;
    let (a, b) = make_pair().await;
    times_are_kept_to_the_millisecond(&a, &b).await;
}

/// Every field survives the store: odd text, several domains, a retired
/// alias created as such, `reject_foreign`.
pub async fn created_aliases_are_read_back_whole(a: &dyn AliasStore, b: &dyn AliasStore) {
    let mut x = alias("shop-example.k7q2m@alias.example.org", t(0));
    x.correspondent = "Bücher & Söhne \"GmbH\"; 'quoted'".into();
    x.correspondent_domains = vec!["shop.example".into(), "mail.shop.example".into()];
    x.note = "line one\nline two\t% {} [] \\ ".into();
    x.reject_foreign = true;
    assert_eq!(a.create(&x).await.unwrap(), Created::New, "create");
    assert_eq!(
        b.get(&x.address).await.unwrap().as_ref(),
        Some(&x),
        "what one handle created, the other reads back unchanged"
    );
    let mut y = alias("old.aaaaa@alias.example.org", t(1));
    y.correspondent_domains = Vec::new();
    y.retired = Some((t(2), String::new()));
    assert_eq!(a.create(&y).await.unwrap(), Created::New);
    assert_eq!(
        b.get(&y.address).await.unwrap().as_ref(),
        Some(&y),
        "a retired alias with an empty reason and no domains round-trips"
    );
}

/// The whole address is looked up without ASCII case, and stored in lower
/// case whatever case it was created with.
pub async fn lookups_ignore_case(a: &dyn AliasStore, b: &dyn AliasStore) {
    let mut x = alias("shop.k7q2m@alias.example.org", t(0));
    x.address = "Shop.K7Q2M@Alias.Example.ORG".into();
    assert_eq!(a.create(&x).await.unwrap(), Created::New);
    for probe in [
        "shop.k7q2m@alias.example.org",
        "SHOP.K7Q2M@ALIAS.EXAMPLE.ORG",
        "<shop.k7q2m@alias.example.org>",
        "shop.k7q2m@alias.example.org.",
    ] {
        let got = b.get(probe).await.unwrap();
        assert_eq!(
            got.map(|g| g.address),
            Some("shop.k7q2m@alias.example.org".to_owned()),
            "get({probe:?}) finds the alias, in its normalised form"
        );
    }
    assert!(matches!(
        b.retire("SHOP.k7q2m@alias.EXAMPLE.org", "r", t(1))
            .await
            .unwrap(),
        Update::Changed(_)
    ));
    assert!(a
        .get("shop.k7q2m@alias.example.org")
        .await
        .unwrap()
        .is_some_and(|g| g.is_retired()));
    let all = a.list(ListFilter::All).await.unwrap();
    assert_eq!(all.len(), 1, "one alias, whatever case it was written in");
}

/// Creating an address that exists changes nothing, in any case.
pub async fn create_never_overwrites(a: &dyn AliasStore, b: &dyn AliasStore) {
    let first = alias("x.abcde@alias.example.org", t(0));
    assert_eq!(a.create(&first).await.unwrap(), Created::New);
    let mut second = alias("X.ABCDE@alias.example.org", t(5));
    second.mailbox = "thief@example.net".into();
    assert_eq!(
        b.create(&second).await.unwrap(),
        Created::Exists,
        "an existing address is never created again"
    );
    assert_eq!(
        a.get(&first.address).await.unwrap().as_ref(),
        Some(&first),
        "the first record stays"
    );
}

/// Two handles creating the same address at once: one wins.
pub async fn concurrent_creates_make_one_alias(a: &dyn AliasStore, b: &dyn AliasStore) {
    for i in 0..10 {
        let addr = format!("race{i}.abcde@alias.example.org");
        let mut x = alias(&addr, t(0));
        x.mailbox = "a@example.org".into();
        let mut y = alias(&addr, t(0));
        y.mailbox = "b@example.org".into();
        let (ra, rb) = tokio::join!(a.create(&x), b.create(&y));
        let outcomes = [ra.unwrap(), rb.unwrap()];
        assert_eq!(
            outcomes.iter().filter(|o| **o == Created::New).count(),
            1,
            "exactly one of two concurrent creates wins: {outcomes:?}"
        );
        let got = a.get(&addr).await.unwrap().expect("created");
        let winner = if outcomes[0] == Created::New { &x } else { &y };
        assert_eq!(&got, winner, "the winner's record is stored whole");
    }
}

/// `list` returns what the filter asks for, sorted by address.
pub async fn list_filters_and_sorts(a: &dyn AliasStore, b: &dyn AliasStore) {
    assert!(a.list(ListFilter::All).await.unwrap().is_empty(), "empty");
    for addr in [
        "c.ccccc@alias.example.org",
        "a.aaaaa@alias.example.org",
        "b.bbbbb@alias.example.org",
    ] {
        assert_eq!(a.create(&alias(addr, t(0))).await.unwrap(), Created::New);
    }
    let _ = b
        .retire("b.bbbbb@alias.example.org", "leaked", t(1))
        .await
        .unwrap();
    let names = |v: Vec<Alias>| v.into_iter().map(|a| a.address).collect::<Vec<_>>();
    assert_eq!(
        names(b.list(ListFilter::All).await.unwrap()),
        [
            "a.aaaaa@alias.example.org",
            "b.bbbbb@alias.example.org",
            "c.ccccc@alias.example.org"
        ],
        "All, sorted"
    );
    assert_eq!(
        names(a.list(ListFilter::Active).await.unwrap()),
        ["a.aaaaa@alias.example.org", "c.ccccc@alias.example.org"],
        "Active"
    );
    assert_eq!(
        names(a.list(ListFilter::Retired).await.unwrap()),
        ["b.bbbbb@alias.example.org"],
        "Retired"
    );
}

/// Retiring records when and why; retiring again keeps the first.
pub async fn retire_keeps_the_first_retirement(a: &dyn AliasStore, b: &dyn AliasStore) {
    let x = alias("x.abcde@alias.example.org", t(0));
    assert_eq!(a.create(&x).await.unwrap(), Created::New);
    let retired = match a.retire(&x.address, "sold to a list", t(10)).await.unwrap() {
        Update::Changed(r) => r,
        other => panic!("retire of an active alias changes it: {other:?}"),
    };
    assert_eq!(retired.retired, Some((t(10), "sold to a list".into())));
    assert_eq!(
        Alias {
            retired: None,
            ..retired.clone()
        },
        x,
        "retiring changes nothing else"
    );
    assert_eq!(
        b.retire(&x.address, "another reason", t(20)).await.unwrap(),
        Update::Unchanged(retired.clone()),
        "a retired alias keeps its first retirement"
    );
    assert_eq!(b.get(&x.address).await.unwrap(), Some(retired));
}

/// Two handles retiring at once: one changes it, the other finds it done.
pub async fn concurrent_retires_change_once(a: &dyn AliasStore, b: &dyn AliasStore) {
    for i in 0..10 {
        let addr = format!("r{i}.abcde@alias.example.org");
        assert_eq!(a.create(&alias(&addr, t(0))).await.unwrap(), Created::New);
        let (ra, rb) = tokio::join!(a.retire(&addr, "a", t(1)), b.retire(&addr, "b", t(2)));
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        let changed = [&ra, &rb]
            .iter()
            .filter(|u| matches!(u, Update::Changed(_)))
            .count();
        assert_eq!(
            changed, 1,
            "one of two concurrent retires changes: {ra:?} {rb:?}"
        );
        assert_eq!(
            ra.alias(),
            rb.alias(),
            "both see the same, first retirement"
        );
    }
}

/// Restoring forgets the retirement; restoring an active alias does
/// nothing.
pub async fn restore_puts_an_alias_back(a: &dyn AliasStore, b: &dyn AliasStore) {
    let x = alias("x.abcde@alias.example.org", t(0));
    assert_eq!(a.create(&x).await.unwrap(), Created::New);
    assert_eq!(
        a.restore(&x.address).await.unwrap(),
        Update::Unchanged(x.clone()),
        "an active alias is restored already"
    );
    let _ = a.retire(&x.address, "oops", t(1)).await.unwrap();
    assert_eq!(
        b.restore(&x.address).await.unwrap(),
        Update::Changed(x.clone()),
        "restored, exactly as it was before"
    );
    assert_eq!(a.get(&x.address).await.unwrap(), Some(x.clone()));
    // Retired again later: the new retirement counts.
    let again = a.retire(&x.address, "for good", t(9)).await.unwrap();
    assert_eq!(
        again.alias().and_then(|r| r.retired.clone()),
        Some((t(9), "for good".to_owned()))
    );
}

/// `set_reject_foreign` switches the flag and says whether it changed.
pub async fn reject_foreign_is_a_switch(a: &dyn AliasStore, b: &dyn AliasStore) {
    let x = alias("x.abcde@alias.example.org", t(0));
    assert_eq!(a.create(&x).await.unwrap(), Created::New);
    let on = Alias {
        reject_foreign: true,
        ..x.clone()
    };
    assert_eq!(
        a.set_reject_foreign(&x.address, true).await.unwrap(),
        Update::Changed(on.clone())
    );
    assert_eq!(
        b.set_reject_foreign(&x.address, true).await.unwrap(),
        Update::Unchanged(on)
    );
    assert_eq!(
        b.set_reject_foreign(&x.address, false).await.unwrap(),
        Update::Changed(x.clone())
    );
    assert_eq!(a.get(&x.address).await.unwrap(), Some(x));
}

/// An unknown address is an answer, not an error, for every operation.
pub async fn unknown_aliases_are_not_errors(a: &dyn AliasStore, b: &dyn AliasStore) {
    let nobody = "nobody.zzzzz@alias.example.org";
    assert_eq!(a.get(nobody).await.unwrap(), None, "get");
    assert_eq!(
        a.retire(nobody, "r", t(0)).await.unwrap(),
        Update::NotFound,
        "retire"
    );
    assert_eq!(
        b.restore(nobody).await.unwrap(),
        Update::NotFound,
        "restore"
    );
    assert_eq!(
        b.set_reject_foreign(nobody, true).await.unwrap(),
        Update::NotFound,
        "set_reject_foreign"
    );
    assert!(
        a.list(ListFilter::All).await.unwrap().is_empty(),
        "updates of unknown aliases create nothing"
    );
}

/// Times come back truncated to whole milliseconds.
pub async fn times_are_kept_to_the_millisecond(a: &dyn AliasStore, b: &dyn AliasStore) {
    let created = t(0) + Duration::from_nanos(1_234_567);
    let x = alias("x.abcde@alias.example.org", created);
    assert_eq!(a.create(&x).await.unwrap(), Created::New);
    let got = b.get(&x.address).await.unwrap().expect("created");
    assert_eq!(got.created, t(0) + Duration::from_millis(1), "created");
    let retired = b
        .retire(&x.address, "r", t(3) + Duration::from_micros(2_500))
        .await
        .unwrap();
    assert_eq!(
        retired.alias().and_then(|r| r.retired.clone()).map(|r| r.0),
        Some(t(3) + Duration::from_millis(2)),
        "retired"
    );
}
