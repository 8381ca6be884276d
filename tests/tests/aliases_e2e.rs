//! Issue 11, end to end: per-correspondent aliases with real Postfix and
//! nobounce as its milter and socketmap service.
//!
//! `nobounce alias new` (its library function, as the CLI runs it) makes an
//! alias: mail to it is delivered to its mailbox. Mail from a sender domain
//! foreign to the correspondent is marked with a header naming the alias
//! and that domain. `nobounce alias retire` retires it: the same mail is
//! refused at RCPT with `550 5.1.1`, and nothing bounces. Two nobounce
//! instances sharing Redis see the same aliases.

use clap::Parser;
use nobounce_aliases::cli::{run as alias_cli, AliasArgs};
use nobounce_test_support::dns::{TestDnsServer, TestRecord};
use nobounce_test_support::{
    bind_loopback, free_port, policy_request, require, Background, MessageBuilder, PolicyClient,
    PostfixInstance, RedisInstance, SmtpClient, SmtpSink, DEFAULT_TIMEOUT,
};
use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::Path,
};

const ALIAS_DOMAIN: &str = "alias.example.test";
const MAILBOX: &str = "ann@example.test";
/// Not trusted by nobounce.
const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: AliasArgs,
}

/// Runs `nobounce alias ARGS --config CONFIG` and returns its output.
async fn alias(config: &Path, args: &[&str]) -> String {
    let mut argv = vec!["alias", "--config", config.to_str().unwrap()];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(argv).expect("arguments");
    let mut out = Vec::new();
    alias_cli(cli.args, &mut out).await.expect("alias command");
    String::from_utf8(out).unwrap()
}

async fn send(postfix: &PostfixInstance, sender: &str, rcpt: &str, subject: &str) -> (u16, String) {
    let mut c = SmtpClient::connect_from(CLIENT, postfix.smtp_addr())
        .await
        .expect("connect");
    c.ehlo("mx.sender.test").await.unwrap().assert_code(250);
    c.mail_from(sender, &[]).await.unwrap().assert_code(250);
    let r = c.rcpt_to(rcpt).await.unwrap();
    if r.is_success() {
        let msg = MessageBuilder::new()
            .from(sender)
            .to(rcpt)
            .subject(subject)
            .build();
        c.data(&msg).await.unwrap().assert_code(250);
    }
    c.quit().await.unwrap();
    (r.code, r.to_string())
}

#[tokio::test]
async fn issue11_new_alias_delivered_leak_marked_retired_refused() {
    require!("postfix");
    let logs = nobounce_test_support::LogCapture::default();
    let _guard = logs.install();
    let dns = TestDnsServer::start([
        TestRecord::txt("shop.example", "v=spf1 ip4:127.0.0.0/8 -all", 300),
        TestRecord::txt("leak.test", "v=spf1 ip4:127.0.0.0/8 -all", 300),
    ])
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let socketmap = SocketAddr::from(([127, 0, 0, 1], free_port().unwrap()));
    let text = format!(
        "[dns]\nnameservers = [\"{}\"]\ntimeout = \"1s\"\nattempts = 1\n\
         [spf]\ntrusted_networks = []\n\
         [aliases]\ndomains = [\"{ALIAS_DOMAIN}\"]\npath = \"{}\"\nsocketmap = \"inet:{socketmap}\"\n",
        dns.addr(),
        dir.path().join("aliases.db").display()
    );
    let config_path = dir.path().join("nobounce.toml");
    std::fs::write(&config_path, &text).unwrap();
    let config = nobounce_config::Config::from_toml_str(&text).unwrap();
    let listener = bind_loopback().await.unwrap();
    let milter = listener.local_addr().unwrap();
    let nobounce = Background::spawn(|stop| nobounce_server::run_tcp(listener, config, stop));
    nobounce.wait_listening(socketmap).await.expect("socketmap");
    let sink = SmtpSink::start().await.unwrap();
    let postfix = PostfixInstance::builder()
        .milter(milter)
        .relay_to(sink.addr())
        .relay_domains(&["example.test"])
        .param("virtual_alias_domains", ALIAS_DOMAIN)
        .param(
            "virtual_alias_maps",
            &format!(
                "socketmap:inet:{}:{}:aliases",
                socketmap.ip(),
                socketmap.port()
            ),
        )
        .param(
            "smtpd_recipient_restrictions",
            "reject_unlisted_recipient, permit_mynetworks, reject_unauth_destination",
        )
        .start()
        .await
        .expect("postfix");

    // alias new: the last line of the output is the alias.
    let out = alias(&config_path, &["new", "shop.example", "--mailbox", MAILBOX]).await;
    let new = out.lines().last().unwrap().trim().to_owned();
    assert!(new.ends_with(&format!("@{ALIAS_DOMAIN}")), "{out}");

    // Mail from the correspondent: delivered to the mailbox, unmarked.
    let (code, reply) = send(&postfix, "orders@shop.example", &new, "from the shop").await;
    assert_eq!(code, 250, "{reply}");
    // Mail from another domain: delivered, and marked as a leak.
    let (code, reply) = send(&postfix, "spam@leak.test", &new, "from a leak").await;
    assert_eq!(code, 250, "{reply}");
    let got = sink
        .wait_for_messages(2, DEFAULT_TIMEOUT)
        .await
        .expect("delivered");
    for m in &got {
        assert_eq!(m.recipients, [MAILBOX], "{:?}", m.recipients);
    }
    let shop = got
        .iter()
        .find(|m| m.header("Subject").as_deref() == Some("from the shop"))
        .unwrap();
    assert_eq!(shop.header("X-Nobounce-Alias-Leak"), None);
    let leak = got
        .iter()
        .find(|m| m.header("Subject").as_deref() == Some("from a leak"))
        .unwrap();
    let mark = leak.header("X-Nobounce-Alias-Leak").unwrap_or_else(|| {
        panic!(
            "no leak header: {:?}\n{}\n{}",
            leak.headers(),
            logs.text(),
            postfix.log()
        )
    });
    assert!(
        mark.contains(&new) && mark.contains("sender-domain=leak.test"),
        "{mark}"
    );

    // alias retire: the same mail is refused at RCPT, nothing bounces.
    alias(
        &config_path,
        &["retire", &new, "--reason", "sold my address"],
    )
    .await;
    let (code, reply) = send(&postfix, "orders@shop.example", &new, "after retire").await;
    assert_eq!(code, 550, "{reply}");
    assert!(reply.contains("5.1.1"), "{reply}");
    // An address of the alias domain that was never made: refused too.
    let (code, _) = send(
        &postfix,
        "orders@shop.example",
        &format!("never@{ALIAS_DOMAIN}"),
        "x",
    )
    .await;
    assert_eq!(code, 550);
    postfix
        .wait_until_queue_empty(DEFAULT_TIMEOUT)
        .await
        .unwrap();
    postfix.assert_no_bounce();
    assert!(!sink.has_bounce());
    assert_eq!(sink.messages().len(), 2);
    // alias restore: delivered again.
    alias(&config_path, &["restore", &new]).await;
    let (code, reply) = send(&postfix, "orders@shop.example", &new, "restored").await;
    assert_eq!(code, 250, "{reply}");
}

#[tokio::test]
async fn issue11_two_instances_sharing_redis_see_the_same_aliases() {
    require!("redis-server");
    let redis = RedisInstance::start().await.expect("redis");
    let dir = tempfile::tempdir().unwrap();
    let mut hosts = Vec::new();
    let mut text = String::new();
    for _ in 0..2 {
        let policy = SocketAddr::from(([127, 0, 0, 1], free_port().unwrap()));
        text = format!(
            "[policy]\nsocket = \"inet:{policy}\"\n[spf]\nenabled = false\n\
             [store]\nbackend = \"redis\"\ncontrol_socket = \"\"\n[store.redis]\nurl = \"{}\"\n\
             [aliases]\ndomains = [\"{ALIAS_DOMAIN}\"]\nstore = \"redis\"\n",
            redis.url()
        );
        let config = nobounce_config::Config::from_toml_str(&text).unwrap();
        let listener = bind_loopback().await.unwrap();
        let task = Background::spawn(|stop| nobounce_server::run_tcp(listener, config, stop));
        task.wait_listening(policy).await.expect("policy service");
        hosts.push((policy, task));
    }
    let config_path = dir.path().join("nobounce.toml");
    std::fs::write(&config_path, &text).unwrap();
    let ask = |policy: SocketAddr, rcpt: String| async move {
        let mut c = PolicyClient::connect(policy).await.unwrap();
        c.ask(&policy_request(
            "RCPT",
            "192.0.2.7",
            "joe@shop.example",
            &rcpt,
            0,
            "",
            &[],
        ))
        .await
        .unwrap()
    };
    let out = alias(&config_path, &["new", "shop.example", "--mailbox", MAILBOX]).await;
    let new = out.lines().last().unwrap().trim().to_owned();
    for (policy, _) in &hosts {
        assert_eq!(
            ask(*policy, new.clone()).await,
            "DUNNO",
            "both hosts know it"
        );
    }
    alias(&config_path, &["retire", &new]).await;
    for (policy, _) in &hosts {
        let a = ask(*policy, new.clone()).await;
        assert!(a.starts_with("550 5.1.1 "), "both hosts refuse it: {a}");
    }
    for (_, task) in hosts {
        task.stop().await.unwrap().unwrap();
    }
}
