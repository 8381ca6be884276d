//! Ban administration: the operations behind `nobounce ban ...`, and the
//! local control socket through which the CLI reaches a running milter's
//! in-memory store.
//!
//! The protocol is one line per request and is meant for the CLI only:
//!
//! ```text
//! LIST                 -> BAN <key> <until-ms> <strikes> <reason>  ...  END
//! LIFT <key>           -> OK
//! ADD <key> <secs> <reason>  -> OK <until-ms>
//! ```
//!
//! Errors answer `ERR <message>`.

use nobounce_core::{
    dictionary::{client_key, MAX_BAN_SECS},
    store::{from_millis, to_millis, Ban, StateStore, StoreError},
};
use std::{
    io,
    net::IpAddr,
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

/// Parses a ban duration: `3600`, `90s`, `30m`, `1h`, `2d`; at most a week.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, ""), |i| s.split_at(i));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 3600, 30m, 1h, 2d"))?;
    let secs = match unit {
        "" | "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86_400),
        _ => None,
    }
    .ok_or_else(|| format!("invalid duration {s:?}: expected e.g. 3600, 30m, 1h, 2d"))?;
    if secs == 0 || secs > MAX_BAN_SECS {
        return Err(format!(
            "ban duration {s:?} must be between 1 second and one week"
        ));
    }
    Ok(Duration::from_secs(secs))
}

/// The store key for `ip` (IPv6: its network of `ipv6_prefix` bits).
pub fn key_for(ip: IpAddr, ipv6_prefix: u8) -> String {
    client_key(ip, ipv6_prefix)
}

/// Active bans.
pub async fn list(store: &dyn StateStore, now: SystemTime) -> Result<Vec<Ban>, StoreError> {
    let mut bans = store.list(now).await?;
    bans.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(bans)
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
            let secs: u64 = match secs.parse() {
                Ok(s) if s > 0 && s <= MAX_BAN_SECS => s,
                _ => return "ERR ban seconds must be 1..=604800\n".into(),
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
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r.take(64 * 1024)).lines();
    while let Some(line) = lines.next_line().await? {
        if !line.is_empty() {
            info!(command = %line, "control request");
        }
        let reply = answer(store.as_ref(), &line).await;
        w.write_all(reply.as_bytes()).await?;
    }
    Ok(())
}

/// Binds the control socket at `path` (mode 0600; a stale socket file is
/// replaced).
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        let _ = std::fs::remove_file(path);
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves the control socket until the task is dropped.
pub async fn serve(listener: UnixListener, store: Arc<dyn StateStore>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let store = store.clone();
                tokio::spawn(async move {
                    if let Err(e) = handle(store, stream).await {
                        warn!("control connection: {e}");
                    }
                });
            }
            Err(e) => {
                warn!("control socket accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The CLI side: sends one request, returns the reply lines (without `END`).
pub async fn request(path: &Path, line: &str) -> Result<Vec<String>, String> {
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

/// Where the control socket is, from the configuration value.
pub fn socket_path(configured: &str) -> Option<PathBuf> {
    let p = configured.strip_prefix("unix:").unwrap_or(configured);
    (!p.is_empty()).then(|| PathBuf::from(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nobounce_core::MemoryStore;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        for bad in ["", "0", "8d", "1w", "h", "-1h", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn control_socket_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let store: Arc<dyn StateStore> = Arc::new(MemoryStore::default());
        let listener = bind(&path).unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let task = tokio::spawn(serve(listener, store.clone()));

        assert!(request(&path, "LIST").await.unwrap().is_empty());
        let ok = request(&path, "ADD 192.0.2.1 3600").await.unwrap();
        assert!(ok[0].starts_with("OK "), "{ok:?}");
        let bans = request(&path, "LIST").await.unwrap();
        let ban = parse_ban_line(&bans[0]).unwrap();
        assert_eq!(ban.key, "192.0.2.1");
        assert_eq!(ban.reason, MANUAL_REASON);
        assert!(store
            .ban_status("192.0.2.1", SystemTime::now())
            .await
            .unwrap()
            .is_some());
        request(&path, "LIFT 192.0.2.1").await.unwrap();
        assert!(request(&path, "LIST").await.unwrap().is_empty());
        assert!(request(&path, "ADD 192.0.2.1 9999999").await.is_err());
        assert!(request(&path, "FROB").await.is_err());
        task.abort();
    }
}
