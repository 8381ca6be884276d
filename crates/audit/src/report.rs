//! The counts, as JSON (`--json`) or as tables for people.

use crate::auditor::{Bounce, Mta};
use crate::reason::Reason;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The key of bounces whose sender's line was not in the log.
pub const UNKNOWN_SENDER: &str = "(unknown)";
/// The key of bounces to a sender without a domain (`root`).
pub const NO_DOMAIN: &str = "(no domain)";
/// The key of sender domains beyond [`Limits::max_domains`](crate::Limits).
pub const OTHER_DOMAINS: &str = "(other domains)";
/// The day of bounces whose line had no time stamp (bare qmail lines).
pub const UNKNOWN_DAY: &str = "unknown";

/// Bounces of one day.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DayCounts {
    /// Bounces generated that day.
    pub bounces: u64,
    /// Of which nobounce would have refused at RCPT TO.
    pub preventable: u64,
}

/// What `nobounce audit` reports; `--json` prints it as one object with
/// these keys.
///
/// Every bounce is counted once in `bounces`, once in `by_reason`, once in
/// `by_sender_domain`, once in `by_day` and once in `by_mta`, so each of
/// those adds up to `bounces`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Bounces (non-delivery notifications to the sender) the server
    /// generated.
    pub bounces: u64,
    /// Of which nobounce would have refused at RCPT TO: every failed
    /// recipient behind the bounce had a [preventable](Reason::preventable)
    /// reason.
    pub preventable: u64,
    /// Bounces per reason: a bounce whose recipients failed for different
    /// reasons counts under the first one nobounce could not have
    /// prevented, else under the first (in [`Reason`] order).
    pub by_reason: BTreeMap<Reason, u64>,
    /// Bounces per original sender's domain (lower case), i.e. per domain
    /// the bounces went to; [`UNKNOWN_SENDER`], [`NO_DOMAIN`] and
    /// [`OTHER_DOMAINS`] for the rest.
    pub by_sender_domain: BTreeMap<String, u64>,
    /// Bounces per day (`YYYY-MM-DD` as the log wrote it, or
    /// [`UNKNOWN_DAY`]).
    pub by_day: BTreeMap<String, DayCounts>,
    /// Bounces per MTA.
    pub by_mta: BTreeMap<Mta, u64>,
    /// The failed recipients behind the bounces, per reason (a bounce may
    /// stand for several).
    pub recipients_by_reason: BTreeMap<Reason, u64>,
    /// The reasons counted as preventable.
    pub preventable_reasons: Vec<Reason>,
    /// Messages with failed recipients whose bounce is not in these logs
    /// (the log ends first, the sender asked for no notice, or the memory
    /// bounds forgot them).
    pub incomplete: u64,
    /// Lines read.
    pub lines: u64,
    /// Lines that are not log lines at all (no time stamp and tag, not
    /// qmail-send's, or longer than [`MAX_LINE`](crate::MAX_LINE)).
    pub unparsable_lines: u64,
}

impl Default for Report {
    fn default() -> Self {
        Report {
            bounces: 0,
            preventable: 0,
            by_reason: BTreeMap::new(),
            by_sender_domain: BTreeMap::new(),
            by_day: BTreeMap::new(),
            by_mta: BTreeMap::new(),
            recipients_by_reason: BTreeMap::new(),
            preventable_reasons: Reason::PREVENTABLE.to_vec(),
            incomplete: 0,
            lines: 0,
            unparsable_lines: 0,
        }
    }
}

/// Sender domains listed in the table; the JSON has all of them.
const TABLE_DOMAINS: usize = 20;

impl Report {
    /// Counts one bounce.
    pub fn add(&mut self, b: &Bounce, max_domains: usize) {
        self.bounces += 1;
        let preventable = u64::from(b.preventable);
        self.preventable += preventable;
        *self.by_reason.entry(b.reason).or_default() += 1;
        for &(reason, n) in &b.recipients {
            *self.recipients_by_reason.entry(reason).or_default() += u64::from(n);
        }
        let domain = match (&b.sender, b.sender_domain()) {
            (None, _) => UNKNOWN_SENDER.to_owned(),
            (Some(_), None) => NO_DOMAIN.to_owned(),
            (Some(_), Some(d)) => d,
        };
        let domain = if self.by_sender_domain.contains_key(&domain)
            || self.by_sender_domain.len() < max_domains
        {
            domain
        } else {
            OTHER_DOMAINS.to_owned()
        };
        *self.by_sender_domain.entry(domain).or_default() += 1;
        let day = b
            .day
            .map_or_else(|| UNKNOWN_DAY.to_owned(), |d| d.to_string());
        let counts = self.by_day.entry(day).or_default();
        counts.bounces += 1;
        counts.preventable += preventable;
        *self.by_mta.entry(b.mta).or_default() += 1;
    }

    /// The report as one pretty-printed JSON object.
    pub fn to_json(&self) -> String {
        // Every key is a string and every value a number or a list of
        // strings: serialization cannot fail.
        serde_json::to_string_pretty(self).expect("a report is always valid JSON")
    }

    /// The report as tables for people.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let pct = |n: u64| {
            (n * 100 + self.bounces / 2)
                .checked_div(self.bounces)
                .unwrap_or(0)
        };
        let _ = writeln!(out, "Bounces the server generated:    {:>8}", self.bounces);
        let _ = writeln!(
            out,
            "  nobounce would have refused:  {:>8}  ({}%, refused at RCPT TO instead)",
            self.preventable,
            pct(self.preventable)
        );
        let _ = writeln!(
            out,
            "  not preventable at SMTP time: {:>8}",
            self.bounces - self.preventable
        );

        if !self.by_reason.is_empty() {
            let _ = writeln!(out, "\n{:<30} {:>8}  preventable", "reason", "bounces");
            for (reason, n) in &self.by_reason {
                let yes = if reason.preventable() { "yes" } else { "no" };
                let _ = writeln!(out, "{:<30} {:>8}  {yes}", reason.label(), n);
            }
        }

        if !self.by_sender_domain.is_empty() {
            let mut domains: Vec<(&String, &u64)> = self.by_sender_domain.iter().collect();
            domains.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            let _ = writeln!(out, "\n{:<30} {:>8}", "sender domain", "bounces");
            for (domain, n) in domains.iter().take(TABLE_DOMAINS) {
                let _ = writeln!(out, "{:<30} {:>8}", domain, n);
            }
            if domains.len() > TABLE_DOMAINS {
                let rest: u64 = domains[TABLE_DOMAINS..].iter().map(|(_, n)| **n).sum();
                let _ = writeln!(
                    out,
                    "{:<30} {:>8}",
                    format!("({} more domains)", domains.len() - TABLE_DOMAINS),
                    rest
                );
            }
        }

        if !self.by_day.is_empty() {
            let _ = writeln!(
                out,
                "\n{:<30} {:>8} {:>12}",
                "day", "bounces", "preventable"
            );
            for (day, c) in &self.by_day {
                let _ = writeln!(out, "{:<30} {:>8} {:>12}", day, c.bounces, c.preventable);
            }
        }

        let labels: Vec<&str> = self.preventable_reasons.iter().map(|r| r.label()).collect();
        out.push('\n');
        wrap(
            &mut out,
            &format!(
                "Preventable: {}. nobounce asks its recipient backends at RCPT TO and \
                 refuses these there (550 5.1.1, 452 4.2.2 or 552 5.2.2, 550 5.2.1), so \
                 the sending server tells its user and nothing bounces. It is an upper \
                 bound: a mailbox that fills up between RCPT TO and delivery still bounces.",
                labels.join(", ")
            ),
        );
        wrap(
            &mut out,
            &format!(
                "Read {} lines ({} unparsable); {} messages with failed recipients have no \
                 bounce in these logs.",
                self.lines, self.unparsable_lines, self.incomplete
            ),
        );
        out
    }
}

/// Width of the table's paragraphs.
const WIDTH: usize = 76;

/// Appends `text` as lines of at most [`WIDTH`] characters (longer words
/// stay whole).
fn wrap(out: &mut String, text: &str) {
    let mut column = 0;
    for word in text.split_whitespace() {
        let len = word.chars().count();
        if column > 0 && column + 1 + len > WIDTH {
            out.push('\n');
            column = 0;
        }
        if column > 0 {
            out.push(' ');
            column += 1;
        }
        out.push_str(word);
        column += len;
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::line::Day;

    fn bounce(sender: Option<&str>, reason: Reason) -> Bounce {
        Bounce {
            mta: Mta::Postfix,
            day: Some(Day::from_unix(0)),
            host: "mx".into(),
            queue_id: "ABCDE".into(),
            bounce_id: None,
            sender: sender.map(str::to_owned),
            reason,
            recipients: vec![(reason, 1)],
            preventable: reason.preventable(),
        }
    }

    #[test]
    fn every_breakdown_adds_up_to_the_bounces() {
        let mut r = Report::default();
        r.add(&bounce(Some("a@X.test"), Reason::UnknownUser), 2);
        r.add(&bounce(Some("b@x.test"), Reason::OverQuota), 2);
        r.add(&bounce(Some("c@y.test"), Reason::RelayRefused), 2);
        r.add(&bounce(Some("d@z.test"), Reason::Other), 2);
        r.add(&bounce(Some("root"), Reason::Other), 2);
        r.add(&bounce(None, Reason::NotInLog), 2);
        assert_eq!(r.bounces, 6);
        assert_eq!(r.preventable, 2);
        assert_eq!(r.by_sender_domain["x.test"], 2);
        assert_eq!(r.by_sender_domain[OTHER_DOMAINS], 3);
        assert_eq!(r.by_sender_domain.values().sum::<u64>(), 6);
        assert_eq!(r.by_reason.values().sum::<u64>(), 6);
        assert_eq!(r.by_day["1970-01-01"].bounces, 6);
        assert_eq!(r.by_mta[&Mta::Postfix], 6);
    }

    #[test]
    fn json_has_the_fixed_keys() {
        let mut r = Report::default();
        r.add(&bounce(Some("a@x.test"), Reason::UnknownUser), 10);
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).expect("JSON");
        assert_eq!(v["bounces"], 1);
        assert_eq!(v["by_reason"]["unknown_user"], 1);
        assert_eq!(v["by_sender_domain"]["x.test"], 1);
        assert_eq!(v["by_day"]["1970-01-01"]["preventable"], 1);
        assert_eq!(v["by_mta"]["postfix"], 1);
        assert_eq!(
            v["preventable_reasons"],
            serde_json::json!(["unknown_user", "over_quota", "mailbox_disabled"])
        );
    }

    #[test]
    fn the_table_names_reasons_domains_and_days() {
        let mut r = Report::default();
        for i in 0..25 {
            r.add(
                &bounce(Some(&format!("s@d{i}.test")), Reason::UnknownUser),
                100,
            );
        }
        let t = r.to_table();
        assert!(t.contains("unknown user"), "{t}");
        assert!(t.contains("(5 more domains)"), "{t}");
        assert!(t.contains("1970-01-01"), "{t}");
        assert!(t.contains("(100%"), "{t}");
        assert!(Report::default().to_table().contains("(0%"));
        assert!(t.lines().all(|l| l.chars().count() <= WIDTH), "{t}");
    }
}
