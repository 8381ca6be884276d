//! Where the milter under test listens, and the byte stream to it.

use std::{
    fmt::{self, Display, Formatter},
    io,
    net::SocketAddr,
    path::PathBuf,
    str::FromStr,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, UnixStream},
};

/// The socket of the milter under test, in Postfix notation.
///
/// Accepted forms: `inet:HOST:PORT` (`HOST` an IP address, `[::1]` for IPv6,
/// or `localhost`), plain `HOST:PORT`, and `unix:/path/to/socket`.
///
/// TCP targets must be loopback addresses: this tool exists to measure a
/// milter on the same machine, and it refuses to send load anywhere else.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum Target {
    /// A TCP socket on a loopback address.
    Inet(SocketAddr),
    /// A UNIX domain socket.
    Unix(PathBuf),
}

/// Why a [`Target`] could not be parsed.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct ParseTargetError(String);

impl Display for ParseTargetError {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseTargetError {}

impl FromStr for Target {
    type Err = ParseTargetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(ParseTargetError("empty UNIX socket path".into()));
            }
            return Ok(Self::Unix(path.into()));
        }
        let rest = s
            .strip_prefix("inet:")
            .or_else(|| s.strip_prefix("inet6:"))
            .unwrap_or(s);
        let (host, port) = rest.rsplit_once(':').ok_or_else(|| {
            ParseTargetError(format!("{s:?}: expected inet:HOST:PORT or unix:PATH"))
        })?;
        let port: u16 = port
            .parse()
            .map_err(|_| ParseTargetError(format!("{s:?}: invalid port {port:?}")))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let ip = if host.eq_ignore_ascii_case("localhost") {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            host.parse::<std::net::IpAddr>().map_err(|_| {
                ParseTargetError(format!("{s:?}: host must be an IP address or localhost"))
            })?
        };
        if !ip.is_loopback() {
            return Err(ParseTargetError(format!(
                "{s:?}: only loopback addresses (127.0.0.0/8, ::1) may be targeted"
            )));
        }
        Ok(Self::Inet(SocketAddr::new(ip, port)))
    }
}

impl Display for Target {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Self::Inet(addr) => write!(f, "inet:{addr}"),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl From<SocketAddr> for Target {
    /// Wraps a socket address; the loopback rule is checked by
    /// [`Target::from_str`] and again when connecting.
    fn from(addr: SocketAddr) -> Self {
        Self::Inet(addr)
    }
}

/// A connected byte stream to the milter.
#[derive(Debug)]
pub(crate) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    /// Connects, with `TCP_NODELAY` set on TCP: every command batch is written
    /// with one `write`, and Nagle's algorithm would otherwise hold back a
    /// small segment until the milter's delayed ACK (about 40 ms).
    pub(crate) async fn connect(target: &Target) -> io::Result<Self> {
        match target {
            Target::Inet(addr) => {
                if !addr.ip().is_loopback() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "refusing to connect to a non-loopback address",
                    ));
                }
                let stream = TcpStream::connect(addr).await?;
                stream.set_nodelay(true)?;
                Ok(Self::Tcp(stream))
            }
            Target::Unix(path) => Ok(Self::Unix(UnixStream::connect(path).await?)),
        }
    }

    pub(crate) async fn read_buf(&mut self, buf: &mut bytes::BytesMut) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.read_buf(buf).await,
            Self::Unix(s) => s.read_buf(buf).await,
        }
    }

    pub(crate) async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Self::Tcp(s) => s.write_all(buf).await,
            Self::Unix(s) => s.write_all(buf).await,
        }
    }

    pub(crate) async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            Self::Tcp(s) => s.shutdown().await,
            Self::Unix(s) => s.shutdown().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_postfix_notation() {
        assert_eq!(
            "inet:127.0.0.1:8894".parse::<Target>(),
            Ok(Target::Inet("127.0.0.1:8894".parse().unwrap()))
        );
        assert_eq!(
            "inet:[::1]:25".parse::<Target>(),
            Ok(Target::Inet("[::1]:25".parse().unwrap()))
        );
        assert_eq!(
            "localhost:99".parse::<Target>(),
            Ok(Target::Inet("127.0.0.1:99".parse().unwrap()))
        );
        assert_eq!(
            "unix:/run/m.sock".parse::<Target>(),
            Ok(Target::Unix("/run/m.sock".into()))
        );
    }

    #[test]
    fn refuses_non_loopback_and_garbage() {
        assert!("inet:192.0.2.1:8894".parse::<Target>().is_err());
        assert!("inet:10.0.0.1:8894".parse::<Target>().is_err());
        assert!("inet:127.0.0.1".parse::<Target>().is_err());
        assert!("inet:mx.example:25".parse::<Target>().is_err());
        assert!("unix:".parse::<Target>().is_err());
    }
}
