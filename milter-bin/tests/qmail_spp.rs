//! Issue 12: the qmail-spp contract. `nobounce qmail-spp` is run exactly as
//! qmail-smtpd's qmail-spp patch runs a plugin (no standard input, only
//! qmail-smtpd's environment, one output line read) and as the RCPTCHECK
//! patch runs its program (environment SENDER and RECIPIENT, exit code),
//! against a nobounce whose policy service runs in this test.
//!
//! qmail is not packaged for Debian 12, so the reading side is qmail-spp's
//! own logic (spp.c) written out in [`qmail_smtpd_reads`].

use nobounce_config::Config;
use nobounce_test_support::{
    dns::{TestDnsServer, TestRecord},
    free_port, Background,
};
use std::{
    fs,
    net::SocketAddr,
    process::{Command, Output, Stdio},
};

struct Site {
    _dns: TestDnsServer,
    _dir: tempfile::TempDir,
    policy: SocketAddr,
    config: std::path::PathBuf,
    daemon: Option<Background<Result<(), nobounce_server::RunError>>>,
}

impl Site {
    async fn stop(&mut self) {
        if let Some(d) = self.daemon.take() {
            d.stop().await.unwrap().unwrap();
        }
    }
}

async fn site() -> Site {
    let dns = TestDnsServer::start([
        TestRecord::txt("pass.test", "v=spf1 ip4:192.0.2.0/24 -all", 300),
        TestRecord::txt("fail.test", "v=spf1 -all", 300),
    ])
    .await
    .expect("DNS server");
    let dir = tempfile::tempdir().expect("tempdir");
    let map = dir.path().join("recipients");
    fs::write(&map, "ann@example.net\nfull@example.net\n").unwrap();
    // full@ is at its quota already: qmail has no SIZE, so only such a
    // mailbox can be refused.
    let full = dir.path().join("full");
    fs::create_dir_all(&full).unwrap();
    fs::write(full.join("maildirsize"), "1000S\n1000 4\n").unwrap();
    let policy = SocketAddr::from(([127, 0, 0, 1], free_port().expect("free port")));
    let text = format!(
        "[policy]\nsocket = \"inet:{policy}\"\n\
         [dns]\nnameservers = [\"{dns}\"]\ntimeout = \"1s\"\nattempts = 1\n\
         [spf]\ntrusted_networks = []\n\
         [dictionary]\nthreshold = 3\n\
         [recipients]\ndefault_chain = [\"users\", \"quota\"]\n\
         [recipients.backends.users]\ntype = \"map_file\"\npath = \"{map}\"\n\
         [recipients.backends.quota]\ntype = \"maildir\"\npath_template = \"{root}/{{local}}\"\n",
        dns = dns.addr(),
        map = map.display(),
        root = dir.path().display(),
    );
    let config_path = dir.path().join("nobounce.toml");
    fs::write(&config_path, &text).unwrap();
    let config = Config::from_toml_str(&text).expect("config");
    let milter = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let daemon = Background::spawn(|stop| nobounce_server::run_tcp(milter, config, stop));
    daemon
        .wait_listening(policy)
        .await
        .expect("the policy service listens");
    Site {
        _dns: dns,
        _dir: dir,
        policy,
        config: config_path,
        daemon: Some(daemon),
    }
}

/// Runs the plugin as qmail-spp does: `/bin/sh -c` (a `:` line in
/// control/smtpplugins), standard input closed, qmail-smtpd's environment
/// only.
async fn run(command: &str, env: &[(&str, &str)]) -> Output {
    let mut c = Command::new("/bin/sh");
    c.arg("-c")
        .arg(format!(
            "exec {} {command} 0<&-",
            env!("CARGO_BIN_EXE_nobounce")
        ))
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    tokio::task::spawn_blocking(move || c.output().expect("plugin runs"))
        .await
        .unwrap()
}

/// What qmail-smtpd does with a plugin's output (qmail-spp's spp.c): the
/// first line decides; `E` replies with the rest and refuses the command,
/// `R` replies and drops the connection, `D` drops it silently, `N`/`O`/`A`
/// accept, nothing accepts. Returns (reply sent, connection dropped,
/// command refused).
fn qmail_smtpd_reads(output: &Output) -> (Option<String>, bool, bool) {
    assert_eq!(
        output.status.code(),
        Some(0),
        "a qmail-spp plugin exits 0 (120 or a crash make qmail say 451)"
    );
    let stdout = String::from_utf8(output.stdout.clone()).expect("UTF-8 output");
    let Some(line) = stdout.lines().next() else {
        return (None, false, false);
    };
    assert!(stdout.ends_with('\n'), "the line is ended: {stdout:?}");
    assert_eq!(stdout.lines().count(), 1, "one line: {stdout:?}");
    let (cmd, rest) = line.split_at(1);
    match cmd {
        "E" => (Some(format!("{rest}\r\n")), false, true),
        "R" => (Some(format!("{rest}\r\n")), true, true),
        "D" => (None, true, true),
        "N" | "O" | "A" => (None, false, false),
        other => panic!("not a qmail-spp command: {other:?} in {stdout:?}"),
    }
}

fn spp_env<'a>(from: &'a str, rcpt: Option<&'a str>) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("TCPREMOTEIP", "192.0.2.7"),
        ("TCPREMOTEHOST", "client.pass.test"),
        ("TCPLOCALIP", "127.0.0.1"),
        ("SMTPHELOHOST", "client.pass.test"),
        ("SMTPMAILFROM", from),
    ];
    if let Some(rcpt) = rcpt {
        env.extend([
            ("SMTPRCPTTO", rcpt),
            ("SMTPRCPTCOUNT", "0"),
            ("SMTPRCPTCOUNTALL", "1"),
            ("SMTPRCPTHOSTSOK", "1"),
        ]);
    }
    env
}

#[tokio::test]
async fn issue12_qmail_spp_mail_and_rcpt_sections() {
    let mut site = site().await;
    let plugin = format!("qmail-spp --config {}", site.config.display());

    // [mail]: an SPF fail sender is refused with nobounce's reply.
    let out = run(
        &format!("{plugin} --stage mail"),
        &spp_env("eve@fail.test", None),
    )
    .await;
    let (reply, dropped, refused) = qmail_smtpd_reads(&out);
    let reply = reply.expect("a reply");
    assert!(reply.starts_with("550 5.7.23 "), "{reply:?}");
    assert!(refused && !dropped);

    // [mail]: a good sender prints nothing; even with the previous
    // message's SMTPRCPTTO still set (qmail-spp does not clear it).
    let out = run(
        &format!("{plugin} --stage mail"),
        &spp_env("joe@pass.test", Some("nobody@example.net")),
    )
    .await;
    assert_eq!(qmail_smtpd_reads(&out), (None, false, false), "{out:?}");

    // [rcpt]: unknown, full, known.
    let out = run(
        &plugin,
        &spp_env("joe@pass.test", Some("nobody@example.net")),
    )
    .await;
    let (reply, dropped, _) = qmail_smtpd_reads(&out);
    assert!(reply.unwrap().starts_with("550 5.1.1 "));
    assert!(!dropped);
    let out = run(&plugin, &spp_env("joe@pass.test", Some("full@example.net"))).await;
    let (reply, _, refused) = qmail_smtpd_reads(&out);
    assert!(reply.unwrap().starts_with("452 4.2.2 "), "{out:?}");
    assert!(refused);
    let out = run(&plugin, &spp_env("joe@pass.test", Some("ann@example.net"))).await;
    assert_eq!(qmail_smtpd_reads(&out), (None, false, false));
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A dictionary attack: two more unknown recipients reach the threshold
    // of 3; the ban is an R421, and qmail-smtpd drops the connection.
    for rcpt in ["x1@example.net", "x2@example.net"] {
        let out = run(&plugin, &spp_env("joe@pass.test", Some(rcpt))).await;
        assert!(qmail_smtpd_reads(&out).2);
    }
    let out = run(
        &format!("{plugin} --stage mail"),
        &spp_env("joe@pass.test", None),
    )
    .await;
    let (reply, dropped, _) = qmail_smtpd_reads(&out);
    assert!(reply.unwrap().starts_with("421 4.7.0 "), "{out:?}");
    assert!(dropped, "a ban drops the connection");

    // nobounce down: a temporary failure, never an accept.
    site.stop().await;
    let out = run(&plugin, &spp_env("joe@pass.test", Some("ann@example.net"))).await;
    let (reply, dropped, refused) = qmail_smtpd_reads(&out);
    assert!(reply.unwrap().starts_with("451 4.3.0 "));
    assert!(refused && !dropped);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot ask nobounce"), "{stderr}");
}

#[tokio::test]
async fn issue12_rcptcheck_exit_codes() {
    let mut site = site().await;
    let socket = format!("inet:{}", site.policy);
    let check = |rcpt: &'static str| {
        let socket = socket.clone();
        async move {
            let out = run(
                &format!("qmail-spp --socket {socket}"),
                &[
                    ("TCPREMOTEIP", "192.0.2.7"),
                    ("SENDER", "joe@pass.test"),
                    ("RECIPIENT", rcpt),
                ],
            )
            .await;
            assert!(out.stdout.is_empty(), "RCPTCHECK reads no output");
            out.status.code()
        }
    };
    assert_eq!(check("ann@example.net").await, Some(0));
    assert_eq!(check("nobody@example.net").await, Some(100));
    assert_eq!(check("full@example.net").await, Some(111));
    site.stop().await;
    assert_eq!(check("ann@example.net").await, Some(111), "down: try later");
}

#[tokio::test]
async fn issue12_broken_setups_fail_temporarily() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    fs::write(&bad, "[policy]\nsocket = 7\n").unwrap();
    let none = dir.path().join("none.toml");
    fs::write(&none, "").unwrap();
    for (args, why) in [
        (
            format!("qmail-spp --config {}", bad.display()),
            "bad.toml:2",
        ),
        (
            format!("qmail-spp --config {}", none.display()),
            "no policy socket",
        ),
        (
            "qmail-spp --socket inet:127.0.0.1:1 --timeout nonsense".to_owned(),
            "--timeout",
        ),
    ] {
        let out = run(&args, &spp_env("joe@pass.test", Some("ann@example.net"))).await;
        let (reply, _, refused) = qmail_smtpd_reads(&out);
        assert!(reply.unwrap().starts_with("451 4.3.0 "), "{args}");
        assert!(refused);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(why), "{args}: {stderr}");
    }
    // Not run by qmail-smtpd at all.
    let out = run("qmail-spp --socket inet:127.0.0.1:1", &[]).await;
    assert!(String::from_utf8_lossy(&out.stderr).contains("not run by qmail-smtpd"));
}
