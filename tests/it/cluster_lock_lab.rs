//! One driver per cluster (issue 14 §5): a `run` holds a cluster-wide lock in the lab's shared
//! `/etc/pve` (as pmxcfs's `mkdir` under `/etc/pve/priv/lock/`), a second run on the same
//! cluster is refused with who holds it, read-only commands never take it, and a lock whose
//! controller died is reported with how to go on: a resume takes it over, `lock break` breaks it.

use crate::common::bin::text;
use crate::common::lab::Lab;
use crate::common::runs::{signal, write_playbook, Env};

/// A rolling run that stays on each node for a while (long enough to start a second one).
const SLOW: &str = r#"
name = "slow"
[strategy]
mode = "rolling"
batch = 1
[[step]]
name = "work"
kind = "run"
command = "sleep 4"
"#;

fn lock_dir(lab: &Lab) -> std::path::PathBuf {
    lab.dir.path().join("pve/priv/lock/pvefleet-run")
}

/// Start run A and wait until it holds the lock and has started its first node.
fn start_first(lab: &Lab, env: &Env) -> (std::process::Child, String) {
    let pb = write_playbook(env.state.path(), "slow.toml", SLOW);
    let child = env.spawn(lab, &["run", "--yes", pb.to_str().unwrap()]);
    assert!(
        env.wait_event(60, |e| e["event"] == "run_started"),
        "run A started"
    );
    assert!(lock_dir(lab).is_dir(), "run A holds the cluster lock");
    (child, env.run_id())
}

#[test]
fn a_second_run_on_the_same_cluster_is_refused_with_who_holds_it() {
    let Some(lab) = Lab::up("cluster_lock_second_run", 250, 2, &[]) else {
        return;
    };
    let a = Env::new();
    let (child, run_a) = start_first(&lab, &a);

    // A second operator, with its own journal: refused before anything, naming run A.
    let b = Env::new();
    let pb = write_playbook(b.state.path(), "slow.toml", SLOW);
    let out = b.run(&lab, &["run", "--yes", pb.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{err}");
    assert!(
        err.contains(&format!("is being driven by run {run_a} (slow)")),
        "{err}"
    );
    assert!(err.contains(&format!("pid {}", child.id())), "{err}");
    assert!(err.contains("wait for it to end"), "{err}");
    assert!(err.contains("nothing done"), "{err}");
    assert!(
        std::fs::read_dir(b.state.path().join("runs"))
            .map(|d| d.count())
            .unwrap_or(0)
            == 0,
        "the refused run left no journal"
    );

    // Read-only commands never take it (nor wait for it).
    let plan = b.run(&lab, &["plan", pb.to_str().unwrap()]);
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan.stderr));
    let show = b.run(&lab, &["lock", "show"]);
    let shown = text(&show.stdout);
    assert_eq!(show.status.code(), Some(0), "{}", text(&show.stderr));
    assert!(
        shown.contains(&format!("held by run {run_a} (slow)")),
        "{shown}"
    );
    assert!(shown.contains("renewed"), "{shown}");

    // Run A ends and releases the lock; then B may run.
    let done = child.wait_with_output().unwrap();
    assert_eq!(done.status.code(), Some(0), "{}", text(&done.stderr));
    assert!(!lock_dir(&lab).exists(), "released at the end of run A");
    let owner = lab.dir.path().join("pve/priv/pvefleet-run-lock.json");
    assert!(!owner.exists(), "its owner record removed with it");
    let free = b.run(&lab, &["lock", "show"]);
    assert!(
        text(&free.stdout).contains("free"),
        "{}",
        text(&free.stdout)
    );
    let out = b.run(&lab, &["run", "--yes", pb.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn a_killed_runs_lock_is_reported_stale_and_its_resume_takes_it_over() {
    let Some(lab) = Lab::up("cluster_lock_killed_resume", 251, 2, &[]) else {
        return;
    };
    let a = Env::new();
    let (child, run_a) = start_first(&lab, &a);
    signal(&child, "KILL");
    let _ = child.wait_with_output();
    assert!(
        lock_dir(&lab).is_dir(),
        "a killed run cannot release its lock"
    );

    // Another run is refused, told that the holder is gone and how to go on.
    let b = Env::new();
    let pb = write_playbook(b.state.path(), "slow.toml", SLOW);
    let out = b.run(&lab, &["run", "--yes", pb.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{err}");
    assert!(err.contains("stale: its controller process"), "{err}");
    assert!(err.contains("is gone"), "{err}");
    assert!(
        err.contains(&format!("pvefleet run --resume {run_a}")),
        "{err}"
    );
    assert!(
        err.contains(&format!("pvefleet lock break {run_a}")),
        "{err}"
    );

    // The resume of run A is its own driver again: it takes the lock over and ends it.
    let out = a.run(&lab, &["run", "--resume", &run_a, "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        !lock_dir(&lab).exists(),
        "released at the end of the resume"
    );
}

#[test]
fn lock_break_names_the_run_it_breaks_and_leaves_any_other() {
    let Some(lab) = Lab::up("cluster_lock_break", 252, 2, &[]) else {
        return;
    };
    let a = Env::new();
    let (child, run_a) = start_first(&lab, &a);
    signal(&child, "KILL");
    let _ = child.wait_with_output();

    let b = Env::new();
    let wrong = b.run(&lab, &["lock", "break", "20200101-000000-0000"]);
    assert_eq!(wrong.status.code(), Some(2), "{}", text(&wrong.stderr));
    assert!(text(&wrong.stdout).contains("not held by run 20200101-000000-0000"));
    assert!(lock_dir(&lab).is_dir(), "another run's lock is left alone");

    let broke = b.run(&lab, &["lock", "break", &run_a]);
    assert_eq!(broke.status.code(), Some(0), "{}", text(&broke.stderr));
    assert!(text(&broke.stdout).contains(&format!("lock of run {run_a} broken")));
    assert!(!lock_dir(&lab).exists());

    let pb = write_playbook(b.state.path(), "slow.toml", SLOW);
    let out = b.run(&lab, &["run", "--yes", pb.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}
