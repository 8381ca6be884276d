//! `bench-dns`: a loopback DNS server with the SPF records of the load
//! generator's sender domains, optionally slowed down.

use clap::Parser;
use nobounce_bench::dns::{BenchDns, BenchDnsConfig, BENCH_SPF};
use std::{io::Write, net::SocketAddr, process::ExitCode, time::Duration};
use tokio::signal::unix::{signal, SignalKind};

/// DNS server for milter benchmarks: TXT "v=spf1 ..." for d1.bench.test ..=
/// dN.bench.test and the HELO name, on 127.0.0.1 (UDP and TCP). Prints
/// "bench-dns listening on IP:PORT", then on SIGUSR1 and at exit a line
/// {"queries":N} with the number of queries received so far.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Sender domains d{k}.bench.test served, k in 1..=N.
    #[arg(long, default_value_t = 1000)]
    domains: u32,
    /// TTL of every record (and of negative answers), seconds.
    #[arg(long, default_value_t = 3600)]
    ttl: u32,
    /// Hold every query this long before answering, milliseconds
    /// (fractions allowed).
    #[arg(long, default_value_t = 0.0)]
    delay_ms: f64,
    /// Address to listen on (loopback only); port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// TXT record of every domain.
    #[arg(long, default_value = BENCH_SPF)]
    spf: String,
    /// HELO name given the same record.
    #[arg(long, default_value = "client.bench.test")]
    helo: String,
    /// Publish no record for the HELO name (SPF "none" for HELO).
    #[arg(long)]
    no_helo: bool,
}

fn print_queries(dns: &BenchDns) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{{\"queries\":{}}}", dns.queries());
    let _ = out.flush();
}

async fn serve(args: Args) -> Result<(), String> {
    let delay = Duration::try_from_secs_f64(args.delay_ms / 1000.0)
        .map_err(|e| format!("--delay-ms {}: {e}", args.delay_ms))?;
    let config = BenchDnsConfig {
        domains: args.domains,
        ttl: args.ttl,
        spf: args.spf,
        helo: (!args.no_helo).then_some(args.helo),
        delay,
        listen: args.listen,
    };
    let dns = BenchDns::start(&config)
        .await
        .map_err(|e| format!("cannot start: {e}"))?;
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "bench-dns listening on {}", dns.addr());
        let _ = out.flush();
    }
    let mut usr1 = signal(SignalKind::user_defined1()).map_err(|e| e.to_string())?;
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    loop {
        tokio::select! {
            _ = usr1.recv() => print_queries(&dns),
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    print_queries(&dns);
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if !args.listen.ip().is_loopback() {
        eprintln!("bench-dns: --listen must be a loopback address");
        return ExitCode::from(2);
    }
    // One worker thread: the server is light and the cores belong to the
    // milter under test.
    let result = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start runtime: {e}"))
        .and_then(|rt| rt.block_on(serve(args)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-dns: {e}");
            ExitCode::FAILURE
        }
    }
}
