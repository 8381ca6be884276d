//! Issue 12, end to end: real Postfix asks nobounce through the policy
//! delegation protocol alone (`check_policy_service`, no milter), in
//! `smtpd_recipient_restrictions` and `smtpd_end_of_data_restrictions`.
//!
//! An unknown user, a full mailbox (Maildir++ quota, with the client's
//! `SIZE=`) and an SPF fail sender are refused at RCPT; a message without
//! `SIZE=` that does not fit its single recipient's mailbox is refused at
//! the end of data; good mail is delivered; nothing bounces.

use nobounce_test_support::{
    require, MessageBuilder, PostfixInstance, SmtpClient, SmtpSink, DEFAULT_TIMEOUT,
};
use std::net::{IpAddr, Ipv4Addr};

/// Not trusted by nobounce (`trusted_networks = []`).
const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

mod common;

struct Site {
    _nobounce: common::PolicySite,
    postfix: PostfixInstance,
    sink: SmtpSink,
}

async fn site() -> Site {
    let nobounce = common::PolicySite::start().await;
    let sink = SmtpSink::start().await.expect("sink");
    let postfix = PostfixInstance::builder()
        .policy_service(nobounce.policy)
        .relay_to(sink.addr())
        .start()
        .await
        .expect("postfix starts");
    assert!(
        !postfix.main_cf().contains("smtpd_milters = inet"),
        "no milter"
    );
    Site {
        _nobounce: nobounce,
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
        .expect("EHLO")
        .assert_code(250);
    c
}

#[tokio::test]
async fn issue12_postfix_check_policy_service_refuses_at_rcpt() {
    require!("postfix");
    let site = site().await;
    let mut c = client(&site).await;

    // A message of 5 000 bytes, declared: full@ cannot take it.
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
        .subject("policy e2e")
        .build();
    c.data(&msg).await.unwrap().assert_code(250);

    // SPF fail: refused at RCPT, where Postfix asks.
    c.mail_from("eve@fail.test", &[])
        .await
        .unwrap()
        .assert_code(250);
    let spf = c.rcpt_to("ann@example.test").await.unwrap();
    assert_eq!(spf.code, 550, "{spf}");
    assert_eq!(spf.enhanced_status(), Some("5.7.23"), "{spf}");
    c.rset().await.unwrap();

    // No SIZE=, one recipient, a message too big for small@ (1 000 of
    // 4 000 used): refused at the end of data, with the real size.
    c.mail_from("joe@pass.test", &[])
        .await
        .unwrap()
        .assert_code(250);
    c.rcpt_to("small@example.test")
        .await
        .unwrap()
        .assert_code(250);
    let big = MessageBuilder::new()
        .from("joe@pass.test")
        .to("small@example.test")
        .subject("too big")
        .body(&format!("{}\n", "x".repeat(71)).repeat(60))
        .build();
    let eod = c.data(&big).await.unwrap();
    assert_eq!(eod.code, 452, "{eod}");
    assert_eq!(eod.enhanced_status(), Some("4.2.2"), "{eod}");
    c.quit().await.unwrap();

    // Only ann@'s message arrived; nothing bounced.
    let got = site
        .sink
        .wait_for_messages(1, DEFAULT_TIMEOUT)
        .await
        .expect("delivered");
    assert_eq!(got[0].header("Subject").as_deref(), Some("policy e2e"));
    site.postfix
        .wait_until_queue_empty(DEFAULT_TIMEOUT)
        .await
        .expect("queue empties");
    assert_eq!(site.sink.messages().len(), 1);
    site.postfix.assert_no_bounce();
    assert!(!site.sink.has_bounce());
    // Postfix logs the policy refusals as its own rejects.
    let log = site.postfix.log();
    assert_eq!(log.matches("reject: RCPT from").count(), 3, "{log}");
    assert!(log.contains("reject: END-OF-MESSAGE from"), "{log}");
}
