//! Why a recipient bounced: a DSN code (RFC 3463) and reply text turned
//! into one [`Reason`], and which reasons nobounce would have refused at
//! RCPT TO instead.

use serde::Serialize;

/// Why a delivery failed after the message had been accepted.
///
/// The order is the priority when one bounce carries recipients that
/// failed for different reasons: the bounce counts under the first reason
/// nobounce could not have prevented, else under the first one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// `x.1.1` / `x.1.6`, "User unknown", "No such user", "does not
    /// exist": the mailbox is not there.
    UnknownUser,
    /// `x.2.2`, "quota", "mailbox full": the mailbox is full.
    OverQuota,
    /// `x.2.1`, "disabled", "inactive": the mailbox exists but takes no
    /// mail.
    MailboxDisabled,
    /// "Relay access denied": the next hop refused to relay (a backup MX
    /// that accepted mail its primary does not want).
    RelayRefused,
    /// `x.1.2`, `x.4.4`, "Host or domain name not found": the recipient's
    /// domain could not be resolved.
    DomainNotFound,
    /// `x.3.4`, `x.2.3`, "message size exceeds": too big for the next hop.
    MessageTooBig,
    /// `x.4.6`, "mail forwarding loop".
    MailLoop,
    /// Any other `x.7.x`, "spam", "blocked", "policy": the next hop refused
    /// the message or this server.
    PolicyRejected,
    /// The message stayed in the queue until its lifetime ran out
    /// (Postfix `status=expired`, Sendmail "Cannot send message for 5
    /// days", qmail "in the queue too long").
    Expired,
    /// A failure none of the rules above recognise.
    Other,
    /// The log has the bounce, but not the failed deliveries that caused
    /// it (they were in an earlier file that was not given, or beyond the
    /// memory bounds).
    NotInLog,
}

/// Number of [`Reason`] variants.
pub(crate) const REASON_COUNT: usize = 11;

impl Reason {
    /// Every reason, in priority order.
    pub const ALL: [Reason; REASON_COUNT] = [
        Reason::UnknownUser,
        Reason::OverQuota,
        Reason::MailboxDisabled,
        Reason::RelayRefused,
        Reason::DomainNotFound,
        Reason::MessageTooBig,
        Reason::MailLoop,
        Reason::PolicyRejected,
        Reason::Expired,
        Reason::Other,
        Reason::NotInLog,
    ];

    /// The reasons nobounce turns into SMTP rejections, so that no bounce
    /// is ever generated for them.
    pub const PREVENTABLE: [Reason; 3] = [
        Reason::UnknownUser,
        Reason::OverQuota,
        Reason::MailboxDisabled,
    ];

    /// Whether nobounce would have refused this recipient at RCPT TO.
    ///
    /// nobounce asks its recipient backends (map file, LMTP/SMTP probe,
    /// Dovecot quota-status, Maildir++ quotas) at RCPT TO and answers an
    /// unknown user with `550 5.1.1`, a full mailbox with `452 4.2.2` (or
    /// `552 5.2.2`) and a disabled one with `550 5.2.1`: the sending MTA,
    /// not this server, then tells its user. Every other reason depends on
    /// what happens after acceptance (the next hop's policy, DNS, the queue
    /// lifetime) and nobounce cannot know it during the SMTP dialog.
    ///
    /// It is an upper bound: a mailbox that fills up between RCPT TO and
    /// delivery still bounces, and only mailboxes the backends know are
    /// checked.
    pub fn preventable(self) -> bool {
        Self::PREVENTABLE.contains(&self)
    }

    /// The JSON name (`unknown_user`).
    pub fn name(self) -> &'static str {
        match self {
            Reason::UnknownUser => "unknown_user",
            Reason::OverQuota => "over_quota",
            Reason::MailboxDisabled => "mailbox_disabled",
            Reason::RelayRefused => "relay_refused",
            Reason::DomainNotFound => "domain_not_found",
            Reason::MessageTooBig => "message_too_big",
            Reason::MailLoop => "mail_loop",
            Reason::PolicyRejected => "policy_rejected",
            Reason::Expired => "expired",
            Reason::Other => "other",
            Reason::NotInLog => "not_in_log",
        }
    }

    /// The name for people (`unknown user`).
    pub fn label(self) -> &'static str {
        match self {
            Reason::UnknownUser => "unknown user",
            Reason::OverQuota => "over quota",
            Reason::MailboxDisabled => "mailbox disabled",
            Reason::RelayRefused => "relay refused",
            Reason::DomainNotFound => "domain not found",
            Reason::MessageTooBig => "message too big",
            Reason::MailLoop => "mail loop",
            Reason::PolicyRejected => "refused by policy",
            Reason::Expired => "expired in queue",
            Reason::Other => "other",
            Reason::NotInLog => "cause not in log",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The reasons of one message's failed recipients, counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Reasons {
    counts: [u32; REASON_COUNT],
}

impl Reasons {
    pub(crate) fn add(&mut self, reason: Reason, recipients: u32) {
        let slot = &mut self.counts[reason.index()];
        *slot = slot.saturating_add(recipients);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.counts.iter().all(|&c| c == 0)
    }

    /// `(reason, recipients)` for every reason present.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (Reason, u32)> + '_ {
        Reason::ALL
            .iter()
            .map(|&r| (r, self.counts[r.index()]))
            .filter(|&(_, c)| c > 0)
    }

    /// The one reason a bounce is counted under: the first reason (in
    /// [`Reason`] order) that nobounce could not have prevented, since that
    /// recipient alone would still have caused the bounce; when every
    /// recipient was preventable, the first of those. With no recipient
    /// seen: [`Reason::NotInLog`].
    pub(crate) fn decide(&self) -> Reason {
        let mut present = self.iter().map(|(r, _)| r);
        let first = present.next();
        self.iter()
            .map(|(r, _)| r)
            .find(|r| !r.preventable())
            .or(first)
            .unwrap_or(Reason::NotInLog)
    }

    /// Whether every failed recipient was preventable (and there was one).
    pub(crate) fn preventable(&self) -> bool {
        !self.is_empty() && self.iter().all(|(r, _)| r.preventable())
    }
}

/// Longest text looked at: reply texts are short, and a bound keeps a
/// hostile log line from costing more than this.
const TEXT_LIMIT: usize = 1024;

/// Classifies one failed delivery from its DSN code (`dsn=5.1.1`; `None`
/// when the log has none, then a code in the text such as qmail's
/// `(#5.1.1)` is used) and its reply or status text.
///
/// Specific codes win over text; generic codes (`x.0.0`, `x.1.0`, `x.7.1`)
/// are refined by the text.
pub fn classify(dsn: Option<&str>, text: &str) -> Reason {
    let mut cut = text.len().min(TEXT_LIMIT);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let lower = text[..cut].to_ascii_lowercase();
    let code = dsn.and_then(parse_code).or_else(|| find_code(&lower));
    let relay = || {
        lower.contains("relay")
            && [
                "denied",
                "not permitted",
                "refused",
                "not allowed",
                "access",
                "prohibited",
            ]
            .iter()
            .any(|w| lower.contains(w))
    };
    if let Some((_, subject, detail)) = code {
        match (subject, detail) {
            (1, 1) | (1, 6) => return Reason::UnknownUser,
            (2, 2) => return Reason::OverQuota,
            (2, 1) => return Reason::MailboxDisabled,
            (1, 2) | (4, 4) | (1, 10) => return Reason::DomainNotFound,
            (3, 4) | (2, 3) => return Reason::MessageTooBig,
            (4, 6) => return Reason::MailLoop,
            (4, 7) => return Reason::Expired,
            (7, _) if relay() => return Reason::RelayRefused,
            (7, 0) | (7, 1) => {}
            (7, _) => return Reason::PolicyRejected,
            _ => {}
        }
    }
    let has = |words: &[&str]| words.iter().any(|w| lower.contains(w));
    if has(&[
        "quota",
        "mailbox full",
        "mailbox is full",
        "mailbox_full",
        "insufficient storage",
        "out of storage",
        "exceeded storage",
        "mailbox size limit",
    ]) {
        return Reason::OverQuota;
    }
    if relay() {
        return Reason::RelayRefused;
    }
    if has(&[
        "host or domain name not found",
        "domain not found",
        "domain does not exist",
        "name service error",
        "host unknown",
        "host not found",
        "null mx",
    ]) {
        return Reason::DomainNotFound;
    }
    if has(&[
        "user unknown",
        "unknown user",
        "no such user",
        "no such recipient",
        "no such mailbox",
        "no mailbox here",
        "unknown recipient",
        "recipient unknown",
        "user not found",
        "recipient not found",
        "mailbox not found",
        "does not exist",
        "doesn't exist",
        "invalid recipient",
        "unknown local part",
    ]) {
        return Reason::UnknownUser;
    }
    if has(&["disabled", "inactive", "suspended"]) {
        return Reason::MailboxDisabled;
    }
    if has(&["message size exceeds", "too big", "too large", "size limit"]) {
        return Reason::MessageTooBig;
    }
    if has(&["loop"]) {
        return Reason::MailLoop;
    }
    if has(&[
        "expired",
        "cannot send message for",
        "in the queue too long",
        "queue too long",
    ]) {
        return Reason::Expired;
    }
    if code.is_some_and(|(_, subject, _)| subject == 7)
        || has(&[
            "spam",
            "blocked",
            "blacklist",
            "blocklist",
            "block list",
            "policy",
            "dnsbl",
        ])
    {
        return Reason::PolicyRejected;
    }
    Reason::Other
}

/// `5.1.1` → `(5, 1, 1)`.
fn parse_code(s: &str) -> Option<(u8, u16, u16)> {
    let mut parts = s.trim().splitn(3, '.');
    let class: u8 = parts.next()?.parse().ok()?;
    let subject: u16 = parts.next()?.parse().ok()?;
    let detail: u16 = parts.next()?.parse().ok()?;
    matches!(class, 2 | 4 | 5).then_some((class, subject, detail))
}

/// The first enhanced status code in a text (`... (#5.1.1)`, `550 5.2.2
/// <x>: ...`), not part of an IP address or a version number.
fn find_code(text: &str) -> Option<(u8, u16, u16)> {
    let b = text.as_bytes();
    let digits = |mut i: usize| {
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() && i - start < 3 {
            i += 1;
        }
        (i > start).then_some(i)
    };
    for start in 0..b.len() {
        if !matches!(b[start], b'2' | b'4' | b'5') {
            continue;
        }
        if start > 0 && (b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'.') {
            continue;
        }
        if b.get(start + 1) != Some(&b'.') {
            continue;
        }
        let Some(after_subject) = digits(start + 2) else {
            continue;
        };
        if b.get(after_subject) != Some(&b'.') {
            continue;
        }
        let Some(end) = digits(after_subject + 1) else {
            continue;
        };
        let followed_by_number = b.get(end).is_some_and(|c| c.is_ascii_digit())
            || (b.get(end) == Some(&b'.') && b.get(end + 1).is_some_and(|c| c.is_ascii_digit()));
        if followed_by_number {
            continue;
        }
        if let Some(code) = parse_code(&text[start..end]) {
            return Some(code);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_texts_from_real_mtas() {
        let cases: &[(Option<&str>, &str, Reason)] = &[
            // Postfix relaying to a next hop that refuses.
            (Some("5.1.1"), "host 127.0.0.1[127.0.0.1] said: 550 5.1.1 <nobody@example.test>: no such user (in reply to RCPT TO command)", Reason::UnknownUser),
            (Some("5.2.2"), "host 127.0.0.1[127.0.0.1] said: 552 5.2.2 <full@example.test>: mailbox full (in reply to RCPT TO command)", Reason::OverQuota),
            (Some("5.7.1"), "host 127.0.0.1[127.0.0.1] said: 554 5.7.1 <x@elsewhere.test>: Relay access denied (in reply to RCPT TO command)", Reason::RelayRefused),
            (Some("5.7.1"), "host mx[192.0.2.1] said: 550 5.7.1 Message rejected as spam", Reason::PolicyRejected),
            (Some("5.4.4"), "Host or domain name not found. Name service error for name=nowhere.test type=A: Host not found", Reason::DomainNotFound),
            (Some("5.0.0"), "host mx said: 552 Quota exceeded (mailbox for user is full)", Reason::OverQuota),
            (Some("5.1.1"), "unknown user: \"nobody\"", Reason::UnknownUser),
            (Some("5.2.1"), "Mailbox disabled, not accepting messages", Reason::MailboxDisabled),
            (Some("5.3.4"), "message size 2000000 exceeds size limit 1000000 of server", Reason::MessageTooBig),
            (Some("5.4.6"), "mail forwarding loop for x@example.test", Reason::MailLoop),
            // Sendmail stat= texts.
            (Some("5.1.1"), "User unknown", Reason::UnknownUser),
            (Some("5.0.0"), "Service unavailable", Reason::Other),
            (Some("5.1.2"), "Host unknown (Name server: nowhere.test: host not found)", Reason::DomainNotFound),
            (None, "Cannot send message for 5 days", Reason::Expired),
            // qmail failure reports (logsafe: spaces as underscores are undone by the caller).
            (None, "Sorry, no mailbox here by that name. (#5.1.1)", Reason::UnknownUser),
            (None, "192.0.2.1 does not like recipient. Remote host said: 552 5.2.2 Mailbox full Giving up on 192.0.2.1.", Reason::OverQuota),
            (None, "I'm not going to try again; this message has been in the queue too long.", Reason::Expired),
            (None, "Sorry. Although I'm listed as a best-preference MX or A for that host, it isn't in my control/locals file, so I don't treat it as local. (#5.4.6)", Reason::MailLoop),
            (None, "something odd happened", Reason::Other),
        ];
        for (dsn, text, want) in cases {
            assert_eq!(classify(*dsn, text), *want, "{dsn:?} {text}");
        }
    }

    #[test]
    fn addresses_and_versions_are_not_status_codes() {
        assert_eq!(find_code("host 127.0.0.1[127.0.0.1] refused"), None);
        assert_eq!(find_code("[192.0.2.5] said hello"), None);
        assert_eq!(find_code("sendmail 8.17.1 says 5.1.1 no"), Some((5, 1, 1)));
        assert_eq!(find_code("(#5.2.2)"), Some((5, 2, 2)));
        assert_eq!(find_code("v2.5.10.3"), None);
    }

    #[test]
    fn a_bounce_counts_under_what_would_still_have_bounced() {
        let mut r = Reasons::default();
        assert_eq!(r.decide(), Reason::NotInLog);
        assert!(!r.preventable());
        r.add(Reason::OverQuota, 1);
        r.add(Reason::UnknownUser, 1);
        assert_eq!(r.decide(), Reason::UnknownUser);
        assert!(r.preventable());
        r.add(Reason::RelayRefused, 1);
        assert_eq!(r.decide(), Reason::RelayRefused);
        assert!(!r.preventable());
    }

    #[test]
    fn names_match_serde() {
        for r in Reason::ALL {
            assert_eq!(
                serde_json::to_value(r).expect("serializes"),
                serde_json::Value::String(r.name().into())
            );
        }
    }

    #[test]
    fn huge_and_non_ascii_texts_are_fine() {
        let long = "ü".repeat(5000);
        assert_eq!(classify(None, &long), Reason::Other);
        assert_eq!(classify(Some("garbage"), "\0\r"), Reason::Other);
    }
}
