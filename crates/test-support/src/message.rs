//! Building test messages and reading their headers.

use std::sync::atomic::{AtomicU64, Ordering};

/// Builds a small RFC 5322 message with CRLF line endings.
///
/// `Date` and a unique `Message-ID` are added unless set with
/// [`header`](MessageBuilder::header).
///
/// ```
/// let msg = nobounce_test_support::MessageBuilder::new()
///     .from("alice@sender.test")
///     .to("bob@example.test")
///     .subject("hello")
///     .body("Hi Bob\n")
///     .build();
/// let text = String::from_utf8(msg).unwrap();
/// assert!(text.starts_with("From: alice@sender.test\r\nTo: bob@example.test\r\n"));
/// assert!(text.ends_with("\r\n\r\nHi Bob\r\n"));
/// ```
#[derive(Debug, Clone, Default)]
pub struct MessageBuilder {
    headers: Vec<(String, String)>,
    body: String,
}

static MESSAGE_COUNTER: AtomicU64 = AtomicU64::new(0);

impl MessageBuilder {
    /// An empty message (no headers, empty body).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a `From:` header.
    pub fn from(self, address: &str) -> Self {
        self.header("From", address)
    }

    /// Adds a `To:` header (call again for more recipients).
    pub fn to(self, address: &str) -> Self {
        self.header("To", address)
    }

    /// Adds a `Subject:` header.
    pub fn subject(self, subject: &str) -> Self {
        self.header("Subject", subject)
    }

    /// Adds a header field, in call order.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets the body; bare `\n` line ends become `\r\n` in [`build`](Self::build).
    pub fn body(mut self, body: &str) -> Self {
        self.body = body.to_owned();
        self
    }

    /// The message bytes (not dot-stuffed; [`SmtpClient::data`](crate::SmtpClient::data) does that).
    pub fn build(&self) -> Vec<u8> {
        let mut out = String::new();
        let has = |name: &str| {
            self.headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case(name))
        };
        for (name, value) in &self.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        if !has("Date") {
            out.push_str("Date: Fri, 27 Nov 2026 12:00:00 +0000\r\n");
        }
        if !has("Message-ID") {
            let n = MESSAGE_COUNTER.fetch_add(1, Ordering::Relaxed);
            out.push_str(&format!(
                "Message-ID: <e2e.{}.{n}@client.example>\r\n",
                std::process::id()
            ));
        }
        out.push_str("\r\n");
        out.push_str(&crlf(&self.body));
        if !out.ends_with("\r\n") {
            out.push_str("\r\n");
        }
        out.into_bytes()
    }
}

/// Replaces bare `\n` by `\r\n`.
pub(crate) fn crlf(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut prev = '\0';
    for c in text.chars() {
        if c == '\n' && prev != '\r' {
            out.push('\r');
        }
        out.push(c);
        prev = c;
    }
    out
}

/// Header fields of a message, in order, unfolded (continuation lines joined
/// with their leading whitespace), names as written, values without the
/// whitespace after the colon and without the line end. Stops at the first
/// empty line. Non-UTF-8 bytes are replaced.
///
/// ```
/// let msg = b"Received: from a\r\n\tby b\r\nSubject:  hi\r\n\r\nbody\r\n";
/// let headers = nobounce_test_support::parse_headers(msg);
/// assert_eq!(headers, vec![
///     ("Received".to_owned(), "from a\tby b".to_owned()),
///     ("Subject".to_owned(), "hi".to_owned()),
/// ]);
/// ```
pub fn parse_headers(data: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(data);
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = headers.last_mut() {
                value.push_str(line);
            }
            continue;
        }
        match line.split_once(':') {
            Some((name, value)) => {
                headers.push((name.trim_end().to_owned(), value.trim_start().to_owned()))
            }
            // Not a header: the header section is over.
            None => break,
        }
    }
    headers
}

/// Value of the first header field called `name` (case-insensitive); see
/// [`parse_headers`].
pub fn header_value(data: &[u8], name: &str) -> Option<String> {
    parse_headers(data)
        .into_iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf_converts_only_bare_newlines() {
        assert_eq!(crlf("a\nb\r\nc"), "a\r\nb\r\nc");
    }

    #[test]
    fn builder_adds_date_and_unique_message_id() {
        let a = MessageBuilder::new().build();
        let b = MessageBuilder::new().build();
        assert!(header_value(&a, "date").is_some());
        assert_ne!(
            header_value(&a, "message-id"),
            header_value(&b, "message-id")
        );
    }

    #[test]
    fn builder_keeps_an_explicit_message_id() {
        let m = MessageBuilder::new().header("Message-Id", "<x@y>").build();
        let ids: Vec<_> = parse_headers(&m)
            .into_iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("message-id"))
            .collect();
        assert_eq!(ids, vec![("Message-Id".to_owned(), "<x@y>".to_owned())]);
    }

    #[test]
    fn headers_stop_at_the_body() {
        let h = parse_headers(b"A: 1\r\n\r\nB: 2\r\n");
        assert_eq!(h, vec![("A".to_owned(), "1".to_owned())]);
    }
}
