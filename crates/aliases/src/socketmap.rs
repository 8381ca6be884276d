//! Postfix's socketmap protocol over the alias store, so that
//! `virtual_alias_maps = socketmap:inet:127.0.0.1:8895:aliases` resolves
//! every alias (active *and* retired) to its mailbox. A retired alias must
//! resolve, so that Postfix's `reject_unlisted_recipient` lets it through
//! to nobounce, which refuses it with `550 5.1.1` and logs why; an
//! address in an alias domain that is no alias at all is refused by
//! Postfix itself.
//!
//! The protocol (socketmap_table(5)): the client sends a request as a
//! netstring (`LEN:DATA,`) whose data is `NAME KEY`; the server answers
//! with one netstring: `OK DATA`, `NOTFOUND `, `TEMP REASON`,
//! `TIMEOUT REASON` or `PERM REASON`. Postfix keeps the connection open
//! for further requests.
//!
//! - [`parse_netstring`], [`netstring`], [`Reply`]: the wire format, pure.
//! - [`lookup`]: one request against the store: the whole decision.
//! - [`serve`]: the service on a [`SocketmapListener`].
//!
//! Only map name [`MAP_NAME`] is served (another name: `PERM`). Keys
//! outside the alias domains are `NOTFOUND` without asking the store
//! (Postfix asks about every recipient). A store that fails or is slow
//! answers `TEMP`, which Postfix turns into a temporary failure: mail is
//! retried, never refused for it.

use nobounce_core::alias::{in_domains, AliasStore};
use std::{
    fmt::{self, Display, Formatter},
    future::Future,
    io,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    sync::watch,
};
use tracing::{debug, info, warn};

/// The map name this service answers: `socketmap:…:aliases`.
///
/// ```
/// assert_eq!(nobounce_aliases::socketmap::MAP_NAME, "aliases");
/// ```
pub const MAP_NAME: &str = "aliases";

/// The longest request accepted (the netstring's data). A request is the
/// map name and one address, and Postfix limits addresses far below this;
/// anything longer is not Postfix, and reading it would let a client make
/// us buffer without bound.
///
/// ```
/// use nobounce_aliases::socketmap::{parse_netstring, MAX_REQUEST, NetstringError};
///
/// let header = format!("{}:", MAX_REQUEST + 1);
/// assert!(matches!(parse_netstring(header.as_bytes(), MAX_REQUEST), Err(NetstringError::TooLong(_))));
/// ```
pub const MAX_REQUEST: usize = 2048;

/// Postfix refuses replies longer than this (the data of the netstring).
const MAX_REPLY: usize = 100_000;

/// Why a netstring is malformed.
///
/// ```
/// use nobounce_aliases::socketmap::{parse_netstring, NetstringError};
///
/// assert_eq!(parse_netstring(b"x:abc,", 100), Err(NetstringError::BadLength));
/// assert_eq!(parse_netstring(b"3:abc;", 100), Err(NetstringError::NoComma));
/// ```
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum NetstringError {
    /// The length is not a decimal number followed by `:`.
    BadLength,
    /// The length is above the limit.
    TooLong(usize),
    /// The data is not followed by `,`.
    NoComma,
}

impl Display for NetstringError {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadLength => f.write_str("not a netstring: bad length"),
            Self::TooLong(n) => write!(f, "netstring of {n} bytes, more than {MAX_REQUEST}"),
            Self::NoComma => f.write_str("netstring without its closing ','"),
        }
    }
}

impl std::error::Error for NetstringError {}

/// Reads one netstring from the start of `buf`: `Ok(Some((data, used)))`
/// when it is complete (`used` bytes of `buf`), `Ok(None)` when more bytes
/// are needed, an error when it cannot be a netstring of at most `max`
/// bytes. Decides as early as it can: a length above `max` is refused
/// before its data arrives.
///
/// ```
/// use nobounce_aliases::socketmap::parse_netstring;
///
/// assert_eq!(parse_netstring(b"5:hello,6:", 100), Ok(Some((&b"hello"[..], 8))));
/// assert_eq!(parse_netstring(b"5:hel", 100), Ok(None));
/// assert_eq!(parse_netstring(b"0:,", 100), Ok(Some((&b""[..], 3))));
/// ```
pub fn parse_netstring(buf: &[u8], max: usize) -> Result<Option<(&[u8], usize)>, NetstringError> {
    let digits_max = max.to_string().len();
    let Some(colon) = buf.iter().position(|&b| b == b':') else {
        // No colon yet: fine while what came is a plausible length.
        if buf.len() > digits_max || !buf.iter().all(u8::is_ascii_digit) {
            return if buf.iter().all(u8::is_ascii_digit) {
                Err(NetstringError::TooLong(usize::MAX))
            } else {
                Err(NetstringError::BadLength)
            };
        }
        return Ok(None);
    };
    let digits = &buf[..colon];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(NetstringError::BadLength);
    }
    if digits.len() > digits_max {
        return Err(NetstringError::TooLong(usize::MAX));
    }
    let len: usize = std::str::from_utf8(digits)
        .ok()
        .and_then(|d| d.parse().ok())
        .ok_or(NetstringError::BadLength)?;
    if len > max {
        return Err(NetstringError::TooLong(len));
    }
    let start = colon + 1;
    let end = start + len;
    if buf.len() <= end {
        return Ok(None);
    }
    if buf[end] != b',' {
        return Err(NetstringError::NoComma);
    }
    Ok(Some((&buf[start..end], end + 1)))
}

/// `data` as a netstring.
///
/// ```
/// assert_eq!(nobounce_aliases::socketmap::netstring(b"OK me@example.org"), b"17:OK me@example.org,");
/// ```
pub fn netstring(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{}:", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.push(b',');
    out
}

/// A socketmap reply.
///
/// ```
/// use nobounce_aliases::socketmap::Reply;
///
/// assert_eq!(Reply::Found("me@example.org".into()).to_string(), "OK me@example.org");
/// assert_eq!(Reply::NotFound.to_string(), "NOTFOUND ");
/// assert_eq!(Reply::Temp("redis\ndown".into()).to_string(), "TEMP redis down");
/// ```
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum Reply {
    /// `OK DATA`: the key was found; here the mailbox.
    Found(String),
    /// `NOTFOUND `: no such key.
    NotFound,
    /// `TEMP REASON`: try again later (the store failed).
    Temp(String),
    /// `PERM REASON`: this request can never succeed (wrong map name).
    Perm(String),
}

impl Display for Reply {
    /// The reply's data, control characters made spaces, at most the
    /// 100 000 bytes Postfix accepts.
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let (word, text) = match self {
            Self::Found(d) => ("OK", d.as_str()),
            Self::NotFound => ("NOTFOUND", ""),
            Self::Temp(r) => ("TEMP", r.as_str()),
            Self::Perm(r) => ("PERM", r.as_str()),
        };
        let mut text: String = text
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let room = MAX_REPLY - word.len() - 1;
        if text.len() > room {
            let mut cut = room;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        write!(f, "{word} {text}")
    }
}

impl Reply {
    /// The reply as a netstring, ready to send.
    ///
    /// ```
    /// use nobounce_aliases::socketmap::Reply;
    ///
    /// assert_eq!(Reply::NotFound.to_netstring(), b"9:NOTFOUND ,");
    /// ```
    pub fn to_netstring(&self) -> Vec<u8> {
        netstring(self.to_string().as_bytes())
    }
}

/// A request that is not `NAME KEY`.
///
/// ```
/// use nobounce_aliases::socketmap::split_request;
///
/// assert_eq!(split_request(b"aliases a@b").unwrap(), ("aliases", "a@b"));
/// assert!(split_request(b"aliases").is_err());
/// ```
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct BadRequest(&'static str);

impl Display for BadRequest {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for BadRequest {}

/// Splits a request into its map name and key (UTF-8, at the first
/// space).
pub fn split_request(data: &[u8]) -> Result<(&str, &str), BadRequest> {
    let text =
        std::str::from_utf8(data).map_err(|_| BadRequest("socketmap request is not UTF-8"))?;
    let (name, key) = text
        .split_once(' ')
        .ok_or(BadRequest("socketmap request is not \"NAME KEY\""))?;
    if name.is_empty() || key.is_empty() {
        return Err(BadRequest("socketmap request with an empty name or key"));
    }
    Ok((name, key))
}

/// Answers one lookup of `key` in map `name`: an alias of `domains`
/// (active or retired) → `OK mailbox`; anything else `NOTFOUND`; a map
/// name other than [`MAP_NAME`] → `PERM`; a store error, or no answer
/// within `timeout`, → `TEMP`.
///
/// ```
/// # async fn demo(store: &dyn nobounce_core::alias::AliasStore) {
/// use nobounce_aliases::socketmap::{lookup, Reply};
/// use std::time::Duration;
///
/// let domains = vec!["alias.example.org".to_string()];
/// let reply = lookup(store, &domains, "aliases", "nobody@example.org", Duration::from_secs(5)).await;
/// assert_eq!(reply, Reply::NotFound, "not an alias domain: the store is not asked");
/// # }
/// ```
pub async fn lookup(
    store: &dyn AliasStore,
    domains: &[String],
    name: &str,
    key: &str,
    timeout: Duration,
) -> Reply {
    if name != MAP_NAME {
        return Reply::Perm(format!("nobounce serves the map {MAP_NAME:?} only"));
    }
    if !in_domains(key, domains) {
        return Reply::NotFound;
    }
    match tokio::time::timeout(timeout, store.get(key)).await {
        Ok(Ok(Some(alias))) => Reply::Found(alias.mailbox),
        Ok(Ok(None)) => Reply::NotFound,
        Ok(Err(e)) => Reply::Temp(format!("alias store: {e}")),
        Err(_) => Reply::Temp(format!(
            "alias store: no answer within {} ms",
            timeout.as_millis()
        )),
    }
}

/// Settings of the socketmap service.
///
/// ```
/// let o = nobounce_aliases::socketmap::SocketmapOptions::new(vec!["alias.example.org".into()]);
/// assert_eq!(o.max_connections, 100);
/// ```
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct SocketmapOptions {
    /// The alias domains: other keys are `NOTFOUND` at once.
    pub domains: Vec<String>,
    /// Connections served at once; more wait in the listen queue. Postfix
    /// opens one per process that looks up aliases (smtpd, cleanup,
    /// trivial-rewrite), and closes idle ones after 10 s.
    pub max_connections: usize,
    /// How long a connection may wait for its next request. Default 60 s:
    /// longer than Postfix's own idle limit.
    pub idle_timeout: Duration,
    /// How long one lookup may take before it is answered `TEMP`. Default
    /// 10 s, well below Postfix's socketmap timeout (100 s).
    pub lookup_timeout: Duration,
}

impl SocketmapOptions {
    /// The defaults for `domains`.
    pub fn new(domains: Vec<String>) -> Self {
        Self {
            domains,
            max_connections: 100,
            idle_timeout: Duration::from_secs(60),
            lookup_timeout: Duration::from_secs(10),
        }
    }
}

/// Where the socketmap service listens, bound: TCP
/// (`socketmap:inet:HOST:PORT:aliases`) or a unix socket
/// (`socketmap:unix:PATH:aliases`).
pub type SocketmapListener = nobounce_listen::Listener;

/// Whether the store is failing, to log an outage once rather than once per
/// lookup.
#[derive(Debug, Default)]
struct Health {
    failing: AtomicBool,
}

impl Health {
    fn record(&self, reply: &Reply) {
        match reply {
            Reply::Temp(why) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    warn!(
                        event = "socketmap_store_failed",
                        "socketmap: the alias store failed, answering TEMP until it is back: {why}"
                    );
                }
            }
            _ => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    info!(
                        event = "socketmap_store_back",
                        "socketmap: the alias store answers again"
                    );
                }
            }
        }
    }
}

/// Serves socketmap connections from `listener` until `shutdown` completes;
/// then idle connections are closed and lookups being answered finish.
///
/// ```no_run
/// # async fn demo(store: std::sync::Arc<dyn nobounce_core::alias::AliasStore>) -> std::io::Result<()> {
/// use nobounce_aliases::socketmap::{serve, SocketmapListener, SocketmapOptions};
///
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8895").await?;
/// let options = SocketmapOptions::new(vec!["alias.example.org".into()]);
/// serve(SocketmapListener::Tcp(listener), store, options, std::future::pending::<()>()).await
/// # }
/// ```
pub async fn serve(
    listener: SocketmapListener,
    store: Arc<dyn AliasStore>,
    options: SocketmapOptions,
    shutdown: impl Future,
) -> io::Result<()> {
    let options = Arc::new(options);
    let health = Arc::new(Health::default());
    nobounce_listen::serve(
        listener,
        options.max_connections,
        "socketmap",
        shutdown,
        move |stream, peer, stopped| {
            let conn = Conn {
                store: Arc::clone(&store),
                options: Arc::clone(&options),
                health: Arc::clone(&health),
                stopped,
            };
            conn.run(stream, peer)
        },
    )
    .await
}

/// One connection.
struct Conn {
    store: Arc<dyn AliasStore>,
    options: Arc<SocketmapOptions>,
    health: Arc<Health>,
    stopped: watch::Receiver<bool>,
}

impl Conn {
    /// Answers requests until the peer closes, idles too long, sends
    /// something malformed, or the service stops. The buffer never holds
    /// more than one request's worth past what was answered.
    async fn run<S: AsyncRead + AsyncWrite + Unpin>(mut self, mut stream: S, peer: String) {
        let mut buf: Vec<u8> = Vec::with_capacity(256);
        let mut chunk = [0u8; 4096];
        loop {
            // Answer every complete request already read (Postfix may
            // pipeline), then read more.
            loop {
                let (name, key, used) = match parse_netstring(&buf, MAX_REQUEST) {
                    Ok(Some((data, used))) => match split_request(data) {
                        Ok((name, key)) => (name.to_owned(), key.to_owned(), used),
                        Err(e) => return self.malformed(&peer, &e),
                    },
                    Ok(None) => break,
                    Err(e) => return self.malformed(&peer, &e),
                };
                buf.drain(..used);
                let reply = lookup(
                    self.store.as_ref(),
                    &self.options.domains,
                    &name,
                    &key,
                    self.options.lookup_timeout,
                )
                .await;
                self.health.record(&reply);
                debug!(peer, name, key, reply = %reply, "socketmap reply");
                if let Err(e) = stream.write_all(&reply.to_netstring()).await {
                    debug!(peer, "socketmap: cannot answer: {e}");
                    return;
                }
            }
            if *self.stopped.borrow() {
                return;
            }
            let read = tokio::select! {
                read = tokio::time::timeout(self.options.idle_timeout, stream.read(&mut chunk)) => read,
                _ = self.stopped.changed() => return,
            };
            match read {
                Ok(Ok(0)) => {
                    if !buf.is_empty() {
                        debug!(peer, "socketmap: connection closed inside a request");
                    }
                    return;
                }
                Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
                Ok(Err(e)) => {
                    debug!(peer, "socketmap connection failed: {e}");
                    return;
                }
                Err(_) => {
                    debug!(peer, "socketmap connection idle too long, closing it");
                    return;
                }
            }
        }
    }

    fn malformed(&self, peer: &str, why: &dyn std::error::Error) {
        warn!(
            event = "socketmap_bad_request",
            peer, "malformed socketmap request, closing the connection: {why}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netstrings_parse_strictly_and_early() {
        type Case<'a> = (&'a [u8], Option<(&'a [u8], usize)>);
        let ok: &[Case<'_>] = &[
            (b"", None),
            (b"1", None),
            (b"12:", None),
            (b"3:abc", None),
            (b"3:abc,", Some((b"abc", 6))),
            (b"3:abc,rest", Some((b"abc", 6))),
            (b"0:,", Some((b"", 3))),
            (b"03:abc,", Some((b"abc", 7))),
        ];
        for (input, want) in ok {
            assert_eq!(parse_netstring(input, 100), Ok(*want), "{input:?}");
        }
        let bad: &[(&[u8], NetstringError)] = &[
            (b":abc,", NetstringError::BadLength),
            (b"a", NetstringError::BadLength),
            (b"-3:abc,", NetstringError::BadLength),
            (b" 3:abc,", NetstringError::BadLength),
            (b"3:abcd", NetstringError::NoComma),
            (b"101:", NetstringError::TooLong(101)),
            (b"9999", NetstringError::TooLong(usize::MAX)),
            (
                b"99999999999999999999999:",
                NetstringError::TooLong(usize::MAX),
            ),
        ];
        for (input, want) in bad {
            assert_eq!(parse_netstring(input, 100), Err(*want), "{input:?}");
        }
    }

    #[test]
    fn replies_are_safe_and_bounded() {
        let long = Reply::Temp("é".repeat(MAX_REPLY));
        let s = long.to_string();
        assert!(s.len() <= MAX_REPLY, "{}", s.len());
        assert!(s.starts_with("TEMP é"));
        assert_eq!(Reply::Perm("a\r\nb".into()).to_netstring(), b"9:PERM a  b,");
    }

    #[test]
    fn requests_split_at_the_first_space() {
        assert_eq!(
            split_request(b"aliases a b@c").unwrap(),
            ("aliases", "a b@c")
        );
        for bad in [&b"aliases"[..], b" a@b", b"aliases ", b"\xff a@b"] {
            assert!(split_request(bad).is_err(), "{bad:?}");
        }
    }
}
