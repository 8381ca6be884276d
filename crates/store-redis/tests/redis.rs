//! RedisStore and FallbackStore against a real redis-server on loopback.

use nobounce_core::store::{contract, BanRule, MemoryStore, StateStore};
use nobounce_store_redis::{FallbackStore, RedisConfig, RedisStore};
use nobounce_test_support::{free_port, require, LogCapture, RedisInstance};
use std::{
    net::TcpListener,
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant, SystemTime},
};

/// A config for `server` under `prefix`, with a timeout generous enough for
/// a loaded 2-core CI machine (the default 500 ms is for production).
fn config(server: &RedisInstance, prefix: &str) -> RedisConfig {
    RedisConfig {
        url: server.url(),
        prefix: prefix.into(),
        timeout: Duration::from_secs(5),
        retry: Duration::ZERO,
    }
}

async fn raw(server: &RedisInstance) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn keys(conn: &mut redis::aio::MultiplexedConnection, pattern: &str) -> Vec<String> {
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg(pattern)
        .query_async(conn)
        .await
        .unwrap();
    keys.sort();
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_passes_the_contract() {
    require!("redis-server");
    let server = RedisInstance::start().await.expect("redis-server starts");
    let n = AtomicUsize::new(0);
    contract::run_all(|| {
        let cfg = config(
            &server,
            &format!("contract{}:", n.fetch_add(1, Ordering::SeqCst)),
        );
        async move {
            // Two stores, two connections: two MX hosts.
            (
                RedisStore::new(&cfg).unwrap(),
                RedisStore::new(&cfg).unwrap(),
            )
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_store_passes_the_contract_while_redis_is_up() {
    require!("redis-server");
    let server = RedisInstance::start().await.expect("redis-server starts");
    let n = AtomicUsize::new(0);
    contract::run_all(|| {
        let cfg = config(&server, &format!("fb{}:", n.fetch_add(1, Ordering::SeqCst)));
        async move {
            let host = || FallbackStore::redis(&cfg).unwrap();
            (host(), host())
        }
    })
    .await;
}

#[tokio::test]
async fn every_key_expires_by_itself() {
    require!("redis-server");
    let server = RedisInstance::start().await.expect("redis-server starts");
    let store = RedisStore::new(&config(&server, "ttl:")).unwrap();
    let now = SystemTime::now();
    let rule = BanRule {
        base: Duration::from_secs(3600),
        escalate: true,
        max: Duration::from_secs(86400),
        forget_after: Duration::from_secs(86400),
    };
    store
        .add_distinct("192.0.2.1", "m", Duration::from_secs(600), now)
        .await
        .unwrap();
    store.strike("192.0.2.2", &rule, "r", now).await.unwrap();
    store
        .add_distinct("192.0.2.3", "m", Duration::from_secs(600), now)
        .await
        .unwrap();
    store
        .ban("192.0.2.3", now + Duration::from_secs(60), "r", now)
        .await
        .unwrap();
    let mut conn = raw(&server).await;
    let all = keys(&mut conn, "ttl:*").await;
    assert_eq!(
        all,
        [
            "ttl:ban:192.0.2.2",
            "ttl:ban:192.0.2.3",
            "ttl:seen:192.0.2.1",
            "ttl:seen:192.0.2.3",
            "ttl:strikes:192.0.2.2",
        ]
    );
    for key in &all {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(ttl > 0, "{key} has no TTL ({ttl})");
    }
    // The TTLs follow the data: a 600 s window, a 1 h ban, its strike
    // remembered 1 h + 24 h.
    let pttl = |key: &'static str| {
        let mut conn = conn.clone();
        async move {
            redis::cmd("PTTL")
                .arg(key)
                .query_async::<i64>(&mut conn)
                .await
                .unwrap()
        }
    };
    assert!(pttl("ttl:seen:192.0.2.1").await <= 600_000);
    assert!(pttl("ttl:ban:192.0.2.2").await <= 3_600_000);
    assert!(pttl("ttl:ban:192.0.2.2").await > 60_000);
    assert!(pttl("ttl:strikes:192.0.2.2").await > 3_600_000);
    assert!(pttl("ttl:strikes:192.0.2.2").await <= 25 * 3_600_000);
    assert!(pttl("ttl:ban:192.0.2.3").await <= 60_000);
}

#[tokio::test]
async fn short_bans_really_leave_redis() {
    require!("redis-server");
    let server = RedisInstance::start().await.expect("redis-server starts");
    let store = RedisStore::new(&config(&server, "short:")).unwrap();
    let rule = BanRule {
        base: Duration::from_millis(800),
        escalate: false,
        max: Duration::from_millis(800),
        forget_after: Duration::from_millis(400),
    };
    let now = SystemTime::now();
    store
        .add_distinct("c", "m", Duration::from_millis(800), now)
        .await
        .unwrap();
    let strike = store.strike("c", &rule, "r", now).await.unwrap();
    assert!(strike.new);
    store
        .ban("d", now + Duration::from_millis(800), "r", now)
        .await
        .unwrap();
    let mut conn = raw(&server).await;
    assert!(!keys(&mut conn, "short:*").await.is_empty());
    // Redis expires them by its own clock; wait for that, bounded.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !keys(&mut conn, "short:*").await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "keys still there: {:?}",
            keys(&mut conn, "short:*").await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        store.ban_status("c", SystemTime::now()).await.unwrap(),
        None
    );
    assert_eq!(store.list(SystemTime::now()).await.unwrap(), []);
}

#[tokio::test]
async fn prefixes_keep_stores_apart() {
    require!("redis-server");
    let server = RedisInstance::start().await.expect("redis-server starts");
    let a = RedisStore::new(&config(&server, "a:")).unwrap();
    // A prefix with glob characters must not match other prefixes' keys.
    let b = RedisStore::new(&config(&server, "*:")).unwrap();
    let now = SystemTime::now();
    let later = now + Duration::from_secs(60);
    a.ban("k", later, "in a", now).await.unwrap();
    assert_eq!(b.ban_status("k", now).await.unwrap(), None);
    assert_eq!(b.list(now).await.unwrap(), []);
    b.ban("k", later, "in b", now).await.unwrap();
    assert_eq!(a.list(now).await.unwrap()[0].reason, "in a");
    assert_eq!(b.list(now).await.unwrap().len(), 1);
    assert_eq!(b.list(now).await.unwrap()[0].reason, "in b");
}

#[tokio::test]
async fn scripts_are_reloaded_after_a_script_flush() {
    require!("redis-server");
    let server = RedisInstance::start().await.expect("redis-server starts");
    let store = RedisStore::new(&config(&server, "flush:")).unwrap();
    let now = SystemTime::now();
    let w = Duration::from_secs(60);
    assert_eq!(store.add_distinct("k", "a", w, now).await.unwrap(), 1);
    let mut conn = raw(&server).await;
    redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    assert_eq!(store.add_distinct("k", "b", w, now).await.unwrap(), 2);
}

#[tokio::test]
async fn a_silent_server_makes_operations_time_out() {
    // Accepts connections and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let _hold = std::thread::spawn(move || {
        let mut open = Vec::new();
        for stream in listener.incoming().take(8) {
            open.push(stream);
        }
    });
    let store = RedisStore::new(&RedisConfig {
        url: format!("redis://127.0.0.1:{port}"),
        timeout: Duration::from_millis(200),
        ..RedisConfig::default()
    })
    .unwrap();
    let now = SystemTime::now();
    // The outer bound only keeps a broken timeout from hanging the test.
    let bounded = Duration::from_secs(60);
    let err = tokio::time::timeout(bounded, store.ban_status("k", now))
        .await
        .expect("the store's own timeout fires")
        .unwrap_err();
    assert!(err.to_string().contains("timed out"), "{err}");
    let err = tokio::time::timeout(
        bounded,
        store.add_distinct("k", "m", Duration::from_secs(1), now),
    )
    .await
    .expect("the store's own timeout fires")
    .unwrap_err();
    assert!(err.to_string().contains("timed out"), "{err}");

    // The fallback store answers from memory instead.
    let fallback = FallbackStore::new(store, MemoryStore::default(), Duration::from_secs(3600));
    let n = tokio::time::timeout(
        bounded,
        fallback.add_distinct("k", "m", Duration::from_secs(1), now),
    )
    .await
    .expect("bounded")
    .unwrap();
    assert_eq!(n, 1);
    assert!(fallback.is_degraded());
}

#[tokio::test]
async fn an_unreachable_server_is_an_error_not_a_hang() {
    let port = free_port().unwrap();
    let store = RedisStore::new(&RedisConfig {
        url: format!("redis://127.0.0.1:{port}"),
        ..RedisConfig::default()
    })
    .unwrap();
    assert!(store.ping().await.is_err());
    assert!(store.ban_status("k", SystemTime::now()).await.is_err());
}

/// The brief's scenario: Redis dies mid-test, the milter goes on from
/// memory with one warning, Redis comes back (empty) on the same port and
/// the state is shared again, with the outage's bans pushed.
#[tokio::test]
async fn fallback_survives_a_redis_restart() {
    require!("redis-server");
    let mut server = RedisInstance::start().await.expect("redis-server starts");
    let logs = LogCapture::default();
    let _guard = logs.install();
    let cfg = RedisConfig {
        timeout: Duration::from_secs(2),
        ..config(&server, "fb:")
    };
    let host_a = FallbackStore::redis(&cfg).unwrap();
    let host_b = RedisStore::new(&cfg).unwrap();
    let rule = BanRule {
        base: Duration::from_secs(3600),
        escalate: true,
        max: Duration::from_secs(86400),
        forget_after: Duration::from_secs(86400),
    };
    let now = SystemTime::now();
    let w = Duration::from_secs(600);

    // Shared while up.
    let before = host_a
        .strike("192.0.2.1", &rule, "dict", now)
        .await
        .unwrap();
    assert_eq!(
        host_b.ban_status("192.0.2.1", now).await.unwrap(),
        Some(before.ban.clone())
    );
    assert_eq!(
        host_a
            .add_distinct("192.0.2.9", "m1", w, now)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        host_b
            .add_distinct("192.0.2.9", "m2", w, now)
            .await
            .unwrap(),
        2
    );

    // Redis dies: everything still works, from memory.
    let port = server.port();
    server.stop();
    for i in 0..10 {
        let n = host_a
            .add_distinct("198.51.100.1", &format!("m{i}"), w, now)
            .await
            .expect("served locally");
        assert_eq!(n, i + 1);
    }
    assert!(host_a.is_degraded());
    assert_eq!(
        host_a.ban_status("192.0.2.1", now).await.unwrap(),
        Some(before.ban.clone()),
        "a ban seen before the outage still applies"
    );
    let during = host_a
        .strike("198.51.100.1", &rule, "dict", now)
        .await
        .unwrap();
    assert!(during.new);
    host_a
        .ban(
            "203.0.113.5",
            now + Duration::from_secs(600),
            "by hand",
            now,
        )
        .await
        .unwrap();
    assert_eq!(host_a.list(now).await.unwrap().len(), 3);
    assert_eq!(
        logs.lines_with("store_unreachable").len(),
        1,
        "one warning per outage: {:?}",
        logs.lines_with("store")
    );

    // Redis is back (empty) on the same port.
    server.restart().await.expect("redis-server restarts");
    assert_eq!(server.port(), port);
    let deadline = Instant::now() + Duration::from_secs(30);
    while host_a.is_degraded() {
        assert!(
            Instant::now() < deadline,
            "no recovery: {:?}",
            logs.lines_with("store")
        );
        host_a.ban_status("192.0.2.77", now).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(logs.lines_with("store_recovered").len(), 1);
    assert_eq!(logs.lines_with("store_unreachable").len(), 1);

    // The outage's bans were pushed; host B sees them.
    let pushed = host_b
        .ban_status("198.51.100.1", now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (pushed.until, pushed.reason.as_str()),
        (during.ban.until, "dict")
    );
    let pushed = host_b
        .ban_status("203.0.113.5", now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pushed.reason, "by hand");
    // Shared again.
    assert_eq!(
        host_a
            .add_distinct("192.0.2.10", "x", w, now)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        host_b
            .add_distinct("192.0.2.10", "y", w, now)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        host_a
            .add_distinct("192.0.2.10", "z", w, now)
            .await
            .unwrap(),
        3
    );
    drop(server);
}
