//! Self-tests of the end-to-end harness against the real Postfix: the
//! harness itself must be right before nobounce is tested with it.

use indymilter::{Actions, Callbacks, ContextActions, SetErrorReply, Status};
use nobounce_test_support::{
    bind_loopback, free_port, require, Background, MessageBuilder, PostfixInstance, SmtpClient,
    SmtpSink, DEFAULT_TIMEOUT, MYHOSTNAME,
};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

fn message(subject: &str) -> Vec<u8> {
    MessageBuilder::new()
        .from("alice@sender.test")
        .to("bob@example.test")
        .subject(subject)
        .body("Hello Bob.\n.A line starting with a dot.\n")
        .build()
}

#[tokio::test]
async fn relays_to_sink_without_milter_and_leaves_queue_empty() {
    require!("postfix");
    let sink = SmtpSink::start().await.expect("sink");
    let postfix = PostfixInstance::builder()
        .relay_to(sink.addr())
        .start()
        .await
        .expect("postfix starts");

    let mut smtp = SmtpClient::connect(postfix.smtp_addr())
        .await
        .expect("connect");
    smtp.greeting().assert_code(220);
    let ehlo = smtp.ehlo("client.example").await.expect("EHLO");
    ehlo.assert_code(250);
    assert_eq!(ehlo.lines[0], MYHOSTNAME);
    let t = smtp
        .send_mail(
            "alice@sender.test",
            &["bob@example.test"],
            &message("relay test"),
        )
        .await
        .expect("transaction");
    assert!(t.accepted(), "{t:?}");
    smtp.quit().await.expect("QUIT").assert_code(221);

    let got = sink
        .wait_for_messages(1, DEFAULT_TIMEOUT)
        .await
        .expect("relayed to the sink");
    let m = &got[0];
    assert_eq!(m.sender, "alice@sender.test");
    assert_eq!(m.recipients, vec!["bob@example.test"]);
    assert_eq!(m.header("Subject").as_deref(), Some("relay test"));
    assert_eq!(m.body(), "Hello Bob.\r\n.A line starting with a dot.\r\n");
    // The message really went through this Postfix.
    let received = m.header("Received").expect("Postfix adds Received");
    assert!(
        received.contains("client.example (unknown [127.0.0.1])")
            && received.contains(&format!("by {MYHOSTNAME} (Postfix)")),
        "{received}"
    );

    postfix
        .wait_until_queue_empty(DEFAULT_TIMEOUT)
        .await
        .expect("queue drains");
    postfix.assert_no_bounce();
    assert!(!sink.has_bounce());
    postfix
        .wait_for_log("status=sent", DEFAULT_TIMEOUT)
        .await
        .expect("delivery is logged");
}

#[tokio::test]
async fn unreachable_milter_means_tempfail() {
    require!("postfix");
    let sink = SmtpSink::start().await.expect("sink");
    // Nothing listens there.
    let milter = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), free_port().expect("port"));
    let postfix = PostfixInstance::builder()
        .milter(milter)
        .relay_to(sink.addr())
        .start()
        .await
        .expect("postfix starts");

    let mut smtp = SmtpClient::connect(postfix.smtp_addr())
        .await
        .expect("connect");
    smtp.ehlo("client.example").await.expect("EHLO");
    // Postfix delays the milter's (default action's) verdict to MAIL FROM.
    let mail = smtp
        .mail_from("alice@sender.test", &[])
        .await
        .expect("MAIL");
    assert_eq!(mail.code, 451, "{mail}");
    assert_eq!(mail.enhanced_status(), Some("4.7.1"), "{mail}");
    smtp.quit().await.expect("QUIT");

    postfix
        .wait_for_log(
            &format!("connect to Milter service inet:{milter}: Connection refused"),
            DEFAULT_TIMEOUT,
        )
        .await
        .expect("Postfix tried the milter");
    assert!(postfix.queue_is_empty().await.expect("postqueue"));
    assert!(sink.messages().is_empty());
}

/// What the recording milter saw: (stage, all macros known at that stage).
type Seen = Arc<Mutex<Vec<(&'static str, HashMap<String, String>)>>>;

fn record(seen: &Seen, stage: &'static str, macros: &indymilter::Macros) {
    let map = macros
        .to_hash_map()
        .into_iter()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        })
        .collect();
    seen.lock().expect("not poisoned").push((stage, map));
}

fn macros_at(seen: &Seen, stage: &str) -> HashMap<String, String> {
    seen.lock()
        .expect("not poisoned")
        .iter()
        .rev()
        .find(|(s, _)| *s == stage)
        .map(|(_, m)| m.clone())
        .unwrap_or_else(|| panic!("milter never saw stage {stage}"))
}

/// A milter that records macros, rejects `blocked@example.test` with
/// `550 5.7.23` and adds an `X-E2E-Queue-Id` header.
fn recording_milter(seen: Seen) -> Callbacks<()> {
    let (s1, s2, s3, s4) = (seen.clone(), seen.clone(), seen.clone(), seen);
    Callbacks::new()
        .on_connect(move |cx, _, _| {
            let seen = s1.clone();
            Box::pin(async move {
                record(&seen, "connect", &cx.macros);
                Status::Continue
            })
        })
        .on_mail(move |cx, _| {
            let seen = s2.clone();
            Box::pin(async move {
                record(&seen, "mail", &cx.macros);
                Status::Continue
            })
        })
        .on_rcpt(move |cx, args| {
            let seen = s3.clone();
            Box::pin(async move {
                record(&seen, "rcpt", &cx.macros);
                let rcpt = args.first().map(|a| a.to_string_lossy().to_lowercase());
                if rcpt.as_deref() == Some("<blocked@example.test>") {
                    cx.reply
                        .set_error_reply("550", Some("5.7.23"), ["blocked by the test milter"])
                        .expect("valid reply");
                    return Status::Reject;
                }
                Status::Continue
            })
        })
        .on_eom(move |cx| {
            let seen = s4.clone();
            Box::pin(async move {
                record(&seen, "eom", &cx.macros);
                let id = cx
                    .macros
                    .get(c"i")
                    .map(|i| i.to_string_lossy().into_owned())
                    .unwrap_or_default();
                cx.actions
                    .add_header("X-E2E-Queue-Id", id)
                    .await
                    .expect("add header");
                Status::Continue
            })
        })
}

#[tokio::test]
async fn milter_sees_macros_and_its_replies_and_headers_take_effect() {
    require!("postfix");
    let seen: Seen = Arc::default();
    let listener = bind_loopback().await.expect("bind milter");
    let milter_addr = listener.local_addr().expect("milter addr");
    let callbacks = recording_milter(seen.clone());
    let config = indymilter::Config {
        actions: Actions::ADD_HEADER,
        ..Default::default()
    };
    let milter =
        Background::spawn(|shutdown| indymilter::run(listener, callbacks, config, shutdown));
    let sink = SmtpSink::start().await.expect("sink");
    let postfix = PostfixInstance::builder()
        .milter(milter_addr)
        .relay_to(sink.addr())
        .start()
        .await
        .expect("postfix starts");

    // A different loopback address than 127.0.0.1, seen as {client_addr}.
    let client_ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let mut smtp = SmtpClient::connect_from(client_ip, postfix.smtp_addr())
        .await
        .expect("connect");
    smtp.ehlo("client.example")
        .await
        .expect("EHLO")
        .assert_code(250);
    smtp.mail_from("alice@sender.test", &["SIZE=300"])
        .await
        .expect("MAIL")
        .assert_code(250);
    let blocked = smtp.rcpt_to("blocked@example.test").await.expect("RCPT");
    assert_eq!(blocked.code, 550, "{blocked}");
    assert_eq!(blocked.text(), "5.7.23 blocked by the test milter");
    smtp.rcpt_to("bob@example.test")
        .await
        .expect("RCPT")
        .assert_code(250);
    smtp.data(&message("milter test"))
        .await
        .expect("DATA")
        .assert_code(250);
    smtp.quit().await.expect("QUIT");

    let got = sink
        .wait_for_messages(1, DEFAULT_TIMEOUT)
        .await
        .expect("relayed");
    assert_eq!(got[0].recipients, vec!["bob@example.test"]);

    let connect = macros_at(&seen, "connect");
    assert_eq!(
        connect.get("{client_addr}").map(String::as_str),
        Some("127.0.0.2")
    );
    assert_eq!(connect.get("j").map(String::as_str), Some(MYHOSTNAME));
    let mail = macros_at(&seen, "mail");
    assert_eq!(
        mail.get("{mail_addr}").map(String::as_str),
        Some("alice@sender.test")
    );
    // Postfix sends {auth_authen} only after SMTP AUTH, which this test does not do.
    assert_eq!(mail.get("{auth_authen}"), None);
    let rcpt = macros_at(&seen, "rcpt");
    assert_eq!(
        rcpt.get("{rcpt_addr}").map(String::as_str),
        Some("bob@example.test")
    );
    let eom = macros_at(&seen, "eom");
    let queue_id = eom.get("i").expect("queue id at end of message").clone();
    assert!(!queue_id.is_empty());
    // smtpd_delay_open_until_valid_rcpt = no: the queue id is known at RCPT.
    assert_eq!(rcpt.get("i"), Some(&queue_id));

    // The milter's header reached the next hop, carrying the queue id that
    // Postfix logs for this message.
    assert_eq!(got[0].header("X-E2E-Queue-Id"), Some(queue_id.clone()));
    postfix
        .wait_for_log(
            &format!("{queue_id}: to=<bob@example.test>"),
            DEFAULT_TIMEOUT,
        )
        .await
        .expect("delivery of that queue id logged");
    assert_eq!(
        postfix.log_lines_containing("milter-reject: RCPT").len(),
        1,
        "{}",
        postfix.log()
    );
    postfix
        .wait_until_queue_empty(DEFAULT_TIMEOUT)
        .await
        .expect("queue drains");
    postfix.assert_no_bounce();
    assert!(!sink.has_bounce());
    drop(postfix);
    milter
        .stop()
        .await
        .expect("milter stops")
        .expect("milter ran cleanly");
}

/// The no-bounce checks must be able to fail: make Postfix bounce for real.
#[tokio::test]
async fn a_bounce_is_noticed_in_sink_and_log() {
    require!("postfix");
    let sink = SmtpSink::builder()
        .reject_recipient(
            "gone@example.test",
            "550 5.1.1 <gone@example.test>: no such user",
        )
        .start()
        .await
        .expect("sink");
    let postfix = PostfixInstance::builder()
        .relay_to(sink.addr())
        .start()
        .await
        .expect("postfix starts");
    let mut smtp = SmtpClient::connect(postfix.smtp_addr())
        .await
        .expect("connect");
    smtp.ehlo("client.example").await.expect("EHLO");
    let t = smtp
        .send_mail(
            "alice@sender.test",
            &["gone@example.test"],
            &message("doomed"),
        )
        .await
        .expect("transaction");
    // Postfix accepts first and finds out later: the situation nobounce avoids.
    assert!(t.accepted(), "{t:?}");
    smtp.quit().await.expect("QUIT");

    let got = sink
        .wait_for_messages(1, DEFAULT_TIMEOUT)
        .await
        .expect("bounce relayed to the sink");
    let bounce = &got[0];
    assert!(bounce.is_bounce(), "{bounce:?}");
    assert_eq!(bounce.recipients, vec!["alice@sender.test"]);
    assert!(sink.has_bounce());
    postfix
        .wait_until_queue_empty(DEFAULT_TIMEOUT)
        .await
        .expect("queue drains");
    let lines = postfix.bounce_log_lines();
    assert!(
        lines.iter().any(|l| l.contains("status=bounced")),
        "{lines:?}"
    );
    let check =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| postfix.assert_no_bounce()));
    assert!(check.is_err(), "assert_no_bounce must fail after a bounce");
}

#[tokio::test]
async fn without_relay_target_mail_stays_deferred() {
    require!("postfix");
    let postfix = PostfixInstance::builder()
        .start()
        .await
        .expect("postfix starts");
    let mut smtp = SmtpClient::connect(postfix.smtp_addr())
        .await
        .expect("connect");
    smtp.ehlo("client.example").await.expect("EHLO");
    let t = smtp
        .send_mail(
            "alice@sender.test",
            &["bob@example.test"],
            &message("stuck"),
        )
        .await
        .expect("transaction");
    assert!(t.accepted(), "{t:?}");
    smtp.quit().await.expect("QUIT");

    postfix
        .wait_for_log("status=deferred", DEFAULT_TIMEOUT)
        .await
        .expect("delivery deferred");
    let queue = postfix.queued_messages().await.expect("postqueue -j");
    assert_eq!(queue.len(), 1, "{queue:?}");
    let m = &queue[0];
    assert_eq!(m.sender, "alice@sender.test");
    assert!(!m.is_bounce());
    assert_eq!(m.recipients[0].address, "bob@example.test");
    let reason = m.recipients[0].delay_reason.as_deref().unwrap_or_default();
    assert!(reason.contains("deferred transport"), "{m:?}");

    // A flush makes Postfix try the closed loopback port, and defer again.
    postfix.flush().await.expect("postqueue -f");
    postfix
        .wait_for_log(
            "127.0.0.1[127.0.0.1]:9: Connection refused",
            DEFAULT_TIMEOUT,
        )
        .await
        .expect("flush attempted delivery");
    assert_eq!(postfix.queued_messages().await.expect("postqueue").len(), 1);
    postfix.assert_no_bounce();
}

#[tokio::test]
async fn delivers_virtual_mailbox_domains_over_lmtp() {
    require!("postfix");
    let lmtp = SmtpSink::start().await.expect("LMTP sink");
    let relay = SmtpSink::start().await.expect("relay sink");
    let postfix = PostfixInstance::builder()
        .lmtp(lmtp.addr(), &["mbox.test"])
        .relay_to(relay.addr())
        .start()
        .await
        .expect("postfix starts");
    let mut smtp = SmtpClient::connect(postfix.smtp_addr())
        .await
        .expect("connect");
    smtp.ehlo("client.example").await.expect("EHLO");
    let t = smtp
        .send_mail(
            "alice@sender.test",
            &["carol@mbox.test", "dave@mbox.test", "bob@example.test"],
            &message("lmtp"),
        )
        .await
        .expect("transaction");
    assert!(t.accepted(), "{t:?}");
    smtp.quit().await.expect("QUIT");

    let got = lmtp
        .wait_for_messages(1, DEFAULT_TIMEOUT)
        .await
        .expect("delivered over LMTP");
    assert!(got[0].lmtp, "spoke LMTP: {:?}", got[0]);
    let mut rcpts = got[0].recipients.clone();
    rcpts.sort();
    assert_eq!(rcpts, vec!["carol@mbox.test", "dave@mbox.test"]);
    let relayed = relay
        .wait_for_messages(1, DEFAULT_TIMEOUT)
        .await
        .expect("relayed");
    assert!(!relayed[0].lmtp);
    assert_eq!(relayed[0].recipients, vec!["bob@example.test"]);
    postfix
        .wait_until_queue_empty(DEFAULT_TIMEOUT)
        .await
        .expect("queue drains");
    postfix.assert_no_bounce();
}
