//! [`RedisAliasStore`]: the alias store on Redis, shared by several MX hosts.

use crate::record::{decode_domains, encode_domains};
use async_trait::async_trait;
use nobounce_core::{
    alias::{address_key, Alias, AliasError, AliasStore, Created, ListFilter, Update},
    store::{from_millis, to_millis},
};
use nobounce_store_redis::{LuaScript, RedisConfig, RedisConnection, RunError};
use redis::aio::ConnectionManager;
use std::{collections::HashMap, fmt, future::Future, sync::Arc, time::SystemTime};

#[derive(Debug)]
struct Inner {
    redis: RedisConnection,
    create: LuaScript,
    update: LuaScript,
}

/// The [`AliasStore`] on Redis: every MX host sees the same aliases.
///
/// With the prefix `nobounce:` of `[store.redis]`, the alias
/// `shop-example.k7q2m@alias.example.org` is the hash
/// `nobounce:alias:shop-example.k7q2m@alias.example.org` (fields
/// `correspondent`, `domains` (a JSON array), `mailbox`, `note`, `created`
/// and, once retired, `retired` (milliseconds since the epoch) and
/// `reason`, and `reject_foreign` (`0`/`1`)), and `nobounce:aliases` is the
/// set of all alias addresses. Creating and updating are Lua scripts, so
/// two hosts never half-overwrite each other; aliases never expire.
///
/// Every operation has the timeout of `[store.redis]` (connecting
/// included), and is tried once more after a dropped connection. Making a
/// store does no I/O; while Redis is unreachable every operation fails
/// with an [`AliasError`]. There is no local fallback: an alias lookup that
/// fails becomes a temporary failure, so mail is retried, never lost.
/// Cheap to clone (handles share one multiplexed connection).
///
/// ```
/// use nobounce_aliases::RedisAliasStore;
/// use nobounce_store_redis::RedisConfig;
///
/// let store = RedisAliasStore::new(&RedisConfig::default()).expect("a valid URL");
/// assert_eq!(store.key("a@b"), "nobounce:alias:a@b");
/// ```
/// `Debug` shows the connection without its URL's password.
#[derive(Clone, Debug)]
pub struct RedisAliasStore {
    inner: Arc<Inner>,
}

fn redis_error(what: &str, e: redis::RedisError) -> AliasError {
    AliasError::with_source(format!("redis alias {what} failed"), e)
}

fn corrupt(key: &str, why: impl fmt::Display) -> AliasError {
    AliasError::new(format!("redis: corrupt alias {key}: {why}"))
}

impl RedisAliasStore {
    /// A store on the Redis of `config` (its URL, prefix and timeout);
    /// fails only on a malformed URL (no I/O here).
    ///
    /// ```
    /// use nobounce_aliases::RedisAliasStore;
    /// use nobounce_store_redis::RedisConfig;
    ///
    /// let bad = RedisConfig { url: "not a url".into(), ..RedisConfig::default() };
    /// assert!(RedisAliasStore::new(&bad).is_err());
    /// ```
    pub fn new(config: &RedisConfig) -> Result<Self, AliasError> {
        let redis = RedisConnection::new(config, "alias_store_retry")
            .map_err(|e| AliasError::with_source("invalid redis url", e))?;
        Ok(Self {
            inner: Arc::new(Inner {
                redis,
                create: LuaScript::new(include_str!("lua/create.lua")),
                update: LuaScript::new(include_str!("lua/update.lua")),
            }),
        })
    }

    /// The Redis key of the alias `address` (normalised).
    ///
    /// ```
    /// use nobounce_aliases::RedisAliasStore;
    /// use nobounce_store_redis::RedisConfig;
    ///
    /// let config = RedisConfig { prefix: "mx:".into(), ..RedisConfig::default() };
    /// let store = RedisAliasStore::new(&config).unwrap();
    /// assert_eq!(store.key("Shop.K7Q2M@Alias.Example.org"), "mx:alias:shop.k7q2m@alias.example.org");
    /// ```
    pub fn key(&self, address: &str) -> String {
        format!(
            "{}alias:{}",
            self.inner.redis.prefix(),
            address_key(address)
        )
    }

    fn index_key(&self) -> String {
        format!("{}aliases", self.inner.redis.prefix())
    }

    /// Runs `op` within the timeout, once more after a dropped connection
    /// (every operation is safe to repeat: a repeated create finds the
    /// alias, a repeated update finds it done).
    async fn run<T, F, Fut>(&self, what: &str, op: F) -> Result<T, AliasError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        self.inner.redis.run(op).await.map_err(|e| match e {
            RunError::Redis(e) => redis_error(what, e),
            RunError::TimedOut(t) => AliasError::new(format!(
                "redis alias {what} timed out after {} ms",
                t.as_millis()
            )),
        })
    }

    /// The update script, and the record after it.
    async fn update(&self, address: &str, args: &[String]) -> Result<Update, AliasError> {
        let key = &self.key(address);
        let (status, fields): (i64, HashMap<String, String>) = self
            .run("update", |mut conn| async move {
                let mut call = self.inner.update.key(key);
                for a in args {
                    call.arg(a);
                }
                call.invoke_async(&mut conn).await
            })
            .await?;
        match status {
            0 => Ok(Update::NotFound),
            1 => Ok(Update::Unchanged(parse(
                key,
                &address_key(address),
                &fields,
            )?)),
            _ => Ok(Update::Changed(parse(key, &address_key(address), &fields)?)),
        }
    }
}

/// The hash fields of `alias` (without the address, which is the key).
fn fields(alias: &Alias) -> Vec<(&'static str, String)> {
    let mut f = vec![
        ("correspondent", alias.correspondent.clone()),
        ("domains", encode_domains(&alias.correspondent_domains)),
        ("mailbox", alias.mailbox.clone()),
        ("note", alias.note.clone()),
        ("created", to_millis(alias.created).to_string()),
        (
            "reject_foreign",
            if alias.reject_foreign { "1" } else { "0" }.to_owned(),
        ),
    ];
    if let Some((at, reason)) = &alias.retired {
        f.push(("retired", to_millis(*at).to_string()));
        f.push(("reason", reason.clone()));
    }
    f
}

/// An alias from its hash fields.
fn parse(key: &str, address: &str, f: &HashMap<String, String>) -> Result<Alias, AliasError> {
    let field = |name: &str| {
        f.get(name)
            .ok_or_else(|| corrupt(key, format!("no field {name}")))
    };
    let millis = |name: &str| -> Result<SystemTime, AliasError> {
        let v = field(name)?;
        v.parse::<u64>()
            .map(from_millis)
            .map_err(|_| corrupt(key, format!("{name} is {v:?}")))
    };
    let retired = match f.get("retired") {
        Some(_) => Some((
            millis("retired")?,
            f.get("reason").cloned().unwrap_or_default(),
        )),
        None => None,
    };
    Ok(Alias {
        address: address.to_owned(),
        correspondent: field("correspondent")?.clone(),
        correspondent_domains: decode_domains(field("domains")?).map_err(|e| corrupt(key, e))?,
        mailbox: field("mailbox")?.clone(),
        note: f.get("note").cloned().unwrap_or_default(),
        created: millis("created")?,
        retired,
        reject_foreign: f.get("reject_foreign").is_some_and(|v| v == "1"),
    })
}

#[async_trait]
impl AliasStore for RedisAliasStore {
    async fn create(&self, alias: &Alias) -> Result<Created, AliasError> {
        let address = &address_key(&alias.address);
        let (key, index) = (&self.key(address), &self.index_key());
        let fields = &fields(alias);
        let created: i64 = self
            .run("create", |mut conn| async move {
                let mut call = self.inner.create.key(key);
                call.key(index).arg(address);
                for (name, value) in fields {
                    call.arg(*name).arg(value);
                }
                call.invoke_async(&mut conn).await
            })
            .await?;
        Ok(if created == 1 {
            Created::New
        } else {
            Created::Exists
        })
    }

    async fn get(&self, address: &str) -> Result<Option<Alias>, AliasError> {
        let key = &self.key(address);
        let fields: HashMap<String, String> = self
            .run("get", |mut conn| async move {
                redis::cmd("HGETALL").arg(key).query_async(&mut conn).await
            })
            .await?;
        if fields.is_empty() {
            return Ok(None);
        }
        parse(key, &address_key(address), &fields).map(Some)
    }

    /// Reads the index, then the hashes in batches: each alias is read
    /// atomically, the list as a whole is not a snapshot.
    async fn list(&self, filter: ListFilter) -> Result<Vec<Alias>, AliasError> {
        let index = &self.index_key();
        let prefix = self.inner.redis.prefix();
        let entries: Vec<(String, HashMap<String, String>)> = self
            .run("list", |mut conn| async move {
                let mut addresses: Vec<String> = redis::cmd("SMEMBERS")
                    .arg(index)
                    .query_async(&mut conn)
                    .await?;
                addresses.sort();
                let mut entries = Vec::with_capacity(addresses.len());
                for chunk in addresses.chunks(200) {
                    let mut pipe = redis::pipe();
                    for a in chunk {
                        pipe.cmd("HGETALL").arg(format!("{prefix}alias:{a}"));
                    }
                    let maps: Vec<HashMap<String, String>> = pipe.query_async(&mut conn).await?;
                    entries.extend(chunk.iter().cloned().zip(maps));
                }
                Ok(entries)
            })
            .await?;
        let mut out = Vec::new();
        for (address, fields) in entries {
            // An address whose hash was deleted by hand is no alias.
            if fields.is_empty() {
                continue;
            }
            let alias = parse(&self.key(&address), &address, &fields)?;
            if filter.matches(&alias) {
                out.push(alias);
            }
        }
        Ok(out)
    }

    async fn retire(
        &self,
        address: &str,
        reason: &str,
        now: SystemTime,
    ) -> Result<Update, AliasError> {
        self.update(
            address,
            &[
                "retire".into(),
                to_millis(now).to_string(),
                reason.to_owned(),
            ],
        )
        .await
    }

    async fn restore(&self, address: &str) -> Result<Update, AliasError> {
        self.update(address, &["restore".into()]).await
    }

    async fn set_reject_foreign(&self, address: &str, reject: bool) -> Result<Update, AliasError> {
        let flag = if reject { "1" } else { "0" };
        self.update(address, &["reject_foreign".into(), flag.into()])
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_hash_fields() {
        let mut a = Alias::new(
            "x.abcde@alias.example.org",
            "Shop",
            "me@example.org",
            from_millis(1_800_000_000_123),
        );
        a.correspondent_domains = vec!["shop.example".into(), "mail.shop.example".into()];
        a.note = "line one\nline two, \"quoted\"".into();
        a.retired = Some((from_millis(1_800_000_100_000), "sold".into()));
        a.reject_foreign = true;
        let map: HashMap<String, String> = fields(&a)
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        assert_eq!(parse("k", &a.address, &map).unwrap(), a);
    }

    #[test]
    fn corrupt_hashes_are_errors() {
        let mut map: HashMap<String, String> = [
            ("correspondent", "c"),
            ("domains", "[]"),
            ("mailbox", "m@x"),
            ("created", "12"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert!(parse("k", "a@b", &map).is_ok());
        map.insert("created".into(), "yesterday".into());
        let e = parse("k", "a@b", &map).unwrap_err().to_string();
        assert!(e.contains("created"), "{e}");
        map.remove("created");
        assert!(parse("k", "a@b", &map).is_err());
    }

    #[test]
    fn debug_does_not_show_the_password() {
        let s = RedisAliasStore::new(&RedisConfig {
            url: "redis://:s3cret@127.0.0.1:6390/2".into(),
            ..RedisConfig::default()
        })
        .unwrap();
        let d = format!("{s:?}");
        assert!(d.contains("127.0.0.1"), "{d}");
        assert!(!d.contains("s3cret"), "{d}");
    }
}
