//! The builder: raw model → validated [`Config`]. Every default and every
//! rule of the configuration file is here, and nowhere else; each error is
//! reported at the line of the key it is about.

use crate::{
    locate::Source,
    raw::{
        RawBackend, RawBatv, RawBounceGuard, RawCache, RawConfig, RawDictionary, RawDns, RawDnsbl,
        RawDuration, RawLog, RawMetrics, RawMilter, RawPolicy, RawRecipients, RawRedis, RawSpf,
        RawStore,
    },
    AliasBackend, BatvSection, Config, ConfigError, ConfigErrors, ControlSocket, DnsConfig,
    LogConfig, LogFormat, MetricsConfig, MilterConfig, PolicyConfig, RecipientsSection, SourceRef,
    StoreBackend, StoreConfig,
};
use ipnet::IpNet;
use nobounce_core::{
    batv::{BatvConfig, Unsigned},
    bounce_guard::{BounceGuardConfig, GuardAction},
    dictionary::{DictionaryConfig, MAX_BAN},
    dnsbl::{DnsblConfig, DnsblMode, DnsblOnError, DnsblZone},
    recipient::{QuotaReply, RecipientPolicy},
    spf::{SpfAction, SpfConfig, SpfHeader},
    store::MAX_DISTINCT_MEMBERS,
    Endpoint, EngineConfig, MemoryStore,
};
use nobounce_recipients::{
    check_routes, BackendConfig, CacheConfig, MaildirConfig, MapFileConfig, MissingMaildir,
    ProbeProtocol, QuotaStatusConfig, RcptProbeConfig, RecipientsConfig, RouteConfig,
    ServerSettings,
};
use nobounce_store_redis::{check_url, RedisConfig};
use std::{
    fmt::Display,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    str::FromStr,
    sync::Arc,
    time::Duration,
};

/// A setting whose value is one word of a fixed list.
trait Choice: Copy + 'static {
    /// The words, and what each means.
    const WORDS: &'static [(&'static str, Self)];
}

/// `Type: "word" => Variant, ...;` a line: the words of each setting.
macro_rules! choices {
    ($($ty:ident: $($word:literal => $variant:ident),+;)*) => {
        $(impl Choice for $ty {
            const WORDS: &'static [(&'static str, Self)] = &[$(($word, $ty::$variant)),+];
        })*
    };
}

choices! {
    LogFormat: "text" => Text, "json" => Json;
    SpfAction: "accept" => Accept, "reject" => Reject, "tempfail" => Tempfail;
    QuotaReply: "452" => Temporary, "552" => Permanent;
    ProbeProtocol: "lmtp" => Lmtp, "smtp" => Smtp;
    MissingMaildir: "not_handled" => NotHandled, "unknown" => Unknown;
    GuardAction: "quarantine" => Quarantine, "discard" => Discard;
    Unsigned: "accept" => Accept, "reject" => Reject;
    DnsblMode: "safe" => Safe, "all" => All;
    DnsblOnError: "accept" => Accept, "tempfail" => Tempfail;
    AliasBackend: "sqlite" => Sqlite, "redis" => Redis;
    StoreBackend: "memory" => Memory, "redis" => Redis;
}

const SECOND: Duration = Duration::from_secs(1);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

/// The configuration of an empty file.
pub(crate) fn build_defaults() -> Config {
    let source = Source::new("defaults", "");
    Builder::new(&source).config(RawConfig::default())
}

/// Reads `source` into a configuration, or every error in it.
pub(crate) fn build(source: Source) -> Result<Config, ConfigErrors> {
    let raw: RawConfig = toml::from_str(source.text()).map_err(|e| {
        let position = e.span().map(|s| source.position_at(s.start));
        let key = e
            .span()
            .and_then(|s| source.path_at(s.start))
            .map(str::to_owned);
        ConfigErrors(vec![ConfigError {
            origin: source.origin.clone(),
            position,
            key,
            message: e.message().trim_end().to_owned(),
        }])
    })?;
    let mut builder = Builder::new(&source);
    let mut config = builder.config(raw);
    if builder.errors.is_empty() {
        config.source = SourceRef(Some(Arc::new(source)));
        Ok(config)
    } else {
        let mut errors = builder.errors;
        errors.sort_by_key(|e| e.position.map(|p| (p.line, p.column)));
        Err(ConfigErrors(errors))
    }
}

/// Unit of an old integer key (`timeout_secs`, `timeout_ms`).
#[derive(Clone, Copy)]
enum Unit {
    Secs,
    Millis,
}

struct Builder<'a> {
    source: &'a Source,
    errors: Vec<ConfigError>,
}

impl<'a> Builder<'a> {
    fn new(source: &'a Source) -> Self {
        Self {
            source,
            errors: Vec::new(),
        }
    }

    fn err(&mut self, key: &str, message: impl Display) {
        self.errors.push(ConfigError {
            origin: self.source.origin.clone(),
            position: self.source.position_of(key),
            key: Some(key.to_owned()),
            message: message.to_string(),
        });
    }

    /// The duration `name` of `table`, within `min..=max`; it has no older
    /// integer form.
    fn duration(
        &mut self,
        table: &str,
        name: &str,
        value: Option<RawDuration>,
        default: Duration,
        min: Duration,
        max: Duration,
    ) -> Duration {
        self.duration_or_old(table, name, value, None, Unit::Secs, default, min, max)
    }

    /// The duration `name` of `table`, also readable from its older integer
    /// key (`{name}_secs` or `{name}_ms`, by `unit`), within `min..=max`.
    #[allow(clippy::too_many_arguments)]
    fn duration_or_old(
        &mut self,
        table: &str,
        name: &str,
        new: Option<RawDuration>,
        old: Option<i64>,
        unit: Unit,
        default: Duration,
        min: Duration,
        max: Duration,
    ) -> Duration {
        let key = join(table, name);
        let old_key = match unit {
            Unit::Secs => format!("{key}_secs"),
            Unit::Millis => format!("{key}_ms"),
        };
        let (value, at) = match (new, old) {
            (Some(_), Some(_)) => {
                self.err(
                    &old_key,
                    format!("set either {name} or its older form, not both"),
                );
                return default;
            }
            (Some(RawDuration(d)), None) => (d, key),
            (None, Some(n)) => match u64::try_from(n) {
                Ok(n) => (
                    match unit {
                        Unit::Secs => Duration::from_secs(n),
                        Unit::Millis => Duration::from_millis(n),
                    },
                    old_key,
                ),
                Err(_) => {
                    self.err(&old_key, "must not be negative");
                    return default;
                }
            },
            (None, None) => return default,
        };
        if value < min || value > max {
            self.err(
                &at,
                format!(
                    "must be between {} and {}, not {}",
                    show(min),
                    show(max),
                    show(value)
                ),
            );
            return default;
        }
        value
    }

    /// An integer key within `min..=max`.
    fn number<T>(&mut self, key: &str, value: Option<i64>, default: T, min: i64, max: i64) -> T
    where
        T: TryFrom<i64>,
    {
        let Some(n) = value else { return default };
        if n < min || n > max {
            self.err(key, format!("must be between {min} and {max}, not {n}"));
            return default;
        }
        T::try_from(n).unwrap_or(default)
    }

    /// A key with a few allowed words.
    fn choice<T: Choice>(&mut self, key: &str, value: Option<String>, default: T) -> T {
        let Some(word) = value else { return default };
        match T::WORDS.iter().find(|(w, _)| *w == word) {
            Some((_, v)) => *v,
            None => {
                let allowed: Vec<String> = T::WORDS.iter().map(|(w, _)| format!("{w:?}")).collect();
                self.err(
                    key,
                    format!("{word:?} is not one of {}", allowed.join(", ")),
                );
                default
            }
        }
    }

    /// A list of values parsed with `FromStr`, each error at its element.
    fn list<T: FromStr>(
        &mut self,
        key: &str,
        value: Option<Vec<String>>,
        default: Vec<T>,
        what: &str,
    ) -> Vec<T>
    where
        T::Err: Display,
    {
        let Some(items) = value else { return default };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match item.parse() {
                Ok(v) => out.push(v),
                Err(e) => self.err(
                    &format!("{key}[{i}]"),
                    format!("invalid {what} {item:?}: {e}"),
                ),
            }
        }
        out
    }

    /// A reply text: no control characters, not empty.
    fn text(&mut self, key: &str, value: Option<String>, default: String) -> String {
        let Some(text) = value else { return default };
        if text.trim().is_empty() || text.chars().any(char::is_control) {
            self.err(
                key,
                "must be a non-empty line without control characters (CR, LF, ...)",
            );
            return default;
        }
        text
    }

    fn config(&mut self, raw: RawConfig) -> Config {
        let engine = EngineConfig::default();
        let command_timeout = self.duration(
            "",
            "command_timeout",
            raw.command_timeout,
            engine.command_timeout,
            SECOND,
            Duration::from_secs(600),
        );
        let socket = self.socket(raw.socket);
        let policy = self.policy(raw.policy.unwrap_or_default());
        if policy.socket.as_ref() == Some(&socket) {
            self.err(
                "policy.socket",
                format!("{socket} is the milter's socket already: give the policy service its own"),
            );
        }
        let spf = self.spf(raw.spf.unwrap_or_default(), command_timeout);
        let recipients = self.recipients(raw.recipients.unwrap_or_default(), command_timeout);
        let store = self.store(raw.store.unwrap_or_default(), command_timeout);
        let aliases = self.aliases(raw.aliases.unwrap_or_default(), &socket, &policy, &store);
        Config {
            socket,
            dry_run: raw.dry_run.unwrap_or(engine.dry_run),
            command_timeout,
            log: self.log(raw.log.unwrap_or_default()),
            milter: self.milter(raw.milter.unwrap_or_default()),
            policy,
            dns: self.dns(raw.dns.unwrap_or_default(), command_timeout),
            spf,
            recipients,
            dictionary: self.dictionary(raw.dictionary.unwrap_or_default()),
            dnsbl: self.dnsbl(raw.dnsbl.unwrap_or_default()),
            batv: self.batv(raw.batv.unwrap_or_default()),
            bounce_guard: self.bounce_guard(raw.bounce_guard.unwrap_or_default()),
            metrics: self.metrics(raw.metrics.unwrap_or_default()),
            store,
            aliases,
            source: SourceRef(None),
        }
    }

    fn policy(&mut self, raw: RawPolicy) -> PolicyConfig {
        let socket = raw
            .socket
            .filter(|s| !s.trim().is_empty())
            .and_then(|text| self.listen_endpoint("policy.socket", &text));
        PolicyConfig {
            socket,
            max_connections: self.number(
                "policy.max_connections",
                raw.max_connections,
                1000,
                1,
                100_000,
            ),
            idle_timeout: self.duration(
                "policy",
                "idle_timeout",
                raw.idle_timeout,
                Duration::from_secs(330),
                SECOND,
                DAY,
            ),
        }
    }

    fn socket(&mut self, raw: Option<String>) -> Endpoint {
        let default = Endpoint::tcp(SocketAddr::from(([127, 0, 0, 1], 8894)));
        let Some(text) = raw else { return default };
        self.listen_endpoint("socket", &text).unwrap_or(default)
    }

    /// `text` at `key` as an endpoint to listen on; `None` after an error
    /// there when it does not parse or names a host rather than an address.
    fn listen_endpoint(&mut self, key: &str, text: &str) -> Option<Endpoint> {
        match text
            .parse::<Endpoint>()
            .and_then(|e| e.listen_addr().map(|_| e))
        {
            Ok(e) => Some(e),
            Err(why) => {
                self.err(key, why);
                None
            }
        }
    }

    fn log(&mut self, raw: RawLog) -> LogConfig {
        let level = raw.level.unwrap_or_else(|| "info".into());
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&level) {
            self.err("log.level", format!("invalid log filter {level:?}: {e}"));
        }
        let format = self.choice("log.format", raw.format, LogFormat::Text);
        LogConfig { level, format }
    }

    fn milter(&mut self, raw: RawMilter) -> MilterConfig {
        let socket_mode = match raw.socket_mode {
            None => 0o660,
            Some(text) => match u32::from_str_radix(text.trim_start_matches("0o"), 8) {
                Ok(mode) if mode <= 0o777 && mode & 0o007 == 0 => mode,
                Ok(mode) if mode <= 0o777 => {
                    self.err(
                        "milter.socket_mode",
                        format!(
                            "{text:?} lets every local user talk to the milter (and forge client addresses): give no rights to others, e.g. \"0660\""
                        ),
                    );
                    0o660
                }
                _ => {
                    self.err(
                        "milter.socket_mode",
                        format!("{text:?} is not an octal mode such as \"0660\""),
                    );
                    0o660
                }
            },
        };
        let name = |b: &mut Self, key: &str, v: Option<String>| {
            v.filter(|n| {
                let ok = !n.is_empty()
                    && n.bytes()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'));
                if !ok {
                    b.err(key, format!("{n:?} is not a user or group name"));
                }
                ok
            })
        };
        MilterConfig {
            threads: self.number("milter.threads", raw.threads, 1, 0, 1024),
            max_connections: self.number(
                "milter.max_connections",
                raw.max_connections,
                1000,
                1,
                100_000,
            ),
            connection_timeout: self.duration_or_old(
                "milter",
                "connection_timeout",
                raw.connection_timeout,
                raw.connection_timeout_secs,
                Unit::Secs,
                Duration::from_secs(7210),
                SECOND,
                DAY,
            ),
            socket_mode,
            socket_owner: name(self, "milter.socket_owner", raw.socket_owner),
            socket_group: name(self, "milter.socket_group", raw.socket_group),
        }
    }

    fn dns(&mut self, raw: RawDns, command_timeout: Duration) -> DnsConfig {
        let mut nameservers = Vec::new();
        for (i, text) in raw.nameservers.unwrap_or_default().iter().enumerate() {
            match text
                .parse::<SocketAddr>()
                .or_else(|_| text.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
            {
                Ok(a) => nameservers.push(a),
                Err(_) => self.err(
                    &format!("dns.nameservers[{i}]"),
                    format!("invalid nameserver {text:?}: expected \"IP\" or \"IP:PORT\""),
                ),
            }
        }
        DnsConfig {
            nameservers,
            timeout: self.duration_or_old(
                "dns",
                "timeout",
                raw.timeout,
                raw.timeout_secs,
                Unit::Secs,
                Duration::from_secs(5),
                Duration::from_millis(100),
                command_timeout,
            ),
            attempts: self.number("dns.attempts", raw.attempts, 2, 1, 10),
            cache_size: self.number("dns.cache_size", raw.cache_size, 4096, 0, 10_000_000),
        }
    }

    fn spf(&mut self, raw: RawSpf, command_timeout: Duration) -> SpfConfig {
        let d = SpfConfig::default();
        let on_temperror = self.choice("spf.on_temperror", raw.on_temperror, d.on_temperror);
        if on_temperror == SpfAction::Reject {
            self.err(
                "spf.on_temperror",
                "\"reject\" would turn every DNS outage into permanent refusals: use \"tempfail\" (or \"accept\")",
            );
        }
        let mut headers = Vec::new();
        if let Some(list) = raw.headers {
            for (i, h) in list.iter().enumerate() {
                let key = format!("spf.headers[{i}]");
                let header = match h.as_str() {
                    "Received-SPF" => SpfHeader::ReceivedSpf,
                    "Authentication-Results" => SpfHeader::AuthenticationResults,
                    _ => {
                        self.err(
                            &key,
                            format!("{h:?} is not \"Received-SPF\" or \"Authentication-Results\""),
                        );
                        continue;
                    }
                };
                if headers.contains(&header) {
                    self.err(&key, format!("{h:?} listed twice"));
                }
                headers.push(header);
            }
        } else {
            headers = d.headers.clone();
        }
        let authserv_id = raw.authserv_id.filter(|id| {
            let ok = !id.is_empty()
                && !id
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == ';');
            if !ok {
                self.err(
                    "spf.authserv_id",
                    format!("{id:?} must be a non-empty token without spaces or ';'"),
                );
            }
            ok
        });
        let skip_senders: Vec<String> = raw.skip_senders.unwrap_or_default();
        for (i, s) in skip_senders.iter().enumerate() {
            let domain = s.strip_prefix('.').unwrap_or(s);
            if domain.is_empty()
                || domain
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '@')
            {
                self.err(
                    &format!("spf.skip_senders[{i}]"),
                    format!("{s:?} is not a domain (or .domain)"),
                );
            }
        }
        SpfConfig {
            enabled: raw.enabled.unwrap_or(d.enabled),
            verify_helo: raw.verify_helo.unwrap_or(d.verify_helo),
            trusted_networks: self.list::<IpNet>(
                "spf.trusted_networks",
                raw.trusted_networks,
                d.trusted_networks,
                "network",
            ),
            skip_authenticated: raw.skip_authenticated.unwrap_or(d.skip_authenticated),
            skip_senders,
            on_fail: self.choice("spf.on_fail", raw.on_fail, d.on_fail),
            on_softfail: self.choice("spf.on_softfail", raw.on_softfail, d.on_softfail),
            on_neutral: self.choice("spf.on_neutral", raw.on_neutral, d.on_neutral),
            on_none: self.choice("spf.on_none", raw.on_none, d.on_none),
            on_permerror: self.choice("spf.on_permerror", raw.on_permerror, d.on_permerror),
            on_temperror,
            headers,
            authserv_id,
            timeout: self.duration_or_old(
                "spf",
                "timeout",
                raw.timeout,
                raw.timeout_secs,
                Unit::Secs,
                d.timeout.min(command_timeout),
                SECOND,
                command_timeout,
            ),
            cache_size: self.number(
                "spf.cache_size",
                raw.cache_size,
                d.cache_size,
                0,
                10_000_000,
            ),
            cache_max_ttl: self.duration_or_old(
                "spf",
                "cache_max_ttl",
                raw.cache_max_ttl,
                raw.cache_max_ttl_secs,
                Unit::Secs,
                d.cache_max_ttl,
                Duration::ZERO,
                DAY,
            ),
        }
    }

    fn recipients(&mut self, raw: RawRecipients, command_timeout: Duration) -> RecipientsSection {
        let d = RecipientPolicy::default();
        let policy = RecipientPolicy {
            over_quota: self.choice("recipients.over_quota", raw.over_quota, d.over_quota),
            unknown_text: self.text("recipients.unknown_text", raw.unknown_text, d.unknown_text),
            over_quota_text: self.text(
                "recipients.over_quota_text",
                raw.over_quota_text,
                d.over_quota_text,
            ),
            disabled_text: self.text(
                "recipients.disabled_text",
                raw.disabled_text,
                d.disabled_text,
            ),
        };
        let mut backends = std::collections::BTreeMap::new();
        for (name, backend) in raw.backends.unwrap_or_default() {
            let table = format!("recipients.backends.{name}");
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
            {
                self.err(
                    &table,
                    format!("backend name {name:?}: use letters, digits, '_' and '-'"),
                );
                continue;
            }
            if let Some(b) = self.backend(&table, backend, command_timeout) {
                backends.insert(name, b);
            }
        }
        let routes = raw
            .routes
            .unwrap_or_default()
            .into_iter()
            .map(|r| RouteConfig {
                domains: r.domains.unwrap_or_default(),
                chain: r.chain.unwrap_or_default(),
            })
            .collect();
        let directory = RecipientsConfig {
            backends,
            routes,
            default_chain: raw.default_chain.unwrap_or_default(),
        };
        if let Err(e) = check_routes(&directory) {
            self.err(&e.key, e.problem);
        }
        RecipientsSection { policy, directory }
    }

    /// Refuses the keys of `backend` that its type does not have.
    fn only_keys(&mut self, table: &str, kind: &str, backend: &RawBackend, allowed: &[&str]) {
        for key in backend.keys_set() {
            if key != "type" && !allowed.contains(&key) {
                self.err(
                    &format!("{table}.{key}"),
                    format!(
                        "a {kind} backend has no {key} (it has: {})",
                        allowed.join(", ")
                    ),
                );
            }
        }
    }

    fn required(&mut self, table: &str, key: &str, value: Option<String>) -> Option<String> {
        if value.is_none() {
            self.err(table, format!("{key} is required"));
        }
        value
    }

    fn backend(
        &mut self,
        table: &str,
        raw: RawBackend,
        command_timeout: Duration,
    ) -> Option<BackendConfig> {
        let kind = raw.r#type.clone().unwrap_or_default();
        match kind.as_str() {
            "map_file" => {
                self.only_keys(
                    table,
                    &kind,
                    &raw,
                    &[
                        "path",
                        "watch_interval",
                        "case_sensitive_local_part",
                        "recipient_delimiter",
                    ],
                );
                let path = self.required(table, "path", raw.path)?;
                let mut c = MapFileConfig::new(PathBuf::from(path));
                c.watch_interval = self.duration(
                    table,
                    "watch_interval",
                    raw.watch_interval,
                    c.watch_interval,
                    Duration::ZERO,
                    DAY,
                );
                c.case_sensitive_local_part = raw.case_sensitive_local_part.unwrap_or(false);
                c.recipient_delimiter = self.delimiter(table, raw.recipient_delimiter);
                Some(BackendConfig::MapFile(c))
            }
            "rcpt_probe" => {
                self.only_keys(
                    table,
                    &kind,
                    &raw,
                    &[
                        "address",
                        "protocol",
                        "helo_name",
                        "timeout",
                        "max_connections",
                        "max_idle",
                        "idle_timeout",
                        "cache",
                    ],
                );
                let protocol = self.choice(
                    &format!("{table}.protocol"),
                    raw.protocol.clone(),
                    ProbeProtocol::Lmtp,
                );
                let helo_name = raw.helo_name.clone().filter(|h| {
                    let ok =
                        !h.is_empty() && !h.chars().any(|c| c.is_whitespace() || c.is_control());
                    if !ok {
                        self.err(
                            &format!("{table}.helo_name"),
                            format!("invalid helo_name {h:?}"),
                        );
                    }
                    ok
                });
                let server = self.server(table, raw, command_timeout)?;
                let mut c = RcptProbeConfig::new(server.address.clone());
                c.server = server;
                c.protocol = protocol;
                if let Some(h) = helo_name {
                    c.helo_name = h;
                }
                Some(BackendConfig::RcptProbe(c))
            }
            "quota_status" => {
                self.only_keys(
                    table,
                    &kind,
                    &raw,
                    &[
                        "address",
                        "timeout",
                        "max_connections",
                        "max_idle",
                        "idle_timeout",
                        "cache",
                    ],
                );
                let server = self.server(table, raw, command_timeout)?;
                Some(BackendConfig::QuotaStatus(QuotaStatusConfig { server }))
            }
            "maildir" => {
                self.only_keys(
                    table,
                    &kind,
                    &raw,
                    &[
                        "path_template",
                        "missing",
                        "case_sensitive_local_part",
                        "recipient_delimiter",
                        "timeout",
                    ],
                );
                let text = self.required(table, "path_template", raw.path_template)?;
                let template = match text.parse() {
                    Ok(t) => t,
                    Err(why) => {
                        self.err(&format!("{table}.path_template"), why);
                        return None;
                    }
                };
                let mut c = MaildirConfig::new(template);
                c.missing = self.choice(&format!("{table}.missing"), raw.missing, c.missing);
                c.case_sensitive_local_part = raw.case_sensitive_local_part.unwrap_or(false);
                c.recipient_delimiter = self.delimiter(table, raw.recipient_delimiter);
                c.timeout = self.backend_timeout(table, raw.timeout, c.timeout, command_timeout);
                Some(BackendConfig::Maildir(c))
            }
            "" => {
                self.err(table, "type is required: \"map_file\", \"rcpt_probe\", \"quota_status\" or \"maildir\"");
                None
            }
            other => {
                self.err(
                    &format!("{table}.type"),
                    format!("{other:?} is not \"map_file\", \"rcpt_probe\", \"quota_status\" or \"maildir\""),
                );
                None
            }
        }
    }

    /// A backend's `timeout`: at most the command's deadline.
    fn backend_timeout(
        &mut self,
        table: &str,
        raw: Option<RawDuration>,
        default: Duration,
        command_timeout: Duration,
    ) -> Duration {
        self.duration(
            table,
            "timeout",
            raw,
            default.min(command_timeout),
            Duration::from_millis(1),
            command_timeout,
        )
    }

    fn delimiter(&mut self, table: &str, value: Option<String>) -> String {
        let d = value.unwrap_or_default();
        if d.chars()
            .any(|c| c.is_alphanumeric() || c.is_whitespace() || c.is_control() || c == '@')
        {
            self.err(
                &format!("{table}.recipient_delimiter"),
                format!("{d:?}: use punctuation such as \"+\" or \"-\""),
            );
            return String::new();
        }
        d
    }

    fn server(
        &mut self,
        table: &str,
        raw: RawBackend,
        command_timeout: Duration,
    ) -> Option<ServerSettings> {
        let text = self.required(table, "address", raw.address)?;
        let address: Endpoint = match text.parse() {
            Ok(a) => a,
            Err(why) => {
                self.err(&format!("{table}.address"), why);
                return None;
            }
        };
        let mut s = ServerSettings::new(address);
        s.timeout = self.backend_timeout(table, raw.timeout, s.timeout, command_timeout);
        s.max_connections = self.number(
            &format!("{table}.max_connections"),
            raw.max_connections,
            s.max_connections,
            1,
            1000,
        );
        s.max_idle = self.number(
            &format!("{table}.max_idle"),
            raw.max_idle,
            s.max_idle,
            0,
            1000,
        );
        s.idle_timeout = self.duration(
            table,
            "idle_timeout",
            raw.idle_timeout,
            s.idle_timeout,
            Duration::ZERO,
            HOUR,
        );
        s.cache = self.cache(&format!("{table}.cache"), raw.cache.unwrap_or_default());
        Some(s)
    }

    fn cache(&mut self, table: &str, raw: RawCache) -> CacheConfig {
        let d = CacheConfig::default();
        CacheConfig {
            capacity: self.number(
                &format!("{table}.capacity"),
                raw.capacity,
                d.capacity,
                0,
                10_000_000,
            ),
            deliverable_ttl: self.duration(
                table,
                "deliverable_ttl",
                raw.deliverable_ttl,
                d.deliverable_ttl,
                Duration::ZERO,
                DAY,
            ),
            unknown_ttl: self.duration(
                table,
                "unknown_ttl",
                raw.unknown_ttl,
                d.unknown_ttl,
                Duration::ZERO,
                DAY,
            ),
            over_quota_ttl: self.duration(
                table,
                "over_quota_ttl",
                raw.over_quota_ttl,
                d.over_quota_ttl,
                Duration::ZERO,
                DAY,
            ),
        }
    }

    fn dictionary(&mut self, raw: RawDictionary) -> DictionaryConfig {
        let d = DictionaryConfig::default();
        let t = "dictionary";
        let max_members = i64::try_from(MAX_DISTINCT_MEMBERS).unwrap_or(i64::MAX);
        let ban = self.duration_or_old(
            t,
            "ban",
            raw.ban,
            raw.ban_secs,
            Unit::Secs,
            d.ban,
            SECOND,
            MAX_BAN,
        );
        let max_ban = self.duration_or_old(
            t,
            "max_ban",
            raw.max_ban,
            raw.max_ban_secs,
            Unit::Secs,
            d.max_ban.max(ban),
            SECOND,
            MAX_BAN,
        );
        if max_ban < ban {
            let key = if raw.max_ban_secs.is_some() {
                "dictionary.max_ban_secs"
            } else {
                "dictionary.max_ban"
            };
            self.err(key, format!("must not be shorter than ban ({})", show(ban)));
        }
        DictionaryConfig {
            enabled: raw.enabled.unwrap_or(d.enabled),
            threshold: self.number(
                "dictionary.threshold",
                raw.threshold,
                d.threshold,
                1,
                max_members,
            ),
            // Bounded: Redis keeps the window as a millisecond expiry.
            window: self.duration_or_old(
                t,
                "window",
                raw.window,
                raw.window_secs,
                Unit::Secs,
                d.window,
                SECOND,
                MAX_BAN,
            ),
            ban,
            ipv6_prefix: self.number(
                "dictionary.ipv6_prefix",
                raw.ipv6_prefix,
                d.ipv6_prefix,
                0,
                128,
            ),
            escalate: raw.escalate.unwrap_or(d.escalate),
            max_ban,
            strike_memory: self.duration_or_old(
                t,
                "strike_memory",
                raw.strike_memory,
                raw.strike_memory_secs,
                Unit::Secs,
                d.strike_memory,
                Duration::ZERO,
                30 * DAY,
            ),
            allow_list: self.list::<IpNet>(
                "dictionary.allow_list",
                raw.allow_list,
                d.allow_list,
                "network",
            ),
        }
    }

    fn metrics(&mut self, raw: RawMetrics) -> MetricsConfig {
        let listen = match raw.listen.filter(|l| !l.trim().is_empty()) {
            None => None,
            Some(text) => match text.trim().parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    self.err(
                        "metrics.listen",
                        format!("{text:?} is not an address to listen on: write \"IP:PORT\", e.g. \"127.0.0.1:9469\""),
                    );
                    None
                }
            },
        };
        MetricsConfig { listen }
    }

    fn bounce_guard(&mut self, raw: RawBounceGuard) -> BounceGuardConfig {
        let d = BounceGuardConfig::default();
        let mut domains = Vec::new();
        for (i, domain) in raw.domains.unwrap_or_default().into_iter().enumerate() {
            match self.domain(&format!("bounce_guard.domains[{i}]"), &domain) {
                Some(d) => domains.push(d),
                None => continue,
            }
        }
        BounceGuardConfig {
            enabled: raw.enabled.unwrap_or(d.enabled),
            action: self.choice("bounce_guard.action", raw.action, d.action),
            domains,
            record_lifetime: self.duration(
                "bounce_guard",
                "record_lifetime",
                raw.record_lifetime,
                d.record_lifetime,
                Duration::from_secs(3600),
                30 * DAY,
            ),
        }
    }

    /// A domain name as written in a list, lower case without the final
    /// dot; `None` (and an error at `key`) for anything else.
    fn domain(&mut self, key: &str, text: &str) -> Option<String> {
        let name = text.trim().trim_end_matches('.').to_ascii_lowercase();
        if name.is_empty() || name.contains(['@', ' ']) || name.chars().any(char::is_control) {
            self.err(key, format!("{text:?} is not a domain"));
            return None;
        }
        Some(name)
    }

    fn batv(&mut self, raw: RawBatv) -> BatvSection {
        let d = BatvConfig::default();
        let lifetime = self.duration(
            "batv",
            "lifetime",
            raw.lifetime,
            Duration::from_secs(u64::from(d.lifetime_days) * 86_400),
            DAY,
            999 * DAY,
        );
        if !lifetime.as_secs().is_multiple_of(86_400) {
            self.err("batv.lifetime", "must be whole days (BATV tags count days)");
        }
        let mut domains = Vec::new();
        for (i, domain) in raw.domains.unwrap_or_default().into_iter().enumerate() {
            let name = domain.trim().trim_end_matches('.').to_ascii_lowercase();
            if name.is_empty() || name.contains(['@', ' ']) || name.chars().any(char::is_control) {
                self.err(
                    &format!("batv.domains[{i}]"),
                    format!("{domain:?} is not a domain"),
                );
            } else {
                domains.push(name);
            }
        }
        let enabled = raw.enabled.unwrap_or(d.enabled);
        if enabled && domains.is_empty() {
            self.err(
                "batv.enabled",
                "BATV needs batv.domains, the domains whose senders are signed",
            );
        }
        let key_file = match raw.key_file {
            Some(p) if p.trim().is_empty() => {
                self.err("batv.key_file", "must not be empty");
                PathBuf::new()
            }
            Some(p) => PathBuf::from(p),
            None => PathBuf::from("/etc/nobounce/batv.keys"),
        };
        BatvSection {
            policy: BatvConfig {
                enabled,
                domains,
                lifetime_days: u16::try_from(lifetime.as_secs() / 86_400)
                    .unwrap_or(d.lifetime_days),
                unsigned: self.choice("batv.unsigned", raw.unsigned, d.unsigned),
            },
            key_file,
        }
    }

    fn dnsbl(&mut self, raw: RawDnsbl) -> DnsblConfig {
        let d = DnsblConfig::default();
        let mut zones: Vec<DnsblZone> = Vec::new();
        for (i, z) in raw.zones.unwrap_or_default().into_iter().enumerate() {
            let key = |k: &str| format!("dnsbl.zones[{i}].{k}");
            let Some(zone) = z.zone else {
                self.err(&format!("dnsbl.zones[{i}]"), "needs a zone");
                continue;
            };
            let name = zone.trim().trim_end_matches('.').to_ascii_lowercase();
            let valid = !name.is_empty()
                && name.len() <= 200
                && name.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                });
            if !valid {
                self.err(&key("zone"), format!("{zone:?} is not a DNS zone"));
                continue;
            }
            if zones.iter().any(|z| z.zone == name) {
                self.err(&key("zone"), format!("{name} is listed twice"));
                continue;
            }
            let mode = self.choice(&key("mode"), z.mode, DnsblMode::Safe);
            let reply = z
                .reply
                .map(|r| self.text(&key("reply"), Some(r), String::new()));
            zones.push(DnsblZone {
                zone: name,
                mode,
                reply: reply.filter(|r| !r.is_empty()),
            });
        }
        DnsblConfig {
            zones,
            on_error: self.choice("dnsbl.on_error", raw.on_error, d.on_error),
            exempt_recipients: raw
                .exempt_recipients
                .map(|list| {
                    list.into_iter()
                        .enumerate()
                        .filter_map(|(i, l)| {
                            let ok = !l.is_empty() && !l.contains(['@', ' ']) && !l.chars().any(char::is_control);
                            if !ok {
                                self.err(
                                    &format!("dnsbl.exempt_recipients[{i}]"),
                                    format!("{l:?} is not a local part (write \"postmaster\", not an address)"),
                                );
                            }
                            ok.then_some(l)
                        })
                        .collect()
                })
                .unwrap_or(d.exempt_recipients),
            allow_list: self.list::<IpNet>("dnsbl.allow_list", raw.allow_list, d.allow_list, "network"),
        }
    }

    /// `[aliases]`: the alias domains, the store, the format of new
    /// aliases, the socketmap service.
    fn aliases(
        &mut self,
        raw: crate::raw::RawAliases,
        socket: &Endpoint,
        policy: &PolicyConfig,
        store: &StoreConfig,
    ) -> crate::AliasesConfig {
        use nobounce_core::alias::{
            check_mailbox, AliasFormat, DEFAULT_FORMAT, DEFAULT_RANDOM_LENGTH, RANDOM_LENGTH_RANGE,
        };
        let mut domains: Vec<String> = Vec::new();
        for (i, text) in raw.domains.unwrap_or_default().into_iter().enumerate() {
            let key = format!("aliases.domains[{i}]");
            let name = text.trim().trim_end_matches('.').to_ascii_lowercase();
            let valid = !name.is_empty()
                && name.len() <= 253
                && name.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
            if !valid {
                self.err(&key, format!("{text:?} is not a domain"));
            } else if domains.contains(&name) {
                self.err(&key, format!("{name} is listed twice"));
            } else {
                domains.push(name);
            }
        }
        let backend = self.choice("aliases.store", raw.store, AliasBackend::Sqlite);
        // [store] checks the URL only when it uses Redis itself.
        if backend == AliasBackend::Redis && store.backend != StoreBackend::Redis {
            if let Err(why) = check_url(&store.redis.url) {
                self.err("store.redis.url", why);
            }
        }
        let default_path = PathBuf::from("/var/lib/nobounce/aliases.db");
        let path = match raw.path {
            None => default_path,
            // Absolute: the daemon and the CLI must open the same file
            // whatever their working directories.
            Some(p) if p.starts_with('/') && !p.ends_with('/') && !p.contains('\0') => {
                PathBuf::from(p)
            }
            Some(p) => {
                self.err(
                    "aliases.path",
                    format!("{p:?}: give the absolute path of a file"),
                );
                default_path
            }
        };
        let random_length = self.number(
            "aliases.random_length",
            raw.random_length,
            DEFAULT_RANDOM_LENGTH,
            i64::try_from(*RANDOM_LENGTH_RANGE.start()).unwrap_or(5),
            i64::try_from(*RANDOM_LENGTH_RANGE.end()).unwrap_or(32),
        );
        let format = match AliasFormat::new(
            raw.format.as_deref().unwrap_or(DEFAULT_FORMAT),
            random_length,
        ) {
            Ok(f) => f,
            Err(why) => {
                self.err("aliases.format", why);
                AliasFormat::default()
            }
        };
        let default_mailbox = match raw.default_mailbox.filter(|m| !m.trim().is_empty()) {
            None => None,
            Some(m) => match check_mailbox(&m, &domains) {
                Ok(m) => Some(m),
                Err(why) => {
                    self.err("aliases.default_mailbox", why);
                    None
                }
            },
        };
        let socketmap = match raw
            .socketmap
            .filter(|s| !s.trim().is_empty())
            .and_then(|text| self.listen_endpoint("aliases.socketmap", &text))
        {
            Some(e) if &e == socket || policy.socket.as_ref() == Some(&e) => {
                self.err(
                    "aliases.socketmap",
                    format!("{e} is taken by the milter or the policy service: give the socketmap service its own"),
                );
                None
            }
            Some(_) if domains.is_empty() => {
                self.err(
                    "aliases.socketmap",
                    "the socketmap service needs aliases.domains, the domains it answers for",
                );
                None
            }
            e => e,
        };
        crate::AliasesConfig {
            domains,
            store: backend,
            path,
            format,
            default_mailbox,
            socketmap,
        }
    }

    fn store(&mut self, raw: RawStore, command_timeout: Duration) -> StoreConfig {
        let backend = self.choice("store.backend", raw.backend, StoreBackend::Memory);
        let control_socket = match raw.control_socket.as_deref() {
            None | Some("auto") => ControlSocket::Auto,
            Some("") => ControlSocket::Off,
            Some(text) => {
                let path = text.strip_prefix("unix:").unwrap_or(text);
                if path.starts_with('/') && !path.contains('\0') {
                    ControlSocket::Path(PathBuf::from(path))
                } else {
                    self.err(
                        "store.control_socket",
                        format!("{text:?}: give an absolute path, \"auto\" or \"\""),
                    );
                    ControlSocket::Auto
                }
            }
        };
        let max_keys = i64::try_from(MemoryStore::DEFAULT_MAX_KEYS).unwrap_or(i64::MAX);
        StoreConfig {
            backend,
            max_keys: self.number(
                "store.max_keys",
                raw.max_keys,
                MemoryStore::DEFAULT_MAX_KEYS,
                1,
                max_keys.max(10_000_000),
            ),
            control_socket,
            redis: self.redis(raw.redis.unwrap_or_default(), backend, command_timeout),
        }
    }

    fn redis(
        &mut self,
        raw: RawRedis,
        backend: StoreBackend,
        command_timeout: Duration,
    ) -> RedisConfig {
        let d = RedisConfig::default();
        let url = raw.url.unwrap_or(d.url);
        if backend == StoreBackend::Redis {
            if let Err(why) = check_url(&url) {
                self.err("store.redis.url", why);
            }
        }
        let prefix = raw.prefix.unwrap_or(d.prefix);
        if prefix.chars().any(|c| c.is_whitespace() || c.is_control()) {
            self.err(
                "store.redis.prefix",
                format!("{prefix:?} must not hold spaces or control characters"),
            );
        }
        RedisConfig {
            url,
            prefix,
            timeout: self.duration_or_old(
                "store.redis",
                "timeout",
                raw.timeout,
                raw.timeout_ms,
                Unit::Millis,
                d.timeout.min(command_timeout),
                Duration::from_millis(1),
                command_timeout,
            ),
            retry: self.duration_or_old(
                "store.redis",
                "retry",
                raw.retry,
                raw.retry_ms,
                Unit::Millis,
                d.retry,
                Duration::ZERO,
                HOUR,
            ),
        }
    }
}

fn join(table: &str, key: &str) -> String {
    if table.is_empty() {
        key.to_owned()
    } else {
        format!("{table}.{key}")
    }
}

fn show(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}
