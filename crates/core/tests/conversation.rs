//! Component tests: whole SMTP conversations against the engine, with fake
//! ports (directory, DNS) and a manual clock.

use async_trait::async_trait;
use nobounce_core::{
    DirectoryError, Engine, EngineConfig, ManualClock, RecipientDirectory, RecipientQuery,
    RecipientStatus, Verdict,
};
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, SystemTime},
};
use viaspf::lookup::{Lookup, LookupError, LookupResult, Name};

#[derive(Debug)]
struct NoDns;

#[async_trait]
impl Lookup for NoDns {
    async fn lookup_a<'l, 'a>(&'l self, _: &'a Name) -> LookupResult<Vec<Ipv4Addr>> {
        Err(LookupError::NoRecords)
    }
    async fn lookup_aaaa<'l, 'a>(&'l self, _: &'a Name) -> LookupResult<Vec<Ipv6Addr>> {
        Err(LookupError::NoRecords)
    }
    async fn lookup_mx<'l, 'a>(&'l self, _: &'a Name) -> LookupResult<Vec<Name>> {
        Err(LookupError::NoRecords)
    }
    async fn lookup_txt<'l, 'a>(&'l self, _: &'a Name) -> LookupResult<Vec<String>> {
        Err(LookupError::NoRecords)
    }
    async fn lookup_ptr<'l>(&'l self, _: IpAddr) -> LookupResult<Vec<Name>> {
        Err(LookupError::NoRecords)
    }
}

/// Knows `alice@local.test` (10 kB of room) and `full@local.test` (none);
/// `down@local.test` fails; other local.test addresses are unknown.
#[derive(Debug, Default)]
struct FakeDirectory {
    queries: AtomicUsize,
}

#[async_trait]
impl RecipientDirectory for FakeDirectory {
    async fn lookup(&self, q: &RecipientQuery<'_>) -> Result<RecipientStatus, DirectoryError> {
        self.queries.fetch_add(1, Ordering::SeqCst);
        let Some((_, domain)) = q.address.rsplit_once('@') else {
            return Ok(RecipientStatus::NotHandled);
        };
        if domain != "local.test" {
            return Ok(RecipientStatus::NotHandled);
        }
        match q.address {
            "alice@local.test" => {
                if q.declared_size.is_some_and(|s| s > 10_000) {
                    Ok(RecipientStatus::OverQuota {
                        room_left: Some(10_000),
                    })
                } else {
                    Ok(RecipientStatus::Deliverable)
                }
            }
            "full@local.test" => Ok(RecipientStatus::OverQuota { room_left: Some(0) }),
            "down@local.test" => Err(DirectoryError::new("backend down")),
            _ => Ok(RecipientStatus::Unknown),
        }
    }
}

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_780_800) // 2026-11-27T12:00:00Z
}

fn engine(clock: Arc<ManualClock>, config: EngineConfig) -> Engine {
    Engine::builder(config)
        .lookup(NoDns)
        .directory(Arc::new(FakeDirectory::default()))
        .clock(clock)
        .build()
}

fn code(v: &Verdict) -> String {
    v.reply()
        .map_or_else(|| v.kind().to_string(), |r| r.to_string())
}

const ATTACKER: &str = "198.51.100.7";

/// Connects and says HELO; returns the session and the verdict at HELO (a
/// ban is told at the first command, see `Session::connect`).
async fn session_from(engine: &Engine, ip: &str) -> (nobounce_core::Session, Verdict) {
    let mut s = engine.session();
    let v = s
        .connect(ip.parse().ok(), "client.test", Some("mx.local.test"))
        .await;
    assert_eq!(v, Verdict::Continue, "connect itself never refuses");
    let v = s.helo("client.test").await;
    (s, v)
}

#[tokio::test]
async fn recipients_are_judged_one_by_one() {
    let clock = Arc::new(ManualClock::new(t0()));
    let e = engine(clock, EngineConfig::default());
    let (mut s, _) = session_from(&e, "192.0.2.1").await;
    assert!(!s
        .mail_from("<a@remote.test>", &["SIZE=5000"], None)
        .await
        .is_refusal());
    assert_eq!(
        code(&s.rcpt_to("<alice@local.test>", &[]).await),
        "continue"
    );
    assert!(code(&s.rcpt_to("<nobody@local.test>", &[]).await).starts_with("550 5.1.1 "));
    assert!(code(&s.rcpt_to("<full@local.test>", &[]).await).starts_with("452 4.2.2 "));
    assert!(code(&s.rcpt_to("<down@local.test>", &[]).await).starts_with("451 4.4.3 "));
    assert_eq!(
        code(&s.rcpt_to("<x@elsewhere.test>", &[]).await),
        "continue"
    );
    // The healthy recipient is unaffected by the others.
    assert_eq!(
        code(&s.rcpt_to("<alice@local.test>", &[]).await),
        "continue"
    );
}

#[tokio::test]
async fn declared_size_larger_than_room_is_refused_at_rcpt() {
    let clock = Arc::new(ManualClock::new(t0()));
    let e = engine(clock, EngineConfig::default());
    let (mut s, _) = session_from(&e, "192.0.2.1").await;
    s.mail_from("<>", &["SIZE=20000"], None).await;
    assert!(code(&s.rcpt_to("<alice@local.test>", &[]).await).starts_with("452 4.2.2 "));
}

#[tokio::test]
async fn ten_distinct_unknown_recipients_ban_the_client_for_an_hour() {
    let clock = Arc::new(ManualClock::new(t0()));
    let e = engine(clock.clone(), EngineConfig::default());
    let (mut s, v) = session_from(&e, ATTACKER).await;
    assert_eq!(code(&v), "continue");
    s.mail_from("<spam@remote.test>", &[], None).await;
    for i in 0..9 {
        assert!(code(&s.rcpt_to(&format!("<u{i}@local.test>"), &[]).await).starts_with("550 5.1.1"));
        // The same unknown address again counts once.
        s.rcpt_to(&format!("<u{i}@local.test>"), &[]).await;
    }
    // The tenth distinct one: still answered 550 for itself ...
    assert!(code(&s.rcpt_to("<u9@local.test>", &[]).await).starts_with("550 5.1.1"));
    // ... but from now on this connection is told to go away.
    let v = s.rcpt_to("<alice@local.test>", &[]).await;
    assert!(matches!(v, Verdict::Disconnect { .. }), "{v:?}");

    // A new connection is refused at its first command with 421 4.7.0 and
    // the end of the ban in UTC.
    let (_, v) = session_from(&e, ATTACKER).await;
    let text = code(&v);
    assert!(matches!(v, Verdict::Disconnect { .. }));
    assert!(
        text.starts_with("421 4.7.0 198.51.100.7 banned until 2026-11-27T13:00:00Z"),
        "{text}"
    );
    // Others are not affected.
    let (_, v) = session_from(&e, "192.0.2.99").await;
    assert_eq!(code(&v), "continue");

    // The ban expires by itself.
    clock.advance(Duration::from_secs(3601));
    let (_, v) = session_from(&e, ATTACKER).await;
    assert_eq!(code(&v), "continue");
}

#[tokio::test]
async fn mta_rejected_unknown_recipients_count_too() {
    let clock = Arc::new(ManualClock::new(t0()));
    let e = engine(clock, EngineConfig::default());
    let (mut s, _) = session_from(&e, ATTACKER).await;
    s.mail_from("<spam@remote.test>", &[], None).await;
    // Relay denials do not count; unknown users do.
    for i in 0..20 {
        s.mta_rejected_rcpt(&format!("<r{i}@other.test>"), Some("5.7.1"))
            .await;
    }
    let (_, v) = session_from(&e, ATTACKER).await;
    assert_eq!(code(&v), "continue");
    for i in 0..10 {
        s.mta_rejected_rcpt(&format!("<u{i}@local.test>"), Some("5.1.1"))
            .await;
    }
    let (_, v) = session_from(&e, ATTACKER).await;
    assert!(code(&v).starts_with("421 4.7.0 "), "{}", code(&v));
}

#[tokio::test]
async fn authenticated_and_trusted_clients_are_never_banned() {
    let clock = Arc::new(ManualClock::new(t0()));
    let e = engine(clock, EngineConfig::default());
    let (mut s, _) = session_from(&e, ATTACKER).await;
    s.mail_from("<me@remote.test>", &[], Some("me")).await;
    for i in 0..15 {
        s.rcpt_to(&format!("<u{i}@local.test>"), &[]).await;
    }
    let (_, v) = session_from(&e, ATTACKER).await;
    assert_eq!(code(&v), "continue");

    let (mut s, _) = session_from(&e, "127.0.0.1").await;
    s.mail_from("<me@remote.test>", &[], None).await;
    for i in 0..15 {
        s.rcpt_to(&format!("<u{i}@local.test>"), &[]).await;
    }
    let (_, v) = session_from(&e, "127.0.0.1").await;
    assert_eq!(code(&v), "continue");
}

#[tokio::test]
async fn dry_run_bans_nothing_visible() {
    let clock = Arc::new(ManualClock::new(t0()));
    let e = engine(
        clock,
        EngineConfig {
            dry_run: true,
            ..Default::default()
        },
    );
    let (mut s, _) = session_from(&e, ATTACKER).await;
    s.mail_from("<spam@remote.test>", &[], None).await;
    for i in 0..12 {
        assert_eq!(
            code(&s.rcpt_to(&format!("<u{i}@local.test>"), &[]).await),
            "continue"
        );
    }
    let (_, v) = session_from(&e, ATTACKER).await;
    assert_eq!(code(&v), "continue");
}

/// A `TtlLookup` with one SPF record, counting TXT queries.
#[derive(Debug, Default)]
struct CountingDns {
    txt: AtomicUsize,
}

#[async_trait]
impl nobounce_core::dns::TtlLookup for CountingDns {
    async fn lookup_a(&self, _: &Name) -> nobounce_core::dns::TtlResult<Ipv4Addr> {
        Err(nobounce_core::dns::TtlLookupError::NoRecords { ttl: None })
    }
    async fn lookup_aaaa(&self, _: &Name) -> nobounce_core::dns::TtlResult<Ipv6Addr> {
        Err(nobounce_core::dns::TtlLookupError::NoRecords { ttl: None })
    }
    async fn lookup_mx(&self, _: &Name) -> nobounce_core::dns::TtlResult<Name> {
        Err(nobounce_core::dns::TtlLookupError::NoRecords { ttl: None })
    }
    async fn lookup_txt(&self, name: &Name) -> nobounce_core::dns::TtlResult<String> {
        self.txt.fetch_add(1, Ordering::SeqCst);
        if name.as_str() == "remote.test." {
            Ok(nobounce_core::dns::Answer {
                records: vec!["v=spf1 ip4:192.0.2.0/24 -all".into()],
                ttl: Duration::from_secs(300),
            })
        } else {
            Err(nobounce_core::dns::TtlLookupError::NoRecords { ttl: None })
        }
    }
    async fn lookup_ptr(&self, _: IpAddr) -> nobounce_core::dns::TtlResult<Name> {
        Err(nobounce_core::dns::TtlLookupError::NoRecords { ttl: None })
    }
}

#[tokio::test]
async fn cached_lookup_shares_spf_answers_across_sessions_until_the_ttl_ends() {
    let clock = Arc::new(ManualClock::new(t0()));
    let dns = Arc::new(CountingDns::default());
    let mut config = EngineConfig::default();
    config.spf.verify_helo = false;
    let e = Engine::builder(config)
        .clock(clock.clone())
        .cached_lookup(dns.clone())
        .build();
    for _ in 0..3 {
        let (mut s, _) = session_from(&e, "192.0.2.1").await;
        let v = s.mail_from("<a@remote.test>", &[], None).await;
        assert_eq!(code(&v), "continue");
        let (mut s, _) = session_from(&e, "198.51.100.1").await;
        let v = s.mail_from("<a@remote.test>", &[], None).await;
        assert!(code(&v).starts_with("550 5.7.23"), "{}", code(&v));
    }
    // One evaluation per client IP, then hits.
    assert_eq!(dns.txt.load(Ordering::SeqCst), 2);
    clock.advance(Duration::from_secs(301));
    let (mut s, _) = session_from(&e, "192.0.2.1").await;
    s.mail_from("<a@remote.test>", &[], None).await;
    assert_eq!(dns.txt.load(Ordering::SeqCst), 3, "expired after the TTL");
}
