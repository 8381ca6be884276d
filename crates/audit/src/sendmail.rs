//! Sendmail's log lines (syslog tag `sendmail` or `sm-mta`; sm_syslog()
//! puts the queue id before each message):
//!
//! ```text
//! QUEUEID: from=<sender>, size=N, class=0, nrcpts=N, msgid=<...>, ...
//! QUEUEID: to=<rcpt>[,<rcpt>...], delay=..., mailer=..., dsn=5.1.1, stat=User unknown
//! QUEUEID: BOUNCEID: DSN: User unknown
//! ```
//!
//! The DSN line is written by `returntosender()` in Sendmail's
//! `savemail.c`: `sm_syslog(LOG_INFO, e->e_id, "%s: %s: %s", ee->e_id, p,
//! msg)` where `p` is `DSN` for a notification to the sender, `return to
//! sender` when the failed message was itself a bounce, `postmaster
//! notify` for the postmaster's copy and `sender notify` for a delay
//! warning; only `DSN` is a bounce to the sender (and `DSN: Return
//! receipt`, a success notice, is not). `msg` is the envelope's first error
//! ("User unknown", "Service unavailable", "Cannot send message for 5
//! days"); the reasons come from the recipients' `dsn=`/`stat=` when their
//! lines are in the log, else from that text. Checked against Sendmail
//! 8.17's savemail.c, and against lines captured from a Sendmail 8.17.1.9
//! run in `tests/fixtures/sendmail-maillog`.

use crate::auditor::{is_queue_id, key, Mta, Outcome, State};
use crate::line::Line;
use crate::postfix::field;
use crate::reason::classify;

pub(crate) fn line(st: &mut State, l: &Line<'_>) -> Outcome {
    let Some((qid, rest)) = l.message.split_once(": ") else {
        return Outcome::Known;
    };
    if !is_queue_id(qid) {
        return Outcome::Known;
    }
    let key = key(l.host, "sendmail", qid);
    if let Some(value) = rest.strip_prefix("from=") {
        let value = value.split(", ").next().unwrap_or(value);
        let sender = value
            .strip_prefix('<')
            .and_then(|v| v.strip_suffix('>'))
            .unwrap_or(value);
        st.message(&key).set_sender(sender);
    } else if let Some(value) = rest.strip_prefix("to=") {
        let Some(dsn) = field(rest, ", dsn=") else {
            return Outcome::Known;
        };
        if dsn.starts_with('5') {
            let stat = rest.split_once(", stat=").map_or("", |(_, s)| s);
            let recipients = value.split(", ").next().unwrap_or(value).split(',').count();
            let recipients = u32::try_from(recipients).unwrap_or(u32::MAX);
            st.message(&key)
                .reasons
                .add(classify(Some(dsn), stat), recipients);
        }
    } else if let Some((bounce_id, tail)) = rest.split_once(": ") {
        if let Some(text) = tail.strip_prefix("DSN: ") {
            if is_queue_id(bounce_id) && text != "Return receipt" {
                let fallback = classify(None, text);
                return Outcome::Bounce(st.bounce(
                    Mta::Sendmail,
                    l,
                    &key,
                    qid,
                    Some(bounce_id),
                    Some(fallback),
                ));
            }
        }
    }
    Outcome::Known
}
