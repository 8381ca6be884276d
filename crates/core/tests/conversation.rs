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

/// Connects and says HELO.
async fn greeted(engine: &Engine, ip: &str) -> nobounce_core::Session {
    let mut s = engine.session();
    s.connect(ip.parse().ok(), "client.test", Some("mx.local.test"))
        .await;
    s.helo("client.test").await;
    s
}

/// Connects, says HELO and an unauthenticated MAIL FROM; returns the
/// session and the verdict at MAIL FROM (where a ban is told, see
/// `Session::connect`).
async fn session_from(engine: &Engine, ip: &str) -> (nobounce_core::Session, Verdict) {
    let mut s = engine.session();
    let v = s
        .connect(ip.parse().ok(), "client.test", Some("mx.local.test"))
        .await;
    assert_eq!(v, Verdict::Continue, "connect itself never refuses");
    let v = s.helo("client.test").await;
    assert_eq!(v, Verdict::Continue, "HELO never refuses");
    let v = s.mail_from("<probe@remote.test>", &[], None).await;
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
    assert_eq!(code(&s.rcpt_to("<alice@local.test>").await), "continue");
    assert!(code(&s.rcpt_to("<nobody@local.test>").await).starts_with("550 5.1.1 "));
    assert!(code(&s.rcpt_to("<full@local.test>").await).starts_with("452 4.2.2 "));
    assert!(code(&s.rcpt_to("<down@local.test>").await).starts_with("451 4.4.3 "));
    assert_eq!(code(&s.rcpt_to("<x@elsewhere.test>").await), "continue");
    // The healthy recipient is unaffected by the others.
    assert_eq!(code(&s.rcpt_to("<alice@local.test>").await), "continue");
}

#[tokio::test]
async fn declared_size_larger_than_room_is_refused_at_rcpt() {
    let clock = Arc::new(ManualClock::new(t0()));
    let e = engine(clock, EngineConfig::default());
    let (mut s, _) = session_from(&e, "192.0.2.1").await;
    s.mail_from("<>", &["SIZE=20000"], None).await;
    assert!(code(&s.rcpt_to("<alice@local.test>").await).starts_with("452 4.2.2 "));
}

#[tokio::test]
async fn ten_distinct_unknown_recipients_ban_the_client_for_an_hour() {
    let clock = Arc::new(ManualClock::new(t0()));
    let e = engine(clock.clone(), EngineConfig::default());
    let (mut s, v) = session_from(&e, ATTACKER).await;
    assert_eq!(code(&v), "continue");
    s.mail_from("<spam@remote.test>", &[], None).await;
    for i in 0..9 {
        assert!(code(&s.rcpt_to(&format!("<u{i}@local.test>")).await).starts_with("550 5.1.1"));
        // The same unknown address again counts once.
        s.rcpt_to(&format!("<u{i}@local.test>")).await;
    }
    // The tenth distinct one: still answered 550 for itself ...
    assert!(code(&s.rcpt_to("<u9@local.test>").await).starts_with("550 5.1.1"));
    // ... but from now on this connection is told to go away.
    let v = s.rcpt_to("<alice@local.test>").await;
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

/// Issue 13, defect 8: bans applied before AUTH, so users behind a NAT
/// shared with a prober could not submit mail. An authenticated session is
/// never banned; the ban is told at MAIL FROM to the others.
#[tokio::test]
async fn issue13_an_authenticated_session_is_never_banned() {
    let clock = Arc::new(ManualClock::new(t0()));
    let e = engine(clock, EngineConfig::default());
    let (mut s, _) = session_from(&e, ATTACKER).await;
    for i in 0..10 {
        s.rcpt_to(&format!("<u{i}@local.test>")).await;
    }
    // Banned now, but a user of the same address who authenticates can
    // submit mail.
    let mut user = e.session();
    user.connect(ATTACKER.parse().ok(), "laptop.test", Some("mx.local.test"))
        .await;
    assert_eq!(user.helo("laptop.test").await, Verdict::Continue);
    let v = user.mail_from("<me@remote.test>", &[], Some("me")).await;
    assert_eq!(code(&v), "continue");
    assert_eq!(code(&user.rcpt_to("<alice@local.test>").await), "continue");
    // The same connection without AUTH for its next message is banned.
    let v = user.mail_from("<spam@remote.test>", &[], None).await;
    assert!(code(&v).starts_with("421 4.7.0 "), "{}", code(&v));
}

/// Issue 13, item 11: an IPv4-mapped IPv6 client (`::ffff:127.0.0.1`,
/// from a dual-stack Sendmail) is its IPv4 address: trusted when that is,
/// banned and counted as that.
#[tokio::test]
async fn issue13_ipv4_mapped_clients_are_their_ipv4_address() {
    let e = Engine::builder(EngineConfig::default())
        .spf_verifier(Arc::new(SlowSpf))
        .build();
    let mut s = e.session();
    s.connect("::ffff:127.0.0.1".parse().ok(), "localhost", None)
        .await;
    assert_eq!(s.client_ip(), "127.0.0.1".parse().ok());
    s.helo("localhost").await;
    // Loopback is trusted: no (slow) SPF evaluation at all.
    let v = tokio::time::timeout(
        Duration::from_secs(1),
        s.mail_from("<joe@remote.test>", &[], None),
    )
    .await
    .expect("trusted clients skip SPF");
    assert_eq!(code(&v), "continue");
}

/// Issue 13, defect 5: Postfix's own `450 4.1.1` ("address verification in
/// progress", an unknown-user lookup that failed) is no proof that the
/// address does not exist; only permanent unknown-user refusals count.
#[tokio::test]
async fn issue13_temporary_unknown_user_refusals_do_not_count() {
    let clock = Arc::new(ManualClock::new(t0()));
    let e = engine(clock, EngineConfig::default());
    let (mut s, _) = session_from(&e, ATTACKER).await;
    s.mail_from("<spam@remote.test>", &[], None).await;
    for i in 0..20 {
        s.mta_rejected_rcpt(&format!("<t{i}@local.test>"), Some("4.1.1"))
            .await;
        s.mta_rejected_rcpt(&format!("<z{i}@local.test>"), Some("4.1.0"))
            .await;
    }
    let (_, v) = session_from(&e, ATTACKER).await;
    assert_eq!(code(&v), "continue");
    for i in 0..10 {
        s.mta_rejected_rcpt(&format!("<u{i}@local.test>"), Some("5.1.0"))
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
        s.rcpt_to(&format!("<u{i}@local.test>")).await;
    }
    let (_, v) = session_from(&e, ATTACKER).await;
    assert_eq!(code(&v), "continue");

    let (mut s, _) = session_from(&e, "127.0.0.1").await;
    s.mail_from("<me@remote.test>", &[], None).await;
    for i in 0..15 {
        s.rcpt_to(&format!("<u{i}@local.test>")).await;
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
            code(&s.rcpt_to(&format!("<u{i}@local.test>")).await),
            "continue"
        );
    }
    let (_, v) = session_from(&e, ATTACKER).await;
    assert_eq!(code(&v), "continue");
}

/// Issue 13, defect 10: a dry-run host wrote counters, strikes and bans
/// to the shared store, and so banned clients for the production hosts.
/// It writes nothing shared now, and still logs what it would have done.
#[tokio::test]
async fn issue13_dry_run_writes_nothing_to_the_shared_store() {
    let shared = nobounce_core::MemoryStore::default();
    let e = Engine::builder(EngineConfig {
        dry_run: true,
        ..Default::default()
    })
    .lookup(NoDns)
    .directory(Arc::new(FakeDirectory::default()))
    .store(Arc::new(shared.clone()))
    .clock(Arc::new(ManualClock::new(t0())))
    .build();
    let (mut s, _) = session_from(&e, ATTACKER).await;
    for i in 0..12 {
        s.rcpt_to(&format!("<u{i}@local.test>")).await;
    }
    assert!(
        shared.is_empty(),
        "the shared store holds {} keys",
        shared.len()
    );
    // A ban made by the production hosts is still seen (and, dry run,
    // logged rather than enforced).
    let until = t0() + Duration::from_secs(3600);
    nobounce_core::StateStore::ban(&shared, "192.0.2.66", until, "prod", t0())
        .await
        .unwrap();
    let (_, v) = session_from(&e, "192.0.2.66").await;
    assert_eq!(code(&v), "continue");
    assert_eq!(shared.len(), 1);
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
        let mut s = greeted(&e, "192.0.2.1").await;
        let v = s.mail_from("<a@remote.test>", &[], None).await;
        assert_eq!(code(&v), "continue");
        let mut s = greeted(&e, "198.51.100.1").await;
        let v = s.mail_from("<a@remote.test>", &[], None).await;
        assert!(code(&v).starts_with("550 5.7.23"), "{}", code(&v));
    }
    // One evaluation per client IP, then hits.
    assert_eq!(dns.txt.load(Ordering::SeqCst), 2);
    clock.advance(Duration::from_secs(301));
    let mut s = greeted(&e, "192.0.2.1").await;
    s.mail_from("<a@remote.test>", &[], None).await;
    assert_eq!(dns.txt.load(Ordering::SeqCst), 3, "expired after the TTL");
}

/// An SPF verifier whose every evaluation takes 15 s and then passes.
#[derive(Debug)]
struct SlowSpf;

#[async_trait]
impl nobounce_core::SpfVerifier for SlowSpf {
    async fn verify(&self, _: &nobounce_core::spf::SpfRequest) -> nobounce_core::spf::SpfAnswer {
        tokio::time::sleep(Duration::from_secs(15)).await;
        nobounce_core::spf::SpfAnswer {
            result: viaspf::SpfResult::Pass,
            cause: None,
            ttl: None,
        }
    }
}

/// A directory that takes a minute to answer.
#[derive(Debug)]
struct SlowDirectory;

#[async_trait]
impl RecipientDirectory for SlowDirectory {
    async fn lookup(&self, _: &RecipientQuery<'_>) -> Result<RecipientStatus, DirectoryError> {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok(RecipientStatus::Deliverable)
    }
}

/// Issue 13, defect 4: the HELO and MAIL FROM evaluations ran one after
/// the other, each up to `spf.timeout` (20 s by default), so one MAIL
/// command could take 40 s, past Postfix's 30 s `milter_command_timeout`.
/// Now one deadline covers the command, and what did not finish is a
/// temporary failure the client sees.
#[tokio::test(start_paused = true)]
async fn issue13_one_command_never_outlasts_its_deadline() {
    let config = EngineConfig::default();
    assert_eq!(config.spf.timeout, Duration::from_secs(20));
    assert!(config.spf.verify_helo);
    let e = Engine::builder(config)
        .spf_verifier(Arc::new(SlowSpf))
        .directory(Arc::new(SlowDirectory))
        .build();
    let mut s = greeted(&e, "192.0.2.1").await;
    let start = tokio::time::Instant::now();
    let v = s.mail_from("<joe@slow.test>", &[], None).await;
    let took = start.elapsed();
    assert!(took <= Duration::from_secs(25), "MAIL took {took:?}");
    assert!(code(&v).starts_with("451 4.7.24 "), "{}", code(&v));

    let start = tokio::time::Instant::now();
    let v = s.rcpt_to("<alice@local.test>").await;
    let took = start.elapsed();
    assert!(took <= Duration::from_secs(25), "RCPT took {took:?}");
    assert!(code(&v).starts_with("451 4.4.3 "), "{}", code(&v));
}

/// A `TtlLookup` that never answers in time.
#[derive(Debug)]
struct SilentDns;

/// What [`SilentDns`] answers to everything: nothing within ten minutes.
async fn never_answers<T>() -> nobounce_core::dns::TtlResult<T> {
    tokio::time::sleep(Duration::from_secs(600)).await;
    Err(nobounce_core::dns::TtlLookupError::NoRecords { ttl: None })
}

#[async_trait]
impl nobounce_core::dns::TtlLookup for SilentDns {
    async fn lookup_a(&self, _: &Name) -> nobounce_core::dns::TtlResult<Ipv4Addr> {
        never_answers().await
    }
    async fn lookup_aaaa(&self, _: &Name) -> nobounce_core::dns::TtlResult<Ipv6Addr> {
        never_answers().await
    }
    async fn lookup_mx(&self, _: &Name) -> nobounce_core::dns::TtlResult<Name> {
        never_answers().await
    }
    async fn lookup_txt(&self, _: &Name) -> nobounce_core::dns::TtlResult<String> {
        never_answers().await
    }
    async fn lookup_ptr(&self, _: IpAddr) -> nobounce_core::dns::TtlResult<Name> {
        never_answers().await
    }
}

/// The one deadline of issue 13 also covers the checks added later: a
/// block list that does not answer and a directory that does not either
/// gave one RCPT two command timeouts in a row (the DNSBL had its own,
/// the directory a fresh one).
#[tokio::test(start_paused = true)]
async fn one_rcpt_never_outlasts_its_deadline_with_a_silent_block_list() {
    let mut config = EngineConfig::default();
    config.spf.verify_helo = false;
    config.dnsbl.zones = vec![nobounce_core::dnsbl::DnsblZone {
        zone: "list.test".into(),
        mode: nobounce_core::dnsbl::DnsblMode::All,
        reply: None,
    }];
    let timeout = config.command_timeout;
    let e = Engine::builder(config)
        .spf_verifier(Arc::new(SlowSpf))
        .dns(Arc::new(SilentDns))
        .directory(Arc::new(SlowDirectory))
        .build();
    let mut s = greeted(&e, "192.0.2.1").await;
    let v = s.mail_from("<joe@slow.test>", &[], None).await;
    assert_eq!(code(&v), "continue");
    let start = tokio::time::Instant::now();
    let v = s.rcpt_to("<alice@local.test>").await;
    let took = start.elapsed();
    assert!(
        took <= timeout + Duration::from_secs(1),
        "RCPT took {took:?}, the deadline is {timeout:?}"
    );
    assert!(code(&v).starts_with("451 4.4.3 "), "{}", code(&v));
}
