//! `nobounce completions SHELL` (issue 15): the scripts the Debian package
//! ships name every subcommand and are accepted by the shells.

use std::{
    path::Path,
    process::{Command, Output},
};

/// The subcommands an admin completes after `nobounce `.
const SUBCOMMANDS: [&str; 5] = ["run", "config", "ban", "qmail-spp", "completions"];

fn completions(shell: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nobounce"))
        .args(["completions", shell])
        .output()
        .expect("nobounce runs")
}

fn script(shell: &str) -> String {
    let out = completions(shell);
    assert!(
        out.status.success(),
        "nobounce completions {shell}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 script")
}

fn assert_names_subcommands(shell: &str, script: &str) {
    for sub in SUBCOMMANDS {
        assert!(
            script.contains(sub),
            "the {shell} script does not name `{sub}`"
        );
    }
}

/// `SHELL -n FILE`: parses the script without running it.
fn syntax_ok(shell: &str, script: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("nobounce");
    std::fs::write(&file, script).expect("write script");
    let out = Command::new(shell)
        .arg("-n")
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("{shell} -n: {e}"));
    assert!(
        out.status.success(),
        "{shell} -n refuses the script: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn installed(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| Path::new(&dir).join(program).is_file())
    })
}

#[test]
fn issue15_bash_script_names_every_subcommand_and_parses() {
    let script = script("bash");
    assert_names_subcommands("bash", &script);
    syntax_ok("bash", &script);
}

#[test]
fn issue15_bash_script_completes_the_subcommands() {
    // What bash does on `nobounce <TAB>`: call the registered function
    // with COMP_WORDS and COMP_CWORD set, then offer COMPREPLY.
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("nobounce");
    std::fs::write(&file, script("bash")).expect("write script");
    let probe = format!(
        r#"source {file:?}
COMP_WORDS=(nobounce "") COMP_CWORD=1 COMP_LINE="nobounce " COMP_POINT=9
_nobounce nobounce "" nobounce
printf '%s\n' "${{COMPREPLY[@]}}""#
    );
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &probe])
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let offered = String::from_utf8_lossy(&out.stdout);
    let offered: Vec<&str> = offered.lines().collect();
    for sub in SUBCOMMANDS {
        assert!(offered.contains(&sub), "`{sub}` not offered: {offered:?}");
    }
}

#[test]
fn issue15_zsh_script_names_every_subcommand_and_parses() {
    let script = script("zsh");
    assert_names_subcommands("zsh", &script);
    assert!(
        script.starts_with("#compdef nobounce"),
        "zsh finds completion functions by their #compdef line"
    );
    if installed("zsh") {
        syntax_ok("zsh", &script);
    } else {
        eprintln!("SKIPPED: zsh -n (zsh is not installed)");
    }
}

#[test]
fn issue15_fish_elvish_and_powershell_scripts_name_every_subcommand() {
    for shell in ["fish", "elvish", "powershell"] {
        assert_names_subcommands(shell, &script(shell));
    }
    if installed("fish") {
        syntax_ok("fish", &script("fish"));
    }
}

#[test]
fn issue15_an_unknown_shell_is_a_usage_error() {
    let out = completions("tcsh");
    assert_eq!(out.status.code(), Some(2), "clap's usage error");
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bash"));
}
