//! The rolling path under faults, on the lab: a service that fails after boot, a node that never
//! returns with an HA service, HA guests moved before other guests are shut down (and started
//! again), resume with the run's own parameters, one process per run, SIGTERM / SIGHUP / SIGKILL
//! of the controller, a parallel playbook that reboots, and the lab's `systemctl` checked
//! against systemd's documented semantics.

use std::time::Duration;

use crate::common::bin::text;
use crate::common::lab::Lab;
use crate::common::runs::{fixture_playbook, signal, write_playbook, Env};

fn events_of<'a>(
    ev: &'a [serde_json::Value],
    node: &'a str,
    kind: &'a str,
) -> impl Iterator<Item = &'a serde_json::Value> + 'a {
    ev.iter()
        .filter(move |e| e["node"] == node && e["event"] == kind)
}

#[test]
fn the_lab_systemctl_answers_is_active_like_systemd() {
    // systemd's src/systemctl/systemctl-is-active.c (check_unit_generic) and systemctl(1): one
    // state line per unit; exit 0 when at least one unit is active; otherwise 4 when every unit
    // is not-found, else 3. A unit that does not exist is loaded as not-found, ActiveState
    // "inactive".
    let Some(lab) = Lab::up("systemctl_semantics", 100, 1, &[]) else {
        return;
    };
    lab.sh("pve1", "echo failed > /var/lib/pvelab/services/pveproxy");
    let (code, out, _) = lab.ssh("pve1", "systemctl is-active corosync pveproxy");
    assert_eq!((code, out.as_str()), (0, "active\nfailed\n"), "any-of");
    let (code, out, _) = lab.ssh("pve1", "systemctl is-active pveproxy");
    assert_eq!((code, out.as_str()), (3, "failed\n"));
    let (code, out, _) = lab.ssh("pve1", "systemctl is-active no-such-unit");
    assert_eq!((code, out.as_str()), (4, "inactive\n"));
    let (code, out, _) = lab.ssh("pve1", "systemctl is-active pveproxy no-such-unit");
    assert_eq!((code, out.as_str()), (3, "failed\ninactive\n"));
    let (code, _, _) = lab.ssh("pve1", "systemctl is-active --quiet pveproxy corosync");
    assert_eq!(code, 0);
    let (code, out, _) = lab.ssh("pve1", "systemctl is-failed corosync pveproxy");
    assert_eq!((code, out.as_str()), (0, "active\nfailed\n"));
    let (code, out, _) = lab.ssh("pve1", "systemctl is-failed corosync");
    assert_eq!((code, out.as_str()), (1, "active\n"));
    // enable/disable are remembered, and a disabled unit stays down after a reboot.
    lab.sh("pve1", "systemctl disable rrdcached");
    let (code, out, _) = lab.ssh("pve1", "systemctl is-enabled rrdcached");
    assert_eq!((code, out.as_str()), (1, "disabled\n"));
    lab.reboot_and_wait("pve1");
    assert_eq!(
        lab.ssh("pve1", "systemctl is-active rrdcached").1,
        "inactive\n"
    );
    lab.sh("pve1", "systemctl enable --now rrdcached");
    assert_eq!(lab.sh("pve1", "systemctl is-active rrdcached"), "active\n");
}

#[test]
fn a_service_that_fails_after_boot_halts_the_run_there() {
    let Some(lab) = Lab::up("service_fails", 101, 3, &[]) else {
        return;
    };
    let env = Env::new();
    let pb = env.playbook("touch-and-reboot.toml");
    lab.fault("pve2", &["service-fails", "pveproxy"]);
    let before = lab.boots("pve3");
    let (code, v) = env.apply(&lab, &pb, &[]);
    assert_eq!(code, Some(2), "{v}");
    assert_eq!(v["status"], "halted", "{v}");
    assert_eq!(v["nodes"][0]["status"], "ok", "{v}");
    let err = v["nodes"][1]["error"].as_str().unwrap();
    assert!(
        err.contains("not healthy") && err.contains("pveproxy failed"),
        "{err}"
    );
    // The other units were active: only a per-unit check can see this.
    assert!(!err.contains("corosync"), "{err}");
    // It came back with a new boot id before the check failed: it did reboot (it said false).
    assert_eq!(v["nodes"][1]["rebooted"], true, "{v}");
    assert_eq!(v["nodes"][2]["halted"], true, "{v}");
    assert_eq!(lab.boots("pve3"), before, "pve3 untouched");
    assert_eq!(lab.ssh("pve3", "test -e /etc/pvefleet-test").0, 1);
    let stopped = &env.meta()["stopped_at"];
    assert_eq!(stopped[0]["node"], "pve2", "{stopped}");
    assert_eq!(stopped[0]["step"], "reboot", "{stopped}");
    // Where the time went: per node, per step, per reboot state.
    let show = text(&env.run(&lab, &["runs", "show", &env.run_id()]).stdout);
    for want in [
        "(whole node)",
        "reboot: reboot-issued",
        "reboot: up-new-boot",
        "reboot: services-active",
    ] {
        assert!(show.contains(want), "{want}: {show}");
    }
}

#[test]
fn a_node_that_never_returns_keeps_ha_maintenance_on_until_resume_clears_it() {
    let Some(lab) = Lab::up("maintenance_left_on", 102, 3, &[]) else {
        return;
    };
    let env = Env::new();
    let pb = env.playbook("touch-and-reboot.toml");
    lab.fault("pve1", &["ha"]);
    lab.fault("pve1", &["no-return"]);
    let (code, v) = env.apply(&lab, &pb, &[]);
    assert_eq!(code, Some(2), "{v}");
    assert_eq!(v["status"], "halted");
    assert!(
        v["nodes"][0]["error"]
            .as_str()
            .unwrap()
            .contains("did not come back"),
        "{v}"
    );
    // Left on on purpose, said in the output and the journal.
    let left = v["left_on"].to_string();
    assert!(
        left.contains("HA maintenance left ON for pve1")
            && left.contains("pvefleet maintenance off pve1"),
        "{left}"
    );
    assert_eq!(
        lab.ssh("pve2", "test -e /var/lib/pvelab-cluster/maintenance-pve1")
            .0,
        0,
        "maintenance is still on for pve1"
    );
    let ev = env.events();
    assert!(
        events_of(&ev, "pve1", "maintenance").any(|e| e["data"]["state"] == "left-on"),
        "{ev:?}"
    );
    assert!(env.meta()["left_on"].to_string().contains("pve1"));
    // The node comes back; resume finishes the reboot and switches maintenance off.
    lab.clear("pve1", Some("no-return"));
    assert!(lab.wait("pve1", "up", 30));
    let id = env.run_id();
    let (code, v) = env.json(&lab, &["run", "--resume", &id, "--yes"]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(
        lab.ssh("pve2", "test -e /var/lib/pvelab-cluster/maintenance-pve1")
            .0,
        1,
        "maintenance off after resume"
    );
    assert_eq!(lab.boots("pve1"), 2, "pve1 rebooted once, not again");
    for n in ["pve2", "pve3"] {
        assert_eq!(lab.sh(n, "cat /etc/pvefleet-test"), "touched\n");
    }
}

#[test]
fn maintenance_off_by_hand_clears_what_a_run_left_on() {
    let Some(lab) = Lab::up("maintenance_cmd", 103, 3, &[]) else {
        return;
    };
    let env = Env::new();
    lab.sh(
        "pve1",
        "ha-manager crm-command node-maintenance enable pve2",
    );
    let out = env.run(&lab, &["maintenance", "off", "pve2"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("pve2: HA maintenance off"));
    // --json: one document (issue 16).
    let (code, v) = env.json(&lab, &["maintenance", "off", "pve2"]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(
        v["nodes"][0],
        serde_json::json!({"node": "pve2", "status": "ok", "maintenance": "off", "error": null})
    );
    assert_eq!(
        lab.ssh(
            "pve1",
            "ha-manager status | grep -c 'lrm pve2 (maintenance'"
        )
        .1,
        "0\n"
    );
    let out = env.run(&lab, &["maintenance", "off", "pve9"]);
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn ha_guests_move_first_and_guests_shut_down_start_again() {
    let Some(lab) = Lab::up("guest_order", 104, 3, &[]) else {
        return;
    };
    let env = Env::new();
    let pb = env.playbook("touch-and-reboot.toml");
    lab.fault("pve1", &["guests"]);
    lab.fault("pve1", &["ha"]); // vm:100 is HA-managed; 101 is not
    let (code, v) = env.apply(&lab, &pb, &["-l", "pve1", "--guests", "shutdown"]);
    assert_eq!(code, Some(0), "{v}");
    let ev = env.events();
    let names: Vec<String> = ev
        .iter()
        .filter(|e| e["node"] == "pve1")
        .filter_map(|e| {
            let k = e["event"].as_str()?;
            Some(match k {
                "maintenance" => format!("maintenance-{}", e["data"]["state"].as_str()?),
                "guest_stopped" if e["data"]["phase"] == "done" => {
                    format!("stopped-{}", e["data"]["guest"]["vmid"])
                }
                "guest_started" => format!("started-{}", e["data"]["guest"]["vmid"]),
                _ => return None,
            })
        })
        .collect();
    assert_eq!(
        names,
        vec![
            "maintenance-on",
            "stopped-101",
            "maintenance-off",
            "started-101"
        ],
        "HA first (its guest migrates, not stopped), the plain guest stopped and started again"
    );
    // Both guests run on pve1 again: the HA one moved back by HA, the other started by pvefleet.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let running = lab.sh(
            "pve1",
            "qm list | awk '$3 == \"running\" {print $1}' | sort | tr '\\n' ' '",
        );
        if running == "100 101 " {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "running on pve1: {running}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn resume_keeps_the_runs_parameters_and_refuses_a_changed_playbook() {
    let Some(lab) = Lab::up("resume_params", 105, 3, &[]) else {
        return;
    };
    let env = Env::new();
    let pb = write_playbook(
        env.state.path(),
        "pb.toml",
        r#"
name = "params"
[vars]
marker = "default"
[strategy]
mode = "rolling"
[[step]]
name = "mark"
kind = "line"
path = "/etc/pvefleet-test"
line = "{{ marker }}"
[[step]]
name = "gate"
kind = "run"
command = "test -e /etc/pvefleet-go"
changed_when = "false"
"#,
    );
    lab.sh("pve1", "touch /etc/pvefleet-go");
    let (code, v) = env.apply(
        &lab,
        &pb,
        &[
            "-l",
            "pve1,pve2",
            "-e",
            "marker=custom",
            "--guests",
            "ignore",
        ],
    );
    assert_eq!(code, Some(2), "{v}");
    assert_eq!(v["status"], "failed", "pve2, the last node, failed");
    let id = env.run_id();
    let meta = env.meta();
    assert_eq!(meta["extra_vars"], serde_json::json!(["marker=custom"]));
    assert_eq!(meta["guests"], "ignore");
    assert_eq!(meta["limit"], "pve1,pve2");
    assert!(meta["inventory_path"]
        .as_str()
        .unwrap()
        .ends_with("inventory.toml"));
    // `runs show` gives them as they would be typed, not as Rust values (`Some(..)`, `Ignore`).
    let show = text(&env.run(&lab, &["runs", "show", &id]).stdout);
    assert!(
        show.contains("parameters: -e marker=custom --limit pve1,pve2 --guests ignore --forks 64"),
        "{show}"
    );
    // Changing a parameter on resume is refused.
    let out = env.run(
        &lab,
        &["run", "--resume", &id, "--yes", "-e", "marker=other"],
    );
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("keeps the parameters"));
    // So is another inventory file, even one with the same nodes (it was taken silently).
    let other = env.state.path().join("other-inventory.toml");
    std::fs::copy(lab.inventory(), &other).unwrap();
    let out = crate::common::bin::command()
        .arg("-i")
        .arg(&other)
        .args(["run", "--resume", &id, "--yes"])
        .env("PVEFLEET_STATE_DIR", env.state.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("-i ") && text(&out.stderr).contains("other-inventory.toml"),
        "{}",
        text(&out.stderr)
    );
    // A changed playbook is refused, then accepted with --force.
    let original = std::fs::read_to_string(&pb).unwrap();
    std::fs::write(
        &pb,
        original.replace("changed_when = \"false\"", "changed_when = \"rc == 0\""),
    )
    .unwrap();
    lab.sh("pve2", "touch /etc/pvefleet-go");
    let out = env.run(&lab, &["run", "--resume", &id, "--yes"]);
    assert_eq!(out.status.code(), Some(65), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("changed since run"),
        "{}",
        text(&out.stderr)
    );
    std::fs::write(&pb, &original).unwrap();
    // Resumed without -e or -l: the run's own values, on the run's own nodes; no -i either.
    let out = crate::common::bin::command()
        .args(["--json", "run", "--resume", &id, "--yes"])
        .env("PVEFLEET_STATE_DIR", env.state.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for n in ["pve1", "pve2"] {
        assert_eq!(lab.sh(n, "cat /etc/pvefleet-test"), "custom\n", "{n}");
    }
    assert_eq!(
        lab.ssh("pve3", "test -e /etc/pvefleet-test").0,
        1,
        "pve3 was not in the run"
    );
}

#[test]
fn two_resumes_of_one_run_cannot_both_drive_it() {
    let Some(lab) = Lab::up("resume_lock", 106, 2, &[]) else {
        return;
    };
    let env = Env::new();
    let pb = write_playbook(
        env.state.path(),
        "pb.toml",
        "name = \"slow\"\n[strategy]\nmode = \"rolling\"\n[[step]]\nname = \"gate\"\nkind = \"run\"\ncommand = \"test -e /etc/pvefleet-go && sleep 4\"\n",
    );
    let (code, _) = env.apply(&lab, &pb, &[]);
    assert_eq!(code, Some(2));
    let id = env.run_id();
    for n in ["pve1", "pve2"] {
        lab.sh(n, "touch /etc/pvefleet-go");
    }
    let a = env.spawn(&lab, &["run", "--resume", &id, "--yes"]);
    let b = env.spawn(&lab, &["run", "--resume", &id, "--yes"]);
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let mut codes = [a.status.code(), b.status.code()];
    codes.sort();
    assert_eq!(
        codes,
        [Some(0), Some(64)],
        "{}\n{}",
        text(&a.stderr),
        text(&b.stderr)
    );
    let refused = if a.status.code() == Some(64) { &a } else { &b };
    assert!(
        text(&refused.stderr).contains("is being driven by another pvefleet process (pid"),
        "{}",
        text(&refused.stderr)
    );
}

fn interrupted_by(sig: &str, net: u8) {
    let Some(lab) = Lab::up(&format!("signal_{sig}"), net, 2, &[]) else {
        return;
    };
    let env = Env::new();
    let pb = write_playbook(
        env.state.path(),
        "pb.toml",
        "name = \"slow\"\n[[step]]\nname = \"first\"\nkind = \"line\"\npath = \"/etc/pvefleet-test\"\nline = \"one\"\n[[step]]\nname = \"slow\"\nkind = \"run\"\ncommand = \"sleep 30\"\n",
    );
    let child = env.spawn(&lab, &["--json", "run", "--yes", pb.to_str().unwrap()]);
    // Both nodes in the slow step (under load the second one can still be connecting when
    // the first one gets there).
    for n in ["pve1", "pve2"] {
        assert!(
            env.wait_event(30, |e| e["node"] == n
                && e["event"] == "step_started"
                && e["data"]["step"] == "slow"),
            "{n} reached the slow step"
        );
    }
    let t = std::time::Instant::now();
    signal(&child, sig);
    let out = child.wait_with_output().unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "stopped promptly, not after the 30 s step"
    );
    assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
    let v = crate::common::bin::json_of(&out);
    assert_eq!(v["status"], "interrupted");
    let meta = env.meta();
    assert_eq!(meta["status"], "interrupted");
    let at = meta["stopped_at"].as_array().unwrap();
    assert_eq!(at.len(), 2, "{meta}");
    assert!(at.iter().all(|p| p["step"] == "slow"), "{meta}");
    assert_eq!(lab.sh("pve1", "cat /etc/pvefleet-test"), "one\n");
    // The run can be resumed.
    let (code, v) = env.json(
        &lab,
        &["run", "--resume", &env.run_id(), "--yes", "--timeout", "5s"],
    );
    assert_ne!(code, Some(130), "{v}");
}

#[test]
fn sigterm_stops_like_ctrl_c_and_the_journal_says_where() {
    interrupted_by("TERM", 107);
}

#[test]
fn sighup_stops_like_ctrl_c_and_the_journal_says_where() {
    interrupted_by("HUP", 108);
}

#[test]
fn a_second_signal_quits_at_once_and_still_leaves_the_journal_interrupted() {
    let Some(lab) = Lab::up("signal_twice", 109, 1, &[]) else {
        return;
    };
    let env = Env::new();
    // A step that ignores the first stop request for a while: a wait_for polling a command
    // that sleeps (the current command finishes before the step looks at the token again).
    let pb = write_playbook(
        env.state.path(),
        "pb.toml",
        "name = \"slow\"\n[[step]]\nname = \"mark\"\nkind = \"line\"\npath = \"/etc/pvefleet-test\"\nline = \"x\"\n[[step]]\nname = \"rollback-safe write\"\nkind = \"line\"\npath = \"/etc/pvefleet-test2\"\nline = \"{{ node.name }}\"\n[[step]]\nname = \"slow\"\nkind = \"run\"\ncommand = \"sleep 30\"\n",
    );
    let child = env.spawn(&lab, &["run", "--yes", pb.to_str().unwrap()]);
    assert!(env.wait_event(20, |e| e["event"] == "step_started"
        && e["data"]["step"] == "slow"));
    signal(&child, "INT");
    signal(&child, "TERM");
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
    let meta = env.meta();
    assert_eq!(meta["status"], "interrupted", "{meta}");
}

#[test]
fn sigkill_mid_rolling_run_then_resume_reboots_each_node_exactly_once() {
    let Some(lab) = Lab::up("sigkill", 110, 3, &[]) else {
        return;
    };
    let env = Env::new();
    let pb = env.playbook("touch-and-reboot.toml");
    // Killed on pve1 after its file changed, before its reboot.
    let child = env.spawn(
        &lab,
        &["run", "--yes", "-e", "pause=3", pb.to_str().unwrap()],
    );
    assert!(env.wait_event(30, |e| e["node"] == "pve1"
        && e["event"] == "step_started"
        && e["data"]["step"] == "pause"));
    signal(&child, "KILL");
    let _ = child.wait_with_output();
    assert_eq!(lab.sh("pve1", "cat /etc/pvefleet-test"), "touched\n");
    assert_eq!(lab.boots("pve1"), 1, "not rebooted yet");
    let id = env.run_id();
    // `runs show` tells where it stopped.
    let show = text(&env.run(&lab, &["runs", "show", &id]).stdout);
    assert!(
        show.contains("killed (no pvefleet process drives it)"),
        "{show}"
    );
    assert!(show.contains("stopped in step `pause`"), "{show}");
    // Resumed, and killed again right after pve2's reboot was issued; pve2 stays down (its
    // boot is held back) until the next resume runs.
    lab.fault("pve2", &["no-return"]);
    // The lab's `reboot` notes each request (sim/bin/reboot): the kill waits for it, since
    // `reboot-issued` is journaled before the command is sent (a kill in between is a resume's
    // re-issue, another test's case).
    let asked = lab.dir.path().join("nodes/pve2/sim/reboot_times");
    let requests = || {
        std::fs::read_to_string(&asked)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    let before = requests();
    let child = env.spawn(&lab, &["run", "--resume", &id, "--yes"]);
    assert!(env.wait_event(90, |e| e["node"] == "pve2"
        && e["event"] == "reboot"
        && e["data"]["state"] == "reboot-issued"));
    let t = std::time::Instant::now();
    while requests() == before && t.elapsed() < std::time::Duration::from_secs(20) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(requests() > before, "pve2's reboot was asked for");
    signal(&child, "KILL");
    let _ = child.wait_with_output();
    assert!(lab.wait("pve2", "down", 30), "pve2 went down");
    // The preview of the resume comes from the journal: pve1 done, pve2's steps done before
    // and its reboot continued (not planned afresh), pve3 still to do; nothing changes.
    let (code, preview) = env.json(&lab, &["run", "--resume", &id, "--check"]);
    assert_eq!(code, Some(0), "{preview}");
    assert_eq!(preview["done"], serde_json::json!(["pve1"]), "{preview}");
    let planned = |v: &serde_json::Value, node: &str| -> Vec<(String, String, bool)> {
        let n = v["nodes"]
            .as_array()
            .and_then(|a| a.iter().find(|n| n["node"] == node))
            .unwrap_or_else(|| panic!("{node} not in {v}"));
        n["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["step"].as_str().unwrap().to_string(),
                    s["status"].as_str().unwrap().to_string(),
                    s["resumed"].as_bool().unwrap_or(false),
                )
            })
            .collect()
    };
    let reboot2 = &preview["nodes"][0]["steps"][2];
    assert_eq!(preview["nodes"][0]["node"], "pve2", "{preview}");
    assert!(
        reboot2["detail"]
            .as_str()
            .unwrap()
            .contains("would continue the stopped run's reboot from reboot-issued: the node does not answer yet"),
        "{preview}"
    );
    // pve3's quorum margin counts pve2 back: the run waits for it before pve3's turn.
    let pve3 = preview["nodes"][1].to_string();
    assert!(pve3.contains("pve2 coming back first"), "{pve3}");
    assert_eq!(
        planned(&preview, "pve2")[0],
        ("mark".to_string(), "changed".to_string(), true),
        "{preview}"
    );
    assert_eq!(
        planned(&preview, "pve3")[0],
        ("mark".to_string(), "changed".to_string(), false),
        "{preview}"
    );
    assert_eq!(lab.boots("pve3"), 1, "the preview changed nothing");
    assert_eq!(
        lab.sh(
            "pve3",
            "test -e /etc/pvefleet-test && echo written || echo absent"
        ),
        "absent\n",
        "the preview changed nothing"
    );
    // Resumed again while pve2 is still down: the resume waits for it (it does not call it
    // unreachable), finishes without rebooting pve2 a second time, and does what the preview
    // said, step by step.
    let started = || {
        env.events()
            .iter()
            .filter(|e| e["node"] == "pve2" && e["event"] == "node_started")
            .count()
    };
    let before = started();
    let child = env.spawn(&lab, &["--json", "run", "--resume", &id, "--yes"]);
    assert!(
        crate::common::wait::eventually(60, || started() > before),
        "the resume started pve2"
    );
    lab.clear("pve2", Some("no-return"));
    let out = child.wait_with_output().unwrap();
    let (code, v) = (out.status.code(), crate::common::bin::json_of(&out));
    assert!(
        text(&out.stderr).contains("pve2: does not answer yet"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(code, Some(0), "{v}");
    for n in ["pve2", "pve3"] {
        assert_eq!(
            planned(&preview, n),
            planned(&v, n),
            "{n}: preview {preview}\nrun {v}"
        );
    }
    for n in ["pve1", "pve2", "pve3"] {
        assert_eq!(lab.sh(n, "cat /etc/pvefleet-test"), "touched\n", "{n}");
        assert_eq!(lab.boots(n), 2, "{n} rebooted exactly once");
    }
    assert_eq!(env.meta()["status"], "ok");
}

#[test]
fn a_parallel_playbook_that_reboots_meets_the_quorum_gate() {
    let Some(lab) = Lab::up("parallel_gate", 111, 3, &[]) else {
        return;
    };
    let env = Env::new();
    let pb = write_playbook(
        env.state.path(),
        "pb.toml",
        &fixture_playbook("touch-and-reboot.toml")
            .replace("mode = \"rolling\"\nbatch = 1", "mode = \"parallel\""),
    );
    let (code, v) = env.apply(&lab, &pb, &[]);
    assert_eq!(code, Some(2), "{v}");
    assert!(
        v["nodes"][0]["error"]
            .as_str()
            .unwrap()
            .contains("quorum gate"),
        "{v}"
    );
    for n in ["pve1", "pve2", "pve3"] {
        assert_eq!(lab.boots(n), 1, "{n} not rebooted");
    }
}

/// The batch's quorum gate passed, then another node of the cluster went down while the node
/// was busy with its steps: the reboot itself checks quorum again and refuses, instead of
/// taking the cluster below quorum.
#[test]
fn a_node_lost_after_the_gate_stops_the_reboot_that_would_cost_quorum() {
    let Some(lab) = Lab::up("gate_at_reboot", 144, 3, &[]) else {
        return;
    };
    let env = Env::new();
    let pb = env.playbook("touch-and-reboot.toml");
    let child = env.spawn(
        &lab,
        &[
            "-l",
            "pve1",
            "--json",
            "run",
            "--yes",
            "-e",
            "pause=4",
            pb.to_str().unwrap(),
        ],
    );
    assert!(env.wait_event(30, |e| e["node"] == "pve1"
        && e["event"] == "step_started"
        && e["data"]["step"] == "pause"));
    lab.fault("pve3", &["unreachable"]);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let v = crate::common::bin::json_of(&out);
    let err = v["nodes"][0]["error"].as_str().unwrap();
    assert!(
        err.contains("quorum gate: 2 of 3 votes present, taking 1 down leaves 1 < quorum 2"),
        "{err}"
    );
    assert_eq!(lab.boots("pve1"), 1, "pve1 not rebooted");
    assert_eq!(v["nodes"][0]["rebooted"], false);
}

/// Issue 16: pve2 is lost before its batch (sshd stopped while pve1 ran: its vote stays, so
/// pve1's own reboot goes ahead). The quorum gate asks the cluster through another node, then
/// pve2 is `unreachable`, the run exits 3 (not 2), and the journal records it. Before, the
/// gate asked pve2 only, and the node ended `failed`, exit 2, with nothing journaled for it.
#[test]
fn a_node_lost_at_the_quorum_gate_is_unreachable_and_journaled() {
    let Some(lab) = Lab::up("gate_lost", 149, 3, &[]) else {
        return;
    };
    let env = Env::new();
    let pb = env.playbook("touch-and-reboot.toml");
    let child = env.spawn(
        &lab,
        &[
            "-l",
            "pve[1-2]",
            "--json",
            "run",
            "--yes",
            "-e",
            "pause=3",
            pb.to_str().unwrap(),
        ],
    );
    assert!(env.wait_event(30, |e| e["node"] == "pve1"
        && e["event"] == "step_started"
        && e["data"]["step"] == "pause"));
    lab.fault("pve2", &["sshd-stop"]);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let v = crate::common::bin::json_of(&out);
    assert_eq!(v["nodes"][0]["status"], "ok", "{v}");
    assert_eq!(v["nodes"][1]["status"], "unreachable", "{v}");
    assert!(
        v["nodes"][1]["error"]
            .as_str()
            .unwrap()
            .contains("Connection refused"),
        "{v}"
    );
    assert!(
        env.events()
            .iter()
            .any(|e| e["node"] == "pve2" && e["event"] == "node_failed"),
        "journaled"
    );
    assert_eq!(lab.boots("pve1"), 2);
    lab.clear("pve2", Some("sshd-stop"));
    assert_eq!(lab.boots("pve2"), 1);
}

/// Issue 17: the live display says what a node does and waits for, since when and until when:
/// each migration of its drain (`reboot: migrating qm 101 (web) to pve2 (3 s)`), then during a
/// slow boot `reboot: waiting for a new boot id (3 s of 1 m)`: the time of that wait and the
/// step's deadline.
#[test]
fn the_live_display_says_what_the_reboot_waits_for() {
    let Some(lab) = Lab::up("live_display", 179, 3, &[]) else {
        return;
    };
    let env = Env::new();
    let pb = env.playbook("drain-and-reboot.toml");
    lab.fault("pve1", &["guest", "101", "name=web", "mem=1024"]);
    lab.fault("pve1", &["migrate-slow", "8"]);
    lab.fault("pve1", &["slow-boot", "10"]);
    let t = env.in_tmux(
        &lab,
        "live",
        120,
        30,
        &format!("-l pve1 run --yes {}", pb.display()),
    );
    // A line with its own clock: `... to pve2 (N s)` or `pve3`.
    let clocked = |screen: &str, what: &str, tail: &str| {
        screen.lines().any(|l| {
            l.split_once(what).is_some_and(|(_, rest)| {
                rest.strip_prefix(" (")
                    .and_then(|r| r.split_once(' '))
                    .is_some_and(|(n, r)| n.parse::<u32>().is_ok() && r.starts_with(tail))
            })
        })
    };
    let (seen, screen) = t.until(60, true, 200, |s| {
        s.contains("reboot: migrating qm 101 (web) to pve")
    });
    assert!(seen, "the display never showed the migration:\n{screen}");
    assert!(
        clocked(&screen, "migrating qm 101 (web) to pve2", "s)")
            || clocked(&screen, "migrating qm 101 (web) to pve3", "s)"),
        "{screen}"
    );
    let (seen, screen) = t.until(60, true, 200, |s| s.contains("waiting for a new boot id"));
    assert!(
        seen,
        "the display never said it waits for the boot:\n{screen}"
    );
    assert!(
        clocked(&screen, "reboot: waiting for a new boot id", "s of 1 m)"),
        "{screen}"
    );
    let (code, screen) = t.exit_code(90);
    assert_eq!(code, Some(0), "{screen}");
}
