//! The upgrade playbook against what really boots next and what apt and dpkg really do: a
//! next-boot pin or a held kernel means no reboot; a dist-upgrade outlives a killed controller.

use crate::common::bin::text;
use crate::common::lab::Lab;
use crate::common::runs::{shipped, signal, Env};
use crate::common::wait::eventually;

/// What dpkg left unpacked or half-configured on the node (the lab's dpkg state).
fn half(lab: &Lab, node: &str) -> String {
    lab.sh(node, "cat /var/lib/pvelab/pkgs/half 2>/dev/null; true")
}

/// How many real dist-upgrades installed something on the node (the stand-in's journal line).
fn upgrades(lab: &Lab, node: &str) -> usize {
    lab.sh(
        node,
        "grep -c 'upgraded [0-9]* packages' /var/lib/pvelab/journal; true",
    )
    .trim()
    .parse()
    .unwrap_or(0)
}

const UPGRADE_ARGS: [&str; 6] = ["-l", "pve1", "run", "--yes", "-e", "min_free_mib=64"];

/// Start the upgrade of pve1 with a dist-upgrade that waits 6 s between unpacking and setting
/// up, and SIGKILL the controller while dpkg is halfway (pve-manager unpacked).
fn kill_the_controller_mid_upgrade(lab: &Lab, env: &Env) {
    kill_the_controller_mid_upgrade_of(lab, env, "pve-manager", "8.3.5", 6);
}

/// `slow`: seconds dpkg waits between unpacking and setting up (long enough, for a test that
/// resumes while it still runs, to outlast the resume's start and plan on a loaded machine).
fn kill_the_controller_mid_upgrade_of(lab: &Lab, env: &Env, pkg: &str, version: &str, slow: u32) {
    lab.fault("pve1", &["pending", &format!("{pkg}={version}")]);
    lab.fault("pve1", &["dpkg-slow", &slow.to_string()]);
    let pb = shipped("upgrade.toml");
    let mut args = UPGRADE_ARGS.to_vec();
    args.push(&pb);
    let child = env.spawn(lab, &args);
    if !eventually(60, || {
        half(lab, "pve1").contains(&format!("{pkg} unpacked {version}"))
    }) {
        signal(&child, "KILL");
        let out = child.wait_with_output().unwrap();
        panic!(
            "the dist-upgrade did not unpack {pkg}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }
    signal(&child, "KILL");
    let _ = child.wait_with_output();
}

/// An operator pinned the running kernel for the next boot (`proxmox-boot-tool kernel pin
/// VERSION --next-boot`); the upgrade installs a newer kernel, but the next boot starts the
/// pinned one: no drain, no reboot. Another node holds the kernel meta-package: no new kernel
/// comes, the plan names the hold, no reboot. On the old code the next-boot section was
/// dropped: pve1 was drained and rebooted, came back on the pinned kernel, and the run failed
/// "running the kernel meant to boot".
#[test]
fn a_next_boot_pin_or_a_held_kernel_means_no_reboot() {
    let Some(lab) = Lab::up("upgrade_next_boot_pin", 230, 3, &[]) else {
        return;
    };
    let env = Env::new();
    for n in ["pve1", "pve2"] {
        lab.fault(n, &["pending-kernel", "6.8.12-9-pve"]);
        lab.fault(n, &["pending", "pve-manager=8.3.5"]);
    }
    let pin = lab.sh(
        "pve1",
        "proxmox-boot-tool kernel pin 6.8.12-5-pve --next-boot; proxmox-boot-tool kernel list",
    );
    assert!(pin.contains("Pinned for next boot only."), "{pin}");
    assert!(
        pin.contains("\nKernel pinned on next-boot:\n6.8.12-5-pve\n"),
        "{pin}"
    );
    let hold = lab.sh(
        "pve2",
        "apt-mark hold proxmox-kernel-6.8; apt-mark showhold",
    );
    assert_eq!(
        hold,
        "proxmox-kernel-6.8 set on hold.\nproxmox-kernel-6.8\n"
    );
    let sim = lab.sh("pve2", "apt-get -s dist-upgrade");
    assert!(
        sim.contains("The following packages have been kept back:\n  proxmox-kernel-6.8\n"),
        "{sim}"
    );
    assert!(!sim.contains("Inst proxmox-kernel-6.8.12-9"), "{sim}");

    let (code, plan) = env.json(
        &lab,
        &["plan", "-e", "min_free_mib=64", &shipped("upgrade.toml")],
    );
    assert_eq!(code, Some(0), "{plan}");
    let steps = plan["nodes"][1]["steps"].to_string();
    assert!(steps.contains("held: proxmox-kernel-6.8"), "{steps}");
    assert!(steps.contains("new kernel: no"), "{steps}");

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
    for n in ["pve1", "pve2"] {
        assert_eq!(lab.boots(n), 1, "{n} was not rebooted: {v}");
        assert_eq!(lab.sh(n, "uname -r"), "6.8.12-5-pve\n");
        assert!(lab.sh(n, "pveversion").contains("pve-manager/8.3.5"));
    }
    // pve1 got the new kernel, which boots after the one pinned for the next boot.
    assert!(lab.sh("pve1", "ls /boot").contains("vmlinuz-6.8.12-9-pve"));
    assert!(!lab.sh("pve2", "ls /boot").contains("vmlinuz-6.8.12-9-pve"));
    // The lab's boot uses the next-boot pin once (proxmox-boot-cleanup.service drops it), then
    // the newest kernel.
    lab.reboot_and_wait("pve1");
    assert_eq!(lab.sh("pve1", "uname -r"), "6.8.12-5-pve\n");
    assert!(!lab
        .sh("pve1", "proxmox-boot-tool kernel list")
        .contains("next-boot"));
    lab.reboot_and_wait("pve1");
    assert_eq!(lab.sh("pve1", "uname -r"), "6.8.12-9-pve\n");
}

/// A dist-upgrade in flight when the controller is SIGKILLed goes on without it (detached from
/// the SSH session) and finishes; the resume reads how it ended and goes on, without running it
/// a second time. On the old code the kill cut apt-get (SIGHUP with the session), dpkg stayed
/// half-way (pve-manager unpacked, not configured), and the resume's dist-upgrade stopped with
/// "E: dpkg was interrupted".
#[test]
fn a_dist_upgrade_outlives_a_killed_controller_and_the_resume_goes_on() {
    let Some(lab) = Lab::up("upgrade_detached", 231, 3, &[]) else {
        return;
    };
    let env = Env::new();
    kill_the_controller_mid_upgrade(&lab, &env);
    assert!(
        eventually(30, || half(&lab, "pve1").trim().is_empty()),
        "dpkg finished on the node after the kill: {}",
        half(&lab, "pve1")
    );
    assert!(lab.sh("pve1", "pveversion").contains("pve-manager/8.3.5"));
    let out = env.run(&lab, &["run", "--resume", &env.run_id(), "--yes"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(upgrades(&lab, "pve1"), 1, "dist-upgrade ran once");
    let done = env
        .events()
        .into_iter()
        .filter(|e| e["node"] == "pve1" && e["event"] == "step_done")
        .find(|e| e["data"]["result"]["step"] == "dist-upgrade")
        .expect("dist-upgrade done");
    let detail = done["data"]["result"]["detail"].to_string();
    assert!(detail.contains("not run again"), "{detail}");
    assert_eq!(lab.boots("pve1"), 1);

    // Resumed while dpkg still runs: the resume waits for it, then takes its result.
    let env = Env::new();
    kill_the_controller_mid_upgrade_of(&lab, &env, "qemu-server", "8.3.5", 20);
    let out = env.run(&lab, &["run", "--resume", &env.run_id(), "--yes"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("pve1: waiting for `dist-upgrade` the stopped run started to end"),
        "{stderr}"
    );
    assert_eq!(
        upgrades(&lab, "pve1"),
        2,
        "dist-upgrade ran once more, not twice"
    );
    assert!(half(&lab, "pve1").trim().is_empty());
}

/// The run's own dist-upgrade cut off on the node (its session killed, as by an OOM kill or a
/// crash of the node's processes) leaves dpkg half-way: the resume repairs it with
/// `dpkg --configure -a`, journaled, then goes on. dpkg left half-way by someone else is a
/// refusal naming the packages, before anything changes; so is an upgrade that would remove
/// proxmox-ve.
#[test]
fn dpkg_half_way_is_repaired_when_the_run_did_it_and_refused_otherwise() {
    let Some(lab) = Lab::up("upgrade_dpkg_audit", 232, 3, &[]) else {
        return;
    };
    let env = Env::new();
    kill_the_controller_mid_upgrade(&lab, &env);
    // The detached dist-upgrade dies too, with its whole session.
    lab.sh(
        "pve1",
        "for p in /run/pvefleet/*/pid; do kill -KILL -- -$(cat $p); done; true",
    );
    // Killed: dpkg's half-way state shows once the session is gone.
    crate::common::wait::eventually(30, || !lab.sh("pve1", "dpkg --audit").is_empty());
    let audit = lab.sh("pve1", "dpkg --audit");
    assert!(
        audit.starts_with("The following packages have been unpacked but not yet configured.\n"),
        "{audit}"
    );
    assert!(audit.contains("\n pve-manager          "), "{audit}");
    let apt = lab.sh("pve1", "apt-get -y dist-upgrade 2>&1; echo rc=$?");
    assert!(
        apt.contains("E: dpkg was interrupted, you must manually run 'dpkg --configure -a' to correct the problem.\nrc=100"),
        "{apt}"
    );
    let out = env.run(&lab, &["run", "--resume", &env.run_id(), "--yes"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("`dist-upgrade` of the stopped run was cut off halfway: repaired with `dpkg --configure -a`"),
        "{stderr}"
    );
    assert!(env
        .events()
        .iter()
        .any(|e| e["node"] == "pve1" && e["event"] == "repaired"));
    assert!(half(&lab, "pve1").trim().is_empty());
    assert!(lab.sh("pve1", "pveversion").contains("pve-manager/8.3.5"));

    // Someone else's half-way dpkg: refused, named, nothing upgraded.
    lab.fault("pve2", &["dpkg-interrupted", "pve-manager"]);
    lab.fault("pve2", &["pending", "pve-manager=8.3.5"]);
    lab.fault("pve3", &["pending", "pve-manager=8.3.5"]);
    lab.fault("pve3", &["pending-remove", "proxmox-ve"]);
    for (node, want) in [
        ("pve2", "dpkg --audit: pve-manager (only half configured)"),
        ("pve3", "the dist-upgrade would remove proxmox-ve"),
    ] {
        let (code, v) = env.json(
            &lab,
            &[
                "-l",
                node,
                "run",
                "--yes",
                "-e",
                "min_free_mib=64",
                &shipped("upgrade.toml"),
            ],
        );
        assert_ne!(code, Some(0), "{v}");
        assert!(v.to_string().contains(want), "{node}: {v}");
        assert!(
            !lab.sh(node, "pveversion").contains("pve-manager/8.3.5"),
            "{node} unchanged"
        );
        assert_eq!(upgrades(&lab, node), 0, "{node}");
    }
}

/// The detail of the step named `step` of node `node` in a plan or run document.
fn step_detail(v: &serde_json::Value, node: usize, step: &str) -> (String, String) {
    let s = v["nodes"][node]["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["step"] == step)
        .unwrap_or_else(|| panic!("no step {step:?} on node {node}: {v}"));
    (
        s["status"].as_str().unwrap_or_default().to_string(),
        s["detail"].as_str().unwrap_or_default().to_string(),
    )
}

/// The choice of reboot: `-e skip_reboot=true` installs the new kernel and leaves the reboot
/// pending, said in the plan, the run and `runs show`; `run reboot -e only_pending=true` then
/// reboots those nodes only (drained, gated) into it; `-e force_reboot=true` reboots a node
/// with nothing new to boot; both together are refused before anything changes.
#[test]
fn skip_reboot_leaves_it_pending_and_force_reboot_reboots_without_a_new_kernel() {
    let Some(lab) = Lab::up("upgrade_choice_of_reboot", 173, 3, &[]) else {
        return;
    };
    lab.fault("pve1", &["pending-kernel", "6.8.12-9-pve"]);
    let up = shipped("upgrade.toml");
    let base = ["-e", "min_free_mib=64"];

    let env = Env::new();
    let (code, v) = env.json(
        &lab,
        &[
            "run",
            "--yes",
            base[0],
            base[1],
            "-e",
            "force_reboot=true",
            "-e",
            "skip_reboot=true",
            &up,
        ],
    );
    assert_ne!(code, Some(0), "{v}");
    assert!(v.to_string().contains("contradict each other"), "{v}");
    assert!(!lab.sh("pve1", "ls /boot").contains("vmlinuz-6.8.12-9-pve"));

    let (code, plan) = env.json(
        &lab,
        &["plan", base[0], base[1], "-e", "skip_reboot=true", &up],
    );
    assert_eq!(code, Some(0), "{plan}");
    let (status, detail) = step_detail(&plan, 0, "reboot into the new kernel");
    assert_eq!(status, "skipped", "{plan}");
    assert!(
        detail.starts_with("reboot pending: 6.8.12-9-pve"),
        "{detail}"
    );

    let env = Env::new();
    let (code, v) = env.json(
        &lab,
        &[
            "run",
            "--yes",
            base[0],
            base[1],
            "-e",
            "skip_reboot=true",
            &up,
        ],
    );
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(lab.boots("pve1"), 1, "pve1 was rebooted: {v}");
    assert!(lab.sh("pve1", "ls /boot").contains("vmlinuz-6.8.12-9-pve"));
    let (_, detail) = step_detail(&v, 0, "reboot into the new kernel");
    assert!(
        detail.starts_with("reboot pending: 6.8.12-9-pve"),
        "{detail}"
    );
    let show = env.run(&lab, &["runs", "show", &env.run_id()]);
    let show = text(&show.stdout);
    assert!(show.contains("reboot pending: 6.8.12-9-pve"), "{show}");

    // The pending reboot, and only it: pve1's guest drained and back.
    lab.fault("pve1", &["guest", "100", "mem=512"]);
    let env = Env::new();
    let (code, v) = env.json(
        &lab,
        &[
            "run",
            "--yes",
            "-e",
            "only_pending=true",
            &shipped("reboot.toml"),
        ],
    );
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(lab.boots("pve1"), 2, "{v}");
    assert_eq!(lab.sh("pve1", "uname -r"), "6.8.12-9-pve\n");
    assert_eq!(lab.guest(100), ("pve1".into(), "running".into()), "{v}");
    let moved = lab
        .events()
        .iter()
        .filter(|e| e.contains("migrate"))
        .count();
    assert!(
        moved >= 2,
        "the guest moved away and back: {:?}",
        lab.events()
    );
    for n in ["pve2", "pve3"] {
        assert_eq!(lab.boots(n), 1, "{n} rebooted: {v}");
    }
    let (status, detail) = step_detail(&v, 1, "reboot");
    assert_eq!(status, "skipped", "{v}");
    assert!(detail.starts_with("no reboot pending"), "{detail}");

    // Nothing new to boot on pve2: force_reboot reboots it all the same.
    let env = Env::new();
    let (code, v) = env.json(
        &lab,
        &[
            "run",
            "--yes",
            "--limit",
            "pve2",
            base[0],
            base[1],
            "-e",
            "force_reboot=true",
            &up,
        ],
    );
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(lab.boots("pve2"), 2, "{v}");
    assert_eq!(lab.boots("pve3"), 1, "{v}");
}
