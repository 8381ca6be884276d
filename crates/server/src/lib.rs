//! # nobounce-server
//!
//! The nobounce daemon as a library: what `nobounce run` does, for the
//! binary, for embedders, and for tests that run the whole milter
//! in-process.
//!
//! # Layout
//!
//! - [`Generation`]: one configuration and everything built from it
//!   (engine, DNS resolver, SPF cache, recipient backends).
//! - [`Service`]: the current generation, replaced atomically on reload;
//!   the state store, which lives as long as the process. [`check`] builds
//!   everything a configuration describes without binding a socket.
//! - [`control`]: ban administration and the local control socket.
//! - [`explain`]: `nobounce check`, one conversation explained.
//! - [`listen`]: binding the milter's and the policy service's TCP or unix
//!   sockets (mode, owner, group).
//! - [`logging`]: the daemon's log, with a level a reload can change.
//! - [`run`]: all of it together until shutdown.

pub mod control;
pub mod explain;
mod generation;
pub mod listen;
pub mod logging;
mod service;

pub use crate::{
    generation::Generation,
    listen::MilterListener,
    service::{build_store, check, Service, Store},
};

use nobounce_config::{Config, ConfigErrors};
use nobounce_milter::{MilterOptions, NoDelay};
use std::{future::Future, io, sync::Arc};
use tokio::sync::mpsc;
use tracing::{info, warn};

/// Why the service could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The configuration describes something that cannot be built.
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    /// A socket could not be bound or served.
    #[error("{what}: {source}")]
    Io {
        /// What failed.
        what: String,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Runs nobounce on `listener` with `config` until `shutdown` completes,
/// then lets open connections finish. The policy service of `[policy]`
/// runs beside the milter, on the same engines, and the socketmap service
/// of `[aliases] socketmap` on the alias store.
///
/// Each configuration received on `reload` becomes the new generation, whole
/// or not at all (a failed build is logged and changes nothing). The control
/// socket of the configuration is served too, and removed at the end, as is
/// a unix milter socket.
pub async fn run(
    listener: MilterListener,
    config: Config,
    mut reload: mpsc::Receiver<Config>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RunError> {
    let options = MilterOptions {
        max_connections: config.milter.max_connections,
        connection_timeout: config.milter.connection_timeout,
    };
    let socket = config.socket.clone();
    let control_path = config.store.control_socket.path();
    let policy_options = nobounce_policy::PolicyOptions {
        max_connections: config.policy.max_connections,
        idle_timeout: config.policy.idle_timeout,
    };
    let policy_socket = config.policy.socket.clone();
    let policy_listener = listen::bind_policy(&config)
        .await
        .map_err(|source| RunError::Io {
            what: format!(
                "cannot listen on the policy socket {}",
                policy_socket
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default()
            ),
            source,
        })?;
    // One alias store for the engine and the socketmap service.
    let aliases = if config.aliases.is_enabled() {
        Some(open_aliases(&config).await?)
    } else {
        None
    };
    let socketmap = Socketmap::bind(&config, aliases.clone()).await?;
    let metrics_listen = config.metrics.listen;
    let (service, metrics) = match metrics_listen {
        Some(_) => {
            let mut registry = prometheus_client::registry::Registry::default();
            let metrics = nobounce_metrics::Metrics::new(&mut registry);
            let observer: Arc<dyn nobounce_core::observe::Observer> = metrics.clone();
            (
                Service::with_parts(config, observer, aliases)?,
                Some((Arc::new(registry), metrics)),
            )
        }
        None => (
            Service::with_parts(
                config,
                Arc::new(nobounce_core::observe::NoObserver),
                aliases,
            )?,
            None,
        ),
    };
    let maintenance = service.spawn_maintenance();
    // One shutdown for the milter and the policy service.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };

    let control = match &control_path {
        Some(path) => {
            let socket =
                control::ControlSocket::bind(path)
                    .await
                    .map_err(|source| RunError::Io {
                        what: format!("cannot listen on the control socket {}", path.display()),
                        source,
                    })?;
            info!(event = "control_listening", path = %path.display(), "control socket listening");
            let store = service.store();
            Some(tokio::spawn(async move { socket.serve(store).await }))
        }
        None => {
            info!(
                event = "control_disabled",
                "no control socket (store.control_socket)"
            );
            None
        }
    };

    let metrics_task = match (metrics_listen, metrics) {
        (Some(addr), Some((registry, metrics))) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| RunError::Io {
                    what: format!("cannot listen for metrics on {addr}"),
                    source,
                })?;
            info!(event = "metrics_listening", listen = %addr, "metrics at /metrics");
            let refresh = sampler(service.clone(), metrics);
            let stopped = until_stopped();
            Some(tokio::spawn(async move {
                if let Err(e) = nobounce_metrics::serve(listener, registry, refresh, stopped).await
                {
                    warn!(event = "metrics_failed", "metrics endpoint failed: {e}");
                }
            }))
        }
        _ => None,
    };

    let reloader = service.clone();
    let reloads = tokio::spawn(async move {
        while let Some(config) = reload.recv().await {
            let log = config.log.clone();
            match reloader.reload(config).await {
                Ok(()) => logging::apply(&log),
                Err(e) => warn!(
                    event = "reload_failed",
                    "reload failed, keeping the running configuration: {}",
                    e.one_line()
                ),
            }
        }
    });

    info!(
        event = "listening",
        socket = %socket,
        version = env!("CARGO_PKG_VERSION"),
        "nobounce listening"
    );
    let engines: Arc<dyn nobounce_core::EngineSource> = Arc::new(service.clone());
    let policy = policy_listener.map(|(listener, path)| {
        info!(
            event = "policy_listening",
            socket = %policy_socket.as_ref().map(ToString::to_string).unwrap_or_default(),
            "policy service listening"
        );
        let engines = Arc::clone(&engines);
        let stopped = until_stopped();
        tokio::spawn(async move {
            let served = nobounce_policy::serve(listener, engines, policy_options, stopped).await;
            if let Some(path) = path {
                let _ = std::fs::remove_file(path);
            }
            served
        })
    });
    let socketmap = socketmap.map(|s| s.spawn(until_stopped()));
    let milter = async {
        match listener {
            MilterListener::Tcp(l) => {
                nobounce_milter::serve(NoDelay(l), engines, options, until_stopped()).await
            }
            MilterListener::Unix(l, path) => {
                let result = nobounce_milter::serve(l, engines, options, until_stopped()).await;
                let _ = std::fs::remove_file(path);
                result
            }
        }
    };
    tokio::pin!(milter);
    let served = tokio::select! {
        served = &mut milter => served,
        () = shutdown => {
            let _ = stop.send(true);
            milter.await
        }
    };
    // The milter may also end by failing: the policy service ends with it.
    let _ = stop.send(true);
    if let Some(policy) = policy {
        match policy.await {
            Ok(Err(e)) => warn!(event = "policy_failed", "policy service failed: {e}"),
            Err(e) => warn!(event = "policy_failed", "policy service failed: {e}"),
            Ok(Ok(())) => {}
        }
    }
    if let Some(task) = socketmap {
        match task.await {
            Ok(Err(e)) => warn!(event = "socketmap_failed", "socketmap service failed: {e}"),
            Err(e) => warn!(event = "socketmap_failed", "socketmap service failed: {e}"),
            Ok(Ok(())) => {}
        }
    }
    reloads.abort();
    if let Some(task) = metrics_task {
        task.abort();
    }
    for task in maintenance {
        task.abort();
    }
    if let Some(task) = control {
        task.abort();
        // Dropping the task's socket removes the path it was bound at.
        let _ = task.await;
    }
    info!(event = "stopped", "nobounce stopped");
    served.map_err(|source| RunError::Io {
        what: format!("serving {socket}"),
        source,
    })
}

/// The tokio runtime `nobounce run` serves on, as `[milter] threads`
/// says: 1 (the default) a current-thread runtime, N more a multi-thread
/// runtime of N workers, 0 one worker per core. On the 2-core machine of
/// the benchmarks the current-thread runtime cost 15 to 35 % less CPU per
/// transaction than the multi-thread one, with as much throughput
/// (docs/PERFORMANCE.md): a milter's work is short, and handing it between
/// threads costs more than doing it.
pub fn runtime(milter: &nobounce_config::MilterConfig) -> io::Result<tokio::runtime::Runtime> {
    match milter.threads {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        0 => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    }
}

/// What the metrics read at each scrape: the SPF cache of the current
/// generation, the bans in the store (and which ran out since the last
/// scrape), the Redis fallback state.
fn sampler(service: Service, metrics: Arc<nobounce_metrics::Metrics>) -> nobounce_metrics::Refresh {
    use std::{collections::HashMap, time::SystemTime};
    // Bans seen at the last scrape, with their end.
    let seen: Arc<std::sync::Mutex<HashMap<String, SystemTime>>> = Arc::default();
    Arc::new(move || {
        let service = service.clone();
        let metrics = Arc::clone(&metrics);
        let seen = Arc::clone(&seen);
        Box::pin(async move {
            let now = SystemTime::now();
            let mut sampled = metrics.sampled();
            sampled.spf_cache = Some(service.current().spf_cache_stats());
            sampled.store_fallback = service.store_degraded();
            let bans =
                tokio::time::timeout(std::time::Duration::from_secs(2), service.store().list(now))
                    .await;
            if let Ok(Ok(bans)) = bans {
                let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                let expired = seen
                    .iter()
                    .filter(|(key, until)| **until <= now && !bans.iter().any(|b| &b.key == *key))
                    .count();
                sampled.bans_expired += expired as u64;
                sampled.bans_active = Some(bans.len() as u64);
                *seen = bans.into_iter().map(|b| (b.key, b.until)).collect();
            }
            metrics.set_sampled(sampled);
        })
    })
}

/// Opens the alias store of `[aliases]`, an error located at its key.
async fn open_aliases(
    config: &Config,
) -> Result<Arc<dyn nobounce_core::alias::AliasStore>, RunError> {
    nobounce_aliases::open_store(config).await.map_err(|e| {
        let key = match config.aliases.store {
            nobounce_config::AliasBackend::Sqlite => "aliases.path",
            nobounce_config::AliasBackend::Redis => "aliases.store",
        };
        let error = config.error_at(key, format!("cannot open the alias store: {e}"));
        RunError::Config(ConfigErrors(vec![error]))
    })
}

/// The socketmap service of `[aliases] socketmap` (Postfix's
/// `virtual_alias_maps`), bound, with its alias store open.
struct Socketmap {
    listener: nobounce_aliases::socketmap::SocketmapListener,
    /// A unix socket's path, removed at the end.
    path: Option<std::path::PathBuf>,
    store: Arc<dyn nobounce_core::alias::AliasStore>,
    options: nobounce_aliases::socketmap::SocketmapOptions,
    endpoint: nobounce_core::Endpoint,
}

impl Socketmap {
    /// Opens the alias store (`nobounce_aliases::open_store`) and binds the
    /// socket, if `[aliases] socketmap` is set. A unix socket gets
    /// `[milter]`'s mode, owner and group, and replaces a socket file left
    /// by an earlier run.
    async fn bind(
        config: &Config,
        store: Option<Arc<dyn nobounce_core::alias::AliasStore>>,
    ) -> Result<Option<Self>, RunError> {
        use nobounce_aliases::socketmap::{SocketmapListener, SocketmapOptions};
        let Some(endpoint) = config.aliases.socketmap.clone() else {
            return Ok(None);
        };
        let store = match store {
            Some(store) => store,
            None => open_aliases(config).await?,
        };
        let cannot = |source| RunError::Io {
            what: format!("cannot listen on the socketmap socket {endpoint}"),
            source,
        };
        let (listener, path) = match listen::bind_endpoint(&endpoint, config)
            .await
            .map_err(cannot)?
        {
            listen::Bound::Tcp(l) => (SocketmapListener::Tcp(l), None),
            listen::Bound::Unix(l, path) => (SocketmapListener::Unix(l), Some(path)),
        };
        Ok(Some(Self {
            listener,
            path,
            store,
            options: SocketmapOptions::new(config.aliases.domains.clone()),
            endpoint,
        }))
    }

    /// Serves until `stopped` completes, then removes a unix socket.
    fn spawn(
        self,
        stopped: impl Future<Output = ()> + Send + 'static,
    ) -> tokio::task::JoinHandle<io::Result<()>> {
        info!(
            event = "socketmap_listening",
            socket = %self.endpoint,
            "socketmap service listening (map \"aliases\")"
        );
        tokio::spawn(async move {
            let served = nobounce_aliases::socketmap::serve(
                self.listener,
                self.store,
                self.options,
                stopped,
            )
            .await;
            if let Some(path) = self.path {
                let _ = std::fs::remove_file(path);
            }
            served
        })
    }
}

/// [`run`] on a bound TCP listener, without reloads and without a control
/// socket unless the configuration names one: for tests and embedders.
pub async fn run_tcp(
    listener: tokio::net::TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RunError> {
    let mut config = config;
    if config.store.control_socket == nobounce_config::ControlSocket::Auto {
        config.store.control_socket = nobounce_config::ControlSocket::Off;
    }
    let (_no_reloads, reload) = mpsc::channel(1);
    run(MilterListener::Tcp(listener), config, reload, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::runtime::RuntimeFlavor;

    fn flavor(threads: usize) -> RuntimeFlavor {
        let mut milter = nobounce_config::Config::default().milter;
        milter.threads = threads;
        runtime(&milter).expect("runtime").handle().runtime_flavor()
    }

    #[test]
    fn milter_threads_choose_the_runtime() {
        assert_eq!(flavor(1), RuntimeFlavor::CurrentThread);
        assert_eq!(flavor(0), RuntimeFlavor::MultiThread);
        assert_eq!(flavor(3), RuntimeFlavor::MultiThread);
    }
}
