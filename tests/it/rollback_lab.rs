//! Rollback on the lab: byte for byte (content, mode, owner) after the shipped playbooks, files
//! the run created removed, drift refused unless --force, --limit honoured, fix-rrd's quarantine
//! undone; the GVT-g mode of igpu-passthrough end to end; Ctrl-C at the confirmation prompt.

use crate::common::bin::text;
use crate::common::lab::Lab;
use crate::common::runs::{shipped, Env};

/// md5, mode and owner of each file (or `absent`), one line each.
fn snapshot(lab: &Lab, node: &str, files: &[&str]) -> String {
    let list = files.join(" ");
    lab.sh(
        node,
        &format!(
            "for f in {list}; do if [ -e \"$f\" ]; then echo \"$f $(md5sum < \"$f\" | cut -d' ' -f1) $(stat -c '%a %U:%G' \"$f\")\"; else echo \"$f absent\"; fi; done"
        ),
    )
}

const IGPU_FILES: &[&str] = &[
    "/etc/default/grub",
    "/etc/kernel/cmdline",
    "/etc/modules",
    "/etc/modprobe.d/vfio.conf",
    "/etc/modprobe.d/blacklist-i915.conf",
];

#[test]
fn rollback_after_igpu_passthrough_is_byte_identical_and_refuses_drift() {
    let Some(lab) = Lab::up("rollback_igpu", 112, 3, &["--profile", "pve2:systemd-boot"]) else {
        return;
    };
    let env = Env::new();
    // A mode the run must keep: the original is restored with it.
    lab.sh("pve1", "chmod 0600 /etc/modules");
    let before: Vec<String> = ["pve1", "pve2", "pve3"]
        .iter()
        .map(|n| snapshot(&lab, n, IGPU_FILES))
        .collect();
    let (code, run) = env.json(&lab, &["run", "--yes", &shipped("igpu-passthrough.toml")]);
    assert_eq!(code, Some(0), "{run}");
    let id = run["run"].as_str().unwrap().to_string();
    assert_ne!(snapshot(&lab, "pve1", IGPU_FILES), before[0]);
    // Without a terminal and without --yes: refused, as `run` is (it said "nothing done", 0).
    let out = env.run(&lab, &["rollback", &id]);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("pass --yes"),
        "{}",
        text(&out.stderr)
    );
    assert_ne!(
        snapshot(&lab, "pve1", IGPU_FILES),
        before[0],
        "nothing rolled back"
    );
    // Drift: someone edits a file the run changed on pve3.
    lab.sh("pve3", "echo 'kvm # added by hand' >> /etc/modules");
    let left_by_run = snapshot(&lab, "pve3", IGPU_FILES);
    let out = env.run(&lab, &["rollback", &id, "--yes"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("pve3: /etc/modules changed since the run (drift"),
        "{}",
        text(&out.stderr)
    );
    for (i, n) in ["pve1", "pve2"].iter().enumerate() {
        assert_eq!(
            snapshot(&lab, n, IGPU_FILES),
            before[i],
            "{n} byte for byte"
        );
    }
    // All or nothing: the drifted node is refused whole, none of its files restored (the old
    // code restored the others and left pve3 half rolled back).
    assert!(
        text(&out.stderr).contains("pve3: not rolled back: nothing on it was changed"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        snapshot(&lab, "pve3", IGPU_FILES),
        left_by_run,
        "pve3 untouched"
    );
    assert_eq!(
        lab.ssh("pve3", "test -e /etc/modprobe.d/vfio.conf").0,
        0,
        "the file the run created is still there"
    );
    // The restored files take effect: the next boot's command line is the original again.
    assert_eq!(
        lab.sh("pve1", "cat /var/lib/pvelab/applied/grub"),
        "quiet\n"
    );
    // --limit and --force: only pve3, drift overwritten; --json says it per node (issue 16).
    let (code, v) = env.json(&lab, &["-l", "pve3", "rollback", &id, "--yes", "--force"]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["run"], id.as_str(), "{v}");
    let nodes = v["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1, "only pve3: {v}");
    assert_eq!(nodes[0]["node"], "pve3");
    assert_eq!(nodes[0]["status"], "rolled back", "{v}");
    assert!(nodes[0]["files_restored"].as_u64().unwrap() > 0, "{v}");
    assert!(nodes[0]["errors"].as_array().unwrap().is_empty(), "{v}");
    assert_eq!(snapshot(&lab, "pve3", IGPU_FILES), before[2]);
}

#[test]
fn rollback_after_fix_rrd_puts_the_quarantined_files_back() {
    let Some(lab) = Lab::up("rollback_rrd", 113, 3, &[]) else {
        return;
    };
    let env = Env::new();
    lab.fault("pve2", &["rrd-zero", "2"]);
    lab.fault("pve3", &["rrd-corrupt"]);
    crate::common::wait::wait_rrd_errors(&lab, &["pve2", "pve3"]);
    let listing = "cd /var/lib/rrdcached/db && find . -type f | sort | while read -r f; do echo \"$f $(md5sum < \"$f\" | cut -d' ' -f1) $(stat -c %s \"$f\")\"; done";
    let before: Vec<String> = ["pve2", "pve3"]
        .iter()
        .map(|n| lab.sh(n, listing))
        .collect();
    let (code, run) = env.json(&lab, &["run", "--yes", &shipped("fix-rrd.toml")]);
    assert_eq!(code, Some(0), "{run}");
    assert_ne!(
        lab.sh("pve2", listing),
        before[0],
        "the run quarantined files"
    );
    let id = run["run"].as_str().unwrap().to_string();
    let out = env.run(&lab, &["rollback", &id, "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("pve2: undid step `quarantine broken RRD files`"),
        "{}",
        text(&out.stdout)
    );
    for (i, n) in ["pve2", "pve3"].iter().enumerate() {
        assert_eq!(
            lab.sh(n, listing),
            before[i],
            "{n}: the db as before the run"
        );
    }
    assert_eq!(lab.sh("pve2", "systemctl is-active rrdcached"), "active\n");
}

#[test]
fn igpu_passthrough_in_gvt_g_mode_ends_with_i915_and_mediated_types() {
    let Some(lab) = Lab::up("igpu_gvtg", 114, 3, &[]) else {
        return;
    };
    let env = Env::new();
    let (code, run) = env.json(
        &lab,
        &[
            "run",
            "--yes",
            "-e",
            "gpu_mode=gvt-g",
            &shipped("igpu-passthrough.toml"),
        ],
    );
    assert_eq!(code, Some(0), "{run}");
    for n in ["pve1", "pve2", "pve3"] {
        assert!(
            lab.sh(n, "lspci -nnk -s 00:02.0")
                .contains("Kernel driver in use: i915"),
            "{n}"
        );
        assert!(
            lab.sh(
                n,
                "ls /sys/bus/pci/devices/0000:00:02.0/mdev_supported_types/"
            )
            .contains("i915-GVTg_V5_4"),
            "{n}"
        );
    }
}

#[test]
fn ctrl_c_at_the_confirmation_prompt_aborts_and_changes_nothing() {
    let Some(lab) = Lab::up("confirm_ctrl_c", 115, 1, &[]) else {
        return;
    };
    let env = Env::new();
    let pb = crate::common::runs::write_playbook(
        env.state.path(),
        "pb.toml",
        "name = \"x\"\n[[step]]\nname = \"mark\"\nkind = \"line\"\npath = \"/etc/pvefleet-test\"\nline = \"x\"\n",
    );
    let out = env.state.path().join("exit");
    let cmd = format!(
        "PVEFLEET_STATE_DIR={} {} -i {} run {}; echo $? > {}; sleep 30",
        env.state.path().display(),
        env!("CARGO_BIN_EXE_pvefleet"),
        lab.inventory().display(),
        pb.display(),
        out.display()
    );
    let term = crate::common::tmux::Tmux::start("confirm", 120, 40, &cmd);
    let mut screen = String::new();
    for _ in 0..80 {
        std::thread::sleep(std::time::Duration::from_millis(250));
        screen = term.capture(false, 0);
        if screen.contains("[y/N]") {
            break;
        }
    }
    assert!(screen.contains("Apply x to 1 node(s)? [y/N]"), "{screen}");
    term.keys("C-c");
    for _ in 0..40 {
        if out.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert_eq!(std::fs::read_to_string(&out).unwrap().trim(), "130");
    assert_eq!(
        lab.ssh("pve1", "test -e /etc/pvefleet-test").0,
        1,
        "nothing done"
    );
    assert!(
        !env.state.path().join("runs").exists(),
        "no run was started"
    );
}

#[test]
fn a_file_step_writes_a_megabyte_and_rollback_removes_it() {
    let Some(lab) = Lab::up("file_stdin", 116, 1, &[]) else {
        return;
    };
    let env = Env::new();
    // 1 MiB of content: far over the ~128 KiB a single command argument may hold.
    let line = "0123456789abcdef".repeat(4) + "\n";
    let content = line.repeat(1 << 14);
    assert!(content.len() > 1 << 20);
    let pb = crate::common::runs::write_playbook(
        env.state.path(),
        "pb.toml",
        &format!(
            "name = \"big\"\n[vars]\nbig = \"\"\"\n{content}\"\"\"\n[[step]]\nname = \"big file\"\nkind = \"file\"\npath = \"/etc/pvefleet-big\"\ncontent = \"{{{{ big }}}}\"\nmode = \"0640\"\n"
        ),
    );
    let (code, v) = env.apply(&lab, &pb, &[]);
    assert_eq!(code, Some(0), "{v}");
    let want = md5_of(content.as_bytes());
    let got = lab.sh(
        "pve1",
        "md5sum < /etc/pvefleet-big | cut -d' ' -f1; stat -c %a /etc/pvefleet-big",
    );
    assert_eq!(got, format!("{want}\n640\n"));
    let out = env.run(&lab, &["rollback", v["run"].as_str().unwrap(), "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        lab.ssh("pve1", "test -e /etc/pvefleet-big").0,
        1,
        "created by the run: removed"
    );
}

/// MD5 (hex) by the machine's md5sum (no extra crate for a test).
fn md5_of(bytes: &[u8]) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("md5sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    text(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// A run that halted with its node down left the cluster changed: a guest moved away, a guest
/// shut down, HA maintenance on. Once the node is back, rollback puts all of it back (and the
/// file the run wrote), and journals each.
#[test]
fn rollback_puts_back_the_guests_and_maintenance_a_halted_run_left() {
    let Some(lab) = Lab::up("rollback_cluster_state", 146, 3, &[]) else {
        return;
    };
    let env = Env::new();
    let pb = crate::common::runs::write_playbook(
        env.state.path(),
        "pb.toml",
        "name = \"drain\"\n[strategy]\nmode = \"rolling\"\n[[step]]\nname = \"mark\"\nkind = \"line\"\npath = \"/etc/pvefleet-test\"\nline = \"x\"\n[[step]]\nname = \"reboot\"\nkind = \"reboot\"\ndrain = true\ntimeout = \"8s\"\non_change = [\"mark\"]\n",
    );
    lab.fault("pve1", &["guest", "101", "name=web", "mem=1024"]);
    lab.fault("pve1", &["guest", "102", "name=media", "hostpci"]);
    lab.fault("pve1", &["ha"]);
    lab.fault("pve1", &["no-return"]);
    let (code, v) = env.apply(&lab, &pb, &["-l", "pve1", "--guests", "shutdown"]);
    assert_eq!(code, Some(2), "{v}");
    assert!(
        v["left_on"]
            .to_string()
            .contains("HA maintenance left ON for pve1"),
        "{v}"
    );
    assert_ne!(lab.guest(101).0, "pve1", "moved away");
    assert_eq!(lab.guest(102), ("pve1".into(), "stopped".into()));
    // `runs show` says what the run left, and the two ways to settle it.
    let show = text(&env.run(&lab, &["runs", "show", &env.run_id()]).stdout);
    let pve1 = show
        .lines()
        .find(|l| l.trim_start().starts_with("pve1 "))
        .unwrap_or("");
    assert!(
        pve1.contains("HA maintenance ON")
            && pve1.contains("qm 101 (web) moved to pve")
            && pve1.contains("(belongs on pve1)")
            && pve1.contains("shut down: qm 102 (media)"),
        "{show}"
    );
    assert!(show.contains("`pvefleet rollback "), "{show}");
    lab.clear("pve1", Some("no-return"));
    assert!(lab.wait("pve1", "up", 30));
    let out = env.run(&lab, &["rollback", &env.run_id(), "--yes"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("pve1: HA maintenance off"), "{stdout}");
    assert!(
        stdout.contains("pve1: qm 101 (web) moved back from pve"),
        "{stdout}"
    );
    assert!(
        stdout.contains("pve1: qm 102 (media) started again"),
        "{stdout}"
    );
    assert_eq!(lab.guest(101), ("pve1".into(), "running".into()));
    assert_eq!(lab.guest(102), ("pve1".into(), "running".into()));
    assert_eq!(
        lab.ssh("pve2", "test -e /var/lib/pvelab-cluster/maintenance-pve1")
            .0,
        1,
        "maintenance off"
    );
    assert_eq!(
        lab.ssh("pve1", "test -e /etc/pvefleet-test").0,
        1,
        "the file the run created is gone"
    );
    let ev = env.events();
    for kind in ["guest_returned", "guest_started"] {
        assert!(
            ev.iter().any(|e| e["node"] == "pve1" && e["event"] == kind),
            "{kind} journaled"
        );
    }
    // `runs` and `runs show` say it was rolled back, and the stale "left ON" line is gone.
    let show = text(&env.run(&lab, &["runs", "show", &env.run_id()]).stdout);
    assert!(show.contains("(rolled back)"), "{show}");
    assert!(!show.contains("left on:"), "{show}");
    assert!(
        !show.contains("the cluster is not as the run found it"),
        "{show}"
    );
    let pve1 = show
        .lines()
        .find(|l| l.trim_start().starts_with("pve1 "))
        .unwrap_or("");
    assert!(pve1.contains("rolled back"), "{show}");
    let list = text(&env.run(&lab, &["runs"]).stdout);
    assert!(list.contains("rolled back"), "{list}");
    // A resume of a rolled-back run would apply it again: refused without --force.
    let out = env.run(&lab, &["run", "--resume", &env.run_id(), "--yes"]);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("it was rolled back"),
        "{}",
        text(&out.stderr)
    );
    // The journal now says nothing is left: a second rollback has no guest or maintenance to put back.
    let again = env.run(&lab, &["rollback", &env.run_id(), "--yes"]);
    let stdout = text(&again.stdout);
    assert!(
        !stdout.contains("moved back") && !stdout.contains("maintenance off"),
        "{stdout}"
    );
}

/// `runs prune` keeps what can still be rolled back unless `--force`, and removes a pruned run's
/// backups on the nodes with its journal; the kept run still rolls back.
#[test]
fn runs_prune_keeps_rollback_possible_and_removes_backups_with_the_run() {
    let Some(lab) = Lab::up("runs_prune", 57, 1, &[]) else {
        return;
    };
    let env = Env::new();
    let pb = crate::common::runs::write_playbook(
        env.state.path(),
        "pb.toml",
        "name = \"mark\"\n[vars]\nmarker = \"a\"\n[[step]]\nname = \"mark\"\nkind = \"line\"\npath = \"/etc/pvefleet-test\"\nline = \"{{ marker }}\"\n",
    );
    let pb = pb.to_str().unwrap();
    lab.sh("pve1", "echo base > /etc/pvefleet-test");
    let (code, first) = env.json(&lab, &["run", "--yes", pb]);
    assert_eq!(code, Some(0), "{first}");
    let old = first["run"].as_str().unwrap().to_string();
    std::thread::sleep(std::time::Duration::from_millis(1100)); // run ids have second resolution
    let (code, second) = env.json(&lab, &["run", "--yes", "-e", "marker=b", pb]);
    assert_eq!(code, Some(0), "{second}");
    let new = second["run"].as_str().unwrap().to_string();
    let backups = |id: &str| {
        lab.ssh("pve1", &format!("test -d /var/lib/pvefleet/backups/{id}"))
            .0
            == 0
    };
    assert!(backups(&old) && backups(&new));

    let out = env.run(&lab, &["runs", "prune"]);
    assert_eq!(out.status.code(), Some(64), "say which runs");
    let out = env.run(&lab, &["runs", "prune", "--keep", "1"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&format!("{old}: kept: it can still be rolled back")));
    assert!(env.state.path().join("runs").join(&old).exists());

    let out = env.run(&lab, &["runs", "prune", "--keep", "1", "--force"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(&format!("{old}: pruned")),
        "{}",
        text(&out.stdout)
    );
    assert!(!env.state.path().join("runs").join(&old).exists());
    assert!(!backups(&old), "its backups on the node went with it");
    assert!(backups(&new), "the kept run's backups stay");
    let out = env.run(&lab, &["rollback", &new, "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}
