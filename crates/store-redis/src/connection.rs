//! [`RedisConnection`]: one Redis connection as nobounce's stores use it,
//! shared by the state store and the alias store (`nobounce-aliases`).

use crate::RedisConfig;
use redis::{aio::ConnectionManager, Client, RedisError, RedisResult, Script};
use std::{
    fmt::{self, Debug, Formatter},
    future::Future,
    ops::Deref,
    time::Duration,
};
use tokio::sync::OnceCell;

/// A Redis connection, made on first use (so that a store can be built
/// while Redis is down), multiplexed, reconnecting by itself after errors,
/// with one timeout per operation, connecting included.
pub struct RedisConnection {
    client: Client,
    /// Put before every key (`[store.redis] prefix`).
    prefix: String,
    conn: OnceCell<ConnectionManager>,
    timeout: Duration,
    /// The `event` of the debug line logged when an operation is retried.
    retry_event: &'static str,
}

/// Why [`RedisConnection::run`] failed.
#[derive(Debug)]
pub enum RunError {
    /// Redis answered with an error, or could not be reached.
    Redis(RedisError),
    /// The operation did not finish within the timeout.
    TimedOut(Duration),
}

impl Debug for RedisConnection {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        // The address only: the URL may hold a password.
        f.debug_struct("RedisConnection")
            .field("addr", &self.client.get_connection_info().addr)
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisConnection {
    /// A connection to the Redis of `config` (its URL, key prefix and
    /// timeout), not yet made; fails only on a malformed URL.
    /// `retry_event` names the debug line of a retried operation.
    pub fn new(config: &RedisConfig, retry_event: &'static str) -> RedisResult<Self> {
        Ok(Self {
            client: Client::open(config.url.as_str())?,
            prefix: config.prefix.clone(),
            conn: OnceCell::new(),
            timeout: config.timeout,
            retry_event,
        })
    }

    /// The prefix of every key.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The timeout of one operation.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    async fn connection(&self) -> RedisResult<ConnectionManager> {
        self.conn
            .get_or_try_init(|| async {
                // No retries of its own: the caller's timeout bounds the
                // attempt, and the caller decides when to try again.
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_number_of_retries(0)
                    .set_connection_timeout(self.timeout)
                    .set_response_timeout(self.timeout);
                ConnectionManager::new_with_config(self.client.clone(), config).await
            })
            .await
            .cloned()
    }

    /// Runs `op` on the connection within the timeout.
    ///
    /// After a dropped connection (Redis restarted, a proxy closed it) the
    /// connection manager reconnects, and `op` is tried once more within the
    /// same timeout, so a restart does not cost one failed operation per
    /// store. Callers make every operation safe to repeat.
    pub async fn run<T, F, Fut>(&self, op: F) -> Result<T, RunError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let attempt = async {
            let conn = self.connection().await?;
            match op(conn.clone()).await {
                Err(e) if e.is_io_error() || e.is_connection_dropped() => {
                    tracing::debug!(event = self.retry_event, error = %e, "redis connection dropped, retrying once");
                    op(conn).await
                }
                result => result,
            }
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(result) => result.map_err(RunError::Redis),
            Err(_) => Err(RunError::TimedOut(self.timeout)),
        }
    }
}

/// A Lua script of a store, loaded once per process (and again by the
/// redis crate after a Redis restart flushed its script cache). `Debug`
/// shows its SHA-1, not its code.
pub struct LuaScript(Script);

impl LuaScript {
    /// The script of `code`.
    pub fn new(code: &str) -> Self {
        Self(Script::new(code))
    }
}

impl Deref for LuaScript {
    type Target = Script;

    fn deref(&self) -> &Script {
        &self.0
    }
}

impl Debug for LuaScript {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.debug_tuple("LuaScript")
            .field(&self.0.get_hash())
            .finish()
    }
}
