//! # nobounce-core
//!
//! The decision engine of nobounce: it takes what the MTA said during the
//! SMTP dialog and returns verdicts, so that everything knowable is decided
//! *before* the message is accepted, and a refused message is refused with an
//! SMTP reply instead of a later bounce (backscatter).
//!
//! This crate does no socket I/O. DNS, recipient directories, shared state
//! and time come in through traits (ports), so tests and embedders plug in
//! their own.
//!
//! # Layout
//!
//! - [`reply`]: [`Reply`] (code, enhanced status, safe text) and
//!   [`verdict`]: [`Verdict`] with its [`Reason`].
//! - [`clock`]: the [`Clock`] port.
//! - [`directory`]: the [`RecipientDirectory`] port; [`recipient`]: the
//!   policy that maps its answers to verdicts at RCPT TO.
//! - [`dns`]: the [`dns::TtlLookup`] port (DNS with TTLs).
//! - [`spf`]: SPF policy over the [`SpfVerifier`] port (viaspf).
//!   [`spf_cache`]: [`CachingVerifier`], the shared TTL cache of answers.
//! - [`engine`]: [`Engine`] (configuration plus ports, shared) and
//!   [`session`]: [`Session`] (one connection: facts in, verdicts out).
//! - [`address`]: envelope addresses and ESMTP parameters; [`error`]: the
//!   errors of a failed backend ([`DirectoryError`], [`StoreError`]).
//! - [`endpoint`]: socket addresses as configuration files write them;
//!   [`smtp_reply`]: reading a mail server's replies (for backends).
//! - [`store`]: the [`StateStore`] port (shared counters and bans) with
//!   [`MemoryStore`]; [`dictionary`]: the dictionary-attack ban policy.
//! - [`observe`]: the [`observe::Observer`] port, for metrics.
//! - [`dnsbl`]: DNS block lists (backscatter lists in safe mode) over the
//!   [`dns::TtlLookup`] port.
//! - [`alias`]: per-correspondent aliases: the [`alias::AliasStore`] port
//!   and making new, unguessable aliases ([`alias::AliasFormat`]).

pub mod address;
pub mod alias;
pub mod batv;
pub mod bounce_guard;
pub mod clock;
pub mod dictionary;
pub mod directory;
pub mod dns;
pub mod dnsbl;
pub mod endpoint;
pub mod engine;
pub mod error;
pub mod observe;
pub mod recipient;
pub mod reply;
pub mod session;
pub mod smtp_reply;
pub mod spf;
pub mod spf_cache;
pub mod store;
pub mod verdict;

pub use crate::{
    address::EnvelopeAddress,
    clock::{Clock, ManualClock, SystemClock},
    directory::{RecipientDirectory, RecipientQuery, RecipientStatus},
    endpoint::Endpoint,
    engine::{Engine, EngineBuilder, EngineConfig, EngineSource},
    error::{DirectoryError, StoreError},
    reply::{sanitize_text, EnhancedStatus, Reply, ReplyCode, ReplyError},
    session::{EomPlan, Session, Stage},
    spf::{SpfAction, SpfConfig, SpfHeader, SpfVerifier},
    spf_cache::{CacheStats, CachingVerifier},
    store::{Ban, BanRule, MemoryStore, StateStore, Strike},
    verdict::{Policy, Reason, Verdict},
};
