//! DNS block lists, above all backscatter lists in *safe mode*: a list of
//! servers that sent bounces (ips.backscatterer.org) says nothing about
//! ordinary mail from them, so it is asked only for mail that is itself a
//! bounce or a postmaster message: a null sender, or a sender whose local
//! part is `postmaster`. That is the list's own instruction.
//!
//! The check runs at RCPT TO, so that mail to `postmaster@` and `abuse@`
//! can be let through (`exempt_recipients`). Any A answer in 127.0.0.0/8
//! is a listing; other answers are ignored and logged. A list that does
//! not answer lets mail through (logged), unless `on_error = "tempfail"`.

use crate::{
    dns::{TtlLookup, TtlLookupError},
    reply::Reply,
    verdict::{Policy, Reason, Verdict},
};
use ipnet::IpNet;
use serde::Serialize;
use std::{
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr},
};
use viaspf::lookup::Name;

/// When a zone is asked.
#[derive(Clone, Copy, Debug, Default, Eq, Hash, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DnsblMode {
    /// Only for a null sender or a `postmaster@` sender (backscatter lists).
    #[default]
    Safe,
    /// For every sender (ordinary spam block lists).
    All,
}

/// One block list.
#[derive(Clone, Debug, Eq, PartialEq, Serialize)]
pub struct DnsblZone {
    /// The list's DNS zone, e.g. `ips.backscatterer.org`.
    pub zone: String,
    /// When it is asked. Default: safe mode.
    pub mode: DnsblMode,
    /// The reply text for a listed client: `{ip}`, `{zone}` and `{txt}`
    /// (the list's TXT record, sanitised) are filled in. `None`: the
    /// default, [`DEFAULT_REPLY`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply: Option<String>,
}

/// The reply text of a listing unless a zone sets its own.
pub const DEFAULT_REPLY: &str = "Service unavailable; client [{ip}] blocked using {zone}; {txt}";

/// The longest TXT text put in a reply; lists are not ours to trust.
const MAX_TXT: usize = 200;

/// What to do when a list does not answer.
#[derive(Clone, Copy, Debug, Default, Eq, Hash, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DnsblOnError {
    /// Accept, and log it (what Postfix, Exim and Haraka do).
    #[default]
    Accept,
    /// `451 4.7.1`: the sender retries later.
    Tempfail,
}

/// `[dnsbl]`.
#[derive(Clone, Debug, Eq, PartialEq, Serialize)]
pub struct DnsblConfig {
    /// The lists. None (the default): no DNSBL checks.
    pub zones: Vec<DnsblZone>,
    /// When a list does not answer (timeout, SERVFAIL).
    pub on_error: DnsblOnError,
    /// Local parts whose mail is never refused by a list (`postmaster`,
    /// `abuse`: a listed server's admin must be able to reach us).
    pub exempt_recipients: Vec<String>,
    /// Clients never checked (besides trusted networks and authenticated
    /// sessions).
    pub allow_list: Vec<IpNet>,
}

impl Default for DnsblConfig {
    fn default() -> Self {
        Self {
            zones: Vec::new(),
            on_error: DnsblOnError::Accept,
            exempt_recipients: vec!["postmaster".into(), "abuse".into()],
            allow_list: Vec::new(),
        }
    }
}

impl DnsblConfig {
    /// Whether any zone is asked for this sender: `safe_sender` is a null
    /// or postmaster sender.
    pub fn applies(&self, safe_sender: bool) -> bool {
        self.zones
            .iter()
            .any(|z| z.mode == DnsblMode::All || safe_sender)
    }

    /// Whether mail to `local_part` is never refused by a list.
    pub fn exempts_recipient(&self, local_part: &str) -> bool {
        self.exempt_recipients
            .iter()
            .any(|e| e.eq_ignore_ascii_case(local_part))
    }
}

/// The name to look up for `ip` in `zone`: the IPv4 octets, or the 32
/// nibbles of an IPv6 address, reversed.
///
/// ```
/// use nobounce_core::dnsbl::query_name;
/// assert_eq!(query_name("192.0.2.7".parse().unwrap(), "bl.test"), "7.2.0.192.bl.test.");
/// let six = query_name("2001:db8::1".parse().unwrap(), "bl.test");
/// assert!(six.starts_with("1.0.0.0.0.0.0.0.") && six.ends_with(".8.b.d.0.1.0.0.2.bl.test."));
/// ```
pub fn query_name(ip: IpAddr, zone: &str) -> String {
    let zone = zone.trim_end_matches('.');
    let mut name = String::with_capacity(80);
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            let _ = write!(name, "{d}.{c}.{b}.{a}.");
        }
        IpAddr::V6(v6) => {
            for byte in v6.octets().iter().rev() {
                let _ = write!(name, "{:x}.{:x}.", byte & 0xf, byte >> 4);
            }
        }
    }
    name.push_str(zone);
    name.push('.');
    name
}

/// What one list said about a client.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum ZoneAnswer {
    /// Not listed (NXDOMAIN, or no answer in 127.0.0.0/8).
    NotListed,
    /// Listed: the answer in 127.0.0.0/8, and the TXT text if any.
    Listed {
        /// The A record (usually 127.0.0.2).
        code: Ipv4Addr,
        /// The TXT text at the same name.
        txt: Option<String>,
    },
    /// The list did not answer.
    Failed(String),
}

/// Asks `zone` about `ip`.
pub async fn ask(lookup: &dyn TtlLookup, ip: IpAddr, zone: &str) -> ZoneAnswer {
    let text = query_name(ip, zone);
    let Ok(name) = Name::new(&text) else {
        return ZoneAnswer::Failed(format!("{text:?} is not a valid DNS name"));
    };
    let answers = match lookup.lookup_a(&name).await {
        Ok(a) => a.records,
        Err(TtlLookupError::NoRecords { .. }) => return ZoneAnswer::NotListed,
        Err(TtlLookupError::Timeout) => return ZoneAnswer::Failed("timeout".into()),
        Err(TtlLookupError::Dns(e)) => return ZoneAnswer::Failed(e.to_string()),
    };
    let (listed, other): (Vec<Ipv4Addr>, Vec<Ipv4Addr>) =
        answers.into_iter().partition(|a| a.octets()[0] == 127);
    if !other.is_empty() {
        tracing::warn!(
            event = "dnsbl_odd_answer",
            zone,
            answers = ?other,
            "DNSBL answered outside 127.0.0.0/8; ignored"
        );
    }
    let Some(code) = listed.into_iter().min() else {
        return ZoneAnswer::NotListed;
    };
    let txt = match lookup.lookup_txt(&name).await {
        Ok(a) => a.records.into_iter().next(),
        Err(_) => None,
    };
    ZoneAnswer::Listed { code, txt }
}

/// The verdict for a client `ip` listed in `zone`.
pub fn listed_verdict(zone: &DnsblZone, ip: IpAddr, code: Ipv4Addr, txt: Option<&str>) -> Verdict {
    let txt: String = txt
        .map(crate::reply::sanitize_text)
        .unwrap_or_default()
        .chars()
        .take(MAX_TXT)
        .collect();
    let template = zone.reply.as_deref().unwrap_or(DEFAULT_REPLY);
    let text = template
        .replace("{ip}", &ip.to_string())
        .replace("{zone}", &zone.zone)
        .replace("{txt}", if txt.is_empty() { "listed" } else { &txt });
    let reply = Reply::new(550, "5.7.1", &text).expect("fixed codes of matching class");
    Verdict::Reject {
        reply,
        reason: Reason::new(
            Policy::Dnsbl,
            format!("{ip} listed in {} ({code})", zone.zone),
        ),
    }
}

/// The verdict when `zone` did not answer: continue (logged by the
/// caller), or a temporary failure.
pub fn failed_verdict(config: &DnsblConfig, zone: &DnsblZone, why: &str) -> Verdict {
    match config.on_error {
        DnsblOnError::Accept => Verdict::Continue,
        DnsblOnError::Tempfail => Verdict::Tempfail {
            reply: Reply::new(451, "4.7.1", "Block list lookup failed, try again later")
                .expect("fixed codes of matching class"),
            reason: Reason::new(
                Policy::Dnsbl,
                format!("{} did not answer: {why}", zone.zone),
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_is_queried_in_nibble_format() {
        let name = query_name("2001:db8:1:2::abcd".parse().unwrap(), "bl.test.");
        assert_eq!(
            name,
            "d.c.b.a.0.0.0.0.0.0.0.0.0.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.bl.test."
        );
        // An IPv4-mapped client is the IPv4 client.
        assert_eq!(
            query_name("::ffff:192.0.2.7".parse().unwrap(), "bl.test"),
            "7.2.0.192.bl.test."
        );
    }

    #[test]
    fn safe_mode_applies_to_null_and_postmaster_senders_only() {
        let mut c = DnsblConfig {
            zones: vec![DnsblZone {
                zone: "ips.backscatterer.org".into(),
                mode: DnsblMode::Safe,
                reply: None,
            }],
            ..Default::default()
        };
        assert!(c.applies(true));
        assert!(!c.applies(false));
        c.zones[0].mode = DnsblMode::All;
        assert!(c.applies(false));
        assert!(c.exempts_recipient("PostMaster"));
        assert!(!c.exempts_recipient("ann"));
    }

    #[test]
    fn listing_text_is_sanitised_and_bounded() {
        let zone = DnsblZone {
            zone: "bl.test".into(),
            mode: DnsblMode::Safe,
            reply: None,
        };
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let evil = format!("see\r\nhttp://x/{}\0", "a".repeat(500));
        let v = listed_verdict(&zone, ip, Ipv4Addr::new(127, 0, 0, 2), Some(&evil));
        let r = v.reply().unwrap().to_string();
        assert!(
            r.starts_with(
                "550 5.7.1 Service unavailable; client [192.0.2.7] blocked using bl.test; see"
            ),
            "{r}"
        );
        assert!(
            !r.contains('\r') && !r.contains('\n') && !r.contains('\0'),
            "{r:?}"
        );
        assert!(r.len() < 320, "{}", r.len());
        let custom = DnsblZone {
            reply: Some("Bounces from {ip} refused ({zone})".into()),
            ..zone
        };
        let v = listed_verdict(&custom, ip, Ipv4Addr::new(127, 0, 0, 2), None);
        assert_eq!(
            v.reply().unwrap().to_string(),
            "550 5.7.1 Bounces from 192.0.2.7 refused (bl.test)"
        );
    }
}
