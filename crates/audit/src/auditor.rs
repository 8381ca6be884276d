//! The streaming auditor: lines in, [`Bounce`]s out, a [`Report`] at the
//! end.

use crate::line::{self, Day, Line, YearHint};
use crate::reason::{Reason, Reasons};
use crate::report::Report;
use crate::state::{Bounded, Limits, Message};
use crate::{postfix, qmail, sendmail};
use serde::Serialize;
use std::io::{self, BufRead};

/// Longest line read whole; a longer one is skipped and counted as
/// unparsable. Syslog daemons cut messages at 8 KiB by default, and the
/// lines read here are far shorter.
pub const MAX_LINE: usize = 64 * 1024;

/// The MTA whose log a bounce was found in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mta {
    /// Postfix: `QUEUEID: sender non-delivery notification: BOUNCEID`.
    Postfix,
    /// Sendmail: `QUEUEID: BOUNCEID: DSN: text`.
    Sendmail,
    /// qmail-send: `bounce msg N qp M`.
    Qmail,
}

/// One bounce (non-delivery notification) the server generated for a
/// message it had accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bounce {
    /// Whose log it is.
    pub mta: Mta,
    /// The day of the log line that created the bounce.
    pub day: Option<Day>,
    /// The host field of that line (empty for qmail's own logs).
    pub host: String,
    /// The queue id of the original message (qmail: its message number).
    pub queue_id: String,
    /// The queue id of the bounce itself (Postfix, Sendmail).
    pub bounce_id: Option<String>,
    /// The original envelope sender, to whom the bounce went; `None` when
    /// its line was not in the log.
    pub sender: Option<String>,
    /// The reason the bounce counts under (see [`Reason`]'s order).
    pub reason: Reason,
    /// The failed recipients behind it, per reason.
    pub recipients: Vec<(Reason, u32)>,
    /// Whether nobounce would have refused every one of those recipients
    /// at RCPT TO, so that no bounce would have been sent.
    pub preventable: bool,
}

impl Bounce {
    /// The sender's domain, lower case; `None` without a sender or `@`.
    pub fn sender_domain(&self) -> Option<String> {
        let sender = self.sender.as_deref()?;
        let (_, domain) = sender.rsplit_once('@')?;
        (!domain.is_empty()).then(|| domain.to_ascii_lowercase())
    }
}

/// What a line was.
pub(crate) enum Outcome {
    /// Not a line of any MTA read here (or, for a line without stamp and
    /// tag, not a line at all: counted as unparsable).
    Foreign,
    /// An MTA line, used or not.
    Known,
    /// The line that created a bounce.
    Bounce(Bounce),
}

/// What the MTA parsers share.
#[derive(Debug)]
pub(crate) struct State {
    pub messages: Bounded<Message>,
    /// qmail: delivery number → message key.
    pub deliveries: Bounded<String>,
    /// Lines read so far (the clock of the bounds).
    pub now: u64,
    /// Messages forgotten with failed recipients that no bounce reported.
    pub incomplete: u64,
}

impl State {
    fn new(limits: &Limits) -> Self {
        State {
            messages: Bounded::new(limits.max_messages, limits.horizon_lines),
            deliveries: Bounded::new(limits.max_messages, limits.horizon_lines),
            now: 0,
            incomplete: 0,
        }
    }

    /// The message under `key`, created if new.
    pub(crate) fn message(&mut self, key: &str) -> &mut Message {
        let incomplete = &mut self.incomplete;
        self.messages.entry(key, self.now, |m| {
            if m.pending() {
                *incomplete += 1;
            }
        })
    }

    /// Forgets a message that the log shows complete.
    pub(crate) fn forget(&mut self, key: &str) {
        if self.messages.remove(key).is_some_and(|m| m.pending()) {
            self.incomplete += 1;
        }
    }

    /// The bounce of the message under `key`: its sender, and the reasons
    /// of its recipients that failed since the last bounce (or `fallback`
    /// when none was seen, e.g. the text of Sendmail's DSN line).
    pub(crate) fn bounce(
        &mut self,
        mta: Mta,
        line: &Line<'_>,
        key: &str,
        queue_id: &str,
        bounce_id: Option<&str>,
        fallback: Option<Reason>,
    ) -> Bounce {
        let (sender, mut reasons) = match self.messages.get(key, self.now) {
            Some(m) => (m.sender.as_deref().map(str::to_owned), m.take_reasons()),
            None => (None, Reasons::default()),
        };
        if reasons.is_empty() {
            if let Some(reason) = fallback {
                reasons.add(reason, 1);
            }
        }
        Bounce {
            mta,
            day: line.day,
            host: line.host.to_owned(),
            queue_id: queue_id.to_owned(),
            bounce_id: bounce_id.map(str::to_owned),
            sender,
            reason: reasons.decide(),
            recipients: reasons.iter().collect(),
            preventable: reasons.preventable(),
        }
    }
}

/// The key of a queue id: host and MTA instance too, so that one file with
/// the logs of several hosts or Postfix instances does not mix them up.
pub(crate) fn key(host: &str, namespace: &str, id: &str) -> String {
    format!("{host} {namespace} {id}")
}

/// A Postfix or Sendmail queue id: 5 to 20 letters and digits (Postfix
/// short ids are hex, long ones base 52 with a `z`; Sendmail's are 14
/// characters).
pub(crate) fn is_queue_id(s: &str) -> bool {
    (5..=20).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Reads MTA logs line by line and keeps count of the bounces in them.
///
/// Memory stays bounded whatever the input (see [`Limits`]); no line, however
/// malformed (not UTF-8, NUL bytes, carriage returns, megabytes long),
/// makes it panic: lines it cannot read are counted in
/// [`Report::unparsable_lines`].
///
/// ```
/// use nobounce_audit::{Auditor, Reason, YearHint};
///
/// let log = "\
/// Nov 29 12:46:47 mx postfix/qmgr[10]: 4A1B2C3D4E: from=<joe@forged.example>, size=300, nrcpt=1 (queue active)
/// Nov 29 12:46:47 mx postfix/smtp[11]: 4A1B2C3D4E: to=<nobody@example.org>, relay=mail.example.org[192.0.2.1]:25, delay=0.1, delays=0/0/0/0, dsn=5.1.1, status=bounced (host mail.example.org[192.0.2.1] said: 550 5.1.1 <nobody@example.org>: User unknown (in reply to RCPT TO command))
/// Nov 29 12:46:47 mx postfix/bounce[12]: 4A1B2C3D4E: sender non-delivery notification: 5B2C3D4E5F
/// Nov 29 12:46:47 mx postfix/qmgr[10]: 4A1B2C3D4E: removed
/// ";
/// let mut auditor = Auditor::new();
/// let mut bounces = Vec::new();
/// auditor
///     .read(log.as_bytes(), YearHint::fixed(2026, 11), |b| bounces.push(b.clone()))
///     .expect("reading from memory cannot fail");
/// assert_eq!(bounces[0].reason, Reason::UnknownUser);
/// assert!(bounces[0].preventable);
/// let report = auditor.finish();
/// assert_eq!(report.bounces, 1);
/// assert_eq!(report.by_sender_domain["forged.example"], 1);
/// assert_eq!(report.by_day["2026-11-29"].bounces, 1);
/// ```
#[derive(Debug)]
pub struct Auditor {
    limits: Limits,
    state: State,
    report: Report,
}

impl Default for Auditor {
    fn default() -> Self {
        Self::new()
    }
}

impl Auditor {
    /// An auditor with the default [`Limits`].
    pub fn new() -> Self {
        Self::with_limits(Limits::default())
    }

    /// An auditor with other bounds.
    pub fn with_limits(limits: Limits) -> Self {
        Auditor {
            state: State::new(&limits),
            limits,
            report: Report::default(),
        }
    }

    /// Reads one line (without or with its line end) and returns the
    /// bounce it created, if it did. `hint` dates syslog lines.
    pub fn line(&mut self, raw: &[u8], hint: YearHint) -> Option<Bounce> {
        self.state.now += 1;
        self.report.lines += 1;
        let incomplete = &mut self.state.incomplete;
        let now = self.state.now;
        self.state.messages.sweep(now, |m| {
            if m.pending() {
                *incomplete += 1;
            }
        });
        self.state.deliveries.sweep(now, |_| {});

        let text = String::from_utf8_lossy(raw);
        let text = text.trim_end_matches(['\n', '\r']);
        if text.trim().is_empty() {
            return None;
        }
        let outcome = match line::split(text, hint) {
            Some(l) => self.dispatch(&l),
            None => match qmail::line(&mut self.state, &Line::bare(text)) {
                Outcome::Foreign => {
                    self.report.unparsable_lines += 1;
                    Outcome::Known
                }
                known => known,
            },
        };
        match outcome {
            Outcome::Bounce(b) => {
                self.report.add(&b, self.limits.max_domains);
                Some(b)
            }
            Outcome::Known | Outcome::Foreign => None,
        }
    }

    /// Counts a line the caller could not read (e.g. longer than
    /// [`MAX_LINE`]).
    pub fn unparsable_line(&mut self) {
        self.state.now += 1;
        self.report.lines += 1;
        self.report.unparsable_lines += 1;
    }

    /// Reads every line of `reader`, calling `on_bounce` for each bounce.
    /// Lines longer than [`MAX_LINE`] are skipped and counted as
    /// unparsable; only I/O errors (a truncated `.gz` among them) end the
    /// reading early.
    pub fn read<R: BufRead>(
        &mut self,
        mut reader: R,
        hint: YearHint,
        mut on_bounce: impl FnMut(&Bounce),
    ) -> io::Result<()> {
        let mut buf = Vec::with_capacity(256);
        while let Some(complete) = read_line(&mut reader, &mut buf, MAX_LINE)? {
            if complete {
                if let Some(b) = self.line(&buf, hint) {
                    on_bounce(&b);
                }
            } else {
                self.unparsable_line();
            }
        }
        Ok(())
    }

    /// The counts so far.
    pub fn report(&self) -> &Report {
        &self.report
    }

    /// The final report: messages still remembered with failed recipients
    /// but no bounce count as [`Report::incomplete`].
    pub fn finish(mut self) -> Report {
        let pending = self.state.messages.drain().filter(Message::pending).count();
        self.report.incomplete = self.state.incomplete + pending as u64;
        self.report
    }

    fn dispatch(&mut self, l: &Line<'_>) -> Outcome {
        let instance = l.program.split('/').next().unwrap_or_default();
        if instance.starts_with("postfix") {
            postfix::line(&mut self.state, l, instance)
        } else if l.program == "sendmail" || l.program.starts_with("sm-") {
            sendmail::line(&mut self.state, l)
        } else {
            // qmail's splogger tag is configurable (`qmail` by default), and
            // multilog lines have none: any other line may be qmail-send's.
            match qmail::line(&mut self.state, l) {
                Outcome::Foreign => Outcome::Foreign,
                other => other,
            }
        }
    }
}

/// Reads one line into `buf` (without its `\n`), keeping at most `max`
/// bytes. `Some(true)`: a whole line; `Some(false)`: a line longer than
/// `max`, read to its end and dropped; `None`: end of input.
fn read_line<R: BufRead>(r: &mut R, buf: &mut Vec<u8>, max: usize) -> io::Result<Option<bool>> {
    buf.clear();
    let mut read_any = false;
    let mut too_long = false;
    loop {
        let available = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok(read_any.then_some(!too_long));
        }
        read_any = true;
        let (chunk, used, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..i], i + 1, true),
            None => (available, available.len(), false),
        };
        if !too_long {
            if buf.len() + chunk.len() > max {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(chunk);
            }
        }
        r.consume(used);
        if done {
            return Ok(Some(!too_long));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HINT: YearHint = YearHint::fixed(2026, 11);

    #[test]
    fn long_lines_are_skipped_not_kept() {
        let mut input = Vec::new();
        input.extend(std::iter::repeat_n(b'x', MAX_LINE * 3));
        input.extend_from_slice(b"\nshort\n");
        let mut r = &input[..];
        let mut buf = Vec::new();
        assert_eq!(
            read_line(&mut r, &mut buf, MAX_LINE).expect("reads"),
            Some(false)
        );
        assert!(buf.capacity() <= MAX_LINE * 2);
        assert_eq!(
            read_line(&mut r, &mut buf, MAX_LINE).expect("reads"),
            Some(true)
        );
        assert_eq!(buf, b"short");
        assert_eq!(read_line(&mut r, &mut buf, MAX_LINE).expect("reads"), None);
    }

    #[test]
    fn the_last_line_needs_no_newline() {
        let mut r = &b"a\nb"[..];
        let mut buf = Vec::new();
        assert_eq!(read_line(&mut r, &mut buf, 10).expect("reads"), Some(true));
        assert_eq!(read_line(&mut r, &mut buf, 10).expect("reads"), Some(true));
        assert_eq!(buf, b"b");
        assert_eq!(read_line(&mut r, &mut buf, 10).expect("reads"), None);
    }

    #[test]
    fn garbage_is_counted_never_fatal() {
        let mut a = Auditor::new();
        let mut input: Vec<u8> = Vec::new();
        input.extend_from_slice(b"\xff\xfe\x00garbage\r\n");
        input.extend_from_slice(b"\0\0\0\n");
        input.extend_from_slice(b"Nov 29 12:46:47 mx postfix/qmgr[1]: \xff\xff: from=<\n");
        input.extend_from_slice(
            b"Nov 29 12:46:47 mx postfix/bounce[1]: ABCDE: sender non-delivery notification:\n",
        );
        input.extend_from_slice(b"\n\r\n");
        a.read(&input[..], HINT, |_| {}).expect("reads");
        let r = a.finish();
        assert_eq!(r.bounces, 0);
        assert_eq!(r.unparsable_lines, 2);
        assert_eq!(r.lines, 6);
    }

    #[test]
    fn sender_domains() {
        let mut b = Bounce {
            mta: Mta::Postfix,
            day: None,
            host: String::new(),
            queue_id: "ABCDE".into(),
            bounce_id: None,
            sender: Some("Joe@Example.ORG".into()),
            reason: Reason::Other,
            recipients: vec![],
            preventable: false,
        };
        assert_eq!(b.sender_domain().as_deref(), Some("example.org"));
        b.sender = Some("root".into());
        assert_eq!(b.sender_domain(), None);
    }
}
