//! The alias stores against the contract: SQLite always, Redis with a real
//! redis-server started by the test; two MX hosts sharing Redis; the CLI and
//! the daemon sharing one SQLite file.

use nobounce_aliases::{contract, RedisAliasStore, SqliteAliasStore};
use nobounce_core::alias::{Alias, AliasStore, Created, ListFilter, Update};
use nobounce_store_redis::RedisConfig;
use nobounce_test_support::{require, RedisInstance};
use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, SystemTime},
};

/// A config for `server` under `prefix`, with a timeout generous enough for
/// a loaded 2-core machine (the default 500 ms is for production).
fn redis_config(server: &RedisInstance, prefix: &str) -> RedisConfig {
    RedisConfig {
        url: server.url(),
        prefix: prefix.into(),
        timeout: Duration::from_secs(5),
        retry: Duration::ZERO,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue11_sqlite_store_passes_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let n = AtomicUsize::new(0);
    contract::run(|| {
        let path = dir
            .path()
            .join(format!("aliases{}.db", n.fetch_add(1, Ordering::SeqCst)));
        async move {
            // Two connections to one file, as the CLI and the daemon have.
            (
                SqliteAliasStore::open(&path).unwrap(),
                SqliteAliasStore::open(&path).unwrap(),
            )
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue11_redis_store_passes_the_contract() {
    require!("redis-server");
    let server = RedisInstance::start().await.expect("redis-server starts");
    let n = AtomicUsize::new(0);
    contract::run(|| {
        let cfg = redis_config(
            &server,
            &format!("contract{}:", n.fetch_add(1, Ordering::SeqCst)),
        );
        async move {
            // Two stores, two connections: two MX hosts.
            (
                RedisAliasStore::new(&cfg).unwrap(),
                RedisAliasStore::new(&cfg).unwrap(),
            )
        }
    })
    .await;
}

/// Two MX hosts on one Redis see each other's aliases and retirements at
/// once; a third under another prefix sees none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue11_two_mx_hosts_share_aliases_through_redis() {
    require!("redis-server");
    let server = RedisInstance::start().await.expect("redis-server starts");
    let mx1 = RedisAliasStore::new(&redis_config(&server, "site:")).unwrap();
    let mx2 = RedisAliasStore::new(&redis_config(&server, "site:")).unwrap();
    let other = RedisAliasStore::new(&redis_config(&server, "other:")).unwrap();
    let now = SystemTime::now();
    let a = Alias::new(
        "shop-example.k7q2m@alias.example.org",
        "shop.example",
        "me@example.org",
        now,
    );
    assert_eq!(mx1.create(&a).await.unwrap(), Created::New);
    let seen = mx2.get(&a.address).await.unwrap().expect("mx2 sees it");
    assert_eq!(seen.mailbox, "me@example.org");
    assert!(matches!(
        mx2.retire(&a.address, "leaked", now).await.unwrap(),
        Update::Changed(_)
    ));
    assert!(mx1.get(&a.address).await.unwrap().unwrap().is_retired());
    assert_eq!(mx1.list(ListFilter::Retired).await.unwrap().len(), 1);
    assert_eq!(other.get(&a.address).await.unwrap(), None, "prefixes apart");
    assert!(other.list(ListFilter::All).await.unwrap().is_empty());

    // The keys are where the docs say.
    let mut conn = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg("site:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    keys.sort();
    assert_eq!(
        keys,
        [
            "site:alias:shop-example.k7q2m@alias.example.org",
            "site:aliases"
        ]
    );
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&keys[0])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(ttl, -1, "aliases never expire");
}

/// While Redis is down every operation fails within the timeout, with an
/// error naming Redis; when it is back, the store works again by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue11_redis_down_is_an_error_not_an_answer() {
    require!("redis-server");
    let mut server = RedisInstance::start().await.expect("redis-server starts");
    let mut cfg = redis_config(&server, "down:");
    cfg.timeout = Duration::from_millis(500);
    let store = RedisAliasStore::new(&cfg).unwrap();
    let a = Alias::new(
        "x.abcde@alias.example.org",
        "x",
        "me@example.org",
        SystemTime::now(),
    );
    assert_eq!(store.create(&a).await.unwrap(), Created::New);
    server.stop();
    let started = std::time::Instant::now();
    let e = store.get(&a.address).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(e.to_string().contains("redis"), "{e}");
    server.restart().await.expect("restarts");
    // The restarted Redis is empty, and answers.
    let mut answered = None;
    for _ in 0..20 {
        match store.get(&a.address).await {
            Ok(v) => {
                answered = Some(v);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert_eq!(answered, Some(None), "the store reconnects by itself");
}

/// The CLI (a writer, its own process in real life) and the daemon (a
/// reader answering lookups) on one SQLite file at the same time: neither
/// fails, and the reader sees every alias as soon as it is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue11_cli_writer_and_daemon_reader_share_the_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("aliases.db");
    let writer = SqliteAliasStore::open(&path).unwrap();
    let reader = SqliteAliasStore::open(&path).unwrap();
    const N: usize = 200;
    let write = tokio::spawn(async move {
        for i in 0..N {
            let a = Alias::new(
                &format!("c{i}.abcde@alias.example.org"),
                "c",
                "me@example.org",
                SystemTime::now(),
            );
            assert_eq!(writer.create(&a).await.unwrap(), Created::New);
            if i % 3 == 0 {
                let _ = writer
                    .retire(&a.address, "test", SystemTime::now())
                    .await
                    .unwrap();
            }
        }
    });
    let read = tokio::spawn(async move {
        let mut lookups = 0;
        loop {
            let all = reader.list(ListFilter::All).await.unwrap();
            for a in all.iter().rev().take(5) {
                assert!(reader.get(&a.address).await.unwrap().is_some());
                lookups += 1;
            }
            if all.len() == N {
                return lookups;
            }
            tokio::task::yield_now().await;
        }
    });
    write.await.unwrap();
    let lookups = tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .expect("the reader sees every alias")
        .unwrap();
    assert!(lookups > 0);
    // A third connection, opened later (a new CLI run), agrees.
    let late = SqliteAliasStore::open(&path).unwrap();
    assert_eq!(
        late.list(ListFilter::Retired).await.unwrap().len(),
        N.div_ceil(3)
    );
}
