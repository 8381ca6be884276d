//! Fake servers for the tests: an LMTP server and a policy (quota-status)
//! server, on 127.0.0.1:0 or a unix socket in a temp dir.

use nobounce_core::Endpoint;
use nobounce_core::RecipientQuery;
use std::{
    collections::HashMap,
    path::Path,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader},
    net::{TcpListener, UnixListener},
    task::JoinHandle,
};

pub(crate) fn query(address: &str, size: Option<u64>) -> RecipientQuery<'_> {
    RecipientQuery {
        address,
        declared_size: size,
        null_sender: false,
    }
}

/// How the fake LMTP server treats one mailbox.
#[derive(Clone, Debug)]
pub(crate) enum Mailbox {
    /// Exists, unlimited.
    Ok,
    /// Exists with this many bytes of room; honours `SIZE=`.
    Room(u64),
    /// Answers `RCPT` with this exact line.
    Reply(&'static str),
    /// Never answers `RCPT`.
    Hang,
}

#[derive(Clone, Debug)]
pub(crate) struct LmtpBehaviour {
    pub(crate) greeting: &'static str,
    pub(crate) advertise_size: Option<&'static str>,
    /// Close the connection (without a word) after answering `RSET`.
    pub(crate) close_after_rset: bool,
    pub(crate) mailboxes: HashMap<String, Mailbox>,
}

impl Default for LmtpBehaviour {
    fn default() -> Self {
        Self {
            greeting: "220 fake.test Dovecot ready.",
            advertise_size: Some("SIZE"),
            close_after_rset: false,
            mailboxes: HashMap::new(),
        }
    }
}

impl LmtpBehaviour {
    pub(crate) fn with(mut self, address: &str, mailbox: Mailbox) -> Self {
        self.mailboxes.insert(address.to_owned(), mailbox);
        self
    }
}

/// A running fake server: its endpoint, what it was told, and how many
/// connections it accepted.
#[derive(Debug)]
pub(crate) struct FakeServer {
    pub(crate) endpoint: Endpoint,
    log: Arc<Mutex<Vec<String>>>,
    connections: Arc<AtomicUsize>,
    task: JoinHandle<()>,
    _dir: Option<tempfile::TempDir>,
}

impl FakeServer {
    /// Every line received, prefixed by the connection number (`1: LHLO x`).
    pub(crate) fn log(&self) -> Vec<String> {
        self.log.lock().expect("log lock").clone()
    }

    /// Lines received that start with `prefix` (ignoring the connection).
    pub(crate) fn commands(&self, prefix: &str) -> Vec<String> {
        self.log()
            .into_iter()
            .filter_map(|l| l.split_once(": ").map(|(_, c)| c.to_owned()))
            .filter(|c| c.starts_with(prefix))
            .collect()
    }

    pub(crate) fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Waits (bounded) until `prefix` was received `n` times.
    pub(crate) async fn wait_for(&self, prefix: &str, n: usize) -> bool {
        for _ in 0..1000 {
            if self.commands(prefix).len() >= n {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Handler = Arc<
    dyn Fn(
            Box<dyn Conn>,
            usize,
            Arc<Mutex<Vec<String>>>,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
        + Send
        + Sync,
>;

pub(crate) trait Conn: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Conn for T {}

async fn serve(handler: Handler, unix: bool) -> FakeServer {
    let log = Arc::new(Mutex::new(Vec::new()));
    let connections = Arc::new(AtomicUsize::new(0));
    let (log2, conns2) = (Arc::clone(&log), Arc::clone(&connections));
    let (endpoint, task, dir) = if unix {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sock");
        let listener = UnixListener::bind(&path).expect("bind unix socket");
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let n = conns2.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::spawn(handler(Box::new(stream), n, Arc::clone(&log2)));
            }
        });
        (Endpoint::Unix(path), task, Some(dir))
    } else {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let n = conns2.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::spawn(handler(Box::new(stream), n, Arc::clone(&log2)));
            }
        });
        (Endpoint::tcp(addr), task, None)
    };
    FakeServer {
        endpoint,
        log,
        connections,
        task,
        _dir: dir,
    }
}

pub(crate) async fn fake_lmtp(behaviour: LmtpBehaviour) -> FakeServer {
    fake_lmtp_on(behaviour, false).await
}

pub(crate) async fn fake_lmtp_on(behaviour: LmtpBehaviour, unix: bool) -> FakeServer {
    let behaviour = Arc::new(behaviour);
    let handler: Handler = Arc::new(move |conn, n, log| {
        let behaviour = Arc::clone(&behaviour);
        Box::pin(async move {
            let _ = lmtp_session(conn, n, &log, &behaviour).await;
        })
    });
    serve(handler, unix).await
}

async fn lmtp_session(
    conn: Box<dyn Conn>,
    n: usize,
    log: &Mutex<Vec<String>>,
    b: &LmtpBehaviour,
) -> std::io::Result<()> {
    let mut conn = BufReader::new(conn);
    conn.write_all(format!("{}\r\n", b.greeting).as_bytes())
        .await?;
    if !b.greeting.starts_with("220") {
        return Ok(());
    }
    let mut size: u64 = 0;
    let mut line = String::new();
    loop {
        line.clear();
        if conn.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let cmd = line.trim_end().to_owned();
        log.lock().expect("log lock").push(format!("{n}: {cmd}"));
        let upper = cmd.to_ascii_uppercase();
        let reply: String = if upper.starts_with("LHLO") || upper.starts_with("EHLO") {
            match b.advertise_size {
                Some(size) => format!(
                    "250-fake.test\r\n250-PIPELINING\r\n250-{size}\r\n250 ENHANCEDSTATUSCODES"
                ),
                None => "250-fake.test\r\n250 ENHANCEDSTATUSCODES".into(),
            }
        } else if upper.starts_with("MAIL FROM:") {
            size = upper
                .split_once("SIZE=")
                .and_then(|(_, s)| s.split_whitespace().next()?.parse().ok())
                .unwrap_or(0);
            "250 2.1.0 OK".into()
        } else if let Some(rest) = cmd.strip_prefix("RCPT TO:<") {
            let address = rest.trim_end_matches('>');
            match b.mailboxes.get(address) {
                Some(Mailbox::Ok) => "250 2.1.5 OK".into(),
                Some(Mailbox::Room(room)) if size <= *room => "250 2.1.5 OK".into(),
                Some(Mailbox::Room(_)) => {
                    format!("552 5.2.2 <{address}> Quota exceeded (mailbox for user is full)")
                }
                Some(Mailbox::Reply(reply)) => (*reply).into(),
                Some(Mailbox::Hang) => {
                    std::future::pending::<()>().await;
                    unreachable!("pending never completes")
                }
                None => format!("550 5.1.1 <{address}> User doesn't exist: {address}"),
            }
        } else if upper == "RSET" {
            conn.write_all(b"250 2.0.0 OK\r\n").await?;
            if b.close_after_rset {
                return Ok(());
            }
            continue;
        } else if upper == "QUIT" {
            conn.write_all(b"221 2.0.0 Bye\r\n").await?;
            return Ok(());
        } else {
            "500 5.5.1 Unknown command".into()
        };
        conn.write_all(format!("{reply}\r\n").as_bytes()).await?;
    }
}

/// A policy server answering `action=` lines by recipient; unknown
/// recipients get `nouser`. A recipient mapped to `None` is never answered.
pub(crate) async fn fake_policy(
    answers: HashMap<String, Option<String>>,
    nouser: &'static str,
    unix: bool,
) -> FakeServer {
    let answers = Arc::new(answers);
    let handler: Handler = Arc::new(move |conn, n, log| {
        let answers = Arc::clone(&answers);
        Box::pin(async move {
            let _ = policy_session(conn, n, &log, &answers, nouser).await;
        })
    });
    serve(handler, unix).await
}

async fn policy_session(
    conn: Box<dyn Conn>,
    n: usize,
    log: &Mutex<Vec<String>>,
    answers: &HashMap<String, Option<String>>,
    nouser: &str,
) -> std::io::Result<()> {
    let mut conn = BufReader::new(conn);
    let mut attrs: HashMap<String, String> = HashMap::new();
    let mut line = String::new();
    loop {
        line.clear();
        if conn.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let l = line.trim_end_matches('\n').to_owned();
        log.lock().expect("log lock").push(format!("{n}: {l}"));
        if !l.is_empty() {
            if let Some((k, v)) = l.split_once('=') {
                attrs.insert(k.into(), v.into());
            }
            continue;
        }
        let recipient = attrs.get("recipient").cloned().unwrap_or_default();
        let size: u64 = attrs.get("size").and_then(|s| s.parse().ok()).unwrap_or(0);
        let action = match answers.get(&recipient) {
            Some(Some(a)) => a.replace("{size}", &size.to_string()),
            Some(None) => {
                std::future::pending::<()>().await;
                unreachable!("pending never completes")
            }
            None => nouser.to_owned(),
        };
        conn.write_all(format!("action={action}\n\n").as_bytes())
            .await?;
        attrs.clear();
    }
}

/// Writes `contents` to `dir/rel`, creating parent directories.
pub(crate) fn write_file(dir: &Path, rel: &str, contents: &str) {
    let path = dir.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir -p");
    }
    std::fs::write(path, contents).expect("write file");
}
