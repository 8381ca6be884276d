//! # nobounce-recipients
//!
//! Recipient directory backends for nobounce: they answer, at `RCPT TO`,
//! whether a local recipient exists and has room for the message, so the
//! MTA can refuse in the SMTP dialog instead of accepting and bouncing to a
//! forged sender later (backscatter). Each backend implements
//! [`nobounce_core::RecipientDirectory`]; the policy that turns answers into
//! SMTP replies lives in nobounce-core.
//!
//! # Layout
//!
//! - [`map_file`]: a text file of addresses (catch-alls, disabled entries),
//!   reloaded on SIGHUP and when it changes.
//! - [`probe`]: an LMTP/SMTP `RCPT TO` probe of the delivery agent (Dovecot
//!   LMTP with `lmtp_rcpt_check_quota = yes`), pooled and cached.
//! - [`quota_status`]: Dovecot's quota-status service over the Postfix
//!   policy protocol.
//! - [`maildir`]: Maildir++ `maildirsize` files read from disk.
//! - [`router`]: [`Chain`] (existence then quota) and [`Router`] (by domain).
//! - [`config`]: the backends and routes of `[recipients]`, and [`build`].
//! - [`cache`]: the answer cache shared by the network backends, with short
//!   TTLs for quota.
//!
//! # Failure semantics
//!
//! A backend returns `Err` only when it could not find out (server down,
//! timeout, unexpected reply, corrupt file); the engine turns that into a
//! temporary failure, never an accept. An address a backend cannot judge
//! (another domain, odd syntax, unsafe as a path) is `NotHandled`.

pub mod cache;
pub mod config;
pub mod maildir;
pub mod map_file;
pub mod net;
pub mod probe;
pub mod quota_status;
pub mod router;

mod address;
mod reply;
#[cfg(test)]
mod testutil;

/// Entry points for the fuzz targets (`fuzz/`): the parsers of what
/// backend servers answer. Not a stable API.
#[doc(hidden)]
pub mod fuzzing {
    use nobounce_core::{DirectoryError, EnhancedStatus, RecipientStatus};

    /// What an LMTP/SMTP `RCPT` reply means for a recipient.
    pub fn classify_reply(
        code: u16,
        status: Option<EnhancedStatus>,
        text: &str,
    ) -> Result<RecipientStatus, DirectoryError> {
        crate::reply::classify(code, status, text)
    }

    /// What a quota-status `action=` means for a recipient.
    pub fn classify_action(action: &str) -> Result<RecipientStatus, DirectoryError> {
        crate::quota_status::classify_action(action)
    }
}

pub use crate::{
    cache::CacheConfig,
    config::{
        build, build_observed, build_reusing, check_routes, BackendConfig, BuildError, Recipients,
        RecipientsConfig, RouteConfig, RouteError,
    },
    maildir::{MaildirConfig, MaildirQuota, MissingMaildir, PathTemplate},
    map_file::{MapFileConfig, MapFileDirectory, MapFileError, RecipientMap},
    net::ServerSettings,
    probe::{ProbeProtocol, RcptProbe, RcptProbeConfig},
    quota_status::{QuotaStatus, QuotaStatusConfig},
    router::{outcome_label, Chain, Observed, Router},
};
