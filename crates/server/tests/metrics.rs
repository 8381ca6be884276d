//! Issue 15: the metrics endpoint, scraped after real milter traffic
//! (indymilter-test over a socket to the whole daemon, a test DNS server,
//! a map file), checks the values.

use indymilter_test::{MacroStage, Status, TestConnection};
use nobounce_config::Config;
use nobounce_test_support::{
    dns::{TestDnsServer, TestRecord},
    free_port, Background,
};
use std::{
    fs,
    net::{IpAddr, SocketAddr},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn scrape(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The value of the sample `line_start` (name and labels), or 0.
fn value(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(line_start)
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

async fn message(milter: SocketAddr, client: IpAddr, sender: &str, rcpts: &[&str]) -> Vec<Status> {
    let mut conn = TestConnection::open(milter).await.expect("negotiate");
    conn.macros(MacroStage::Connect, [("j", "mx.nobounce.test")])
        .await
        .unwrap();
    conn.connect("client", (client, 4000)).await.unwrap();
    conn.helo("client.pass.test").await.unwrap();
    let mut out = vec![conn.mail([sender]).await.unwrap()];
    if out[0] == Status::Continue {
        for r in rcpts {
            out.push(conn.rcpt([*r]).await.unwrap());
        }
        let (_, eom) = conn.eom().await.unwrap();
        out.push(eom);
    }
    conn.close().await.unwrap();
    out
}

#[tokio::test]
async fn issue15_metrics_after_real_milter_traffic() {
    let dns = TestDnsServer::start([
        TestRecord::txt("pass.test", "v=spf1 ip4:192.0.2.0/24 -all", 300),
        TestRecord::txt("fail.test", "v=spf1 -all", 300),
    ])
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let map = dir.path().join("users");
    fs::write(&map, "ann@example.net\n").unwrap();
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port().unwrap()));
    let config = Config::from_toml_str(&format!(
        "[metrics]\nlisten = \"{metrics}\"\n\
         [dns]\nnameservers = [\"{}\"]\ntimeout = \"1s\"\nattempts = 1\n\
         [spf]\ntrusted_networks = []\n\
         [dictionary]\nthreshold = 3\n\
         [recipients]\ndefault_chain = [\"users\"]\n\
         [recipients.backends.users]\ntype = \"map_file\"\npath = \"{}\"\n",
        dns.addr(),
        map.display()
    ))
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let milter = listener.local_addr().unwrap();
    let daemon = Background::spawn(|stop| nobounce_server::run_tcp(listener, config, stop));
    daemon
        .wait_listening(metrics)
        .await
        .expect("metrics endpoint");

    let good: IpAddr = "192.0.2.10".parse().unwrap();
    let prober: IpAddr = "192.0.2.66".parse().unwrap();
    // Two good messages (the second SPF answer comes from the cache).
    for _ in 0..2 {
        let s = message(milter, good, "<joe@pass.test>", &["<ann@example.net>"]).await;
        assert!(s.iter().all(|s| *s == Status::Continue), "{s:?}");
    }
    // An SPF fail.
    let s = message(milter, good, "<eve@fail.test>", &[]).await;
    assert!(matches!(s[0], Status::Reject { .. }), "{s:?}");
    // A dictionary attack: 3 unknown recipients, then the ban at MAIL.
    let s = message(
        milter,
        prober,
        "<x@pass.test>",
        &["<a@example.net>", "<b@example.net>", "<c@example.net>"],
    )
    .await;
    assert_eq!(
        s.iter()
            .filter(|s| matches!(s, Status::Reject { .. }))
            .count(),
        3,
        "{s:?}"
    );
    let s = message(milter, prober, "<x@pass.test>", &[]).await;
    assert!(matches!(s[0], Status::Tempfail { .. }), "banned: {s:?}");

    let (status, text) = scrape(metrics, "/metrics").await;
    assert_eq!(status, 200, "{text}");
    let v = |line: &str| value(&text, line);
    assert_eq!(
        v("nobounce_decisions_total{stage=\"mail\",policy=\"spf\",action=\"reject\"}"),
        1.0,
        "{text}"
    );
    assert_eq!(
        v("nobounce_decisions_total{stage=\"rcpt\",policy=\"recipient\",action=\"reject\"}"),
        3.0,
        "{text}"
    );
    assert_eq!(
        v("nobounce_decisions_total{stage=\"mail\",policy=\"dictionary\",action=\"disconnect\"}"),
        1.0,
        "{text}"
    );
    assert_eq!(
        v("nobounce_decisions_total{stage=\"rcpt\",policy=\"none\",action=\"accept\"}"),
        2.0,
        "{text}"
    );
    assert_eq!(
        v("nobounce_spf_results_total{result=\"pass\"}"),
        3.0,
        "{text}"
    );
    assert_eq!(
        v("nobounce_spf_results_total{result=\"fail\"}"),
        1.0,
        "{text}"
    );
    assert_eq!(
        v("nobounce_directory_lookups_total{backend=\"users\",outcome=\"deliverable\"}"),
        2.0,
        "{text}"
    );
    assert_eq!(
        v("nobounce_directory_lookups_total{backend=\"users\",outcome=\"unknown\"}"),
        3.0,
        "{text}"
    );
    assert_eq!(
        v("nobounce_directory_lookup_seconds_count{backend=\"users\"}"),
        5.0,
        "{text}"
    );
    assert_eq!(v("nobounce_bans_added_total"), 1.0, "{text}");
    assert_eq!(v("nobounce_bans_active"), 1.0, "{text}");
    assert!(v("nobounce_spf_cache_hits_total") >= 1.0, "{text}");
    assert!(v("nobounce_spf_cache_misses_total") >= 2.0, "{text}");
    assert!(v("nobounce_spf_cache_entries") >= 2.0, "{text}");
    assert_eq!(
        v("nobounce_connections{protocol=\"milter\"}"),
        0.0,
        "all closed: {text}"
    );
    assert_eq!(
        v("nobounce_command_seconds_count{protocol=\"milter\",stage=\"rcpt\"}"),
        5.0,
        "{text}"
    );
    // No address or IP in any label.
    assert!(!text.contains("192.0.2."), "{text}");
    assert!(!text.contains("example.net"), "{text}");
    assert_eq!(scrape(metrics, "/other").await.0, 404);
    daemon.stop().await.unwrap().unwrap();
}
