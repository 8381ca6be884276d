//! The running milter: shared state, reload, and the accept loop.

use crate::{
    callbacks::{self, Conn},
    config::{Config, DnsSection},
};
use indymilter::Listener;
use nobounce_core::{spf_cache::CachingVerifier, Engine, SpfVerifier, SystemClock};
use nobounce_dns::{DnsConfig, HickoryLookup};
use std::{
    error::Error,
    fmt::{self, Display, Formatter},
    future::Future,
    io,
    sync::{Arc, RwLock},
    task::{Context, Poll},
    time::Duration,
};
use tokio::net::{TcpListener, TcpStream};
use tracing::{info, warn};

/// The milter could not be set up from a configuration.
#[derive(Debug)]
pub struct SetupError(String);

impl Display for SetupError {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Error for SetupError {}

/// Long-lived resources that survive a reload when their settings do not
/// change (the DNS resolver with its cache, the SPF verifier).
#[derive(Debug)]
struct Resources {
    dns: DnsSection,
    spf: Arc<dyn SpfVerifier>,
}

impl Resources {
    fn build(config: &Config) -> Result<Self, SetupError> {
        let dns_config = DnsConfig {
            nameservers: config.dns.nameservers.iter().map(|n| n.0).collect(),
            timeout: Duration::from_secs(config.dns.timeout_secs.get()),
            attempts: config.dns.attempts.max(1),
            cache_size: config.dns.cache_size as u64,
        };
        let lookup = HickoryLookup::new(&dns_config)
            .map_err(|e| SetupError(format!("cannot set up DNS resolver: {e}")))?;
        // One cache of SPF answers for all connections; it lives as long as
        // these resources, so across reloads that keep them.
        let spf: Arc<dyn SpfVerifier> = Arc::new(CachingVerifier::new(
            lookup,
            &config.spf,
            Arc::new(SystemClock),
        ));
        Ok(Self {
            dns: config.dns.clone(),
            spf,
        })
    }
}

/// State shared by all connections.
#[derive(Debug)]
pub(crate) struct Shared {
    // A std RwLock: readers clone an Arc-backed Engine and never hold the
    // lock across an await; a reload swaps it in one short write.
    engine: RwLock<Engine>,
    resources: RwLock<Arc<Resources>>,
    config: RwLock<Config>,
}

impl Shared {
    /// The engine of the current configuration. Each connection takes the
    /// engine current at connect and keeps it to the end.
    pub(crate) fn engine(&self) -> Engine {
        self.engine
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

fn build_engine(config: &Config, resources: &Resources) -> Engine {
    Engine::builder(config.engine_config())
        .spf_verifier(resources.spf.clone())
        .build()
}

/// A milter built from a configuration, ready to serve and to reload.
#[derive(Clone, Debug)]
pub struct Milter {
    shared: Arc<Shared>,
}

impl Milter {
    /// Sets up the milter (DNS resolver, backends) from `config`.
    pub fn new(config: Config) -> Result<Self, SetupError> {
        let resources = Arc::new(Resources::build(&config)?);
        let engine = build_engine(&config, &resources);
        Ok(Self {
            shared: Arc::new(Shared {
                engine: RwLock::new(engine),
                resources: RwLock::new(resources),
                config: RwLock::new(config),
            }),
        })
    }

    /// The engine of the current configuration.
    pub fn engine(&self) -> Engine {
        self.shared.engine()
    }

    /// The current configuration.
    pub fn config(&self) -> Config {
        self.shared
            .config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Switches to `config`. New connections use it; connections already
    /// open keep the configuration they started with. Settings that need a
    /// restart are logged and otherwise ignored. On error the old
    /// configuration stays.
    pub fn reload(&self, config: Config) -> Result<(), SetupError> {
        let old = self.config();
        if old.socket != config.socket {
            warn!(
                old = %old.socket,
                new = %config.socket,
                "socket changed: restart needed, still listening on the old socket"
            );
        }
        if old.milter != config.milter {
            warn!("[milter] settings changed: restart needed to apply them");
        }
        let current = self
            .shared
            .resources
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let resources = if current.dns == config.dns
            && old.spf.timeout_secs == config.spf.timeout_secs
            && old.spf.cache_size == config.spf.cache_size
            && old.spf.cache_max_ttl_secs == config.spf.cache_max_ttl_secs
        {
            current
        } else {
            Arc::new(Resources::build(&config)?)
        };
        let engine = build_engine(&config, &resources);
        *self
            .shared
            .resources
            .write()
            .unwrap_or_else(|e| e.into_inner()) = resources;
        *self
            .shared
            .engine
            .write()
            .unwrap_or_else(|e| e.into_inner()) = engine;
        *self
            .shared
            .config
            .write()
            .unwrap_or_else(|e| e.into_inner()) = config;
        info!("configuration reloaded");
        Ok(())
    }

    fn indymilter_config(&self) -> indymilter::Config {
        let c = self.config();
        indymilter::Config {
            max_connections: c.milter.max_connections,
            connection_timeout: Duration::from_secs(c.milter.connection_timeout_secs.get()),
            ..Default::default()
        }
    }

    /// Serves milter connections from `listener` until `shutdown` completes;
    /// then waits for open connections to finish.
    pub async fn serve<L>(&self, listener: L, shutdown: impl Future) -> io::Result<()>
    where
        L: Listener,
    {
        let callbacks: indymilter::Callbacks<Conn> = callbacks::callbacks(self.shared.clone());
        indymilter::run(listener, callbacks, self.indymilter_config(), shutdown).await
    }

    /// Serves a TCP listener, with `TCP_NODELAY` on every connection.
    pub async fn serve_tcp(&self, listener: TcpListener, shutdown: impl Future) -> io::Result<()> {
        self.serve(NoDelay(listener), shutdown).await
    }
}

/// A TCP listener that sets `TCP_NODELAY` on accepted connections.
///
/// A milter answers with several small messages per stage (for example a
/// header insertion, then continue). With Nagle's algorithm on, the second
/// waits for the MTA's delayed ACK of the first: about 40 ms per message.
#[derive(Debug)]
pub struct NoDelay(pub TcpListener);

impl Listener for NoDelay {
    type Io = TcpStream;

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Self::Io>> {
        match self.0.poll_accept(cx) {
            Poll::Ready(Ok((stream, _))) => {
                if let Err(e) = stream.set_nodelay(true) {
                    warn!("cannot set TCP_NODELAY: {e}");
                }
                Poll::Ready(Ok(stream))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Runs a milter with `config` on `listener` until `shutdown` completes.
///
/// This is what the `nobounce` binary and the end-to-end tests use.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let milter = Milter::new(config).map_err(io::Error::other)?;
    milter.serve_tcp(listener, shutdown).await
}
