//! # nobounce-aliases
//!
//! Per-correspondent aliases (issue 11): each correspondent gets an address
//! of its own, leading to a real mailbox; when one leaks, it is retired,
//! and nobounce refuses it during the SMTP dialog instead of accepting and
//! dropping the mail. The port, the record and the format of new aliases
//! are in `nobounce-core` ([`nobounce_core::alias`]); this crate has
//! everything that does I/O.
//!
//! # Layout
//!
//! - [`SqliteAliasStore`]: the store in an SQLite file (WAL mode), shared
//!   by the daemon and `nobounce alias` on one host.
//! - [`RedisAliasStore`]: the store on Redis (`[store.redis]`), shared by
//!   several MX hosts.
//! - [`open_store`]: the store `[aliases]` describes.
//! - [`contract`]: the test suite every store passes.
//! - [`socketmap`]: Postfix's socketmap protocol over a store, for
//!   `virtual_alias_maps`.
//! - [`cli`]: the `nobounce alias` commands (the binary only dispatches).

pub mod cli;
pub mod contract;
mod record;
mod redis_store;
pub mod socketmap;
mod sqlite;

pub use crate::{
    redis_store::RedisAliasStore,
    sqlite::{SqliteAliasStore, BUSY_TIMEOUT},
};

use nobounce_config::{AliasBackend, Config};
use nobounce_core::alias::{AliasError, AliasStore};
use std::sync::Arc;

/// The alias store of `config`'s `[aliases]`: the SQLite file of `path`
/// (created, with its schema, if missing; opened on a blocking thread), or
/// the Redis of `[store.redis]` (no I/O until first use). The daemon calls
/// it at start, `nobounce alias` for each command.
///
/// ```
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let config = nobounce_config::Config::from_toml_str(&format!(
///     "[aliases]\ndomains = [\"alias.example.org\"]\npath = \"{}/aliases.db\"\n",
///     dir.path().display()
/// ))?;
/// let store = nobounce_aliases::open_store(&config).await?;
/// assert!(store.get("x.abcde@alias.example.org").await?.is_none());
/// # Ok(()) }
/// ```
pub async fn open_store(config: &Config) -> Result<Arc<dyn AliasStore>, AliasError> {
    match config.aliases.store {
        AliasBackend::Sqlite => {
            let path = config.aliases.path.clone();
            let opened = tokio::task::spawn_blocking(move || SqliteAliasStore::open(&path))
                .await
                .map_err(|e| AliasError::new(format!("opening the alias database failed: {e}")))?;
            Ok(Arc::new(opened?))
        }
        AliasBackend::Redis => Ok(Arc::new(RedisAliasStore::new(&config.store.redis)?)),
    }
}
