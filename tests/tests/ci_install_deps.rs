//! Issue 13, item 12: `.ci/install-deps` stops and kills nothing it did not
//! start (it used to run `service ... stop`, `pkill -x redis-server`,
//! `pkill -x dovecot` and `postfix stop` on every run), and a failed apt
//! run does not leave its `policy-rc.d` behind.
//!
//! The script runs against stub commands that record every call.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

/// A directory of stubs: `dpkg-query` reports packages per `installed`,
/// `apt-get` exits with `apt_status`, and every other command the script
/// might call records itself in `calls`.
fn stubs(dir: &Path, installed: bool, apt_status: i32) -> PathBuf {
    let bin = dir.join("bin");
    fs::create_dir_all(&bin).unwrap();
    let calls = dir.join("calls");
    let stub = |name: &str, body: &str| {
        let path = bin.join(name);
        fs::write(
            &path,
            format!(
                "#!/bin/sh\necho \"{name} $*\" >> '{}'\n{body}\n",
                calls.display()
            ),
        )
        .unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    };
    let status = if installed {
        "install ok installed"
    } else {
        ""
    };
    stub("dpkg-query", &format!("printf '{status}'"));
    stub("apt-get", &format!("exit {apt_status}"));
    for name in [
        "debconf-set-selections",
        "service",
        "pkill",
        "killall",
        "postfix",
        "systemctl",
    ] {
        stub(name, "exit 0");
    }
    calls
}

/// The .debs the script downloads (and never installs).
const DEBS: &[&str] = &[
    "sendmail-bin",
    "sendmail-cf",
    "m4",
    "libwrap0",
    "exim4-daemon-light",
    "libidn12",
];

/// Runs the script; `debs_present` puts every .deb in its download cache
/// first.
fn run(dir: &Path, installed: bool, apt_status: i32) -> (bool, String, PathBuf) {
    run_with(dir, installed, true, apt_status)
}

fn run_with(
    dir: &Path,
    installed: bool,
    debs_present: bool,
    apt_status: i32,
) -> (bool, String, PathBuf) {
    let calls = stubs(dir, installed, apt_status);
    let debs = dir.join("debs");
    fs::create_dir_all(&debs).unwrap();
    if debs_present {
        for p in DEBS {
            fs::write(debs.join(format!("{p}_1.0_amd64.deb")), "").unwrap();
        }
    }
    let policy = dir.join("policy-rc.d");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.ci/install-deps");
    let path = format!(
        "{}:{}",
        dir.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .arg(&script)
        .env("PATH", path)
        .env("NOBOUNCE_POLICY_RC_D", &policy)
        .env("NOBOUNCE_DEBS", &debs)
        .output()
        .expect("bash runs");
    let recorded = fs::read_to_string(&calls).unwrap_or_default();
    (out.status.success(), recorded, policy)
}

fn stops_something(calls: &str) -> Option<&str> {
    calls.lines().find(|l| {
        l.starts_with("service ")
            || l.starts_with("pkill ")
            || l.starts_with("killall ")
            || l.starts_with("postfix ")
            || l.starts_with("systemctl ")
    })
}

/// The cases, one after the other.
#[test]
fn issue13_install_deps_touches_nothing_it_did_not_start() {
    all_installed_stops_nothing();
    installs_without_stopping_anything();
    a_failed_apt_run_leaves_no_policy_behind();
    keeps_a_policy_it_did_not_create();
    downloads_missing_debs_without_installing_them();
}

fn all_installed_stops_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, calls, policy) = run(dir.path(), true, 0);
    assert!(ok);
    assert_eq!(stops_something(&calls), None, "{calls}");
    assert!(!calls.contains("apt-get"), "{calls}");
    assert!(!policy.exists());
}

fn installs_without_stopping_anything() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, calls, policy) = run(dir.path(), false, 0);
    assert!(ok, "{calls}");
    assert!(calls.contains("apt-get install"), "{calls}");
    assert_eq!(stops_something(&calls), None, "{calls}");
    assert!(!policy.exists(), "its policy-rc.d is removed");
}

fn a_failed_apt_run_leaves_no_policy_behind() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, calls, policy) = run(dir.path(), false, 100);
    assert!(!ok, "the failure is reported");
    assert!(calls.contains("apt-get"), "{calls}");
    assert!(!policy.exists(), "policy-rc.d left behind");
    assert_eq!(stops_something(&calls), None, "{calls}");
}

fn keeps_a_policy_it_did_not_create() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy-rc.d");
    fs::write(&policy, "#!/bin/sh\nexit 0\n").unwrap();
    let (ok, calls, policy) = run(dir.path(), false, 0);
    assert!(ok, "{calls}");
    assert_eq!(fs::read_to_string(&policy).unwrap(), "#!/bin/sh\nexit 0\n");
}

/// Issue 12: Sendmail and Exim are downloaded for the tests to unpack,
/// never installed (they would replace Postfix).
fn downloads_missing_debs_without_installing_them() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, calls, _) = run_with(dir.path(), true, false, 0);
    assert!(ok, "{calls}");
    let download = calls
        .lines()
        .find(|l| l.starts_with("apt-get download"))
        .unwrap_or_else(|| panic!("no download: {calls}"));
    for p in DEBS {
        assert!(
            download.split_whitespace().any(|w| w == *p),
            "{p}: {download}"
        );
    }
    assert!(!calls.contains("apt-get install"), "{calls}");
    assert_eq!(stops_something(&calls), None, "{calls}");
}
