//! Playbook runs of the built binary against a lab: one private state directory (the run
//! journals) per test, the lab's inventory, and helpers to read a run's journal.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use super::bin::{command, json_of};
use super::lab::Lab;

/// A test's own state directory (`PVEFLEET_STATE_DIR`).
pub struct Env {
    /// The directory.
    pub state: tempfile::TempDir,
}

impl Default for Env {
    fn default() -> Self {
        Env::new()
    }
}

impl Env {
    /// A fresh state directory.
    pub fn new() -> Env {
        Env {
            state: tempfile::tempdir().unwrap(),
        }
    }

    /// `pvefleet -i LAB ARGS` with this state directory, the environment scrubbed.
    pub fn cmd(&self, lab: &Lab, args: &[&str]) -> Command {
        let mut c = command();
        c.arg("-i")
            .arg(lab.inventory())
            .args(args)
            .env("PVEFLEET_STATE_DIR", self.state.path())
            .stdin(Stdio::null());
        c
    }

    /// Run and wait.
    pub fn run(&self, lab: &Lab, args: &[&str]) -> Output {
        self.cmd(lab, args).output().expect("run pvefleet")
    }

    /// Run with `--json`: exit code and the document.
    pub fn json(&self, lab: &Lab, args: &[&str]) -> (Option<i32>, serde_json::Value) {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let out = self.run(lab, &a);
        (out.status.code(), json_of(&out))
    }

    /// `pvefleet -i LAB ARGS` (`args` as shell words) with this state directory on a tmux
    /// terminal of `columns` x `rows`, then its exit code after
    /// [`super::tmux::EXIT_MARK`] (read it with [`super::tmux::Tmux::exit_code`]); the
    /// session stays a minute after for the captures.
    pub fn in_tmux(
        &self,
        lab: &Lab,
        tag: &str,
        columns: u16,
        rows: u16,
        args: &str,
    ) -> super::tmux::Tmux {
        let cmd = format!(
            "PVEFLEET_STATE_DIR={} {} -i {} {args}; echo {}$?; sleep 60",
            self.state.path().display(),
            env!("CARGO_BIN_EXE_pvefleet"),
            lab.inventory().display(),
            super::tmux::EXIT_MARK
        );
        super::tmux::Tmux::start(tag, columns, rows, &cmd)
    }

    /// Start without waiting (stdout and stderr piped).
    pub fn spawn(&self, lab: &Lab, args: &[&str]) -> Child {
        self.cmd(lab, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pvefleet")
    }

    /// The run directories so far.
    pub fn runs(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.state.path().join("runs"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }

    /// The only run's directory.
    pub fn run_dir(&self) -> PathBuf {
        let runs = self.runs();
        assert_eq!(runs.len(), 1, "expected exactly one run: {runs:?}");
        runs[0].clone()
    }

    /// The only run's id.
    pub fn run_id(&self) -> String {
        self.run_dir()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }

    /// The run's `run.json`.
    pub fn meta(&self) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(self.run_dir().join("run.json")).unwrap())
            .unwrap()
    }

    /// The run's events, one JSON value each.
    pub fn events(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.run_dir().join("events.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// A copy of the test playbook `tests/fixtures/playbooks/NAME` in this environment's state
    /// directory (`pb.toml`: a test may change it, as a resume's checks need).
    pub fn playbook(&self, name: &str) -> PathBuf {
        write_playbook(self.state.path(), "pb.toml", &fixture_playbook(name))
    }

    /// `pvefleet --json run --yes ARGS... PLAYBOOK`: exit code and the document.
    pub fn apply(&self, lab: &Lab, pb: &Path, args: &[&str]) -> (Option<i32>, serde_json::Value) {
        let mut a = vec!["run", "--yes"];
        a.extend_from_slice(args);
        a.push(pb.to_str().expect("a UTF-8 path"));
        self.json(lab, &a)
    }

    /// Wait (up to `secs`) until an event matches.
    pub fn wait_event(&self, secs: u64, f: impl Fn(&serde_json::Value) -> bool) -> bool {
        let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        while std::time::Instant::now() < end {
            // `runs/` is made a moment before the run's own directory: wait for that one.
            if self.runs().len() == 1 && self.events().iter().any(&f) {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        false
    }
}

/// The text of a test playbook, `tests/fixtures/playbooks/NAME`.
pub fn fixture_playbook(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/playbooks")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A playbook of the repository.
pub fn shipped(name: &str) -> String {
    format!("{}/playbooks/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Write a playbook into `dir`.
pub fn write_playbook(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Send a signal to a child.
pub fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {}", child.id());
}

/// How many steps of the node at `index` of a run's JSON report `changed`.
pub fn changed_steps(v: &serde_json::Value, index: usize) -> usize {
    v["nodes"][index]["steps"]
        .as_array()
        .unwrap_or_else(|| panic!("no steps for node {index}: {v}"))
        .iter()
        .filter(|s| s["status"] == "changed")
        .count()
}

/// Every finding of `pvefleet audit` that is a problem (WARN or FAIL), as "GRADE CHECK NODESET".
pub fn audit_problems(env: &Env, lab: &Lab) -> Vec<String> {
    let (_, v) = env.json(lab, &["audit"]);
    v["findings"]
        .as_array()
        .unwrap_or_else(|| panic!("no findings: {v}"))
        .iter()
        // SKIP is "not applicable here" (ceph.health on a lab without Ceph), not a problem.
        .filter(|g| g["finding"]["grade"] != "SKIP")
        .map(|g| {
            format!(
                "{} {} {}",
                g["finding"]["grade"].as_str().unwrap(),
                g["finding"]["check"].as_str().unwrap(),
                g["nodeset"].as_str().unwrap()
            )
        })
        .collect()
}
