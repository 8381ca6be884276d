//! `nobounce ban ...` with `[store] backend = "redis"`: the CLI talks to
//! Redis directly (no running milter needed), so every MX host sharing that
//! Redis sees the change.
//!
//! Needs `redis-server`; without it the test prints `SKIPPED: ...` and
//! passes, unless `NOBOUNCE_E2E=required`, which makes it fail.

use nobounce_core::{
    clock::rfc3339_utc,
    store::{Ban, StateStore},
};
use nobounce_store_redis::{RedisConfig, RedisStore};
use nobounce_test_support::{require, RedisInstance};
use std::{
    path::Path,
    process::{Command, Output, Stdio},
    time::{Duration, SystemTime},
};

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
    require!("redis-server");
    let redis = RedisInstance::start().await.expect("redis-server starts");
    let redis_config = RedisConfig {
        url: redis.url(),
        prefix: "cli-test:".into(),
        timeout: Duration::from_secs(2),
        retry: Duration::from_millis(200),
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("nobounce.toml");
    // No control socket: with backend = "redis" the CLI must not need one.
    std::fs::write(
        &config,
        format!(
            "[store]\nbackend = \"redis\"\ncontrol_socket = \"\"\n\n[store.redis]\n\
             url = \"{}\"\nprefix = \"{}\"\ntimeout = \"{}ms\"\n",
            redis_config.url,
            redis_config.prefix,
            redis_config.timeout.as_millis()
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
