//! Results of a run, for humans ([`Display`]) and machines (`serde`).

use serde::Serialize;
use std::{
    collections::BTreeMap,
    fmt::{self, Display, Formatter},
    time::Duration,
};

/// Latency distribution in microseconds (nearest-rank percentiles).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Number of samples.
    pub count: u64,
    /// Smallest sample.
    pub min_us: f64,
    /// Arithmetic mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest sample.
    pub max_us: f64,
}

impl LatencySummary {
    /// Summarises samples (any order; sorted in place).
    pub fn from_samples(samples: &mut [Duration]) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_unstable();
        let n = samples.len();
        let us = |d: Duration| d.as_nanos() as f64 / 1000.0;
        let pct = |p: f64| {
            // Nearest rank: the smallest sample with at least p of all at or
            // below it.
            let rank = ((p * n as f64).ceil() as usize).clamp(1, n);
            us(samples[rank - 1])
        };
        let total: Duration = samples.iter().sum();
        Self {
            count: n as u64,
            min_us: us(samples[0]),
            mean_us: us(total) / n as f64,
            p50_us: pct(0.50),
            p90_us: pct(0.90),
            p99_us: pct(0.99),
            p999_us: pct(0.999),
            max_us: us(samples[n - 1]),
        }
    }
}

impl Display for LatencySummary {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        if self.count == 0 {
            return f.write_str("no samples");
        }
        let ms = |us: f64| us / 1000.0;
        write!(
            f,
            "p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms \
             (min {:.3} ms, mean {:.3} ms, n={})",
            ms(self.p50_us),
            ms(self.p90_us),
            ms(self.p99_us),
            ms(self.p999_us),
            ms(self.max_us),
            ms(self.min_us),
            ms(self.mean_us),
            self.count
        )
    }
}

/// Result of [`run_load`](crate::run_load).
///
/// Invariant: `completed + failed == transactions`, the sum of `statuses`
/// is `completed`, and the sum of `errors` is `failed`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LoadReport {
    /// The milter measured.
    pub target: String,
    /// Transactions run (warm-up excluded).
    pub transactions: u64,
    /// Transactions that received a final answer.
    pub completed: u64,
    /// Transactions ended by an error (I/O, timeout, protocol).
    pub failed: u64,
    /// Connections that were opened and negotiated.
    pub connections: u64,
    /// Wall-clock time of the measured run.
    pub elapsed_secs: f64,
    /// `completed / elapsed_secs`.
    pub transactions_per_sec: f64,
    /// CPU time the milter's process used during the measured run, when its
    /// pid was given.
    pub target_cpu_secs: Option<f64>,
    /// The same per completed transaction, in microseconds.
    pub target_cpu_us_per_txn: Option<f64>,
    /// Per transaction, from queueing MAIL to the final reply (transactions
    /// decided at connect or helo have none).
    pub latency: LatencySummary,
    /// Per message, as the MTA waits for the milter: `latency`, plus the
    /// connection's setup for a message that opened its connection (with
    /// one message per connection, every message). A milter that answers
    /// HELO pays a round trip in the setup that one doing that work at MAIL
    /// pays in the transaction; this compares them fairly.
    pub message_latency: LatencySummary,
    /// Per connection: TCP connect, negotiation, connect and helo replies.
    pub setup_latency: LatencySummary,
    /// Final status of completed transactions: `continue`, `accept`,
    /// `reject`, `tempfail`, `discard`.
    pub statuses: BTreeMap<String, u64>,
    /// The same, keyed `stage:status` (e.g. `rcpt:reject`, `eom:continue`).
    pub final_stages: BTreeMap<String, u64>,
    /// Custom SMTP replies of final answers (e.g. `550 5.7.1`).
    pub reply_codes: BTreeMap<String, u64>,
    /// Recipients refused one by one (reject or tempfail at RCPT).
    pub rejected_recipients: u64,
    /// End-of-message modification requests by kind (e.g. `add_header`).
    pub modifications: BTreeMap<String, u64>,
    /// Errors, keyed `stage: error`.
    pub errors: BTreeMap<String, u64>,
}

fn write_counts(f: &mut Formatter<'_>, title: &str, map: &BTreeMap<String, u64>) -> fmt::Result {
    if map.is_empty() {
        return Ok(());
    }
    writeln!(f, "{title}:")?;
    for (k, v) in map {
        writeln!(f, "  {k:<40} {v}")?;
    }
    Ok(())
}

impl Display for LoadReport {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        writeln!(f, "target:        {}", self.target)?;
        writeln!(
            f,
            "transactions:  {} ({} completed, {} failed) over {} connections in {:.3} s",
            self.transactions, self.completed, self.failed, self.connections, self.elapsed_secs
        )?;
        writeln!(
            f,
            "throughput:    {:.1} transactions/s",
            self.transactions_per_sec
        )?;
        if let (Some(secs), Some(per)) = (self.target_cpu_secs, self.target_cpu_us_per_txn) {
            writeln!(f, "milter CPU:    {secs:.2} s, {per:.0} µs/transaction")?;
        }
        writeln!(f, "latency:       {}", self.latency)?;
        writeln!(f, "message latency (with setup): {}", self.message_latency)?;
        writeln!(f, "setup latency: {}", self.setup_latency)?;
        if self.rejected_recipients > 0 {
            writeln!(f, "rejected recipients: {}", self.rejected_recipients)?;
        }
        write_counts(f, "statuses", &self.statuses)?;
        write_counts(f, "final stage:status", &self.final_stages)?;
        write_counts(f, "reply codes", &self.reply_codes)?;
        write_counts(f, "modifications", &self.modifications)?;
        write_counts(f, "errors", &self.errors)
    }
}

/// Result of [`run_hold`](crate::run_hold).
#[derive(Clone, Debug, Default, Serialize)]
pub struct HoldReport {
    /// The milter measured.
    pub target: String,
    /// Connections attempted.
    pub attempted: u64,
    /// Connections negotiated and held open at the same time.
    pub established: u64,
    /// Connections the milter decided at connect/helo (closed, not held).
    pub decided_at_setup: u64,
    /// Opening errors, keyed `stage: error`.
    pub open_errors: BTreeMap<String, u64>,
    /// Per connection: TCP connect through the helo reply.
    pub setup_latency: LatencySummary,
    /// How long all established connections were held.
    pub held_secs: f64,
    /// Final status of the one transaction run on each held connection
    /// after the hold (empty if that check was off).
    pub after_hold_statuses: BTreeMap<String, u64>,
    /// Errors of those transactions, keyed `stage: error`.
    pub after_hold_errors: BTreeMap<String, u64>,
    /// Wall-clock time of the whole run.
    pub elapsed_secs: f64,
}

impl Display for HoldReport {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        writeln!(f, "target:        {}", self.target)?;
        writeln!(
            f,
            "connections:   {} attempted, {} established and held {:.1} s, {} decided at setup, {} failed",
            self.attempted,
            self.established,
            self.held_secs,
            self.decided_at_setup,
            self.open_errors.values().sum::<u64>()
        )?;
        writeln!(f, "setup latency: {}", self.setup_latency)?;
        write_counts(f, "open errors", &self.open_errors)?;
        write_counts(f, "after hold: statuses", &self.after_hold_statuses)?;
        write_counts(f, "after hold: errors", &self.after_hold_errors)?;
        writeln!(f, "elapsed:       {:.3} s", self.elapsed_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut samples: Vec<_> = (1..=1000).rev().map(Duration::from_micros).collect();
        let s = LatencySummary::from_samples(&mut samples);
        assert_eq!(s.count, 1000);
        assert_eq!(s.min_us, 1.0);
        assert_eq!(s.p50_us, 500.0);
        assert_eq!(s.p90_us, 900.0);
        assert_eq!(s.p99_us, 990.0);
        assert_eq!(s.p999_us, 999.0);
        assert_eq!(s.max_us, 1000.0);
        assert_eq!(s.mean_us, 500.5);
        assert_eq!(LatencySummary::from_samples(&mut []).count, 0);
    }
}
