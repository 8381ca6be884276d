//! The mapping of a server's reply about a recipient (RCPT in SMTP/LMTP,
//! or a numeric policy action) to a [`RecipientStatus`]. Replies are read
//! with nobounce-core's [`ReplyParser`](nobounce_core::smtp_reply::ReplyParser).

use nobounce_core::{smtp_reply::truncate, DirectoryError, EnhancedStatus, RecipientStatus};

/// Maps a reply to a recipient (RCPT in SMTP/LMTP, or a numeric policy
/// action) to a status:
///
/// | reply | status |
/// | --- | --- |
/// | 2xx | `Deliverable` |
/// | any `x.2.2` (mailbox full), `552` without enhanced code or with `5.2.x` other than 5.2.1 | `OverQuota { room_left: None }` |
/// | `5.2.1` (mailbox disabled) | `Disabled` |
/// | `550`/`551`/`553` with `5.1.x` or no enhanced code | `Unknown` |
/// | `421`, other 4xx, other 5xx | `Err` (a temporary failure at SMTP time) |
///
/// Unexpected permanent replies (a `554 5.7.1` policy refusal, `552 5.3.4`
/// message too big for the system) are errors rather than `Unknown`: they do
/// not say the recipient does not exist, and a temporary failure is the
/// answer that never loses mail.
pub(crate) fn classify(
    code: u16,
    enhanced: Option<EnhancedStatus>,
    text: &str,
) -> Result<RecipientStatus, DirectoryError> {
    let sub = enhanced.map(|e| (e.subject(), e.detail()));
    match (code / 100, sub) {
        (2, _) => return Ok(RecipientStatus::Deliverable),
        (4 | 5, Some((2, 2))) => return Ok(RecipientStatus::OverQuota { room_left: None }),
        (5, Some((2, 1))) => return Ok(RecipientStatus::Disabled),
        _ => {}
    }
    match (code, sub) {
        (552, None | Some((2, _))) => Ok(RecipientStatus::OverQuota { room_left: None }),
        (550 | 551 | 553, None | Some((1, _))) => Ok(RecipientStatus::Unknown),
        _ => Err(DirectoryError::new(format!(
            "unexpected reply {code}{}{} {}",
            if enhanced.is_some() { " " } else { "" },
            enhanced.map(|e| e.to_string()).unwrap_or_default(),
            truncate(text.trim())
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nobounce_core::smtp_reply::ReplyParser;

    /// The mapping table of the RCPT reply to a recipient status.
    #[test]
    fn rcpt_reply_mapping() {
        use RecipientStatus::*;
        let over = OverQuota { room_left: None };
        for (line, want) in [
            ("250 2.1.5 OK", Some(Deliverable)),
            ("250 OK", Some(Deliverable)),
            ("251 2.1.5 will forward", Some(Deliverable)),
            (
                "550 5.1.1 <x@example.org> User doesn't exist: x@example.org",
                Some(Unknown),
            ),
            ("550 No such user here", Some(Unknown)),
            ("551 5.1.6 User not local", Some(Unknown)),
            ("553 5.1.3 bad address syntax", Some(Unknown)),
            (
                "552 5.2.2 <x@example.org> Quota exceeded (mailbox for user is full)",
                Some(over.clone()),
            ),
            (
                "452 4.2.2 <x@example.org> Quota exceeded (mailbox for user is full)",
                Some(over.clone()),
            ),
            ("554 5.2.2 Quota exceeded", Some(over.clone())),
            (
                "552 Requested mail action aborted: exceeded storage allocation",
                Some(over.clone()),
            ),
            ("550 5.2.1 Mailbox disabled", Some(Disabled)),
            ("450 4.2.1 Mailbox temporarily disabled", None),
            ("452 4.3.1 Insufficient system storage", None),
            ("452 Too many recipients", None),
            ("451 4.3.0 Temporary internal failure", None),
            ("421 4.3.2 Shutting down", None),
            ("450 4.1.1 user lookup failed", None),
            ("550 5.7.1 Relaying denied", None),
            ("552 5.3.4 Message too big for system", None),
            ("554 Transaction failed", None),
        ] {
            let reply = ReplyParser::default()
                .push(line)
                .expect("valid line")
                .expect("one line");
            let got = classify(reply.code, reply.status, reply.first_line());
            match want {
                Some(status) => assert_eq!(got.expect(line), status, "{line}"),
                None => assert!(got.is_err(), "{line} must be an error, got {got:?}"),
            }
        }
    }
}
