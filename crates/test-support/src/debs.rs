//! Debian packages the tests unpack but never install: Sendmail and Exim
//! conflict with Postfix, so `.ci/install-deps` only downloads their .debs
//! (`apt-get download`) into a cache, and each test unpacks them with
//! `dpkg -x` into its own temporary directory.

use std::{
    env, fs, io,
    path::{Path, PathBuf},
    process::Command,
};

/// Environment variable naming the .deb cache (as in `.ci/install-deps`).
pub const DEBS_ENV: &str = "NOBOUNCE_DEBS";

/// The cache `.ci/install-deps` downloads into: `$NOBOUNCE_DEBS`, or
/// `/var/cache/nobounce-e2e/debs`.
pub fn deb_cache_dir() -> PathBuf {
    env::var_os(DEBS_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/nobounce-e2e/debs"))
}

/// The cached .deb of `package` (`PACKAGE_VERSION_ARCH.deb`; the newest
/// by name when several are there).
pub fn find_deb(package: &str) -> Option<PathBuf> {
    let prefix = format!("{package}_");
    let mut found: Vec<PathBuf> = fs::read_dir(deb_cache_dir())
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
        })
        .collect();
    found.sort();
    found.pop()
}

/// Unpacks the cached .debs of `packages` into `root` with `dpkg -x`.
pub fn unpack_debs(packages: &[&str], root: &Path) -> io::Result<()> {
    fs::create_dir_all(root)?;
    for package in packages {
        let deb = find_deb(package).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "{package}: no .deb in {} (run .ci/install-deps)",
                    deb_cache_dir().display()
                ),
            )
        })?;
        let out = Command::new("dpkg")
            .arg("-x")
            .arg(&deb)
            .arg(root)
            .output()?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "dpkg -x {}: {}",
                deb.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
    }
    Ok(())
}
