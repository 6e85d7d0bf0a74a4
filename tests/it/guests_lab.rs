//! The drain's guests on a cluster where others act too (issue 14 §2, §3, §3b): a guest moved
//! on or stopped while its node rebooted comes back as it left; a guest deleted meanwhile is
//! said, not fatal; drain targets are nodes the controller reaches; an HA guest that cannot
//! leave is refused before maintenance; a target that goes down mid-migration fails it.

use crate::common::bin::text;
use crate::common::lab::Lab;
use crate::common::runs::{shipped, write_playbook, Env};
use std::time::Duration;

const DRAIN_REBOOT: &str = r#"
name = "drain-and-reboot"
[[step]]
name = "reboot"
kind = "reboot"
drain = true
timeout = "90s"
"#;

/// While pve1 reboots, an operator moves guest 101 on to the third node and stops it there,
/// and deletes guest 102. The return follows 101 to where it is now, brings it home and starts
/// it again (said loudly); 102 is reported, not fatal. On the old code the return migrated
/// 101 from the node the journal recorded ("Configuration file ... does not exist") and the
/// node failed, saying it "is not rebooted".
#[test]
fn a_guest_moved_on_and_stopped_while_away_comes_back_running_and_a_deleted_one_is_said() {
    let Some(lab) = Lab::up("guests_follow", 220, 3, &[]) else {
        return;
    };
    let env = Env::new();
    let pb = write_playbook(env.state.path(), "pb.toml", DRAIN_REBOOT);
    lab.fault("pve1", &["guest", "101", "name=web", "mem=1024"]);
    lab.fault("pve1", &["guest", "102", "name=tmp", "mem=1024"]);
    // pve1 stays down until the operator's changes are made (cleared below: it boots then), so
    // the return sees all of them however slow the machine; a fixed boot delay raced them.
    lab.fault("pve1", &["no-return"]);
    let child = env.spawn(&lab, &["-l", "pve1", "run", "--yes", pb.to_str().unwrap()]);
    assert!(
        env.wait_event(120, |e| e["node"] == "pve1"
            && e["event"] == "reboot"
            && e["data"]["state"] == "down-seen"),
        "pve1 went down"
    );
    let (at, _) = lab.guest(101);
    assert_ne!(at, "pve1");
    let other = if at == "pve2" { "pve3" } else { "pve2" };
    let (rc, out, err) = lab.ssh(&at, &format!("qm migrate 101 {other} --online"));
    assert_eq!(rc, 0, "{out}{err}");
    let (rc, out, err) = lab.ssh(other, "qm stop 101");
    assert_eq!(rc, 0, "{out}{err}");
    let (at102, _) = lab.guest(102);
    let (rc, _, err) = lab.ssh(
        &at102,
        &format!("rm /etc/pve/nodes/{at102}/qemu-server/102.conf"),
    );
    assert_eq!(rc, 0, "{err}");
    lab.clear("pve1", Some("no-return"));
    let out = child.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{}{stderr}", text(&out.stdout));
    assert_eq!(
        lab.guest(101),
        ("pve1".into(), "running".into()),
        "home and running"
    );
    assert!(
        stderr.contains(&format!("qm 101 (web) is on {other} now, not on {at}")),
        "{stderr}"
    );
    assert!(stderr.contains("qm 101 (web) was running before the drain and is back STOPPED"));
    assert!(
        stderr.contains("qm 102 (tmp), moved to") && stderr.contains("no longer in the cluster"),
        "{stderr}"
    );
    let ev = lab.events();
    assert!(
        ev.iter()
            .any(|e| e.contains(&format!("migrated 101 {other} pve1"))),
        "{ev:#?}"
    );
}

/// pve3 has the most room but its sshd is down: the controller could not bring a guest back
/// from there, so the drain sends pve1's guest to pve2. On the old code the placer took pve3
/// (roomiest) and the return after the reboot failed there.
#[test]
fn a_drain_target_the_controller_cannot_reach_is_not_used() {
    let Some(lab) = Lab::up("guests_reachable", 221, 3, &["--profile", "pve3:mem=64"]) else {
        return;
    };
    let env = Env::new();
    let pb = write_playbook(env.state.path(), "pb.toml", DRAIN_REBOOT);
    lab.fault("pve1", &["guest", "101", "name=web", "mem=1024"]);
    lab.fault("pve3", &["sshd-stop"]);
    let (code, v) = env.apply(&lab, &pb, &["-l", "pve1"]);
    assert_eq!(code, Some(0), "{v}");
    let ev = lab.events();
    assert!(
        ev.iter().any(|e| e.contains("migrated 101 pve1 pve2")),
        "{ev:#?}"
    );
    assert!(!ev.iter().any(|e| e.contains("pve3 qm")), "{ev:#?}");
    assert_eq!(lab.guest(101), ("pve1".into(), "running".into()));
}

/// An HA-managed VM with a PCI device cannot leave: under `--guests refuse` the node is refused
/// before maintenance, naming the device. On the old code maintenance went on and the run
/// failed after the HA drain timeout without naming it.
#[test]
fn an_ha_guest_that_cannot_leave_is_refused_before_maintenance() {
    let Some(lab) = Lab::up("guests_ha_unmovable", 222, 3, &[]) else {
        return;
    };
    let env = Env::new();
    let pb = write_playbook(env.state.path(), "pb.toml", DRAIN_REBOOT);
    lab.fault("pve1", &["guest", "105", "name=gpu", "hostpci", "ha"]);
    let t = std::time::Instant::now();
    let (code, v) = env.apply(&lab, &pb, &["-l", "pve1"]);
    assert_eq!(code, Some(2), "{v}");
    let err = v["nodes"][0]["error"].as_str().unwrap();
    assert!(
        err.contains("qm 105 (gpu) (HA-managed) uses local devices: hostpci0"),
        "{err}"
    );
    assert!(t.elapsed() < Duration::from_secs(120));
    assert!(
        !env.events().iter().any(|e| e["event"] == "maintenance"),
        "maintenance never switched on"
    );
    assert_eq!(
        lab.ssh("pve2", "test -e /var/lib/pvelab-cluster/maintenance-pve1")
            .0,
        1
    );
    assert_eq!(lab.boots("pve1"), 1);
}

/// The lab's `qm migrate`: a target that goes down during the transfer fails the migration as
/// qemu-server does (reason on stdout, `migration problems` on stderr, exit 255), the guest
/// left on the source, running and unlocked; pvefleet's error carries the reason. A live
/// migration of a stopped VM says qemu-server's offline line.
#[test]
fn a_target_that_goes_down_mid_migration_fails_it_with_the_reason() {
    let Some(lab) = Lab::up("guests_target_down", 223, 3, &[]) else {
        return;
    };
    lab.fault("pve1", &["guest", "101", "name=web", "mem=1024"]);
    lab.fault("pve1", &["guest", "103", "name=off", "mem=1024", "stopped"]);
    // Long enough for the target's reboot to begin mid-transfer also on a loaded machine (6 s
    // once was not): the migration fails as soon as the target is gone, so this costs nothing.
    lab.fault("pve1", &["migrate-slow", "30"]);
    let child = {
        let lab = &lab;
        std::thread::scope(|s| {
            let h = s.spawn(|| lab.ssh("pve1", "qm migrate 101 pve2 --online"));
            // Wait for the transfer to run, then take the target down.
            let t = std::time::Instant::now();
            while !lab
                .sh("pve1", "cat /etc/pve/nodes/pve1/qemu-server/101.conf")
                .contains("lock: migrate")
                && t.elapsed() < Duration::from_secs(20)
            {
                std::thread::sleep(Duration::from_millis(100));
            }
            lab.fault("pve2", &["no-return"]);
            lab.run(&["reboot", "pve2"]);
            h.join().unwrap()
        })
    };
    let (rc, out, err) = child;
    assert_eq!(rc, 255, "{out}{err}");
    assert!(
        out.contains("ERROR: online migrate failure - aborting"),
        "{out}"
    );
    assert_eq!(err.trim(), "migration problems");
    assert_eq!(lab.guest(101), ("pve1".into(), "running".into()));
    let conf = lab.sh("pve1", "cat /etc/pve/nodes/pve1/qemu-server/101.conf");
    assert!(!conf.contains("lock:"), "{conf}");
    let (rc, out, err) = lab.ssh("pve1", "qm migrate 103 pve3 --online");
    assert_eq!(rc, 0, "{out}{err}");
    assert!(
        out.starts_with("VM isn't running. Doing offline migration instead.\n"),
        "{out}"
    );
}

/// Issue 14 §8, decide before you change: pve1's igpu-passthrough and pve2's upgrade both end
/// in a reboot their running guests make impossible under `--guests refuse` (101 is not HA
/// and igpu-passthrough does not drain; 105 holds a PCI device the drain cannot move). The
/// plan says so for each node, and the run refuses them before their first change: GRUB,
/// modules and the initramfs untouched on pve1, no dist-upgrade on pve2. On the old code
/// pve1's boot configuration was rewritten and pve2 upgraded before the reboot step refused.
#[test]
fn a_node_that_cannot_finish_its_reboot_is_refused_before_anything_changes() {
    let Some(lab) = Lab::up("guests_decide_first", 224, 3, &[]) else {
        return;
    };
    lab.fault("pve1", &["guest", "101", "name=web", "mem=1024"]);
    lab.fault("pve2", &["guest", "105", "name=gpu", "hostpci"]);
    lab.fault("pve2", &["pending-kernel", "6.8.12-9-pve"]);
    let boot_files =
        "md5sum /etc/default/grub /etc/modules 2>&1; ls -l --time-style=+%s /boot 2>&1";
    let before = lab.sh("pve1", boot_files);
    let pve2_kernels = lab.sh(
        "pve2",
        "proxmox-boot-tool kernel list 2>&1; pveversion -v 2>&1",
    );

    let cases = [
        (
            "pve1",
            shipped("igpu-passthrough.toml"),
            "guests are running: qm 101 (web)",
        ),
        (
            "pve2",
            shipped("upgrade.toml"),
            "guests are running: qm 105 (gpu) uses local devices: hostpci0",
        ),
    ];
    for (node, pb, why) in &cases {
        let env = Env::new();
        let mut args = vec!["-l", node, "plan", pb.as_str()];
        if *node == "pve2" {
            args.extend(["-e", "min_free_mib=64"]);
        }
        let (code, plan) = env.json(&lab, &args);
        assert_eq!(code, Some(2), "a plan with a refused node fails: {plan}");
        let steps = plan["nodes"][0]["steps"].as_array().unwrap();
        let reboot = steps.iter().find(|s| s["commands"][0] == "reboot").unwrap();
        assert_eq!(reboot["status"], "failed", "{reboot}");
        let detail = reboot["detail"].as_str().unwrap();
        assert!(
            detail.starts_with("the run would refuse this node before changing it: ")
                && detail.contains(why),
            "{node}: {detail}"
        );

        let mut args = vec!["-l", node, "run", "--yes", pb.as_str()];
        if *node == "pve2" {
            args.extend(["-e", "min_free_mib=64"]);
        }
        let (code, v) = env.json(&lab, &args);
        assert_eq!(code, Some(2), "{v}");
        let run = &v["nodes"][0];
        let err = run["error"].as_str().unwrap();
        assert!(
            err.starts_with("refused before any change: ") && err.contains(why),
            "{node}: {err}"
        );
        assert_eq!(run["steps"].as_array().unwrap().len(), 0, "{run}");
        assert!(
            !env.events()
                .iter()
                .any(|e| e["event"] == "step_started" || e["event"] == "backup"),
            "no step began on {node}"
        );
        assert_eq!(lab.boots(node), 1);
    }
    assert_eq!(
        lab.sh("pve1", boot_files),
        before,
        "pve1's boot setup untouched"
    );
    assert_eq!(
        lab.sh(
            "pve2",
            "proxmox-boot-tool kernel list 2>&1; pveversion -v 2>&1"
        ),
        pve2_kernels,
        "pve2 not upgraded"
    );
    assert_eq!(lab.guest(101), ("pve1".into(), "running".into()));
    assert_eq!(lab.guest(105), ("pve2".into(), "running".into()));
}
