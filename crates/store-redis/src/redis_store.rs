//! [`RedisStore`]: the `StateStore` port on Redis.

use crate::connection::{LuaScript, RedisConnection, RunError};
use async_trait::async_trait;
use nobounce_core::clock::serialize_duration;
use nobounce_core::store::{
    duration_millis, from_millis, sorted_by_key, to_millis, Ban, BanRule, StateStore, StoreError,
    Strike, MAX_DISTINCT_MEMBERS,
};
use redis::aio::ConnectionManager;
use serde::Serialize;
use std::{
    fmt::{self, Debug, Formatter},
    future::Future,
    sync::Arc,
    time::{Duration, SystemTime},
};

/// Settings of the Redis store (`[store.redis]` in the configuration file).
#[derive(Clone, Eq, PartialEq, Serialize)]
pub struct RedisConfig {
    /// Where Redis is: `redis://[:PASSWORD@]HOST[:PORT][/DB]` or
    /// `redis+unix:///PATH`. Default `redis://127.0.0.1:6379`. Shown (in
    /// logs, `Debug`, `nobounce config check`) without its password.
    #[serde(serialize_with = "serialize_redacted")]
    pub url: String,
    /// Put before every key, so several programs (or test runs) can share one
    /// Redis. Default `nobounce:`.
    pub prefix: String,
    /// How long one operation may take, connecting included; past it the
    /// operation fails (and mail goes on as if nobody were banned).
    /// Default 500 ms.
    #[serde(serialize_with = "serialize_duration")]
    pub timeout: Duration,
    /// While Redis is unreachable, how often [`crate::FallbackStore`] tries
    /// it again. Default 5 s.
    #[serde(serialize_with = "serialize_duration")]
    pub retry: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            prefix: "nobounce:".into(),
            timeout: Duration::from_millis(500),
            retry: Duration::from_secs(5),
        }
    }
}

impl Debug for RedisConfig {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact(&self.url))
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .finish()
    }
}

/// Checks that `url` is a Redis URL this build can use: `redis://`,
/// `redis+unix://` or `unix://`. `rediss://` (TLS) is refused: TLS is not
/// compiled in.
pub fn check_url(url: &str) -> Result<(), String> {
    let scheme = url.split_once("://").map_or("", |(s, _)| s);
    match scheme {
        "redis" | "redis+unix" | "unix" => {}
        "rediss" => {
            return Err(
                "rediss:// (TLS) is not supported by this build of nobounce; use redis:// \
                 over a trusted network, or a unix socket (redis+unix:///path)"
                    .into(),
            )
        }
        _ => {
            return Err(format!(
                "{:?} must start with redis:// or redis+unix://",
                redact(url)
            ))
        }
    }
    redis::IntoConnectionInfo::into_connection_info(url)
        .map(drop)
        .map_err(|e| format!("invalid redis url {:?}: {e}", redact(url)))
}

/// `url` with any password replaced by `***`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or("", |(u, _)| u);
            format!("{scheme}://{user}:***@{host}{path}")
        }
        None => url.to_owned(),
    }
}

fn serialize_redacted<S: serde::Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redact(url))
}

/// The Lua scripts.
#[derive(Debug)]
struct Scripts {
    add_distinct: LuaScript,
    strike: LuaScript,
    ban: LuaScript,
}

impl Scripts {
    fn new() -> Self {
        Self {
            add_distinct: LuaScript::new(include_str!("lua/add_distinct.lua")),
            strike: LuaScript::new(concat!(
                include_str!("lua/strikes.lua"),
                include_str!("lua/strike.lua")
            )),
            ban: LuaScript::new(concat!(
                include_str!("lua/strikes.lua"),
                include_str!("lua/ban.lua")
            )),
        }
    }
}

#[derive(Debug)]
struct Inner {
    redis: RedisConnection,
    scripts: Scripts,
}

/// The [`StateStore`] port on Redis. Cheap to clone (handles share one
/// connection, multiplexed).
///
/// Making a store does no I/O: it connects on first use, and every
/// operation fails with a [`StoreError`] while Redis is unreachable.
/// `Debug` shows the connection without its URL's password.
#[derive(Clone, Debug)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

/// Escapes the glob characters of Redis' MATCH patterns.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn redis_error(what: &str, e: redis::RedisError) -> StoreError {
    StoreError::with_source(format!("redis {what} failed"), e)
}

fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::new(format!("redis: corrupt {what} value {value:?}"))
}

/// Parses a ban value `UNTIL_MS STRIKES REASON`.
fn parse_ban(key: &str, value: &str) -> Result<Ban, StoreError> {
    let mut parts = value.splitn(3, ' ');
    let mut number = || parts.next().and_then(|p| p.parse::<u64>().ok());
    let (Some(until), Some(strikes)) = (number(), number()) else {
        return Err(corrupt("ban", value));
    };
    let reason = parts.next().ok_or_else(|| corrupt("ban", value))?;
    Ok(Ban {
        key: key.to_owned(),
        until: from_millis(until),
        reason: reason.to_owned(),
        strikes: u32::try_from(strikes).map_err(|_| corrupt("ban", value))?,
    })
}

impl RedisStore {
    /// A store for `config`; fails only on a malformed URL (no I/O here).
    pub fn new(config: &RedisConfig) -> Result<Self, StoreError> {
        let redis = RedisConnection::new(config, "store_retry")
            .map_err(|e| StoreError::with_source("invalid redis url", e))?;
        let scripts = Scripts::new();
        Ok(Self {
            inner: Arc::new(Inner { redis, scripts }),
        })
    }

    /// Checks that Redis answers (`PING`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.run("ping", |mut conn| async move {
            redis::cmd("PING").query_async::<()>(&mut conn).await
        })
        .await
    }

    fn key(&self, kind: &str, key: &str) -> String {
        format!("{}{kind}:{key}", self.inner.redis.prefix())
    }

    /// `GET redis_key`, as the operation `what`.
    async fn get(&self, what: &str, redis_key: &str) -> Result<Option<String>, StoreError> {
        self.run(what, |mut conn| async move {
            redis::cmd("GET")
                .arg(redis_key)
                .query_async(&mut conn)
                .await
        })
        .await
    }

    /// Runs `op` on the connection within the timeout, once more after a
    /// dropped connection. Every operation is safe to repeat: the scripts
    /// are idempotent (a repeated strike finds the ban the first one made).
    async fn run<T, F, Fut>(&self, what: &str, op: F) -> Result<T, StoreError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        self.inner.redis.run(op).await.map_err(|e| match e {
            RunError::Redis(e) => redis_error(what, e),
            RunError::TimedOut(t) => {
                StoreError::new(format!("redis {what} timed out after {} ms", t.as_millis()))
            }
        })
    }
}

#[async_trait]
impl StateStore for RedisStore {
    async fn add_distinct(
        &self,
        key: &str,
        member: &str,
        window: Duration,
        now: SystemTime,
    ) -> Result<u64, StoreError> {
        let seen = &self.key("seen", key);
        self.run("add_distinct", |mut conn| async move {
            self.inner
                .scripts
                .add_distinct
                .key(seen)
                .arg(to_millis(now))
                .arg(duration_millis(window))
                .arg(member)
                .arg(MAX_DISTINCT_MEMBERS)
                .invoke_async(&mut conn)
                .await
        })
        .await
    }

    async fn strike(
        &self,
        key: &str,
        rule: &BanRule,
        reason: &str,
        now: SystemTime,
    ) -> Result<Strike, StoreError> {
        let (ban_key, strikes_key, seen_key) = (
            &self.key("ban", key),
            &self.key("strikes", key),
            &self.key("seen", key),
        );
        let base = rule.ban_millis(1);
        let cap = duration_millis(rule.max).max(base);
        let (new, value): (i64, String) = self
            .run("strike", |mut conn| async move {
                self.inner
                    .scripts
                    .strike
                    .key(ban_key)
                    .key(strikes_key)
                    .key(seen_key)
                    .arg(to_millis(now))
                    .arg(base)
                    .arg(if rule.escalate { "1" } else { "0" })
                    .arg(cap)
                    .arg(duration_millis(rule.forget_after))
                    .arg(reason)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        Ok(Strike {
            ban: parse_ban(key, &value)?,
            new: new == 1,
        })
    }

    async fn ban(
        &self,
        key: &str,
        until: SystemTime,
        reason: &str,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let (ban_key, strikes_key) = (&self.key("ban", key), &self.key("strikes", key));
        self.run("ban", |mut conn| async move {
            self.inner
                .scripts
                .ban
                .key(ban_key)
                .key(strikes_key)
                .arg(to_millis(now))
                .arg(to_millis(until))
                .arg(reason)
                .invoke_async::<i64>(&mut conn)
                .await
        })
        .await
        .map(drop)
    }

    async fn ban_status(&self, key: &str, now: SystemTime) -> Result<Option<Ban>, StoreError> {
        match self.get("ban_status", &self.key("ban", key)).await? {
            Some(v) => {
                let ban = parse_ban(key, &v)?;
                Ok((ban.until > now).then_some(ban))
            }
            None => Ok(None),
        }
    }

    async fn lift(&self, key: &str, _now: SystemTime) -> Result<(), StoreError> {
        let keys = &[
            self.key("ban", key),
            self.key("strikes", key),
            self.key("seen", key),
        ];
        self.run("lift", |mut conn| async move {
            redis::cmd("DEL")
                .arg(&keys[..])
                .query_async::<i64>(&mut conn)
                .await
        })
        .await
        .map(drop)
    }

    /// Stored as `UNTIL_MS VALUE` with a Redis expiry a minute past the
    /// end, so that the record ends at `now + ttl` as the caller counts
    /// time (tests run on virtual clocks), and Redis frees it anyway.
    async fn put_record(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let rkey = &self.key("rec", key);
        let ttl_ms = duration_millis(ttl);
        if ttl_ms == 0 {
            return self
                .run("put_record", |mut conn| async move {
                    redis::cmd("DEL")
                        .arg(rkey)
                        .query_async::<i64>(&mut conn)
                        .await
                })
                .await
                .map(drop);
        }
        let until = to_millis(now).saturating_add(ttl_ms);
        let stored = &format!("{until} {value}");
        let expire = ttl_ms.saturating_add(60_000);
        self.run("put_record", |mut conn| async move {
            redis::cmd("SET")
                .arg(rkey)
                .arg(stored)
                .arg("PX")
                .arg(expire)
                .query_async::<()>(&mut conn)
                .await
        })
        .await
    }

    async fn get_record(&self, key: &str, now: SystemTime) -> Result<Option<String>, StoreError> {
        let Some(stored) = self.get("get_record", &self.key("rec", key)).await? else {
            return Ok(None);
        };
        let (until, value) = stored
            .split_once(' ')
            .and_then(|(u, v)| Some((u.parse::<u64>().ok()?, v)))
            .ok_or_else(|| corrupt("record", &stored))?;
        Ok((until > to_millis(now)).then(|| value.to_owned()))
    }

    /// Scans the ban keys, then reads them in batches: each ban is read
    /// atomically, the list as a whole is not a snapshot (a ban made or
    /// ended during the scan may or may not be in it).
    async fn list(&self, now: SystemTime) -> Result<Vec<Ban>, StoreError> {
        let ban_prefix = self.key("ban", "");
        // The prefix with its glob characters escaped, for SCAN MATCH.
        let pattern = &format!("{}ban:*", glob_escape(self.inner.redis.prefix()));
        let entries: Vec<(String, Option<String>)> = self
            .run("list", |mut conn| async move {
                let mut keys: Vec<String> = Vec::new();
                let mut cursor: u64 = 0;
                loop {
                    let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(pattern)
                        .arg("COUNT")
                        .arg(500)
                        .query_async(&mut conn)
                        .await?;
                    keys.extend(batch);
                    cursor = next;
                    if cursor == 0 {
                        break;
                    }
                }
                // SCAN may return a key more than once.
                keys.sort();
                keys.dedup();
                let mut entries = Vec::with_capacity(keys.len());
                for chunk in keys.chunks(200) {
                    let values: Vec<Option<String>> =
                        redis::cmd("MGET").arg(chunk).query_async(&mut conn).await?;
                    entries.extend(chunk.iter().cloned().zip(values));
                }
                Ok(entries)
            })
            .await?;
        let mut bans = Vec::new();
        for (redis_key, value) in entries {
            let (Some(key), Some(value)) = (redis_key.strip_prefix(&ban_prefix), value) else {
                continue;
            };
            let ban = parse_ban(key, &value)?;
            if ban.until > now {
                bans.push(ban);
            }
        }
        Ok(sorted_by_key(bans))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ban_values_parse() {
        let ban = parse_ban("k", "1800000000000 3 too many: a b").unwrap();
        assert_eq!(ban.until, from_millis(1_800_000_000_000));
        assert_eq!(ban.strikes, 3);
        assert_eq!(ban.reason, "too many: a b");
        assert_eq!(parse_ban("k", "5 0 ").unwrap().reason, "");
        for bad in ["", "5", "5 1", "x 1 r", "5 -1 r", "5 99999999999 r"] {
            assert!(parse_ban("k", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(glob_escape("nobounce:"), "nobounce:");
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }

    #[test]
    fn urls_are_checked_and_passwords_redacted() {
        assert!(RedisStore::new(&RedisConfig {
            url: "not a url".into(),
            ..RedisConfig::default()
        })
        .is_err());
        check_url("redis://127.0.0.1:6379/2").unwrap();
        check_url("redis+unix:///run/redis.sock").unwrap();
        assert!(check_url("rediss://example.org")
            .unwrap_err()
            .contains("TLS"));
        assert!(check_url("http://example.org").is_err());
        assert_eq!(
            redact("redis://:s3cret@127.0.0.1:6390/2"),
            "redis://:***@127.0.0.1:6390/2"
        );
        assert_eq!(redact("redis://me:s3cret@host"), "redis://me:***@host");
        assert_eq!(redact("redis://host:1/0"), "redis://host:1/0");
        let c = RedisConfig {
            url: "redis://:s3cret@127.0.0.1:6390/2".into(),
            ..RedisConfig::default()
        };
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn debug_does_not_show_the_password() {
        let s = RedisStore::new(&RedisConfig {
            url: "redis://:s3cret@127.0.0.1:6390/2".into(),
            ..RedisConfig::default()
        })
        .unwrap();
        let d = format!("{s:?}");
        assert!(d.contains("127.0.0.1"), "{d}");
        assert!(!d.contains("s3cret"), "{d}");
    }
}
