//! Ban administration: the operations behind `nobounce ban ...`, and the
//! local control socket through which the CLI reaches a running milter's
//! in-memory store.
//!
//! The protocol is one line per request, for the CLI only:
//!
//! ```text
//! LIST                       -> BAN <key> <until-ms> <strikes> <reason> ... END
//! LIFT <key>                 -> OK
//! ADD <key> <secs> <reason>  -> OK <until-ms>
//! ```
//!
//! Errors answer `ERR <message>`.
//!
//! # Trust
//!
//! Whoever reaches the socket can lift and add bans, so it is guarded three
//! ways (issue 13, item 7):
//!
//! - it lives in a directory of its own (`/run/nobounce`, or
//!   `$XDG_RUNTIME_DIR/nobounce`), created mode `0700`; an existing
//!   directory must belong to nobounce's user and be writable by no one
//!   else, so nobody can have put a socket of their own there;
//! - the socket is created with umask `077`: mode `0600` from its first
//!   moment, no window before a `chmod`;
//! - each client's credentials are checked (`SO_PEERCRED`): only root and
//!   nobounce's own user are served. A client has 10 seconds per request.

use nobounce_config::{effective_uid, parse_duration};
use nobounce_core::{
    dictionary::{client_key, MAX_BAN},
    store::{from_millis, sorted_by_key, to_millis, Ban, StateStore, StoreError},
};
use std::{
    io,
    net::IpAddr,
    os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
};
use tracing::{info, warn};

/// The reason stored with bans added by hand.
pub const MANUAL_REASON: &str = "banned by the administrator";

/// How long a client may take over one request.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest request line.
const MAX_REQUEST: u64 = 4096;

/// Parses a ban duration: `3600`, `90s`, `30m`, `1h`, `2d`; at most a week.
pub fn parse_ban_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() || d > MAX_BAN {
        return Err(format!(
            "ban duration {s:?} must be between 1 second and one week"
        ));
    }
    Ok(d)
}

/// The store key for `ip` (IPv6: its network of `ipv6_prefix` bits).
pub fn key_for(ip: IpAddr, ipv6_prefix: u8) -> String {
    client_key(ip, ipv6_prefix)
}

/// Active bans.
pub async fn list(store: &dyn StateStore, now: SystemTime) -> Result<Vec<Ban>, StoreError> {
    // Sorted again: a store outside this workspace may not keep the contract.
    Ok(sorted_by_key(store.list(now).await?))
}

/// Lifts the ban (and forgets strikes and counters) of `key`.
pub async fn lift(store: &dyn StateStore, key: &str, now: SystemTime) -> Result<(), StoreError> {
    store.lift(key, now).await
}

/// Bans `key` for `duration`; returns when the ban ends.
pub async fn add(
    store: &dyn StateStore,
    key: &str,
    duration: Duration,
    now: SystemTime,
) -> Result<SystemTime, StoreError> {
    let until = now + duration;
    store.ban(key, until, MANUAL_REASON, now).await?;
    Ok(from_millis(to_millis(until)))
}

async fn answer(store: &dyn StateStore, line: &str) -> String {
    let now = SystemTime::now();
    let mut words = line.trim_end().splitn(4, ' ');
    let cmd = words.next().unwrap_or("");
    let result = match cmd {
        "LIST" => list(store, now).await.map(|bans| {
            let mut out = String::new();
            for b in bans {
                let reason = b.reason.replace(['\r', '\n'], " ");
                out.push_str(&format!(
                    "BAN {} {} {} {reason}\n",
                    b.key,
                    to_millis(b.until),
                    b.strikes
                ));
            }
            out.push_str("END\n");
            out
        }),
        "LIFT" => match words.next() {
            Some(key) if !key.is_empty() => lift(store, key, now).await.map(|()| "OK\n".into()),
            _ => return "ERR usage: LIFT <key>\n".into(),
        },
        "ADD" => {
            let (Some(key), Some(secs)) = (words.next(), words.next()) else {
                return "ERR usage: ADD <key> <secs> [reason]\n".into();
            };
            let secs = match secs.parse::<u64>() {
                Ok(s) if s > 0 && Duration::from_secs(s) <= MAX_BAN => s,
                _ => return format!("ERR ban seconds must be 1..={}\n", MAX_BAN.as_secs()),
            };
            add(store, key, Duration::from_secs(secs), now)
                .await
                .map(|until| format!("OK {}\n", to_millis(until)))
        }
        _ => return format!("ERR unknown command {cmd:?}\n"),
    };
    result.unwrap_or_else(|e| format!("ERR {e}\n"))
}

async fn handle(store: Arc<dyn StateStore>, stream: UnixStream) -> io::Result<()> {
    let me = effective_uid();
    let peer = stream.peer_cred()?;
    if peer.uid() != 0 && peer.uid() != me {
        warn!(
            event = "control_refused",
            uid = peer.uid(),
            pid = ?peer.pid(),
            "control socket client refused: not root nor nobounce's user"
        );
        return Ok(());
    }
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r.take(MAX_REQUEST * 16)).lines();
    loop {
        let line = match tokio::time::timeout(CLIENT_TIMEOUT, lines.next_line()).await {
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                w.write_all(b"ERR timeout\n").await?;
                return Ok(());
            }
        };
        if !line.is_empty() {
            info!(event = "control_request", uid = peer.uid(), command = %line.escape_debug());
        }
        let reply = answer(store.as_ref(), &line).await;
        tokio::time::timeout(CLIENT_TIMEOUT, w.write_all(reply.as_bytes()))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "client does not read"))??;
    }
}

/// A bound control socket; [`ControlSocket::serve`] answers it, and the
/// socket file goes when it is dropped.
#[derive(Debug)]
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
}

/// Makes `dir` (mode 0700) or checks that an existing one is nobounce's own
/// and writable by no one else.
fn own_directory(dir: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
            // The mode given above is subject to the umask, which another
            // bind may have changed for a moment (it is per process).
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        }
        Err(e) => Err(e),
        Ok(meta) => {
            let me = effective_uid();
            if !meta.is_dir() {
                return Err(io::Error::other(format!(
                    "{} is not a directory",
                    dir.display()
                )));
            }
            if meta.uid() != me && meta.uid() != 0 {
                return Err(io::Error::other(format!(
                    "{} belongs to uid {}, not to nobounce (uid {me}): someone else could have put a socket there",
                    dir.display(),
                    meta.uid()
                )));
            }
            if meta.permissions().mode() & 0o022 != 0 && meta.permissions().mode() & 0o1000 == 0 {
                return Err(io::Error::other(format!(
                    "{} is writable by others: put the control socket in a directory of nobounce's own",
                    dir.display()
                )));
            }
            Ok(())
        }
    }
}

/// Removes a socket file left by an earlier run; refuses if a server still
/// answers on it.
async fn remove_stale_socket(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(meta) if meta.file_type().is_socket() => {
            if UnixStream::connect(path).await.is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{} is in use: is another nobounce running?", path.display()),
                ));
            }
            std::fs::remove_file(path)
        }
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a socket", path.display()),
        )),
    }
}

impl ControlSocket {
    /// Binds the control socket at `path` (see the module documentation).
    pub async fn bind(path: &Path) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            own_directory(dir)?;
        }
        remove_stale_socket(path).await?;
        let listener = crate::listen::bind_unix(path, 0o600, None, None)?;
        Ok(Self {
            listener,
            path: path.to_owned(),
        })
    }

    /// The path bound.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Answers requests on `store` until the future is dropped.
    pub async fn serve(&self, store: Arc<dyn StateStore>) {
        loop {
            match self.listener.accept().await {
                Ok((stream, _)) => {
                    let store = Arc::clone(&store);
                    tokio::spawn(async move {
                        if let Err(e) = handle(store, stream).await {
                            warn!(event = "control_error", "control connection: {e}");
                        }
                    });
                }
                Err(e) => {
                    warn!(event = "control_error", "control socket accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        // The path this socket was bound at, whatever a reload says now.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The CLI side: sends one request, returns the reply lines (without `END`).
pub async fn request(path: &Path, line: &str) -> Result<Vec<String>, String> {
    let exchange = async {
        let stream = UnixStream::connect(path).await.map_err(|e| {
            format!(
                "cannot reach the running milter at {}: {e} (is `nobounce run` running with this configuration?)",
                path.display()
            )
        })?;
        let (r, mut w) = stream.into_split();
        w.write_all(format!("{line}\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        w.shutdown().await.map_err(|e| e.to_string())?;
        let mut lines = BufReader::new(r).lines();
        let mut out = Vec::new();
        while let Some(l) = lines.next_line().await.map_err(|e| e.to_string())? {
            if let Some(err) = l.strip_prefix("ERR ") {
                return Err(err.to_owned());
            }
            if l == "END" {
                break;
            }
            out.push(l);
            if line.starts_with("LIFT") || line.starts_with("ADD") {
                break;
            }
        }
        Ok(out)
    };
    tokio::time::timeout(CLIENT_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no answer from {} within 10s", path.display()))?
}

/// A parsed `BAN` line of the control protocol.
pub fn parse_ban_line(line: &str) -> Option<Ban> {
    let rest = line.strip_prefix("BAN ")?;
    let mut w = rest.splitn(4, ' ');
    let key = w.next()?.to_owned();
    let until = from_millis(w.next()?.parse().ok()?);
    let strikes = w.next()?.parse().ok()?;
    let reason = w.next().unwrap_or("").to_owned();
    Some(Ban {
        key,
        until,
        reason,
        strikes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use nobounce_core::MemoryStore;

    #[test]
    fn durations() {
        assert_eq!(parse_ban_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_ban_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ban_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_ban_duration("7d"), Ok(Duration::from_secs(604_800)));
        for bad in ["", "0", "8d", "h", "-1h", "99999999999999999999d"] {
            assert!(parse_ban_duration(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn control_socket_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/control.sock");
        let store: Arc<dyn StateStore> = Arc::new(MemoryStore::default());
        let socket = ControlSocket::bind(&path).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        let s = Arc::clone(&store);
        let server = tokio::spawn(async move { socket.serve(s).await });

        assert!(request(&path, "LIST").await.unwrap().is_empty());
        let ok = request(&path, "ADD 192.0.2.1 3600").await.unwrap();
        assert!(ok[0].starts_with("OK "), "{ok:?}");
        let bans = request(&path, "LIST").await.unwrap();
        let ban = parse_ban_line(&bans[0]).unwrap();
        assert_eq!(ban.key, "192.0.2.1");
        assert_eq!(ban.reason, MANUAL_REASON);
        request(&path, "LIFT 192.0.2.1").await.unwrap();
        assert!(request(&path, "LIST").await.unwrap().is_empty());
        assert!(request(&path, "ADD 192.0.2.1 9999999").await.is_err());
        assert!(request(&path, "FROB").await.is_err());
        server.abort();
        let _ = server.await;
        assert!(!path.exists(), "the socket file goes with the socket");
    }

    /// Issue 13, item 7: a socket directory someone else could write to is
    /// refused (pre-creation, spoofing), and a live socket is not stolen.
    #[tokio::test]
    async fn issue13_control_socket_refuses_shared_directories_and_live_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = ControlSocket::bind(&shared.join("c.sock"))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("writable by others"), "{e}");

        let path = dir.path().join("own/c.sock");
        let first = ControlSocket::bind(&path).await.unwrap();
        let e = ControlSocket::bind(&path).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{e}");
        drop(first);
        ControlSocket::bind(&path)
            .await
            .expect("a stale socket is replaced");
    }

    /// Issue 13, item 7: a client that sends nothing is not served forever.
    #[tokio::test(start_paused = true)]
    async fn issue13_a_silent_client_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c/c.sock");
        let socket = ControlSocket::bind(&path).await.unwrap();
        let store: Arc<dyn StateStore> = Arc::new(MemoryStore::default());
        let server = tokio::spawn(async move { socket.serve(store).await });
        let mut client = UnixStream::connect(&path).await.unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(60), client.read_to_string(&mut answer))
            .await
            .expect("the server hangs up")
            .unwrap();
        assert_eq!(answer, "ERR timeout\n");
        server.abort();
    }
}
