//! Dictionary-attack bans: a client that tries many unknown recipients is
//! told to go away for a while.
//!
//! Spammers probe for valid addresses by trying long lists of names. Each
//! unknown recipient a client tries is recorded in a [`StateStore`] as a
//! distinct member of its client key (its IPv4 address, or its IPv6 network
//! of [`DictionaryConfig::ipv6_prefix`] bits, since one IPv6 host can use a
//! whole /64). When a client has tried [`DictionaryConfig::threshold`]
//! distinct unknown recipients within [`DictionaryConfig::window`], it is
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
    clock::rfc3339_utc,
    reply::Reply,
    store::{Ban, BanRule, StateStore, StoreError},
    verdict::{Policy, Reason, Verdict},
};
use ipnet::{IpNet, Ipv6Net};
use serde::Serialize;
use std::{
    net::IpAddr,
    time::{Duration, SystemTime},
};

/// The longest ban the configuration allows: one week. Bans that outlive an
/// attack punish the next user of the address.
pub const MAX_BAN: Duration = Duration::from_secs(7 * 86_400);

/// The reason recorded with bans made by this policy.
pub const BAN_REASON: &str = "too many unknown recipients";

/// Settings of the dictionary-attack policy (`[dictionary]` in the
/// configuration file). Every field has a default; the configuration
/// builder of `nobounce-config` checks the ranges.
#[derive(Clone, Debug, Eq, PartialEq, Serialize)]
pub struct DictionaryConfig {
    /// Whether the policy is on. Default `true`.
    pub enabled: bool,
    /// How many distinct unknown recipients within the window ban a client.
    /// Default 10.
    pub threshold: u32,
    /// The window in which unknown recipients are counted. Default 10
    /// minutes.
    #[serde(serialize_with = "crate::clock::serialize_duration")]
    pub window: Duration,
    /// The length of a first ban. Default 1 hour.
    #[serde(serialize_with = "crate::clock::serialize_duration")]
    pub ban: Duration,
    /// The length of the network that groups IPv6 clients, in bits.
    /// Default 64 (a /64 is what one host or one customer usually gets).
    pub ipv6_prefix: u8,
    /// Whether repeat offenders get doubled bans. Default `true`.
    pub escalate: bool,
    /// The longest ban escalation gives. Default 1 day; at most a week
    /// ([`MAX_BAN`]).
    #[serde(serialize_with = "crate::clock::serialize_duration")]
    pub max_ban: Duration,
    /// How long a strike is remembered after its ban ends. Default 1 day.
    #[serde(serialize_with = "crate::clock::serialize_duration")]
    pub strike_memory: Duration,
    /// Clients never counted nor banned (your own networks, partners).
    /// Default empty.
    pub allow_list: Vec<IpNet>,
}

impl Default for DictionaryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            threshold: 10,
            window: Duration::from_secs(600),
            ban: Duration::from_secs(3600),
            ipv6_prefix: 64,
            escalate: true,
            max_ban: Duration::from_secs(86_400),
            strike_memory: Duration::from_secs(86_400),
            allow_list: Vec::new(),
        }
    }
}

impl DictionaryConfig {
    /// The ban lengths as a store [`BanRule`].
    pub fn ban_rule(&self) -> BanRule {
        BanRule {
            base: self.ban,
            escalate: self.escalate,
            max: self.max_ban,
            forget_after: self.strike_memory,
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
        .add_distinct(&key, &recipient_member(recipient), config.window, now)
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
}
