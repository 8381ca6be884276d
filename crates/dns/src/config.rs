//! Resolver settings and the error of building a resolver.

use std::{fmt, net::SocketAddr, time::Duration};

/// How [`HickoryLookup`](crate::HickoryLookup) resolves names.
///
/// A plain struct; the binary's configuration layer fills it in.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct DnsConfig {
    /// Name servers (recursive resolvers) to ask, over UDP and, for
    /// truncated answers, TCP. Exactly these are used, without search
    /// domains or `/etc/hosts`.
    ///
    /// Empty (the default): the name servers and options of the system's
    /// `/etc/resolv.conf`; `timeout`, `attempts` and `cache_size` below still
    /// replace the values found there.
    pub nameservers: Vec<SocketAddr>,
    /// How long one try of a query may take, over all name servers.
    /// Default 5 s. Must not be zero.
    pub timeout: Duration,
    /// How many times a query is tried, the first try included, before the
    /// lookup fails (with a timeout when the tries timed out). A lookup can
    /// thus take up to `attempts × timeout`. Default 2. Must not be zero.
    pub attempts: usize,
    /// How many answers hickory's cache holds (each kept for its TTL).
    /// Default 8192. Zero turns the cache off.
    pub cache_size: u64,
}

impl DnsConfig {
    /// Default per-try timeout.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
    /// Default number of tries.
    pub const DEFAULT_ATTEMPTS: usize = 2;
    /// Default number of cached answers.
    pub const DEFAULT_CACHE_SIZE: u64 = 8192;

    /// The defaults, asking exactly `nameservers`.
    pub fn with_nameservers(nameservers: Vec<SocketAddr>) -> Self {
        Self {
            nameservers,
            ..Self::default()
        }
    }
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            nameservers: Vec::new(),
            timeout: Self::DEFAULT_TIMEOUT,
            attempts: Self::DEFAULT_ATTEMPTS,
            cache_size: Self::DEFAULT_CACHE_SIZE,
        }
    }
}

/// The resolver could not be built.
#[derive(Debug)]
pub enum Error {
    /// A setting of [`DnsConfig`] is out of range.
    InvalidConfig(&'static str),
    /// The system resolver configuration (`/etc/resolv.conf`) could not be
    /// read, or hickory refused the configuration.
    Resolver(Box<dyn std::error::Error + Send + Sync>),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidConfig(what) => write!(f, "invalid DNS configuration: {what}"),
            Self::Resolver(e) => write!(f, "cannot set up the DNS resolver: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::InvalidConfig(_) => None,
            Self::Resolver(e) => Some(&**e),
        }
    }
}
