//! What the auditor remembers between lines: per queue id, the sender and
//! the reasons its recipients failed, within fixed bounds.

use crate::reason::{Reason, Reasons};
use std::collections::HashMap;

/// Memory bounds of an [`Auditor`](crate::Auditor).
///
/// A message is remembered from its first line (the sender) until the
/// line that ends it (Postfix `removed`, qmail `end msg`). Sendmail logs
/// no such line, and a log may be cut anywhere, so both bounds below also
/// forget messages that never complete. Messages forgotten while they had
/// failed recipients but no bounce yet are counted as
/// [`Report::incomplete`](crate::Report::incomplete).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// At most this many messages (queue ids) remembered at once; when
    /// full, the quarter least recently seen is forgotten. Default
    /// 100 000: about 20 MB, and far more messages than a server has in
    /// flight while it logs.
    pub max_messages: usize,
    /// A message not mentioned for this many lines is forgotten. Default
    /// 5 000 000 lines: days of a busy server's log, which covers Postfix's
    /// default queue lifetime of 5 days only on smaller servers; a message
    /// that expires later than that counts as [`Reason::NotInLog`].
    pub horizon_lines: u64,
    /// At most this many distinct sender domains are counted one by one;
    /// further domains are counted together under `(other domains)`, so
    /// that forged random domains cannot grow the report without bound.
    /// Default 100 000.
    pub max_domains: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_messages: 100_000,
            horizon_lines: 5_000_000,
            max_domains: 100_000,
        }
    }
}

/// Longest sender address kept (RFC 5321's path limit is 256 octets).
pub(crate) const MAX_SENDER: usize = 320;

/// One message in flight.
#[derive(Debug, Default)]
pub(crate) struct Message {
    /// The envelope sender, if its line was seen (`Some("")` for `<>`).
    pub sender: Option<Box<str>>,
    /// Reasons of the recipients that failed since the last bounce.
    pub reasons: Reasons,
    /// Postfix `status=expired`: the rest of the recipients were returned
    /// when the queue lifetime ran out.
    pub expired: bool,
}

impl Message {
    pub(crate) fn set_sender(&mut self, sender: &str) {
        let mut cut = sender.len().min(MAX_SENDER);
        while !sender.is_char_boundary(cut) {
            cut -= 1;
        }
        self.sender = Some(sender[..cut].into());
    }

    /// The reasons, with `expired` counted as one more recipient.
    pub(crate) fn take_reasons(&mut self) -> Reasons {
        let mut reasons = std::mem::take(&mut self.reasons);
        if std::mem::take(&mut self.expired) {
            reasons.add(Reason::Expired, 1);
        }
        reasons
    }

    /// Failed recipients that no bounce has reported yet.
    pub(crate) fn pending(&self) -> bool {
        !self.reasons.is_empty() || self.expired
    }
}

/// A map from key to value that forgets, see [`Limits`].
#[derive(Debug)]
pub(crate) struct Bounded<V> {
    map: HashMap<String, (u64, V)>,
    max: usize,
    horizon: u64,
    next_sweep: u64,
}

/// How often (in lines) entries past the horizon are swept.
const SWEEP_EVERY: u64 = 65_536;

impl<V: Default> Bounded<V> {
    pub(crate) fn new(max: usize, horizon: u64) -> Self {
        Bounded {
            map: HashMap::new(),
            max: max.max(4),
            horizon: horizon.max(1),
            next_sweep: SWEEP_EVERY,
        }
    }

    /// The value for `key`, created if missing; marks it seen at `now`.
    /// Values forgotten to make room go to `forgotten`.
    pub(crate) fn entry(&mut self, key: &str, now: u64, forgotten: impl FnMut(V)) -> &mut V {
        if !self.map.contains_key(key) && self.map.len() >= self.max {
            self.shrink(forgotten);
        }
        let slot = self
            .map
            .entry(key.to_owned())
            .or_insert_with(|| (now, V::default()));
        slot.0 = now;
        &mut slot.1
    }

    /// The value for `key` if there is one; marks it seen.
    pub(crate) fn get(&mut self, key: &str, now: u64) -> Option<&mut V> {
        self.map.get_mut(key).map(|slot| {
            slot.0 = now;
            &mut slot.1
        })
    }

    pub(crate) fn remove(&mut self, key: &str) -> Option<V> {
        self.map.remove(key).map(|(_, v)| v)
    }

    /// Forgets what was not seen within the horizon (checked every
    /// [`SWEEP_EVERY`] lines).
    pub(crate) fn sweep(&mut self, now: u64, mut forgotten: impl FnMut(V)) {
        if now < self.next_sweep {
            return;
        }
        self.next_sweep = now + SWEEP_EVERY;
        let oldest = now.saturating_sub(self.horizon);
        let stale: Vec<String> = self
            .map
            .iter()
            .filter(|(_, (seen, _))| *seen < oldest)
            .map(|(k, _)| k.clone())
            .collect();
        for key in stale {
            if let Some((_, v)) = self.map.remove(&key) {
                forgotten(v);
            }
        }
    }

    /// Forgets the quarter least recently seen: O(n), once per n/4
    /// insertions.
    fn shrink(&mut self, mut forgotten: impl FnMut(V)) {
        let mut seen: Vec<u64> = self.map.values().map(|(s, _)| *s).collect();
        let quarter = seen.len() / 4;
        let (_, &mut cut, _) = seen.select_nth_unstable(quarter);
        let old: Vec<String> = self
            .map
            .iter()
            .filter(|(_, (s, _))| *s <= cut)
            .map(|(k, _)| k.clone())
            .collect();
        for key in old {
            if let Some((_, v)) = self.map.remove(&key) {
                forgotten(v);
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn drain(&mut self) -> impl Iterator<Item = V> + '_ {
        self.map.drain().map(|(_, (_, v))| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_map_never_grows_past_its_bound() {
        let mut m: Bounded<u32> = Bounded::new(100, u64::MAX);
        let mut forgotten = 0;
        for i in 0..10_000u64 {
            *m.entry(&i.to_string(), i, |_| forgotten += 1) += 1;
            assert!(m.len() <= 100);
        }
        assert_eq!(forgotten + m.len(), 10_000);
        // The most recent key survived.
        assert!(m.get("9999", 10_000).is_some());
        assert!(m.get("0", 10_000).is_none());
    }

    #[test]
    fn entries_past_the_horizon_are_swept() {
        let mut m: Bounded<u32> = Bounded::new(1000, 10);
        m.entry("old", 1, |_| {});
        m.entry("new", SWEEP_EVERY - 5, |_| {});
        let mut forgotten = Vec::new();
        m.sweep(SWEEP_EVERY, |v| forgotten.push(v));
        assert_eq!(forgotten.len(), 1);
        assert!(m.get("new", SWEEP_EVERY).is_some());
        assert!(m.get("old", SWEEP_EVERY).is_none());
    }

    #[test]
    fn senders_are_cut_at_a_char_boundary() {
        let mut msg = Message::default();
        msg.set_sender(&"é".repeat(400));
        assert!(msg.sender.as_deref().is_some_and(|s| s.len() <= MAX_SENDER));
    }
}
