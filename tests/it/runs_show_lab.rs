//! What `runs` and `runs show` print after a real run on the lab, and `-l` on `runs show` and
//! `maintenance` (issue 17): each step's output kept (capped, and said), a run's nodes filtered,
//! the list fitting 80 columns.

use crate::common::lab::Lab;
use crate::common::runs::{write_playbook, Env};
use crate::common::tmux::Tmux;
use crate::common::wait::eventually;

const PLAYBOOK: &str = r#"name = "chatty"
[strategy]
mode = "parallel"
[[step]]
name = "thirty"
kind = "run"
command = "seq -f 'line %g' 1 30"
[[step]]
name = "flood"
kind = "run"
command = "seq 1 100000"
"#;

fn out(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A step printing 30 lines shows all 30 under it in `runs show`; one printing 100 000 keeps
/// its last 100 and says so. `-l pve2` shows pve2's section and events only. `runs` fits 80
/// columns with a long playbook path.
#[test]
fn runs_show_keeps_each_steps_output_and_l_filters_the_nodes() {
    let Some(lab) = Lab::up("runs_show_output", 176, 2, &[]) else {
        return;
    };
    let env = Env::new();
    let deep = env
        .state
        .path()
        .join("a-rather-long-directory-name-for-playbooks/and-another-level-below-it");
    std::fs::create_dir_all(&deep).unwrap();
    let pb = write_playbook(&deep, "a-playbook-with-a-long-name.toml", PLAYBOOK);
    let run = env.run(&lab, &["run", "--yes", pb.to_str().unwrap()]);
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}{}",
        out(&run),
        String::from_utf8_lossy(&run.stderr)
    );
    let id = env.run_id();

    let shown = out(&env.run(&lab, &["runs", "show", &id]));
    for n in 1..=30 {
        assert!(
            shown.contains(&format!("\n    line {n}\n")),
            "line {n}: {shown}"
        );
    }
    assert!(
        shown.contains(
            "    [output cut: the first 99900 of 100000 lines not kept; the last 100 shown]\n"
        ),
        "{shown}"
    );
    assert!(shown.contains("\n    100000\n") && shown.contains("\n    99901\n"));
    assert!(
        !shown.contains("\n    99900\n"),
        "only the last 100 lines are kept"
    );

    let one = out(&env.run(&lab, &["-l", "pve2", "runs", "show", &id]));
    assert!(one.lines().any(|l| l.starts_with("  pve2 ")), "{one}");
    assert!(!one.lines().any(|l| l.starts_with("  pve1 ")), "{one}");
    assert!(!one.contains(" pve1 "), "no pve1 event: {one}");
    assert!(one.contains(" pve2 "), "{one}");
    assert_eq!(
        one.matches("\n    line 30\n").count(),
        1,
        "pve2's output only"
    );

    // `runs` at 80 columns: no line wider than the terminal.
    let cmd = format!(
        "PVEFLEET_STATE_DIR={} {} runs; sleep 30",
        env.state.path().display(),
        env!("CARGO_BIN_EXE_pvefleet")
    );
    let term = Tmux::start("runs-80", 80, 20, &cmd);
    let mut screen = String::new();
    assert!(
        eventually(20, || {
            screen = term.capture(true, 100);
            screen.contains('└')
        }),
        "{screen}"
    );
    for l in screen.lines() {
        assert!(l.chars().count() <= 80, "wider than 80: {l:?}\n{screen}");
    }
    assert!(
        screen.contains(&format!("│ {id} ┆ ok")),
        "the id whole: {screen}"
    );
}

/// `maintenance on|off` takes its nodes from `-l` when none is named, filters named ones by
/// it, and refuses neither (HA maintenance on every node is never a default).
#[test]
fn maintenance_takes_its_nodes_from_l() {
    let Some(lab) = Lab::up("maintenance_limit", 177, 3, &[]) else {
        return;
    };
    let env = Env::new();
    let on = |node: &str| {
        lab.dir
            .path()
            .join(format!("cluster/maintenance-{node}"))
            .exists()
    };
    let o = env.run(&lab, &["-l", "pve[2-3]", "maintenance", "on"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!((on("pve1"), on("pve2"), on("pve3")), (false, true, true));
    let o = env.run(&lab, &["-l", "pve3", "maintenance", "off", "pve2", "pve3"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not selected by -l pve3, skipped: pve2"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!((on("pve2"), on("pve3")), (true, false));
    let o = env.run(&lab, &["maintenance", "off"]);
    assert_eq!(o.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&o.stderr).contains("select them with -l PATTERN"));
    assert!(on("pve2"), "nothing switched off");
}
