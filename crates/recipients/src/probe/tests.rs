use super::*;
use crate::testutil::{fake_lmtp, fake_lmtp_on, query, FakeServer, LmtpBehaviour, Mailbox};
use nobounce_core::ManualClock;
use std::time::SystemTime;

fn config(server: &FakeServer) -> RcptProbeConfig {
    let mut config = RcptProbeConfig::new(server.endpoint.clone());
    config.server.timeout = Duration::from_secs(20);
    config
}

fn behaviour() -> LmtpBehaviour {
    LmtpBehaviour::default()
        .with("alice@example.org", Mailbox::Ok)
        .with("small@example.org", Mailbox::Room(1000))
        .with(
            "gone@example.org",
            Mailbox::Reply("550 5.2.1 <gone@example.org> Mailbox disabled"),
        )
        .with(
            "temp@example.org",
            Mailbox::Reply("451 4.3.0 <temp@example.org> Temporary internal error"),
        )
        .with(
            "full@example.org",
            Mailbox::Reply(
                "452 4.2.2 <full@example.org> Quota exceeded (mailbox for user is full)",
            ),
        )
        .with("slow@example.org", Mailbox::Hang)
}

#[tokio::test]
async fn maps_answers_and_reuses_one_connection() {
    let server = fake_lmtp(behaviour()).await;
    let probe = RcptProbe::new(config(&server));
    use RecipientStatus::*;
    let over = OverQuota { room_left: None };
    for (address, size, want) in [
        ("alice@example.org", None, Some(Deliverable)),
        ("nobody@example.org", None, Some(Unknown)),
        ("gone@example.org", None, Some(Disabled)),
        ("full@example.org", None, Some(over.clone())),
        ("small@example.org", Some(500), Some(Deliverable)),
        ("small@example.org", Some(5000), Some(over.clone())),
        ("temp@example.org", None, None),
        ("postmaster", None, Some(NotHandled)),
    ] {
        let got = probe.lookup(&query(address, size)).await;
        match want {
            Some(status) => assert_eq!(got.expect(address), status, "{address} {size:?}"),
            None => {
                let err = got.expect_err(address);
                assert!(err.to_string().contains("451 4.3.0"), "{err}");
            }
        }
    }
    assert_eq!(
        server.connections(),
        1,
        "all probes on one pooled connection"
    );
    assert_eq!(server.commands("LHLO"), ["LHLO localhost"]);
    assert_eq!(server.commands("RCPT").len(), 7);
    assert_eq!(server.commands("RSET").len(), 7, "every transaction reset");
    assert!(
        server.commands("DATA").is_empty(),
        "nothing is ever delivered"
    );
    let mails = server.commands("MAIL");
    assert!(
        mails.contains(&"MAIL FROM:<> SIZE=5000".to_string()),
        "{mails:?}"
    );
    assert!(mails.contains(&"MAIL FROM:<>".to_string()), "{mails:?}");
}

#[tokio::test]
async fn size_is_sent_only_when_advertised_and_within_limit() {
    let mut b = behaviour();
    b.advertise_size = None;
    let server = fake_lmtp(b).await;
    let probe = RcptProbe::new(config(&server));
    // Without SIZE the server cannot judge the size: deliverable.
    let got = probe.lookup(&query("small@example.org", Some(5000))).await;
    assert_eq!(got.expect("answer"), RecipientStatus::Deliverable);
    assert_eq!(server.commands("MAIL"), ["MAIL FROM:<>"]);

    let mut b = behaviour();
    b.advertise_size = Some("SIZE 2000");
    let server = fake_lmtp(b).await;
    let probe = RcptProbe::new(config(&server));
    probe
        .lookup(&query("alice@example.org", Some(1500)))
        .await
        .expect("answer");
    probe
        .lookup(&query("alice@example.org", Some(2500)))
        .await
        .expect("answer");
    assert_eq!(
        server.commands("MAIL"),
        ["MAIL FROM:<> SIZE=1500", "MAIL FROM:<>"]
    );
}

#[tokio::test]
async fn answers_are_cached_with_their_own_ttls_errors_never() {
    let server = fake_lmtp(behaviour()).await;
    let clock = Arc::new(ManualClock::new(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000),
    ));
    let probe = RcptProbe::with_clock(config(&server), Arc::clone(&clock) as Arc<dyn Clock>);
    let rcpts = || server.commands("RCPT").len();

    probe
        .lookup(&query("alice@example.org", None))
        .await
        .expect("answer");
    probe
        .lookup(&query("ALICE@Example.org", None))
        .await
        .expect("answer");
    assert_eq!(rcpts(), 2, "the local part's case is kept: a different key");
    probe
        .lookup(&query("alice@example.org", None))
        .await
        .expect("answer");
    probe
        .lookup(&query("nobody@example.org", None))
        .await
        .expect("answer");
    probe
        .lookup(&query("nobody@example.org", None))
        .await
        .expect("answer");
    assert_eq!(rcpts(), 3, "cached answers do not reach the server");

    probe
        .lookup(&query("temp@example.org", None))
        .await
        .expect_err("error");
    probe
        .lookup(&query("temp@example.org", None))
        .await
        .expect_err("error");
    assert_eq!(rcpts(), 5, "errors are never cached");

    clock.advance(Duration::from_secs(61));
    probe
        .lookup(&query("alice@example.org", None))
        .await
        .expect("answer");
    probe
        .lookup(&query("nobody@example.org", None))
        .await
        .expect("answer");
    assert_eq!(
        rcpts(),
        6,
        "deliverable expired after 60 s, unknown did not"
    );

    probe.backend.cache().clear();
    probe
        .lookup(&query("nobody@example.org", None))
        .await
        .expect("answer");
    assert_eq!(rcpts(), 7, "clear_cache forgets");

    // A size-dependent answer does not cover a bigger message.
    probe
        .lookup(&query("small@example.org", Some(100)))
        .await
        .expect("answer");
    let got = probe
        .lookup(&query("small@example.org", Some(5000)))
        .await
        .expect("answer");
    assert_eq!(got, RecipientStatus::OverQuota { room_left: None });
    assert_eq!(rcpts(), 9);
}

#[tokio::test]
async fn timeout_is_an_error_and_the_connection_is_not_reused() {
    let server = fake_lmtp(behaviour()).await;
    let mut config = config(&server);
    config.server.timeout = Duration::from_secs(2);
    let probe = RcptProbe::new(config);
    let err = probe
        .lookup(&query("slow@example.org", None))
        .await
        .expect_err("no answer is an error");
    assert!(err.to_string().contains("no answer within 2s"), "{err}");
    let got = probe
        .lookup(&query("alice@example.org", None))
        .await
        .expect("answer");
    assert_eq!(got, RecipientStatus::Deliverable);
    assert_eq!(server.connections(), 2, "the hung connection was abandoned");
}

#[tokio::test]
async fn stale_pooled_connection_is_retried_on_a_fresh_one() {
    let mut b = behaviour();
    b.close_after_rset = true;
    let server = fake_lmtp(b).await;
    let probe = RcptProbe::new(config(&server));
    for address in [
        "alice@example.org",
        "nobody@example.org",
        "alice@example.org",
    ] {
        probe
            .lookup(&query(address, Some(1)))
            .await
            .expect("answer despite stale pool");
        probe.backend.cache().clear();
    }
    assert_eq!(server.connections(), 3);
}

#[tokio::test]
async fn bad_greeting_and_unreachable_server_are_errors() {
    let mut b = behaviour();
    b.greeting = "421 4.3.2 fake.test too busy";
    let server = fake_lmtp(b).await;
    let probe = RcptProbe::new(config(&server));
    let err = probe
        .lookup(&query("alice@example.org", None))
        .await
        .expect_err("421 greeting");
    assert!(err.to_string().contains("greeting 421"), "{err}");

    // A port nobody listens on: bind, note it, close.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let probe = RcptProbe::new(RcptProbeConfig::new(Endpoint::tcp(addr)));
    probe
        .lookup(&query("alice@example.org", None))
        .await
        .expect_err("connection refused");
}

#[tokio::test]
async fn works_over_a_unix_socket_and_says_quit_when_dropped() {
    let server = fake_lmtp_on(behaviour(), true).await;
    let mut config = config(&server);
    config.protocol = ProbeProtocol::Smtp;
    config.helo_name = "nobounce.test".into();
    let probe = RcptProbe::new(config);
    let got = probe
        .lookup(&query("alice@example.org", None))
        .await
        .expect("answer");
    assert_eq!(got, RecipientStatus::Deliverable);
    assert_eq!(server.commands("EHLO"), ["EHLO nobounce.test"]);
    assert!(server.commands("QUIT").is_empty());
    drop(probe);
    assert!(server.wait_for("QUIT", 1).await, "dropped pool says QUIT");
}

#[tokio::test]
async fn concurrent_lookups_are_bounded_and_pool_overflow_quits() {
    let server = fake_lmtp(behaviour()).await;
    let mut config = config(&server);
    config.server.max_connections = 3;
    config.server.max_idle = 1;
    config.server.cache.capacity = 0;
    let probe = Arc::new(RcptProbe::new(config));
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let probe = Arc::clone(&probe);
        tasks.push(tokio::spawn(async move {
            probe.lookup(&query("alice@example.org", None)).await
        }));
    }
    for t in tasks {
        assert_eq!(
            t.await.expect("task").expect("answer"),
            RecipientStatus::Deliverable
        );
    }
    let opened = server.connections();
    assert!(opened >= 1);
    // All but one idle connection were closed politely.
    assert!(
        server.wait_for("QUIT", opened - 1).await,
        "overflow connections say QUIT"
    );
    assert_eq!(probe.backend.pool.len(), 1);
}

/// Issue 13, defect 1: an answer from a probe sent without `SIZE=` (the
/// client declared no size) was cached as good for any size, so a later
/// large message to a nearly full mailbox was accepted, then bounced at
/// delivery. It may only answer queries without a size now.
#[tokio::test]
async fn issue13_answer_without_size_is_not_reused_for_a_larger_message() {
    let server = fake_lmtp(behaviour()).await;
    let probe = RcptProbe::new(config(&server));
    let got = probe.lookup(&query("small@example.org", None)).await;
    assert_eq!(got.expect("answer"), RecipientStatus::Deliverable);
    let got = probe.lookup(&query("small@example.org", Some(5000))).await;
    assert_eq!(
        got.expect("answer"),
        RecipientStatus::OverQuota { room_left: None },
        "the size was asked about, not taken from the cache"
    );
    assert_eq!(server.commands("RCPT").len(), 2);
    assert_eq!(
        server.commands("MAIL"),
        ["MAIL FROM:<>", "MAIL FROM:<> SIZE=5000"]
    );
}
