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

use crate::address::{self, normalize_local, strip_extension};
use async_trait::async_trait;
use nobounce_core::{DirectoryError, RecipientDirectory, RecipientQuery, RecipientStatus};
use serde::{Deserialize, Serialize};
use std::{
    io::{self, ErrorKind},
    path::{Path, PathBuf},
};
use tokio::io::AsyncReadExt;

/// The largest `maildirsize` read (Dovecot recalculates past 5 KiB).
const MAX_MAILDIRSIZE: u64 = 1 << 20;

/// What a missing Maildir means.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MissingMaildir {
    /// Not this backend's to judge (let the next backend or the MTA decide).
    #[default]
    NotHandled,
    /// The recipient does not exist.
    Unknown,
}

/// Configuration of a Maildir++ quota backend (`type = "maildir"`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MaildirConfig {
    /// Absolute path of a user's Maildir, with `{domain}`, `{local}` and
    /// `{address}` placeholders. Required; no default.
    pub path_template: String,
    /// What a missing Maildir means: `"not_handled"` or `"unknown"`.
    /// Default: `"not_handled"`.
    #[serde(default)]
    pub missing: MissingMaildir,
    /// Keep the local part's case in the path. Default: `false`
    /// (lowercased, like Dovecot's `%Ln`).
    #[serde(default)]
    pub case_sensitive_local_part: bool,
    /// Characters that start an address extension (`"+"`: `alice+tag@` uses
    /// `alice@`'s Maildir). Default: `""`.
    #[serde(default)]
    pub recipient_delimiter: String,
}

impl MaildirConfig {
    /// A configuration with every default and the given template.
    pub fn new(path_template: impl Into<String>) -> Self {
        Self {
            path_template: path_template.into(),
            missing: MissingMaildir::default(),
            case_sensitive_local_part: false,
            recipient_delimiter: String::new(),
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
            let (digits, unit) = item.split_at(item.len() - 1);
            let value: u64 = digits
                .parse()
                .map_err(|_| format!("line 1: bad quota definition {item:?}"))?;
            let value = (value != 0).then_some(value);
            match unit {
                "S" => bytes_limit = value,
                "C" => count_limit = value,
                _ => return Err(format!("line 1: bad quota definition {item:?}")),
            }
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
    template: Vec<Segment>,
    config: MaildirConfig,
}

impl MaildirQuota {
    /// Checks the template; no file is read yet.
    pub fn new(config: MaildirConfig) -> Result<Self, String> {
        Ok(Self {
            template: parse_template(&config.path_template)?,
            config,
        })
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
        for segment in &self.template {
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

async fn read_limited(path: &Path) -> io::Result<Vec<u8>> {
    let file = tokio::fs::File::open(path).await?;
    let mut data = Vec::new();
    file.take(MAX_MAILDIRSIZE + 1)
        .read_to_end(&mut data)
        .await?;
    if data.len() as u64 > MAX_MAILDIRSIZE {
        return Err(io::Error::new(
            ErrorKind::InvalidData,
            format!("larger than {MAX_MAILDIRSIZE} bytes"),
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
        let file = maildir.join("maildirsize");
        match read_limited(&file).await {
            Ok(data) => {
                let size = MaildirSize::parse(&data).map_err(|why| {
                    tracing::warn!(
                        event = "recipient_maildirsize_corrupt",
                        path = %file.display(),
                        %why,
                        "corrupt maildirsize; refusing to guess"
                    );
                    DirectoryError::new(format!("{}: corrupt: {why}", file.display()))
                })?;
                Ok(size.status_for(query.declared_size))
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                match tokio::fs::metadata(&maildir).await {
                    Ok(meta) if meta.is_dir() => Ok(RecipientStatus::Deliverable),
                    Ok(_) => Err(DirectoryError::new(format!(
                        "{}: not a directory",
                        maildir.display()
                    ))),
                    Err(e) if e.kind() == ErrorKind::NotFound => Ok(match self.config.missing {
                        MissingMaildir::NotHandled => RecipientStatus::NotHandled,
                        MissingMaildir::Unknown => RecipientStatus::Unknown,
                    }),
                    Err(e) => Err(DirectoryError::with_source(
                        format!("{}", maildir.display()),
                        e,
                    )),
                }
            }
            Err(e) => Err(DirectoryError::with_source(
                format!("{}", file.display()),
                e,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{query, write_file};

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
            ..MaildirConfig::new("/var/mail/vhosts/{domain}/{local}/Maildir")
        })
        .expect("valid");
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
        let template = format!("{}/{{domain}}/{{local}}/Maildir", root.display());
        let m = MaildirQuota::new(MaildirConfig::new(&template)).expect("valid");
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
            ..MaildirConfig::new(&template)
        })
        .expect("valid");
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
}
