//! SMTP replies and the verdicts that carry them.
//!
//! A [`Reply`] can only be built with a reply code and an enhanced status code
//! of the same class (`550` goes with `5.x.x`, `451` with `4.x.x`), and its
//! text is always safe to hand to an MTA: no CR, LF or NUL, ASCII only, at
//! most [`MAX_TEXT_LEN`] bytes. (The milter front end doubles `%` for the
//! MTAs; other protocols take the text as it is.)

use std::{
    error::Error,
    fmt::{self, Display, Formatter},
    str::FromStr,
};

/// The longest reply text, in bytes.
///
/// RFC 5321 §4.5.3.1.5 limits a reply line to 512 octets, code and status
/// included; libmilter and indymilter allow 980 bytes per line, and the
/// milter front end doubles every `%`. 490 bytes fit both, and a reply is
/// never split over several lines.
pub const MAX_TEXT_LEN: usize = 490;

/// Why a reply could not be built.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum ReplyError {
    /// The reply code is not a 4xx or 5xx code.
    InvalidCode(String),
    /// The enhanced status code is not `class.subject.detail` with class 2,
    /// 4 or 5.
    InvalidStatus(String),
    /// The reply code and the enhanced status code are of different classes.
    ClassMismatch { code: u16, status: String },
}

impl Display for ReplyError {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidCode(c) => write!(f, "invalid SMTP reply code {c:?}: expected 4xx or 5xx"),
            Self::InvalidStatus(s) => write!(
                f,
                "invalid enhanced status code {s:?}: expected 4.x.x or 5.x.x"
            ),
            Self::ClassMismatch { code, status } => write!(
                f,
                "reply code {code} and enhanced status code {status} are of different classes"
            ),
        }
    }
}

impl Error for ReplyError {}

/// An SMTP error reply code, 400–599.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq, Ord, PartialOrd)]
pub struct ReplyCode(u16);

impl ReplyCode {
    /// Makes a reply code; only 4xx and 5xx codes are error replies.
    pub fn new(code: u16) -> Result<Self, ReplyError> {
        if (400..600).contains(&code) {
            Ok(Self(code))
        } else {
            Err(ReplyError::InvalidCode(code.to_string()))
        }
    }

    /// The numeric code.
    pub fn get(self) -> u16 {
        self.0
    }

    /// `true` for a 4xx (transient) code.
    pub fn is_transient(self) -> bool {
        self.0 < 500
    }

    fn class(self) -> u8 {
        // 400..600 / 100 is 4 or 5, so the cast cannot truncate.
        (self.0 / 100) as u8
    }
}

impl Display for ReplyCode {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for ReplyCode {
    type Err = ReplyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 3 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ReplyError::InvalidCode(s.to_owned()));
        }
        let n = s
            .parse()
            .map_err(|_| ReplyError::InvalidCode(s.to_owned()))?;
        Self::new(n)
    }
}

/// An RFC 3463 enhanced status code, such as `5.1.1`: class 2 (success),
/// 4 (transient) or 5 (permanent).
///
/// A [`Reply`] only takes class 4 or 5, the class of its code.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub struct EnhancedStatus {
    class: u8,
    subject: u16,
    detail: u16,
}

impl EnhancedStatus {
    /// Makes a status code. `subject` and `detail` are at most 999 (RFC 3463).
    pub fn new(class: u8, subject: u16, detail: u16) -> Result<Self, ReplyError> {
        if !matches!(class, 2 | 4 | 5) || subject > 999 || detail > 999 {
            return Err(ReplyError::InvalidStatus(format!(
                "{class}.{subject}.{detail}"
            )));
        }
        Ok(Self {
            class,
            subject,
            detail,
        })
    }

    /// The class digit: 2, 4 or 5.
    pub fn class(self) -> u8 {
        self.class
    }

    /// The subject (`1` of `5.1.1`: addressing).
    pub fn subject(self) -> u16 {
        self.subject
    }

    /// The detail (the last number).
    pub fn detail(self) -> u16 {
        self.detail
    }

    /// The status code that starts `text` (as in a reply line's text,
    /// `"5.1.1 No such user"`), if it starts with one.
    ///
    /// ```
    /// use nobounce_core::EnhancedStatus;
    ///
    /// let s = EnhancedStatus::at_start("4.2.2 Mailbox full").unwrap();
    /// assert_eq!((s.class(), s.subject(), s.detail()), (4, 2, 2));
    /// assert!(EnhancedStatus::at_start("Mailbox full").is_none());
    /// ```
    pub fn at_start(text: &str) -> Option<Self> {
        text.split_whitespace().next()?.parse().ok()
    }
}

impl Display for EnhancedStatus {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

impl FromStr for EnhancedStatus {
    type Err = ReplyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ReplyError::InvalidStatus(s.to_owned());
        let mut parts = s.split('.');
        let mut next = |max_len: usize| -> Result<u16, ReplyError> {
            let p = parts.next().ok_or_else(bad)?;
            if p.is_empty() || p.len() > max_len || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            p.parse().map_err(|_| bad())
        };
        let class = next(1)?;
        let subject = next(3)?;
        let detail = next(3)?;
        if parts.next().is_some() {
            return Err(bad());
        }
        Self::new(u8::try_from(class).map_err(|_| bad())?, subject, detail)
    }
}

/// An SMTP error reply: code, enhanced status code and text.
///
/// ```
/// use nobounce_core::Reply;
///
/// let reply = Reply::new(550, "5.1.1", "No such user\r\nhere: 100%")?;
/// assert_eq!(reply.to_string(), "550 5.1.1 No such user here: 100%");
///
/// // A permanent code with a transient status is refused.
/// assert!(Reply::new(550, "4.2.2", "full").is_err());
/// # Ok::<_, nobounce_core::ReplyError>(())
/// ```
#[derive(Clone, Debug, Eq, Hash, PartialEq)]
pub struct Reply {
    code: ReplyCode,
    status: EnhancedStatus,
    text: String,
}

impl Reply {
    /// Builds a reply; fails if code and status are of different classes.
    ///
    /// The text is made safe (see [`sanitize_text`]), never refused.
    pub fn new(code: u16, status: &str, text: &str) -> Result<Self, ReplyError> {
        Self::from_parts(ReplyCode::new(code)?, status.parse()?, text)
    }

    /// Builds a reply from parsed parts; fails on a class mismatch.
    pub fn from_parts(
        code: ReplyCode,
        status: EnhancedStatus,
        text: &str,
    ) -> Result<Self, ReplyError> {
        if code.class() != status.class() {
            return Err(ReplyError::ClassMismatch {
                code: code.get(),
                status: status.to_string(),
            });
        }
        Ok(Self {
            code,
            status,
            text: sanitize_text(text),
        })
    }

    /// The reply code.
    pub fn code(&self) -> ReplyCode {
        self.code
    }

    /// The enhanced status code.
    pub fn status(&self) -> EnhancedStatus {
        self.status
    }

    /// The sanitised text (with `%` already doubled).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// `true` for a 4xx reply.
    pub fn is_transient(&self) -> bool {
        self.code.is_transient()
    }
}

impl Display for Reply {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.code, self.status, self.text)
    }
}

/// Makes arbitrary text safe for an SMTP reply line.
///
/// Control characters (CR, LF, NUL, TAB, …) become spaces and runs of spaces
/// collapse; non-ASCII characters become `?` (SMTP replies are ASCII); the
/// result is cut to [`MAX_TEXT_LEN`] bytes. `%` is left alone: the milter
/// front end doubles it for Sendmail's and Postfix's milter clients, and the
/// policy protocol takes it as it is.
pub fn sanitize_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_TEXT_LEN));
    let mut last_space = false;
    for c in text.chars() {
        let piece: &str = match c {
            c if c.is_ascii_control() || c == ' ' => " ",
            c if !c.is_ascii() => "?",
            _ => "",
        };
        if piece == " " {
            if last_space || out.is_empty() {
                continue;
            }
            last_space = true;
        } else {
            last_space = false;
        }
        let len = if piece.is_empty() { 1 } else { piece.len() };
        if out.len() + len > MAX_TEXT_LEN {
            break;
        }
        if piece.is_empty() {
            out.push(c);
        } else {
            out.push_str(piece);
        }
    }
    while out.ends_with(' ') {
        out.pop();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_mismatch_is_refused() {
        assert_eq!(
            Reply::new(550, "4.2.2", "x"),
            Err(ReplyError::ClassMismatch {
                code: 550,
                status: "4.2.2".into()
            })
        );
        assert!(Reply::new(452, "5.2.2", "x").is_err());
        assert!(Reply::new(452, "4.2.2", "x").is_ok());
    }

    #[test]
    fn codes_outside_error_range_are_refused() {
        for code in [0, 250, 399, 600, 999] {
            assert!(Reply::new(code, "5.0.0", "x").is_err(), "{code}");
        }
        for status in [
            "2.0.0", "3.0.0", "5.0", "5.0.0.0", "5.a.0", "5.1000.0", "", "55.1.1",
        ] {
            assert!(Reply::new(550, status, "x").is_err(), "{status}");
        }
        assert!("55".parse::<ReplyCode>().is_err());
        assert_eq!("421".parse::<ReplyCode>().map(ReplyCode::get), Ok(421));
    }

    #[test]
    fn text_loses_line_breaks_and_nul_and_keeps_percent() {
        let r = Reply::new(550, "5.7.23", "a\r\nb\0c%d\te  f").unwrap();
        assert_eq!(r.text(), "a b c%d e f");
        assert_eq!(sanitize_text("  über\n"), "?ber");
    }

    #[test]
    fn text_is_cut_to_limit() {
        let long = "%".repeat(2000);
        let s = sanitize_text(&long);
        assert_eq!(s.len(), MAX_TEXT_LEN);
        let s = sanitize_text(&"a".repeat(5000));
        assert_eq!(s.len(), MAX_TEXT_LEN);
    }
}
