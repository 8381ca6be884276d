//! Binding the sockets nobounce listens on.
//!
//! A unix socket is created with the umask that gives it its final mode
//! from the first moment (no window before a `chmod` in which anyone could
//! connect), then given its owner and group. Who can reach the milter
//! socket can forge client addresses and ban them on every MX (issue 13,
//! item 7), so the documentation recommends a unix socket with mode `0660`
//! and the MTA's group.

use nix::{
    sys::stat::{umask, Mode},
    unistd::{Group, User},
};
use nobounce_config::Config;
use nobounce_core::Endpoint;
use std::{
    io,
    os::unix::fs::{FileTypeExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::Mutex,
};
use tokio::net::{TcpListener, UnixListener};

/// The umask is one per process: binds take turns.
static UMASK: Mutex<()> = Mutex::new(());

/// The uid of user `name`.
pub fn user_id(name: &str) -> io::Result<u32> {
    User::from_name(name)
        .map_err(io::Error::from)?
        .map(|u| u.uid.as_raw())
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no user named {name:?}")))
}

/// The gid of group `name`.
pub fn group_id(name: &str) -> io::Result<u32> {
    Group::from_name(name)
        .map_err(io::Error::from)?
        .map(|g| g.gid.as_raw())
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no group named {name:?}")))
}

/// Binds a unix socket at `path` with `mode`, then gives it `owner` and
/// `group` (names) when set. The caller removes a stale socket first.
pub fn bind_unix(
    path: &Path,
    mode: u32,
    owner: Option<&str>,
    group: Option<&str>,
) -> io::Result<UnixListener> {
    let uid = owner.map(user_id).transpose()?;
    let gid = group.map(group_id).transpose()?;
    let listener = {
        let _one = UMASK.lock().unwrap_or_else(|e| e.into_inner());
        let mask = Mode::from_bits_truncate(!mode & 0o777);
        let old = umask(mask);
        let bound = UnixListener::bind(path);
        umask(old);
        bound?
    };
    if uid.is_some() || gid.is_some() {
        std::os::unix::fs::chown(path, uid, gid)?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(listener)
}

/// A TCP or unix socket, bound; a unix socket with its path, for removal
/// at the end.
#[derive(Debug)]
pub enum Bound {
    /// A TCP socket.
    Tcp(TcpListener),
    /// A unix socket and its path.
    Unix(UnixListener, PathBuf),
}

/// Binds `endpoint`: a unix socket with `[milter]`'s mode, owner and group
/// of `config`, replacing a socket file left by an earlier run; a TCP
/// socket at an IP address.
pub async fn bind_endpoint(endpoint: &Endpoint, config: &Config) -> io::Result<Bound> {
    match endpoint {
        Endpoint::Unix(path) => {
            if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
                std::fs::remove_file(path)?;
            }
            let m = &config.milter;
            let listener = bind_unix(
                path,
                m.socket_mode,
                m.socket_owner.as_deref(),
                m.socket_group.as_deref(),
            )?;
            Ok(Bound::Unix(listener, path.clone()))
        }
        tcp => {
            let addr = tcp
                .listen_addr()
                .map_err(io::Error::other)?
                .ok_or_else(|| io::Error::other("not a TCP socket"))?;
            Ok(Bound::Tcp(TcpListener::bind(addr).await?))
        }
    }
}

/// Where the milter listens, bound.
#[derive(Debug)]
pub enum MilterListener {
    /// A TCP socket.
    Tcp(TcpListener),
    /// A unix socket, removed when the service stops.
    Unix(UnixListener, PathBuf),
}

impl MilterListener {
    /// Binds the milter socket of `config` (`socket`, `[milter]
    /// socket_mode`, `socket_owner`, `socket_group`). A socket file left by
    /// an earlier run is replaced.
    pub async fn bind(config: &Config) -> io::Result<Self> {
        Ok(match bind_endpoint(&config.socket, config).await? {
            Bound::Tcp(l) => Self::Tcp(l),
            Bound::Unix(l, path) => Self::Unix(l, path),
        })
    }
}

/// Binds the policy service's socket of `config`, if it has one. A unix
/// socket gets `[milter]`'s mode, owner and group, and replaces a socket
/// file left by an earlier run; its path is returned for removal at the
/// end.
pub async fn bind_policy(
    config: &Config,
) -> io::Result<Option<(nobounce_policy::PolicyListener, Option<PathBuf>)>> {
    use nobounce_policy::PolicyListener;
    let Some(endpoint) = &config.policy.socket else {
        return Ok(None);
    };
    Ok(Some(match bind_endpoint(endpoint, config).await? {
        Bound::Tcp(l) => (PolicyListener::Tcp(l), None),
        Bound::Unix(l, path) => (PolicyListener::Unix(l), Some(path)),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unix_sockets_get_their_mode_and_group() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("milter.sock");
        let config = Config::from_toml_str(&format!(
            "socket = \"unix:{}\"\n[milter]\nsocket_mode = \"0660\"\nsocket_group = \"root\"\n",
            path.display()
        ))
        .unwrap();
        let listener = MilterListener::bind(&config).await.unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o660);
        drop(listener);
        // A stale socket is replaced.
        MilterListener::bind(&config).await.unwrap();
        let bad = Config::from_toml_str(&format!(
            "socket = \"unix:{}\"\n[milter]\nsocket_group = \"no-such-group-4711\"\n",
            dir.path().join("x.sock").display()
        ))
        .unwrap();
        let e = MilterListener::bind(&bad).await.unwrap_err();
        assert!(e.to_string().contains("no-such-group-4711"), "{e}");
    }
}
