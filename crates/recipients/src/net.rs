//! Sockets shared by the network backends: endpoints (TCP or unix), a
//! line reader with a length limit, and a bounded pool of idle connections.

use serde::{Deserialize, Serialize};
use std::{
    fmt::{self, Debug, Display, Formatter},
    io,
    path::PathBuf,
    str::FromStr,
    sync::Mutex,
    time::Duration,
};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader},
    net::{TcpStream, UnixStream},
    time::Instant,
};

/// Where a backend server listens.
///
/// Written as `unix:/path`, a bare absolute path (unix socket),
/// `inet:host:port` or `host:port` (TCP; IPv6 as `[::1]:24`).
#[derive(Clone, Debug, Eq, PartialEq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub enum Endpoint {
    /// A TCP address, `host:port`.
    Tcp(String),
    /// A unix-domain socket.
    Unix(PathBuf),
}

impl FromStr for Endpoint {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Some(path) = s.strip_prefix("unix:") {
            return if path.starts_with('/') {
                Ok(Self::Unix(path.into()))
            } else {
                Err(format!("unix socket path must be absolute: {s:?}"))
            };
        }
        if s.starts_with('/') {
            return Ok(Self::Unix(s.into()));
        }
        let hostport = s.strip_prefix("inet:").unwrap_or(s);
        match hostport.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                Ok(Self::Tcp(hostport.to_owned()))
            }
            _ => Err(format!(
                "invalid endpoint {s:?}: expected host:port, inet:host:port, unix:/path or /path"
            )),
        }
    }
}

impl TryFrom<String> for Endpoint {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Endpoint> for String {
    fn from(e: Endpoint) -> String {
        e.to_string()
    }
}

impl Display for Endpoint {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(hostport) => f.write_str(hostport),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
        }
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
            Endpoint::Tcp(hostport) => {
                let stream = TcpStream::connect(hostport.as_str()).await?;
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
    fn endpoint_syntax() {
        assert_eq!(
            "127.0.0.1:24".parse(),
            Ok(Endpoint::Tcp("127.0.0.1:24".into()))
        );
        assert_eq!(
            "inet:localhost:12340".parse(),
            Ok(Endpoint::Tcp("localhost:12340".into()))
        );
        assert_eq!("[::1]:24".parse(), Ok(Endpoint::Tcp("[::1]:24".into())));
        assert_eq!(
            "unix:/run/dovecot/lmtp".parse(),
            Ok(Endpoint::Unix("/run/dovecot/lmtp".into()))
        );
        assert_eq!(
            "/run/dovecot/lmtp".parse(),
            Ok(Endpoint::Unix("/run/dovecot/lmtp".into()))
        );
        for bad in [
            "",
            "localhost",
            "unix:relative",
            "host:port",
            ":24",
            "host:99999",
        ] {
            assert!(bad.parse::<Endpoint>().is_err(), "{bad:?}");
        }
        for e in ["127.0.0.1:24", "unix:/x/y"] {
            let parsed: Endpoint = e.parse().expect("valid");
            assert_eq!(parsed.to_string(), e);
        }
    }

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
