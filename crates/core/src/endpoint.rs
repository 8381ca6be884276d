//! Socket addresses as configuration files write them: the one parser for
//! every socket nobounce listens on or connects to.
//!
//! | written | meaning |
//! | --- | --- |
//! | `inet:127.0.0.1:8894`, `inet6:[::1]:8894`, `127.0.0.1:8894`, `[::1]:24`, `localhost:24` | TCP |
//! | `inet:8894@127.0.0.1` | TCP, Sendmail's order |
//! | `unix:/run/nobounce/milter.sock`, `local:/path`, `/path` | a unix-domain socket |
//!
//! A host name (`localhost`, `mail.example.org`) is kept as written and
//! resolved when connecting; a socket to listen on needs an IP address
//! ([`Endpoint::listen_addr`], where `localhost` means `127.0.0.1`). Unix
//! socket paths must be absolute.

use serde::{Serialize, Serializer};
use std::{
    error::Error,
    fmt::{self, Display, Formatter},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    str::FromStr,
};

/// A TCP or unix-domain socket address.
#[derive(Clone, Debug, Eq, Hash, PartialEq)]
pub enum Endpoint {
    /// TCP: a host (IP address or name) and a port.
    Tcp {
        /// An IP address or a host name, without brackets.
        host: String,
        /// The port.
        port: u16,
    },
    /// A unix-domain socket at an absolute path.
    Unix(PathBuf),
}

/// A socket address that cannot be parsed, or used as asked.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct EndpointError {
    text: String,
    why: &'static str,
}

impl Display for EndpointError {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "invalid socket {:?}: {}", self.text, self.why)
    }
}

impl Error for EndpointError {}

const EXPECTED: &str = "expected \"inet:HOST:PORT\", \"HOST:PORT\" or \"unix:/absolute/path\"";

impl Endpoint {
    /// A TCP endpoint at `addr`.
    pub fn tcp(addr: SocketAddr) -> Self {
        Self::Tcp {
            host: addr.ip().to_string(),
            port: addr.port(),
        }
    }

    /// The address to listen on: the host must be an IP address or
    /// `localhost`. `None` for a unix socket.
    pub fn listen_addr(&self) -> Result<Option<SocketAddr>, EndpointError> {
        match self {
            Self::Unix(_) => Ok(None),
            Self::Tcp { host, port } => ip_of(host)
                .map(|ip| Some(SocketAddr::new(ip, *port)))
                .ok_or_else(|| EndpointError {
                    text: self.to_string(),
                    why:
                        "a socket to listen on needs an IP address (or localhost), not a host name",
                }),
        }
    }

    /// The path of a unix socket.
    pub fn unix_path(&self) -> Option<&Path> {
        match self {
            Self::Unix(path) => Some(path),
            Self::Tcp { .. } => None,
        }
    }
}

fn ip_of(host: &str) -> Option<IpAddr> {
    if host.eq_ignore_ascii_case("localhost") {
        return Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    host.parse().ok()
}

fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && (host.parse::<IpAddr>().is_ok()
            || host.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            }))
}

impl FromStr for Endpoint {
    type Err = EndpointError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &'static str| EndpointError {
            text: s.to_owned(),
            why,
        };
        let text = s.trim();
        let path = text
            .strip_prefix("unix:")
            .or_else(|| text.strip_prefix("local:"))
            .or_else(|| text.starts_with('/').then_some(text));
        if let Some(path) = path {
            if !path.starts_with('/') {
                return Err(bad("a unix socket path must be absolute"));
            }
            if path.contains('\0') {
                return Err(bad("a path cannot hold a NUL byte"));
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        let rest = text
            .strip_prefix("inet:")
            .or_else(|| text.strip_prefix("inet6:"))
            .unwrap_or(text);
        let (host, port) = if let Some((port, host)) = rest.split_once('@') {
            // Sendmail: PORT@HOST.
            (host, port)
        } else if let Some(bracketed) = rest.strip_prefix('[') {
            let (host, port) = bracketed.split_once("]:").ok_or_else(|| bad(EXPECTED))?;
            (host, port)
        } else {
            rest.rsplit_once(':').ok_or_else(|| bad(EXPECTED))?
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port: u16 = port
            .parse()
            .map_err(|_| bad("the port must be a number 1-65535"))?;
        if port == 0 {
            return Err(bad("the port must be a number 1-65535"));
        }
        if !valid_host(host) {
            return Err(bad(EXPECTED));
        }
        Ok(Self::Tcp {
            host: host.to_owned(),
            port,
        })
    }
}

impl Display for Endpoint {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp { host, port } if host.contains(':') => write!(f, "inet:[{host}]:{port}"),
            Self::Tcp { host, port } => write!(f, "inet:{host}:{port}"),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl Serialize for Endpoint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_that_parse() {
        for (text, shown) in [
            ("inet:127.0.0.1:8894", "inet:127.0.0.1:8894"),
            ("inet:localhost:25", "inet:localhost:25"),
            ("inet:8894@127.0.0.1", "inet:127.0.0.1:8894"),
            ("inet6:[::1]:8894", "inet:[::1]:8894"),
            ("[::1]:24", "inet:[::1]:24"),
            ("127.0.0.1:24", "inet:127.0.0.1:24"),
            ("mail.example.org:24", "inet:mail.example.org:24"),
            ("local:/tmp/x.sock", "unix:/tmp/x.sock"),
            ("unix:/run/dovecot/lmtp", "unix:/run/dovecot/lmtp"),
            ("/run/dovecot/lmtp", "unix:/run/dovecot/lmtp"),
        ] {
            let e: Endpoint = text.parse().expect(text);
            assert_eq!(e.to_string(), shown, "{text}");
            assert_eq!(
                shown.parse::<Endpoint>().expect(shown),
                e,
                "{text} round trip"
            );
        }
    }

    #[test]
    fn forms_that_do_not() {
        for text in [
            "",
            "inet:",
            "unix:",
            "unix:relative",
            "inet:host",
            "8894",
            "host:port",
            ":24",
            "host:99999",
            "host:0",
            "a b:25",
            "tcp:1.2.3.4",
        ] {
            assert!(text.parse::<Endpoint>().is_err(), "{text:?}");
        }
    }

    #[test]
    fn listening_needs_an_ip() {
        let e: Endpoint = "inet:localhost:25".parse().unwrap();
        assert_eq!(e.listen_addr(), Ok(Some("127.0.0.1:25".parse().unwrap())));
        let e: Endpoint = "mail.example.org:25".parse().unwrap();
        assert!(e.listen_addr().is_err());
        let e: Endpoint = "unix:/x".parse().unwrap();
        assert_eq!(e.listen_addr(), Ok(None));
        assert_eq!(e.unix_path(), Some(Path::new("/x")));
    }
}
