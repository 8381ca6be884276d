//! The running milter: shared state, reload, and the accept loop.

use crate::{
    callbacks::{self, Conn},
    config::{Config, DnsSection, StoreBackend},
    control,
};
use indymilter::Listener;
use nobounce_core::{
    spf_cache::CachingVerifier, Engine, MemoryStore, SpfVerifier, StateStore, SystemClock,
};
use nobounce_dns::{DnsConfig, HickoryLookup};
use nobounce_recipients::config::{build_with_reload, Recipients};
use nobounce_store_redis::{FallbackStore, RedisStore};
use std::num::NonZeroUsize;
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
    /// Counters and bans; one for the life of the process, so a reload
    /// keeps them.
    store: Arc<dyn StateStore>,
    /// The recipient directory, if backends are configured.
    recipients: RwLock<Option<Arc<Recipients>>>,
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

fn build_engine(
    config: &Config,
    resources: &Resources,
    store: &Arc<dyn StateStore>,
    recipients: Option<&Recipients>,
) -> Engine {
    let mut builder = Engine::builder(config.engine_config())
        .spf_verifier(resources.spf.clone())
        .store(store.clone());
    if let Some(r) = recipients {
        builder = builder.directory(r.directory.clone());
    }
    builder.build()
}

/// The state store of `config`, and the memory store to purge now and then.
fn build_store(config: &Config) -> Result<(Arc<dyn StateStore>, MemoryStore), SetupError> {
    let max_keys = NonZeroUsize::new(config.store.max_keys)
        .ok_or_else(|| SetupError("store.max_keys must be at least 1".into()))?;
    let memory = MemoryStore::new(max_keys);
    Ok(match config.store.backend {
        StoreBackend::Memory => (Arc::new(memory.clone()), memory),
        StoreBackend::Redis => {
            let redis = RedisStore::new(&config.store.redis)
                .map_err(|e| SetupError(format!("cannot set up Redis store: {e}")))?;
            info!(url = %config.store.redis.url, "state shared through Redis");
            let store =
                FallbackStore::new(redis, memory.clone(), config.store.redis.retry_interval());
            (Arc::new(store), memory)
        }
    })
}

fn build_recipients(config: &Config) -> Result<Option<Arc<Recipients>>, SetupError> {
    if !config.recipients.has_directory() {
        return Ok(None);
    }
    build_with_reload(&config.recipients.directory_config())
        .map(|r| Some(Arc::new(r)))
        .map_err(|e| SetupError(e.to_string()))
}

/// A milter built from a configuration, ready to serve and to reload.
#[derive(Clone, Debug)]
pub struct Milter {
    shared: Arc<Shared>,
    /// The in-memory store (or Redis's local fallback): purged now and then.
    memory: Option<MemoryStore>,
}

impl Milter {
    /// Sets up the milter (DNS resolver, backends) from `config`.
    pub fn new(config: Config) -> Result<Self, SetupError> {
        let resources = Arc::new(Resources::build(&config)?);
        let recipients = build_recipients(&config)?;
        let (store, memory) = build_store(&config)?;
        let engine = build_engine(&config, &resources, &store, recipients.as_deref());
        Ok(Self {
            shared: Arc::new(Shared {
                engine: RwLock::new(engine),
                resources: RwLock::new(resources),
                config: RwLock::new(config),
                store,
                recipients: RwLock::new(recipients),
            }),
            memory: Some(memory),
        })
    }

    /// The engine of the current configuration.
    pub fn engine(&self) -> Engine {
        self.shared.engine()
    }

    /// The shared state store (counters and bans).
    pub fn store(&self) -> Arc<dyn StateStore> {
        self.shared.store.clone()
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
    ///
    /// Map files of the recipient directory are re-read and its answer
    /// caches cleared even when the configuration is unchanged.
    pub async fn reload(&self, config: Config) -> Result<(), SetupError> {
        let old = self.config();
        if old.socket != config.socket {
            warn!(
                old = %old.socket,
                new = %config.socket,
                "socket changed: restart needed, still listening on the old socket"
            );
        }
        if old.store != config.store {
            warn!("[store] settings changed: restart needed to apply them");
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
        let current_recipients = self
            .shared
            .recipients
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let recipients = match current_recipients {
            Some(r)
                if old.recipients.directory_config() == config.recipients.directory_config() =>
            {
                let errors = r.reload.reload().await;
                if let Some(e) = errors.into_iter().next() {
                    return Err(SetupError(e.to_string()));
                }
                Some(r)
            }
            _ => build_recipients(&config)?,
        };
        let engine = build_engine(
            &config,
            &resources,
            &self.shared.store,
            recipients.as_deref(),
        );
        *self
            .shared
            .recipients
            .write()
            .unwrap_or_else(|e| e.into_inner()) = recipients;
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
        let purger = self.memory.clone().map(|memory| {
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(60));
                loop {
                    tick.tick().await;
                    memory.purge(std::time::SystemTime::now());
                }
            })
        });
        let result = indymilter::run(listener, callbacks, self.indymilter_config(), shutdown).await;
        if let Some(p) = purger {
            p.abort();
        }
        result
    }

    /// Serves the local control socket for `nobounce ban ...` at the
    /// configured path, until the returned task is aborted. `None` when the
    /// control socket is disabled.
    pub fn spawn_control(&self) -> Result<Option<tokio::task::JoinHandle<()>>, SetupError> {
        let config = self.config();
        let Some(path) = control::socket_path(&config.store.control_socket) else {
            return Ok(None);
        };
        let listener = control::bind(&path).map_err(|e| {
            SetupError(format!(
                "cannot listen on control socket {}: {e}",
                path.display()
            ))
        })?;
        info!(path = %path.display(), "control socket listening");
        Ok(Some(tokio::spawn(control::serve(listener, self.store()))))
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
