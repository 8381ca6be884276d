//! The observer port: what the engine and the front ends tell about their
//! work, for metrics. Every method has an empty default, so an observer
//! implements only what it counts; [`NoObserver`] counts nothing.
//!
//! Labels are small fixed sets (stages, policies, actions, SPF results,
//! configured backend and zone names): never an address or an IP, so that
//! a metrics backend cannot be flooded with series.

use crate::{session::Stage, verdict::Policy};
use std::{fmt::Debug, time::Duration};

/// What was decided at a stage.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub enum Action {
    /// Accepted (or left to the MTA's other checks).
    Accept,
    /// A 5xx refusal.
    Reject,
    /// A 4xx refusal.
    Tempfail,
    /// A 421 and the connection closed.
    Disconnect,
    /// A refusal not made because of dry-run.
    DryRun,
}

impl Action {
    /// Stable lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accept => "accept",
            Self::Reject => "reject",
            Self::Tempfail => "tempfail",
            Self::Disconnect => "disconnect",
            Self::DryRun => "dry_run",
        }
    }
}

/// Receives what happens, for metrics. Called on the SMTP path: keep every
/// method cheap (an atomic increment), never block.
#[allow(unused_variables)]
pub trait Observer: Send + Sync + Debug {
    /// A decision at `stage`: `policy` is `None` for an accept.
    fn decision(&self, stage: Stage, policy: Option<Policy>, action: Action) {}
    /// An SPF result (`pass`, `fail`, `softfail`, ...), MAIL FROM identity.
    fn spf_result(&self, result: &'static str) {}
    /// A recipient backend answered (`deliverable`, `unknown`,
    /// `over_quota`, `disabled`, `not_handled`, `error`) after `elapsed`.
    fn backend_lookup(&self, backend: &str, outcome: &'static str, elapsed: Duration) {}
    /// A client was banned (a new ban, not one already in force).
    fn ban_added(&self) {}
    /// A DNS block list answered (`listed`, `not_listed`, `failed`).
    fn dnsbl_answer(&self, zone: &str, outcome: &'static str) {}
    /// The bounce guard let a bounce out (`sent`) or held it (`held`).
    fn bounce_guard(&self, outcome: &'static str) {}
    /// An alias lookup at RCPT (`active`, `retired`, `unknown`, `foreign`,
    /// `error`).
    fn alias(&self, outcome: &'static str) {}
    /// A front end connection opened (`open = true`) or closed.
    fn connection(&self, protocol: &'static str, open: bool) {}
    /// A front end answered one command (`stage`: `connect`, `mail`,
    /// `rcpt`, `eom`, ...) after `elapsed`.
    fn command(&self, protocol: &'static str, stage: &'static str, elapsed: Duration) {}
}

/// Observes nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoObserver;

impl Observer for NoObserver {}
