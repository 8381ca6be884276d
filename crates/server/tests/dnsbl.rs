//! Issue 10: DNS block lists in safe mode, against the project's loopback
//! DNS serving a test list zone, through the policy service (and the
//! milter, for one case), with the whole daemon in-process.

use indymilter_test::{MacroStage, Status, TestConnection};
use nobounce_config::Config;
use nobounce_test_support::{
    dns::{ServerMode, TestDnsServer, TestRecord},
    free_port, policy_request, Background, LogCapture, PolicyClient,
};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Listed in bl.test (127.0.0.2, with a TXT reason).
const LISTED: &str = "192.0.2.7";
/// Not listed.
const CLEAN: &str = "192.0.2.8";
/// Listed with an answer outside 127.0.0.0/8 only (ignored).
const ODD: &str = "192.0.2.9";
/// Listed, IPv6.
const LISTED6: &str = "2001:db8::7";

struct Site {
    dns: TestDnsServer,
    policy: SocketAddr,
    milter: SocketAddr,
    daemon: Background<Result<(), nobounce_server::RunError>>,
}

impl Site {
    async fn ask(
        &self,
        sender: &str,
        recipient: &str,
        client: &str,
        extra: &[(&str, &str)],
    ) -> String {
        let mut c = PolicyClient::connect(self.policy).await.expect("connect");
        c.ask(&policy_request(
            "RCPT", client, sender, recipient, 0, "", extra,
        ))
        .await
        .expect("action")
    }

    fn list_queries(&self) -> usize {
        self.dns
            .queries()
            .iter()
            .filter(|q| q.name.ends_with(".bl.test.") && q.record_type == "A")
            .count()
    }

    async fn stop(self) {
        self.daemon.stop().await.unwrap().unwrap();
    }
}

async fn start(dnsbl: &str) -> Site {
    let dns = TestDnsServer::start([
        TestRecord::a("7.2.0.192.bl.test", Ipv4Addr::new(127, 0, 0, 2), 300),
        TestRecord::txt(
            "7.2.0.192.bl.test",
            "Sent bounces to a trap; see http://bl.test/?192.0.2.7",
            300,
        ),
        TestRecord::a("9.2.0.192.bl.test", Ipv4Addr::new(10, 0, 0, 1), 300),
        TestRecord::a(
            "7.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.test",
            Ipv4Addr::new(127, 0, 0, 2),
            300,
        ),
        TestRecord::a("7.2.0.192.spam.test", Ipv4Addr::new(127, 0, 0, 4), 300),
        TestRecord::a("7.2.0.192.slow.test", Ipv4Addr::new(127, 0, 0, 2), 300),
    ])
    .await
    .expect("DNS server");
    let policy = SocketAddr::from(([127, 0, 0, 1], free_port().expect("free port")));
    let text = format!(
        "{top}[policy]\nsocket = \"inet:{policy}\"\n\
         [dns]\nnameservers = [\"{dns}\"]\ntimeout = \"300ms\"\nattempts = 1\n\
         [spf]\nenabled = false\ntrusted_networks = [\"198.51.100.0/24\"]\n\
         {dnsbl}",
        dns = dns.addr(),
        top = if dnsbl.starts_with("dry_run") {
            "dry_run = true\n"
        } else {
            ""
        },
        dnsbl = dnsbl.trim_start_matches("dry_run = true\n"),
    );
    let config = Config::from_toml_str(&text).expect("config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let milter = listener.local_addr().unwrap();
    let daemon = Background::spawn(|stop| nobounce_server::run_tcp(listener, config, stop));
    daemon
        .wait_listening(policy)
        .await
        .expect("the policy service listens");
    Site {
        dns,
        policy,
        milter,
        daemon,
    }
}

const SAFE: &str = "[[dnsbl.zones]]\nzone = \"bl.test\"\n";

#[tokio::test]
async fn issue10_safe_mode_refuses_bounces_from_a_listed_client_only() {
    let site = start(SAFE).await;
    // A bounce from the listed client: refused with the list's text.
    let a = site.ask("", "ann@example.net", LISTED, &[]).await;
    assert_eq!(
        a,
        "550 5.7.1 Service unavailable; client [192.0.2.7] blocked using bl.test; \
         Sent bounces to a trap; see http://bl.test/?192.0.2.7"
    );
    // So is a postmaster@ sender (any case).
    let a = site
        .ask("PostMaster@relay.example", "ann@example.net", LISTED, &[])
        .await;
    assert!(a.starts_with("550 5.7.1 "), "{a}");
    let asked = site.list_queries();
    // An ordinary sender from the same client: the list is not even asked.
    let a = site
        .ask("joe@example.org", "ann@example.net", LISTED, &[])
        .await;
    assert_eq!(a, "DUNNO");
    assert_eq!(
        site.list_queries(),
        asked,
        "safe mode asks only for bounces"
    );
    // Not listed, and listed only outside 127.0.0.0/8.
    assert_eq!(site.ask("", "ann@example.net", CLEAN, &[]).await, "DUNNO");
    assert_eq!(site.ask("", "ann@example.net", ODD, &[]).await, "DUNNO");
    // IPv6, in nibble format.
    let a = site.ask("", "ann@example.net", LISTED6, &[]).await;
    assert!(a.starts_with("550 5.7.1 "), "{a}");
    site.stop().await;
}

#[tokio::test]
async fn issue10_exemptions() {
    let site = start(&format!(
        "{SAFE}[dnsbl]\nexempt_recipients = [\"postmaster\"]\nallow_list = [\"192.0.2.7/32\"]\n"
    ))
    .await;
    // The allow-list: even a bounce from the listed client passes.
    assert_eq!(site.ask("", "ann@example.net", LISTED, &[]).await, "DUNNO");
    site.stop().await;

    let site = start(SAFE).await;
    // postmaster@ and abuse@ (the default exemptions).
    assert_eq!(
        site.ask("", "postmaster@example.net", LISTED, &[]).await,
        "DUNNO"
    );
    assert_eq!(
        site.ask("", "Abuse@example.net", LISTED, &[]).await,
        "DUNNO"
    );
    // Authenticated sessions and trusted networks.
    let auth = [("sasl_username", "joe")];
    assert_eq!(
        site.ask("", "ann@example.net", LISTED, &auth).await,
        "DUNNO"
    );
    assert_eq!(
        site.ask("", "ann@example.net", "198.51.100.1", &[]).await,
        "DUNNO"
    );
    site.stop().await;

    let site = start(&format!("{SAFE}[dnsbl]\nexempt_recipients = []\n")).await;
    let a = site.ask("", "postmaster@example.net", LISTED, &[]).await;
    assert!(a.starts_with("550 5.7.1 "), "no exemption configured: {a}");
    site.stop().await;
}

#[tokio::test]
async fn issue10_mode_all_and_custom_reply() {
    let site = start(
        "[[dnsbl.zones]]\nzone = \"spam.test\"\nmode = \"all\"\nreply = \"Listed at {zone} ({ip})\"\n",
    )
    .await;
    let a = site
        .ask("joe@example.org", "ann@example.net", LISTED, &[])
        .await;
    assert_eq!(a, "550 5.7.1 Listed at spam.test (192.0.2.7)");
    site.stop().await;
}

#[tokio::test]
async fn issue10_a_list_that_does_not_answer_fails_open_and_says_so() {
    let logs = LogCapture::default();
    let _guard = logs.install();
    let site = start("[[dnsbl.zones]]\nzone = \"slow.test\"\n").await;
    site.dns.silence_zone("slow.test");
    assert_eq!(site.ask("", "ann@example.net", LISTED, &[]).await, "DUNNO");
    site.stop().await;
    let lines = logs.lines_with("block list did not answer");
    assert_eq!(lines.len(), 1, "{}", logs.text());
    assert!(lines[0].contains("slow.test"), "{}", lines[0]);
    assert!(lines[0].contains("accept"), "{}", lines[0]);

    // ... or, when asked to, fails temporarily.
    let site =
        start("[[dnsbl.zones]]\nzone = \"slow.test\"\n[dnsbl]\non_error = \"tempfail\"\n").await;
    site.dns.set_mode(ServerMode::ServFail);
    let a = site.ask("", "ann@example.net", LISTED, &[]).await;
    assert!(a.starts_with("451 4.7.1 "), "{a}");
    site.stop().await;
}

#[tokio::test]
async fn issue10_answers_are_asked_once_per_message_and_cached_for_their_ttl() {
    let site = start(SAFE).await;
    let mut c = PolicyClient::connect(site.policy).await.unwrap();
    for rcpt in ["a@example.net", "b@example.net", "c@example.net"] {
        let a = c
            .ask(&policy_request("RCPT", LISTED, "", rcpt, 0, "m.1", &[]))
            .await
            .unwrap();
        assert!(a.starts_with("550 5.7.1 "), "{a}");
    }
    // Another message a moment later: the resolver's cache answers.
    let a = c
        .ask(&policy_request(
            "RCPT",
            LISTED,
            "",
            "a@example.net",
            0,
            "m.2",
            &[],
        ))
        .await
        .unwrap();
    assert!(a.starts_with("550 5.7.1 "), "{a}");
    assert_eq!(site.list_queries(), 1, "{:?}", site.dns.queries());
    site.stop().await;
}

#[tokio::test]
async fn issue10_dry_run_refuses_nothing() {
    let logs = LogCapture::default();
    let _guard = logs.install();
    let site = start(&format!("dry_run = true\n{SAFE}")).await;
    assert_eq!(site.ask("", "ann@example.net", LISTED, &[]).await, "DUNNO");
    site.stop().await;
    assert_eq!(
        logs.count("dry run: would have refused"),
        1,
        "{}",
        logs.text()
    );
}

#[tokio::test]
async fn issue10_the_milter_refuses_a_listed_bounce_at_rcpt() {
    let site = start(SAFE).await;
    let mut conn = TestConnection::open(site.milter).await.expect("negotiate");
    conn.macros(MacroStage::Connect, [("j", "mx.nobounce.test")])
        .await
        .unwrap();
    let ip: IpAddr = LISTED.parse().unwrap();
    conn.connect("client.example", (ip, 40000)).await.unwrap();
    conn.helo("client.example").await.unwrap();
    assert_eq!(conn.mail(["<>"]).await.unwrap(), Status::Continue);
    match conn.rcpt(["<ann@example.net>"]).await.unwrap() {
        Status::Reject { message: Some(m) } => {
            let m = m.to_string_lossy();
            assert!(m.starts_with("550 5.7.1 Service unavailable"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    conn.close().await.unwrap();
    site.stop().await;
}
