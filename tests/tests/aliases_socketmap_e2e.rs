//! Issue 11, end to end: the running nobounce serves Postfix's socketmap
//! protocol for `virtual_alias_maps`, so that mail to an alias is delivered
//! to its mailbox and Postfix's `reject_unlisted_recipient` refuses any
//! other address of the alias domain; the exported postmap file does the
//! same job without the socketmap.
//!
//! The refusal of retired aliases at RCPT TO (550 5.1.1) is nobounce's
//! milter's; it is tested with the engine (here a retired alias only has
//! to get past Postfix's own check).

use nobounce_aliases::{cli::postmap, socketmap::netstring, SqliteAliasStore};
use nobounce_core::alias::{Alias, AliasStore, Created, ListFilter, Update};
use nobounce_test_support::{
    bind_loopback, free_port, require, Background, MessageBuilder, PostfixInstance, SmtpClient,
    SmtpSink, DEFAULT_TIMEOUT,
};
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, UnixStream},
};

const ALIAS_DOMAIN: &str = "alias.example.test";
/// Relayed by the harness's Postfix to the sink.
const MAILBOX: &str = "ann@example.test";

/// nobounce with `[aliases] socketmap` on `socketmap`, its aliases in an
/// SQLite file of `dir`.
struct Nobounce {
    _task: Background<Result<(), nobounce_server::RunError>>,
}

async fn nobounce(dir: &Path, socketmap: &str) -> Nobounce {
    let config = nobounce_config::Config::from_toml_str(&format!(
        "[aliases]\ndomains = [\"{ALIAS_DOMAIN}\"]\npath = \"{}\"\nsocketmap = \"{socketmap}\"\n",
        db(dir).display()
    ))
    .expect("config");
    let listener = bind_loopback().await.expect("bind");
    let task = Background::spawn(|stop| nobounce_server::run_tcp(listener, config, stop));
    Nobounce { _task: task }
}

fn db(dir: &Path) -> PathBuf {
    dir.join("aliases.db")
}

/// A new alias of `ALIAS_DOMAIN` leading to `MAILBOX`, written the way
/// `nobounce alias new` writes it (another connection to the same file).
async fn new_alias(dir: &Path, local: &str) -> String {
    let store = SqliteAliasStore::open(&db(dir)).expect("open");
    let address = format!("{local}@{ALIAS_DOMAIN}");
    let a = Alias::new(&address, "shop.example", MAILBOX, SystemTime::now());
    assert_eq!(store.create(&a).await.unwrap(), Created::New);
    address
}

/// Asks a socketmap over `stream`, as Postfix does.
async fn ask<S: AsyncReadExt + AsyncWriteExt + Unpin>(stream: &mut S, request: &str) -> String {
    stream
        .write_all(&netstring(request.as_bytes()))
        .await
        .unwrap();
    let mut len = Vec::new();
    loop {
        let b = stream.read_u8().await.unwrap();
        if b == b':' {
            break;
        }
        len.push(b);
    }
    let len: usize = String::from_utf8(len).unwrap().parse().unwrap();
    let mut data = vec![0u8; len + 1];
    stream.read_exact(&mut data).await.unwrap();
    assert_eq!(data.pop(), Some(b','));
    String::from_utf8(data).unwrap()
}

async fn connect_tcp(addr: SocketAddr) -> TcpStream {
    for _ in 0..100 {
        if let Ok(s) = TcpStream::connect(addr).await {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the socketmap service does not listen on {addr}");
}

/// The daemon serves the socketmap of its configuration, on TCP and on a
/// unix socket (with `[milter]`'s mode), and sees what `nobounce alias`
/// writes to the shared file while it runs. Needs no MTA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue11_the_daemon_serves_the_socketmap_of_its_config() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let _nobounce = nobounce(dir.path(), &format!("inet:{addr}")).await;
    let mut c = connect_tcp(addr).await;
    let alias = format!("shop.abcde@{ALIAS_DOMAIN}");
    assert_eq!(ask(&mut c, &format!("aliases {alias}")).await, "NOTFOUND ");
    // Written by another process while the daemon runs.
    assert_eq!(new_alias(dir.path(), "shop.abcde").await, alias);
    assert_eq!(
        ask(&mut c, &format!("aliases {alias}")).await,
        format!("OK {MAILBOX}")
    );
    let store = SqliteAliasStore::open(&db(dir.path())).unwrap();
    assert!(matches!(
        store
            .retire(&alias, "leaked", SystemTime::now())
            .await
            .unwrap(),
        Update::Changed(_)
    ));
    assert_eq!(
        ask(&mut c, &format!("aliases {alias}")).await,
        format!("OK {MAILBOX}"),
        "a retired alias still resolves (nobounce refuses it at RCPT)"
    );

    // A unix socket.
    let unix_dir = tempfile::tempdir().unwrap();
    let path = unix_dir.path().join("aliases.sock");
    let _second = nobounce(dir.path(), &format!("unix:{}", path.display())).await;
    let mut unix = None;
    for _ in 0..100 {
        if let Ok(s) = UnixStream::connect(&path).await {
            unix = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut unix = unix.expect("the unix socketmap listens");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "[milter] socket_mode");
    assert_eq!(
        ask(&mut unix, &format!("aliases {}", alias.to_uppercase())).await,
        format!("OK {MAILBOX}")
    );
}

/// Postfix with `socketmap:inet:127.0.0.1:PORT:aliases` as its
/// virtual_alias_maps and `reject_unlisted_recipient`.
async fn postfix(sink: &SmtpSink, maps: &str) -> PostfixInstance {
    PostfixInstance::builder()
        .relay_to(sink.addr())
        .relay_domains(&["example.test"])
        .param("virtual_alias_domains", ALIAS_DOMAIN)
        .param("virtual_alias_maps", maps)
        .param(
            "smtpd_recipient_restrictions",
            "reject_unlisted_recipient, permit_mynetworks, reject_unauth_destination",
        )
        .start()
        .await
        .expect("postfix starts")
}

/// Sends one message to `alias` (accepted), then tries an unknown address
/// of the alias domain (refused by Postfix at RCPT with 550 5.1.1); checks
/// that the sink got the message for `MAILBOX` and nothing bounced.
async fn alias_delivered_unknown_refused(postfix: &PostfixInstance, sink: &SmtpSink, alias: &str) {
    let mut c = SmtpClient::connect(postfix.smtp_addr())
        .await
        .expect("connect");
    c.ehlo("client.example.net").await.unwrap().assert_code(250);
    c.mail_from("news@shop.example", &[])
        .await
        .unwrap()
        .assert_code(250);
    let unknown = c
        .rcpt_to(&format!("nobody.zzzzz@{ALIAS_DOMAIN}"))
        .await
        .unwrap();
    assert_eq!(unknown.code, 550, "{unknown}");
    assert_eq!(unknown.enhanced_status(), Some("5.1.1"), "{unknown}");
    c.rcpt_to(alias).await.unwrap().assert_code(250);
    let msg = MessageBuilder::new()
        .from("news@shop.example")
        .to(alias)
        .subject("your order")
        .build();
    c.data(&msg).await.unwrap().assert_code(250);
    c.quit().await.unwrap();

    let got = sink
        .wait_for_messages(1, DEFAULT_TIMEOUT)
        .await
        .expect("delivered to the mailbox");
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].recipients, [MAILBOX], "the alias was rewritten");
    assert_eq!(got[0].sender, "news@shop.example");
    assert!(!sink.has_bounce());
    postfix.assert_no_bounce();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue11_postfix_delivers_aliases_through_the_socketmap() {
    require!("postfix");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let _nobounce = nobounce(dir.path(), &format!("inet:{addr}")).await;
    drop(connect_tcp(addr).await);
    let alias = new_alias(dir.path(), "shop-example.k7q2m").await;
    let retired = new_alias(dir.path(), "old-shop.aaaaa").await;
    let store = SqliteAliasStore::open(&db(dir.path())).unwrap();
    let _ = store
        .retire(&retired, "leaked", SystemTime::now())
        .await
        .unwrap();

    let sink = SmtpSink::start().await.expect("sink");
    let postfix = postfix(&sink, &format!("socketmap:inet:{addr}:aliases")).await;
    alias_delivered_unknown_refused(&postfix, &sink, &alias).await;
    // Any case: Postfix and nobounce fold it.
    let mut c = SmtpClient::connect(postfix.smtp_addr()).await.unwrap();
    c.ehlo("client.example.net").await.unwrap();
    c.mail_from("news@shop.example", &[]).await.unwrap();
    c.rcpt_to(&alias.to_uppercase())
        .await
        .unwrap()
        .assert_code(250);
    // A retired alias gets past Postfix's own check, so that nobounce's
    // milter can refuse it and say why.
    c.rcpt_to(&retired).await.unwrap().assert_code(250);
    c.quit().await.unwrap();
    let asked = postfix.log_lines_containing("socketmap");
    assert!(
        asked.iter().all(|l| !l.contains("warning")),
        "no socketmap warnings: {asked:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue11_postfix_delivers_aliases_through_the_exported_map() {
    require!("postfix");
    let dir = tempfile::tempdir().unwrap();
    let alias = new_alias(dir.path(), "shop-example.k7q2m").await;
    let store = SqliteAliasStore::open(&db(dir.path())).unwrap();
    let map = dir.path().join("aliases.map");
    std::fs::write(&map, postmap(&store.list(ListFilter::All).await.unwrap())).unwrap();
    // texthash: the map file as `alias export --postmap` wrote it, without
    // running postmap.
    let sink = SmtpSink::start().await.expect("sink");
    let postfix = postfix(&sink, &format!("texthash:{}", map.display())).await;
    alias_delivered_unknown_refused(&postfix, &sink, &alias).await;
}
