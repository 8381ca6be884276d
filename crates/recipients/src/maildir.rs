//! Maildir++ quotas, read straight from each mailbox's `maildirsize` file.
//!
//! The file (written by Dovecot's `maildir` quota backend, Courier, and
//! others) holds the quota definition on its first line and size deltas on
//! the following ones:
//!
//! ```text
//! 10485760S,1000C     limits: bytes (S) and/or messages (C); 0 = unlimited
//! 5242880 120         bytes messages (the last recalculation)
//! 4096 1              + one delivery
//! -2048 -1            - one expunge
//! ```
//!
//! Used = sum of the deltas. A message of declared size *n* fits when
//! `used + max(n, 1) <= limit` (and one more message fits the count limit);
//! otherwise the answer is `OverQuota { room_left: limit - used }` (0 when
//! already over). A last line without its newline is being written and is
//! ignored, as Dovecot does. A file that does not parse, or sums to a
//! negative total, is *corrupt*: the lookup fails (tempfail), it never
//! accepts.
//!
//! Dovecot rewrites a `maildirsize` that shows the user over quota but has
//! several delta lines or is older than 15 minutes, because it might be
//! stale; this backend cannot recalculate and trusts the file. The LMTP
//! probe or quota-status backends ask Dovecot itself and avoid that.
//!
//! # Paths
//!
//! `path_template` names a user's Maildir with `{domain}`, `{local}` and
//! `{address}` (`local@domain`) placeholders, e.g.
//! `/var/mail/vhosts/{domain}/{local}/Maildir`. The local part is lowercased
//! (unless `case_sensitive_local_part`) and stripped of its extension (with
//! `recipient_delimiter`). A local part or domain that could escape the
//! template — containing `/`, `\`, `"`, `..`, or starting with `.` — is
//! `NotHandled`, never a path.
//!
//! A missing Maildir means `missing` (default `not_handled`: Dovecot creates
//! a Maildir at the first delivery, so a new user has none yet). A Maildir
//! without `maildirsize` has no known quota: `Deliverable`.
//!
//! # When the mail store fails
//!
//! The disk is a backend that can fail like a server, and must fail the same
//! way: with a temporary failure, never with a rejection.
//!
//! - Each lookup has a deadline (`timeout`); file system calls run on
//!   tokio's blocking threads, at most [`MAX_BLOCKING`] at once per
//!   backend, so a hung NFS mount ties up a bounded number of threads and
//!   every further lookup fails in time (→ `451 4.4.3`).
//! - `maildirsize` is opened without blocking and must be a regular file: a
//!   FIFO or a device is an error, not a wait.
//! - With `missing = "unknown"`, a missing Maildir is only `Unknown` when the
//!   store itself is there: the fixed part of the template
//!   (`/var/mail/vhosts` of `/var/mail/vhosts/{domain}/{local}/Maildir`)
//!   must be a directory with something in it. An unmounted store (an empty
//!   mount point) is an error, not `550 5.1.1` for everyone.

use crate::address::{self, normalize_local, strip_extension};
use async_trait::async_trait;
use nobounce_core::{
    clock::serialize_duration, DirectoryError, RecipientDirectory, RecipientQuery, RecipientStatus,
};
use serde::{Serialize, Serializer};
use std::{
    fmt::{self, Display, Formatter},
    fs::File,
    io::{self, ErrorKind, Read},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    str::FromStr,
    sync::Arc,
    time::Duration,
};
use tokio::sync::Semaphore;

/// The largest `maildirsize` read (Dovecot recalculates past 5 KiB).
const MAX_MAILDIRSIZE: u64 = 1 << 20;

/// Most file system lookups of one backend running at once: a hung mount
/// ties up at most this many of tokio's blocking threads.
pub const MAX_BLOCKING: usize = 16;

/// What a missing Maildir means.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MissingMaildir {
    /// Not this backend's to judge (let the next backend or the MTA decide).
    #[default]
    NotHandled,
    /// The recipient does not exist (if the store is mounted, see the
    /// module documentation).
    Unknown,
}

/// Configuration of a Maildir++ quota backend (`type = "maildir"`).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct MaildirConfig {
    /// Where a user's Maildir is. Required; no default.
    pub path_template: PathTemplate,
    /// What a missing Maildir means: `"not_handled"` or `"unknown"`.
    /// Default: `"not_handled"`.
    pub missing: MissingMaildir,
    /// Keep the local part's case in the path. Default: `false`
    /// (lowercased, like Dovecot's `%Ln`).
    pub case_sensitive_local_part: bool,
    /// Characters that start an address extension (`"+"`: `alice+tag@` uses
    /// `alice@`'s Maildir). Default: `""`.
    pub recipient_delimiter: String,
    /// Deadline of one lookup (a hung mount fails instead of blocking).
    /// Default: 2 s.
    #[serde(serialize_with = "serialize_duration")]
    pub timeout: Duration,
}

impl MaildirConfig {
    /// A configuration with every default and the given template.
    pub fn new(path_template: PathTemplate) -> Self {
        Self {
            path_template,
            missing: MissingMaildir::default(),
            case_sensitive_local_part: false,
            recipient_delimiter: String::new(),
            timeout: Duration::from_secs(2),
        }
    }
}

#[derive(Clone, Debug, Eq, PartialEq)]
enum Segment {
    Text(String),
    Domain,
    Local,
    Address,
}

/// An absolute path with `{domain}`, `{local}` and `{address}`
/// placeholders, such as `/var/mail/vhosts/{domain}/{local}/Maildir`.
///
/// ```
/// use nobounce_recipients::maildir::PathTemplate;
///
/// let t: PathTemplate = "/var/mail/vhosts/{domain}/{local}/Maildir".parse()?;
/// assert_eq!(t.store_root().to_str(), Some("/var/mail/vhosts"));
/// assert!("/var/mail/{domain}".parse::<PathTemplate>().is_err()); // no user
/// # Ok::<_, String>(())
/// ```
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct PathTemplate {
    text: String,
    segments: Vec<Segment>,
}

impl PathTemplate {
    /// The directory every Maildir lives under: the template up to the last
    /// `/` before its first placeholder.
    pub fn store_root(&self) -> PathBuf {
        let fixed = match self.segments.first() {
            Some(Segment::Text(text)) => text.as_str(),
            _ => "/",
        };
        let cut = fixed.rfind('/').map_or(1, |i| i.max(1));
        PathBuf::from(&fixed[..cut])
    }
}

impl Display for PathTemplate {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for PathTemplate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl FromStr for PathTemplate {
    type Err = String;

    fn from_str(template: &str) -> Result<Self, String> {
        Ok(Self {
            text: template.to_owned(),
            segments: parse_template(template)?,
        })
    }
}

fn parse_template(template: &str) -> Result<Vec<Segment>, String> {
    if !template.starts_with('/') {
        return Err(format!("path_template must be absolute: {template:?}"));
    }
    let mut segments = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find(['{', '}']) {
        if rest[open..].starts_with('}') {
            return Err(format!("unbalanced '}}' in path_template {template:?}"));
        }
        if open > 0 {
            segments.push(Segment::Text(rest[..open].to_owned()));
        }
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| format!("unclosed '{{' in path_template {template:?}"))?;
        segments.push(match &rest[open + 1..open + close] {
            "domain" => Segment::Domain,
            "local" => Segment::Local,
            "address" => Segment::Address,
            other => {
                return Err(format!(
                    "unknown placeholder {{{other}}} in path_template (use {{domain}}, {{local}} or {{address}})"
                ))
            }
        });
        rest = &rest[open + close + 1..];
    }
    if !rest.is_empty() {
        segments.push(Segment::Text(rest.to_owned()));
    }
    if !segments
        .iter()
        .any(|s| matches!(s, Segment::Local | Segment::Address))
    {
        return Err(format!(
            "path_template {template:?} needs {{local}} or {{address}}: otherwise every user shares one Maildir"
        ));
    }
    Ok(segments)
}

/// Whether a local part can go into a path without leaving its directory.
fn safe_local(local: &str) -> bool {
    !local.is_empty()
        && !local.starts_with('.')
        && !local.contains("..")
        && !local.contains(['/', '\\', '"', '\0'])
}

/// The quota state in a `maildirsize` file.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct MaildirSize {
    /// Byte limit; `None` when unlimited.
    pub bytes_limit: Option<u64>,
    /// Message-count limit; `None` when unlimited.
    pub count_limit: Option<u64>,
    /// Bytes used.
    pub bytes_used: u64,
    /// Messages stored.
    pub count_used: u64,
}

impl MaildirSize {
    /// Parses a `maildirsize` file; `Err` describes the corruption.
    pub fn parse(data: &[u8]) -> Result<Self, String> {
        if data.contains(&0) {
            return Err("NUL byte in file".into());
        }
        let text = std::str::from_utf8(data).map_err(|_| "not ASCII text".to_string())?;
        // An unterminated last line is being appended right now: skip it.
        let complete = match text.rfind('\n') {
            Some(i) => &text[..i],
            None => return Err("no complete line (empty or truncated file)".into()),
        };
        let mut lines = complete.split('\n');
        let header = lines.next().unwrap_or("");
        let (mut bytes_limit, mut count_limit) = (None, None);
        for item in header.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let bad = || format!("line 1: bad quota definition {item:?}");
            // Issue 13, defect 2: an item ending in a multi-byte character
            // made a byte-index split panic; only ASCII units are valid.
            let (limit, digits) = if let Some(digits) = item.strip_suffix('S') {
                (&mut bytes_limit, digits)
            } else if let Some(digits) = item.strip_suffix('C') {
                (&mut count_limit, digits)
            } else {
                return Err(bad());
            };
            let value: u64 = digits.parse().map_err(|_| bad())?;
            *limit = (value != 0).then_some(value);
        }
        let (mut bytes, mut count): (i128, i128) = (0, 0);
        for (i, line) in lines.enumerate() {
            let mut words = line.split_whitespace();
            let (Some(b), Some(c), None) = (words.next(), words.next(), words.next()) else {
                return Err(format!(
                    "line {}: expected \"<bytes> <count>\", got {line:?}",
                    i + 2
                ));
            };
            let b: i64 = b
                .parse()
                .map_err(|_| format!("line {}: bad byte count {b:?}", i + 2))?;
            let c: i64 = c
                .parse()
                .map_err(|_| format!("line {}: bad message count {c:?}", i + 2))?;
            bytes += i128::from(b);
            count += i128::from(c);
        }
        let bytes_used =
            u64::try_from(bytes).map_err(|_| format!("total size {bytes} out of range"))?;
        let count_used =
            u64::try_from(count).map_err(|_| format!("total count {count} out of range"))?;
        Ok(Self {
            bytes_limit,
            count_limit,
            bytes_used,
            count_used,
        })
    }

    /// Whether a message of `declared_size` bytes (unknown: 1) fits.
    pub fn status_for(&self, declared_size: Option<u64>) -> RecipientStatus {
        let size = declared_size.unwrap_or(1).max(1);
        let room_left = self
            .bytes_limit
            .map(|limit| limit.saturating_sub(self.bytes_used));
        let bytes_over = self
            .bytes_limit
            .is_some_and(|limit| self.bytes_used.saturating_add(size) > limit);
        let count_over = self
            .count_limit
            .is_some_and(|limit| self.count_used.saturating_add(1) > limit);
        if bytes_over || count_over {
            RecipientStatus::OverQuota { room_left }
        } else {
            RecipientStatus::Deliverable
        }
    }
}

/// A [`RecipientDirectory`] reading Maildir++ `maildirsize` files.
#[derive(Debug)]
pub struct MaildirQuota {
    config: MaildirConfig,
    store_root: PathBuf,
    /// Bounds the blocking threads one backend can tie up.
    blocking: Arc<Semaphore>,
}

impl MaildirQuota {
    /// A backend; no file is read yet.
    pub fn new(config: MaildirConfig) -> Self {
        Self {
            store_root: config.path_template.store_root(),
            config,
            blocking: Arc::new(Semaphore::new(MAX_BLOCKING)),
        }
    }

    /// The Maildir of `address`, or `None` if the address cannot safely be
    /// turned into a path.
    pub fn maildir_of(&self, address: &str) -> Option<PathBuf> {
        let parsed = address::split(address)?;
        let local =
            strip_extension(parsed.local, &self.config.recipient_delimiter).unwrap_or(parsed.local);
        let local = normalize_local(local, self.config.case_sensitive_local_part);
        if !safe_local(&local) {
            return None;
        }
        let mut path = String::new();
        for segment in &self.config.path_template.segments {
            match segment {
                Segment::Text(text) => path.push_str(text),
                Segment::Domain => path.push_str(&parsed.domain),
                Segment::Local => path.push_str(&local),
                Segment::Address => {
                    path.push_str(&local);
                    path.push('@');
                    path.push_str(&parsed.domain);
                }
            }
        }
        Some(PathBuf::from(path))
    }
}

/// What the disk says of one Maildir.
#[derive(Debug)]
enum OnDisk {
    /// `maildirsize`'s contents.
    Quota(Vec<u8>),
    /// A Maildir without `maildirsize`.
    NoQuota,
    /// No Maildir; `store_mounted` tells whether the store root is there.
    Missing { store_mounted: bool },
}

/// Reads `maildirsize` of `maildir` without ever waiting on a FIFO or
/// device (blocking calls; run on a blocking thread).
fn read_maildir(maildir: &Path, store_root: &Path) -> io::Result<OnDisk> {
    let file = maildir.join("maildirsize");
    match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(&file)
    {
        Ok(f) => {
            if !f.metadata()?.is_file() {
                return Err(io::Error::new(
                    ErrorKind::InvalidData,
                    format!("{}: not a regular file", file.display()),
                ));
            }
            read_limited(f, &file).map(OnDisk::Quota)
        }
        Err(e) if e.kind() == ErrorKind::NotFound => match std::fs::metadata(maildir) {
            Ok(meta) if meta.is_dir() => Ok(OnDisk::NoQuota),
            Ok(_) => Err(io::Error::new(
                ErrorKind::InvalidData,
                format!("{}: not a directory", maildir.display()),
            )),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(OnDisk::Missing {
                store_mounted: std::fs::read_dir(store_root)
                    .is_ok_and(|mut entries| entries.next().is_some()),
            }),
            Err(e) => Err(io::Error::new(
                e.kind(),
                format!("{}: {e}", maildir.display()),
            )),
        },
        Err(e) => Err(io::Error::new(e.kind(), format!("{}: {e}", file.display()))),
    }
}

fn read_limited(file: File, path: &Path) -> io::Result<Vec<u8>> {
    let mut data = Vec::new();
    file.take(MAX_MAILDIRSIZE + 1).read_to_end(&mut data)?;
    if data.len() as u64 > MAX_MAILDIRSIZE {
        return Err(io::Error::new(
            ErrorKind::InvalidData,
            format!("{}: larger than {MAX_MAILDIRSIZE} bytes", path.display()),
        ));
    }
    Ok(data)
}

#[async_trait]
impl RecipientDirectory for MaildirQuota {
    async fn lookup(&self, query: &RecipientQuery<'_>) -> Result<RecipientStatus, DirectoryError> {
        let Some(maildir) = self.maildir_of(query.address) else {
            tracing::debug!(
                event = "recipient_maildir_unsafe",
                recipient = query.address.escape_debug().to_string(),
                "address not usable in a path; not handled"
            );
            return Ok(RecipientStatus::NotHandled);
        };
        let timeout = self.config.timeout;
        let late = || {
            DirectoryError::new(format!(
                "{}: no answer from the file system within {}",
                maildir.display(),
                humantime::format_duration(timeout)
            ))
        };
        let on_disk = tokio::time::timeout(timeout, async {
            let permit = Arc::clone(&self.blocking)
                .acquire_owned()
                .await
                .map_err(|_| DirectoryError::new("maildir backend closed"))?;
            let (dir, root) = (maildir.clone(), self.store_root.clone());
            tokio::task::spawn_blocking(move || {
                // Held until the call returns, however long that takes.
                let _permit = permit;
                read_maildir(&dir, &root)
            })
            .await
            .map_err(|e| DirectoryError::with_source("maildir lookup failed", e))?
            .map_err(|e| DirectoryError::with_source("maildir lookup failed", e))
        })
        .await
        .map_err(|_| late())??;
        match on_disk {
            OnDisk::Quota(data) => {
                let size = MaildirSize::parse(&data).map_err(|why| {
                    tracing::warn!(
                        event = "recipient_maildirsize_corrupt",
                        path = %maildir.join("maildirsize").display(),
                        %why,
                        "corrupt maildirsize; refusing to guess"
                    );
                    DirectoryError::new(format!(
                        "{}/maildirsize: corrupt: {why}",
                        maildir.display()
                    ))
                })?;
                Ok(size.status_for(query.declared_size))
            }
            OnDisk::NoQuota => Ok(RecipientStatus::Deliverable),
            OnDisk::Missing { store_mounted } => match self.config.missing {
                MissingMaildir::NotHandled => Ok(RecipientStatus::NotHandled),
                MissingMaildir::Unknown if store_mounted => Ok(RecipientStatus::Unknown),
                MissingMaildir::Unknown => Err(DirectoryError::new(format!(
                    "{} is missing or empty: mail store not mounted? (not calling {} unknown)",
                    self.store_root.display(),
                    query.address
                ))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{query, write_file};

    fn template(text: &str) -> PathTemplate {
        text.parse().expect("valid template")
    }

    #[test]
    fn parses_dovecot_and_courier_files() {
        let s =
            MaildirSize::parse(b"10485760S,1000C\n5242880 120\n4096 1\n-2048 -1\n").expect("valid");
        assert_eq!(
            s,
            MaildirSize {
                bytes_limit: Some(10_485_760),
                count_limit: Some(1000),
                bytes_used: 5_244_928,
                count_used: 120
            }
        );
        let s = MaildirSize::parse(b"0S\n100 1\n").expect("Dovecot writes 0S for no limit");
        assert_eq!((s.bytes_limit, s.count_limit), (None, None));
        let s = MaildirSize::parse(b"50C\n100 1\n").expect("count only");
        assert_eq!((s.bytes_limit, s.count_limit), (None, Some(50)));
        let s = MaildirSize::parse(b"1000S\n").expect("no deltas yet");
        assert_eq!(s.bytes_used, 0);
        let s = MaildirSize::parse(b"1000S\n100 1\n200 1").expect("partial last line skipped");
        assert_eq!((s.bytes_used, s.count_used), (100, 1));
    }

    #[test]
    fn corrupt_files_are_errors() {
        for (data, needle) in [
            (&b""[..], "no complete line"),
            (b"1000S", "no complete line"),
            (b"1000X\n", "line 1"),
            (b"lots\n", "line 1"),
            (b"1000S\n100\n", "line 2"),
            (b"1000S\n100 1\nabc 1\n", "line 3"),
            (b"1000S\n100 1 7\n", "line 2"),
            (b"1000S\n100 1\n-500 -1\n", "out of range"),
            (b"1000S\n1\x000 1\n", "NUL"),
            (b"1000S\n\xff 1\n", "ASCII"),
        ] {
            let err = MaildirSize::parse(data).expect_err(&String::from_utf8_lossy(data));
            assert!(err.contains(needle), "{err} should mention {needle}");
        }
    }

    #[test]
    fn room_left_and_declared_size() {
        let s = MaildirSize::parse(b"1000S,10C\n900 5\n").expect("valid");
        assert_eq!(s.status_for(Some(100)), RecipientStatus::Deliverable);
        assert_eq!(s.status_for(None), RecipientStatus::Deliverable);
        assert_eq!(
            s.status_for(Some(101)),
            RecipientStatus::OverQuota {
                room_left: Some(100)
            }
        );
        let full = MaildirSize::parse(b"1000S\n1000 5\n").expect("valid");
        assert_eq!(
            full.status_for(None),
            RecipientStatus::OverQuota { room_left: Some(0) }
        );
        assert_eq!(
            full.status_for(Some(0)),
            RecipientStatus::OverQuota { room_left: Some(0) }
        );
        let over = MaildirSize::parse(b"1000S\n1500 5\n").expect("valid");
        assert_eq!(
            over.status_for(Some(1)),
            RecipientStatus::OverQuota { room_left: Some(0) }
        );
        let count = MaildirSize::parse(b"0S,10C\n100 10\n").expect("valid");
        assert_eq!(
            count.status_for(Some(1)),
            RecipientStatus::OverQuota { room_left: None }
        );
        let unlimited = MaildirSize::parse(b"0S\n999999999 99999\n").expect("valid");
        assert_eq!(
            unlimited.status_for(Some(u64::MAX)),
            RecipientStatus::Deliverable
        );
    }

    #[test]
    fn templates() {
        let t: PathTemplate = "/var/mail/{domain}/{local}/Maildir".parse().expect("valid");
        assert_eq!(t.store_root(), Path::new("/var/mail"));
        assert_eq!(t.to_string(), "/var/mail/{domain}/{local}/Maildir");
        let t: PathTemplate = "/{local}".parse().expect("valid");
        assert_eq!(t.store_root(), Path::new("/"));
        assert!(parse_template("/var/mail/{domain}/{local}/Maildir").is_ok());
        assert!(parse_template("/home/{address}").is_ok());
        for bad in [
            "var/mail/{local}",
            "/var/mail/{domain}",
            "/var/mail/{user}",
            "/var/mail/{local",
            "/var/mail/local}",
        ] {
            assert!(parse_template(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn local_parts_cannot_escape_the_template() {
        let m = MaildirQuota::new(MaildirConfig {
            recipient_delimiter: "+".into(),
            ..MaildirConfig::new(template("/var/mail/vhosts/{domain}/{local}/Maildir"))
        });
        assert_eq!(
            m.maildir_of("Alice+news@Example.ORG"),
            Some(PathBuf::from("/var/mail/vhosts/example.org/alice/Maildir"))
        );
        for bad in [
            "../../etc@example.org",
            "..@example.org",
            ".hidden@example.org",
            "a/b@example.org",
            "a\\b@example.org",
            "\"a/b\"@example.org",
            "x@../../etc",
            "x@exa/mple.org",
            "x@..",
            "a..b@example.org",
            "+x@example.org",
        ] {
            let got = m.maildir_of(bad);
            assert!(
                got.as_ref()
                    .is_none_or(|p| p.starts_with("/var/mail/vhosts/example.org/")
                        && !p.components().any(|c| c == std::path::Component::ParentDir)),
                "{bad:?} gave {got:?}"
            );
            if bad != "+x@example.org" {
                assert_eq!(got, None, "{bad:?}");
            }
        }
    }

    #[tokio::test]
    async fn reads_maildirs_on_disk() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        write_file(
            root,
            "example.org/alice/Maildir/maildirsize",
            "10000S\n2000 3\n",
        );
        write_file(
            root,
            "example.org/full/Maildir/maildirsize",
            "10000S\n9990 30\n",
        );
        write_file(
            root,
            "example.org/broken/Maildir/maildirsize",
            "10000S\nlots of mail\n",
        );
        std::fs::create_dir_all(root.join("example.org/noquota/Maildir")).expect("mkdir");
        write_file(root, "example.org/file/Maildir", "not a directory");
        let template = template(&format!("{}/{{domain}}/{{local}}/Maildir", root.display()));
        let m = MaildirQuota::new(MaildirConfig::new(template.clone()));
        use RecipientStatus::*;
        for (address, size, want) in [
            ("alice@example.org", Some(8000), Some(Deliverable)),
            (
                "ALICE@example.org",
                Some(8001),
                Some(OverQuota {
                    room_left: Some(8000),
                }),
            ),
            ("full@example.org", None, Some(Deliverable)),
            (
                "full@example.org",
                Some(11),
                Some(OverQuota {
                    room_left: Some(10),
                }),
            ),
            ("noquota@example.org", Some(1 << 40), Some(Deliverable)),
            ("nobody@example.org", None, Some(NotHandled)),
            ("../example.org/alice@example.org", None, Some(NotHandled)),
            ("broken@example.org", None, None),
            ("file@example.org", None, None),
        ] {
            let got = m.lookup(&query(address, size)).await;
            match want {
                Some(status) => assert_eq!(got.expect(address), status, "{address}"),
                None => {
                    got.expect_err(address);
                }
            }
        }
        let strict = MaildirQuota::new(MaildirConfig {
            missing: MissingMaildir::Unknown,
            ..MaildirConfig::new(template)
        });
        let got = strict
            .lookup(&query("nobody@example.org", None))
            .await
            .expect("answer");
        assert_eq!(got, Unknown);
        let got = strict
            .lookup(&query("nobody@elsewhere.test", None))
            .await
            .expect("answer");
        assert_eq!(got, Unknown, "the template decides which domains exist");
    }

    /// Issue 13, defect 2: a quota item ending in a multi-byte character
    /// (`1000é`) panicked in a byte-index split.
    #[test]
    fn issue13_multibyte_quota_unit_is_an_error_not_a_panic() {
        for data in ["1000é\n", "é\n", "10S,5Ω\n", "\u{10ffff}\n1 1\n"] {
            let err = MaildirSize::parse(data.as_bytes()).expect_err(data);
            assert!(err.contains("line 1"), "{data:?}: {err}");
        }
    }

    /// Issue 13, defect 2: a FIFO as `maildirsize` blocked the lookup (and
    /// a worker) for good; it is an error now, in time.
    #[tokio::test]
    async fn issue13_fifo_maildirsize_fails_in_time() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(tmp.path().join("example.org/alice/Maildir")).expect("mkdir");
        let fifo = tmp.path().join("example.org/alice/Maildir/maildirsize");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo runs");
        assert!(made.success());
        let m = MaildirQuota::new(MaildirConfig::new(template(&format!(
            "{}/{{domain}}/{{local}}/Maildir",
            tmp.path().display()
        ))));
        let got = tokio::time::timeout(
            Duration::from_secs(10),
            m.lookup(&query("alice@example.org", None)),
        )
        .await
        .expect("the lookup returns instead of hanging");
        let err = got.expect_err("a FIFO is no quota file");
        assert!(err.to_string().contains("maildirsize"), "{err}");
    }

    /// Issue 13, defect 2: a lookup that the file system does not answer
    /// fails within the backend's timeout (a hung NFS mount).
    #[tokio::test]
    async fn issue13_a_hung_file_system_fails_within_the_timeout() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut config = MaildirConfig::new(template(&format!(
            "{}/{{domain}}/{{local}}/Maildir",
            tmp.path().display()
        )));
        config.timeout = Duration::from_millis(200);
        let m = MaildirQuota::new(config);
        // Every blocking slot is taken by a "hung" call.
        let held = Arc::clone(&m.blocking)
            .acquire_many_owned(MAX_BLOCKING as u32)
            .await
            .expect("permits");
        let got = tokio::time::timeout(
            Duration::from_secs(10),
            m.lookup(&query("alice@example.org", None)),
        )
        .await
        .expect("bounded by the backend's own timeout");
        let err = got.expect_err("no answer is an error");
        assert!(err.to_string().contains("within 200ms"), "{err}");
        drop(held);
    }

    /// Issue 13, defect 2: with `missing = "unknown"`, an unmounted mail
    /// store (an empty mount point) made every recipient unknown, 550 5.1.1
    /// and bans; it is a temporary failure now.
    #[tokio::test]
    async fn issue13_unmounted_store_is_an_error_not_unknown() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = tmp.path().join("vhosts");
        std::fs::create_dir(&store).expect("empty mount point");
        let config = MaildirConfig {
            missing: MissingMaildir::Unknown,
            ..MaildirConfig::new(template(&format!(
                "{}/{{domain}}/{{local}}/Maildir",
                store.display()
            )))
        };
        let m = MaildirQuota::new(config);
        let err = m
            .lookup(&query("alice@example.org", None))
            .await
            .expect_err("an empty store answers nothing");
        assert!(err.to_string().contains("not mounted"), "{err}");
        // Mounted (something in it): a missing Maildir is unknown.
        std::fs::create_dir_all(store.join("example.org/bob/Maildir")).expect("mkdir");
        let got = m.lookup(&query("alice@example.org", None)).await;
        assert_eq!(got.expect("answer"), RecipientStatus::Unknown);
    }
}
