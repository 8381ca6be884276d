//! Issue 4, end to end: recipients decided at `RCPT TO`.
//!
//! Real Postfix delivers the domain `mbox.test` to a real Dovecot over LMTP
//! (`virtual_mailbox_domains = mbox.test`, `virtual_transport =
//! lmtp:inet:127.0.0.1:PORT`) and runs nobounce as `smtpd_milters`; nobounce
//! asks the same Dovecot about each recipient, with the `rcpt_probe`
//! backend (an LMTP `RCPT TO` without `DATA`; Dovecot checks the quota at
//! `RCPT` with `lmtp_rcpt_check_quota = yes`) or the `quota_status` backend
//! (Dovecot's quota-status policy service). `virtual_mailbox_maps` is
//! empty, so Postfix itself accepts every address of `mbox.test` and every
//! refusal the client sees comes from nobounce (the tests check its reply
//! texts and Postfix's `milter-reject` log lines).
//!
//! What the tests show: a full mailbox, an unknown user and a mailbox too
//! small for the declared `SIZE=` are refused during the SMTP dialog, the
//! other recipients of the same message are delivered into their Maildir,
//! Postfix generates no bounce, and Dovecot never sees a delivery attempt
//! for the refused ones; while Dovecot is down recipients get `451 4.4.3`
//! (never an unchecked accept), and a retry after Dovecot is back is
//! delivered.
//!
//! Dovecot's LMTP does not advertise `SIZE`, so the `rcpt_probe` backend
//! cannot tell Dovecot the message size; `SIZE=` is checked by
//! `quota_status` (alone, or behind the probe in a chain).
//!
//! The SMTP client connects from 127.0.0.2 and nobounce checks SPF for it
//! (`trusted_networks = []`) against a DNS server in the test that passes
//! `sender.test` for 127.0.0.0/8: nobounce's DNS never leaves loopback.

use nobounce_test_support::dns::{TestDnsServer, TestRecord};
use nobounce_test_support::{
    bind_loopback, poll_until, require, wait_until, Background, DovecotBuilder, DovecotInstance,
    MessageBuilder, PostfixInstance, Reply, SmtpClient, SmtpSink, DEFAULT_TIMEOUT,
    QUOTA_GRACE_PERCENT,
};
use std::net::{IpAddr, Ipv4Addr};

const DOMAIN: &str = "mbox.test";
const SENDER: &str = "joe@sender.test";
/// A healthy mailbox (1 MiB quota, empty).
const ALICE: &str = "alice@mbox.test";
/// A mailbox of 20 kB that the tests fill over its quota.
const FULL: &str = "full@mbox.test";
const FULL_QUOTA: u64 = 20_000;
/// No such mailbox.
const NOBODY: &str = "nobody@mbox.test";
/// Two mailboxes of 50 kB; `HALF` gets about 20 kB of mail first.
const HALF: &str = "half@mbox.test";
const EMPTY: &str = "empty@mbox.test";
const SIZE_QUOTA: u64 = 50_000;

/// The test client connects from here, so that nobounce checks it (the
/// test configuration trusts no network).
const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// How nobounce asks Dovecot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    /// `rcpt_probe` over LMTP alone.
    RcptProbe,
    /// `quota_status` alone (Dovecot answers `550 5.1.1` for unknown users).
    QuotaStatus,
    /// The LMTP probe for existence, then quota-status for quota and
    /// `SIZE=` (Dovecot answers `DUNNO` for unknown users, its usual
    /// setting).
    ProbeThenQuotaStatus,
}

/// nobounce's answer cache of each backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cache {
    /// The defaults (deliverable 60 s, unknown 10 min, over quota 30 s).
    /// Fine where every address is asked once, or where a later question
    /// cannot be answered from an earlier one (see the SIZE test).
    Default,
    /// `capacity = 0`: every `RCPT` reaches Dovecot.
    Off,
}

struct Site {
    dovecot: DovecotInstance,
    postfix: PostfixInstance,
    /// Postfix's relayhost: a bounce to the sender would end up here.
    sink: SmtpSink,
    _milter: Background<Result<(), nobounce_server::RunError>>,
    _dns: TestDnsServer,
}

fn milter_config(
    dns: &TestDnsServer,
    dovecot: &DovecotInstance,
    backend: Backend,
    over_quota: &str,
    cache: Cache,
) -> nobounce_config::Config {
    let chain = match backend {
        Backend::RcptProbe => r#"["lmtp"]"#,
        Backend::QuotaStatus => r#"["quota"]"#,
        Backend::ProbeThenQuotaStatus => r#"["lmtp", "quota"]"#,
    };
    let cache = match cache {
        Cache::Default => "",
        Cache::Off => "capacity = 0\n",
    };
    let toml = format!(
        r#"
[dns]
nameservers = ["{dns}"]
timeout_secs = 1
attempts = 1

[spf]
trusted_networks = []
timeout_secs = 3

[store]
control_socket = ""

[recipients]
over_quota = "{over_quota}"

[[recipients.routes]]
domains = ["{DOMAIN}"]
chain = {chain}

[recipients.backends.lmtp]
type = "rcpt_probe"
address = "{lmtp}"
timeout = "5s"

[recipients.backends.lmtp.cache]
{cache}
[recipients.backends.quota]
type = "quota_status"
address = "{quota_status}"
timeout = "5s"

[recipients.backends.quota.cache]
{cache}
"#,
        dns = dns.addr(),
        lmtp = dovecot.lmtp_addr(),
        quota_status = dovecot.quota_status_addr(),
    );
    nobounce_config::Config::from_toml_str(&toml)
        .unwrap_or_else(|e| panic!("milter config: {e}\n{toml}"))
}

async fn site(dovecot: DovecotBuilder, backend: Backend, over_quota: &str, cache: Cache) -> Site {
    let dovecot = match backend {
        Backend::ProbeThenQuotaStatus => dovecot.quota_status_nouser("DUNNO"),
        Backend::RcptProbe | Backend::QuotaStatus => dovecot,
    };
    let dovecot = dovecot.start().await.expect("dovecot starts");
    let dns = TestDnsServer::start([TestRecord::txt(
        "sender.test",
        "v=spf1 ip4:127.0.0.0/8 -all",
        300,
    )])
    .await
    .expect("DNS server");
    let config = milter_config(&dns, &dovecot, backend, over_quota, cache);
    let listener = bind_loopback().await.expect("bind milter");
    let milter_addr = listener.local_addr().expect("milter address");
    let milter = Background::spawn(|shutdown| nobounce_server::run_tcp(listener, config, shutdown));
    let sink = SmtpSink::start().await.expect("sink");
    let postfix = PostfixInstance::builder()
        .milter(milter_addr)
        .lmtp(dovecot.lmtp_addr(), &[DOMAIN])
        .relay_to(sink.addr())
        .start()
        .await
        .expect("postfix starts");
    let main_cf = postfix.main_cf();
    assert!(
        main_cf.contains("\nvirtual_mailbox_maps = \n"),
        "Postfix must leave the recipient decision to nobounce:\n{main_cf}"
    );
    Site {
        dovecot,
        postfix,
        sink,
        _milter: milter,
        _dns: dns,
    }
}

async fn client(site: &Site) -> SmtpClient {
    let mut c = SmtpClient::connect_from(CLIENT, site.postfix.smtp_addr())
        .await
        .expect("connect");
    c.greeting().assert_code(220);
    c.ehlo("client.sender.test")
        .await
        .expect("EHLO")
        .assert_code(250);
    c
}

fn message(to: &str, subject: &str, body: &str) -> Vec<u8> {
    MessageBuilder::new()
        .from(SENDER)
        .to(to)
        .subject(subject)
        .body(body)
        .build()
}

fn subject_of(message: &[u8]) -> Option<String> {
    nobounce_test_support::header_value(message, "Subject")
}

/// Waits until `address`'s Maildir holds a message with `subject` and
/// returns it.
async fn wait_for_delivery(dovecot: &DovecotInstance, address: &str, subject: &str) -> Vec<u8> {
    poll_until(
        &format!("{subject:?} in the Maildir of {address}"),
        DEFAULT_TIMEOUT,
        || {
            let found = dovecot.messages(address).map(|messages| {
                messages
                    .into_iter()
                    .find(|m| subject_of(m).as_deref() == Some(subject))
            });
            async move { found }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n--- Dovecot log ---\n{}", dovecot.log()))
}

/// Waits for Dovecot's log line of a delivery to `address` after `mark`.
async fn wait_for_saved_line(dovecot: &DovecotInstance, address: &str, mark: u64, count: usize) {
    wait_until(
        &format!("{count} 'saved mail to INBOX' for {address} in Dovecot's log"),
        DEFAULT_TIMEOUT,
        || {
            let saved = dovecot
                .mail_log_lines(address, mark)
                .iter()
                .filter(|l| l.contains("saved mail to INBOX"))
                .count();
            async move { Ok(saved >= count) }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n--- Dovecot log ---\n{}", dovecot.log()));
}

/// No bounce anywhere: Postfix's queue is empty (nothing deferred, no
/// notification waiting), its log shows none, and the relayhost got none.
async fn assert_no_backscatter(site: &Site) {
    site.postfix.flush().await.expect("flush");
    site.postfix
        .wait_until_queue_empty(DEFAULT_TIMEOUT)
        .await
        .expect("queue empties");
    site.postfix.assert_no_bounce();
    assert!(!site.sink.has_bounce(), "a bounce reached the relayhost");
    assert!(
        site.sink.messages().is_empty(),
        "nothing is relayed off mbox.test: {:?}",
        site.sink.messages()
    );
}

/// Postfix logged that the milter (nobounce), not Postfix itself, refused
/// `rcpt` with `reply`.
async fn assert_milter_rejected(postfix: &PostfixInstance, rcpt: &str, reply: &Reply) {
    let wire = reply.to_string();
    let lines = || -> Vec<String> {
        postfix
            .log_lines_containing("milter-reject: RCPT from")
            .into_iter()
            .filter(|l| l.contains(&format!("to=<{rcpt}>")))
            .collect()
    };
    // Postfix writes its log asynchronously (postlogd): wait for the line.
    let logged = wait_until("the milter-reject log line", DEFAULT_TIMEOUT, || {
        let found = lines().iter().any(|l| l.contains(&wire));
        async move { Ok(found) }
    })
    .await;
    assert!(
        logged.is_ok(),
        "no milter-reject of {rcpt} with {wire:?} in Postfix's log: {:#?}\n{}",
        lines(),
        postfix.log()
    );
}

/// Expected reply to a full mailbox.
fn over_quota_reply(over_quota: &str) -> (u16, &'static str) {
    match over_quota {
        "452" => (452, "4.2.2"),
        "552" => (552, "5.2.2"),
        other => panic!("no such over_quota setting {other:?}"),
    }
}

/// One message to a full mailbox, an unknown user and a healthy mailbox:
/// the first two are refused at `RCPT TO`, the third gets the message.
async fn full_unknown_and_healthy(backend: Backend, over_quota: &str) {
    // Every address is asked once, so the default caches change nothing.
    let site = site(
        DovecotInstance::builder()
            .user(ALICE)
            .user_with_quota(FULL, FULL_QUOTA),
        backend,
        over_quota,
        Cache::Default,
    )
    .await;
    let dovecot = &site.dovecot;
    // Real deliveries straight over LMTP until Dovecot itself refuses
    // FULL at RCPT.
    let filled = dovecot.fill_over_quota(FULL).await.expect("fill FULL");
    assert!(filled > 0);
    let (used, _) = dovecot.quota_usage(FULL).expect("maildirsize");
    assert!(used > FULL_QUOTA, "{FULL} uses {used} of {FULL_QUOTA}");
    let mark = dovecot.log_mark();

    let mut c = client(&site).await;
    c.mail_from(SENDER, &[])
        .await
        .expect("MAIL")
        .assert_code(250);

    let full = c.rcpt_to(FULL).await.expect("RCPT full");
    let (code, status) = over_quota_reply(over_quota);
    full.assert_code(code);
    assert_eq!(full.text(), format!("{status} Mailbox full"), "{full}");

    let nobody = c.rcpt_to(NOBODY).await.expect("RCPT nobody");
    nobody.assert_code(550);
    // nobounce's text; Postfix's own would be "5.1.1 <nobody@mbox.test>:
    // Recipient address rejected: User unknown in virtual mailbox table".
    assert_eq!(nobody.text(), "5.1.1 No such user here", "{nobody}");

    c.rcpt_to(ALICE).await.expect("RCPT alice").assert_code(250);
    let subject = format!("for alice via {backend:?}, {over_quota}");
    c.data(&message(ALICE, &subject, "Only Alice gets this.\n"))
        .await
        .expect("DATA")
        .assert_code(250);
    c.quit().await.expect("QUIT");

    // Delivered to the healthy mailbox, through Postfix and nobounce.
    let delivered = wait_for_delivery(dovecot, ALICE, &subject).await;
    let spf =
        nobounce_test_support::header_value(&delivered, "Received-SPF").expect("Received-SPF");
    assert!(spf.starts_with("pass "), "{spf}");
    let to = nobounce_test_support::header_value(&delivered, "Delivered-To");
    assert_eq!(to.as_deref(), Some(ALICE));
    wait_for_saved_line(dovecot, ALICE, mark, 1).await;

    assert_milter_rejected(&site.postfix, FULL, &full).await;
    assert_milter_rejected(&site.postfix, NOBODY, &nobody).await;
    assert_no_backscatter(&site).await;

    // Dovecot never got the message for the refused recipients: no
    // delivery attempt is logged ("saved mail", "save failed: Quota
    // exceeded"), the full mailbox holds just what filled it, and the
    // unknown user has no Maildir.
    assert_eq!(
        dovecot.mail_log_lines(FULL, mark),
        Vec::<String>::new(),
        "{}",
        dovecot.log_since(mark)
    );
    assert_eq!(dovecot.mail_log_lines(NOBODY, mark), Vec::<String>::new());
    // The same check sees the deliveries that filled FULL before the mark.
    let fill_lines = dovecot.mail_log_lines(FULL, 0);
    assert_eq!(fill_lines.len(), filled, "{fill_lines:#?}");
    assert!(fill_lines.iter().all(|l| l.contains("saved mail to INBOX")));
    let alice_lines = dovecot.mail_log_lines(ALICE, mark);
    assert_eq!(alice_lines.len(), 1, "{alice_lines:#?}");
    assert_eq!(dovecot.messages(FULL).expect("read Maildir").len(), filled);
    assert_eq!(dovecot.messages(ALICE).expect("read Maildir").len(), 1);
    assert!(!dovecot.maildir(NOBODY).exists());
}

#[tokio::test]
async fn rcpt_probe_refuses_full_and_unknown_at_rcpt_and_delivers_to_healthy() {
    require!("postfix", "dovecot");
    full_unknown_and_healthy(Backend::RcptProbe, "452").await;
}

#[tokio::test]
async fn rcpt_probe_refuses_full_mailbox_with_552_when_configured() {
    require!("postfix", "dovecot");
    full_unknown_and_healthy(Backend::RcptProbe, "552").await;
}

#[tokio::test]
async fn quota_status_refuses_full_and_unknown_at_rcpt_and_delivers_to_healthy() {
    require!("postfix", "dovecot");
    full_unknown_and_healthy(Backend::QuotaStatus, "452").await;
}

/// A declared `SIZE=` larger than the room left in a mailbox that is not
/// full is refused at `RCPT TO`; the same size fits an empty mailbox of the
/// same quota, and a small message fits the first one.
async fn size_larger_than_room_left(backend: Backend) {
    // Caches may stay on: "over quota at size S" only answers sizes >= S,
    // so the small message below is asked afresh.
    let site = site(
        DovecotInstance::builder()
            .user_with_quota(HALF, SIZE_QUOTA)
            .user_with_quota(EMPTY, SIZE_QUOTA),
        backend,
        "452",
        Cache::Default,
    )
    .await;
    let dovecot = &site.dovecot;
    let before_old_mail = dovecot.log_mark();
    // About 20 kB of real mail into HALF.
    let stored = dovecot
        .deliver(
            HALF,
            &message(
                HALF,
                "old mail",
                &format!("{}\n", "y".repeat(70)).repeat(280),
            ),
        )
        .await
        .expect("LMTP delivery");
    stored.assert_code(250);
    // Dovecot logs the delivery a moment after its reply: wait for that
    // line, so that it does not count as a delivery after `mark` below.
    wait_for_saved_line(dovecot, HALF, before_old_mail, 1).await;
    let (used, _) = dovecot.quota_usage(HALF).expect("maildirsize");
    let room = SIZE_QUOTA - used;
    // Dovecot lets a message exceed the room by the grace; stay well
    // beyond it, and below the quota itself.
    let too_big = room + SIZE_QUOTA * QUOTA_GRACE_PERCENT / 100 + 2_000;
    assert!(
        too_big < SIZE_QUOTA,
        "used {used}: {too_big} must fit an empty mailbox"
    );
    let mark = dovecot.log_mark();

    let mut c = client(&site).await;
    let size = format!("SIZE={too_big}");
    c.mail_from(SENDER, &[&size])
        .await
        .expect("MAIL")
        .assert_code(250);
    let half = c.rcpt_to(HALF).await.expect("RCPT half");
    half.assert_code(452);
    assert_eq!(half.text(), "4.2.2 Mailbox full", "{half}");
    c.rcpt_to(EMPTY).await.expect("RCPT empty").assert_code(250);
    // Send as much as was declared.
    let big_body =
        format!("{}\n", "z".repeat(70)).repeat(usize::try_from(too_big / 72).expect("fits"));
    c.data(&message(EMPTY, "big one", &big_body))
        .await
        .expect("DATA")
        .assert_code(250);

    let small = format!("SIZE={}", 1_000);
    c.mail_from(SENDER, &[&small])
        .await
        .expect("MAIL")
        .assert_code(250);
    c.rcpt_to(HALF)
        .await
        .expect("RCPT half, small")
        .assert_code(250);
    c.data(&message(HALF, "small one", "Fits.\n"))
        .await
        .expect("DATA")
        .assert_code(250);
    c.quit().await.expect("QUIT");

    wait_for_delivery(dovecot, EMPTY, "big one").await;
    wait_for_delivery(dovecot, HALF, "small one").await;
    wait_for_saved_line(dovecot, HALF, mark, 1).await;
    assert_milter_rejected(&site.postfix, HALF, &half).await;
    assert_no_backscatter(&site).await;
    // HALF got the small message only: one delivery after the mark, and
    // no attempt with the big one.
    let half_lines = dovecot.mail_log_lines(HALF, mark);
    assert_eq!(half_lines.len(), 1, "{half_lines:#?}");
    let subjects: Vec<Option<String>> = dovecot
        .messages(HALF)
        .expect("read Maildir")
        .iter()
        .map(|m| subject_of(m))
        .collect();
    assert_eq!(subjects.len(), 2, "{subjects:?}");
    assert!(subjects.contains(&Some("old mail".into())), "{subjects:?}");
    assert!(subjects.contains(&Some("small one".into())), "{subjects:?}");
}

#[tokio::test]
async fn quota_status_refuses_declared_size_larger_than_room_left() {
    require!("postfix", "dovecot");
    size_larger_than_room_left(Backend::QuotaStatus).await;
}

#[tokio::test]
async fn probe_then_quota_status_refuses_declared_size_larger_than_room_left() {
    require!("postfix", "dovecot");
    size_larger_than_room_left(Backend::ProbeThenQuotaStatus).await;
}

/// Dovecot down: `451 4.4.3` at `RCPT TO`, nothing accepted; Dovecot back:
/// the client's retry is accepted and delivered.
async fn outage_and_recovery(backend: Backend) {
    // The cache is off: with the defaults, the "deliverable" answer of the
    // first message would answer for ALICE during the outage (60 s), and
    // the RCPT would be accepted; the message would then wait in Postfix's
    // queue until Dovecot is back, which is fine but not what this test
    // looks at. Errors are never cached, so the retry after the outage
    // asks Dovecot again either way.
    let mut site = site(
        DovecotInstance::builder().user(ALICE),
        backend,
        "452",
        Cache::Off,
    )
    .await;
    let mark = site.dovecot.log_mark();

    // Before the outage: delivered.
    let mut c = client(&site).await;
    let t = c
        .send_mail(SENDER, &[ALICE], &message(ALICE, "before", "1\n"))
        .await
        .expect("transaction");
    assert!(t.accepted(), "{t:?}");
    c.quit().await.expect("QUIT");
    wait_for_delivery(&site.dovecot, ALICE, "before").await;
    site.postfix
        .wait_until_queue_empty(DEFAULT_TIMEOUT)
        .await
        .expect("queue empties");

    site.dovecot.stop().await.expect("dovecot stops");
    assert!(
        tokio::net::TcpStream::connect(site.dovecot.lmtp_addr())
            .await
            .is_err(),
        "LMTP still answers after stop"
    );
    let mut c = client(&site).await;
    c.mail_from(SENDER, &[])
        .await
        .expect("MAIL")
        .assert_code(250);
    let down = c.rcpt_to(ALICE).await.expect("RCPT during outage");
    down.assert_code(451);
    assert_eq!(
        down.text(),
        "4.4.3 Recipient lookup failed temporarily, try again later",
        "{down}"
    );
    c.rset().await.expect("RSET").assert_code(250);
    c.quit().await.expect("QUIT");
    assert_milter_rejected(&site.postfix, ALICE, &down).await;
    // Nothing was accepted, so nothing waits in the queue.
    assert!(
        site.postfix.queue_is_empty().await.expect("postqueue"),
        "{:?}",
        site.postfix.queued_messages().await
    );

    site.dovecot.start().await.expect("dovecot restarts");
    // The client retries, as a sender's MTA does after a 4xx.
    let mut c = client(&site).await;
    let t = c
        .send_mail(SENDER, &[ALICE], &message(ALICE, "retried", "2\n"))
        .await
        .expect("transaction");
    assert!(t.accepted(), "{t:?}");
    c.quit().await.expect("QUIT");
    wait_for_delivery(&site.dovecot, ALICE, "retried").await;
    wait_for_saved_line(&site.dovecot, ALICE, mark, 2).await;
    assert_eq!(site.dovecot.messages(ALICE).expect("Maildir").len(), 2);
    assert_no_backscatter(&site).await;
}

#[tokio::test]
async fn rcpt_probe_tempfails_while_dovecot_is_down_and_accepts_the_retry() {
    require!("postfix", "dovecot");
    outage_and_recovery(Backend::RcptProbe).await;
}

#[tokio::test]
async fn quota_status_tempfails_while_dovecot_is_down_and_accepts_the_retry() {
    require!("postfix", "dovecot");
    outage_and_recovery(Backend::QuotaStatus).await;
}
