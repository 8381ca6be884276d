//! Recipient policy: map what the directory says of a recipient to a verdict
//! at RCPT TO, so that "user unknown" and "mailbox full" become SMTP
//! rejections instead of bounces.

use crate::{
    directory::{DirectoryError, RecipientStatus},
    reply::Reply,
    verdict::{Policy, Reason, Verdict},
};
use serde::Serialize;

/// How to refuse a recipient whose mailbox is over quota.
#[derive(Clone, Copy, Debug, Default, Eq, Hash, PartialEq, Serialize)]
pub enum QuotaReply {
    /// `452 4.2.2`: temporary; the sender retries and may get through once
    /// the owner has made room. The default.
    #[default]
    #[serde(rename = "452")]
    Temporary,
    /// `552 5.2.2`: permanent; the sender's MTA tells its user at once.
    #[serde(rename = "552")]
    Permanent,
}

/// Recipient policy settings (`[recipients]` in the config file).
#[derive(Clone, Debug, Eq, PartialEq, Serialize)]
pub struct RecipientPolicy {
    /// Reply for a full mailbox: `"452"` (default) or `"552"`.
    pub over_quota: QuotaReply,
    /// Text for an unknown recipient. Fixed, so it tells nothing beyond
    /// "this one address does not exist". Default: `"No such user here"`.
    pub unknown_text: String,
    /// Text for a full mailbox. Default: `"Mailbox full"`.
    pub over_quota_text: String,
    /// Text for a disabled mailbox or retired alias.
    /// Default: `"Mailbox disabled, not accepting messages"`.
    pub disabled_text: String,
}

impl Default for RecipientPolicy {
    fn default() -> Self {
        Self {
            over_quota: QuotaReply::Temporary,
            unknown_text: "No such user here".into(),
            over_quota_text: "Mailbox full".into(),
            disabled_text: "Mailbox disabled, not accepting messages".into(),
        }
    }
}

/// What became of one recipient, beyond the verdict: the dictionary-attack
/// policy counts unknown recipients.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum RecipientFinding {
    /// Accepted or not ours to judge.
    Fine,
    /// No such user.
    Unknown,
    /// Full or disabled mailbox.
    Refused,
    /// The directory failed.
    Error,
}

/// Maps a directory answer for `address` to a verdict.
///
/// ```
/// use nobounce_core::{recipient::{decide, RecipientPolicy}, RecipientStatus};
///
/// let (v, _) = decide(&RecipientPolicy::default(), "joe@example.org", Ok(RecipientStatus::Unknown));
/// assert_eq!(v.reply().unwrap().to_string(), "550 5.1.1 No such user here");
/// ```
pub fn decide(
    policy: &RecipientPolicy,
    address: &str,
    answer: Result<RecipientStatus, DirectoryError>,
) -> (Verdict, RecipientFinding) {
    let refuse = |code, status, text: &str, detail: String, finding| {
        let reply = Reply::new(code, status, text).expect("fixed codes of matching class");
        (
            Verdict::refuse(reply, Reason::new(Policy::Recipient, detail)),
            finding,
        )
    };
    match answer {
        Ok(RecipientStatus::Deliverable | RecipientStatus::NotHandled) => {
            (Verdict::Continue, RecipientFinding::Fine)
        }
        Ok(RecipientStatus::Unknown) => refuse(
            550,
            "5.1.1",
            &policy.unknown_text,
            format!("{address}: unknown user"),
            RecipientFinding::Unknown,
        ),
        Ok(RecipientStatus::OverQuota { room_left }) => {
            let (code, status) = match policy.over_quota {
                QuotaReply::Temporary => (452, "4.2.2"),
                QuotaReply::Permanent => (552, "5.2.2"),
            };
            let room = room_left.map_or_else(|| "unknown".to_string(), |r| format!("{r} bytes"));
            refuse(
                code,
                status,
                &policy.over_quota_text,
                format!("{address}: over quota, room left {room}"),
                RecipientFinding::Refused,
            )
        }
        Ok(RecipientStatus::Disabled) => refuse(
            550,
            "5.2.1",
            &policy.disabled_text,
            format!("{address}: mailbox disabled"),
            RecipientFinding::Refused,
        ),
        Err(e) => {
            let reply = Reply::new(
                451,
                "4.4.3",
                "Recipient lookup failed temporarily, try again later",
            )
            .expect("fixed codes of matching class");
            (
                Verdict::Tempfail {
                    reply,
                    reason: Reason::new(
                        Policy::Internal,
                        format!("{address}: directory error: {e}"),
                    ),
                },
                RecipientFinding::Error,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply_of(
        policy: &RecipientPolicy,
        a: Result<RecipientStatus, DirectoryError>,
    ) -> Option<String> {
        decide(policy, "x@example.org", a)
            .0
            .reply()
            .map(|r| r.to_string())
    }

    #[test]
    fn default_mapping_table() {
        let p = RecipientPolicy::default();
        assert_eq!(reply_of(&p, Ok(RecipientStatus::Deliverable)), None);
        assert_eq!(reply_of(&p, Ok(RecipientStatus::NotHandled)), None);
        assert_eq!(
            reply_of(&p, Ok(RecipientStatus::Unknown)).as_deref(),
            Some("550 5.1.1 No such user here")
        );
        assert_eq!(
            reply_of(
                &p,
                Ok(RecipientStatus::OverQuota {
                    room_left: Some(10)
                })
            )
            .as_deref(),
            Some("452 4.2.2 Mailbox full")
        );
        assert_eq!(
            reply_of(&p, Ok(RecipientStatus::Disabled)).as_deref(),
            Some("550 5.2.1 Mailbox disabled, not accepting messages")
        );
        let e = reply_of(&p, Err(DirectoryError::new("connection refused"))).unwrap();
        assert!(e.starts_with("451 4.4.3 "), "{e}");
    }

    #[test]
    fn permanent_quota_reply_is_selectable() {
        let p = RecipientPolicy {
            over_quota: QuotaReply::Permanent,
            ..Default::default()
        };
        assert_eq!(
            reply_of(&p, Ok(RecipientStatus::OverQuota { room_left: None })).as_deref(),
            Some("552 5.2.2 Mailbox full")
        );
    }

    #[test]
    fn unknown_text_does_not_echo_the_address() {
        let (v, f) = decide(
            &RecipientPolicy::default(),
            "secret@example.org",
            Ok(RecipientStatus::Unknown),
        );
        assert_eq!(f, RecipientFinding::Unknown);
        assert!(!v.reply().unwrap().text().contains("secret"));
    }
}
