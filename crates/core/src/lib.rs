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
//! - [`directory`]: the [`RecipientDirectory`] port.

pub mod clock;
pub mod directory;
pub mod dns;
pub mod reply;
pub mod verdict;

pub use crate::{
    clock::{Clock, ManualClock, SystemClock},
    directory::{DirectoryError, RecipientDirectory, RecipientQuery, RecipientStatus},
    reply::{sanitize_text, EnhancedStatus, Reply, ReplyCode, ReplyError},
    verdict::{Policy, Reason, Verdict},
};
