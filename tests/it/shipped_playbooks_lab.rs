//! The shipped playbooks do the right thing on the lab: disable-offload fixes every port of the
//! bridge in its own stanza (or refuses) and verifies with `ifreload -a`, not a reboot;
//! sync-clock enables chrony for good and steps clocks the controller sees off; fix-rrd waits
//! for "synchronised" and a failed full reset leaves rrdcached running; igpu-passthrough rebuilds
//! the initramfs once and blacklists i915 only when asked; a plan runs only guards declared
//! read-only; `service` steps with `enabled` / `disabled` change once, then are ok.

use crate::common::lab::Lab;
use crate::common::runs::{audit_problems, changed_steps as changed, shipped, write_playbook, Env};

/// The named step's result on the node at `index`.
fn step<'a>(v: &'a serde_json::Value, index: usize, name: &str) -> &'a serde_json::Value {
    v["nodes"][index]["steps"]
        .as_array()
        .unwrap_or_else(|| panic!("no steps for node {index}: {v}"))
        .iter()
        .find(|s| s["step"] == name)
        .unwrap_or_else(|| panic!("no step {name:?} on node {index}: {v}"))
}

fn status<'a>(v: &'a serde_json::Value, index: usize, name: &str) -> &'a str {
    step(v, index, name)["status"].as_str().unwrap()
}

/// `pvefleet --json -l NODE run --yes ARGS... PLAYBOOK` (a shipped playbook).
fn run_on(
    env: &Env,
    lab: &Lab,
    node: &str,
    args: &[&str],
    playbook: &str,
) -> (Option<i32>, serde_json::Value) {
    let pb = shipped(playbook);
    let mut a = vec!["-l", node, "run", "--yes"];
    a.extend_from_slice(args);
    a.push(&pb);
    env.json(lab, &a)
}

/// TSO and GSO of a NIC as `ethtool -k` shows them, e.g. "off off".
fn tso_gso(lab: &Lab, node: &str, nic: &str) -> String {
    lab.sh(
        node,
        &format!("ethtool -k {nic} | sed -n 's/^\\(tcp\\|generic\\)-segmentation-offload: \\([a-z]*\\).*/\\2/p' | tr '\\n' ' '"),
    )
    .trim()
    .to_string()
}

#[test]
fn disable_offload_fixes_every_bridge_port_in_its_own_stanza_without_a_reboot() {
    let Some(lab) = Lab::up("offload_ports", 161, 3, &["--profile", "all:ports=2"]) else {
        return;
    };
    let env = Env::new();
    let boot = lab.boot_id("pve1");
    let (code, v) = run_on(&env, &lab, "pve1", &[], "disable-offload.toml");
    assert_eq!(code, Some(0), "{v}");
    let ifaces = lab.sh("pve1", "cat /etc/network/interfaces");
    for nic in ["eno1", "enp2s0"] {
        assert!(
            ifaces.contains(&format!(
                "iface {nic} inet manual\n\tpost-up /usr/sbin/ethtool -K {nic} tso off gso off\n"
            )),
            "{nic}'s own stanza carries the line: {ifaces}"
        );
        assert_eq!(tso_gso(&lab, "pve1", nic), "off off", "{nic} applied");
    }
    assert!(
        ifaces
            .trim_end()
            .ends_with("source /etc/network/interfaces.d/*"),
        "nothing lands after the source line: {ifaces}"
    );
    assert_eq!(status(&v, 0, "applied with ifreload -a"), "changed", "{v}");
    assert_eq!(status(&v, 0, "offloads are off"), "ok", "{v}");
    assert_eq!(v["nodes"][0]["rebooted"], false, "no reboot by default");
    assert_eq!(lab.boot_id("pve1"), boot, "same boot");

    let (code, again) = run_on(&env, &lab, "pve1", &[], "disable-offload.toml");
    assert_eq!(code, Some(0), "{again}");
    assert_eq!(changed(&again, 0), 0, "second run: {again}");

    // nics = "hang": only the NIC whose kernel log shows the hang (the lab logs it for eno1).
    lab.fault("pve2", &["offload-hang"]);
    let (code, v) = run_on(
        &env,
        &lab,
        "pve2",
        &["-e", "nics=hang"],
        "disable-offload.toml",
    );
    assert_eq!(code, Some(0), "{v}");
    let ifaces = lab.sh("pve2", "cat /etc/network/interfaces");
    assert!(
        ifaces.contains(
            "iface eno1 inet manual\n\tpost-up /usr/sbin/ethtool -K eno1 tso off gso off\n"
        ),
        "{ifaces}"
    );
    assert!(!ifaces.contains("-K enp2s0"), "{ifaces}");
    assert_eq!(tso_gso(&lab, "pve2", "eno1"), "off off");
    assert_eq!(tso_gso(&lab, "pve2", "enp2s0"), "on on", "left alone");
}

#[test]
fn disable_offload_refuses_a_nic_without_its_own_stanza_in_the_plan_and_the_run() {
    let Some(lab) = Lab::up("offload_no_stanza", 162, 3, &["--profile", "all:ports=2"]) else {
        return;
    };
    let env = Env::new();
    lab.sh(
        "pve3",
        "sed -i '/^iface enp2s0 inet manual$/d' /etc/network/interfaces",
    );
    let before = lab.sh("pve3", "md5sum /etc/network/interfaces");

    let (code, plan) = env.json(
        &lab,
        &["-l", "pve3", "plan", &shipped("disable-offload.toml")],
    );
    assert_ne!(code, Some(0), "{plan}");
    assert_eq!(status(&plan, 0, "each NIC has its own stanza"), "failed");

    let (code, v) = run_on(&env, &lab, "pve3", &[], "disable-offload.toml");
    assert_ne!(code, Some(0), "{v}");
    let check = step(&v, 0, "each NIC has its own stanza");
    assert_eq!(check["status"], "failed", "{v}");
    assert!(
        check["detail"]
            .as_str()
            .unwrap()
            .contains("no iface stanza in /etc/network/interfaces for: enp2s0"),
        "{check}"
    );
    assert_eq!(
        lab.sh("pve3", "md5sum /etc/network/interfaces"),
        before,
        "the file is untouched"
    );
    assert_eq!(tso_gso(&lab, "pve3", "eno1"), "on on", "nothing applied");
}

#[test]
fn sync_clock_enables_chrony_for_good_and_steps_clocks_the_controller_sees_off() {
    let Some(lab) = Lab::up("sync_clock", 164, 3, &[]) else {
        return;
    };
    let env = Env::new();
    // pve1: chrony stopped and disabled. pve2: chrony says synchronised while it slews 45 s (only
    // the controller sees it off). pve3: 30 s behind and not synchronised.
    lab.sh("pve1", "systemctl disable --now chrony");
    lab.fault("pve2", &["clock", "+45", "slewing"]);
    lab.fault("pve3", &["clock", "-30"]);
    assert_eq!(
        lab.sh("pve2", "timedatectl show -p NTPSynchronized --value"),
        "yes\n",
        "pve2's own view: synchronised"
    );

    let (code, v) = env.json(&lab, &["run", "--yes", &shipped("sync-clock.toml")]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(status(&v, 0, "chrony enabled and running"), "changed");
    assert_eq!(lab.sh("pve1", "systemctl is-enabled chrony"), "enabled\n");
    assert_eq!(status(&v, 1, "step the clock"), "changed", "{v}");
    assert_eq!(status(&v, 2, "step the clock"), "changed", "{v}");
    for i in 0..3 {
        assert_eq!(status(&v, i, "clock synchronised"), "ok", "{v}");
    }
    let problems = audit_problems(&env, &lab);
    assert!(problems.is_empty(), "every clock right: {problems:?}");

    // Enabled, so it survives a reboot.
    lab.reboot_and_wait("pve1");
    assert_eq!(lab.sh("pve1", "systemctl is-active chrony"), "active\n");

    let (code, again) = env.json(&lab, &["run", "--yes", &shipped("sync-clock.toml")]);
    assert_eq!(code, Some(0), "{again}");
    for i in 0..3 {
        assert_eq!(changed(&again, i), 0, "{}", again["nodes"][i]);
    }
}

#[test]
fn fix_rrd_waits_until_a_stepped_clock_is_synchronised() {
    let Some(lab) = Lab::up("fix_rrd_clock", 165, 3, &[]) else {
        return;
    };
    let env = Env::new();
    lab.fault("pve1", &["clock", "+90"]);
    let (code, v) = env.json(&lab, &["run", "--yes", &shipped("fix-rrd.toml")]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(status(&v, 0, "step the clock"), "changed");
    assert_eq!(status(&v, 0, "clock synchronised"), "ok", "{v}");
    assert_eq!(
        lab.sh("pve1", "timedatectl show -p NTPSynchronized --value"),
        "yes\n"
    );
}

#[test]
fn fix_rrd_full_reset_whose_move_fails_leaves_rrdcached_running() {
    let Some(lab) = Lab::up("fix_rrd_reset_fails", 166, 3, &[]) else {
        return;
    };
    let env = Env::new();
    // A database directory that is not there: `mv` fails after rrdcached was stopped.
    let (code, v) = run_on(
        &env,
        &lab,
        "pve2",
        &[
            "-e",
            "full_reset=true",
            "-e",
            "rrd_db=/var/lib/rrdcached/not-there",
        ],
        "fix-rrd.toml",
    );
    assert_ne!(code, Some(0), "{v}");
    let reset = step(&v, 0, "reset the RRD database");
    assert_eq!(reset["status"], "failed", "{v}");
    assert!(
        reset["detail"]
            .as_str()
            .unwrap()
            .contains("mv: cannot stat '/var/lib/rrdcached/not-there'"),
        "{reset}"
    );
    assert_eq!(lab.sh("pve2", "systemctl is-active rrdcached"), "active\n");
    assert!(
        lab.sh(
            "pve2",
            "journalctl -u rrdcached -o cat -q --no-pager | tail -n 2"
        )
        .contains("Started rrdcached.service"),
        "stopped, then started again"
    );
}

#[test]
fn igpu_passthrough_rebuilds_the_initramfs_once_and_blacklists_i915_only_when_asked() {
    let Some(lab) = Lab::up(
        "igpu_initramfs",
        167,
        3,
        &["--profile", "pve2:systemd-boot"],
    ) else {
        return;
    };
    let env = Env::new();
    let runs = |n: &str| -> usize {
        lab.sh(n, "cat /var/lib/pvelab/initramfs-runs 2>/dev/null || true")
            .lines()
            .count()
    };
    let (code, v) = env.json(&lab, &["run", "--yes", &shipped("igpu-passthrough.toml")]);
    assert_eq!(code, Some(0), "{v}");
    for (i, n) in ["pve1", "pve2", "pve3"].iter().enumerate() {
        assert_eq!(runs(n), 1, "{n}: one update-initramfs: {}", v["nodes"][i]);
        assert_eq!(
            lab.ssh(n, "test -e /etc/modprobe.d/blacklist-i915.conf").0,
            1,
            "{n}: i915 not blacklisted by default"
        );
        assert!(
            lab.sh(n, "lspci -nnk -s 00:02.0")
                .contains("Kernel driver in use: vfio-pci"),
            "{n}: bound by its id"
        );
        assert_eq!(v["nodes"][i]["rebooted"], true);
    }

    let (code, v) = run_on(
        &env,
        &lab,
        "pve1",
        &["-e", "blacklist_i915=true"],
        "igpu-passthrough.toml",
    );
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(
        lab.sh("pve1", "cat /etc/modprobe.d/blacklist-i915.conf"),
        "blacklist i915\n"
    );
    assert_eq!(runs("pve1"), 2, "one more rebuild for the blacklist");
    assert_eq!(status(&v, 0, "i915 blacklisted"), "changed");
}

const GUARDS: &str = r#"
name = "guards"

[[step]]
name = "guard not declared read-only"
kind = "run"
unless = "touch /root/unless-ran; false"
command = "echo ran"

[[step]]
name = "read-only guard"
kind = "run"
read_only = "guards"
unless = "test -e /etc/hostname"
command = "touch /root/command-ran"

[[step]]
name = "creates"
kind = "run"
creates = "/etc/hostname"
command = "touch /root/command-ran"

[[step]]
name = "a check"
kind = "run"
read_only = "all"
command = "cat /etc/hostname"
changed_when = "false"
"#;

#[test]
fn a_plan_evaluates_only_guards_declared_read_only() {
    let Some(lab) = Lab::up("plan_guards", 168, 1, &[]) else {
        return;
    };
    let env = Env::new();
    let pb = write_playbook(env.state.path(), "guards.toml", GUARDS);
    let (code, plan) = env.json(&lab, &["plan", pb.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{plan}");
    assert_eq!(
        lab.ssh("pve1", "test -e /root/unless-ran").0,
        1,
        "a plan did not run the guard"
    );
    let first = step(&plan, 0, "guard not declared read-only");
    assert_eq!(first["status"], "changed");
    assert!(
        first["detail"]
            .as_str()
            .unwrap()
            .contains("guard not evaluated in a plan (unless `touch /root/unless-ran; false`)"),
        "{first}"
    );
    assert_eq!(status(&plan, 0, "read-only guard"), "skipped", "evaluated");
    assert_eq!(status(&plan, 0, "creates"), "skipped", "evaluated");
    let check = step(&plan, 0, "a check");
    assert_eq!(check["status"], "ok");
    assert_eq!(check["detail"], "pve1", "the check ran in the plan");
    assert_eq!(lab.ssh("pve1", "test -e /root/command-ran").0, 1);

    let (code, run) = env.apply(&lab, &pb, &[]);
    assert_eq!(code, Some(0), "{run}");
    assert_eq!(
        lab.ssh("pve1", "test -e /root/unless-ran").0,
        0,
        "a run evaluates every guard"
    );
    assert_eq!(status(&run, 0, "guard not declared read-only"), "changed");
    assert_eq!(lab.ssh("pve1", "test -e /root/command-ran").0, 1);
}

const SERVICE_STATES: &str = r#"
name = "service states"
[vars]
want = "enabled"
[[step]]
name = "cron enabled"
kind = "service"
when = "want == 'enabled'"
service = "cron"
state = "enabled"
[[step]]
name = "cron disabled"
kind = "service"
when = "want == 'disabled'"
service = "cron"
state = "disabled"
"#;

#[test]
fn service_steps_enabled_and_disabled_change_once_then_are_ok() {
    let Some(lab) = Lab::up("service_enabled", 169, 1, &[]) else {
        return;
    };
    let env = Env::new();
    let pb = write_playbook(env.state.path(), "service.toml", SERVICE_STATES);
    let pb = pb.to_str().unwrap();
    let run = |want: &str| -> String {
        let (code, v) = env.json(&lab, &["run", "--yes", "-e", &format!("want={want}"), pb]);
        assert_eq!(code, Some(0), "{v}");
        status(&v, 0, &format!("cron {want}")).to_string()
    };
    assert_eq!(run("enabled"), "ok", "enabled already");
    assert_eq!(run("disabled"), "changed");
    assert_eq!(
        lab.sh("pve1", "systemctl is-enabled cron || true"),
        "disabled\n"
    );
    assert_eq!(run("disabled"), "ok", "disabled already");
    assert_eq!(run("enabled"), "changed");
    assert_eq!(run("enabled"), "ok");
}

#[test]
fn every_shipped_playbook_validates_and_uses_only_defined_variables() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("playbooks");
    let mut seen = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_none_or(|x| x != "toml") {
            continue;
        }
        let pb = pvefleet::playbook::Playbook::load(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut known: std::collections::HashSet<String> = pb.file.vars.keys().cloned().collect();
        known.extend(pvefleet::playbook::engine::BUILTIN_VARS.map(String::from));
        pvefleet::playbook::validate::check_variables(&pb, &known)
            .unwrap_or_else(|e| panic!("{e}"));
        seen += 1;
    }
    assert_eq!(seen, 6, "the six shipped playbooks");
}
