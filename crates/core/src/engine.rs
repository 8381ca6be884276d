//! The engine: configuration plus ports, shared by all connections.

use crate::{
    alias::AliasStore,
    batv::{BatvConfig, BatvKeys},
    bounce_guard::BounceGuardConfig,
    clock::{Clock, SystemClock},
    dictionary::DictionaryConfig,
    directory::RecipientDirectory,
    dns::TtlLookup,
    dnsbl::DnsblConfig,
    observe::{NoObserver, Observer},
    recipient::RecipientPolicy,
    session::Session,
    spf::{LookupVerifier, SpfConfig, SpfVerifier},
    spf_cache::CachingVerifier,
    store::{MemoryStore, StateStore},
};
use std::{fmt::Debug, sync::Arc, time::Duration};
use viaspf::lookup::Lookup;

/// Policy settings of the engine (the parts of the config file that decide).
#[derive(Clone, Debug, PartialEq)]
pub struct EngineConfig {
    /// Log what would have been done, but never refuse anything.
    pub dry_run: bool,
    /// The deadline of one SMTP command: everything the engine does for
    /// one command (the HELO and MAIL FROM SPF checks together, a recipient
    /// lookup, the ban bookkeeping) ends within it, and what did not finish
    /// is a temporary failure. Keep it below the MTA's own timeout (Postfix
    /// `milter_command_timeout`, 30 s by default), so that the client gets
    /// nobounce's 4xx rather than the MTA's `milter_default_action`.
    /// Default: [`Self::DEFAULT_COMMAND_TIMEOUT`].
    pub command_timeout: Duration,
    /// SPF settings.
    pub spf: SpfConfig,
    /// Recipient policy (used when a directory is configured).
    pub recipients: RecipientPolicy,
    /// Dictionary-attack bans.
    pub dictionary: DictionaryConfig,
    /// DNS block lists.
    pub dnsbl: DnsblConfig,
    /// BATV: signed envelope senders, verified bounces.
    pub batv: BatvConfig,
    /// The bounce guard.
    pub bounce_guard: BounceGuardConfig,
    /// The alias domains (`[aliases] domains`): every address in them is
    /// an alias, refused at RCPT unless active. Empty: no aliases.
    pub alias_domains: Vec<String>,
}

impl EngineConfig {
    /// 25 s: below Postfix's 30 s `milter_command_timeout`.
    pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(25);
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            dry_run: false,
            command_timeout: Self::DEFAULT_COMMAND_TIMEOUT,
            spf: SpfConfig::default(),
            recipients: RecipientPolicy::default(),
            dictionary: DictionaryConfig::default(),
            dnsbl: DnsblConfig::default(),
            batv: BatvConfig::default(),
            bounce_guard: BounceGuardConfig::default(),
            alias_domains: Vec::new(),
        }
    }
}

/// The decision engine. Cheap to clone; one per configuration generation,
/// shared by all connections.
///
/// ```
/// use nobounce_core::{Engine, EngineConfig};
/// # use async_trait::async_trait;
/// # use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
/// # use viaspf::lookup::{Lookup, LookupError, LookupResult, Name};
/// // Any viaspf `Lookup` will do; this one knows no records at all.
/// #[derive(Debug)]
/// struct NoDns;
/// #[async_trait]
/// impl Lookup for NoDns {
///     async fn lookup_a<'l, 'a>(&'l self, _: &'a Name) -> LookupResult<Vec<Ipv4Addr>> { Err(LookupError::NoRecords) }
///     async fn lookup_aaaa<'l, 'a>(&'l self, _: &'a Name) -> LookupResult<Vec<Ipv6Addr>> { Err(LookupError::NoRecords) }
///     async fn lookup_mx<'l, 'a>(&'l self, _: &'a Name) -> LookupResult<Vec<Name>> { Err(LookupError::NoRecords) }
///     async fn lookup_txt<'l, 'a>(&'l self, _: &'a Name) -> LookupResult<Vec<String>> { Err(LookupError::NoRecords) }
///     async fn lookup_ptr<'l>(&'l self, _: IpAddr) -> LookupResult<Vec<Name>> { Err(LookupError::NoRecords) }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let engine = Engine::builder(EngineConfig::default()).lookup(NoDns).build();
/// let mut session = engine.session();
/// session.connect("192.0.2.7".parse().ok(), "client.example", Some("mx.example.net")).await;
/// session.helo("client.example").await;
/// // No SPF record anywhere: result "none", accepted by default.
/// let v = session.mail_from("<joe@example.org>", &["SIZE=100"], None).await;
/// assert!(!v.is_refusal());
/// # });
/// ```
#[derive(Clone, Debug)]
pub struct Engine {
    pub(crate) inner: Arc<EngineInner>,
}

#[derive(Debug)]
pub(crate) struct EngineInner {
    pub(crate) config: EngineConfig,
    pub(crate) spf: Arc<dyn SpfVerifier>,
    pub(crate) directory: Option<Arc<dyn RecipientDirectory>>,
    pub(crate) store: Arc<dyn StateStore>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) dns: Option<Arc<dyn TtlLookup>>,
    pub(crate) batv_keys: Option<Arc<BatvKeys>>,
    pub(crate) observer: Arc<dyn Observer>,
    pub(crate) aliases: Option<Arc<dyn AliasStore>>,
}

impl Engine {
    /// Starts building an engine with `config`.
    pub fn builder(config: EngineConfig) -> EngineBuilder {
        EngineBuilder {
            config,
            spf: None,
            directory: None,
            store: None,
            clock: Arc::new(SystemClock),
            dns: None,
            batv_keys: None,
            observer: Arc::new(NoObserver),
            aliases: None,
        }
    }

    /// A new session for one SMTP connection.
    pub fn session(&self) -> Session {
        Session::new(self.clone())
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// Whether any rule reads the message's headers (forged
    /// `Authentication-Results` are looked for while SPF is on). A front
    /// end need not pass headers otherwise.
    pub fn reads_headers(&self) -> bool {
        self.inner.config.spf.enabled || self.inner.config.bounce_guard.enabled
    }

    /// Whether any rule reads message bodies: the bounce guard reads the
    /// delivery status part of the MTA's own bounces, and no other body
    /// (see [`Session::wants_body`]).
    pub fn reads_bodies(&self) -> bool {
        self.inner.config.bounce_guard.enabled
    }

    /// Whether end of message may insert or delete headers (the SPF trace
    /// headers, forged `Authentication-Results`).
    pub fn edits_headers(&self) -> bool {
        self.inner.config.spf.enabled || !self.inner.config.alias_domains.is_empty()
    }

    /// Whether end of message may change the envelope sender (BATV
    /// signing). A milter asks the MTA for that action only then.
    pub fn changes_sender(&self) -> bool {
        self.inner.config.batv.enabled && self.inner.batv_keys.is_some()
    }

    /// The SPF verifier (shared, for example to keep a cache across reloads).
    pub fn spf_verifier(&self) -> &Arc<dyn SpfVerifier> {
        &self.inner.spf
    }

    /// The recipient directory, if any.
    pub fn directory(&self) -> Option<&Arc<dyn RecipientDirectory>> {
        self.inner.directory.as_ref()
    }

    /// The shared state store (counters and bans).
    pub fn store(&self) -> &Arc<dyn StateStore> {
        &self.inner.store
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// The observer (metrics); front ends report their connections and
    /// command times to it.
    pub fn observer(&self) -> &Arc<dyn Observer> {
        &self.inner.observer
    }
}

/// Where a front end gets the engine for a new connection: the current
/// configuration generation. A fixed [`Engine`] is a source of itself; a
/// daemon that reloads its configuration hands out the newest one, and each
/// connection keeps the engine it started with.
pub trait EngineSource: Send + Sync + Debug {
    /// The engine new connections should use.
    fn engine(&self) -> Engine;
}

impl EngineSource for Engine {
    fn engine(&self) -> Engine {
        self.clone()
    }
}

/// Builder for [`Engine`].
#[derive(Debug)]
pub struct EngineBuilder {
    config: EngineConfig,
    spf: Option<Arc<dyn SpfVerifier>>,
    directory: Option<Arc<dyn RecipientDirectory>>,
    store: Option<Arc<dyn StateStore>>,
    clock: Arc<dyn Clock>,
    dns: Option<Arc<dyn TtlLookup>>,
    batv_keys: Option<Arc<BatvKeys>>,
    observer: Arc<dyn Observer>,
    aliases: Option<Arc<dyn AliasStore>>,
}

impl EngineBuilder {
    /// Looks up addresses of `alias_domains` in `store` at RCPT.
    pub fn aliases(mut self, store: Arc<dyn AliasStore>) -> Self {
        self.aliases = Some(store);
        self
    }

    /// Tells `observer` what the engine does (metrics). Default: nothing.
    pub fn observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = observer;
        self
    }

    /// Signs and verifies BATV addresses with `keys` (read from the key
    /// file by the caller). Without keys, BATV does nothing.
    pub fn batv_keys(mut self, keys: Arc<BatvKeys>) -> Self {
        self.batv_keys = Some(keys);
        self
    }

    /// Asks DNS block lists through `lookup` (share the resolver SPF uses,
    /// so answers are cached for their TTL in one place). Without it, no
    /// list is asked, whatever `dnsbl.zones` says.
    pub fn dns(mut self, lookup: Arc<dyn TtlLookup>) -> Self {
        self.dns = Some(lookup);
        self
    }

    /// Evaluates SPF with `lookup` (uncached), bounded by the configured
    /// `spf.timeout`.
    pub fn lookup<L: Lookup + Debug + 'static>(mut self, lookup: L) -> Self {
        let timeout = self.config.spf.timeout;
        self.spf = Some(Arc::new(LookupVerifier::new(lookup, timeout)));
        self
    }

    /// Evaluates SPF with `lookup` through a [`CachingVerifier`]: answers
    /// kept for their smallest DNS TTL (at most `spf.cache_max_ttl`),
    /// `spf.cache_size` entries, concurrent identical checks sharing one
    /// evaluation. Uses the clock set so far (call [`Self::clock`] first).
    /// To share one cache between engines (reloads), build the
    /// `CachingVerifier` yourself and pass it to [`Self::spf_verifier`].
    pub fn cached_lookup<L: TtlLookup + 'static>(mut self, lookup: L) -> Self {
        self.spf = Some(Arc::new(CachingVerifier::new(
            lookup,
            &self.config.spf,
            self.clock.clone(),
        )));
        self
    }

    /// Evaluates SPF with this verifier (for example a caching one).
    pub fn spf_verifier(mut self, verifier: Arc<dyn SpfVerifier>) -> Self {
        self.spf = Some(verifier);
        self
    }

    /// Checks recipients against `directory`.
    pub fn directory(mut self, directory: Arc<dyn RecipientDirectory>) -> Self {
        self.directory = Some(directory);
        self
    }

    /// Keeps counters and bans in `store` (default: a private
    /// [`MemoryStore`]). Share one store between engines (reloads, several
    /// milters) to share bans.
    pub fn store(mut self, store: Arc<dyn StateStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// Uses `clock` instead of the system clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Builds the engine. Without a lookup or verifier, SPF checks answer
    /// `temperror` (so they tempfail by default rather than pass). A dry-run
    /// engine reads the store but writes only to a private one
    /// ([`DryRunStore`](crate::store::DryRunStore)).
    pub fn build(self) -> Engine {
        let spf = self
            .spf
            .unwrap_or_else(|| Arc::new(crate::spf::UnconfiguredVerifier));
        let store: Arc<dyn StateStore> = self
            .store
            .unwrap_or_else(|| Arc::new(MemoryStore::default()));
        let store: Arc<dyn StateStore> = if self.config.dry_run {
            Arc::new(crate::store::DryRunStore::new(store))
        } else {
            store
        };
        Engine {
            inner: Arc::new(EngineInner {
                config: self.config,
                spf,
                directory: self.directory,
                store,
                clock: self.clock,
                dns: self.dns,
                batv_keys: self.batv_keys,
                observer: self.observer,
                aliases: self.aliases,
            }),
        }
    }
}
