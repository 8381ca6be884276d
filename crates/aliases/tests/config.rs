//! `[aliases]` in the configuration file: defaults, and each rule's error
//! at its key's line.

use nobounce_config::{AliasBackend, Config};
use std::path::Path;

#[test]
fn issue11_aliases_defaults() {
    let c = Config::default();
    let a = &c.aliases;
    assert!(!a.is_enabled());
    assert_eq!(a.store, AliasBackend::Sqlite);
    assert_eq!(a.path, Path::new("/var/lib/nobounce/aliases.db"));
    assert_eq!(a.format.template(), "{correspondent}.{random}");
    assert_eq!(a.format.random_length(), 5);
    assert_eq!(a.default_mailbox, None);
    assert_eq!(a.socketmap, None);
    let printed = c.to_toml();
    assert!(printed.contains("[aliases]"), "{printed}");
    assert!(printed.contains("socketmap = \"\""), "{printed}");
}

#[test]
fn issue11_aliases_settings_are_read() {
    let c = Config::from_toml_str(
        "[aliases]\n\
         domains = [\"Alias.Example.ORG.\", \"a2.example.org\"]\n\
         store = \"redis\"\n\
         format = \"{random}-{correspondent}\"\n\
         random_length = 8\n\
         default_mailbox = \"me@example.org\"\n\
         socketmap = \"inet:127.0.0.1:8895\"\n",
    )
    .unwrap();
    let a = &c.aliases;
    assert_eq!(a.domains, ["alias.example.org", "a2.example.org"]);
    assert_eq!(a.store, AliasBackend::Redis);
    assert_eq!(a.format.random_length(), 8);
    assert_eq!(a.default_mailbox.as_deref(), Some("me@example.org"));
    assert_eq!(
        a.socketmap.as_ref().map(ToString::to_string).as_deref(),
        Some("inet:127.0.0.1:8895")
    );
    // What it prints reads back the same.
    assert_eq!(Config::from_toml_str(&c.to_toml()).unwrap(), c);
}

#[test]
fn issue11_aliases_errors_name_their_key_and_line() {
    for (body, key, why) in [
        ("domains = [\"a b\"]", "aliases.domains[0]", "not a domain"),
        (
            "domains = [\"a.example\", \"A.example\"]",
            "aliases.domains[1]",
            "listed twice",
        ),
        (
            "store = \"mysql\"",
            "aliases.store",
            "\"sqlite\", \"redis\"",
        ),
        ("path = \"aliases.db\"", "aliases.path", "absolute path"),
        (
            "path = \"/var/lib/nobounce/\"",
            "aliases.path",
            "absolute path",
        ),
        ("format = \"{correspondent}\"", "aliases.format", "{random}"),
        ("format = \"{random}+x\"", "aliases.format", "'+'"),
        (
            "random_length = 3",
            "aliases.random_length",
            "between 5 and 32",
        ),
        (
            "default_mailbox = \"me\"",
            "aliases.default_mailbox",
            "not a mailbox",
        ),
        (
            "domains = [\"alias.example.org\"]\ndefault_mailbox = \"x@alias.example.org\"",
            "aliases.default_mailbox",
            "real mailbox",
        ),
        (
            "socketmap = \"inet:127.0.0.1:8895\"",
            "aliases.socketmap",
            "needs aliases.domains",
        ),
        (
            "domains = [\"alias.example.org\"]\nsocketmap = \"inet:127.0.0.1:8894\"",
            "aliases.socketmap",
            "taken by the milter",
        ),
        (
            "domains = [\"alias.example.org\"]\nsocketmap = \"inet:mail.example.org:8895\"",
            "aliases.socketmap",
            "IP address",
        ),
        (
            "domains = [\"alias.example.org\"]\nsocketmap = \"unix:relative.sock\"",
            "aliases.socketmap",
            "",
        ),
    ] {
        let text = format!("# first line\n[aliases]\n{body}\n");
        let e = Config::from_toml_str_named(&text, "t.toml").unwrap_err();
        let first = &e.0[0];
        assert_eq!(first.key.as_deref(), Some(key), "{body}: {e}");
        assert!(first.message.contains(why), "{body}: {e}");
        let line = first.position.expect("located").line;
        assert!(line >= 3, "{body}: at line {line}");
        assert!(e.to_string().starts_with("t.toml:"), "{e}");
    }
}

#[test]
fn issue11_redis_aliases_check_the_redis_url() {
    let e = Config::from_toml_str(
        "[aliases]\nstore = \"redis\"\n[store.redis]\nurl = \"rediss://example.org\"\n",
    )
    .unwrap_err();
    assert_eq!(e.0[0].key.as_deref(), Some("store.redis.url"), "{e}");
    // Unused, it is not checked.
    Config::from_toml_str("[store.redis]\nurl = \"rediss://example.org\"\n").unwrap();
}
