//! qmail-send's log lines. Debian has no qmail package, so these formats
//! are taken from qmail's source (netqmail 1.06 / notqmail: qmail-send.c
//! and qsutil.c), not from a captured log:
//!
//! ```text
//! new msg M                                          todo_do()
//! info msg M: bytes B from <sender> qp P uid U       todo_do()
//! starting delivery D: msg M to remote rcpt          del_start() ("to local" for local)
//! delivery D: success: text                          del_dochan()
//! delivery D: deferral: text                         del_dochan()
//! delivery D: failure: text                          del_dochan()
//! bounce msg M qp P                                  injectbounce()
//! end msg M                                          messdone()
//! ```
//!
//! The texts go through `logsafe()`: a newline becomes `/`, and every byte
//! outside `!`..`~` and `%` becomes `_`, so `Sorry,_no_mailbox_here_by_
//! that_name._(#5.1.1)/`. `bounce msg` is logged for every bounce qmail
//! injects: to the sender, or to the postmaster when the sender was empty
//! (a double bounce, not counted here). qmail-send writes to standard
//! error, which reaches the log through splogger (syslog, tag `qmail`,
//! each message preceded by a `seconds.fraction` stamp) or multilog
//! (`@TAI64N` stamps).

use crate::auditor::{key, Mta, Outcome, State};
use crate::line::Line;
use crate::reason::classify;

pub(crate) fn line(st: &mut State, l: &Line<'_>) -> Outcome {
    let message = strip_splogger_stamp(l.message);
    let host = l.host;
    if let Some(rest) = message.strip_prefix("info msg ") {
        let Some((m, rest)) = rest.split_once(": bytes ") else {
            return Outcome::Foreign;
        };
        let Some((_, rest)) = rest.split_once(" from <") else {
            return Outcome::Foreign;
        };
        let Some((sender, _)) = rest.rsplit_once("> qp ") else {
            return Outcome::Foreign;
        };
        if !is_number(m) {
            return Outcome::Foreign;
        }
        st.message(&key(host, "qmail msg", m)).set_sender(sender);
    } else if let Some(rest) = message.strip_prefix("starting delivery ") {
        let Some((d, rest)) = rest.split_once(": msg ") else {
            return Outcome::Foreign;
        };
        let m = rest.split(' ').next().unwrap_or_default();
        if !is_number(d) || !is_number(m) {
            return Outcome::Foreign;
        }
        let msg_key = key(host, "qmail msg", m);
        let now = st.now;
        *st.deliveries
            .entry(&key(host, "qmail delivery", d), now, |_| {}) = msg_key;
    } else if let Some(rest) = message.strip_prefix("delivery ") {
        let Some((d, report)) = rest.split_once(": ") else {
            return Outcome::Foreign;
        };
        if !is_number(d) {
            return Outcome::Foreign;
        }
        let msg_key = st.deliveries.remove(&key(host, "qmail delivery", d));
        if let (Some(text), Some(msg_key)) = (report.strip_prefix("failure: "), msg_key) {
            let text: String = text
                .chars()
                .map(|c| if c == '_' || c == '/' { ' ' } else { c })
                .collect();
            let reason = classify(None, &text);
            st.message(&msg_key).reasons.add(reason, 1);
        }
    } else if let Some(rest) = message.strip_prefix("bounce msg ") {
        let Some((m, _)) = rest.split_once(" qp ") else {
            return Outcome::Foreign;
        };
        if !is_number(m) {
            return Outcome::Foreign;
        }
        let msg_key = key(host, "qmail msg", m);
        let double = st
            .messages
            .get(&msg_key, st.now)
            .and_then(|msg| msg.sender.as_deref())
            .is_some_and(|s| s.is_empty() || s == "#@[]");
        if double {
            // To the postmaster, not to a sender.
            if let Some(msg) = st.messages.get(&msg_key, st.now) {
                msg.take_reasons();
            }
            return Outcome::Known;
        }
        return Outcome::Bounce(st.bounce(Mta::Qmail, l, &msg_key, m, None, None));
    } else if let Some(m) = message
        .strip_prefix("end msg ")
        .or_else(|| message.strip_prefix("new msg "))
    {
        if !is_number(m) {
            return Outcome::Foreign;
        }
        // Message numbers are inode numbers: reused once a message is gone.
        st.forget(&key(host, "qmail msg", m));
    } else if ["status: ", "warning: ", "alert: ", "triple bounce: "]
        .iter()
        .any(|p| message.starts_with(p))
    {
        return Outcome::Known;
    } else {
        return Outcome::Foreign;
    }
    Outcome::Known
}

/// splogger puts `seconds.fraction ` before each message.
fn strip_splogger_stamp(message: &str) -> &str {
    match message.split_once(' ') {
        Some((stamp, rest))
            if stamp
                .split_once('.')
                .is_some_and(|(s, f)| is_number(s) && is_number(f)) =>
        {
            rest
        }
        _ => message,
    }
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit())
}
