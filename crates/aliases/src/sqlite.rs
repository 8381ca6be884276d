//! [`SqliteAliasStore`]: the alias store in an SQLite file.

use crate::record::{decode_domains, encode_domains, millis_from_sql, millis_to_sql};
use async_trait::async_trait;
use nobounce_core::alias::{
    address_key, Alias, AliasError, AliasStore, Created, ListFilter, Update,
};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use std::{
    fmt::{self, Debug, Formatter},
    fs::OpenOptions,
    io,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

/// How long a statement waits for another process's write lock (the CLI
/// adding an alias while the daemon reads, or the other way round) before
/// it fails. Writes are single-row and take microseconds, so this is only
/// reached when something holds the file locked for good.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The schema this build writes; `PRAGMA user_version` of the file.
const SCHEMA_VERSION: i64 = 1;

/// Version 1. `address` is the [`address_key`]; times are milliseconds
/// since the Unix epoch; `correspondent_domains` is a JSON array.
const SCHEMA_V1: &str = "
CREATE TABLE aliases (
    address               TEXT PRIMARY KEY NOT NULL,
    correspondent         TEXT NOT NULL,
    correspondent_domains TEXT NOT NULL DEFAULT '[]',
    mailbox               TEXT NOT NULL,
    note                  TEXT NOT NULL DEFAULT '',
    created_ms            INTEGER NOT NULL,
    retired_ms            INTEGER,
    retired_reason        TEXT,
    reject_foreign        INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
";

const COLUMNS: &str = "address, correspondent, correspondent_domains, mailbox, note, \
                       created_ms, retired_ms, retired_reason, reject_foreign";

/// The [`AliasStore`] in an SQLite file, for a single host.
///
/// The file is opened in WAL mode with a busy timeout ([`BUSY_TIMEOUT`]),
/// so the running daemon (reading at every RCPT TO) and `nobounce alias`
/// (writing now and then) use it at the same time: readers never wait for
/// a writer, and a writer waits for another one. Every update is one
/// `BEGIN IMMEDIATE` transaction. Commits are synchronous (`FULL`): an
/// alias handed out must survive a power cut.
///
/// A new file is created mode 0640 (the aliases show whom the user deals
/// with), and the schema is created, or migrated, on open. The statements
/// run on tokio's blocking threads, one at a time per store.
///
/// Cloning gives another handle on the same connection.
///
/// ```no_run
/// use nobounce_aliases::SqliteAliasStore;
/// use nobounce_core::alias::AliasStore;
///
/// # async fn demo() -> Result<(), nobounce_core::alias::AliasError> {
/// let store = SqliteAliasStore::open("/var/lib/nobounce/aliases.db".as_ref())?;
/// let alias = store.get("shop-example.k7q2m@alias.example.org").await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SqliteAliasStore {
    // A std Mutex is right: each critical section is one short SQLite
    // statement run on a blocking thread, never across an await.
    conn: Arc<Mutex<Connection>>,
    path: Arc<PathBuf>,
}

impl Debug for SqliteAliasStore {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteAliasStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteAliasStore {
    /// Opens (creating it if needed) the alias database at `path`, sets WAL
    /// mode and the busy timeout, and creates or migrates the schema.
    /// Blocks for as long as that takes (at most about [`BUSY_TIMEOUT`]).
    ///
    /// Fails when the file cannot be opened or created (missing directory,
    /// no permission), is not an SQLite database, or was written by a newer
    /// nobounce.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// let store = nobounce_aliases::SqliteAliasStore::open(&dir.path().join("aliases.db"))?;
    /// assert!(store.path().ends_with("aliases.db"));
    /// # Ok(()) }
    /// ```
    pub fn open(path: &Path) -> Result<Self, AliasError> {
        let failed = |e: rusqlite::Error| {
            AliasError::with_source(
                format!("cannot open the alias database {}", path.display()),
                e,
            )
        };
        create_private(path).map_err(|e| {
            AliasError::with_source(
                format!("cannot create the alias database {}", path.display()),
                e,
            )
        })?;
        let mut conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(failed)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(failed)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(failed)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(AliasError::new(format!(
                "cannot open the alias database {}: it cannot use WAL mode (journal mode {mode:?})",
                path.display()
            )));
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(failed)?;
        migrate(&mut conn, path)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            path: Arc::new(path.to_path_buf()),
        })
    }

    /// The file.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("a.db");
    /// assert_eq!(nobounce_aliases::SqliteAliasStore::open(&path)?.path(), path);
    /// # Ok(()) }
    /// ```
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `op` on the connection on a blocking thread.
    async fn run<T, F>(&self, what: &'static str, op: F) -> Result<T, AliasError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        let done = tokio::task::spawn_blocking(move || {
            // A panic inside a statement leaves nothing half-written (the
            // transaction rolls back), so a poisoned lock is used as is.
            let mut conn = conn.lock().unwrap_or_else(|e| e.into_inner());
            op(&mut conn)
        })
        .await;
        match done {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(AliasError::with_source(
                format!("sqlite {} {what} failed", self.path.display()),
                e,
            )),
            Err(e) => Err(AliasError::new(format!(
                "sqlite {} {what}: the worker thread failed: {e}",
                self.path.display()
            ))),
        }
    }
}

/// Creates `path` mode 0640 if it does not exist, so that SQLite (which
/// gives its `-wal` and `-shm` files the database's mode) never makes it
/// readable by everyone.
fn create_private(path: &Path) -> io::Result<()> {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o640)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates the schema in a new file, or checks the version of an old one.
fn migrate(conn: &mut Connection, path: &Path) -> Result<(), AliasError> {
    let failed = |e: rusqlite::Error| {
        AliasError::with_source(
            format!("cannot set up the alias database {}", path.display()),
            e,
        )
    };
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(failed)?;
    let version: i64 = tx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(failed)?;
    match version {
        0 => {
            tx.execute_batch(SCHEMA_V1).map_err(failed)?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)
                .map_err(failed)?;
        }
        SCHEMA_VERSION => {}
        newer => {
            return Err(AliasError::new(format!(
                "the alias database {} has schema version {newer}, written by a newer nobounce (this one knows {SCHEMA_VERSION})",
                path.display()
            )))
        }
    }
    tx.commit().map_err(failed)
}

fn row_to_alias(row: &rusqlite::Row<'_>) -> rusqlite::Result<Alias> {
    let domains: String = row.get(2)?;
    let retired_ms: Option<i64> = row.get(6)?;
    let reason: Option<String> = row.get(7)?;
    Ok(Alias {
        address: row.get(0)?,
        correspondent: row.get(1)?,
        correspondent_domains: decode_domains(&domains).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, e.into())
        })?,
        mailbox: row.get(3)?,
        note: row.get(4)?,
        created: millis_from_sql(row.get(5)?),
        retired: retired_ms.map(|ms| (millis_from_sql(ms), reason.unwrap_or_default())),
        reject_foreign: row.get(8)?,
    })
}

fn select(conn: &Connection, key: &str) -> rusqlite::Result<Option<Alias>> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM aliases WHERE address = ?1"),
        [key],
        row_to_alias,
    )
    .optional()
}

/// Runs `change` on the alias of `key` inside one immediate transaction:
/// `change` returns whether it wrote anything.
fn update(
    conn: &mut Connection,
    key: &str,
    change: impl FnOnce(&rusqlite::Transaction<'_>, &Alias) -> rusqlite::Result<bool>,
) -> rusqlite::Result<Update> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let Some(before) = select(&tx, key)? else {
        return Ok(Update::NotFound);
    };
    if !change(&tx, &before)? {
        return Ok(Update::Unchanged(before));
    }
    let after = select(&tx, key)?.ok_or(rusqlite::Error::QueryReturnedNoRows)?;
    tx.commit()?;
    Ok(Update::Changed(after))
}

#[async_trait]
impl AliasStore for SqliteAliasStore {
    async fn create(&self, alias: &Alias) -> Result<Created, AliasError> {
        let a = alias.clone();
        let key = address_key(&a.address);
        let domains = encode_domains(&a.correspondent_domains);
        self.run("create", move |conn| {
            let n = conn.execute(
                &format!(
                    "INSERT INTO aliases ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
                     ON CONFLICT(address) DO NOTHING"
                ),
                params![
                    key,
                    a.correspondent,
                    domains,
                    a.mailbox,
                    a.note,
                    millis_to_sql(a.created),
                    a.retired.as_ref().map(|(at, _)| millis_to_sql(*at)),
                    a.retired.as_ref().map(|(_, why)| why.as_str()),
                    a.reject_foreign,
                ],
            )?;
            Ok(if n == 1 {
                Created::New
            } else {
                Created::Exists
            })
        })
        .await
    }

    async fn get(&self, address: &str) -> Result<Option<Alias>, AliasError> {
        let key = address_key(address);
        self.run("get", move |conn| select(conn, &key)).await
    }

    async fn list(&self, filter: ListFilter) -> Result<Vec<Alias>, AliasError> {
        let condition = match filter {
            ListFilter::Active => "WHERE retired_ms IS NULL",
            ListFilter::Retired => "WHERE retired_ms IS NOT NULL",
            ListFilter::All => "",
        };
        self.run("list", move |conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {COLUMNS} FROM aliases {condition} ORDER BY address"
            ))?;
            let rows = stmt.query_map([], row_to_alias)?;
            rows.collect()
        })
        .await
    }

    async fn retire(
        &self,
        address: &str,
        reason: &str,
        now: SystemTime,
    ) -> Result<Update, AliasError> {
        let key = address_key(address);
        let reason = reason.to_owned();
        self.run("retire", move |conn| {
            update(conn, &key, |tx, a| {
                if a.is_retired() {
                    return Ok(false);
                }
                tx.execute(
                    "UPDATE aliases SET retired_ms = ?2, retired_reason = ?3 WHERE address = ?1",
                    params![key, millis_to_sql(now), reason],
                )?;
                Ok(true)
            })
        })
        .await
    }

    async fn restore(&self, address: &str) -> Result<Update, AliasError> {
        let key = address_key(address);
        self.run("restore", move |conn| {
            update(conn, &key, |tx, a| {
                if !a.is_retired() {
                    return Ok(false);
                }
                tx.execute(
                    "UPDATE aliases SET retired_ms = NULL, retired_reason = NULL WHERE address = ?1",
                    [&key],
                )?;
                Ok(true)
            })
        })
        .await
    }

    async fn set_reject_foreign(&self, address: &str, reject: bool) -> Result<Update, AliasError> {
        let key = address_key(address);
        self.run("set_reject_foreign", move |conn| {
            update(conn, &key, |tx, a| {
                if a.reject_foreign == reject {
                    return Ok(false);
                }
                tx.execute(
                    "UPDATE aliases SET reject_foreign = ?2 WHERE address = ?1",
                    params![key, reject],
                )?;
                Ok(true)
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_new_file_is_private_and_in_wal_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aliases.db");
        let store = SqliteAliasStore::open(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777 & !0o640, 0, "{mode:o}");
        let conn = store.conn.lock().unwrap();
        let journal: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(journal, "wal");
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }

    #[test]
    fn reopening_keeps_the_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aliases.db");
        drop(SqliteAliasStore::open(&path).unwrap());
        SqliteAliasStore::open(&path).unwrap();
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aliases.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.pragma_update(None, "user_version", 7).unwrap();
        }
        let e = SqliteAliasStore::open(&path).unwrap_err().to_string();
        assert!(e.contains("schema version 7"), "{e}");
    }

    #[test]
    fn a_file_that_is_not_a_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aliases.db");
        std::fs::write(
            &path,
            "not sqlite, just text that is long enough ".repeat(20),
        )
        .unwrap();
        let e = SqliteAliasStore::open(&path).unwrap_err().to_string();
        assert!(e.contains("aliases.db"), "{e}");
    }

    #[test]
    fn a_missing_directory_is_named() {
        let e = SqliteAliasStore::open(Path::new("/nonexistent-dir-4711/aliases.db"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent-dir-4711/aliases.db"), "{e}");
    }
}
