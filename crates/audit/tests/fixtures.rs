//! The auditor on real logs.
//!
//! `fixtures/postfix-maillog` is the maillog of a run of
//! `tests/tests/audit_e2e.rs` (Postfix 3.7.11, `maillog_file`), captured with
//! `NOBOUNCE_AUDIT_CAPTURE`; `postfix-maillog.gz` is the same, gzipped.
//! `fixtures/sendmail-maillog` is the log of a run of the Sendmail test in
//! the same file (Sendmail 8.17.1.9; syslog(3) lines as sent to /dev/log,
//! so without a host), captured with `NOBOUNCE_AUDIT_CAPTURE_SENDMAIL`.
//! Nothing in them is invented or edited.
//!
//! qmail is not in Debian, so its lines below are built from the formats
//! in qmail-send.c and qsutil.c (see `src/qmail.rs`), not captured.

use nobounce_audit::{audit_files, Auditor, Bounce, Limits, Mta, Reason, Report, YearHint};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// When the fixtures were captured.
const HINT: YearHint = YearHint::fixed(2026, 11);

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).expect("fixture")
}

fn audit(input: &[u8], limits: Limits) -> (Vec<Bounce>, Report) {
    let mut auditor = Auditor::with_limits(limits);
    let mut bounces = Vec::new();
    auditor
        .read(input, HINT, |b| bounces.push(b.clone()))
        .expect("reading from memory cannot fail");
    (bounces, auditor.finish())
}

fn by_queue_id(bounces: &[Bounce]) -> BTreeMap<&str, &Bounce> {
    bounces.iter().map(|b| (b.queue_id.as_str(), b)).collect()
}

fn counts<K: Ord + Clone>(pairs: &[(K, u64)]) -> BTreeMap<K, u64> {
    pairs.iter().cloned().collect()
}

/// The Postfix run: alice (nobody), bob (full), carol (nobody and full: one
/// notification), dave (delivered), erin (ok delivered, nobody bounced),
/// frank (relay refused).
fn assert_postfix_run(bounces: &[Bounce], report: &Report) {
    let got = by_queue_id(bounces);
    let expect = [
        (
            "2F6FE9A4432",
            "486199A41A4",
            "alice@a.test",
            Reason::UnknownUser,
            true,
        ),
        (
            "353159A4159",
            "516879A4204",
            "bob@b.test",
            Reason::OverQuota,
            true,
        ),
        (
            "3BF059A4442",
            "560EC9A4195",
            "carol@c.test",
            Reason::UnknownUser,
            true,
        ),
        (
            "4C73E9A4462",
            "559E39A415A",
            "erin@d.test",
            Reason::UnknownUser,
            true,
        ),
        (
            "548DD9A4194",
            "6EDE89A41A4",
            "frank@b.test",
            Reason::RelayRefused,
            false,
        ),
    ];
    assert_eq!(got.len(), expect.len(), "{bounces:#?}");
    for (qid, bid, sender, reason, preventable) in expect {
        let b = got[qid];
        assert_eq!(b.mta, Mta::Postfix);
        assert_eq!(b.bounce_id.as_deref(), Some(bid));
        assert_eq!(b.sender.as_deref(), Some(sender));
        assert_eq!((b.reason, b.preventable), (reason, preventable), "{b:?}");
        assert_eq!(b.host, "mx");
        assert_eq!(b.day.map(|d| d.to_string()).as_deref(), Some("2026-11-29"));
    }
    assert_eq!(
        got["3BF059A4442"].recipients,
        vec![(Reason::UnknownUser, 1), (Reason::OverQuota, 1)]
    );
    assert_eq!(report.bounces, 5);
    assert_eq!(report.preventable, 4);
    assert_eq!(
        report.by_reason,
        counts(&[
            (Reason::UnknownUser, 3),
            (Reason::OverQuota, 1),
            (Reason::RelayRefused, 1)
        ])
    );
    assert_eq!(
        report.by_sender_domain,
        counts(&[
            ("a.test".to_owned(), 1),
            ("b.test".to_owned(), 2),
            ("c.test".to_owned(), 1),
            ("d.test".to_owned(), 1)
        ])
    );
    assert_eq!(report.by_day["2026-11-29"].bounces, 5);
    assert_eq!(report.by_day["2026-11-29"].preventable, 4);
}

#[test]
fn postfix_maillog_of_a_real_run() {
    let (bounces, report) = audit(&read("postfix-maillog"), Limits::default());
    assert_postfix_run(&bounces, &report);
    assert_eq!(report.lines, 71);
    assert_eq!(report.unparsable_lines, 0);
    assert_eq!(report.incomplete, 0);
}

#[test]
fn postfix_maillog_gz_through_the_file_api() {
    let report = audit_files(&[fixture("postfix-maillog.gz")], Limits::default()).expect("reads");
    assert_eq!(report.bounces, 5);
    assert_eq!(report.preventable, 4);
    let plain = audit_files(&[fixture("postfix-maillog")], Limits::default()).expect("reads");
    assert_eq!(report, plain);
}

/// The same real lines with the RFC 3339 stamps Debian's rsyslog writes.
#[test]
fn postfix_lines_with_rfc3339_stamps() {
    let log = String::from_utf8(read("postfix-maillog")).expect("UTF-8");
    let converted: String = log
        .lines()
        .map(|l| {
            let (stamp, rest) = l.split_at(15);
            let time = stamp.rsplit(' ').next().expect("time");
            format!("2026-11-29T{time}.120473+01:00{rest}\n")
        })
        .collect();
    assert!(converted.starts_with("2026-11-29T13:00:15.120473+01:00 mx postfix-e2e/"));
    let (bounces, report) = audit(converted.as_bytes(), Limits::default());
    assert_postfix_run(&bounces, &report);
}

/// Garbage between the real lines changes nothing but the count of
/// unparsable lines: invalid UTF-8, NUL bytes, CR line ends, a line of a
/// megabyte, a truncated line, lines of other programs.
#[test]
fn garbage_between_real_lines_is_counted_and_ignored() {
    let log = read("postfix-maillog");
    let mut noisy = Vec::new();
    for (i, line) in log.split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        noisy.extend_from_slice(line);
        // Every other line ends in CRLF.
        noisy.extend_from_slice(if i % 2 == 0 { b"\r\n" } else { b"\n" });
        match i % 7 {
            0 => noisy.extend_from_slice(b"\xff\xfe\xfd not a log line \x00\x00\n"),
            1 => noisy
                .extend_from_slice(b"Nov 29 13:00:15 mx dovecot: lmtp(4711): Connect from local\n"),
            2 => noisy.extend_from_slice(
                b"Nov 29 13:00:15 mx postfix-e2e/qmgr[1]: \xff\xff\xff: from=<\n",
            ),
            3 => {
                noisy.extend(std::iter::repeat_n(b'A', 1 << 20));
                noisy.push(b'\n');
            }
            4 => noisy.extend_from_slice(b"Nov 29 13:00:1\n"),
            _ => {}
        }
    }
    let (bounces, report) = audit(&noisy, Limits::default());
    assert_postfix_run(&bounces, &report);
    // Per 7 real lines: the binary line, the megabyte line, the truncated
    // stamp (71 real lines: i % 7 == 0, 3 and 4 occur 11, 10 and 10 times).
    assert_eq!(report.unparsable_lines, 11 + 10 + 10);
}

/// Tiny bounds: memory stays bounded, and what is forgotten is counted
/// instead of guessed.
#[test]
fn bounded_memory_forgets_and_counts() {
    let mut input = String::new();
    for i in 0..20_000 {
        input.push_str(&format!(
            "Nov 29 13:00:15 mx postfix/qmgr[1]: {i:011X}: from=<s{i}@flood.test>, size=1, nrcpt=1 (queue active)\n"
        ));
        if i % 3 == 0 {
            input.push_str(&format!(
                "Nov 29 13:00:15 mx postfix/smtp[2]: {i:011X}: to=<x@y.test>, relay=none, dsn=5.1.1, status=bounced (User unknown)\n"
            ));
        }
    }
    input.push_str(&String::from_utf8(read("postfix-maillog")).expect("UTF-8"));
    let limits = Limits {
        max_messages: 1000,
        horizon_lines: 10_000,
        max_domains: 100,
    };
    let (bounces, report) = audit(input.as_bytes(), limits);
    // The real run at the end is still complete.
    assert_postfix_run(&bounces, &report);
    // Every flooded message with a failed recipient and no bounce is
    // reported as incomplete, whether forgotten or still remembered.
    assert_eq!(report.incomplete, 20_000 / 3 + 1);
}

#[test]
fn sendmail_log_of_a_real_run() {
    let (bounces, report) = audit(&read("sendmail-maillog"), Limits::default());
    let got = by_queue_id(&bounces);
    let expect = [
        (
            "6ATD2DpE019328",
            "6ATD2DpF019328",
            "alice@a.test",
            Reason::UnknownUser,
        ),
        // `DSN: Service unavailable`: the reason comes from dsn=5.2.2.
        (
            "6ATD2Dua019337",
            "6ATD2Dub019337",
            "bob@b.test",
            Reason::OverQuota,
        ),
        (
            "6ATD2Dk6019340",
            "6ATD2Dk7019340",
            "carol@c.test",
            Reason::UnknownUser,
        ),
    ];
    assert_eq!(got.len(), expect.len(), "{bounces:#?}");
    for (qid, bid, sender, reason) in expect {
        let b = got[qid];
        assert_eq!(b.mta, Mta::Sendmail);
        assert_eq!(b.bounce_id.as_deref(), Some(bid));
        assert_eq!(b.sender.as_deref(), Some(sender));
        assert_eq!(b.reason, reason, "{b:?}");
        assert!(b.preventable);
        assert_eq!(b.host, "", "syslog(3) lines carry no host");
    }
    assert_eq!(
        got["6ATD2Dk6019340"].recipients,
        vec![(Reason::UnknownUser, 1), (Reason::OverQuota, 1)]
    );
    assert_eq!(report.bounces, 3);
    assert_eq!(report.by_mta[&Mta::Sendmail], 3);
    assert_eq!(report.unparsable_lines, 0);
}

#[test]
fn sendmail_dsn_without_its_recipient_lines_uses_the_dsn_text() {
    let lines = "\
Nov 29 13:01:58 mx sm-mta[17675]: 6ATD1wmm017675: from=<alice@a.test>, size=153, class=0, nrcpts=1, msgid=<x@y>, proto=ESMTP, daemon=MTA, relay=localhost [127.0.0.1]
Nov 29 13:01:58 mx sm-mta[17675]: 6ATD1wmm017675: 6ATD1wmn017675: DSN: User unknown
Nov 30 08:00:00 mx sm-mta[17700]: 6ATD1wzz017700: 6ATD1wzy017700: DSN: Cannot send message for 5 days
Nov 30 08:00:01 mx sm-mta[17700]: 6ATD1wzz017701: 6ATD1wzy017701: DSN: Return receipt
Nov 30 08:00:02 mx sm-mta[17700]: 6ATD1wzz017702: 6ATD1wzy017702: postmaster notify: User unknown
";
    let (bounces, report) = audit(lines.as_bytes(), Limits::default());
    assert_eq!(bounces.len(), 2, "{bounces:#?}");
    assert_eq!(bounces[0].reason, Reason::UnknownUser);
    assert_eq!(bounces[0].sender.as_deref(), Some("alice@a.test"));
    assert_eq!(bounces[1].reason, Reason::Expired);
    assert_eq!(bounces[1].sender, None);
    assert_eq!(report.by_sender_domain["(unknown)"], 1);
    assert_eq!(report.by_day["2026-11-30"].bounces, 1);
}

/// qmail-send as multilog writes it (TAI64N stamps), with splogger's
/// syslog form for the last message. Built from qmail-send.c's formats.
const QMAIL: &str = "\
@400000006a2aef1f0b5c3a1c new msg 131842
@400000006a2aef1f0b5c3b04 info msg 131842: bytes 2341 from <alice@a.test> qp 4711 uid 1001
@400000006a2aef1f0b5c3c08 starting delivery 17: msg 131842 to remote nobody@example.test
@400000006a2aef1f0b5c3d10 status: local 0/10 remote 1/20
@400000006a2aef1f0c5c3d10 delivery 17: failure: 192.0.2.1_does_not_like_recipient./Remote_host_said:_550_5.1.1_<nobody@example.test>:_no_such_user/Giving_up_on_192.0.2.1./
@400000006a2aef1f0c5c3e10 status: local 0/10 remote 0/20
@400000006a2aef1f0c5c4010 bounce msg 131842 qp 4712
@400000006a2aef1f0c5c4110 end msg 131842
@400000006a2aef1f0c5c4210 new msg 131850
@400000006a2aef1f0c5c4310 info msg 131850: bytes 3012 from <> qp 4712 uid 1002
@400000006a2aef1f0c5c4410 starting delivery 18: msg 131850 to remote alice@a.test
@400000006a2aef1f0d5c4410 delivery 18: success: 192.0.2.7_accepted_message./Remote_host_said:_250_ok/
@400000006a2aef1f0d5c4510 end msg 131850
@400000006a2aef200d5c4510 new msg 131851
@400000006a2aef200d5c4610 info msg 131851: bytes 900 from <> qp 4713 uid 1002
@400000006a2aef200d5c4710 starting delivery 19: msg 131851 to local bob@example.test
@400000006a2aef200e5c4710 delivery 19: failure: Sorry,_no_mailbox_here_by_that_name._(#5.1.1)/
@400000006a2aef200e5c4810 bounce msg 131851 qp 4714
@400000006a2aef200e5c4910 end msg 131851
Nov 29 13:10:00 mx qmail: 1795957800.150022 info msg 131860: bytes 700 from <carol@c.test> qp 4720 uid 1001
Nov 29 13:10:00 mx qmail: 1795957800.150122 starting delivery 20: msg 131860 to local carol2@example.test
Nov 29 13:10:00 mx qmail: 1795957800.150222 delivery 20: failure: The_users_mailfile_is_over_the_allowed_quota_(#5.2.2)/
Nov 29 13:10:00 mx qmail: 1795957800.150322 bounce msg 131860 qp 4721
Nov 29 13:10:00 mx qmail: 1795957800.150422 end msg 131860
";

#[test]
fn qmail_send_lines_from_its_source() {
    let (bounces, report) = audit(QMAIL.as_bytes(), Limits::default());
    assert_eq!(bounces.len(), 2, "{bounces:#?}");
    let b = &bounces[0];
    assert_eq!((b.mta, b.queue_id.as_str()), (Mta::Qmail, "131842"));
    assert_eq!(b.sender.as_deref(), Some("alice@a.test"));
    assert_eq!(b.reason, Reason::UnknownUser);
    assert!(b.preventable);
    assert_eq!(b.day.map(|d| d.to_string()).as_deref(), Some("2026-06-11"));
    let b = &bounces[1];
    assert_eq!(b.sender.as_deref(), Some("carol@c.test"));
    assert_eq!(b.reason, Reason::OverQuota);
    assert_eq!(b.day.map(|d| d.to_string()).as_deref(), Some("2026-11-29"));
    // The bounce of msg 131851 went to the postmaster (a double bounce).
    assert_eq!(report.bounces, 2);
    assert_eq!(report.by_mta[&Mta::Qmail], 2);
    assert_eq!(report.unparsable_lines, 0);
    assert_eq!(report.incomplete, 0);
}

#[test]
fn mixed_logs_of_three_mtas_add_up() {
    let mut all = read("postfix-maillog");
    all.extend(read("sendmail-maillog"));
    all.extend_from_slice(QMAIL.as_bytes());
    let (bounces, report) = audit(&all, Limits::default());
    assert_eq!(bounces.len(), 10);
    assert_eq!(report.bounces, 10);
    assert_eq!(report.preventable, 9);
    assert_eq!(report.by_mta.values().sum::<u64>(), 10);
    assert_eq!(report.by_reason.values().sum::<u64>(), 10);
    assert_eq!(report.by_sender_domain.values().sum::<u64>(), 10);
    assert_eq!(report.by_day.values().map(|d| d.bounces).sum::<u64>(), 10);
}
