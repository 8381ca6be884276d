//! Issue 9, end to end: the bounce guard with real Postfix.
//!
//! nobounce runs as `smtpd_milters` and as `non_smtpd_milters` with
//! `internal_mail_filter_classes = bounce` and `enable_long_queue_ids =
//! yes`. A message is accepted for a recipient that the next hop (the
//! sink) then refuses, so Postfix generates a bounce. When the original
//! sender only had SPF softfail, nobounce holds the bounce: it sits in the
//! hold queue (`postqueue -j`), and nothing reaches the sender's side. When
//! the sender had SPF pass, the bounce goes out. The held bounce is not
//! lost: `postsuper -H` releases it and it is delivered.

use nobounce_test_support::dns::{TestDnsServer, TestRecord};
use nobounce_test_support::{
    bind_loopback, require, wait_until, Background, LogCapture, MessageBuilder, PostfixInstance,
    QueuedMessage, SmtpClient, SmtpSink, DEFAULT_TIMEOUT,
};
use std::net::{IpAddr, Ipv4Addr};

/// Not trusted by nobounce (`trusted_networks = []`).
const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

async fn send(postfix: &PostfixInstance, sender: &str, subject: &str) {
    let mut c = SmtpClient::connect_from(CLIENT, postfix.smtp_addr())
        .await
        .expect("connect");
    c.ehlo("client.test").await.unwrap().assert_code(250);
    c.mail_from(sender, &[]).await.unwrap().assert_code(250);
    c.rcpt_to("nobody@example.test")
        .await
        .unwrap()
        .assert_code(250);
    let msg = MessageBuilder::new()
        .from(sender)
        .to("nobody@example.test")
        .subject(subject)
        .build();
    c.data(&msg).await.unwrap().assert_code(250);
    c.quit().await.unwrap();
}

async fn held(postfix: &PostfixInstance) -> Vec<QueuedMessage> {
    postfix
        .queued_messages()
        .await
        .expect("postqueue -j")
        .into_iter()
        .filter(|m| m.queue_name == "hold")
        .collect()
}

#[tokio::test]
async fn issue9_bounces_to_unverified_senders_are_held_and_can_be_released() {
    require!("postfix");
    let logs = LogCapture::default();
    let _guard = logs.install();
    let dns = TestDnsServer::start([
        TestRecord::txt("pass.test", "v=spf1 ip4:127.0.0.0/8 -all", 300),
        TestRecord::txt("soft.test", "v=spf1 ~all", 300),
    ])
    .await
    .expect("DNS server");
    let config = nobounce_config::Config::from_toml_str(&format!(
        "[dns]\nnameservers = [\"{}\"]\ntimeout = \"1s\"\nattempts = 1\n\
         [spf]\ntrusted_networks = []\n\
         [bounce_guard]\nenabled = true\ndomains = [\"nobounce.test\"]\n",
        dns.addr()
    ))
    .expect("config");
    let listener = bind_loopback().await.expect("bind");
    let milter = listener.local_addr().unwrap();
    let _nobounce = Background::spawn(|stop| nobounce_server::run_tcp(listener, config, stop));
    // The next hop refuses nobody@ after Postfix accepted the message.
    let sink = SmtpSink::builder()
        .reject_recipient(
            "nobody@example.test",
            "550 5.1.1 <nobody@example.test>: no such user",
        )
        .start()
        .await
        .expect("sink");
    let milter_spec = format!("inet:{}:{}", milter.ip(), milter.port());
    let postfix = PostfixInstance::builder()
        .milter(milter)
        .relay_to(sink.addr())
        .relay_domains(&["example.test", "soft.test", "pass.test"])
        .param("non_smtpd_milters", &milter_spec)
        .param("internal_mail_filter_classes", "bounce")
        .param("enable_long_queue_ids", "yes")
        .start()
        .await
        .expect("postfix");

    // 1. SPF softfail sender: Postfix bounces, nobounce holds the bounce.
    send(&postfix, "eve@soft.test", "softfail original").await;
    wait_until("a held bounce", DEFAULT_TIMEOUT, || async {
        Ok(held(&postfix).await.len() == 1)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", postfix.log()));
    let hold = held(&postfix).await;
    assert!(hold[0].is_bounce(), "{hold:?}");
    assert_eq!(hold[0].recipients[0].address, "eve@soft.test");
    assert!(!sink.has_bounce(), "nothing reached the sender's side");
    let log = postfix.log();
    assert!(log.contains("milter triggers HOLD action"), "{log}");
    let lines = logs.lines_with("bounce held");
    assert_eq!(lines.len(), 1, "{}", logs.text());
    assert!(lines[0].contains("eve@soft.test"), "{}", lines[0]);
    assert!(lines[0].contains("SPF softfail"), "{}", lines[0]);

    // 2. SPF pass sender: the bounce is delivered.
    send(&postfix, "joe@pass.test", "pass original").await;
    let got = sink
        .wait_for_messages(1, DEFAULT_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", postfix.log()));
    assert!(got[0].is_bounce(), "{:?}", got[0].sender);
    assert_eq!(got[0].recipients, ["joe@pass.test"]);
    assert_eq!(held(&postfix).await.len(), 1, "only the first is held");

    // 3. Nothing is lost: the admin releases the held bounce.
    let id = hold[0].queue_id.clone();
    postfix.postsuper(&["-H", &id]).await.expect("postsuper -H");
    postfix.flush().await.unwrap();
    let got = sink
        .wait_for_messages(2, DEFAULT_TIMEOUT)
        .await
        .expect("released bounce delivered");
    assert!(got[1].is_bounce());
    assert_eq!(got[1].recipients, ["eve@soft.test"]);
    postfix
        .wait_until_queue_empty(DEFAULT_TIMEOUT)
        .await
        .expect("queue empties");
}
