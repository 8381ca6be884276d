//! Test support of nobounce: one place for every helper the tests of the
//! workspace share.
//!
//! The end-to-end tier runs nobounce against the real mail software it is
//! meant for: Postfix, Sendmail, Exim, Dovecot LMTP and Redis. Every test
//! starts its own instances on free loopback ports, in a throw-away temporary
//! directory, and they are stopped when the test's handles are dropped. No
//! system service is used or touched, and no traffic leaves 127.0.0.0/8.
//!
//! # Layout
//!
//! - [`require!`] / [`require_binaries`]: skip a test (or fail it with
//!   `NOBOUNCE_E2E=required`) when a needed program is not installed.
//! - [`free_port`], [`bind_loopback`]: loopback ports.
//! - [`debs`]: the Sendmail and Exim .debs, unpacked per test (never
//!   installed: they conflict with Postfix).
//! - [`dns`]: [`TestDnsServer`], an authoritative DNS server inside the test
//!   process, serving the records a test gives it.
//! - [`LogCapture`]: what nobounce logged on the test's thread.
//! - [`PolicyClient`], [`policy_request`]: the policy delegation protocol
//!   as Postfix speaks it.
//! - [`PostfixInstance`] / [`PostfixBuilder`]: a private Postfix with its own
//!   `config_directory`, `queue_directory`, `data_directory` and log file.
//! - [`SendmailInstance`] / [`SendmailBuilder`]: a private Sendmail 8.17,
//!   unpacked from the cached .debs, with its own `sendmail.cf`, queue and
//!   log (its syslog captured through a private `/dev/log`), run in a mount
//!   and UTS namespace of its own.
//! - [`EximInstance`] / [`EximBuilder`]: a private Exim 4.96, unpacked from
//!   its .deb, running the ACL snippet of `docs/examples/exim-nobounce.conf`
//!   against a policy service.
//! - [`RedisInstance`]: a private `redis-server` (no persistence) that can be
//!   stopped and restarted on the same port.
//! - [`SmtpSink`]: a tiny SMTP/LMTP server that stores what Postfix relays,
//!   including bounces (`MAIL FROM:<>`).
//! - [`SmtpClient`]: a minimal SMTP client returning every [`Reply`] so tests
//!   can assert codes and texts (`550 5.7.23 ...`).
//! - [`Background`]: runs an in-process server (the milter, a DNS server)
//!   with a shutdown signal, stopped on drop.
//! - [`poll_until`] / [`wait_until`]: bounded polling instead of fixed sleeps.
//! - [`MessageBuilder`], [`parse_headers`]: build and inspect messages.
//!
//! # Running
//!
//! `cargo test -p nobounce-e2e` (the end-to-end tests in `tests/`) as root (Postfix's master must start as root;
//! it runs its daemons as `mail_owner = postfix`). Without the programs the
//! tests print `SKIPPED: ...` and pass; CI sets `NOBOUNCE_E2E=required`
//! after `.ci/install-deps` so that they fail instead. When a test panics,
//! the tail of its Postfix log is printed; the whole log is in
//! [`PostfixInstance::log`].
//!
//! # A typical test
//!
//! All harness calls that wait are `async`, so a milter or DNS server spawned
//! on the same runtime keeps running while the test waits for Postfix.
//!
//! ```no_run
//! use nobounce_test_support::{require, Background, PostfixInstance, SmtpClient, SmtpSink};
//! use nobounce_test_support::{bind_loopback, MessageBuilder, DEFAULT_TIMEOUT};
//!
//! # async fn milter_run(
//! #     _: tokio::net::TcpListener,
//! #     _: nobounce_test_support::ShutdownSignal,
//! # ) -> std::io::Result<()> { Ok(()) }
//! #[tokio::test]
//! async fn rejects_spf_fail_at_rcpt() {
//!     require!("postfix");
//!     // 1. In-process servers on 127.0.0.1:0 (a DNS server works the same way).
//!     let listener = bind_loopback().await.expect("bind milter");
//!     let milter_addr = listener.local_addr().expect("milter address");
//!     // In real tests: |shutdown| nobounce_milter::run(listener, config, shutdown)
//!     let milter = Background::spawn(|shutdown| milter_run(listener, shutdown));
//!     // 2. Where Postfix relays accepted mail to.
//!     let sink = SmtpSink::start().await.expect("sink");
//!     // 3. Postfix itself.
//!     let postfix = PostfixInstance::builder()
//!         .milter(milter_addr)
//!         .relay_to(sink.addr())
//!         .start()
//!         .await
//!         .expect("postfix");
//!     // 4. Talk SMTP and assert on replies.
//!     let mut smtp = SmtpClient::connect(postfix.smtp_addr()).await.expect("connect");
//!     smtp.ehlo("client.example").await.expect("EHLO").assert_code(250);
//!     smtp.mail_from("someone@spf-fail.test", &[]).await.expect("MAIL").assert_code(250);
//!     let rcpt = smtp.rcpt_to("user@example.test").await.expect("RCPT");
//!     assert_eq!(rcpt.code, 550, "{rcpt}");
//!     assert!(rcpt.text().starts_with("5.7.23"), "{rcpt}");
//!     smtp.quit().await.expect("QUIT");
//!     // 5. Nothing is queued, nothing bounced.
//!     postfix.wait_until_queue_empty(DEFAULT_TIMEOUT).await.expect("queue drains");
//!     postfix.assert_no_bounce();
//!     assert!(!sink.has_bounce());
//!     milter.stop().await.expect("milter ends").expect("milter ran cleanly");
//! #   let _ = MessageBuilder::new();
//! }
//! ```

mod client;
pub mod debs;
pub mod dns;
mod dovecot;
mod exim;
mod logs;
mod message;
mod net;
mod policy;
mod postfix;
mod redis;
mod require;
mod sendmail;
mod sink;
mod task;
mod wait;

pub use client::{SmtpClient, Transaction, DEFAULT_COMMAND_TIMEOUT};
pub use dns::{ServerMode, TestDnsServer, TestRecord};
pub use dovecot::{DovecotBuilder, DovecotInstance, DEFAULT_QUOTA, QUOTA_GRACE_PERCENT};
pub use exim::{EximBuilder, EximInstance, EXIM_HOSTNAME};
pub use logs::{CaptureGuard, LogCapture};
pub use message::{header_value, parse_headers, MessageBuilder};
pub use net::{bind_loopback, free_port, LOOPBACK};
pub use policy::{policy_request, PolicyClient};
pub use postfix::{PostfixBuilder, PostfixInstance, QueuedMessage, QueuedRecipient, MYHOSTNAME};
pub use redis::RedisInstance;
pub use require::{e2e_required, find_binary, require_binaries, E2E_ENV};
pub use sendmail::{SendmailBuilder, SendmailInstance, SENDMAIL_HOSTNAME};
pub use sink::{ReceivedMessage, SinkBuilder, SmtpSink};
pub use task::{Background, ShutdownSignal};
pub use wait::{poll_until, wait_until, DEFAULT_TIMEOUT};

/// Reply to one SMTP command; see [`SmtpClient`].
pub use client::Reply;

/// Skips the calling test (by `return`ing from it) unless all the named
/// programs are installed; with `NOBOUNCE_E2E=required` a missing program
/// fails the test instead.
///
/// The test's name is taken from the enclosing function, so the message reads
/// `SKIPPED: postfix_harness::relays_to_sink: postfix not found (set
/// NOBOUNCE_E2E=required to make this a failure)`.
///
/// Works in plain and in `async` test functions. For `"postfix"` the helper
/// programs `postconf` and `postqueue` are checked as well.
///
/// ```no_run
/// #[tokio::test]
/// async fn needs_postfix_and_redis() {
///     nobounce_test_support::require!("postfix", "redis-server");
///     // ... only reached when both are installed
/// }
/// ```
#[macro_export]
macro_rules! require {
    ($($binary:expr),+ $(,)?) => {
        if !$crate::require_binaries($crate::__function_name!(), &[$($binary),+]) {
            return;
        }
    };
}

/// Name of the enclosing function (`module::test_name`); implementation
/// detail of [`require!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __function_name {
    () => {{
        fn __here() {}
        $crate::__clean_function_name(::std::any::type_name_of_val(&__here))
    }};
}

/// Turns `crate::module::test::{{closure}}::__here` into `module::test`.
#[doc(hidden)]
pub fn __clean_function_name(raw: &'static str) -> &'static str {
    let mut name = raw.strip_suffix("::__here").unwrap_or(raw);
    while let Some(stripped) = name.strip_suffix("::{{closure}}") {
        name = stripped;
    }
    // Drop the crate name of the test binary; keep module and function.
    match name.split_once("::") {
        Some((_, rest)) if !rest.is_empty() => rest,
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::__clean_function_name;

    #[test]
    fn function_name_drops_crate_closure_and_marker() {
        assert_eq!(
            __clean_function_name("postfix_harness::relays::{{closure}}::__here"),
            "relays"
        );
        assert_eq!(
            __clean_function_name("e2e::spf::rejects::__here"),
            "spf::rejects"
        );
        assert_eq!(__clean_function_name("lonely::__here"), "lonely");
    }

    #[test]
    fn function_name_of_this_test() {
        assert_eq!(
            crate::__function_name!(),
            "tests::function_name_of_this_test"
        );
    }
}
