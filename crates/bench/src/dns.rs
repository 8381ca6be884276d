//! `bench-dns`: the DNS zone a load run needs, on loopback.
//!
//! [`BenchDns`] serves, from nobounce-dns's in-process
//! [`TestDnsServer`], one SPF TXT record per sender domain the load
//! generator uses (`d{k}.bench.test`, `k` in `1..=domains`, see
//! [`Workload`](crate::Workload)) and one for the HELO name, each
//! authorising every client address the generator draws from
//! ([`client_ip`](crate::workload::client_ip)): the SPF result is `pass`.
//!
//! With a [`delay`](BenchDnsConfig::delay) the server sits behind a small
//! forwarder (UDP and TCP on its own loopback port) that holds every query
//! for that long before passing it on, so that a cache miss costs what a
//! round trip to a real resolver costs. Queries are counted either way
//! ([`BenchDns::queries`]), which tells how many lookups a run did not
//! answer from a cache.

use nobounce_test_support::dns::{TestDnsServer, TestRecord};
use std::{
    io,
    net::{Ipv4Addr, SocketAddr},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, UdpSocket},
    task::JoinHandle,
};
use tracing::debug;

/// The SPF record of every bench domain: all ranges
/// [`client_ip`](crate::workload::client_ip) draws from, then `-all`.
pub const BENCH_SPF: &str =
    "v=spf1 ip4:192.0.2.0/24 ip4:198.51.100.0/24 ip4:203.0.113.0/24 ip4:198.18.0.0/15 -all";

/// Sender domain `k` of the load generator (`k` in `1..=domains`).
pub fn sender_domain(k: u32) -> String {
    format!("d{k}.bench.test")
}

/// What [`BenchDns`] serves and how.
#[derive(Clone, Debug)]
pub struct BenchDnsConfig {
    /// Sender domains `d1.bench.test ..= d{domains}.bench.test`. Default 1000.
    pub domains: u32,
    /// TTL of every record, seconds (negative answers too). Default 3600.
    pub ttl: u32,
    /// The TXT record of each domain. Default [`BENCH_SPF`].
    pub spf: String,
    /// HELO name that gets the same record (`None`: no record, SPF `none`
    /// for HELO). Default `client.bench.test`, the generator's default.
    pub helo: Option<String>,
    /// Time every query is held before it is answered. Default zero (no
    /// forwarder, the test server answers directly).
    pub delay: Duration,
    /// Address of the forwarder (UDP and TCP). Port 0 picks a free port;
    /// must be loopback. Only used with a delay, or with a fixed port.
    /// Default `127.0.0.1:0`.
    pub listen: SocketAddr,
}

impl Default for BenchDnsConfig {
    fn default() -> Self {
        Self {
            domains: 1000,
            ttl: 3600,
            spf: BENCH_SPF.to_owned(),
            helo: Some("client.bench.test".to_owned()),
            delay: Duration::ZERO,
            listen: (Ipv4Addr::LOCALHOST, 0).into(),
        }
    }
}

/// A running bench DNS server; stops when dropped.
#[derive(Debug)]
pub struct BenchDns {
    server: Arc<TestDnsServer>,
    addr: SocketAddr,
    /// Queries dropped from the test server's log so far.
    drained: Arc<AtomicU64>,
    /// Queries the forwarder passed on, if there is one.
    forwarded: Option<Arc<AtomicU64>>,
    tasks: Vec<JoinHandle<()>>,
}

impl BenchDns {
    /// Starts the server (inside a tokio runtime).
    ///
    /// # Errors
    ///
    /// When `listen` is not loopback or a socket cannot be bound.
    pub async fn start(config: &BenchDnsConfig) -> io::Result<Self> {
        if !config.listen.ip().is_loopback() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a loopback address", config.listen),
            ));
        }
        let records = (1..=config.domains)
            .map(|k| TestRecord::txt(&sender_domain(k), &config.spf, config.ttl))
            .chain(
                config
                    .helo
                    .iter()
                    .map(|h| TestRecord::txt(h, &config.spf, config.ttl)),
            );
        let server = Arc::new(TestDnsServer::start(records).await?);
        server.set_negative_ttl(config.ttl);
        let inner = server.addr();
        let drained = Arc::new(AtomicU64::new(0));
        let drain = tokio::spawn(drain_log(Arc::clone(&server), Arc::clone(&drained)));

        if config.delay.is_zero() && config.listen.port() == 0 {
            return Ok(Self {
                server,
                addr: inner,
                drained,
                forwarded: None,
                tasks: vec![drain],
            });
        }
        let (udp, tcp) = bind_pair(config.listen).await?;
        let udp = Arc::new(udp);
        let addr = udp.local_addr()?;
        let forwarded = Arc::new(AtomicU64::new(0));
        let tasks = vec![
            drain,
            tokio::spawn(forward_udp(
                udp,
                inner,
                config.delay,
                Arc::clone(&forwarded),
            )),
            tokio::spawn(forward_tcp(
                tcp,
                inner,
                config.delay,
                Arc::clone(&forwarded),
            )),
        ];
        Ok(Self {
            server,
            addr,
            drained,
            forwarded: Some(forwarded),
            tasks,
        })
    }

    /// Where to send queries (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Queries received so far: those the forwarder passed on, or, without
    /// one, those the test server logged (a query logged at the very moment
    /// the log is trimmed may be missed).
    pub fn queries(&self) -> u64 {
        match &self.forwarded {
            Some(n) => n.load(Ordering::Relaxed),
            None => self.drained.load(Ordering::Relaxed) + self.server.queries().len() as u64,
        }
    }
}

/// How often the test server's query log (which grows with every query) is
/// emptied into a counter.
const DRAIN_EVERY: Duration = Duration::from_secs(2);

async fn drain_log(server: Arc<TestDnsServer>, drained: Arc<AtomicU64>) {
    loop {
        tokio::time::sleep(DRAIN_EVERY).await;
        let n = server.queries().len() as u64;
        server.clear_queries();
        drained.fetch_add(n, Ordering::Relaxed);
    }
}

impl Drop for BenchDns {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Binds UDP on `listen` and TCP on the same port; with port 0, tries free
/// ports until one is free for both (a busy machine has many TCP ports in
/// use that UDP does not know about).
async fn bind_pair(listen: SocketAddr) -> io::Result<(UdpSocket, TcpListener)> {
    let tries = if listen.port() == 0 { 50 } else { 1 };
    let mut last_error = None;
    for _ in 0..tries {
        let udp = UdpSocket::bind(listen).await?;
        match TcpListener::bind(udp.local_addr()?).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| io::Error::other("no free port")))
}

/// Longest time the forwarder waits for the test server's answer.
const INNER_TIMEOUT: Duration = Duration::from_secs(5);

async fn forward_udp(
    socket: Arc<UdpSocket>,
    inner: SocketAddr,
    delay: Duration,
    count: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 65535];
    loop {
        let Ok((len, peer)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let query = buf[..len].to_vec();
        let socket = Arc::clone(&socket);
        count.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            match ask_udp(inner, &query).await {
                // A lost reply is what UDP allows; the client retries.
                Ok(reply) => {
                    let _ = socket.send_to(&reply, peer).await;
                }
                Err(e) => debug!("bench-dns: forwarding over UDP failed: {e}"),
            }
        });
    }
}

async fn ask_udp(inner: SocketAddr, query: &[u8]) -> io::Result<Vec<u8>> {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    socket.connect(inner).await?;
    socket.send(query).await?;
    let mut buf = vec![0u8; 65535];
    let len = tokio::time::timeout(INNER_TIMEOUT, socket.recv(&mut buf))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "test server silent"))??;
    buf.truncate(len);
    Ok(buf)
}

async fn forward_tcp(
    listener: TcpListener,
    inner: SocketAddr,
    delay: Duration,
    count: Arc<AtomicU64>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let count = Arc::clone(&count);
        tokio::spawn(async move {
            if let Err(e) = forward_tcp_connection(client, inner, delay, &count).await {
                debug!("bench-dns: TCP connection ended: {e}");
            }
        });
    }
}

async fn forward_tcp_connection(
    mut client: TcpStream,
    inner: SocketAddr,
    delay: Duration,
    count: &AtomicU64,
) -> io::Result<()> {
    let mut upstream = TcpStream::connect(inner).await?;
    loop {
        let len = client.read_u16().await?;
        let mut query = vec![0u8; usize::from(len)];
        client.read_exact(&mut query).await?;
        count.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(delay).await;
        upstream.write_u16(len).await?;
        upstream.write_all(&query).await?;
        let reply_len = upstream.read_u16().await?;
        let mut reply = vec![0u8; usize::from(reply_len)];
        upstream.read_exact(&mut reply).await?;
        client.write_u16(reply_len).await?;
        client.write_all(&reply).await?;
    }
}
