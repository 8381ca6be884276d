//! The two measurements: a transaction load ([`run_load`]) and many idle
//! concurrent connections ([`run_hold`]).

use crate::{
    report::{HoldReport, LatencySummary, LoadReport},
    session::{Final, MtaSession, Opened, Stage, StageError, TxnOutcome},
    target::Target,
    workload::{Generator, Workload},
};
use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};
use tokio::{sync::Semaphore, task::JoinSet};
use tracing::debug;

/// Parameters of [`run_load`].
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// The milter to measure.
    pub target: Target,
    /// Connections working in parallel. Default 8.
    pub concurrency: usize,
    /// Transactions to measure. Default 10,000.
    pub transactions: u64,
    /// Transactions per connection before it is closed and a new one opened.
    /// Default 1.
    pub messages_per_connection: u64,
    /// Transactions run before the measurement and not counted. Default 0.
    pub warmup: u64,
    /// Limit for connecting and for each read or write. Default 10 s.
    pub timeout: Duration,
    /// What to send.
    pub workload: Workload,
    /// The milter's process, whose CPU time the report gives per
    /// transaction (Linux `/proc`). Default none.
    pub target_pid: Option<u32>,
}

impl LoadConfig {
    /// Default parameters against `target`.
    pub fn new(target: Target) -> Self {
        Self {
            target,
            concurrency: 8,
            transactions: 10_000,
            messages_per_connection: 1,
            warmup: 0,
            timeout: Duration::from_secs(10),
            workload: Workload::default(),
            target_pid: None,
        }
    }
}

/// The CPU time (user + system, all threads) process `pid` has used so
/// far, from `/proc/PID/stat`.
pub fn process_cpu(pid: u32) -> Option<Duration> {
    // /proc counts in USER_HZ ticks, 100 per second on every Linux ABI.
    const USER_HZ: u64 = 100;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields start after its ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 1000 / USER_HZ))
}

/// Counts of one worker, merged at the end.
#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    /// Per message, with the setup of the connection it opened (if any).
    message: Vec<Duration>,
    setup: Vec<Duration>,
    connections: u64,
    completed: u64,
    failed: u64,
    statuses: BTreeMap<String, u64>,
    final_stages: BTreeMap<String, u64>,
    reply_codes: BTreeMap<String, u64>,
    rejected_recipients: u64,
    modifications: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
}

fn bump(map: &mut BTreeMap<String, u64>, key: String, by: u64) {
    *map.entry(key).or_default() += by;
}

fn merge(into: &mut BTreeMap<String, u64>, from: BTreeMap<String, u64>) {
    for (k, v) in from {
        bump(into, k, v);
    }
}

impl Tally {
    fn record_final(&mut self, stage: Stage, f: &Final) {
        self.completed += 1;
        bump(&mut self.statuses, f.status.to_string(), 1);
        bump(&mut self.final_stages, format!("{stage}:{}", f.status), 1);
        if let Some(code) = &f.code {
            bump(&mut self.reply_codes, code.clone(), 1);
        }
    }

    fn record_outcome(&mut self, outcome: &TxnOutcome) {
        self.record_final(outcome.stage, &outcome.result);
        self.rejected_recipients += u64::from(outcome.rcpt_rejected);
        for m in &outcome.modifications {
            bump(&mut self.modifications, (*m).to_owned(), 1);
        }
    }

    fn record_error(&mut self, e: &StageError) {
        self.failed += 1;
        bump(&mut self.errors, e.to_string(), 1);
    }

    fn merge(&mut self, other: Tally) {
        self.latencies.extend(other.latencies);
        self.message.extend(other.message);
        self.setup.extend(other.setup);
        self.connections += other.connections;
        self.completed += other.completed;
        self.failed += other.failed;
        merge(&mut self.statuses, other.statuses);
        merge(&mut self.final_stages, other.final_stages);
        merge(&mut self.reply_codes, other.reply_codes);
        self.rejected_recipients += other.rejected_recipients;
        merge(&mut self.modifications, other.modifications);
        merge(&mut self.errors, other.errors);
    }
}

struct Shared {
    config: LoadConfig,
    generator: Generator,
    /// Transactions of this phase are `base + 0..count`.
    base: u64,
    count: u64,
    /// Next batch of `messages_per_connection` transactions to claim.
    next_batch: AtomicU64,
    next_conn: AtomicU64,
}

/// Opens a connection for the next transaction. `None` when the opening
/// itself decided that transaction (final answer at connect/helo, or an
/// error), which is then recorded.
async fn open(shared: &Shared, tally: &mut Tally) -> Option<MtaSession> {
    let cfg = &shared.config;
    let c = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    let plan = shared.generator.connection(shared.base + c);
    let t0 = Instant::now();
    match MtaSession::open(&cfg.target, cfg.timeout, shared.generator.workload(), &plan).await {
        Ok(Opened::Ready(s)) => {
            tally.setup.push(t0.elapsed());
            tally.connections += 1;
            Some(s)
        }
        Ok(Opened::Decided(stage, f)) => {
            // The milter answered for the whole connection: that answer is
            // this transaction's outcome.
            tally.setup.push(t0.elapsed());
            tally.connections += 1;
            tally.record_final(stage, &f);
            None
        }
        Err(e) => {
            debug!(error = %e, "opening milter connection failed");
            tally.record_error(&e);
            None
        }
    }
}

/// Claims batches of `messages_per_connection` transactions and runs each
/// batch on one connection (a new one after an error or a connection-level
/// answer), until all transactions are claimed.
async fn worker(shared: Arc<Shared>) -> Tally {
    let per_conn = shared.config.messages_per_connection.max(1);
    let workload = shared.generator.workload();
    let mut tally = Tally::default();

    loop {
        let batch = shared.next_batch.fetch_add(1, Ordering::Relaxed);
        let first = batch.saturating_mul(per_conn);
        if first >= shared.count {
            break;
        }
        let last = first.saturating_add(per_conn).min(shared.count);
        let mut current: Option<MtaSession> = None;
        for i in first..last {
            // A message that opens its connection waits for the setup too.
            let mut started = None;
            let mut session = match current.take() {
                Some(s) => s,
                None => {
                    started = Some(Instant::now());
                    match open(&shared, &mut tally).await {
                        Some(s) => s,
                        None => continue,
                    }
                }
            };
            let plan = shared.generator.transaction(shared.base + i);
            let t0 = Instant::now();
            match session.transaction(workload, &plan).await {
                Ok(outcome) => {
                    tally.latencies.push(t0.elapsed());
                    tally.message.push(started.unwrap_or(t0).elapsed());
                    tally.record_outcome(&outcome);
                    current = Some(session);
                }
                Err(e) => {
                    debug!(error = %e, "milter transaction failed");
                    tally.record_error(&e);
                    // The connection is in an unknown state: drop it.
                }
            }
        }
        if let Some(s) = current {
            s.close().await;
        }
    }
    tally
}

async fn run_phase(config: &LoadConfig, base: u64, count: u64) -> (Tally, Duration) {
    let shared = Arc::new(Shared {
        config: config.clone(),
        generator: Generator::new(config.workload.clone()),
        base,
        count,
        next_batch: AtomicU64::new(0),
        next_conn: AtomicU64::new(0),
    });
    let start = Instant::now();
    let mut set = JoinSet::new();
    let batches = count.div_ceil(config.messages_per_connection.max(1));
    let workers = config.concurrency.max(1).min(batches.max(1) as usize);
    for _ in 0..workers {
        set.spawn(worker(Arc::clone(&shared)));
    }
    let mut total = Tally::default();
    while let Some(res) = set.join_next().await {
        total.merge(res.expect("load worker does not panic"));
    }
    (total, start.elapsed())
}

/// Warm-up transactions use their own index range, so the measured
/// transactions `0..transactions` carry the same data with or without one.
const WARMUP_BASE: u64 = 1 << 62;

/// Runs `config.transactions` mail transactions against the milter with
/// `config.concurrency` connections in parallel and reports throughput,
/// latency and the milter's answers.
///
/// Failures of single transactions are counted in the report, not returned:
/// a load run always completes (bounded by `transactions` and `timeout`).
pub async fn run_load(config: &LoadConfig) -> LoadReport {
    if config.warmup > 0 {
        let (warm, _) = run_phase(config, WARMUP_BASE, config.warmup).await;
        debug!(
            completed = warm.completed,
            failed = warm.failed,
            "warm-up done"
        );
    }
    let cpu_before = config.target_pid.and_then(process_cpu);
    let (mut t, elapsed) = run_phase(config, 0, config.transactions).await;
    let cpu = config
        .target_pid
        .and_then(process_cpu)
        .zip(cpu_before)
        .map(|(after, before)| after.saturating_sub(before));
    let secs = elapsed.as_secs_f64();
    LoadReport {
        target_cpu_secs: cpu.map(|c| c.as_secs_f64()),
        target_cpu_us_per_txn: cpu
            .filter(|_| t.completed > 0)
            .map(|c| c.as_secs_f64() * 1e6 / t.completed as f64),
        target: config.target.to_string(),
        transactions: config.transactions,
        completed: t.completed,
        failed: t.failed,
        connections: t.connections,
        elapsed_secs: secs,
        transactions_per_sec: if secs > 0.0 {
            t.completed as f64 / secs
        } else {
            0.0
        },
        latency: LatencySummary::from_samples(&mut t.latencies),
        message_latency: LatencySummary::from_samples(&mut t.message),
        setup_latency: LatencySummary::from_samples(&mut t.setup),
        statuses: t.statuses,
        final_stages: t.final_stages,
        reply_codes: t.reply_codes,
        rejected_recipients: t.rejected_recipients,
        modifications: t.modifications,
        errors: t.errors,
    }
}

/// Parameters of [`run_hold`].
#[derive(Clone, Debug)]
pub struct HoldConfig {
    /// The milter to measure.
    pub target: Target,
    /// Connections to open and hold at the same time. Default 1000.
    pub connections: u64,
    /// How long to hold them once all are open. Default 5 s.
    pub hold: Duration,
    /// Connections being opened at the same time. Default 64.
    pub open_concurrency: usize,
    /// Limit for connecting and for each read or write. Default 10 s.
    pub timeout: Duration,
    /// After the hold, run one transaction on every held connection.
    /// Default true.
    pub check_after_hold: bool,
    /// What to send.
    pub workload: Workload,
}

impl HoldConfig {
    /// Default parameters against `target`.
    pub fn new(target: Target) -> Self {
        Self {
            target,
            connections: 1000,
            hold: Duration::from_secs(5),
            open_concurrency: 64,
            timeout: Duration::from_secs(10),
            check_after_hold: true,
            workload: Workload::default(),
        }
    }
}

/// Opens `config.connections` milter connections (negotiate, connect,
/// helo), holds all of them open for `config.hold`, then (optionally) runs
/// one transaction on each, and reports what failed where.
pub async fn run_hold(config: &HoldConfig) -> HoldReport {
    let start = Instant::now();
    let generator = Arc::new(Generator::new(config.workload.clone()));
    let permits = Arc::new(Semaphore::new(config.open_concurrency.max(1)));
    let mut report = HoldReport {
        target: config.target.to_string(),
        attempted: config.connections,
        ..HoldReport::default()
    };

    let mut opening = JoinSet::new();
    for c in 0..config.connections {
        let (generator, permits) = (Arc::clone(&generator), Arc::clone(&permits));
        let (target, timeout) = (config.target.clone(), config.timeout);
        opening.spawn(async move {
            let _permit = permits.acquire_owned().await.expect("semaphore not closed");
            let plan = generator.connection(c);
            let t0 = Instant::now();
            let res = MtaSession::open(&target, timeout, generator.workload(), &plan).await;
            (c, res, t0.elapsed())
        });
    }
    let mut held = Vec::new();
    let mut setup = Vec::new();
    while let Some(res) = opening.join_next().await {
        let (c, res, took) = res.expect("opening task does not panic");
        match res {
            Ok(Opened::Ready(s)) => {
                setup.push(took);
                held.push((c, s));
            }
            Ok(Opened::Decided(..)) => {
                setup.push(took);
                report.decided_at_setup += 1;
            }
            Err(e) => bump(&mut report.open_errors, e.to_string(), 1),
        }
    }
    report.established = held.len() as u64;
    report.setup_latency = LatencySummary::from_samples(&mut setup);

    let held_since = Instant::now();
    tokio::time::sleep(config.hold).await;
    report.held_secs = held_since.elapsed().as_secs_f64();

    let mut checking = JoinSet::new();
    for (c, mut session) in held {
        let generator = Arc::clone(&generator);
        let permits = Arc::clone(&permits);
        let check = config.check_after_hold;
        checking.spawn(async move {
            let _permit = permits.acquire_owned().await.expect("semaphore not closed");
            let res = if check {
                let plan = generator.transaction(c);
                Some(session.transaction(generator.workload(), &plan).await)
            } else {
                None
            };
            session.close().await;
            res
        });
    }
    while let Some(res) = checking.join_next().await {
        match res.expect("checking task does not panic") {
            Some(Ok(outcome)) => bump(
                &mut report.after_hold_statuses,
                outcome.result.status.to_string(),
                1,
            ),
            Some(Err(e)) => bump(&mut report.after_hold_errors, e.to_string(), 1),
            None => {}
        }
    }
    report.elapsed_secs = start.elapsed().as_secs_f64();
    report
}
