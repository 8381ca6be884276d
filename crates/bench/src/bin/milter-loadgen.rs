//! `milter-loadgen`: drives a milter with mail transactions (MTA side of the
//! milter protocol) and reports throughput, latency and answers.

use clap::Parser;
use nobounce_bench::{
    run_hold, run_load, workload::MAX_CLIENT_IPS, HoldConfig, LoadConfig, Target, Workload,
};
use std::{process::ExitCode, time::Duration};

/// Milter load generator: speaks the MTA side of the milter protocol
/// (version 6) to a milter on a loopback or UNIX socket and measures it.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Milter socket: inet:HOST:PORT (loopback only) or unix:PATH.
    #[arg(long, default_value = "inet:127.0.0.1:8894")]
    milter: Target,
    /// Connections working in parallel (with --hold: connections opened at
    /// the same time).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..))]
    concurrency: u64,
    /// Transactions to measure.
    #[arg(long, default_value_t = 10_000)]
    transactions: u64,
    /// Transactions per connection before a new connection is opened.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    messages_per_connection: u64,
    /// Recipients per message.
    #[arg(long, default_value_t = 1)]
    recipients: u32,
    /// Distinct recipients user{u}@RCPT_DOMAIN to draw from.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    rcpt_users: u32,
    /// Recipient domain.
    #[arg(long, default_value = "rcpt.bench.test")]
    rcpt_domain: String,
    /// Sender domains: senders are sender{k}@d{k}.bench.test, k in 1..=N.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    domains: u32,
    /// Zipf exponent of the sender domain draw (0 = uniform).
    #[arg(long, default_value_t = 1.0)]
    zipf: f64,
    /// Seed of all random draws (same seed, same transactions).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Distinct client IPs (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24,
    /// then 198.18.0.0/15); only data inside the protocol.
    #[arg(long, default_value_t = 100)]
    client_ips: u32,
    /// HELO name.
    #[arg(long, default_value = "client.bench.test")]
    helo: String,
    /// Send Postfix-like macros: j, {daemon_name}, v, _, {client_addr},
    /// {client_port}, {client_name} at connect; i and {mail_addr} at MAIL;
    /// i and {rcpt_addr} at RCPT; i at end of message.
    #[arg(long)]
    macros: bool,
    /// Headers per message, with Postfix-like names and lengths (Received,
    /// DKIM-Signature, From, To, Subject, ...), and a small body; 0: none.
    /// A Postfix message usually carries 10 to 20.
    #[arg(long, default_value_t = 12)]
    headers: usize,
    /// Transactions run first and not counted.
    #[arg(long, default_value_t = 0)]
    warmup: u64,
    /// Seconds allowed for connecting and for each read or write.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Instead of a load: open N connections, negotiate, hold them, then run
    /// one transaction on each; reports errors.
    #[arg(long, value_name = "N")]
    hold: Option<u64>,
    /// Seconds to hold the connections with --hold.
    #[arg(long, default_value_t = 5.0)]
    hold_secs: f64,
    /// Runtime worker threads of the load generator.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    threads: u64,
    /// The milter's process id: the report gives its CPU time per
    /// transaction.
    #[arg(long, value_name = "PID")]
    target_pid: Option<u32>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

fn seconds(what: &str, secs: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(secs).map_err(|e| format!("--{what} {secs}: {e}"))
}

fn run(args: Args) -> Result<bool, String> {
    if args.client_ips == 0 || args.client_ips > MAX_CLIENT_IPS {
        return Err(format!("--client-ips must be in 1..={MAX_CLIENT_IPS}"));
    }
    if !args.zipf.is_finite() || args.zipf < 0.0 {
        return Err("--zipf must be a finite number >= 0".into());
    }
    let timeout = seconds("timeout", args.timeout)?;
    let workload = Workload {
        seed: args.seed,
        domains: args.domains,
        zipf: args.zipf,
        client_ips: args.client_ips,
        helo: args.helo,
        macros: args.macros,
        recipients: args.recipients,
        rcpt_users: args.rcpt_users,
        rcpt_domain: args.rcpt_domain,
        headers: args.headers,
        ..Workload::default()
    };
    let concurrency = usize::try_from(args.concurrency).map_err(|e| e.to_string())?;
    let threads = usize::try_from(args.threads).map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start runtime: {e}"))?;

    if let Some(connections) = args.hold {
        let config = HoldConfig {
            connections,
            hold: seconds("hold-secs", args.hold_secs)?,
            open_concurrency: concurrency,
            timeout,
            workload,
            ..HoldConfig::new(args.milter)
        };
        let report = runtime.block_on(run_hold(&config));
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
            );
        } else {
            print!("{report}");
        }
        Ok(report.open_errors.is_empty() && report.after_hold_errors.is_empty())
    } else {
        let config = LoadConfig {
            concurrency,
            transactions: args.transactions,
            messages_per_connection: args.messages_per_connection,
            warmup: args.warmup,
            timeout,
            workload,
            target_pid: args.target_pid,
            ..LoadConfig::new(args.milter)
        };
        let report = runtime.block_on(run_load(&config));
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
            );
        } else {
            print!("{report}");
        }
        Ok(report.failed == 0)
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    match run(Args::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        // The report says what failed; the exit code lets scripts notice.
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("milter-loadgen: {e}");
            ExitCode::from(2)
        }
    }
}
