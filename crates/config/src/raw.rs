//! The configuration file as written: every key optional, unknown keys
//! refused. Nothing here has a default or a rule; the builder
//! ([`crate::build`]) owns them all.

use serde::{de, Deserialize, Deserializer};
use std::{collections::BTreeMap, fmt, time::Duration};

/// A duration as the file writes it: `"30s"`, `"10m"`, `"1h"`, `"7d"`,
/// `"250ms"`, `"1h 30m"` (humantime's syntax), or an integer of seconds.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct RawDuration(pub Duration);

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = RawDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"30s\", \"10m\", \"1h\" or \"7d\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawDuration, E> {
                Ok(RawDuration(Duration::from_secs(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawDuration, E> {
                u64::try_from(v)
                    .map(|v| RawDuration(Duration::from_secs(v)))
                    .map_err(|_| E::custom("a duration cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawDuration, E> {
                parse_duration(v).map(RawDuration).map_err(E::custom)
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// Parses a duration (see [`RawDuration`]); the one duration parser of
/// nobounce, also used by `nobounce ban add --for`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse()
            .map(Duration::from_secs)
            .map_err(|_| format!("invalid duration {text:?}: number too large"));
    }
    humantime::parse_duration(text).map_err(|e| {
        format!("invalid duration {text:?}: {e} (write e.g. \"30s\", \"10m\", \"1h\", \"7d\")")
    })
}

macro_rules! raw_table {
    ($(#[$meta:meta])* $name:ident { $($field:ident : $ty:ty),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $(pub $field: Option<$ty>,)*
        }

        impl $name {
            /// The keys the file sets in this table.
            #[allow(dead_code)]
            pub fn keys_set(&self) -> Vec<&'static str> {
                let mut keys = Vec::new();
                $(if self.$field.is_some() {
                    keys.push(stringify!($field).trim_start_matches("r#"));
                })*
                keys
            }
        }
    };
}

raw_table!(
    /// The whole file.
    RawConfig {
        socket: String,
        dry_run: bool,
        command_timeout: RawDuration,
        log: RawLog,
        milter: RawMilter,
        policy: RawPolicy,
        dns: RawDns,
        spf: RawSpf,
        recipients: RawRecipients,
        dictionary: RawDictionary,
        dnsbl: RawDnsbl,
        batv: RawBatv,
        bounce_guard: RawBounceGuard,
        metrics: RawMetrics,
        store: RawStore,
        aliases: RawAliases,
    }
);

raw_table!(
    /// `[metrics]`.
    RawMetrics { listen: String }
);

raw_table!(
    /// `[bounce_guard]`.
    RawBounceGuard {
        enabled: bool,
        action: String,
        domains: Vec<String>,
        record_lifetime: RawDuration,
    }
);

raw_table!(
    /// `[batv]`.
    RawBatv {
        enabled: bool,
        domains: Vec<String>,
        key_file: String,
        lifetime: RawDuration,
        unsigned: String,
    }
);

raw_table!(
    /// `[dnsbl]`.
    RawDnsbl {
        zones: Vec<RawDnsblZone>,
        on_error: String,
        exempt_recipients: Vec<String>,
        allow_list: Vec<String>,
    }
);

raw_table!(
    /// `[[dnsbl.zones]]`.
    RawDnsblZone {
        zone: String,
        mode: String,
        reply: String,
    }
);

raw_table!(
    /// `[log]`.
    RawLog { level: String, format: String }
);

raw_table!(
    /// `[milter]`.
    RawMilter {
        threads: i64,
        max_connections: i64,
        connection_timeout: RawDuration,
        connection_timeout_secs: i64,
        socket_mode: String,
        socket_owner: String,
        socket_group: String,
    }
);

raw_table!(
    /// `[policy]`.
    RawPolicy {
        socket: String,
        max_connections: i64,
        idle_timeout: RawDuration,
    }
);

raw_table!(
    /// `[dns]`.
    RawDns {
        nameservers: Vec<String>,
        timeout: RawDuration,
        timeout_secs: i64,
        attempts: i64,
        cache_size: i64,
    }
);

raw_table!(
    /// `[spf]`.
    RawSpf {
        enabled: bool,
        verify_helo: bool,
        trusted_networks: Vec<String>,
        skip_authenticated: bool,
        skip_senders: Vec<String>,
        on_fail: String,
        on_softfail: String,
        on_neutral: String,
        on_none: String,
        on_permerror: String,
        on_temperror: String,
        headers: Vec<String>,
        authserv_id: String,
        timeout: RawDuration,
        timeout_secs: i64,
        cache_size: i64,
        cache_max_ttl: RawDuration,
        cache_max_ttl_secs: i64,
    }
);

raw_table!(
    /// `[recipients]`.
    RawRecipients {
        over_quota: String,
        unknown_text: String,
        over_quota_text: String,
        disabled_text: String,
        backends: BTreeMap<String, RawBackend>,
        routes: Vec<RawRoute>,
        default_chain: Vec<String>,
    }
);

raw_table!(
    /// `[[recipients.routes]]`.
    RawRoute {
        domains: Vec<String>,
        chain: Vec<String>,
    }
);

raw_table!(
    /// `[recipients.backends.NAME]`, every type's keys; the builder refuses
    /// keys that do not belong to the `type`.
    RawBackend {
        r#type: String,
        path: String,
        watch_interval: RawDuration,
        case_sensitive_local_part: bool,
        recipient_delimiter: String,
        address: String,
        protocol: String,
        helo_name: String,
        timeout: RawDuration,
        max_connections: i64,
        max_idle: i64,
        idle_timeout: RawDuration,
        cache: RawCache,
        path_template: String,
        missing: String,
    }
);

raw_table!(
    /// `[recipients.backends.NAME.cache]`.
    RawCache {
        capacity: i64,
        deliverable_ttl: RawDuration,
        unknown_ttl: RawDuration,
        over_quota_ttl: RawDuration,
    }
);

raw_table!(
    /// `[dictionary]`.
    RawDictionary {
        enabled: bool,
        threshold: i64,
        window: RawDuration,
        window_secs: i64,
        ban: RawDuration,
        ban_secs: i64,
        ipv6_prefix: i64,
        escalate: bool,
        max_ban: RawDuration,
        max_ban_secs: i64,
        strike_memory: RawDuration,
        strike_memory_secs: i64,
        allow_list: Vec<String>,
    }
);

raw_table!(
    /// `[store]`.
    RawStore {
        backend: String,
        max_keys: i64,
        control_socket: String,
        redis: RawRedis,
    }
);

raw_table!(
    /// `[store.redis]`.
    RawRedis {
        url: String,
        prefix: String,
        timeout: RawDuration,
        timeout_ms: i64,
        retry: RawDuration,
        retry_ms: i64,
    }
);

raw_table!(
    /// `[aliases]`.
    RawAliases {
        domains: Vec<String>,
        store: String,
        path: String,
        format: String,
        random_length: i64,
        default_mailbox: String,
        socketmap: String,
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        for (text, secs) in [
            ("30s", 30),
            ("10m", 600),
            ("1h", 3600),
            ("7d", 604_800),
            ("1h 30m", 5400),
            ("90", 90),
        ] {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_secs(secs)),
                "{text}"
            );
        }
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        for bad in ["", "s", "10w3", "-5s", "99999999999999999999", "5 parsecs"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
