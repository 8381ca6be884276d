//! `nobounce alias ...` as an admin runs it (issue 11): the real binary on a
//! temporary SQLite file (and once on a real Redis), its output and its
//! errors.

use nobounce_test_support::{free_port, require, RedisInstance};
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
};

struct Site {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Site {
    /// A configuration with two alias domains and `extra` lines appended
    /// to `[aliases]`.
    fn new(extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("nobounce.toml");
        fs::write(
            &config,
            format!(
                "[aliases]\ndomains = [\"alias.example.test\", \"two.example.test\"]\npath = \"{}\"\n{extra}\n",
                dir.path().join("aliases.db").display()
            ),
        )
        .unwrap();
        Self { dir, config }
    }

    fn run(&self, args: &[&str]) -> Output {
        run_with(&self.config, args)
    }

    /// Runs and expects success; returns standard output.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?}: exit {:?}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs and expects exit 1; returns standard error.
    fn fails(&self, args: &[&str]) -> String {
        failure(self.run(args), args)
    }

    /// `alias new` and the alias it printed last.
    fn new_alias(&self, args: &[&str]) -> String {
        let mut all = vec!["new"];
        all.extend_from_slice(args);
        let out = self.ok(&all);
        out.lines().last().expect("a line").to_owned()
    }
}

fn run_with(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nobounce"))
        .arg("alias")
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("nobounce runs")
}

fn failure(out: Output, args: &[&str]) -> String {
    assert_eq!(
        out.status.code(),
        Some(1),
        "{args:?} fails with exit 1: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.starts_with("nobounce: alias: "), "{err}");
    err
}

fn is_alias(address: &str, slug: &str, domain: &str) -> bool {
    let Some(local) = address.strip_suffix(&format!("@{domain}")) else {
        return false;
    };
    let Some(random) = local.strip_prefix(&format!("{slug}.")) else {
        return false;
    };
    random.len() == 5
        && random
            .bytes()
            .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).expect("JSON")
}

#[test]
fn issue11_alias_new_prints_the_new_alias_as_its_last_line() {
    let site = Site::new("");
    let a = site.new_alias(&["shop.example", "--mailbox", "me@example.org"]);
    assert!(is_alias(&a, "shop-example", "alias.example.test"), "{a}");
    let b = site.new_alias(&[
        "Bob's Garage",
        "--mailbox",
        "me@example.org",
        "--domain",
        "Two.Example.Test",
        "--note",
        "the car",
        "--correspondent-domain",
        "garage.example",
        "--correspondent-domain",
        "mail.garage.example",
        "--reject-foreign",
    ]);
    assert!(is_alias(&b, "bob-s-garage", "two.example.test"), "{b}");
    assert_ne!(a, b);

    let shown = json(&site.ok(&["show", &a, "--json"]));
    assert_eq!(shown["address"], a.as_str());
    assert_eq!(shown["correspondent"], "shop.example");
    assert_eq!(
        shown["correspondent_domains"],
        serde_json::json!(["shop.example"])
    );
    assert_eq!(shown["mailbox"], "me@example.org");
    assert!(shown["retired"].is_null());
    assert_eq!(shown["reject_foreign"], false);
    assert!(shown["created"].as_str().unwrap().ends_with('Z'));
    let shown = json(&site.ok(&["show", &b.to_uppercase(), "--json"]));
    assert_eq!(shown["address"], b.as_str(), "any case finds it");
    assert_eq!(
        shown["correspondent_domains"],
        serde_json::json!(["garage.example", "mail.garage.example"])
    );
    assert_eq!(shown["note"], "the car");
    assert_eq!(shown["reject_foreign"], true);
    let text = site.ok(&["show", &b]);
    assert!(text.contains("status:         active"), "{text}");

    let list = site.ok(&["list"]);
    assert_eq!(list.lines().count(), 2, "{list}");
    assert!(
        list.lines().all(|l| l.contains("\tme@example.org\t")),
        "{list}"
    );
    assert_eq!(
        json(&site.ok(&["list", "--json"]))
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // The file is private.
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(site.dir.path().join("aliases.db"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o007, 0, "{mode:o}");
}

#[test]
fn issue11_alias_default_mailbox_and_format_come_from_the_config() {
    let site = Site::new(
        "default_mailbox = \"me@example.org\"\nformat = \"{random}-{correspondent}\"\nrandom_length = 8",
    );
    let a = site.new_alias(&["news@Shop.Example"]);
    let (local, domain) = a.split_once('@').unwrap();
    assert_eq!(domain, "alias.example.test");
    let (random, slug) = local.split_once('-').unwrap();
    assert_eq!(random.len(), 8, "{a}");
    assert_eq!(slug, "news-shop-example", "{a}");
    let shown = json(&site.ok(&["show", &a, "--json"]));
    assert_eq!(shown["mailbox"], "me@example.org");
    assert_eq!(
        shown["correspondent_domains"],
        serde_json::json!(["shop.example"]),
        "the domain of an address"
    );
}

#[test]
fn issue11_alias_retire_restore_and_export() {
    let site = Site::new("");
    let a = site.new_alias(&["shop.example", "--mailbox", "me@example.org"]);
    let b = site.new_alias(&["other.example", "--mailbox", "you@example.org"]);

    assert_eq!(
        site.ok(&["retire", &a, "--reason", "sold to spammers"]),
        format!("retired {a}\n")
    );
    let again = site.ok(&["retire", &a, "--reason", "another"]);
    assert!(again.contains("was retired already"), "{again}");
    assert!(
        again.contains("sold to spammers"),
        "keeps the first: {again}"
    );
    let shown = json(&site.ok(&["show", &a, "--json"]));
    assert_eq!(shown["retired"]["reason"], "sold to spammers");
    assert!(site
        .ok(&["show", &a])
        .contains("status:         retired on "));

    assert_eq!(site.ok(&["list"]).lines().count(), 1, "one active");
    let retired = site.ok(&["list", "--retired"]);
    assert_eq!(retired.lines().count(), 1, "{retired}");
    assert!(retired.starts_with(&format!("{a}\t")), "{retired}");
    assert!(retired.contains("\tretired on "), "{retired}");
    assert_eq!(site.ok(&["list", "--all"]).lines().count(), 2);

    // The postmap file lists both, the retired one too.
    let map = site.ok(&["export", "--postmap"]);
    let entries: Vec<&str> = map.lines().filter(|l| !l.starts_with('#')).collect();
    let mut want = vec![
        format!("{a} me@example.org"),
        format!("{b} you@example.org"),
    ];
    want.sort();
    assert_eq!(entries, want, "{map}");

    let on = site.ok(&["reject-foreign", &a, "on"]);
    assert!(on.contains("outside shop.example is refused"), "{on}");
    assert_eq!(
        json(&site.ok(&["show", &a, "--json"]))["reject_foreign"],
        true
    );

    assert_eq!(site.ok(&["restore", &a]), format!("restored {a}\n"));
    assert_eq!(site.ok(&["restore", &a]), format!("{a} is not retired\n"));
    assert!(json(&site.ok(&["show", &a, "--json"]))["retired"].is_null());
    assert_eq!(site.ok(&["list"]).lines().count(), 2);
}

#[test]
fn issue11_alias_errors_are_clear() {
    let site = Site::new("");
    // No database yet: reading commands say so instead of creating one.
    let e = site.fails(&["list"]);
    assert!(e.contains("no alias database at"), "{e}");
    assert!(!site.dir.path().join("aliases.db").exists());

    let a = site.new_alias(&["shop.example", "--mailbox", "me@example.org"]);
    for args in [
        vec!["show", "nobody.zzzzz@alias.example.test"],
        vec!["retire", "nobody.zzzzz@alias.example.test"],
        vec!["restore", "Nobody.ZZZZZ@alias.example.test"],
        vec!["reject-foreign", "nobody.zzzzz@alias.example.test", "on"],
    ] {
        let e = site.fails(&args);
        assert!(
            e.contains("no alias nobody.zzzzz@alias.example.test"),
            "{args:?}: {e}"
        );
    }
    let e = site.fails(&[
        "new",
        "shop.example",
        "--mailbox",
        "me@example.org",
        "--domain",
        "elsewhere.example",
    ]);
    assert!(
        e.contains("\"elsewhere.example\" is not an alias domain"),
        "{e}"
    );
    assert!(e.contains("alias.example.test, two.example.test"), "{e}");
    let e = site.fails(&["new", "shop.example"]);
    assert!(e.contains("no mailbox: give --mailbox"), "{e}");
    let e = site.fails(&["new", "shop.example", "--mailbox", "not-an-address"]);
    assert!(e.contains("--mailbox"), "{e}");
    let e = site.fails(&["new", "shop.example", "--mailbox", &a]);
    assert!(
        e.contains("alias domain"),
        "an alias cannot lead to an alias: {e}"
    );
    let e = site.fails(&["new", "  ", "--mailbox", "me@example.org"]);
    assert!(e.contains("correspondent"), "{e}");
    let e = site.fails(&[
        "new",
        "x",
        "--mailbox",
        "me@example.org",
        "--correspondent-domain",
        "not a domain",
    ]);
    assert!(e.contains("--correspondent-domain"), "{e}");
    // Nothing of that was created.
    assert_eq!(site.ok(&["list", "--all"]).lines().count(), 1);
}

#[test]
fn issue11_alias_errors_name_the_configuration_and_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        fs::write(&p, text).unwrap();
        p
    };
    // No [aliases] domains.
    let none = write("none.toml", "");
    let e = failure(
        run_with(
            &none,
            &["new", "shop.example", "--mailbox", "me@example.org"],
        ),
        &["new"],
    );
    assert!(e.contains("no alias domains"), "{e}");
    // A bad configuration: its file, line and key.
    let bad = write("bad.toml", "[aliases]\n\nstore = \"mysql\"\n");
    let e = failure(run_with(&bad, &["list"]), &["list"]);
    assert!(e.contains("bad.toml:3:"), "{e}");
    assert!(e.contains("aliases.store"), "{e}");
    // A database in a directory that does not exist.
    let missing = write(
        "missing.toml",
        "[aliases]\ndomains = [\"alias.example.test\"]\npath = \"/nonexistent-4711/aliases.db\"\n",
    );
    let e = failure(
        run_with(&missing, &["new", "x", "--mailbox", "me@example.org"]),
        &["new"],
    );
    assert!(e.contains("sqlite /nonexistent-4711/aliases.db"), "{e}");
    // A database path that is no database (root reads any file, so a
    // directory and a text file stand for an unreadable path).
    let not_db = write("not-a-db", &"this is not SQLite\n".repeat(100));
    for path in [dir.path().to_path_buf(), not_db] {
        let cfg = write(
            "path.toml",
            &format!(
                "[aliases]\ndomains = [\"alias.example.test\"]\npath = \"{}\"\n",
                path.display()
            ),
        );
        let e = failure(run_with(&cfg, &["list"]), &["list"]);
        assert!(e.contains("the alias store (sqlite "), "{e}");
        assert!(e.contains(&path.display().to_string()), "{e}");
    }
    // Redis down: the store is named, without its password.
    let port = free_port().unwrap();
    let down = write(
        "down.toml",
        &format!(
            "[aliases]\ndomains = [\"alias.example.test\"]\nstore = \"redis\"\n\
             [store.redis]\nurl = \"redis://:s3cret@127.0.0.1:{port}\"\n"
        ),
    );
    for args in [
        vec!["list"],
        vec!["new", "x", "--mailbox", "me@example.org"],
        vec!["retire", "x.abcde@alias.example.test"],
    ] {
        let started = std::time::Instant::now();
        let e = failure(run_with(&down, &args), &args);
        assert!(
            e.contains(&format!(
                "the alias store (redis redis://:***@127.0.0.1:{port}) failed"
            )),
            "{args:?}: {e}"
        );
        assert!(!e.contains("s3cret"), "{e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }
}

#[tokio::test]
async fn issue11_alias_commands_on_redis() {
    require!("redis-server");
    let redis = RedisInstance::start().await.expect("redis-server starts");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("nobounce.toml");
    fs::write(
        &config,
        format!(
            "[aliases]\ndomains = [\"alias.example.test\"]\nstore = \"redis\"\n\
             [store.redis]\nurl = \"{}\"\nprefix = \"cli:\"\ntimeout = \"5s\"\n",
            redis.url()
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = run_with(&config, args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let a = run(&["new", "shop.example", "--mailbox", "me@example.org"]);
    let a = a.lines().last().unwrap().to_owned();
    assert!(is_alias(&a, "shop-example", "alias.example.test"), "{a}");
    assert_eq!(run(&["retire", &a]), format!("retired {a}\n"));
    assert!(run(&["list", "--retired"]).starts_with(&a));
    assert!(run(&["export", "--postmap"]).contains(&format!("\n{a} me@example.org\n")));
    // Another host on that Redis sees it, under the prefix.
    let store = nobounce_aliases::RedisAliasStore::new(&nobounce_store_redis::RedisConfig {
        url: redis.url(),
        prefix: "cli:".into(),
        ..nobounce_store_redis::RedisConfig::default()
    })
    .unwrap();
    let seen = nobounce_core::alias::AliasStore::get(&store, &a)
        .await
        .unwrap()
        .expect("in Redis");
    assert_eq!(seen.mailbox, "me@example.org");
    assert!(seen.is_retired());
    assert!(store.key(&a).starts_with("cli:alias:"));
}
