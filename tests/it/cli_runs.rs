//! `pvefleet runs` and `rollback` on the run journal, without nodes: a run id is never a path.


use crate::common::bin::{command, text};

#[test]
fn a_run_id_that_is_a_path_is_refused_not_read() {
    let state = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    // A journal-looking directory outside the state directory must not be read.
    std::fs::write(outside.path().join("run.json"), "{}").unwrap();
    for args in [
        vec!["runs", "show", outside.path().to_str().unwrap()],
        vec!["runs", "show", "../../etc"],
        vec!["rollback", "../x", "--yes"],
        vec!["run", "--resume", "/tmp", "--yes"],
    ] {
        let out = command()
            .args(&args)
            .env("PVEFLEET_STATE_DIR", state.path())
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(64),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains("is not a run id"),
            "{}",
            text(&out.stderr)
        );
    }
    let out = command()
        .args(["runs", "show", "20261124T130501-1a2b"])
        .env("PVEFLEET_STATE_DIR", state.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(
        text(&out.stderr).contains("no run 20261124T130501-1a2b in"),
        "{}",
        text(&out.stderr)
    );
}

/// An inventory with one node that is never reached: every refusal below comes before SSH.
fn unreachable_inventory(dir: &std::path::Path, name: &str, vars: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(
        &p,
        format!("[nodes.pve1]\naddress = \"127.0.0.1\"\nport = 1\n{vars}"),
    )
    .unwrap();
    p
}

fn plan(inv: &std::path::Path, state: &std::path::Path, args: &[&str]) -> std::process::Output {
    command()
        .arg("-i")
        .arg(inv)
        .arg("plan")
        .args(args)
        .env("PVEFLEET_STATE_DIR", state)
        .output()
        .unwrap()
}

/// `-e` values are read as the type the playbook declares: a word that is not a bool for a bool
/// variable, a mistyped name, an inventory string for a bool, and an undefined template
/// variable are invalid input (65) before any node is asked; the old code took `-e
/// full_reset=no` as the (true) string "no".
#[test]
fn extra_vars_and_inventory_vars_are_read_as_the_playbook_declares_them() {
    let state = tempfile::tempdir().unwrap();
    let inv = unreachable_inventory(state.path(), "inv.toml", "");
    let out = plan(&inv, state.path(), &["fix-rrd", "-e", "full_reset=maybe"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "{err}");
    assert!(
        err.contains("`full_reset` is a bool in the playbook fix-rrd"),
        "{err}"
    );

    let out = plan(&inv, state.path(), &["fix-rrd", "-e", "full_rest=true"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "{err}");
    assert!(err.contains("declares no variable `full_rest`"), "{err}");
    assert!(err.contains("full_reset"), "{err}");

    let inv2 = unreachable_inventory(
        state.path(),
        "inv2.toml",
        "[nodes.pve1.vars]\nfull_reset = \"no\"\n",
    );
    let out = plan(&inv2, state.path(), &["fix-rrd"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "{err}");
    assert!(
        err.contains("inventory variable `full_reset` of pve1"),
        "{err}"
    );

    let pb = state.path().join("pb.toml");
    std::fs::write(
        &pb,
        "name = \"u\"\n[[step]]\nname = \"s\"\nkind = \"run\"\ncommand = \"echo {{ nope }}\"\n",
    )
    .unwrap();
    let out = plan(&inv, state.path(), &[pb.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "{err}");
    assert!(err.contains("undefined variable `nope`"), "{err}");

    // `no` is a valid false: the refusal now is only that the node cannot be reached (3).
    let out = plan(&inv, state.path(), &["fix-rrd", "-e", "full_reset=no"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
}
