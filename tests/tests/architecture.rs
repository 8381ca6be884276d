//! docs/ARCHITECTURE.md matches the code: its table of crates names, for
//! each crate, exactly the nobounce crates its manifest depends on.

use std::{collections::BTreeMap, path::Path};

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// Crate name → the nobounce crates of its `[dependencies]`.
fn manifests() -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    let workspace: toml::Table = toml::from_str(
        &std::fs::read_to_string(root().join("Cargo.toml")).expect("workspace manifest"),
    )
    .expect("TOML");
    let members = workspace["workspace"]["members"]
        .as_array()
        .expect("members");
    for member in members {
        let dir = root().join(member.as_str().expect("path"));
        let manifest: toml::Table =
            toml::from_str(&std::fs::read_to_string(dir.join("Cargo.toml")).expect("manifest"))
                .expect("TOML");
        let name = manifest["package"]["name"]
            .as_str()
            .expect("name")
            .to_owned();
        let mut deps: Vec<String> = manifest
            .get("dependencies")
            .and_then(|d| d.as_table())
            .map(|d| {
                d.keys()
                    .filter_map(|k| k.strip_prefix("nobounce-"))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        deps.sort();
        out.insert(name, deps);
    }
    out
}

/// Crate name → the crates the table says it may use.
fn documented() -> BTreeMap<String, Vec<String>> {
    let doc =
        std::fs::read_to_string(root().join("docs/ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let mut out = BTreeMap::new();
    for line in doc.lines().filter(|l| l.starts_with("| `nobounce")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let name = cells[1].split('`').nth(1).expect("crate name").to_owned();
        let mut deps: Vec<String> = cells[3]
            .split(',')
            .map(str::trim)
            .filter(|d| !d.is_empty() && *d != "none")
            .map(str::to_owned)
            .collect();
        deps.sort();
        out.insert(name, deps);
    }
    out
}

#[test]
fn the_crate_table_matches_the_manifests() {
    let mut real = manifests();
    // The end-to-end test crate has only tests.
    real.remove("nobounce-e2e");
    assert_eq!(documented(), real, "docs/ARCHITECTURE.md is out of date");
}

#[test]
fn the_core_uses_no_other_crate_and_no_io_runtime() {
    let manifest: toml::Table = toml::from_str(
        &std::fs::read_to_string(root().join("crates/core/Cargo.toml")).expect("manifest"),
    )
    .expect("TOML");
    let tokio = &manifest["dependencies"]["tokio"]["features"];
    let features: Vec<&str> = tokio
        .as_array()
        .expect("features")
        .iter()
        .filter_map(|f| f.as_str())
        .collect();
    assert_eq!(features, ["sync", "time"]);
}
