//! `nobounce check`: one SMTP conversation through the engine with the live
//! configuration (real DNS, real recipient backends, the state store read
//! but never written), and why each stage got its reply.

use crate::{build_store, control, Generation};
use nobounce_config::{Config, ConfigErrors, ControlSocket, StoreBackend};
use nobounce_core::{
    observe::Observer,
    spf,
    store::{Ban, DryRunStore},
    MemoryStore, StateStore, Verdict,
};
use serde::Serialize;
use std::{
    net::IpAddr,
    sync::{Arc, Mutex},
    time::SystemTime,
};

/// What to check.
#[derive(Clone, Debug)]
pub struct CheckRequest {
    /// The client's address.
    pub client_ip: IpAddr,
    /// The HELO name (default: the client address as a literal).
    pub helo: Option<String>,
    /// The envelope sender (`""` or `<>` for a bounce).
    pub from: String,
    /// The recipients.
    pub to: Vec<String>,
    /// The MAIL FROM SIZE, if any.
    pub size: Option<u64>,
}

/// One stage's answer.
#[derive(Clone, Debug, Serialize)]
pub struct StageReport {
    /// `mail` or `rcpt`.
    pub stage: &'static str,
    /// The sender or recipient this is about.
    pub address: String,
    /// `accept`, `reject` (5xx), `tempfail` (4xx) or `disconnect` (421).
    pub action: &'static str,
    /// The SMTP reply nobounce would send (none for an accept).
    pub reply: Option<String>,
    /// The policy that refused (`spf`, `recipient`, ...).
    pub policy: Option<&'static str>,
    /// Why, in words.
    pub reason: Option<String>,
    /// What the backends and lists answered for this stage.
    pub details: Vec<String>,
}

/// The SPF result of the sender.
#[derive(Clone, Debug, Serialize)]
pub struct SpfReport {
    /// `mailfrom` or `helo`.
    pub identity: &'static str,
    /// What was checked (`user@domain`, `postmaster@helo`).
    pub checked: String,
    /// `pass`, `fail`, `softfail`, ...
    pub result: &'static str,
    /// The mechanism that matched, or the error.
    pub cause: Option<String>,
}

/// The client's ban, as the state store holds it.
#[derive(Clone, Debug, Serialize)]
pub struct BanReport {
    /// The banned key (an IPv4 address, or an IPv6 network).
    pub key: String,
    /// When it ends (RFC 3339, UTC).
    pub until: String,
    /// How many times it was banned (the ban counter).
    pub strikes: u32,
    /// Why.
    pub reason: String,
}

/// The whole explanation.
#[derive(Clone, Debug, Serialize)]
pub struct CheckReport {
    /// The client checked.
    pub client_ip: IpAddr,
    /// Each stage in order; recipients are not reached when MAIL FROM is
    /// refused.
    pub stages: Vec<StageReport>,
    /// The SPF result, when SPF was checked.
    pub spf: Option<SpfReport>,
    /// The client's active ban, if any.
    pub ban: Option<BanReport>,
    /// `accepted`, `tempfailed` or `refused`.
    pub result: &'static str,
    /// The exit code of `nobounce check`: 0 accepted, 3 any 4xx, else 2
    /// any 5xx.
    pub exit: u8,
}

/// Collects what backends and lists answered during one stage.
#[derive(Debug, Default)]
struct Collector(Mutex<Vec<String>>);

impl Collector {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn push(&self, line: String) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(line);
    }
}

impl Observer for Collector {
    fn backend_lookup(&self, backend: &str, outcome: &'static str, elapsed: std::time::Duration) {
        self.push(format!(
            "recipient backend {backend:?}: {outcome} ({} ms)",
            elapsed.as_millis()
        ));
    }

    fn dnsbl_answer(&self, zone: &str, outcome: &'static str) {
        self.push(format!("block list {zone}: {outcome}"));
    }

    fn alias(&self, outcome: &'static str) {
        self.push(format!("alias: {outcome}"));
    }
}

fn stage_report(
    stage: &'static str,
    address: &str,
    verdict: &Verdict,
    details: Vec<String>,
) -> StageReport {
    let (action, policy, reason) = match verdict {
        Verdict::Continue => ("accept", None, None),
        Verdict::Reject { reason, .. } => (
            "reject",
            Some(reason.policy.as_str()),
            Some(reason.detail.clone()),
        ),
        Verdict::Tempfail { reason, .. } => (
            "tempfail",
            Some(reason.policy.as_str()),
            Some(reason.detail.clone()),
        ),
        Verdict::Disconnect { reason, .. } => (
            "disconnect",
            Some(reason.policy.as_str()),
            Some(reason.detail.clone()),
        ),
    };
    StageReport {
        stage,
        address: address.to_owned(),
        action,
        reply: verdict.reply().map(ToString::to_string),
        policy,
        reason,
        details,
    }
}

/// The state store as `check` sees it: Redis, or the running daemon's
/// memory through its control socket (its bans copied into a private
/// store), or an empty memory store when no daemon answers.
async fn live_store(config: &Config) -> Result<(Arc<dyn StateStore>, Vec<String>), ConfigErrors> {
    let mut notes = Vec::new();
    if config.store.backend == StoreBackend::Redis {
        return Ok((build_store(config)?.store, notes));
    }
    let memory = MemoryStore::default();
    let now = SystemTime::now();
    match config.store.control_socket.path() {
        Some(path) if config.store.control_socket != ControlSocket::Off => {
            match control::request(&path, "LIST").await {
                Ok(lines) => {
                    for ban in lines.iter().filter_map(|l| control::parse_ban_line(l)) {
                        memory.mirror(&ban, now);
                    }
                }
                Err(e) => notes.push(format!("bans not known: {e}")),
            }
        }
        _ => notes.push("bans not known: no control socket to ask the running milter".into()),
    }
    Ok((Arc::new(memory), notes))
}

/// Runs `request` through the engine built from `config`. Nothing is
/// written to the shared state store.
pub async fn explain(
    config: Config,
    request: &CheckRequest,
) -> Result<(CheckReport, Vec<String>), ConfigErrors> {
    let mut config = config;
    // The real verdicts, not dry-run's; the store is protected below.
    config.dry_run = false;
    let (shared, notes) = live_store(&config).await?;
    let store: Arc<dyn StateStore> = Arc::new(DryRunStore::new(Arc::clone(&shared)));
    let collector = Arc::new(Collector::default());
    let observer: Arc<dyn Observer> = collector.clone();
    let generation = Generation::build_observed(config.clone(), None, &store, observer)?;
    let engine = generation.engine();
    let now = SystemTime::now();
    let key = control::key_for(request.client_ip, config.dictionary.ipv6_prefix);
    let ban = shared
        .ban_status(&key, now)
        .await
        .ok()
        .flatten()
        .map(|b: Ban| BanReport {
            key: b.key,
            until: nobounce_core::clock::rfc3339_utc(b.until),
            strikes: b.strikes,
            reason: b.reason,
        });

    let mut session = engine.session();
    let helo = request
        .helo
        .clone()
        .unwrap_or_else(|| format!("[{}]", request.client_ip));
    session.connect(Some(request.client_ip), &helo, None).await;
    session.helo(&helo).await;
    let size = request.size.map(|n| format!("SIZE={n}"));
    let args: Vec<&str> = size.iter().map(String::as_str).collect();
    let mail = session.mail_from(&request.from, &args, None).await;
    let mut stages = vec![stage_report("mail", &request.from, &mail, collector.take())];
    let spf = session.spf_outcome().map(|o| SpfReport {
        identity: o.identity.as_str(),
        checked: o.sender.clone(),
        result: spf::result_name(&o.answer.result),
        cause: o.answer.cause.clone(),
    });
    if !mail.is_refusal() {
        for rcpt in &request.to {
            let v = session.rcpt_to(rcpt).await;
            stages.push(stage_report("rcpt", rcpt, &v, collector.take()));
        }
    }
    let transient = stages
        .iter()
        .any(|s| matches!(s.action, "tempfail" | "disconnect"));
    let permanent = stages.iter().any(|s| s.action == "reject");
    let (result, exit) = if transient {
        ("tempfailed", 3)
    } else if permanent {
        ("refused", 2)
    } else {
        ("accepted", 0)
    };
    Ok((
        CheckReport {
            client_ip: request.client_ip,
            stages,
            spf,
            ban,
            result,
            exit,
        },
        notes,
    ))
}

impl CheckReport {
    /// The report as one JSON object.
    pub fn json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The report for people.
    pub fn text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(out, "client {}", self.client_ip);
        match &self.ban {
            Some(b) => {
                let _ = writeln!(
                    out,
                    "ban: {} banned until {} (strike {}): {}",
                    b.key, b.until, b.strikes, b.reason
                );
            }
            None => {
                let _ = writeln!(out, "ban: none");
            }
        }
        if let Some(s) = &self.spf {
            let _ = writeln!(
                out,
                "SPF: {} for {} ({}){}",
                s.result,
                s.checked,
                s.identity,
                s.cause
                    .as_deref()
                    .map(|c| format!(": {c}"))
                    .unwrap_or_default()
            );
        }
        for s in &self.stages {
            let what = if s.stage == "mail" {
                "MAIL FROM"
            } else {
                "RCPT TO"
            };
            let _ = write!(
                out,
                "{what}:<{}> {}",
                s.address.trim_matches(|c| c == '<' || c == '>'),
                s.action
            );
            if let Some(r) = &s.reply {
                let _ = write!(out, ": {r}");
            }
            out.push('\n');
            if let (Some(p), Some(r)) = (s.policy, &s.reason) {
                let _ = writeln!(out, "  why ({p}): {r}");
            }
            for d in &s.details {
                let _ = writeln!(out, "  {d}");
            }
        }
        let _ = writeln!(out, "result: {} (exit {})", self.result, self.exit);
        out
    }
}
