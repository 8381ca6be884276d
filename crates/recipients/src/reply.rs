//! SMTP/LMTP replies: parsing (RFC 5321 §4.2, RFC 3463 enhanced status
//! codes) and the mapping of a recipient reply to a [`RecipientStatus`].

use nobounce_core::{DirectoryError, RecipientStatus};
use std::fmt::{self, Display, Formatter};

/// An enhanced status code `class.subject.detail` (RFC 3463).
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) struct Enhanced {
    pub(crate) class: u8,
    pub(crate) subject: u16,
    pub(crate) detail: u16,
}

impl Display for Enhanced {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// Reads an enhanced status code at the start of `text`.
pub(crate) fn parse_enhanced(text: &str) -> Option<Enhanced> {
    let word = text.split_whitespace().next()?;
    let mut parts = word.splitn(3, '.');
    let num = |s: Option<&str>, max_len: usize| -> Option<u16> {
        let s = s?;
        if s.is_empty() || s.len() > max_len || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let class = num(parts.next(), 1)?;
    let subject = num(parts.next(), 3)?;
    let detail = num(parts.next(), 3)?;
    matches!(class, 2 | 4 | 5).then_some(Enhanced {
        class: u8::try_from(class).ok()?,
        subject,
        detail,
    })
}

/// One complete (possibly multi-line) reply.
#[derive(Clone, Debug, Eq, PartialEq)]
pub(crate) struct Reply {
    pub(crate) code: u16,
    pub(crate) enhanced: Option<Enhanced>,
    /// The text of every line, without code and separator.
    pub(crate) lines: Vec<String>,
}

impl Display for Reply {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}",
            self.code,
            self.lines.first().map(String::as_str).unwrap_or("")
        )
    }
}

/// Accumulates reply lines until the last one.
#[derive(Debug, Default)]
pub(crate) struct ReplyParser {
    code: Option<u16>,
    lines: Vec<String>,
}

/// Most lines a reply may have before we give up on the server.
pub(crate) const MAX_REPLY_LINES: usize = 100;

impl ReplyParser {
    /// Feeds one line; returns the reply when this was its last line.
    pub(crate) fn push(&mut self, line: &str) -> Result<Option<Reply>, String> {
        let bytes = line.as_bytes();
        if bytes.len() < 3 || !bytes[..3].iter().all(u8::is_ascii_digit) {
            return Err(format!("malformed reply line {:?}", truncate(line)));
        }
        let code: u16 = line[..3]
            .parse()
            .map_err(|_| "bad reply code".to_string())?;
        if !(200..=599).contains(&code) {
            return Err(format!("reply code {code} out of range"));
        }
        if *self.code.get_or_insert(code) != code {
            return Err(format!(
                "reply code changed within a reply: {:?}",
                truncate(line)
            ));
        }
        let (last, text) = match bytes.get(3) {
            None => (true, ""),
            Some(b' ') => (true, &line[4..]),
            Some(b'-') => (false, &line[4..]),
            Some(_) => return Err(format!("malformed reply line {:?}", truncate(line))),
        };
        if self.lines.len() >= MAX_REPLY_LINES {
            return Err("reply has too many lines".into());
        }
        self.lines.push(text.to_owned());
        if !last {
            return Ok(None);
        }
        let lines = std::mem::take(&mut self.lines);
        let enhanced = lines
            .first()
            .and_then(|l| parse_enhanced(l))
            .filter(|e| u16::from(e.class) == code / 100);
        Ok(Some(Reply {
            code: self.code.take().unwrap_or(code),
            enhanced,
            lines,
        }))
    }
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(80) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Maps a reply to a recipient (RCPT in SMTP/LMTP, or a numeric policy
/// action) to a status:
///
/// | reply | status |
/// | --- | --- |
/// | 2xx | `Deliverable` |
/// | any `x.2.2` (mailbox full), `552` without enhanced code or with `5.2.x` other than 5.2.1 | `OverQuota { room_left: None }` |
/// | `5.2.1` (mailbox disabled) | `Disabled` |
/// | `550`/`551`/`553` with `5.1.x` or no enhanced code | `Unknown` |
/// | `421`, other 4xx, other 5xx | `Err` (a temporary failure at SMTP time) |
///
/// Unexpected permanent replies (a `554 5.7.1` policy refusal, `552 5.3.4`
/// message too big for the system) are errors rather than `Unknown`: they do
/// not say the recipient does not exist, and a temporary failure is the
/// answer that never loses mail.
pub(crate) fn classify(
    code: u16,
    enhanced: Option<Enhanced>,
    text: &str,
) -> Result<RecipientStatus, DirectoryError> {
    let sub = enhanced.map(|e| (e.subject, e.detail));
    match (code / 100, sub) {
        (2, _) => return Ok(RecipientStatus::Deliverable),
        (4 | 5, Some((2, 2))) => return Ok(RecipientStatus::OverQuota { room_left: None }),
        (5, Some((2, 1))) => return Ok(RecipientStatus::Disabled),
        _ => {}
    }
    match (code, sub) {
        (552, None | Some((2, _))) => Ok(RecipientStatus::OverQuota { room_left: None }),
        (550 | 551 | 553, None | Some((1, _))) => Ok(RecipientStatus::Unknown),
        _ => Err(DirectoryError::new(format!(
            "unexpected reply {code}{}{} {}",
            if enhanced.is_some() { " " } else { "" },
            enhanced.map(|e| e.to_string()).unwrap_or_default(),
            truncate(text.trim())
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(lines: &[&str]) -> Reply {
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
        assert_eq!(
            r.enhanced,
            Some(Enhanced {
                class: 5,
                subject: 1,
                detail: 1
            })
        );
        let r = parse(&["250"]);
        assert_eq!(r.lines, [""]);
        // Enhanced class must match the reply class.
        let r = parse(&["450 5.1.1 odd"]);
        assert_eq!(r.enhanced, None);
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
    fn enhanced_codes() {
        assert_eq!(
            parse_enhanced("4.2.2 Mailbox full"),
            Some(Enhanced {
                class: 4,
                subject: 2,
                detail: 2
            })
        );
        assert_eq!(
            parse_enhanced("5.7.1"),
            Some(Enhanced {
                class: 5,
                subject: 7,
                detail: 1
            })
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
            assert_eq!(parse_enhanced(bad), None, "{bad:?}");
        }
    }

    /// The mapping table of the RCPT reply to a recipient status.
    #[test]
    fn rcpt_reply_mapping() {
        use RecipientStatus::*;
        let over = OverQuota { room_left: None };
        for (line, want) in [
            ("250 2.1.5 OK", Some(Deliverable)),
            ("250 OK", Some(Deliverable)),
            ("251 2.1.5 will forward", Some(Deliverable)),
            (
                "550 5.1.1 <x@example.org> User doesn't exist: x@example.org",
                Some(Unknown),
            ),
            ("550 No such user here", Some(Unknown)),
            ("551 5.1.6 User not local", Some(Unknown)),
            ("553 5.1.3 bad address syntax", Some(Unknown)),
            (
                "552 5.2.2 <x@example.org> Quota exceeded (mailbox for user is full)",
                Some(over.clone()),
            ),
            (
                "452 4.2.2 <x@example.org> Quota exceeded (mailbox for user is full)",
                Some(over.clone()),
            ),
            ("554 5.2.2 Quota exceeded", Some(over.clone())),
            (
                "552 Requested mail action aborted: exceeded storage allocation",
                Some(over.clone()),
            ),
            ("550 5.2.1 Mailbox disabled", Some(Disabled)),
            ("450 4.2.1 Mailbox temporarily disabled", None),
            ("452 4.3.1 Insufficient system storage", None),
            ("452 Too many recipients", None),
            ("451 4.3.0 Temporary internal failure", None),
            ("421 4.3.2 Shutting down", None),
            ("450 4.1.1 user lookup failed", None),
            ("550 5.7.1 Relaying denied", None),
            ("552 5.3.4 Message too big for system", None),
            ("554 Transaction failed", None),
        ] {
            let reply = parse(&[line]);
            let got = classify(reply.code, reply.enhanced, &reply.lines[0]);
            match want {
                Some(status) => assert_eq!(got.expect(line), status, "{line}"),
                None => assert!(got.is_err(), "{line} must be an error, got {got:?}"),
            }
        }
    }
}
