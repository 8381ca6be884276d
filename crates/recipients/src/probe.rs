//! Asking the delivery agent itself: an LMTP (or SMTP) `RCPT TO` probe.
//!
//! The probe speaks to Dovecot's LMTP server (with
//! `lmtp_rcpt_check_quota = yes`, Dovecot checks the quota at `RCPT`) or to
//! any SMTP server that verifies recipients at `RCPT`:
//!
//! ```text
//! S: 220 ...                      (greeting)
//! C: LHLO helo_name               (EHLO for SMTP)
//! S: 250-... / 250 SIZE ...
//! C: MAIL FROM:<> SIZE=12345      (SIZE only if advertised and known)
//! S: 250 2.1.0 OK
//! C: RCPT TO:<alice@example.org>
//! S: 250 2.1.5 OK | 550 5.1.1 ... | 552 5.2.2 ... | 452 4.2.2 ...
//! C: RSET                         (the connection goes back to the pool)
//! S: 250 2.0.0 OK
//! ...
//! C: QUIT                         (when a pooled connection is dropped)
//! ```
//!
//! No `DATA` is ever sent, so nothing is delivered. The `RCPT` reply maps
//! to a status:
//!
//! | reply | status |
//! | --- | --- |
//! | 2xx | `Deliverable` |
//! | any `x.2.2` (mailbox full); `552` without enhanced code or with `5.2.x` | `OverQuota { room_left: None }` |
//! | `5.2.1` (mailbox disabled) | `Disabled` |
//! | `550`/`551`/`553` with `5.1.x` or no enhanced code | `Unknown` |
//! | `421`, other 4xx, other 5xx (`554 5.7.1`, `552 5.3.4`) | `Err` |
//!
//! Unexpected permanent replies are errors rather than `Unknown`: they do
//! not say the recipient does not exist, and a temporary failure is the
//! answer that never loses mail. Each lookup has one deadline covering the
//! wait for a connection slot, connecting, greeting and the whole exchange;
//! on expiry the lookup fails (→ tempfail) and the connection is dropped.
//! Answers, never errors, are cached (see [`crate::CacheConfig`]).

use crate::{
    net::{LineConn, PooledBackend, ServerSettings},
    reply::classify,
};
use async_trait::async_trait;
use nobounce_core::{
    smtp_reply::{ReplyParser, SmtpReply},
    Clock, DirectoryError, Endpoint, RecipientDirectory, RecipientQuery, RecipientStatus,
    SystemClock,
};
use serde::Serialize;
use std::{io, sync::Arc, time::Duration};

/// Longest reply line accepted (RFC 5321 allows 512 octets; be lenient).
const MAX_LINE: usize = 4096;
/// How long a dropped connection may take to say goodbye.
const QUIT_TIMEOUT: Duration = Duration::from_secs(2);

/// Which dialect the server speaks.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ProbeProtocol {
    /// LMTP (RFC 2033): `LHLO`. Dovecot's `lmtp` service.
    #[default]
    Lmtp,
    /// SMTP: `EHLO`.
    Smtp,
}

impl ProbeProtocol {
    fn hello(self) -> &'static str {
        match self {
            Self::Lmtp => "LHLO",
            Self::Smtp => "EHLO",
        }
    }

    /// `"LMTP"` or `"SMTP"`, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Lmtp => "LMTP",
            Self::Smtp => "SMTP",
        }
    }
}

/// Configuration of an RCPT probe backend (`type = "rcpt_probe"`).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct RcptProbeConfig {
    /// Address, timeout, connections and cache.
    #[serde(flatten)]
    pub server: ServerSettings,
    /// `"lmtp"` or `"smtp"`. Default: `"lmtp"`.
    pub protocol: ProbeProtocol,
    /// The name sent with `LHLO`/`EHLO`: no spaces or control characters.
    /// Default: `"localhost"`.
    pub helo_name: String,
}

impl RcptProbeConfig {
    /// A configuration with every default and the given server address.
    pub fn new(address: Endpoint) -> Self {
        Self {
            server: ServerSettings::new(address),
            protocol: ProbeProtocol::default(),
            helo_name: "localhost".into(),
        }
    }
}

/// What a failed exchange tells about the connection.
#[derive(Debug)]
enum ProbeError {
    /// The socket failed (reset, EOF): a pooled connection may simply have
    /// gone stale, so one retry on a fresh connection is worth it.
    Io(io::Error),
    /// The server said something we cannot work with.
    Protocol(String),
}

impl From<io::Error> for ProbeError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

#[derive(Clone, Copy, Debug, Eq, PartialEq)]
enum SizeSupport {
    None,
    Unlimited,
    Max(u64),
}

/// One connection, after the greeting and `LHLO`.
#[derive(Debug)]
struct Session {
    conn: Option<LineConn>,
    size: SizeSupport,
    smtputf8: bool,
    /// `true` while at a command boundary with a healthy server: only then
    /// may the session be reused, or politely closed with `QUIT`.
    clean: bool,
}

/// The result of one `RCPT` probe on a session.
#[derive(Debug)]
struct Probed {
    status: Result<RecipientStatus, DirectoryError>,
    /// The message size the answer is about, for the cache: the size given
    /// with `MAIL FROM`, `Some(0)` when none was given (the server checked
    /// room for an empty message only), and `None` when the server does not
    /// do `SIZE` at all (no probe can learn more, so the answer holds for
    /// every size).
    covers: Option<u64>,
}

impl Session {
    async fn open(config: &RcptProbeConfig) -> Result<Self, ProbeError> {
        let conn = LineConn::connect(&config.server.address).await?;
        let mut session = Self {
            conn: Some(conn),
            size: SizeSupport::None,
            smtputf8: false,
            clean: false,
        };
        let greeting = session.read_reply().await?;
        if greeting.code != 220 {
            return Err(ProbeError::Protocol(format!("greeting {greeting}")));
        }
        let hello = session
            .command(&format!("{} {}", config.protocol.hello(), config.helo_name))
            .await?;
        if hello.code != 250 {
            return Err(ProbeError::Protocol(format!(
                "{} refused: {hello}",
                config.protocol.hello()
            )));
        }
        for line in hello.lines.iter().skip(1) {
            let mut words = line.split_whitespace();
            match words.next().map(str::to_ascii_uppercase).as_deref() {
                Some("SIZE") => {
                    session.size = match words.next().and_then(|n| n.parse::<u64>().ok()) {
                        Some(0) | None => SizeSupport::Unlimited,
                        Some(max) => SizeSupport::Max(max),
                    }
                }
                Some("SMTPUTF8") => session.smtputf8 = true,
                _ => {}
            }
        }
        Ok(session)
    }

    fn conn(&mut self) -> &mut LineConn {
        self.conn
            .as_mut()
            .expect("a session holds its connection until dropped")
    }

    async fn read_reply(&mut self) -> Result<SmtpReply, ProbeError> {
        let mut parser = ReplyParser::default();
        loop {
            let line = self.conn().read_line(MAX_LINE).await?;
            if let Some(reply) = parser
                .push(&line)
                .map_err(|e| ProbeError::Protocol(e.to_string()))?
            {
                // 421: the server is closing the connection.
                self.clean = reply.code != 421 && !self.conn().has_buffered_input();
                return Ok(reply);
            }
        }
    }

    async fn command(&mut self, command: &str) -> Result<SmtpReply, ProbeError> {
        self.clean = false;
        self.conn()
            .write_all(format!("{command}\r\n").as_bytes())
            .await?;
        self.read_reply().await
    }

    async fn rcpt(&mut self, address: &str, size: Option<u64>) -> Result<Probed, ProbeError> {
        let utf8 = if address.is_ascii() {
            ""
        } else if self.smtputf8 {
            " SMTPUTF8"
        } else {
            return Ok(Probed {
                status: Ok(RecipientStatus::NotHandled),
                covers: Some(0),
            });
        };
        let mut size_sent = match (size, self.size) {
            (Some(n), SizeSupport::Unlimited) => Some(n),
            (Some(n), SizeSupport::Max(max)) if n <= max => Some(n),
            _ => None,
        };
        let size_param = size_sent.map(|n| format!(" SIZE={n}")).unwrap_or_default();
        let mut mail = self
            .command(&format!("MAIL FROM:<>{size_param}{utf8}"))
            .await?;
        if mail.code / 100 != 2 && size_sent.is_some() && (mail.code / 100 == 5 || mail.code == 452)
        {
            // Some servers refuse a size they advertised they would take;
            // the recipient question can still be asked without it.
            let rset = self.command("RSET").await?;
            if rset.code != 250 {
                return Err(ProbeError::Protocol(format!("RSET refused: {rset}")));
            }
            size_sent = None;
            mail = self.command(&format!("MAIL FROM:<>{utf8}")).await?;
        }
        // Issue 13, defect 1: an answer without SIZE= only says there is
        // room for an empty message.
        let covers = match self.size {
            SizeSupport::None => None,
            SizeSupport::Unlimited | SizeSupport::Max(_) => Some(size_sent.unwrap_or(0)),
        };
        if mail.code / 100 != 2 {
            return Ok(Probed {
                status: Err(DirectoryError::new(format!("MAIL FROM:<> refused: {mail}"))),
                covers,
            });
        }
        let rcpt = self.command(&format!("RCPT TO:<{address}>")).await?;
        let status = classify(rcpt.code, rcpt.status, rcpt.first_line());
        if self.clean {
            let rset = self.command("RSET").await?;
            if rset.code != 250 {
                self.clean = false;
            }
        }
        Ok(Probed { status, covers })
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if !self.clean {
            return; // mid-command or broken: just close the socket
        }
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = tokio::time::timeout(QUIT_TIMEOUT, async {
                    conn.write_all(b"QUIT\r\n").await?;
                    conn.read_line(MAX_LINE).await
                })
                .await;
            });
        }
    }
}

/// A [`RecipientDirectory`] that asks an LMTP/SMTP server at `RCPT TO`.
#[derive(Debug)]
pub struct RcptProbe {
    protocol: ProbeProtocol,
    config: RcptProbeConfig,
    backend: PooledBackend<Session>,
}

impl RcptProbe {
    /// A probe using the system clock for its cache.
    pub fn new(config: RcptProbeConfig) -> Self {
        Self::with_clock(config, Arc::new(SystemClock))
    }

    /// A probe whose cache reads time from `clock` (tests).
    pub fn with_clock(config: RcptProbeConfig, clock: Arc<dyn Clock>) -> Self {
        Self {
            protocol: config.protocol,
            backend: PooledBackend::new(config.server.clone(), clock),
            config,
        }
    }

    fn fail(&self, what: impl std::fmt::Display) -> DirectoryError {
        DirectoryError::new(format!(
            "{} probe of {}: {what}",
            self.protocol.name(),
            self.config.server.address
        ))
    }

    async fn probe(&self, address: &str, size: Option<u64>) -> Result<Probed, DirectoryError> {
        let _slot = self.backend.slot().await?;
        let (pooled, stale) = self.backend.pool.take();
        drop(stale); // each says QUIT on drop
        if let Some(mut session) = pooled {
            match session.rcpt(address, size).await {
                Ok(probed) => {
                    self.release(session);
                    return Ok(probed);
                }
                Err(ProbeError::Io(error)) => {
                    tracing::debug!(
                        event = "recipient_probe_stale_connection",
                        server = %self.config.server.address,
                        %error,
                        "pooled connection failed; retrying on a new one"
                    );
                }
                Err(ProbeError::Protocol(message)) => return Err(self.fail(message)),
            }
        }
        let mut session = Session::open(&self.config)
            .await
            .map_err(|e| self.fail_with(e))?;
        let probed = session
            .rcpt(address, size)
            .await
            .map_err(|e| self.fail_with(e))?;
        self.release(session);
        Ok(probed)
    }

    fn fail_with(&self, error: ProbeError) -> DirectoryError {
        match error {
            ProbeError::Io(e) => DirectoryError::with_source(
                format!(
                    "{} probe of {}",
                    self.protocol.name(),
                    self.config.server.address
                ),
                e,
            ),
            ProbeError::Protocol(message) => self.fail(message),
        }
    }

    fn release(&self, session: Session) {
        if session.clean {
            // A full pool hands the session back; dropping it says QUIT.
            drop(self.backend.pool.put(session));
        }
    }
}

impl Drop for RcptProbe {
    fn drop(&mut self) {
        // Each idle session says QUIT as it is dropped.
        drop(self.backend.pool.drain());
    }
}

#[async_trait]
impl RecipientDirectory for RcptProbe {
    async fn lookup(&self, query: &RecipientQuery<'_>) -> Result<RecipientStatus, DirectoryError> {
        let what = format_args!("{} probe", self.protocol.name()).to_string();
        self.backend
            .lookup(query, what, |address| async move {
                let probed = self.probe(&address, query.declared_size).await?;
                Ok((probed.status.map_err(|e| self.fail(e)), probed.covers))
            })
            .await
    }
}

#[cfg(test)]
mod tests;
