//! Issue 10: BATV. The milter signs the envelope sender of our clients'
//! mail (`SMFIR_CHGFROM`); bounces to our domains are verified at RCPT
//! (through the policy service here; the same engine serves the milter).

use indymilter_test::{EomAction, MacroStage, Status, TestConnection};
use nobounce_config::Config;
use nobounce_core::batv::{self, BatvKeys};
use nobounce_server::Service;
use nobounce_test_support::{free_port, policy_request, Background, PolicyClient};
use std::{
    fs,
    net::{IpAddr, SocketAddr},
    os::unix::fs::PermissionsExt,
    path::Path,
    time::{Duration, SystemTime},
};

const KEY1: &str = "1 first-secret-for-tests-0001\n";
const KEY2: &str = "2 second-secret-for-tests-0002\n";
/// Not trusted (the test config trusts 198.51.100.0/24 only).
const OUTSIDE: &str = "192.0.2.7";

fn write_keys(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
}

fn config_text(keys: &Path, policy: SocketAddr, extra: &str) -> String {
    format!(
        "[policy]\nsocket = \"inet:{policy}\"\n\
         [spf]\nenabled = false\ntrusted_networks = [\"198.51.100.0/24\"]\n\
         [batv]\nenabled = true\ndomains = [\"ours.test\"]\nkey_file = \"{}\"\n{extra}",
        keys.display()
    )
}

struct Site {
    _dir: tempfile::TempDir,
    policy: SocketAddr,
    milter: SocketAddr,
    daemon: Background<Result<(), nobounce_server::RunError>>,
}

async fn start(extra: &str) -> Site {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("batv.keys");
    write_keys(&keys, KEY1);
    let policy = SocketAddr::from(([127, 0, 0, 1], free_port().unwrap()));
    let config = Config::from_toml_str(&config_text(&keys, policy, extra)).expect("config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let milter = listener.local_addr().unwrap();
    let daemon = Background::spawn(|stop| nobounce_server::run_tcp(listener, config, stop));
    daemon.wait_listening(policy).await.expect("policy service");
    Site {
        _dir: dir,
        policy,
        milter,
        daemon,
    }
}

async fn bounce_to(site: &Site, rcpt: &str) -> String {
    let mut c = PolicyClient::connect(site.policy).await.unwrap();
    c.ask(&policy_request("RCPT", OUTSIDE, "", rcpt, 0, "", &[]))
        .await
        .unwrap()
}

fn tag(keys: &str, address: &str, sent: SystemTime) -> String {
    batv::sign(&BatvKeys::parse(keys).unwrap(), address, 7, sent).unwrap()
}

const DAY: Duration = Duration::from_secs(86_400);

#[tokio::test]
async fn issue10_bounces_must_come_to_a_valid_unexpired_signature() {
    let site = start("").await;
    let now = SystemTime::now();
    let valid = tag(KEY1, "joe@ours.test", now);
    assert_eq!(bounce_to(&site, &valid).await, "DUNNO");
    // Upper-case hex, and the sub-address form, are the same tag.
    let (tagpart, rest) = valid[5..].split_once('=').unwrap();
    let upper = format!("prvs={}={rest}", tagpart.to_ascii_uppercase());
    assert_eq!(bounce_to(&site, &upper).await, "DUNNO");
    let sub = format!("joe+prvs={tagpart}@ours.test");
    assert_eq!(bounce_to(&site, &sub).await, "DUNNO");
    // Another address with joe's tag: bad signature.
    let forged = valid.replace("joe@", "ann@");
    let a = bounce_to(&site, &forged).await;
    assert!(
        a.starts_with("550 5.7.1 ") && a.contains("bad BATV signature"),
        "{a}"
    );
    // Signed ten days ago with a 7-day lifetime: expired.
    let old = tag(KEY1, "joe@ours.test", now - 10 * DAY);
    let a = bounce_to(&site, &old).await;
    assert!(a.starts_with("550 5.7.1 ") && a.contains("expired"), "{a}");
    // Unsigned: accepted by default.
    assert_eq!(bounce_to(&site, "joe@ours.test").await, "DUNNO");
    // Not our domain: not our business.
    assert_eq!(
        bounce_to(&site, &forged.replace("ours.test", "other.test")).await,
        "DUNNO"
    );
    // Mail with a sender (not a bounce) to a tagged address passes.
    let mut c = PolicyClient::connect(site.policy).await.unwrap();
    let a = c
        .ask(&policy_request(
            "RCPT",
            OUTSIDE,
            "x@y.test",
            &forged,
            0,
            "",
            &[],
        ))
        .await
        .unwrap();
    assert_eq!(a, "DUNNO");
    site.daemon.stop().await.unwrap().unwrap();

    let strict = start("unsigned = \"reject\"\n").await;
    let a = bounce_to(&strict, "joe@ours.test").await;
    assert!(
        a.starts_with("550 5.7.1 ") && a.contains("no BATV signature"),
        "{a}"
    );
    strict.daemon.stop().await.unwrap().unwrap();
}

#[tokio::test]
async fn issue10_the_milter_signs_our_clients_senders_only() {
    let site = start("").await;
    // (client, auth user, sender) → signed?
    let cases: [(&str, Option<&str>, &str, bool); 5] = [
        (OUTSIDE, Some("joe"), "<joe@ours.test>", true),
        ("198.51.100.5", None, "<joe@ours.test>", true),
        (OUTSIDE, None, "<joe@ours.test>", false),
        (OUTSIDE, Some("joe"), "<joe@elsewhere.test>", false),
        (OUTSIDE, Some("joe"), "<>", false),
    ];
    for (client, auth, sender, signed) in cases {
        let mut conn = TestConnection::open(site.milter).await.expect("negotiate");
        assert!(
            conn.negotiated_actions()
                .contains(indymilter_test::Actions::CHANGE_SENDER),
            "asks for SMFIF_CHGFROM"
        );
        conn.macros(MacroStage::Connect, [("j", "mx.ours.test")])
            .await
            .unwrap();
        let ip: IpAddr = client.parse().unwrap();
        conn.connect("client", (ip, 4000)).await.unwrap();
        conn.helo("client.test").await.unwrap();
        if let Some(user) = auth {
            conn.macros(MacroStage::Mail, [("{auth_authen}", user)])
                .await
                .unwrap();
        }
        assert_eq!(conn.mail([sender]).await.unwrap(), Status::Continue);
        assert_eq!(
            conn.rcpt(["<ann@example.net>"]).await.unwrap(),
            Status::Continue
        );
        let (actions, status) = conn.eom().await.unwrap();
        assert_eq!(status, Status::Continue);
        let changed: Vec<String> = actions
            .actions
            .iter()
            .filter_map(|a| match a {
                EomAction::ChangeSender { mail, .. } => Some(mail.to_string_lossy().into_owned()),
                _ => None,
            })
            .collect();
        if signed {
            assert_eq!(changed.len(), 1, "{client} {auth:?} {sender}");
            let new = changed[0].trim_matches(|c| c == '<' || c == '>');
            assert!(
                new.starts_with("prvs=1") && new.ends_with("=joe@ours.test"),
                "{new}"
            );
            // And the signature is valid for the verifier.
            assert_eq!(bounce_to(&site, new).await, "DUNNO");
        } else {
            assert!(
                changed.is_empty(),
                "{client} {auth:?} {sender}: {changed:?}"
            );
        }
        conn.close().await.unwrap();
    }
    site.daemon.stop().await.unwrap().unwrap();
}

#[tokio::test]
async fn issue10_key_rotation_keeps_yesterdays_signatures_valid() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("batv.keys");
    write_keys(&keys, KEY1);
    let policy = SocketAddr::from(([127, 0, 0, 1], 1));
    let service = Service::new(Config::from_toml_str(&config_text(&keys, policy, "")).unwrap())
        .expect("service");
    let yesterday = tag(KEY1, "joe@ours.test", SystemTime::now() - DAY);
    let verdict = |svc: &Service, rcpt: String| {
        let engine = nobounce_core::EngineSource::engine(svc);
        async move {
            let mut s = engine.session();
            s.connect(OUTSIDE.parse().ok(), "x", None).await;
            s.mail_from("<>", &[], None).await;
            s.rcpt_to(&rcpt).await
        }
    };
    assert!(!verdict(&service, yesterday.clone()).await.is_refusal());
    // Rotate: key 2 now signs; key 1 stays listed for the lifetime.
    write_keys(&keys, &format!("{KEY1}{KEY2}"));
    service
        .reload(Config::from_toml_str(&config_text(&keys, policy, "")).unwrap())
        .await
        .expect("reload");
    assert!(!verdict(&service, yesterday.clone()).await.is_refusal());
    let today = tag(&format!("{KEY1}{KEY2}"), "joe@ours.test", SystemTime::now());
    assert!(today.starts_with("prvs=2"), "{today}");
    assert!(!verdict(&service, today).await.is_refusal());
    // Once key 1 is dropped, its tags are refused.
    write_keys(&keys, KEY2);
    service
        .reload(Config::from_toml_str(&config_text(&keys, policy, "")).unwrap())
        .await
        .expect("reload");
    assert!(verdict(&service, yesterday).await.is_refusal());
}

#[tokio::test]
async fn issue10_key_file_problems_are_configuration_errors() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("batv.keys");
    let policy = SocketAddr::from(([127, 0, 0, 1], 1));
    let text = config_text(&keys, policy, "");
    let error = |text: &str| {
        Service::new(Config::from_toml_str_named(text, "t.toml").unwrap())
            .unwrap_err()
            .to_string()
    };
    assert!(error(&text).contains("No such file"), "{}", error(&text));
    fs::write(&keys, KEY1).unwrap();
    fs::set_permissions(&keys, fs::Permissions::from_mode(0o644)).unwrap();
    let e = error(&text);
    assert!(
        e.contains("batv.key_file") && e.contains("readable by every user"),
        "{e}"
    );
    write_keys(&keys, "1 short\n");
    let e = error(&text);
    assert!(e.contains("t.toml:") && e.contains("line 1"), "{e}");
}
