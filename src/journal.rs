//! Run records on disk: what a playbook run planned, every event as it happened, every backup
//! taken on a node. Append-only JSON lines, synced at each write, so killing the controller loses
//! nothing already done and leaves the journal readable; `--resume` and `rollback` read it back.
//!
//! Location: `$PVEFLEET_STATE_DIR/runs/<id>/`, else `$XDG_STATE_HOME/pvefleet/runs/<id>/`, else
//! `~/.local/state/pvefleet/runs/<id>/`.

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// One file a run changed on a node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupRecord {
    /// Node.
    pub node: String,
    /// The file changed.
    pub path: String,
    /// Where its previous content is on the node.
    pub backup: String,
    /// Whether the file existed before (if not, rollback removes it).
    pub existed: bool,
    /// Command that makes the change effective (update-grub ...), re-run after a restore.
    pub refresh: Option<String>,
}

/// A run's summary for `pvefleet runs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunMeta {
    /// Run id.
    pub id: String,
    /// Playbook path.
    pub playbook: String,
    /// Inventory source.
    pub inventory: String,
    /// Targeted nodes.
    pub nodes: Vec<String>,
    /// Start, RFC 3339.
    pub started: String,
    /// `running`, `ok`, `failed`, `halted`, `interrupted`.
    pub status: String,
    /// `--limit` used.
    pub limit: Option<String>,
}

/// An open run journal (cheap to clone; writes are serialised).
#[derive(Clone)]
pub struct Journal {
    /// The run's directory.
    pub dir: PathBuf,
    lock: Arc<Mutex<()>>,
}

/// The directory holding all runs.
pub fn runs_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("PVEFLEET_STATE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("runs");
    }
    if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("pvefleet/runs");
    }
    crate::inventory::home_dir()
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".local/state/pvefleet/runs")
}

/// A new run id: UTC time plus the process id (sortable, unique on this machine).
pub fn new_run_id() -> String {
    let t = crate::audit::rfc3339_now().replace(['-', ':'], "");
    format!("{}-{:x}", t.trim_end_matches('Z'), std::process::id())
}

fn append(path: &PathBuf, value: &serde_json::Value) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let mut line = serde_json::to_string(value)?;
    line.push('\n');
    f.write_all(line.as_bytes())?;
    f.sync_data()
}

impl Journal {
    /// Create the record of a new run.
    pub fn create(meta: &RunMeta) -> std::io::Result<Journal> {
        let dir = runs_dir().join(&meta.id);
        std::fs::create_dir_all(&dir)?;
        let j = Journal {
            dir,
            lock: Arc::new(Mutex::new(())),
        };
        j.write_meta(meta)?;
        Ok(j)
    }

    /// Open an existing run.
    pub fn open(id: &str) -> std::io::Result<Journal> {
        let dir = runs_dir().join(id);
        if !dir.join("run.json").exists() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no run {id} in {}", runs_dir().display()),
            ));
        }
        Ok(Journal {
            dir,
            lock: Arc::new(Mutex::new(())),
        })
    }

    /// The run's metadata.
    pub fn meta(&self) -> std::io::Result<RunMeta> {
        let text = std::fs::read_to_string(self.dir.join("run.json"))?;
        serde_json::from_str(&text).map_err(std::io::Error::other)
    }

    /// Rewrite the metadata (status changes), atomically.
    pub fn write_meta(&self, meta: &RunMeta) -> std::io::Result<()> {
        let tmp = self.dir.join("run.json.tmp");
        std::fs::write(&tmp, serde_json::to_string_pretty(meta)?)?;
        std::fs::rename(tmp, self.dir.join("run.json"))
    }

    /// Set the run's status.
    pub fn set_status(&self, status: &str) {
        let _g = self.lock.lock().expect("journal lock");
        if let Ok(mut m) = self.meta() {
            m.status = status.to_string();
            let _ = self.write_meta(&m);
        }
    }

    /// Record an event.
    pub fn event(&self, node: &str, kind: &str, data: serde_json::Value) {
        let _g = self.lock.lock().expect("journal lock");
        let v = serde_json::json!({"time": crate::audit::rfc3339_now(), "node": node, "event": kind, "data": data});
        if let Err(e) = append(&self.dir.join("events.jsonl"), &v) {
            tracing::error!("journal {}: {e}", self.dir.display());
        }
    }

    /// Record a backup.
    pub fn backup(
        &self,
        node: &str,
        path: &str,
        backup: &str,
        existed: bool,
        refresh: Option<&str>,
    ) {
        let _g = self.lock.lock().expect("journal lock");
        let rec = BackupRecord {
            node: node.into(),
            path: path.into(),
            backup: backup.into(),
            existed,
            refresh: refresh.map(str::to_string),
        };
        if let Err(e) = append(
            &self.dir.join("backups.jsonl"),
            &serde_json::to_value(&rec).unwrap_or_default(),
        ) {
            tracing::error!("journal {}: {e}", self.dir.display());
        }
    }

    /// Save a document (`plan.json`, `result.json`).
    pub fn save(&self, name: &str, value: &serde_json::Value) {
        let _ = std::fs::write(
            self.dir.join(name),
            serde_json::to_string_pretty(value).unwrap_or_default(),
        );
    }

    /// All events (unreadable lines are skipped: a line cut by a kill is the last one).
    pub fn events(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.join("events.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Nodes whose run finished successfully.
    pub fn done_nodes(&self) -> HashSet<String> {
        self.events()
            .iter()
            .filter(|e| e["event"] == "node_done")
            .filter_map(|e| e["node"].as_str().map(str::to_string))
            .collect()
    }

    /// Every backup taken, in order.
    pub fn backups(&self) -> Vec<BackupRecord> {
        std::fs::read_to_string(self.dir.join("backups.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

/// Every recorded run, newest first.
pub fn list() -> Vec<RunMeta> {
    let mut out: Vec<RunMeta> = std::fs::read_dir(runs_dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("run.json")).ok())
        .filter_map(|t| serde_json::from_str(&t).ok())
        .collect();
    out.sort_by(|a, b| b.id.cmp(&a.id));
    out
}
