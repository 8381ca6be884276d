//! A private `redis-server` per test.
//!
//! Each [`RedisInstance`] listens on a free port of 127.0.0.1 only, keeps its
//! working directory and log in a temporary directory, persists nothing
//! (`--save '' --appendonly no`) and is killed when dropped. It can be
//! [stopped](RedisInstance::stop) and [restarted](RedisInstance::restart) on
//! the same port, empty, to test what nobounce does while Redis is down and
//! after it comes back.

use crate::net::{free_port, LOOPBACK};
use crate::wait::poll_until;
use std::fs;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Attempts to start when the picked port was taken in the meantime.
const START_ATTEMPTS: usize = 5;

/// How long a start (or restart) may take until Redis answers `PING`.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// Lines of the Redis log shown when a test panics or a start fails.
const LOG_TAIL_LINES: usize = 30;

/// A running `redis-server`, killed on drop. Created by
/// [`RedisInstance::start`]; needs the program `redis-server` (use
/// [`require!`](crate::require!)`("redis-server")`).
///
/// ```no_run
/// # async fn f() -> std::io::Result<()> {
/// let mut redis = nobounce_test_support::RedisInstance::start().await?;
/// let url = redis.url(); // redis://127.0.0.1:PORT
/// redis.stop();          // SIGKILL: connections break, the port is free
/// redis.restart().await?; // same port, empty
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct RedisInstance {
    binary: PathBuf,
    dir: TempDir,
    port: u16,
    child: Option<Child>,
    /// Incremented per (re)start, so each run logs to its own file.
    runs: usize,
}

impl RedisInstance {
    /// Starts `redis-server` on a free loopback port and returns once it
    /// answers `PING`.
    ///
    /// Errors when `redis-server` is not installed or does not come up (the
    /// message holds its log).
    pub async fn start() -> io::Result<Self> {
        let binary = crate::find_binary("redis-server")
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "redis-server not found"))?;
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            let dir = tempfile::Builder::new()
                .prefix("nobounce-e2e-redis.")
                .tempdir()?;
            let mut instance = Self {
                binary: binary.clone(),
                dir,
                port: free_port()?,
                child: None,
                runs: 0,
            };
            match instance.spawn().await {
                Ok(()) => return Ok(instance),
                // Someone took the port between free_port() and the bind.
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => last_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_error.expect("the loop ran at least once"))
    }

    /// The port Redis listens on (the same after [`restart`](Self::restart)).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(LOOPBACK, self.port)
    }

    /// `redis://127.0.0.1:PORT`, for `[store.redis] url`.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr())
    }

    /// The temporary directory of this instance (working directory, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether the server process is running (it was started, not stopped,
    /// and has not exited by itself).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The log of the current (or last) run.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Kills the server now (SIGKILL, like a crash): open connections break
    /// and the port is closed. Nothing was persisted, so a
    /// [`restart`](Self::restart) comes back empty. Does nothing when it is
    /// not running.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // It may have exited already; either way it is gone after wait.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server if it runs and starts a new, empty one on the same
    /// port; returns once it answers `PING`.
    ///
    /// redis-server binds with `SO_REUSEADDR`, so connections of the old
    /// server in `TIME_WAIT` do not block the port. Errors when the port was
    /// taken by someone else meanwhile, or Redis does not come up.
    pub async fn restart(&mut self) -> io::Result<()> {
        self.stop();
        self.spawn().await
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join(format!("redis.{}.log", self.runs))
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }

    /// Starts the process on `self.port` and waits for `PONG`.
    async fn spawn(&mut self) -> io::Result<()> {
        self.runs += 1;
        let log = fs::File::create(self.log_path())?;
        let child = Command::new(&self.binary)
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.binary.display())))?;
        self.child = Some(child);
        let addr = self.addr();
        let ready = poll_until("redis-server to answer PING", READY_TIMEOUT, || {
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            async move {
                if let Some(status) = exited {
                    return Err(io::Error::other(format!("redis-server exited ({status})")));
                }
                Ok(ping(addr).await.then_some(()))
            }
        })
        .await;
        if let Err(e) = ready {
            self.stop();
            let log = self.log_tail();
            let kind = if log.contains("Address already in use") {
                io::ErrorKind::AddrInUse
            } else {
                e.kind()
            };
            return Err(io::Error::new(
                kind,
                format!("{e} (port {})\n--- redis log ---\n{log}", self.port),
            ));
        }
        Ok(())
    }
}

/// `PING` → `+PONG` within a second.
async fn ping(addr: SocketAddr) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(b"PING\r\n").await?;
        let mut buf = [0u8; 7];
        stream.read_exact(&mut buf).await?;
        Ok::<_, io::Error>(&buf == b"+PONG\r\n")
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), attempt).await,
        Ok(Ok(true))
    )
}

impl Drop for RedisInstance {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- Redis log of failed test ({}) ---\n{}",
                self.log_path().display(),
                self.log_tail()
            );
        }
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn started() -> Option<RedisInstance> {
        if !crate::require_binaries("redis::tests", &["redis-server"]) {
            return None;
        }
        Some(RedisInstance::start().await.expect("redis-server starts"))
    }

    #[tokio::test]
    async fn stop_and_restart_on_the_same_port() {
        let Some(mut redis) = started().await else {
            return;
        };
        let port = redis.port();
        assert!(redis.url().starts_with("redis://127.0.0.1:"));
        assert!(ping(redis.addr()).await);
        assert!(redis.is_running());
        redis.stop();
        assert!(!redis.is_running());
        assert!(!ping(redis.addr()).await, "still answers after stop");
        redis.restart().await.expect("restarts");
        assert_eq!(redis.port(), port);
        assert!(ping(redis.addr()).await);
        assert!(
            redis.log().contains("Ready to accept connections"),
            "{}",
            redis.log()
        );
    }
}
