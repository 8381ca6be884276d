//! A generation: one configuration and everything built from it (engine,
//! DNS resolver, SPF cache, recipient backends), made whole before it is
//! used, and replaced whole by the next one.

use nobounce_config::{Config, ConfigErrors, DnsConfig};
use nobounce_core::{
    alias::AliasStore,
    batv::BatvKeys,
    dns::TtlLookup,
    observe::{NoObserver, Observer},
    spf_cache::CachingVerifier,
    CacheStats, Engine, SpfVerifier, StateStore, SystemClock,
};
use nobounce_dns::HickoryLookup;
use nobounce_recipients::{build_observed, Recipients};
use std::{fmt, sync::Arc, time::Duration};

/// The DNS resolver and the SPF answer cache: kept from one generation to
/// the next while their settings stay the same.
struct Resources {
    dns: DnsConfig,
    spf_settings: (Duration, usize, Duration),
    spf: Arc<dyn SpfVerifier>,
    /// The same resolver, for DNS block lists (one cache of answers).
    lookup: Arc<dyn TtlLookup>,
    /// The SPF cache's counters, for metrics.
    spf_stats: Arc<dyn Fn() -> CacheStats + Send + Sync>,
}

impl fmt::Debug for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resources")
            .field("dns", &self.dns)
            .finish_non_exhaustive()
    }
}

fn spf_settings(config: &Config) -> (Duration, usize, Duration) {
    (
        config.spf.timeout,
        config.spf.cache_size,
        config.spf.cache_max_ttl,
    )
}

impl Resources {
    fn build(config: &Config) -> Result<Self, ConfigErrors> {
        let dns = &config.dns;
        let lookup = HickoryLookup::new(&nobounce_dns::DnsConfig {
            nameservers: dns.nameservers.clone(),
            timeout: dns.timeout,
            attempts: dns.attempts,
            cache_size: dns.cache_size as u64,
        })
        .map_err(|e| ConfigErrors(vec![config.error_at("dns", e)]))?;
        let lookup = Arc::new(lookup);
        // One cache of SPF answers for all connections, as long as these
        // resources live.
        let cache = Arc::new(CachingVerifier::new(
            Arc::clone(&lookup),
            &config.spf,
            Arc::new(SystemClock),
        ));
        let stats = Arc::clone(&cache);
        let spf: Arc<dyn SpfVerifier> = cache;
        Ok(Self {
            dns: dns.clone(),
            spf_settings: spf_settings(config),
            spf,
            lookup,
            spf_stats: Arc::new(move || stats.stats()),
        })
    }
}

/// One configuration and what was built from it.
#[derive(Debug)]
pub struct Generation {
    config: Arc<Config>,
    engine: Engine,
    resources: Arc<Resources>,
    recipients: Option<Arc<Recipients>>,
}

impl Generation {
    /// Builds everything `config` describes, except sockets: the resolver,
    /// the SPF cache, every recipient backend (map files are read now), the
    /// engine. From `previous`, keeps the resolver and SPF cache, and the
    /// recipient backends, whose settings did not change; `previous` itself
    /// is never changed, so a failed build leaves it whole.
    ///
    /// Errors name the configuration key they are about, at its line.
    pub fn build(
        config: Config,
        previous: Option<&Generation>,
        store: &Arc<dyn StateStore>,
    ) -> Result<Self, ConfigErrors> {
        Self::build_with(config, previous, store, Arc::new(NoObserver), None)
    }

    /// [`Self::build`], with the engine and the recipient backends telling
    /// `observer` what they do (metrics).
    pub fn build_observed(
        config: Config,
        previous: Option<&Generation>,
        store: &Arc<dyn StateStore>,
        observer: Arc<dyn Observer>,
    ) -> Result<Self, ConfigErrors> {
        Self::build_with(config, previous, store, observer, None)
    }

    /// [`Self::build_observed`], with the alias store the engine looks
    /// `[aliases] domains` up in (opened once by the service).
    pub fn build_with(
        config: Config,
        previous: Option<&Generation>,
        store: &Arc<dyn StateStore>,
        observer: Arc<dyn Observer>,
        aliases: Option<Arc<dyn AliasStore>>,
    ) -> Result<Self, ConfigErrors> {
        let resources = match previous {
            Some(p)
                if p.resources.dns == config.dns
                    && p.resources.spf_settings == spf_settings(&config) =>
            {
                Arc::clone(&p.resources)
            }
            _ => Arc::new(Resources::build(&config)?),
        };
        let recipients = if config.recipients.has_directory() {
            let old = previous.and_then(|p| p.recipients.as_deref());
            let built = build_observed(
                &config.recipients.directory,
                old,
                Arc::new(SystemClock),
                Arc::clone(&observer),
            )
            .map_err(|e| ConfigErrors(vec![config.error_at(&e.key(), e)]))?;
            Some(Arc::new(built))
        } else {
            None
        };
        let batv_keys = if config.batv.policy.enabled {
            Some(Arc::new(read_batv_keys(&config.batv.key_file).map_err(
                |e| ConfigErrors(vec![config.error_at("batv.key_file", e)]),
            )?))
        } else {
            None
        };
        let mut engine = Engine::builder(config.engine_config())
            .spf_verifier(Arc::clone(&resources.spf))
            .dns(Arc::clone(&resources.lookup))
            .observer(observer)
            .store(Arc::clone(store));
        if let Some(r) = &recipients {
            engine = engine.directory(Arc::clone(&r.directory));
        }
        if let Some(keys) = batv_keys {
            engine = engine.batv_keys(keys);
        }
        if let Some(aliases) = aliases {
            engine = engine.aliases(aliases);
        }
        Ok(Self {
            config: Arc::new(config),
            engine: engine.build(),
            resources,
            recipients,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The SPF cache's counters now.
    pub fn spf_cache_stats(&self) -> CacheStats {
        (self.resources.spf_stats)()
    }

    /// Whether `other` uses the very same SPF cache and resolver.
    pub fn shares_spf_cache(&self, other: &Generation) -> bool {
        Arc::ptr_eq(&self.resources, &other.resources)
    }

    /// The recipient directory, when backends are configured.
    pub fn recipients(&self) -> Option<&Recipients> {
        self.recipients.as_deref()
    }
}

/// Reads the BATV key file: its secrets must not be readable by others.
fn read_batv_keys(path: &std::path::Path) -> Result<BatvKeys, String> {
    use std::os::unix::fs::PermissionsExt;
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("{shown}: {e}"))?;
    if meta.permissions().mode() & 0o004 != 0 {
        return Err(format!(
            "{shown} is readable by every user: its keys sign our senders (chmod 0640)"
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{shown}: {e}"))?;
    BatvKeys::parse(&text).map_err(|e| format!("{shown}: {e}"))
}
