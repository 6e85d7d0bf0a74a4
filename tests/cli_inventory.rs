//! The binary's handling of inventories: located errors, `--limit`, the default inventory.

use std::path::Path;
use std::process::{Command, Output};

fn pvefleet(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pvefleet"))
        .args(args)
        .current_dir(dir)
        .env_remove("PVEFLEET_INVENTORY")
        .output()
        .expect("run pvefleet")
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn each_bad_inventory_names_file_line_column_and_what_was_expected() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "unknown-key.toml",
            "[nodes.pve1]\naddress = \"10.0.0.1\"\nhostname = \"x\"\n",
            ":3:1: unknown field `hostname`, expected one of",
        ),
        (
            "duplicate.toml",
            "[nodes.pve1]\naddress = \"a\"\n[nodes.pve2]\n[nodes.pve1]\n",
            ":4:",
        ),
        (
            "duration.toml",
            "[defaults]\ncommand_timeout = \"ten minutes\"\n",
            ":2:19: expected a duration such as \"5s\"",
        ),
        (
            "group.toml",
            "[groups.gpu]\n[nodes.pve1]\ngroups = [\"gup\"]\n",
            ":3:11: unknown group `gup`; declared groups: gpu",
        ),
        ("syntax.toml", "[nodes.pve1\naddress = 1\n", ":1:"),
        (
            "type.toml",
            "[nodes.pve1]\nport = \"twenty-two\"\n",
            ":2:8:",
        ),
    ];
    for (name, text, expected) in cases {
        let path = write(dir.path(), name, text);
        let out = pvefleet(dir.path(), &["-i", &path, "inventory", "show"]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(65), "{name}: {err}");
        assert!(
            err.contains(&format!("{path}{expected}")),
            "{name}: got {err:?}"
        );
    }
    let dup = stderr(&pvefleet(
        dir.path(),
        &[
            "-i",
            &dir.path().join("duplicate.toml").display().to_string(),
            "inventory",
            "show",
        ],
    ));
    assert!(dup.to_lowercase().contains("duplicate"), "{dup}");
}

#[test]
fn limit_selects_and_a_pattern_matching_nothing_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("[groups.gpu]\n");
    for i in 1..=5 {
        text.push_str(&format!("[nodes.pve{i}]\naddress = \"10.0.0.{i}\"\n"));
        if i % 2 == 1 {
            text.push_str("groups = [\"gpu\"]\n");
        }
    }
    let inv = write(dir.path(), "inv.toml", &text);
    let names = |limit: &str| -> Vec<String> {
        let out = pvefleet(
            dir.path(),
            &["-i", &inv, "-l", limit, "--json", "inventory", "show"],
        );
        assert!(out.status.success(), "{limit}: {}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names("pve[1-3]"), ["pve1", "pve2", "pve3"]);
    assert_eq!(names("@gpu,!pve3"), ["pve1", "pve5"]);
    assert_eq!(names("pve*,!pve[2-4]"), ["pve1", "pve5"]);

    let out = pvefleet(dir.path(), &["-i", &inv, "-l", "pve9", "inventory", "show"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(
        stderr(&out).contains("`pve9` matches no node"),
        "{}",
        stderr(&out)
    );
    let out = pvefleet(
        dir.path(),
        &["-i", &inv, "-l", "@nvidia", "inventory", "show"],
    );
    assert_eq!(out.status.code(), Some(64));
    assert!(
        stderr(&out).contains("unknown group `@nvidia`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn default_inventory_is_inventory_cluster_toml() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "inventory/cluster.toml",
        "[nodes.alpha]\n[nodes.beta]\n",
    );
    let out = pvefleet(dir.path(), &["--json", "inventory", "show"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["nodes"].as_array().unwrap().len(), 2);
    assert!(v["source"]
        .as_str()
        .unwrap()
        .ends_with("inventory/cluster.toml"));
}

#[test]
fn without_any_inventory_the_error_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    if Path::new("/etc/pve/.members").exists() {
        eprintln!("skipped: this machine is a Proxmox node, so the local cluster is the default");
        return;
    }
    let out = pvefleet(dir.path(), &["inventory", "show"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(
        stderr(&out).contains("no inventory: pass -i FILE"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn completions_are_generated_for_each_shell() {
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let out = pvefleet(dir.path(), &["completions", shell]);
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("pvefleet") && text.contains("exec"),
            "{shell}"
        );
    }
}
