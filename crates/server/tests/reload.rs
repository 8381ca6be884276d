//! Issue 14: a reload builds the whole new generation first and swaps it in
//! at once; a failed build (a bad map file) changes nothing: the same
//! generation, the same caches, the same answers.

use nobounce_config::Config;
use nobounce_core::{EngineSource, Verdict};
use nobounce_server::Service;
use std::{
    path::Path,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpListener,
};

/// An LMTP server that accepts every recipient and counts the RCPTs.
async fn fake_lmtp() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let rcpts = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&rcpts);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let counted = Arc::clone(&counted);
            tokio::spawn(async move {
                let (r, mut w) = stream.into_split();
                let mut lines = BufReader::new(r).lines();
                w.write_all(b"220 fake LMTP\r\n").await?;
                while let Some(line) = lines.next_line().await? {
                    let verb = line
                        .split_whitespace()
                        .next()
                        .unwrap_or("")
                        .to_ascii_uppercase();
                    let reply: &[u8] = match verb.as_str() {
                        "LHLO" => b"250-fake\r\n250 SIZE\r\n",
                        "RCPT" => {
                            counted.fetch_add(1, Ordering::SeqCst);
                            b"250 2.1.5 OK\r\n"
                        }
                        "QUIT" => {
                            w.write_all(b"221 bye\r\n").await?;
                            return Ok::<_, std::io::Error>(());
                        }
                        _ => b"250 OK\r\n",
                    };
                    w.write_all(reply).await?;
                }
                Ok(())
            });
        }
    });
    (addr, rcpts)
}

fn config(map: &Path, lmtp: &str) -> Config {
    Config::from_toml_str(&format!(
        r#"
[spf]
enabled = false

[recipients]
routes = [{{ domains = ["example.org"], chain = ["users", "lmtp"] }}]

[recipients.backends.users]
type = "map_file"
path = "{}"
watch_interval = "0s"

[recipients.backends.lmtp]
type = "rcpt_probe"
address = "{lmtp}"
"#,
        map.display()
    ))
    .expect("valid configuration")
}

async fn rcpt(service: &Service, address: &str) -> Verdict {
    let mut s = service.engine().session();
    s.connect("192.0.2.1".parse().ok(), "client.test", None)
        .await;
    s.helo("client.test").await;
    s.mail_from("<joe@sender.test>", &[], None).await;
    s.rcpt_to(address).await
}

#[tokio::test]
async fn issue14_a_reload_with_a_bad_map_keeps_the_old_generation_whole() {
    let dir = tempfile::tempdir().unwrap();
    let map = dir.path().join("recipients");
    std::fs::write(&map, "alice@example.org\n").unwrap();
    let (lmtp, rcpts) = fake_lmtp().await;
    let service = Service::new(config(&map, &lmtp)).expect("builds");

    assert_eq!(
        rcpt(&service, "<alice@example.org>").await,
        Verdict::Continue
    );
    assert_eq!(rcpts.load(Ordering::SeqCst), 1, "asked the LMTP server");
    assert_eq!(
        rcpt(&service, "<alice@example.org>").await,
        Verdict::Continue
    );
    assert_eq!(rcpts.load(Ordering::SeqCst), 1, "answered from the cache");
    let refused = rcpt(&service, "<bob@example.org>").await;
    assert!(refused
        .reply()
        .unwrap()
        .to_string()
        .starts_with("550 5.1.1"));
    let before = service.current();

    // A bad map: the reload fails, at the map's line, and nothing changes.
    std::fs::write(&map, "bob@example.org\nnot an address\n").unwrap();
    let e = service
        .reload(config(&map, &lmtp))
        .await
        .expect_err("a bad map fails the reload");
    let e = e.to_string();
    assert!(e.contains("recipients.backends.users.path"), "{e}");
    assert!(e.contains("recipients:2:"), "{e}");
    assert!(Arc::ptr_eq(&before, &service.current()), "same generation");
    assert_eq!(
        rcpt(&service, "<alice@example.org>").await,
        Verdict::Continue
    );
    assert_eq!(
        rcpts.load(Ordering::SeqCst),
        1,
        "the answer cache was not cleared"
    );
    let refused = rcpt(&service, "<bob@example.org>").await;
    assert!(
        refused
            .reply()
            .unwrap()
            .to_string()
            .starts_with("550 5.1.1"),
        "the old map still answers"
    );

    // A good map: a new generation, with the new map, and the unchanged
    // LMTP backend (its cache) and SPF cache taken over.
    std::fs::write(&map, "alice@example.org\nbob@example.org\n").unwrap();
    service.reload(config(&map, &lmtp)).await.expect("reloads");
    let after = service.current();
    assert!(!Arc::ptr_eq(&before, &after));
    assert!(after.shares_spf_cache(&before));
    assert!(after
        .recipients()
        .unwrap()
        .shares_backend(before.recipients().unwrap(), "lmtp"));
    assert_eq!(
        rcpt(&service, "<alice@example.org>").await,
        Verdict::Continue
    );
    assert_eq!(rcpts.load(Ordering::SeqCst), 1, "the cache was kept");
    assert_eq!(rcpt(&service, "<bob@example.org>").await, Verdict::Continue);
    // A connection opened before keeps its generation's map.
    assert!(before.engine().directory().is_some());
}
