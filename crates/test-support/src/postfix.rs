//! A private Postfix instance per test.
//!
//! Each [`PostfixInstance`] has its own `config_directory`,
//! `queue_directory`, `data_directory` and `maillog_file` inside a temporary
//! directory, listens for SMTP on a free port of 127.0.0.1, and is stopped
//! when dropped. Nothing under `/etc/postfix` is read for settings or
//! changed: `postfix -c DIR` works for root without `alternate_config_directories`
//! in the default `main.cf` (which Debian does not even install when
//! configured as "No configuration").

use crate::net::{free_port, LOOPBACK};
use crate::wait::wait_until;
use serde::Deserialize;
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command as StdCommand, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;
use tokio::process::Command;

/// Domains Postfix relays for unless changed with
/// [`PostfixBuilder::relay_domains`]: write test recipients `@example.test`.
const DEFAULT_RELAY_DOMAINS: &[&str] = &["example.test"];

/// `myhostname` of every test instance (the milter's `j` macro).
pub const MYHOSTNAME: &str = "mx.nobounce.test";

/// Attempts to start when the picked SMTP port was taken in the meantime.
const START_ATTEMPTS: usize = 3;

/// How long [`Drop`] waits for the master to exit after SIGTERM before
/// killing its process group.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Lines of the Postfix log shown when a test panics or a wait times out.
const LOG_TAIL_LINES: usize = 40;

/// Configures a [`PostfixInstance`]; see [`PostfixInstance::builder`].
#[derive(Debug, Clone, Default)]
pub struct PostfixBuilder {
    milters: Vec<SocketAddr>,
    relay_to: Option<SocketAddr>,
    relay_domains: Option<Vec<String>>,
    lmtp: Option<(SocketAddr, Vec<String>)>,
    params: Vec<(String, String)>,
    master_lines: Vec<String>,
}

impl PostfixBuilder {
    /// Adds a milter (`smtpd_milters = inet:127.0.0.1:PORT`); call again for
    /// several, in order. The harness sets `milter_protocol = 6`,
    /// `milter_default_action = tempfail` and macro lists that include
    /// `{client_addr}`, `j`, `i`, `{auth_authen}`, `{mail_addr}`,
    /// `{rcpt_addr}`.
    pub fn milter(mut self, addr: SocketAddr) -> Self {
        self.milters.push(addr);
        self
    }

    /// Asks the policy service at `addr` (`check_policy_service
    /// inet:IP:PORT`) for every recipient, before anything else in
    /// `smtpd_recipient_restrictions` (so clients in `mynetworks` are asked
    /// too), and at end of data (`smtpd_end_of_data_restrictions`).
    pub fn policy_service(mut self, addr: SocketAddr) -> Self {
        let check = format!("check_policy_service inet:{}:{}", addr.ip(), addr.port());
        set(&mut self.params, "smtpd_recipient_restrictions", &check);
        set(&mut self.params, "smtpd_end_of_data_restrictions", &check);
        self
    }

    /// Relays all accepted mail, bounces included, to `addr`
    /// (`relayhost = [ip]:port`), normally an [`SmtpSink`](crate::SmtpSink).
    ///
    /// Without a relay target, mail that is not routed to LMTP is accepted
    /// and stays queued (`defer_transports = smtp, relay`, reason "deferred
    /// transport"); after [`flush`](crate::PostfixInstance::flush) Postfix
    /// tries `[127.0.0.1]:9` and defers again. It never looks up MX records
    /// or connects anywhere off loopback.
    pub fn relay_to(mut self, addr: SocketAddr) -> Self {
        self.relay_to = Some(addr);
        self
    }

    /// Domains Postfix accepts mail for from clients outside `mynetworks`
    /// (`relay_domains`; default `example.test`). Clients in `mynetworks`
    /// (default 127.0.0.0/8) may relay to any domain.
    pub fn relay_domains(mut self, domains: &[&str]) -> Self {
        self.relay_domains = Some(domains.iter().map(|d| d.to_string()).collect());
        self
    }

    /// Delivers mail for `domains` over LMTP to `addr`
    /// (`virtual_mailbox_domains = domains`,
    /// `virtual_transport = lmtp:inet:127.0.0.1:PORT`), e.g. Dovecot. These
    /// domains are removed from `relay_domains`.
    pub fn lmtp(mut self, addr: SocketAddr, domains: &[&str]) -> Self {
        self.lmtp = Some((addr, domains.iter().map(|d| d.to_string()).collect()));
        self
    }

    /// Sets a `main.cf` parameter, overriding the harness's value if it has
    /// one (e.g. `("mynetworks", "127.0.0.1/32")`,
    /// `("smtpd_delay_open_until_valid_rcpt", "no")`,
    /// `("message_size_limit", "100000")`).
    pub fn param(mut self, name: &str, value: &str) -> Self {
        set(&mut self.params, name, value);
        self
    }

    /// Appends a raw line to `master.cf` (e.g. a second `smtpd` service with
    /// `-o` overrides). Remember `chroot = n`: the queue is in a temp dir.
    pub fn master_cf_line(mut self, line: &str) -> Self {
        self.master_lines.push(line.to_owned());
        self
    }

    /// Writes the configuration, runs `postfix -c DIR start` and returns once
    /// the master is up and the SMTP port is listening.
    ///
    /// Errors (with the Postfix log in the message) when Postfix cannot be
    /// found or started; requires root (Postfix drops to `mail_owner =
    /// postfix` itself).
    pub async fn start(self) -> io::Result<PostfixInstance> {
        if !crate::require::running_as_root() {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "a Postfix test instance must be started as root",
            ));
        }
        let bins = Binaries::find()?;
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            match self.try_start(&bins).await {
                Ok(instance) => return Ok(instance),
                // Someone took the port between free_port() and master's bind.
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => last_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_error.expect("the loop ran at least once"))
    }

    async fn try_start(&self, bins: &Binaries) -> io::Result<PostfixInstance> {
        let dir = tempfile::Builder::new()
            .prefix("nobounce-e2e-postfix.")
            .tempdir()?;
        // Postfix daemons (user postfix) must reach paths below it.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))?;
        let conf_dir = dir.path().join("conf");
        let queue_dir = dir.path().join("queue");
        fs::create_dir(&conf_dir)?;
        // Root-owned 0755 like /var/spool/postfix; postfix creates the rest.
        fs::create_dir(&queue_dir)?;
        // data_directory is left to post-install, which makes it owned by
        // mail_owner (the master's lock file lives there).
        let port = free_port()?;
        let smtp_addr = SocketAddr::new(LOOPBACK, port);
        write_settled(&conf_dir.join("main.cf"), &self.main_cf(dir.path()))?;
        write_settled(&conf_dir.join("master.cf"), &self.master_cf(port))?;

        let mut instance = PostfixInstance {
            log_path: dir.path().join("maillog"),
            conf_dir,
            queue_dir,
            smtp_addr,
            bins: bins.clone(),
            master_pid: None,
            dir,
        };
        // Output goes to a file: master inherits the descriptors, so pipes
        // would never reach EOF.
        let out_path = instance.dir.path().join("postfix-start.out");
        let out = fs::File::create(&out_path)?;
        let status = Command::new(&bins.postfix)
            .arg("-c")
            .arg(&instance.conf_dir)
            .arg("start")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .status()
            .await?;
        instance.master_pid = instance.read_master_pid();
        if !status.success() {
            let log = instance.log();
            let output = fs::read_to_string(&out_path).unwrap_or_default();
            let kind = if log.contains("Address already in use") {
                io::ErrorKind::AddrInUse
            } else {
                io::ErrorKind::Other
            };
            return Err(io::Error::new(
                kind,
                format!("postfix start failed ({status}):\n{output}\n--- maillog ---\n{log}"),
            ));
        }
        Ok(instance)
    }

    fn main_cf(&self, dir: &Path) -> String {
        let d = dir.display();
        let mut p: Vec<(String, String)> = Vec::new();
        let mut put = |k: &str, v: &str| set(&mut p, k, v);
        put("compatibility_level", "3.6");
        put("queue_directory", &format!("{d}/queue"));
        put("data_directory", &format!("{d}/data"));
        put("mail_owner", "postfix");
        put("setgid_group", "postdrop");
        put("syslog_name", "postfix-e2e");
        // Log to a file, no syslog needed (Postfix >= 3.4; needs the postlog
        // service in master.cf and the path under maillog_file_prefixes).
        put("maillog_file", &format!("{d}/maillog"));
        put("maillog_file_prefixes", &format!("{d}"));
        put("myhostname", MYHOSTNAME);
        put("mydomain", "nobounce.test");
        put("myorigin", "$myhostname");
        put("mydestination", "");
        put("inet_interfaces", "127.0.0.1");
        put("inet_protocols", "ipv4");
        put("mynetworks", "127.0.0.0/8");
        put(
            "smtpd_relay_restrictions",
            "permit_mynetworks, reject_unauth_destination",
        );
        put("smtpd_recipient_restrictions", "");
        put("smtpd_banner", "$myhostname ESMTP Postfix (nobounce-e2e)");
        // No DNS anywhere: no PTR lookup of clients, no MX/A lookups of
        // next hops (which are numeric anyway).
        put("smtpd_peername_lookup", "no");
        put("smtp_dns_support_level", "disabled");
        put("lmtp_dns_support_level", "disabled");
        put("smtp_host_lookup", "native");
        put("lmtp_host_lookup", "native");
        put("append_dot_mydomain", "no");
        put("alias_maps", "");
        put("alias_database", "");
        put("local_recipient_maps", "");
        put("biff", "no");
        // Retry deferred mail quickly (e.g. when a sink comes up late).
        put("queue_run_delay", "1s");
        put("minimal_backoff_time", "1s");
        put("maximal_backoff_time", "2s");
        // Milter settings.
        put("milter_protocol", "6");
        put("milter_default_action", "tempfail");
        put("milter_connect_timeout", "5s");
        put("milter_command_timeout", "10s");
        put("milter_content_timeout", "10s");
        put(
            "milter_connect_macros",
            "j {daemon_name} {daemon_addr} v _ {client_addr} {client_name}",
        );
        put(
            "milter_mail_macros",
            "i {auth_type} {auth_authen} {auth_author} {mail_addr} {mail_host} {mail_mailer} {client_addr}",
        );
        put(
            "milter_rcpt_macros",
            "i {rcpt_addr} {rcpt_host} {rcpt_mailer}",
        );
        put("milter_data_macros", "i");
        // Open the queue file at MAIL FROM instead of after the first valid
        // RCPT, so the milter gets the queue id `i` from the RCPT stage on
        // (Postfix's default `yes` sends it only from DATA on).
        put("smtpd_delay_open_until_valid_rcpt", "no");
        put("milter_end_of_data_macros", "i");
        let milters: Vec<String> = self
            .milters
            .iter()
            .map(|a| format!("inet:{}:{}", a.ip(), a.port()))
            .collect();
        put("smtpd_milters", &milters.join(", "));
        // Postfix's own bounces are not filtered.
        put("non_smtpd_milters", "");

        // Routing.
        let lmtp_domains = self.lmtp.as_ref().map(|(_, d)| d.as_slice()).unwrap_or(&[]);
        let default_relay: Vec<String> = DEFAULT_RELAY_DOMAINS
            .iter()
            .map(|s| s.to_string())
            .collect();
        let relay_domains: Vec<&String> = self
            .relay_domains
            .as_ref()
            .unwrap_or(&default_relay)
            .iter()
            .filter(|d| !lmtp_domains.iter().any(|l| l.eq_ignore_ascii_case(d)))
            .collect();
        put(
            "relay_domains",
            &relay_domains
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        );
        match self.relay_to {
            Some(sink) => put("relayhost", &format!("[{}]:{}", sink.ip(), sink.port())),
            None => {
                // Keep accepted mail queued without any delivery attempt.
                // (`default_transport = retry:...` would make smtpd reject
                // the recipients.) A flush tries the closed port 9 on
                // loopback and defers again.
                put("defer_transports", "smtp, relay");
                put("relayhost", "[127.0.0.1]:9");
            }
        }
        if let Some((addr, domains)) = &self.lmtp {
            put("virtual_mailbox_domains", &domains.join(", "));
            put("virtual_mailbox_maps", "");
            put(
                "virtual_transport",
                &format!("lmtp:inet:{}:{}", addr.ip(), addr.port()),
            );
        }

        for (k, v) in &self.params {
            set(&mut p, k, v);
        }
        let mut out = String::from("# Generated by nobounce-e2e for a single test.\n");
        for (k, v) in &p {
            let _ = writeln!(out, "{k} = {v}");
        }
        out
    }

    fn master_cf(&self, port: u16) -> String {
        // Like Debian's master.cf, but chroot = n everywhere (the queue is in
        // a temp dir) and smtpd only on 127.0.0.1:port.
        let mut out = format!(
            "# Generated by nobounce-e2e for a single test.\n\
             # service type  private unpriv  chroot  wakeup  maxproc command\n\
             127.0.0.1:{port} inet n - n - - smtpd\n"
        );
        out.push_str(
            "pickup     unix  n - n 60    1 pickup\n\
             cleanup    unix  n - n -     0 cleanup\n\
             qmgr       unix  n - n 300   1 qmgr\n\
             rewrite    unix  - - n -     - trivial-rewrite\n\
             bounce     unix  - - n -     0 bounce\n\
             defer      unix  - - n -     0 bounce\n\
             trace      unix  - - n -     0 bounce\n\
             verify     unix  - - n -     1 verify\n\
             flush      unix  n - n 1000? 0 flush\n\
             proxymap   unix  - - n -     - proxymap\n\
             proxywrite unix  - - n -     1 proxymap\n\
             smtp       unix  - - n -     - smtp\n\
             relay      unix  - - n -     - smtp\n\
             showq      unix  n - n -     - showq\n\
             error      unix  - - n -     - error\n\
             retry      unix  - - n -     - error\n\
             discard    unix  - - n -     - discard\n\
             lmtp       unix  - - n -     - lmtp\n\
             anvil      unix  - - n -     1 anvil\n\
             scache     unix  - - n -     1 scache\n\
             postlog    unix-dgram n - n - 1 postlogd\n",
        );
        for line in &self.master_lines {
            out.push_str(line);
            out.push('\n');
        }
        out
    }
}

/// Writes a configuration file with a modification time in the past.
///
/// Postfix does not trust a `main.cf` changed within the last second or so
/// (it might still be being edited): every Postfix command re-reads it every
/// 300 ms until it is old enough, which made each start take ~2 s.
fn write_settled(path: &Path, contents: &str) -> io::Result<()> {
    fs::write(path, contents)?;
    let past = std::time::SystemTime::now() - Duration::from_secs(60);
    fs::File::options()
        .write(true)
        .open(path)?
        .set_times(fs::FileTimes::new().set_accessed(past).set_modified(past))
}

/// Replaces the value of `name` or appends it (main.cf: one line per name).
fn set(params: &mut Vec<(String, String)>, name: &str, value: &str) {
    match params.iter_mut().find(|(k, _)| k == name) {
        Some((_, v)) => *v = value.to_owned(),
        None => params.push((name.to_owned(), value.to_owned())),
    }
}

/// Absolute paths of the Postfix programs the harness runs.
#[derive(Debug, Clone)]
struct Binaries {
    postfix: PathBuf,
    postqueue: PathBuf,
    master: PathBuf,
}

impl Binaries {
    fn find() -> io::Result<Self> {
        let find = |name: &str| {
            crate::find_binary(name)
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{name} not found")))
        };
        let postconf = find("postconf")?;
        // Ask for the compiled-in default; the instance does not override it.
        let out = StdCommand::new(&postconf)
            .args(["-d", "-h", "daemon_directory"])
            .stderr(Stdio::null())
            .output()?;
        let daemon_dir = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if !out.status.success() || daemon_dir.is_empty() {
            return Err(io::Error::other("postconf -d daemon_directory failed"));
        }
        Ok(Self {
            postfix: find("postfix")?,
            postqueue: find("postqueue")?,
            master: Path::new(&daemon_dir).join("master"),
        })
    }
}

/// A message in the Postfix queue, as `postqueue -j` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct QueuedMessage {
    /// `incoming`, `active`, `deferred`, `hold` or `maildrop`.
    pub queue_name: String,
    /// The queue id (Postfix log lines start with it).
    pub queue_id: String,
    /// Envelope sender; empty for a bounce.
    pub sender: String,
    /// Recipients still to be delivered.
    #[serde(default)]
    pub recipients: Vec<QueuedRecipient>,
    /// Size in bytes.
    #[serde(default)]
    pub message_size: u64,
}

impl QueuedMessage {
    /// A bounce or other notification (null sender).
    pub fn is_bounce(&self) -> bool {
        self.sender.is_empty() || self.sender.eq_ignore_ascii_case("MAILER-DAEMON")
    }
}

/// One recipient of a [`QueuedMessage`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct QueuedRecipient {
    /// The recipient address.
    pub address: String,
    /// Why delivery was deferred, if it was.
    #[serde(default)]
    pub delay_reason: Option<String>,
}

/// A running Postfix, stopped (master and all its processes) and deleted on
/// drop. Created by [`PostfixInstance::builder`].
///
/// The generated `main.cf` (see [`main_cf`](Self::main_cf)) sets, besides
/// what the builder chose: private `queue_directory`/`data_directory`,
/// `maillog_file`, `myhostname = mx.nobounce.test`, `mydestination =` (empty),
/// `inet_interfaces = 127.0.0.1`, `inet_protocols = ipv4`,
/// `mynetworks = 127.0.0.0/8`, `relay_domains = example.test`,
/// `smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination`,
/// no DNS lookups (`smtpd_peername_lookup = no`,
/// `smtp_dns_support_level = disabled`, `smtp_host_lookup = native`), short
/// retry times (`queue_run_delay = 1s`, backoff 1–2 s), milter timeouts of
/// 5–10 s and `smtpd_delay_open_until_valid_rcpt = no` (the milter gets the
/// queue id `i` from RCPT on; set it to `yes` with
/// [`PostfixBuilder::param`] to test Postfix's default, where `i` arrives at
/// DATA). Clients show up as `unknown[127.0.0.1]`.
///
/// When a test panics, dropping the instance prints the tail of the Postfix
/// log to stderr.
#[derive(Debug)]
pub struct PostfixInstance {
    dir: TempDir,
    conf_dir: PathBuf,
    queue_dir: PathBuf,
    log_path: PathBuf,
    smtp_addr: SocketAddr,
    bins: Binaries,
    master_pid: Option<u32>,
}

impl PostfixInstance {
    /// A builder; [`PostfixBuilder::start`] starts the instance.
    pub fn builder() -> PostfixBuilder {
        PostfixBuilder::default()
    }

    /// Where Postfix's smtpd listens (`127.0.0.1:port`).
    pub fn smtp_addr(&self) -> SocketAddr {
        self.smtp_addr
    }

    /// The temporary directory holding everything of this instance.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `config_directory` (pass to `postconf -c`, `postqueue -c`, ...).
    pub fn config_dir(&self) -> &Path {
        &self.conf_dir
    }

    /// `queue_directory`.
    pub fn queue_dir(&self) -> &Path {
        &self.queue_dir
    }

    /// The `maillog_file`.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The generated `main.cf`.
    pub fn main_cf(&self) -> String {
        fs::read_to_string(self.conf_dir.join("main.cf")).unwrap_or_default()
    }

    /// The whole Postfix log so far (empty if nothing was logged yet).
    /// Logging goes through `postlogd`, so a line can appear a moment after
    /// the event; use [`wait_for_log`](Self::wait_for_log) to wait for one.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Log lines containing `needle`.
    pub fn log_lines_containing(&self, needle: &str) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }

    /// Waits for a log line containing `needle` and returns the first one.
    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) -> io::Result<String> {
        crate::poll_until(&format!("log line with {needle:?}"), timeout, || {
            let found = self.log_lines_containing(needle).into_iter().next();
            async move { Ok(found) }
        })
        .await
        .map_err(|e| self.with_log_tail(e))
    }

    /// Log lines showing that Postfix bounced something: a recipient with
    /// `status=bounced`, or a `sender non-delivery notification` created.
    pub fn bounce_log_lines(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| {
                l.contains("status=bounced")
                    || l.contains("sender non-delivery notification")
                    || l.contains("sender delivery status notification")
            })
            .map(str::to_owned)
            .collect()
    }

    /// Panics when the log shows a bounce or the queue holds one.
    ///
    /// Call it after [`wait_until_queue_empty`](Self::wait_until_queue_empty)
    /// (or once deliveries settled), as bounces are created asynchronously;
    /// also check [`SmtpSink::has_bounce`](crate::SmtpSink::has_bounce).
    #[track_caller]
    pub fn assert_no_bounce(&self) {
        let lines = self.bounce_log_lines();
        assert!(lines.is_empty(), "Postfix bounced:\n{}", lines.join("\n"));
    }

    /// Messages in the queue (`postqueue -c DIR -j`).
    pub async fn queued_messages(&self) -> io::Result<Vec<QueuedMessage>> {
        let out = Command::new(&self.bins.postqueue)
            .arg("-c")
            .arg(&self.conf_dir)
            .arg("-j")
            .stdin(Stdio::null())
            .output()
            .await?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "postqueue -j failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l).map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("postqueue -j: {e}: {l}"),
                    )
                })
            })
            .collect()
    }

    /// Whether no message is queued.
    pub async fn queue_is_empty(&self) -> io::Result<bool> {
        Ok(self.queued_messages().await?.is_empty())
    }

    /// Waits until the queue is empty (every message delivered or bounced);
    /// on timeout the error lists the queue and the log tail.
    pub async fn wait_until_queue_empty(&self, timeout: Duration) -> io::Result<()> {
        let waited = wait_until("empty Postfix queue", timeout, || self.queue_is_empty()).await;
        match waited {
            Ok(()) => Ok(()),
            Err(e) => {
                let queue = self.queued_messages().await.unwrap_or_default();
                Err(self
                    .with_log_tail(io::Error::new(e.kind(), format!("{e}; queued: {queue:#?}"))))
            }
        }
    }

    /// `postqueue -f`: attempt to deliver all queued mail now.
    pub async fn flush(&self) -> io::Result<()> {
        let status = Command::new(&self.bins.postqueue)
            .arg("-c")
            .arg(&self.conf_dir)
            .arg("-f")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .await?;
        if status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!("postqueue -f failed ({status})")))
        }
    }

    /// Runs `postsuper -c DIR ARGS` (as an admin would: `-H ID` releases a
    /// held message, `-d ID` deletes one) and returns its output.
    pub async fn postsuper(&self, args: &[&str]) -> io::Result<String> {
        let postsuper = crate::find_binary("postsuper")
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "postsuper not found"))?;
        let out = Command::new(postsuper)
            .arg("-c")
            .arg(&self.conf_dir)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            Ok(text)
        } else {
            Err(io::Error::other(format!(
                "postsuper {args:?} failed ({}): {text}",
                out.status
            )))
        }
    }

    /// Stops Postfix now (also done on drop) and returns the final log.
    pub fn stop(mut self) -> String {
        self.shutdown();
        self.log()
    }

    fn read_master_pid(&self) -> Option<u32> {
        fs::read_to_string(self.queue_dir.join("pid/master.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }

    fn with_log_tail(&self, e: io::Error) -> io::Error {
        io::Error::new(
            e.kind(),
            format!("{e}\n--- Postfix log (tail) ---\n{}", self.log_tail()),
        )
    }

    /// `master -t` exits 0 when no master holds this instance's lock.
    fn master_running(&self) -> bool {
        StdCommand::new(&self.bins.master)
            .arg("-c")
            .arg(&self.conf_dir)
            .arg("-t")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| !s.success())
    }

    /// SIGTERM to the master (which terminates its children), wait, and
    /// SIGKILL the whole process group if it does not go away.
    fn shutdown(&mut self) {
        let Some(pid) = self.master_pid.take().or_else(|| self.read_master_pid()) else {
            return;
        };
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
        while self.master_running() {
            if Instant::now() >= deadline {
                // `master -w` daemonizes as session and process group leader.
                kill("KILL", &format!("-{pid}"));
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for PostfixInstance {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- Postfix log of failed test ({}) ---\n{}",
                self.log_path.display(),
                self.log_tail()
            );
        }
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(main_cf: &str, name: &str) -> Option<String> {
        main_cf
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} = ")).map(str::to_owned))
    }

    #[test]
    fn params_override_harness_defaults_once() {
        let b = PostfixInstance::builder()
            .param("mynetworks", "127.0.0.1/32")
            .param("message_size_limit", "1000");
        let cf = b.main_cf(Path::new("/x"));
        assert_eq!(value(&cf, "mynetworks").as_deref(), Some("127.0.0.1/32"));
        assert_eq!(value(&cf, "message_size_limit").as_deref(), Some("1000"));
        assert_eq!(cf.matches("\nmynetworks = ").count(), 1);
    }

    #[test]
    fn milters_and_relay_target() {
        let b = PostfixInstance::builder()
            .milter("127.0.0.1:7001".parse().expect("addr"))
            .milter("127.0.0.1:7002".parse().expect("addr"))
            .relay_to("127.0.0.1:2525".parse().expect("addr"));
        let cf = b.main_cf(Path::new("/x"));
        assert_eq!(
            value(&cf, "smtpd_milters").as_deref(),
            Some("inet:127.0.0.1:7001, inet:127.0.0.1:7002")
        );
        assert_eq!(value(&cf, "relayhost").as_deref(), Some("[127.0.0.1]:2525"));
        assert_eq!(value(&cf, "defer_transports"), None);
    }

    #[test]
    fn without_relay_target_mail_is_deferred_not_looked_up() {
        let cf = PostfixInstance::builder().main_cf(Path::new("/x"));
        assert_eq!(
            value(&cf, "defer_transports").as_deref(),
            Some("smtp, relay")
        );
        assert_eq!(value(&cf, "relayhost").as_deref(), Some("[127.0.0.1]:9"));
    }

    #[test]
    fn lmtp_domains_leave_relay_domains() {
        let b = PostfixInstance::builder()
            .relay_domains(&["example.test", "mbox.test"])
            .lmtp("127.0.0.1:2424".parse().expect("addr"), &["mbox.test"]);
        let cf = b.main_cf(Path::new("/x"));
        assert_eq!(value(&cf, "relay_domains").as_deref(), Some("example.test"));
        assert_eq!(
            value(&cf, "virtual_mailbox_domains").as_deref(),
            Some("mbox.test")
        );
        assert_eq!(
            value(&cf, "virtual_transport").as_deref(),
            Some("lmtp:inet:127.0.0.1:2424")
        );
    }

    #[test]
    fn queue_json_parses() {
        let line = r#"{"queue_name": "deferred", "queue_id": "4F2A1", "arrival_time": 1700000000, "message_size": 321, "forced_expire": false, "sender": "", "recipients": [{"address": "a@sender.test", "delay_reason": "connect refused"}]}"#;
        let m: QueuedMessage = serde_json::from_str(line).expect("parses");
        assert!(m.is_bounce());
        assert_eq!(
            m.recipients[0].delay_reason.as_deref(),
            Some("connect refused")
        );
    }
}
