//! Issue 5, end to end: dictionary-attack bans shared by two MX hosts through
//! Redis.
//!
//! Each test runs one `redis-server` and two "MX hosts": two nobounce milters
//! (in-process, `[store] backend = "redis"`, same Redis and prefix), each
//! behind its own Postfix. Both Postfix relay accepted mail to one sink. A
//! test DNS server on loopback serves SPF for the sender (`pass`), and a map
//! file lists the known users of `example.test`, so that any other address
//! there gets `550 5.1.1` from nobounce and counts as a probe.
//!
//! Clients appear as distinct loopback addresses: 127.0.0.2 attacks,
//! 127.0.0.3 is a clean sender, 127.0.0.4 attacks after a Redis restart.
//! (Loopback is trusted by default, and trusted clients are exempt from the
//! dictionary policy; these configurations trust nothing.)
//!
//! Every test runs on one thread (`#[tokio::test]`'s current-thread
//! runtime): the milters, the DNS server and the sink are tasks of the test's
//! runtime, which lets the outage test capture the milters' log events of
//! its own thread.

use nobounce_config::Config;
use nobounce_core::store::StateStore;
use nobounce_core::{clock::rfc3339_utc, dictionary::BAN_REASON};
use nobounce_server::{control, Service};
use nobounce_store_redis::{RedisConfig, RedisStore};
use nobounce_test_support::dns::{TestDnsServer, TestRecord};
use nobounce_test_support::{
    bind_loopback, poll_until, require, Background, LogCapture, MessageBuilder, PostfixInstance,
    RedisInstance, Reply, SmtpClient, SmtpSink, DEFAULT_TIMEOUT,
};
use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, SystemTime};
use tempfile::TempDir;

/// Probes for addresses: the dictionary attacker.
const ATTACKER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
/// Sends normal mail and must never be affected.
const CLEAN: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
/// A second attacker, after Redis came back.
const LATE_ATTACKER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 4));

/// Distinct unknown recipients within the window that ban a client.
const THRESHOLD: usize = 10;
/// The one mailbox of `example.test` (besides `bob`) in the map file.
const KNOWN: &str = "alice@example.test";
/// Envelope sender and HELO name; SPF passes for loopback clients.
const SENDER: &str = "news@sender.test";
const HELO: &str = "client.sender.test";

/// One MX host: a nobounce milter and the Postfix that uses it.
struct Host {
    name: &'static str,
    _milter: Background<std::io::Result<()>>,
    postfix: PostfixInstance,
}

/// Two MX hosts sharing one Redis, a DNS server and a sink.
struct Site {
    redis: RedisInstance,
    redis_config: RedisConfig,
    sink: SmtpSink,
    a: Host,
    b: Host,
    _dns: TestDnsServer,
    _map: TempDir,
}

fn milter_config(dns: SocketAddr, map: &Path, redis: &RedisConfig, ban_secs: u64) -> Config {
    let text = format!(
        r#"
[dns]
nameservers = ["{dns}"]
timeout_secs = 1
attempts = 1

[spf]
# Loopback is trusted by default, and trusted clients are exempt from the
# dictionary policy: trust nothing, and serve SPF for the sender instead.
trusted_networks = []
timeout_secs = 3

[recipients]
routes = [{{ domains = ["example.test"], chain = ["users"] }}]

[recipients.backends.users]
type = "map_file"
path = "{map}"

[dictionary]
threshold = {THRESHOLD}
window_secs = 600
ban_secs = {ban_secs}
escalate = false

[store]
backend = "redis"
control_socket = ""

[store.redis]
url = "{url}"
prefix = "{prefix}"
timeout = "{timeout}ms"
retry = "{retry}ms"
"#,
        map = map.display(),
        url = redis.url,
        prefix = redis.prefix,
        timeout = redis.timeout.as_millis(),
        retry = redis.retry.as_millis(),
    );
    Config::from_toml_str(&text).expect("valid test configuration")
}

async fn host(name: &'static str, config: Config, sink: &SmtpSink) -> Host {
    let milter = Service::new(config).expect("milter setup");
    let listener = bind_loopback().await.expect("bind milter");
    let milter_addr = listener.local_addr().expect("milter address");
    let task =
        Background::spawn(|shutdown| async move { milter.serve_milter(listener, shutdown).await });
    let postfix = PostfixInstance::builder()
        .milter(milter_addr)
        .relay_to(sink.addr())
        .start()
        .await
        .expect("postfix starts");
    Host {
        name,
        _milter: task,
        postfix,
    }
}

/// Redis, DNS, the map file, the sink and two hosts with `ban_secs`.
async fn site(ban_secs: u64) -> Site {
    let redis = RedisInstance::start().await.expect("redis-server starts");
    let redis_config = RedisConfig {
        url: redis.url(),
        prefix: "e2e:".into(),
        // Generous for a loaded CI machine; a dead Redis refuses at once.
        timeout: Duration::from_secs(2),
        // Try Redis again soon after an outage.
        retry: Duration::from_millis(200),
    };
    let dns = TestDnsServer::start([
        TestRecord::txt("sender.test", "v=spf1 ip4:127.0.0.0/8 -all", 300),
        TestRecord::txt(HELO, "v=spf1 ip4:127.0.0.0/8 -all", 300),
    ])
    .await
    .expect("DNS server");
    let map = tempfile::tempdir().expect("temp dir");
    let map_file = map.path().join("recipients");
    std::fs::write(&map_file, format!("{KNOWN}\nbob@example.test\n")).expect("map file");
    let config = milter_config(dns.addr(), &map_file, &redis_config, ban_secs);
    let sink = SmtpSink::start().await.expect("sink");
    let a = host("A", config.clone(), &sink).await;
    let b = host("B", config, &sink).await;
    Site {
        redis,
        redis_config,
        sink,
        a,
        b,
        _dns: dns,
        _map: map,
    }
}

impl Site {
    /// What `nobounce ban ... --config` uses with `backend = "redis"`.
    fn admin_store(&self) -> RedisStore {
        RedisStore::new(&self.redis_config).expect("redis store")
    }

    /// Every message accepted was delivered to the sink, once, and nothing
    /// else arrived; no host queued or logged a bounce.
    async fn assert_delivered_exactly(&self, subjects: &[String]) {
        self.sink
            .wait_for_messages(subjects.len(), DEFAULT_TIMEOUT)
            .await
            .expect("every accepted message reaches the sink");
        for h in [&self.a, &self.b] {
            h.postfix
                .wait_until_queue_empty(DEFAULT_TIMEOUT)
                .await
                .expect("queue drains");
            h.postfix.assert_no_bounce();
        }
        assert!(!self.sink.has_bounce(), "a bounce reached the sink");
        let mut got: Vec<String> = self
            .sink
            .messages()
            .iter()
            .map(|m| m.header("Subject").unwrap_or_default())
            .collect();
        got.sort();
        let mut want = subjects.to_vec();
        want.sort();
        assert_eq!(got, want, "messages at the sink");
    }
}

/// `count` distinct unknown addresses of `example.test`, numbered from
/// `first`.
fn unknown(first: usize, count: usize) -> Vec<String> {
    (first..first + count)
        .map(|i| format!("probe{i:02}@example.test"))
        .collect()
}

/// Connects `client` to `host` and says EHLO; asserts both succeed.
async fn open(host: &Host, client: IpAddr) -> SmtpClient {
    let mut smtp = SmtpClient::connect_from(client, host.postfix.smtp_addr())
        .await
        .expect("connect");
    smtp.greeting().assert_code(220);
    smtp.ehlo(HELO).await.expect("EHLO").assert_code(250);
    smtp
}

/// The first refusal in a session.
#[derive(Debug)]
struct Refusal {
    /// `greeting`, `EHLO` or `MAIL FROM`.
    at: &'static str,
    reply: Reply,
    /// Whether the server hung up after it (a `NOOP` found the connection
    /// closed).
    hung_up: bool,
}

/// How a session of `client` with `host` begins: the greeting, `EHLO` and
/// `MAIL FROM`. Returns the first reply that is not a success, or `None`
/// when all three succeeded (the session is then closed with `QUIT`).
async fn refusal(host: &Host, client: IpAddr) -> Option<Refusal> {
    let mut smtp = SmtpClient::connect_from(client, host.postfix.smtp_addr())
        .await
        .expect("connect");
    let (at, reply) = 'refused: {
        if !smtp.greeting().is_success() {
            break 'refused ("greeting", smtp.greeting().clone());
        }
        let ehlo = smtp.ehlo(HELO).await.expect("EHLO");
        if !ehlo.is_success() {
            break 'refused ("EHLO", ehlo);
        }
        let mail = smtp.mail_from(SENDER, &[]).await.expect("MAIL FROM");
        if !mail.is_success() {
            break 'refused ("MAIL FROM", mail);
        }
        smtp.quit().await.expect("QUIT");
        return None;
    };
    let hung_up = smtp.noop().await.is_err();
    Some(Refusal { at, reply, hung_up })
}

/// What a banned client sees: Postfix's 220 greeting, its EHLO answered,
/// then nobounce's ban as the reply to MAIL FROM, `421 4.7.0 <client>
/// banned until <UTC>Z: <reason>`, and Postfix hangs up.
///
/// nobounce tells a ban at MAIL FROM rather than at the milter CONNECT
/// event, because Postfix's smtpd turns any milter 421 at CONNECT into its
/// own `421 <myhostname> Service unavailable` greeting and the client would
/// never see why, nor until when; and not at EHLO, because SMTP AUTH comes
/// after it and an authenticated session is never banned.
#[track_caller]
fn assert_refused_at_connect(refusal: &Refusal, host: &Host, client: IpAddr) {
    assert_eq!(
        (refusal.at, refusal.reply.code),
        ("MAIL FROM", 421),
        "{client} on host {}: expected nobounce's 421 at MAIL FROM (never a 5xx): {refusal:?}",
        host.name
    );
    assert!(
        refusal
            .reply
            .text()
            .starts_with(&format!("4.7.0 {client} banned until ")),
        "{refusal:?}"
    );
    assert!(
        refusal.hung_up,
        "Postfix went on after the 421: {refusal:?}"
    );
}

/// Asserts that `reply` is nobounce's ban of `client` for `reason`:
/// `421 4.7.0 <client> banned until <UTC>Z: <reason>` — a temporary
/// refusal, never a 5xx. Returns the end of the ban as written
/// (`2026-11-27T13:05:00Z`).
#[track_caller]
fn assert_ban(reply: &Reply, client: IpAddr, reason: &str) -> String {
    assert_eq!(reply.code, 421, "expected the ban's 421: {reply}");
    assert_eq!(reply.enhanced_status(), Some("4.7.0"), "{reply}");
    let text = reply.text();
    let rest = text
        .strip_prefix(&format!("4.7.0 {client} banned until "))
        .unwrap_or_else(|| panic!("not a ban of {client}: {reply}"));
    let (until, why) = rest
        .split_once(": ")
        .unwrap_or_else(|| panic!("no reason: {reply}"));
    let b = until.as_bytes();
    assert!(
        b.len() == 20 && b[4] == b'-' && b[10] == b'T' && b[19] == b'Z',
        "end of ban is not UTC RFC 3339: {reply}"
    );
    assert_eq!(why, reason, "{reply}");
    until.to_owned()
}

/// Postfix's log line prefix of nobounce's verdicts at EHLO for `client`.
fn connect_reject_marker(client: IpAddr) -> String {
    format!("milter-reject: MAIL from unknown[{client}]: ")
}

/// nobounce's reply in the `index`-th MAIL reject of `client` that
/// `host`'s Postfix logged, waiting for it to be logged.
async fn logged_connect_reply(host: &Host, client: IpAddr, index: usize) -> Reply {
    let marker = connect_reject_marker(client);
    let line = poll_until(
        &format!(
            "MAIL reject #{index} of {client} in host {}'s log",
            host.name
        ),
        DEFAULT_TIMEOUT,
        || {
            let line = host
                .postfix
                .log_lines_containing(&marker)
                .get(index)
                .cloned();
            async move { Ok(line) }
        },
    )
    .await
    .expect("Postfix logs the milter's reply");
    // "...: 421 4.7.0 127.0.0.2 banned until ...Z: reason; from=<...> proto=ESMTP ..."
    let logged = line
        .split_once(&marker)
        .map(|(_, r)| r)
        .and_then(|r| r.split_once("; from=").map(|(reply, _)| reply))
        .unwrap_or_else(|| panic!("unexpected log line: {line}"));
    let (code, text) = logged
        .split_once(' ')
        .unwrap_or_else(|| panic!("unexpected log line: {line}"));
    Reply {
        code: code.parse().expect("reply code"),
        lines: vec![text.to_owned()],
    }
}

/// Asserts that `client` is banned on `host` for `reason`: refused at EHLO
/// with 421 (see [`assert_refused_at_connect`]), the reply the client got
/// is the ban, and Postfix logged the same. Returns the end of the ban as
/// written.
async fn assert_banned(host: &Host, client: IpAddr, reason: &str) -> String {
    let seen = host
        .postfix
        .log_lines_containing(&connect_reject_marker(client))
        .len();
    let refused = refusal(host, client)
        .await
        .unwrap_or_else(|| panic!("{client} is not banned on host {}", host.name));
    assert_refused_at_connect(&refused, host, client);
    let until = assert_ban(&refused.reply, client, reason);
    assert_eq!(
        assert_ban(
            &logged_connect_reply(host, client, seen).await,
            client,
            reason
        ),
        until
    );
    until
}

/// Sends one message from `client` through `host` to `KNOWN`; asserts that
/// every step succeeds. Returns its subject.
async fn send_ok(host: &Host, client: IpAddr, subject: &str) -> String {
    let mut smtp = open(host, client).await;
    let message = MessageBuilder::new()
        .from(SENDER)
        .to(KNOWN)
        .subject(subject)
        .body("A normal message.\n")
        .build();
    let t = smtp
        .send_mail(SENDER, &[KNOWN], &message)
        .await
        .expect("transaction");
    assert!(
        t.accepted(),
        "{client} via host {}: message {subject:?} refused: {t:?}",
        host.name
    );
    smtp.quit().await.expect("QUIT");
    subject.to_owned()
}

/// Opens a transaction of `client` on `host` and tries `recipients`, all
/// unknown: each must get nobounce's `550 5.1.1`. Returns the session, still
/// in the transaction.
async fn probe(host: &Host, client: IpAddr, recipients: &[String]) -> SmtpClient {
    let mut smtp = open(host, client).await;
    smtp.mail_from(SENDER, &[])
        .await
        .expect("MAIL FROM")
        .assert_code(250);
    for rcpt in recipients {
        let reply = smtp.rcpt_to(rcpt).await.expect("RCPT");
        assert_eq!(
            (reply.code, reply.enhanced_status()),
            (550, Some("5.1.1")),
            "{rcpt} via host {}: {reply}",
            host.name
        );
    }
    smtp
}

/// After the recipient that reached the threshold: the next command of the
/// same session gets the ban, and Postfix hangs up.
async fn assert_session_banned(mut smtp: SmtpClient, client: IpAddr) -> String {
    let reply = smtp.rcpt_to(KNOWN).await.expect("RCPT after the ban");
    let until = assert_ban(&reply, client, BAN_REASON);
    let after = smtp.noop().await;
    assert!(
        after.is_err(),
        "the session goes on after the 421: {after:?}"
    );
    until
}

/// The attack split across both hosts: half the threshold of unknown
/// recipients through A (not banned yet: B still talks to the client), the
/// other half through B, which reaches the threshold. Returns the end of the
/// ban, from the attacking session's 421.
async fn split_attack(site: &Site, client: IpAddr) -> String {
    let half = THRESHOLD / 2;
    let smtp = probe(&site.a, client, &unknown(1, half)).await;
    smtp.quit().await.expect("QUIT");
    let below = refusal(&site.b, client).await;
    assert!(below.is_none(), "banned below the threshold: {below:?}");
    let smtp = probe(&site.b, client, &unknown(half + 1, THRESHOLD - half)).await;
    assert_session_banned(smtp, client).await
}

#[tokio::test]
async fn attack_split_across_two_hosts_bans_on_both_until_lifted() {
    require!("postfix", "redis-server");
    let site = site(3600).await;
    let admin = site.admin_store();
    let mut delivered = Vec::new();

    let until = split_attack(&site, ATTACKER).await;

    // Banned on both hosts, with the same end of ban.
    for h in [&site.a, &site.b] {
        assert_eq!(
            assert_banned(h, ATTACKER, BAN_REASON).await,
            until,
            "host {}",
            h.name
        );
    }
    // The ban is in Redis, as `nobounce ban list` shows it.
    let bans = control::list(&admin, SystemTime::now())
        .await
        .expect("list bans in Redis");
    assert_eq!(bans.len(), 1, "{bans:?}");
    assert_eq!(
        (
            bans[0].key.as_str(),
            bans[0].reason.as_str(),
            bans[0].strikes
        ),
        ("127.0.0.2", BAN_REASON, 1)
    );
    assert_eq!(rfc3339_utc(bans[0].until), until);

    // Another client is not affected, on either host.
    for h in [&site.a, &site.b] {
        delivered.push(send_ok(h, CLEAN, &format!("clean via {} during ban", h.name)).await);
    }

    // `nobounce ban lift 127.0.0.2` (backend redis): accepted again on both.
    let key = control::key_for(ATTACKER, 64);
    control::lift(&admin, &key, SystemTime::now())
        .await
        .expect("lift in Redis");
    let status = admin.ban_status(&key, SystemTime::now()).await;
    assert!(status.expect("ban status").is_none());
    for h in [&site.a, &site.b] {
        delivered.push(send_ok(h, ATTACKER, &format!("lifted via {}", h.name)).await);
    }

    // Banned by hand (`nobounce ban add 127.0.0.2 --for 1h`): both refuse.
    control::add(&admin, &key, Duration::from_secs(3600), SystemTime::now())
        .await
        .expect("ban in Redis");
    for h in [&site.a, &site.b] {
        assert_banned(h, ATTACKER, control::MANUAL_REASON).await;
    }
    // ... and lifted again: both accept.
    control::lift(&admin, &key, SystemTime::now())
        .await
        .expect("lift in Redis");
    for h in [&site.a, &site.b] {
        delivered.push(send_ok(h, ATTACKER, &format!("lifted again via {}", h.name)).await);
    }
    assert_eq!(
        control::list(&admin, SystemTime::now())
            .await
            .expect("list"),
        []
    );

    site.assert_delivered_exactly(&delivered).await;
}

#[tokio::test]
async fn a_shared_ban_expires_by_itself() {
    require!("postfix", "redis-server");
    let site = site(2).await;
    let admin = site.admin_store();

    let until = &split_attack(&site, ATTACKER).await;

    // Bounded polling: each host refuses the client with 421 (never a 5xx)
    // until the ban ends, then serves it again, and not before its end.
    for h in [&site.a, &site.b] {
        let refused = &Cell::new(0);
        poll_until(
            &format!("the ban to end on host {}", h.name),
            DEFAULT_TIMEOUT,
            || async move {
                match refusal(h, ATTACKER).await {
                    Some(r) => {
                        assert_refused_at_connect(&r, h, ATTACKER);
                        refused.set(refused.get() + 1);
                        Ok(None)
                    }
                    None => Ok(Some(())),
                }
            },
        )
        .await
        .expect("the ban expires");
        // The end is written rounded up to the second.
        let now = rfc3339_utc(SystemTime::now());
        assert!(
            &now >= until,
            "host {} served before {until}: {now}",
            h.name
        );
        // Every refusal was this ban (however many the machine's speed
        // allowed before it ended).
        for i in 0..refused.get() {
            let logged = logged_connect_reply(h, ATTACKER, i).await;
            assert_eq!(&assert_ban(&logged, ATTACKER, BAN_REASON), until);
        }
    }
    let key = control::key_for(ATTACKER, 64);
    let status = admin.ban_status(&key, SystemTime::now()).await;
    assert!(status.expect("ban status").is_none());
    assert_eq!(
        control::list(&admin, SystemTime::now())
            .await
            .expect("list"),
        []
    );
    let delivered = vec![send_ok(&site.b, ATTACKER, "after the ban").await];
    site.assert_delivered_exactly(&delivered).await;
}

#[tokio::test]
async fn mail_flows_while_redis_is_down_and_bans_are_shared_again_after_restart() {
    require!("postfix", "redis-server");
    let logs = LogCapture::default();
    let _capture = logs.install();
    let mut site = site(3600).await;
    let admin = site.admin_store();
    let mut delivered = Vec::new();

    // Redis up: mail flows, no warning.
    for h in [&site.a, &site.b] {
        delivered.push(send_ok(h, CLEAN, &format!("before outage via {}", h.name)).await);
    }
    assert_eq!(logs.lines_with("store_unreachable"), Vec::<String>::new());

    // Redis dies.
    let port = site.redis.port();
    site.redis.stop();

    // Mail still flows through both hosts, several messages each.
    for round in 1..=3 {
        for h in [&site.a, &site.b] {
            delivered.push(send_ok(h, CLEAN, &format!("outage {round} via {}", h.name)).await);
        }
    }
    // A dictionary attack on host A alone is banned there, from memory.
    let smtp = probe(&site.a, ATTACKER, &unknown(1, THRESHOLD)).await;
    let until = assert_session_banned(smtp, ATTACKER).await;
    assert_eq!(assert_banned(&site.a, ATTACKER, BAN_REASON).await, until);
    // Host B cannot know it while Redis is down, and serves the client.
    delivered.push(send_ok(&site.b, ATTACKER, "attacker via B during outage").await);

    // One warning per host for the whole outage, not one per message.
    let warnings = logs.lines_with("store_unreachable");
    assert_eq!(warnings.len(), 2, "{warnings:#?}");
    assert!(warnings.iter().all(|l| l.contains("WARN")), "{warnings:#?}");
    assert_eq!(
        logs.lines_with("state store failed"),
        Vec::<String>::new(),
        "the fallback store never fails"
    );

    // Redis is back, empty, on the same port.
    site.redis.restart().await.expect("redis-server restarts");
    assert_eq!(site.redis.port(), port);

    // Host A pushes its outage ban once it tries Redis again (every
    // `retry_ms`); every connection to A is a chance, and A keeps refusing
    // the attacker meanwhile.
    let key = &control::key_for(ATTACKER, 64);
    let (site_ref, admin_ref, until_ref) = (&site, &admin, &until);
    let pushed = poll_until(
        "host A to push its ban to Redis",
        DEFAULT_TIMEOUT,
        || async move {
            let reply = assert_banned(&site_ref.a, ATTACKER, BAN_REASON).await;
            assert_eq!(&reply, until_ref);
            Ok(admin_ref
                .ban_status(key, SystemTime::now())
                .await
                .ok()
                .flatten())
        },
    )
    .await
    .expect("the outage's ban reaches Redis");
    assert_eq!(
        (rfc3339_utc(pushed.until), pushed.reason.as_str()),
        (until.clone(), BAN_REASON)
    );
    // Host B sees it as soon as it uses Redis again.
    poll_until(
        "host B to see the pushed ban",
        DEFAULT_TIMEOUT,
        || async move {
            Ok(refusal(&site_ref.b, ATTACKER).await.map(|r| {
                assert_refused_at_connect(&r, &site_ref.b, ATTACKER);
            }))
        },
    )
    .await
    .expect("host B refuses the attacker");
    let logged = logged_connect_reply(&site.b, ATTACKER, 0).await;
    assert_eq!(assert_ban(&logged, ATTACKER, BAN_REASON), until);
    // Both hosts are back on Redis: one recovery each, still one warning.
    assert_eq!(
        logs.lines_with("store_recovered").len(),
        2,
        "{:#?}",
        logs.lines_with("store_")
    );
    assert_eq!(logs.lines_with("store_unreachable").len(), 2);

    // Shared again: an attack on host A alone now bans on host B at once.
    let smtp = probe(&site.a, LATE_ATTACKER, &unknown(1, THRESHOLD)).await;
    let late_until = assert_session_banned(smtp, LATE_ATTACKER).await;
    assert_eq!(
        assert_banned(&site.b, LATE_ATTACKER, BAN_REASON).await,
        late_until
    );
    let bans = control::list(&admin, SystemTime::now())
        .await
        .expect("list bans in Redis");
    let keys: Vec<&str> = bans.iter().map(|b| b.key.as_str()).collect();
    assert_eq!(keys, ["127.0.0.2", "127.0.0.4"]);

    // The clean client was never refused.
    for h in [&site.a, &site.b] {
        delivered.push(send_ok(h, CLEAN, &format!("after restart via {}", h.name)).await);
    }
    site.assert_delivered_exactly(&delivered).await;
    assert_eq!(logs.lines_with("store_unreachable").len(), 2);
}
