//! `nobounce`: arguments, configuration file, socket, signals, exit codes.
//! Everything else lives in the library crates.

use clap::{Args, CommandFactory, Parser, Subcommand};
use nobounce_config::{Config, ControlSocket, StoreBackend};
use nobounce_core::{clock::rfc3339_utc, store::from_millis, store::Ban, StateStore};
use nobounce_server::{control, logging, MilterListener};
use nobounce_store_redis::RedisStore;
use std::{io::Write, net::IpAddr, path::PathBuf, process::ExitCode, time::SystemTime};
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::{mpsc, watch},
};
use tracing::{error, info, warn};

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
    /// Run the milter (foreground; logs to stderr in UTC). SIGHUP reloads
    /// the configuration file, SIGTERM and SIGINT stop after open
    /// connections finish.
    Run(RunArgs),
    /// Work with configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// List, lift and add client bans (dictionary attacks) in the
    /// configured store: Redis directly, or the running milter's memory
    /// through its control socket.
    Ban(BanArgs),
    /// Count the bounces this server generated, from its logs: Postfix
    /// (`maillog`), Sendmail (DSN lines) or qmail-send. Prints how many,
    /// to which sender domains, for which reasons, per day, and how many
    /// nobounce would have refused at RCPT TO instead (unknown user, full
    /// or disabled mailbox). Reads FILEs (rotated sets oldest first, `.gz`
    /// decompressed), `-` or no FILE for standard input; exit 1 when a file
    /// cannot be read.
    Audit(AuditArgs),
    /// The qmail plugin, run by qmail-smtpd for each command: for the
    /// qmail-spp patch (`[mail]` and `[rcpt]` sections of
    /// control/smtpplugins) or the RCPTCHECK patch. It reads qmail-smtpd's
    /// environment (TCPREMOTEIP, SMTPHELOHOST, SMTPMAILFROM, SMTPRCPTTO;
    /// SENDER and RECIPIENT for RCPTCHECK), asks the running nobounce over
    /// its policy socket, and prints E<reply> to refuse, R421 ... for a
    /// ban, nothing to accept (RCPTCHECK: exit 0, 100 or 111). When
    /// nobounce cannot be reached: E451 (exit 111), so no mail is lost.
    #[command(name = "qmail-spp")]
    QmailSpp(QmailArgs),
    /// Explain what nobounce would answer this client, sender and
    /// recipients, and why: one conversation through the engine with the
    /// live configuration (real DNS, real recipient backends; the state
    /// store is read, never written). Exit 0: accepted; 3: some stage or
    /// recipient would get a 4xx; 2: otherwise some would get a 5xx; 1:
    /// the check could not run.
    Check(CheckArgs),
    /// Per-correspondent aliases: make one for each correspondent, retire
    /// it when it leaks (then it is refused at RCPT TO with 550 5.1.1),
    /// list, show, restore, export a Postfix map (docs/aliases.md).
    Alias(nobounce_aliases::cli::AliasArgs),
    /// Print the shell completion script for SHELL to standard output (the
    /// Debian package installs those for bash, zsh and fish).
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
struct AuditArgs {
    /// Log files: `maillog`, `maillog.1`, `maillog.2.gz`, ... in any order
    /// (each rotated set is read oldest first); `-` is standard input.
    #[arg(value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct CheckArgs {
    /// The client's address.
    #[arg(long, value_name = "IP")]
    client_ip: IpAddr,
    /// The client's HELO name (default: its address literal).
    #[arg(long, value_name = "NAME")]
    helo: Option<String>,
    /// The envelope sender ("" for a bounce).
    #[arg(long, value_name = "ADDR")]
    from: String,
    /// A recipient; give --to once per recipient.
    #[arg(long = "to", value_name = "ADDR", required = true)]
    to: Vec<String>,
    /// The size the client declares at MAIL FROM (SIZE=).
    #[arg(long, value_name = "BYTES")]
    size: Option<u64>,
    /// Configuration file (the one the milter runs with).
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct QmailArgs {
    /// Configuration file of the running nobounce (for [policy] socket).
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The policy socket to ask, instead of the configured one.
    #[arg(short, long, value_name = "SOCKET")]
    socket: Option<nobounce_core::Endpoint>,
    /// The SMTP command the plugin runs at: `mail` in the [mail] section,
    /// `rcpt` in [rcpt], `rcptcheck` for the RCPTCHECK patch. Default:
    /// guessed from the environment (give it in [mail]: qmail-spp leaves
    /// the previous message's SMTPRCPTTO set).
    #[arg(long, value_enum)]
    stage: Option<QmailStage>,
    /// How long to wait for nobounce (qmail-smtpd waits for the plugin).
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    timeout: String,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum QmailStage {
    Mail,
    Rcpt,
    Rcptcheck,
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
    socket: Option<nobounce_core::Endpoint>,
    /// Log what would be refused, refuse nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Check a configuration file: read it, and build everything `run`
    /// would (backends, map files, resolver, Redis client) without binding
    /// sockets; print the effective configuration, or every error with its
    /// file:line:col.
    Check {
        /// The file to check.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Config(ConfigCommand::Check { file }) => check(&file),
        Command::Run(args) => run(args),
        Command::Audit(args) => audit(args),
        Command::QmailSpp(args) => qmail_spp(args),
        Command::Check(args) => check_conversation(args),
        Command::Alias(args) => alias(args),
        Command::Completions { shell } => completions(shell),
        Command::Ban(args) => match runtime().and_then(|rt| rt.block_on(ban(args))) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("nobounce: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start runtime: {e}"))
}

fn check(file: &std::path::Path) -> ExitCode {
    let checked = Config::from_file(file).and_then(|config| {
        // Map files with a watcher are built inside a runtime, as in `run`.
        let rt =
            runtime().map_err(|e| nobounce_config::ConfigErrors(vec![config.error_at("", e)]))?;
        rt.block_on(async { nobounce_server::check(&config) })
            .map(|()| config)
    });
    match checked {
        Ok(config) => {
            print!("{}", config.to_toml());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in errors.0 {
                eprintln!("nobounce: {e}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Writes the whole script at once, so that a closed pipe is an error
/// message and exit 1, not a panic inside clap_complete.
fn completions(shell: clap_complete::Shell) -> ExitCode {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "nobounce", &mut script);
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(&script).and_then(|()| stdout.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nobounce: cannot write the completion script: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check_conversation(args: CheckArgs) -> ExitCode {
    use nobounce_server::explain::{explain, CheckRequest};
    let request = CheckRequest {
        client_ip: args.client_ip,
        helo: args.helo,
        from: args.from,
        to: args.to,
        size: args.size,
    };
    let ran = runtime().map_err(|e| e.to_string()).and_then(|rt| {
        rt.block_on(async {
            let config = match &args.config {
                Some(path) => Config::from_file(path)?,
                None => Config::default(),
            };
            explain(config, &request).await
        })
        .map_err(|e| e.to_string())
    });
    match ran {
        Ok((report, notes)) => {
            for n in notes {
                eprintln!("nobounce: {n}");
            }
            if args.json {
                println!("{}", report.json());
            } else {
                print!("{}", report.text());
            }
            ExitCode::from(report.exit)
        }
        Err(e) => {
            eprintln!("nobounce: {e}");
            ExitCode::FAILURE
        }
    }
}

fn qmail_spp(args: QmailArgs) -> ExitCode {
    use nobounce_policy::qmail::{plugin, unavailable, Mode};
    let stage = args.stage.map(|s| match s {
        QmailStage::Mail => Mode::SppMail,
        QmailStage::Rcpt => Mode::SppRcpt,
        QmailStage::Rcptcheck => Mode::RcptCheck,
    });
    let endpoint = match (&args.socket, &args.config) {
        (Some(socket), _) => Ok(Some(socket.clone())),
        (None, Some(path)) => Config::from_file(path)
            .map(|c| c.policy.socket)
            .map_err(|e| e.one_line()),
        (None, None) => Ok(Config::default().policy.socket),
    };
    let outcome = match (nobounce_config::parse_duration(&args.timeout), runtime()) {
        (Ok(timeout), Ok(rt)) => rt.block_on(plugin(
            |name| std::env::var(name).ok(),
            stage,
            endpoint,
            timeout,
        )),
        (Err(e), _) => unavailable(stage, format!("--timeout: {e}")),
        (_, Err(e)) => unavailable(stage, e),
    };
    if let Some(w) = &outcome.warning {
        eprintln!("{w}");
    }
    print!("{}", outcome.stdout);
    ExitCode::from(outcome.exit)
}

fn audit(args: AuditArgs) -> ExitCode {
    use std::io::Write as _;
    let report = match nobounce_audit::audit_files(&args.files, nobounce_audit::Limits::default()) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("nobounce: audit: {e}");
            return ExitCode::FAILURE;
        }
    };
    let text = if args.json {
        report.to_json() + "\n"
    } else {
        report.to_table()
    };
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nobounce: audit: cannot write the report: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `nobounce alias ...`: the logic is in `nobounce_aliases::cli`.
fn alias(args: nobounce_aliases::cli::AliasArgs) -> ExitCode {
    let mut stdout = std::io::stdout();
    let done = runtime().and_then(|rt| {
        rt.block_on(nobounce_aliases::cli::run(args, &mut stdout))
            .map_err(|e| e.to_string())
    });
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nobounce: alias: {e}");
            ExitCode::FAILURE
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
    if config.store.backend == StoreBackend::Redis {
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
                let d = control::parse_ban_duration(&duration)?;
                let key = control::key_for(ip, prefix);
                let until = control::add(store, &key, d, now)
                    .await
                    .map_err(|e| e.to_string())?;
                println!("banned {key} until {}", rfc3339_utc(until));
            }
        }
        return Ok(());
    }
    let path = config.store.control_socket.path().ok_or_else(|| {
        match config.store.control_socket {
            ControlSocket::Off => "the memory store is reached through the control socket, but store.control_socket is \"\"".to_string(),
            _ => "the memory store is reached through the control socket, and without root or $XDG_RUNTIME_DIR it has no default place: set store.control_socket".to_string(),
        }
    })?;
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
            let d = control::parse_ban_duration(&duration)?;
            let key = control::key_for(ip, prefix);
            let reply = control::request(&path, &format!("ADD {key} {}", d.as_secs())).await?;
            let until = reply
                .first()
                .and_then(|l| l.strip_prefix("OK "))
                .and_then(|ms| ms.parse().ok())
                .map(from_millis)
                .ok_or("unexpected answer from the control socket")?;
            println!("banned {key} until {}", rfc3339_utc(until));
        }
    }
    Ok(())
}

/// Loads the file (if any) and applies the command-line overrides.
fn load(args: &RunArgs) -> Result<Config, String> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path).map_err(|e| e.one_line())?,
        None => Config::default(),
    };
    if let Some(socket) = &args.socket {
        if let Err(e) = socket.listen_addr() {
            return Err(e.to_string());
        }
        config.socket = socket.clone();
    }
    if args.dry_run {
        config.dry_run = true;
    }
    Ok(config)
}

fn run(args: RunArgs) -> ExitCode {
    let config = match load(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("nobounce: {e}");
            return ExitCode::FAILURE;
        }
    };
    let _log_guard = logging::init(&config.log);
    let runtime = nobounce_server::runtime(&config.milter);
    let runtime = match runtime {
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
    let listener = MilterListener::bind(&config)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.socket))?;
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let (reload_tx, reload_rx) = mpsc::channel(4);
    let mut sighup = signal(SignalKind::hangup()).map_err(|e| format!("SIGHUP handler: {e}"))?;
    let mut sigterm =
        signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM handler: {e}"))?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT handler: {e}"))?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = sighup.recv() => {
                    if args.config.is_none() {
                        info!(event = "reload_skipped", "SIGHUP: no configuration file given, nothing to reload");
                        continue;
                    }
                    match load(&args) {
                        Ok(c) => { let _ = reload_tx.send(c).await; }
                        Err(e) => warn!(event = "reload_failed", "SIGHUP: reload failed, keeping the running configuration: {e}"),
                    }
                }
                _ = sigterm.recv() => { info!(event = "stopping", "SIGTERM: finishing open connections, then exiting"); break; }
                _ = sigint.recv() => { info!(event = "stopping", "SIGINT: finishing open connections, then exiting"); break; }
            }
        }
        let _ = stop_tx.send(true);
    });
    let shutdown = async move {
        let _ = stop_rx.wait_for(|stop| *stop).await;
    };
    nobounce_server::run(listener, config, reload_rx, shutdown)
        .await
        .map_err(|e| e.to_string())
}
