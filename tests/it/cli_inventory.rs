//! The binary's handling of inventories: located errors, bad input refused with exit 64 or 65,
//! `--limit`, the default inventory, `inventory discover`'s refusal to overwrite, completions.

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

/// Write each `(file name, text, expected)` inventory and run `command` with it: exit 65 and an
/// error reading `PATH` then `expected` (`:LINE:COL: message`).
fn assert_each_refused_at(dir: &Path, cases: &[(&str, &str, &str)], command: &[&str]) {
    for (name, text, expected) in cases {
        let path = write(dir, name, text);
        let mut args = vec!["-i", path.as_str()];
        args.extend_from_slice(command);
        let out = pvefleet(dir, &args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(65), "{name}: {err}");
        assert!(
            err.contains(&format!("{path}{expected}")),
            "{name}: got {err:?}"
        );
    }
}

/// Five nodes pve1..pve5 (10.0.0.1..5); the odd ones in group `gpu`.
fn five_nodes(dir: &Path) -> String {
    let mut text = String::from("[groups.gpu]\n");
    for i in 1..=5 {
        text.push_str(&format!("[nodes.pve{i}]\naddress = \"10.0.0.{i}\"\n"));
        if i % 2 == 1 {
            text.push_str("groups = [\"gpu\"]\n");
        }
    }
    write(dir, "inv.toml", &text)
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
            ":4:8: duplicate key",
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
    assert_each_refused_at(dir.path(), &cases, &["inventory", "show"]);
}

#[test]
fn a_zero_timeout_in_an_inventory_is_refused_at_its_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "connect.toml",
            "[defaults]\nconnect_timeout = \"0s\"\n[nodes.pve1]\n",
            ":2:19: a timeout of 0",
        ),
        (
            "command.toml",
            "[nodes.pve1]\n[nodes.pve2]\ncommand_timeout = \"0s\"\n",
            ":3:19: a timeout of 0",
        ),
    ];
    assert_each_refused_at(dir.path(), &cases, &["exec", "--", "true"]);
}

#[test]
fn an_inventory_without_nodes_is_refused_not_run_on_zero_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "empty.toml", "[defaults]\nuser = \"root\"\n");
    for args in [
        &["inventory", "show"][..],
        &["exec", "--", "true"],
        &["audit"],
    ] {
        let mut all = vec!["-i", path.as_str()];
        all.extend_from_slice(args);
        let out = pvefleet(dir.path(), &all);
        assert_eq!(out.status.code(), Some(65), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!(
                "{path}: no nodes: an inventory needs at least one [nodes.NAME] table"
            )),
            "{args:?}: {}",
            stderr(&out)
        );
        assert!(out.stdout.is_empty(), "{args:?}: printed a result");
    }
}

#[test]
fn limit_selects_names_ranges_groups_and_negations_in_inventory_order() {
    let dir = tempfile::tempdir().unwrap();
    let inv = five_nodes(dir.path());
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
    assert_eq!(names("pve3,pve1"), ["pve1", "pve3"]);
    assert_eq!(names("pve[1-3]"), ["pve1", "pve2", "pve3"]);
    assert_eq!(names("@gpu,!pve3"), ["pve1", "pve5"]);
    assert_eq!(names("pve*,!pve[2-4]"), ["pve1", "pve5"]);
}

#[test]
fn a_limit_matching_no_node_or_naming_an_unknown_group_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let inv = five_nodes(dir.path());
    for (limit, expected) in [
        ("pve9", "`pve9` matches no node"),
        ("pve1,pve9", "`pve9` matches no node"),
        ("@nvidia", "unknown group `@nvidia`"),
    ] {
        let out = pvefleet(dir.path(), &["-i", &inv, "-l", limit, "inventory", "show"]);
        assert_eq!(out.status.code(), Some(64), "{limit}: {}", stderr(&out));
        assert!(stderr(&out).contains(expected), "{limit}: {}", stderr(&out));
        assert!(out.stdout.is_empty(), "{limit}: printed nodes");
    }
}

#[test]
fn an_empty_limit_is_a_usage_error_not_the_whole_fleet() {
    let dir = tempfile::tempdir().unwrap();
    let inv = five_nodes(dir.path());
    for limit in ["", " ", ",", " , ,"] {
        for form in [vec!["-l", limit], vec!["--limit", limit]] {
            let mut args = vec!["-i", inv.as_str()];
            args.extend(form);
            args.extend(["inventory", "show"]);
            let out = pvefleet(dir.path(), &args);
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(64), "{limit:?}: {err}");
            assert!(
                err.contains(&format!(
                    "the pattern {limit:?} names no node: an empty --limit is refused"
                )),
                "{limit:?}: {err}"
            );
            assert!(out.stdout.is_empty(), "{limit:?}: printed nodes");
        }
    }
    // `--limit=` (an attached empty value) is the same typo.
    let out = pvefleet(dir.path(), &["-i", &inv, "--limit=", "inventory", "show"]);
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
}

#[test]
fn a_zero_timeout_on_the_command_line_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let inv = five_nodes(dir.path());
    for zero in ["0", "0s", "0ms"] {
        let out = pvefleet(
            dir.path(),
            &["-i", &inv, "--timeout", zero, "exec", "--", "true"],
        );
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(64), "{zero}: {err}");
        assert!(
            err.contains(&format!(
                "invalid value '{zero}' for '--timeout <DURATION>': a timeout of 0"
            )),
            "{zero}: {err}"
        );
        assert!(out.stdout.is_empty(), "{zero}: ran something");
    }
    // Issue 16: below a millisecond is refused too (it used to be taken).
    let out = pvefleet(
        dir.path(),
        &["-i", &inv, "--timeout", "1ns", "exec", "--", "true"],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(err.contains("is below a millisecond"), "{err}");
}

/// Issue 16: thresholds the wrong way round (WARN above FAIL) are refused at the key, exit 65,
/// before any node is asked.
#[test]
fn audit_thresholds_with_warn_above_fail_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let inv = five_nodes(dir.path());
    let t = write(
        dir.path(),
        "t.toml",
        "clock_fail_s = 5\nclock_warn_s = 10\n",
    );
    let out = pvefleet(dir.path(), &["-i", &inv, "audit", "--thresholds", &t]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(65), "{err}");
    assert!(
        err.contains("t.toml:2:1: clock_warn_s (10) is above clock_fail_s (5)"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
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
    let names: Vec<&str> = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alpha", "beta"]);
    assert_eq!(v["source"], "inventory/cluster.toml");
}

#[test]
fn without_any_inventory_the_error_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let out = pvefleet(dir.path(), &["inventory", "show"]);
    if Path::new("/etc/pve/.members").exists() {
        // On a Proxmox node the cluster's own .members is the documented fallback: check that
        // it is what was read, rather than pass without checking anything.
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
        assert!(said.contains("/etc/pve/.members"), "{said}");
        return;
    }
    assert_eq!(out.status.code(), Some(64));
    assert!(
        stderr(&out).contains("no inventory: pass -i FILE"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn discover_refuses_to_overwrite_an_existing_file_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let existing = write(dir.path(), "cluster.toml", "[nodes.keep]\n");
    // 192.0.2.0/24 is TEST-NET-1 (RFC 5737): nothing answers there, and the refusal must come
    // before any connection is tried.
    let out = pvefleet(
        dir.path(),
        &[
            "inventory",
            "discover",
            "--from",
            "root@192.0.2.1",
            "-o",
            &existing,
        ],
    );
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("{existing} exists; pass --force to overwrite it")),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read_to_string(&existing).unwrap(),
        "[nodes.keep]\n",
        "the file is untouched"
    );
}

#[test]
fn completions_are_generated_for_each_shell() {
    let dir = tempfile::tempdir().unwrap();
    for (shell, marker) in [
        ("bash", "complete -F _pvefleet"),
        ("zsh", "#compdef pvefleet"),
        ("fish", "complete -c pvefleet"),
    ] {
        let out = pvefleet(dir.path(), &["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(marker), "{shell}: no `{marker}`");
        assert!(text.contains("discover"), "{shell}: subcommands missing");
    }
}
