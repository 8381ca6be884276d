//! `nobounce`: arguments, configuration file, socket, signals, exit codes.
//! Everything else lives in the library crates.

use clap::{Args, Parser, Subcommand};
use nobounce_core::{
    dictionary::rfc3339_utc,
    store::{from_millis, Ban, StateStore},
};
use nobounce_milter::{config::StoreBackend, control, Config, Milter, SocketSpec};
use nobounce_store_redis::RedisStore;
use std::{net::IpAddr, path::PathBuf, process::ExitCode, time::SystemTime};
use tokio::{
    net::{TcpListener, UnixListener},
    signal::unix::{signal, SignalKind},
    sync::watch,
};
use tracing::{error, info, warn};
use tracing_subscriber::EnvFilter;

/// A milter that makes the mail server reject during the SMTP dialog
/// instead of bouncing later.
#[derive(Debug, Parser)]
#[command(name = "nobounce", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the milter (foreground; logs to stderr in UTC).
    Run(RunArgs),
    /// Work with configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// List, lift and add client bans (dictionary attacks) in the
    /// configured store: Redis directly, or the running milter's memory
    /// through its control socket.
    Ban(BanArgs),
}

#[derive(Debug, Args)]
struct BanArgs {
    /// Configuration file (TOML), the one the milter runs with.
    #[arg(short, long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: BanCommand,
}

#[derive(Debug, Subcommand)]
enum BanCommand {
    /// List active bans.
    List,
    /// Lift the ban of a client (and forget its strikes).
    Lift {
        /// The client address (IPv6: its network is lifted).
        ip: IpAddr,
    },
    /// Ban a client by hand.
    Add {
        /// The client address (IPv6: its network is banned).
        ip: IpAddr,
        /// How long: 3600, 30m, 1h, 2d (at most a week).
        #[arg(long = "for", value_name = "DURATION", default_value = "1h")]
        duration: String,
    },
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Configuration file (TOML). Without it, the embedded defaults apply.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Listen here instead of the configured socket: inet:HOST:PORT or unix:PATH.
    #[arg(short, long, value_name = "SOCKET")]
    socket: Option<SocketSpec>,
    /// Log what would be refused, refuse nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Check a configuration file and print the effective configuration.
    Check {
        /// The file to check.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Config(ConfigCommand::Check { file }) => match Config::from_file(&file) {
            Ok(config) => {
                print!("{}", config.to_toml());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("nobounce: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Run(args) => run(args),
        Command::Ban(args) => {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("nobounce: cannot start runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(ban(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("nobounce: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn print_ban(b: &Ban) {
    println!(
        "{}\tuntil {}\tstrikes {}\t{}",
        b.key,
        rfc3339_utc(b.until),
        b.strikes,
        b.reason
    );
}

async fn ban(args: BanArgs) -> Result<(), String> {
    let config = match &args.config {
        Some(path) => Config::from_file(path).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    let prefix = config.dictionary.ipv6_prefix;
    let now = SystemTime::now();
    match config.store.backend {
        StoreBackend::Redis => {
            let store = RedisStore::new(&config.store.redis).map_err(|e| e.to_string())?;
            let store: &dyn StateStore = &store;
            match args.command {
                BanCommand::List => {
                    for b in control::list(store, now).await.map_err(|e| e.to_string())? {
                        print_ban(&b);
                    }
                }
                BanCommand::Lift { ip } => {
                    let key = control::key_for(ip, prefix);
                    control::lift(store, &key, now)
                        .await
                        .map_err(|e| e.to_string())?;
                    println!("lifted {key}");
                }
                BanCommand::Add { ip, duration } => {
                    let d = control::parse_duration(&duration)?;
                    let key = control::key_for(ip, prefix);
                    let until = control::add(store, &key, d, now)
                        .await
                        .map_err(|e| e.to_string())?;
                    println!("banned {key} until {}", rfc3339_utc(until));
                }
            }
        }
        StoreBackend::Memory => {
            let path = control::socket_path(&config.store.control_socket).ok_or(
                "the memory store is reached through the control socket, but store.control_socket is empty",
            )?;
            match args.command {
                BanCommand::List => {
                    for line in control::request(&path, "LIST").await? {
                        if let Some(b) = control::parse_ban_line(&line) {
                            print_ban(&b);
                        }
                    }
                }
                BanCommand::Lift { ip } => {
                    let key = control::key_for(ip, prefix);
                    control::request(&path, &format!("LIFT {key}")).await?;
                    println!("lifted {key}");
                }
                BanCommand::Add { ip, duration } => {
                    let d = control::parse_duration(&duration)?;
                    let key = control::key_for(ip, prefix);
                    let reply =
                        control::request(&path, &format!("ADD {key} {}", d.as_secs())).await?;
                    let until = reply
                        .first()
                        .and_then(|l| l.strip_prefix("OK "))
                        .and_then(|ms| ms.parse().ok())
                        .map(from_millis)
                        .ok_or("unexpected answer from the control socket")?;
                    println!("banned {key} until {}", rfc3339_utc(until));
                }
            }
        }
    }
    Ok(())
}

/// Loads the file (if any) and applies the command-line overrides.
fn load(args: &RunArgs) -> Result<Config, String> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    if let Some(socket) = &args.socket {
        config.socket = socket.clone();
    }
    if args.dry_run {
        config.dry_run = true;
    }
    Ok(config)
}

/// Sets up logging to stderr. Lines are formatted on the calling thread and
/// written by a background thread through a buffer, so a busy milter does
/// not pay a write system call per log line; nothing is dropped (the
/// channel blocks when full). The guard flushes what is left at exit.
fn init_logging(level: &str) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .finish(std::io::BufWriter::new(std::io::stderr()));
    // The default timer prints RFC 3339 timestamps in UTC.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi)
        .init();
    guard
}

fn run(args: RunArgs) -> ExitCode {
    let config = match load(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("nobounce: {e}");
            return ExitCode::FAILURE;
        }
    };
    let _log_guard = init_logging(&config.log.level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("nobounce: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            eprintln!("nobounce: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: RunArgs, config: Config) -> Result<(), String> {
    let socket = config.socket.clone();
    let milter = Milter::new(config).map_err(|e| e.to_string())?;
    let control = milter.spawn_control().map_err(|e| e.to_string())?;

    let (stop_tx, mut stop_rx) = watch::channel(false);
    let mut sighup = signal(SignalKind::hangup()).map_err(|e| format!("SIGHUP handler: {e}"))?;
    let mut sigterm =
        signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM handler: {e}"))?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT handler: {e}"))?;

    let reloader = milter.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = sighup.recv() => {
                    if args.config.is_none() {
                        info!("SIGHUP: no configuration file given, nothing to reload");
                        continue;
                    }
                    match load(&args) {
                        Ok(c) => {
                            if let Err(e) = reloader.reload(c).await {
                                warn!("SIGHUP: reload failed, keeping the old configuration: {e}");
                            }
                        }
                        Err(e) => warn!("SIGHUP: reload failed, keeping the old configuration: {e}"),
                    }
                }
                _ = sigterm.recv() => { info!("SIGTERM: finishing open connections, then exiting"); break; }
                _ = sigint.recv() => { info!("SIGINT: finishing open connections, then exiting"); break; }
            }
        }
        let _ = stop_tx.send(true);
    });
    let shutdown = async move {
        let _ = stop_rx.wait_for(|stop| *stop).await;
    };

    match &socket {
        SocketSpec::Inet(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen on {socket}: {e}"))?;
            info!(socket = %socket, version = env!("CARGO_PKG_VERSION"), "nobounce listening");
            milter
                .serve_tcp(listener, shutdown)
                .await
                .map_err(|e| e.to_string())?;
        }
        SocketSpec::Unix(path) => {
            // A socket file left by an earlier run would make bind fail.
            if std::fs::symlink_metadata(path)
                .map(|m| {
                    use std::os::unix::fs::FileTypeExt;
                    m.file_type().is_socket()
                })
                .unwrap_or(false)
            {
                let _ = std::fs::remove_file(path);
            }
            let listener =
                UnixListener::bind(path).map_err(|e| format!("cannot listen on {socket}: {e}"))?;
            info!(socket = %socket, version = env!("CARGO_PKG_VERSION"), "nobounce listening");
            let result = milter.serve(listener, shutdown).await;
            let _ = std::fs::remove_file(path);
            result.map_err(|e| e.to_string())?;
        }
    }
    if let Some(task) = control {
        task.abort();
        if let Some(path) = control::socket_path(&milter.config().store.control_socket) {
            let _ = std::fs::remove_file(path);
        }
    }
    info!("nobounce stopped");
    Ok(())
}
