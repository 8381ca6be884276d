//! A tiny SMTP/LMTP server that stores everything it receives.

use crate::message::{header_value, parse_headers};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// One message as the sink received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// Argument of `EHLO`/`HELO`/`LHLO`.
    pub helo: String,
    /// Whether the client spoke LMTP (`LHLO`).
    pub lmtp: bool,
    /// Envelope sender without the angle brackets; empty for a bounce.
    pub sender: String,
    /// ESMTP parameters of `MAIL FROM` (e.g. `BODY=8BITMIME`).
    pub mail_params: Vec<String>,
    /// Accepted envelope recipients, without the angle brackets.
    pub recipients: Vec<String>,
    /// The message as transmitted, dot-unstuffed, CRLF line ends, without the
    /// final `.` line.
    pub data: Vec<u8>,
}

impl ReceivedMessage {
    /// A bounce or other delivery status notification: `MAIL FROM:<>`.
    pub fn is_bounce(&self) -> bool {
        self.sender.is_empty()
    }

    /// Header fields, unfolded; see [`parse_headers`](crate::parse_headers).
    pub fn headers(&self) -> Vec<(String, String)> {
        parse_headers(&self.data)
    }

    /// Value of the first header field `name` (case-insensitive), e.g. the
    /// topmost `Received-SPF` or `Authentication-Results`.
    pub fn header(&self, name: &str) -> Option<String> {
        header_value(&self.data, name)
    }

    /// Values of every header field `name`, top to bottom.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers()
            .into_iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
            .collect()
    }

    /// The body (everything after the first empty line), lossily decoded.
    pub fn body(&self) -> String {
        let text = String::from_utf8_lossy(&self.data);
        match text.split_once("\r\n\r\n") {
            Some((_, body)) => body.to_owned(),
            None => String::new(),
        }
    }
}

/// Configures an [`SmtpSink`].
#[derive(Debug, Clone, Default)]
pub struct SinkBuilder {
    rejections: Vec<(String, String)>,
}

impl SinkBuilder {
    /// Answer `RCPT TO:<address>` (case-insensitive) with `reply`, a full
    /// reply line such as `550 5.1.1 <nobody@example.test>: no such user`.
    /// Postfix then bounces the message it already accepted: a way to make
    /// the very bounce nobounce exists to prevent, e.g. to check that a test
    /// would notice one.
    pub fn reject_recipient(mut self, address: &str, reply: &str) -> Self {
        self.rejections.push((address.to_owned(), reply.to_owned()));
        self
    }

    /// Binds `127.0.0.1:0` and starts serving on the current tokio runtime.
    pub async fn start(self) -> io::Result<SmtpSink> {
        let listener = crate::bind_loopback().await?;
        let addr = listener.local_addr()?;
        let (count_tx, _) = watch::channel(0usize);
        let shared = Arc::new(Shared {
            messages: Mutex::new(Vec::new()),
            count: count_tx,
            rejections: self.rejections,
        });
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Ok(SmtpSink { addr, shared, task })
    }
}

/// SMTP (and LMTP) server on 127.0.0.1 that accepts every message and keeps
/// it for assertions: the "next hop" Postfix relays to
/// ([`PostfixBuilder::relay_to`](crate::PostfixBuilder::relay_to)).
///
/// It advertises `8BITMIME` and `SMTPUTF8` only (no `PIPELINING`, `SIZE`,
/// `DSN`), and answers each LMTP recipient separately. Stops when dropped.
#[derive(Debug)]
pub struct SmtpSink {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    // A std mutex is right here: it is held only to push or clone, never
    // across an await.
    messages: Mutex<Vec<ReceivedMessage>>,
    count: watch::Sender<usize>,
    rejections: Vec<(String, String)>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Vec<ReceivedMessage>> {
        // A panicking connection task cannot leave the Vec half-updated.
        self.messages.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl SmtpSink {
    /// A sink that accepts everything; see [`SinkBuilder::start`].
    pub async fn start() -> io::Result<Self> {
        SinkBuilder::default().start().await
    }

    /// A builder for a sink with special behaviour.
    pub fn builder() -> SinkBuilder {
        SinkBuilder::default()
    }

    /// Where the sink listens (`127.0.0.1:port`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// All messages received so far, in order of arrival.
    pub fn messages(&self) -> Vec<ReceivedMessage> {
        self.shared.lock().clone()
    }

    /// Messages received so far with `MAIL FROM:<>`.
    pub fn bounces(&self) -> Vec<ReceivedMessage> {
        self.messages()
            .into_iter()
            .filter(ReceivedMessage::is_bounce)
            .collect()
    }

    /// Whether any message with `MAIL FROM:<>` arrived.
    pub fn has_bounce(&self) -> bool {
        self.shared.lock().iter().any(ReceivedMessage::is_bounce)
    }

    /// Waits until at least `count` messages arrived and returns all of them.
    pub async fn wait_for_messages(
        &self,
        count: usize,
        timeout: Duration,
    ) -> io::Result<Vec<ReceivedMessage>> {
        let mut rx = self.shared.count.subscribe();
        let waited = tokio::time::timeout(timeout, rx.wait_for(|n| *n >= count)).await;
        match waited {
            Ok(Ok(_)) => Ok(self.messages()),
            Ok(Err(_)) => Err(io::Error::other("sink stopped")),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "sink got {} of {count} messages within {timeout:?}",
                    self.shared.lock().len()
                ),
            )),
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every
        // connection task too.
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve(stream, Arc::clone(&shared)));
                }
                // Transient accept errors (e.g. EMFILE): keep serving.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            // Reap finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

#[derive(Default)]
struct Session {
    helo: String,
    lmtp: bool,
    sender: Option<(String, Vec<String>)>,
    recipients: Vec<String>,
}

/// Serves one connection; I/O errors just end it.
async fn serve(stream: TcpStream, shared: Arc<Shared>) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    write
        .write_all(b"220 sink.nobounce.test ESMTP nobounce-e2e sink\r\n")
        .await?;
    let mut session = Session::default();
    let mut raw = Vec::new();
    loop {
        raw.clear();
        if reader.read_until(b'\n', &mut raw).await? == 0 {
            return Ok(());
        }
        let line = String::from_utf8_lossy(&raw);
        let line = line.trim_end_matches(['\r', '\n']);
        let (verb, arg) = match line.split_once(' ') {
            Some((v, a)) => (v.to_ascii_uppercase(), a.trim()),
            None => (line.to_ascii_uppercase(), ""),
        };
        let reply: String = match verb.as_str() {
            "EHLO" | "LHLO" => {
                session = Session {
                    helo: arg.to_owned(),
                    lmtp: verb == "LHLO",
                    ..Session::default()
                };
                "250-sink.nobounce.test\r\n250-8BITMIME\r\n250 SMTPUTF8".into()
            }
            "HELO" => {
                session = Session {
                    helo: arg.to_owned(),
                    ..Session::default()
                };
                "250 sink.nobounce.test".into()
            }
            "MAIL" => match path_arg(arg, "FROM:") {
                Some((address, params)) => {
                    session.sender = Some((address, params));
                    session.recipients.clear();
                    "250 2.1.0 Ok".into()
                }
                None => "501 5.5.4 Syntax: MAIL FROM:<address>".into(),
            },
            "RCPT" => match (&session.sender, path_arg(arg, "TO:")) {
                (None, _) => "503 5.5.1 Error: need MAIL command".into(),
                (_, None) => "501 5.5.4 Syntax: RCPT TO:<address>".into(),
                (Some(_), Some((address, _))) => {
                    let rejection = shared
                        .rejections
                        .iter()
                        .find(|(a, _)| a.eq_ignore_ascii_case(&address));
                    match rejection {
                        Some((_, reply)) => reply.clone(),
                        None => {
                            session.recipients.push(address);
                            "250 2.1.5 Ok".into()
                        }
                    }
                }
            },
            "DATA" if session.recipients.is_empty() => "503 5.5.1 Error: need RCPT command".into(),
            "DATA" => {
                write
                    .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    .await?;
                let data = read_data(&mut reader).await?;
                let (sender, mail_params) = session.sender.take().unwrap_or_default();
                let recipients = std::mem::take(&mut session.recipients);
                let replies = if session.lmtp { recipients.len() } else { 1 };
                shared.lock().push(ReceivedMessage {
                    helo: session.helo.clone(),
                    lmtp: session.lmtp,
                    sender,
                    mail_params,
                    recipients,
                    data,
                });
                shared.count.send_modify(|n| *n += 1);
                vec!["250 2.0.0 Ok: stored by sink"; replies].join("\r\n")
            }
            "RSET" => {
                session.sender = None;
                session.recipients.clear();
                "250 2.0.0 Ok".into()
            }
            "NOOP" => "250 2.0.0 Ok".into(),
            "QUIT" => {
                write.write_all(b"221 2.0.0 Bye\r\n").await?;
                return Ok(());
            }
            _ => "502 5.5.2 Error: command not recognized".into(),
        };
        write.write_all(format!("{reply}\r\n").as_bytes()).await?;
    }
}

/// Parses `FROM:<a@b> PARAM=1` (prefix case-insensitive, optional space
/// after the colon) into the address and the parameters.
fn path_arg(arg: &str, prefix: &str) -> Option<(String, Vec<String>)> {
    let head = arg.get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let rest = arg[prefix.len()..].trim_start();
    let rest = rest.strip_prefix('<')?;
    let (address, params) = rest.split_once('>')?;
    Some((
        address.to_owned(),
        params.split_whitespace().map(str::to_owned).collect(),
    ))
}

/// Reads message lines up to the lone `.`, undoing dot-stuffing.
async fn read_data<R: tokio::io::AsyncBufRead + Unpin>(reader: &mut R) -> io::Result<Vec<u8>> {
    let mut data = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed during DATA",
            ));
        }
        if line == b".\r\n" || line == b".\n" {
            return Ok(data);
        }
        let content = match line.first() {
            Some(b'.') => &line[1..],
            _ => &line[..],
        };
        data.extend_from_slice(content);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SmtpClient;

    #[test]
    fn path_arguments() {
        assert_eq!(
            path_arg("FROM:<a@b> SIZE=10 BODY=8BITMIME", "FROM:"),
            Some(("a@b".into(), vec!["SIZE=10".into(), "BODY=8BITMIME".into()]))
        );
        assert_eq!(path_arg("from: <>", "FROM:"), Some((String::new(), vec![])));
        assert_eq!(path_arg("TO:a@b", "TO:"), None);
    }

    #[tokio::test]
    async fn stores_messages_and_spots_bounces() {
        let sink = SmtpSink::builder()
            .reject_recipient("nobody@example.test", "550 5.1.1 no such user")
            .start()
            .await
            .expect("sink");
        let mut c = SmtpClient::connect(sink.addr()).await.expect("connect");
        c.ehlo("client.test").await.expect("ehlo").assert_code(250);
        let t = c
            .send_mail(
                "a@sender.test",
                &["b@example.test", "nobody@example.test"],
                b"Subject: one\r\n\r\n.leading dot\r\n",
            )
            .await
            .expect("first");
        assert!(t.accepted(), "{t:?}");
        assert_eq!(t.rcpts[1].code, 550);
        let t = c
            .send_mail("", &["a@sender.test"], b"Subject: bounce\r\n\r\nx\r\n")
            .await
            .expect("bounce");
        assert!(t.accepted(), "{t:?}");
        c.quit().await.expect("quit");

        let got = sink
            .wait_for_messages(2, Duration::from_secs(5))
            .await
            .expect("two messages");
        assert_eq!(got[0].sender, "a@sender.test");
        assert_eq!(got[0].recipients, vec!["b@example.test"]);
        assert_eq!(got[0].header("subject").as_deref(), Some("one"));
        assert_eq!(got[0].body(), ".leading dot\r\n");
        assert!(!got[0].is_bounce());
        assert!(got[1].is_bounce());
        assert!(sink.has_bounce());
        assert_eq!(sink.bounces().len(), 1);
    }
}
