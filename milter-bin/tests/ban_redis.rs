//! `nobounce ban ...` with `[store] backend = "redis"`: the CLI talks to
//! Redis directly (no running milter needed), so every MX host sharing that
//! Redis sees the change.
//!
//! Needs `redis-server`; without it the test prints `SKIPPED: ...` and
//! passes, unless `NOBOUNCE_E2E=required`, which makes it fail.

use nobounce_core::{
    dictionary::rfc3339_utc,
    store::{Ban, StateStore},
};
use nobounce_store_redis::{RedisConfig, RedisStore};
use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    thread,
    time::{Duration, Instant, SystemTime},
};

/// A `redis-server` on a free loopback port, persisting nothing, killed on
/// drop. (The end-to-end crate has a fuller one; this binary's tests keep
/// their dependencies to the workspace's published crates.)
struct Redis {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

fn redis_server() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|d| d.join("redis-server"))
        .find(|p| p.is_file())
}

impl Redis {
    /// Starts a server, or returns `None` after printing `SKIPPED` when
    /// redis-server is not installed (a failure with `NOBOUNCE_E2E=required`).
    fn start(test: &str) -> Option<Self> {
        let Some(bin) = redis_server() else {
            let required = std::env::var("NOBOUNCE_E2E")
                .is_ok_and(|v| v.trim().eq_ignore_ascii_case("required"));
            assert!(
                !required,
                "{test}: redis-server not found, and NOBOUNCE_E2E=required"
            );
            eprintln!(
                "SKIPPED: {test}: redis-server not found (set NOBOUNCE_E2E=required to make this a failure)"
            );
            return None;
        };
        let mut last = String::new();
        // The port may be taken between the probe and redis' bind.
        for _ in 0..5 {
            match Self::spawn(&bin) {
                Ok(redis) => return Some(redis),
                Err(e) => last = e,
            }
        }
        panic!("{test}: redis-server did not start: {last}");
    }

    fn spawn(bin: &Path) -> Result<Self, String> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let log = std::fs::File::create(dir.path().join("redis.log")).map_err(|e| e.to_string())?;
        let child = Command::new(bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("{}: {e}", bin.display()))?;
        let mut redis = Self { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(15);
        while !redis.answers() {
            let log = || std::fs::read_to_string(redis.dir.path().join("redis.log"));
            if let Ok(Some(status)) = redis.child.try_wait() {
                return Err(format!("exited ({status}): {}", log().unwrap_or_default()));
            }
            if Instant::now() > deadline {
                return Err(format!("no PONG: {}", log().unwrap_or_default()));
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(redis)
    }

    fn answers(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let mut buf = [0; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nobounce(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nobounce"))
        .arg("ban")
        .args(args)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .output()
        .expect("nobounce runs")
}

/// Runs `nobounce ban ARGS --config CONFIG`, asserts success, returns stdout.
fn ok(config: &Path, args: &[&str]) -> String {
    let out = nobounce(config, args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "nobounce ban {args:?} failed ({}): {}{stdout}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// What `nobounce ban list` prints for `ban`.
fn list_line(ban: &Ban) -> String {
    format!(
        "{}\tuntil {}\tstrikes {}\t{}",
        ban.key,
        rfc3339_utc(ban.until),
        ban.strikes,
        ban.reason
    )
}

#[tokio::test]
async fn ban_add_list_lift_go_straight_to_redis() {
    let Some(redis) = Redis::start("ban_redis::ban_add_list_lift_go_straight_to_redis") else {
        return;
    };
    let redis_config = RedisConfig {
        url: redis.url(),
        prefix: "cli-test:".into(),
        timeout_ms: 2000,
        retry_ms: 200,
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("nobounce.toml");
    // No control socket: with backend = "redis" the CLI must not need one.
    std::fs::write(
        &config,
        format!(
            "[store]\nbackend = \"redis\"\ncontrol_socket = \"\"\n\n[store.redis]\n\
             url = \"{}\"\nprefix = \"{}\"\ntimeout_ms = {}\n",
            redis_config.url, redis_config.prefix, redis_config.timeout_ms
        ),
    )
    .expect("write config");
    // What a milter with this configuration reads and writes.
    let store = RedisStore::new(&redis_config).expect("redis store");

    assert_eq!(ok(&config, &["list"]), "");

    // ban add: in Redis at once, for about an hour.
    let before = SystemTime::now();
    let out = ok(&config, &["add", "192.0.2.9", "--for", "1h"]);
    let after = SystemTime::now();
    let ban = store
        .ban_status("192.0.2.9", SystemTime::now())
        .await
        .expect("redis answers")
        .expect("banned in Redis");
    assert_eq!(ban.reason, "banned by the administrator");
    let hour = Duration::from_secs(3600);
    assert!(
        ban.until >= before + hour - Duration::from_secs(1) && ban.until <= after + hour,
        "{ban:?}"
    );
    assert_eq!(
        out,
        format!("banned 192.0.2.9 until {}\n", rfc3339_utc(ban.until))
    );

    // An IPv6 client is banned by its /64 (the configured ipv6_prefix).
    ok(&config, &["add", "2001:db8:1:2::77", "--for", "30m"]);
    let v6 = store
        .ban_status("2001:db8:1:2::/64", SystemTime::now())
        .await
        .expect("redis answers")
        .expect("network banned in Redis");

    // ban list: both, from Redis, sorted by key.
    let listed = ok(&config, &["list"]);
    assert_eq!(
        listed,
        format!("{}\n{}\n", list_line(&ban), list_line(&v6)),
        "{listed}"
    );

    // ban lift: gone from Redis, gone from the list; the other stays.
    assert_eq!(ok(&config, &["lift", "192.0.2.9"]), "lifted 192.0.2.9\n");
    assert_eq!(
        store
            .ban_status("192.0.2.9", SystemTime::now())
            .await
            .expect("redis answers"),
        None
    );
    assert_eq!(ok(&config, &["list"]), format!("{}\n", list_line(&v6)));
    let remaining = store.list(SystemTime::now()).await.expect("redis answers");
    assert_eq!(remaining, [v6]);

    // A ban made by a milter (here: directly in Redis) is listed and lifted
    // the same way.
    let now = SystemTime::now();
    store
        .ban(
            "198.51.100.7",
            now + hour,
            "too many unknown recipients",
            now,
        )
        .await
        .expect("ban in Redis");
    assert!(ok(&config, &["list"]).contains("198.51.100.7\tuntil "));
    ok(&config, &["lift", "198.51.100.7"]);
    assert_eq!(
        store
            .ban_status("198.51.100.7", SystemTime::now())
            .await
            .expect("redis answers"),
        None
    );

    // With Redis down the CLI fails (it has no local fallback to lie from),
    // quickly and with a message, instead of hanging.
    drop(redis);
    let out = nobounce(&config, &["list"]);
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("redis"), "{stderr}");
}
