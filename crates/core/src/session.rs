//! One SMTP connection as the engine sees it: facts in, verdicts out.

use crate::{
    address::{declared_size, EnvelopeAddress},
    alias, batv, bounce_guard, dictionary,
    directory::{DirectoryError, RecipientQuery},
    dnsbl,
    engine::Engine,
    observe::Action,
    recipient::{self, RecipientFinding},
    reply::EnhancedStatus,
    reply::Reply,
    spf::{self, Identity, SpfAnswer, SpfHeader, SpfOutcome, SpfRequest},
    verdict::{Policy, Reason, Verdict},
};
use std::{net::IpAddr, time::Duration};
use tracing::{debug, info, warn};
use viaspf::{DomainName, Sender, SpfResult};

/// The SMTP stage a verdict was given at, for logs.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub enum Stage {
    /// MAIL FROM.
    MailFrom,
    /// RCPT TO.
    RcptTo,
    /// End of message.
    EndOfMessage,
}

impl Stage {
    /// Stable lowercase name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MailFrom => "mail",
            Self::RcptTo => "rcpt",
            Self::EndOfMessage => "eom",
        }
    }
}

/// Changes to make to the message at end of message.
#[derive(Clone, Debug, Default, Eq, PartialEq)]
pub struct EomPlan {
    /// Headers to insert at the top of the message, in this order.
    pub insert_headers: Vec<(String, String)>,
    /// Headers to delete, as (name, 1-based occurrence index), highest index
    /// first so earlier deletions do not shift later ones.
    pub delete_headers: Vec<(String, usize)>,
    /// Refuse the message instead (nothing to insert or delete then).
    pub refuse: Option<Verdict>,
    /// The new envelope sender (a BATV-signed address), if it changes.
    pub change_sender: Option<String>,
    /// Hold the message in the MTA's quarantine, with this reason (bounce
    /// guard).
    pub quarantine: Option<String>,
    /// Discard the message (bounce guard, `action = "discard"`).
    pub discard: bool,
}

/// The most forged `Authentication-Results` headers removed from one
/// message; a message with more is refused (each removal is one more
/// message to the MTA; issue 13, item 11).
pub const MAX_FORGED_AR: usize = 32;

/// Accepted recipients a session remembers per message; past it the
/// end-of-data size check (one recipient only) has nothing to do anyway.
const MAX_TRACKED_RECIPIENTS: usize = 2;

/// Leak headers added to one message at most.
const MAX_TRACKED_LEAKS: usize = 16;

#[derive(Debug, Default)]
struct Connection {
    client_ip: Option<IpAddr>,
    client_name: String,
    mta_hostname: Option<String>,
    helo: Option<String>,
    /// HELO check, computed at most once per HELO value.
    helo_outcome: Option<(String, SpfOutcome)>,
    /// Set when the client got banned during this connection.
    banned: Option<Verdict>,
    /// The MTA's own mail (a local submission, a bounce it generated):
    /// never refused; recorded and, for bounces, guarded.
    internal: bool,
}

#[derive(Debug, Default)]
struct Message {
    queue_id: Option<String>,
    sender: Option<EnvelopeAddress>,
    authenticated: bool,
    declared_size: Option<u64>,
    spf: Option<SpfOutcome>,
    /// Recipients accepted so far (for the real-size check at end of data).
    recipients: Vec<String>,
    /// The block lists' verdict, asked once per message.
    dnsbl: Option<Verdict>,
    /// Aliases that got mail from a sender domain foreign to them: (alias,
    /// sender domain), for the leak header.
    alias_leaks: Vec<(String, String)>,
    ar_headers_seen: usize,
    forged_ar: Vec<usize>,
    /// The MIME boundary of a `multipart/report` delivery status
    /// notification (bounce guard).
    report_boundary: Option<String>,
    /// The start of such a message's body (at most
    /// [`bounce_guard::MAX_SCANNED`] bytes).
    body: Vec<u8>,
}

/// A per-connection session: feed it what the MTA says, get verdicts back.
///
/// A session is cheap and not shared; all connections share the [`Engine`].
#[derive(Debug)]
pub struct Session {
    engine: Engine,
    conn: Connection,
    msg: Message,
}

impl Session {
    pub(crate) fn new(engine: Engine) -> Self {
        Self {
            engine,
            conn: Connection::default(),
            msg: Message::default(),
        }
    }

    /// The engine of this session.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// A client connected. `client_ip` is `None` for non-IP connections
    /// (Postfix `unknown`, unix sockets); `mta_hostname` is the MTA's own
    /// name (macro `j`), used as receiver and default authserv-id.
    pub async fn connect(
        &mut self,
        client_ip: Option<IpAddr>,
        client_name: &str,
        mta_hostname: Option<&str>,
    ) -> Verdict {
        // A dual-stack MTA may show an IPv4 client as ::ffff:192.0.2.1: it is
        // the IPv4 client for SPF, trust and bans (issue 13, item 11).
        let client_ip = client_ip.map(|ip| ip.to_canonical());
        self.conn = Connection {
            client_ip,
            client_name: client_name.to_owned(),
            mta_hostname: mta_hostname.filter(|h| !h.is_empty()).map(str::to_owned),
            ..Default::default()
        };
        self.msg = Message::default();
        // A banned client is told at MAIL FROM. Not at connect: Postfix
        // replaces the text of a milter's 421 at connect by its own "Service
        // unavailable", so the client would never learn why, nor until when.
        // Not at HELO: SMTP AUTH comes after it, and an authenticated session
        // is never banned (users behind a NAT shared with a prober must
        // still be able to submit mail; issue 13, defect 8).
        let verdict = match tokio::time::timeout(self.command_timeout(), self.check_ban()).await {
            Ok(v) => v,
            Err(_) => {
                // A slow store never refuses mail.
                warn!(client_ip = %display_ip(client_ip), "state store too slow, ban not checked");
                Verdict::Continue
            }
        };
        if verdict.is_refusal() {
            debug!(
                client_ip = %display_ip(client_ip),
                "client banned: refusing at MAIL FROM unless it authenticates"
            );
            self.conn.banned = Some(verdict);
        }
        Verdict::Continue
    }

    fn command_timeout(&self) -> Duration {
        self.engine.inner.config.command_timeout
    }

    /// `true` if the dictionary policy leaves this client alone.
    fn dictionary_exempts(&self, ip: IpAddr) -> bool {
        let c = &self.engine.inner.config;
        c.dictionary.exempts(ip) || c.spf.is_trusted(ip)
    }

    async fn check_ban(&mut self) -> Verdict {
        let Some(ip) = self.conn.client_ip else {
            return Verdict::Continue;
        };
        if self.dictionary_exempts(ip) {
            return Verdict::Continue;
        }
        let inner = &self.engine.inner;
        let now = inner.clock.now();
        match dictionary::check_ban(&inner.config.dictionary, inner.store.as_ref(), ip, now).await {
            Ok(Some(ban)) => dictionary::ban_verdict(&ban),
            Ok(None) => Verdict::Continue,
            Err(e) => {
                // A broken store never refuses mail.
                warn!(client_ip = %ip, "state store failed, ban not checked: {e}");
                Verdict::Continue
            }
        }
    }

    /// Counts an unknown recipient; bans the client at the threshold.
    async fn record_unknown(&mut self, recipient: &str) {
        let Some(ip) = self.conn.client_ip else {
            return;
        };
        if self.msg.authenticated || self.dictionary_exempts(ip) {
            return;
        }
        let inner = &self.engine.inner;
        let now = inner.clock.now();
        match dictionary::record_unknown(
            &inner.config.dictionary,
            inner.store.as_ref(),
            ip,
            recipient,
            now,
        )
        .await
        {
            Ok(Some(ban)) => {
                inner.observer.ban_added();
                self.conn.banned = Some(dictionary::ban_verdict(&ban));
            }
            Ok(None) => {}
            Err(e) => {
                warn!(client_ip = %ip, "state store failed, unknown recipient not counted: {e}")
            }
        }
    }

    /// Marks this connection as the MTA's own mail: a local submission, or
    /// mail the MTA generated (bounces). Postfix's cleanup shows such mail to
    /// `non_smtpd_milters` as client 127.0.0.1 port 0. Nothing of it is ever
    /// refused (Postfix would defer it as a "milter configuration error");
    /// it is recorded for the bounce guard, and bounces are judged by it.
    pub fn set_internal(&mut self) {
        self.conn.internal = true;
        self.conn.banned = None;
    }

    /// HELO or EHLO with `helo`. Never refused (see [`Self::connect`]).
    pub async fn helo(&mut self, helo: &str) -> Verdict {
        self.conn.helo = Some(helo.trim().to_owned());
        Verdict::Continue
    }

    /// The ban of this connection's client, unless the session is
    /// authenticated.
    fn ban_in_force(&self) -> Option<Verdict> {
        self.conn.banned.clone().filter(|_| !self.msg.authenticated)
    }

    /// Sets the MTA's queue id (macro `i`) for logs; may come at any stage.
    pub fn set_queue_id(&mut self, queue_id: &str) {
        if !queue_id.is_empty() {
            self.msg.queue_id = Some(queue_id.to_owned());
        }
    }

    /// MAIL FROM with `sender` (as given, brackets allowed), its ESMTP
    /// arguments, and the SMTP AUTH user (`{auth_authen}`), if any.
    pub async fn mail_from(
        &mut self,
        sender: &str,
        esmtp_args: &[&str],
        auth_user: Option<&str>,
    ) -> Verdict {
        let queue_id = self.msg.queue_id.take();
        let auth_user = auth_user.filter(|a| !a.is_empty());
        self.msg = Message {
            queue_id,
            sender: Some(EnvelopeAddress::parse(sender)),
            authenticated: auth_user.is_some(),
            declared_size: declared_size(esmtp_args.iter().copied()),
            ..Default::default()
        };
        if self.conn.internal {
            return Verdict::Continue;
        }
        if let Some(banned) = self.ban_in_force() {
            return self.finish(Stage::MailFrom, banned);
        }
        // One deadline for the whole command: the HELO and the MAIL FROM
        // evaluations together must end before the MTA gives up on us.
        let deadline = self.command_timeout();
        let verdict = match tokio::time::timeout(deadline, self.check_spf(auth_user)).await {
            Ok(verdict) => verdict,
            Err(_) => self.spf_deadline_passed(deadline),
        };
        self.finish(Stage::MailFrom, verdict)
    }

    async fn check_spf(&mut self, auth_user: Option<&str>) -> Verdict {
        let engine = self.engine.clone();
        let config = &engine.inner.config.spf;
        let sender = self.msg.sender.clone().unwrap_or(EnvelopeAddress::Null);
        let skip = |why: &str| {
            debug!(stage = "mail", sender = %sender, why, "SPF skipped");
            Verdict::Continue
        };
        if !config.enabled {
            return skip("disabled");
        }
        let Some(ip) = self.conn.client_ip else {
            return skip("no client IP address");
        };
        if config.is_trusted(ip) {
            return skip("trusted network");
        }
        if auth_user.is_some() && config.skip_authenticated {
            return skip("authenticated sender");
        }
        if let Some(d) = sender.domain() {
            if config.skips_sender_domain(d) {
                return skip("sender domain in skip list");
            }
        }

        let helo_sender = self
            .conn
            .helo
            .as_deref()
            .and_then(|h| Sender::from_domain(h).ok());
        let helo_domain = helo_sender.as_ref().map(|s| s.domain().clone());

        let need_helo = config.verify_helo || sender.is_null();
        if need_helo {
            if let Some(hs) = &helo_sender {
                let outcome = self.helo_outcome(ip, hs, helo_domain.clone()).await;
                if config.verify_helo && matches!(outcome.answer.result, SpfResult::Fail(_)) {
                    let verdict = spf::decide(config, ip, &outcome);
                    self.log_spf(&outcome);
                    self.msg.spf = Some(outcome);
                    return verdict;
                }
            }
        }

        let outcome = match &sender {
            EnvelopeAddress::Null => match &helo_sender {
                // RFC 7208 §2.4: a null sender is checked as postmaster@HELO,
                // which is exactly the HELO check.
                Some(_) => {
                    let mut o = self
                        .conn
                        .helo_outcome
                        .as_ref()
                        .map(|(_, o)| o.clone())
                        .expect("HELO outcome computed above for a null sender");
                    o.identity = Identity::MailFrom;
                    o
                }
                None => none_outcome("postmaster@[invalid HELO]", "HELO is not a domain"),
            },
            EnvelopeAddress::Mailbox { .. } => {
                let text = sender.to_string();
                match Sender::new(&text) {
                    Ok(s) => {
                        self.verify(Identity::MailFrom, text, ip, s, helo_domain)
                            .await
                    }
                    // RFC 7208 §4.3: a malformed domain gives "none".
                    Err(_) => none_outcome(&text, "sender domain is not a valid domain"),
                }
            }
            EnvelopeAddress::Other(s) => none_outcome(s, "sender has no domain"),
        };
        self.log_spf(&outcome);
        let verdict = spf::decide(config, ip, &outcome);
        self.msg.spf = Some(outcome);
        verdict
    }

    /// The SPF checks of one MAIL command did not end within `deadline`:
    /// the result is `temperror`, as for a DNS timeout.
    fn spf_deadline_passed(&mut self, deadline: Duration) -> Verdict {
        let sender = self.msg.sender.clone().unwrap_or(EnvelopeAddress::Null);
        let mut outcome = none_outcome(
            &sender.to_string(),
            &format!(
                "SPF checks not done within the command deadline ({})",
                humantime::format_duration(deadline)
            ),
        );
        outcome.answer.result = SpfResult::Temperror;
        self.log_spf(&outcome);
        let verdict = match self.conn.client_ip {
            Some(ip) => spf::decide(&self.engine.inner.config.spf, ip, &outcome),
            None => Verdict::Continue,
        };
        self.msg.spf = Some(outcome);
        verdict
    }

    async fn helo_outcome(
        &mut self,
        ip: IpAddr,
        helo_sender: &Sender,
        helo_domain: Option<DomainName>,
    ) -> SpfOutcome {
        let helo = self.conn.helo.clone().unwrap_or_default();
        if let Some((h, o)) = &self.conn.helo_outcome {
            if *h == helo {
                return o.clone();
            }
        }
        let outcome = self
            .verify(
                Identity::Helo,
                format!("postmaster@{helo}"),
                ip,
                helo_sender.clone(),
                helo_domain,
            )
            .await;
        self.conn.helo_outcome = Some((helo, outcome.clone()));
        outcome
    }

    /// One SPF evaluation through the engine's verifier.
    async fn verify(
        &self,
        identity: Identity,
        text: String,
        ip: IpAddr,
        sender: Sender,
        helo: Option<DomainName>,
    ) -> SpfOutcome {
        let request = SpfRequest { ip, sender, helo };
        SpfOutcome {
            identity,
            sender: text,
            answer: self.engine.inner.spf.verify(&request).await,
        }
    }

    fn log_spf(&self, outcome: &SpfOutcome) {
        if outcome.identity == Identity::MailFrom {
            self.engine
                .inner
                .observer
                .spf_result(spf::result_name(&outcome.answer.result));
        }
        // A pass is the everyday case, recorded in the message's
        // Received-SPF header anyway: logged at debug level. Formatting and
        // writing one log line per message cost as much CPU as the rest of
        // nobounce's work for it (issue 8). Every other result is worth a
        // line at info level.
        macro_rules! spf_line {
            ($level:ident) => {
                tracing::$level!(
                    target: "nobounce::spf",
                    queue_id = self.msg.queue_id.as_deref().unwrap_or("-"),
                    client_ip = %display_ip(self.conn.client_ip),
                    stage = Stage::MailFrom.as_str(),
                    identity = outcome.identity.as_str(),
                    sender = %outcome.sender,
                    result = spf::result_name(&outcome.answer.result),
                    cause = outcome.answer.cause.as_deref().unwrap_or("-"),
                    "SPF result"
                )
            };
        }
        if matches!(outcome.answer.result, SpfResult::Pass) {
            spf_line!(debug);
        } else {
            spf_line!(info);
        }
    }

    /// RCPT TO with `recipient`.
    pub async fn rcpt_to(&mut self, recipient: &str) -> Verdict {
        if self.conn.internal {
            if self.msg.recipients.len() < MAX_TRACKED_RECIPIENTS {
                self.msg
                    .recipients
                    .push(EnvelopeAddress::parse(recipient).to_string());
            }
            return Verdict::Continue;
        }
        if let Some(banned) = self.ban_in_force() {
            return self.finish(Stage::RcptTo, banned);
        }
        let mut address = EnvelopeAddress::parse(recipient);
        if let Some(refused) = self.check_batv(&mut address) {
            return self.finish(Stage::RcptTo, refused);
        }
        // One deadline for the whole command: alias, lists, directory and
        // the ban bookkeeping together.
        let deadline = tokio::time::Instant::now() + self.command_timeout();
        if let Some(refused) = self.check_alias(&mut address, deadline).await {
            return self.finish(Stage::RcptTo, refused);
        }
        if let Some(listed) = self.check_dnsbl(&address, deadline).await {
            return self.finish(Stage::RcptTo, listed);
        }
        let Some(directory) = self.engine.inner.directory.clone() else {
            return self.finish(Stage::RcptTo, Verdict::Continue);
        };
        let text = address.to_string();
        if text.is_empty() {
            return self.finish(Stage::RcptTo, Verdict::Continue);
        }
        let (verdict, finding) = self
            .ask_directory(&*directory, &text, self.msg.declared_size, deadline)
            .await;
        if finding == RecipientFinding::Unknown
            && tokio::time::timeout_at(deadline, self.record_unknown(&text))
                .await
                .is_err()
        {
            warn!(client_ip = %display_ip(self.conn.client_ip), "state store too slow, unknown recipient not counted");
        }
        let verdict = self.finish(Stage::RcptTo, verdict);
        if verdict == Verdict::Continue && self.msg.recipients.len() < MAX_TRACKED_RECIPIENTS {
            self.msg.recipients.push(text);
        }
        verdict
    }

    /// Asks `directory` about `address` for a message of `size` bytes (if
    /// known), and decides: no answer by `deadline` is a backend error.
    async fn ask_directory(
        &self,
        directory: &dyn crate::directory::RecipientDirectory,
        address: &str,
        size: Option<u64>,
        deadline: tokio::time::Instant,
    ) -> (Verdict, RecipientFinding) {
        let query = RecipientQuery {
            address,
            declared_size: size,
            null_sender: self
                .msg
                .sender
                .as_ref()
                .is_some_and(EnvelopeAddress::is_null),
        };
        let answer = tokio::time::timeout_at(deadline, directory.lookup(&query))
            .await
            .unwrap_or_else(|_| {
                Err(DirectoryError::new(format!(
                    "no answer within the command deadline ({})",
                    humantime::format_duration(self.command_timeout())
                )))
            });
        recipient::decide(&self.engine.inner.config.recipients, address, answer)
    }

    /// End of data, with the message's real `size` in bytes (the MAIL SIZE
    /// was only the client's promise, often absent). When the message has
    /// exactly one recipient, its mailbox is asked again with the real
    /// size: a full, disabled or vanished mailbox is refused now, while the
    /// client is still connected, instead of bounced after delivery fails.
    /// With several recipients nothing is refused: a refusal at end of data
    /// would refuse the message for every recipient.
    pub async fn end_of_data(&mut self, size: u64) -> Verdict {
        let [recipient] = self.msg.recipients.as_slice() else {
            return Verdict::Continue;
        };
        let Some(directory) = self.engine.inner.directory.clone() else {
            return Verdict::Continue;
        };
        let recipient = recipient.clone();
        let deadline = tokio::time::Instant::now() + self.command_timeout();
        let (verdict, _) = self
            .ask_directory(&*directory, &recipient, Some(size), deadline)
            .await;
        self.finish(Stage::EndOfMessage, verdict)
    }

    /// Whether the client is one of ours: authenticated, in a trusted
    /// network, or no network client at all (a local submission).
    fn client_is_ours(&self) -> bool {
        self.conn.internal
            || self.msg.authenticated
            || self
                .conn
                .client_ip
                .is_none_or(|ip| self.engine.inner.config.spf.is_trusted(ip))
    }

    /// BATV at RCPT: a tagged recipient becomes the real address (for the
    /// directory), and a bounce (null sender) to one of our domains must
    /// come to a valid, unexpired tag; an unsigned one is refused only if
    /// configured so. Bounces from our own clients are not checked.
    fn check_batv(&mut self, recipient: &mut EnvelopeAddress) -> Option<Verdict> {
        let engine = self.engine.clone();
        let config = &engine.inner.config.batv;
        let keys = engine.inner.batv_keys.as_ref().filter(|_| config.enabled)?;
        let EnvelopeAddress::Mailbox { domain, .. } = &*recipient else {
            return None;
        };
        if !config.is_ours(domain) {
            return None;
        }
        let text = recipient.to_string();
        let tagged = batv::parse(&text);
        let real = tagged.as_ref().map(|t| EnvelopeAddress::parse(&t.address));
        let must_verify = self
            .msg
            .sender
            .as_ref()
            .is_none_or(EnvelopeAddress::is_null)
            && !self.client_is_ours();
        let refuse = |why: &str, detail: String| Verdict::Reject {
            reply: Reply::new(550, "5.7.1", why).expect("fixed codes of matching class"),
            reason: Reason::new(Policy::Batv, detail),
        };
        let verdict = match (&tagged, must_verify) {
            (Some(t), true) => {
                match batv::verify(keys, t, config.lifetime_days, engine.inner.clock.now()) {
                    batv::Check::Valid => None,
                    batv::Check::Expired => Some(refuse(
                        "Bounce to an expired address; we did not send this message recently",
                        format!("expired BATV tag on {text}"),
                    )),
                    batv::Check::BadSignature => Some(refuse(
                        "Bounce to an address we never sent from (bad BATV signature)",
                        format!("bad BATV signature on {text}"),
                    )),
                }
            }
            (None, true) => {
                info!(
                    event = "batv_unsigned",
                    queue_id = self.msg.queue_id.as_deref().unwrap_or("-"),
                    client_ip = %display_ip(self.conn.client_ip),
                    recipient = %text,
                    action = if config.unsigned == batv::Unsigned::Reject { "reject" } else { "accept" },
                    "bounce to an unsigned address"
                );
                (config.unsigned == batv::Unsigned::Reject).then(|| {
                    refuse(
                        "Bounce to an address we never sent from (no BATV signature)",
                        format!("bounce to unsigned {text}"),
                    )
                })
            }
            (_, false) => None,
        };
        if verdict.is_none() {
            if let Some(real) = real {
                *recipient = real;
            }
        }
        verdict
    }

    /// An address in an alias domain: an active alias becomes its mailbox
    /// (for the recipient checks), and mail to it from a sender domain
    /// foreign to its correspondent is marked (or refused with
    /// `reject_foreign`); a retired alias, or any other address of an alias
    /// domain, is refused with `550 5.1.1` and counts towards a
    /// dictionary-attack ban; a store failure is a temporary failure.
    async fn check_alias(
        &mut self,
        recipient: &mut EnvelopeAddress,
        deadline: tokio::time::Instant,
    ) -> Option<Verdict> {
        let engine = self.engine.clone();
        let inner = &engine.inner;
        let domains = &inner.config.alias_domains;
        if domains.is_empty() {
            return None;
        }
        let store = inner.aliases.as_ref()?;
        let text = recipient.to_string();
        if !alias::in_domains(&text, domains) {
            return None;
        }
        let observer = &inner.observer;
        let trouble = |detail: String| Verdict::Tempfail {
            reply: Reply::new(
                451,
                "4.3.0",
                "Temporary failure looking up this address, try again later",
            )
            .expect("fixed codes of matching class"),
            reason: Reason::new(Policy::Internal, detail),
        };
        let found = match tokio::time::timeout_at(deadline, store.get(&text)).await {
            Ok(Ok(found)) => found,
            Ok(Err(e)) => {
                observer.alias("error");
                warn!(event = "alias_store_failed", recipient = %text, "alias store failed: {e}");
                return Some(trouble(format!("alias store failed for {text}: {e}")));
            }
            Err(_) => {
                observer.alias("error");
                return Some(trouble(format!("alias store too slow for {text}")));
            }
        };
        let unknown = |detail: String| Verdict::Reject {
            reply: Reply::new(550, "5.1.1", &inner.config.recipients.unknown_text)
                .expect("fixed codes of matching class"),
            reason: Reason::new(Policy::Alias, detail),
        };
        let alias = match found {
            None => {
                observer.alias("unknown");
                let _ = tokio::time::timeout_at(deadline, self.record_unknown(&text)).await;
                return Some(unknown(format!("{text}: no such alias")));
            }
            Some(a) if a.is_retired() => {
                observer.alias("retired");
                let _ = tokio::time::timeout_at(deadline, self.record_unknown(&text)).await;
                let why = a.retired.as_ref().map(|(_, r)| r.as_str()).unwrap_or("");
                return Some(unknown(format!(
                    "{text}: retired alias of {} ({why})",
                    a.correspondent
                )));
            }
            Some(a) => a,
        };
        let sender_domain = self
            .msg
            .sender
            .as_ref()
            .and_then(EnvelopeAddress::domain)
            .map(str::to_owned);
        if let Some(domain) = sender_domain.filter(|d| alias.is_foreign_sender(d)) {
            observer.alias("foreign");
            info!(
                event = "alias_leak",
                queue_id = self.msg.queue_id.as_deref().unwrap_or("-"),
                alias = %text,
                correspondent = %alias.correspondent,
                sender_domain = %domain,
                reject = alias.reject_foreign,
                "mail to an alias from a domain foreign to its correspondent"
            );
            if alias.reject_foreign {
                return Some(Verdict::Reject {
                    reply: Reply::new(
                        550,
                        "5.7.1",
                        "This address does not take mail from your domain",
                    )
                    .expect("fixed codes of matching class"),
                    reason: Reason::new(
                        Policy::Alias,
                        format!(
                            "{text} given to {} takes no mail from {domain}",
                            alias.correspondent
                        ),
                    ),
                });
            }
            if self.msg.alias_leaks.len() < MAX_TRACKED_LEAKS {
                self.msg.alias_leaks.push((text.clone(), domain));
            }
        } else {
            observer.alias("active");
        }
        *recipient = EnvelopeAddress::parse(&alias.mailbox);
        None
    }

    /// The DNS block lists' verdict for this message and `recipient`, when
    /// they are asked: in safe mode only for a null or `postmaster@`
    /// sender; never for exempt recipients (`postmaster@`, `abuse@`),
    /// trusted networks, the allow-list or authenticated sessions. Asked
    /// once per message, every list at once, within the command deadline.
    async fn check_dnsbl(
        &mut self,
        recipient: &EnvelopeAddress,
        deadline: tokio::time::Instant,
    ) -> Option<Verdict> {
        let engine = self.engine.clone();
        let inner = &engine.inner;
        let config = &inner.config.dnsbl;
        if config.zones.is_empty() || self.msg.authenticated {
            return None;
        }
        let dns = inner.dns.as_ref()?;
        let ip = self.conn.client_ip?;
        if inner.config.spf.is_trusted(ip) || config.allow_list.iter().any(|n| n.contains(&ip)) {
            return None;
        }
        if let EnvelopeAddress::Mailbox { local, .. } = recipient {
            if config.exempts_recipient(local) {
                return None;
            }
        }
        let safe_sender = match &self.msg.sender {
            Some(EnvelopeAddress::Mailbox { local, .. }) => {
                local.eq_ignore_ascii_case("postmaster")
            }
            Some(EnvelopeAddress::Other(s)) => s.eq_ignore_ascii_case("postmaster"),
            Some(EnvelopeAddress::Null) | None => true,
        };
        if !config.applies(safe_sender) {
            return None;
        }
        if let Some(v) = &self.msg.dnsbl {
            return Some(v.clone()).filter(Verdict::is_refusal);
        }
        let zones: Vec<&dnsbl::DnsblZone> = config
            .zones
            .iter()
            .filter(|z| safe_sender || z.mode == dnsbl::DnsblMode::All)
            .collect();
        let asked = futures_util::future::join_all(
            zones.iter().map(|z| dnsbl::ask(dns.as_ref(), ip, &z.zone)),
        );
        let answers = match tokio::time::timeout_at(deadline, asked).await {
            Ok(answers) => answers,
            Err(_) => {
                vec![dnsbl::ZoneAnswer::Failed("command deadline passed".into()); zones.len()]
            }
        };
        let mut verdict = Verdict::Continue;
        for (zone, answer) in zones.iter().zip(answers) {
            inner.observer.dnsbl_answer(
                &zone.zone,
                match &answer {
                    dnsbl::ZoneAnswer::NotListed => "not_listed",
                    dnsbl::ZoneAnswer::Listed { .. } => "listed",
                    dnsbl::ZoneAnswer::Failed(_) => "failed",
                },
            );
            let v = match answer {
                dnsbl::ZoneAnswer::NotListed => continue,
                dnsbl::ZoneAnswer::Listed { code, txt } => {
                    dnsbl::listed_verdict(zone, ip, code, txt.as_deref())
                }
                dnsbl::ZoneAnswer::Failed(why) => {
                    warn!(
                        event = "dnsbl_failed",
                        queue_id = self.msg.queue_id.as_deref().unwrap_or("-"),
                        client_ip = %ip,
                        zone = %zone.zone,
                        action = if config.on_error == dnsbl::DnsblOnError::Accept { "accept" } else { "tempfail" },
                        "block list did not answer: {why}"
                    );
                    dnsbl::failed_verdict(config, zone, &why)
                }
            };
            // A listing outweighs a failure of another list.
            if matches!(v, Verdict::Reject { .. }) || !verdict.is_refusal() {
                verdict = v;
            }
            if matches!(verdict, Verdict::Reject { .. }) {
                break;
            }
        }
        self.msg.dnsbl = Some(verdict.clone());
        Some(verdict).filter(Verdict::is_refusal)
    }

    /// A recipient the MTA rejected itself (seen with `SMFIP_RCPT_REJ`),
    /// with the enhanced status code of its reply when known (macro
    /// `{rcpt_host}`). Permanent rejections for an unknown mailbox (`5.1.1`,
    /// and `5.1.0` when unsure) count towards a dictionary-attack ban; a
    /// temporary one (`4.1.1`: "address verification in progress", a lookup
    /// that failed) proves nothing and does not.
    pub async fn mta_rejected_rcpt(&mut self, recipient: &str, status: Option<&str>) {
        let address = EnvelopeAddress::parse(recipient).to_string();
        let unknown = status
            .and_then(|s| s.trim().parse::<EnhancedStatus>().ok())
            .is_some_and(|s| s.class() == 5 && s.subject() == 1 && s.detail() <= 1);
        debug!(
            client_ip = %display_ip(self.conn.client_ip),
            recipient = %address,
            status = status.unwrap_or("-"),
            unknown,
            "recipient rejected by the MTA"
        );
        if unknown
            && !address.is_empty()
            && tokio::time::timeout(self.command_timeout(), self.record_unknown(&address))
                .await
                .is_err()
        {
            warn!(client_ip = %display_ip(self.conn.client_ip), "state store too slow, unknown recipient not counted");
        }
    }

    /// Whether a header named `name` matters to any rule: a front end may
    /// skip the others without converting them (a message has 10 to 20).
    pub fn reads_header(name: &[u8]) -> bool {
        name.eq_ignore_ascii_case(b"Authentication-Results")
            || name.eq_ignore_ascii_case(b"Content-Type")
    }

    /// A header of the message (for forged `Authentication-Results`: one
    /// with our authserv-id, or one whose id cannot be read).
    pub fn header(&mut self, name: &str, value: &str) {
        if self.guards_this_bounce() && name.eq_ignore_ascii_case("Content-Type") {
            self.msg.report_boundary = bounce_guard::report_boundary(value);
        }
        if name.eq_ignore_ascii_case("Authentication-Results") {
            self.msg.ar_headers_seen += 1;
            let ours = self.authserv_id();
            let forged = spf::authserv_id_of(value).is_none_or(|id| id.eq_ignore_ascii_case(&ours));
            if forged {
                self.msg.forged_ar.push(self.msg.ar_headers_seen);
            }
        }
    }

    fn authserv_id(&self) -> String {
        self.engine
            .inner
            .config
            .spf
            .authserv_id
            .clone()
            .or_else(|| self.conn.mta_hostname.clone())
            .unwrap_or_else(|| "localhost".into())
    }

    /// Whether this message is one the bounce guard judges: the MTA's own
    /// mail with a null sender.
    fn guards_this_bounce(&self) -> bool {
        self.engine.inner.config.bounce_guard.enabled
            && self.conn.internal
            && self
                .msg
                .sender
                .as_ref()
                .is_some_and(EnvelopeAddress::is_null)
    }

    /// Whether the body of this message is wanted: only that of a bounce
    /// the guard judges, until its delivery status part is read.
    pub fn wants_body(&self) -> bool {
        self.guards_this_bounce()
            && self.msg.report_boundary.is_some()
            && self.msg.body.len() < bounce_guard::MAX_SCANNED
    }

    /// A chunk of the message body (see [`Self::wants_body`]).
    pub fn body(&mut self, chunk: &[u8]) {
        if self.wants_body() {
            let room = bounce_guard::MAX_SCANNED - self.msg.body.len();
            self.msg
                .body
                .extend_from_slice(&chunk[..chunk.len().min(room)]);
        }
    }

    /// The key the record of the current message is kept under.
    fn record_key(&self) -> Option<String> {
        let id = self.msg.queue_id.as_deref()?;
        let host = self.conn.mta_hostname.as_deref().unwrap_or("localhost");
        Some(bounce_guard::record_key(host, id))
    }

    /// Remembers what was seen of an accepted message, for the bounce guard.
    async fn record_message(&self) {
        let inner = &self.engine.inner;
        let guard = &inner.config.bounce_guard;
        let Some(key) = self.record_key() else {
            return;
        };
        let spf = self.msg.spf.as_ref();
        let spf_pass = spf.is_some_and(|o| matches!(o.answer.result, SpfResult::Pass));
        let verified = if self.conn.internal {
            Some(bounce_guard::Verified::LocalSubmission)
        } else if self.msg.authenticated {
            Some(bounce_guard::Verified::Authenticated)
        } else if self
            .conn
            .client_ip
            .is_some_and(|ip| inner.config.spf.is_trusted(ip))
        {
            Some(bounce_guard::Verified::TrustedNetwork)
        } else if spf_pass {
            Some(bounce_guard::Verified::SpfPass)
        } else {
            None
        };
        let record = bounce_guard::MessageRecord {
            verified,
            spf: spf.map_or_else(
                || "-".to_owned(),
                |o| spf::result_name(&o.answer.result).to_owned(),
            ),
            client: display_ip(self.conn.client_ip),
            sender: self
                .msg
                .sender
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
        };
        let encoded = record.encode();
        let put = inner
            .store
            .put_record(&key, &encoded, guard.record_lifetime, inner.clock.now());
        match tokio::time::timeout(self.command_timeout(), put).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(
                event = "record_failed",
                key, "state store failed, message not recorded: {e}"
            ),
            Err(_) => warn!(
                event = "record_failed",
                key, "state store too slow, message not recorded"
            ),
        }
    }

    /// The bounce guard's judgement of this bounce: what to do at end of
    /// message (never a refusal).
    async fn guard_bounce(&self, plan: &mut EomPlan) {
        let inner = &self.engine.inner;
        let guard = &inner.config.bounce_guard;
        let facts = self
            .msg
            .report_boundary
            .as_deref()
            .map(|b| bounce_guard::scan_dsn(&self.msg.body, b))
            .unwrap_or_default();
        let to_ours = !self.msg.recipients.is_empty()
            && self.msg.recipients.iter().all(|r| {
                EnvelopeAddress::parse(r)
                    .domain()
                    .is_some_and(|d| guard.is_ours(d))
            });
        let record = match (&facts.queue_id, to_ours) {
            (Some(id), false) if bounce_guard::is_long_queue_id(id) => {
                let host = self.conn.mta_hostname.as_deref().unwrap_or("localhost");
                let key = bounce_guard::record_key(host, id);
                match tokio::time::timeout(
                    self.command_timeout(),
                    inner.store.get_record(&key, inner.clock.now()),
                )
                .await
                {
                    Ok(Ok(r)) => Ok(r.as_deref().and_then(bounce_guard::MessageRecord::decode)),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("state store too slow".to_owned()),
                }
            }
            _ => Ok(None),
        };
        let judgement = bounce_guard::judge(&facts, to_ours, record);
        let recipient = self.msg.recipients.first().map_or("-", String::as_str);
        inner.observer.bounce_guard(match judgement {
            bounce_guard::Judgement::Send(_) => "sent",
            bounce_guard::Judgement::Hold(_) => "held",
        });
        match judgement {
            bounce_guard::Judgement::Send(why) => info!(
                event = "bounce_sent",
                queue_id = self.msg.queue_id.as_deref().unwrap_or("-"),
                original_queue_id = facts.queue_id.as_deref().unwrap_or("-"),
                recipient,
                why = %why,
                "bounce guard: bounce may go out"
            ),
            bounce_guard::Judgement::Hold(why) => {
                let dry_run = inner.config.dry_run;
                info!(
                    event = "bounce_held",
                    queue_id = self.msg.queue_id.as_deref().unwrap_or("-"),
                    original_queue_id = facts.queue_id.as_deref().unwrap_or("-"),
                    original_sender = facts.sender.as_deref().unwrap_or("-"),
                    recipient,
                    action = if guard.action == bounce_guard::GuardAction::Discard { "discard" } else { "quarantine" },
                    dry_run,
                    reason = %why,
                    "{}",
                    if dry_run { "dry run: bounce guard would have held this bounce" } else { "bounce guard: bounce held, it may be backscatter" }
                );
                if !dry_run {
                    match guard.action {
                        bounce_guard::GuardAction::Quarantine => {
                            plan.quarantine = Some(format!("nobounce: {why}"));
                        }
                        bounce_guard::GuardAction::Discard => plan.discard = true,
                    }
                }
            }
        }
    }

    /// End of message: the headers to add and remove, the envelope sender
    /// to change, and (bounce guard) what to record or hold.
    pub async fn end_of_message(&mut self) -> EomPlan {
        let mut plan = EomPlan::default();
        if self.engine.inner.config.bounce_guard.enabled {
            if self.guards_this_bounce() {
                self.guard_bounce(&mut plan).await;
                self.msg = Message::default();
                return plan;
            }
            self.record_message().await;
        }
        if self.msg.forged_ar.len() > MAX_FORGED_AR {
            let reply = Reply::new(
                550,
                "5.7.1",
                "Too many forged Authentication-Results headers",
            )
            .expect("fixed codes of matching class");
            let verdict = Verdict::Reject {
                reply,
                reason: Reason::new(
                    Policy::Spf,
                    format!(
                        "{} forged Authentication-Results headers",
                        self.msg.forged_ar.len()
                    ),
                ),
            };
            plan.refuse =
                Some(self.finish(Stage::EndOfMessage, verdict)).filter(Verdict::is_refusal);
            if plan.refuse.is_some() {
                self.msg = Message::default();
                return plan;
            }
            self.msg.forged_ar.truncate(MAX_FORGED_AR);
        }
        for &index in self.msg.forged_ar.iter().rev() {
            info!(
                queue_id = self.msg.queue_id.as_deref().unwrap_or("-"),
                client_ip = %display_ip(self.conn.client_ip),
                index,
                "removing forged Authentication-Results header"
            );
            plan.delete_headers
                .push(("Authentication-Results".into(), index));
        }
        plan.change_sender = self.batv_signed_sender();
        for (alias, domain) in &self.msg.alias_leaks {
            plan.insert_headers.push((
                "X-Nobounce-Alias-Leak".into(),
                format!("alias={alias}; sender-domain={domain}"),
            ));
        }
        if let (Some(outcome), Some(ip)) = (&self.msg.spf, self.conn.client_ip) {
            let authserv_id = self.authserv_id();
            let receiver = self
                .conn
                .mta_hostname
                .clone()
                .unwrap_or_else(|| authserv_id.clone());
            let envelope_from = self
                .msg
                .sender
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default();
            for h in &self.engine.inner.config.spf.headers {
                match h {
                    SpfHeader::ReceivedSpf => plan.insert_headers.push((
                        "Received-SPF".into(),
                        spf::received_spf(
                            outcome,
                            ip,
                            self.conn.helo.as_deref(),
                            &receiver,
                            &envelope_from,
                        ),
                    )),
                    SpfHeader::AuthenticationResults => plan.insert_headers.push((
                        "Authentication-Results".into(),
                        spf::authentication_results(outcome, &authserv_id),
                    )),
                }
            }
        }
        self.engine
            .inner
            .observer
            .decision(Stage::EndOfMessage, None, Action::Accept);
        self.msg = Message::default();
        plan
    }

    /// The BATV-signed envelope sender for mail from one of our domains
    /// sent by one of our clients (authenticated, trusted network, local
    /// submission), unless already signed.
    fn batv_signed_sender(&self) -> Option<String> {
        let inner = &self.engine.inner;
        let config = &inner.config.batv;
        let keys = inner.batv_keys.as_ref().filter(|_| config.enabled)?;
        let sender = self.msg.sender.as_ref()?;
        let domain = sender.domain()?;
        if !config.is_ours(domain) || !self.client_is_ours() {
            return None;
        }
        let text = sender.to_string();
        if batv::parse(&text).is_some() {
            return None;
        }
        let signed = batv::sign(keys, &text, config.lifetime_days, inner.clock.now())?;
        debug!(
            queue_id = self.msg.queue_id.as_deref().unwrap_or("-"),
            sender = %text,
            signed = %signed,
            "BATV: signing the envelope sender"
        );
        Some(format!("<{signed}>"))
    }

    /// The message was aborted (RSET, client gone): forget message facts.
    pub fn abort(&mut self) {
        self.msg = Message::default();
    }

    /// The client IP of this connection.
    pub fn client_ip(&self) -> Option<IpAddr> {
        self.conn.client_ip
    }

    /// The SPF outcome of the current message, if checked.
    pub fn spf_outcome(&self) -> Option<&SpfOutcome> {
        self.msg.spf.as_ref()
    }

    /// Logs a verdict and applies dry-run: in dry-run mode a refusal is
    /// logged and turned into `Continue`.
    fn finish(&self, stage: Stage, verdict: Verdict) -> Verdict {
        let observer = &self.engine.inner.observer;
        let Some(reason) = verdict.reason() else {
            observer.decision(stage, None, Action::Accept);
            return verdict;
        };
        let reply = verdict.reply().map(ToString::to_string).unwrap_or_default();
        let dry_run = self.engine.inner.config.dry_run;
        let action = match &verdict {
            _ if dry_run => Action::DryRun,
            Verdict::Reject { .. } => Action::Reject,
            Verdict::Tempfail { .. } => Action::Tempfail,
            Verdict::Disconnect { .. } | Verdict::Continue => Action::Disconnect,
        };
        observer.decision(stage, Some(reason.policy), action);
        info!(
            target: "nobounce::decision",
            queue_id = self.msg.queue_id.as_deref().unwrap_or("-"),
            client_ip = %display_ip(self.conn.client_ip),
            client_name = %self.conn.client_name,
            stage = stage.as_str(),
            policy = reason.policy.as_str(),
            decision = verdict.kind(),
            reply = %reply,
            reason = %reason.detail,
            dry_run,
            "{}",
            if dry_run { "dry run: would have refused, not acting" } else { "refused" }
        );
        if dry_run {
            Verdict::Continue
        } else {
            verdict
        }
    }
}

fn none_outcome(sender: &str, cause: &str) -> SpfOutcome {
    SpfOutcome {
        identity: Identity::MailFrom,
        sender: sender.to_owned(),
        answer: SpfAnswer {
            result: SpfResult::None,
            cause: Some(cause.to_owned()),
            ttl: None,
        },
    }
}

fn display_ip(ip: Option<IpAddr>) -> String {
    ip.map_or_else(|| "unknown".into(), |ip| ip.to_string())
}
