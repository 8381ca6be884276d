//! Issue 15: `nobounce check` explains a decision: an SPF fail, an unknown
//! recipient and an active ban, against the test's own loopback DNS, a map
//! file and a running nobounce (for its bans); and it writes nothing.

use nobounce_test_support::{
    dns::{TestDnsServer, TestRecord},
    free_port, Background,
};
use std::{fs, path::Path, process::Output};

async fn check(config: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_nobounce"));
    cmd.arg("check").arg("--config").arg(config).args(args);
    let out: Output = tokio::task::spawn_blocking(move || cmd.output().expect("runs"))
        .await
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

struct Site {
    _dns: TestDnsServer,
    dir: tempfile::TempDir,
    config: std::path::PathBuf,
    text: String,
}

async fn site() -> Site {
    let dns = TestDnsServer::start([
        TestRecord::txt("pass.test", "v=spf1 ip4:192.0.2.0/24 -all", 300),
        TestRecord::txt("fail.test", "v=spf1 -all", 300),
    ])
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let map = dir.path().join("users");
    fs::write(&map, "ann@example.net\n").unwrap();
    let text = format!(
        "socket = \"inet:127.0.0.1:{}\"\n\
         [dns]\nnameservers = [\"{}\"]\ntimeout = \"1s\"\nattempts = 1\n\
         [spf]\ntrusted_networks = []\n\
         [dictionary]\nthreshold = 2\n\
         [recipients]\ndefault_chain = [\"users\"]\n\
         [recipients.backends.users]\ntype = \"map_file\"\npath = \"{}\"\n\
         [store]\ncontrol_socket = \"{}\"\n",
        free_port().unwrap(),
        dns.addr(),
        map.display(),
        dir.path().join("control.sock").display()
    );
    let config = dir.path().join("nobounce.toml");
    fs::write(&config, &text).unwrap();
    Site {
        _dns: dns,
        dir,
        config,
        text,
    }
}

#[tokio::test]
async fn issue15_check_explains_an_spf_fail() {
    let site = site().await;
    let (code, out, err) = check(
        &site.config,
        &[
            "--client-ip",
            "192.0.2.7",
            "--from",
            "eve@fail.test",
            "--to",
            "ann@example.net",
        ],
    )
    .await;
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(
        out.contains("SPF: fail for eve@fail.test (mailfrom)"),
        "{out}"
    );
    assert!(
        out.contains("matched all"),
        "the mechanism that matched: {out}"
    );
    assert!(
        out.contains("MAIL FROM:<eve@fail.test> reject: 550 5.7.23"),
        "{out}"
    );
    assert!(
        !out.contains("RCPT TO"),
        "recipients are not reached: {out}"
    );
    assert!(out.contains("result: refused (exit 2)"), "{out}");
}

#[tokio::test]
async fn issue15_check_explains_an_unknown_recipient_and_writes_nothing() {
    let site = site().await;
    // A running nobounce, whose bans check reads through the control socket.
    let config = nobounce_config::Config::from_toml_str(&site.text).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let daemon = Background::spawn(|stop| {
        nobounce_server::run(
            nobounce_server::MilterListener::Tcp(listener),
            config,
            tokio::sync::mpsc::channel(1).1,
            stop,
        )
    });
    let control = site.dir.path().join("control.sock");
    while !control.exists() {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let args = [
        "--client-ip",
        "192.0.2.7",
        "--from",
        "joe@pass.test",
        "--to",
        "ann@example.net",
        "--to",
        "nobody@example.net",
        "--to",
        "other@example.net",
    ];
    for _ in 0..2 {
        let (code, out, err) = check(&site.config, &args).await;
        assert_eq!(code, Some(2), "{out}{err}");
        assert!(out.contains("SPF: pass"), "{out}");
        assert!(out.contains("RCPT TO:<ann@example.net> accept"), "{out}");
        assert!(
            out.contains("RCPT TO:<nobody@example.net> reject: 550 5.1.1 No such user here"),
            "{out}"
        );
        assert!(
            out.contains("recipient backend \"users\": unknown"),
            "{out}"
        );
        // Two unknown recipients reach the threshold of 2 in check's own
        // private store only: the live store gets no strike, no ban.
        assert!(out.contains("ban: none"), "{out}");
    }
    let bans = nobounce_server::control::request(&control, "LIST")
        .await
        .unwrap();
    assert!(bans.is_empty(), "check wrote to the store: {bans:?}");
    daemon.stop().await.unwrap().unwrap();
}

#[tokio::test]
async fn issue15_check_explains_an_active_ban() {
    let site = site().await;
    let config = nobounce_config::Config::from_toml_str(&site.text).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let daemon = Background::spawn(|stop| {
        nobounce_server::run(
            nobounce_server::MilterListener::Tcp(listener),
            config,
            tokio::sync::mpsc::channel(1).1,
            stop,
        )
    });
    let control = site.dir.path().join("control.sock");
    while !control.exists() {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let reply = nobounce_server::control::request(&control, "ADD 192.0.2.66 3600")
        .await
        .unwrap();
    assert!(reply[0].starts_with("OK "), "{reply:?}");
    let (code, out, err) = check(
        &site.config,
        &[
            "--client-ip",
            "192.0.2.66",
            "--from",
            "joe@pass.test",
            "--to",
            "ann@example.net",
            "--json",
        ],
    )
    .await;
    assert_eq!(code, Some(3), "a 421 is a 4xx: {out}{err}");
    let v: serde_json::Value =
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["result"], "tempfailed");
    assert_eq!(v["exit"], 3);
    assert_eq!(v["ban"]["key"], "192.0.2.66", "{v}");
    assert_eq!(v["stages"][0]["stage"], "mail");
    assert_eq!(v["stages"][0]["action"], "disconnect");
    assert_eq!(v["stages"][0]["policy"], "dictionary");
    assert!(
        v["stages"][0]["reply"]
            .as_str()
            .unwrap()
            .starts_with("421 4.7.0 "),
        "{v}"
    );
    daemon.stop().await.unwrap().unwrap();
}

#[tokio::test]
async fn issue15_check_exits_1_when_it_cannot_run() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    fs::write(&bad, "[spf]\nbogus = 1\n").unwrap();
    let (code, _, err) = check(
        &bad,
        &[
            "--client-ip",
            "192.0.2.7",
            "--from",
            "a@b.test",
            "--to",
            "c@d.test",
        ],
    )
    .await;
    assert_eq!(code, Some(1));
    assert!(err.contains("bogus") && err.contains(":2:"), "{err}");
}
