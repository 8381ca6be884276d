//! One log line split into its time stamp, host, program and message.
//!
//! The forms read:
//!
//! - syslog (RFC 3164), as classic syslogd, rsyslog's default file format
//!   on many systems, and Postfix's own `maillog_file` write it:
//!   `Nov 29 12:46:47 host postfix/qmgr[123]: message`. It has no year:
//!   see [`YearHint`].
//! - RFC 3339, as Debian's rsyslog writes (`RSYSLOG_FileFormat`):
//!   `2026-11-29T12:46:47.123456+00:00 host postfix/qmgr[123]: message`.
//! - qmail's multilog: `@4000000063a1b2c3d4e5f607 message` (TAI64N), or
//!   the same after `tai64nlocal`: `2026-11-29 12:46:47.123456789 message`.
//! - a bare qmail-send line (`delivery 3: failure: ...`) without a stamp.
//!
//! The day of a line is the date as written: local time for syslog and
//! `tai64nlocal` stamps, the stamp's own offset for RFC 3339 ones; TAI64N
//! labels are turned into UTC dates.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// A calendar day, as the log wrote it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day {
    /// The year (from the stamp, or from a [`YearHint`] for syslog).
    pub year: i32,
    /// 1–12.
    pub month: u8,
    /// 1–31.
    pub day: u8,
}

impl Day {
    /// The UTC day of a Unix time (seconds).
    pub fn from_unix(secs: i64) -> Day {
        // Howard Hinnant's days_from_civil, inverted ("civil_from_days").
        let z = secs.div_euclid(86_400) + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
        let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
        Day { year, month, day }
    }

    fn new(year: i32, month: u8, day: u8) -> Option<Day> {
        ((1..=12).contains(&month) && (1..=31).contains(&day)).then_some(Day { year, month, day })
    }
}

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// Where a syslog date (`Nov 29`, no year) gets its year.
///
/// The reference is the time the log was last written: a file's
/// modification time, or now for standard input. A line dated in a month
/// after the reference's month is from the year before (a log file spans
/// less than a year). The reference is taken in UTC, so around New Year's
/// night a line can land in the neighbouring year.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct YearHint {
    year: i32,
    month: u8,
}

impl YearHint {
    /// The year of `time` (a file's modification time).
    pub fn from_time(time: SystemTime) -> YearHint {
        let secs = match time.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2),
            Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX / 2),
        };
        let day = Day::from_unix(secs);
        YearHint {
            year: day.year,
            month: day.month,
        }
    }

    /// The current year (for standard input).
    pub fn now() -> YearHint {
        YearHint::from_time(SystemTime::now())
    }

    /// A fixed reference: logs written up to `month` of `year`.
    pub const fn fixed(year: i32, month: u8) -> YearHint {
        let month = if month < 1 {
            1
        } else if month > 12 {
            12
        } else {
            month
        };
        YearHint { year, month }
    }

    fn year_of(self, month: u8) -> i32 {
        if month > self.month {
            self.year - 1
        } else {
            self.year
        }
    }
}

/// A log line, split.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Line<'a> {
    pub day: Option<Day>,
    /// The host name field; empty for qmail's own logs.
    pub host: &'a str,
    /// The syslog tag without `[pid]` (`postfix/qmgr`); empty when the
    /// line has no tag (multilog, bare lines).
    pub program: &'a str,
    pub message: &'a str,
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Splits a line; `None` when it has no form above (it may still be a bare
/// qmail-send line: the caller tries that with [`Line::bare`]).
pub(crate) fn split(line: &str, hint: YearHint) -> Option<Line<'_>> {
    if let Some(rest) = line.strip_prefix('@') {
        return tai64n(rest);
    }
    if let Some(month) = MONTHS.iter().position(|m| line.starts_with(m)) {
        return syslog(line, month as u8 + 1, hint);
    }
    if line.as_bytes().first().is_some_and(u8::is_ascii_digit) {
        return iso(line);
    }
    None
}

impl<'a> Line<'a> {
    /// A line with no stamp and no tag.
    pub(crate) fn bare(message: &'a str) -> Line<'a> {
        Line {
            day: None,
            host: "",
            program: "",
            message,
        }
    }
}

/// `Nov 29 12:46:47 host tag: message` (the day may be space-padded, the
/// time may have a fraction).
fn syslog(line: &str, month: u8, hint: YearHint) -> Option<Line<'_>> {
    let rest = line.get(3..)?.strip_prefix(' ')?.trim_start_matches(' ');
    let (day, rest) = rest.split_once(' ')?;
    let day: u8 = day.parse().ok()?;
    let (time, rest) = rest.split_once(' ')?;
    if !looks_like_time(time) {
        return None;
    }
    let day = Day::new(hint.year_of(month), month, day)?;
    host_and_tag(Some(day), rest)
}

/// `2026-11-29T12:46:47.123456+00:00 host tag: message` (RFC 3339), or
/// `2026-11-29 12:46:47.123456789 message` (tai64nlocal).
fn iso(line: &str) -> Option<Line<'_>> {
    let day = iso_date(line.get(..10)?)?;
    let after = &line[10..];
    if let Some(rest) = after.strip_prefix('T') {
        let (time, rest) = rest.split_once(' ')?;
        if !looks_like_time(time.get(..8)?) {
            return None;
        }
        return host_and_tag(Some(day), rest);
    }
    let rest = after.strip_prefix(' ')?;
    let (time, message) = rest.split_once(' ')?;
    if !looks_like_time(time) {
        return None;
    }
    Some(Line {
        day: Some(day),
        host: "",
        program: "",
        message,
    })
}

/// `4000000063a1b2c3d4e5f607 message` (after the `@`).
fn tai64n(rest: &str) -> Option<Line<'_>> {
    let label = rest.get(..24)?;
    let message = rest.get(24..)?.strip_prefix(' ')?;
    let secs = u64::from_str_radix(label.get(..16)?, 16).ok()?;
    // TAI64: 2^62 + seconds since 1970 TAI; TAI is ahead of UTC by 10 s
    // at the epoch (and by the leap seconds since, ignored for a date).
    let unix = secs.checked_sub((1u64 << 62) + 10)?;
    Some(Line {
        day: Some(Day::from_unix(i64::try_from(unix).ok()?)),
        host: "",
        program: "",
        message,
    })
}

fn iso_date(s: &str) -> Option<Day> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let year: i32 = s.get(..4)?.parse().ok()?;
    let month: u8 = s.get(5..7)?.parse().ok()?;
    let day: u8 = s.get(8..10)?.parse().ok()?;
    Day::new(year, month, day)
}

/// `12:46:47`, with an optional fraction.
fn looks_like_time(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 8
        && b[2] == b':'
        && b[5] == b':'
        && [0, 1, 3, 4, 6, 7].iter().all(|&i| b[i].is_ascii_digit())
}

/// `host tag[pid]: message`, or `tag[pid]: message` as syslog(3) sends it
/// to `/dev/log` (the syslog daemon adds the host; a raw capture has none).
fn host_and_tag(day: Option<Day>, rest: &str) -> Option<Line<'_>> {
    let (first, after) = rest.split_once(' ')?;
    let (host, rest) = if first.ends_with(':') {
        ("", rest)
    } else {
        (first, after)
    };
    let (tag, message) = match rest.split_once(": ") {
        Some((tag, message)) if !tag.contains(' ') => (tag, message),
        // A line without a tag (`-- MARK --`, `last message repeated`).
        _ => ("", rest),
    };
    let program = match tag.find('[') {
        Some(i) => &tag[..i],
        None => tag.strip_suffix(':').unwrap_or(tag),
    };
    Some(Line {
        day,
        host,
        program,
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HINT: YearHint = YearHint {
        year: 2026,
        month: 11,
    };

    fn day(s: &str) -> Option<Day> {
        iso_date(s)
    }

    #[test]
    fn syslog_lines_take_the_year_from_the_hint() {
        let l = split("Nov 29 12:46:47 mx postfix/qmgr[123]: 4ABC: removed", HINT).expect("parses");
        assert_eq!(l.day, day("2026-11-29"));
        assert_eq!(
            (l.host, l.program, l.message),
            ("mx", "postfix/qmgr", "4ABC: removed")
        );
        // December is after the reference month: last year.
        let l = split("Dec  3 01:02:03 mx sendmail[9]: x", HINT).expect("parses");
        assert_eq!(l.day, day("2025-12-03"));
        assert_eq!(l.program, "sendmail");
        let l = split("Nov 29 12:46:47.123456 mx postfix/qmgr[1]: y", HINT).expect("parses");
        assert_eq!(l.message, "y");
        // As syslog(3) writes to /dev/log: no host.
        let l = split(
            "Nov 29 13:01:58 sendmail[17675]: 6ATD1wmm017675: done",
            HINT,
        )
        .expect("parses");
        assert_eq!((l.host, l.program), ("", "sendmail"));
        assert_eq!(l.message, "6ATD1wmm017675: done");
    }

    #[test]
    fn rfc3339_lines_carry_their_date() {
        let l = split(
            "2026-11-29T12:46:47.123456+01:00 mx postfix/bounce[7]: A: sender non-delivery notification: B",
            HINT,
        )
        .expect("parses");
        assert_eq!(l.day, day("2026-11-29"));
        assert_eq!(l.program, "postfix/bounce");
        assert_eq!(l.message, "A: sender non-delivery notification: B");
        // journalctl -o short-iso.
        let l = split(
            "2025-01-02T03:04:05+0100 mx postfix/qmgr[7]: A: removed",
            HINT,
        )
        .expect("parses");
        assert_eq!(
            (l.day, l.host, l.message),
            (day("2025-01-02"), "mx", "A: removed")
        );
    }

    #[test]
    fn qmail_stamps() {
        // 2^62 + 10 + 1_700_000_000 s: 2023-11-14 UTC.
        let label = format!("@{:016x}{:08x}", (1u64 << 62) + 10 + 1_700_000_000, 0);
        let line = format!("{label} delivery 1: success: ok/");
        let l = split(&line, HINT).expect("parses");
        assert_eq!(l.day, day("2023-11-14"));
        assert_eq!(l.message, "delivery 1: success: ok/");
        let l = split("2006-11-29 12:46:47.706458500 bounce msg 5 qp 7", HINT).expect("parses");
        assert_eq!(l.day, day("2006-11-29"));
        assert_eq!(l.message, "bounce msg 5 qp 7");
    }

    #[test]
    fn lines_without_a_tag_are_kept_but_have_no_program() {
        let l = split("Nov 29 12:46:47 mx -- MARK --", HINT).expect("parses");
        assert_eq!(l.program, "");
    }

    #[test]
    fn garbage_is_refused() {
        for s in [
            "",
            "Nov",
            "Nov 99 12:00:00 h p: m",
            "Nov 29 noon h p: m",
            "2026-13-01T00:00:00 h p: m",
            "@zz",
            "@4000000063a1b2c3d4e5f607",
            "12345",
            "\0\0\0",
        ] {
            assert_eq!(split(s, HINT), None, "{s:?}");
        }
    }

    #[test]
    fn unix_days() {
        assert_eq!(Day::from_unix(0).to_string(), "1970-01-01");
        assert_eq!(Day::from_unix(951_782_400).to_string(), "2000-02-29");
        assert_eq!(Day::from_unix(1_795_000_000).to_string(), "2026-11-18");
        assert_eq!(Day::from_unix(-86_400).to_string(), "1969-12-31");
    }
}
