//! Reading and writing the Postfix SMTP access policy delegation protocol
//! (SMTPD_POLICY_README): a request is `name=value` lines ended by an empty
//! line; the reply is `action=...` and an empty line.
//!
//! Reading is bounded: a line, the number of attributes and the whole
//! request have a maximum, so a peer cannot make nobounce buffer without
//! end. What does not fit, or is not `name=value`, is a [`RequestError`]:
//! the connection is then closed without a reply (Postfix logs the failure
//! and answers its own `451 4.3.5`).

use std::net::IpAddr;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt};

/// The longest line read (attribute name, `=` and value): Postfix's own
/// `line_length_limit` is 2048; TLS certificate names can be longer.
pub const MAX_LINE: usize = 8192;

/// The most attributes in one request. Postfix 3.7 sends about 40.
pub const MAX_ATTRIBUTES: usize = 256;

/// The most bytes in one request.
pub const MAX_REQUEST: usize = 64 * 1024;

/// Why a request could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// A line was longer than [`MAX_LINE`].
    #[error("line {line} is longer than {MAX_LINE} bytes")]
    LineTooLong {
        /// The line number in the request (1-based).
        line: usize,
    },
    /// More than [`MAX_ATTRIBUTES`] attributes, or [`MAX_REQUEST`] bytes.
    #[error("request larger than {MAX_ATTRIBUTES} attributes or {MAX_REQUEST} bytes")]
    TooLarge,
    /// A line that is not `name=value`.
    #[error("line {line} is not name=value")]
    NotAnAttribute {
        /// The line number in the request (1-based).
        line: usize,
    },
    /// A NUL byte in a line.
    #[error("line {line} contains a NUL byte")]
    Nul {
        /// The line number in the request (1-based).
        line: usize,
    },
    /// The input ended inside a request (after at least one attribute).
    #[error("input ended inside a request")]
    Truncated,
    /// Not `request=smtpd_access_policy`.
    #[error("not an smtpd_access_policy request ({0:?})")]
    WrongKind(String),
    /// No `protocol_state` attribute.
    #[error("no protocol_state attribute")]
    NoState,
    /// Reading failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The SMTP stage a request is about (`protocol_state`).
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum ProtocolState {
    /// `CONNECT`.
    Connect,
    /// `EHLO` or `HELO`.
    Helo,
    /// `MAIL`.
    Mail,
    /// `RCPT`.
    Rcpt,
    /// `DATA` (after the DATA command, before the message).
    Data,
    /// `END-OF-MESSAGE`.
    EndOfMessage,
    /// Anything else (`VRFY`, `ETRN`, newer states): nothing to decide.
    Other,
}

impl ProtocolState {
    fn parse(s: &str) -> Self {
        match s.to_ascii_uppercase().as_str() {
            "CONNECT" => Self::Connect,
            "EHLO" | "HELO" => Self::Helo,
            "MAIL" => Self::Mail,
            "RCPT" => Self::Rcpt,
            "DATA" => Self::Data,
            "END-OF-MESSAGE" => Self::EndOfMessage,
            _ => Self::Other,
        }
    }
}

/// One policy request: the attributes nobounce reads. Others are ignored,
/// as the protocol asks.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct PolicyRequest {
    /// `protocol_state`.
    pub state: ProtocolState,
    /// `client_address`; `None` for `unknown` or an unparsable value.
    pub client_address: Option<IpAddr>,
    /// `client_name` (`unknown` when the client has no verified name).
    pub client_name: String,
    /// `helo_name`.
    pub helo_name: String,
    /// `sender`: the bare envelope sender, empty for the null sender.
    pub sender: String,
    /// `recipient`: the bare recipient (RCPT; also later when there is
    /// only one).
    pub recipient: String,
    /// `size`: the MAIL SIZE at RCPT (0 without it), the real size at
    /// END-OF-MESSAGE. `None` when absent, unparsable or 0.
    pub size: Option<u64>,
    /// `sasl_username`: the SMTP AUTH user, empty when not authenticated.
    pub sasl_username: String,
    /// `instance`: the same for every request about one message.
    pub instance: String,
    /// `queue_id`, when known.
    pub queue_id: String,
}

impl PolicyRequest {
    /// Builds a request from its attributes, in order (a repeated name:
    /// the last one counts).
    pub fn from_attributes<'a>(
        attributes: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, RequestError> {
        let mut kind = None;
        let mut state = None;
        let mut r = Self {
            state: ProtocolState::Other,
            client_address: None,
            client_name: String::new(),
            helo_name: String::new(),
            sender: String::new(),
            recipient: String::new(),
            size: None,
            sasl_username: String::new(),
            instance: String::new(),
            queue_id: String::new(),
        };
        for (name, value) in attributes {
            match name {
                "request" => kind = Some(value),
                "protocol_state" => state = Some(ProtocolState::parse(value)),
                // An IPv6 address may come with a zone or in brackets.
                "client_address" => {
                    r.client_address = value.trim_matches(|c| c == '[' || c == ']').parse().ok()
                }
                "client_name" => r.client_name = value.to_owned(),
                "helo_name" => r.helo_name = value.to_owned(),
                "sender" => r.sender = value.to_owned(),
                "recipient" => r.recipient = value.to_owned(),
                "size" => r.size = value.trim().parse().ok().filter(|&n| n > 0),
                "sasl_username" => r.sasl_username = value.to_owned(),
                "instance" => r.instance = value.to_owned(),
                "queue_id" => r.queue_id = value.to_owned(),
                _ => {}
            }
        }
        match kind {
            Some("smtpd_access_policy") => {}
            other => return Err(RequestError::WrongKind(other.unwrap_or("").to_owned())),
        }
        r.state = state.ok_or(RequestError::NoState)?;
        Ok(r)
    }
}

/// Reads the next request from `input`. `Ok(None)` at the end of input
/// between requests (the client is done; Exim's readsocket half-closes
/// after one request). Empty lines before a request are skipped.
pub async fn read_request<R: AsyncBufRead + Unpin>(
    input: &mut R,
) -> Result<Option<PolicyRequest>, RequestError> {
    let mut attributes: Vec<(String, String)> = Vec::new();
    let mut total = 0usize;
    let mut line_no = 0usize;
    let mut line = Vec::with_capacity(128);
    loop {
        line.clear();
        line_no += 1;
        let limit = u64::try_from(MAX_LINE + 1).expect("small constant");
        let n = (&mut *input)
            .take(limit)
            .read_until(b'\n', &mut line)
            .await?;
        if n == 0 {
            return if attributes.is_empty() {
                Ok(None)
            } else {
                Err(RequestError::Truncated)
            };
        }
        if line.last() != Some(&b'\n') {
            return if n > MAX_LINE {
                Err(RequestError::LineTooLong { line: line_no })
            } else {
                // End of input in the middle of a line.
                Err(RequestError::Truncated)
            };
        }
        total += n;
        if total > MAX_REQUEST {
            return Err(RequestError::TooLarge);
        }
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.is_empty() {
            if attributes.is_empty() {
                // A stray empty line between requests.
                line_no = 0;
                continue;
            }
            let request = PolicyRequest::from_attributes(
                attributes.iter().map(|(n, v)| (n.as_str(), v.as_str())),
            )?;
            return Ok(Some(request));
        }
        if line.contains(&0) {
            return Err(RequestError::Nul { line: line_no });
        }
        let text = String::from_utf8_lossy(&line);
        let Some((name, value)) = text.split_once('=') else {
            return Err(RequestError::NotAnAttribute { line: line_no });
        };
        if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err(RequestError::NotAnAttribute { line: line_no });
        }
        if attributes.len() == MAX_ATTRIBUTES {
            return Err(RequestError::TooLarge);
        }
        attributes.push((name.to_owned(), value.to_owned()));
    }
}

/// The reply line for `verdict`, without the final empty line: `DUNNO`
/// to go on with the MTA's other checks, or the refusal as an access(5)
/// `NNN X.Y.Z text` action (a `421` makes Postfix disconnect too).
pub fn action(verdict: &nobounce_core::Verdict) -> String {
    match verdict.reply() {
        Some(reply) => format!("action={reply}"),
        None => "action=DUNNO".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::BufReader;

    async fn read_all(input: &[u8]) -> Vec<Result<Option<PolicyRequest>, String>> {
        let mut r = BufReader::new(input);
        let mut out = Vec::new();
        loop {
            match read_request(&mut r).await {
                Ok(None) => return out,
                Ok(Some(req)) => out.push(Ok(Some(req))),
                Err(e) => {
                    out.push(Err(e.to_string()));
                    return out;
                }
            }
        }
    }

    const RCPT: &str = "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n\
        client_address=192.0.2.7\nclient_name=unknown\nhelo_name=client.example\n\
        sender=joe@example.org\nrecipient=ann@example.net\nsize=12345\n\
        instance=1a2b.5f3c.1\nfuture_attribute=whatever=with=equals\n\n";

    #[tokio::test]
    async fn reads_requests_in_a_row_and_ignores_unknown_attributes() {
        let two = format!("{RCPT}{}", RCPT.replace("RCPT\n", "END-OF-MESSAGE\n"));
        let got = read_all(two.as_bytes()).await;
        assert_eq!(got.len(), 2, "{got:?}");
        let first = got[0].as_ref().unwrap().as_ref().unwrap();
        assert_eq!(first.state, ProtocolState::Rcpt);
        assert_eq!(first.client_address, "192.0.2.7".parse().ok());
        assert_eq!(first.sender, "joe@example.org");
        assert_eq!(first.recipient, "ann@example.net");
        assert_eq!(first.size, Some(12345));
        assert_eq!(first.instance, "1a2b.5f3c.1");
        let second = got[1].as_ref().unwrap().as_ref().unwrap();
        assert_eq!(second.state, ProtocolState::EndOfMessage);
    }

    #[tokio::test]
    async fn crlf_and_odd_values_are_read() {
        let req = RCPT
            .replace('\n', "\r\n")
            .replace("client_address=192.0.2.7", "client_address=unknown")
            .replace("size=12345", "size=0");
        let got = read_all(req.as_bytes()).await;
        let r = got[0].as_ref().unwrap().as_ref().unwrap();
        assert_eq!(r.client_address, None);
        assert_eq!(r.size, None, "size=0 means no SIZE");
        let req = RCPT.replace("size=12345", "size=99999999999999999999999");
        let r = read_all(req.as_bytes()).await;
        assert_eq!(r[0].as_ref().unwrap().as_ref().unwrap().size, None);
        let req = RCPT.replace("client_address=192.0.2.7", "client_address=[2001:db8::1]");
        let r = read_all(req.as_bytes()).await;
        assert_eq!(
            r[0].as_ref().unwrap().as_ref().unwrap().client_address,
            "2001:db8::1".parse().ok()
        );
    }

    #[tokio::test]
    async fn end_of_input_between_requests_is_not_an_error() {
        assert!(read_all(b"").await.is_empty());
        assert!(read_all(b"\n\n").await.is_empty());
        let got = read_all(RCPT.as_bytes()).await;
        assert_eq!(got.len(), 1);
    }

    #[tokio::test]
    async fn malformed_requests_are_errors() {
        let cases: &[(&[u8], &str)] = &[
            (
                b"request=smtpd_access_policy\nprotocol_state=RCPT\n",
                "ended inside",
            ),
            (
                b"request=smtpd_access_policy\nprotocol_state=RCPT",
                "ended inside",
            ),
            (
                b"request=smtpd_access_policy\nno equals sign\n\n",
                "line 2 is not name=value",
            ),
            (b"=value\n\n", "line 1 is not name=value"),
            (b"na me=value\n\n", "not name=value"),
            (b"request=smtpd_access_policy\nsender=a\0b\n\n", "NUL"),
            (
                b"request=other\nprotocol_state=RCPT\n\n",
                "not an smtpd_access_policy",
            ),
            (b"protocol_state=RCPT\n\n", "not an smtpd_access_policy"),
            (b"request=smtpd_access_policy\n\n", "no protocol_state"),
        ];
        for (input, want) in cases {
            let got = read_all(input).await;
            let err = got
                .last()
                .and_then(|r| r.as_ref().err())
                .unwrap_or_else(|| {
                    panic!("{:?}: no error in {got:?}", String::from_utf8_lossy(input))
                });
            assert!(
                err.contains(want),
                "{:?}: {err}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[tokio::test]
    async fn sizes_are_capped() {
        let long = format!(
            "request=smtpd_access_policy\nsender={}\n\n",
            "a".repeat(MAX_LINE)
        );
        let got = read_all(long.as_bytes()).await;
        assert!(
            got[0].as_ref().unwrap_err().contains("longer than"),
            "{got:?}"
        );
        let many: String = (0..=MAX_ATTRIBUTES).map(|i| format!("x{i}=1\n")).collect();
        let got = read_all(format!("{many}\n").as_bytes()).await;
        assert!(got[0].as_ref().unwrap_err().contains("larger"), "{got:?}");
        let big: String = (0..20)
            .map(|i| format!("x{i}={}\n", "b".repeat(4000)))
            .collect();
        let got = read_all(format!("{big}\n").as_bytes()).await;
        assert!(got[0].as_ref().unwrap_err().contains("larger"), "{got:?}");
    }
}
