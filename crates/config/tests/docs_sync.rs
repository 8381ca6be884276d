//! Keeps docs/nobounce.toml and the nobounce.toml(5) man page in sync with
//! the configuration model.

use nobounce_config::Config;
use std::path::PathBuf;

fn docs(file: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../docs")
        .join(file);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Every (table, key) of the effective default configuration; nested
/// tables that are not empty are walked into (`store.redis`).
fn default_keys() -> Vec<(String, String)> {
    fn walk(prefix: &str, table: &toml::Table, keys: &mut Vec<(String, String)>) {
        for (k, v) in table {
            match v {
                toml::Value::Table(t) if !t.is_empty() => {
                    let p = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&p, t, keys);
                }
                _ => keys.push((prefix.to_owned(), k.clone())),
            }
        }
    }
    let value: toml::Table = toml::from_str(&Config::default().to_toml()).expect("toml");
    let mut keys = Vec::new();
    walk("", &value, &mut keys);
    keys
}

#[test]
fn sample_config_equals_the_defaults() {
    let text = docs("nobounce.toml");
    let parsed = Config::from_toml_str_named(&text, "docs/nobounce.toml").expect("sample parses");
    assert_eq!(
        parsed,
        Config::default(),
        "docs/nobounce.toml must set every key to its default"
    );
}

#[test]
fn sample_config_documents_every_key() {
    let text = docs("nobounce.toml");
    // Optional keys without default (authserv_id) appear commented out.
    assert!(
        text.contains("# authserv_id ="),
        "authserv_id not documented"
    );
    for (table, key) in default_keys() {
        let assigned = text.lines().any(|l| {
            l.trim_start()
                .strip_prefix(&key)
                .is_some_and(|r| r.trim_start().starts_with('='))
        });
        assert!(assigned, "docs/nobounce.toml lacks [{table}] {key}");
    }
}

#[test]
fn man_page_documents_every_key() {
    let man = docs("man/nobounce.toml.5");
    for (table, key) in default_keys() {
        assert!(
            man.contains(&key),
            "docs/man/nobounce.toml.5 lacks [{table}] {key}"
        );
    }
}

/// Every ```toml block of the README is a valid configuration.
#[test]
fn readme_config_examples_parse() {
    let readme =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .expect("README.md");
    let mut blocks = 0;
    let mut rest = readme.as_str();
    while let Some(start) = rest.find("```toml\n") {
        let body = &rest[start + 8..];
        let end = body.find("```").expect("closed code block");
        Config::from_toml_str_named(&body[..end], "README.md")
            .unwrap_or_else(|e| panic!("README toml block {}: {e}", blocks + 1));
        blocks += 1;
        rest = &body[end..];
    }
    assert!(blocks >= 1, "README has no toml example");
}
