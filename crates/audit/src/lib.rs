//! `nobounce audit`: how much backscatter did this server send?
//!
//! Reads a mail server's logs and counts the bounces (non-delivery
//! notifications) it generated for mail it had accepted: how many, to
//! which sender domains, for which reasons, per day, and how many of them
//! nobounce would have turned into SMTP rejections at RCPT TO (an unknown
//! user, a full or disabled mailbox: see [`Reason::preventable`]). Every
//! bounce to a forged sender is backscatter.
//!
//! It reads Postfix's `maillog` (the `sender non-delivery notification`
//! lines and the `status=bounced` deliveries behind them), Sendmail's `DSN`
//! lines and qmail-send's `bounce msg` lines, in syslog, RFC 3339 and
//! multilog form, plain or gzip-compressed, from files or standard input.
//!
//! # Layout
//!
//! - `line`: a log line split into day ([`Day`]), host, program and
//!   message; the year of syslog dates ([`YearHint`]).
//! - `postfix`, `sendmail`, `qmail`: what each MTA's lines mean.
//! - [`Auditor`]: the streaming parser; lines in, [`Bounce`]s out, with a
//!   bounded memory ([`Limits`]).
//! - [`classify`] and [`Reason`]: DSN codes and texts to reasons.
//! - [`Report`]: the counts, as JSON or tables.
//! - [`audit_files`] and [`rotation_order`]: files, `.gz`, standard input,
//!   rotated sets oldest first.
//!
//! The library prints nothing; the `nobounce audit` command prints the
//! report.
//!
//! ```
//! use nobounce_audit::{audit_files, Limits};
//! # let dir = tempfile::tempdir().unwrap();
//! # let maillog = dir.path().join("maillog");
//! # std::fs::write(&maillog, "").unwrap();
//! let report = audit_files(&[maillog], Limits::default())?;
//! println!("{}", report.to_table());
//! # Ok::<(), nobounce_audit::AuditError>(())
//! ```

mod auditor;
mod input;
mod line;
mod postfix;
mod qmail;
mod reason;
mod report;
mod sendmail;
mod state;

pub use auditor::{Auditor, Bounce, Mta, MAX_LINE};
pub use input::{audit_files, audit_files_with, open, rotation_order, AuditError, STDIN};
pub use line::{Day, YearHint};
pub use reason::{classify, Reason};
pub use report::{DayCounts, Report, NO_DOMAIN, OTHER_DOMAINS, UNKNOWN_DAY, UNKNOWN_SENDER};
pub use state::Limits;
