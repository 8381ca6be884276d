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
//! Answers, never errors, are cached (see [`CacheConfig`]).

use crate::{
    address,
    cache::{CacheConfig, StatusCache},
    net::{Endpoint, LineConn, Pool},
    reply::{classify, Reply, ReplyParser},
};
use async_trait::async_trait;
use nobounce_core::{
    Clock, DirectoryError, RecipientDirectory, RecipientQuery, RecipientStatus, SystemClock,
};
use serde::{Deserialize, Serialize};
use std::{io, sync::Arc, time::Duration};
use tokio::sync::Semaphore;

/// Longest reply line accepted (RFC 5321 allows 512 octets; be lenient).
const MAX_LINE: usize = 4096;
/// How long a dropped connection may take to say goodbye.
const QUIT_TIMEOUT: Duration = Duration::from_secs(2);

/// Which dialect the server speaks.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
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

    fn name(self) -> &'static str {
        match self {
            Self::Lmtp => "LMTP",
            Self::Smtp => "SMTP",
        }
    }
}

/// Configuration of an RCPT probe backend (`type = "rcpt_probe"`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RcptProbeConfig {
    /// Where the server listens: `"127.0.0.1:24"`, `"inet:host:port"`,
    /// `"unix:/path"` or `"/path"`. Required; no default.
    pub address: Endpoint,
    /// `"lmtp"` or `"smtp"`. Default: `"lmtp"`.
    #[serde(default)]
    pub protocol: ProbeProtocol,
    /// The name sent with `LHLO`/`EHLO`. Default: `"localhost"`.
    #[serde(default = "default_helo_name")]
    pub helo_name: String,
    /// Deadline of one lookup, from waiting for a connection slot to the
    /// `RCPT` reply. Default: `"5s"`.
    #[serde(default = "default_timeout", with = "crate::duration")]
    pub timeout: Duration,
    /// Most probes in flight at once, each on its own connection; further
    /// lookups wait for a slot (within their `timeout`). Default: `4`.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Most idle connections kept for reuse; `0` closes each after use.
    /// Default: `2`.
    #[serde(default = "default_max_idle")]
    pub max_idle: usize,
    /// An idle connection older than this is closed rather than reused
    /// (servers drop idle clients: Dovecot after 5 minutes). Default:
    /// `"30s"`.
    #[serde(default = "default_idle_timeout", with = "crate::duration")]
    pub idle_timeout: Duration,
    /// Answer cache. Default: see [`CacheConfig`].
    #[serde(default)]
    pub cache: CacheConfig,
}

fn default_helo_name() -> String {
    "localhost".into()
}
fn default_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_max_connections() -> usize {
    4
}
fn default_max_idle() -> usize {
    2
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(30)
}

impl RcptProbeConfig {
    /// A configuration with every default and the given server address.
    pub fn new(address: Endpoint) -> Self {
        Self {
            address,
            protocol: ProbeProtocol::default(),
            helo_name: default_helo_name(),
            timeout: default_timeout(),
            max_connections: default_max_connections(),
            max_idle: default_max_idle(),
            idle_timeout: default_idle_timeout(),
            cache: CacheConfig::default(),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.max_connections == 0 {
            return Err("max_connections must be at least 1".into());
        }
        if self.timeout.is_zero() {
            return Err("timeout must be more than 0s".into());
        }
        if self.helo_name.is_empty()
            || self
                .helo_name
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(format!("invalid helo_name {:?}", self.helo_name));
        }
        Ok(())
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
    /// The size given with `MAIL FROM`, if any.
    size_sent: Option<u64>,
}

impl Session {
    async fn open(config: &RcptProbeConfig) -> Result<Self, ProbeError> {
        let conn = LineConn::connect(&config.address).await?;
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

    async fn read_reply(&mut self) -> Result<Reply, ProbeError> {
        let mut parser = ReplyParser::default();
        loop {
            let line = self.conn().read_line(MAX_LINE).await?;
            if let Some(reply) = parser.push(&line).map_err(ProbeError::Protocol)? {
                // 421: the server is closing the connection.
                self.clean = reply.code != 421 && !self.conn().has_buffered_input();
                return Ok(reply);
            }
        }
    }

    async fn command(&mut self, command: &str) -> Result<Reply, ProbeError> {
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
                size_sent: None,
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
        if mail.code / 100 != 2 {
            return Ok(Probed {
                status: Err(DirectoryError::new(format!("MAIL FROM:<> refused: {mail}"))),
                size_sent,
            });
        }
        let rcpt = self.command(&format!("RCPT TO:<{address}>")).await?;
        let status = classify(
            rcpt.code,
            rcpt.enhanced,
            rcpt.lines.first().map_or("", |l| l.as_str()),
        );
        if self.clean {
            let rset = self.command("RSET").await?;
            if rset.code != 250 {
                self.clean = false;
            }
        }
        Ok(Probed { status, size_sent })
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
    config: RcptProbeConfig,
    pool: Pool<Session>,
    slots: Semaphore,
    cache: Arc<StatusCache>,
}

impl RcptProbe {
    /// A probe using the system clock for its cache.
    pub fn new(config: RcptProbeConfig) -> Result<Self, String> {
        Self::with_clock(config, Arc::new(SystemClock))
    }

    /// A probe whose cache reads time from `clock` (tests).
    pub fn with_clock(config: RcptProbeConfig, clock: Arc<dyn Clock>) -> Result<Self, String> {
        config.validate()?;
        Ok(Self {
            pool: Pool::new(config.max_idle, config.idle_timeout),
            slots: Semaphore::new(config.max_connections),
            cache: Arc::new(StatusCache::new(config.cache.clone(), clock)),
            config,
        })
    }

    /// Forgets every cached answer (on reload).
    pub fn clear_cache(&self) {
        self.cache.clear();
    }

    pub(crate) fn cache(&self) -> Arc<StatusCache> {
        Arc::clone(&self.cache)
    }

    fn fail(&self, what: impl std::fmt::Display) -> DirectoryError {
        DirectoryError::new(format!(
            "{} probe of {}: {what}",
            self.config.protocol.name(),
            self.config.address
        ))
    }

    async fn probe(&self, address: &str, size: Option<u64>) -> Result<Probed, DirectoryError> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| self.fail("probe closed"))?;
        let (pooled, stale) = self.pool.take();
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
                        server = %self.config.address,
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
                    self.config.protocol.name(),
                    self.config.address
                ),
                e,
            ),
            ProbeError::Protocol(message) => self.fail(message),
        }
    }

    fn release(&self, session: Session) {
        if session.clean {
            // A full pool hands the session back; dropping it says QUIT.
            drop(self.pool.put(session));
        }
    }
}

impl Drop for RcptProbe {
    fn drop(&mut self) {
        // Each idle session says QUIT as it is dropped.
        drop(self.pool.drain());
    }
}

#[async_trait]
impl RecipientDirectory for RcptProbe {
    async fn lookup(&self, query: &RecipientQuery<'_>) -> Result<RecipientStatus, DirectoryError> {
        let Some(parsed) = address::split(query.address) else {
            return Ok(RecipientStatus::NotHandled);
        };
        let key = format!("{}@{}", parsed.local, parsed.domain);
        if let Some(status) = self.cache.get(&key, query.declared_size) {
            tracing::trace!(event = "recipient_probe_cached", recipient = %key, ?status);
            return Ok(status);
        }
        let probed =
            tokio::time::timeout(self.config.timeout, self.probe(&key, query.declared_size))
                .await
                .map_err(|_| {
                    self.fail(format!(
                        "no answer within {}",
                        crate::duration::format(self.config.timeout)
                    ))
                })??;
        match &probed.status {
            Ok(status) => {
                tracing::debug!(event = "recipient_probed", recipient = %key, ?status);
                self.cache.put(&key, probed.size_sent, status);
            }
            Err(error) => {
                tracing::warn!(event = "recipient_probe_failed", recipient = %key, %error);
            }
        }
        probed.status.map_err(|e| self.fail(e))
    }
}

#[cfg(test)]
mod tests;
