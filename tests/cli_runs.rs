//! `pvefleet runs` and `rollback` on the run journal, without nodes: a run id is never a path.

mod common;

use common::bin::{command, text};

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
