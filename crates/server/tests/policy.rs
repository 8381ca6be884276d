//! Issue 12: the policy service, driven over a real socket like Postfix
//! (`check_policy_service`, one persistent connection) and Exim
//! (`${readsocket}`, one request then end of input) drive it. The whole
//! daemon runs in-process; a test DNS server serves the SPF zones, a map
//! file and a Maildir++ quota file the recipients.

use nobounce_config::Config;
use nobounce_test_support::{
    dns::{TestDnsServer, TestRecord},
    free_port, policy_request, Background, LogCapture, PolicyClient,
};
use std::{fs, net::SocketAddr, path::Path, time::Duration};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

struct Site {
    _dns: TestDnsServer,
    _dir: tempfile::TempDir,
    policy: SocketAddr,
    daemon: Background<Result<(), nobounce_server::RunError>>,
}

async fn site(extra: &str) -> Site {
    let dns = TestDnsServer::start([
        TestRecord::txt("pass.test", "v=spf1 ip4:192.0.2.0/24 -all", 300),
        TestRecord::txt("fail.test", "v=spf1 -all", 300),
        TestRecord::txt("exp.test", "v=spf1 -all exp=why.exp.test", 300),
        TestRecord::txt("why.exp.test", "Go away %{i}, 100%% not welcome", 300),
    ])
    .await
    .expect("DNS server");
    let dir = tempfile::tempdir().expect("tempdir");
    let map = dir.path().join("recipients");
    fs::write(
        &map,
        "ann@example.net\nfull@example.net\nsmall@example.net\n",
    )
    .unwrap();
    // full@: 900 of 1000 bytes used; small@: 100 of 1000.
    maildir(dir.path(), "full", "1000S\n900 3\n");
    maildir(dir.path(), "small", "1000S\n100 1\n");
    let policy = SocketAddr::from(([127, 0, 0, 1], free_port().expect("free port")));
    let text = format!(
        "{extra}\n[policy]\nsocket = \"inet:{policy}\"\n\
         [dns]\nnameservers = [\"{dns}\"]\ntimeout = \"1s\"\nattempts = 1\n\
         [spf]\ntrusted_networks = []\n\
         [recipients]\ndefault_chain = [\"users\", \"quota\"]\n\
         [recipients.backends.users]\ntype = \"map_file\"\npath = \"{map}\"\n\
         [recipients.backends.quota]\ntype = \"maildir\"\npath_template = \"{root}/{{local}}\"\n",
        dns = dns.addr(),
        map = map.display(),
        root = dir.path().display(),
    );
    let config = Config::from_toml_str(&text).expect("config");
    let milter = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let daemon = Background::spawn(|stop| nobounce_server::run_tcp(milter, config, stop));
    // Until the policy socket listens.
    daemon
        .wait_listening(policy)
        .await
        .expect("the policy service listens");
    Site {
        _dns: dns,
        _dir: dir,
        policy,
        daemon,
    }
}

fn maildir(root: &Path, user: &str, maildirsize: &str) {
    let d = root.join(user);
    fs::create_dir_all(&d).unwrap();
    fs::write(d.join("maildirsize"), maildirsize).unwrap();
}

fn request(state: &str, sender: &str, recipient: &str, size: u64, instance: &str) -> String {
    policy_request(state, "192.0.2.7", sender, recipient, size, instance, &[])
}

/// One persistent connection, as Postfix keeps it.
struct Conn(PolicyClient);

impl Conn {
    async fn open(addr: SocketAddr) -> Self {
        Self(PolicyClient::connect(addr).await.expect("connect"))
    }

    async fn ask(&mut self, request: &str) -> String {
        self.0.ask(request).await.expect("an action")
    }
}

#[tokio::test]
async fn issue12_postfix_style_persistent_connection() {
    let site = site("").await;
    let mut c = Conn::open(site.policy).await;
    // CONNECT and HELO: the engine never refuses there.
    assert_eq!(c.ask(&request("CONNECT", "", "", 0, "")).await, "DUNNO");
    assert_eq!(c.ask(&request("EHLO", "", "", 0, "")).await, "DUNNO");
    // A message from an SPF pass sender, with MAIL FROM SIZE=500 (Postfix
    // sends it in every request about the message).
    let from = "joe@pass.test";
    assert_eq!(c.ask(&request("MAIL", from, "", 500, "a.1")).await, "DUNNO");
    assert_eq!(
        c.ask(&request("RCPT", from, "ann@example.net", 500, "a.1"))
            .await,
        "DUNNO"
    );
    let unknown = c
        .ask(&request("RCPT", from, "nobody@example.net", 500, "a.1"))
        .await;
    assert!(unknown.starts_with("550 5.1.1 "), "{unknown}");
    // Over quota by the MAIL SIZE: 900 + 500 > 1000; 100 + 500 fits.
    let full = c
        .ask(&request("RCPT", from, "full@example.net", 500, "a.1"))
        .await;
    assert!(full.starts_with("452 4.2.2 "), "{full}");
    let small = c
        .ask(&request("RCPT", from, "small@example.net", 500, "a.1"))
        .await;
    assert_eq!(small, "DUNNO");
    assert_eq!(c.ask(&request("DATA", from, "", 500, "a.1")).await, "DUNNO");
    // The next message on the same connection: SPF fail.
    let bad = c
        .ask(&request(
            "RCPT",
            "eve@fail.test",
            "ann@example.net",
            0,
            "a.2",
        ))
        .await;
    assert!(bad.starts_with("550 5.7.23 "), "{bad}");
    site.daemon.stop().await.unwrap().unwrap();
}

#[tokio::test]
async fn issue12_end_of_message_checks_the_real_size_of_a_single_recipient_message() {
    let site = site("").await;
    let mut c = Conn::open(site.policy).await;
    let from = "joe@pass.test";
    // No SIZE at MAIL: the recipient passes at RCPT...
    assert_eq!(
        c.ask(&request("RCPT", from, "small@example.net", 0, "b.1"))
            .await,
        "DUNNO"
    );
    // ... and the real size does not fit (100 + 2000 > 1000).
    let eom = c
        .ask(&request(
            "END-OF-MESSAGE",
            from,
            "small@example.net",
            2000,
            "b.1",
        ))
        .await;
    assert!(eom.starts_with("452 4.2.2 "), "{eom}");
    // A small message fits.
    assert_eq!(
        c.ask(&request("RCPT", from, "small@example.net", 0, "b.2"))
            .await,
        "DUNNO"
    );
    assert_eq!(
        c.ask(&request(
            "END-OF-MESSAGE",
            from,
            "small@example.net",
            300,
            "b.2"
        ))
        .await,
        "DUNNO"
    );
    // With two recipients nothing is refused at end of message (that would
    // refuse it for both).
    for rcpt in ["small@example.net", "ann@example.net"] {
        assert_eq!(c.ask(&request("RCPT", from, rcpt, 0, "b.3")).await, "DUNNO");
    }
    assert_eq!(
        c.ask(&request("END-OF-MESSAGE", from, "", 2000, "b.3"))
            .await,
        "DUNNO"
    );
    site.daemon.stop().await.unwrap().unwrap();
}

#[tokio::test]
async fn issue12_exim_style_one_request_then_end_of_input() {
    let site = site("").await;
    let mut s = TcpStream::connect(site.policy).await.unwrap();
    s.write_all(request("RCPT", "joe@pass.test", "nobody@example.net", 0, "").as_bytes())
        .await
        .unwrap();
    // readsocket half-closes its side, then reads to the end.
    s.shutdown().await.unwrap();
    let mut all = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut all))
        .await
        .expect("the service closes after answering")
        .unwrap();
    assert!(all.starts_with("action=550 5.1.1 "), "{all:?}");
    assert!(all.ends_with("\n\n"), "{all:?}");
    site.daemon.stop().await.unwrap().unwrap();
}

#[tokio::test]
async fn issue12_malformed_requests_get_no_reply_and_are_logged() {
    let logs = LogCapture::default();
    let _guard = logs.install();
    let site = site("").await;
    for bad in [
        "request=smtpd_access_policy\nthis is not an attribute\n\n".to_owned(),
        format!(
            "request=smtpd_access_policy\nsender={}\n\n",
            "x".repeat(100_000)
        ),
        "request=smtpd_access_policy\nsender=a\0b\nprotocol_state=RCPT\n\n".to_owned(),
        "request=junk\nprotocol_state=RCPT\n\n".to_owned(),
    ] {
        let mut s = TcpStream::connect(site.policy).await.unwrap();
        // The service may close while we still write.
        let _ = s.write_all(bad.as_bytes()).await;
        let mut all = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut all))
            .await
            .expect("the service closes the connection");
        assert!(
            all.is_empty(),
            "no reply: {:?}",
            String::from_utf8_lossy(&all)
        );
    }
    // The service still answers after all of that.
    let mut c = Conn::open(site.policy).await;
    assert_eq!(c.ask(&request("CONNECT", "", "", 0, "")).await, "DUNNO");
    site.daemon.stop().await.unwrap().unwrap();
    assert_eq!(logs.count("malformed policy request"), 4, "{}", logs.text());
}

#[tokio::test]
async fn issue12_a_ban_is_a_421_and_dry_run_refuses_nothing() {
    let banning = site("[dictionary]\nthreshold = 2\n").await;
    let mut c = Conn::open(banning.policy).await;
    let from = "joe@pass.test";
    for (i, rcpt) in ["x1@example.net", "x2@example.net"].iter().enumerate() {
        let a = c
            .ask(&request("RCPT", from, rcpt, 0, &format!("c.{i}")))
            .await;
        assert!(a.starts_with("550 5.1.1"), "{a}");
    }
    let banned = c.ask(&request("MAIL", from, "", 0, "c.9")).await;
    assert!(banned.starts_with("421 4.7.0 "), "{banned}");
    banning.daemon.stop().await.unwrap().unwrap();

    let dry = site("dry_run = true\n").await;
    let mut c = Conn::open(dry.policy).await;
    let a = c
        .ask(&request(
            "RCPT",
            "eve@fail.test",
            "nobody@example.net",
            0,
            "d.1",
        ))
        .await;
    assert_eq!(a, "DUNNO");
    dry.daemon.stop().await.unwrap().unwrap();
}

/// Postfix puts a policy reply's text into its reply as it is (no `%`
/// unescaping, unlike milter replies): a `%` must arrive single.
#[tokio::test]
async fn issue12_percent_in_a_reply_text_is_not_doubled() {
    let site = site("").await;
    let mut c = Conn::open(site.policy).await;
    let a = c
        .ask(&request(
            "RCPT",
            "eve@exp.test",
            "ann@example.net",
            0,
            "p.1",
        ))
        .await;
    assert!(a.starts_with("550 5.7.23 "), "{a}");
    assert!(a.contains("Go away 192.0.2.7, 100% not welcome"), "{a}");
    site.daemon.stop().await.unwrap().unwrap();
}
