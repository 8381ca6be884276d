//! A minimal SMTP client that shows tests every reply.

use nobounce_core::smtp_reply::ReplyParser;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;

/// How long [`SmtpClient`] waits for each reply (and for connecting) unless
/// changed with [`SmtpClient::set_timeout`]. Longer than the harness's
/// Postfix milter timeouts, so a hanging milter shows up as Postfix's reply.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// One SMTP reply: its code and the text of each line.
///
/// For `250-mx.example` / `250 SIZE 100` the code is 250 and `lines` is
/// `["mx.example", "SIZE 100"]`. [`Display`](fmt::Display) gives the wire
/// form, handy in assertion messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit reply code.
    pub code: u16,
    /// Text of every line, without code, separator and line end.
    pub lines: Vec<String>,
}

impl Reply {
    /// The text of all lines joined with `\n` (for one-line replies: the
    /// text after the code, e.g. `5.7.23 Message rejected ...`).
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }

    /// The enhanced status code (`5.7.23`) at the start of the first line,
    /// if there is one.
    pub fn enhanced_status(&self) -> Option<&str> {
        let first = self.lines.first()?.split_whitespace().next()?;
        let parts: Vec<&str> = first.split('.').collect();
        let valid = parts.len() == 3
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        valid.then_some(first)
    }

    /// 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 4xx: try again later.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// 5xx: rejected for good.
    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }

    /// Panics with the whole reply unless its code is `code`; returns `self`
    /// for further checks.
    #[track_caller]
    pub fn assert_code(&self, code: u16) -> &Self {
        assert_eq!(self.code, code, "unexpected SMTP reply: {self}");
        self
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let last = self.lines.len().saturating_sub(1);
        if self.lines.is_empty() {
            return write!(f, "{}", self.code);
        }
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{}{sep}{line}", self.code)?;
        }
        Ok(())
    }
}

/// Replies of one mail transaction sent with [`SmtpClient::send_mail`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// Reply to `MAIL FROM`.
    pub mail: Reply,
    /// Replies to each `RCPT TO`, in order (empty if `MAIL` failed).
    pub rcpts: Vec<Reply>,
    /// Reply to `DATA` — the final one after the message when `DATA` got
    /// 354, else the `DATA` reply itself; `None` when no recipient was
    /// accepted and `DATA` was not sent.
    pub data: Option<Reply>,
}

impl Transaction {
    /// Whether the server took responsibility for the message (final 250).
    pub fn accepted(&self) -> bool {
        self.data.as_ref().is_some_and(Reply::is_success)
    }
}

/// A minimal SMTP client for tests.
///
/// Every command returns the server's [`Reply`] (also for 4xx/5xx); `Err` is
/// only for I/O problems, a timeout (see [`DEFAULT_COMMAND_TIMEOUT`]), or a
/// malformed reply. No pipelining, no TLS, no AUTH.
#[derive(Debug)]
pub struct SmtpClient {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    timeout: Duration,
    greeting: Reply,
}

impl SmtpClient {
    /// Connects to `addr` and reads the greeting (see [`greeting`](Self::greeting)).
    pub async fn connect(addr: SocketAddr) -> io::Result<Self> {
        let stream =
            with_timeout(DEFAULT_COMMAND_TIMEOUT, "connect", TcpStream::connect(addr)).await?;
        Self::from_stream(stream).await
    }

    /// Connects from a chosen local address, e.g. `127.0.0.2`: on Linux every
    /// address in 127.0.0.0/8 is local, so tests can appear as different
    /// clients (`{client_addr}`) without leaving loopback.
    pub async fn connect_from(local: IpAddr, addr: SocketAddr) -> io::Result<Self> {
        let socket = match local {
            IpAddr::V4(_) => TcpSocket::new_v4()?,
            IpAddr::V6(_) => TcpSocket::new_v6()?,
        };
        socket.bind(SocketAddr::new(local, 0))?;
        let stream = with_timeout(DEFAULT_COMMAND_TIMEOUT, "connect", socket.connect(addr)).await?;
        Self::from_stream(stream).await
    }

    async fn from_stream(stream: TcpStream) -> io::Result<Self> {
        let (read, write) = stream.into_split();
        let mut client = Self {
            reader: BufReader::new(read),
            writer: write,
            timeout: DEFAULT_COMMAND_TIMEOUT,
            greeting: Reply {
                code: 0,
                lines: Vec::new(),
            },
        };
        client.greeting = client.read_reply("greeting").await?;
        Ok(client)
    }

    /// The server's greeting (`220 ...`, or e.g. `421`/`554` when refused).
    pub fn greeting(&self) -> &Reply {
        &self.greeting
    }

    /// Changes the per-reply timeout.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Sends one command line (without CRLF) and reads the reply.
    pub async fn command(&mut self, line: &str) -> io::Result<Reply> {
        self.write(format!("{line}\r\n").as_bytes()).await?;
        self.read_reply(line).await
    }

    /// `EHLO name`.
    pub async fn ehlo(&mut self, name: &str) -> io::Result<Reply> {
        self.command(&format!("EHLO {name}")).await
    }

    /// `HELO name`.
    pub async fn helo(&mut self, name: &str) -> io::Result<Reply> {
        self.command(&format!("HELO {name}")).await
    }

    /// `MAIL FROM:<address>` followed by ESMTP parameters such as `SIZE=1000`
    /// or `BODY=8BITMIME`. An empty `address` gives the null sender `<>`.
    pub async fn mail_from(&mut self, address: &str, params: &[&str]) -> io::Result<Reply> {
        self.command(&with_params(format!("MAIL FROM:<{address}>"), params))
            .await
    }

    /// `RCPT TO:<address>`.
    pub async fn rcpt_to(&mut self, address: &str) -> io::Result<Reply> {
        self.rcpt_to_with(address, &[]).await
    }

    /// `RCPT TO:<address>` followed by ESMTP parameters (e.g. `NOTIFY=NEVER`).
    pub async fn rcpt_to_with(&mut self, address: &str, params: &[&str]) -> io::Result<Reply> {
        self.command(&with_params(format!("RCPT TO:<{address}>"), params))
            .await
    }

    /// `DATA`, then — if the server answers 354 — the message (bare `\n`
    /// become `\r\n`, lines starting with `.` are dot-stuffed, the final
    /// `.` is added) and returns the reply after the message. If `DATA` is
    /// not answered with 354, that reply is returned and nothing is sent.
    pub async fn data(&mut self, message: &[u8]) -> io::Result<Reply> {
        let reply = self.command("DATA").await?;
        if reply.code != 354 {
            return Ok(reply);
        }
        self.write(&dot_stuff(message)).await?;
        self.read_reply("end of DATA").await
    }

    /// `RSET`.
    pub async fn rset(&mut self) -> io::Result<Reply> {
        self.command("RSET").await
    }

    /// `NOOP`.
    pub async fn noop(&mut self) -> io::Result<Reply> {
        self.command("NOOP").await
    }

    /// `QUIT`, then closes the connection.
    pub async fn quit(mut self) -> io::Result<Reply> {
        let reply = self.command("QUIT").await?;
        // Best effort: the server closes its side anyway.
        let _ = self.writer.shutdown().await;
        Ok(reply)
    }

    /// One whole transaction: `MAIL FROM`, every `RCPT TO`, and `DATA` with
    /// `message` if at least one recipient was accepted. Stops after a
    /// failed `MAIL FROM`. Does not send `RSET` or `QUIT`.
    pub async fn send_mail(
        &mut self,
        from: &str,
        recipients: &[&str],
        message: &[u8],
    ) -> io::Result<Transaction> {
        let mail = self.mail_from(from, &[]).await?;
        let mut transaction = Transaction {
            mail,
            rcpts: Vec::new(),
            data: None,
        };
        if !transaction.mail.is_success() {
            return Ok(transaction);
        }
        for rcpt in recipients {
            let reply = self.rcpt_to(rcpt).await?;
            transaction.rcpts.push(reply);
        }
        if transaction.rcpts.iter().any(Reply::is_success) {
            transaction.data = Some(self.data(message).await?);
        }
        Ok(transaction)
    }

    async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        let timeout = self.timeout;
        with_timeout(timeout, "sending", self.writer.write_all(bytes)).await
    }

    async fn read_reply(&mut self, after: &str) -> io::Result<Reply> {
        let timeout = self.timeout;
        let what = format!("reply to {after}");
        with_timeout(timeout, &what, read_reply(&mut self.reader)).await
    }
}

async fn with_timeout<T>(
    limit: Duration,
    what: &str,
    fut: impl std::future::Future<Output = io::Result<T>>,
) -> io::Result<T> {
    timeout(limit, fut).await.unwrap_or_else(|_| {
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no {what} within {limit:?}"),
        ))
    })
}

fn with_params(mut line: String, params: &[&str]) -> String {
    for p in params {
        line.push(' ');
        line.push_str(p);
    }
    line
}

/// Reads one (possibly multi-line) reply, with nobounce-core's parser.
async fn read_reply(reader: &mut BufReader<OwnedReadHalf>) -> io::Result<Reply> {
    let mut parser = ReplyParser::default();
    let mut read = Vec::new();
    loop {
        let mut raw = Vec::new();
        if reader.read_until(b'\n', &mut raw).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("connection closed by server after {read:?}"),
            ));
        }
        let line = String::from_utf8_lossy(&raw);
        let line = line.trim_end_matches(['\r', '\n']);
        read.push(line.to_owned());
        if let Some(reply) = parser
            .push(line)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
        {
            return Ok(Reply {
                code: reply.code,
                lines: reply.lines,
            });
        }
    }
}

/// CRLF line ends, dot-stuffing, and the terminating `.` line.
fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 16);
    let mut at_line_start = true;
    let mut prev = 0u8;
    for &b in message {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        at_line_start = b == b'\n';
        prev = b;
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(code: u16, lines: &[&str]) -> Reply {
        Reply {
            code,
            lines: lines.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn dot_stuffing_and_line_ends() {
        assert_eq!(dot_stuff(b".a\nb\r\n..c"), b"..a\r\nb\r\n...c\r\n.\r\n");
        assert_eq!(dot_stuff(b""), b".\r\n");
    }

    #[test]
    fn enhanced_status_only_when_well_formed() {
        assert_eq!(
            reply(550, &["5.7.23 SPF fail"]).enhanced_status(),
            Some("5.7.23")
        );
        assert_eq!(reply(250, &["mx.example"]).enhanced_status(), None);
        assert_eq!(reply(250, &["1.2"]).enhanced_status(), None);
    }

    #[test]
    fn display_is_the_wire_form() {
        assert_eq!(
            reply(250, &["mx", "SIZE 10"]).to_string(),
            "250-mx\n250 SIZE 10"
        );
    }

    #[tokio::test]
    async fn reads_multiline_replies_and_rejects_garbage() {
        let listener = crate::bind_loopback().await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            s.write_all(b"220-hello\r\n220 there\r\n")
                .await
                .expect("write");
            let mut buf = [0u8; 64];
            let _ = tokio::io::AsyncReadExt::read(&mut s, &mut buf).await;
            s.write_all(b"xyz\r\n").await.expect("write");
        });
        let mut client = SmtpClient::connect(addr).await.expect("connect");
        assert_eq!(client.greeting(), &reply(220, &["hello", "there"]));
        let err = client.noop().await.expect_err("garbage reply");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        server.await.expect("server");
    }
}
