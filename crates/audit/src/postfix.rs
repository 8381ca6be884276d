//! Postfix's log lines (checked against Postfix 3.7's `qmgr`, `smtp` and
//! `bounce` daemons, and against the captured log in
//! `tests/fixtures/postfix-maillog`):
//!
//! ```text
//! QUEUEID: from=<sender>, size=N, nrcpt=N (queue active)           qmgr
//! QUEUEID: to=<rcpt>, relay=..., dsn=5.1.1, status=bounced (text)  smtp, lmtp, local, virtual, error, qmgr
//! QUEUEID: from=<sender>, status=expired, returned to sender      qmgr
//! QUEUEID: sender non-delivery notification: BOUNCEID             bounce
//! QUEUEID: removed                                                 qmgr
//! ```
//!
//! One notification per message, however many of its recipients failed
//! (bounce_notify_service.c logs it once per bounce it sends). Postmaster
//! copies and double bounces ("postmaster non-delivery notification"),
//! delay warnings ("sender delay notification") and success notices
//! ("sender delivery status notification") are not bounces to a sender and
//! are not counted.

use crate::auditor::{is_queue_id, key, Mta, Outcome, State};
use crate::line::Line;
use crate::reason::classify;

pub(crate) fn line(st: &mut State, l: &Line<'_>, instance: &str) -> Outcome {
    let Some((qid, rest)) = l.message.split_once(": ") else {
        return Outcome::Known;
    };
    if !is_queue_id(qid) {
        return Outcome::Known;
    }
    let key = key(l.host, instance, qid);
    if let Some(after) = rest.strip_prefix("from=<") {
        let Some((sender, tail)) = after.split_once(">, ").or_else(|| after.split_once('>')) else {
            return Outcome::Known;
        };
        let m = st.message(&key);
        m.set_sender(sender);
        if tail.contains("status=expired") {
            m.expired = true;
        }
    } else if rest.starts_with("to=<") {
        if let Some((_, text)) = rest.split_once(", status=bounced") {
            let text = text.trim_start();
            let text = text
                .strip_prefix('(')
                .and_then(|t| t.strip_suffix(')'))
                .unwrap_or(text);
            let reason = classify(field(rest, ", dsn="), text);
            st.message(&key).reasons.add(reason, 1);
        }
    } else if let Some(bounce_id) = rest.strip_prefix("sender non-delivery notification: ") {
        let bounce_id = bounce_id.trim();
        if is_queue_id(bounce_id) {
            return Outcome::Bounce(st.bounce(Mta::Postfix, l, &key, qid, Some(bounce_id), None));
        }
    } else if rest == "removed" {
        st.forget(&key);
    }
    Outcome::Known
}

/// The value of `, name=value,` in a Postfix or Sendmail line.
pub(crate) fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let (_, after) = line.split_once(name)?;
    Some(after.split(',').next().unwrap_or(after).trim())
}
