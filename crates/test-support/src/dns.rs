//! An authoritative DNS server for tests, running inside the test process.
//!
//! It listens on `127.0.0.1`, on
//! a free port, over UDP and TCP, and answers from a list of
//! [`TestRecord`]s that the test gives it and may change at any time. Point
//! a resolver at [`TestDnsServer::addr`], for instance with
//! `nobounce_dns::DnsConfig::with_nameservers`.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! use nobounce_test_support::dns::{TestDnsServer, TestRecord};
//!
//! let server = TestDnsServer::start([
//!     TestRecord::txt("example.test", "v=spf1 ip4:192.0.2.0/24 mx -all", 300),
//!     TestRecord::mx("example.test", 10, "mail.example.test", 300),
//!     TestRecord::a("mail.example.test", [192, 0, 2, 25].into(), 300),
//! ])
//! .await?;
//! let nameserver = server.addr(); // 127.0.0.1:<free port>
//! # let _ = nameserver;
//! // Change the zone while the test runs:
//! server.add_record(TestRecord::txt("other.test", "v=spf1 -all", 60));
//! # Ok(())
//! # }
//! ```
//!
//! # What it answers
//!
//! The server holds one flat list of records for any names; there are no
//! zone cuts and no delegation. For a query of name N and type T:
//!
//! - the records of N with type T are the answer (NOERROR);
//! - else, if N has a CNAME, the CNAME goes into the answer and the search
//!   goes on at its target (up to 8 steps);
//! - else the answer is empty: NOERROR ("NODATA") when the final name owns
//!   any record or is an ancestor of a name that does (an empty
//!   non-terminal), NXDOMAIN otherwise. A negative answer carries a
//!   synthetic SOA record (owner: the last two labels of the name) whose TTL
//!   and MINIMUM are the [negative TTL](TestDnsServer::set_negative_ttl), so
//!   that resolvers cache it for that long.
//!
//! Names compare case-insensitively and may be given with or without the
//! trailing dot. Answers have the AA (authoritative) and RA flags set, so
//! the server can stand in for a recursive resolver. Over UDP, an answer
//! larger than the client's EDNS buffer (512 bytes without EDNS) is sent
//! truncated (TC flag) and the client retries over TCP, as with a real
//! server.
//!
//! [`set_mode`](TestDnsServer::set_mode) makes the server drop every query
//! ([`ServerMode::Silent`], for timeouts) or answer SERVFAIL
//! ([`ServerMode::ServFail`]). [`queries`](TestDnsServer::queries) lists the
//! queries received, to check what a resolver asked or that it answered
//! from its cache.
//!
//! The server stops when the [`TestDnsServer`] is dropped. It must be
//! started inside a tokio runtime, and that runtime must keep running for
//! the server to answer.

use hickory_resolver::proto::{
    op::{Edns, Message, MessageType, OpCode, Query, ResponseCode},
    rr::{
        rdata::{A, AAAA, CNAME, MX, PTR, SOA, TXT},
        Name, RData, Record, RecordType,
    },
};
use std::{
    fmt, io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{Arc, Mutex, MutexGuard},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, UdpSocket},
    task::JoinHandle,
};

/// Negative TTL used until [`TestDnsServer::set_negative_ttl`] is called.
pub const DEFAULT_NEGATIVE_TTL: u32 = 300;

/// Longest CNAME chain the server follows.
const MAX_CNAME_CHAIN: usize = 8;

/// EDNS buffer size the server announces.
const SERVER_EDNS_PAYLOAD: u16 = 1232;

/// The data of a [`TestRecord`].
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum TestRData {
    /// An IPv4 address.
    A(Ipv4Addr),
    /// An IPv6 address.
    Aaaa(Ipv6Addr),
    /// A mail exchanger.
    Mx {
        /// Lower is preferred.
        preference: u16,
        /// Host name of the exchanger.
        exchange: String,
    },
    /// A text record: its character-strings, each at most 255 bytes, any
    /// bytes (not necessarily UTF-8).
    Txt(Vec<Vec<u8>>),
    /// A pointer (reverse DNS) to a host name.
    Ptr(String),
    /// An alias for another name.
    Cname(String),
}

impl TestRData {
    fn record_type(&self) -> RecordType {
        match self {
            Self::A(_) => RecordType::A,
            Self::Aaaa(_) => RecordType::AAAA,
            Self::Mx { .. } => RecordType::MX,
            Self::Txt(_) => RecordType::TXT,
            Self::Ptr(_) => RecordType::PTR,
            Self::Cname(_) => RecordType::CNAME,
        }
    }
}

/// One resource record served by [`TestDnsServer`].
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct TestRecord {
    /// Owner name, with or without the trailing dot (`example.test` or
    /// `example.test.`).
    pub name: String,
    /// Time to live, in seconds.
    pub ttl: u32,
    /// Type and data.
    pub data: TestRData,
}

impl TestRecord {
    /// Any record.
    pub fn new(name: &str, ttl: u32, data: TestRData) -> Self {
        Self {
            name: name.to_owned(),
            ttl,
            data,
        }
    }

    /// An A record.
    pub fn a(name: &str, ip: Ipv4Addr, ttl: u32) -> Self {
        Self::new(name, ttl, TestRData::A(ip))
    }

    /// An AAAA record.
    pub fn aaaa(name: &str, ip: Ipv6Addr, ttl: u32) -> Self {
        Self::new(name, ttl, TestRData::Aaaa(ip))
    }

    /// An MX record.
    pub fn mx(name: &str, preference: u16, exchange: &str, ttl: u32) -> Self {
        Self::new(
            name,
            ttl,
            TestRData::Mx {
                preference,
                exchange: exchange.to_owned(),
            },
        )
    }

    /// A TXT record holding `text`, cut into character-strings of 255 bytes
    /// as needed (an SPF record longer than 255 bytes is published so).
    pub fn txt(name: &str, text: &str, ttl: u32) -> Self {
        let strings = if text.is_empty() {
            vec![Vec::new()]
        } else {
            text.as_bytes().chunks(255).map(<[u8]>::to_vec).collect()
        };
        Self::new(name, ttl, TestRData::Txt(strings))
    }

    /// A TXT record made of exactly these character-strings (each at most
    /// 255 bytes; longer ones make the server answer SERVFAIL).
    pub fn txt_strings<S: Into<Vec<u8>>>(
        name: &str,
        strings: impl IntoIterator<Item = S>,
        ttl: u32,
    ) -> Self {
        Self::new(
            name,
            ttl,
            TestRData::Txt(strings.into_iter().map(Into::into).collect()),
        )
    }

    /// A PTR record for `ip`, owned by its reverse name
    /// (`4.3.2.1.in-addr.arpa.` for `1.2.3.4`, nibbles under `ip6.arpa.`).
    pub fn ptr(ip: IpAddr, target: &str, ttl: u32) -> Self {
        Self::new(
            &Name::from(ip).to_ascii(),
            ttl,
            TestRData::Ptr(target.to_owned()),
        )
    }

    /// A CNAME record: `name` is an alias of `target`.
    pub fn cname(name: &str, target: &str, ttl: u32) -> Self {
        Self::new(name, ttl, TestRData::Cname(target.to_owned()))
    }
}

/// How the server treats queries.
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub enum ServerMode {
    /// Answer from the records (the default).
    #[default]
    Answer,
    /// Drop every query, UDP or TCP, without answering: the client times
    /// out. Queries are still logged.
    Silent,
    /// Answer every query with SERVFAIL.
    ServFail,
}

/// A query the server received.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct LoggedQuery {
    /// The queried name, lowercase, with the trailing dot.
    pub name: String,
    /// The queried type, as in zone files (`A`, `TXT`, ...).
    pub record_type: String,
    /// Whether it came over TCP (else UDP).
    pub tcp: bool,
}

#[derive(Debug)]
struct State {
    records: Vec<TestRecord>,
    mode: ServerMode,
    /// Names at or below these are never answered, whatever the mode.
    silent_zones: Vec<String>,
    negative_ttl: u32,
    queries: Vec<LoggedQuery>,
}

type Shared = Arc<Mutex<State>>;

fn lock(state: &Shared) -> MutexGuard<'_, State> {
    // A test that panicked while holding the lock leaves consistent data.
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running test DNS server; see the [module docs](self).
///
/// Stops serving when dropped.
pub struct TestDnsServer {
    addr: SocketAddr,
    // std Mutex: held only to read or change the records, never across await.
    state: Shared,
    tasks: Vec<JoinHandle<()>>,
}

impl fmt::Debug for TestDnsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestDnsServer")
            .field("addr", &self.addr)
            .field("state", &*lock(&self.state))
            .finish_non_exhaustive()
    }
}

impl TestDnsServer {
    /// Starts a server on `127.0.0.1`, UDP and TCP on the same free port,
    /// serving `records`.
    ///
    /// # Errors
    ///
    /// When no port free for both UDP and TCP could be bound.
    pub async fn start(records: impl IntoIterator<Item = TestRecord>) -> io::Result<Self> {
        let (udp, tcp) = bind_pair().await?;
        let addr = udp.local_addr()?;
        let state = Arc::new(Mutex::new(State {
            records: records.into_iter().collect(),
            mode: ServerMode::Answer,
            silent_zones: Vec::new(),
            negative_ttl: DEFAULT_NEGATIVE_TTL,
            queries: Vec::new(),
        }));
        let tasks = vec![
            tokio::spawn(serve_udp(udp, state.clone())),
            tokio::spawn(serve_tcp(tcp, state.clone())),
        ];
        Ok(Self { addr, state, tasks })
    }

    /// Address the server listens on (`127.0.0.1:port`), UDP and TCP.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces all records.
    pub fn set_records(&self, records: impl IntoIterator<Item = TestRecord>) {
        lock(&self.state).records = records.into_iter().collect();
    }

    /// Adds a record (after those of the same name and type).
    pub fn add_record(&self, record: TestRecord) {
        lock(&self.state).records.push(record);
    }

    /// Keeps only the records for which `keep` returns true.
    pub fn retain_records(&self, keep: impl FnMut(&TestRecord) -> bool) {
        lock(&self.state).records.retain(keep);
    }

    /// Removes every record owned by `name` (any type).
    pub fn remove_name(&self, name: &str) {
        let name = normalize(name);
        self.retain_records(|r| normalize(&r.name) != name);
    }

    /// A copy of the current records.
    pub fn records(&self) -> Vec<TestRecord> {
        lock(&self.state).records.clone()
    }

    /// Sets how queries are treated from now on.
    pub fn set_mode(&self, mode: ServerMode) {
        lock(&self.state).mode = mode;
    }

    /// Drops every query for `zone` and the names below it, without an
    /// answer (the client times out), while the rest is answered as the
    /// mode says: one list server that does not answer.
    pub fn silence_zone(&self, zone: &str) {
        lock(&self.state).silent_zones.push(normalize(zone));
    }

    /// Shorthand for [`set_mode`](Self::set_mode) with
    /// [`ServerMode::Silent`] (`true`) or [`ServerMode::Answer`] (`false`).
    pub fn set_silent(&self, silent: bool) {
        self.set_mode(if silent {
            ServerMode::Silent
        } else {
            ServerMode::Answer
        });
    }

    /// Sets the TTL of negative answers (NXDOMAIN, NODATA): the TTL and the
    /// MINIMUM field of the SOA record sent with them (RFC 2308).
    /// Default [`DEFAULT_NEGATIVE_TTL`].
    pub fn set_negative_ttl(&self, ttl: u32) {
        lock(&self.state).negative_ttl = ttl;
    }

    /// The queries received so far, oldest first (also those dropped in
    /// silent mode).
    pub fn queries(&self) -> Vec<LoggedQuery> {
        lock(&self.state).queries.clone()
    }

    /// How many queries for `name` (with or without trailing dot, any case)
    /// and type `record_type` (`"TXT"`, ...) were received.
    pub fn query_count(&self, name: &str, record_type: &str) -> usize {
        let name = normalize(name);
        lock(&self.state)
            .queries
            .iter()
            .filter(|q| q.name == name && q.record_type.eq_ignore_ascii_case(record_type))
            .count()
    }

    /// Forgets the queries received so far.
    pub fn clear_queries(&self) {
        lock(&self.state).queries.clear();
    }
}

impl Drop for TestDnsServer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Binds UDP on a free port of 127.0.0.1 and TCP on the same port.
async fn bind_pair() -> io::Result<(UdpSocket, TcpListener)> {
    let mut last_error = None;
    for _ in 0..20 {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = udp.local_addr()?;
        match TcpListener::bind(addr).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| io::Error::other("no free port")))
}

async fn serve_udp(socket: UdpSocket, state: Shared) {
    let mut buf = vec![0u8; 65535];
    loop {
        let Ok((len, peer)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        if let Some(reply) = handle(&buf[..len], &state, false) {
            // A lost reply is what UDP allows; the client retries.
            let _ = socket.send_to(&reply, peer).await;
        }
    }
}

async fn serve_tcp(listener: TcpListener, state: Shared) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(serve_tcp_connection(stream, state.clone()));
    }
}

async fn serve_tcp_connection(mut stream: TcpStream, state: Shared) {
    loop {
        let Ok(len) = stream.read_u16().await else {
            return;
        };
        let mut buf = vec![0u8; usize::from(len)];
        if stream.read_exact(&mut buf).await.is_err() {
            return;
        }
        if let Some(reply) = handle(&buf, &state, true) {
            let Ok(reply_len) = u16::try_from(reply.len()) else {
                return;
            };
            if stream.write_u16(reply_len).await.is_err() || stream.write_all(&reply).await.is_err()
            {
                return;
            }
        }
    }
}

/// Lowercase, with the trailing dot.
fn normalize(name: &str) -> String {
    let mut n = name.to_ascii_lowercase();
    if !n.ends_with('.') {
        n.push('.');
    }
    n
}

/// The reply to one query message, encoded; `None` to send nothing.
fn handle(bytes: &[u8], state: &Shared, tcp: bool) -> Option<Vec<u8>> {
    let request = Message::from_vec(bytes).ok()?;
    if request.metadata.message_type != MessageType::Query {
        return None;
    }
    let query = request.queries.first().cloned();

    let mut reply = Message::response(request.metadata.id, request.metadata.op_code);
    reply.metadata.recursion_desired = request.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    if request.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(SERVER_EDNS_PAYLOAD);
        reply.set_edns(edns);
    }

    match (&query, request.queries.len(), request.metadata.op_code) {
        (Some(query), 1, OpCode::Query) => {
            reply.add_query(query.clone());
            let state = &mut *lock(state);
            state.queries.push(LoggedQuery {
                name: normalize(&query.name().to_ascii()),
                record_type: query.query_type().to_string(),
                tcp,
            });
            let name = normalize(&query.name().to_ascii());
            if state
                .silent_zones
                .iter()
                .any(|z| name == *z || name.ends_with(&format!(".{z}")))
            {
                return None;
            }
            match state.mode {
                ServerMode::Silent => return None,
                ServerMode::ServFail => reply.metadata.response_code = ResponseCode::ServFail,
                ServerMode::Answer => {
                    if resolve(query, state, &mut reply).is_err() {
                        reply.answers.clear();
                        reply.authorities.clear();
                        reply.metadata.response_code = ResponseCode::ServFail;
                    }
                }
            }
        }
        _ => {
            reply.add_queries(request.queries.iter().cloned());
            reply.metadata.response_code = ResponseCode::FormErr;
        }
    }

    let encoded = reply.to_vec().ok()?;
    if !tcp && encoded.len() > usize::from(request.max_payload()) {
        let mut truncated = reply.truncate();
        truncated.metadata.id = request.metadata.id;
        return truncated.to_vec().ok();
    }
    Some(encoded)
}

/// A record data that a [`TestRecord`] data can't be encoded into.
#[derive(Debug)]
struct BadRecord;

fn parse_name(name: &str) -> Result<Name, BadRecord> {
    let mut n = Name::from_ascii(name).map_err(|_| BadRecord)?;
    n.set_fqdn(true);
    Ok(n)
}

fn to_record(owner: &Name, record: &TestRecord) -> Result<Record, BadRecord> {
    let data = match &record.data {
        TestRData::A(ip) => RData::A(A(*ip)),
        TestRData::Aaaa(ip) => RData::AAAA(AAAA(*ip)),
        TestRData::Mx {
            preference,
            exchange,
        } => RData::MX(MX::new(*preference, parse_name(exchange)?)),
        TestRData::Txt(strings) => {
            if strings.iter().any(|s| s.len() > 255) {
                return Err(BadRecord);
            }
            RData::TXT(TXT::from_bytes(strings.iter().map(Vec::as_slice).collect()))
        }
        TestRData::Ptr(target) => RData::PTR(PTR(parse_name(target)?)),
        TestRData::Cname(target) => RData::CNAME(CNAME(parse_name(target)?)),
    };
    Ok(Record::from_rdata(owner.clone(), record.ttl, data))
}

/// Fills in the answer to `query` from the records (see module docs).
fn resolve(query: &Query, state: &State, reply: &mut Message) -> Result<(), BadRecord> {
    reply.metadata.authoritative = true;
    let qtype = query.query_type();
    let mut owner = query.name().clone();
    let mut current = normalize(&owner.to_ascii());

    for _ in 0..=MAX_CNAME_CHAIN {
        let at_name = || {
            state
                .records
                .iter()
                .filter(|r| normalize(&r.name) == current)
        };
        let mut found = false;
        for record in at_name().filter(|r| r.data.record_type() == qtype) {
            reply.add_answer(to_record(&owner, record)?);
            found = true;
        }
        if found {
            return Ok(());
        }
        let cname = at_name().find(|r| matches!(r.data, TestRData::Cname(_)));
        match cname {
            Some(
                record @ TestRecord {
                    data: TestRData::Cname(target),
                    ..
                },
            ) if qtype != RecordType::ANY => {
                reply.add_answer(to_record(&owner, record)?);
                owner = parse_name(target)?;
                current = normalize(target);
            }
            _ => break,
        }
    }

    // Negative answer: NODATA if the name exists, else NXDOMAIN.
    let suffix = format!(".{current}");
    let exists = state.records.iter().any(|r| {
        let n = normalize(&r.name);
        n == current || n.ends_with(&suffix)
    });
    if !exists {
        reply.metadata.response_code = ResponseCode::NXDomain;
    }
    let labels: Vec<&str> = current.trim_end_matches('.').split('.').collect();
    let apex = labels[labels.len().saturating_sub(2)..].join(".");
    let apex = parse_name(if apex.is_empty() { "." } else { &apex })?;
    let soa = SOA::new(
        parse_name("ns.invalid")?,
        parse_name("hostmaster.invalid")?,
        1,
        3600,
        600,
        86400,
        state.negative_ttl,
    );
    reply.add_authority(Record::from_rdata(
        apex,
        state.negative_ttl,
        RData::SOA(soa),
    ));
    Ok(())
}
