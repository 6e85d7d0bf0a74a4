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

/// Issue 16: a journal that cannot be read whole is never acted on. A garbage line in the middle
/// of `events.jsonl` makes `runs show`, `rollback` and `run --resume` refuse with the file and
/// line (exit 65, a data error); a last line cut short by a kill is tolerated; a run whose
/// `run.json` is garbage is said by `runs`, not silently hidden. Before, the bad line was
/// skipped: rollback said "nothing to roll back" and exited 0.
#[test]
fn a_journal_that_cannot_be_read_whole_is_refused_with_its_file_and_line() {
    let state = tempfile::tempdir().unwrap();
    let runs = state.path().join("runs");
    let id = "20261124T130501-1a2b";
    let dir = runs.join(id);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("run.json"),
        format!(
            r#"{{"id":"{id}","playbook":"/nonexistent/pb.toml","inventory":"x","nodes":["pve1"],"started":"2026-11-24T13:05:01Z","status":"failed","limit":null}}"#
        ),
    )
    .unwrap();
    let good =
        r#"{"time":"2026-11-24T13:05:02.000Z","node":"pve1","event":"node_started","data":{}}"#;
    // Cut short by a kill: the last line without its newline is tolerated.
    std::fs::write(
        dir.join("events.jsonl"),
        format!("{good}\n{{\"time\":\"2026"),
    )
    .unwrap();
    let run = |args: &[&str]| {
        command()
            .args(args)
            .env("PVEFLEET_STATE_DIR", state.path())
            .output()
            .unwrap()
    };
    let out = run(&["runs", "show", id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // A bad line in the middle is not.
    std::fs::write(
        dir.join("events.jsonl"),
        format!("{good}\nnot json at all\n{good}\n"),
    )
    .unwrap();
    for args in [
        vec!["runs", "show", id],
        vec!["rollback", id, "--yes"],
        vec!["run", "--resume", id, "--yes"],
    ] {
        let out = run(&args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(65), "{args:?}: {err}");
        assert!(
            err.contains(&format!("{id}/events.jsonl:2: ")) && err.contains("cannot be read whole"),
            "{args:?}: {err}"
        );
    }
    // A garbage run.json: said by `runs`, with its file.
    let other = runs.join("20261125T000000-0000");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("run.json"), "{garbage").unwrap();
    let out = run(&["runs"]);
    assert_eq!(out.status.code(), Some(0));
    let err = text(&out.stderr);
    assert!(err.contains("20261125T000000-0000/run.json:1: "), "{err}");
    assert!(text(&out.stdout).contains(id), "the readable run is listed");
}
