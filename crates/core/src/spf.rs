//! SPF policy: verify HELO and MAIL FROM with viaspf and map the result to a
//! verdict.
//!
//! Evaluation goes through the [`SpfVerifier`] port. [`LookupVerifier`]
//! evaluates with any viaspf [`Lookup`]; a caching verifier can sit in front
//! of it. The mapping from result to verdict ([`decide`]) is a plain function
//! of the configuration.

use crate::{
    reply::Reply,
    verdict::{Policy, Reason, Verdict},
};
use async_trait::async_trait;
use ipnet::IpNet;
use serde::Serialize;
use std::{
    fmt::{self, Debug, Display, Formatter},
    net::IpAddr,
    time::Duration,
};
use viaspf::{lookup::Lookup, DomainName, Sender, SpfResult, SpfResultCause};

/// Which identity an SPF check is about (RFC 7208 §2.3, §2.4).
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub enum Identity {
    /// The HELO/EHLO domain.
    Helo,
    /// The MAIL FROM address (for a null sender: `postmaster@HELO`).
    MailFrom,
}

impl Identity {
    /// `helo` or `mailfrom`, as in `Received-SPF`'s `identity=` key.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Helo => "helo",
            Self::MailFrom => "mailfrom",
        }
    }
}

/// One SPF question: may `ip` send for `sender`?
#[derive(Clone, Debug)]
pub struct SpfRequest {
    /// The client address.
    pub ip: IpAddr,
    /// The identity checked: `postmaster@helo` for HELO and null senders.
    pub sender: Sender,
    /// The HELO domain, for the `%{h}` macro, if it is a valid domain.
    pub helo: Option<DomainName>,
}

/// The answer to an [`SpfRequest`].
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct SpfAnswer {
    /// The SPF result, with the explanation for `fail`.
    pub result: SpfResult,
    /// The matching mechanism or the error cause, as text for logs/headers.
    pub cause: Option<String>,
    /// How long this answer stays true (smallest DNS TTL seen), when known.
    pub ttl: Option<Duration>,
}

/// The port through which the engine evaluates SPF.
#[async_trait]
pub trait SpfVerifier: Send + Sync + Debug {
    /// Evaluates one request. SPF errors (`temperror`, `permerror`) are
    /// results, not `Err`.
    async fn verify(&self, request: &SpfRequest) -> SpfAnswer;
}

/// Evaluates SPF with a viaspf [`Lookup`] (no caching).
pub struct LookupVerifier<L> {
    lookup: L,
    config: viaspf::Config,
}

impl<L> Debug for LookupVerifier<L> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.debug_struct("LookupVerifier").finish_non_exhaustive()
    }
}

impl<L: Lookup> LookupVerifier<L> {
    /// Evaluates with `lookup`; `timeout` bounds one whole evaluation.
    pub fn new(lookup: L, timeout: Duration) -> Self {
        let config = viaspf::Config::builder().timeout(timeout).build();
        Self { lookup, config }
    }

    /// Evaluates with `lookup` and a viaspf configuration of your own.
    pub fn with_config(lookup: L, config: viaspf::Config) -> Self {
        Self { lookup, config }
    }
}

/// Turns a viaspf cause into text for logs and headers.
pub fn cause_text(cause: Option<&SpfResultCause>) -> Option<String> {
    cause.map(|c| match c {
        SpfResultCause::Match(m) => format!("matched {m}"),
        SpfResultCause::Error(e) => e.to_string(),
    })
}

#[async_trait]
impl<L: Lookup> SpfVerifier for LookupVerifier<L> {
    async fn verify(&self, request: &SpfRequest) -> SpfAnswer {
        let r = viaspf::evaluate_sender(
            &self.lookup,
            &self.config,
            request.ip,
            &request.sender,
            request.helo.as_ref(),
        )
        .await;
        SpfAnswer {
            cause: cause_text(r.cause.as_ref()),
            result: r.spf_result,
            ttl: None,
        }
    }
}

/// The verifier of an engine built without DNS: every check is `temperror`,
/// so a misconfigured embedder tempfails instead of passing mail unchecked.
#[derive(Clone, Copy, Debug, Default)]
pub struct UnconfiguredVerifier;

#[async_trait]
impl SpfVerifier for UnconfiguredVerifier {
    async fn verify(&self, _request: &SpfRequest) -> SpfAnswer {
        SpfAnswer {
            result: SpfResult::Temperror,
            cause: Some("no DNS lookup configured".into()),
            ttl: None,
        }
    }
}

/// What to do with a message that got a given SPF result.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SpfAction {
    /// Accept and record the result in a header.
    Accept,
    /// Refuse permanently (5xx).
    Reject,
    /// Refuse temporarily (4xx).
    Tempfail,
}

/// Which trace headers to add at end of message.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq, Serialize)]
pub enum SpfHeader {
    /// `Received-SPF` (RFC 7208 §9.1).
    #[serde(rename = "Received-SPF")]
    ReceivedSpf,
    /// `Authentication-Results` (RFC 8601).
    #[serde(rename = "Authentication-Results")]
    AuthenticationResults,
}

/// SPF settings. Every field has a default; see `docs/nobounce.toml`.
#[derive(Clone, Debug, Eq, PartialEq, Serialize)]
pub struct SpfConfig {
    /// Check SPF at all. Default: `true`.
    pub enabled: bool,
    /// Also verify the HELO identity; a HELO `fail` is rejected. Default: `true`.
    pub verify_helo: bool,
    /// Clients in these networks skip SPF. Default: loopback
    /// (`127.0.0.0/8`, `::1/128`); `[]` checks every client.
    pub trusted_networks: Vec<IpNet>,
    /// Skip SMTP-authenticated senders (`{auth_authen}` set). Default: `true`.
    pub skip_authenticated: bool,
    /// Sender domains that skip SPF; `.example.org` also covers subdomains.
    /// Default: empty.
    pub skip_senders: Vec<String>,
    /// Action for `fail`. Default: `reject` (`550 5.7.23`).
    pub on_fail: SpfAction,
    /// Action for `softfail`. Default: `accept`.
    pub on_softfail: SpfAction,
    /// Action for `neutral`. Default: `accept`.
    pub on_neutral: SpfAction,
    /// Action for `none`. Default: `accept`.
    pub on_none: SpfAction,
    /// Action for `permerror`. Default: `reject` (`550 5.7.24`).
    pub on_permerror: SpfAction,
    /// Action for `temperror`. Default: `tempfail` (`451 4.7.24`).
    pub on_temperror: SpfAction,
    /// Headers added at end of message. Default: `Received-SPF` only (RFC
    /// 7208 §9.1); add `Authentication-Results` (RFC 8601) if your filters
    /// read it. Each header is one more message to the MTA per mail.
    pub headers: Vec<SpfHeader>,
    /// The authserv-id of `Authentication-Results`; incoming headers with
    /// this id are removed as forged. Default: the MTA's host name (`j`).
    pub authserv_id: Option<String>,
    /// Upper bound on one SPF evaluation. Default: 20 s. The HELO and MAIL
    /// FROM checks of one command also share the command's deadline
    /// ([`EngineConfig::command_timeout`](crate::EngineConfig)).
    #[serde(serialize_with = "crate::clock::serialize_duration")]
    pub timeout: Duration,
    /// How many SPF answers the shared cache keeps (about 340 bytes each, see
    /// [`crate::spf_cache`]); `0` disables caching. Default: 100000.
    pub cache_size: usize,
    /// Upper bound on how long a cached answer is kept; the smallest DNS
    /// TTL the evaluation used is the other bound. Default: 1 hour.
    #[serde(serialize_with = "crate::clock::serialize_duration")]
    pub cache_max_ttl: Duration,
}

impl Default for SpfConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            verify_helo: true,
            trusted_networks: vec![
                "127.0.0.0/8".parse().expect("valid network literal"),
                "::1/128".parse().expect("valid network literal"),
            ],
            skip_authenticated: true,
            skip_senders: Vec::new(),
            on_fail: SpfAction::Reject,
            on_softfail: SpfAction::Accept,
            on_neutral: SpfAction::Accept,
            on_none: SpfAction::Accept,
            on_permerror: SpfAction::Reject,
            on_temperror: SpfAction::Tempfail,
            headers: vec![SpfHeader::ReceivedSpf],
            authserv_id: None,
            timeout: Duration::from_secs(20),
            cache_size: 100_000,
            cache_max_ttl: Duration::from_secs(3600),
        }
    }
}

impl SpfConfig {
    /// The action configured for `result`; `pass` is always accepted.
    pub fn action_for(&self, result: &SpfResult) -> SpfAction {
        match result {
            SpfResult::Pass => SpfAction::Accept,
            SpfResult::Fail(_) => self.on_fail,
            SpfResult::Softfail => self.on_softfail,
            SpfResult::Neutral => self.on_neutral,
            SpfResult::None => self.on_none,
            SpfResult::Permerror => self.on_permerror,
            SpfResult::Temperror => self.on_temperror,
        }
    }

    /// `true` if SPF is skipped for this sender domain.
    pub fn skips_sender_domain(&self, domain: &str) -> bool {
        let domain = domain.trim_end_matches('.');
        self.skip_senders.iter().any(|s| {
            if let Some(suffix) = s.strip_prefix('.') {
                domain.eq_ignore_ascii_case(suffix)
                    || (domain.len() > s.len()
                        && domain.is_char_boundary(domain.len() - s.len())
                        && domain[domain.len() - s.len()..].eq_ignore_ascii_case(s))
            } else {
                domain.eq_ignore_ascii_case(s)
            }
        })
    }

    /// `true` if `ip` is in a trusted network.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted_networks.iter().any(|n| n.contains(&ip))
    }
}

/// A finished SPF check, kept for headers and logs.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct SpfOutcome {
    /// Which identity decided.
    pub identity: Identity,
    /// The identity checked, as text (`user@domain` or `postmaster@helo`).
    pub sender: String,
    /// The answer.
    pub answer: SpfAnswer,
}

/// Short name of a result (`pass`, `fail`, ...), without explanation.
pub fn result_name(result: &SpfResult) -> &'static str {
    match result {
        SpfResult::None => "none",
        SpfResult::Neutral => "neutral",
        SpfResult::Pass => "pass",
        SpfResult::Fail(_) => "fail",
        SpfResult::Softfail => "softfail",
        SpfResult::Temperror => "temperror",
        SpfResult::Permerror => "permerror",
    }
}

impl Display for SpfOutcome {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}={}",
            result_name(&self.answer.result),
            self.identity.as_str(),
            self.sender
        )
    }
}

/// Maps an SPF outcome to a verdict under `config`.
///
/// Reply codes follow RFC 7372 / RFC 8601: a failed check is `5.7.23`, an
/// SPF error `5.7.24` (or `4.7.24` when temporary).
pub fn decide(config: &SpfConfig, ip: IpAddr, outcome: &SpfOutcome) -> Verdict {
    let result = &outcome.answer.result;
    let action = config.action_for(result);
    let name = result_name(result);
    let who = match outcome.identity {
        Identity::Helo => "HELO",
        Identity::MailFrom => "MAIL FROM",
    };
    let domain = outcome
        .sender
        .rsplit_once('@')
        .map_or(outcome.sender.as_str(), |(_, d)| d);
    let is_error = matches!(result, SpfResult::Permerror | SpfResult::Temperror);
    let reason = Reason::new(
        Policy::Spf,
        format!(
            "{who} {} {name}{}",
            outcome.sender,
            outcome
                .answer
                .cause
                .as_deref()
                .map(|c| format!(" ({c})"))
                .unwrap_or_default()
        ),
    );
    let text = match result {
        SpfResult::Fail(exp) if !exp.as_ref().is_empty() => {
            format!("SPF {name}: {domain} does not allow {ip} to send: {exp}")
        }
        SpfResult::Temperror => {
            format!("SPF check of {domain} failed temporarily, try again later")
        }
        SpfResult::Permerror => format!("SPF record of {domain} is invalid"),
        _ => format!("SPF {name}: {domain} does not allow {ip} to send"),
    };
    let reply = match (action, is_error) {
        (SpfAction::Accept, _) => return Verdict::Continue,
        (SpfAction::Reject, false) => Reply::new(550, "5.7.23", &text),
        (SpfAction::Reject, true) => Reply::new(550, "5.7.24", &text),
        (SpfAction::Tempfail, false) => Reply::new(451, "4.7.23", &text),
        (SpfAction::Tempfail, true) => Reply::new(451, "4.7.24", &text),
    }
    .expect("fixed reply codes of matching class");
    Verdict::refuse(reply, reason)
}

fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_ascii_control() => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn header_safe(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_ascii_control() && !matches!(c, ';' | '(' | ')'))
        .collect()
}

/// The `Received-SPF` header value for `outcome` (RFC 7208 §9.1).
pub fn received_spf(
    outcome: &SpfOutcome,
    ip: IpAddr,
    helo: Option<&str>,
    receiver: &str,
    envelope_from: &str,
) -> String {
    let result = result_name(&outcome.answer.result);
    let receiver = header_safe(receiver);
    let comment = match &outcome.answer.result {
        SpfResult::Pass => format!(
            "domain of {} designates {ip} as permitted sender",
            header_safe(&outcome.sender)
        ),
        SpfResult::Fail(_) | SpfResult::Softfail => format!(
            "domain of {} does not designate {ip} as permitted sender",
            header_safe(&outcome.sender)
        ),
        SpfResult::Neutral | SpfResult::None => format!(
            "{ip} is neither permitted nor denied by domain of {}",
            header_safe(&outcome.sender)
        ),
        SpfResult::Temperror | SpfResult::Permerror => format!(
            "error in processing during lookup of {}",
            header_safe(&outcome.sender)
        ),
    };
    let mut v = format!(
        "{result} ({receiver}: {comment}) client-ip={ip}; envelope-from={}; ",
        quote(envelope_from)
    );
    if let Some(helo) = helo {
        v.push_str(&format!("helo={}; ", quote(helo)));
    }
    if let (SpfResult::Temperror | SpfResult::Permerror, Some(cause)) =
        (&outcome.answer.result, &outcome.answer.cause)
    {
        v.push_str(&format!("problem={}; ", quote(cause)));
    }
    v.push_str(&format!(
        "identity={}; receiver={receiver};",
        outcome.identity.as_str()
    ));
    v
}

/// The `Authentication-Results` header value for `outcome` (RFC 8601).
pub fn authentication_results(outcome: &SpfOutcome, authserv_id: &str) -> String {
    let result = result_name(&outcome.answer.result);
    let property = match outcome.identity {
        Identity::Helo => {
            let helo = outcome
                .sender
                .strip_prefix("postmaster@")
                .unwrap_or(&outcome.sender);
            format!("smtp.helo={}", header_safe(helo))
        }
        Identity::MailFrom => format!("smtp.mailfrom={}", header_safe(&outcome.sender)),
    };
    format!("{}; spf={result} {property}", header_safe(authserv_id))
}

/// The authserv-id of an `Authentication-Results` header value, or `None`
/// when the value does not start with one.
///
/// RFC 8601 §2.2: `authres-payload = [CFWS] authserv-id ...`, and the
/// authserv-id is a `value` (RFC 2045): a token, or a quoted-string with
/// quoted-pairs. Comments (RFC 5322 §3.2.2) may nest and hold
/// quoted-pairs such as `\)`. A header whose id cannot be read is treated
/// as forged by the caller (issue 13, defect 3).
///
/// ```
/// use nobounce_core::spf::authserv_id_of;
///
/// assert_eq!(authserv_id_of("mx.example.org; spf=pass").as_deref(), Some("mx.example.org"));
/// assert_eq!(authserv_id_of("\"mx.example.org\"; none").as_deref(), Some("mx.example.org"));
/// assert_eq!(authserv_id_of("(a (nested) \\) comment) mx.example.org; none").as_deref(), Some("mx.example.org"));
/// assert_eq!(authserv_id_of("(unclosed mx.example.org; none"), None);
/// ```
pub fn authserv_id_of(value: &str) -> Option<String> {
    let mut chars = value.chars().peekable();
    skip_cfws(&mut chars)?;
    let id = match chars.peek()? {
        '"' => {
            chars.next();
            let mut id = String::new();
            loop {
                match chars.next()? {
                    '"' => break,
                    '\\' => id.push(chars.next()?),
                    '\r' | '\n' => {}
                    c => id.push(c),
                }
            }
            id
        }
        _ => {
            let id: String = std::iter::from_fn(|| chars.next_if(|&c| is_token_char(c))).collect();
            id
        }
    };
    // The id ends at whitespace, a comment, or the ';'.
    match chars.peek() {
        None | Some(';') | Some('(') => {}
        Some(c) if c.is_whitespace() => {}
        Some(_) => return None,
    }
    (!id.is_empty()).then_some(id)
}

/// RFC 2045 token characters: printable ASCII but space and tspecials.
fn is_token_char(c: char) -> bool {
    c.is_ascii_graphic() && !"()<>@,;:\\\"/[]?=".contains(c)
}

/// Skips folding whitespace and comments (nested, with quoted-pairs);
/// `None` for an unclosed comment.
fn skip_cfws(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Option<()> {
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek() != Some(&'(') {
            return Some(());
        }
        let mut depth = 0usize;
        loop {
            match chars.next()? {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                '\\' => {
                    chars.next()?;
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use viaspf::ExplanationString;

    fn outcome(identity: Identity, sender: &str, result: SpfResult) -> SpfOutcome {
        SpfOutcome {
            identity,
            sender: sender.into(),
            answer: SpfAnswer {
                result,
                cause: None,
                ttl: None,
            },
        }
    }

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));

    /// RFC 7208 §8 results mapped under the default policy.
    #[test]
    fn default_policy_table() {
        let c = SpfConfig::default();
        let cases: &[(SpfResult, Option<(u16, &str)>)] = &[
            (SpfResult::Pass, None),
            (
                SpfResult::Fail(ExplanationString::Default),
                Some((550, "5.7.23")),
            ),
            (SpfResult::Softfail, None),
            (SpfResult::Neutral, None),
            (SpfResult::None, None),
            (SpfResult::Permerror, Some((550, "5.7.24"))),
            (SpfResult::Temperror, Some((451, "4.7.24"))),
        ];
        for (result, expected) in cases {
            let v = decide(
                &c,
                IP,
                &outcome(Identity::MailFrom, "a@example.org", result.clone()),
            );
            let got = v.reply().map(|r| (r.code().get(), r.status().to_string()));
            assert_eq!(got, expected.map(|(c, s)| (c, s.to_string())), "{result:?}");
        }
    }

    #[test]
    fn configured_actions_are_honoured() {
        let c = SpfConfig {
            on_softfail: SpfAction::Reject,
            on_fail: SpfAction::Tempfail,
            on_temperror: SpfAction::Accept,
            on_permerror: SpfAction::Tempfail,
            ..Default::default()
        };
        let code = |r: SpfResult| {
            decide(&c, IP, &outcome(Identity::MailFrom, "a@example.org", r))
                .reply()
                .map(|r| r.to_string()[..10].to_string())
        };
        assert_eq!(code(SpfResult::Softfail).as_deref(), Some("550 5.7.23"));
        assert_eq!(
            code(SpfResult::Fail(Default::default())).as_deref(),
            Some("451 4.7.23")
        );
        assert_eq!(code(SpfResult::Temperror), None);
        assert_eq!(code(SpfResult::Permerror).as_deref(), Some("451 4.7.24"));
    }

    #[test]
    fn external_explanation_is_sanitised_into_reply() {
        let c = SpfConfig::default();
        let exp = ExplanationString::External("go away\r\n250 ok 100%".into());
        let v = decide(
            &c,
            IP,
            &outcome(Identity::MailFrom, "a@bad.example", SpfResult::Fail(exp)),
        );
        let text = v.reply().unwrap().text().to_string();
        assert!(!text.contains('\r') && !text.contains('\n'));
        assert!(text.contains("100%") && !text.contains("%%"), "{text}");
        assert!(
            text.contains("bad.example does not allow 192.0.2.1"),
            "{text}"
        );
    }

    #[test]
    fn skip_senders_matches_domain_and_subdomains() {
        let c = SpfConfig {
            skip_senders: vec!["exact.org".into(), ".tree.org".into()],
            ..Default::default()
        };
        assert!(c.skips_sender_domain("EXACT.org"));
        assert!(!c.skips_sender_domain("sub.exact.org"));
        assert!(c.skips_sender_domain("tree.org"));
        assert!(c.skips_sender_domain("a.b.tree.org"));
        assert!(!c.skips_sender_domain("nottree.org"));
    }

    #[test]
    fn trusted_networks_default_to_loopback() {
        let c = SpfConfig::default();
        assert!(c.is_trusted("127.0.0.1".parse().unwrap()));
        assert!(c.is_trusted("::1".parse().unwrap()));
        assert!(!c.is_trusted("192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn received_spf_header_has_rfc7208_keys() {
        let o = outcome(Identity::MailFrom, "a\"b@example.org", SpfResult::Pass);
        let h = received_spf(
            &o,
            IP,
            Some("mail.example.org"),
            "mx.test",
            "a\"b@example.org",
        );
        assert!(
            h.starts_with("pass (mx.test: domain of a\"b@example.org designates 192.0.2.1"),
            "{h}"
        );
        assert!(h.contains("client-ip=192.0.2.1;"));
        assert!(h.contains("envelope-from=\"a\\\"b@example.org\";"), "{h}");
        assert!(h.contains("helo=\"mail.example.org\";"));
        assert!(h.contains("identity=mailfrom;"));
        assert!(h.ends_with("receiver=mx.test;"));
    }

    #[test]
    fn authentication_results_header() {
        let o = outcome(Identity::MailFrom, "a@example.org", SpfResult::Softfail);
        assert_eq!(
            authentication_results(&o, "mx.test"),
            "mx.test; spf=softfail smtp.mailfrom=a@example.org"
        );
        let o = outcome(
            Identity::Helo,
            "postmaster@mail.example.org",
            SpfResult::Pass,
        );
        assert_eq!(
            authentication_results(&o, "mx.test"),
            "mx.test; spf=pass smtp.helo=mail.example.org"
        );
    }

    /// RFC 8601 §2.2 with RFC 5322 comments and RFC 2045 quoted-strings;
    /// issue 13, defect 3: quoted ids, nested and escaped comments.
    #[test]
    fn issue13_authserv_id_parsing() {
        for (value, id) in [
            ("mx.test; spf=pass", Some("mx.test")),
            ("  mx.test 1; none", Some("mx.test")),
            ("mx.test(c); none", Some("mx.test")),
            ("(comment) mx.test;spf=pass", Some("mx.test")),
            ("\"mx.test\"; spf=pass", Some("mx.test")),
            ("\"mx\\.test\"; spf=pass", Some("mx.test")),
            (
                "(a (nested (deep)) comment) mx.test; spf=pass",
                Some("mx.test"),
            ),
            ("(an \\) escaped paren) mx.test; spf=pass", Some("mx.test")),
            ("(an \\( escaped paren) \r\n mx.test; none", Some("mx.test")),
            ("", None),
            (";", None),
            ("(unclosed mx.test; none", None),
            ("\"unclosed; none", None),
            ("mx.test\"x; none", None),
            ("[mx.test]; none", None),
        ] {
            assert_eq!(authserv_id_of(value).as_deref(), id, "{value:?}");
        }
    }
}
