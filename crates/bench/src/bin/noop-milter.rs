//! `noop-milter`: a milter that answers `Continue` to everything, the
//! protocol floor to compare real milters against.

use clap::Parser;
use nobounce_bench::{run_noop_milter, NoopConfig};
use std::{net::SocketAddr, process::ExitCode};
use tokio::{net::TcpListener, signal::unix};

/// No-op milter on indymilter: every callback returns Continue.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on (loopback only).
    #[arg(long, default_value = "127.0.0.1:8894")]
    listen: SocketAddr,
    /// Connections served at the same time; more wait in the backlog.
    #[arg(long, default_value_t = 2000)]
    max_connections: usize,
    /// all: every stage answered Continue; plain: the plain floor (the
    /// MTA skips every stage but end of message); policy: the policy floor
    /// (HELO, MAIL, RCPT and end of message answered; connect, headers and
    /// end of headers without reply; DATA, body, unknown skipped).
    #[arg(long, default_value = "all")]
    mode: nobounce_bench::NoopMode,
    /// Leave TCP_NODELAY off on accepted connections.
    #[arg(long)]
    no_nodelay: bool,
    /// Insert N headers at end of message (the work of a milter that adds
    /// headers, e.g. Received-SPF and Authentication-Results: N = 2).
    #[arg(long, default_value_t = 0, value_name = "N")]
    insert_headers: usize,
    /// Runtime worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
}

async fn serve(args: Args) -> Result<(), String> {
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    println!("noop-milter listening on inet:{addr}");
    let mut term = unix::signal(unix::SignalKind::terminate()).map_err(|e| e.to_string())?;
    let shutdown = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    let config = NoopConfig {
        max_connections: args.max_connections,
        mode: args.mode,
        nodelay: !args.no_nodelay,
        insert_headers: args.insert_headers,
        ..NoopConfig::default()
    };
    run_noop_milter(listener, config, shutdown)
        .await
        .map_err(|e| format!("milter failed: {e}"))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if !args.listen.ip().is_loopback() {
        eprintln!("noop-milter: --listen must be a loopback address");
        return ExitCode::from(2);
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.threads {
        builder.worker_threads(n.max(1));
    }
    let result = builder
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start runtime: {e}"))
        .and_then(|rt| rt.block_on(serve(args)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("noop-milter: {e}");
            ExitCode::FAILURE
        }
    }
}
