//! Playbooks end to end on the lab: plan changes nothing, run fixes what the audit found, a second
//! run is a no-op; rolling reboots, the quorum gate, halting, resume, rollback, Ctrl-C.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::lab::Lab;
use crate::common::runs::{audit_problems, changed_steps, Env};

fn playbook(name: &str) -> String {
    format!("{}/playbooks/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A fingerprint of the files playbooks touch, to prove a plan changed nothing.
fn fingerprint(lab: &Lab, node: &str) -> String {
    lab.sh(
        node,
        "cat /etc/default/grub /etc/modules /etc/network/interfaces /etc/kernel/cmdline 2>/dev/null | md5sum; \
         ls -la /etc/modprobe.d; find /var/lib/rrdcached -type f | sort | xargs ls -la; cat /proc/sys/kernel/random/boot_id",
    )
}

#[test]
fn fix_rrd_plans_without_changing_fixes_the_errors_and_then_is_a_no_op() {
    let Some(lab) = Lab::up("fix_rrd", 80, 3, &[]) else {
        return;
    };
    let env = Env::new();
    lab.fault("pve1", &["clock", "+90"]);
    lab.fault("pve2", &["rrd-zero", "2"]);
    crate::common::wait::wait_rrd_errors(&lab, &["pve2"]);
    assert!(audit_problems(&env, &lab)
        .iter()
        .any(|p| p.contains("rrd.zero_byte pve2")));

    let before: Vec<String> = ["pve1", "pve2", "pve3"]
        .iter()
        .map(|n| fingerprint(&lab, n))
        .collect();
    let (code, plan) = env.json(&lab, &["plan", &playbook("fix-rrd.toml")]);
    assert_eq!(code, Some(0));
    // By name, the JSON names the file that was read: the shipped one, as an absolute path.
    let by_name = env
        .cmd(&lab, &["--json", "plan", "fix-rrd"])
        .current_dir(env.state.path())
        .env(
            "PVEFLEET_SHIPPED_PLAYBOOKS",
            format!("{}/playbooks", env!("CARGO_MANIFEST_DIR")),
        )
        .output()
        .unwrap();
    assert_eq!(by_name.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&by_name.stdout).unwrap();
    assert_eq!(
        v["playbook"].as_str().map(std::path::PathBuf::from),
        Some(std::fs::canonicalize(playbook("fix-rrd.toml")).unwrap()),
        "{}",
        v["playbook"]
    );
    let after: Vec<String> = ["pve1", "pve2", "pve3"]
        .iter()
        .map(|n| fingerprint(&lab, n))
        .collect();
    assert_eq!(before, after, "a plan changes nothing on any node");
    let step = |v: &serde_json::Value, n: usize, name: &str| -> String {
        v["nodes"][n]["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["step"] == name)
            .unwrap()["status"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        step(&plan, 0, "step the clock"),
        "changed",
        "pve1's clock would be stepped"
    );
    assert_eq!(step(&plan, 2, "step the clock"), "skipped");

    let (code, run) = env.json(&lab, &["run", "--yes", &playbook("fix-rrd.toml")]);
    assert_eq!(code, Some(0), "{run}");
    assert_eq!(step(&run, 1, "quarantine broken RRD files"), "changed");
    assert_eq!(step(&run, 1, "no new RRD errors"), "ok");
    let q = lab.sh(
        "pve2",
        "find /var/lib/pvefleet/rrd-quarantine -type f | wc -l",
    );
    assert_eq!(
        q, "2\n",
        "the broken files are kept in quarantine, not deleted"
    );
    let problems = audit_problems(&env, &lab);
    assert!(
        problems.is_empty(),
        "the audit is clean afterwards: {problems:?}"
    );

    let (code, again) = env.json(&lab, &["run", "--yes", &playbook("fix-rrd.toml")]);
    assert_eq!(code, Some(0));
    for n in 0..3 {
        assert_eq!(
            changed_steps(&again, n),
            0,
            "second run changes nothing: {}",
            again["nodes"][n]
        );
    }
}

#[test]
fn igpu_passthrough_rolls_node_by_node_then_changes_nothing_and_rolls_back() {
    let Some(lab) = Lab::up(
        "igpu",
        81,
        3,
        &[
            "--profile",
            "pve2:systemd-boot",
            "--profile",
            "pve3:grub-pbt",
        ],
    ) else {
        return;
    };
    let env = Env::new();
    let (code, plan) = env.json(&lab, &["plan", &playbook("igpu-passthrough.toml")]);
    assert_eq!(code, Some(0), "{plan}");
    let diffs = plan["nodes"][1]["steps"].to_string();
    assert!(
        diffs.contains("/etc/kernel/cmdline (after)"),
        "systemd-boot node edits /etc/kernel/cmdline: {diffs}"
    );
    assert!(
        !diffs.contains("/etc/default/grub (after)"),
        "and not /etc/default/grub"
    );
    assert!(plan["nodes"][0]["steps"]
        .to_string()
        .contains("+GRUB_CMDLINE_LINUX_DEFAULT=\\\"quiet intel_iommu=on iommu=pt\\\""));
    // GRUB on ESPs managed by proxmox-boot-tool: /etc/default/grub, applied by its refresh.
    let pbt = plan["nodes"][2]["steps"].to_string();
    assert!(
        pbt.contains("/etc/default/grub (after)") && pbt.contains("proxmox-boot-tool refresh"),
        "{pbt}"
    );

    let boots: Vec<String> = ["pve1", "pve2", "pve3"]
        .iter()
        .map(|n| lab.boot_id(n))
        .collect();
    let (code, run) = env.json(&lab, &["run", "--yes", &playbook("igpu-passthrough.toml")]);
    assert_eq!(code, Some(0), "{run}");
    for (i, n) in ["pve1", "pve2", "pve3"].iter().enumerate() {
        assert_eq!(run["nodes"][i]["rebooted"], true);
        assert_ne!(lab.boot_id(n), boots[i], "{n} rebooted");
        assert!(
            lab.sh(n, "lspci -nnk -s 00:02.0")
                .contains("Kernel driver in use: vfio-pci"),
            "{n}"
        );
        assert_eq!(
            lab.sh(n, "cat /etc/modprobe.d/vfio.conf"),
            "options vfio-pci ids=8086:3e92\nsoftdep i915 pre: vfio-pci\n"
        );
        assert!(!lab.sh(n, "cat /etc/modules").contains("vfio_virqfd"));
    }
    assert!(lab
        .sh("pve2", "cat /proc/cmdline")
        .contains("intel_iommu=on iommu=pt"));
    let run_id = run["run"].as_str().unwrap().to_string();

    let boots: Vec<String> = ["pve1", "pve2", "pve3"]
        .iter()
        .map(|n| lab.boot_id(n))
        .collect();
    let (code, again) = env.json(&lab, &["run", "--yes", &playbook("igpu-passthrough.toml")]);
    assert_eq!(code, Some(0));
    for (i, n) in ["pve1", "pve2", "pve3"].iter().enumerate() {
        assert_eq!(changed_steps(&again, i), 0, "{}", again["nodes"][i]);
        assert_eq!(lab.boot_id(n), boots[i], "no reboot the second time");
    }

    let out = env.run(&lab, &["rollback", &run_id, "--yes"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("pve1: restored /etc/default/grub")
            && text.contains("pve2: restored /etc/kernel/cmdline"),
        "{text}"
    );
    assert!(text.contains("a reboot is needed"), "{text}");
    assert!(lab
        .sh("pve1", "grep CMDLINE_LINUX_DEFAULT /etc/default/grub")
        .contains("\"quiet\""));
    assert_eq!(
        lab.ssh("pve3", "test -e /etc/modprobe.d/vfio.conf").0,
        1,
        "files the run created are removed"
    );
}

const SLOW_REBOOT: &str = r#"
name = "touch and reboot"
[vars]
marker = "touched"
[strategy]
mode = "rolling"
batch = 1
[[step]]
name = "mark"
kind = "line"
path = "/etc/pvefleet-test"
line = "{{ marker }}"
[[step]]
name = "reboot"
kind = "reboot"
timeout = "90s"
on_change = ["mark"]
"#;

/// [`SLOW_REBOOT`] that gives a node 8 s to come back: for the node that never does (a node
/// that does come back may take longer than that on a loaded machine: the lab's boot delay,
/// its sshd and corosync, the quorum).
fn short_reboot() -> String {
    SLOW_REBOOT.replace("timeout = \"90s\"", "timeout = \"8s\"")
}

fn write_playbook(dir: &std::path::Path, text: &str) -> std::path::PathBuf {
    crate::common::runs::write_playbook(dir, "pb.toml", text)
}

#[test]
fn a_node_that_never_returns_halts_the_run_and_resume_finishes_it() {
    let Some(lab) = Lab::up("no_return", 82, 3, &[]) else {
        return;
    };
    let env = Env::new();
    let pb = write_playbook(env.state.path(), &short_reboot());
    lab.fault("pve1", &["no-return"]);
    let boots: Vec<String> = ["pve2", "pve3"].iter().map(|n| lab.boot_id(n)).collect();
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
    assert_eq!(v["nodes"][1]["not_started"], true);
    assert_eq!(v["nodes"][2]["not_started"], true);
    for (i, n) in ["pve2", "pve3"].iter().enumerate() {
        assert_eq!(lab.boot_id(n), boots[i], "{n} untouched");
        assert_eq!(
            lab.ssh(n, "test -e /etc/pvefleet-test").0,
            1,
            "{n} untouched"
        );
    }
    let run_id = v["run"].as_str().unwrap().to_string();
    let runs = env.run(&lab, &["runs"]);
    assert!(String::from_utf8_lossy(&runs.stdout).contains(&run_id));

    lab.clear("pve1", Some("no-return"));
    assert!(lab.wait("pve1", "up", 30));
    // The operator gives the other nodes' reboots more time: a changed playbook is resumed
    // only with --force.
    write_playbook(env.state.path(), SLOW_REBOOT);
    let out = env.run(&lab, &["run", "--resume", &run_id, "--yes"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "{err}");
    assert!(err.contains("changed since run"), "{err}");
    let (code, v) = env.json(&lab, &["run", "--resume", &run_id, "--yes", "--force"]);
    assert_eq!(code, Some(0), "{v}");
    for n in ["pve1", "pve2", "pve3"] {
        assert_eq!(lab.sh(n, "cat /etc/pvefleet-test"), "touched\n");
    }
    assert_eq!(v["nodes"][1]["rebooted"], true);
}

/// The gate counts the nodes the run's plan says will reboot: on a 2-node cluster a playbook
/// whose reboot depends on a change runs where nothing needs changing (no reboot, no refusal),
/// and is refused, before anything changes, on the node where the reboot would happen. On the
/// old code every batch of a playbook with a reboot step met the gate, so nothing ran at all.
#[test]
fn the_quorum_gate_counts_only_the_reboots_the_plan_expects() {
    let Some(lab) = Lab::up("quorum_gate_planned", 143, 2, &[]) else {
        return;
    };
    let env = Env::new();
    let pb = write_playbook(env.state.path(), SLOW_REBOOT);
    // Both nodes already have the line: the plan predicts no reboot anywhere.
    for n in ["pve1", "pve2"] {
        lab.sh(n, "echo touched > /etc/pvefleet-test");
    }
    let (code, v) = env.apply(&lab, &pb, &[]);
    assert_eq!(code, Some(0), "{v}");
    for (i, n) in ["pve1", "pve2"].iter().enumerate() {
        assert_eq!(v["nodes"][i]["status"], "ok", "{v}");
        assert_eq!(v["nodes"][i]["rebooted"], false, "{v}");
        assert_eq!(lab.boots(n), 1, "{n}");
    }
    // pve2 loses the line: its reboot would happen, and is refused before the line is written;
    // pve1 (first, nothing to do) is not held back by it.
    lab.sh("pve2", "rm /etc/pvefleet-test");
    let env = Env::new();
    let (code, v) = env.apply(&lab, &pb, &[]);
    assert_eq!(code, Some(2), "{v}");
    assert_eq!(v["nodes"][0]["status"], "ok", "{v}");
    let err = v["nodes"][1]["error"].as_str().unwrap();
    assert!(
        err.contains("quorum gate") && err.contains("2-node cluster"),
        "{err}"
    );
    assert_eq!(
        lab.ssh("pve2", "test -e /etc/pvefleet-test").0,
        1,
        "nothing changed on pve2"
    );
    for n in ["pve1", "pve2"] {
        assert_eq!(lab.boots(n), 1, "{n}");
    }
}

#[test]
fn the_quorum_gate_refuses_to_reboot_a_node_of_a_two_node_cluster() {
    let Some(lab) = Lab::up("quorum_gate", 83, 2, &[]) else {
        return;
    };
    let env = Env::new();
    let pb = write_playbook(env.state.path(), SLOW_REBOOT);
    let (code, v) = env.apply(&lab, &pb, &[]);
    assert_eq!(code, Some(2));
    let err = v["nodes"][0]["error"].as_str().unwrap();
    assert!(
        err.contains("quorum gate") && err.contains("2-node cluster"),
        "{err}"
    );
    for n in ["pve1", "pve2"] {
        assert_eq!(
            lab.ssh(n, "test -e /etc/pvefleet-test").0,
            1,
            "nothing changed on {n}"
        );
    }
}

#[test]
fn running_guests_stop_a_reboot_unless_the_operator_says_otherwise() {
    let Some(lab) = Lab::up("guests", 84, 3, &[]) else {
        return;
    };
    let env = Env::new();
    let pb = write_playbook(env.state.path(), SLOW_REBOOT);
    lab.fault("pve1", &["guests", "hostpci"]);
    let (code, v) = env.apply(&lab, &pb, &[]);
    assert_eq!(code, Some(2));
    let err = v["nodes"][0]["error"].as_str().unwrap();
    assert!(
        err.contains("guests are running: qm 100 (web), qm 101 (db), qm 102 (media)"),
        "{err}"
    );
    let (code, v) = env.apply(
        &lab,
        &pb,
        &["-l", "pve1", "--guests", "shutdown", "-e", "marker=again"],
    );
    assert_eq!(code, Some(0), "{v}");
    // Shut down for the reboot, started again once the node was back.
    assert_eq!(lab.sh("pve1", "qm list | grep -c running || true"), "3\n");
    let steps = v["nodes"][0]["steps"].to_string();
    assert!(
        steps.contains("started again: qm 100 (web), qm 101 (db), qm 102 (media)"),
        "{steps}"
    );
}

#[test]
fn offload_and_clock_playbooks_fix_what_the_audit_found() {
    let Some(lab) = Lab::up("offload_clock", 85, 3, &[]) else {
        return;
    };
    let env = Env::new();
    lab.fault("pve1", &["offload-hang"]);
    lab.sh("pve1", "sed -i 's/^iface eno1 inet manual/iface eno1 inet manual\\n\\toffload-tso off/' /etc/network/interfaces");
    lab.fault("pve2", &["clock", "-45"]);
    let before = audit_problems(&env, &lab);
    assert!(
        before.iter().any(|p| p.contains("offload.hang pve1")),
        "{before:?}"
    );
    assert!(
        before.iter().any(|p| p.contains("clock.offset pve2")),
        "{before:?}"
    );

    let (code, v) = env.json(
        &lab,
        &[
            "-l",
            "pve1",
            "run",
            "--yes",
            "-e",
            "verify_reboot=true",
            &playbook("disable-offload.toml"),
        ],
    );
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["nodes"][0]["rebooted"], true, "verified after a reboot");
    let ifaces = lab.sh("pve1", "cat /etc/network/interfaces");
    assert!(
        ifaces.contains(
            "iface eno1 inet manual\n\tpost-up /usr/sbin/ethtool -K eno1 tso off gso off\n"
        ),
        "{ifaces}"
    );
    assert!(
        !ifaces.contains("offload-tso"),
        "ineffective ifupdown1 keys removed"
    );
    let (code, v) = env.json(&lab, &["run", "--yes", &playbook("sync-clock.toml")]);
    assert_eq!(code, Some(0), "{v}");
    let after = audit_problems(&env, &lab);
    assert!(after.is_empty(), "{after:?}");
    let (_, again) = env.json(
        &lab,
        &[
            "-l",
            "pve1",
            "run",
            "--yes",
            &playbook("disable-offload.toml"),
        ],
    );
    assert_eq!(changed_steps(&again, 0), 0, "{again}");
}

#[test]
fn a_bad_playbook_is_refused_with_its_location_before_anything_runs() {
    let Some(lab) = Lab::up("bad_playbook", 86, 1, &[]) else {
        return;
    };
    let env = Env::new();
    let pb = write_playbook(env.state.path(), "name = \"x\"\n[[step]]\nname = \"a\"\nkind = \"line\"\npath = \"/etc/x\"\nline = \"{{ undefined_thing }}\"\n");
    let out = env.run(&lab, &["run", "--yes", pb.to_str().unwrap()]);
    let err =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:6:8: undefined variable `undefined_thing`",
            pb.display()
        )),
        "{err}"
    );
    assert_eq!(lab.ssh("pve1", "test -e /etc/x").0, 1);
    let pb = write_playbook(
        env.state.path(),
        "name = \"x\"\n[[step]]\nname = \"a\"\nkind = \"reboots\"\n",
    );
    let out = env.run(&lab, &["plan", pb.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(65));
    assert!(String::from_utf8_lossy(&out.stderr).contains(":4:8: unknown variant `reboots`"));
}

#[test]
fn ctrl_c_mid_run_leaves_a_readable_resumable_journal() {
    let Some(lab) = Lab::up("ctrl_c", 87, 2, &[]) else {
        return;
    };
    let env = Env::new();
    let pb = write_playbook(
        env.state.path(),
        "name = \"slow\"\n[[step]]\nname = \"first\"\nkind = \"line\"\npath = \"/etc/pvefleet-test\"\nline = \"one\"\n[[step]]\nname = \"slow\"\nkind = \"run\"\ncommand = \"sleep 30\"\n",
    );
    let inv = lab.inventory();
    let child = Command::new(env!("CARGO_BIN_EXE_pvefleet"))
        .args([
            "-i",
            inv.to_str().unwrap(),
            "--json",
            "run",
            "--yes",
            pb.to_str().unwrap(),
        ])
        .env("PVEFLEET_STATE_DIR", env.state.path())
        .env_remove("SSH_AUTH_SOCK")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupted once both nodes are in the slow step (a condition, not a fixed time).
    for n in ["pve1", "pve2"] {
        assert!(
            env.wait_event(60, |e| e["node"] == n
                && e["event"] == "step_started"
                && e["data"]["step"] == "slow"),
            "{n} reached the slow step"
        );
    }
    crate::common::sshd::sh(&format!("kill -INT {}", child.id()));
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "interrupted");
    let id = v["run"].as_str().unwrap();
    let show = env.run(&lab, &["runs", "show", id]);
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(
        text.contains("changed first") && text.contains("interrupted"),
        "{text}"
    );
    assert!(text.contains("backup pve1: /etc/pvefleet-test"), "{text}");
    assert!(text.contains("interrupted in step `slow`"), "{text}");
    assert_eq!(
        lab.sh("pve1", "cat /etc/pvefleet-test"),
        "one\n",
        "what was done stays done"
    );
}

#[test]
fn a_terminal_shows_each_nodes_current_step_and_a_pipe_shows_no_progress() {
    let Some(lab) = Lab::up("live_progress", 88, 2, &[]) else {
        return;
    };
    let env = Env::new();
    let pb = write_playbook(
        env.state.path(),
        "name = \"slow\"\n[[step]]\nname = \"first wait\"\nkind = \"run\"\ncommand = \"sleep 4\"\n",
    );
    // Piped: no progress drawing on stderr.
    let out = env.run(&lab, &["run", "--yes", pb.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("first wait (") && !err.contains("nodes ("),
        "{err}"
    );
    // On a terminal (tmux): one live line per node with its current step.
    let cmd = format!(
        "PVEFLEET_STATE_DIR={} {} -i {} run --yes {}; sleep 30",
        env.state.path().display(),
        env!("CARGO_BIN_EXE_pvefleet"),
        lab.inventory().display(),
        pb.display()
    );
    let term = crate::common::tmux::Tmux::start("test", 160, 40, &cmd);
    let mut screen = String::new();
    for _ in 0..40 {
        std::thread::sleep(std::time::Duration::from_millis(250));
        screen = term.capture(false, 0);
        if screen.contains("pve1") && screen.contains("first wait (") && screen.contains("pve2") {
            break;
        }
    }
    assert!(
        screen.contains("first wait ("),
        "no live step line on the terminal:\n{screen}"
    );
    assert!(screen.contains("0/2 nodes"), "no nodes-done bar:\n{screen}");
}

/// Issue 17: `-v` follows each command's output as it comes, a line at a time prefixed with its
/// node (piped here: a command's first line arrives seconds before its last, not with its end),
/// for a step run in the session as for a detached one; on a terminal the live display says
/// when apt waits for another apt's dpkg lock, who holds it, and for how long.
#[test]
fn verbose_follows_commands_live_and_the_display_names_the_dpkg_lock_wait() {
    use std::io::BufRead;
    let Some(lab) = Lab::up("verbose_follow", 135, 1, &[]) else {
        return;
    };
    let env = Env::new();
    let pb = write_playbook(
        env.state.path(),
        "name = \"follow\"\n[[step]]\nname = \"talk\"\nkind = \"run\"\ncommand = \"echo first; sleep 3; echo second >&2\"\n[[step]]\nname = \"talk detached\"\nkind = \"run\"\ndetach = true\ncommand = \"echo third; sleep 3; printf fourth\"\n",
    );
    let mut child = env.spawn(&lab, &["-v", "run", "--yes", pb.to_str().unwrap()]);
    let err = child.stderr.take().unwrap();
    let seen: Vec<(std::time::Instant, String)> = std::io::BufReader::new(err)
        .lines()
        .map(|l| (std::time::Instant::now(), l.unwrap()))
        .collect();
    let status = child.wait().unwrap();
    let all: Vec<&str> = seen.iter().map(|(_, l)| l.as_str()).collect();
    assert!(status.success(), "{all:#?}");
    let at = |want: &str| {
        seen.iter()
            .find(|(_, l)| l == want)
            .map(|(t, _)| *t)
            .unwrap_or_else(|| panic!("no `{want}` line: {all:#?}"))
    };
    let gap = |a: &str, b: &str| at(b).duration_since(at(a));
    assert!(
        gap("pve1 | first", "pve1 | second") >= Duration::from_secs(2),
        "{all:#?}"
    );
    // Detached: the same, its last line too (no newline at its end).
    assert!(
        gap("pve1 | third", "pve1 | fourth") >= Duration::from_secs(2),
        "{all:#?}"
    );
    // Without -v nothing of it.
    let quiet = env.run(&lab, &["run", "--yes", pb.to_str().unwrap()]);
    assert!(!String::from_utf8_lossy(&quiet.stderr).contains("pve1 | "));

    // Another apt-get holds the lock for 8 s: the display says so while apt waits.
    let apt = write_playbook(
        env.state.path(),
        "name = \"apt\"\n[[step]]\nname = \"upgrade\"\nkind = \"run\"\ndetach = true\ncommand = \"apt-get -y -q -o DPkg::Lock::Timeout=60 dist-upgrade\"\n",
    );
    lab.fault("pve1", &["dpkg-lock", "8"]);
    let t = env.in_tmux(
        &lab,
        "lock",
        160,
        30,
        &format!("run --yes {}", apt.display()),
    );
    let (seen, screen) = t.until(30, false, 0, |s| {
        s.contains("upgrade: waiting for the dpkg lock (held by process ")
    });
    assert!(
        seen,
        "the display never said it waits for the lock:\n{screen}"
    );
    assert!(screen.contains(" (apt-get)) ("), "{screen}");
    let (code, screen) = t.exit_code(60);
    assert_eq!(code, Some(0), "{screen}");
}

/// `plan --detailed-exitcode` (as terraform's): 2 while something would change, 0 once the run
/// made it so, 1 when a node cannot be planned; without the flag a plan with changes exits 0.
#[test]
fn plan_detailed_exitcode_tells_changes_from_nothing_to_do() {
    let Some(lab) = Lab::up("plan_detailed_exitcode", 50, 2, &[]) else {
        return;
    };
    let env = Env::new();
    let pb = write_playbook(
        env.state.path(),
        "name = \"m\"\n[[step]]\nname = \"mark\"\nkind = \"line\"\npath = \"/etc/pvefleet-test\"\nline = \"x\"\n",
    );
    let pb = pb.to_str().unwrap();
    let plan = |extra: &[&str]| {
        let mut a = vec!["plan", pb];
        a.extend_from_slice(extra);
        env.run(&lab, &a).status.code()
    };
    assert_eq!(plan(&[]), Some(0));
    assert_eq!(plan(&["--detailed-exitcode"]), Some(2));
    let out = env.run(&lab, &["run", "--yes", pb]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(plan(&["--detailed-exitcode"]), Some(0));
    lab.fault("pve2", &["sshd-stop"]);
    assert_eq!(plan(&["--detailed-exitcode"]), Some(1));
}

/// At 80 columns (tmux) the run's result table and `pvefleet runs` fit: no line is wider than
/// the terminal (the joined capture shows what the terminal had to wrap), and a long error is
/// printed whole below the table, words intact (in a column it was squeezed to a few
/// characters: `duratio`/`n`).
#[test]
fn the_result_table_and_runs_fit_80_columns_with_errors_below() {
    let Some(lab) = Lab::up("results_80_columns", 54, 3, &[]) else {
        return;
    };
    let env = Env::new();
    let pb = write_playbook(
        env.state.path(),
        "name = \"long-error\"\n[[step]]\nname = \"fail\"\nkind = \"run\"\ncommand = \"echo 'ERROR: migration aborted (duration 00:00:01): cannot migrate VM which uses local devices: hostpci0 and usb0 and more words' >&2; exit 1\"\n",
    );
    let done = env.state.path().join("done");
    let bin = env!("CARGO_BIN_EXE_pvefleet");
    let cmd = format!(
        "export PVEFLEET_STATE_DIR={}; {bin} -i {} run --yes {}; {bin} runs; touch {}; sleep 60",
        env.state.path().display(),
        lab.inventory().display(),
        pb.display(),
        done.display()
    );
    let term = crate::common::tmux::Tmux::start("80", 80, 60, &cmd);
    for _ in 0..240 {
        if done.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert!(done.exists(), "the run and `runs` finished");
    let screen = term.capture(true, 60);
    for line in screen.lines() {
        assert!(
            line.chars().count() <= 80,
            "wider than 80: {line:?}\n{screen}"
        );
    }
    assert!(screen.contains("│ pve1 "), "{screen}");
    assert!(screen.contains("(duration 00:00:01)"), "{screen}");
    assert!(
        screen.contains("┆ pb "),
        "`runs` lists the run by its playbook: {screen}"
    );
    assert!(
        screen.contains("== pve[1-3] (3) =="),
        "identical plans folded: {screen}"
    );
}
