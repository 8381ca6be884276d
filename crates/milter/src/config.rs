//! The configuration file model (TOML).
//!
//! Every key is optional and has a default, so an empty file (or no file at
//! all) is a valid configuration. Unknown keys are errors. Errors name the
//! line, column and key. `docs/nobounce.toml` documents every key; a test
//! keeps it in sync with this model.

use nobounce_core::MemoryStore;
use nobounce_core::{
    dictionary::DictionaryConfig,
    recipient::{QuotaReply, RecipientPolicy},
    spf::SpfConfig,
    EngineConfig,
};
use nobounce_recipients::config::{BackendConfig, RecipientsConfig, RouteConfig};
use nobounce_store_redis::RedisConfig;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::{
    error::Error,
    fmt::{self, Display, Formatter},
    net::{IpAddr, SocketAddr},
    num::NonZeroU64,
    path::{Path, PathBuf},
    str::FromStr,
};

/// Where the milter listens.
#[derive(Clone, Debug, Eq, Hash, PartialEq)]
pub enum SocketSpec {
    /// `inet:HOST:PORT` (also `inet6:[::1]:PORT`).
    Inet(SocketAddr),
    /// `unix:PATH` (also `local:PATH`).
    Unix(PathBuf),
}

impl Default for SocketSpec {
    fn default() -> Self {
        Self::Inet(SocketAddr::from(([127, 0, 0, 1], 8894)))
    }
}

impl Display for SocketSpec {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Self::Inet(a) => write!(f, "inet:{a}"),
            Self::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl FromStr for SocketSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!("invalid socket {s:?}: expected \"inet:HOST:PORT\" or \"unix:/path/to/socket\"")
        };
        if let Some(path) = s.strip_prefix("unix:").or_else(|| s.strip_prefix("local:")) {
            if path.is_empty() {
                return Err(bad());
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        let rest = s
            .strip_prefix("inet:")
            .or_else(|| s.strip_prefix("inet6:"))
            .ok_or_else(bad)?;
        // Accept "HOST:PORT", "[v6]:PORT" and Sendmail's "PORT@HOST".
        let addr = if let Some((port, host)) = rest.split_once('@') {
            let ip: IpAddr = host.trim_matches(['[', ']']).parse().map_err(|_| bad())?;
            SocketAddr::new(ip, port.parse().map_err(|_| bad())?)
        } else if let Ok(a) = rest.parse::<SocketAddr>() {
            a
        } else {
            let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
            let port: u16 = port.parse().map_err(|_| bad())?;
            match host {
                "localhost" => SocketAddr::from(([127, 0, 0, 1], port)),
                h => SocketAddr::new(h.parse().map_err(|_| bad())?, port),
            }
        };
        Ok(Self::Inet(addr))
    }
}

impl<'de> Deserialize<'de> for SocketSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for SocketSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A DNS server address: `IP` (port 53) or `IP:PORT` / `[IPv6]:PORT`.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub struct Nameserver(pub SocketAddr);

impl<'de> Deserialize<'de> for Nameserver {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(Self(a));
        }
        s.parse::<IpAddr>()
            .map(|ip| Self(SocketAddr::new(ip, 53)))
            .map_err(|_| {
                serde::de::Error::custom(format!(
                    "invalid nameserver {s:?}: expected \"IP\" or \"IP:PORT\""
                ))
            })
    }
}

impl Serialize for Nameserver {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

/// `[dns]`: the resolver shared by all connections.
#[derive(Clone, Debug, Deserialize, Eq, PartialEq, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DnsSection {
    /// Servers to ask. Default: empty, meaning the system's resolv.conf.
    pub nameservers: Vec<Nameserver>,
    /// Timeout of one query, in seconds. Default: 5.
    pub timeout_secs: NonZeroU64,
    /// Tries per query. Default: 2.
    pub attempts: usize,
    /// Entries of the resolver's answer cache (answers kept for their TTL).
    /// Default: 4096.
    pub cache_size: usize,
}

impl Default for DnsSection {
    fn default() -> Self {
        Self {
            nameservers: Vec::new(),
            timeout_secs: NonZeroU64::new(5).expect("nonzero literal"),
            attempts: 2,
            cache_size: 4096,
        }
    }
}

/// `[milter]`: the milter protocol side.
#[derive(Clone, Debug, Deserialize, Eq, PartialEq, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MilterSection {
    /// Connections from the MTA served at once. Default: 1000.
    pub max_connections: usize,
    /// Idle timeout of one milter connection, in seconds. Default: 7210,
    /// like libmilter.
    pub connection_timeout_secs: NonZeroU64,
}

impl Default for MilterSection {
    fn default() -> Self {
        Self {
            max_connections: 1000,
            connection_timeout_secs: NonZeroU64::new(7210).expect("nonzero literal"),
        }
    }
}

/// `[log]`: logging.
#[derive(Clone, Debug, Deserialize, Eq, PartialEq, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSection {
    /// `error`, `warn`, `info`, `debug` or `trace`, or a `tracing` filter
    /// such as `"info,nobounce::spf=debug"`. `RUST_LOG` overrides it.
    /// Default: `"info"`.
    pub level: String,
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            level: "info".into(),
        }
    }
}

/// `[recipients]`: reply policy plus the directory backends and routes.
#[derive(Clone, Debug, Deserialize, Eq, PartialEq, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecipientsSection {
    /// `"452"` (default) or `"552"` for a full mailbox.
    pub over_quota: QuotaReply,
    /// Text of `550 5.1.1`. Default: `"No such user here"`.
    pub unknown_text: String,
    /// Text of `452 4.2.2` / `552 5.2.2`. Default: `"Mailbox full"`.
    pub over_quota_text: String,
    /// Text of `550 5.2.1`. Default:
    /// `"Mailbox disabled, not accepting messages"`.
    pub disabled_text: String,
    /// Named backends, `[recipients.backends.NAME]`. Default: none, and then
    /// nobounce does not judge recipients at all.
    pub backends: std::collections::BTreeMap<String, BackendConfig>,
    /// `[[recipients.routes]]`: which chain of backends serves which domains.
    pub routes: Vec<RouteConfig>,
    /// The chain for domains no route lists. Default: `[]` (the MTA decides).
    pub default_chain: Vec<String>,
}

impl Default for RecipientsSection {
    fn default() -> Self {
        let p = RecipientPolicy::default();
        Self {
            over_quota: p.over_quota,
            unknown_text: p.unknown_text,
            over_quota_text: p.over_quota_text,
            disabled_text: p.disabled_text,
            backends: Default::default(),
            routes: Vec::new(),
            default_chain: Vec::new(),
        }
    }
}

impl RecipientsSection {
    /// The reply policy.
    pub fn policy(&self) -> RecipientPolicy {
        RecipientPolicy {
            over_quota: self.over_quota,
            unknown_text: self.unknown_text.clone(),
            over_quota_text: self.over_quota_text.clone(),
            disabled_text: self.disabled_text.clone(),
        }
    }

    /// The backends and routes.
    pub fn directory_config(&self) -> RecipientsConfig {
        RecipientsConfig {
            backends: self.backends.clone(),
            routes: self.routes.clone(),
            default_chain: self.default_chain.clone(),
        }
    }

    /// `true` if any backend is configured.
    pub fn has_directory(&self) -> bool {
        !self.backends.is_empty()
    }
}

/// Which state store keeps counters and bans.
#[derive(Clone, Copy, Debug, Default, Deserialize, Eq, Hash, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// In this process only (one MX host). The default.
    #[default]
    Memory,
    /// Redis, shared by several MX hosts, with a local fallback while Redis
    /// is unreachable.
    Redis,
}

/// `[store]`: where counters and bans live.
#[derive(Clone, Debug, Deserialize, Eq, PartialEq, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSection {
    /// `"memory"` (default) or `"redis"`. Restart to change.
    pub backend: StoreBackend,
    /// Client keys the in-memory store keeps at most (also the local
    /// fallback of Redis). Default: 65536.
    pub max_keys: usize,
    /// The running milter's control socket, used by `nobounce ban ...` with
    /// the memory store: a unix socket path, created with mode 0600.
    /// `""` disables it. Default: `"/tmp/nobounce-control.sock"`.
    pub control_socket: String,
    /// Redis settings, for `backend = "redis"`.
    pub redis: RedisConfig,
}

impl Default for StoreSection {
    fn default() -> Self {
        Self {
            backend: StoreBackend::Memory,
            max_keys: MemoryStore::DEFAULT_MAX_KEYS,
            control_socket: "/tmp/nobounce-control.sock".into(),
            redis: RedisConfig::default(),
        }
    }
}

/// The whole configuration file.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where to listen. Default: `"inet:127.0.0.1:8894"`. Needs a restart to
    /// change.
    pub socket: SocketSpec,
    /// Log what would be refused, refuse nothing. Default: `false`.
    pub dry_run: bool,
    /// Logging.
    pub log: LogSection,
    /// Milter protocol settings.
    pub milter: MilterSection,
    /// DNS resolver.
    pub dns: DnsSection,
    /// SPF policy.
    pub spf: SpfConfig,
    /// Recipient checks: replies, backends and routes.
    pub recipients: RecipientsSection,
    /// Dictionary-attack bans.
    pub dictionary: DictionaryConfig,
    /// Shared state: counters and bans.
    pub store: StoreSection,
}

/// A configuration that could not be read or is invalid.
#[derive(Debug)]
pub struct ConfigError {
    message: String,
}

impl ConfigError {
    fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

impl Display for ConfigError {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl Error for ConfigError {}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.len(), |i| before.len() - i - 1)
        + 1;
    (line, col)
}

impl Config {
    /// Parses a configuration from TOML text; `origin` names it in errors.
    pub fn from_toml_str_named(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let msg = e.message().trim_end().to_owned();
            match e.span() {
                Some(span) => {
                    let (line, col) = line_col(text, span.start);
                    match key_at(text, span.start) {
                        Some(key) => {
                            ConfigError::new(format!("{origin}:{line}:{col}: {key}: {msg}"))
                        }
                        None => ConfigError::new(format!("{origin}:{line}:{col}: {msg}")),
                    }
                }
                None => ConfigError::new(format!("{origin}: {msg}")),
            }
        })?;
        config.validate(text, origin)?;
        Ok(config)
    }

    /// Parses a configuration from TOML text.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        Self::from_toml_str_named(text, "config")
    }

    /// Reads and parses a configuration file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(format!("{}: {e}", path.display())))?;
        Self::from_toml_str_named(&text, &path.display().to_string())
    }

    /// The effective configuration as TOML (defaults filled in).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot print configuration: {e}\n"))
    }

    /// The policy part, for the engine.
    pub fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            dry_run: self.dry_run,
            spf: self.spf.clone(),
            recipients: self.recipients.policy(),
            dictionary: self.dictionary.clone(),
        }
    }

    /// Cross-field checks that serde cannot express.
    fn validate(&self, text: &str, origin: &str) -> Result<(), ConfigError> {
        let at = |key: &str| {
            let line = find_key_line(text, key);
            line.map_or_else(|| origin.to_string(), |l| format!("{origin}:{l}"))
        };
        if self.spf.timeout_secs == 0 {
            return Err(ConfigError::new(format!(
                "{}: spf.timeout_secs must be at least 1",
                at("timeout_secs")
            )));
        }
        if self.milter.max_connections == 0 {
            return Err(ConfigError::new(format!(
                "{}: milter.max_connections must be at least 1",
                at("max_connections")
            )));
        }
        if let Some(id) = &self.spf.authserv_id {
            if id.is_empty()
                || id
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == ';')
            {
                return Err(ConfigError::new(format!(
                    "{}: spf.authserv_id {id:?} must be a non-empty token without spaces or ';'",
                    at("authserv_id")
                )));
            }
        }
        if self.store.max_keys == 0 {
            return Err(ConfigError::new(format!(
                "{}: store.max_keys must be at least 1",
                at("max_keys")
            )));
        }
        if self.store.backend == StoreBackend::Redis {
            if !(self.store.redis.url.starts_with("redis://")
                || self.store.redis.url.starts_with("rediss://")
                || self.store.redis.url.starts_with("redis+unix://")
                || self.store.redis.url.starts_with("unix://"))
            {
                return Err(ConfigError::new(format!(
                    "{}: store.redis.url {:?} must start with redis://, rediss:// or redis+unix://",
                    at("url"),
                    self.store.redis.url
                )));
            }
            if self.store.redis.timeout_ms == 0 {
                return Err(ConfigError::new(format!(
                    "{}: store.redis.timeout_ms must be at least 1",
                    at("timeout_ms")
                )));
            }
        }
        if let Err(e) = self.dictionary.validate() {
            return Err(ConfigError::new(format!(
                "{}: {e}",
                at_table(text, origin, "dictionary")
            )));
        }
        for (key, text_value) in [
            ("unknown_text", &self.recipients.unknown_text),
            ("over_quota_text", &self.recipients.over_quota_text),
            ("disabled_text", &self.recipients.disabled_text),
        ] {
            if text_value.chars().any(|c| c.is_control()) {
                return Err(ConfigError::new(format!(
                    "{}: recipients.{key} must not contain control characters (CR, LF, ...)",
                    at(key)
                )));
            }
        }
        Ok(())
    }
}

/// The dotted key (`spf.trusted_networks`) assigned on the line holding
/// `offset`, for error messages.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let line = &text[start..end];
    let key = line.split_once('=')?.0.trim();
    if key.is_empty() || key.starts_with('[') || key.starts_with('#') {
        return None;
    }
    let table = text[..start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(['[', ']']).trim().to_owned());
    Some(match table {
        Some(t) if !t.is_empty() => format!("{t}.{key}"),
        _ => key.to_owned(),
    })
}

/// `origin:line` of a `[table]` header, for errors about a whole table.
fn at_table(text: &str, origin: &str, table: &str) -> String {
    let header = format!("[{table}]");
    text.lines()
        .position(|l| l.trim() == header)
        .map_or_else(|| origin.to_string(), |i| format!("{origin}:{}", i + 1))
}

/// The first line that assigns `key`, for errors found after parsing.
fn find_key_line(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            l.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_default() {
        let c = Config::from_toml_str("").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.socket.to_string(), "inet:127.0.0.1:8894");
        assert!(c.spf.is_trusted("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn interface_keys_of_issue_2_parse() {
        let c = Config::from_toml_str(
            r#"
socket = "unix:/run/nobounce/milter.sock"
dry_run = true
[dns]
nameservers = ["127.0.0.1:5353", "::1", "10.0.0.1"]
timeout_secs = 3
[spf]
trusted_networks = []
"#,
        )
        .unwrap();
        assert_eq!(
            c.socket,
            SocketSpec::Unix("/run/nobounce/milter.sock".into())
        );
        assert!(c.dry_run);
        assert_eq!(c.dns.nameservers[0].0, "127.0.0.1:5353".parse().unwrap());
        assert_eq!(c.dns.nameservers[1].0, "[::1]:53".parse().unwrap());
        assert_eq!(c.dns.timeout_secs.get(), 3);
        assert!(c.spf.trusted_networks.is_empty());
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let e = Config::from_toml_str("dry_run = false\n\n[spf]\nverify_hello = true\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains(":4:"), "{e}");
        assert!(e.contains("verify_hello"), "{e}");
    }

    #[test]
    fn bad_values_name_line() {
        for (text, line, needle) in [
            ("socket = \"tcp:1.2.3.4\"\n", ":1:", "invalid socket"),
            ("[dns]\ntimeout_secs = 0\n", ":2:", "nonzero"),
            (
                "[spf]\n\ntrusted_networks = [\"10.0.0.0/33\"]\n",
                ":3:",
                "trusted_networks",
            ),
            ("[spf]\non_fail = \"bounce\"\n", ":2:", "bounce"),
            ("[spf]\ntimeout_secs = 0\n", ":2", "timeout_secs"),
            ("[recipients]\nover_quota = \"553\"\n", ":2:", "553"),
        ] {
            let e = Config::from_toml_str(text).unwrap_err().to_string();
            assert!(e.contains(line) && e.contains(needle), "{text:?} -> {e}");
        }
    }

    #[test]
    fn socket_forms() {
        for (s, want) in [
            ("inet:127.0.0.1:8894", "inet:127.0.0.1:8894"),
            ("inet:localhost:25", "inet:127.0.0.1:25"),
            ("inet:8894@127.0.0.1", "inet:127.0.0.1:8894"),
            ("inet6:[::1]:8894", "inet:[::1]:8894"),
            ("local:/tmp/x.sock", "unix:/tmp/x.sock"),
        ] {
            assert_eq!(s.parse::<SocketSpec>().unwrap().to_string(), want);
        }
        for s in [
            "",
            "inet:",
            "unix:",
            "inet:host",
            "inet:example.org:25",
            "8894",
        ] {
            assert!(s.parse::<SocketSpec>().is_err(), "{s}");
        }
    }

    #[test]
    fn effective_config_round_trips() {
        let c = Config::default();
        let again = Config::from_toml_str(&c.to_toml()).unwrap();
        assert_eq!(c, again);
    }
}
