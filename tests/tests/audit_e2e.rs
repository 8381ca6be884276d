//! Issue 9, part 2, end to end: `nobounce audit` on the maillog of a real
//! Postfix run that bounced.
//!
//! Postfix relays everything to a sink that refuses some recipients at RCPT
//! TO after Postfix has accepted the messages, so Postfix generates the
//! bounces (backscatter, had the senders been forged) that nobounce exists
//! to prevent. The audit must count exactly the bounces in that log, with
//! the right senders and reasons.
//!
//! With `NOBOUNCE_AUDIT_CAPTURE=FILE` the test also copies the maillog to
//! FILE: that is how `crates/audit/tests/fixtures/postfix-maillog` was
//! captured (and how to refresh it; then gzip a copy next to it).

use nobounce_audit::{audit_files_with, Bounce, Limits, Mta, Reason};
use nobounce_test_support::{
    poll_until, require, MessageBuilder, PostfixInstance, SmtpClient, SmtpSink, DEFAULT_TIMEOUT,
};
use std::collections::{BTreeMap, BTreeSet};

const NOBODY: &str = "nobody@example.test";
const FULL: &str = "full@example.test";
const OK: &str = "ok@example.test";
const ELSEWHERE: &str = "relay@elsewhere.test";

/// One message of the run: sender, recipients, and what its bounce must
/// be (`None`: delivered, no bounce).
struct Case {
    from: &'static str,
    to: &'static [&'static str],
    bounce: Option<(Reason, bool)>,
}

const CASES: &[Case] = &[
    Case {
        from: "alice@a.test",
        to: &[NOBODY],
        bounce: Some((Reason::UnknownUser, true)),
    },
    Case {
        from: "bob@b.test",
        to: &[FULL],
        bounce: Some((Reason::OverQuota, true)),
    },
    // Two failed recipients: one notification.
    Case {
        from: "carol@c.test",
        to: &[NOBODY, FULL],
        bounce: Some((Reason::UnknownUser, true)),
    },
    Case {
        from: "dave@a.test",
        to: &[OK],
        bounce: None,
    },
    // One delivered, one failed: a bounce for the failed one.
    Case {
        from: "erin@d.test",
        to: &[OK, NOBODY],
        bounce: Some((Reason::UnknownUser, true)),
    },
    Case {
        from: "frank@b.test",
        to: &[ELSEWHERE],
        bounce: Some((Reason::RelayRefused, false)),
    },
];

/// The queue id in `250 2.0.0 Ok: queued as 4ABC...`.
fn queued_as(text: &str) -> String {
    text.rsplit(' ').next().unwrap_or_default().to_owned()
}

/// The original queue ids of the log's `sender non-delivery notification`
/// lines.
fn notified_ids(postfix: &PostfixInstance) -> BTreeSet<String> {
    postfix
        .log_lines_containing(": sender non-delivery notification: ")
        .iter()
        .filter_map(|l| l.split(": sender non-delivery notification: ").next())
        .filter_map(|head| head.rsplit(' ').next())
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn audit_counts_the_bounces_of_a_real_postfix_run() {
    require!("postfix");
    let sink = SmtpSink::builder()
        .reject_recipient(NOBODY, "550 5.1.1 <nobody@example.test>: no such user")
        .reject_recipient(FULL, "552 5.2.2 <full@example.test>: mailbox full")
        .reject_recipient(
            ELSEWHERE,
            "554 5.7.1 <relay@elsewhere.test>: Relay access denied",
        )
        .start()
        .await
        .expect("sink");
    let postfix = PostfixInstance::builder()
        .relay_to(sink.addr())
        .start()
        .await
        .expect("postfix starts");

    // Queue id → the case it came from.
    let mut queued: BTreeMap<String, &Case> = BTreeMap::new();
    for (i, case) in CASES.iter().enumerate() {
        let mut smtp = SmtpClient::connect(postfix.smtp_addr())
            .await
            .expect("connect");
        smtp.ehlo("client.example").await.expect("EHLO");
        let message = MessageBuilder::new()
            .from(case.from)
            .to(case.to[0])
            .subject(&format!("audit e2e {i}"))
            .build();
        let t = smtp
            .send_mail(case.from, case.to, &message)
            .await
            .expect("transaction");
        assert!(t.accepted(), "Postfix accepts every case: {t:?}");
        let data = t.data.expect("DATA reply");
        queued.insert(queued_as(&data.text()), case);
        smtp.quit().await.expect("QUIT");
    }

    let bounced: Vec<&&Case> = queued.values().filter(|c| c.bounce.is_some()).collect();
    postfix
        .wait_until_queue_empty(DEFAULT_TIMEOUT)
        .await
        .expect("everything delivered or bounced");
    postfix.flush().await.expect("flush");
    // postlogd writes a moment after the event: wait for the last lines
    // (every original and every bounce `removed`).
    let removed = CASES.len() + bounced.len();
    poll_until("the whole run in the maillog", DEFAULT_TIMEOUT, || {
        let done = postfix.log_lines_containing(": removed").len() >= removed
            && notified_ids(&postfix).len() >= bounced.len();
        async move { Ok(done.then_some(())) }
    })
    .await
    .expect("log complete");
    assert_eq!(
        sink.bounces().len(),
        bounced.len(),
        "the bounces reached the senders"
    );

    if let Some(to) = std::env::var_os("NOBOUNCE_AUDIT_CAPTURE") {
        std::fs::copy(postfix.log_path(), &to).expect("capture the maillog");
    }

    let mut bounces: Vec<Bounce> = Vec::new();
    let report = audit_files_with(&[postfix.log_path().to_owned()], Limits::default(), |b| {
        bounces.push(b.clone())
    })
    .expect("the maillog reads");

    // The log's own queue events: one notification per bounced message.
    let log_ids = notified_ids(&postfix);
    let audited_ids: BTreeSet<String> = bounces.iter().map(|b| b.queue_id.clone()).collect();
    assert_eq!(
        audited_ids, log_ids,
        "the audit found exactly the log's notifications"
    );
    assert_eq!(report.bounces as usize, log_ids.len());

    // The test's own expectations, message by message.
    assert_eq!(report.bounces as usize, bounced.len());
    for b in &bounces {
        let case = queued
            .get(&b.queue_id)
            .unwrap_or_else(|| panic!("a bounce for a message the test did not send: {b:?}"));
        let (reason, preventable) = case.bounce.expect("this case bounces");
        assert_eq!(b.mta, Mta::Postfix);
        assert_eq!(b.sender.as_deref(), Some(case.from), "{b:?}");
        assert_eq!((b.reason, b.preventable), (reason, preventable), "{b:?}");
        assert!(b.bounce_id.is_some() && b.day.is_some(), "{b:?}");
        let failed: u32 = b.recipients.iter().map(|(_, n)| n).sum();
        let expected_failed = case.to.iter().filter(|r| **r != OK).count() as u32;
        assert_eq!(failed, expected_failed, "{b:?}");
    }

    let counts = |pairs: &[(&str, u64)]| -> serde_json::Value {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).expect("JSON");
    assert_eq!(json["bounces"], 5);
    assert_eq!(json["preventable"], 4);
    assert_eq!(
        json["by_reason"],
        counts(&[("unknown_user", 3), ("over_quota", 1), ("relay_refused", 1)])
    );
    assert_eq!(
        json["recipients_by_reason"],
        counts(&[("unknown_user", 3), ("over_quota", 2), ("relay_refused", 1)])
    );
    assert_eq!(
        json["by_sender_domain"],
        counts(&[("a.test", 1), ("b.test", 2), ("c.test", 1), ("d.test", 1)])
    );
    assert_eq!(json["by_mta"], counts(&[("postfix", 5)]));
    let days = json["by_day"].as_object().expect("by_day");
    assert_eq!(days.len(), 1, "{days:?}");
    assert_eq!(days.values().next().expect("one day")["bounces"], 5);
    assert_eq!(json["unparsable_lines"], 0);
    assert_eq!(json["incomplete"], 0);
}

/// The same with a real Sendmail 8.17: its `DSN:` lines and the
/// `dsn=`/`stat=` of the recipients behind them. With
/// `NOBOUNCE_AUDIT_CAPTURE_SENDMAIL=FILE` the log is copied to FILE
/// (`crates/audit/tests/fixtures/sendmail-maillog`).
#[tokio::test]
async fn audit_counts_the_dsns_of_a_real_sendmail_run() {
    require!("sendmail");
    let sink = SmtpSink::builder()
        .reject_recipient(NOBODY, "550 5.1.1 <nobody@example.test>: no such user")
        .reject_recipient(FULL, "552 5.2.2 <full@example.test>: mailbox full")
        .start()
        .await
        .expect("sink");
    let sendmail = nobounce_test_support::SendmailInstance::builder()
        .relay_to(sink.addr())
        .start()
        .await
        .expect("sendmail starts");
    let cases: &[(&str, &[&str], Option<Reason>)] = &[
        ("alice@a.test", &[NOBODY], Some(Reason::UnknownUser)),
        ("bob@b.test", &[FULL], Some(Reason::OverQuota)),
        ("carol@c.test", &[NOBODY, FULL], Some(Reason::UnknownUser)),
        ("dave@a.test", &[OK], None),
    ];
    let mut queued: BTreeMap<String, (&str, Option<Reason>)> = BTreeMap::new();
    for (i, (from, to, reason)) in cases.iter().enumerate() {
        let mut smtp = SmtpClient::connect(sendmail.smtp_addr())
            .await
            .expect("connect");
        smtp.ehlo("client.example").await.expect("EHLO");
        let message = MessageBuilder::new()
            .from(from)
            .to(to[0])
            .subject(&format!("audit e2e sendmail {i}"))
            .build();
        let t = smtp
            .send_mail(from, to, &message)
            .await
            .expect("transaction");
        assert!(t.accepted(), "Sendmail accepts every case: {t:?}");
        // `250 2.0.0 5ATD0abc012345 Message accepted for delivery`
        let text = t.data.expect("DATA reply").text();
        let id = text.split(' ').nth(1).unwrap_or_default().to_owned();
        queued.insert(id, (from, *reason));
        smtp.quit().await.expect("QUIT");
    }
    let bounced = cases.iter().filter(|c| c.2.is_some()).count();
    sendmail
        .wait_until_queue_empty(DEFAULT_TIMEOUT)
        .await
        .expect("everything delivered or bounced");
    poll_until("every DSN in the log", DEFAULT_TIMEOUT, || {
        let done = sendmail.log_lines_containing(": DSN: ").len() >= bounced
            && sink.bounces().len() >= bounced;
        async move { Ok(done.then_some(())) }
    })
    .await
    .expect("log complete");
    if let Some(to) = std::env::var_os("NOBOUNCE_AUDIT_CAPTURE_SENDMAIL") {
        std::fs::copy(sendmail.log_path(), &to).expect("capture the log");
    }

    let mut bounces: Vec<Bounce> = Vec::new();
    let report = audit_files_with(&[sendmail.log_path().to_owned()], Limits::default(), |b| {
        bounces.push(b.clone())
    })
    .expect("the log reads");
    assert_eq!(
        report.bounces as usize,
        sendmail.log_lines_containing(": DSN: ").len()
    );
    assert_eq!(report.bounces as usize, bounced);
    for b in &bounces {
        let (from, reason) = queued
            .get(&b.queue_id)
            .unwrap_or_else(|| panic!("a DSN for a message the test did not send: {b:?}"));
        assert_eq!(b.mta, Mta::Sendmail);
        assert_eq!(b.sender.as_deref(), Some(*from), "{b:?}");
        assert_eq!(Some(b.reason), *reason, "{b:?}");
        assert!(b.preventable, "{b:?}");
    }
    assert_eq!(report.preventable as usize, bounced);
}
