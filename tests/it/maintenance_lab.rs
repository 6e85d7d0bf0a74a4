//! Rolling cluster maintenance on the lab: drain (HA guests through maintenance, VMs
//! live-migrated, containers moved with a restart) and return, Ceph kept safe (ok-to-stop, noout
//! around each reboot, PGs clean before the next node), and the upgrade playbook that reboots
//! only the nodes that got a new kernel.

use crate::common::bin::text;
use crate::common::lab::Lab;
use crate::common::runs::{fixture_playbook, shipped, signal, write_playbook, Env};
use crate::common::wait::eventually;
use std::time::Duration;

/// The lab's record of migrations, in order, each `[migrated, VMID, FROM, TO, qm|pct]` (its
/// lines read `NODE migrated VMID FROM TO qm|pct`, tests/lab/sim/bin/qm); one guest's or all.
fn migrations(lab: &Lab, vmid: Option<u32>) -> Vec<Vec<String>> {
    lab.events()
        .iter()
        .map(|e| {
            e.split_whitespace()
                .skip(1)
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter(|w| w.len() >= 4 && w[0] == "migrated")
        .filter(|w| vmid.is_none_or(|id| w[1] == id.to_string()))
        .collect()
}

/// Which node's config holds guest ID, and its run state.
fn where_is(lab: &Lab, id: u32) -> (String, String) {
    lab.guest(id)
}

fn journal_events(env: &Env, node: &str, kind: &str) -> Vec<serde_json::Value> {
    env.events()
        .into_iter()
        .filter(|e| e["node"] == node && e["event"] == kind)
        .collect()
}

#[test]
fn rolling_upgrade_drains_and_reboots_only_the_nodes_with_a_new_kernel() {
    let Some(lab) = Lab::up("upgrade_rolling", 117, 4, &["--profile", "all:ceph=yes"]) else {
        return;
    };
    let env = Env::new();
    lab.fault("pve1", &["guest", "100", "name=ha-vm", "ha"]);
    lab.fault("pve2", &["guest", "101", "name=web", "mem=2048"]);
    lab.fault("pve2", &["guest", "200", "kind=lxc", "name=dns", "mem=512"]);
    lab.fault("pve3", &["guest", "102", "name=media", "hostpci"]);
    for n in ["pve1", "pve2"] {
        lab.fault(n, &["pending-kernel", "6.8.12-9-pve"]);
        lab.fault(n, &["pending", "pve-manager=8.3.5"]);
    }
    for n in ["pve3", "pve4"] {
        lab.fault(n, &["pending", "pve-manager=8.3.5"]);
    }
    let placed: Vec<(u32, (String, String))> = [100, 101, 200, 102]
        .iter()
        .map(|id| (*id, where_is(&lab, *id)))
        .collect();
    // The plan says per node what would be upgraded.
    // The lab's root is a small tmpfs: lower the free-space floor of the preflight.
    let (code, plan) = env.json(
        &lab,
        &["plan", "-e", "min_free_mib=64", &shipped("upgrade.toml")],
    );
    assert_eq!(code, Some(0), "{plan}");
    let steps = |n: usize| plan["nodes"][n]["steps"].to_string();
    assert!(
        steps(0).contains("new kernel: 6.8.12-9-pve"),
        "{}",
        steps(0)
    );
    assert!(
        steps(2).contains("1 package(s); new kernel: no"),
        "{}",
        steps(2)
    );

    let (code, v) = env.json(
        &lab,
        &[
            "run",
            "--yes",
            "-e",
            "min_free_mib=64",
            &shipped("upgrade.toml"),
        ],
    );
    assert_eq!(code, Some(0), "{v}");
    // Only the nodes with a new kernel were drained and rebooted.
    for (n, want) in [("pve1", 2), ("pve2", 2), ("pve3", 1), ("pve4", 1)] {
        assert_eq!(lab.boots(n), want, "{n}");
    }
    assert_eq!(lab.sh("pve1", "uname -r"), "6.8.12-9-pve\n");
    assert!(lab.sh("pve3", "pveversion").contains("pve-manager/8.3.5"));
    // Every guest ends where it started, running; none was stopped (no policy asked for it).
    for (id, at) in &placed {
        assert_eq!(&where_is(&lab, *id), at, "guest {id}");
    }
    let ev = lab.events();
    assert!(
        !ev.iter()
            .any(|e| e.contains("guest-stopped") && !e.contains("pct-migrate-restart")),
        "a guest was stopped: {ev:#?}"
    );
    assert!(
        ev.iter().any(|e| e.contains("migrated 101 pve2")),
        "{ev:#?}"
    );
    assert!(
        ev.iter().any(|e| e.contains("migrated 200 pve2")),
        "container moved: {ev:#?}"
    );
    assert!(
        ev.iter().any(|e| e.contains("ha-moved vm:100 pve1")),
        "{ev:#?}"
    );
    // noout around each reboot, and nowhere else.
    let noout: Vec<&String> = ev.iter().filter(|e| e.contains("noout")).collect();
    assert_eq!(noout.len(), 4, "{noout:#?}");
    assert!(
        noout[0].contains("set-group noout pve1") && noout[1].contains("unset-group noout pve1")
    );
    assert!(
        noout[2].contains("set-group noout pve2") && noout[3].contains("unset-group noout pve2")
    );
    // PGs clean (and noout unset) on pve1 before anything happened to pve2.
    let all = env.events();
    let pos = |f: &dyn Fn(&serde_json::Value) -> bool| all.iter().position(f).unwrap();
    let pve1_clean = pos(&|e| e["node"] == "pve1" && e["data"]["state"] == "ceph-clean");
    let pve2_start = pos(&|e| e["node"] == "pve2" && e["event"] == "node_started");
    assert!(pve1_clean < pve2_start);
    let status = lab.sh("pve1", "ceph status -f json");
    assert!(status.contains("HEALTH_OK"), "{status}");
}

#[test]
fn an_unmovable_guest_stops_the_node_under_refuse_and_is_restarted_under_shutdown() {
    let Some(lab) = Lab::up("drain_policy", 118, 3, &[]) else {
        return;
    };
    let env = Env::new();
    let pb = env.playbook("drain-and-reboot.toml");
    lab.fault("pve1", &["guest", "101", "name=web", "mem=2048"]);
    lab.fault("pve1", &["guest", "102", "name=media", "hostpci"]);
    let (code, v) = env.apply(&lab, &pb, &["-l", "pve1"]);
    assert_eq!(code, Some(2), "{v}");
    let err = v["nodes"][0]["error"].as_str().unwrap();
    assert!(
        err.contains("qm 102 (media) uses local devices: hostpci0"),
        "{err}"
    );
    assert!(
        lab.events().iter().all(|e| !e.contains("migrated")),
        "nothing moved before refusing"
    );
    assert_eq!(lab.boots("pve1"), 1);

    let env = Env::new();
    let (code, v) = env.apply(
        &lab,
        &pb,
        &["-l", "pve1", "--guests", "shutdown", "-e", "marker=again"],
    );
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(lab.boots("pve1"), 2);
    let ev = lab.events();
    assert!(
        ev.iter()
            .any(|e| e.contains("guest-stopped 102 qm-shutdown")),
        "{ev:#?}"
    );
    assert!(
        ev.iter().any(|e| e.contains("guest-started 102 qm-start")),
        "{ev:#?}"
    );
    assert!(
        ev.iter().any(|e| e.contains("migrated 101 pve1")),
        "{ev:#?}"
    );
    assert!(
        !ev.iter().any(|e| e.contains("guest-stopped 101")),
        "101 moved, not stopped: {ev:#?}"
    );
    assert_eq!(
        where_is(&lab, 101),
        ("pve1".into(), "running".into()),
        "back home"
    );
    assert_eq!(where_is(&lab, 102), ("pve1".into(), "running".into()));
    // No Ceph in this lab: no Ceph state was waited for.
    let states: Vec<String> = journal_events(&env, "pve1", "reboot")
        .iter()
        .map(|e| e["data"]["state"].as_str().unwrap().to_string())
        .collect();
    assert!(
        !states
            .iter()
            .any(|s| s.starts_with("ceph") || s.starts_with("noout")),
        "{states:?}"
    );
    assert!(
        states.contains(&"guests-returned".to_string()),
        "{states:?}"
    );
}

#[test]
fn a_failed_migration_halts_before_the_reboot() {
    let Some(lab) = Lab::up("drain_migrate_fails", 119, 3, &[]) else {
        return;
    };
    let env = Env::new();
    let pb = env.playbook("drain-and-reboot.toml");
    lab.fault("pve1", &["guest", "101", "name=web", "mem=2048"]);
    lab.fault("pve1", &["migrate-fails"]);
    let (code, v) = env.apply(&lab, &pb, &[]);
    assert_eq!(code, Some(2), "{v}");
    assert_eq!(v["status"], "halted");
    let err = v["nodes"][0]["error"].as_str().unwrap();
    assert!(
        err.contains("migration of qm 101 (web)") && err.contains("the node is not rebooted"),
        "{err}"
    );
    for n in ["pve1", "pve2", "pve3"] {
        assert_eq!(lab.boots(n), 1, "{n} not rebooted");
    }
    assert_eq!(v["nodes"][1]["halted"], true);
    assert_eq!(where_is(&lab, 101), ("pve1".into(), "running".into()));
    assert_eq!(
        lab.ssh("pve2", "test -e /var/lib/pvelab-cluster/maintenance-pve1")
            .0,
        1,
        "the drain was undone"
    );
}

/// The playbook README's promise: when a migration fails halfway through a drain, the guests
/// already moved go back to their node before the run halts, and the node is not rebooted.
/// `migrate-fails 2`: the first migration from pve1 works, the second fails.
#[test]
fn a_migration_failing_halfway_moves_the_guests_already_moved_back() {
    let Some(lab) = Lab::up("drain_migrate_fails_halfway", 140, 3, &[]) else {
        return;
    };
    let env = Env::new();
    let pb = env.playbook("drain-and-reboot.toml");
    lab.fault("pve1", &["guest", "101", "name=web", "mem=2048"]);
    lab.fault("pve1", &["guest", "102", "name=db", "mem=2048"]);
    lab.fault("pve1", &["migrate-fails", "2"]);
    let (code, v) = env.apply(&lab, &pb, &[]);
    assert_eq!(code, Some(2), "{v}");
    assert_eq!(v["status"], "halted");
    let err = v["nodes"][0]["error"].as_str().unwrap();
    assert!(err.contains("the node is not rebooted"), "{err}");
    for n in ["pve1", "pve2", "pve3"] {
        assert_eq!(lab.boots(n), 1, "{n} not rebooted");
    }
    // Both guests are on pve1 and running: one never left, the other came back.
    assert_eq!(where_is(&lab, 101), ("pve1".into(), "running".into()));
    assert_eq!(where_is(&lab, 102), ("pve1".into(), "running".into()));
    // The lab saw exactly one guest leave pve1 and the same guest come back.
    let migrated = migrations(&lab, None);
    assert_eq!(migrated.len(), 2, "{migrated:?}");
    let (away, back) = (&migrated[0], &migrated[1]);
    assert_eq!(away[1], back[1], "the same guest: {migrated:?}");
    assert_eq!(
        (away[2].as_str(), back[3].as_str()),
        ("pve1", "pve1"),
        "{migrated:?}"
    );
    assert_eq!(away[3], back[2], "back from where it went: {migrated:?}");
    // The journal says so too: moved (intent, done), then returned.
    let events = env.events();
    let vmid: u64 = away[1].parse().unwrap();
    let returned = events
        .iter()
        .filter(|e| e["event"] == "guest_returned" && e["data"]["guest"]["vmid"] == vmid)
        .count();
    assert_eq!(returned, 1, "one guest_returned for {vmid}");
    assert_eq!(
        lab.ssh("pve2", "test -e /var/lib/pvelab-cluster/maintenance-pve1")
            .0,
        1,
        "maintenance is off again"
    );
}

#[test]
fn ceph_that_is_not_healthy_refuses_to_start_unless_the_warning_is_accepted() {
    let Some(lab) = Lab::up("ceph_unhealthy", 120, 3, &["--profile", "all:ceph=yes"]) else {
        return;
    };
    let env = Env::new();
    let pb = env.playbook("drain-and-reboot.toml");
    // The lab's Ceph is real: MON_CLOCK_SKEW cannot happen (the nodes share one clock), so the
    // unrelated warning is a pool without an application, which real Ceph raises.
    lab.fault("pve1", &["ceph-health", "WARN", "POOL_APP_NOT_ENABLED"]);
    // Decide before you change (issue 14 §8): the plan already says the run would refuse the
    // node, and the run refuses it before its first step (the `mark` line is not written). On
    // the old code the warning was found at the reboot step, after `mark` had changed pve1.
    let (code, plan) = env.json(&lab, &["-l", "pve1", "plan", pb.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{plan}");
    let reboot = &plan["nodes"][0]["steps"][1];
    assert_eq!(reboot["status"], "failed", "{reboot}");
    assert!(
        reboot["detail"]
            .as_str()
            .unwrap()
            .contains("would refuse this node before changing it: ceph: Ceph is HEALTH_WARN: POOL_APP_NOT_ENABLED"),
        "{reboot}"
    );
    let (code, v) = env.apply(&lab, &pb, &[]);
    assert_eq!(code, Some(2), "{v}");
    let err = v["nodes"][0]["error"].as_str().unwrap();
    assert!(
        err.starts_with("refused before any change: ")
            && err.contains("ceph: Ceph is HEALTH_WARN: POOL_APP_NOT_ENABLED"),
        "{err}"
    );
    let (rc, _, _) = lab.ssh("pve1", "test -e /etc/pvefleet-test");
    assert_eq!(rc, 1, "the first step did not run");
    assert_eq!(lab.boots("pve1"), 1);
    assert!(
        lab.events().iter().all(|e| !e.contains("noout")),
        "no noout was set"
    );
    let accepted = write_playbook(
        env.state.path(),
        "accept.toml",
        &fixture_playbook("drain-and-reboot.toml").replace(
            "drain = true",
            "drain = true\nceph_accept_warnings = [\"POOL_APP_NOT_ENABLED\"]",
        ),
    );
    let (code, v) = env.json(
        &lab,
        &[
            "-l",
            "pve1",
            "run",
            "--yes",
            "-e",
            "marker=x",
            accepted.to_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(lab.boots("pve1"), 2);
    // The next plan predicts pve1's reboot from the one just journaled; pve2 has no history.
    let again = write_playbook(
        env.state.path(),
        "again.toml",
        &std::fs::read_to_string(&accepted)
            .unwrap()
            .replace("on_change = [\"mark\"]\n", ""),
    );
    let (code, plan) = env.json(&lab, &["-l", "pve[1-2]", "plan", again.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{plan}");
    let reboot = |i: usize| plan["nodes"][i]["steps"][1].clone();
    let took = reboot(0)["predicted_ms"].as_u64().expect("pve1 predicted");
    assert!(took > 1000, "{}", reboot(0));
    assert!(
        reboot(0)["checks"].to_string().contains("predicted: about"),
        "{}",
        reboot(0)
    );
    assert!(reboot(1)["predicted_ms"].is_null(), "{}", reboot(1));
    assert!(
        reboot(1)["checks"]
            .to_string()
            .contains("predicted: no history"),
        "{}",
        reboot(1)
    );
}

#[test]
fn resume_after_sigkill_in_the_middle_of_a_drain_completes_it() {
    let Some(lab) = Lab::up("drain_sigkill", 121, 3, &[]) else {
        return;
    };
    let env = Env::new();
    let pb = env.playbook("drain-and-reboot.toml");
    for id in ["101", "103", "104"] {
        lab.fault("pve1", &["guest", id, "mem=1024"]);
    }
    let child = env.spawn(&lab, &["run", "--yes", pb.to_str().unwrap()]);
    assert!(env.wait_event(60, |e| e["node"] == "pve1"
        && e["event"] == "guest_moved"
        && e["data"]["phase"] == "done"));
    signal(&child, "KILL");
    let _ = child.wait_with_output();
    assert_eq!(lab.boots("pve1"), 1, "killed before the reboot");
    let (code, v) = env.json(&lab, &["run", "--resume", &env.run_id(), "--yes"]);
    assert_eq!(code, Some(0), "{v}");
    for n in ["pve1", "pve2", "pve3"] {
        assert_eq!(lab.boots(n), 2, "{n} rebooted exactly once");
    }
    for id in [101, 103, 104] {
        assert_eq!(
            where_is(&lab, id),
            ("pve1".into(), "running".into()),
            "guest {id} back home"
        );
    }
    assert!(
        !lab.events().iter().any(|e| e.contains("node-reboot")),
        "no guest was on a node when it rebooted"
    );
}

/// A rolling drain of pve1 whose one guest (101) takes 30 s to migrate; the controller is
/// SIGKILLed in the middle of that migration, which goes on (101 still locked `migrate`). (12 s
/// was once over before a loaded machine's resume had planned its nodes: then there was
/// nothing left to wait for.)
fn kill_the_controller_mid_migration(lab: &Lab, env: &Env) {
    let pb = env.playbook("drain-and-reboot.toml");
    lab.fault("pve1", &["guest", "101", "name=web", "mem=2048"]);
    lab.fault("pve1", &["migrate-slow", "30"]);
    let child = env.spawn(lab, &["run", "--yes", pb.to_str().unwrap()]);
    assert!(env.wait_event(60, |e| e["node"] == "pve1"
        && e["event"] == "guest_moved"
        && e["data"]["phase"] == "intent"));
    let locked = || locked_on_pve1(lab);
    let t = std::time::Instant::now();
    while !locked() && t.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(locked(), "the migration started");
    signal(&child, "KILL");
    let _ = child.wait_with_output();
    // The controller is gone (waited for), the migration's own session is not.
    assert!(locked(), "the migration goes on after the kill");
    assert!(
        lab.sh(
            "pve1",
            "pgrep -f 'qm [m]igrate 101' >/dev/null && echo running || echo gone"
        ) == "running\n",
        "the migration's process outlived the controller"
    );
}

/// Whether guest 101's config on pve1 holds the migration's lock.
fn locked_on_pve1(lab: &Lab) -> bool {
    std::fs::read_to_string(lab.dir.path().join("pve/nodes/pve1/qemu-server/101.conf"))
        .map(|c| c.lines().any(|l| l == "lock: migrate"))
        .unwrap_or(false)
}

/// A migration in flight when the controller is killed goes on without it (it runs detached
/// from the SSH session), and the resume waits for its task to end instead of taking the lock
/// and moving the guest a second time. On the old code the kill cut `qm migrate` (its output
/// pipe gone), and the resume unlocked the guest after 60 s and migrated it again.
#[test]
fn a_migration_outlives_a_killed_controller_and_the_resume_waits_for_it() {
    let Some(lab) = Lab::up("drain_migration_outlives", 141, 3, &[]) else {
        return;
    };
    let env = Env::new();
    kill_the_controller_mid_migration(&lab, &env);
    let out = env.run(&lab, &["run", "--resume", &env.run_id(), "--yes"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("pve1: waiting for the migration of qm 101 (web) the stopped run started (task UPID:pve1:"),
        "{stderr}"
    );
    assert!(!stderr.contains("unlocking"), "{stderr}");
    // The lab saw 101 leave pve1 once (the migration the killed run started) and come back once.
    let moves = migrations(&lab, Some(101));
    assert_eq!(moves.len(), 2, "{moves:?}");
    assert_eq!(moves[0][2], "pve1", "{moves:?}");
    assert_eq!(moves[1][3], "pve1", "{moves:?}");
    assert_eq!(where_is(&lab, 101), ("pve1".into(), "running".into()));
    for n in ["pve1", "pve2", "pve3"] {
        assert_eq!(lab.boots(n), 2, "{n} rebooted exactly once");
    }
    assert!(
        !lab.events().iter().any(|e| e.contains("node-reboot")),
        "no guest was on a node when it rebooted"
    );
}

/// The other case: the migration the killed controller had started dies too (its worker
/// killed). The resume finds the guest still locked `migrate` with no migration task running,
/// unlocks it (saying so), moves it again, and the run completes.
#[test]
fn a_migration_that_died_with_the_controller_is_unlocked_and_done_again() {
    let Some(lab) = Lab::up("drain_migration_died", 148, 3, &[]) else {
        return;
    };
    let env = Env::new();
    kill_the_controller_mid_migration(&lab, &env);
    // The worker dies too: its pid is in the task's UPID (tests/lab/sim/lib.sh task_begin).
    let tasks = lab.sh(
        "pve1",
        "pvesh get /nodes/pve1/tasks --source active --vmid 101 --typefilter qmigrate --output-format json",
    );
    let v: serde_json::Value = serde_json::from_str(&tasks).unwrap();
    let upid = v[0]["upid"].as_str().unwrap().to_string();
    let pid = i64::from_str_radix(upid.split(':').nth(2).unwrap(), 16).unwrap();
    lab.sh("pve1", &format!("kill -9 {pid}"));
    assert!(locked_on_pve1(&lab), "the dead migration's lock stays");
    let out = env.run(&lab, &["run", "--resume", &env.run_id(), "--yes"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("pve1: qm 101 (web) was left locked by a migration the stopped run had started, which is no longer running; unlocking it to move it again"),
        "{stderr}"
    );
    assert!(!stderr.contains("waiting for the migration"), "{stderr}");
    // 101 left pve1 once (the second attempt) and came back once.
    let moves = migrations(&lab, Some(101));
    assert_eq!(moves.len(), 2, "{moves:?}");
    assert_eq!(
        (moves[0][2].as_str(), moves[1][3].as_str()),
        ("pve1", "pve1"),
        "{moves:?}"
    );
    assert_eq!(where_is(&lab, 101), ("pve1".into(), "running".into()));
    for n in ["pve1", "pve2", "pve3"] {
        assert_eq!(lab.boots(n), 2, "{n} rebooted exactly once");
    }
}

/// Nodes whose reboots overlapped in time (one was issued before another was done).
fn overlapping(env: &Env) -> usize {
    let ev = env.events();
    let mut open = 0usize;
    let mut most = 0usize;
    for e in &ev {
        if e["event"] == "reboot" && e["data"]["state"] == "reboot-issued" {
            open += 1;
            most = most.max(open);
        }
        if e["event"] == "reboot" && e["data"]["state"] == "done" {
            open = open.saturating_sub(1);
        }
    }
    most
}

#[test]
fn batch_auto_takes_what_quorum_and_ceph_allow() {
    let auto = fixture_playbook("drain-and-reboot.toml").replace("batch = 1", "batch = \"auto\"");
    // Five nodes without Ceph: quorum 3 of 5 lets two reboot at once.
    let Some(lab) = Lab::up("batch_auto", 125, 5, &[]) else {
        return;
    };
    let env = Env::new();
    let pb = write_playbook(env.state.path(), "pb.toml", &auto);
    let (code, v) = env.apply(&lab, &pb, &[]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(overlapping(&env), 2, "batches of two");
    for n in ["pve1", "pve2", "pve3", "pve4", "pve5"] {
        assert_eq!(lab.boots(n), 2, "{n}");
    }
    drop(lab);
    // The same with Ceph (size 3 across hosts): only one host's OSDs may stop at once. Three of
    // the five are enough to show it (quorum alone would let two of them go together), and
    // keep this, the suite's longest test, shorter.
    let Some(lab) = Lab::up("batch_auto_ceph", 126, 5, &["--profile", "all:ceph=yes"]) else {
        return;
    };
    let env = Env::new();
    let pb = write_playbook(env.state.path(), "pb.toml", &auto);
    let (code, v) = env.apply(&lab, &pb, &["-l", "pve[1-3]"]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["nodes"].as_array().map(Vec::len), Some(3), "{v}");
    assert_eq!(overlapping(&env), 1, "one node at a time");
}

/// A rolling drain on a Ceph lab whose pve1 never comes back from its reboot: the run halts with
/// Ceph noout left set for pve1, on purpose, said and journaled.
fn halt_with_noout_left_set(lab: &Lab, env: &Env) {
    let pb = write_playbook(
        env.state.path(),
        "pb.toml",
        &fixture_playbook("drain-and-reboot.toml")
            .replace("timeout = \"60s\"", "timeout = \"15s\""),
    );
    lab.fault("pve1", &["no-return"]);
    let (code, v) = env.apply(lab, &pb, &[]);
    assert_eq!(code, Some(2), "{v}");
    let left = v["left_on"].to_string();
    assert!(
        left.contains("Ceph noout left SET for pve1")
            && left.contains("ceph osd unset-group noout pve1"),
        "{left}"
    );
    let noout: Vec<String> = lab
        .events()
        .into_iter()
        .filter(|e| e.contains("noout"))
        .collect();
    assert_eq!(
        noout.len(),
        1,
        "set, not unset, while pve1 is down: {noout:#?}"
    );
    assert!(noout[0].contains("set-group noout pve1"));
    assert!(
        env.events().iter().any(|e| e["node"] == "pve1"
            && e["event"] == "noout"
            && e["data"]["state"] == "left-set"),
        "journaled"
    );
}

#[test]
fn a_ceph_node_that_never_returns_keeps_noout_set_until_resume_unsets_it() {
    let Some(lab) = Lab::up("noout_left_set", 131, 3, &["--profile", "all:ceph=yes"]) else {
        return;
    };
    let env = Env::new();
    halt_with_noout_left_set(&lab, &env);
    // Back, and resumed: PGs clean, noout unset, the run finishes. The 15 s reboot timeout that
    // made the halt quick is too short for the resumed nodes' reboots on a loaded machine (pve2
    // once came back after it, its quorum later still): the operator raises it, as one would
    // after such a halt, and resumes with the file as it is now (--force).
    let pb = env.state.path().join("pb.toml");
    let text = std::fs::read_to_string(&pb).unwrap();
    assert!(text.contains("timeout = \"15s\""), "{text}");
    std::fs::write(&pb, text.replace("timeout = \"15s\"", "timeout = \"120s\"")).unwrap();
    lab.clear("pve1", Some("no-return"));
    assert!(lab.wait("pve1", "up", 30));
    let (code, v) = env.json(
        &lab,
        &["run", "--resume", &env.run_id(), "--yes", "--force"],
    );
    assert_eq!(code, Some(0), "{v}");
    assert!(lab
        .events()
        .iter()
        .any(|e| e.contains("unset-group noout pve1")));
    // Real Ceph: pve1's monitor may still be rejoining the quorum (MON_DOWN) when the run ends;
    // the run waits for OSDs up and PGs active+clean, not for the monitor.
    let mut health = String::new();
    for _ in 0..60 {
        health = lab.sh("pve2", "ceph health");
        if health == "HEALTH_OK\n" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert_eq!(health, "HEALTH_OK\n");
    assert_eq!(lab.boots("pve1"), 2, "rebooted once");
}

/// The same halted run, rolled back instead of resumed once the node is back: rollback waits for
/// the node's OSDs, then unsets the noout the run left, and journals it.
#[test]
fn rollback_unsets_the_noout_a_halted_run_left() {
    let Some(lab) = Lab::up("noout_rollback", 147, 3, &["--profile", "all:ceph=yes"]) else {
        return;
    };
    let env = Env::new();
    halt_with_noout_left_set(&lab, &env);
    lab.clear("pve1", Some("no-return"));
    assert!(lab.wait("pve1", "up", 30));
    let out = env.run(&lab, &["rollback", &env.run_id(), "--yes"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("pve1: Ceph noout (host) unset"), "{stdout}");
    assert!(lab
        .events()
        .iter()
        .any(|e| e.contains("unset-group noout pve1")));
    assert!(env
        .events()
        .iter()
        .any(|e| e["node"] == "pve1" && e["event"] == "noout" && e["data"]["state"] == "unset"));
    assert!(
        !lab.sh("pve2", "ceph osd dump -f json").contains("noout"),
        "no noout flag left"
    );
}

#[test]
fn a_drain_that_the_cluster_cannot_hold_is_refused_before_anything_moves() {
    // pve2 and pve3 have 4 GiB each (about 2 GiB free); pve1's 6 GiB guest fits nowhere.
    let Some(lab) = Lab::up(
        "drain_n_minus_1",
        132,
        3,
        &["--profile", "pve2:mem=4", "--profile", "pve3:mem=4"],
    ) else {
        return;
    };
    let env = Env::new();
    let pb = env.playbook("drain-and-reboot.toml");
    lab.fault("pve1", &["guest", "101", "name=big", "mem=6144"]);
    let (code, v) = env.apply(&lab, &pb, &[]);
    assert_eq!(code, Some(2), "{v}");
    let err = v["nodes"][0]["error"].as_str().unwrap();
    assert!(
        err.contains("drain preflight (N-1)")
            && err.contains("cannot hold pve1's running guests (6.0 GiB)"),
        "{err}"
    );
    for n in ["pve1", "pve2", "pve3"] {
        assert_eq!(
            lab.ssh(n, "test -e /etc/pvefleet-test").0,
            1,
            "{n} untouched"
        );
        assert_eq!(lab.boots(n), 1, "{n}");
    }
    assert!(lab.events().iter().all(|e| !e.contains("migrated")));
}

/// An inventory that names a node otherwise than Proxmox does: HA maintenance, the drain's
/// moves and Ceph's CRUSH host would all name the wrong node while the node goes down. A
/// draining reboot refuses the node in the plan, before anything changes on it; commands that
/// hand Proxmox no node name (here `exec`) still run.
#[test]
fn a_node_the_inventory_names_otherwise_than_proxmox_is_not_drained() {
    let Some(lab) = Lab::up("name_mismatch", 145, 3, &[]) else {
        return;
    };
    let state = tempfile::tempdir().unwrap();
    // Beside the lab's inventory: its relative key and known_hosts paths stay right.
    let inv = lab.dir.path().join("aliased.toml");
    let text_inv = std::fs::read_to_string(lab.inventory()).unwrap();
    assert!(text_inv.contains("[nodes.pve1]"), "{text_inv}");
    std::fs::write(&inv, text_inv.replace("[nodes.pve1]", "[nodes.web1]")).unwrap();
    let pb = write_playbook(
        state.path(),
        "pb.toml",
        &fixture_playbook("drain-and-reboot.toml"),
    );
    lab.fault("pve1", &["guest", "101", "name=web", "mem=2048"]);
    let run = |args: &[&str]| {
        crate::common::bin::command()
            .arg("-i")
            .arg(&inv)
            .args(args)
            .env("PVEFLEET_STATE_DIR", state.path())
            .output()
            .unwrap()
    };
    let out = run(&["-l", "web1", "--json", "run", "--yes", pb.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("the inventory calls this node `web1`, but Proxmox VE knows it as `pve1` (uname -n): the drain's guest moves would name the wrong node; name it [nodes.pve1] in the inventory"),
        "{err}"
    );
    assert_eq!(
        lab.ssh("pve1", "test -e /etc/pvefleet-test").0,
        1,
        "nothing changed"
    );
    assert_eq!(lab.boots("pve1"), 1);
    assert_eq!(where_is(&lab, 101), ("pve1".into(), "running".into()));
    // Without a reboot the name does not matter.
    let exec = run(&["-l", "web1", "exec", "--", "uname -n"]);
    assert_eq!(exec.status.code(), Some(0), "{}", text(&exec.stderr));
    // The audit says so beforehand.
    let audit = run(&["--json", "audit", "--probes", "cluster"]);
    let v = crate::common::bin::json_of(&audit);
    let names = v["cluster"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == "cluster.names")
        .unwrap_or_else(|| panic!("no cluster.names in {}", v["cluster"]));
    assert_eq!(names["grade"], "WARN", "{names}");
    assert_eq!(
        names["detail"],
        "inventory names that are not the Proxmox node name: web1 is pve1"
    );
}

/// Whether guest ID's config on NODE holds a migration's lock.
fn locked_on(lab: &Lab, node: &str, id: u32) -> bool {
    std::fs::read_to_string(
        lab.dir
            .path()
            .join(format!("pve/nodes/{node}/qemu-server/{id}.conf")),
    )
    .map(|c| c.lines().any(|l| l == "lock: migrate"))
    .unwrap_or(false)
}

/// Whether the lab's HA stack has pve1 in node maintenance.
fn pve1_in_maintenance(lab: &Lab) -> bool {
    lab.sh("pve2", "ha-manager status")
        .contains("lrm pve1 (maintenance")
}

/// Issue 14 §9: the controller is killed while it moves a guest back after the reboot; that
/// migration (detached) completes without it. The return was journaled intent-first, so the
/// resume finds it done (the guest is home) instead of running `qm migrate` again from the
/// node the guest has left. On the old code nothing was journaled before the return finished:
/// the resume migrated again from the node it had left, and the run failed ("the node is not
/// rebooted") though it was.
#[test]
fn a_return_migration_outlives_a_killed_controller_and_the_resume_settles_it() {
    let Some(lab) = Lab::up("resume_return_killed", 240, 3, &[]) else {
        return;
    };
    let env = Env::new();
    let pb = env.playbook("drain-and-reboot.toml");
    lab.fault("pve1", &["guest", "100", "name=ha-vm", "ha"]);
    lab.fault("pve1", &["guest", "101", "name=web", "mem=2048"]);
    // The return runs from where 101 went: slow there.
    for n in ["pve2", "pve3"] {
        lab.fault(n, &["migrate-slow", "12"]);
    }
    let child = env.spawn(
        &lab,
        &["run", "--yes", "--limit", "pve1", pb.to_str().unwrap()],
    );
    if !env.wait_event(120, |e| {
        e["node"] == "pve1" && e["event"] == "reboot" && e["data"]["state"] == "up-new-boot"
    }) {
        signal(&child, "KILL");
        let out = child.wait_with_output().unwrap();
        panic!("{}", text(&out.stderr));
    }
    assert!(
        eventually(60, || locked_on(&lab, "pve2", 101)
            || locked_on(&lab, "pve3", 101)),
        "the return migration started"
    );
    signal(&child, "KILL");
    let _ = child.wait_with_output();
    assert_eq!(lab.boots("pve1"), 2, "killed after the reboot");
    assert!(
        eventually(30, || where_is(&lab, 101).0 == "pve1"),
        "the return goes on without the controller and completes"
    );
    let out = env.run(&lab, &["run", "--resume", &env.run_id(), "--yes"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("pve1: qm 101 (web) is back"), "{stderr}");
    assert_eq!(lab.boots("pve1"), 2, "rebooted exactly once");
    assert_eq!(where_is(&lab, 101), ("pve1".into(), "running".into()));
    assert_eq!(where_is(&lab, 100).1, "running");
    assert!(!pve1_in_maintenance(&lab), "HA maintenance is off");
    let moves = migrations(&lab, Some(101));
    assert_eq!(moves.len(), 2, "away once, back once: {moves:?}");
    assert_eq!(journal_events(&env, "pve1", "guest_returning").len(), 1);
}

/// Issue 14 §9: upgrade.toml reboots when the node has a new kernel to boot; once it runs it,
/// that `when` is false. The controller is killed after the node came back, before the drain
/// was put back: the resume continues the reboot from its recorded state whatever the guard
/// says now (the guest is returned, HA maintenance switched off). On the old code the guard
/// came first: the step was skipped, the run ended ok with 101 still away and pve1 in
/// maintenance.
#[test]
fn a_reboot_in_progress_whose_when_became_false_is_continued_on_resume() {
    let Some(lab) = Lab::up("resume_when_false", 241, 3, &[]) else {
        return;
    };
    let env = Env::new();
    lab.fault("pve1", &["guest", "100", "name=ha-vm", "ha"]);
    lab.fault("pve1", &["guest", "101", "name=web", "mem=2048"]);
    lab.fault("pve1", &["pending-kernel", "6.8.12-9-pve"]);
    let args = [
        "run",
        "--yes",
        "--limit",
        "pve1",
        "-e",
        "min_free_mib=64",
        &shipped("upgrade.toml"),
    ];
    let child = env.spawn(&lab, &args);
    assert!(env.wait_event(180, |e| e["node"] == "pve1"
        && e["event"] == "reboot"
        && e["data"]["state"] == "up-new-boot"));
    signal(&child, "KILL");
    let _ = child.wait_with_output();
    assert_eq!(lab.boots("pve1"), 2);
    assert_eq!(lab.sh("pve1", "uname -r"), "6.8.12-9-pve\n");
    let (code, v) = env.json(&lab, &["run", "--resume", &env.run_id(), "--yes"]);
    assert_eq!(code, Some(0), "{v}");
    let reboot = v["nodes"][0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "reboot into the new kernel")
        .unwrap()
        .clone();
    assert_eq!(reboot["status"], "changed", "{reboot}");
    // The kill lands once `up-new-boot` is journaled, but the controller may have journaled a
    // state or two more by the time SIGKILL arrives (services-active comes within a second):
    // any state after the node came back and before the guests were returned is continued.
    let detail = reboot["detail"].as_str().unwrap();
    assert!(
        [
            "up-new-boot",
            "services-active",
            "quorate",
            "ceph-clean",
            "maintenance-off"
        ]
        .iter()
        .any(|state| detail.contains(&format!("(continued from {state})"))),
        "{reboot}"
    );
    assert_eq!(lab.boots("pve1"), 2, "not rebooted a second time");
    assert_eq!(where_is(&lab, 101), ("pve1".into(), "running".into()));
    assert_eq!(where_is(&lab, 100).1, "running");
    assert!(!pve1_in_maintenance(&lab), "HA maintenance is off");
}

/// Issue 14 §9: SIGTERM while the drain moves guests, before the reboot is issued: the
/// controller undoes the drain (guests back, maintenance off) and stops. The undo is journaled
/// as `drain-undone`, not as the states of a finished reboot, so the resume drains and reboots
/// the node. On the old code the undo journaled `maintenance-off` / `guests-returned`, which sort
/// after `reboot-issued`: the resume went straight to `done`, never rebooting the node, and the
/// run ended ok saying "rebooted; new boot id".
#[test]
fn a_drain_undone_before_the_reboot_is_rebooted_on_resume() {
    let Some(lab) = Lab::up("resume_drain_undone", 242, 3, &[]) else {
        return;
    };
    let env = Env::new();
    let pb = env.playbook("drain-and-reboot.toml");
    lab.fault("pve1", &["guest", "100", "name=ha-vm", "ha"]);
    lab.fault("pve1", &["guest", "101", "name=web", "mem=2048"]);
    lab.fault("pve1", &["guest", "103", "name=db", "mem=1024"]);
    lab.fault("pve1", &["migrate-slow", "6"]);
    let child = env.spawn(
        &lab,
        &["run", "--yes", "--limit", "pve1", pb.to_str().unwrap()],
    );
    assert!(
        env.wait_event(60, |e| e["node"] == "pve1"
            && e["event"] == "guest_moved"
            && e["data"]["phase"] == "intent"),
        "no migration journaled within 60 s: {:?}",
        env.events()
    );
    assert!(
        eventually(20, || locked_on(&lab, "pve1", 101)),
        "the first migration started"
    );
    signal(&child, "TERM");
    let out = child.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(lab.boots("pve1"), 1, "stopped before the reboot");
    assert_eq!(
        where_is(&lab, 101),
        ("pve1".into(), "running".into()),
        "{stderr}\n{:?}",
        lab.events()
    );
    assert!(!pve1_in_maintenance(&lab), "the drain was undone: {stderr}");
    let states: Vec<String> = journal_events(&env, "pve1", "reboot")
        .iter()
        .map(|e| e["data"]["state"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        states.last().map(String::as_str),
        Some("drain-undone"),
        "{states:?}"
    );
    let (code, v) = env.json(&lab, &["run", "--resume", &env.run_id(), "--yes"]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(lab.boots("pve1"), 2, "the resume rebooted the node");
    assert_eq!(v["nodes"][0]["rebooted"], true, "{v}");
    for id in [101, 103] {
        assert_eq!(
            where_is(&lab, id),
            ("pve1".into(), "running".into()),
            "{id}: {v}\n{:?}",
            lab.events()
        );
    }
    assert_eq!(where_is(&lab, 100).1, "running", "{:?}", lab.events());
    assert!(!pve1_in_maintenance(&lab), "HA maintenance is off");
    assert!(
        !lab.events().iter().any(|e| e.contains("node-reboot")),
        "no guest was on pve1 when it rebooted: {:?}",
        lab.events()
    );
}

/// Issue 16: the plan's guest placements are the run's. For each node the plan reboots, where
/// its drain would move each guest (the plan's `moves`) is where the run moved it (the journal's
/// `guest_moved` events, phase done), node by node. HA guests go where HA sends them (the plan
/// only reserves room for them) and are not compared.
#[test]
fn the_plans_guest_placements_are_the_runs() {
    let Some(lab) = Lab::up("placements", 89, 3, &["--profile", "pve3:mem=16"]) else {
        return;
    };
    let env = Env::new();
    let pb = env.playbook("drain-and-reboot.toml");
    // Guests of several sizes (a container among them, an HA guest) on two nodes, and one node
    // with less room, so the placement has choices to make.
    lab.fault("pve1", &["guest", "101", "name=big", "mem=8192"]);
    lab.fault("pve1", &["guest", "102", "name=small", "mem=1024"]);
    lab.fault("pve1", &["guest", "103", "kind=lxc", "name=ct", "mem=512"]);
    lab.fault("pve2", &["guest", "201", "name=mid", "mem=4096"]);
    lab.fault("pve2", &["guest", "202", "name=hadb", "mem=2048", "ha"]);
    let (code, plan) = env.json(&lab, &["plan", pb.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{plan}");
    type Moves = std::collections::BTreeMap<String, Vec<(u64, String)>>;
    let mut planned = Moves::new();
    for n in plan["nodes"].as_array().unwrap() {
        let node = n["node"].as_str().unwrap().to_string();
        let reboot = n["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["step"] == "reboot")
            .unwrap_or_else(|| panic!("{n}"));
        let mut mine = Vec::new();
        for m in reboot["moves"].as_array().cloned().unwrap_or_default() {
            if m["by_ha"] != true {
                mine.push((
                    m["vmid"].as_u64().unwrap(),
                    m["to"].as_str().unwrap().to_string(),
                ));
            }
        }
        mine.sort();
        planned.insert(node, mine);
    }
    assert!(
        planned.values().map(Vec::len).sum::<usize>() >= 2,
        "the scenario moves guests: {plan}"
    );
    let (code, v) = env.apply(&lab, &pb, &[]);
    assert_eq!(code, Some(0), "{v}");
    let mut moved = Moves::new();
    for n in ["pve1", "pve2", "pve3"] {
        let mut mine: Vec<(u64, String)> = journal_events(&env, n, "guest_moved")
            .iter()
            .filter(|e| e["data"]["phase"] == "done")
            .map(|e| {
                (
                    e["data"]["guest"]["vmid"].as_u64().unwrap(),
                    e["data"]["to"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        mine.sort();
        moved.insert(n.to_string(), mine);
    }
    assert_eq!(
        planned,
        moved,
        "plan {plan}\nrun's journal: {:?}",
        env.events()
    );
    // With that run in the journal, the next plan predicts each node's reboot from its boots
    // and the migration time per GiB it measured.
    let (code, again) = env.json(&lab, &["plan", "-e", "marker=again", pb.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{again}");
    let pve1 = &again["nodes"][0];
    let reboot = pve1["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "reboot")
        .unwrap();
    assert!(reboot["predicted_ms"].as_u64().is_some(), "{pve1}");
    let checks = reboot["checks"].to_string();
    assert!(
        checks.contains("there and back at") && checks.contains("s/GiB measured"),
        "{checks}"
    );
}
