//! Issue 13, faults under load: real Postfix with nobounce, a loopback DNS,
//! Redis and Dovecot LMTP, a few hundred messages from several clients while
//! the DNS, Redis, Dovecot and nobounce itself are each stopped and started
//! again. At the end every message was either delivered, or refused at SMTP
//! time with a 4xx/5xx reply the client saw; none is lost, and no bounce is
//! in Postfix's queue or log.

use nobounce_test_support::dns::{TestDnsServer, TestRecord};
use nobounce_test_support::{
    require, Background, DovecotInstance, MessageBuilder, PostfixInstance, RedisInstance,
    SmtpClient, SmtpSink, DEFAULT_TIMEOUT,
};
use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};
use tokio::net::TcpListener;

const DOMAIN: &str = "mbox.test";
const SENDER: &str = "news@sender.test";
const USERS: &[&str] = &[
    "alice@mbox.test",
    "bob@mbox.test",
    "carol@mbox.test",
    "dave@mbox.test",
];
/// Messages sent at least; the clients go on until the faults are over.
const AT_LEAST: usize = 300;
const CLIENTS: usize = 4;

/// What a client saw of one message.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    /// `250` after the data: the server took responsibility.
    Accepted,
    /// A 4xx/5xx reply at this command.
    Refused(String),
}

fn config(
    dns: SocketAddr,
    dovecot: &DovecotInstance,
    redis: &RedisInstance,
) -> nobounce_config::Config {
    nobounce_config::Config::from_toml_str(&format!(
        r#"
# Below the harness's Postfix milter_command_timeout (10s).
command_timeout = "8s"

# No caches in front of the DNS, so that its outage shows.
[dns]
nameservers = ["{dns}"]
timeout = "1s"
attempts = 1
cache_size = 0

[spf]
trusted_networks = []
timeout = "3s"
cache_size = 0

[recipients]
routes = [{{ domains = ["{DOMAIN}"], chain = ["lmtp"] }}]

[recipients.backends.lmtp]
type = "rcpt_probe"
address = "{lmtp}"
timeout = "3s"
cache = {{ capacity = 0 }}

[store]
backend = "redis"
control_socket = ""

[store.redis]
url = "{redis}"
prefix = "faults:"
timeout = "300ms"
retry = "200ms"
"#,
        lmtp = dovecot.lmtp_addr(),
        redis = redis.url(),
    ))
    .expect("valid configuration")
}

async fn start_milter(
    listener: TcpListener,
    config: nobounce_config::Config,
) -> Background<Result<(), nobounce_server::RunError>> {
    Background::spawn(|shutdown| nobounce_server::run_tcp(listener, config, shutdown))
}

/// Sends one message; what the client saw.
async fn send(postfix: SocketAddr, client: IpAddr, subject: &str, to: &str) -> Outcome {
    let refused = |at: &str, r: &nobounce_test_support::Reply| {
        assert!(
            r.is_transient() || r.is_permanent(),
            "{at}: not a refusal: {r}"
        );
        Outcome::Refused(format!("{at}: {r}"))
    };
    let mut c = match SmtpClient::connect_from(client, postfix).await {
        Ok(c) => c,
        Err(e) => panic!("connect: {e}"),
    };
    if !c.greeting().is_success() {
        return refused("greeting", &c.greeting().clone());
    }
    let ehlo = c.ehlo("client.sender.test").await.expect("EHLO reply");
    if !ehlo.is_success() {
        return refused("EHLO", &ehlo);
    }
    let message = MessageBuilder::new()
        .from(SENDER)
        .to(to)
        .subject(subject)
        .body("Under fire.\n")
        .build();
    let t = c
        .send_mail(SENDER, &[to], &message)
        .await
        .expect("every command gets a reply");
    let outcome = if t.accepted() {
        Outcome::Accepted
    } else if !t.mail.is_success() {
        refused("MAIL", &t.mail)
    } else if let Some(r) = t.rcpts.iter().find(|r| !r.is_success()) {
        refused("RCPT", r)
    } else {
        refused("DATA", t.data.as_ref().expect("DATA was sent"))
    };
    let _ = c.quit().await;
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_message_is_lost_while_every_part_fails_in_turn() {
    require!("postfix", "dovecot", "redis-server");
    let mut dovecot = USERS
        .iter()
        .fold(DovecotInstance::builder(), |b, u| b.user(u))
        .start()
        .await
        .expect("dovecot starts");
    let mut redis = RedisInstance::start().await.expect("redis starts");
    let dns = TestDnsServer::start([
        TestRecord::txt("sender.test", "v=spf1 ip4:127.0.0.0/8 -all", 300),
        TestRecord::txt("client.sender.test", "v=spf1 ip4:127.0.0.0/8 -all", 300),
    ])
    .await
    .expect("DNS server");
    let config = config(dns.addr(), &dovecot, &redis);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let milter_addr = listener.local_addr().expect("addr");
    let mut milter = Some(start_milter(listener, config.clone()).await);
    let sink = SmtpSink::start().await.expect("sink");
    let postfix = PostfixInstance::builder()
        .milter(milter_addr)
        .lmtp(dovecot.lmtp_addr(), &[DOMAIN])
        .relay_to(sink.addr())
        .start()
        .await
        .expect("postfix starts");

    // The load: CLIENTS senders, one message per connection, until the
    // faults are over and AT_LEAST messages went out.
    let faults_over = Arc::new(AtomicBool::new(false));
    let outcomes = Arc::new(Mutex::new(BTreeMap::<String, Outcome>::new()));
    let smtp = postfix.smtp_addr();
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (faults_over, outcomes) = (Arc::clone(&faults_over), Arc::clone(&outcomes));
        clients.push(tokio::spawn(async move {
            let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 10 + c as u8));
            let mut i = 0;
            loop {
                let sent = outcomes.lock().unwrap().len();
                if faults_over.load(Ordering::SeqCst) && sent >= AT_LEAST {
                    break;
                }
                let subject = format!("fault-{c}-{i}");
                let to = USERS[i % USERS.len()];
                let outcome = send(smtp, ip, &subject, to).await;
                let refused = outcome != Outcome::Accepted;
                outcomes.lock().unwrap().insert(subject, outcome);
                i += 1;
                if refused {
                    // A sending MTA waits before it tries again.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }));
    }

    // The faults, one after the other, each for a second and a half. In each,
    // one more message shows what a client sees then.
    let pause = || tokio::time::sleep(Duration::from_millis(1500));
    let probe = |label: &'static str, expected: &'static str| {
        let outcomes = Arc::clone(&outcomes);
        async move {
            let client = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 99));
            let outcome = send(smtp, client, label, USERS[0]).await;
            let seen = match &outcome {
                Outcome::Accepted => "accepted".to_string(),
                Outcome::Refused(r) => r.clone(),
            };
            assert!(
                seen.starts_with(expected),
                "{label}: expected {expected}, got {seen}"
            );
            outcomes.lock().unwrap().insert(label.to_string(), outcome);
        }
    };
    pause().await;
    dns.set_silent(true);
    probe("dns-down", "MAIL: 451 4.7.24").await;
    pause().await;
    dns.set_silent(false);
    pause().await;
    redis.stop();
    probe("redis-down", "accepted").await;
    pause().await;
    redis.restart().await.expect("redis restarts");
    pause().await;
    dovecot.stop().await.expect("dovecot stops");
    probe("dovecot-down", "RCPT: 451 4.4.3").await;
    pause().await;
    dovecot.start().await.expect("dovecot restarts");
    pause().await;
    milter
        .take()
        .expect("running")
        .stop()
        .await
        .expect("milter stops")
        .expect("milter ran cleanly");
    probe("nobounce-down", "MAIL: 451 4.7.1").await;
    pause().await;
    let listener = TcpListener::bind(milter_addr)
        .await
        .expect("same port again");
    milter = Some(start_milter(listener, config).await);
    pause().await;
    faults_over.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.expect("client task");
    }

    // What was accepted must arrive: Dovecot was down for a while, so
    // Postfix may hold some in its queue until it tries again.
    postfix.flush().await.expect("flush");
    postfix
        .wait_until_queue_empty(DEFAULT_TIMEOUT * 2)
        .await
        .expect("the queue empties: every accepted message is delivered");
    let outcomes = outcomes.lock().unwrap().clone();
    let accepted: BTreeSet<String> = outcomes
        .iter()
        .filter(|(_, o)| **o == Outcome::Accepted)
        .map(|(s, _)| s.clone())
        .collect();
    let mut delivered = BTreeSet::new();
    let mut twice = Vec::new();
    for user in USERS {
        for m in dovecot.messages(user).expect("read Maildir") {
            let subject = nobounce_test_support::header_value(&m, "Subject").expect("subject");
            if !delivered.insert(subject.clone()) {
                twice.push((subject, m));
            }
        }
    }
    // A second copy is the one duplicate SMTP and LMTP allow: Dovecot,
    // stopped, saved a message but died before its reply, so Postfix
    // deferred it and delivered it again ("message may be sent more than
    // once"). Any other second copy is a defect.
    let log = postfix.log();
    for (subject, m) in &twice {
        let id = nobounce_test_support::header_value(m, "Message-ID").expect("Message-ID");
        assert!(
            was_deferred(&log, &id),
            "{subject} ({id}) delivered twice, but Postfix never deferred it at \
             the end of its data; its lines:\n{}",
            postfix_lines_of(&log, &id)
        );
        eprintln!("faults_e2e: {subject} delivered twice after Postfix deferred it");
    }
    let lost: Vec<_> = accepted.difference(&delivered).collect();
    assert!(lost.is_empty(), "accepted but never delivered: {lost:?}");
    let unexpected: Vec<_> = delivered.difference(&accepted).collect();
    assert!(
        unexpected.is_empty(),
        "delivered although the client saw a refusal: {unexpected:?}"
    );
    postfix.assert_no_bounce();
    assert!(!sink.has_bounce(), "a bounce left the server");

    // The faults showed: some refusals, each a 4xx the client saw, and
    // most mail got through.
    let refused: Vec<&String> = outcomes
        .values()
        .filter_map(|o| match o {
            Outcome::Refused(r) => Some(r),
            Outcome::Accepted => None,
        })
        .collect();
    eprintln!(
        "faults_e2e: {} messages, {} accepted and delivered, {} refused",
        outcomes.len(),
        accepted.len(),
        refused.len()
    );
    let mut kinds = BTreeMap::<String, usize>::new();
    for r in &refused {
        // "RCPT: 451 4.4.3 Recipient lookup failed..." → "RCPT: 451 4.4.3"
        let kind: String = r.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
        if !kinds.contains_key(&kind) {
            eprintln!("faults_e2e: first {kind}: {r}");
        }
        *kinds.entry(kind).or_default() += 1;
    }
    eprintln!("faults_e2e: refusals by kind: {kinds:?}");
    assert!(outcomes.len() >= AT_LEAST);
    assert!(!refused.is_empty(), "the faults were not noticed at all");
    for r in &refused {
        assert!(r.contains(": 4"), "a fault gave a permanent refusal: {r}");
    }
    assert!(
        accepted.len() >= AT_LEAST / 2,
        "{} accepted",
        accepted.len()
    );
    drop(milter);
}

/// Whether Postfix deferred a delivery of the message with `message_id` at
/// the end of its data, when the server may already have saved it: its
/// queue id from the `cleanup` line, then a `status=deferred` line about
/// the end of data: "lost connection ... while sending end of data --
/// message may be sent more than once", or Dovecot's "421 4.3.2 Shutting
/// down (in reply to end of DATA command)", which it sends after saving.
/// A deferral for any other cause (connection refused, no greeting)
/// cannot make a second copy.
fn was_deferred(log: &str, message_id: &str) -> bool {
    let queue_ids = queue_ids_of(log, message_id);
    log.lines().any(|l| {
        l.contains("status=deferred")
            && (l.contains("end of data") || l.contains("end of DATA"))
            && queue_ids
                .iter()
                .any(|id| l.contains(&format!("]: {id}: to=")))
    })
}

#[test]
fn a_duplicate_is_excused_only_by_its_own_deferral() {
    let log = "\
Nov 29 17:01:18 mx postfix-e2e/cleanup[1]: 48D4498D235: message-id=<e2e.1.1@client.example>
Nov 29 17:01:18 mx postfix-e2e/cleanup[1]: 5078298CD5B: message-id=<e2e.1.2@client.example>
Nov 29 17:01:18 mx postfix-e2e/cleanup[1]: 5129598D13E: message-id=<e2e.1.3@client.example>
Nov 29 17:01:19 mx postfix-e2e/lmtp[2]: 5078298CD5B: to=<a@mbox.test>, status=deferred (lost connection with 127.0.0.1[127.0.0.1] while sending end of data -- message may be sent more than once)
Nov 29 17:01:19 mx postfix-e2e/lmtp[2]: 5129598D13E: to=<a@mbox.test>, status=deferred (connect to 127.0.0.1[127.0.0.1]:24: Connection refused)
Nov 29 17:01:18 mx postfix-e2e/cleanup[1]: 6BF5A98DDB6: message-id=<e2e.1.5@client.example>
Nov 29 17:01:19 mx postfix-e2e/lmtp[2]: 6BF5A98DDB6: to=<d@mbox.test>, relay=127.0.0.1[127.0.0.1]:37043, dsn=4.3.2, status=deferred (host 127.0.0.1[127.0.0.1] said: 421 4.3.2 vm Shutting down (in reply to end of DATA command))
";
    assert!(was_deferred(log, "<e2e.1.2@client.example>"));
    assert!(!was_deferred(log, "<e2e.1.1@client.example>"));
    assert!(!was_deferred(log, "<e2e.1.3@client.example>"), "refused");
    assert!(!was_deferred(log, "<e2e.1.4@client.example>"));
    assert!(
        was_deferred(log, "<e2e.1.5@client.example>"),
        "421 after saving"
    );
    assert!(postfix_lines_of(log, "<e2e.1.5@client.example>").contains("421 4.3.2"));
}

/// The log lines of the message with `message_id` (by its queue ids).
fn postfix_lines_of(log: &str, message_id: &str) -> String {
    let ids = queue_ids_of(log, message_id);
    log.lines()
        .filter(|l| ids.iter().any(|id| l.contains(&format!("]: {id}: "))))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The queue ids Postfix's `cleanup` gave the message with `message_id`.
fn queue_ids_of<'a>(log: &'a str, message_id: &str) -> BTreeSet<&'a str> {
    let needle = format!("message-id={}", message_id.trim());
    log.lines()
        .filter(|l| l.contains(&needle))
        .filter_map(|l| l.split("]: ").nth(1)?.split(':').next())
        .collect()
}
