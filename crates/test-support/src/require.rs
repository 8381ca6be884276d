//! Finding the programs an end-to-end test needs, and skipping without them.

use std::env;
use std::path::{Path, PathBuf};

/// Environment variable that turns skipped end-to-end tests into failures
/// when set to `required` (CI sets it after `.ci/install-deps`).
pub const E2E_ENV: &str = "NOBOUNCE_E2E";

/// Directories searched after `$PATH`: Postfix, Dovecot and Redis install into
/// `sbin`, which is often missing from a non-root `$PATH`.
const EXTRA_DIRS: &[&str] = &["/usr/sbin", "/usr/local/sbin", "/sbin", "/usr/bin", "/bin"];

/// Whether missing programs must fail the tests (`NOBOUNCE_E2E=required`)
/// rather than skip them.
pub fn e2e_required() -> bool {
    env::var(E2E_ENV).is_ok_and(|v| v.trim().eq_ignore_ascii_case("required"))
}

/// Full path of an executable named `name`, searched in `$PATH` and then in
/// the usual `sbin` directories. A `name` containing `/` is checked as is.
pub fn find_binary(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let path = PathBuf::from(name);
        return is_executable(&path).then_some(path);
    }
    let path_var = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path_var)
        .chain(EXTRA_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Programs that come with (and are needed next to) a named one.
fn companions(binary: &str) -> &'static [&'static str] {
    match binary {
        "postfix" => &["postfix", "postconf", "postqueue"],
        // The LMTP and quota-status services come in their own packages
        // (dovecot-lmtpd); without them Dovecot starts but cannot serve.
        "dovecot" => &[
            "dovecot",
            "/usr/lib/dovecot/lmtp",
            "/usr/lib/dovecot/quota-status",
        ],
        // Never installed: their .debs are unpacked by each test (see
        // `crate::debs`), and they run in a mount namespace (Sendmail).
        "sendmail" => &[
            "deb:sendmail-bin",
            "deb:sendmail-cf",
            "deb:m4",
            "deb:libwrap0",
            "dpkg",
            "unshare",
        ],
        "exim" => &["deb:exim4-daemon-light", "deb:libidn12", "dpkg"],
        _ => &[],
    }
}

/// Whether `name` is there: a program, or a cached .deb for `deb:PACKAGE`.
fn is_available(name: &str) -> bool {
    match name.strip_prefix("deb:") {
        Some(package) => crate::debs::find_deb(package).is_some(),
        None => find_binary(name).is_some(),
    }
}

/// Programs that only root can run as the tests need them.
fn needs_root(binary: &str) -> bool {
    matches!(binary, "postfix" | "sendmail" | "exim")
}

/// Checks that every program in `binaries` is installed; used by
/// [`require!`](crate::require!).
///
/// Returns `true` when all are found. Otherwise, when [`e2e_required`] holds
/// this panics (the test fails); else it prints
/// `SKIPPED: <test>: <binary> not found (set NOBOUNCE_E2E=required to make this a failure)`
/// to stderr and returns `false`, and the caller should return early.
pub fn require_binaries(test: &str, binaries: &[&str]) -> bool {
    let missing = binaries
        .iter()
        .flat_map(|b| {
            let extra = companions(b);
            if extra.is_empty() {
                vec![*b]
            } else {
                extra.to_vec()
            }
        })
        .find(|b| !is_available(b));
    let root_missing = binaries.iter().any(|b| needs_root(b)) && !running_as_root();
    match missing {
        None if root_missing && e2e_required() => {
            panic!("{test}: Postfix, Sendmail and Exim test instances need root, and {E2E_ENV}=required")
        }
        None if root_missing => {
            eprintln!(
                "SKIPPED: {test}: the MTA needs root (set {E2E_ENV}=required to make this a failure)"
            );
            false
        }
        None => true,
        Some(binary) if e2e_required() => {
            panic!("{test}: {binary} not found, and {E2E_ENV}=required")
        }
        Some(binary) => {
            eprintln!(
                "SKIPPED: {test}: {binary} not found (set {E2E_ENV}=required to make this a failure)"
            );
            false
        }
    }
}

/// Whether the effective uid is 0 (second field of `Uid:` in
/// `/proc/self/status`).
pub(crate) fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_program_every_system_has() {
        let sh = find_binary("sh").expect("sh is installed");
        assert!(sh.is_absolute());
    }

    #[test]
    fn does_not_find_a_missing_program() {
        assert_eq!(find_binary("nobounce-no-such-program-4711"), None);
    }

    #[test]
    fn missing_program_skips_or_fails_depending_on_env() {
        let outcome = std::panic::catch_unwind(|| {
            require_binaries("unit", &["sh", "nobounce-no-such-program-4711"])
        });
        if e2e_required() {
            assert!(outcome.is_err(), "must fail when {E2E_ENV}=required");
        } else {
            assert_eq!(outcome.ok(), Some(false));
        }
    }

    #[test]
    fn present_programs_pass() {
        assert!(require_binaries("unit", &["sh"]));
    }
}
