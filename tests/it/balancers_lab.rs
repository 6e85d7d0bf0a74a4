//! The cluster's own balancers (issue 18): a draining run pauses the HA rebalancing keys of
//! `crs` in `/etc/pve/datacenter.cfg` that are on, and restores them byte-for-byte at its end;
//! keys already off or absent are never written; an operator's change meanwhile is kept; a run
//! killed after the pause is restored by its resume or by `rollback`.

use crate::common::bin::text;
use crate::common::lab::Lab;
use crate::common::runs::{signal, Env};
use std::path::PathBuf;

const ON: &str = "# cluster-wide options\nkeyboard: en-us\ncrs: ha=static,ha-rebalance-on-start=1\nmigration: secure\n";

/// The lab's shared `/etc/pve/datacenter.cfg`, as the host sees it.
fn cfg(lab: &Lab) -> PathBuf {
    lab.dir.path().join("pve/datacenter.cfg")
}

/// Write `datacenter.cfg` through a node, as an operator would.
fn write_cfg(lab: &Lab, body: &str) {
    lab.sh(
        "pve1",
        &format!(
            "printf '%s' '{}' > /etc/pve/datacenter.cfg",
            body.replace('\'', "'\\''")
        ),
    );
    assert_eq!(std::fs::read_to_string(cfg(lab)).unwrap(), body);
}

fn balancer_states(env: &Env) -> Vec<String> {
    env.events()
        .iter()
        .filter(|e| e["event"] == "balancers")
        .map(|e| e["data"]["state"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn position(env: &Env, f: impl Fn(&serde_json::Value) -> bool) -> usize {
    env.events()
        .iter()
        .position(f)
        .unwrap_or_else(|| panic!("no such event: {:?}", env.events()))
}

/// A draining run of pve1 started in `env`, once it journaled the pause.
fn run_until_paused(lab: &Lab, env: &Env) -> std::process::Child {
    let pb = env.playbook("drain-and-reboot.toml");
    let child = env.spawn(lab, &["-l", "pve1", "run", "--yes", pb.to_str().unwrap()]);
    if !env.wait_event(120, |e| {
        e["event"] == "balancers" && e["data"]["state"] == "paused"
    }) {
        signal(&child, "KILL");
        let out = child.wait_with_output().unwrap();
        panic!("not paused: {:?} {}", env.runs(), text(&out.stderr));
    }
    child
}

/// A draining run of pve1 to its end, in a new `Env`: the env, the exit code and stderr.
fn run_pve1(lab: &Lab) -> (Env, Option<i32>, String) {
    let env = Env::new();
    let pb = env.playbook("drain-and-reboot.toml");
    let out = env.run(lab, &["-l", "pve1", "run", "--yes", pb.to_str().unwrap()]);
    let err = text(&out.stderr);
    (env, out.status.code(), err)
}

/// (a) paused while the nodes reboot, restored byte-for-byte; (b) off or absent: never
/// written, nothing journaled.
#[test]
fn a_draining_run_pauses_rebalancing_and_restores_it_and_leaves_it_alone_when_off() {
    let Some(lab) = Lab::up("balancers_pause", 136, 3, &[]) else {
        return;
    };
    lab.fault("pve1", &["guest", "101", "name=web", "mem=1024"]);
    write_cfg(&lab, ON);
    let env = Env::new();
    let pb = env.playbook("drain-and-reboot.toml");
    let child = env.spawn(
        &lab,
        &["-l", "pve1,pve2", "run", "--yes", pb.to_str().unwrap()],
    );
    assert!(
        env.wait_event(120, |e| e["event"] == "reboot"),
        "no reboot began: {:?}",
        env.events()
    );
    let during = std::fs::read_to_string(cfg(&lab)).unwrap();
    assert_eq!(
        during,
        ON.replace("ha-rebalance-on-start=1", "ha-rebalance-on-start=0"),
        "paused while a node reboots"
    );
    let out = child.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("pausing HA rebalancing for the run")
            && err.contains("crs ha-rebalance-on-start=1 -> 0"),
        "{err}"
    );
    assert!(err.contains("via pve1"), "names the node: {err}");
    assert_eq!(
        std::fs::read_to_string(cfg(&lab)).unwrap(),
        ON,
        "restored byte for byte"
    );
    assert_eq!(balancer_states(&env), ["pausing", "paused", "restored"]);
    // Paused before the first node started, restored after the last ended.
    let paused = position(&env, |e| {
        e["event"] == "balancers" && e["data"]["state"] == "paused"
    });
    let first_node = position(&env, |e| e["event"] == "node_started");
    assert!(paused < first_node, "{:?}", env.events());
    let restored = position(&env, |e| {
        e["event"] == "balancers" && e["data"]["state"] == "restored"
    });
    let last_done = env
        .events()
        .iter()
        .rposition(|e| e["event"] == "node_done")
        .expect("nodes done");
    let stopped = position(&env, |e| e["event"] == "run_stopped");
    assert!(
        last_done < restored && restored < stopped,
        "{:?}",
        env.events()
    );
    let ev = &env.events()[paused]["data"];
    assert_eq!(ev["keys"]["ha-rebalance-on-start"], "1");
    assert_eq!(ev["via"], "pve1");

    // (b) Already off, then absent: the file is never written and nothing is journaled.
    for body in [
        "keyboard: en-us\ncrs: ha=static,ha-rebalance-on-start=0\n",
        "keyboard: en-us\ncrs: ha=static\n",
        "keyboard: en-us\n",
    ] {
        write_cfg(&lab, body);
        let mtime = std::fs::metadata(cfg(&lab)).unwrap().modified().unwrap();
        let (env, code, err) = run_pve1(&lab);
        assert_eq!(code, Some(0), "{body}: {err}");
        assert!(
            env.events().iter().any(|e| e["event"] == "node_done"),
            "{body}: the node was drained and rebooted"
        );
        assert_eq!(std::fs::read_to_string(cfg(&lab)).unwrap(), body);
        assert_eq!(
            std::fs::metadata(cfg(&lab)).unwrap().modified().unwrap(),
            mtime,
            "{body}: never written"
        );
        assert!(
            balancer_states(&env).is_empty(),
            "{body}: {:?}",
            env.events()
        );
        assert!(!err.contains("HA rebalancing"), "{body}: {err}");
    }

    // A value that cannot be read: the run refuses before any node starts, naming the line.
    let bad = "keyboard: en-us\ncrs: ha=static,ha-rebalance-on-start=maybe\n";
    write_cfg(&lab, bad);
    let (env, code, err) = run_pve1(&lab);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("via pve1: /etc/pve/datacenter.cfg line 2: crs ha-rebalance-on-start=maybe is not a boolean"),
        "{err}"
    );
    assert!(err.contains("nothing done on the nodes"), "{err}");
    assert!(
        !env.events().iter().any(|e| e["event"] == "node_started"),
        "{:?}",
        env.events()
    );
    assert_eq!(std::fs::read_to_string(cfg(&lab)).unwrap(), bad);
    assert_eq!(env.meta()["status"], "failed");
}

/// (c) An operator changes the value during the run: their value is kept, and said.
#[test]
fn an_operators_change_during_the_run_is_kept_and_said() {
    let Some(lab) = Lab::up("balancers_operator", 137, 3, &[]) else {
        return;
    };
    write_cfg(&lab, ON);
    let env = Env::new();
    let child = run_until_paused(&lab, &env);
    let operators = "# cluster-wide options\nkeyboard: en-us\ncrs: ha=basic,ha-rebalance-on-start=yes\nmigration: secure\n";
    write_cfg(&lab, operators);
    let out = child.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(
        std::fs::read_to_string(cfg(&lab)).unwrap(),
        operators,
        "the operator's file is left as they wrote it"
    );
    assert!(
        err.contains("crs ha-rebalance-on-start=yes changed in /etc/pve/datacenter.cfg since the run paused it: left as it is"),
        "{err}"
    );
    assert_eq!(balancer_states(&env), ["pausing", "paused", "kept"]);
    let kept = env
        .events()
        .into_iter()
        .find(|e| e["event"] == "balancers" && e["data"]["state"] == "kept")
        .unwrap();
    assert_eq!(kept["data"]["keys"]["ha-rebalance-on-start"], "yes");
}

/// (d) SIGKILL of the controller after the pause: the file stays paused; `run --resume` restores
/// it at its end. The same kill followed by `rollback RUN` restores it too.
#[test]
fn a_killed_runs_pause_is_restored_by_its_resume_or_its_rollback() {
    let Some(lab) = Lab::up("balancers_killed", 138, 3, &[]) else {
        return;
    };
    let both = "crs: ha-auto-rebalance=1,ha=static,ha-rebalance-on-start=on\nkeyboard: de\n";
    let paused = "crs: ha-auto-rebalance=0,ha=static,ha-rebalance-on-start=0\nkeyboard: de\n";
    for undo in ["resume", "rollback", "restore-cut"] {
        write_cfg(&lab, both);
        let env = Env::new();
        let child = run_until_paused(&lab, &env);
        signal(&child, "KILL");
        let _ = child.wait_with_output();
        assert_eq!(
            std::fs::read_to_string(cfg(&lab)).unwrap(),
            paused,
            "{undo}: a killed run cannot restore"
        );
        let run = env.run_id();
        // `runs show` says what the killed run owes the cluster, and how to pay it.
        let shown = text(&env.run(&lab, &["runs", "show", &run]).stdout);
        assert!(
            shown.contains(
                "HA rebalancing still paused by this run: crs ha-auto-rebalance=1 ha-rebalance-on-start=on before it"
            ) && shown.contains(&format!("`pvefleet rollback {run}` puts it back")),
            "{shown}"
        );
        assert!(
            shown.contains("HA rebalancing paused via pve"),
            "the event in words: {shown}"
        );
        if undo == "restore-cut" {
            // A kill during the restore, after its write and before its journal line: the
            // file is as before the run, the journal still says paused; then rollback.
            write_cfg(&lab, both);
        }
        if undo == "rollback" {
            // Another run holds the cluster now (the killed run's lock broken, another taken):
            // the rollback, which moves guests and switches the balancers, is refused.
            let owner = lab.dir.path().join("pve/priv/pvefleet-run-lock.json");
            let mine = std::fs::read_to_string(&owner).unwrap();
            assert!(mine.contains(&run), "{mine}");
            let other = mine.replace(&run, "20261203T000000-0bad");
            std::fs::write(&owner, other).unwrap();
            lab.sh("pve1", "touch /etc/pve/priv/lock/pvefleet-run");
            let out = env.run(&lab, &["rollback", &run, "--yes"]);
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(75), "{err}");
            assert!(
                err.contains("20261203T000000-0bad") && err.contains("nothing done"),
                "{err}"
            );
            assert_eq!(
                std::fs::read_to_string(cfg(&lab)).unwrap(),
                paused,
                "nothing restored under another run's lock"
            );
            std::fs::write(&owner, mine).unwrap();
        }
        let out = match undo {
            "resume" => env.run(&lab, &["run", "--resume", &run, "--yes"]),
            _ => env.run(&lab, &["rollback", &run, "--yes"]),
        };
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{undo}: {err}");
        assert_eq!(
            std::fs::read_to_string(cfg(&lab)).unwrap(),
            both,
            "{undo}: restored byte for byte, `on` as `on`"
        );
        if undo == "restore-cut" {
            assert!(
                err.contains("ha-rebalance-on-start=on found as before the run (restored already)"),
                "{undo}: not taken for an operator's change: {err}"
            );
            assert!(!err.contains("left as it is"), "{undo}: {err}");
        } else {
            assert!(err.contains("restored HA rebalancing"), "{undo}: {err}");
        }
        let shown = text(&env.run(&lab, &["runs", "show", &run]).stdout);
        assert!(!shown.contains("still paused"), "{undo}: {shown}");
        // The resume, and the rollback (which takes the killed run's lock over, as the resume
        // does, and releases it at its end), leave the cluster's lock free.
        let out = env.run(&lab, &["lock", "show"]);
        assert!(
            text(&out.stdout).ends_with(": free\n"),
            "{undo}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        assert_eq!(
            balancer_states(&env),
            ["pausing", "paused", "restored"],
            "{undo}: the resume pauses nothing again (the 0s are the run's own)"
        );
    }
}

/// ProxLB's unit on `node`: (is-active, is-enabled), as systemctl prints them.
fn proxlb_unit(lab: &Lab, node: &str) -> (String, String) {
    let (_, a, _) = lab.ssh(node, "systemctl is-active proxlb.service");
    let (_, e, _) = lab.ssh(node, "systemctl is-enabled proxlb.service");
    (a.trim().to_string(), e.trim().to_string())
}

/// ProxLB's unit on `node` as the lab's systemctl keeps it, read on the host at once (no SSH
/// round trip: the run's next step may come within one): (state, enablement).
fn proxlb_files(lab: &Lab, node: &str) -> (String, String) {
    let read = |what: &str| {
        std::fs::read_to_string(
            lab.dir
                .path()
                .join(format!("nodes/{node}/sim/{what}/proxlb")),
        )
        .map(|t| t.trim().to_string())
        .unwrap_or_default()
    };
    (read("services"), read("enabled"))
}

fn proxlb_states(env: &Env, node: &str) -> Vec<String> {
    env.events()
        .iter()
        .filter(|e| e["event"] == "proxlb" && e["node"] == node)
        .map(|e| e["data"]["state"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// (e) ProxLB (its systemd unit on the nodes): the plan says what the run would pause; the run
/// stops what runs and disables what is enabled (so the node hosting it, rebooted by the run,
/// does not start it at its boot), puts back only what is still as it left it (an operator's
/// start meanwhile is kept), says a ProxLB it cannot pause (config only), and a run killed
/// after the pause owes it: `runs show` says so, `rollback` puts it back.
#[test]
fn proxlb_is_paused_for_the_run_on_every_node_and_put_back_as_found() {
    let Some(lab) = Lab::up("balancers_proxlb", 139, 3, &[]) else {
        return;
    };
    lab.fault("pve1", &["guest", "101", "name=web", "mem=1024"]);
    lab.fault("pve1", &["proxlb", "config"]);
    lab.fault("pve2", &["proxlb", "running"]);
    lab.fault("pve3", &["proxlb", "manual"]);
    let running = ("active".to_string(), "enabled".to_string());
    let manual = ("active".to_string(), "disabled".to_string());
    let env = Env::new();
    let pb = env.playbook("drain-and-reboot.toml");
    let pb = pb.to_str().unwrap();

    // The plan says what the run would do, and changes nothing.
    let out = env.run(&lab, &["-l", "pve1,pve2", "plan", pb]);
    let plan = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{plan}{}", text(&out.stderr));
    for want in [
        "balancers: ProxLB on pve2: proxlb.service running and enabled: stopped and disabled for the run",
        "balancers: ProxLB on pve3: proxlb.service running: stopped for the run",
        "balancers: ProxLB on pve1: /etc/proxlb/proxlb.yaml exists but proxlb.service is neither running nor enabled",
    ] {
        assert!(plan.contains(want), "{want}: {plan}");
    }
    assert_eq!(proxlb_unit(&lab, "pve2"), running);

    // The run: pve1 then pve2 (which hosts ProxLB) drained and rebooted; pve3 (outside
    // --limit) is paused too, as its ProxLB balances the whole cluster.
    let child = env.spawn(&lab, &["-l", "pve1,pve2", "run", "--yes", pb]);
    assert!(
        env.wait_event(120, |e| e["event"] == "node_started" && e["node"] == "pve1"),
        "{:?}",
        env.events()
    );
    assert_eq!(
        proxlb_unit(&lab, "pve2"),
        ("inactive".into(), "disabled".into()),
        "stopped and disabled before the first node starts"
    );
    assert_eq!(proxlb_unit(&lab, "pve3").0, "inactive");
    // An operator starts pve3's by hand during the run: theirs from now on.
    lab.sh("pve3", "systemctl start proxlb.service");
    // pve2's reboot does not bring it back (it is disabled).
    assert!(
        env.wait_event(300, |e| e["event"] == "reboot"
            && e["node"] == "pve2"
            && e["data"]["state"] == "services-active"),
        "{:?}",
        env.events()
    );
    assert_eq!(
        proxlb_files(&lab, "pve2"),
        ("inactive".into(), "disabled".into()),
        "not started at the boot"
    );
    let out = child.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("pausing ProxLB for the run on pve2: proxlb.service stopped and disabled")
            && err.contains("pausing ProxLB for the run on pve3: proxlb.service stopped"),
        "{err}"
    );
    assert!(
        err.contains("ProxLB on pve1: /etc/proxlb/proxlb.yaml exists")
            && err.contains("pause it yourself"),
        "the ProxLB it cannot pause is said: {err}"
    );
    assert!(
        err.contains("restored ProxLB on pve2: proxlb.service enabled and started"),
        "{err}"
    );
    assert!(
        err.contains("pve3: proxlb.service running again since the run paused it: left as it is"),
        "{err}"
    );
    assert_eq!(proxlb_unit(&lab, "pve2"), running, "put back");
    assert_eq!(
        proxlb_unit(&lab, "pve3"),
        manual,
        "the operator's start kept"
    );
    assert_eq!(
        proxlb_states(&env, "pve2"),
        ["pausing", "paused", "restored"]
    );
    assert_eq!(proxlb_states(&env, "pve3"), ["pausing", "paused", "kept"]);
    assert!(proxlb_states(&env, "pve1").is_empty());
    let paused = env
        .events()
        .into_iter()
        .position(|e| e["event"] == "proxlb" && e["data"]["state"] == "paused")
        .unwrap();
    let first = env
        .events()
        .into_iter()
        .position(|e| e["event"] == "node_started")
        .unwrap();
    assert!(paused < first, "paused before the first node starts");

    // SIGKILL once paused: the units stay paused; `runs show` says what the run owes; a
    // resume pauses nothing again and puts it back at its end; a second kill, then rollback.
    for undo in ["resume", "rollback"] {
        let env = Env::new();
        let child = env.spawn(&lab, &["-l", "pve1", "run", "--yes", pb]);
        assert!(
            env.wait_event(120, |e| e["event"] == "proxlb"
                && e["node"] == "pve3"
                && e["data"]["state"] == "paused"),
            "{undo}: {:?}",
            env.events()
        );
        signal(&child, "KILL");
        let _ = child.wait_with_output();
        assert_eq!(
            proxlb_unit(&lab, "pve2"),
            ("inactive".into(), "disabled".into())
        );
        let run = env.run_id();
        let shown = text(&env.run(&lab, &["runs", "show", &run]).stdout);
        assert!(
            shown.contains("ProxLB still paused by this run on pve2: proxlb.service stopped and disabled by it")
                && shown.contains(&format!("`pvefleet rollback {run}` puts it back")),
            "{undo}: {shown}"
        );
        assert!(
            shown.contains("ProxLB paused: proxlb.service stopped"),
            "{undo}: {shown}"
        );
        let out = match undo {
            "resume" => env.run(&lab, &["run", "--resume", &run, "--yes"]),
            _ => env.run(&lab, &["rollback", &run, "--yes"]),
        };
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{undo}: {err}");
        assert!(
            !err.contains("pausing ProxLB"),
            "{undo}: nothing paused again: {err}"
        );
        assert!(
            !err.contains("pve2: /etc/proxlb/proxlb.yaml exists"),
            "{undo}: the run's own pause is not an operator's stopped ProxLB: {err}"
        );
        assert_eq!(proxlb_unit(&lab, "pve2"), running, "{undo}");
        assert_eq!(proxlb_unit(&lab, "pve3"), manual, "{undo}");
        assert_eq!(
            proxlb_states(&env, "pve2"),
            ["pausing", "paused", "restored"],
            "{undo}"
        );
        let shown = text(&env.run(&lab, &["runs", "show", &run]).stdout);
        assert!(!shown.contains("still paused"), "{undo}: {shown}");
    }
}
