//! A recipient map in a text file: which addresses exist, per domain.
//!
//! # Syntax
//!
//! One entry per line; blank lines are ignored; `#` starts a comment when it
//! begins a line or follows whitespace (inside an address, `#` is an
//! ordinary character, as RFC 5322 allows).
//!
//! ```text
//! # ADDRESS               [STATUS]
//! alice@example.org                     # deliverable (the default status)
//! bob@example.org          deliverable
//! old-alias@example.org    disabled     # exists, takes no mail
//! ex-staff@example.org     retired      # same as disabled
//! @example.net                          # catch-all: every address in example.net
//! abuse-test@example.net   unknown      # refused despite the catch-all
//! @example.com             unknown      # serve example.com with no catch-all
//! ```
//!
//! - `ADDRESS` is `local@domain`, or `@domain` for the catch-all of a domain.
//!   Quoted local parts with spaces cannot be written.
//! - `STATUS` (case-insensitive) is `deliverable` (default), `disabled`,
//!   `retired` (a synonym of `disabled`) or `unknown`.
//! - The domains the map *serves* are those that appear in it. An address in
//!   a served domain that is not listed (and not covered by a catch-all) is
//!   `Unknown`; an address in any other domain is `NotHandled`, so the next
//!   backend or the MTA decides.
//! - Domains are case-insensitive. Local parts are case-insensitive unless
//!   `case_sensitive_local_part = true` (like Postfix maps, which lowercase
//!   the lookup key).
//! - With `recipient_delimiter = "+"`, `alice+news@example.org` is looked up
//!   as itself first, then as `alice@example.org`.
//! - Listing the same address (or catch-all) twice is an error, even with the
//!   same status: a map is easier to trust when each address has one line.
//!
//! Lookup order: exact address, address without extension, catch-all,
//! `Unknown` if the domain is served, else `NotHandled`.
//!
//! # Errors and reloads
//!
//! Errors carry `file:line: message`. A bad file when the directory is opened
//! is an error (the daemon should not start); a bad file on reload keeps the
//! previous map and logs a warning. [`MapFileDirectory::reload`] reloads on
//! demand (SIGHUP); [`MapFileDirectory::spawn_watcher`] polls the file's
//! metadata (device, inode, size, mtime) and reloads when it changes.

use crate::address::{self, normalize_local, strip_extension};
use async_trait::async_trait;
use nobounce_core::{
    clock::serialize_duration, DirectoryError, RecipientDirectory, RecipientQuery, RecipientStatus,
};
use serde::Serialize;
use std::{
    collections::{hash_map::Entry as HashEntry, HashMap},
    error::Error,
    fmt::{self, Display, Formatter},
    io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock, Weak},
    time::Duration,
};
use tokio::task::JoinHandle;

/// Configuration of a map-file backend (`type = "map_file"`).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct MapFileConfig {
    /// Path of the map file. Required; no default.
    pub path: PathBuf,
    /// Compare local parts case-sensitively. Default: `false` (`Alice@` and
    /// `alice@` are the same recipient).
    pub case_sensitive_local_part: bool,
    /// Characters that start an address extension, like Postfix's
    /// `recipient_delimiter` (`"+"` makes `alice+tag@` fall back to
    /// `alice@`). Default: `""` (no extensions).
    pub recipient_delimiter: String,
    /// How often to check whether the file changed, and reload it if so.
    /// `"0s"` disables polling (reload only on SIGHUP). Default: 5 s.
    #[serde(serialize_with = "serialize_duration")]
    pub watch_interval: Duration,
}

impl MapFileConfig {
    /// A configuration with every default and the given path.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            case_sensitive_local_part: false,
            recipient_delimiter: String::new(),
            watch_interval: Duration::from_secs(5),
        }
    }
}

/// The status a map line gives an address.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum MapStatus {
    /// `deliverable` (the default): the address exists.
    Deliverable,
    /// `disabled` or `retired`: the address exists but takes no mail.
    Disabled,
    /// `unknown`: refuse the address (useful under a catch-all).
    Unknown,
}

impl MapStatus {
    fn parse(word: &str) -> Option<Self> {
        match word.to_ascii_lowercase().as_str() {
            "deliverable" => Some(Self::Deliverable),
            "disabled" | "retired" => Some(Self::Disabled),
            "unknown" => Some(Self::Unknown),
            _ => None,
        }
    }

    fn status(self) -> RecipientStatus {
        match self {
            Self::Deliverable => RecipientStatus::Deliverable,
            Self::Disabled => RecipientStatus::Disabled,
            Self::Unknown => RecipientStatus::Unknown,
        }
    }
}

/// A map file that could not be read or parsed.
#[derive(Debug)]
pub struct MapFileError {
    path: PathBuf,
    line: Option<usize>,
    message: String,
    source: Option<io::Error>,
}

impl MapFileError {
    fn at(path: &Path, line: usize, message: impl Into<String>) -> Self {
        Self {
            path: path.to_owned(),
            line: Some(line),
            message: message.into(),
            source: None,
        }
    }

    fn io(path: &Path, source: io::Error) -> Self {
        Self {
            path: path.to_owned(),
            line: None,
            message: "cannot read recipient map".into(),
            source: Some(source),
        }
    }

    /// The file concerned.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The 1-based line of a syntax error; `None` for I/O errors.
    pub fn line(&self) -> Option<usize> {
        self.line
    }
}

impl Display for MapFileError {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl Error for MapFileError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source.as_ref().map(|e| e as &(dyn Error + 'static))
    }
}

/// Options that change how a map is read and looked up.
#[derive(Clone, Debug, Default, Eq, PartialEq)]
pub struct MapOptions {
    /// See [`MapFileConfig::case_sensitive_local_part`].
    pub case_sensitive_local_part: bool,
    /// See [`MapFileConfig::recipient_delimiter`].
    pub recipient_delimiter: String,
}

#[derive(Debug, Default)]
struct DomainEntries {
    catch_all: Option<(MapStatus, usize)>,
    addresses: HashMap<String, (MapStatus, usize)>,
}

/// A parsed recipient map (immutable; reloading builds a new one).
#[derive(Debug, Default)]
pub struct RecipientMap {
    domains: HashMap<String, DomainEntries>,
    options: MapOptions,
}

impl RecipientMap {
    /// Parses map text; `origin` names the file in error messages.
    pub fn parse(text: &str, origin: &Path, options: MapOptions) -> Result<Self, MapFileError> {
        let mut map = Self {
            domains: HashMap::new(),
            options,
        };
        for (index, raw) in text.lines().enumerate() {
            let line_no = index + 1;
            let content = strip_comment(raw);
            let mut words = content.split_whitespace();
            let Some(key) = words.next() else { continue };
            let status = match words.next() {
                None => MapStatus::Deliverable,
                Some(word) => MapStatus::parse(word).ok_or_else(|| {
                    MapFileError::at(
                        origin,
                        line_no,
                        format!(
                            "unknown status {word:?} (expected deliverable, disabled, retired or unknown)"
                        ),
                    )
                })?,
            };
            if let Some(extra) = words.next() {
                return Err(MapFileError::at(
                    origin,
                    line_no,
                    format!("unexpected {extra:?} after the status (one address and one status per line)"),
                ));
            }
            map.insert(key, status, origin, line_no)?;
        }
        Ok(map)
    }

    fn insert(
        &mut self,
        key: &str,
        status: MapStatus,
        origin: &Path,
        line_no: usize,
    ) -> Result<(), MapFileError> {
        let bad = |what: &str| {
            MapFileError::at(
                origin,
                line_no,
                format!("invalid address {key:?}: {what} (expected local@domain or @domain)"),
            )
        };
        if let Some(domain) = key.strip_prefix('@') {
            let probe = format!("catchall@{domain}");
            let parsed = address::split(&probe).ok_or_else(|| bad("bad domain"))?;
            let entries = self.domains.entry(parsed.domain).or_default();
            if let Some((_, first)) = entries.catch_all {
                return Err(MapFileError::at(
                    origin,
                    line_no,
                    format!("duplicate catch-all {key:?} (first on line {first})"),
                ));
            }
            entries.catch_all = Some((status, line_no));
            return Ok(());
        }
        if !key.contains('@') {
            return Err(bad("no @"));
        }
        let parsed = address::split(key).ok_or_else(|| bad("bad syntax"))?;
        let local = normalize_local(parsed.local, self.options.case_sensitive_local_part);
        let entries = self.domains.entry(parsed.domain).or_default();
        match entries.addresses.entry(local.into_owned()) {
            HashEntry::Occupied(e) => Err(MapFileError::at(
                origin,
                line_no,
                format!("duplicate address {key:?} (first on line {})", e.get().1),
            )),
            HashEntry::Vacant(e) => {
                e.insert((status, line_no));
                Ok(())
            }
        }
    }

    /// Looks up one address.
    pub fn lookup(&self, address: &str) -> RecipientStatus {
        let Some(parsed) = address::split(address) else {
            return RecipientStatus::NotHandled;
        };
        let Some(entries) = self.domains.get(&parsed.domain) else {
            return RecipientStatus::NotHandled;
        };
        let local = normalize_local(parsed.local, self.options.case_sensitive_local_part);
        if let Some((status, _)) = entries.addresses.get(local.as_ref()) {
            return status.status();
        }
        if let Some(base) = strip_extension(&local, &self.options.recipient_delimiter) {
            if let Some((status, _)) = entries.addresses.get(base) {
                return status.status();
            }
        }
        match entries.catch_all {
            Some((status, _)) => status.status(),
            None => RecipientStatus::Unknown,
        }
    }

    /// Whether the map serves `domain` (case-insensitive).
    pub fn serves(&self, domain: &str) -> bool {
        self.domains
            .contains_key(&address::normalize_domain(domain))
    }

    /// Number of entries (addresses and catch-alls).
    pub fn len(&self) -> usize {
        self.domains
            .values()
            .map(|d| d.addresses.len() + usize::from(d.catch_all.is_some()))
            .sum()
    }

    /// `true` when the map has no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn strip_comment(line: &str) -> &str {
    let mut prev_is_space = true;
    for (i, c) in line.char_indices() {
        if c == '#' && prev_is_space {
            return &line[..i];
        }
        prev_is_space = c.is_whitespace();
    }
    line
}

fn decode(bytes: Vec<u8>, path: &Path) -> Result<String, MapFileError> {
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
        MapFileError::at(path, line, "not valid UTF-8")
    })
}

/// What identifies one version of the file on disk.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
enum FileStamp {
    Missing,
    Present {
        dev: u64,
        ino: u64,
        len: u64,
        mtime: i64,
        mtime_nsec: i64,
    },
}

impl FileStamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        Self::Present {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
        }
    }
}

/// A [`RecipientDirectory`] backed by a [`RecipientMap`] file, reloadable.
#[derive(Debug)]
pub struct MapFileDirectory {
    path: PathBuf,
    options: MapOptions,
    // std locks are right: the critical sections swap or clone an Arc and
    // never await.
    current: RwLock<Arc<RecipientMap>>,
    seen: Mutex<FileStamp>,
    /// Held for a whole reload (stat, read, parse, install), so that a
    /// watcher's poll and an explicit reload never interleave and install a
    /// stale map over a newer one (issue 13, item 11).
    loading: tokio::sync::Mutex<()>,
}

impl MapFileDirectory {
    /// Reads and parses the file now; any error is returned (startup).
    pub fn open(config: &MapFileConfig) -> Result<Self, MapFileError> {
        let path = config.path.clone();
        let options = MapOptions {
            case_sensitive_local_part: config.case_sensitive_local_part,
            recipient_delimiter: config.recipient_delimiter.clone(),
        };
        let meta = std::fs::metadata(&path).map_err(|e| MapFileError::io(&path, e))?;
        let bytes = std::fs::read(&path).map_err(|e| MapFileError::io(&path, e))?;
        let map = RecipientMap::parse(&decode(bytes, &path)?, &path, options.clone())?;
        tracing::info!(
            event = "recipient_map_loaded",
            path = %path.display(),
            entries = map.len(),
            "recipient map loaded"
        );
        Ok(Self {
            path,
            options,
            current: RwLock::new(Arc::new(map)),
            seen: Mutex::new(FileStamp::of(&meta)),
            loading: tokio::sync::Mutex::new(()),
        })
    }

    /// The file this directory reads.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The map in force now.
    pub fn current(&self) -> Arc<RecipientMap> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Re-reads the file now (SIGHUP). On error the previous map stays in
    /// force, a warning is logged, and the error is returned.
    pub async fn reload(&self) -> Result<(), MapFileError> {
        let _loading = self.loading.lock().await;
        let stamp = match tokio::fs::metadata(&self.path).await {
            Ok(meta) => FileStamp::of(&meta),
            Err(_) => FileStamp::Missing,
        };
        self.load(stamp).await
    }

    /// Reloads the file if its metadata changed since the last (attempted)
    /// load. Returns whether a reload was attempted and succeeded.
    pub async fn reload_if_changed(&self) -> Result<bool, MapFileError> {
        let _loading = self.loading.lock().await;
        let stamp = match tokio::fs::metadata(&self.path).await {
            Ok(meta) => FileStamp::of(&meta),
            Err(_) => FileStamp::Missing,
        };
        if stamp == *self.seen.lock().unwrap_or_else(|e| e.into_inner()) {
            return Ok(false);
        }
        self.load(stamp).await.map(|()| true)
    }

    async fn load(&self, stamp: FileStamp) -> Result<(), MapFileError> {
        // Remember the attempt even when it fails, so a watcher logs a bad
        // file once rather than at every poll.
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = stamp;
        let result = async {
            let bytes = tokio::fs::read(&self.path)
                .await
                .map_err(|e| MapFileError::io(&self.path, e))?;
            RecipientMap::parse(
                &decode(bytes, &self.path)?,
                &self.path,
                self.options.clone(),
            )
        }
        .await;
        match result {
            Ok(map) => {
                tracing::info!(
                    event = "recipient_map_loaded",
                    path = %self.path.display(),
                    entries = map.len(),
                    "recipient map reloaded"
                );
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(map);
                Ok(())
            }
            Err(error) => {
                tracing::warn!(
                    event = "recipient_map_reload_failed",
                    path = %self.path.display(),
                    %error,
                    "recipient map not reloaded; keeping the previous one"
                );
                Err(error)
            }
        }
    }

    /// Polls the file every `interval` and reloads it when it changes. The
    /// task ends by itself once the directory is dropped.
    ///
    /// Must be called within a tokio runtime.
    pub fn spawn_watcher(self: &Arc<Self>, interval: Duration) -> JoinHandle<()> {
        let weak: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await; // the first tick is immediate
            loop {
                ticks.tick().await;
                let Some(me) = weak.upgrade() else { break };
                // Errors are logged by `load`.
                let _ = me.reload_if_changed().await;
            }
        })
    }
}

#[async_trait]
impl RecipientDirectory for MapFileDirectory {
    async fn lookup(&self, query: &RecipientQuery<'_>) -> Result<RecipientStatus, DirectoryError> {
        Ok(self.current().lookup(query.address))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn parse(text: &str) -> Result<RecipientMap, MapFileError> {
        RecipientMap::parse(text, Path::new("test.map"), MapOptions::default())
    }

    const SAMPLE: &str = "\
# recipients of example.org
alice@example.org
Bob@Example.ORG          deliverable
old-alias@example.org    disabled   # gone since 2020
ex@example.org           RETIRED
sharp#tag@example.org

@example.net                        # catch-all
abuse-test@example.net   unknown
@example.com             unknown
";

    #[test]
    fn sample_lookups() {
        let map = parse(SAMPLE).expect("sample parses");
        assert_eq!(map.len(), 8);
        use RecipientStatus::*;
        for (address, want) in [
            ("alice@example.org", Deliverable),
            ("ALICE@example.ORG.", Deliverable),
            ("bob@example.org", Deliverable),
            ("old-alias@example.org", Disabled),
            ("ex@example.org", Disabled),
            ("sharp#tag@example.org", Deliverable),
            ("carol@example.org", Unknown),
            ("anyone@example.net", Deliverable),
            ("abuse-test@example.net", Unknown),
            ("alice@example.com", Unknown),
            ("alice@elsewhere.test", NotHandled),
            ("postmaster", NotHandled),
            ("alice@example.org\r\nDATA", NotHandled),
        ] {
            assert_eq!(map.lookup(address), want, "{address}");
        }
        assert!(map.serves("EXAMPLE.com"));
        assert!(!map.serves("elsewhere.test"));
    }

    #[test]
    fn case_sensitive_local_parts_when_asked() {
        let options = MapOptions {
            case_sensitive_local_part: true,
            ..MapOptions::default()
        };
        let map = RecipientMap::parse(
            "Alice@example.org\nalice@example.org disabled\n",
            Path::new("m"),
            options,
        )
        .expect("distinct keys when case-sensitive");
        assert_eq!(
            map.lookup("Alice@EXAMPLE.org"),
            RecipientStatus::Deliverable
        );
        assert_eq!(map.lookup("alice@example.org"), RecipientStatus::Disabled);
        assert_eq!(map.lookup("ALICE@example.org"), RecipientStatus::Unknown);
    }

    #[test]
    fn recipient_delimiter_falls_back_to_base_address() {
        let options = MapOptions {
            recipient_delimiter: "+".into(),
            ..MapOptions::default()
        };
        let text = "alice@example.org\nalice+spam@example.org disabled\n";
        let map = RecipientMap::parse(text, Path::new("m"), options).expect("parses");
        assert_eq!(
            map.lookup("alice+news@example.org"),
            RecipientStatus::Deliverable
        );
        assert_eq!(
            map.lookup("alice+spam@example.org"),
            RecipientStatus::Disabled
        );
        assert_eq!(map.lookup("bob+news@example.org"), RecipientStatus::Unknown);
        let plain = parse(text).expect("parses");
        assert_eq!(
            plain.lookup("alice+news@example.org"),
            RecipientStatus::Unknown
        );
    }

    #[test]
    fn bad_lines_report_file_and_line() {
        for (text, line, needle) in [
            (
                "alice@example.org\n\nbob@example.org bogus\n",
                3,
                "unknown status \"bogus\"",
            ),
            (
                "# c\nalice@example.org disabled extra\n",
                2,
                "unexpected \"extra\"",
            ),
            ("alice\n", 1, "no @"),
            ("alice@\n", 1, "invalid address"),
            ("@\n", 1, "invalid address"),
            ("a@[192.0.2.1]\n", 1, "invalid address"),
            (
                "a@example.org\nA@EXAMPLE.ORG disabled\n",
                2,
                "duplicate address \"A@EXAMPLE.ORG\" (first on line 1)",
            ),
            (
                "@example.org\n\n@Example.Org unknown\n",
                3,
                "duplicate catch-all",
            ),
        ] {
            let err = parse(text).expect_err(text);
            assert_eq!(err.line(), Some(line), "{text:?}: {err}");
            let shown = err.to_string();
            assert!(shown.starts_with(&format!("test.map:{line}: ")), "{shown}");
            assert!(shown.contains(needle), "{shown} should mention {needle}");
        }
    }

    #[test]
    fn invalid_utf8_reports_its_line() {
        let err = decode(
            b"a@example.org\nb\xff@example.org\n".to_vec(),
            Path::new("m"),
        )
        .expect_err("invalid UTF-8");
        assert_eq!(err.line(), Some(2));
    }

    #[test]
    fn empty_and_comment_only_maps_serve_nothing() {
        let map = parse("\n  # nothing\n\t\n").expect("parses");
        assert!(map.is_empty());
        assert_eq!(map.lookup("a@example.org"), RecipientStatus::NotHandled);
    }

    fn write(path: &Path, text: &str) {
        let mut f = std::fs::File::create(path).expect("create map");
        f.write_all(text.as_bytes()).expect("write map");
    }

    async fn status(dir: &MapFileDirectory, address: &str) -> RecipientStatus {
        dir.lookup(&RecipientQuery {
            address,
            declared_size: None,
            null_sender: false,
        })
        .await
        .expect("map lookups never fail")
    }

    #[tokio::test]
    async fn open_fails_on_bad_or_missing_file() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("recipients");
        let err = MapFileDirectory::open(&MapFileConfig::new(&path)).expect_err("missing");
        assert_eq!(err.line(), None);
        write(&path, "ok@example.org\nbad line here\n");
        let err = MapFileDirectory::open(&MapFileConfig::new(&path)).expect_err("bad");
        assert_eq!(err.line(), Some(2));
    }

    #[tokio::test]
    async fn reload_swaps_good_maps_and_keeps_old_on_error() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("recipients");
        write(&path, "alice@example.org\n");
        let dir = MapFileDirectory::open(&MapFileConfig::new(&path)).expect("opens");
        assert_eq!(
            status(&dir, "alice@example.org").await,
            RecipientStatus::Deliverable
        );
        assert_eq!(
            status(&dir, "bob@example.org").await,
            RecipientStatus::Unknown
        );

        write(&path, "alice@example.org disabled\nbob@example.org\n");
        dir.reload().await.expect("good file reloads");
        assert_eq!(
            status(&dir, "alice@example.org").await,
            RecipientStatus::Disabled
        );
        assert_eq!(
            status(&dir, "bob@example.org").await,
            RecipientStatus::Deliverable
        );

        write(&path, "carol@example.org\nbroken\n");
        let err = dir.reload().await.expect_err("bad file is refused");
        assert_eq!(err.line(), Some(2));
        assert_eq!(
            status(&dir, "bob@example.org").await,
            RecipientStatus::Deliverable
        );
        assert_eq!(
            status(&dir, "carol@example.org").await,
            RecipientStatus::Unknown
        );

        std::fs::remove_file(&path).expect("rm");
        dir.reload().await.expect_err("missing file is refused");
        assert_eq!(
            status(&dir, "bob@example.org").await,
            RecipientStatus::Deliverable
        );
    }

    #[tokio::test]
    async fn reload_if_changed_notices_new_content() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("recipients");
        write(&path, "alice@example.org\n");
        let dir = MapFileDirectory::open(&MapFileConfig::new(&path)).expect("opens");
        assert!(!dir.reload_if_changed().await.expect("unchanged"));

        // Replace by rename, as editors and config managers do: new inode
        // even if size and mtime happened to match.
        let next = tmp.path().join("recipients.new");
        write(&next, "bobby@example.org\n");
        std::fs::rename(&next, &path).expect("rename");
        assert!(dir.reload_if_changed().await.expect("changed"));
        assert_eq!(
            status(&dir, "bobby@example.org").await,
            RecipientStatus::Deliverable
        );
        assert_eq!(
            status(&dir, "alice@example.org").await,
            RecipientStatus::Unknown
        );
        assert!(!dir.reload_if_changed().await.expect("unchanged again"));

        // A bad version is tried once, then left alone until it changes.
        let next = tmp.path().join("recipients.new");
        write(&next, "oops\n");
        std::fs::rename(&next, &path).expect("rename");
        assert!(dir.reload_if_changed().await.is_err());
        assert!(!dir
            .reload_if_changed()
            .await
            .expect("bad version not retried"));
        assert_eq!(
            status(&dir, "bobby@example.org").await,
            RecipientStatus::Deliverable
        );
    }

    #[tokio::test]
    async fn watcher_reloads_and_stops_with_the_directory() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("recipients");
        write(&path, "alice@example.org\n");
        let dir = Arc::new(MapFileDirectory::open(&MapFileConfig::new(&path)).expect("opens"));
        let watcher = dir.spawn_watcher(Duration::from_millis(10));
        let next = tmp.path().join("recipients.new");
        write(&next, "bobby@example.org\n");
        std::fs::rename(&next, &path).expect("rename");
        // Wait (bounded) for the watcher to pick the change up.
        let mut seen = false;
        for _ in 0..500 {
            if status(&dir, "bobby@example.org").await == RecipientStatus::Deliverable {
                seen = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(seen, "watcher reloaded the changed file");
        drop(dir);
        tokio::time::timeout(Duration::from_secs(30), watcher)
            .await
            .expect("watcher ends once the directory is gone")
            .expect("watcher did not panic");
    }
}
