//! The running service: the current generation, swapped atomically on
//! reload, and the state store that outlives generations.

use crate::generation::Generation;
use arc_swap::ArcSwap;
use nobounce_config::{Config, ConfigErrors, StoreBackend};
use nobounce_core::{
    alias::AliasStore,
    observe::{NoObserver, Observer},
    Engine, EngineSource, MemoryStore, StateStore,
};
use nobounce_store_redis::{redact, FallbackStore, RedisStore};
use std::{
    num::NonZeroUsize,
    sync::Arc,
    time::{Duration, SystemTime},
};
use tracing::{info, warn};

/// The state store of a configuration.
#[derive(Debug)]
pub struct Store {
    /// What the engine uses.
    pub store: Arc<dyn StateStore>,
    /// The memory store to purge now and then (the store itself, or
    /// Redis's local fallback).
    pub memory: MemoryStore,
    /// The Redis store with its fallback, whose maintenance must run.
    pub redis: Option<FallbackStore>,
}

/// The state store of `config` (no connection is made yet).
pub fn build_store(config: &Config) -> Result<Store, ConfigErrors> {
    let max_keys = NonZeroUsize::new(config.store.max_keys).ok_or_else(|| {
        ConfigErrors(vec![config.error_at("store.max_keys", "must be at least 1")])
    })?;
    let memory = MemoryStore::new(max_keys);
    Ok(match config.store.backend {
        StoreBackend::Memory => Store {
            store: Arc::new(memory.clone()),
            memory,
            redis: None,
        },
        StoreBackend::Redis => {
            let redis = RedisStore::new(&config.store.redis)
                .map_err(|e| ConfigErrors(vec![config.error_at("store.redis.url", e)]))?;
            let fallback = FallbackStore::new(redis, memory.clone(), config.store.redis.retry);
            Store {
                store: Arc::new(fallback.clone()),
                memory,
                redis: Some(fallback),
            }
        }
    })
}

/// Builds everything `config` describes without binding a socket or
/// connecting anywhere: what `nobounce config check` runs, and what `run`
/// would fail on.
pub fn check(config: &Config) -> Result<(), ConfigErrors> {
    let store = build_store(config)?.store;
    let mut errors = Vec::new();
    if let Some(owner) = &config.milter.socket_owner {
        if let Err(e) = crate::listen::user_id(owner) {
            errors.push(config.error_at("milter.socket_owner", e));
        }
    }
    if let Some(group) = &config.milter.socket_group {
        if let Err(e) = crate::listen::group_id(group) {
            errors.push(config.error_at("milter.socket_group", e));
        }
    }
    if let Err(e) = Generation::build(config.clone(), None, &store) {
        errors.extend(e.0);
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors(errors))
    }
}

#[derive(Debug)]
struct Inner {
    current: ArcSwap<Generation>,
    store: Arc<dyn StateStore>,
    memory: MemoryStore,
    redis: Option<FallbackStore>,
    /// Told what every generation does (metrics).
    observer: Arc<dyn Observer>,
    /// Where the engine looks aliases up (opened once, for the process).
    aliases: Option<Arc<dyn AliasStore>>,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
}

/// The service: cheap to clone, shared by the milter and every other
/// front end.
#[derive(Clone, Debug)]
pub struct Service {
    inner: Arc<Inner>,
}

impl EngineSource for Service {
    fn engine(&self) -> Engine {
        self.inner.current.load().engine().clone()
    }
}

impl Service {
    /// Builds the first generation of `config` and the state store.
    pub fn new(config: Config) -> Result<Self, ConfigErrors> {
        Self::with_observer(config, Arc::new(NoObserver))
    }

    /// [`Self::new`], with every generation telling `observer` what it
    /// does (metrics).
    pub fn with_observer(
        config: Config,
        observer: Arc<dyn Observer>,
    ) -> Result<Self, ConfigErrors> {
        Self::with_parts(config, observer, None)
    }

    /// [`Self::with_observer`], with the alias store for `[aliases]`
    /// domains (see `nobounce_aliases::open_store`).
    pub fn with_parts(
        config: Config,
        observer: Arc<dyn Observer>,
        aliases: Option<Arc<dyn AliasStore>>,
    ) -> Result<Self, ConfigErrors> {
        let Store {
            store,
            memory,
            redis,
        } = build_store(&config)?;
        if config.store.backend == StoreBackend::Redis {
            info!(
                event = "store_redis",
                url = %redact(&config.store.redis.url),
                "state shared through Redis"
            );
        }
        let generation =
            Generation::build_with(config, None, &store, Arc::clone(&observer), aliases.clone())?;
        Ok(Self {
            inner: Arc::new(Inner {
                current: ArcSwap::from_pointee(generation),
                store,
                memory,
                redis,
                observer,
                aliases,
                reloading: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// The current generation (new connections use it).
    pub fn current(&self) -> Arc<Generation> {
        self.inner.current.load_full()
    }

    /// The current configuration.
    pub fn config(&self) -> Arc<Config> {
        Arc::clone(self.current().config())
    }

    /// The shared state store (counters and bans).
    pub fn store(&self) -> Arc<dyn StateStore> {
        Arc::clone(&self.inner.store)
    }

    /// With Redis: whether it is away and the local fallback serves.
    /// `None` with the memory store.
    pub fn store_degraded(&self) -> Option<bool> {
        self.inner.redis.as_ref().map(FallbackStore::is_degraded)
    }

    /// The observer every generation reports to.
    pub fn observer(&self) -> &Arc<dyn Observer> {
        &self.inner.observer
    }

    /// Switches to `config`: the whole new generation is built first, then
    /// swapped in at once. On error nothing changes. Connections already
    /// open keep the generation they started with. Settings that need a
    /// restart are logged, and keep their old values.
    pub async fn reload(&self, config: Config) -> Result<(), ConfigErrors> {
        let _one = self.inner.reloading.lock().await;
        let old = self.current();
        let config = keep_restart_settings(old.config(), config);
        let generation = Generation::build_with(
            config,
            Some(&old),
            &self.inner.store,
            Arc::clone(&self.inner.observer),
            self.inner.aliases.clone(),
        )?;
        self.inner.current.store(Arc::new(generation));
        info!(event = "reloaded", "configuration reloaded");
        Ok(())
    }

    /// Serves milter connections from `listener` with this service's
    /// engines until `shutdown` completes (no control socket, no purger:
    /// see [`crate::run`] for the whole daemon).
    pub async fn serve_milter(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future,
    ) -> std::io::Result<()> {
        let config = self.config();
        let options = nobounce_milter::MilterOptions {
            max_connections: config.milter.max_connections,
            connection_timeout: config.milter.connection_timeout,
        };
        let engines: Arc<dyn EngineSource> = Arc::new(self.clone());
        nobounce_milter::serve(
            nobounce_milter::NoDelay(listener),
            engines,
            options,
            shutdown,
        )
        .await
    }

    /// The store's background work until the tasks are aborted: purging
    /// expired state from the memory store every minute, and with Redis
    /// the fallback's maintenance (recovery, dropping lifted mirrors).
    pub fn spawn_maintenance(&self) -> Vec<tokio::task::JoinHandle<()>> {
        let memory = self.inner.memory.clone();
        let mut tasks = vec![tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                memory.purge(SystemTime::now());
            }
        })];
        if let Some(redis) = &self.inner.redis {
            tasks.push(redis.spawn_maintenance());
        }
        tasks
    }
}

/// `new`, with the settings that are only read at start (the sockets,
/// `[milter]`, `[policy]`, `[store]`) put back to their values in `old`, each change
/// logged as needing a restart.
fn keep_restart_settings(old: &Config, mut new: Config) -> Config {
    let keep = |what: &str, changed: bool| {
        if changed {
            warn!(
                event = "reload_restart_needed",
                setting = what,
                "{what} changed: restart nobounce to apply it; the old value stays in force"
            );
        }
    };
    keep("socket", old.socket != new.socket);
    keep("[milter]", old.milter != new.milter);
    keep("[policy]", old.policy != new.policy);
    keep("[metrics]", old.metrics != new.metrics);
    keep(
        "[aliases] store, path, socketmap",
        (
            &old.aliases.store,
            &old.aliases.path,
            &old.aliases.socketmap,
        ) != (
            &new.aliases.store,
            &new.aliases.path,
            &new.aliases.socketmap,
        ),
    );
    keep("[store]", old.store != new.store);
    new.socket = old.socket.clone();
    new.milter = old.milter.clone();
    new.policy = old.policy.clone();
    new.metrics = old.metrics.clone();
    new.aliases.store = old.aliases.store;
    new.aliases.path = old.aliases.path.clone();
    new.aliases.socketmap = old.aliases.socketmap.clone();
    new.store = old.store.clone();
    new
}
