//! Issue 12, end to end: a real Exim 4.96 asks nobounce's policy service
//! from its RCPT ACL with `${readsocket}` (the snippet of
//! `docs/examples/exim-nobounce.conf`, as an admin would paste it). An
//! unknown user, a full mailbox (with the client's `SIZE=`, which Exim
//! passes as `$message_size`) and an SPF fail sender are refused at RCPT;
//! good mail is delivered; nothing is left queued to bounce.

use nobounce_test_support::{
    require, EximInstance, MessageBuilder, SmtpClient, SmtpSink, DEFAULT_TIMEOUT,
};
use std::net::{IpAddr, Ipv4Addr};

mod common;

/// Not trusted by nobounce (`trusted_networks = []`).
const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

#[tokio::test]
async fn issue12_exim_readsocket_refuses_unknown_full_and_spf_fail_at_rcpt() {
    require!("exim");
    let nobounce = common::PolicySite::start().await;
    let sink = SmtpSink::start().await.expect("sink");
    let exim = EximInstance::builder()
        .policy(nobounce.policy)
        .relay_to(sink.addr())
        .start()
        .await
        .expect("exim starts");
    let mut c = SmtpClient::connect_from(CLIENT, exim.smtp_addr())
        .await
        .expect("connect");
    c.ehlo("client.pass.test").await.unwrap().assert_code(250);

    c.mail_from("joe@pass.test", &["SIZE=5000"])
        .await
        .unwrap()
        .assert_code(250);
    let unknown = c.rcpt_to("nobody@example.test").await.unwrap();
    assert_eq!(unknown.code, 550, "{unknown}");
    assert_eq!(unknown.enhanced_status(), Some("5.1.1"), "{unknown}");
    let full = c.rcpt_to("full@example.test").await.unwrap();
    assert_eq!(full.code, 452, "{full}");
    assert_eq!(full.enhanced_status(), Some("4.2.2"), "{full}");
    c.rcpt_to("ann@example.test")
        .await
        .unwrap()
        .assert_code(250);
    let msg = MessageBuilder::new()
        .from("joe@pass.test")
        .to("ann@example.test")
        .subject("exim e2e")
        .build();
    c.data(&msg).await.unwrap().assert_code(250);

    c.mail_from("eve@fail.test", &[])
        .await
        .unwrap()
        .assert_code(250);
    let spf = c.rcpt_to("ann@example.test").await.unwrap();
    assert_eq!(spf.code, 550, "{spf}");
    assert_eq!(spf.enhanced_status(), Some("5.7.23"), "{spf}");
    assert!(spf.text().contains("SPF fail"), "{spf}");
    c.quit().await.unwrap();

    let got = sink
        .wait_for_messages(1, DEFAULT_TIMEOUT)
        .await
        .expect("delivered");
    assert_eq!(got[0].header("Subject").as_deref(), Some("exim e2e"));
    assert_eq!(
        exim.queue_count().await.unwrap(),
        0,
        "nothing left to bounce"
    );
    assert!(!sink.has_bounce());
    // Exim logs each refusal with nobounce's reply.
    let rejects = exim.reject_log();
    assert!(rejects.contains("5.1.1"), "{rejects}");
    assert!(rejects.contains("5.7.23"), "{rejects}");
}
