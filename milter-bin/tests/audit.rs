//! `nobounce audit` as an admin runs it, on the maillog captured from the
//! project's own Postfix run (tests/tests/audit_e2e.rs): 5 bounces, 4 of
//! them preventable.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../crates/audit/tests/fixtures")
        .join(name)
}

fn audit(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_nobounce"))
        .arg("audit")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nobounce runs");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(input)
            .expect("write stdin");
    }
    child.wait_with_output().expect("nobounce exits")
}

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

fn maillog() -> String {
    fixture("postfix-maillog").display().to_string()
}

#[test]
fn json_has_the_fixed_keys_and_the_runs_counts() {
    let v = json(&audit(&["--json", &maillog()], None));
    assert_eq!(v["bounces"], 5);
    assert_eq!(v["preventable"], 4);
    assert_eq!(
        v["by_reason"],
        serde_json::json!({"unknown_user": 3, "over_quota": 1, "relay_refused": 1})
    );
    assert_eq!(
        v["by_sender_domain"],
        serde_json::json!({"a.test": 1, "b.test": 2, "c.test": 1, "d.test": 1})
    );
    let days = v["by_day"].as_object().expect("by_day");
    assert_eq!(days.len(), 1);
    let (day, counts) = days.iter().next().expect("one day");
    // Syslog dates have no year: it comes from the file's mtime.
    assert!(day.ends_with("-11-29"), "{day}");
    assert_eq!(counts, &serde_json::json!({"bounces": 5, "preventable": 4}));
    assert_eq!(v["by_mta"], serde_json::json!({"postfix": 5}));
    assert_eq!(v["unparsable_lines"], 0);
}

#[test]
fn the_table_shows_totals_reasons_domains_and_days() {
    let out = audit(&[&maillog()], None);
    assert!(out.status.success());
    let table = String::from_utf8(out.stdout).expect("UTF-8");
    assert!(
        table.contains("Bounces the server generated:           5"),
        "{table}"
    );
    assert!(
        table.contains("nobounce would have refused:         4  (80%"),
        "{table}"
    );
    for row in [
        "unknown user",
        "over quota",
        "relay refused",
        "b.test",
        "-11-29",
    ] {
        assert!(table.contains(row), "{row} missing:\n{table}");
    }
    assert!(table.contains("Preventable: unknown user, over quota, mailbox disabled."));
}

#[test]
fn dash_and_no_file_read_standard_input() {
    let input = std::fs::read(fixture("postfix-maillog")).expect("fixture");
    for args in [&["--json", "-"][..], &["--json"][..]] {
        let v = json(&audit(args, Some(&input)));
        assert_eq!(v["bounces"], 5, "{args:?}");
    }
}

#[test]
fn gz_files_are_read_like_plain_ones() {
    let plain = json(&audit(&["--json", &maillog()], None));
    let gz = json(&audit(
        &[
            "--json",
            &fixture("postfix-maillog.gz").display().to_string(),
        ],
        None,
    ));
    assert_eq!(gz["bounces"], 5);
    assert_eq!(gz["by_reason"], plain["by_reason"]);
    assert_eq!(gz["by_sender_domain"], plain["by_sender_domain"]);
}

#[test]
fn a_rotated_set_is_followed_across_files_in_any_order() {
    // The run cut in two as logrotate would: messages whose from= lines
    // are in maillog.1 bounce in maillog.
    let whole = std::fs::read_to_string(fixture("postfix-maillog")).expect("fixture");
    let lines: Vec<&str> = whole.lines().collect();
    let cut = lines
        .iter()
        .position(|l| l.contains("sender non-delivery notification"))
        .expect("a notification");
    let dir = tempfile::tempdir().expect("temp dir");
    let older = dir.path().join("maillog.1");
    let newer = dir.path().join("maillog");
    std::fs::write(&older, lines[..cut].join("\n") + "\n").expect("write");
    std::fs::write(&newer, lines[cut..].join("\n") + "\n").expect("write");
    // Newest first, as `maillog*` expands.
    let v = json(&audit(
        &[
            "--json",
            &newer.display().to_string(),
            &older.display().to_string(),
        ],
        None,
    ));
    assert_eq!(v["bounces"], 5);
    assert_eq!(v["by_reason"]["not_in_log"], serde_json::Value::Null);
    assert_eq!(v["by_sender_domain"]["a.test"], 1);
}

#[test]
fn a_missing_file_exits_1_naming_it() {
    let out = audit(&[&maillog(), "/nonexistent/maillog.3.gz"], None);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nobounce: audit: cannot read /nonexistent/maillog.3.gz: "),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "no partial report");
}
