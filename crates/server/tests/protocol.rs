//! Protocol tests: the whole milter runs in-process on 127.0.0.1:0 and is
//! driven over a real socket by indymilter-test, with a test DNS server on
//! loopback serving the SPF zones.

use indymilter_test::{EomAction, MacroStage, Status, TestConnection};
use nobounce_config::Config;
use nobounce_server::Service;
use nobounce_test_support::dns::{ServerMode, TestDnsServer, TestRecord};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));

struct Running {
    addr: SocketAddr,
    milter: Service,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Running {
    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.task
            .await
            .expect("milter task")
            .expect("milter exits cleanly");
    }
}

async fn dns() -> TestDnsServer {
    TestDnsServer::start([
        TestRecord::txt("pass.test", "v=spf1 ip4:192.0.2.0/24 -all", 300),
        TestRecord::txt("fail.test", "v=spf1 -all", 300),
        TestRecord::txt("soft.test", "v=spf1 ~all", 300),
        TestRecord::txt("broken.test", "v=spf1 ip4:999.0.0.1 -all", 300),
        TestRecord::txt("exp.test", "v=spf1 -all exp=why.exp.test", 300),
        TestRecord::txt("why.exp.test", "Go away %{i}, 100%% not welcome", 300),
        TestRecord::txt("mx.pass.test", "v=spf1 a:mx.pass.test -all", 300),
        TestRecord::a("mx.pass.test", Ipv4Addr::new(192, 0, 2, 10), 300),
        TestRecord::txt("badhelo.test", "v=spf1 -all", 300),
    ])
    .await
    .expect("test DNS server starts")
}

async fn start(dns: &TestDnsServer, extra: &str) -> Running {
    // Unless the test says otherwise, check every client (the default
    // trusts loopback, which is where these tests connect from).
    let trusted = if extra.contains("trusted_networks") {
        ""
    } else {
        "trusted_networks = []\n"
    };
    let text = format!(
        "[dns]\nnameservers = [\"{}\"]\ntimeout_secs = 1\nattempts = 1\n[spf]\n{trusted}{extra}",
        dns.addr()
    );
    let config = Config::from_toml_str(&text).expect("valid test config");
    let milter = Service::new(config).expect("milter setup");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let (tx, rx) = oneshot::channel();
    let m = milter.clone();
    let task = tokio::spawn(async move {
        m.serve_milter(listener, async {
            let _ = rx.await;
        })
        .await
    });
    Running {
        addr,
        milter,
        stop: Some(tx),
        task,
    }
}

async fn open(addr: SocketAddr, helo: &str) -> TestConnection {
    let mut conn = TestConnection::open(addr).await.expect("negotiate");
    conn.macros(MacroStage::Connect, [("j", "mx.nobounce.test")])
        .await
        .expect("macros");
    let st = conn
        .connect("client.example", (CLIENT, 40000))
        .await
        .expect("connect");
    assert_eq!(st, Status::Noreply, "connect is negotiated without reply");
    assert_eq!(conn.helo(helo).await.expect("helo"), Status::Noreply);
    conn
}

fn reply_text(status: &Status) -> String {
    match status {
        Status::Reject { message: Some(m) } | Status::Tempfail { message: Some(m) } => {
            m.to_string_lossy().into_owned()
        }
        other => format!("{other:?}"),
    }
}

#[tokio::test]
async fn negotiation_requests_header_actions_and_macros() {
    let dns = dns().await;
    let m = start(&dns, "").await;
    let conn = TestConnection::open(m.addr).await.expect("negotiate");
    let actions = conn.negotiated_actions();
    assert!(actions.contains(indymilter_test::Actions::ADD_HEADER));
    assert!(actions.contains(indymilter_test::Actions::CHANGE_HEADER));
    let macros = conn.requested_macros();
    let mail = macros
        .get(&MacroStage::Mail)
        .expect("mail macros requested");
    assert!(mail.to_str().unwrap().contains("{auth_authen}"));
    assert!(macros
        .get(&MacroStage::Connect)
        .unwrap()
        .to_str()
        .unwrap()
        .contains('j'));
    conn.close().await.expect("close");
    m.stop().await;
}

/// Issue 8: the least protocol work. No stage nobounce never reads (DATA,
/// end of headers, body, unknown commands), no reply where it always
/// continues (connect, HELO, each header), only the macros it reads.
#[tokio::test]
async fn issue8_negotiates_the_least_protocol_work() {
    use indymilter_test::ProtoOpts;
    let dns = dns().await;
    let m = start(&dns, "").await;
    let mut conn = open(m.addr, "mx.pass.test").await;
    let opts = conn.negotiated_opts();
    for skipped in [
        ProtoOpts::NO_DATA,
        ProtoOpts::NO_EOH,
        ProtoOpts::NO_BODY,
        ProtoOpts::NO_UNKNOWN,
    ] {
        assert!(opts.contains(skipped), "{skipped:?} in {opts:?}");
    }
    for no_reply in [
        ProtoOpts::NOREPLY_CONNECT,
        ProtoOpts::NOREPLY_HELO,
        ProtoOpts::NOREPLY_HEADER,
    ] {
        assert!(opts.contains(no_reply), "{no_reply:?} in {opts:?}");
    }
    assert!(!opts.contains(ProtoOpts::NOREPLY_MAIL) && !opts.contains(ProtoOpts::NOREPLY_RCPT));
    let macros = conn.requested_macros();
    assert_eq!(
        macros[&MacroStage::Connect].to_str().unwrap(),
        "j {client_addr}"
    );
    assert_eq!(macros[&MacroStage::Helo].to_str().unwrap(), "");

    // A header gets no reply: the milter sends nothing, and the next reply
    // read (end of message) is the right one.
    assert_eq!(
        conn.mail(["<joe@pass.test>"]).await.unwrap(),
        Status::Continue
    );
    assert_eq!(
        conn.rcpt(["<you@local.test>"]).await.unwrap(),
        Status::Continue
    );
    for i in 0..12 {
        let st = conn.header(format!("X-Header-{i}"), "value").await.unwrap();
        assert_eq!(st, Status::Noreply);
    }
    let (actions, status) = conn.eom().await.unwrap();
    assert_eq!(status, Status::Continue);
    assert!(actions.has_insert_header(0, "Received-SPF", indymilter_test::any()));
    conn.close().await.unwrap();

    // Without a header rule (SPF off), headers are not even sent.
    let m2 = start(&dns, "enabled = false\n").await;
    let conn = TestConnection::open(m2.addr).await.expect("negotiate");
    assert!(conn.negotiated_opts().contains(ProtoOpts::NO_HEADER));
    assert!(!conn
        .negotiated_actions()
        .contains(indymilter_test::Actions::ADD_HEADER));
    conn.close().await.unwrap();
    m2.stop().await;
    m.stop().await;
}

/// Issue 8: an MTA that offers no no-reply option gets replies as usual.
#[tokio::test]
async fn issue8_without_no_reply_options_every_stage_is_answered() {
    use indymilter_test::ProtoOpts;
    let dns = dns().await;
    let m = start(&dns, "").await;
    let offered = ProtoOpts::all()
        - (ProtoOpts::NOREPLY_CONNECT
            | ProtoOpts::NOREPLY_HELO
            | ProtoOpts::NOREPLY_HEADER
            | ProtoOpts::NOREPLY_MAIL
            | ProtoOpts::NOREPLY_RCPT
            | ProtoOpts::NOREPLY_DATA
            | ProtoOpts::NOREPLY_EOH
            | ProtoOpts::NOREPLY_BODY
            | ProtoOpts::NOREPLY_UNKNOWN);
    let mut conn = TestConnection::configure()
        .available_opts(offered)
        .open_tcp(m.addr)
        .await
        .expect("negotiate");
    assert_eq!(
        conn.connect("client.example", (CLIENT, 40000))
            .await
            .unwrap(),
        Status::Continue
    );
    assert_eq!(conn.helo("mx.pass.test").await.unwrap(), Status::Continue);
    assert_eq!(
        conn.mail(["<joe@pass.test>"]).await.unwrap(),
        Status::Continue
    );
    assert_eq!(
        conn.rcpt(["<you@local.test>"]).await.unwrap(),
        Status::Continue
    );
    assert_eq!(
        conn.header("Subject", "hi").await.unwrap(),
        Status::Continue
    );
    let (_, status) = conn.eom().await.unwrap();
    assert_eq!(status, Status::Continue);
    conn.close().await.unwrap();
    m.stop().await;
}

#[tokio::test]
async fn spf_fail_is_rejected_at_mail_from_with_5_7_23() {
    let dns = dns().await;
    let m = start(&dns, "").await;
    let mut conn = open(m.addr, "client.example").await;
    let st = conn.mail(["<joe@fail.test>"]).await.expect("mail");
    let text = reply_text(&st);
    assert!(matches!(st, Status::Reject { .. }), "{st:?}");
    assert!(text.starts_with("550 5.7.23 "), "{text}");
    assert!(
        text.contains("fail.test does not allow 192.0.2.10"),
        "{text}"
    );
    conn.close().await.expect("close");
    m.stop().await;
}

#[tokio::test]
async fn spf_pass_gets_headers_at_end_of_message() {
    let dns = dns().await;
    let m = start(
        &dns,
        "headers = [\"Received-SPF\", \"Authentication-Results\"]\n",
    )
    .await;
    let mut conn = open(m.addr, "mx.pass.test").await;
    assert_eq!(
        conn.mail(["<joe@pass.test>", "SIZE=100"]).await.unwrap(),
        Status::Continue
    );
    assert_eq!(
        conn.rcpt(["<you@local.test>"]).await.unwrap(),
        Status::Continue
    );
    assert_eq!(
        conn.header("Subject", "hello").await.unwrap(),
        Status::Noreply
    );
    let (actions, st) = conn.eom().await.expect("eom");
    assert_eq!(st, Status::Continue);
    let mut inserted = Vec::new();
    for a in &actions.actions {
        if let EomAction::InsertHeader { index, name, value } = a {
            assert_eq!(*index, 0);
            inserted.push((
                name.to_string_lossy().into_owned(),
                value.to_string_lossy().into_owned(),
            ));
        }
    }
    // Inserted in reverse so that Received-SPF ends on top.
    let rs = inserted
        .iter()
        .find(|(n, _)| n == "Received-SPF")
        .expect("Received-SPF inserted");
    assert!(
        rs.1.starts_with("pass (mx.nobounce.test: domain of joe@pass.test designates 192.0.2.10"),
        "{}",
        rs.1
    );
    let ar = inserted
        .iter()
        .find(|(n, _)| n == "Authentication-Results")
        .expect("Authentication-Results inserted");
    assert_eq!(
        ar.1,
        "mx.nobounce.test; spf=pass smtp.mailfrom=joe@pass.test"
    );
    conn.close().await.unwrap();
    m.stop().await;
}

#[tokio::test]
async fn forged_authentication_results_with_our_id_are_deleted() {
    let dns = dns().await;
    let m = start(&dns, "").await;
    let mut conn = open(m.addr, "mx.pass.test").await;
    conn.mail(["<joe@pass.test>"]).await.unwrap();
    conn.rcpt(["<you@local.test>"]).await.unwrap();
    conn.header("Authentication-Results", " other.test; spf=pass")
        .await
        .unwrap();
    conn.header(
        "Authentication-Results",
        " MX.nobounce.test; spf=pass smtp.mailfrom=x",
    )
    .await
    .unwrap();
    let (actions, _) = conn.eom().await.unwrap();
    let deleted: Vec<i32> = actions
        .actions
        .iter()
        .filter_map(|a| match a {
            EomAction::DeleteHeader { name, index }
                if name.as_c_str() == c"Authentication-Results" =>
            {
                Some(*index)
            }
            _ => None,
        })
        .collect();
    assert_eq!(deleted, [2], "{:?}", actions.actions);
    conn.close().await.unwrap();
    m.stop().await;
}

/// Issue 13, defect 3: forged Authentication-Results survived removal when
/// the authserv-id was a quoted string, or followed nested or escaped
/// comments; a header whose id cannot be read is treated as forged. And a
/// message with more forged headers than nobounce removes is refused.
#[tokio::test]
async fn issue13_forged_authentication_results_in_every_form_are_deleted() {
    let dns = dns().await;
    let m = start(&dns, "").await;
    let mut conn = open(m.addr, "mx.pass.test").await;
    conn.mail(["<joe@pass.test>"]).await.unwrap();
    conn.rcpt(["<you@local.test>"]).await.unwrap();
    for value in [
        " other.test; spf=pass",
        " \"mx.nobounce.test\"; spf=pass",
        " (outer (inner) comment) mx.nobounce.test; spf=pass",
        " (escaped \\) paren) mx.nobounce.test; spf=pass",
        " (never closed mx.nobounce.test; spf=pass",
        " \"other.test\" ; spf=pass",
    ] {
        conn.header("Authentication-Results", value).await.unwrap();
    }
    let (actions, _) = conn.eom().await.unwrap();
    let deleted: Vec<i32> = actions
        .actions
        .iter()
        .filter_map(|a| match a {
            EomAction::DeleteHeader { name, index }
                if name.as_c_str() == c"Authentication-Results" =>
            {
                Some(*index)
            }
            _ => None,
        })
        .collect();
    assert_eq!(deleted, [5, 4, 3, 2], "{:?}", actions.actions);

    conn.mail(["<joe@pass.test>"]).await.unwrap();
    conn.rcpt(["<you@local.test>"]).await.unwrap();
    for _ in 0..40 {
        conn.header("Authentication-Results", " mx.nobounce.test; spf=pass")
            .await
            .unwrap();
    }
    let (_, status) = conn.eom().await.unwrap();
    assert!(reply_text(&status).starts_with("550 5.7.1 "), "{status:?}");
    conn.close().await.unwrap();
    m.stop().await;
}

#[tokio::test]
async fn helo_fail_is_rejected() {
    let dns = dns().await;
    let m = start(&dns, "").await;
    let mut conn = open(m.addr, "badhelo.test").await;
    let st = conn.mail(["<joe@pass.test>"]).await.unwrap();
    let text = reply_text(&st);
    assert!(text.starts_with("550 5.7.23 "), "{text}");
    assert!(text.contains("badhelo.test"), "{text}");
    conn.close().await.unwrap();
    m.stop().await;
}

#[tokio::test]
async fn null_sender_is_checked_as_postmaster_at_helo() {
    let dns = dns().await;
    let m = start(&dns, "").await;
    // HELO verification off: the null sender alone must still be checked.
    let m2 = start(&dns, "verify_helo = false\n").await;
    for addr in [m.addr, m2.addr] {
        let mut conn = open(addr, "fail.test").await;
        let st = conn.mail(["<>"]).await.unwrap();
        assert!(reply_text(&st).starts_with("550 5.7.23 "), "{st:?}");
        conn.close().await.unwrap();
    }
    // A null sender from a passing HELO goes through.
    let mut conn = open(m2.addr, "mx.pass.test").await;
    assert_eq!(conn.mail(["<>"]).await.unwrap(), Status::Continue);
    conn.close().await.unwrap();
    m.stop().await;
    m2.stop().await;
}

#[tokio::test]
async fn permerror_and_explanation_replies_are_safe() {
    let dns = dns().await;
    let m = start(&dns, "").await;
    let mut conn = open(m.addr, "client.example").await;
    let st = conn.mail(["<joe@broken.test>"]).await.unwrap();
    assert!(reply_text(&st).starts_with("550 5.7.24 "), "{st:?}");
    conn.abort().await.unwrap();
    let st = conn.mail(["<joe@exp.test>"]).await.unwrap();
    let text = reply_text(&st);
    assert!(text.starts_with("550 5.7.23 "), "{text}");
    // The domain's explanation, with macros expanded and `%` doubled for
    // the MTA.
    assert!(
        text.contains("Go away 192.0.2.10, 100%% not welcome"),
        "{text}"
    );
    conn.close().await.unwrap();
    m.stop().await;
}

#[tokio::test]
async fn unanswered_dns_is_a_temporary_failure() {
    let dns = dns().await;
    dns.set_mode(ServerMode::Silent);
    let m = start(&dns, "").await;
    let mut conn = open(m.addr, "client.example").await;
    let st = conn.mail(["<joe@pass.test>"]).await.unwrap();
    let text = reply_text(&st);
    assert!(matches!(st, Status::Tempfail { .. }), "{st:?}");
    assert!(text.starts_with("451 4.7.24 "), "{text}");
    conn.close().await.unwrap();
    m.stop().await;
}

#[tokio::test]
async fn trusted_and_authenticated_clients_skip_spf() {
    let dns = dns().await;
    let m = start(&dns, "").await;
    let mut conn = open(m.addr, "client.example").await;
    conn.macros(MacroStage::Mail, [("{auth_authen}", "joe")])
        .await
        .unwrap();
    assert_eq!(
        conn.mail(["<joe@fail.test>"]).await.unwrap(),
        Status::Continue
    );
    conn.close().await.unwrap();
    m.stop().await;

    let m = start(&dns, "trusted_networks = [\"192.0.2.0/24\"]\n").await;
    let mut conn = open(m.addr, "client.example").await;
    assert_eq!(
        conn.mail(["<joe@fail.test>"]).await.unwrap(),
        Status::Continue
    );
    conn.close().await.unwrap();
    m.stop().await;
}

#[tokio::test]
async fn dry_run_refuses_nothing() {
    let dns = dns().await;
    let m = start(&dns, "").await;
    let mut config = (*m.milter.config()).clone();
    config.dry_run = true;
    m.milter.reload(config).await.expect("reload");
    let mut conn = open(m.addr, "client.example").await;
    assert_eq!(
        conn.mail(["<joe@fail.test>"]).await.unwrap(),
        Status::Continue
    );
    conn.close().await.unwrap();
    m.stop().await;
}

#[tokio::test]
async fn reload_applies_to_new_connections_only() {
    let dns = dns().await;
    let m = start(&dns, "").await;
    let mut old = open(m.addr, "client.example").await;
    let mut config = (*m.milter.config()).clone();
    config.spf.on_fail = nobounce_core::SpfAction::Accept;
    m.milter.reload(config).await.expect("reload");
    // The open connection keeps the configuration it started with.
    assert!(matches!(
        old.mail(["<joe@fail.test>"]).await.unwrap(),
        Status::Reject { .. }
    ));
    let mut new = open(m.addr, "client.example").await;
    assert_eq!(
        new.mail(["<joe@fail.test>"]).await.unwrap(),
        Status::Continue
    );
    old.close().await.unwrap();
    new.close().await.unwrap();
    m.stop().await;
}

#[tokio::test]
async fn map_file_recipients_are_judged_at_rcpt_and_reloaded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let map = dir.path().join("recipients");
    std::fs::write(&map, "alice@local.test\nold@local.test retired\n").unwrap();
    let dns = dns().await;
    let extra = format!(
        "[recipients]\ndefault_chain = [\"users\"]\n[recipients.backends.users]\ntype = \"map_file\"\npath = \"{}\"\nwatch_interval = \"0s\"\n",
        map.display()
    );
    let m = start(&dns, &extra).await;
    let mut conn = open(m.addr, "mx.pass.test").await;
    assert_eq!(
        conn.mail(["<joe@pass.test>"]).await.unwrap(),
        Status::Continue
    );
    assert_eq!(
        conn.rcpt(["<alice@local.test>"]).await.unwrap(),
        Status::Continue
    );
    let st = conn.rcpt(["<bob@local.test>"]).await.unwrap();
    assert!(reply_text(&st).starts_with("550 5.1.1 "), "{st:?}");
    let st = conn.rcpt(["<old@local.test>"]).await.unwrap();
    assert!(reply_text(&st).starts_with("550 5.2.1 "), "{st:?}");
    // Other domains are left to the MTA.
    assert_eq!(
        conn.rcpt(["<x@elsewhere.test>"]).await.unwrap(),
        Status::Continue
    );
    conn.close().await.unwrap();

    // SIGHUP (reload) re-reads the map.
    std::fs::write(&map, "alice@local.test\nbob@local.test\n").unwrap();
    m.milter
        .reload((*m.milter.config()).clone())
        .await
        .expect("reload");
    let mut conn = open(m.addr, "mx.pass.test").await;
    conn.mail(["<joe@pass.test>"]).await.unwrap();
    assert_eq!(
        conn.rcpt(["<bob@local.test>"]).await.unwrap(),
        Status::Continue
    );
    conn.close().await.unwrap();
    m.stop().await;
}
