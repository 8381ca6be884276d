//! The bounce guard: a server that cannot help accepting a message and
//! failing it later (a mailbox removed or filled after RCPT, a delivery
//! agent that refuses at DATA, a relay target that refuses the recipient)
//! must at least not send the bounce to a forged sender. With the guard on,
//! nobounce also sees the bounces Postfix generates (`non_smtpd_milters`
//! with `internal_mail_filter_classes = bounce`) and lets one go out only
//! when the original sender was verified, or when it goes to one of our own
//! domains; otherwise it is held in Postfix's hold queue (or discarded).
//!
//! The decision rests on what nobounce **recorded** when it accepted the
//! original (client, SPF result, authentication, local submission), found
//! by the original's queue id in the bounce's `message/delivery-status`
//! part (`X-Postfix-Queue-ID`), never on the quoted original, which a
//! spammer writes. Postfix reuses short queue ids, so the guard refuses to
//! guess unless ids are long (`enable_long_queue_ids = yes`). A bounce is
//! never refused or tempfailed: Postfix would retry it, or lose track.

use serde::Serialize;
use std::time::Duration;

/// What to do with a bounce that may be backscatter.
#[derive(Clone, Copy, Debug, Default, Eq, Hash, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GuardAction {
    /// Postfix's hold queue (`SMFIR_QUARANTINE`): nothing is lost; the
    /// admin releases (`postsuper -H`) or deletes (`postsuper -d`) it.
    #[default]
    Quarantine,
    /// Drop it; Postfix considers the notice sent.
    Discard,
}

/// `[bounce_guard]`.
#[derive(Clone, Debug, Eq, PartialEq, Serialize)]
pub struct BounceGuardConfig {
    /// Judge every bounce Postfix generates. Default off.
    pub enabled: bool,
    /// What to do with a bounce that may be backscatter.
    pub action: GuardAction,
    /// Our own domains: a bounce to them always goes out.
    pub domains: Vec<String>,
    /// How long what nobounce saw of an accepted message is kept: the
    /// queue lifetime (Postfix `maximal_queue_lifetime`, 5 days).
    #[serde(serialize_with = "crate::clock::serialize_duration")]
    pub record_lifetime: Duration,
}

impl Default for BounceGuardConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            action: GuardAction::Quarantine,
            domains: Vec::new(),
            record_lifetime: Duration::from_secs(5 * 86_400),
        }
    }
}

impl BounceGuardConfig {
    /// Whether `domain` is one of ours.
    pub fn is_ours(&self, domain: &str) -> bool {
        let domain = domain.trim_end_matches('.');
        self.domains.iter().any(|d| d.eq_ignore_ascii_case(domain))
    }
}

/// Why the sender of an accepted message counts as verified.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Verified {
    /// SPF pass for the MAIL FROM domain.
    SpfPass,
    /// An SMTP-authenticated session.
    Authenticated,
    /// A client in a trusted network.
    TrustedNetwork,
    /// Submitted on this host (sendmail(1), pickup).
    LocalSubmission,
}

impl Verified {
    fn as_str(self) -> &'static str {
        match self {
            Self::SpfPass => "spf-pass",
            Self::Authenticated => "authenticated",
            Self::TrustedNetwork => "trusted-network",
            Self::LocalSubmission => "local",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "spf-pass" => Self::SpfPass,
            "authenticated" => Self::Authenticated,
            "trusted-network" => Self::TrustedNetwork,
            "local" => Self::LocalSubmission,
            _ => return None,
        })
    }
}

/// What nobounce remembers of an accepted message.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct MessageRecord {
    /// Why its sender counts as verified, if it does.
    pub verified: Option<Verified>,
    /// The SPF result (`pass`, `softfail`, `none`, ..., `-` when not checked).
    pub spf: String,
    /// The client address (`-` for none).
    pub client: String,
    /// The envelope sender (empty for `<>`).
    pub sender: String,
}

/// The store key of the record of message `queue_id` on MTA `host`.
pub fn record_key(host: &str, queue_id: &str) -> String {
    format!("msg:{host}:{queue_id}")
}

fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c == ';' || c.is_control() { ' ' } else { c })
        .collect()
}

impl MessageRecord {
    /// The stored form: `v=1;verified=spf-pass;spf=pass;client=...;sender=...`.
    pub fn encode(&self) -> String {
        format!(
            "v=1;verified={};spf={};client={};sender={}",
            self.verified.map_or("-", Verified::as_str),
            clean(&self.spf),
            clean(&self.client),
            clean(&self.sender),
        )
    }

    /// Reads the stored form; `None` for anything else.
    pub fn decode(text: &str) -> Option<Self> {
        let mut fields = text.split(';');
        if fields.next()? != "v=1" {
            return None;
        }
        let mut r = Self {
            verified: None,
            spf: String::new(),
            client: String::new(),
            sender: String::new(),
        };
        for field in fields {
            let (k, v) = field.split_once('=')?;
            match k {
                "verified" => r.verified = Verified::parse(v),
                "spf" => r.spf = v.to_owned(),
                "client" => r.client = v.to_owned(),
                "sender" => r.sender = v.to_owned(),
                _ => {}
            }
        }
        Some(r)
    }
}

/// The most bytes of a bounce read to find its delivery status part
/// (Postfix puts it second, after a short human-readable part).
pub const MAX_SCANNED: usize = 64 * 1024;

/// What the `message/delivery-status` part of a bounce says about the
/// original message.
#[derive(Clone, Debug, Default, Eq, PartialEq)]
pub struct DsnFacts {
    /// `X-Postfix-Queue-ID`.
    pub queue_id: Option<String>,
    /// `X-Postfix-Sender` (without `rfc822;`).
    pub sender: Option<String>,
}

/// The `boundary` parameter of a `multipart/report; report-type=delivery-status`
/// Content-Type; `None` for any other type.
pub fn report_boundary(content_type: &str) -> Option<String> {
    let mut parts = content_type.split(';');
    if !parts
        .next()?
        .trim()
        .eq_ignore_ascii_case("multipart/report")
    {
        return None;
    }
    let mut boundary = None;
    let mut delivery_status = false;
    for p in parts {
        let Some((k, v)) = p.split_once('=') else {
            continue;
        };
        let v = v.trim().trim_matches('"');
        match k.trim().to_ascii_lowercase().as_str() {
            "boundary" if !v.is_empty() && v.len() <= 200 => boundary = Some(v.to_owned()),
            "report-type" => delivery_status = v.eq_ignore_ascii_case("delivery-status"),
            _ => {}
        }
    }
    boundary.filter(|_| delivery_status)
}

/// Reads the per-message fields of the first `message/delivery-status`
/// part of a multipart body with `boundary`. Only that part is read: the
/// quoted original that follows it is the sender's text.
pub fn scan_dsn(body: &[u8], boundary: &str) -> DsnFacts {
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX_SCANNED)]);
    let delimiter = format!("--{boundary}");
    let mut facts = DsnFacts::default();
    for part in text.split(delimiter.as_str()).skip(1) {
        if part.starts_with("--") {
            break; // the closing delimiter
        }
        let part = part.trim_start_matches(['\r', '\n']);
        let (headers, content) = match part.find("\r\n\r\n").or_else(|| part.find("\n\n")) {
            Some(i) => (&part[..i], part[i..].trim_start_matches(['\r', '\n'])),
            None => continue,
        };
        let is_dsn = headers.lines().any(|l| {
            l.split_once(':').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("content-type")
                    && v.trim()
                        .to_ascii_lowercase()
                        .starts_with("message/delivery-status")
            })
        });
        if !is_dsn {
            continue;
        }
        // The per-message fields: the first block, up to an empty line.
        for line in content.lines() {
            let line = line.trim_end_matches('\r');
            if line.is_empty() {
                break;
            }
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let v = v.trim();
            if k.eq_ignore_ascii_case("X-Postfix-Queue-ID") && facts.queue_id.is_none() {
                let id: String = v.chars().take(64).collect();
                if !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric()) {
                    facts.queue_id = Some(id);
                }
            } else if k.eq_ignore_ascii_case("X-Postfix-Sender") && facts.sender.is_none() {
                let addr = v.split_once(';').map_or(v, |(_, a)| a).trim();
                facts.sender = Some(addr.chars().take(320).collect());
            }
        }
        break;
    }
    facts
}

/// Whether `id` is a long Postfix queue id (`enable_long_queue_ids = yes`:
/// base-52 time and inode, e.g. `4NJQ1X6Zq2z9sR`). Short ids are upper-case
/// hex and reused: they cannot name a message for five days.
pub fn is_long_queue_id(id: &str) -> bool {
    id.len() >= 12
        && !id
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase())
}

/// The guard's judgement of one bounce.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum Judgement {
    /// Let it go out; why.
    Send(String),
    /// Hold or discard it; why.
    Hold(String),
}

/// Judges a bounce: `facts` from its DSN part, `to_ours` whether it goes
/// to one of our domains, `record` what was recorded of the original
/// (`Err` when the store failed).
pub fn judge(
    facts: &DsnFacts,
    to_ours: bool,
    record: Result<Option<MessageRecord>, String>,
) -> Judgement {
    if to_ours {
        return Judgement::Send("the bounce goes to one of our domains".into());
    }
    let Some(id) = &facts.queue_id else {
        return Judgement::Hold(
            "no X-Postfix-Queue-ID in the delivery status: cannot tell which message it is about"
                .into(),
        );
    };
    if !is_long_queue_id(id) {
        return Judgement::Hold(format!(
            "short queue id {id} may name another message: set enable_long_queue_ids = yes"
        ));
    }
    match record {
        Err(e) => Judgement::Hold(format!(
            "state store failed, original {id} not checked: {e}"
        )),
        Ok(None) => Judgement::Hold(format!("nobounce never saw the original {id}")),
        Ok(Some(r)) => match r.verified {
            Some(v) => Judgement::Send(format!("original sender verified ({})", v.as_str())),
            None => Judgement::Hold(format!(
                "original sender not verified (SPF {} from {})",
                r.spf, r.client
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNCE: &str = "This is a MIME-encapsulated message.\r\n\r\n\
--4NJQ1X6Zq2z9sR.1764420000/mx.example\r\n\
Content-Description: Notification\r\n\
Content-Type: text/plain; charset=us-ascii\r\n\r\n\
X-Postfix-Queue-ID: FAKEFAKEFAKE1\r\n\
<nobody@example.test>: host said: 550 no such user\r\n\r\n\
--4NJQ1X6Zq2z9sR.1764420000/mx.example\r\n\
Content-Description: Delivery report\r\n\
Content-Type: message/delivery-status\r\n\r\n\
Reporting-MTA: dns; mx.example\r\n\
X-Postfix-Queue-ID: 4NJQ1X6Zq2z9sR\r\n\
X-Postfix-Sender: rfc822; eve@soft.test\r\n\
Arrival-Date: Sun, 29 Nov 2026 12:00:00 +0000 (UTC)\r\n\r\n\
Final-Recipient: rfc822; nobody@example.test\r\n\
Action: failed\r\n\r\n\
--4NJQ1X6Zq2z9sR.1764420000/mx.example\r\n\
Content-Description: Undelivered Message\r\n\
Content-Type: message/rfc822\r\n\r\n\
X-Postfix-Queue-ID: 4FORGEDqz9sR\r\n\
Subject: spam\r\n\r\n\
--4NJQ1X6Zq2z9sR.1764420000/mx.example--\r\n";

    #[test]
    fn the_delivery_status_part_names_the_original_and_nothing_else_does() {
        let ct = "multipart/report; report-type=delivery-status;\r\n\tboundary=\"4NJQ1X6Zq2z9sR.1764420000/mx.example\"";
        let boundary = report_boundary(ct).unwrap();
        let facts = scan_dsn(BOUNCE.as_bytes(), &boundary);
        assert_eq!(facts.queue_id.as_deref(), Some("4NJQ1X6Zq2z9sR"));
        assert_eq!(facts.sender.as_deref(), Some("eve@soft.test"));
        assert_eq!(report_boundary("multipart/mixed; boundary=x"), None);
        assert_eq!(
            report_boundary("multipart/report; report-type=disposition-notification; boundary=x"),
            None
        );
        // A body without a delivery status part names nothing.
        let plain = BOUNCE.replace("message/delivery-status", "text/plain");
        assert_eq!(scan_dsn(plain.as_bytes(), &boundary), DsnFacts::default());
    }

    #[test]
    fn long_and_short_queue_ids() {
        assert!(is_long_queue_id("4NJQ1X6Zq2z9sR"));
        assert!(!is_long_queue_id("2F0D19A2462"));
        assert!(!is_long_queue_id("30AAD9A2124F"));
    }

    #[test]
    fn records_round_trip_and_junk_is_no_record() {
        let r = MessageRecord {
            verified: Some(Verified::SpfPass),
            spf: "pass".into(),
            client: "192.0.2.7".into(),
            sender: "joe;evil=1@x.test".into(),
        };
        let back = MessageRecord::decode(&r.encode()).unwrap();
        assert_eq!(back.verified, Some(Verified::SpfPass));
        assert_eq!(back.sender, "joe evil=1@x.test");
        assert_eq!(MessageRecord::decode("garbage"), None);
        assert_eq!(MessageRecord::decode("v=2;verified=local"), None);
    }

    #[test]
    fn judgements() {
        let facts = DsnFacts {
            queue_id: Some("4NJQ1X6Zq2z9sR".into()),
            sender: Some("eve@soft.test".into()),
        };
        let soft = MessageRecord {
            verified: None,
            spf: "softfail".into(),
            client: "192.0.2.7".into(),
            sender: "eve@soft.test".into(),
        };
        assert!(
            matches!(judge(&facts, false, Ok(Some(soft.clone()))), Judgement::Hold(r) if r.contains("SPF softfail"))
        );
        let pass = MessageRecord {
            verified: Some(Verified::SpfPass),
            ..soft.clone()
        };
        assert!(matches!(
            judge(&facts, false, Ok(Some(pass))),
            Judgement::Send(_)
        ));
        assert!(matches!(
            judge(&facts, true, Ok(Some(soft))),
            Judgement::Send(_)
        ));
        assert!(
            matches!(judge(&facts, false, Ok(None)), Judgement::Hold(r) if r.contains("never saw"))
        );
        assert!(matches!(
            judge(&facts, false, Err("down".into())),
            Judgement::Hold(_)
        ));
        let short = DsnFacts {
            queue_id: Some("2F0D19A2462".into()),
            ..facts.clone()
        };
        assert!(
            matches!(judge(&short, false, Ok(None)), Judgement::Hold(r) if r.contains("enable_long_queue_ids"))
        );
        assert!(matches!(
            judge(&DsnFacts::default(), false, Ok(None)),
            Judgement::Hold(_)
        ));
    }
}
