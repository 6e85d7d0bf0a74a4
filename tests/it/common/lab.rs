//! The simulated Proxmox lab (`tests/lab/lab`) from Rust: one lab per test, always torn down.
//!
//! Each test picks its own `net` (the second octet of the nodes' 127.x addresses), so tests and
//! test binaries run in parallel without sharing nodes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::sshd::require_root;

/// A running lab; `lab down` runs on drop, whatever happened in the test.
pub struct Lab {
    /// Scratch directory holding the lab (inventory, keys, node state).
    pub dir: tempfile::TempDir,
    /// Held for the lab's life: one lab per `net` on this machine, whichever checkout or test
    /// binary starts it (two work trees running the same test would otherwise share addresses).
    _net_lock: std::fs::File,
}

/// Take the machine-wide lock of `net` (`/run/lock/pvefleet-lab-net-NET`), waiting while another
/// lab holds it; the kernel drops it with the file, also when the test process dies.
fn lock_net(net: u8) -> std::fs::File {
    use std::os::fd::AsRawFd;
    let dir = Path::new("/run/lock");
    let path = if dir.is_dir() {
        dir.to_path_buf()
    } else {
        std::env::temp_dir()
    }
    .join(format!("pvefleet-lab-net-{net}"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    // SAFETY: flock on a descriptor this function owns; it blocks until the lock is free.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(
        rc,
        0,
        "flock {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    file
}

fn lab_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lab/lab")
}

impl Lab {
    /// Start `n` nodes on `127.<net>.0.x` with extra `lab up` arguments (`--profile ...`).
    /// Without root it panics (see [`require_root`]), except that `PVEFLEET_SKIP_LAB=1` outside
    /// CI makes it print a SKIPPED line and return `None`.
    pub fn up(test: &str, net: u8, n: usize, extra: &[&str]) -> Option<Lab> {
        if !require_root(test) {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("pvefleet-lab")
            .tempdir()
            .unwrap();
        let _net_lock = lock_net(net);
        let lab = Lab { dir, _net_lock };
        let mut args = vec![
            "up".to_string(),
            n.to_string(),
            "--net".into(),
            net.to_string(),
            "--boot-delay".into(),
            "1".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let out = lab.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(
            out.status.success(),
            "lab up failed: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        Some(lab)
    }

    /// Run `tests/lab/lab ARGS --dir DIR`.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(lab_script())
            .args(args)
            .arg("--dir")
            .arg(self.dir.path())
            .output()
            .expect("run tests/lab/lab")
    }

    fn run_ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "lab {args:?} failed: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// The inventory the lab wrote.
    pub fn inventory(&self) -> PathBuf {
        self.dir.path().join("inventory.toml")
    }

    /// Run `cmd` on `node` as root with the OpenSSH client: (exit code, stdout, stderr).
    pub fn ssh(&self, node: &str, cmd: &str) -> (i32, String, String) {
        let out = self.run(&["exec", node, cmd]);
        (
            out.status.code().unwrap_or(-1),
            text(&out.stdout),
            text(&out.stderr),
        )
    }

    /// Run `cmd` on `node`, which must succeed; its stdout.
    pub fn sh(&self, node: &str, cmd: &str) -> String {
        let (code, out, err) = self.ssh(node, cmd);
        assert_eq!(code, 0, "{node}: `{cmd}` failed: {out}{err}");
        out
    }

    /// `lab fault NODE ARGS...`
    pub fn fault(&self, node: &str, args: &[&str]) {
        let mut a = vec!["fault", node];
        a.extend_from_slice(args);
        self.run_ok(&a);
    }

    /// `lab clear NODE [KIND]`
    pub fn clear(&self, node: &str, kind: Option<&str>) {
        let mut a = vec!["clear", node];
        a.extend(kind);
        self.run_ok(&a);
    }

    /// Reboot `node` and wait until it is up again.
    pub fn reboot_and_wait(&self, node: &str) {
        self.run_ok(&["reboot", node]);
        self.run_ok(&["wait", node, "down", "--timeout", "20"]);
        self.run_ok(&["wait", node, "up", "--timeout", "60"]);
    }

    /// Wait until `node` is `up` or `down`.
    pub fn wait(&self, node: &str, state: &str, timeout_s: u32) -> bool {
        self.run(&["wait", node, state, "--timeout", &timeout_s.to_string()])
            .status
            .success()
    }

    /// How many times the node has booted so far (the distinct boot ids in its journal: the
    /// first boot and each reboot).
    pub fn boots(&self, node: &str) -> usize {
        self.sh(
            node,
            "cut -d'|' -f2 /var/lib/pvelab/journal | sort -u | wc -l",
        )
        .trim()
        .parse()
        .unwrap()
    }

    /// Which node's config holds guest ID (in the lab's shared /etc/pve), and its run state.
    pub fn guest(&self, id: u32) -> (String, String) {
        let pve = self.dir.path().join("pve/nodes");
        for node in std::fs::read_dir(&pve).unwrap().flatten() {
            for dir in ["qemu-server", "lxc"] {
                if node.path().join(dir).join(format!("{id}.conf")).exists() {
                    let state = std::fs::read_to_string(
                        self.dir.path().join(format!("cluster/guests/{id}")),
                    )
                    .unwrap_or_default();
                    return (
                        node.file_name().to_string_lossy().into_owned(),
                        state.trim().to_string(),
                    );
                }
            }
        }
        panic!("guest {id} has no config in {}", pve.display());
    }

    /// The lab's own record of what happened to guests and Ceph (tests/lab/README.md), each line
    /// without its timestamp: `NODE EVENT ARGS...`. The lab writes the file at `up`, so a
    /// missing one fails here (an `all(!contains)` over it cannot pass on nothing).
    pub fn events(&self) -> Vec<String> {
        let path = self.dir.path().join("cluster/events");
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("the lab's event record {}: {e}", path.display()))
            .lines()
            .map(|l| l.split_once(' ').map_or(l, |(_, rest)| rest).to_string())
            .collect()
    }

    /// The node's current boot id.
    pub fn boot_id(&self, node: &str) -> String {
        self.sh(node, "cat /proc/sys/kernel/random/boot_id")
            .trim()
            .to_string()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.run(&["down"]);
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Two tests on one `net` are not wrong (the net's lock serialises them), but the second one
/// holds a test thread idle until the first ends: a 1-node lab test once waited 300 s behind a
/// real-Ceph one. Every literal `net` of a `Lab::up` call in the suite is its own.
#[test]
fn every_lab_test_has_a_net_of_its_own() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it");
    let mut seen: std::collections::BTreeMap<u32, String> = Default::default();
    let mut clashes = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .collect();
    files.sort();
    assert!(files.len() > 10, "{}: the test files", dir.display());
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for (at, _) in text.match_indices("Lab::up(") {
            // The second argument: after the first comma, up to the next one.
            let rest = &text[at + "Lab::up(".len()..];
            let Some((_, after)) = rest.split_once(',') else {
                continue;
            };
            let Some((net, _)) = after.split_once(',') else {
                continue;
            };
            let Ok(net) = net.trim().parse::<u32>() else {
                continue; // a variable: its value is set elsewhere
            };
            let line = text[..at].matches('\n').count() + 1;
            let here = format!("{}:{line}", f.file_name().unwrap().to_string_lossy());
            if let Some(first) = seen.insert(net, here.clone()) {
                clashes.push(format!("net {net}: {first} and {here}"));
            }
        }
    }
    assert!(seen.len() > 100, "the Lab::up calls were found: {seen:?}");
    assert!(clashes.is_empty(), "{clashes:#?}");
}
