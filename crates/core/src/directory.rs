//! The recipient directory port: who exists here, and how much room is left.
//!
//! Backends (a map file, an LMTP probe, Dovecot quota-status, Maildir++
//! quotas) live in other crates and implement [`RecipientDirectory`]; the
//! engine only sees the answers.

use async_trait::async_trait;
use std::fmt::Debug;

/// What the directory knows of one recipient address.
#[derive(Clone, Debug, Eq, Hash, PartialEq)]
pub enum RecipientStatus {
    /// The address exists and can take the message.
    Deliverable,
    /// No such address here.
    Unknown,
    /// The mailbox is over its quota, or would be with this message.
    /// `room_left` is how many bytes it can still take, when known.
    OverQuota { room_left: Option<u64> },
    /// The mailbox exists but takes no mail (retired alias, disabled account).
    Disabled,
    /// The directory cannot judge this address (not its domain, odd syntax):
    /// let the MTA decide.
    NotHandled,
}

pub use crate::error::DirectoryError;

/// A query for one recipient.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct RecipientQuery<'a> {
    /// The recipient address without angle brackets, as given at RCPT TO.
    pub address: &'a str,
    /// The message size the client declared with `SIZE=` at MAIL FROM.
    pub declared_size: Option<u64>,
    /// `true` when the envelope sender is null (a bounce addressed to us).
    pub null_sender: bool,
}

/// A source of truth about local recipients.
///
/// Implementations must be cheap to share (`Arc`) across connections; they
/// do their own caching and timeouts. Return `Err` only for failures of the
/// directory itself; an unknown user is `Ok(RecipientStatus::Unknown)`.
#[async_trait]
pub trait RecipientDirectory: Send + Sync + Debug {
    /// Looks up one recipient.
    async fn lookup(&self, query: &RecipientQuery<'_>) -> Result<RecipientStatus, DirectoryError>;
}
