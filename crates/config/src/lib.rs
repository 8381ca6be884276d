//! # nobounce-config
//!
//! The configuration file of nobounce, read in one pipeline:
//!
//! 1. [`raw`]: the file as written (every key optional, unknown keys
//!    refused), and [`locate::Source`]: the same text as toml's spanned
//!    document, so that every key path has its line and column;
//! 2. [`build`]: one builder that owns every default and every rule, single
//!    or across keys and tables, and reports each error at the line of the
//!    key it is about (`nobounce.toml:12:1: spf.timeout: ...`);
//! 3. [`Config`]: the immutable, validated result.
//!
//! What needs the world outside the file (map files, the DNS resolver, a
//! Redis client) is built from a `Config` by `nobounce-server`, which uses
//! [`Config::locate`] to report those errors at their keys too.
//!
//! Durations have one syntax everywhere: `"30s"`, `"10m"`, `"1h"`, `"7d"`
//! (humantime), or an integer of seconds. The older `*_secs` and `*_ms`
//! integer keys still work.
//!
//! `docs/nobounce.toml` documents every key; a test keeps it, the man page
//! and this model in sync.

pub mod build;
pub mod locate;
pub mod raw;

use nobounce_core::{
    batv::BatvConfig, bounce_guard::BounceGuardConfig, clock::serialize_duration,
    dictionary::DictionaryConfig, dnsbl::DnsblConfig, recipient::RecipientPolicy, spf::SpfConfig,
    Endpoint, EngineConfig,
};
use nobounce_recipients::RecipientsConfig;
use nobounce_store_redis::RedisConfig;
use serde::{Serialize, Serializer};
use std::{
    fmt::{self, Display, Formatter},
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

pub use crate::{
    locate::{Position, Source},
    raw::parse_duration,
};

/// The whole configuration, validated. Build it with
/// [`Config::from_file`], [`Config::from_toml_str_named`] or
/// [`Config::default`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Config {
    /// Where the milter listens. Default `inet:127.0.0.1:8894`. Restart to
    /// change.
    pub socket: Endpoint,
    /// Log what would be refused, refuse nothing, and write no shared state.
    pub dry_run: bool,
    /// The deadline of one SMTP command (see
    /// [`EngineConfig::command_timeout`]).
    #[serde(serialize_with = "serialize_duration")]
    pub command_timeout: Duration,
    /// `[log]`.
    pub log: LogConfig,
    /// `[milter]`.
    pub milter: MilterConfig,
    /// `[policy]`.
    pub policy: PolicyConfig,
    /// `[dns]`.
    pub dns: DnsConfig,
    /// `[spf]`.
    pub spf: SpfConfig,
    /// `[recipients]`.
    pub recipients: RecipientsSection,
    /// `[dictionary]`.
    pub dictionary: DictionaryConfig,
    /// `[dnsbl]`.
    pub dnsbl: DnsblConfig,
    /// `[batv]`.
    pub batv: BatvSection,
    /// `[bounce_guard]`.
    pub bounce_guard: BounceGuardConfig,
    /// `[metrics]`.
    pub metrics: MetricsConfig,
    /// `[store]`.
    pub store: StoreConfig,
    /// `[aliases]`.
    pub aliases: AliasesConfig,
    /// Where each key was written, for errors found later.
    #[serde(skip)]
    source: SourceRef,
}

/// `[log]`.
#[derive(Clone, Debug, Eq, PartialEq, Serialize)]
pub struct LogConfig {
    /// A tracing filter: `error` … `trace`, or `"info,nobounce::spf=debug"`.
    /// `RUST_LOG` overrides it. Default `"info"`. Applied on reload.
    pub level: String,
    /// `text` (the default) or `json`: one JSON object per line. Restart
    /// to change.
    pub format: LogFormat,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `2026-11-29T12:00:00.123456Z  INFO nobounce::decision: refused queue_id=...`
    #[default]
    Text,
    /// One JSON object per line, with `timestamp` (UTC), `level`, `target`
    /// and the event's `fields`.
    Json,
}

/// `[milter]`.
#[derive(Clone, Debug, Eq, PartialEq, Serialize)]
pub struct MilterConfig {
    /// Worker threads: 1 (the default) serves everything on one thread,
    /// which costs the least CPU per message; N more, N threads; 0, one per
    /// core. Restart to change.
    pub threads: usize,
    /// Milter connections served at once. Default 1000. Restart to change.
    pub max_connections: usize,
    /// Idle timeout of one milter connection. Default 7210 s (libmilter's).
    #[serde(serialize_with = "serialize_duration")]
    pub connection_timeout: Duration,
    /// Permissions of a unix milter socket, octal. Default `0660` (the MTA
    /// reaches it through the socket's group).
    #[serde(serialize_with = "serialize_mode")]
    pub socket_mode: u32,
    /// Owner (user name) of a unix milter socket; unset: the user nobounce
    /// runs as.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket_owner: Option<String>,
    /// Group of a unix milter socket (`postfix`, `smmsp`); unset: nobounce's
    /// primary group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket_group: Option<String>,
}

/// `[policy]`: the Postfix SMTP access policy delegation service, for
/// Postfix `check_policy_service`, Exim `${readsocket}` and the qmail
/// plugin. Restart to change.
#[derive(Clone, Debug, Eq, PartialEq, Serialize)]
pub struct PolicyConfig {
    /// Where it listens (`inet:HOST:PORT` or `unix:PATH`); `None` (absent
    /// or `""`, the default): no policy service. A unix socket gets the
    /// mode, owner and group of `[milter]`.
    #[serde(serialize_with = "serialize_optional_endpoint")]
    pub socket: Option<Endpoint>,
    /// Connections served at once. Default 1000.
    pub max_connections: usize,
    /// How long a connection may wait for its next request. Default 330 s,
    /// longer than Postfix's 300 s, so that Postfix closes first.
    #[serde(serialize_with = "serialize_duration")]
    pub idle_timeout: Duration,
}

fn serialize_optional_endpoint<S: Serializer>(
    e: &Option<Endpoint>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match e {
        Some(e) => s.collect_str(e),
        None => s.serialize_str(""),
    }
}

/// `[batv]`: the engine's settings, and where the keys are.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct BatvSection {
    /// What the engine uses.
    pub policy: BatvConfig,
    /// The key file: lines `K SECRET`, the last one signs (read at start
    /// and at each reload). Default `/etc/nobounce/batv.keys`.
    pub key_file: PathBuf,
}

impl Serialize for BatvSection {
    /// As the file writes it: `lifetime` as a duration in days.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let p = &self.policy;
        let mut t = s.serialize_struct("batv", 5)?;
        t.serialize_field("enabled", &p.enabled)?;
        t.serialize_field("domains", &p.domains)?;
        t.serialize_field("key_file", &self.key_file)?;
        t.serialize_field("lifetime", &format!("{}d", p.lifetime_days))?;
        t.serialize_field("unsigned", &p.unsigned)?;
        t.end()
    }
}

/// `[metrics]`: the Prometheus endpoint. Restart to change.
#[derive(Clone, Debug, Default, Eq, PartialEq, Serialize)]
pub struct MetricsConfig {
    /// Where `/metrics` is served (`IP:PORT`); `None` (absent or `""`, the
    /// default): no metrics endpoint.
    #[serde(serialize_with = "serialize_optional_addr")]
    pub listen: Option<SocketAddr>,
}

fn serialize_optional_addr<S: Serializer>(a: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
    match a {
        Some(a) => s.collect_str(a),
        None => s.serialize_str(""),
    }
}

/// `[dns]`.
#[derive(Clone, Debug, Eq, PartialEq, Serialize)]
pub struct DnsConfig {
    /// Servers to ask; empty: the system's resolv.conf.
    pub nameservers: Vec<SocketAddr>,
    /// Timeout of one try of a query. Default 5 s.
    #[serde(serialize_with = "serialize_duration")]
    pub timeout: Duration,
    /// Tries per query, the first included. Default 2.
    pub attempts: usize,
    /// Answers kept by the resolver's cache. Default 4096.
    pub cache_size: usize,
}

/// `[recipients]`: the reply policy, and the backends and routes.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RecipientsSection {
    /// Replies.
    #[serde(flatten)]
    pub policy: RecipientPolicy,
    /// Backends and routes; none: nobounce does not judge recipients.
    #[serde(flatten)]
    pub directory: RecipientsConfig,
}

impl RecipientsSection {
    /// Whether any backend is configured.
    pub fn has_directory(&self) -> bool {
        !self.directory.backends.is_empty()
    }
}

/// Which state store keeps counters and bans.
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// In this process only (one MX host). The default.
    #[default]
    Memory,
    /// Redis, shared by several MX hosts, with a local fallback.
    Redis,
}

/// Where the control socket (for `nobounce ban ...`) is.
#[derive(Clone, Debug, Default, Eq, PartialEq)]
pub enum ControlSocket {
    /// `"auto"`, the default: `/run/nobounce/control.sock` for root; for
    /// other users `$RUNTIME_DIRECTORY/control.sock` (systemd's
    /// `RuntimeDirectory=nobounce` gives `/run/nobounce`) or
    /// `$XDG_RUNTIME_DIR/nobounce/control.sock`; none when none fits.
    #[default]
    Auto,
    /// `""`: no control socket.
    Off,
    /// A path of one's own.
    Path(PathBuf),
}

impl ControlSocket {
    /// The path to use, if any, for a process running as `uid` with the
    /// given `RUNTIME_DIRECTORY` and `XDG_RUNTIME_DIR`.
    pub fn resolve(
        &self,
        uid: u32,
        runtime_directory: Option<&Path>,
        xdg_runtime_dir: Option<&Path>,
    ) -> Option<PathBuf> {
        let absolute = |d: Option<&Path>| d.filter(|d| d.is_absolute()).map(Path::to_path_buf);
        match self {
            Self::Off => None,
            Self::Path(p) => Some(p.clone()),
            Self::Auto if uid == 0 => Some(PathBuf::from("/run/nobounce/control.sock")),
            Self::Auto => absolute(runtime_directory)
                .map(|d| d.join("control.sock"))
                .or_else(|| absolute(xdg_runtime_dir).map(|d| d.join("nobounce/control.sock"))),
        }
    }

    /// The path for this process (its effective uid and environment).
    pub fn path(&self) -> Option<PathBuf> {
        let var = |name: &str| std::env::var_os(name).map(PathBuf::from);
        // systemd may list several directories; the first is nobounce's.
        let runtime = var("RUNTIME_DIRECTORY").and_then(|d| {
            d.to_str()
                .and_then(|s| s.split(':').next())
                .map(PathBuf::from)
        });
        self.resolve(
            effective_uid(),
            runtime.as_deref(),
            var("XDG_RUNTIME_DIR").as_deref(),
        )
    }
}

/// The effective user id of this process, read from `/proc/self/status`
/// (no `unsafe` FFI call).
pub fn effective_uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(u32::MAX)
}

impl Serialize for ControlSocket {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Auto => s.serialize_str("auto"),
            Self::Off => s.serialize_str(""),
            Self::Path(p) => s.collect_str(&p.display()),
        }
    }
}

/// `[store]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct StoreConfig {
    /// `"memory"` or `"redis"`. Restart to change.
    pub backend: StoreBackend,
    /// Client keys the memory store keeps at most (also Redis's local
    /// fallback). Active bans are never evicted. Default 65536.
    pub max_keys: usize,
    /// The control socket of the running milter.
    pub control_socket: ControlSocket,
    /// `[store.redis]`, for `backend = "redis"`.
    pub redis: RedisConfig,
}

/// Where aliases live (`[aliases] store`).
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AliasBackend {
    /// An SQLite file on this host (`[aliases] path`). The default.
    #[default]
    Sqlite,
    /// Redis (`[store.redis]`), shared by several MX hosts.
    Redis,
}

/// `[aliases]`: per-correspondent aliases (docs/aliases.md, issue 11).
#[derive(Clone, Debug, PartialEq)]
pub struct AliasesConfig {
    /// The alias domains, lower case without a trailing dot. Empty (the
    /// default): no aliases.
    pub domains: Vec<String>,
    /// Where aliases live. Restart to change.
    pub store: AliasBackend,
    /// The SQLite file (`store = "sqlite"`), shared by the daemon and
    /// `nobounce alias`. Default `/var/lib/nobounce/aliases.db`. Restart to
    /// change.
    pub path: PathBuf,
    /// How new aliases look (`format`, `random_length`). Default
    /// `{correspondent}.{random}` with 5 random characters.
    pub format: nobounce_core::alias::AliasFormat,
    /// The mailbox of `nobounce alias new` without `--mailbox`; `None`
    /// (`""`, the default): `--mailbox` is required.
    pub default_mailbox: Option<String>,
    /// Where the Postfix socketmap service listens (`inet:HOST:PORT` or
    /// `unix:PATH`); `None` (`""`, the default): not served. A unix socket
    /// gets the mode, owner and group of `[milter]`. Restart to change.
    pub socketmap: Option<Endpoint>,
}

impl AliasesConfig {
    /// Whether aliases are configured (some alias domain is).
    pub fn is_enabled(&self) -> bool {
        !self.domains.is_empty()
    }
}

impl Serialize for AliasesConfig {
    /// As the file writes it.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut t = s.serialize_struct("aliases", 7)?;
        t.serialize_field("domains", &self.domains)?;
        t.serialize_field("store", &self.store)?;
        t.serialize_field("path", &self.path)?;
        t.serialize_field("format", self.format.template())?;
        t.serialize_field("random_length", &self.format.random_length())?;
        t.serialize_field(
            "default_mailbox",
            self.default_mailbox.as_deref().unwrap_or(""),
        )?;
        t.serialize_field(
            "socketmap",
            &self
                .socketmap
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
        )?;
        t.end()
    }
}

fn serialize_mode<S: Serializer>(mode: &u32, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("{mode:04o}"))
}

/// The text a configuration was read from, compared as equal always (two
/// configurations are equal when their settings are), and shown by its
/// name only (the text may hold a password).
#[derive(Clone, Default)]
struct SourceRef(Option<Arc<Source>>);

impl fmt::Debug for SourceRef {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Source")
            .field(&self.0.as_ref().map(|s| s.origin.as_str()))
            .finish()
    }
}

impl PartialEq for SourceRef {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Default for Config {
    fn default() -> Self {
        build::build_defaults()
    }
}

impl Config {
    /// Reads and checks a configuration file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                origin: path.display().to_string(),
                position: None,
                key: None,
                message: format!("cannot read the configuration file: {e}"),
            }])
        })?;
        Self::from_toml_str_named(&text, &path.display().to_string())
    }

    /// Reads and checks a configuration from TOML text; `origin` names it in
    /// errors.
    pub fn from_toml_str_named(text: &str, origin: &str) -> Result<Self, ConfigErrors> {
        build::build(Source::new(origin, text))
    }

    /// Reads and checks a configuration from TOML text.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigErrors> {
        Self::from_toml_str_named(text, "config")
    }

    /// The effective configuration as TOML, every default filled in (a
    /// Redis password is shown as `***`).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot print configuration: {e}\n"))
    }

    /// The policy part, for the engine.
    pub fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            dry_run: self.dry_run,
            command_timeout: self.command_timeout,
            spf: self.spf.clone(),
            recipients: self.recipients.policy.clone(),
            dictionary: self.dictionary.clone(),
            dnsbl: self.dnsbl.clone(),
            batv: self.batv.policy.clone(),
            bounce_guard: self.bounce_guard.clone(),
            alias_domains: self.aliases.domains.clone(),
        }
    }

    /// An error about `key` (`recipients.backends.users.path`), located
    /// where the file sets it.
    pub fn error_at(&self, key: &str, message: impl Display) -> ConfigError {
        let source = self.source.0.as_deref();
        ConfigError {
            origin: source.map_or_else(|| "config".into(), |s| s.origin.clone()),
            position: source.and_then(|s| s.position_of(key)),
            key: Some(key.to_owned()),
            message: message.to_string(),
        }
    }

    /// Where the file sets `key`: `file:line:col`, or the file name.
    pub fn locate(&self, key: &str) -> String {
        let e = self.error_at(key, "");
        e.location()
    }

    /// The name of the file (or text) this configuration was read from.
    pub fn origin(&self) -> Option<&str> {
        self.source.0.as_deref().map(|s| s.origin.as_str())
    }
}

/// One error in a configuration: where, which key, what.
#[derive(Clone, Debug, Eq, PartialEq, thiserror::Error)]
#[error("{}: {}{message}", self.location(), self.key.as_deref().map(|k| format!("{k}: ")).unwrap_or_default())]
pub struct ConfigError {
    /// The file name (or another name of the text).
    pub origin: String,
    /// Where, when known.
    pub position: Option<Position>,
    /// The dotted key (`spf.timeout`), when the error is about one.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    /// `file:line:col`, or `file` when the position is unknown.
    pub fn location(&self) -> String {
        match self.position {
            Some(p) => format!("{}:{}:{}", self.origin, p.line, p.column),
            None => self.origin.clone(),
        }
    }
}

/// Every error found in one configuration, in file order; one per line
/// when displayed ([`ConfigErrors::one_line`] for a log line).
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// The errors joined with `"; "`, for a log line.
    pub fn one_line(&self) -> String {
        self.0
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    }
}

impl Display for ConfigErrors {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0
            .first()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}
