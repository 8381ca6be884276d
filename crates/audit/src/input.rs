//! Log files: standard input, plain or gzip files, rotated sets put in
//! order.

use crate::auditor::{Auditor, Bounce};
use crate::line::YearHint;
use crate::report::Report;
use crate::state::Limits;
use flate2::bufread::MultiGzDecoder;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

/// A log that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {}: {source}", path.display())]
pub struct AuditError {
    /// The file (`-` for standard input).
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: io::Error,
}

/// The name that stands for standard input.
pub const STDIN: &str = "-";

/// Reads the logs in `paths` ([`rotation_order`]ed; `-` is standard input,
/// none at all means standard input) and reports their bounces. Stops at
/// the first file that cannot be opened or read.
pub fn audit_files(paths: &[PathBuf], limits: Limits) -> Result<Report, AuditError> {
    audit_files_with(paths, limits, |_| {})
}

/// [`audit_files`], calling `on_bounce` for every bounce found.
pub fn audit_files_with(
    paths: &[PathBuf],
    limits: Limits,
    mut on_bounce: impl FnMut(&Bounce),
) -> Result<Report, AuditError> {
    let stdin_only = [PathBuf::from(STDIN)];
    let paths = if paths.is_empty() {
        &stdin_only[..]
    } else {
        paths
    };
    let mut auditor = Auditor::with_limits(limits);
    for path in rotation_order(paths) {
        let fail = |source| AuditError {
            path: path.clone(),
            source,
        };
        let (reader, hint) = open(&path).map_err(fail)?;
        auditor.read(reader, hint, &mut on_bounce).map_err(fail)?;
    }
    Ok(auditor.finish())
}

/// Opens a log: `-` is standard input (dated with the current year), a
/// file is dated by its modification time (see [`YearHint`]) and
/// decompressed when it starts with gzip's magic bytes, whatever its name.
pub fn open(path: &Path) -> io::Result<(Box<dyn BufRead>, YearHint)> {
    if path.as_os_str() == STDIN {
        return Ok((Box::new(io::stdin().lock()), YearHint::now()));
    }
    let file = File::open(path)?;
    let meta = file.metadata()?;
    if meta.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "is a directory",
        ));
    }
    let hint = meta
        .modified()
        .map(YearHint::from_time)
        .unwrap_or_else(|_| YearHint::now());
    let mut reader = BufReader::with_capacity(64 * 1024, file);
    let head = reader.fill_buf()?;
    if head.starts_with(&[0x1f, 0x8b]) {
        return Ok((Box::new(BufReader::new(MultiGzDecoder::new(reader))), hint));
    }
    for (magic, tool) in [
        (&b"\xfd7zXZ\x00"[..], "xz"),
        (&b"BZh"[..], "bzip2"),
        (&b"\x28\xb5\x2f\xfd"[..], "zstd"),
    ] {
        if head.starts_with(magic) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "compressed with {tool}, which is not read: decompress it into standard input, e.g. {tool} -dc FILE | nobounce audit -"
                ),
            ));
        }
    }
    Ok((Box::new(reader), hint))
}

/// Puts rotated logs oldest first, so that a message whose lines span two
/// files is followed across them, however the shell listed them
/// (`maillog*` lists `maillog maillog.1 maillog.2.gz`, newest first).
///
/// Files of one set share a name once a `.gz` and a rotation suffix are
/// taken off: `maillog.2.gz`, `maillog.1`, `maillog`, or logrotate's
/// `dateext` `maillog-20261122.gz`. Within a set: numbered files highest
/// number first, then dated files oldest first, then the live file. Sets,
/// other files and `-` keep the order in which they were given (each set
/// where its first file was).
pub fn rotation_order(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut sets: Vec<PathBuf> = Vec::new();
    let mut keyed: Vec<(usize, Rank, &PathBuf)> = paths
        .iter()
        .map(|p| {
            let (set, rank) = rotation_key(p);
            let index = match sets.iter().position(|s| *s == set) {
                Some(i) => i,
                None => {
                    sets.push(set);
                    sets.len() - 1
                }
            };
            (index, rank, p)
        })
        .collect();
    // Stable: files of equal rank keep their order.
    keyed.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    keyed.into_iter().map(|(_, _, p)| p.clone()).collect()
}

/// Position within a rotated set, oldest first.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Rank {
    /// `.N`: a higher number is older.
    Numbered(std::cmp::Reverse<u64>),
    /// `-YYYYMMDD[HH]`: the date itself.
    Dated(String),
    /// The live file (or any other).
    Current,
}

fn rotation_key(path: &Path) -> (PathBuf, Rank) {
    if path.as_os_str() == STDIN {
        return (path.to_owned(), Rank::Current);
    }
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return (path.to_owned(), Rank::Current);
    };
    let name = name.strip_suffix(".gz").unwrap_or(name);
    let set = |base: &str| path.with_file_name(base);
    if let Some((base, n)) = name.rsplit_once('.') {
        if !base.is_empty()
            && !n.is_empty()
            && n.len() <= 6
            && n.bytes().all(|b| b.is_ascii_digit())
        {
            if let Ok(n) = n.parse() {
                return (set(base), Rank::Numbered(std::cmp::Reverse(n)));
            }
        }
    }
    if let Some((base, date)) = name.rsplit_once('-') {
        if !base.is_empty()
            && (date.len() == 8 || date.len() == 10)
            && date.bytes().all(|b| b.is_ascii_digit())
        {
            return (set(base), Rank::Dated(date.to_owned()));
        }
    }
    (set(name), Rank::Current)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn paths(names: &[&str]) -> Vec<PathBuf> {
        names.iter().map(PathBuf::from).collect()
    }

    #[test]
    fn rotated_sets_are_read_oldest_first() {
        assert_eq!(
            rotation_order(&paths(&[
                "maillog",
                "maillog.1",
                "maillog.2.gz",
                "maillog.10.gz"
            ])),
            paths(&["maillog.10.gz", "maillog.2.gz", "maillog.1", "maillog"])
        );
        assert_eq!(
            rotation_order(&paths(&[
                "/var/log/mail.log",
                "/var/log/mail.log-20261122.gz",
                "/var/log/mail.log-20261115.gz"
            ])),
            paths(&[
                "/var/log/mail.log-20261115.gz",
                "/var/log/mail.log-20261122.gz",
                "/var/log/mail.log"
            ])
        );
        // Separate sets and stdin keep their places.
        assert_eq!(
            rotation_order(&paths(&["b.log", "-", "a.log.1", "a.log", "b.log.1"])),
            paths(&["b.log.1", "b.log", "-", "a.log.1", "a.log"])
        );
        // Already in order: unchanged.
        let given = paths(&["maillog.1", "maillog"]);
        assert_eq!(rotation_order(&given), given);
    }

    #[test]
    fn gzip_is_recognised_by_content() {
        let dir = tempfile::tempdir().expect("temp dir");
        let plain = dir.path().join("a");
        let gz = dir.path().join("b");
        let line = b"Nov 29 12:46:47 mx postfix/qmgr[1]: ABCDEF: removed\n";
        std::fs::write(&plain, line).expect("write");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(line).expect("compress");
        std::fs::write(&gz, enc.finish().expect("compress")).expect("write");
        for p in [&plain, &gz] {
            let (mut r, _) = open(p).expect("opens");
            let mut s = String::new();
            r.read_to_string(&mut s).expect("reads");
            assert_eq!(s.as_bytes(), line);
        }
    }

    #[test]
    fn errors_name_the_file() {
        let err = audit_files(&paths(&["/nonexistent/maillog"]), Limits::default())
            .expect_err("missing file");
        assert!(
            err.to_string()
                .starts_with("cannot read /nonexistent/maillog: "),
            "{err}"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let xz = dir.path().join("maillog.1.xz");
        std::fs::write(&xz, b"\xfd7zXZ\x00rest").expect("write");
        let err = audit_files(&[xz], Limits::default()).expect_err("xz");
        assert!(
            err.to_string().contains("xz -dc FILE | nobounce audit -"),
            "{err}"
        );
        let truncated = dir.path().join("maillog.2.gz");
        std::fs::write(&truncated, [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 1, 2]).expect("write");
        let err = audit_files(&[truncated], Limits::default()).expect_err("truncated gz");
        assert!(err.to_string().contains("maillog.2.gz"), "{err}");
    }
}
