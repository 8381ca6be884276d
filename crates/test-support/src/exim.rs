//! A private Exim 4.96 per test, running nobounce's documented ACL snippet.
//!
//! Exim conflicts with Postfix, so it is never installed: each
//! [`EximInstance`] unpacks the cached `exim4-daemon-light` and `libidn12`
//! .debs (see [`crate::debs`]) into its own temporary directory and runs
//! that binary with its own `-C` configuration. The configuration embeds
//! `docs/examples/exim-nobounce.conf` verbatim, except the
//! `NOBOUNCE_POLICY = ...` line, which points at the test's policy service
//! ([`EximBuilder::policy`]): the tests run exactly what the docs tell
//! admins to paste.
//!
//! What Exim needs, and the harness provides (details in the research notes
//! of issue 12):
//! - its compiled-in user and group `Debian-exim` (created with
//!   `groupadd`/`useradd --system` when missing);
//! - a non-setuid copy of the binary: the setuid one ignores
//!   `LD_LIBRARY_PATH` (which finds the unpacked `libidn.so.12`) when it
//!   re-executes itself;
//! - a root-owned `-C` file, not writable by group or others;
//! - `spool/` and `log/` owned by `Debian-exim` (the daemon gives up root
//!   once it listens), and every directory above them searchable by others;
//! - `deliver_drop_privilege`, so delivery happens in the receiving process
//!   without a re-exec.
//!
//! No DNS lookups: `host_lookup`, ident, HELO lookups, TLS and IPv6 are off,
//! routing is `manualroute` to the numeric `127.0.0.1`, and the snippet never
//! mentions `$sender_host_name`.

use crate::net::{free_port, LOOPBACK};
use crate::wait::poll_until;
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as StdCommand, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// `primary_hostname` of every test instance (greeting, `Received:`).
pub const EXIM_HOSTNAME: &str = "exim.nobounce.test";

/// The admin-facing snippet the instances run (Part 1: macros for the main
/// section; Part 2: statements for `acl_check_rcpt`).
const SNIPPET: &str = include_str!("../../../docs/examples/exim-nobounce.conf");

/// Where [`SNIPPET`] comes from, for error messages.
const SNIPPET_PATH: &str = "docs/examples/exim-nobounce.conf";

/// The macro holding the policy service address in [`SNIPPET`].
const POLICY_MACRO: &str = "NOBOUNCE_POLICY";

/// The comment line in [`SNIPPET`] where the ACL statements (Part 2) start.
const ACL_PART_MARKER: &str = "# ---- Part 2:";

/// Exim's compiled-in user and group (Debian build).
const EXIM_USER: &str = "Debian-exim";

/// The .debs unpacked per instance: Exim, and the one library Debian 12
/// does not have installed next to Postfix.
const PACKAGES: &[&str] = &["exim4-daemon-light", "libidn12"];

/// Attempts to start when the picked SMTP port was taken in the meantime.
const START_ATTEMPTS: usize = 3;

/// How long Exim may take to listen (it takes about 0.1 s).
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// How long [`Drop`] waits for the daemon to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Lines of each log shown when a test panics or a start fails.
const LOG_TAIL_LINES: usize = 40;

/// Where accepted mail goes without [`EximBuilder::relay_to`]: the discard
/// port, closed on loopback, so deliveries are deferred and stay queued.
const NO_RELAY_PORT: u16 = 9;

/// Serialises the creation of the `Debian-exim` user within one test binary
/// (other binaries are handled by re-checking after a failed `useradd`).
static USER_LOCK: Mutex<()> = Mutex::new(());

/// Configures an [`EximInstance`]; see [`EximInstance::builder`].
#[derive(Debug, Clone, Default)]
pub struct EximBuilder {
    policy: Option<SocketAddr>,
    relay_to: Option<SocketAddr>,
    defines: Vec<(String, String)>,
    options: Vec<(String, String)>,
}

impl EximBuilder {
    /// The policy service the snippet asks about every recipient
    /// (`NOBOUNCE_POLICY = inet:IP:PORT`): nobounce's `[policy] socket`, or
    /// a test's own server. Required: without it [`start`](Self::start)
    /// fails rather than ask whatever listens on the documented default port.
    /// Point it at a closed port to test "policy service down".
    pub fn policy(mut self, addr: SocketAddr) -> Self {
        self.policy = Some(addr);
        self
    }

    /// Delivers all accepted mail over SMTP to `addr` (normally an
    /// [`SmtpSink`](crate::SmtpSink)): `manualroute` to `127.0.0.1`, `smtp`
    /// transport on `addr`'s port.
    ///
    /// Without it, deliveries go to the closed `127.0.0.1:9`, are deferred
    /// and stay queued ([`queue_count`](EximInstance::queue_count)).
    pub fn relay_to(mut self, addr: SocketAddr) -> Self {
        self.relay_to = Some(addr);
        self
    }

    /// Defines an Exim macro at the top of the configuration
    /// (`NAME = value`), e.g. `define("NOBOUNCE_421_DROP", "yes")` to select
    /// the snippet's drop variant for `421` answers.
    pub fn define(mut self, name: &str, value: &str) -> Self {
        set(&mut self.defines, name, value);
        self
    }

    /// Sets a main-section option, overriding the harness's value if it has
    /// one (e.g. `("message_size_limit", "10K")`).
    pub fn option(mut self, name: &str, value: &str) -> Self {
        set(&mut self.options, name, value);
        self
    }

    /// Unpacks Exim, writes the configuration, starts `exim -bdf` and
    /// returns once it listens.
    ///
    /// Errors (with Exim's output and logs in the message) when the .debs
    /// are missing, the caller is not root, no [`policy`](Self::policy) was
    /// given, or Exim does not start.
    pub async fn start(self) -> io::Result<EximInstance> {
        if !crate::require::running_as_root() {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "an Exim test instance must be started as root",
            ));
        }
        let Some(policy) = self.policy else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "EximBuilder::policy is required (the snippet asks it about every recipient)",
            ));
        };
        let ids = tokio::task::spawn_blocking(ensure_exim_user)
            .await
            .map_err(io::Error::other)??;
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            match self.try_start(policy, ids).await {
                Ok(instance) => return Ok(instance),
                // Someone took the port between free_port() and Exim's bind.
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => last_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_error.expect("the loop ran at least once"))
    }

    async fn try_start(&self, policy: SocketAddr, ids: (u32, u32)) -> io::Result<EximInstance> {
        let dir = tempfile::Builder::new()
            .prefix("nobounce-e2e-exim.")
            .tempdir()?;
        // The daemon runs as Debian-exim and must reach spool/ and log/.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))?;
        check_searchable(dir.path())?;
        let root = dir.path().join("root");
        let unpack_root = root.clone();
        tokio::task::spawn_blocking(move || crate::debs::unpack_debs(PACKAGES, &unpack_root))
            .await
            .map_err(io::Error::other)??;
        let binary = root.join("usr/sbin/exim4");
        // Not setuid: a setuid binary ignores LD_LIBRARY_PATH on re-exec.
        fs::set_permissions(&binary, fs::Permissions::from_mode(0o755))?;
        let lib_dir = find_lib_dir(&root)?;
        for sub in ["spool", "log"] {
            let path = dir.path().join(sub);
            fs::create_dir(&path)?;
            std::os::unix::fs::chown(&path, Some(ids.0), Some(ids.1))?;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o750))?;
        }
        let port = free_port()?;
        let config_path = dir.path().join("exim.conf");
        // Created by root with mode 0644: Exim refuses a -C file that is
        // not root's or is writable by group or others.
        fs::write(
            &config_path,
            self.config(dir.path(), &binary, port, policy)?,
        )?;
        fs::set_permissions(&config_path, fs::Permissions::from_mode(0o644))?;

        let out_path = dir.path().join("exim.out");
        let out = fs::File::create(&out_path)?;
        let child = StdCommand::new(&binary)
            .arg("-C")
            .arg(&config_path)
            .arg("-bdf")
            .env_clear()
            .env("LD_LIBRARY_PATH", &lib_dir)
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            // Its own process group, so Drop can stop the connection and
            // delivery processes it forks without touching anything else.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", binary.display())))?;
        let mut instance = EximInstance {
            smtp_addr: SocketAddr::new(LOOPBACK, port),
            binary,
            config_path,
            lib_dir,
            log_dir: dir.path().join("log"),
            out_path,
            child: Some(child),
            dir,
        };
        if let Err(e) = instance.wait_ready().await {
            instance.shutdown();
            let report = instance.report();
            let kind = if report.contains("Address already in use") {
                io::ErrorKind::AddrInUse
            } else {
                e.kind()
            };
            return Err(io::Error::new(
                kind,
                format!("exim did not start: {e}\n{report}"),
            ));
        }
        Ok(instance)
    }

    /// The whole configuration file of an instance in `dir`.
    fn config(
        &self,
        dir: &Path,
        binary: &Path,
        port: u16,
        policy: SocketAddr,
    ) -> io::Result<String> {
        let (macros, acl) = snippet_parts(SNIPPET, policy)?;
        let d = dir.display();
        let mut o: Vec<(String, String)> = Vec::new();
        let mut put = |k: &str, v: &str| set(&mut o, k, v);
        put("exim_path", &binary.display().to_string());
        put("primary_hostname", EXIM_HOSTNAME);
        put("qualify_domain", EXIM_HOSTNAME);
        put("spool_directory", &format!("{d}/spool"));
        put("log_file_path", &format!("{d}/log/%slog"));
        put("pid_file_path", &format!("{d}/exim.pid"));
        put("exim_user", EXIM_USER);
        put("exim_group", EXIM_USER);
        // Exim empties its environment; re-executed copies need the path
        // to the unpacked libidn.so.12.
        put("keep_environment", "LD_LIBRARY_PATH");
        put("deliver_drop_privilege", "true");
        put("never_users", "root");
        put("local_interfaces", "<; 127.0.0.1");
        put("daemon_smtp_ports", &port.to_string());
        // Fail at once when the port is taken (default: 9 tries, 30 s apart).
        put("daemon_startup_retries", "0");
        put(
            "smtp_banner",
            "$smtp_active_hostname ESMTP Exim $version_number (nobounce-e2e)",
        );
        // No DNS, ident or TLS; IPv6 off, else routing asks for AAAA of
        // "127.0.0.1".
        put("host_lookup", "");
        put("rfc1413_hosts", "");
        put("rfc1413_query_timeout", "0s");
        put("helo_lookup_domains", "");
        put("tls_advertise_hosts", "");
        put("disable_ipv6", "true");
        put(
            "log_selector",
            "+smtp_connection +incoming_port +received_recipients +smtp_confirmation +pid",
        );
        put("acl_smtp_rcpt", "acl_check_rcpt");
        for (k, v) in &self.options {
            set(&mut o, k, v);
        }

        let sink_port = self.relay_to.map_or(NO_RELAY_PORT, |a| a.port());
        let mut out = String::from("# Generated by nobounce-e2e for a single test.\n\n");
        for (k, v) in &self.defines {
            let _ = writeln!(out, "{k} = {v}");
        }
        let _ = writeln!(out, "\n# ---- {SNIPPET_PATH}, part 1 ----");
        out.push_str(&macros);
        out.push('\n');
        for (k, v) in &o {
            let _ = writeln!(out, "{k} = {v}");
        }
        out.push_str("\nbegin acl\n\nacl_check_rcpt:\n");
        let _ = writeln!(out, "# ---- {SNIPPET_PATH}, part 2 ----");
        out.push_str(&acl);
        // The test instance relays for everyone: nobounce's answer is the
        // only check.
        out.push_str("\n  accept\n");
        let _ = write!(
            out,
            "\nbegin routers\n\n\
             to_sink:\n  \
               driver = manualroute\n  \
               route_list = * 127.0.0.1\n  \
               # the sink is on this host: send anyway\n  \
               self = send\n  \
               transport = to_sink\n  \
               no_more\n\
             \nbegin transports\n\n\
             to_sink:\n  \
               driver = smtp\n  \
               port = {sink_port}\n  \
               allow_localhost\n  \
               hosts_avoid_tls = *\n  \
               hosts_try_dane =\n  \
               hosts_try_chunking =\n  \
               hosts_try_prdr =\n\
             \nbegin retry\n\n\
             *  *  F,5m,1m\n"
        );
        Ok(out)
    }
}

/// Splits the snippet at [`ACL_PART_MARKER`] into its main-section part,
/// with the [`POLICY_MACRO`] line pointing at `policy`, and its ACL part.
/// Everything else stays as written.
fn snippet_parts(snippet: &str, policy: SocketAddr) -> io::Result<(String, String)> {
    let invalid = |what: String| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{SNIPPET_PATH}: {what}"),
        )
    };
    let start = snippet
        .find(&format!("\n{ACL_PART_MARKER}"))
        .ok_or_else(|| invalid(format!("no line starting with {ACL_PART_MARKER:?}")))?;
    let (main, acl) = snippet.split_at(start + 1);
    let mut replaced = 0;
    let main: String = main
        .lines()
        .map(|line| {
            let is_policy = line
                .strip_prefix(POLICY_MACRO)
                .is_some_and(|rest| rest.trim_start().starts_with('='));
            if is_policy {
                replaced += 1;
                format!("{POLICY_MACRO} = inet:{}:{}\n", policy.ip(), policy.port())
            } else {
                format!("{line}\n")
            }
        })
        .collect();
    if replaced != 1 {
        return Err(invalid(format!(
            "{replaced} lines define {POLICY_MACRO} before {ACL_PART_MARKER:?}; want exactly one"
        )));
    }
    Ok((main, acl.to_owned()))
}

/// Replaces the value of `name` or appends it.
fn set(list: &mut Vec<(String, String)>, name: &str, value: &str) {
    match list.iter_mut().find(|(k, _)| k == name) {
        Some((_, v)) => *v = value.to_owned(),
        None => list.push((name.to_owned(), value.to_owned())),
    }
}

/// Creates the `Debian-exim` group and user when missing; returns the
/// user's uid and the group's gid.
fn ensure_exim_user() -> io::Result<(u32, u32)> {
    let _guard = USER_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(ids) = exim_ids()? {
        return Ok(ids);
    }
    // Like the package's postinst (adduser --system --group), with the
    // tools every Debian has. Another test binary may be doing the same
    // right now, so failures are judged by the re-check below.
    let mut failures = String::new();
    if getent("group", EXIM_USER)?.is_none() {
        failures.push_str(&run_quietly("groupadd", &["--system", EXIM_USER])?);
    }
    if getent("passwd", EXIM_USER)?.is_none() {
        failures.push_str(&run_quietly(
            "useradd",
            &[
                "--system",
                "--gid",
                EXIM_USER,
                "--no-create-home",
                "--home-dir",
                "/var/spool/exim4",
                "--shell",
                "/usr/sbin/nologin",
                EXIM_USER,
            ],
        )?);
    }
    exim_ids()?.ok_or_else(|| {
        io::Error::other(format!(
            "could not create the user and group {EXIM_USER}: {failures}"
        ))
    })
}

/// Runs a program; returns its stderr when it fails, "" when it succeeds.
fn run_quietly(program: &str, args: &[&str]) -> io::Result<String> {
    let path = crate::find_binary(program)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{program} not found")))?;
    let out = StdCommand::new(path)
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    Ok(if out.status.success() {
        String::new()
    } else {
        format!(
            "{program} ({}): {}; ",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })
}

/// uid of the user and gid of the group `Debian-exim`, if both exist.
fn exim_ids() -> io::Result<Option<(u32, u32)>> {
    let uid = getent("passwd", EXIM_USER)?.and_then(|f| f.get(2)?.parse().ok());
    let gid = getent("group", EXIM_USER)?.and_then(|f| f.get(2)?.parse().ok());
    Ok(uid.zip(gid))
}

/// The `:`-separated fields of `getent DATABASE KEY`, `None` when absent.
fn getent(database: &str, key: &str) -> io::Result<Option<Vec<String>>> {
    let out = StdCommand::new("getent")
        .args([database, key])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(out
        .status
        .success()
        .then(|| text.trim().split(':').map(str::to_owned).collect()))
}

/// Errors unless every directory above `dir` can be searched by others:
/// the daemon, running as `Debian-exim`, must reach `dir/spool`.
fn check_searchable(dir: &Path) -> io::Result<()> {
    for ancestor in dir.ancestors().skip(1) {
        let mode = fs::metadata(ancestor)?.permissions().mode();
        if mode & 0o001 == 0 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{} (mode {:o}) is not searchable by others, so {EXIM_USER} cannot reach \
                     the Exim spool below it; set TMPDIR to a directory like /tmp",
                    ancestor.display(),
                    mode & 0o7777
                ),
            ));
        }
    }
    Ok(())
}

/// The unpacked multiarch library directory holding `libidn.so.12`.
fn find_lib_dir(root: &Path) -> io::Result<PathBuf> {
    let lib = root.join("usr/lib");
    fs::read_dir(&lib)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.join("libidn.so.12").exists())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("no libidn.so.12 below {}", lib.display()),
            )
        })
}

/// A running private Exim daemon (`exim -bdf`), stopped and deleted on drop.
/// Created by [`EximInstance::builder`]; needs root and the cached .debs
/// (use [`require!`](crate::require!)`("exim")`).
///
/// The configuration ([`config`](Self::config)) is: the snippet's part 1
/// (with `NOBOUNCE_POLICY` set to [`EximBuilder::policy`]), the main options
/// (private spool and logs, `primary_hostname =` [`EXIM_HOSTNAME`], listening
/// on `127.0.0.1` only, no DNS, ident or TLS), `acl_check_rcpt` made of the
/// snippet's part 2 and a final `accept` (any client may relay to any
/// domain), and one router that sends everything to
/// [`EximBuilder::relay_to`]. Clients show up as `[127.0.0.1]` in the logs
/// and `Received:` fields; SMTP sessions and deliveries run as `Debian-exim`.
///
/// When a test panics, dropping the instance prints the tail of Exim's logs.
///
/// ```no_run
/// # async fn f(policy: std::net::SocketAddr) -> std::io::Result<()> {
/// use nobounce_test_support::{EximInstance, SmtpClient, SmtpSink};
/// let sink = SmtpSink::start().await?;
/// let exim = EximInstance::builder()
///     .policy(policy) // e.g. nobounce's [policy] socket
///     .relay_to(sink.addr())
///     .start()
///     .await?;
/// let mut smtp = SmtpClient::connect(exim.smtp_addr()).await?;
/// smtp.ehlo("client.example").await?.assert_code(250);
/// smtp.mail_from("alice@sender.test", &["SIZE=1000"]).await?.assert_code(250);
/// let rcpt = smtp.rcpt_to("nobody@example.test").await?;
/// assert_eq!(rcpt.code, 550); // if the policy service says so
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct EximInstance {
    dir: TempDir,
    binary: PathBuf,
    config_path: PathBuf,
    lib_dir: PathBuf,
    log_dir: PathBuf,
    out_path: PathBuf,
    smtp_addr: SocketAddr,
    child: Option<Child>,
}

impl EximInstance {
    /// A builder; [`EximBuilder::start`] starts the instance.
    pub fn builder() -> EximBuilder {
        EximBuilder::default()
    }

    /// Where the daemon listens for SMTP (`127.0.0.1:port`).
    pub fn smtp_addr(&self) -> SocketAddr {
        self.smtp_addr
    }

    /// The temporary directory holding everything of this instance.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The generated configuration file.
    pub fn config(&self) -> String {
        fs::read_to_string(&self.config_path).unwrap_or_default()
    }

    /// The main log so far (`log/mainlog`): connections, `<=` receptions,
    /// `=>` deliveries, and `rejected RCPT` / `temporarily rejected RCPT`
    /// lines with the reply or `log_message`.
    pub fn log(&self) -> String {
        self.read_log("mainlog")
    }

    /// The reject log (`log/rejectlog`): every refusal, with the headers
    /// received so far.
    pub fn reject_log(&self) -> String {
        self.read_log("rejectlog")
    }

    /// The panic log (`log/paniclog`): configuration and other serious
    /// errors; empty when all is well.
    pub fn panic_log(&self) -> String {
        self.read_log("paniclog")
    }

    /// Main log lines containing `needle`.
    pub fn log_lines_containing(&self, needle: &str) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }

    /// Waits for a main log line containing `needle` and returns the first.
    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) -> io::Result<String> {
        poll_until(&format!("Exim log line with {needle:?}"), timeout, || {
            let found = self.log_lines_containing(needle).into_iter().next();
            async move { Ok(found) }
        })
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("{e}\n{}", self.report())))
    }

    /// A command running this instance's Exim binary with its
    /// configuration (`exim -C FILE`) and library path; add arguments such
    /// as `-bp`, `-bt ADDRESS` or `-bh IP`.
    pub fn exim_command(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.binary);
        cmd.arg("-C")
            .arg(&self.config_path)
            .env_clear()
            .env("LD_LIBRARY_PATH", &self.lib_dir)
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::null());
        cmd
    }

    /// Messages in the queue (`exim -bpc`): accepted but not yet
    /// delivered, or deferred.
    pub async fn queue_count(&self) -> io::Result<usize> {
        let out = self.exim_command().arg("-bpc").output().await?;
        let text = String::from_utf8_lossy(&out.stdout);
        match text.trim().parse() {
            Ok(n) if out.status.success() => Ok(n),
            _ => Err(io::Error::other(format!(
                "exim -bpc ({}): {text}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ))),
        }
    }

    /// Stops Exim now (also done on drop) and returns the final main log.
    pub fn stop(mut self) -> String {
        self.shutdown();
        self.log()
    }

    fn read_log(&self, name: &str) -> String {
        fs::read_to_string(self.log_dir.join(name)).unwrap_or_default()
    }

    /// Exim's own output and the tails of its logs.
    fn report(&self) -> String {
        let tail = |text: String| {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
        };
        let mut out = String::new();
        let output = fs::read_to_string(&self.out_path).unwrap_or_default();
        if !output.trim().is_empty() {
            let _ = writeln!(out, "--- exim stdout/stderr ---\n{}", tail(output));
        }
        let panic = self.panic_log();
        if !panic.is_empty() {
            let _ = writeln!(out, "--- Exim paniclog ---\n{}", tail(panic));
        }
        let _ = write!(out, "--- Exim mainlog (tail) ---\n{}", tail(self.log()));
        out
    }

    /// Waits for the daemon's "listening for SMTP" log line; errors when
    /// it exits first.
    async fn wait_ready(&mut self) -> io::Result<()> {
        let log_dir = self.log_dir.clone();
        poll_until("Exim to listen", READY_TIMEOUT, || {
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            let mainlog = fs::read_to_string(log_dir.join("mainlog")).unwrap_or_default();
            async move {
                if let Some(status) = exited {
                    return Err(io::Error::other(format!("exim exited ({status})")));
                }
                Ok(mainlog
                    .lines()
                    .any(|l| l.contains("daemon started") && l.contains("listening for SMTP"))
                    .then_some(()))
            }
        })
        .await
    }

    /// SIGTERM to the daemon and a bounded wait (SIGKILL if it stays), then
    /// SIGKILL to its process group: SMTP sessions and deliveries it forked.
    fn shutdown(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id();
        // The shell's `kill` builtin: no extra program, no unsafe libc call.
        let kill = |signal: &str, target: &str| {
            let _ = StdCommand::new("sh")
                .args(["-c", "kill -s \"$0\" -- \"$1\"", signal, target])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        };
        kill("TERM", &pid.to_string());
        let deadline = Instant::now() + STOP_TIMEOUT;
        while matches!(child.try_wait(), Ok(None)) {
            if Instant::now() >= deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.wait();
        kill("KILL", &format!("-{pid}"));
    }
}

impl Drop for EximInstance {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- Exim of failed test ({}) ---\n{}",
                self.dir.path().display(),
                self.report()
            );
        }
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> SocketAddr {
        "127.0.0.1:4711".parse().expect("addr")
    }

    #[test]
    fn the_snippet_defines_the_policy_macro_once_and_has_an_acl_part() {
        let (main, acl) = snippet_parts(SNIPPET, policy()).expect("snippet splits");
        assert_eq!(
            main.lines()
                .filter(|l| l.starts_with(POLICY_MACRO))
                .collect::<Vec<_>>(),
            vec!["NOBOUNCE_POLICY = inet:127.0.0.1:4711"]
        );
        assert!(acl.starts_with(ACL_PART_MARKER), "{acl}");
        assert!(acl.contains("${readsocket{NOBOUNCE_POLICY}"), "{acl}");
    }

    #[test]
    fn only_the_policy_line_differs_from_the_docs() {
        let (main, acl) = snippet_parts(SNIPPET, policy()).expect("snippet splits");
        let docs: Vec<&str> = SNIPPET.lines().collect();
        let ours: Vec<String> = format!("{main}{acl}").lines().map(str::to_owned).collect();
        assert_eq!(docs.len(), ours.len());
        let differing: Vec<(&str, &String)> = docs
            .iter()
            .zip(&ours)
            .filter(|(d, o)| *d != *o)
            .map(|(d, o)| (*d, o))
            .collect();
        assert_eq!(
            differing,
            vec![(
                "NOBOUNCE_POLICY = inet:127.0.0.1:8895",
                &"NOBOUNCE_POLICY = inet:127.0.0.1:4711".to_owned()
            )]
        );
    }

    #[test]
    fn a_snippet_without_marker_or_with_two_policies_is_refused() {
        assert!(snippet_parts("NOBOUNCE_POLICY = x\n  warn\n", policy()).is_err());
        let two = format!("NOBOUNCE_POLICY = a\nNOBOUNCE_POLICY = b\n{ACL_PART_MARKER}\n");
        assert!(snippet_parts(&two, policy()).is_err());
    }

    #[test]
    fn config_routes_to_the_sink_and_applies_overrides() {
        let cfg = EximInstance::builder()
            .policy(policy())
            .relay_to("127.0.0.1:2526".parse().expect("addr"))
            .define("NOBOUNCE_421_DROP", "yes")
            .option("message_size_limit", "10K")
            .option("host_lookup", "*")
            .config(Path::new("/x"), Path::new("/x/exim4"), 2525, policy())
            .expect("config");
        assert!(cfg.starts_with("# Generated"), "{cfg}");
        assert!(cfg.contains("\nNOBOUNCE_421_DROP = yes\n"), "{cfg}");
        assert!(
            cfg.contains("\nNOBOUNCE_POLICY = inet:127.0.0.1:4711\n"),
            "{cfg}"
        );
        assert!(cfg.contains("\ndaemon_smtp_ports = 2525\n"), "{cfg}");
        assert!(cfg.contains("\nmessage_size_limit = 10K\n"), "{cfg}");
        assert_eq!(cfg.matches("\nhost_lookup = ").count(), 1, "{cfg}");
        assert!(cfg.contains("\nhost_lookup = *\n"), "{cfg}");
        assert!(cfg.contains("\n  port = 2526\n"), "{cfg}");
        // Macros first, then options, then the ACL with the snippet.
        let order = [
            "\nNOBOUNCE_421_DROP = ",
            "\nNOBOUNCE_POLICY = inet:",
            "\nexim_path = ",
            "\nacl_check_rcpt:\n",
            "${readsocket{NOBOUNCE_POLICY}",
            "\n  accept\n",
            "begin routers",
        ];
        let positions: Vec<usize> = order
            .iter()
            .map(|s| cfg.find(s).unwrap_or_else(|| panic!("{s} missing")))
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{cfg}");
    }

    #[test]
    fn without_sink_mail_goes_to_the_closed_discard_port() {
        let cfg = EximInstance::builder()
            .config(Path::new("/x"), Path::new("/x/exim4"), 2525, policy())
            .expect("config");
        assert!(cfg.contains("\n  port = 9\n"), "{cfg}");
    }
}
