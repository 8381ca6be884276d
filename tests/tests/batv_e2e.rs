//! Issue 10, end to end: BATV through real Postfix with nobounce as its
//! milter.
//!
//! Outbound mail of our trusted client reaches the next hop with a `prvs=`
//! envelope sender. A bounce to a validly signed address passes Postfix's
//! `reject_unlisted_recipient` (thanks to the documented
//! `virtual_alias_maps` regexp, which also strips the tag) and reaches the
//! real mailbox; bounces with a bad or expired signature are refused with
//! `550 5.7.1` at RCPT; after a key rotation (and a reload) yesterday's
//! signatures stay valid and new mail is signed with the new key.

use nobounce_core::batv::{self, BatvKeys};
use nobounce_server::MilterListener;
use nobounce_test_support::{
    bind_loopback, require, Background, MessageBuilder, PostfixInstance, SmtpClient, SmtpSink,
    DEFAULT_TIMEOUT,
};
use std::{
    fs,
    net::{IpAddr, Ipv4Addr},
    os::unix::fs::PermissionsExt,
    path::Path,
    time::{Duration, SystemTime},
};
use tokio::sync::mpsc;

const KEY1: &str = "1 first-secret-for-e2e-00001\n";
const KEY2: &str = "2 second-secret-for-e2e-0002\n";
/// Our own client (trusted): its mail is signed.
const INSIDE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
/// Anyone else: its bounces are verified.
const OUTSIDE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// The regexp table of docs/batv.md: a tagged address of ours is "listed"
/// for `reject_unlisted_recipient` and delivered to the real address.
const PRVS_REGEXP: &str = "/^prvs=[0-9]{4}[0-9a-fA-F]{6}=(.+@ours\\.test)$/ ${1}\n\
                           /^(.+)\\+prvs=[0-9]{4}[0-9a-fA-F]{6}(@ours\\.test)$/ ${1}${2}\n";

fn write_keys(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
}

fn config(keys: &Path) -> nobounce_config::Config {
    nobounce_config::Config::from_toml_str(&format!(
        "[spf]\nenabled = false\ntrusted_networks = [\"127.0.0.1/32\"]\n\
         [batv]\nenabled = true\ndomains = [\"ours.test\"]\nkey_file = \"{}\"\n",
        keys.display()
    ))
    .expect("config")
}

async fn send(
    postfix: &PostfixInstance,
    from_ip: IpAddr,
    sender: &str,
    rcpt: &str,
    subject: &str,
) -> SmtpClientReply {
    let mut c = SmtpClient::connect_from(from_ip, postfix.smtp_addr())
        .await
        .expect("connect");
    c.ehlo("client.test").await.unwrap().assert_code(250);
    c.mail_from(sender, &[]).await.unwrap().assert_code(250);
    let r = c.rcpt_to(rcpt).await.unwrap();
    if r.is_success() {
        let msg = MessageBuilder::new()
            .from(if sender.is_empty() {
                "MAILER-DAEMON@client.test"
            } else {
                sender
            })
            .to(rcpt)
            .subject(subject)
            .build();
        c.data(&msg).await.unwrap().assert_code(250);
    }
    c.quit().await.unwrap();
    SmtpClientReply(r.code, r.to_string())
}

#[derive(Debug)]
struct SmtpClientReply(u16, String);

#[tokio::test]
async fn issue10_batv_through_postfix() {
    require!("postfix");
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("batv.keys");
    write_keys(&keys, KEY1);
    let listener = bind_loopback().await.expect("bind");
    let milter_addr = listener.local_addr().unwrap();
    let (reload, reloads) = mpsc::channel(1);
    let first = config(&keys);
    let _milter = Background::spawn(|stop| {
        nobounce_server::run(MilterListener::Tcp(listener), first, reloads, stop)
    });
    let sink = SmtpSink::start().await.expect("sink");
    let regexp = dir.path().join("prvs.regexp");
    fs::write(&regexp, PRVS_REGEXP).unwrap();
    // Postfix's daemons (user postfix) read the table.
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let postfix = PostfixInstance::builder()
        .milter(milter_addr)
        .relay_to(sink.addr())
        .relay_domains(&["example.test", "ours.test"])
        .param(
            "virtual_alias_maps",
            &format!("regexp:{}", regexp.display()),
        )
        .param(
            "relay_recipient_maps",
            "inline:{ joe@ours.test=ok, ann@example.test=ok }",
        )
        .param("smtpd_recipient_restrictions", "reject_unlisted_recipient")
        .start()
        .await
        .expect("postfix");

    // 1. Outbound: the trusted client's sender arrives signed.
    let r = send(
        &postfix,
        INSIDE,
        "joe@ours.test",
        "ann@example.test",
        "out 1",
    )
    .await;
    assert_eq!(r.0, 250, "{r:?}");
    let out = sink.wait_for_messages(1, DEFAULT_TIMEOUT).await.unwrap();
    let signed = out[0].sender.clone();
    assert!(
        signed.starts_with("prvs=1") && signed.ends_with("=joe@ours.test"),
        "{signed}"
    );

    // 2. A bounce to that address: accepted, delivered to joe@ours.test.
    let r = send(&postfix, OUTSIDE, "", &signed, "bounce 1").await;
    assert_eq!(r.0, 250, "{r:?}");
    let got = sink.wait_for_messages(2, DEFAULT_TIMEOUT).await.unwrap();
    assert_eq!(got[1].recipients, ["joe@ours.test"], "{:?}", got[1]);
    assert!(got[1].is_bounce());

    // 3. Bad and expired signatures: refused at RCPT.
    let (tag, rest) = signed[5..].split_once('=').unwrap();
    let flipped = format!(
        "prvs={}{}={rest}",
        &tag[..9],
        if tag.ends_with('0') { '1' } else { '0' }
    );
    let r = send(&postfix, OUTSIDE, "", &flipped, "forged").await;
    assert_eq!(r.0, 550, "{r:?}");
    assert!(
        r.1.contains("5.7.1") && r.1.contains("bad BATV signature"),
        "{r:?}"
    );
    let k1 = BatvKeys::parse(KEY1).unwrap();
    let old = batv::sign(
        &k1,
        "joe@ours.test",
        7,
        SystemTime::now() - Duration::from_secs(10 * 86_400),
    )
    .unwrap();
    let r = send(&postfix, OUTSIDE, "", &old, "expired").await;
    assert_eq!(r.0, 550, "{r:?}");
    assert!(r.1.contains("5.7.1") && r.1.contains("expired"), "{r:?}");

    // 4. Rotation: key 2 signs from now on; yesterday's key-1 tag is valid.
    write_keys(&keys, &format!("{KEY1}{KEY2}"));
    reload.send(config(&keys)).await.unwrap();
    let yesterday = batv::sign(
        &k1,
        "joe@ours.test",
        7,
        SystemTime::now() - Duration::from_secs(86_400),
    )
    .unwrap();
    // The reload is asynchronous: wait until new mail is signed with key 2.
    let mut n = 2;
    let signed2 = loop {
        let r = send(
            &postfix,
            INSIDE,
            "joe@ours.test",
            "ann@example.test",
            "out 2",
        )
        .await;
        assert_eq!(r.0, 250, "{r:?}");
        n += 1;
        let got = sink.wait_for_messages(n, DEFAULT_TIMEOUT).await.unwrap();
        let s = got[n - 1].sender.clone();
        if s.starts_with("prvs=2") || n > 20 {
            break s;
        }
    };
    assert!(signed2.starts_with("prvs=2"), "{signed2}");
    let r = send(&postfix, OUTSIDE, "", &yesterday, "bounce 2").await;
    assert_eq!(r.0, 250, "{r:?}");
    let r = send(&postfix, OUTSIDE, "", &signed2, "bounce 3").await;
    assert_eq!(r.0, 250, "{r:?}");
    postfix
        .wait_until_queue_empty(DEFAULT_TIMEOUT)
        .await
        .expect("queue empties");
    let bounces: Vec<_> = sink
        .messages()
        .into_iter()
        .filter(|m| m.is_bounce())
        .collect();
    assert_eq!(bounces.len(), 3, "{bounces:?}");
    assert!(bounces.iter().all(|b| b.recipients == ["joe@ours.test"]));
    postfix.assert_no_bounce();
}
