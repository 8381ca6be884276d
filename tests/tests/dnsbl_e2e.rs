//! Issue 10, end to end: real Postfix with nobounce as its milter, and a
//! backscatter list in safe mode served by the test's own DNS server.
//!
//! A bounce (`MAIL FROM:<>`) from a listed client is refused at RCPT with
//! the list's text; ordinary mail from the same client is delivered (safe
//! mode); `postmaster@` stays reachable; a list server that does not
//! answer lets the mail through, and nobounce logs it.

use nobounce_test_support::dns::{TestDnsServer, TestRecord};
use nobounce_test_support::{
    bind_loopback, require, Background, LogCapture, MessageBuilder, PostfixInstance, SmtpClient,
    SmtpSink, DEFAULT_TIMEOUT,
};
use std::net::{IpAddr, Ipv4Addr};

/// Listed in bl.test.
const LISTED: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
/// Not listed anywhere.
const CLEAN: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 4));

async fn send(
    postfix: &PostfixInstance,
    from_ip: IpAddr,
    sender: &str,
    rcpt: &str,
) -> (u16, String) {
    let mut c = SmtpClient::connect_from(from_ip, postfix.smtp_addr())
        .await
        .expect("connect");
    c.ehlo("mx.client.test").await.unwrap().assert_code(250);
    c.mail_from(sender, &[]).await.unwrap().assert_code(250);
    let r = c.rcpt_to(rcpt).await.unwrap();
    if r.is_success() {
        let msg = MessageBuilder::new()
            .from(if sender.is_empty() {
                "MAILER-DAEMON@mx.client.test"
            } else {
                sender
            })
            .to(rcpt)
            .subject(&format!("to {rcpt} from <{sender}>"))
            .build();
        c.data(&msg).await.unwrap().assert_code(250);
    }
    c.quit().await.unwrap();
    (r.code, r.to_string())
}

#[tokio::test]
async fn issue10_backscatter_list_in_safe_mode_through_postfix() {
    require!("postfix");
    let logs = LogCapture::default();
    let _guard = logs.install();
    let dns = TestDnsServer::start([
        TestRecord::a("3.0.0.127.bl.test", Ipv4Addr::new(127, 0, 0, 2), 300),
        TestRecord::txt("3.0.0.127.bl.test", "Backscatter seen from 127.0.0.3", 300),
    ])
    .await
    .expect("DNS server");
    dns.silence_zone("dead.test");
    let config = nobounce_config::Config::from_toml_str(&format!(
        "[dns]\nnameservers = [\"{}\"]\ntimeout = \"500ms\"\nattempts = 1\n\
         [spf]\ntrusted_networks = []\n\
         [[dnsbl.zones]]\nzone = \"bl.test\"\n\
         [[dnsbl.zones]]\nzone = \"dead.test\"\n\
         [dnsbl]\nexempt_recipients = [\"postmaster\"]\n",
        dns.addr()
    ))
    .expect("config");
    let listener = bind_loopback().await.expect("bind");
    let milter_addr = listener.local_addr().unwrap();
    let _milter = Background::spawn(|stop| nobounce_server::run_tcp(listener, config, stop));
    let sink = SmtpSink::start().await.expect("sink");
    let postfix = PostfixInstance::builder()
        .milter(milter_addr)
        .relay_to(sink.addr())
        .start()
        .await
        .expect("postfix");

    // A bounce from the listed client: refused at RCPT with the list's text.
    let (code, reply) = send(&postfix, LISTED, "", "ann@example.test").await;
    assert_eq!(code, 550, "{reply}");
    assert!(reply.contains("5.7.1"), "{reply}");
    assert!(
        reply.contains("blocked using bl.test; Backscatter seen from 127.0.0.3"),
        "{reply}"
    );
    // So is one from its postmaster.
    let (code, reply) = send(
        &postfix,
        LISTED,
        "postmaster@mx.client.test",
        "ann@example.test",
    )
    .await;
    assert_eq!(code, 550, "{reply}");
    // Ordinary mail from the same client: delivered (safe mode).
    let (code, reply) = send(&postfix, LISTED, "joe@client.test", "ann@example.test").await;
    assert_eq!(code, 250, "{reply}");
    // postmaster@ of ours takes even the listed client's bounce.
    let (code, reply) = send(&postfix, LISTED, "", "postmaster@example.test").await;
    assert_eq!(code, 250, "{reply}");
    // A clean client's bounce, while dead.test does not answer: delivered.
    let (code, reply) = send(&postfix, CLEAN, "", "ann@example.test").await;
    assert_eq!(code, 250, "{reply}");

    let got = sink
        .wait_for_messages(3, DEFAULT_TIMEOUT)
        .await
        .expect("three delivered");
    let mut subjects: Vec<String> = got.iter().filter_map(|m| m.header("Subject")).collect();
    subjects.sort();
    assert_eq!(
        subjects,
        [
            "to ann@example.test from <>",
            "to ann@example.test from <joe@client.test>",
            "to postmaster@example.test from <>",
        ]
    );
    // The dead list was logged as such (for the clean client and for the
    // listed one, whose bl.test listing decided anyway).
    let lines = logs.lines_with("block list did not answer");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("dead.test") && l.contains("127.0.0.4")),
        "{}",
        logs.text()
    );
    postfix
        .wait_until_queue_empty(DEFAULT_TIMEOUT)
        .await
        .expect("queue empties");
    postfix.assert_no_bounce();
}
