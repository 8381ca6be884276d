//! The `nobounce` binary as an admin uses it.

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_nobounce"))
}

fn docs(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../docs")
        .join(file)
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("kill runs")
        .success();
    assert!(ok, "kill {sig} failed");
}

/// Collects stderr lines of a child in the background.
fn stderr_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().expect("piped stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[nobounce] {line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn wait_for_line(rx: &mpsc::Receiver<String>, needle: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    panic!("no log line containing {needle:?}");
}

fn free_port() -> u16 {
    nobounce_test_support::free_port().expect("free port")
}

async fn negotiates(addr: &str) {
    let conn = indymilter_test::TestConnection::open(addr)
        .await
        .expect("milter answers negotiation");
    assert!(conn
        .negotiated_actions()
        .contains(indymilter_test::Actions::ADD_HEADER));
    conn.close().await.expect("close");
}

#[test]
fn config_check_accepts_the_sample_and_prints_effective_config() {
    let out = bin()
        .args(["config", "check"])
        .arg(docs("nobounce.toml"))
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("socket = \"inet:127.0.0.1:8894\""),
        "{stdout}"
    );
    assert!(stdout.contains("[spf]"), "{stdout}");
}

#[test]
fn config_check_names_unknown_key_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "socket = \"inet:127.0.0.1:8894\"\n\n[spf]\non_fial = \"reject\"\n",
    )
    .expect("write");
    let out = bin()
        .args(["config", "check"])
        .arg(&file)
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:4:"), "{err}");
    assert!(err.contains("on_fial"), "{err}");
}

#[test]
fn config_check_of_a_missing_file_fails() {
    let out = bin()
        .args(["config", "check", "/nonexistent/nobounce.toml"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/nobounce.toml"));
}

/// Issue 2: `nobounce run` with no arguments listens on 127.0.0.1:8894 and
/// answers milter negotiation; SIGTERM makes it exit 0.
#[tokio::test(flavor = "multi_thread")]
async fn run_without_arguments_listens_on_default_socket() {
    let mut child = bin()
        .arg("run")
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    let rx = stderr_lines(&mut child);
    wait_for_line(&rx, "inet:127.0.0.1:8894");
    negotiates("127.0.0.1:8894").await;
    signal(&child, "-TERM");
    let status = child.wait().expect("exits");
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_and_a_bad_file_keeps_the_old_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("nobounce.toml");
    let port = free_port();
    let socket = format!("inet:127.0.0.1:{port}");
    let control = dir.path().join("control.sock");
    let base = format!(
        "socket = \"{socket}\"\n[store]\ncontrol_socket = \"{}\"\n",
        control.display()
    );
    std::fs::write(&file, &base).expect("write");
    let mut child = bin()
        .args(["run", "--config"])
        .arg(&file)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    let rx = stderr_lines(&mut child);
    wait_for_line(&rx, "nobounce listening");

    std::fs::write(&file, format!("dry_run = true\n{base}")).expect("write");
    signal(&child, "-HUP");
    wait_for_line(&rx, "configuration reloaded");

    std::fs::write(&file, "socket = \"inet:127.0.0.1:1\"\n[spf]\nbogus = 1\n").expect("write");
    signal(&child, "-HUP");
    let line = wait_for_line(&rx, "reload failed");
    assert!(line.contains("bogus") && line.contains(":3:"), "{line}");
    // Still serving on the old socket.
    negotiates(&format!("127.0.0.1:{port}")).await;

    signal(&child, "-INT");
    assert!(child.wait().expect("exits").success());
}

#[test]
fn unknown_socket_syntax_is_a_clear_error() {
    let out = bin()
        .args(["run", "--socket", "tcp:somewhere"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid socket"));
}

/// Issue 5: `nobounce ban add/list/lift` against the running milter's
/// in-memory store, through its control socket.
#[tokio::test(flavor = "multi_thread")]
async fn ban_commands_reach_the_running_milter() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("nobounce.toml");
    let control = dir.path().join("control.sock");
    std::fs::write(
        &file,
        format!(
            "socket = \"inet:127.0.0.1:{}\"\n[store]\ncontrol_socket = \"{}\"\n",
            free_port(),
            control.display()
        ),
    )
    .expect("write");
    let mut child = bin()
        .args(["run", "--config"])
        .arg(&file)
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    let rx = stderr_lines(&mut child);
    wait_for_line(&rx, "nobounce listening");

    let ban = |args: &[&str]| {
        let out = bin()
            .arg("ban")
            .args(args)
            .arg("--config")
            .arg(&file)
            .output()
            .expect("runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(ban(&["list"]), "");
    let added = ban(&["add", "192.0.2.1", "--for", "1h"]);
    assert!(added.starts_with("banned 192.0.2.1 until "), "{added}");
    ban(&["add", "2001:db8:1:2::99", "--for", "30m"]);
    let listed = ban(&["list"]);
    assert!(listed.contains("192.0.2.1\tuntil "), "{listed}");
    assert!(listed.contains("2001:db8:1:2::/64\tuntil "), "{listed}");
    assert!(ban(&["lift", "192.0.2.1"]).starts_with("lifted 192.0.2.1"));
    let listed = ban(&["list"]);
    assert!(!listed.contains("192.0.2.1\t"), "{listed}");

    // A week is the longest ban.
    let out = bin()
        .args(["ban", "add", "192.0.2.2", "--for", "30d", "--config"])
        .arg(&file)
        .output()
        .expect("runs");
    assert!(!out.status.success());

    signal(&child, "-TERM");
    assert!(child.wait().expect("exits").success());
    assert!(!control.exists(), "control socket removed at exit");
}

/// Issue 14: `config check` builds what `run` would: a missing map file
/// and a route to an undefined backend are errors at their lines, with the
/// same messages `run` gives, and the exit code says so.
#[test]
fn issue14_config_check_builds_backends_and_routes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("nobounce.toml");
    let missing = dir.path().join("no-such-map");
    std::fs::write(
        &file,
        format!(
            "[spf]\nenabled = true\n\n[recipients.backends.users]\ntype = \"map_file\"\npath = \"{}\"\n",
            missing.display()
        ),
    )
    .expect("write");
    let out = bin()
        .args(["config", "check"])
        .arg(&file)
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nobounce.toml:6:1: recipients.backends.users.path: "),
        "{err}"
    );
    assert!(err.contains("no-such-map"), "{err}");
    // `run` fails the same way.
    let run = bin()
        .args([
            "run",
            "--socket",
            &format!("inet:127.0.0.1:{}", free_port()),
            "--config",
        ])
        .arg(&file)
        .output()
        .expect("runs");
    assert!(!run.status.success());
    assert!(
        String::from_utf8_lossy(&run.stderr)
            .contains("nobounce.toml:6:1: recipients.backends.users.path: "),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );

    std::fs::write(&missing, "alice@example.org\n").expect("write map");
    std::fs::write(
        &file,
        format!(
            "[recipients.backends.users]\ntype = \"map_file\"\npath = \"{}\"\n\n[[recipients.routes]]\ndomains = [\"example.org\"]\nchain = [\"users\", \"quota\"]\n",
            missing.display()
        ),
    )
    .expect("write");
    let out = bin()
        .args(["config", "check"])
        .arg(&file)
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nobounce.toml:7:1: recipients.routes[0].chain: no backend named \"quota\""),
        "{err}"
    );
}

/// Issue 15: `[log] format = "json"`: every line parses as one JSON
/// object, and a refusal carries the fields nobounce(8) documents.
#[tokio::test]
async fn issue15_json_log_lines_parse_and_carry_the_documented_fields() {
    let dir = tempfile::tempdir().expect("tempdir");
    let map = dir.path().join("users");
    std::fs::write(&map, "ann@example.net\n").unwrap();
    let file = dir.path().join("nobounce.toml");
    let port = free_port();
    std::fs::write(
        &file,
        format!(
            "socket = \"inet:127.0.0.1:{port}\"\n[log]\nformat = \"json\"\n\
             [spf]\nenabled = false\n[store]\ncontrol_socket = \"\"\n\
             [recipients]\ndefault_chain = [\"users\"]\n\
             [recipients.backends.users]\ntype = \"map_file\"\npath = \"{}\"\n",
            map.display()
        ),
    )
    .unwrap();
    let mut child = bin()
        .args(["run", "--config"])
        .arg(&file)
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    let rx = stderr_lines(&mut child);
    let first = wait_for_line(&rx, "nobounce listening");
    let mut lines = vec![first];
    let mut conn = indymilter_test::TestConnection::open(format!("127.0.0.1:{port}").as_str())
        .await
        .expect("negotiate");
    conn.connect(
        "client.example",
        ("192.0.2.7".parse::<std::net::IpAddr>().unwrap(), 4000),
    )
    .await
    .unwrap();
    conn.helo("client.example").await.unwrap();
    conn.macros(indymilter_test::MacroStage::Mail, [("i", "4NJQ1X6Zq2z9sR")])
        .await
        .unwrap();
    conn.mail(["<joe@example.org>"]).await.unwrap();
    let st = conn.rcpt(["<nobody@example.net>"]).await.unwrap();
    assert!(
        matches!(st, indymilter_test::Status::Reject { .. }),
        "{st:?}"
    );
    conn.close().await.unwrap();
    lines.push(wait_for_line(&rx, "nobounce::decision"));
    signal(&child, "-TERM");
    assert!(child.wait().expect("exits").success());
    while let Ok(l) = rx.try_recv() {
        lines.push(l);
    }
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON: {e}: {line}"));
        for key in ["timestamp", "level", "target", "fields"] {
            assert!(v.get(key).is_some(), "{key} missing: {line}");
        }
        assert!(
            v["timestamp"].as_str().unwrap().ends_with('Z'),
            "UTC: {line}"
        );
    }
    let decision: serde_json::Value = lines
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["target"] == "nobounce::decision")
        .expect("a decision line");
    let f = &decision["fields"];
    assert_eq!(f["queue_id"], "4NJQ1X6Zq2z9sR", "{decision}");
    assert_eq!(f["client_ip"], "192.0.2.7", "{decision}");
    assert_eq!(f["client_name"], "client.example", "{decision}");
    assert_eq!(f["stage"], "rcpt", "{decision}");
    assert_eq!(f["policy"], "recipient", "{decision}");
    assert_eq!(f["decision"], "reject", "{decision}");
    assert_eq!(f["reply"], "550 5.1.1 No such user here", "{decision}");
    assert_eq!(f["dry_run"], false, "{decision}");
    assert!(f["reason"].is_string(), "{decision}");
    // Every field of the decision line is documented in nobounce(8).
    let man = std::fs::read_to_string(docs("man/nobounce.8")).unwrap();
    for key in f.as_object().unwrap().keys().filter(|k| *k != "message") {
        assert!(
            man.contains(&format!(".B {key}")),
            "{key} not in nobounce(8)"
        );
    }
}
