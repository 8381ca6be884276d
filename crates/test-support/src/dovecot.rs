//! A private Dovecot (LMTP and quota-status) per test.
//!
//! Each [`DovecotInstance`] runs `dovecot -F -c CONF` as a child process of
//! the test, in its own process group, with `base_dir`, `state_dir`, log
//! file, user database and Maildirs inside a temporary directory. LMTP and
//! quota-status listen on free ports of 127.0.0.1 only. The configuration
//! is the one `docs/recipients.md` describes: passwd-file users with a
//! per-user quota rule, the `maildir` quota backend, `lmtp_rcpt_check_quota
//! = yes` (Dovecot refuses a full mailbox at `RCPT TO`, which is what the
//! `rcpt_probe` backend asks), and the `quota-status` policy service.
//!
//! The instance can be [stopped](DovecotInstance::stop) and
//! [started](DovecotInstance::start) again on the same ports to simulate an
//! outage; it is stopped (SIGTERM, then SIGKILL of its process group) when
//! dropped, and the master is always reaped, so no Dovecot process outlives
//! the test.

use crate::client::{Reply, SmtpClient};
use crate::net::{free_port, LOOPBACK};
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;
use tokio::net::TcpStream;

/// Quota of users added with [`DovecotBuilder::user`]: 1 MiB.
pub const DEFAULT_QUOTA: u64 = 1 << 20;

/// `quota_grace` of every instance, in percent of a user's limit: a message
/// may take a mailbox that is under its quota up to this much over it (the
/// Dovecot default, set explicitly so tests can rely on it). quota-status
/// applies it to the declared `size=` as well.
pub const QUOTA_GRACE_PERCENT: u64 = 10;

/// uid and gid the mail is stored as (`nobody:nogroup` on Debian).
const MAIL_UID: u32 = 65534;
const MAIL_GID: u32 = 65534;

/// Attempts to start when a picked port was taken in the meantime.
const START_ATTEMPTS: usize = 3;
/// How long a start may take until LMTP and quota-status answer.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the master may take to exit after SIGTERM before its process
/// group is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Lines of the Dovecot log shown when a test panics.
const LOG_TAIL_LINES: usize = 40;

/// One mailbox of the instance.
#[derive(Debug, Clone)]
struct User {
    address: String,
    quota: u64,
}

/// Configures a [`DovecotInstance`]; see [`DovecotInstance::builder`].
#[derive(Debug, Clone)]
pub struct DovecotBuilder {
    users: Vec<User>,
    quota_status_nouser: String,
    settings: Vec<String>,
}

impl Default for DovecotBuilder {
    fn default() -> Self {
        Self {
            users: Vec::new(),
            quota_status_nouser: "550 5.1.1 User unknown".into(),
            settings: Vec::new(),
        }
    }
}

impl DovecotBuilder {
    /// Adds a mailbox `local@domain` with the [`DEFAULT_QUOTA`].
    pub fn user(self, address: &str) -> Self {
        self.user_with_quota(address, DEFAULT_QUOTA)
    }

    /// Adds a mailbox `local@domain` whose storage quota is `bytes`
    /// (`userdb_quota_rule=*:storage=<bytes>B` in the passwd-file).
    ///
    /// # Panics
    ///
    /// When `address` is not a plain lowercase `local@domain` (the harness
    /// turns it into a passwd-file line and a directory name).
    pub fn user_with_quota(mut self, address: &str, bytes: u64) -> Self {
        let valid = address.split_once('@').is_some_and(|(local, domain)| {
            let ok = |s: &str| {
                !s.is_empty()
                    && !s.starts_with('.')
                    && s.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-+".contains(&b)
                    })
            };
            ok(local) && ok(domain)
        });
        assert!(valid, "not a plain lowercase address: {address:?}");
        self.users.push(User {
            address: address.to_owned(),
            quota: bytes,
        });
        self
    }

    /// What quota-status answers for an address that has no mailbox
    /// (`quota_status_nouser`). Default: `550 5.1.1 User unknown`, so that
    /// quota-status is an existence source too; Dovecot's own default is
    /// `REJECT Unknown user`, and `DUNNO` suits a chain where an existence
    /// source comes first.
    pub fn quota_status_nouser(mut self, action: &str) -> Self {
        action.clone_into(&mut self.quota_status_nouser);
        self
    }

    /// Appends a raw line to `dovecot.conf` (a later setting overrides an
    /// earlier one).
    pub fn setting(mut self, line: &str) -> Self {
        self.settings.push(line.to_owned());
        self
    }

    /// Writes the configuration, starts Dovecot and returns once LMTP and
    /// quota-status accept connections. Requires root (Dovecot drops to
    /// `nobody` for mail and to `dovecot`/`dovenull` for its services).
    pub async fn start(self) -> io::Result<DovecotInstance> {
        if !crate::require::running_as_root() {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "a Dovecot test instance must be started as root",
            ));
        }
        let binary = crate::find_binary("dovecot")
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "dovecot not found"))?;
        let dir = tempfile::Builder::new()
            .prefix("nobounce-e2e-dovecot.")
            .tempdir()?;
        // The mail user (nobody) and Dovecot's own users must reach paths
        // below it.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))?;
        let mail_dir = dir.path().join("mail");
        fs::create_dir(&mail_dir)?;
        std::os::unix::fs::chown(&mail_dir, Some(MAIL_UID), Some(MAIL_GID))?;
        fs::write(dir.path().join("users"), self.passwd_file(dir.path()))?;

        let mut instance = DovecotInstance {
            config_path: dir.path().join("dovecot.conf"),
            log_path: dir.path().join("dovecot.log"),
            binary,
            lmtp_addr: SocketAddr::new(LOOPBACK, 0),
            quota_status_addr: SocketAddr::new(LOOPBACK, 0),
            users: self.users.clone(),
            child: None,
            dir,
        };
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            instance.lmtp_addr = SocketAddr::new(LOOPBACK, free_port()?);
            instance.quota_status_addr = SocketAddr::new(LOOPBACK, free_port()?);
            fs::write(
                &instance.config_path,
                self.dovecot_conf(
                    instance.dir.path(),
                    instance.lmtp_addr.port(),
                    instance.quota_status_addr.port(),
                ),
            )?;
            match instance.start().await {
                Ok(()) => return Ok(instance),
                // Someone took a port between free_port() and Dovecot's bind.
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => last_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_error.expect("the loop ran at least once"))
    }

    fn passwd_file(&self, dir: &Path) -> String {
        // user:password:uid:gid:gecos:home:shell:extra fields
        let mut out = String::new();
        for user in &self.users {
            let _ = writeln!(
                out,
                "{}:{{PLAIN}}unused:{MAIL_UID}:{MAIL_GID}::{}::userdb_quota_rule=*:storage={}B",
                user.address,
                home(dir, &user.address).display(),
                user.quota,
            );
        }
        out
    }

    fn dovecot_conf(&self, dir: &Path, lmtp_port: u16, quota_status_port: u16) -> String {
        let d = dir.display();
        let mut out = format!(
            "# Generated by nobounce-e2e for a single test.\n\
             instance_name = nobounce-e2e-{lmtp_port}\n\
             base_dir = {d}/run\n\
             state_dir = {d}/state\n\
             log_path = {d}/dovecot.log\n\
             protocols = lmtp\n\
             listen = 127.0.0.1\n\
             ssl = no\n\
             default_internal_user = dovecot\n\
             default_login_user = dovenull\n\
             passdb {{\n  driver = passwd-file\n  args = {d}/users\n}}\n\
             userdb {{\n  driver = passwd-file\n  args = {d}/users\n}}\n\
             mail_location = maildir:~/Maildir\n\
             mail_plugins = quota\n\
             plugin {{\n\
             \x20 quota = maildir:User quota\n\
             \x20 quota_rule = *:storage={DEFAULT_QUOTA}B\n\
             \x20 quota_grace = {QUOTA_GRACE_PERCENT}%%\n\
             \x20 quota_status_success = DUNNO\n\
             \x20 quota_status_nouser = {nouser}\n\
             \x20 quota_status_overquota = 552 5.2.2 Mailbox is full\n\
             }}\n\
             # Refuse a full mailbox at RCPT TO already.\n\
             lmtp_rcpt_check_quota = yes\n\
             service lmtp {{\n\
             \x20 inet_listener lmtp {{\n    address = 127.0.0.1\n    port = {lmtp_port}\n  }}\n\
             \x20 unix_listener lmtp {{\n    mode = 0666\n  }}\n\
             }}\n\
             service quota-status {{\n\
             \x20 executable = quota-status -p postfix\n\
             \x20 inet_listener {{\n    address = 127.0.0.1\n    port = {quota_status_port}\n  }}\n\
             \x20 client_limit = 1\n\
             }}\n",
            nouser = self.quota_status_nouser,
        );
        for line in &self.settings {
            out.push_str(line);
            out.push('\n');
        }
        out
    }
}

/// Home directory of `address` below `dir`: `mail/<domain>/<local>`.
fn home(dir: &Path, address: &str) -> PathBuf {
    let (local, domain) = address
        .split_once('@')
        .expect("addresses were checked by the builder");
    dir.join("mail").join(domain).join(local)
}

/// A running Dovecot serving LMTP and quota-status on loopback, stopped and
/// deleted on drop. Created by [`DovecotInstance::builder`].
///
/// ```no_run
/// # async fn f() -> std::io::Result<()> {
/// use nobounce_test_support::{DovecotInstance, MessageBuilder};
/// let dovecot = DovecotInstance::builder()
///     .user("alice@mbox.test")
///     .user_with_quota("full@mbox.test", 20_000)
///     .start()
///     .await?;
/// dovecot.fill_over_quota("full@mbox.test").await?;
/// let reply = dovecot
///     .deliver("alice@mbox.test", &MessageBuilder::new().subject("hi").build())
///     .await?;
/// assert_eq!(reply.code, 250);
/// assert_eq!(dovecot.messages("alice@mbox.test")?.len(), 1);
/// # Ok(()) }
/// ```
///
/// When a test panics, dropping the instance prints the tail of the
/// Dovecot log to stderr.
#[derive(Debug)]
pub struct DovecotInstance {
    dir: TempDir,
    config_path: PathBuf,
    log_path: PathBuf,
    binary: PathBuf,
    lmtp_addr: SocketAddr,
    quota_status_addr: SocketAddr,
    users: Vec<User>,
    child: Option<Child>,
}

impl DovecotInstance {
    /// A builder; [`DovecotBuilder::start`] starts the instance.
    pub fn builder() -> DovecotBuilder {
        DovecotBuilder::default()
    }

    /// Where LMTP listens (`127.0.0.1:port`): Postfix's `virtual_transport`
    /// and the `rcpt_probe` backend's `address`.
    pub fn lmtp_addr(&self) -> SocketAddr {
        self.lmtp_addr
    }

    /// Where quota-status listens (`127.0.0.1:port`): the `quota_status`
    /// backend's `address`.
    pub fn quota_status_addr(&self) -> SocketAddr {
        self.quota_status_addr
    }

    /// The temporary directory holding everything of this instance.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The generated `dovecot.conf`.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Dovecot's `log_path`.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The whole Dovecot log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// A position in the log, for [`log_since`](Self::log_since): what was
    /// logged before it is left out.
    pub fn log_mark(&self) -> u64 {
        fs::metadata(&self.log_path).map_or(0, |m| m.len())
    }

    /// The log written after `mark` (see [`log_mark`](Self::log_mark)).
    pub fn log_since(&self, mark: u64) -> String {
        let log = fs::read(&self.log_path).unwrap_or_default();
        let start = usize::try_from(mark).unwrap_or(usize::MAX).min(log.len());
        String::from_utf8_lossy(&log[start..]).into_owned()
    }

    /// Log lines of `address`'s mail sessions after `mark`: Dovecot writes
    /// `lmtp(<address>)<pid><session>: ...` when it delivers to, or fails
    /// to deliver to, that mailbox (`saved mail to INBOX`, `save failed to
    /// INBOX: Quota exceeded`). A refused `RCPT TO` writes none.
    pub fn mail_log_lines(&self, address: &str, mark: u64) -> Vec<String> {
        let needle = format!("lmtp({address})");
        self.log_since(mark)
            .lines()
            .filter(|l| l.contains(&needle))
            .map(str::to_owned)
            .collect()
    }

    /// The Maildir of `address`.
    pub fn maildir(&self, address: &str) -> PathBuf {
        home(self.dir.path(), address).join("Maildir")
    }

    /// The messages in the INBOX of `address` (`new/` and `cur/`), as
    /// stored; empty when the Maildir does not exist (yet).
    pub fn messages(&self, address: &str) -> io::Result<Vec<Vec<u8>>> {
        let maildir = self.maildir(address);
        let mut files = Vec::new();
        for sub in ["new", "cur"] {
            match fs::read_dir(maildir.join(sub)) {
                Ok(entries) => {
                    for entry in entries {
                        files.push(entry?.path());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        files.sort();
        files.iter().map(fs::read).collect()
    }

    /// The storage quota of `address` in bytes.
    ///
    /// # Panics
    ///
    /// When the instance has no such user.
    pub fn quota(&self, address: &str) -> u64 {
        self.users
            .iter()
            .find(|u| u.address == address)
            .unwrap_or_else(|| panic!("no Dovecot user {address:?}"))
            .quota
    }

    /// Bytes and messages stored for `address`, from its `maildirsize`
    /// (kept by Dovecot's quota plugin); `(0, 0)` before the first
    /// delivery.
    pub fn quota_usage(&self, address: &str) -> io::Result<(u64, u64)> {
        let text = match fs::read_to_string(self.maildir(address).join("maildirsize")) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((0, 0)),
            Err(e) => return Err(e),
        };
        let bad = |line: &str| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("maildirsize of {address}: bad line {line:?}"),
            )
        };
        // First line: the limits; then "bytes count" deltas.
        let (mut bytes, mut count) = (0i64, 0i64);
        for line in text.lines().skip(1).filter(|l| !l.trim().is_empty()) {
            let mut fields = line.split_whitespace().map(str::parse::<i64>);
            match (fields.next(), fields.next()) {
                (Some(Ok(b)), Some(Ok(c))) => {
                    bytes += b;
                    count += c;
                }
                _ => return Err(bad(line)),
            }
        }
        let non_negative = |n: i64| u64::try_from(n).map_err(|_| bad("negative total"));
        Ok((non_negative(bytes)?, non_negative(count)?))
    }

    /// Delivers `message` to `address` over LMTP, straight to Dovecot (not
    /// through Postfix), and returns Dovecot's reply: the `RCPT TO` reply
    /// when that is not 250, else the reply after `DATA`.
    pub async fn deliver(&self, address: &str, message: &[u8]) -> io::Result<Reply> {
        let mut lmtp = self.lmtp_session().await?;
        let reply = deliver_on(&mut lmtp, address, message).await?;
        lmtp.quit().await?;
        Ok(reply)
    }

    /// Puts `address` over its quota by real deliveries over LMTP and
    /// returns how many messages that took.
    ///
    /// Messages of about 1/40 of the quota are delivered until Dovecot
    /// refuses the recipient at `RCPT TO` with a `x.2.2` reply. The last
    /// message takes the mailbox past its limit within
    /// [`QUOTA_GRACE_PERCENT`] (as happens to real mailboxes), after which
    /// Dovecot's `RCPT` check sees it over quota. Each delivery is logged
    /// (`lmtp(<address>)...: saved mail to INBOX`): take a
    /// [`log_mark`](Self::log_mark) afterwards to look at what came later.
    /// Needs a quota of at least about 10 kB, so that one message (with
    /// the headers Dovecot adds) fits into the grace.
    pub async fn fill_over_quota(&self, address: &str) -> io::Result<usize> {
        let quota = self.quota(address);
        let line = format!("{}\r\n", "x".repeat(70));
        let lines = usize::try_from(quota / 40 / 72).unwrap_or(1).max(1);
        let mut lmtp = self.lmtp_session().await?;
        for delivered in 0..400 {
            let message = format!(
                "From: filler@nobounce.test\r\nTo: {address}\r\nSubject: filler {delivered}\r\n\r\n{}",
                line.repeat(lines)
            );
            let reply = deliver_on(&mut lmtp, address, message.as_bytes()).await?;
            if reply.is_success() {
                continue;
            }
            let over_quota = reply.enhanced_status().is_some_and(|s| s.ends_with(".2.2"));
            if over_quota && reply.text().contains(&format!("<{address}>")) {
                // Refused at RCPT, not after DATA: the mailbox is full.
                let _ = lmtp.rset().await;
                lmtp.quit().await?;
                return Ok(delivered);
            }
            return Err(io::Error::other(format!(
                "filling {address}: Dovecot answered {reply} (quota too small for the grace?)"
            )));
        }
        Err(io::Error::other(format!(
            "{address} still not over quota after 400 messages"
        )))
    }

    /// A connected LMTP session after `LHLO`.
    async fn lmtp_session(&self) -> io::Result<SmtpClient> {
        let mut lmtp = SmtpClient::connect(self.lmtp_addr).await?;
        let hello = lmtp.command("LHLO nobounce-e2e.test").await?;
        if !hello.is_success() {
            return Err(io::Error::other(format!("LHLO refused: {hello}")));
        }
        Ok(lmtp)
    }

    /// Whether the master process is running.
    pub fn is_running(&self) -> bool {
        self.child.as_ref().is_some_and(|c| !has_exited(c.id()))
    }

    /// Starts Dovecot again after [`stop`](Self::stop), on the same ports,
    /// and returns once LMTP and quota-status accept connections. Does
    /// nothing when it is running.
    pub async fn start(&mut self) -> io::Result<()> {
        if self.is_running() {
            return Ok(());
        }
        if let Some(dead) = self.child.take() {
            // The master died by itself; clean up after it.
            reap(dead)?;
        }
        let out_path = self.dir.path().join("dovecot-start.out");
        let out = fs::File::create(&out_path)?;
        let mark = self.log_mark();
        // Foreground (-F) as a child of the test, so that it is reaped; in
        // its own process group, so that a hung instance can be killed as
        // a whole without touching the test process.
        let child = Command::new(&self.binary)
            .arg("-F")
            .arg("-c")
            .arg(&self.config_path)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0)
            .spawn()?;
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        let mut interval = Duration::from_millis(10);
        loop {
            if !self.is_running() {
                let status = reap(self.child.take().expect("spawned above"))?;
                let output = fs::read_to_string(&out_path).unwrap_or_default();
                let log = self.log_since(mark);
                let kind = if output.contains("Address already in use")
                    || log.contains("Address already in use")
                {
                    io::ErrorKind::AddrInUse
                } else {
                    io::ErrorKind::Other
                };
                return Err(io::Error::new(
                    kind,
                    format!("dovecot exited at start ({status}):\n{output}\n--- log ---\n{log}"),
                ));
            }
            if self.answers().await {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                self.terminate();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "dovecot not answering on {} and {} after {START_TIMEOUT:?}:\n{}",
                        self.lmtp_addr,
                        self.quota_status_addr,
                        self.log_since(mark)
                    ),
                ));
            }
            tokio::time::sleep(interval).await;
            interval = (interval * 2).min(Duration::from_millis(200));
        }
    }

    /// Whether LMTP greets with 220 and quota-status accepts a connection.
    async fn answers(&self) -> bool {
        let lmtp = async {
            let client = SmtpClient::connect(self.lmtp_addr).await.ok()?;
            let ready = client.greeting().code == 220;
            let _ = client.quit().await;
            Some(ready)
        };
        lmtp.await == Some(true) && TcpStream::connect(self.quota_status_addr).await.is_ok()
    }

    /// Stops Dovecot (SIGTERM to the master, which ends its services; after
    /// 10 seconds SIGKILL to its process group) and returns once the master
    /// has exited: LMTP and quota-status then refuse connections.
    pub async fn stop(&mut self) -> io::Result<()> {
        let Some(child) = self.child.take() else {
            return Ok(());
        };
        signal("TERM", &child.id().to_string());
        let deadline = tokio::time::Instant::now() + STOP_TIMEOUT;
        while !has_exited(child.id()) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        reap(child).map(drop)
    }

    /// Blocking version of [`stop`](Self::stop), for [`Drop`].
    fn terminate(&mut self) {
        let Some(child) = self.child.take() else {
            return;
        };
        signal("TERM", &child.id().to_string());
        let deadline = Instant::now() + STOP_TIMEOUT;
        while !has_exited(child.id()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = reap(child);
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }
}

/// One LMTP transaction on an open session; see [`DovecotInstance::deliver`].
async fn deliver_on(lmtp: &mut SmtpClient, address: &str, message: &[u8]) -> io::Result<Reply> {
    let mail = lmtp.mail_from("filler@nobounce.test", &[]).await?;
    if !mail.is_success() {
        return Err(io::Error::other(format!("LMTP MAIL FROM refused: {mail}")));
    }
    let rcpt = lmtp.rcpt_to(address).await?;
    if !rcpt.is_success() {
        lmtp.rset().await?;
        return Ok(rcpt);
    }
    // One recipient: LMTP's one reply per recipient after DATA is one reply.
    lmtp.data(message).await
}

/// Whether process `pid`, a child of this process, has exited (it is a
/// zombie until reaped; its pid and process group id cannot be reused
/// before that).
fn has_exited(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S ...": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
        Err(_) => true,
    }
}

/// Kills what is left of the master's process group (services that have
/// not noticed its end yet, or a master that ignored SIGTERM) and reaps the
/// master. The group is killed before the master is reaped, while its id
/// still belongs to this instance.
fn reap(mut child: Child) -> io::Result<ExitStatus> {
    signal("KILL", &format!("-{}", child.id()));
    child.wait()
}

/// Sends `signal` to `target` (a pid, or `-pgid` for a process group) with
/// the shell's `kill` builtin: no extra program, no unsafe libc call. A
/// target that is gone already is no error.
fn signal(signal: &str, target: &str) {
    let _ = Command::new("sh")
        .args(["-c", "kill -s \"$0\" -- \"$1\" 2>/dev/null", signal, target])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

impl Drop for DovecotInstance {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- Dovecot log of failed test ({}) ---\n{}",
                self.log_path.display(),
                self.log_tail()
            );
        }
        self.terminate();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_file_has_home_uid_and_quota_rule() {
        let b = DovecotInstance::builder()
            .user("alice@mbox.test")
            .user_with_quota("small@mbox.test", 2048);
        let users = b.passwd_file(Path::new("/d"));
        assert_eq!(
            users,
            "alice@mbox.test:{PLAIN}unused:65534:65534::/d/mail/mbox.test/alice::userdb_quota_rule=*:storage=1048576B\n\
             small@mbox.test:{PLAIN}unused:65534:65534::/d/mail/mbox.test/small::userdb_quota_rule=*:storage=2048B\n"
        );
    }

    #[test]
    fn conf_listens_on_loopback_ports_and_checks_quota_at_rcpt() {
        let conf = DovecotInstance::builder()
            .quota_status_nouser("DUNNO")
            .setting("mail_debug = yes")
            .dovecot_conf(Path::new("/d"), 2424, 12340);
        for want in [
            "listen = 127.0.0.1\n",
            "    address = 127.0.0.1\n    port = 2424\n",
            "    address = 127.0.0.1\n    port = 12340\n",
            "lmtp_rcpt_check_quota = yes\n",
            "  quota_status_nouser = DUNNO\n",
            "  quota_grace = 10%%\n",
            "base_dir = /d/run\n",
            "log_path = /d/dovecot.log\n",
        ] {
            assert!(conf.contains(want), "{want:?} missing in\n{conf}");
        }
        assert!(conf.ends_with("mail_debug = yes\n"), "{conf}");
    }

    #[test]
    #[should_panic(expected = "not a plain lowercase address")]
    fn rejects_addresses_that_break_the_passwd_file() {
        let _ = DovecotInstance::builder().user("a:b@mbox.test");
    }
}
