//! Pacing a rolling run on the lab: a maintenance window that closes mid-run (the run pauses
//! between nodes, `--resume` in a window that fits finishes it, each node rebooted once),
//! `--pause-after`, `--confirm-each-node` answered on a terminal (and refused without one), and
//! backups: a running `vzdump` task refuses the run, `--ignore-backups` overrides, a backup that
//! starts mid-run pauses the run before the node.

use std::time::Duration;

use crate::common::bin::text;
use crate::common::lab::Lab;
use crate::common::runs::{write_playbook, Env};
use crate::common::tmux::Tmux;
use crate::common::wait::eventually;

/// Rolling, one node at a time: a line written, an optional pause, no reboot.
const MARK: &str = r#"
name = "mark"
[vars]
pause = 0
[strategy]
mode = "rolling"
batch = 1
[[step]]
name = "mark"
kind = "line"
path = "/etc/pvefleet-test"
line = "marked"
[[step]]
name = "pause"
kind = "run"
command = "sleep {{ pause }}"
changed_when = "false"
"#;

/// [`MARK`], then a reboot with timeout `secs` when the line changed.
fn mark_and_reboot(secs: u32) -> String {
    format!(
        "{MARK}[[step]]\nname = \"reboot\"\nkind = \"reboot\"\ntimeout = \"{secs}s\"\non_change = [\"mark\"]\n"
    )
}

/// The controller's local time now: seconds since local midnight (what `--window` reads).
fn local_secs() -> u32 {
    let out = std::process::Command::new("date")
        .arg("+%H %M %S")
        .output()
        .unwrap();
    let v: Vec<u32> = text(&out.stdout)
        .split_whitespace()
        .map(|x| x.trim_start_matches('0').parse().unwrap_or(0))
        .collect();
    v[0] * 3600 + v[1] * 60 + v[2]
}

/// `HH:MM` of a minute of the day (1440 is `24:00`, beyond wraps to the next day).
fn hhmm(min: u32) -> String {
    if min == 1440 {
        return "24:00".into();
    }
    let m = min % 1440;
    format!("{:02}:{:02}", m / 60, m % 60)
}

fn marked(lab: &Lab, node: &str) -> bool {
    lab.ssh(node, "grep -qx marked /etc/pvefleet-test").0 == 0
}

fn node_started(env: &Env, node: &str) -> bool {
    env.events()
        .iter()
        .any(|e| e["node"] == node && e["event"] == "node_started")
}

#[test]
fn a_window_that_closes_mid_run_pauses_between_nodes_and_the_resume_finishes() {
    // Three nodes for quorum (one may be down), the run limited to two.
    let Some(lab) = Lab::up("window_closes", 97, 3, &[]) else {
        return;
    };
    // pve1's boot is slow (16 s), so by the time pve2 could start its predicted reboot (the
    // step's timeout: no history in a fresh journal) no longer ends inside the window, while
    // pve1's did when the run started (within 15 s of `now`): the window closes at the minute
    // boundary E, and the timeout is E - now - 15 s.
    lab.fault("pve1", &["slow-boot", "16"]);
    let env = Env::new();
    let now = local_secs();
    let end_min = now / 60 + 2;
    let timeout = end_min * 60 - now - 15;
    let window = format!("{}-{}", hhmm(now / 60 + 1439), hhmm(end_min));
    let pb = write_playbook(env.state.path(), "pb.toml", &mark_and_reboot(timeout));
    let (b1, b2) = (lab.boots("pve1"), lab.boots("pve2"));
    let (code, v) = env.json(
        &lab,
        &[
            "--limit",
            "pve1,pve2",
            "run",
            "--yes",
            "--window",
            &window,
            pb.to_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(4), "{v}");
    assert_eq!(v["status"], "paused: outside window", "{v}");
    assert_eq!(v["nodes"][0]["status"], "ok", "{v}");
    assert_eq!(v["nodes"][0]["rebooted"], true, "{v}");
    assert_eq!(v["nodes"][1]["paused"], true, "{v}");
    let why = v["paused"].as_str().unwrap();
    assert!(why.contains("pve2") && why.contains(&window), "{why}");
    assert_eq!(lab.boots("pve1"), b1 + 1);
    assert_eq!(lab.boots("pve2"), b2, "pve2 untouched");
    assert!(!marked(&lab, "pve2"));
    assert!(!node_started(&env, "pve2"), "pve2 never started");
    let meta = env.meta();
    assert_eq!(meta["status"], "paused: outside window", "{meta}");
    assert_eq!(meta["windows"][0], window.as_str(), "{meta}");
    let id = env.run_id();
    let list = text(&env.run(&lab, &["runs"]).stdout);
    assert!(list.contains("paused: outside window"), "{list}");
    let show = text(&env.run(&lab, &["runs", "show", &id]).stdout);
    assert!(show.contains("paused: outside window: pve2"), "{show}");
    assert!(show.contains(&format!("--resume {id}")), "{show}");

    // A resume keeps the run's window: still closed for pve2 (nothing new is started) ...
    let out = env.run(
        &lab,
        &[
            "run",
            "--yes",
            "--no-window",
            "--window",
            "00:00-01:00",
            "--resume",
            &id,
        ],
    );
    assert_eq!(out.status.code(), Some(64), "--no-window or --window");
    let (code, v) = env.json(&lab, &["run", "--yes", "--resume", &id]);
    assert_eq!(code, Some(4), "{v}");
    assert_eq!(lab.boots("pve2"), b2);
    // ... and one given to it that fits finishes the run: each node rebooted once.
    let now = local_secs();
    let fits = format!("{}-{}", hhmm(now / 60 + 1439), hhmm(now / 60 + 30));
    let (code, v) = env.json(&lab, &["run", "--yes", "--resume", &id, "--window", &fits]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["status"], "ok", "{v}");
    assert_eq!(lab.boots("pve1"), b1 + 1, "pve1 not rebooted again");
    assert_eq!(lab.boots("pve2"), b2 + 1);
    assert!(marked(&lab, "pve2"));
    assert_eq!(
        env.meta()["windows"][0],
        fits.as_str(),
        "the resume's window recorded"
    );

    // --pause-after 1, then a resume without it finishes.
    lab.clear("pve1", Some("slow-boot"));
    lab.sh("pve1", "rm -f /etc/pvefleet-test");
    lab.sh("pve2", "rm -f /etc/pvefleet-test");
    let env = Env::new();
    let pb = write_playbook(env.state.path(), "mark.toml", MARK);
    let (code, v) = env.json(
        &lab,
        &[
            "--limit",
            "pve1,pve2",
            "run",
            "--yes",
            "--pause-after",
            "1",
            pb.to_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(5), "{v}");
    assert_eq!(
        v["status"], "paused: after 1 node(s) (--pause-after)",
        "{v}"
    );
    assert!(marked(&lab, "pve1") && !marked(&lab, "pve2"));
    let id = env.run_id();
    let (code, v) = env.json(&lab, &["run", "--yes", "--resume", &id]);
    assert_eq!((code, &v["status"]), (Some(0), &"ok".into()), "{v}");
    assert_eq!(v["nodes"][0]["not_started"], true, "pve1 done before: {v}");
    assert!(marked(&lab, "pve2"));
    // A parallel playbook is paced as one batch: a window that is closed now starts nothing.
    lab.sh("pve1", "rm -f /etc/pvefleet-test");
    let env = Env::new();
    let parallel = MARK.replace("mode = \"rolling\"\nbatch = 1", "mode = \"parallel\"");
    assert!(parallel.contains("mode = \"parallel\"") && !parallel.contains("batch"));
    let pb = write_playbook(env.state.path(), "par.toml", &parallel);
    let now = local_secs();
    let later = format!("{}-{}", hhmm(now / 60 + 120), hhmm(now / 60 + 180));
    let (code, v) = env.json(
        &lab,
        &[
            "-l",
            "pve1",
            "run",
            "--yes",
            "--window",
            &later,
            pb.to_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(4), "{v}");
    assert_eq!(v["nodes"][0]["paused"], true, "{v}");
    assert!(!marked(&lab, "pve1") && !node_started(&env, "pve1"));
    // --no-window: the resume drops the run's window (and records that).
    let (code, v) = env.json(
        &lab,
        &["run", "--yes", "--resume", &env.run_id(), "--no-window"],
    );
    assert_eq!(code, Some(0), "{v}");
    assert!(marked(&lab, "pve1"));
    assert_eq!(env.meta()["windows"], serde_json::json!([]));
    // A bad window is a usage error naming what was expected; nothing is started.
    let out = env.run(&lab, &["run", "--yes", "--window", "25:00-03:00", "x.toml"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(text(&out.stderr).contains("expected [DAYS ]HH:MM-HH:MM"));
}

#[test]
fn backups_refuse_or_pause_the_run_and_each_node_can_be_confirmed() {
    let Some(lab) = Lab::up("backups_confirm", 98, 2, &[]) else {
        return;
    };
    let env = Env::new();
    let pb = write_playbook(env.state.path(), "mark.toml", MARK);
    let pbs = pb.to_str().unwrap();
    // The stand-in lists the backup as the real /cluster/tasks does: no endtime while it runs.
    lab.fault("pve2", &["vzdump", "100"]);
    let tasks = |lab: &Lab| -> Vec<serde_json::Value> {
        let (_, out, _) = lab.ssh("pve1", "pvesh get /cluster/tasks --output-format json");
        serde_json::from_str(&out).unwrap()
    };
    let t = tasks(&lab);
    let dump = t.iter().find(|t| t["type"] == "vzdump").unwrap();
    assert_eq!(
        (&dump["node"], &dump["id"]),
        (&"pve2".into(), &"100".into())
    );
    assert!(
        dump.get("endtime").is_none() && dump.get("status").is_none(),
        "{dump}"
    );
    assert!(
        dump["upid"].as_str().unwrap().starts_with("UPID:pve2:"),
        "{dump}"
    );

    // Refused before any change, with what runs.
    let out = env.run(&lab, &["run", "--yes", pbs]);
    assert_eq!(out.status.code(), Some(75), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("backups are running (vzdump of guest 100 on pve2)")
            && err.contains("--ignore-backups"),
        "{err}"
    );
    assert!(!marked(&lab, "pve1"), "nothing done");
    assert!(!env.state.path().join("runs").exists(), "no run started");
    // --ignore-backups runs it.
    let (code, v) = env.json(&lab, &["run", "--yes", "--ignore-backups", pbs]);
    assert_eq!(code, Some(0), "{v}");
    assert!(marked(&lab, "pve1") && marked(&lab, "pve2"));
    lab.clear("pve2", Some("vzdump"));
    let t = tasks(&lab);
    let dump = t.iter().find(|t| t["type"] == "vzdump").unwrap();
    assert_eq!(dump["status"], "OK", "ended: {dump}");
    assert!(dump["endtime"].is_u64(), "{dump}");

    // A backup that starts while pve1 runs: pve2 is not started; the run pauses, resumable.
    lab.sh("pve1", "rm -f /etc/pvefleet-test");
    lab.sh("pve2", "rm -f /etc/pvefleet-test");
    let env = Env::new();
    let pb = write_playbook(env.state.path(), "mark.toml", MARK);
    let pbs = pb.to_str().unwrap();
    let child = env.spawn(&lab, &["--json", "run", "--yes", "-e", "pause=3", pbs]);
    assert!(env.wait_event(30, |e| e["node"] == "pve1"
        && e["event"] == "step_started"
        && e["data"]["step"] == "pause"));
    lab.fault("pve2", &["vzdump"]);
    let out = child.wait_with_output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(5), "{v}");
    assert_eq!(v["status"], "paused: backup running", "{v}");
    assert!(
        v["paused"].as_str().unwrap().contains("vzdump on pve2"),
        "{v}"
    );
    assert!(!marked(&lab, "pve2") && !node_started(&env, "pve2"));
    lab.clear("pve2", Some("vzdump"));
    let (code, v) = env.json(&lab, &["run", "--yes", "--resume", &env.run_id()]);
    assert_eq!(code, Some(0), "{v}");
    assert!(marked(&lab, "pve2"));

    // --confirm-each-node without a terminal: refused like `run` without --yes.
    let out = env.run(&lab, &["run", "--confirm-each-node", pbs]);
    assert_eq!(out.status.code(), Some(64));
    assert!(text(&out.stderr).contains("not on a terminal"));
    // On a terminal: pve1's preview and question, y; pve2's, n: the run pauses before pve2.
    lab.sh("pve1", "rm -f /etc/pvefleet-test");
    lab.sh("pve2", "rm -f /etc/pvefleet-test");
    let env = Env::new();
    let pb = write_playbook(env.state.path(), "mark.toml", MARK);
    let exit = env.state.path().join("exit");
    let cmd = format!(
        "PVEFLEET_STATE_DIR={} {} -i {} run --confirm-each-node {}; echo $? > {}; sleep 30",
        env.state.path().display(),
        env!("CARGO_BIN_EXE_pvefleet"),
        lab.inventory().display(),
        pb.display(),
        exit.display()
    );
    let term = Tmux::start("confirm-each", 150, 50, &cmd);
    let asked = |node: &str| {
        let q = format!("Start {node}? (n or q pauses the run) [y/N]");
        let mut screen = String::new();
        let ok = eventually(30, || {
            screen = term.capture(true, 200);
            screen.contains(&q)
        });
        assert!(ok, "{screen}");
        screen
    };
    let screen = asked("pve1");
    assert!(
        screen.contains("== pve1 ==")
            && screen.contains("predicted duration: none (no reboot planned"),
        "{screen}"
    );
    assert!(!node_started(&env, "pve1"), "asked before the node starts");
    term.keys("y Enter");
    asked("pve2");
    term.keys("n Enter");
    assert!(eventually(30, || exit.exists()));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(std::fs::read_to_string(&exit).unwrap().trim(), "5");
    assert!(marked(&lab, "pve1") && !marked(&lab, "pve2"));
    assert!(!node_started(&env, "pve2"));
    assert_eq!(env.meta()["status"], "paused: not confirmed");
}
