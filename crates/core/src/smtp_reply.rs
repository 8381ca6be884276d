//! Reading SMTP and LMTP replies (RFC 5321 §4.2), for the backends that
//! talk to a mail server and for tests: one parser for every client.

use crate::reply::EnhancedStatus;
use std::{
    error::Error,
    fmt::{self, Display, Formatter},
};

/// Most lines a reply may have before the server is given up on.
pub const MAX_REPLY_LINES: usize = 100;

/// One complete (possibly multi-line) reply from a server.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct SmtpReply {
    /// The reply code, 200–599.
    pub code: u16,
    /// The enhanced status code that starts the first line, when it has one
    /// of the same class as `code`.
    pub status: Option<EnhancedStatus>,
    /// The text of every line, without code and separator.
    pub lines: Vec<String>,
}

impl SmtpReply {
    /// The text of the first line.
    pub fn first_line(&self) -> &str {
        self.lines.first().map_or("", String::as_str)
    }
}

impl Display for SmtpReply {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.first_line())
    }
}

/// A reply line that breaks RFC 5321.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct MalformedReply(String);

impl Display for MalformedReply {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Error for MalformedReply {}

/// Accumulates reply lines until the last one.
///
/// ```
/// use nobounce_core::smtp_reply::ReplyParser;
///
/// let mut parser = ReplyParser::default();
/// assert_eq!(parser.push("250-mx.example.org")?, None);
/// let reply = parser.push("250 SIZE 1000")?.expect("last line");
/// assert_eq!((reply.code, reply.lines.len()), (250, 2));
/// let reply = ReplyParser::default().push("550 5.1.1 No such user")?.expect("one line");
/// assert_eq!(reply.status.map(|s| s.to_string()).as_deref(), Some("5.1.1"));
/// # Ok::<_, nobounce_core::smtp_reply::MalformedReply>(())
/// ```
#[derive(Debug, Default)]
pub struct ReplyParser {
    code: Option<u16>,
    lines: Vec<String>,
}

impl ReplyParser {
    /// Feeds one line (without its line ending); returns the reply when this
    /// was its last line.
    pub fn push(&mut self, line: &str) -> Result<Option<SmtpReply>, MalformedReply> {
        let bad = |what: &str| MalformedReply(format!("{what}: {:?}", truncate(line)));
        let bytes = line.as_bytes();
        if bytes.len() < 3 || !bytes[..3].iter().all(u8::is_ascii_digit) {
            return Err(bad("malformed reply line"));
        }
        let code: u16 = line[..3].parse().map_err(|_| bad("bad reply code"))?;
        if !(200..=599).contains(&code) {
            return Err(bad("reply code out of range"));
        }
        if *self.code.get_or_insert(code) != code {
            return Err(bad("reply code changed within a reply"));
        }
        let (last, text) = match bytes.get(3) {
            None => (true, ""),
            Some(b' ') => (true, &line[4..]),
            Some(b'-') => (false, &line[4..]),
            Some(_) => return Err(bad("malformed reply line")),
        };
        if self.lines.len() >= MAX_REPLY_LINES {
            return Err(bad("reply has too many lines"));
        }
        self.lines.push(text.to_owned());
        if !last {
            return Ok(None);
        }
        let lines = std::mem::take(&mut self.lines);
        let status = lines
            .first()
            .and_then(|l| EnhancedStatus::at_start(l))
            .filter(|s| u16::from(s.class()) == code / 100);
        self.code = None;
        Ok(Some(SmtpReply {
            code,
            status,
            lines,
        }))
    }
}

/// `s` cut to 80 characters, for messages about it.
pub fn truncate(s: &str) -> &str {
    match s.char_indices().nth(80) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(lines: &[&str]) -> SmtpReply {
        let mut p = ReplyParser::default();
        for (i, l) in lines.iter().enumerate() {
            let r = p.push(l).expect("valid line");
            if i + 1 == lines.len() {
                return r.expect("last line completes the reply");
            }
            assert!(r.is_none(), "continuation line does not complete");
        }
        unreachable!("at least one line")
    }

    #[test]
    fn parses_single_and_multiline_replies() {
        let r = parse(&[
            "250-mx.example.org",
            "250-PIPELINING",
            "250-SIZE 1000",
            "250 8BITMIME",
        ]);
        assert_eq!(r.code, 250);
        assert_eq!(
            r.lines,
            ["mx.example.org", "PIPELINING", "SIZE 1000", "8BITMIME"]
        );
        let r = parse(&["550 5.1.1 <x@example.org> User doesn't exist: x@example.org"]);
        assert_eq!(r.code, 550);
        assert_eq!(r.status, Some(EnhancedStatus::new(5, 1, 1).unwrap()));
        let r = parse(&["250"]);
        assert_eq!(r.lines, [""]);
        // The enhanced class must match the reply class.
        let r = parse(&["450 5.1.1 odd"]);
        assert_eq!(r.status, None);
    }

    #[test]
    fn a_parser_reads_one_reply_after_another() {
        let mut p = ReplyParser::default();
        assert_eq!(p.push("250 a").unwrap().map(|r| r.code), Some(250));
        assert_eq!(p.push("354 b").unwrap().map(|r| r.code), Some(354));
    }

    #[test]
    fn rejects_malformed_lines() {
        for bad in ["", "25", "abc hello", "250xhello", "199 low", "600 high"] {
            assert!(ReplyParser::default().push(bad).is_err(), "{bad:?}");
        }
        let mut p = ReplyParser::default();
        p.push("250-a").expect("first");
        assert!(p.push("251 b").is_err(), "code change within a reply");
    }

    #[test]
    fn enhanced_codes_at_the_start_of_a_text() {
        assert_eq!(
            EnhancedStatus::at_start("4.2.2 Mailbox full"),
            Some(EnhancedStatus::new(4, 2, 2).unwrap())
        );
        assert_eq!(
            EnhancedStatus::at_start("5.7.1"),
            Some(EnhancedStatus::new(5, 7, 1).unwrap())
        );
        for bad in [
            "",
            "Mailbox full",
            "3.1.1 x",
            "5.1 x",
            "5.1.1234",
            "5..1",
            "55.1.1",
        ] {
            assert_eq!(EnhancedStatus::at_start(bad), None, "{bad:?}");
        }
    }
}
