//! The configuration pipeline: defaults, every rule, and errors at the line
//! of their own key, in their own table (issue 14).

use nobounce_config::{Config, ControlSocket, StoreBackend};
use nobounce_core::spf::SpfAction;
use nobounce_recipients::BackendConfig;
use std::time::Duration;

fn error_of(text: &str) -> String {
    Config::from_toml_str_named(text, "t.toml")
        .expect_err(text)
        .to_string()
}

#[test]
fn empty_file_is_the_default() {
    let c = Config::from_toml_str("").unwrap();
    assert_eq!(c, Config::default());
    assert_eq!(c.socket.to_string(), "inet:127.0.0.1:8894");
    assert_eq!(c.command_timeout, Duration::from_secs(25));
    assert_eq!(c.spf.timeout, Duration::from_secs(20));
    assert_eq!(c.store.control_socket, ControlSocket::Auto);
    assert_eq!(c.milter.socket_mode, 0o660);
}

#[test]
fn interface_keys_of_issue_2_parse() {
    let c = Config::from_toml_str(
        r#"
socket = "unix:/run/nobounce/milter.sock"
dry_run = true
[dns]
nameservers = ["127.0.0.1:5353", "::1", "10.0.0.1"]
timeout_secs = 3
[spf]
trusted_networks = []
"#,
    )
    .unwrap();
    assert_eq!(c.socket.to_string(), "unix:/run/nobounce/milter.sock");
    assert!(c.dry_run);
    assert_eq!(c.dns.nameservers[0], "127.0.0.1:5353".parse().unwrap());
    assert_eq!(c.dns.nameservers[1], "[::1]:53".parse().unwrap());
    assert_eq!(c.dns.timeout, Duration::from_secs(3));
    assert!(c.spf.trusted_networks.is_empty());
}

/// Issue 14: an error is reported at the line of its own key, in its own
/// table, for every table. (`[spf] timeout_secs` used to be reported at
/// the line of `[dns] timeout_secs`.)
#[test]
fn issue14_errors_are_at_their_own_line_in_every_table() {
    // Every table sets `timeout_secs`-like keys before the bad one, so that
    // a search by key name would find the wrong line.
    let cases: &[(&str, usize, &str)] = &[
        ("[dns]\ntimeout_secs = 3\n\n[spf]\ntimeout_secs = 0\n", 5, "spf.timeout_secs"),
        ("[spf]\ntimeout_secs = 3\n\n[dns]\ntimeout_secs = 0\n", 5, "dns.timeout_secs"),
        ("command_timeout = \"20s\"\n[spf]\ntimeout = \"30s\"\n", 3, "spf.timeout"),
        ("[milter]\nmax_connections = 5\nconnection_timeout = \"0s\"\n", 3, "milter.connection_timeout"),
        ("[log]\nlevel = \"info,[\"\n", 2, "log.level"),
        ("[dictionary]\nthreshold = 5\nban = \"1h\"\nmax_ban = \"30m\"\n", 4, "dictionary.max_ban"),
        ("[dictionary]\nwindow_secs = 99999999999\n", 2, "dictionary.window_secs"),
        ("[store]\nmax_keys = 0\n", 2, "store.max_keys"),
        ("[store]\nbackend = \"redis\"\n[store.redis]\nprefix = \"x\"\nurl = \"rediss://h\"\n", 5, "store.redis.url"),
        ("[store.redis]\ntimeout_ms = 5\nretry_ms = -1\n", 3, "store.redis.retry_ms"),
        ("[recipients]\nunknown_text = \"ok\"\nover_quota_text = \"a\\r\\nb\"\n", 3, "recipients.over_quota_text"),
        (
            "[recipients.backends.m]\ntype = \"map_file\"\npath = \"/x\"\n\n[recipients.backends.p]\ntype = \"rcpt_probe\"\naddress = \"127.0.0.1:24\"\ntimeout = \"1h\"\n",
            8,
            "recipients.backends.p.timeout",
        ),
        (
            "[recipients.backends.q]\ntype = \"maildir\"\npath_template = \"/m/{domain}\"\n",
            3,
            "recipients.backends.q.path_template",
        ),
        (
            "[recipients.backends.q]\ntype = \"quota_status\"\naddress = \"127.0.0.1:1\"\n[recipients.backends.q.cache]\ncapacity = -5\n",
            5,
            "recipients.backends.q.cache.capacity",
        ),
        (
            "[recipients.backends.users]\ntype = \"map_file\"\npath = \"/x\"\n\n[[recipients.routes]]\ndomains = [\"a.test\"]\nchain = [\"users\"]\n\n[[recipients.routes]]\ndomains = [\"b.test\"]\nchain = [\"nope\"]\n",
            11,
            "recipients.routes[1].chain",
        ),
        ("[spf]\nenabled = true\non_temperror = \"reject\"\n", 3, "spf.on_temperror"),
        ("[spf]\nheaders = [\"Received-SPF\", \"X-Bogus\"]\n", 2, "spf.headers[1]"),
        ("[milter]\nsocket_mode = \"0666\"\n", 2, "milter.socket_mode"),
        ("[policy]\nsocket = \"inet:mx.example:8895\"\n", 2, "policy.socket"),
        ("[policy]\nsocket = \"tcp:1\"\n", 2, "policy.socket"),
        (
            "socket = \"inet:127.0.0.1:8895\"\n[policy]\nsocket = \"inet:127.0.0.1:8895\"\n",
            3,
            "policy.socket",
        ),
        ("[policy]\nidle_timeout = \"0s\"\n", 2, "policy.idle_timeout"),
        ("[batv]\nenabled = true\n", 2, "batv.enabled"),
        ("[batv]\nlifetime = \"36h\"\n", 2, "batv.lifetime"),
        ("[batv]\nunsigned = \"bounce\"\n", 2, "batv.unsigned"),
        ("[batv]\ndomains = [\"a.test\", \"x@y\"]\n", 2, "batv.domains[1]"),
        ("[[dnsbl.zones]]\nzone = \"bad zone\"\n", 2, "dnsbl.zones[0].zone"),
        ("[[dnsbl.zones]]\nzone = \"bl.test\"\nmode = \"sometimes\"\n", 3, "dnsbl.zones[0].mode"),
        ("[dnsbl]\nexempt_recipients = [\"postmaster@x.test\"]\n", 2, "dnsbl.exempt_recipients[0]"),
    ];
    for (text, line, key) in cases {
        let e = error_of(text);
        assert!(
            e.starts_with(&format!("t.toml:{line}:")),
            "{text:?}: expected line {line}, got {e}"
        );
        assert!(
            e.contains(&format!("{key}: ")),
            "{text:?}: expected key {key}, got {e}"
        );
    }
}

#[test]
fn parse_errors_name_key_line_and_column() {
    let e = error_of("dry_run = false\n\n[spf]\nverify_hello = true\n");
    assert!(e.starts_with("t.toml:4:1: "), "{e}");
    assert!(e.contains("verify_hello"), "{e}");
    for (text, line, needle) in [
        ("socket = \"tcp:1.2.3.4\"\n", ":1:", "invalid socket"),
        ("socket = \"inet:mx.example.org:25\"\n", ":1:", "IP address"),
        ("[spf]\n\ntrusted_networks = [\"10.0.0.0/33\"]\n", ":3:", "trusted_networks[0]"),
        ("[spf]\non_fail = \"bounce\"\n", ":2:", "bounce"),
        ("[recipients]\nover_quota = \"553\"\n", ":2:", "553"),
        ("[dns]\ntimeout = \"5 parsecs\"\n", ":2:", "invalid duration"),
        ("[recipients.backends.x]\ntype = \"ldap\"\n", ":2:", "ldap"),
        ("[recipients.backends.x]\ntype = \"map_file\"\npath = \"/x\"\nwatch = \"1s\"\n", ":4:", "watch"),
        ("[recipients.backends.x]\ntype = \"map_file\"\npath = \"/x\"\naddress = \"127.0.0.1:1\"\n", ":4:", "has no address"),
        ("[recipients.backends.x]\ntype = \"rcpt_probe\"\naddress = \"nowhere\"\n", ":3:", "nowhere"),
        ("[recipients.backends.x]\ntype = \"maildir\"\npath_template = \"/m/{local}\"\nmissing = \"maybe\"\n", ":4:", "maybe"),
    ] {
        let e = error_of(text);
        assert!(e.contains(line) && e.contains(needle), "{text:?} -> {e}");
    }
}

#[test]
fn every_error_is_reported_not_just_the_first() {
    let e = error_of("[dns]\nattempts = 0\n[spf]\non_fail = \"x\"\n[store]\nmax_keys = 0\n");
    assert_eq!(e.lines().count(), 3, "{e}");
    let lines: Vec<&str> = e.lines().collect();
    assert!(lines[0].starts_with("t.toml:2:"), "{e}");
    assert!(lines[2].starts_with("t.toml:6:"), "{e}");
}

/// Issue 14: one duration syntax everywhere; the old integer keys still
/// work; both at once is an error.
#[test]
fn issue14_one_duration_syntax_and_old_keys() {
    let c = Config::from_toml_str(
        "[spf]\ntimeout = \"15s\"\ncache_max_ttl = \"1h\"\n[dictionary]\nwindow = \"10m\"\nban = \"2h\"\nmax_ban = \"7d\"\n[store.redis]\ntimeout = \"250ms\"\n",
    )
    .unwrap();
    assert_eq!(c.spf.timeout, Duration::from_secs(15));
    assert_eq!(c.dictionary.ban, Duration::from_secs(7200));
    assert_eq!(c.dictionary.max_ban, Duration::from_secs(7 * 86_400));
    assert_eq!(c.store.redis.timeout, Duration::from_millis(250));
    let old = Config::from_toml_str(
        "[spf]\ntimeout_secs = 15\ncache_max_ttl_secs = 3600\n[dictionary]\nwindow_secs = 600\nban_secs = 7200\nmax_ban_secs = 604800\n[store.redis]\ntimeout_ms = 250\n",
    )
    .unwrap();
    assert_eq!(old, c);
    let e = error_of("[spf]\ntimeout = \"15s\"\ntimeout_secs = 15\n");
    assert!(e.contains("t.toml:3:") && e.contains("not both"), "{e}");
}

#[test]
fn backends_routes_and_policy_are_built() {
    let c = Config::from_toml_str(
        r#"
[recipients]
default_chain = ["lmtp"]
over_quota = "552"

[[recipients.routes]]
domains = ["example.org", "example.net"]
chain = ["users", "quota"]

[recipients.backends.users]
type = "map_file"
path = "/etc/nobounce/recipients"
recipient_delimiter = "+"

[recipients.backends.quota]
type = "maildir"
path_template = "/var/mail/vhosts/{domain}/{local}/Maildir"
missing = "unknown"

[recipients.backends.lmtp]
type = "rcpt_probe"
address = "unix:/run/dovecot/lmtp"
timeout = "3s"
cache = { over_quota_ttl = "10s" }

[recipients.backends.qs]
type = "quota_status"
address = "127.0.0.1:12340"
"#,
    )
    .unwrap();
    let d = &c.recipients.directory;
    assert_eq!(d.backends.len(), 4);
    let BackendConfig::MapFile(users) = &d.backends["users"] else {
        panic!("users is a map file")
    };
    assert_eq!(users.watch_interval, Duration::from_secs(5));
    assert_eq!(users.recipient_delimiter, "+");
    let BackendConfig::RcptProbe(lmtp) = &d.backends["lmtp"] else {
        panic!("lmtp is a probe")
    };
    assert_eq!(lmtp.server.timeout, Duration::from_secs(3));
    assert_eq!(lmtp.server.cache.over_quota_ttl, Duration::from_secs(10));
    assert_eq!(lmtp.server.cache.deliverable_ttl, Duration::from_secs(60));
    assert_eq!(
        c.recipients.policy.over_quota,
        nobounce_core::recipient::QuotaReply::Permanent
    );
    // The effective configuration reads back to the same.
    let again = Config::from_toml_str(&c.to_toml()).unwrap();
    assert_eq!(again, c);
}

#[test]
fn effective_config_round_trips() {
    let c = Config::default();
    assert_eq!(Config::from_toml_str(&c.to_toml()).unwrap(), c);
    let c = Config::from_toml_str(
        "command_timeout = \"20s\"\n[milter]\nsocket_mode = \"0600\"\nsocket_group = \"postfix\"\n[spf]\non_softfail = \"tempfail\"\nauthserv_id = \"mx.test\"\n[store]\nbackend = \"redis\"\ncontrol_socket = \"\"\n[dictionary]\nallow_list = [\"10.0.0.0/8\"]\n",
    )
    .unwrap();
    assert_eq!(c.spf.on_softfail, SpfAction::Tempfail);
    assert_eq!(c.store.backend, StoreBackend::Redis);
    assert_eq!(Config::from_toml_str(&c.to_toml()).unwrap(), c);
}

/// Issue 13, item 11: the Redis password is never printed.
#[test]
fn issue13_redis_password_is_not_shown() {
    let c = Config::from_toml_str(
        "[store]\nbackend = \"redis\"\n[store.redis]\nurl = \"redis://:s3cret@127.0.0.1:6379/0\"\n",
    )
    .unwrap();
    assert!(!c.to_toml().contains("s3cret"), "{}", c.to_toml());
    assert!(!format!("{c:?}").contains("s3cret"));
}

#[test]
fn control_socket_resolution() {
    use std::path::Path;
    let auto = ControlSocket::Auto;
    assert_eq!(
        auto.resolve(0, None, None).as_deref(),
        Some(Path::new("/run/nobounce/control.sock"))
    );
    assert_eq!(
        auto.resolve(1000, None, Some(Path::new("/run/user/1000")))
            .as_deref(),
        Some(Path::new("/run/user/1000/nobounce/control.sock"))
    );
    assert_eq!(
        auto.resolve(
            999,
            Some(Path::new("/run/nobounce")),
            Some(Path::new("/run/user/999"))
        )
        .as_deref(),
        Some(Path::new("/run/nobounce/control.sock")),
        "systemd's RuntimeDirectory first"
    );
    assert_eq!(auto.resolve(1000, None, None), None);
    assert_eq!(ControlSocket::Off.resolve(0, None, None), None);
}

#[test]
fn locating_keys_of_a_built_config() {
    let c = Config::from_toml_str_named(
        "[recipients.backends.users]\ntype = \"map_file\"\npath = \"/nonexistent\"\n",
        "n.toml",
    )
    .unwrap();
    assert_eq!(c.locate("recipients.backends.users.path"), "n.toml:3:1");
    let e = c.error_at("recipients.backends.users.path", "cannot read");
    assert_eq!(
        e.to_string(),
        "n.toml:3:1: recipients.backends.users.path: cannot read"
    );
}

/// Each one-word setting names its words when it gets another, at its line.
#[test]
fn a_word_not_in_the_list_is_refused_with_the_list() {
    for (text, line, words) in [
        ("[store]\nbackend = \"mysql\"\n", 2, "\"memory\", \"redis\""),
        (
            "[spf]\n\non_softfail = \"drop\"\n",
            3,
            "\"accept\", \"reject\", \"tempfail\"",
        ),
        ("[log]\nformat = \"xml\"\n", 2, "\"text\", \"json\""),
        (
            "[recipients]\nover_quota = \"550\"\n",
            2,
            "\"452\", \"552\"",
        ),
    ] {
        let e = error_of(text);
        assert!(e.starts_with(&format!("t.toml:{line}:")), "{e}");
        assert!(e.contains(&format!("is not one of {words}")), "{e}");
    }
    let c = Config::from_toml_str("[store]\nbackend = \"redis\"\n[spf]\non_none = \"tempfail\"\n")
        .unwrap();
    assert_eq!(c.store.backend, StoreBackend::Redis);
    assert_eq!(c.spf.on_none, SpfAction::Tempfail);
}

/// A backend's table holds only the keys of its type.
#[test]
fn a_backend_key_of_another_type_is_refused_at_its_line() {
    let e = error_of(
        "[recipients.backends.users]\ntype = \"map_file\"\npath = \"/etc/users\"\naddress = \"127.0.0.1:24\"\n",
    );
    assert!(e.starts_with("t.toml:4:"), "{e}");
    assert!(
        e.contains("a map_file backend has no address (it has: path, watch_interval"),
        "{e}"
    );
}
