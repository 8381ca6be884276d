//! What the network backends (the RCPT probe, quota-status) share: their
//! server settings, a line reader with a length limit, a bounded pool of
//! idle connections, and the lookup path through the answer cache.

use crate::{
    address,
    cache::{CacheConfig, StatusCache},
};
use nobounce_core::{
    clock::serialize_duration, Clock, DirectoryError, Endpoint, RecipientQuery, RecipientStatus,
};
use serde::Serialize;
use std::{
    fmt::{Debug, Display},
    future::Future,
    io,
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader},
    net::{TcpStream, UnixStream},
    time::Instant,
};

/// The settings every network backend has (`[recipients.backends.NAME]`
/// of type `rcpt_probe` or `quota_status`).
#[derive(Clone, Debug, Eq, PartialEq, Serialize)]
pub struct ServerSettings {
    /// Where the server listens: `"127.0.0.1:24"`, `"inet:host:port"`,
    /// `"unix:/path"` or `"/path"`. Required; no default.
    pub address: Endpoint,
    /// Deadline of one lookup, from waiting for a connection slot to the
    /// answer. Default: 5 s.
    #[serde(serialize_with = "serialize_duration")]
    pub timeout: Duration,
    /// Most lookups in flight at once, each on its own connection; further
    /// lookups wait for a slot (within their `timeout`). Default: `4`.
    pub max_connections: usize,
    /// Most idle connections kept for reuse; `0` closes each after use.
    /// Default: `2`.
    pub max_idle: usize,
    /// An idle connection older than this is closed rather than reused
    /// (servers drop idle clients: Dovecot after 5 minutes). Default: 30 s.
    #[serde(serialize_with = "serialize_duration")]
    pub idle_timeout: Duration,
    /// Answer cache. Default: see [`CacheConfig`].
    pub cache: CacheConfig,
}

impl ServerSettings {
    /// The defaults, for a server at `address`.
    pub fn new(address: Endpoint) -> Self {
        Self {
            address,
            timeout: Duration::from_secs(5),
            max_connections: 4,
            max_idle: 2,
            idle_timeout: Duration::from_secs(30),
            cache: CacheConfig::default(),
        }
    }
}

/// What [`PooledBackend::lookup`] asks the server, once per cache miss:
/// the status, and the message size the answer holds for (see
/// [`StatusCache::put`]).
pub(crate) type Asked = (Result<RecipientStatus, DirectoryError>, Option<u64>);

/// A backend's connection pool, connection slots and answer cache.
#[derive(Debug)]
pub(crate) struct PooledBackend<C> {
    pub(crate) settings: ServerSettings,
    pub(crate) pool: Pool<C>,
    slots: Semaphore,
    cache: Arc<StatusCache>,
}

impl<C> PooledBackend<C> {
    pub(crate) fn new(settings: ServerSettings, clock: Arc<dyn Clock>) -> Self {
        Self {
            pool: Pool::new(settings.max_idle, settings.idle_timeout),
            // The configuration builder refuses 0; an embedder's 0 is 1.
            slots: Semaphore::new(settings.max_connections.max(1)),
            cache: Arc::new(StatusCache::new(settings.cache.clone(), clock)),
            settings,
        }
    }

    #[cfg(test)]
    pub(crate) fn cache(&self) -> Arc<StatusCache> {
        Arc::clone(&self.cache)
    }

    /// A connection slot (waits while all are in use).
    pub(crate) async fn slot(&self) -> Result<SemaphorePermit<'_>, DirectoryError> {
        self.slots
            .acquire()
            .await
            .map_err(|_| DirectoryError::new(format!("client of {} closed", self.settings.address)))
    }

    /// Looks `query` up: `NotHandled` for an address no server can judge,
    /// else the cached answer, else `ask(address)` within the timeout.
    /// `what` names the backend in errors (`"LMTP probe"`).
    pub(crate) async fn lookup<'a, F, Fut>(
        &'a self,
        query: &RecipientQuery<'_>,
        what: impl Display,
        ask: F,
    ) -> Result<RecipientStatus, DirectoryError>
    where
        F: FnOnce(String) -> Fut,
        Fut: Future<Output = Result<Asked, DirectoryError>> + 'a,
    {
        let Some(parsed) = address::split(query.address) else {
            return Ok(RecipientStatus::NotHandled);
        };
        let key = format!("{}@{}", parsed.local, parsed.domain);
        if let Some(status) = self.cache.get(&key, query.declared_size) {
            tracing::trace!(event = "recipient_cached", recipient = %key, ?status);
            return Ok(status);
        }
        let (status, covers) = tokio::time::timeout(self.settings.timeout, ask(key.clone()))
            .await
            .map_err(|_| {
                DirectoryError::new(format!(
                    "{what} of {}: no answer within {}",
                    self.settings.address,
                    humantime::format_duration(self.settings.timeout)
                ))
            })??;
        match &status {
            Ok(status) => {
                tracing::debug!(event = "recipient_asked", backend = %what, recipient = %key, ?status);
                self.cache.put(&key, covers, status);
            }
            Err(error) => {
                tracing::warn!(event = "recipient_lookup_failed", backend = %what, recipient = %key, %error);
            }
        }
        status
    }
}

/// A byte stream of either kind.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send + Sync + Debug {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync + Debug> Io for T {}

/// A connected line-oriented stream.
#[derive(Debug)]
pub(crate) struct LineConn {
    io: BufReader<Box<dyn Io>>,
}

impl LineConn {
    pub(crate) async fn connect(endpoint: &Endpoint) -> io::Result<Self> {
        let io: Box<dyn Io> = match endpoint {
            Endpoint::Tcp { host, port } => {
                let stream = TcpStream::connect((host.as_str(), *port)).await?;
                stream.set_nodelay(true)?;
                Box::new(stream)
            }
            Endpoint::Unix(path) => Box::new(UnixStream::connect(path).await?),
        };
        Ok(Self {
            io: BufReader::new(io),
        })
    }

    /// Reads one line without its line ending. EOF is an error
    /// (`UnexpectedEof`); so is a line longer than `max` bytes.
    pub(crate) async fn read_line(&mut self, max: usize) -> io::Result<String> {
        let mut line = Vec::new();
        loop {
            let buf = self.io.fill_buf().await?;
            if buf.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed by the server",
                ));
            }
            let (chunk, done) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (&buf[..=i], true),
                None => (buf, false),
            };
            if line.len() + chunk.len() > max + 2 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("reply line longer than {max} bytes"),
                ));
            }
            line.extend_from_slice(chunk);
            let n = chunk.len();
            self.io.consume(n);
            if done {
                break;
            }
        }
        while matches!(line.last(), Some(b'\n' | b'\r')) {
            line.pop();
        }
        String::from_utf8(line)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "reply is not valid UTF-8"))
    }

    pub(crate) async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        let io = self.io.get_mut();
        io.write_all(bytes).await?;
        io.flush().await
    }

    /// Whether the server sent something unsolicited (or closed): such a
    /// connection must not be reused.
    pub(crate) fn has_buffered_input(&self) -> bool {
        !self.io.buffer().is_empty()
    }
}

/// A bounded stack of idle connections.
#[derive(Debug)]
pub(crate) struct Pool<C> {
    // A std Mutex is right: push/pop on a Vec, never held across an await.
    idle: Mutex<Vec<(C, Instant)>>,
    max_idle: usize,
    idle_timeout: Duration,
}

impl<C> Pool<C> {
    pub(crate) fn new(max_idle: usize, idle_timeout: Duration) -> Self {
        Self {
            idle: Mutex::new(Vec::new()),
            max_idle,
            idle_timeout,
        }
    }

    /// The most recently used idle connection that is still fresh, and the
    /// stale ones, which the caller should close.
    pub(crate) fn take(&self) -> (Option<C>, Vec<C>) {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let mut stale = Vec::new();
        let mut i = 0;
        while i < idle.len() {
            if now.duration_since(idle[i].1) >= self.idle_timeout {
                stale.push(idle.remove(i).0);
            } else {
                i += 1;
            }
        }
        (idle.pop().map(|(c, _)| c), stale)
    }

    /// Returns a connection; gives it back when the pool is full.
    pub(crate) fn put(&self, conn: C) -> Option<C> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() >= self.max_idle {
            return Some(conn);
        }
        idle.push((conn, Instant::now()));
        None
    }

    /// Empties the pool.
    pub(crate) fn drain(&self) -> Vec<C> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.drain(..).map(|(c, _)| c).collect()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_is_bounded() {
        let pool = Pool::new(2, Duration::from_secs(60));
        assert_eq!(pool.put(1), None);
        assert_eq!(pool.put(2), None);
        assert_eq!(pool.put(3), Some(3));
        assert_eq!(pool.take(), (Some(2), vec![]));
        assert_eq!(pool.drain(), vec![1]);
        assert_eq!(pool.take(), (None, vec![]));
    }

    #[test]
    fn pool_hands_back_stale_connections() {
        let pool = Pool::new(2, Duration::ZERO);
        assert_eq!(pool.put(1), None);
        assert_eq!(pool.take(), (None, vec![1]));
    }
}
