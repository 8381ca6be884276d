//! Verdicts: what the engine tells the MTA to do at one SMTP stage.

use crate::reply::Reply;
use std::fmt::{self, Display, Formatter};

/// Which policy produced a verdict.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub enum Policy {
    /// Sender Policy Framework.
    Spf,
    /// Recipient checks (unknown user, quota, retired alias).
    Recipient,
    /// Dictionary-attack bans.
    Dictionary,
    /// DNS block lists.
    Dnsbl,
    /// BATV (bounces to addresses we never sent from).
    Batv,
    /// Per-correspondent aliases (retired, unknown, foreign senders).
    Alias,
    /// Trouble of our own (a backend failed): always a temporary failure.
    Internal,
}

impl Policy {
    /// Stable lowercase name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Spf => "spf",
            Self::Recipient => "recipient",
            Self::Dictionary => "dictionary",
            Self::Dnsbl => "dnsbl",
            Self::Batv => "batv",
            Self::Alias => "alias",
            Self::Internal => "internal",
        }
    }
}

impl Display for Policy {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a verdict was given: the policy and a human-readable detail for logs.
#[derive(Clone, Debug, Eq, Hash, PartialEq)]
pub struct Reason {
    /// The policy that decided.
    pub policy: Policy,
    /// What it found, for logs (never sent to the client as is).
    pub detail: String,
}

impl Reason {
    /// Makes a reason.
    pub fn new(policy: Policy, detail: impl Into<String>) -> Self {
        Self {
            policy,
            detail: detail.into(),
        }
    }
}

impl Display for Reason {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.policy, self.detail)
    }
}

/// What the MTA should do at one stage.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum Verdict {
    /// Go on to the next stage; nothing to object.
    Continue,
    /// Refuse with a 4xx reply: the client should try again later.
    Tempfail { reply: Reply, reason: Reason },
    /// Refuse with a 5xx reply.
    Reject { reply: Reply, reason: Reason },
    /// Answer `421` and close the connection (for example a banned client).
    Disconnect { reply: Reply, reason: Reason },
}

impl Verdict {
    /// A refusal with `reply`: tempfail for 4xx, reject for 5xx.
    pub fn refuse(reply: Reply, reason: Reason) -> Self {
        if reply.is_transient() {
            Self::Tempfail { reply, reason }
        } else {
            Self::Reject { reply, reason }
        }
    }

    /// The reply and the reason, for the refusing verdicts.
    pub fn refusal(&self) -> Option<(&Reply, &Reason)> {
        match self {
            Self::Tempfail { reply, reason }
            | Self::Reject { reply, reason }
            | Self::Disconnect { reply, reason } => Some((reply, reason)),
            Self::Continue => None,
        }
    }

    /// The reply, for the refusing verdicts.
    pub fn reply(&self) -> Option<&Reply> {
        self.refusal().map(|(reply, _)| reply)
    }

    /// The reason, for the refusing verdicts.
    pub fn reason(&self) -> Option<&Reason> {
        self.refusal().map(|(_, reason)| reason)
    }

    /// `true` unless the verdict is continue.
    pub fn is_refusal(&self) -> bool {
        self.reply().is_some()
    }

    /// Stable lowercase name for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Continue => "continue",
            Self::Tempfail { .. } => "tempfail",
            Self::Reject { .. } => "reject",
            Self::Disconnect { .. } => "disconnect",
        }
    }
}

impl Display for Verdict {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match (self.reply(), self.reason()) {
            (Some(reply), Some(reason)) => write!(f, "{} \"{reply}\" ({reason})", self.kind()),
            _ => f.write_str(self.kind()),
        }
    }
}
