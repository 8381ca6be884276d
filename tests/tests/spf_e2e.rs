//! Issue 2, end to end: real Postfix with nobounce as `smtpd_milters`, a test
//! DNS server on loopback serving the SPF zones, accepted mail relayed to a
//! local sink.

use nobounce_test_support::dns::{ServerMode, TestDnsServer, TestRecord};
use nobounce_test_support::{
    bind_loopback, require, Background, MessageBuilder, PostfixInstance, SmtpClient, SmtpSink,
    DEFAULT_TIMEOUT, MYHOSTNAME,
};
use std::net::{IpAddr, Ipv4Addr};

/// The test client connects from here, so the milter checks it (loopback
/// is trusted by default; the test config trusts nothing).
const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

struct Site {
    dns: TestDnsServer,
    _milter: Background<Result<(), nobounce_server::RunError>>,
    postfix: PostfixInstance,
    sink: SmtpSink,
}

async fn site() -> Site {
    let dns = TestDnsServer::start([
        TestRecord::txt("pass.test", "v=spf1 ip4:127.0.0.0/8 -all", 300),
        TestRecord::txt("fail.test", "v=spf1 -all", 300),
        TestRecord::txt("soft.test", "v=spf1 ~all", 300),
    ])
    .await
    .expect("DNS server");
    let config = nobounce_config::Config::from_toml_str(&format!(
        "[dns]\nnameservers = [\"{}\"]\ntimeout_secs = 1\nattempts = 1\n\
         [spf]\ntrusted_networks = []\ntimeout_secs = 3\n\
         headers = [\"Received-SPF\", \"Authentication-Results\"]\n",
        dns.addr()
    ))
    .expect("config");
    let listener = bind_loopback().await.expect("bind milter");
    let milter_addr = listener.local_addr().expect("milter address");
    let milter = Background::spawn(|shutdown| nobounce_server::run_tcp(listener, config, shutdown));
    let sink = SmtpSink::start().await.expect("sink");
    let postfix = PostfixInstance::builder()
        .milter(milter_addr)
        .relay_to(sink.addr())
        .start()
        .await
        .expect("postfix starts");
    Site {
        dns,
        _milter: milter,
        postfix,
        sink,
    }
}

async fn client(site: &Site) -> SmtpClient {
    let mut c = SmtpClient::connect_from(CLIENT, site.postfix.smtp_addr())
        .await
        .expect("connect");
    c.ehlo("client.pass.test")
        .await
        .expect("ehlo")
        .assert_code(250);
    c
}

/// No bounce was generated: nothing in Postfix's queue, no null-sender
/// message at the sink, no bounce in Postfix's log.
async fn assert_no_backscatter(site: &Site) {
    site.postfix.flush().await.expect("flush");
    site.postfix
        .wait_until_queue_empty(DEFAULT_TIMEOUT)
        .await
        .expect("queue empties");
    assert!(!site.sink.has_bounce(), "a bounce reached the sink");
    site.postfix.assert_no_bounce();
}

#[tokio::test]
async fn spf_fail_is_rejected_at_mail_from_with_550_5_7_23() {
    require!("postfix");
    let site = site().await;
    let mut c = client(&site).await;
    let reply = c.mail_from("joe@fail.test", &[]).await.expect("mail");
    reply.assert_code(550);
    assert_eq!(reply.enhanced_status(), Some("5.7.23"), "{reply:?}");
    assert!(
        reply.text().contains("fail.test does not allow 127.0.0.2"),
        "{reply:?}"
    );
    c.quit().await.expect("quit");
    assert_no_backscatter(&site).await;
    assert!(site.sink.messages().is_empty());
}

#[tokio::test]
async fn spf_pass_is_delivered_with_received_spf_pass_and_forged_results_removed() {
    require!("postfix");
    let site = site().await;
    let mut c = client(&site).await;
    let message = MessageBuilder::new()
        .from("joe@pass.test")
        .to("you@example.test")
        .subject("hello")
        .header(
            "Authentication-Results",
            &format!("{MYHOSTNAME}; spf=pass smtp.mailfrom=forged@pass.test"),
        )
        .header("Authentication-Results", "other.example; spf=fail")
        .body("hi\r\n")
        .build();
    let t = c
        .send_mail("joe@pass.test", &["you@example.test"], &message)
        .await
        .expect("transaction");
    assert!(t.accepted(), "{t:?}");
    c.quit().await.expect("quit");

    let received = site
        .sink
        .wait_for_messages(1, DEFAULT_TIMEOUT)
        .await
        .expect("delivered to the sink");
    assert_eq!(received.len(), 1);
    let msg = &received[0];
    let rs = msg.header("Received-SPF").expect("Received-SPF header");
    assert!(rs.starts_with("pass "), "{rs}");
    assert!(rs.contains("client-ip=127.0.0.2;"), "{rs}");
    assert!(rs.contains("envelope-from=\"joe@pass.test\""), "{rs}");
    let ar = msg.header_all("Authentication-Results");
    assert!(
        ar.contains(&format!(
            "{MYHOSTNAME}; spf=pass smtp.mailfrom=joe@pass.test"
        )),
        "{ar:?}"
    );
    assert!(
        !ar.iter().any(|v| v.contains("forged@pass.test")),
        "forged Authentication-Results kept: {ar:?}"
    );
    assert!(
        ar.iter().any(|v| v.starts_with("other.example;")),
        "foreign Authentication-Results removed: {ar:?}"
    );
    assert_no_backscatter(&site).await;
}

#[tokio::test]
async fn softfail_is_accepted_and_recorded() {
    require!("postfix");
    let site = site().await;
    let mut c = client(&site).await;
    let message = MessageBuilder::new()
        .from("joe@soft.test")
        .to("you@example.test")
        .body("hi\r\n")
        .build();
    let t = c
        .send_mail("joe@soft.test", &["you@example.test"], &message)
        .await
        .expect("transaction");
    assert!(t.accepted(), "{t:?}");
    c.quit().await.expect("quit");
    let received = site
        .sink
        .wait_for_messages(1, DEFAULT_TIMEOUT)
        .await
        .expect("delivered to the sink");
    let rs = received[0].header("Received-SPF").expect("Received-SPF");
    assert!(rs.starts_with("softfail "), "{rs}");
    assert_no_backscatter(&site).await;
}

#[tokio::test]
async fn unanswered_dns_gives_451_4_7_24_and_no_bounce() {
    require!("postfix");
    let site = site().await;
    site.dns.set_mode(ServerMode::Silent);
    let mut c = client(&site).await;
    let reply = c.mail_from("joe@pass.test", &[]).await.expect("mail");
    reply.assert_code(451);
    assert_eq!(reply.enhanced_status(), Some("4.7.24"), "{reply:?}");
    c.quit().await.expect("quit");

    // Once DNS answers again, the client's retry goes through.
    site.dns.set_mode(ServerMode::Answer);
    let mut c = client(&site).await;
    let reply = c.mail_from("joe@pass.test", &[]).await.expect("mail");
    reply.assert_code(250);
    c.quit().await.expect("quit");
    assert_no_backscatter(&site).await;
    assert!(site.sink.messages().is_empty());
}
