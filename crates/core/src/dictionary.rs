//! Dictionary-attack bans: a client that tries many unknown recipients is
//! told to go away for a while.
//!
//! Spammers probe for valid addresses by trying long lists of names. Each
//! unknown recipient a client tries is recorded in a [`StateStore`] as a
//! distinct member of its client key (its IPv4 address, or its IPv6 network
//! of [`DictionaryConfig::ipv6_prefix`] bits, since one IPv6 host can use a
//! whole /64). When a client has tried [`DictionaryConfig::threshold`]
//! distinct unknown recipients within [`DictionaryConfig::window_secs`], it is
//! banned: from then on its connections get
//! `421 4.7.0 ... banned until 2026-11-27T13:05:00Z` and are closed.
//!
//! Bans are short (one hour by default) so that a legitimate server with a
//! stale mailing list recovers by itself; repeat offenders get doubled bans,
//! capped at a day. The same recipient tried again counts once, so a sender
//! that retries one bad address is never banned for it.
//!
//! Everything here is pure apart from the store: time is passed in.
//! A [`StoreError`] is returned to the caller, which must carry on as if the
//! client were not banned (a broken store never refuses mail).

use crate::{
    reply::Reply,
    store::{to_millis, Ban, BanRule, StateStore, StoreError, MAX_DISTINCT_MEMBERS},
    verdict::{Policy, Reason, Verdict},
};
use ipnet::{IpNet, Ipv6Net};
use serde::{Deserialize, Serialize};
use std::{
    fmt::{self, Display, Formatter},
    net::IpAddr,
    time::{Duration, SystemTime},
};

/// The longest ban the configuration allows, in seconds (one week).
pub const MAX_BAN_SECS: u64 = 7 * 86_400;

/// The reason recorded with bans made by this policy.
pub const BAN_REASON: &str = "too many unknown recipients";

/// Settings of the dictionary-attack policy (`[dictionary]` in the
/// configuration file). Every field has a default.
#[derive(Clone, Debug, Deserialize, Eq, PartialEq, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DictionaryConfig {
    /// Whether the policy is on. Default `true`.
    pub enabled: bool,
    /// How many distinct unknown recipients within the window ban a client.
    /// Default 10.
    pub threshold: u32,
    /// The window in which unknown recipients are counted, in seconds.
    /// Default 600 (10 minutes).
    pub window_secs: u64,
    /// The length of a first ban, in seconds. Default 3600 (1 hour).
    pub ban_secs: u64,
    /// The length of the network that groups IPv6 clients, in bits.
    /// Default 64 (a /64 is what one host or one customer usually gets).
    pub ipv6_prefix: u8,
    /// Whether repeat offenders get doubled bans. Default `true`.
    pub escalate: bool,
    /// The longest ban escalation gives, in seconds. Default 86400 (1 day).
    pub max_ban_secs: u64,
    /// How long a strike is remembered after its ban ends, in seconds.
    /// Default 86400 (1 day).
    pub strike_memory_secs: u64,
    /// Clients never counted nor banned (your own networks, partners).
    /// Default empty.
    pub allow_list: Vec<IpNet>,
}

impl Default for DictionaryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            threshold: 10,
            window_secs: 600,
            ban_secs: 3600,
            ipv6_prefix: 64,
            escalate: true,
            max_ban_secs: 86_400,
            strike_memory_secs: 86_400,
            allow_list: Vec::new(),
        }
    }
}

/// A setting of [`DictionaryConfig`] out of range.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct DictionaryConfigError(String);

impl Display for DictionaryConfigError {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "dictionary: {}", self.0)
    }
}

impl std::error::Error for DictionaryConfigError {}

impl DictionaryConfig {
    /// Checks ranges and cross-field rules.
    pub fn validate(&self) -> Result<(), DictionaryConfigError> {
        let err = |m: String| Err(DictionaryConfigError(m));
        if self.threshold == 0 || u64::from(self.threshold) > MAX_DISTINCT_MEMBERS {
            return err(format!(
                "threshold must be 1..={MAX_DISTINCT_MEMBERS}, not {}",
                self.threshold
            ));
        }
        if self.window_secs == 0 {
            return err("window_secs must be at least 1".into());
        }
        if self.ban_secs == 0 {
            return err("ban_secs must be at least 1".into());
        }
        if self.max_ban_secs < self.ban_secs {
            return err(format!(
                "max_ban_secs ({}) must not be less than ban_secs ({})",
                self.max_ban_secs, self.ban_secs
            ));
        }
        // Bans that outlive the attack punish the next user of the address.
        if self.max_ban_secs > MAX_BAN_SECS || self.ban_secs > MAX_BAN_SECS {
            return err(format!(
                "ban_secs and max_ban_secs must not exceed {MAX_BAN_SECS} (one week): bans that outlive an attack punish the next user of the address"
            ));
        }
        if self.ipv6_prefix > 128 {
            return err(format!(
                "ipv6_prefix must be 0..=128, not {}",
                self.ipv6_prefix
            ));
        }
        Ok(())
    }

    /// The counting window.
    pub fn window(&self) -> Duration {
        Duration::from_secs(self.window_secs)
    }

    /// The ban lengths as a store [`BanRule`].
    pub fn ban_rule(&self) -> BanRule {
        BanRule {
            base: Duration::from_secs(self.ban_secs),
            escalate: self.escalate,
            max: Duration::from_secs(self.max_ban_secs),
            forget_after: Duration::from_secs(self.strike_memory_secs),
        }
    }

    /// `true` if the policy leaves `ip` alone (off, or allow-listed).
    pub fn exempts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        !self.enabled || self.allow_list.iter().any(|net| net.contains(&ip))
    }
}

/// The store key of a client: its IPv4 address (`192.0.2.1`), or its IPv6
/// network of `ipv6_prefix` bits in CIDR notation (`2001:db8:1:2::/64`).
/// IPv4-mapped IPv6 addresses count as IPv4. A prefix over 128 counts as 128.
///
/// ```
/// use nobounce_core::dictionary::client_key;
///
/// assert_eq!(client_key("192.0.2.1".parse()?, 64), "192.0.2.1");
/// assert_eq!(client_key("2001:db8:1:2:aa::1".parse()?, 64), "2001:db8:1:2::/64");
/// assert_eq!(client_key("::ffff:192.0.2.1".parse()?, 64), "192.0.2.1");
/// # Ok::<_, std::net::AddrParseError>(())
/// ```
pub fn client_key(ip: IpAddr, ipv6_prefix: u8) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let net = Ipv6Net::new(v6, ipv6_prefix.min(128))
                .expect("a prefix of at most 128 bits is valid");
            net.trunc().to_string()
        }
    }
}

/// The member recorded for a recipient: a stable 64-bit hash (FNV-1a) of the
/// address, lowercased and without angle brackets, in hex.
///
/// Hashing keeps recipient addresses out of the shared store (privacy, and
/// bounded size); being stable, it is the same on every host and version.
/// Case is folded so `User@x` and `user@X` count once: counting fewer
/// addresses only errs on the side of not banning.
pub fn recipient_member(recipient: &str) -> String {
    let address = recipient
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>');
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in address.bytes() {
        hash ^= u64::from(b.to_ascii_lowercase());
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// Records that `client_ip` tried the unknown `recipient` at `now`.
///
/// Returns the client's ban when it is banned now: because this recipient
/// reached [`DictionaryConfig::threshold`] (a new ban, with a strike), or
/// because another connection or host banned it meanwhile. Returns `None`
/// while under the threshold, and when the policy exempts the client.
pub async fn record_unknown(
    config: &DictionaryConfig,
    store: &dyn StateStore,
    client_ip: IpAddr,
    recipient: &str,
    now: SystemTime,
) -> Result<Option<Ban>, StoreError> {
    if config.exempts(client_ip) {
        return Ok(None);
    }
    let key = client_key(client_ip, config.ipv6_prefix);
    let count = store
        .add_distinct(&key, &recipient_member(recipient), config.window(), now)
        .await?;
    if count < u64::from(config.threshold) {
        return Ok(None);
    }
    let strike = store
        .strike(&key, &config.ban_rule(), BAN_REASON, now)
        .await?;
    if strike.new {
        tracing::info!(
            event = "dictionary_ban",
            client = %key,
            distinct_unknown = count,
            strikes = strike.ban.strikes,
            until = %rfc3339_utc(strike.ban.until),
            "client banned for trying too many unknown recipients"
        );
    }
    Ok(Some(strike.ban))
}

/// The ban of `client_ip` active at `now`, unless the policy exempts it.
pub async fn check_ban(
    config: &DictionaryConfig,
    store: &dyn StateStore,
    client_ip: IpAddr,
    now: SystemTime,
) -> Result<Option<Ban>, StoreError> {
    if config.exempts(client_ip) {
        return Ok(None);
    }
    store
        .ban_status(&client_key(client_ip, config.ipv6_prefix), now)
        .await
}

/// The reply for a banned client: `421 4.7.0`, the reason and the end of
/// the ban in UTC.
///
/// ```
/// use nobounce_core::{dictionary::ban_reply, store::{from_millis, Ban}};
///
/// let ban = Ban {
///     key: "192.0.2.1".into(),
///     until: from_millis(1_795_784_700_000),
///     reason: "too many unknown recipients".into(),
///     strikes: 1,
/// };
/// assert_eq!(
///     ban_reply(&ban).to_string(),
///     "421 4.7.0 192.0.2.1 banned until 2026-11-27T13:05:00Z: too many unknown recipients"
/// );
/// ```
pub fn ban_reply(ban: &Ban) -> Reply {
    Reply::new(
        421,
        "4.7.0",
        &format!(
            "{} banned until {}: {}",
            ban.key,
            rfc3339_utc(ban.until),
            ban.reason
        ),
    )
    .expect("421 goes with 4.7.0")
}

/// The verdict for a banned client: answer [`ban_reply`] and disconnect.
pub fn ban_verdict(ban: &Ban) -> Verdict {
    Verdict::Disconnect {
        reply: ban_reply(ban),
        reason: Reason::new(
            Policy::Dictionary,
            format!(
                "client {} banned until {} ({}; strike {})",
                ban.key,
                rfc3339_utc(ban.until),
                ban.reason,
                ban.strikes
            ),
        ),
    }
}

/// `t` in RFC 3339 UTC to the second, rounded up (a ban is never said to
/// end before it does): `2026-11-27T13:05:00Z`. Times before 1970 print as
/// the epoch.
pub fn rfc3339_utc(t: SystemTime) -> String {
    let ms = to_millis(t);
    let secs = ms.div_ceil(1000);
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Year, month, day of `days` since 1970-01-01 in the proleptic Gregorian
/// calendar (Howard Hinnant's `civil_from_days`, for non-negative days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        clock::{Clock, ManualClock},
        store::{from_millis, MemoryStore},
    };

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn clock() -> ManualClock {
        ManualClock::new(from_millis(1_800_000_000_000))
    }

    async fn probe(
        cfg: &DictionaryConfig,
        store: &MemoryStore,
        client: &str,
        rcpts: impl IntoIterator<Item = String>,
        now: SystemTime,
    ) -> Vec<Option<Ban>> {
        let mut out = Vec::new();
        for r in rcpts {
            out.push(
                record_unknown(cfg, store, ip(client), &r, now)
                    .await
                    .unwrap(),
            );
        }
        out
    }

    fn rcpts(range: std::ops::Range<u32>) -> impl Iterator<Item = String> {
        range.map(|i| format!("user{i}@example.org"))
    }

    #[tokio::test]
    async fn nine_distinct_unknowns_do_not_ban_the_tenth_does() {
        let cfg = DictionaryConfig::default();
        let store = MemoryStore::default();
        let c = clock();
        let got = probe(&cfg, &store, "192.0.2.1", rcpts(0..9), c.now()).await;
        assert!(got.iter().all(Option::is_none));
        assert_eq!(
            check_ban(&cfg, &store, ip("192.0.2.1"), c.now())
                .await
                .unwrap(),
            None
        );

        let ban = probe(&cfg, &store, "192.0.2.1", rcpts(9..10), c.now()).await[0]
            .clone()
            .expect("the tenth bans");
        assert_eq!(ban.key, "192.0.2.1");
        assert_eq!(ban.until, c.now() + Duration::from_secs(3600));
        assert_eq!(ban.reason, BAN_REASON);
        assert_eq!(ban.strikes, 1);
        assert_eq!(
            check_ban(&cfg, &store, ip("192.0.2.1"), c.now())
                .await
                .unwrap(),
            Some(ban)
        );
        // Another client is not affected.
        assert_eq!(
            check_ban(&cfg, &store, ip("192.0.2.2"), c.now())
                .await
                .unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn the_same_address_counts_once_whatever_its_case_or_brackets() {
        let cfg = DictionaryConfig::default();
        let store = MemoryStore::default();
        let c = clock();
        let same = (0..50).map(|i| match i % 3 {
            0 => "nobody@example.org".to_owned(),
            1 => "<NoBody@Example.org>".to_owned(),
            _ => " nobody@EXAMPLE.ORG ".to_owned(),
        });
        let got = probe(&cfg, &store, "192.0.2.1", same, c.now()).await;
        assert!(got.iter().all(Option::is_none));
        // With 8 more distinct ones we are at 9: still no ban.
        let got = probe(&cfg, &store, "192.0.2.1", rcpts(0..8), c.now()).await;
        assert!(got.iter().all(Option::is_none));
    }

    #[tokio::test]
    async fn unknowns_outside_the_window_do_not_count() {
        let cfg = DictionaryConfig::default();
        let store = MemoryStore::default();
        let c = clock();
        probe(&cfg, &store, "192.0.2.1", rcpts(0..9), c.now()).await;
        c.advance(Duration::from_secs(600));
        let got = probe(&cfg, &store, "192.0.2.1", rcpts(9..18), c.now()).await;
        assert!(
            got.iter().all(Option::is_none),
            "the first nine left the window"
        );
        let got = probe(&cfg, &store, "192.0.2.1", rcpts(18..19), c.now()).await;
        assert!(got[0].is_some());
    }

    #[tokio::test]
    async fn ban_expires() {
        let cfg = DictionaryConfig::default();
        let store = MemoryStore::default();
        let c = clock();
        probe(&cfg, &store, "192.0.2.1", rcpts(0..10), c.now()).await;
        c.advance(Duration::from_secs(3599));
        assert!(check_ban(&cfg, &store, ip("192.0.2.1"), c.now())
            .await
            .unwrap()
            .is_some());
        c.advance(Duration::from_secs(1));
        assert_eq!(
            check_ban(&cfg, &store, ip("192.0.2.1"), c.now())
                .await
                .unwrap(),
            None
        );
        // Counting starts afresh after a ban: one more unknown does not ban.
        let got = probe(&cfg, &store, "192.0.2.1", rcpts(100..101), c.now()).await;
        assert_eq!(got, [None]);
    }

    #[tokio::test]
    async fn escalation_doubles_and_is_capped() {
        let cfg = DictionaryConfig::default();
        let store = MemoryStore::default();
        let c = clock();
        let mut lengths = Vec::new();
        for round in 0..7 {
            let got = probe(
                &cfg,
                &store,
                "192.0.2.1",
                rcpts(round * 10..round * 10 + 10),
                c.now(),
            )
            .await;
            let ban = got[9].clone().expect("banned");
            assert_eq!(ban.strikes, round + 1);
            let len = ban.until.duration_since(c.now()).unwrap();
            lengths.push(len.as_secs() / 3600);
            c.advance(len);
        }
        assert_eq!(lengths, [1, 2, 4, 8, 16, 24, 24]);
    }

    #[tokio::test]
    async fn without_escalation_every_ban_is_the_base() {
        let cfg = DictionaryConfig {
            escalate: false,
            ..DictionaryConfig::default()
        };
        let store = MemoryStore::default();
        let c = clock();
        for round in 0..3 {
            let got = probe(
                &cfg,
                &store,
                "192.0.2.1",
                rcpts(round * 10..round * 10 + 10),
                c.now(),
            )
            .await;
            let ban = got[9].clone().expect("banned");
            assert_eq!(ban.until, c.now() + Duration::from_secs(3600));
            c.advance(Duration::from_secs(3600));
        }
    }

    #[tokio::test]
    async fn ipv6_clients_are_grouped_by_prefix() {
        let cfg = DictionaryConfig::default();
        let store = MemoryStore::default();
        let c = clock();
        // Ten addresses of one /64, one probe each.
        for i in 0..10u32 {
            let client = format!("2001:db8:1:2::{:x}", i + 1);
            let got = probe(&cfg, &store, &client, rcpts(i..i + 1), c.now()).await;
            assert_eq!(got[0].is_some(), i == 9, "probe {i}");
        }
        let banned = check_ban(&cfg, &store, ip("2001:db8:1:2:ffff::9"), c.now())
            .await
            .unwrap();
        assert_eq!(banned.map(|b| b.key).as_deref(), Some("2001:db8:1:2::/64"));
        assert_eq!(
            check_ban(&cfg, &store, ip("2001:db8:1:3::1"), c.now())
                .await
                .unwrap(),
            None
        );

        // With /128 every address stands alone.
        let cfg = DictionaryConfig {
            ipv6_prefix: 128,
            ..DictionaryConfig::default()
        };
        let store = MemoryStore::default();
        for i in 0..10u32 {
            let client = format!("2001:db8:1:2::{:x}", i + 1);
            let got = probe(&cfg, &store, &client, rcpts(i..i + 1), c.now()).await;
            assert_eq!(got[0], None);
        }
    }

    #[tokio::test]
    async fn allow_listed_and_disabled_clients_are_left_alone() {
        let store = MemoryStore::default();
        let c = clock();
        let cfg = DictionaryConfig {
            allow_list: vec![
                "192.0.2.0/24".parse().unwrap(),
                "2001:db8::/32".parse().unwrap(),
            ],
            ..DictionaryConfig::default()
        };
        for client in ["192.0.2.1", "::ffff:192.0.2.7", "2001:db8::1"] {
            let got = probe(&cfg, &store, client, rcpts(0..20), c.now()).await;
            assert!(got.iter().all(Option::is_none), "{client}");
        }
        assert!(store.is_empty(), "nothing was even counted");
        // A ban made elsewhere does not apply to an allow-listed client.
        store
            .ban(
                "192.0.2.1",
                c.now() + Duration::from_secs(60),
                "by hand",
                c.now(),
            )
            .await
            .unwrap();
        assert_eq!(
            check_ban(&cfg, &store, ip("192.0.2.1"), c.now())
                .await
                .unwrap(),
            None
        );

        let off = DictionaryConfig {
            enabled: false,
            ..DictionaryConfig::default()
        };
        let got = probe(&off, &store, "198.51.100.1", rcpts(0..20), c.now()).await;
        assert!(got.iter().all(Option::is_none));
        assert_eq!(
            check_ban(&off, &store, ip("192.0.2.1"), c.now())
                .await
                .unwrap(),
            None
        );
    }

    #[test]
    fn client_keys() {
        assert_eq!(client_key(ip("192.0.2.1"), 64), "192.0.2.1");
        assert_eq!(client_key(ip("::ffff:198.51.100.2"), 48), "198.51.100.2");
        assert_eq!(
            client_key(ip("2001:db8:a:b:c:d:e:f"), 64),
            "2001:db8:a:b::/64"
        );
        assert_eq!(
            client_key(ip("2001:db8:a:b:c:d:e:f"), 48),
            "2001:db8:a::/48"
        );
        assert_eq!(client_key(ip("2001:db8::1"), 128), "2001:db8::1/128");
        assert_eq!(client_key(ip("2001:db8::1"), 200), "2001:db8::1/128");
        assert_eq!(client_key(ip("::1"), 64), "::/64");
    }

    #[test]
    fn recipient_member_is_stable_and_case_blind() {
        // FNV-1a of "" and of "a": fixed values, the same on every host.
        assert_eq!(recipient_member(""), "cbf29ce484222325");
        assert_eq!(recipient_member("a"), "af63dc4c8601ec8c");
        assert_eq!(recipient_member("<A>"), recipient_member("a"));
        assert_ne!(recipient_member("a@x"), recipient_member("b@x"));
    }

    #[test]
    fn reply_names_reason_and_end_in_utc() {
        let ban = Ban {
            key: "2001:db8::/64".into(),
            until: from_millis(1_795_784_699_001),
            reason: "too many unknown recipients".into(),
            strikes: 3,
        };
        let v = ban_verdict(&ban);
        let reply = v.reply().unwrap();
        assert_eq!(reply.code().get(), 421);
        assert_eq!(reply.status().to_string(), "4.7.0");
        assert_eq!(
            reply.text(),
            "2001:db8::/64 banned until 2026-11-27T13:05:00Z: too many unknown recipients"
        );
        assert!(matches!(v, Verdict::Disconnect { .. }));
        assert_eq!(v.reason().unwrap().policy, Policy::Dictionary);
        assert!(v.reason().unwrap().detail.contains("strike 3"));
    }

    #[test]
    fn rfc3339_known_instants() {
        for (ms, want) in [
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400_000, "2000-02-29T00:00:00Z"),
            (1_700_000_000_000, "2023-11-14T22:13:20Z"),
            (1_700_000_000_001, "2023-11-14T22:13:21Z"),
            (4_107_542_399_000, "2100-02-28T23:59:59Z"),
            (4_107_542_400_000, "2100-03-01T00:00:00Z"),
        ] {
            assert_eq!(rfc3339_utc(from_millis(ms)), want, "{ms}");
        }
        assert_eq!(
            rfc3339_utc(SystemTime::UNIX_EPOCH - Duration::from_secs(5)),
            "1970-01-01T00:00:00Z"
        );
    }

    #[test]
    fn config_defaults_and_unknown_fields() {
        let cfg: DictionaryConfig = toml::from_str("").unwrap();
        assert_eq!(cfg, DictionaryConfig::default());
        assert_eq!(
            (
                cfg.enabled,
                cfg.threshold,
                cfg.window_secs,
                cfg.ban_secs,
                cfg.ipv6_prefix
            ),
            (true, 10, 600, 3600, 64)
        );
        assert!(cfg.escalate);
        assert_eq!(cfg.max_ban_secs, 86_400);
        assert!(cfg.validate().is_ok());
        let cfg: DictionaryConfig =
            toml::from_str("threshold = 5\nallow_list = [\"10.0.0.0/8\", \"fd00::/8\"]").unwrap();
        assert_eq!(cfg.threshold, 5);
        assert_eq!(cfg.allow_list.len(), 2);
        assert!(toml::from_str::<DictionaryConfig>("treshold = 5").is_err());
    }

    #[test]
    fn config_validation() {
        let bad = [
            DictionaryConfig {
                threshold: 0,
                ..Default::default()
            },
            DictionaryConfig {
                threshold: 1001,
                ..Default::default()
            },
            DictionaryConfig {
                window_secs: 0,
                ..Default::default()
            },
            DictionaryConfig {
                ban_secs: 0,
                ..Default::default()
            },
            DictionaryConfig {
                max_ban_secs: 60,
                ..Default::default()
            },
            DictionaryConfig {
                ipv6_prefix: 129,
                ..Default::default()
            },
        ];
        for cfg in bad {
            assert!(cfg.validate().is_err(), "{cfg:?}");
        }
    }
}
