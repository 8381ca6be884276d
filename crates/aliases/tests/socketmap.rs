//! The socketmap service over a real socket, with a netstring client as
//! Postfix's.

use nobounce_aliases::{
    socketmap::{netstring, serve, SocketmapListener, SocketmapOptions, MAX_REQUEST},
    SqliteAliasStore,
};
use nobounce_core::alias::{Alias, AliasError, AliasStore, Created, ListFilter, Update};
use nobounce_test_support::LogCapture;
use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, SystemTime},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::oneshot,
};

const DOMAIN: &str = "alias.example.org";

struct Service {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    _dir: Option<tempfile::TempDir>,
}

impl Service {
    async fn start(store: Arc<dyn AliasStore>, dir: Option<tempfile::TempDir>) -> Self {
        Self::start_with(store, dir, |_| {}).await
    }

    async fn start_with(
        store: Arc<dyn AliasStore>,
        dir: Option<tempfile::TempDir>,
        tweak: impl FnOnce(&mut SocketmapOptions),
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut options = SocketmapOptions::new(vec![DOMAIN.into()]);
        tweak(&mut options);
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(serve(
            SocketmapListener::Tcp(listener),
            store,
            options,
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            addr,
            stop: Some(stop),
            task,
            _dir: dir,
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(5), &mut self.task)
            .await
            .expect("the service stops")
            .unwrap()
            .unwrap();
    }
}

/// A socketmap client: one connection, netstring requests and replies.
struct Client(TcpStream);

impl Client {
    async fn connect(addr: SocketAddr) -> Self {
        Self(TcpStream::connect(addr).await.unwrap())
    }

    async fn ask(&mut self, request: &str) -> String {
        self.0
            .write_all(&netstring(request.as_bytes()))
            .await
            .unwrap();
        self.reply().await.expect("a reply")
    }

    /// One netstring reply, or `None` when the server closed.
    async fn reply(&mut self) -> Option<String> {
        let mut len = Vec::new();
        loop {
            let mut b = [0u8; 1];
            let n = tokio::time::timeout(Duration::from_secs(10), self.0.read(&mut b))
                .await
                .expect("the server answers or closes")
                .unwrap();
            if n == 0 {
                return None;
            }
            if b[0] == b':' {
                break;
            }
            len.push(b[0]);
        }
        let len: usize = String::from_utf8(len).unwrap().parse().unwrap();
        let mut data = vec![0u8; len + 1];
        self.0.read_exact(&mut data).await.unwrap();
        assert_eq!(data.pop(), Some(b','), "netstring ends with ','");
        Some(String::from_utf8(data).unwrap())
    }

    /// Whether the server closed the connection.
    async fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_secs(10), self.0.read(&mut b)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
}

async fn sqlite_with_aliases() -> (Arc<dyn AliasStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteAliasStore::open(&dir.path().join("aliases.db")).unwrap();
    let now = SystemTime::now();
    let active = Alias::new(
        "shop-example.k7q2m@alias.example.org",
        "shop.example",
        "me@example.org",
        now,
    );
    let retired = Alias::new(
        "old-shop.aaaaa@alias.example.org",
        "old.example",
        "other@example.org",
        now,
    );
    assert_eq!(store.create(&active).await.unwrap(), Created::New);
    assert_eq!(store.create(&retired).await.unwrap(), Created::New);
    let _ = store.retire(&retired.address, "leaked", now).await.unwrap();
    (Arc::new(store), dir)
}

#[tokio::test]
async fn issue11_socketmap_resolves_active_and_retired_aliases_only() {
    let (store, dir) = sqlite_with_aliases().await;
    let service = Service::start(store, Some(dir)).await;
    let mut c = Client::connect(service.addr).await;
    // One persistent connection for every request, as Postfix keeps it.
    for (request, want) in [
        (
            "aliases shop-example.k7q2m@alias.example.org",
            "OK me@example.org",
        ),
        (
            "aliases Shop-Example.K7Q2M@ALIAS.example.org",
            "OK me@example.org",
        ),
        (
            "aliases old-shop.aaaaa@alias.example.org",
            "OK other@example.org",
        ),
        ("aliases nobody.zzzzz@alias.example.org", "NOTFOUND "),
        ("aliases me@example.org", "NOTFOUND "),
        ("aliases @alias.example.org", "NOTFOUND "),
        ("aliases shop-example.k7q2m", "NOTFOUND "),
        ("aliases x@sub.alias.example.org", "NOTFOUND "),
    ] {
        assert_eq!(c.ask(request).await, want, "{request}");
    }
    let perm = c.ask("virtual a@alias.example.org").await;
    assert!(perm.starts_with("PERM "), "{perm}");
    // Still open after a PERM.
    assert_eq!(
        c.ask("aliases shop-example.k7q2m@alias.example.org").await,
        "OK me@example.org"
    );
    drop(c);
    service.stop().await;
}

#[tokio::test]
async fn issue11_socketmap_answers_pipelined_and_split_requests() {
    let (store, dir) = sqlite_with_aliases().await;
    let service = Service::start(store, Some(dir)).await;
    let mut c = Client::connect(service.addr).await;
    let mut bytes = netstring(b"aliases shop-example.k7q2m@alias.example.org");
    bytes.extend(netstring(b"aliases nobody.zzzzz@alias.example.org"));
    bytes.extend(netstring(b"aliases old-shop.aaaaa@alias.example.org"));
    // Sent in pieces of 7 bytes, across netstring boundaries.
    for piece in bytes.chunks(7) {
        c.0.write_all(piece).await.unwrap();
        c.0.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(c.reply().await.unwrap(), "OK me@example.org");
    assert_eq!(c.reply().await.unwrap(), "NOTFOUND ");
    assert_eq!(c.reply().await.unwrap(), "OK other@example.org");
    drop(c);
    service.stop().await;
}

#[tokio::test]
async fn issue11_socketmap_closes_on_malformed_input_and_logs_it() {
    let logs = LogCapture::default();
    let _guard = logs.install();
    let (store, dir) = sqlite_with_aliases().await;
    let service = Service::start(store, Some(dir)).await;
    for bad in [
        &b"hello\r\n"[..],
        b"5:aliases,",
        b"7:aliases;",
        b"3:a b;",
        b"7:aliases,",
        format!("{}:", MAX_REQUEST + 1).as_bytes(),
        b"99999999999999999999:",
        b"10:\xff\xfe a@b.c.d,",
    ] {
        let mut c = Client::connect(service.addr).await;
        c.0.write_all(bad).await.unwrap();
        assert!(c.closed().await, "{bad:?} closes the connection");
    }
    // The service still serves.
    let mut c = Client::connect(service.addr).await;
    assert_eq!(
        c.ask("aliases shop-example.k7q2m@alias.example.org").await,
        "OK me@example.org"
    );
    drop(c);
    service.stop().await;
    let bad = logs.lines_with("socketmap_bad_request");
    assert!(bad.len() >= 7, "malformed requests are logged: {bad:?}");
}

#[tokio::test]
async fn issue11_socketmap_closes_idle_connections() {
    let (store, dir) = sqlite_with_aliases().await;
    let service = Service::start_with(store, Some(dir), |o| {
        o.idle_timeout = Duration::from_millis(200);
    })
    .await;
    let mut c = Client::connect(service.addr).await;
    assert_eq!(
        c.ask("aliases old-shop.aaaaa@alias.example.org").await,
        "OK other@example.org"
    );
    let started = std::time::Instant::now();
    assert!(c.closed().await, "an idle connection is closed");
    assert!(started.elapsed() < Duration::from_secs(5));
    service.stop().await;
}

/// A store that always fails, or never answers.
#[derive(Debug)]
struct BrokenStore {
    hang: bool,
}

#[async_trait::async_trait]
impl AliasStore for BrokenStore {
    async fn create(&self, _: &Alias) -> Result<Created, AliasError> {
        Err(AliasError::new("broken"))
    }
    async fn get(&self, _: &str) -> Result<Option<Alias>, AliasError> {
        if self.hang {
            std::future::pending::<()>().await;
        }
        Err(AliasError::new(
            "redis alias get failed: connection refused",
        ))
    }
    async fn list(&self, _: ListFilter) -> Result<Vec<Alias>, AliasError> {
        Err(AliasError::new("broken"))
    }
    async fn retire(&self, _: &str, _: &str, _: SystemTime) -> Result<Update, AliasError> {
        Err(AliasError::new("broken"))
    }
    async fn restore(&self, _: &str) -> Result<Update, AliasError> {
        Err(AliasError::new("broken"))
    }
    async fn set_reject_foreign(&self, _: &str, _: bool) -> Result<Update, AliasError> {
        Err(AliasError::new("broken"))
    }
}

#[tokio::test]
async fn issue11_socketmap_store_failure_is_temp_logged_once() {
    let logs = LogCapture::default();
    let _guard = logs.install();
    let service = Service::start(Arc::new(BrokenStore { hang: false }), None).await;
    let mut c = Client::connect(service.addr).await;
    for _ in 0..3 {
        let r = c.ask("aliases shop-example.k7q2m@alias.example.org").await;
        assert!(r.starts_with("TEMP alias store: "), "{r}");
        assert!(r.contains("connection refused"), "{r}");
    }
    // Other domains are not the store's business: no failure there.
    assert_eq!(c.ask("aliases me@example.org").await, "NOTFOUND ");
    drop(c);
    service.stop().await;
    assert_eq!(
        logs.lines_with("socketmap_store_failed").len(),
        1,
        "one warning per outage"
    );
}

#[tokio::test]
async fn issue11_socketmap_slow_store_is_temp_within_the_lookup_timeout() {
    let service = Service::start_with(Arc::new(BrokenStore { hang: true }), None, |o| {
        o.lookup_timeout = Duration::from_millis(100);
    })
    .await;
    let mut c = Client::connect(service.addr).await;
    let r = c.ask("aliases shop-example.k7q2m@alias.example.org").await;
    assert!(r.starts_with("TEMP "), "{r}");
    drop(c);
    service.stop().await;
}

/// Stopping closes idle connections and ends the service.
#[tokio::test]
async fn issue11_socketmap_stops_with_open_connections() {
    let (store, dir) = sqlite_with_aliases().await;
    let service = Service::start(store, Some(dir)).await;
    let mut c = Client::connect(service.addr).await;
    assert_eq!(
        c.ask("aliases old-shop.aaaaa@alias.example.org").await,
        "OK other@example.org"
    );
    service.stop().await;
    assert!(c.closed().await);
}
