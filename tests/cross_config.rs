//! `cross` applies our config on a fresh clone: the file it reads is `cross.toml`, through the
//! `Cross.toml` symlink, and that config passes every board setting the code compiles in.
//!
//! cross (0.2.5, `src/lib.rs`, `fn toml`) reads `$CROSS_CONFIG` if set, else
//! `<workspace_root>/Cross.toml` (case-sensitive on Linux; a lone `cross.toml` only draws a
//! warning), where `workspace_root` is `cargo metadata`'s. These tests follow the same steps
//! without Docker.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `workspace_root` as cross gets it: from `cargo metadata`.
fn workspace_root() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| String::from("cargo"));
    let out = Command::new(cargo)
        .args(["metadata", "--no-deps", "--format-version", "1", "--locked"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    PathBuf::from(meta["workspace_root"].as_str().expect("workspace_root"))
}

/// The variables assigned in a board's env file.
fn board_env(dir: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(dir.join("env"))
        .expect("board env")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// Every `WSSED_*` name the sources read at compile time with `option_env!`.
fn compiled_in_variables(dir: &Path, found: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            compiled_in_variables(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).expect("read source");
            for part in text.split("option_env!(\"").skip(1) {
                let name: String = part.chars().take_while(|&c| c != '"').collect();
                if name.starts_with("WSSED_") {
                    found.insert(name);
                }
            }
        }
    }
}

#[test]
fn the_file_cross_reads_is_cross_toml() {
    let root = workspace_root();
    let read = root.join("Cross.toml");
    assert!(
        read.exists(),
        "{} missing: cross would build without our config",
        read.display()
    );
    let link = std::fs::symlink_metadata(&read).expect("lstat Cross.toml");
    assert!(
        link.file_type().is_symlink(),
        "Cross.toml must be a symlink to cross.toml, not a copy that can drift"
    );
    // Relative, so it resolves in any clone, wherever it lives.
    assert_eq!(
        std::fs::read_link(&read).expect("readlink"),
        Path::new("cross.toml")
    );
    assert_eq!(
        std::fs::canonicalize(&read).expect("resolve Cross.toml"),
        std::fs::canonicalize(root.join("cross.toml")).expect("resolve cross.toml")
    );
}

#[test]
fn a_fresh_clone_gets_the_symlink() {
    // What git records is what a clone creates: mode 120000 is a symlink.
    let out = Command::new("git")
        .args(["ls-files", "--stage", "--", "Cross.toml", "cross.toml"])
        .current_dir(workspace_root())
        .output();
    let Ok(out) = out else {
        // Not a git checkout (an unpacked source archive): the test above covers the tree.
        return;
    };
    if !out.status.success() {
        return;
    }
    let listing = String::from_utf8_lossy(&out.stdout);
    let modes: Vec<(&str, &str)> = listing
        .lines()
        .filter_map(|l| Some((l.split_whitespace().next()?, l.rsplit('\t').next()?)))
        .collect();
    assert!(
        modes.contains(&("120000", "Cross.toml")),
        "git does not track Cross.toml as a symlink: {listing:?}"
    );
    assert!(
        modes.contains(&("100644", "cross.toml")),
        "git does not track cross.toml as a file: {listing:?}"
    );
}

#[test]
fn the_config_passes_every_compiled_in_board_setting() {
    let root = workspace_root();
    let config: toml::Table =
        toml::from_str(&std::fs::read_to_string(root.join("Cross.toml")).expect("read Cross.toml"))
            .expect("Cross.toml is TOML");
    let passthrough: BTreeSet<String> = config["build"]["env"]["passthrough"]
        .as_array()
        .expect("build.env.passthrough is a list")
        .iter()
        .map(|v| v.as_str().expect("a variable name").to_string())
        .collect();
    let targets = config["target"].as_table().expect("[target.*] tables");

    let mut compiled_in = BTreeSet::new();
    compiled_in_variables(&root.join("src"), &mut compiled_in);
    assert!(
        compiled_in.contains("WSSED_DEVICE_TABLE_CAPACITY"),
        "the scan found {compiled_in:?}"
    );

    let mut boards = 0;
    for entry in std::fs::read_dir(root.join("board")).expect("board/") {
        let dir = entry.expect("dir entry").path();
        if !dir.join("env").is_file() {
            continue;
        }
        boards += 1;
        let env = board_env(&dir);
        let name = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let target = name("WSSED_TARGET").expect("WSSED_TARGET");
        assert!(
            targets.contains_key(target),
            "{}: target {target} has no [target.{target}] in cross.toml",
            dir.display()
        );
        for (var, _) in &env {
            // cross passes CARGO_* itself (src/docker/shared.rs); WSSED_* only when listed.
            if compiled_in.contains(var) {
                assert!(
                    passthrough.contains(var),
                    "{}: {var} is compiled in but cross.toml does not pass it through",
                    dir.display()
                );
            }
        }
        for var in &compiled_in {
            assert!(
                name(var).is_some(),
                "{}: sets no {var}, which the code compiles in",
                dir.display()
            );
        }
    }
    assert!(boards >= 4, "found {boards} boards");
}
