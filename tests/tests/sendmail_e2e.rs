//! Issue 12, end to end: real Sendmail 8.17 with nobounce as its milter.
//!
//! Sendmail conflicts with Postfix, so it is never installed: each test
//! unpacks the cached .debs and runs a private `sendmail -bD` on loopback
//! (see `SendmailInstance`), with `INPUT_MAIL_FILTER` pointing at an
//! in-process nobounce and every accepted message relayed to a sink. A test
//! DNS server serves the SPF zones, and a map file lists the users of
//! `example.test`.
//!
//! The client connects from 127.0.0.2 and nobounce trusts no network, so it
//! checks every client. Sendmail differs from Postfix in what the client
//! sees, and the tests expect it:
//!
//! - 450, 550 and 553 replies get `<address>... ` after the enhanced status
//!   code, milter replies included (`550 5.1.1 <nobody@example.test>... No
//!   such user here`);
//! - a `%` in a milter's reply text must come as `%%`: a lone one makes
//!   Sendmail answer its own `550 5.7.1 Command rejected` instead;
//! - Sendmail sends no `{client_addr}` unless the milter asks for it
//!   (nobounce does; for TCP clients it uses the CONNECT event's address).

use nobounce_core::dictionary::BAN_REASON;
use nobounce_test_support::dns::{TestDnsServer, TestRecord};
use nobounce_test_support::{
    bind_loopback, require, Background, MessageBuilder, Reply, SendmailInstance, SmtpClient,
    SmtpSink, DEFAULT_TIMEOUT, SENDMAIL_HOSTNAME,
};
use std::net::{IpAddr, Ipv4Addr};
use tempfile::TempDir;

/// The test client connects from here, so nobounce checks it (loopback is
/// trusted by default; the test configuration trusts nothing).
const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// The users of `example.test` in the map file.
const ALICE: &str = "alice@example.test";
const BOB: &str = "bob@example.test";

/// Distinct unknown recipients that ban a client.
const THRESHOLD: usize = 3;

/// nobounce's default text for an unknown recipient.
const UNKNOWN_TEXT: &str = "No such user here";

struct Site {
    sendmail: SendmailInstance,
    sink: SmtpSink,
    _milter: Background<Result<(), nobounce_server::RunError>>,
    _dns: TestDnsServer,
    _map: TempDir,
}

/// DNS, map file, nobounce (with `unknown_text` for unknown recipients),
/// sink and Sendmail.
async fn site(unknown_text: &str) -> Site {
    let dns = TestDnsServer::start([
        TestRecord::txt("pass.test", "v=spf1 ip4:127.0.0.0/8 -all", 300),
        TestRecord::txt("fail.test", "v=spf1 -all", 300),
        TestRecord::txt("exp.test", "v=spf1 -all exp=why.exp.test", 300),
        // An SPF macro-string: `%%` is one `%`, `%{i}` the client's address.
        TestRecord::txt("why.exp.test", "Go away %{i}, 100%% not welcome", 300),
    ])
    .await
    .expect("DNS server");
    let map = tempfile::tempdir().expect("temp dir");
    let map_file = map.path().join("recipients");
    std::fs::write(&map_file, format!("{ALICE}\n{BOB}\n")).expect("map file");
    let config = nobounce_config::Config::from_toml_str(&format!(
        r#"
[dns]
nameservers = ["{dns}"]
timeout_secs = 1
attempts = 1

[spf]
trusted_networks = []
timeout_secs = 3
headers = ["Received-SPF", "Authentication-Results"]

[recipients]
unknown_text = "{unknown_text}"
routes = [{{ domains = ["example.test"], chain = ["users"] }}]

[recipients.backends.users]
type = "map_file"
path = "{map}"

[dictionary]
threshold = {THRESHOLD}
window_secs = 600
ban_secs = 600
escalate = false

[store]
control_socket = ""
"#,
        dns = dns.addr(),
        map = map_file.display(),
    ))
    .expect("config");
    let listener = bind_loopback().await.expect("bind milter");
    let milter_addr = listener.local_addr().expect("milter address");
    let milter = Background::spawn(|shutdown| nobounce_server::run_tcp(listener, config, shutdown));
    let sink = SmtpSink::start().await.expect("sink");
    let sendmail = SendmailInstance::builder()
        .milter(milter_addr)
        .relay_to(sink.addr())
        .start()
        .await
        .expect("sendmail starts");
    Site {
        sendmail,
        sink,
        _milter: milter,
        _dns: dns,
        _map: map,
    }
}

/// Connects from [`CLIENT`] and says EHLO.
async fn client(site: &Site) -> SmtpClient {
    let mut c = SmtpClient::connect_from(CLIENT, site.sendmail.smtp_addr())
        .await
        .expect("connect");
    c.greeting().assert_code(220);
    c.ehlo("client.pass.test")
        .await
        .expect("EHLO")
        .assert_code(250);
    c
}

/// Asserts a refusal as Sendmail relays nobounce's reply: `code`, then
/// `status`, Sendmail's `<address>... ` and nobounce's `text`.
#[track_caller]
fn assert_refused(reply: &Reply, code: u16, status: &str, address: &str, text: &str) {
    assert_eq!(
        (reply.code, reply.enhanced_status()),
        (code, Some(status)),
        "{reply}"
    );
    assert_eq!(
        reply.text(),
        format!("{status} <{address}>... {text}"),
        "{reply}"
    );
}

/// Nothing is left in Sendmail's queue, nothing bounced.
async fn assert_no_backscatter(site: &Site) {
    site.sendmail
        .wait_until_queue_empty(DEFAULT_TIMEOUT)
        .await
        .expect("queue empties");
    assert!(!site.sink.has_bounce(), "a bounce reached the sink");
    site.sendmail.assert_no_bounce();
}

#[tokio::test]
async fn spf_fail_is_rejected_at_mail_from_with_550_5_7_23() {
    require!("sendmail");
    let site = site(UNKNOWN_TEXT).await;
    let mut c = client(&site).await;
    let reply = c.mail_from("joe@fail.test", &[]).await.expect("MAIL");
    assert_eq!((reply.code, reply.enhanced_status()), (550, Some("5.7.23")));
    assert!(
        reply.text().starts_with("5.7.23 <joe@fail.test>... "),
        "{reply}"
    );
    assert!(
        reply.text().contains("fail.test does not allow 127.0.0.2"),
        "{reply}"
    );
    // The refused sender cannot go on.
    let rcpt = c.rcpt_to(ALICE).await.expect("RCPT");
    assert_eq!(rcpt.code, 503, "{rcpt}");
    c.quit().await.expect("QUIT");
    site.sendmail
        .wait_for_log(
            "Milter: from=<joe@fail.test>, reject=550 5.7.23",
            DEFAULT_TIMEOUT,
        )
        .await
        .expect("Sendmail logs the milter's reject");
    assert_no_backscatter(&site).await;
    assert!(site.sink.messages().is_empty());
}

#[tokio::test]
async fn spf_pass_is_delivered_with_received_spf() {
    require!("sendmail");
    let site = site(UNKNOWN_TEXT).await;
    let mut c = client(&site).await;
    let message = MessageBuilder::new()
        .from("joe@pass.test")
        .to(ALICE)
        .subject("hello")
        .body("hi\r\n")
        .build();
    let t = c
        .send_mail("joe@pass.test", &[ALICE], &message)
        .await
        .expect("transaction");
    assert!(t.accepted(), "{t:?}");
    c.quit().await.expect("QUIT");

    let received = site
        .sink
        .wait_for_messages(1, DEFAULT_TIMEOUT)
        .await
        .expect("delivered to the sink");
    assert_eq!(received.len(), 1);
    let msg = &received[0];
    assert_eq!(msg.sender, "joe@pass.test");
    assert_eq!(msg.recipients, [ALICE]);
    let rs = msg.header("Received-SPF").expect("Received-SPF header");
    assert!(rs.starts_with("pass "), "{rs}");
    assert!(rs.contains("client-ip=127.0.0.2;"), "{rs}");
    assert!(rs.contains("envelope-from=\"joe@pass.test\""), "{rs}");
    // The authserv-id is Sendmail's `j` macro.
    let ar = msg.header_all("Authentication-Results");
    assert!(
        ar.contains(&format!(
            "{SENDMAIL_HOSTNAME}; spf=pass smtp.mailfrom=joe@pass.test"
        )),
        "{ar:?}"
    );
    assert_no_backscatter(&site).await;
}

#[tokio::test]
async fn unknown_recipient_is_refused_with_550_5_1_1_and_the_others_delivered() {
    require!("sendmail");
    let site = site(UNKNOWN_TEXT).await;
    let mut c = client(&site).await;
    c.mail_from("joe@pass.test", &[])
        .await
        .expect("MAIL")
        .assert_code(250);
    let nobody = c.rcpt_to("nobody@example.test").await.expect("RCPT");
    assert_refused(&nobody, 550, "5.1.1", "nobody@example.test", UNKNOWN_TEXT);
    c.rcpt_to(BOB).await.expect("RCPT").assert_code(250);
    let message = MessageBuilder::new()
        .from("joe@pass.test")
        .to(BOB)
        .subject("for bob")
        .body("hi\r\n")
        .build();
    c.data(&message).await.expect("DATA").assert_code(250);
    c.quit().await.expect("QUIT");

    let received = site
        .sink
        .wait_for_messages(1, DEFAULT_TIMEOUT)
        .await
        .expect("delivered to the sink");
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].recipients, [BOB]);
    site.sendmail
        .wait_for_log(
            "Milter: to=<nobody@example.test>, reject=550 5.1.1",
            DEFAULT_TIMEOUT,
        )
        .await
        .expect("Sendmail logs the milter's reject");
    assert_no_backscatter(&site).await;
}

#[tokio::test]
async fn dictionary_attack_is_banned_with_421() {
    require!("sendmail");
    let site = site(UNKNOWN_TEXT).await;
    let mut c = client(&site).await;
    c.mail_from("joe@pass.test", &[])
        .await
        .expect("MAIL")
        .assert_code(250);
    for i in 1..=THRESHOLD {
        let rcpt = format!("probe{i}@example.test");
        let reply = c.rcpt_to(&rcpt).await.expect("RCPT");
        assert_refused(&reply, 550, "5.1.1", &rcpt, UNKNOWN_TEXT);
    }
    // The threshold is reached: the session's next command gets the ban,
    // and Sendmail hangs up.
    let reply = c.rcpt_to(ALICE).await.expect("RCPT after the ban");
    assert_ban(&reply);
    assert!(c.noop().await.is_err(), "Sendmail went on after the 421");

    // A new session: greeting and EHLO as usual, the ban at MAIL FROM.
    let mut c = client(&site).await;
    let reply = c.mail_from("joe@pass.test", &[]).await.expect("MAIL");
    assert_ban(&reply);
    assert!(c.noop().await.is_err(), "Sendmail went on after the 421");

    assert_no_backscatter(&site).await;
    assert!(site.sink.messages().is_empty());
}

/// nobounce's ban of [`CLIENT`]: `421 4.7.0 127.0.0.2 banned until
/// <UTC>Z: <reason>`, without Sendmail's address prefix (only 450, 550 and
/// 553 get one).
#[track_caller]
fn assert_ban(reply: &Reply) {
    assert_eq!(
        (reply.code, reply.enhanced_status()),
        (421, Some("4.7.0")),
        "{reply}"
    );
    let text = reply.text();
    let rest = text
        .strip_prefix(&format!("4.7.0 {CLIENT} banned until "))
        .unwrap_or_else(|| panic!("not a ban of {CLIENT}: {reply}"));
    assert!(rest.ends_with(&format!("Z: {BAN_REASON}")), "{reply}");
}

/// Sendmail takes a milter's reply text as a printf format: nobounce sends
/// `%%` for every `%`, and the client sees one. (A lone `%` would make
/// Sendmail replace the whole reply by `550 5.7.1 Command rejected`.)
#[tokio::test]
async fn percent_signs_in_reply_texts_reach_the_client_unchanged() {
    require!("sendmail");
    let site = site("No such user here (100% sure)").await;
    let mut c = client(&site).await;

    // A configured reply text.
    c.mail_from("joe@pass.test", &[])
        .await
        .expect("MAIL")
        .assert_code(250);
    let reply = c.rcpt_to("nobody@example.test").await.expect("RCPT");
    assert_refused(
        &reply,
        550,
        "5.1.1",
        "nobody@example.test",
        "No such user here (100% sure)",
    );
    c.rset().await.expect("RSET").assert_code(250);

    // The sender domain's SPF explanation.
    let reply = c.mail_from("joe@exp.test", &[]).await.expect("MAIL");
    assert_eq!((reply.code, reply.enhanced_status()), (550, Some("5.7.23")));
    assert!(
        reply.text().contains("Go away 127.0.0.2, 100% not welcome"),
        "{reply}"
    );
    c.quit().await.expect("QUIT");
    assert_no_backscatter(&site).await;
}
