//! HickoryLookup against the in-process test DNS server.

use nobounce_core::dns::{RecordingLookup, TtlAsLookup, TtlLookup, TtlLookupError};
use nobounce_dns::{DnsConfig, Error, HickoryLookup};
use nobounce_test_support::dns::{ServerMode, TestDnsServer, TestRecord};
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};
use viaspf::{
    lookup::{Lookup, LookupError, Name},
    Config, Sender, SpfResult,
};

fn name(s: &str) -> Name {
    Name::new(s).expect("valid name")
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn resolver(server: &TestDnsServer) -> HickoryLookup {
    HickoryLookup::new(&DnsConfig::with_nameservers(vec![server.addr()])).expect("resolver")
}

fn zone() -> Vec<TestRecord> {
    vec![
        TestRecord::a("example.test", Ipv4Addr::new(192, 0, 2, 1), 300),
        TestRecord::a("example.test", Ipv4Addr::new(192, 0, 2, 2), 120),
        TestRecord::aaaa("example.test", "2001:db8::1".parse().expect("ip"), 600),
        // Deliberately not in preference order.
        TestRecord::mx("example.test", 20, "mx2.example.test", 3600),
        TestRecord::mx("example.test", 5, "mx1.example.test", 1800),
        TestRecord::mx("example.test", 30, "mx3.example.test", 3600),
        TestRecord::txt("example.test", "v=spf1 ip4:192.0.2.0/24 -all", 900),
        TestRecord::txt_strings("example.test", ["google-site-", "verification=abc"], 900),
        TestRecord::ptr(
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            "mail.example.test",
            86400,
        ),
        TestRecord::ptr(
            IpAddr::V6("2001:db8::1".parse().expect("ip")),
            "mail6.example.test",
            700,
        ),
        TestRecord::a("mail.example.test", Ipv4Addr::new(192, 0, 2, 1), 300),
    ]
}

#[tokio::test]
async fn a_records_with_min_ttl() {
    let server = TestDnsServer::start(zone()).await.expect("server");
    let dns = resolver(&server);

    let mut answer = TtlLookup::lookup_a(&dns, &name("example.test"))
        .await
        .expect("A");
    answer.records.sort();
    assert_eq!(
        answer.records,
        [Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2)]
    );
    assert_eq!(answer.ttl, secs(120), "the smaller of 300 and 120");
}

#[tokio::test]
async fn aaaa_record() {
    let server = TestDnsServer::start(zone()).await.expect("server");
    let dns = resolver(&server);

    let answer = TtlLookup::lookup_aaaa(&dns, &name("example.test"))
        .await
        .expect("AAAA");
    assert_eq!(
        answer.records,
        ["2001:db8::1".parse::<Ipv6Addr>().expect("ip")]
    );
    assert_eq!(answer.ttl, secs(600));
}

#[tokio::test]
async fn mx_sorted_by_preference() {
    let server = TestDnsServer::start(zone()).await.expect("server");
    let dns = resolver(&server);

    let answer = TtlLookup::lookup_mx(&dns, &name("example.test"))
        .await
        .expect("MX");
    assert_eq!(
        answer.records,
        [
            name("mx1.example.test"),
            name("mx2.example.test"),
            name("mx3.example.test")
        ]
    );
    assert_eq!(answer.ttl, secs(1800));
}

#[tokio::test]
async fn null_mx_gives_no_hosts() {
    // RFC 7505: "0 ." says the domain accepts no mail; viaspf cannot hold
    // the root name, so the answer is empty rather than an error.
    let server = TestDnsServer::start([TestRecord::mx("nullmx.test", 0, ".", 300)])
        .await
        .expect("server");
    let dns = resolver(&server);

    let answer = TtlLookup::lookup_mx(&dns, &name("nullmx.test"))
        .await
        .expect("MX");
    assert!(answer.records.is_empty(), "{answer:?}");
    assert_eq!(answer.ttl, secs(300));
}

#[tokio::test]
async fn txt_strings_of_one_record_are_joined() {
    let server = TestDnsServer::start(zone()).await.expect("server");
    let dns = resolver(&server);

    let mut answer = TtlLookup::lookup_txt(&dns, &name("example.test"))
        .await
        .expect("TXT");
    answer.records.sort();
    assert_eq!(
        answer.records,
        [
            "google-site-verification=abc",
            "v=spf1 ip4:192.0.2.0/24 -all"
        ]
    );
    assert_eq!(answer.ttl, secs(900));
}

#[tokio::test]
async fn txt_invalid_utf8_is_replaced_and_split_sequences_survive() {
    // "é" is C3 A9; split between two character-strings it must still
    // decode, while the lone FF byte becomes U+FFFD.
    let server = TestDnsServer::start([TestRecord::txt_strings(
        "bytes.test",
        [b"v=spf1 caf\xC3".to_vec(), b"\xA9 \xFF".to_vec()],
        60,
    )])
    .await
    .expect("server");
    let dns = resolver(&server);

    let answer = TtlLookup::lookup_txt(&dns, &name("bytes.test"))
        .await
        .expect("TXT");
    assert_eq!(answer.records, ["v=spf1 café \u{FFFD}"]);
}

#[tokio::test]
async fn ptr_for_ipv4_and_ipv6() {
    let server = TestDnsServer::start(zone()).await.expect("server");
    let dns = resolver(&server);

    let v4 = TtlLookup::lookup_ptr(&dns, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)))
        .await
        .expect("PTR");
    assert_eq!(v4.records, [name("mail.example.test")]);
    assert_eq!(v4.ttl, secs(86400));

    let v6 = TtlLookup::lookup_ptr(&dns, "2001:db8::1".parse().expect("ip"))
        .await
        .expect("PTR");
    assert_eq!(v6.records, [name("mail6.example.test")]);
    assert_eq!(v6.ttl, secs(700));
}

#[tokio::test]
async fn nxdomain_has_negative_ttl() {
    let server = TestDnsServer::start(zone()).await.expect("server");
    server.set_negative_ttl(123);
    let dns = resolver(&server);

    match TtlLookup::lookup_txt(&dns, &name("nope.example.test")).await {
        Err(TtlLookupError::NoRecords { ttl }) => assert_eq!(ttl, Some(secs(123))),
        other => panic!("expected NoRecords, got {other:?}"),
    }
    let ptr = TtlLookup::lookup_ptr(&dns, IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7))).await;
    assert!(
        matches!(ptr, Err(TtlLookupError::NoRecords { ttl: Some(t) }) if t == secs(123)),
        "{ptr:?}"
    );
}

#[tokio::test]
async fn nodata_has_negative_ttl() {
    let server = TestDnsServer::start(zone()).await.expect("server");
    server.set_negative_ttl(45);
    let dns = resolver(&server);

    // mail.example.test has an A record but no AAAA.
    match TtlLookup::lookup_aaaa(&dns, &name("mail.example.test")).await {
        Err(TtlLookupError::NoRecords { ttl }) => assert_eq!(ttl, Some(secs(45))),
        other => panic!("expected NoRecords, got {other:?}"),
    }
}

#[tokio::test]
async fn cname_is_followed_with_the_smallest_ttl() {
    let server = TestDnsServer::start([
        TestRecord::cname("alias.test", "target.test", 30),
        TestRecord::txt("target.test", "v=spf1 -all", 600),
    ])
    .await
    .expect("server");
    let dns = resolver(&server);

    let answer = TtlLookup::lookup_txt(&dns, &name("alias.test"))
        .await
        .expect("TXT");
    assert_eq!(answer.records, ["v=spf1 -all"]);
    assert_eq!(answer.ttl, secs(30));
}

#[tokio::test]
async fn answers_are_cached_and_shared_by_clones() {
    let server = TestDnsServer::start(zone()).await.expect("server");
    let dns = resolver(&server);
    let other_connection = dns.clone();

    let first = TtlLookup::lookup_txt(&dns, &name("example.test"))
        .await
        .expect("TXT");
    // The zone changes, but the cached answer is still valid for its TTL.
    server.set_records([TestRecord::txt("example.test", "v=spf1 +all", 900)]);
    let second = TtlLookup::lookup_txt(&other_connection, &name("Example.Test"))
        .await
        .expect("TXT");

    assert_eq!(
        server.query_count("example.test", "TXT"),
        1,
        "{:?}",
        server.queries()
    );
    let (mut a, mut b) = (first.records.clone(), second.records.clone());
    a.sort();
    b.sort();
    assert_eq!(a, b);
    assert!(
        second.ttl <= first.ttl,
        "cached TTL counts down: {second:?} vs {first:?}"
    );

    // Negative answers are cached too.
    for _ in 0..2 {
        let r = TtlLookup::lookup_a(&dns, &name("missing.example.test")).await;
        assert!(
            matches!(r, Err(TtlLookupError::NoRecords { ttl: Some(_) })),
            "{r:?}"
        );
    }
    assert_eq!(server.query_count("missing.example.test", "A"), 1);

    // After clearing the cache the new zone is seen.
    dns.clear_cache();
    let fresh = TtlLookup::lookup_txt(&other_connection, &name("example.test"))
        .await
        .expect("TXT");
    assert_eq!(fresh.records, ["v=spf1 +all"]);
    assert_eq!(server.query_count("example.test", "TXT"), 2);
}

#[tokio::test]
async fn zero_cache_size_asks_every_time() {
    let server = TestDnsServer::start(zone()).await.expect("server");
    let config = DnsConfig {
        cache_size: 0,
        ..DnsConfig::with_nameservers(vec![server.addr()])
    };
    let dns = HickoryLookup::new(&config).expect("resolver");

    TtlLookup::lookup_a(&dns, &name("example.test"))
        .await
        .expect("A");
    server.set_records([TestRecord::a(
        "example.test",
        Ipv4Addr::new(203, 0, 113, 9),
        60,
    )]);
    let second = TtlLookup::lookup_a(&dns, &name("example.test"))
        .await
        .expect("A");
    assert_eq!(second.records, [Ipv4Addr::new(203, 0, 113, 9)]);
    assert_eq!(server.query_count("example.test", "A"), 2);
}

#[tokio::test]
async fn large_answer_is_truncated_over_udp_and_fetched_over_tcp() {
    let long_spf = format!("v=spf1 {} -all", "ip4:192.0.2.0/24 ".repeat(150));
    assert!(long_spf.len() > 2000);
    let server = TestDnsServer::start([TestRecord::txt("big.test", &long_spf, 300)])
        .await
        .expect("server");
    let dns = resolver(&server);

    let answer = TtlLookup::lookup_txt(&dns, &name("big.test"))
        .await
        .expect("TXT");
    assert_eq!(answer.records, [long_spf]);
    let queries = server.queries();
    assert!(
        queries.iter().any(|q| !q.tcp),
        "first over UDP: {queries:?}"
    );
    assert!(queries.iter().any(|q| q.tcp), "then over TCP: {queries:?}");
}

#[tokio::test]
async fn silent_server_times_out() {
    let server = TestDnsServer::start(zone()).await.expect("server");
    server.set_silent(true);
    let mut last = None;
    for attempts in [1, 2] {
        let config = DnsConfig {
            timeout: Duration::from_millis(300),
            attempts,
            ..DnsConfig::with_nameservers(vec![server.addr()])
        };
        let dns = HickoryLookup::new(&config).expect("resolver");

        server.clear_queries();
        let r = TtlLookup::lookup_txt(&dns, &name("example.test")).await;
        assert!(matches!(r, Err(TtlLookupError::Timeout)), "{r:?}");
        assert!(
            server.query_count("example.test", "TXT") >= attempts,
            "one query per try at least: {:?}",
            server.queries()
        );
        // viaspf sees the same.
        let r = Lookup::lookup_a(&TtlAsLookup(dns.clone()), &name("example.test")).await;
        assert!(matches!(r, Err(LookupError::Timeout)), "{r:?}");
        last = Some(dns);
    }

    // A timeout is not cached: once the server answers again, so does the
    // resolver.
    server.set_silent(false);
    let dns = last.expect("resolver");
    let answer = TtlLookup::lookup_txt(&dns, &name("example.test"))
        .await
        .expect("TXT");
    assert_eq!(answer.records.len(), 2);
}

#[tokio::test]
async fn servfail_is_a_dns_error() {
    let server = TestDnsServer::start(zone()).await.expect("server");
    server.set_mode(ServerMode::ServFail);
    let dns = resolver(&server);

    let r = TtlLookup::lookup_txt(&dns, &name("example.test")).await;
    assert!(matches!(r, Err(TtlLookupError::Dns(_))), "{r:?}");
    let r = Lookup::lookup_txt(&TtlAsLookup(dns.clone()), &name("example.test")).await;
    assert!(matches!(r, Err(LookupError::Dns(Some(_)))), "{r:?}");

    // SERVFAIL is not cached.
    server.set_mode(ServerMode::Answer);
    let answer = TtlLookup::lookup_mx(&dns, &name("example.test"))
        .await
        .expect("MX");
    assert_eq!(answer.records.len(), 3);
}

#[tokio::test]
async fn viaspf_lookup_drops_ttls() {
    let server = TestDnsServer::start(zone()).await.expect("server");
    let dns = resolver(&server);

    let mx = Lookup::lookup_mx(&TtlAsLookup(dns.clone()), &name("example.test"))
        .await
        .expect("MX");
    assert_eq!(mx[0], name("mx1.example.test"));
    let r = Lookup::lookup_a(&TtlAsLookup(dns.clone()), &name("nope.example.test")).await;
    assert!(matches!(r, Err(LookupError::NoRecords)), "{r:?}");
}

#[tokio::test]
async fn spf_evaluation_end_to_end() {
    let server = TestDnsServer::start([
        TestRecord::txt(
            "sender.test",
            "v=spf1 mx include:_spf.partner.test -all",
            3600,
        ),
        TestRecord::mx("sender.test", 10, "mx.sender.test", 1200),
        TestRecord::a("mx.sender.test", Ipv4Addr::new(192, 0, 2, 10), 1200),
        TestRecord::txt("_spf.partner.test", "v=spf1 ip4:198.51.100.0/24 -all", 240),
    ])
    .await
    .expect("server");
    let dns = resolver(&server);
    let config = Config::default();
    let sender = Sender::from_address("alice@sender.test").expect("sender");

    let via_mx = viaspf::evaluate_sender(
        &TtlAsLookup(dns.clone()),
        &config,
        Ipv4Addr::new(192, 0, 2, 10).into(),
        &sender,
        None,
    )
    .await;
    assert_eq!(via_mx.spf_result, SpfResult::Pass);

    // Through the core's recording wrapper: the include's TTL is the smallest.
    let recording = RecordingLookup::new(&dns, secs(60));
    let via_include = viaspf::evaluate_sender(
        &recording,
        &config,
        Ipv4Addr::new(198, 51, 100, 7).into(),
        &sender,
        None,
    )
    .await;
    assert_eq!(via_include.spf_result, SpfResult::Pass);
    let min_ttl = recording.min_ttl().expect("answers were used");
    assert!(min_ttl <= secs(240) && min_ttl > secs(200), "{min_ttl:?}");

    let stranger = viaspf::evaluate_sender(
        &TtlAsLookup(dns.clone()),
        &config,
        Ipv4Addr::new(203, 0, 113, 1).into(),
        &sender,
        None,
    )
    .await;
    assert!(
        matches!(stranger.spf_result, SpfResult::Fail(_)),
        "{:?}",
        stranger.spf_result
    );
}

#[tokio::test]
async fn invalid_config_is_rejected() {
    let zero_timeout = DnsConfig {
        timeout: Duration::ZERO,
        ..DnsConfig::with_nameservers(vec!["127.0.0.1:53".parse().expect("addr")])
    };
    assert!(matches!(
        HickoryLookup::new(&zero_timeout),
        Err(Error::InvalidConfig(_))
    ));
    let zero_attempts = DnsConfig {
        attempts: 0,
        ..DnsConfig::with_nameservers(vec!["127.0.0.1:53".parse().expect("addr")])
    };
    assert!(matches!(
        HickoryLookup::new(&zero_attempts),
        Err(Error::InvalidConfig(_))
    ));
}

#[test]
fn defaults() {
    let config = DnsConfig::default();
    assert!(config.nameservers.is_empty());
    assert_eq!(config.timeout, secs(5));
    assert_eq!(config.attempts, 2);
    assert!(config.cache_size > 0);
}

#[test]
fn can_be_built_outside_a_runtime() {
    let config = DnsConfig::with_nameservers(vec!["127.0.0.1:53".parse().expect("addr")]);
    assert!(HickoryLookup::new(&config).is_ok());
}

#[tokio::test]
async fn test_server_records_change_at_runtime() {
    let server = TestDnsServer::start([TestRecord::a(
        "a.b.zone.test",
        Ipv4Addr::new(192, 0, 2, 1),
        60,
    )])
    .await
    .expect("server");
    server.set_negative_ttl(30);
    let config = DnsConfig {
        cache_size: 0,
        ..DnsConfig::with_nameservers(vec![server.addr()])
    };
    let dns = HickoryLookup::new(&config).expect("resolver");

    // b.zone.test owns nothing but has a child: an empty non-terminal,
    // NODATA; a name with no records below it is NXDOMAIN. Both are
    // NoRecords with the negative TTL.
    for missing in ["b.zone.test", "c.zone.test"] {
        let r = TtlLookup::lookup_a(&dns, &name(missing)).await;
        assert!(
            matches!(r, Err(TtlLookupError::NoRecords { ttl: Some(t) }) if t == secs(30)),
            "{missing}: {r:?}"
        );
    }

    server.add_record(TestRecord::txt("c.zone.test.", "v=spf1 -all", 90));
    let txt = TtlLookup::lookup_txt(&dns, &name("c.zone.test"))
        .await
        .expect("TXT");
    assert_eq!(
        (txt.records, txt.ttl),
        (vec!["v=spf1 -all".to_owned()], secs(90))
    );

    server.remove_name("C.ZONE.TEST");
    let r = TtlLookup::lookup_txt(&dns, &name("c.zone.test")).await;
    assert!(matches!(r, Err(TtlLookupError::NoRecords { .. })), "{r:?}");

    server.retain_records(|r| r.ttl != 60);
    assert!(server.records().is_empty());
    let r = TtlLookup::lookup_a(&dns, &name("a.b.zone.test")).await;
    assert!(matches!(r, Err(TtlLookupError::NoRecords { .. })), "{r:?}");
    assert_eq!(server.query_count("a.b.zone.test.", "a"), 1);
}
