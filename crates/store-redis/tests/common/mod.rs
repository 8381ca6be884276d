//! A real `redis-server` for tests: started on a free loopback port in a
//! temporary directory, without persistence, killed on drop.
//!
//! If `redis-server` is not installed, [`RedisServer::start`] prints
//! `SKIPPED: ...` and returns `None`, unless `NOBOUNCE_E2E=required`, in
//! which case it panics. `NOBOUNCE_REDIS_SERVER` may name the binary.

#![allow(dead_code)]

use std::{
    fs::File,
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};
use tempfile::TempDir;

/// A running redis-server.
#[derive(Debug)]
pub struct RedisServer {
    child: Child,
    port: u16,
    dir: TempDir,
}

fn binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("NOBOUNCE_REDIS_SERVER") {
        // The only candidate when set (a path that does not exist tests
        // the "not installed" branch).
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([
            "/usr/bin".into(),
            "/usr/sbin".into(),
            "/usr/local/bin".into(),
        ])
        .map(|d| d.join("redis-server"))
        .find(|p| p.is_file())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free loopback port")
        .port()
}

impl RedisServer {
    /// Starts a server on a free port, or `None` (after printing why) if
    /// redis-server is not installed and not required.
    pub fn start(test: &str) -> Option<Self> {
        if binary().is_none() {
            let required = std::env::var("NOBOUNCE_E2E").is_ok_and(|v| v == "required");
            assert!(
                !required,
                "{test}: redis-server not found and NOBOUNCE_E2E=required"
            );
            println!("SKIPPED: {test}: redis-server not found");
            return None;
        }
        // Another process may take the port between our probe and the
        // server's bind: try a few ports.
        let mut last = String::new();
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("temp dir");
            match Self::spawn(free_port(), dir) {
                Ok(server) => return Some(server),
                Err(e) => last = e,
            }
        }
        panic!("{test}: redis-server did not start: {last}");
    }

    /// Kills this server; its port can be started again.
    pub fn kill(self) -> KilledServer {
        let port = self.port;
        drop(self);
        KilledServer { port }
    }

    fn spawn(port: u16, dir: TempDir) -> Result<Self, String> {
        let bin = binary().expect("checked by start");
        let log = File::create(dir.path().join("redis.log")).map_err(|e| e.to_string())?;
        let child = Command::new(&bin)
            .args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().map_err(|e| e.to_string())?))
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| format!("{}: {e}", bin.display()))?;
        let mut server = Self { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("exited with {status}: {}", server.log()));
            }
            if server.ping() {
                return Ok(server);
            }
            if Instant::now() > deadline {
                return Err(format!("no PONG within 15 s: {}", server.log()));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let mut buf = [0; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

/// A server killed by [`RedisServer::kill`].
#[derive(Debug)]
pub struct KilledServer {
    port: u16,
}

impl KilledServer {
    /// Starts a new, empty server on the same port (redis-server sets
    /// SO_REUSEADDR, so the old connections do not block it).
    pub fn start_again(self) -> RedisServer {
        let dir = tempfile::tempdir().expect("temp dir");
        RedisServer::spawn(self.port, dir).expect("redis-server restarts on the same port")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Captures the formatted tracing output of the current thread.
///
/// A global subscriber writes each event into the buffer of the thread that
/// emitted it. (Thread-scoped subscribers, `set_default`, miss events when
/// tests on other threads register the same callsites at the same time.)
#[derive(Clone, Debug, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

thread_local! {
    static CAPTURE: std::cell::RefCell<Option<LogCapture>> = const { std::cell::RefCell::new(None) };
}

/// Uninstalls the capture of this thread on drop.
#[derive(Debug)]
pub struct CaptureGuard;

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        CAPTURE.with(|c| c.borrow_mut().take());
    }
}

/// Writes to the capture of the current thread, if any.
struct ThreadWriter;

impl Write for ThreadWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        CAPTURE.with(|c| {
            if let Some(capture) = c.borrow().as_ref() {
                capture.0.lock().unwrap().extend_from_slice(buf);
            }
        });
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogCapture {
    /// Captures the events of the current thread until the guard drops.
    pub fn install(&self) -> CaptureGuard {
        static GLOBAL: std::sync::Once = std::sync::Once::new();
        GLOBAL.call_once(|| {
            tracing_subscriber::fmt()
                .with_writer(|| ThreadWriter)
                .with_max_level(tracing::Level::INFO)
                .with_ansi(false)
                .init();
        });
        CAPTURE.with(|c| *c.borrow_mut() = Some(self.clone()));
        CaptureGuard
    }

    /// The lines captured so far containing `needle`.
    pub fn lines_with(&self, needle: &str) -> Vec<String> {
        let bytes = self.0.lock().unwrap().clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }
}
