//! # nobounce-store-redis
//!
//! Shared state for nobounce on Redis, so that several MX hosts of one
//! domain count a client's unknown recipients together and honour each
//! other's bans.
//!
//! # Layout
//!
//! - [`RedisStore`] ([`RedisConfig`]): the [`StateStore`] port of
//!   `nobounce-core` on Redis. Every update is one Lua script or one command,
//!   so N milters on N hosts agree; every key has a TTL, so nothing stays
//!   behind; every operation has a timeout (500 ms by default), so a slow
//!   Redis never stalls the SMTP dialog.
//! - [`FallbackStore`]: a Redis store with a local [`MemoryStore`] behind
//!   it. While Redis is unreachable, operations are served from memory (one
//!   warning per outage, not per message) and when Redis is back the bans and
//!   lifts of the outage are pushed to it. A Redis outage never refuses mail.
//!
//! # Keys
//!
//! With the default prefix `nobounce:`, the client key `192.0.2.1` has
//!
//! | Redis key                   | type       | value                         |
//! |-----------------------------|------------|-------------------------------|
//! | `nobounce:seen:192.0.2.1`   | sorted set | member → last added (ms)      |
//! | `nobounce:ban:192.0.2.1`    | string     | `UNTIL_MS STRIKES REASON`     |
//! | `nobounce:strikes:192.0.2.1`| string     | `COUNT FORGET_AT_MS`          |
//!
//! Times are milliseconds since the Unix epoch from the `now` the callers
//! pass (see the `store` module of `nobounce-core`); the TTLs are set from
//! the same `now`, so with synchronised clocks a key expires when its data
//! does. Redis Cluster is not supported (use a single primary, with Sentinel
//! or a proxy for failover).
//!
//! [`StateStore`]: nobounce_core::StateStore
//! [`MemoryStore`]: nobounce_core::MemoryStore

mod connection;
mod fallback;
mod redis_store;

pub use crate::{
    connection::{LuaScript, RedisConnection, RunError},
    fallback::FallbackStore,
    redis_store::{check_url, redact, RedisConfig, RedisStore},
};
