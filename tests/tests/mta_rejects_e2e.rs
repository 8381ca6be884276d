//! Issue 5, end to end: recipients that Postfix itself rejects as unknown
//! (`reject_unlisted_recipient`, before the milter is asked) count towards a
//! dictionary-attack ban, because nobounce negotiates `SMFIP_RCPT_REJ` and
//! Postfix shows it those recipients with `{rcpt_mailer} = error`.
//!
//! nobounce has no recipient backend here: every unknown-user rejection the
//! client sees comes from Postfix (`virtual_mailbox_maps`).

use nobounce_test_support::dns::{TestDnsServer, TestRecord};
use nobounce_test_support::{
    bind_loopback, require, Background, PostfixInstance, SmtpClient, SmtpSink,
};
use std::net::{IpAddr, Ipv4Addr};

const ATTACKER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 5));

#[tokio::test]
async fn recipients_postfix_rejects_as_unknown_ban_the_client() {
    require!("postfix");
    let dir = tempfile::tempdir().expect("tempdir");
    let users = dir.path().join("users");
    std::fs::write(&users, "alice@mbox.test ok\n").expect("write users");

    let dns = TestDnsServer::start([TestRecord::txt(
        "sender.test",
        "v=spf1 ip4:127.0.0.0/8 -all",
        300,
    )])
    .await
    .expect("DNS");
    let config = nobounce_config::Config::from_toml_str(&format!(
        "[dns]\nnameservers = [\"{}\"]\ntimeout_secs = 1\nattempts = 1\n\
         [spf]\ntrusted_networks = []\n\
         [dictionary]\nthreshold = 3\n\
         [store]\ncontrol_socket = \"\"\n",
        dns.addr()
    ))
    .expect("config");
    let listener = bind_loopback().await.expect("bind");
    let milter_addr = listener.local_addr().expect("addr");
    let _milter =
        Background::spawn(|shutdown| nobounce_server::run_tcp(listener, config, shutdown));
    let sink = SmtpSink::start().await.expect("sink");
    let postfix = PostfixInstance::builder()
        .milter(milter_addr)
        .lmtp(sink.addr(), &["mbox.test"])
        .param(
            "virtual_mailbox_maps",
            &format!("texthash:{}", users.display()),
        )
        .param(
            "smtpd_recipient_restrictions",
            "reject_unlisted_recipient, permit_mynetworks, reject",
        )
        .start()
        .await
        .expect("postfix");

    let mut c = SmtpClient::connect_from(ATTACKER, postfix.smtp_addr())
        .await
        .expect("connect");
    c.ehlo("client.sender.test")
        .await
        .expect("ehlo")
        .assert_code(250);
    c.mail_from("news@sender.test", &[])
        .await
        .expect("mail")
        .assert_code(250);
    c.rcpt_to("alice@mbox.test")
        .await
        .expect("rcpt")
        .assert_code(250);
    for i in 0..3 {
        let r = c
            .rcpt_to(&format!("probe{i}@mbox.test"))
            .await
            .expect("rcpt");
        r.assert_code(550);
        // Postfix's own text, not nobounce's.
        assert!(r.text().contains("User unknown"), "{r:?}");
    }
    let _ = c.quit().await;

    // The next connection of that client is told it is banned, at MAIL
    // FROM.
    let mut c = SmtpClient::connect_from(ATTACKER, postfix.smtp_addr())
        .await
        .expect("connect");
    c.ehlo("client.sender.test")
        .await
        .expect("ehlo")
        .assert_code(250);
    let r = c.mail_from("news@sender.test", &[]).await.expect("mail");
    r.assert_code(421);
    assert!(
        r.text().starts_with("4.7.0 127.0.0.5 banned until "),
        "{r:?}"
    );
    postfix.assert_no_bounce();
}
