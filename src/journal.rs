//! Run records on disk: what a playbook run was asked to do (everything needed to resume it),
//! every event as it happened, every backup taken on a node. It owns the on-disk format and its
//! durability; it knows nothing of SSH or of how steps run.
//!
//! Durability: `events.jsonl` and `backups.jsonl` are append-only JSON lines written by one
//! writer thread, which syncs each batch to disk before it acknowledges it, so an awaited
//! [`Journal::record`] has reached the disk (a SIGKILL loses nothing already recorded). Async
//! callers await an acknowledgement instead of taking a blocking lock, so nodes never queue on
//! each other inside the runtime. `run.json` is replaced atomically (temporary file, fsync,
//! rename, fsync of the directory). One process at a time drives a run: it holds an exclusive
//! `flock` on `lock` in the run's directory.
//!
//! Location: `$PVEFLEET_STATE_DIR/runs/<id>/`, else `$XDG_STATE_HOME/pvefleet/runs/<id>/`, else
//! `~/.local/state/pvefleet/runs/<id>/`; the state directory is made mode 0700.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};

pub use crate::vocab::{BalancerState, MaintenanceState, NooutState, Phase, RunStatus};
use serde::{Deserialize, Serialize};

use crate::outcome::{GuestPolicy, StepResult};

/// Errors of the run journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// No such run.
    #[error("no run {id} in {dir}")]
    NotFound {
        /// The id asked for.
        id: String,
        /// Where runs are kept.
        dir: String,
    },
    /// A run id that is not one (a path, `..`).
    #[error(
        "{0:?} is not a run id (expected something like 20261124T130501-1a2b, see `pvefleet runs`)"
    )]
    BadId(String),
    /// Another process drives the run.
    #[error("run {id} is being driven by another pvefleet process{pid}; wait for it to end or stop it first")]
    Locked {
        /// Run id.
        id: String,
        /// ` (pid N)` when known.
        pid: String,
    },
    /// A file of the journal is not what pvefleet wrote: a line (or `run.json`) that does not
    /// parse, other than a last line cut short by a kill.
    #[error("run journal {path}:{line}: {why}; the journal cannot be read whole, so nothing is done from it (move the file aside to look at it)")]
    Corrupt {
        /// The file.
        path: String,
        /// The line, counting from 1.
        line: usize,
        /// What the parser said.
        why: String,
    },
    /// A file of the journal could not be read or written.
    #[error("run journal {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

fn io_err(path: &Path, source: std::io::Error) -> JournalError {
    JournalError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Where a node stopped, for `runs show` and `run.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StopPoint {
    /// Node.
    pub node: String,
    /// Step name, when inside a step.
    pub step: Option<String>,
    /// Reboot state (or other detail) inside the step.
    pub state: Option<String>,
}

/// A run's parameters and status (`run.json`): everything `--resume` needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunMeta {
    /// Run id.
    pub id: String,
    /// Playbook path (absolute).
    pub playbook: String,
    /// SHA-1 of the playbook's content when the run started (a copy is `playbook.toml`).
    #[serde(default)]
    pub playbook_sha1: String,
    /// Inventory source, as shown to the operator.
    pub inventory: String,
    /// Inventory file (absolute), when the inventory came from a file.
    #[serde(default)]
    pub inventory_path: Option<PathBuf>,
    /// Targeted nodes.
    pub nodes: Vec<String>,
    /// Start, RFC 3339.
    pub started: String,
    /// `running`, `ok`, `failed`, `halted`, `interrupted`, `paused: outside window`,
    /// `paused: after N node(s) (--pause-after)`, `paused: not confirmed`,
    /// `paused: backup running`, `paused: backups could not be told`.
    pub status: RunStatus,
    /// `--limit` used.
    pub limit: Option<String>,
    /// `-e KEY=VALUE` items, as given.
    #[serde(default)]
    pub extra_vars: Vec<String>,
    /// `--guests`.
    #[serde(default = "default_guests")]
    pub guests: GuestPolicy,
    /// `--allow-maintained`: nodes already in HA maintenance (someone else's) may be rebooted;
    /// their maintenance is never switched off by the run.
    #[serde(default)]
    pub allow_maintained: bool,
    /// `--forks`.
    #[serde(default)]
    pub forks: Option<u16>,
    /// `--timeout`, milliseconds.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// `--max-migrations`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_migrations: Option<u32>,
    /// `--bwlimit`, KiB/s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bwlimit_kib: Option<u64>,
    /// Where the run stopped (set when it stops short).
    #[serde(default)]
    pub stopped_at: Vec<StopPoint>,
    /// Things left switched on on purpose (HA maintenance of a node that is down ...).
    #[serde(default)]
    pub left_on: Vec<String>,
    /// When the run last ended, RFC 3339.
    #[serde(default)]
    pub ended: Option<String>,
    /// `--window`s, as given (a resume keeps them unless given new ones).
    #[serde(default)]
    pub windows: Vec<String>,
    /// Why the run paused, when its status is `paused: ...`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<String>,
}

impl RunMeta {
    /// The playbook by name: its file name without the extension (`upgrade` for
    /// `.../upgrade.toml`).
    pub fn playbook_name(&self) -> String {
        std::path::Path::new(&self.playbook)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.playbook.clone())
    }
}

fn default_guests() -> GuestPolicy {
    GuestPolicy::Refuse
}

/// One file a run changed on a node. Written twice: `phase = "intent"` before the remote write
/// (so a crash in between cannot lose the original), then `phase = "written"` with the SHA-1 of
/// the content the run left (or `removed`), which rollback compares to detect drift.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupRecord {
    /// Node.
    pub node: String,
    /// The file changed.
    pub path: String,
    /// Where its previous content is on the node.
    pub backup: String,
    /// Whether the file existed before the run (if not, rollback removes it).
    pub existed: bool,
    /// Command that makes the change effective (update-grub ...), re-run after a restore.
    pub refresh: Option<String>,
    /// `intent` or `written`.
    #[serde(default = "written")]
    pub phase: Phase,
    /// SHA-1 (hex) of what the run wrote; `None` when it removed the file.
    #[serde(default)]
    pub written_sha1: Option<String>,
}

fn written() -> Phase {
    Phase::Written
}

/// A command that undoes what a `run` step changed (`undo` in the playbook), recorded before
/// the step runs (`phase = "intent"`) and after it changed something (`phase = "applied"`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UndoRecord {
    /// Node.
    pub node: String,
    /// Step name.
    pub step: String,
    /// The undo command, rendered.
    pub command: String,
    /// `intent` or `applied` (or `unchanged`: the step changed nothing, no undo needed).
    pub phase: Phase,
}

/// A guest the run moved or stopped, to be put back.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct GuestRef {
    /// `qm` or `pct`.
    pub kind: String,
    /// VMID.
    pub vmid: u32,
    /// Name (display only).
    pub name: String,
}

/// What happened, as recorded in `events.jsonl` (one JSON object a line:
/// `{"time": ..., "node": ..., "event": ..., "data": {...}}`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", content = "data", rename_all = "snake_case")]
pub enum Event {
    /// A process started (or resumed) driving the run.
    RunStarted {
        /// Its pid.
        pid: u32,
        /// Whether it resumed an earlier run.
        resumed: bool,
    },
    /// Work on a node began.
    NodeStarted {},
    /// A step is about to run (`index` counts from 0).
    StepStarted {
        /// Step index.
        index: usize,
        /// Step name.
        step: String,
    },
    /// A step ended.
    StepDone {
        /// Step index.
        index: usize,
        /// Its result.
        result: StepResult,
    },
    /// The reboot of a node reached a state.
    Reboot {
        /// Index of the reboot step.
        index: usize,
        /// State reached.
        state: String,
        /// Boot id before the reboot.
        #[serde(default)]
        old_boot_id: Option<String>,
        /// Detail.
        #[serde(default)]
        detail: Option<String>,
    },
    /// HA node maintenance switched on (`on`) or off, or left on on purpose.
    Maintenance {
        /// `on`, `off`, `left-on`, `found-on`.
        state: MaintenanceState,
        /// Why (for `left-on`).
        #[serde(default)]
        why: Option<String>,
    },
    /// A guest was stopped by the run (`phase = "intent"` before, `"done"` after).
    GuestStopped {
        /// The guest.
        guest: GuestRef,
        /// `intent` or `done`.
        phase: Phase,
    },
    /// A guest the run stopped was started again.
    GuestStarted {
        /// The guest.
        guest: GuestRef,
    },
    /// A guest was migrated away from the node being drained (`intent` before, `done` after).
    GuestMoved {
        /// The guest.
        guest: GuestRef,
        /// Its node before the drain (where it returns).
        from: String,
        /// Where it went.
        to: String,
        /// `intent` or `done`.
        phase: Phase,
        /// Its memory, bytes, where known (the plan's migration time per GiB is learnt from it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        maxmem: Option<u64>,
    },
    /// A moved guest is about to be migrated back to its node (intent, before `qm migrate`; the
    /// migration runs detached and may end after a killed controller, which a resume settles).
    GuestReturning {
        /// The guest.
        guest: GuestRef,
        /// Where it is (the migration's source).
        from: String,
        /// Its node.
        to: String,
    },
    /// A moved guest is back on its node.
    GuestReturned {
        /// The guest.
        guest: GuestRef,
        /// Its node.
        to: String,
    },
    /// Ceph's noout for the node: `set` (`scope` host or cluster), `unset`, `left-set`.
    Noout {
        /// `set`, `unset`, `left-set`, `found-set`.
        state: NooutState,
        /// `host` or `cluster`.
        scope: String,
        /// Why (for `left-set`).
        #[serde(default)]
        why: Option<String>,
    },
    /// The cluster's HA rebalancing keys in `crs` (`/etc/pve/datacenter.cfg`), paused for the
    /// run and restored at its end (journaled under `-`: the cluster's, not a node's).
    Balancers {
        /// `pausing` (intent), `paused`, `not-paused`, `restored`, `kept`.
        state: BalancerState,
        /// The cluster (as the inventory names it).
        #[serde(default)]
        cluster: Option<String>,
        /// The node the file was read and written through.
        via: String,
        /// Key -> its value before the run, as written (`kept`: the value found instead).
        keys: BTreeMap<String, String>,
        /// Why (for `not-paused` and `kept`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        why: Option<String>,
    },
    /// ProxLB's systemd unit on the node (journaled under the node's name), paused for the run
    /// and put back at its end (see `maintenance::proxlb`).
    Proxlb {
        /// `pausing` (intent), `paused`, `not-paused`, `restored`, `kept`.
        state: BalancerState,
        /// The run stops it (it was running).
        stop: bool,
        /// The run disables it (it was enabled: it would start at the node's boot).
        disable: bool,
        /// Why (for `not-paused` and `kept`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        why: Option<String>,
    },
    /// The node's run ended well.
    NodeDone {
        /// It was rebooted.
        rebooted: bool,
    },
    /// The node's run failed.
    NodeFailed {
        /// Why.
        error: String,
    },
    /// The node's run was interrupted.
    NodeInterrupted {
        /// Where.
        step: Option<String>,
        /// Reboot state, if inside a reboot.
        state: Option<String>,
    },
    /// The driving process stopped the run.
    RunStopped {
        /// Final status.
        status: String,
    },
    /// A resume repaired what the run's own detached command left when it was cut off
    /// without an exit status (a step's `repair`, e.g. `dpkg --configure -a`).
    Repaired {
        /// Index of the step whose command was cut off.
        index: usize,
        /// The repair command.
        command: String,
        /// Its exit status and first line of output.
        detail: String,
    },
    /// A rollback ran.
    RolledBack {
        /// Files restored or removed.
        files: usize,
        /// Undo commands run.
        undone: usize,
        /// Everything the run had changed on the node was put back (false: something failed).
        #[serde(default)]
        complete: bool,
    },
}

/// One line of `events.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// RFC 3339 with milliseconds.
    pub time: String,
    /// Node (`-` for the run itself).
    pub node: String,
    /// What happened.
    #[serde(flatten)]
    pub event: Event,
}

/// Now, RFC 3339 UTC with milliseconds.
pub fn now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

enum Ack {
    Async(tokio::sync::oneshot::Sender<std::io::Result<()>>),
    Blocking(mpsc::Sender<std::io::Result<()>>),
}

struct Req {
    file: &'static str,
    line: String,
    ack: Ack,
}

/// The writer thread: appends batches and syncs each file once per batch before acknowledging.
fn writer(dir: PathBuf, rx: mpsc::Receiver<Req>) {
    let mut files: HashMap<&'static str, File> = HashMap::new();
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let mut results: HashMap<&'static str, std::io::Result<()>> = HashMap::new();
        for r in &batch {
            let res = results.entry(r.file).or_insert(Ok(()));
            if res.is_err() {
                continue;
            }
            let f = match files.get_mut(r.file) {
                Some(f) => f,
                None => match std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.join(r.file))
                {
                    Ok(f) => files.entry(r.file).or_insert(f),
                    Err(e) => {
                        *res = Err(e);
                        continue;
                    }
                },
            };
            if let Err(e) = f.write_all(r.line.as_bytes()) {
                *res = Err(e);
            }
        }
        for (name, res) in results.iter_mut() {
            if res.is_ok() {
                if let Some(f) = files.get(name) {
                    if let Err(e) = f.sync_data() {
                        *res = Err(e);
                    }
                }
            }
        }
        for r in batch {
            let res = match &results[r.file] {
                Ok(()) => Ok(()),
                Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
            };
            match r.ack {
                Ack::Async(tx) => {
                    let _ = tx.send(res);
                }
                Ack::Blocking(tx) => {
                    let _ = tx.send(res);
                }
            }
        }
    }
}

struct Inner {
    tx: Mutex<mpsc::Sender<Req>>,
    /// Serialises read-modify-write of `run.json` (the run's end and the signal path may meet).
    meta: Mutex<()>,
    /// The run's lock, held while this process drives it.
    _lock: Option<File>,
}

/// An open run journal (cheap to clone).
#[derive(Clone)]
pub struct Journal {
    /// The run's directory.
    pub dir: PathBuf,
    /// Run id.
    pub id: String,
    inner: Arc<Inner>,
}

/// The state directory (holds `runs/`).
pub fn state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("PVEFLEET_STATE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("pvefleet");
    }
    crate::paths::home_dir()
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".local/state/pvefleet")
}

/// The directory holding all runs.
pub fn runs_dir() -> PathBuf {
    state_dir().join("runs")
}

/// A new run id: UTC time plus the process id (sortable, unique on this machine).
pub fn new_run_id() -> String {
    let t = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        .to_string()
        .replace(['-', ':'], "");
    format!("{}-{:x}", t.trim_end_matches('Z'), std::process::id())
}

/// Whether `id` can name a run (no path separators, no `..`).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// SHA-1 of `bytes`, hex.
pub fn sha1_hex(bytes: &[u8]) -> String {
    use sha1::Digest;
    data_encoding::HEXLOWER.encode(&sha1::Sha1::digest(bytes))
}

fn private_dirs(dir: &Path) -> Result<(), JournalError> {
    let root = state_dir();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io_err(dir, e))?;
    // The state directory and runs/ hold backups' locations and run parameters: owner only,
    // also when they existed before with a wider mode.
    for d in [root.clone(), root.join("runs"), dir.to_path_buf()] {
        if d.is_dir() {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| io_err(&d, e))?;
        }
    }
    Ok(())
}

fn lock(dir: &Path, id: &str) -> Result<File, JournalError> {
    let path = dir.join("lock");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| io_err(&path, e))?;
    // SAFETY: flock on a file descriptor we own; no memory is shared with the kernel.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        // The holder writes its pid right after taking the lock: give it a moment.
        let mut pid = String::new();
        for _ in 0..25 {
            pid = std::fs::read_to_string(&path)
                .map(|p| p.trim().to_string())
                .unwrap_or_default();
            if !pid.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let pid = if pid.is_empty() {
            String::new()
        } else {
            format!(" (pid {pid})")
        };
        return Err(JournalError::Locked {
            id: id.to_string(),
            pid,
        });
    }
    // Overwrite in place, then cut: a reader never sees an empty file.
    let line = format!("{}\n", std::process::id());
    use std::os::unix::fs::FileExt;
    f.write_all_at(line.as_bytes(), 0)
        .and_then(|()| f.set_len(line.len() as u64))
        .map_err(|e| io_err(&path, e))?;
    let _ = f.flush();
    Ok(f)
}

/// Whether a process holds the run's lock now (a `running` run whose lock is free was killed).
pub fn is_driven(dir: &Path) -> bool {
    let Ok(f) = std::fs::File::open(dir.join("lock")) else {
        return false;
    };
    // SAFETY: as in `lock`; a shared non-blocking try, released at once.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
    if rc == 0 {
        unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_UN) };
        false
    } else {
        true
    }
}

fn dir_of(id: &str) -> Result<PathBuf, JournalError> {
    if !valid_id(id) {
        return Err(JournalError::BadId(id.to_string()));
    }
    let dir = runs_dir().join(id);
    if !dir.join("run.json").exists() {
        return Err(JournalError::NotFound {
            id: id.to_string(),
            dir: runs_dir().display().to_string(),
        });
    }
    Ok(dir)
}

impl Journal {
    fn start(dir: PathBuf, id: &str, lock: Option<File>) -> Journal {
        let (tx, rx) = mpsc::channel();
        let d = dir.clone();
        std::thread::Builder::new()
            .name("pvefleet-journal".into())
            .spawn(move || writer(d, rx))
            .expect("spawn the journal writer");
        Journal {
            dir,
            id: id.to_string(),
            inner: Arc::new(Inner {
                tx: Mutex::new(tx),
                meta: Mutex::new(()),
                _lock: lock,
            }),
        }
    }

    /// Create the record of a new run (locked by this process), with a copy of the playbook.
    pub fn create(meta: &RunMeta, playbook_text: &str) -> Result<Journal, JournalError> {
        let dir = runs_dir().join(&meta.id);
        private_dirs(&dir)?;
        let l = lock(&dir, &meta.id)?;
        let j = Journal::start(dir, &meta.id, Some(l));
        let copy = j.dir.join("playbook.toml");
        write_atomic(&copy, playbook_text.as_bytes())?;
        j.write_meta(meta)?;
        Ok(j)
    }

    /// Open an existing run to drive it (resume, rollback): takes its lock.
    pub fn open_locked(id: &str) -> Result<Journal, JournalError> {
        let dir = dir_of(id)?;
        check_whole(&dir)?;
        let l = lock(&dir, id)?;
        Ok(Journal::start(dir, id, Some(l)))
    }

    /// Open an existing run to read it (refused when its files cannot be read whole).
    pub fn open(id: &str) -> Result<Journal, JournalError> {
        let dir = dir_of(id)?;
        check_whole(&dir)?;
        Ok(Journal::start(dir, id, None))
    }

    /// The run's metadata.
    pub fn meta(&self) -> Result<RunMeta, JournalError> {
        let p = self.dir.join("run.json");
        let text = std::fs::read_to_string(&p).map_err(|e| io_err(&p, e))?;
        serde_json::from_str(&text).map_err(|e| io_err(&p, std::io::Error::other(e)))
    }

    /// The playbook as it was when the run started.
    pub fn playbook_copy(&self) -> PathBuf {
        self.dir.join("playbook.toml")
    }

    /// Rewrite the metadata atomically and durably.
    pub fn write_meta(&self, meta: &RunMeta) -> Result<(), JournalError> {
        let text = serde_json::to_string_pretty(meta).expect("metadata serialises");
        write_atomic(&self.dir.join("run.json"), text.as_bytes())
    }

    /// Set the run's status and where it stopped (synchronous: used at start, at the end and
    /// from the signal path).
    pub fn set_status(&self, status: RunStatus, stopped_at: Vec<StopPoint>, left_on: Vec<String>) {
        let _one_at_a_time = self.inner.meta.lock().unwrap_or_else(|e| e.into_inner());
        match self.meta() {
            Ok(mut m) => {
                m.status = status;
                m.stopped_at = stopped_at;
                m.left_on = left_on;
                if m.status != RunStatus::Running {
                    m.ended = Some(now());
                }
                if let Err(e) = self.write_meta(&m) {
                    tracing::error!("{e}");
                    eprintln!("pvefleet: {e}");
                }
            }
            Err(e) => {
                tracing::error!("{e}");
                eprintln!("pvefleet: {e}");
            }
        }
    }

    /// Record why the run paused (`None`: it did not).
    pub fn set_paused(&self, why: Option<String>) {
        let _one_at_a_time = self.inner.meta.lock().unwrap_or_else(|e| e.into_inner());
        match self.meta() {
            Ok(mut m) => {
                m.paused = why;
                if let Err(e) = self.write_meta(&m) {
                    eprintln!("pvefleet: {e}");
                }
            }
            Err(e) => eprintln!("pvefleet: {e}"),
        }
    }

    fn send(&self, file: &'static str, line: String, ack: Ack) -> bool {
        let tx = self.inner.tx.lock().expect("journal sender").clone();
        tx.send(Req { file, line, ack }).is_ok()
    }

    async fn append(&self, file: &'static str, value: String) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if !self.send(file, value, Ack::Async(tx)) {
            eprintln!("pvefleet: run journal writer is gone");
            return;
        }
        match rx.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!("journal {}: {e}", self.dir.display());
                eprintln!(
                    "pvefleet: cannot write the run journal {}: {e}",
                    self.dir.display()
                );
            }
            Err(_) => eprintln!("pvefleet: run journal writer is gone"),
        }
    }

    fn append_blocking(&self, file: &'static str, value: String) {
        let (tx, rx) = mpsc::channel();
        if self.send(file, value, Ack::Blocking(tx)) {
            if let Ok(Err(e)) = rx.recv() {
                eprintln!(
                    "pvefleet: cannot write the run journal {}: {e}",
                    self.dir.display()
                );
            }
        }
    }

    fn line<T: Serialize>(v: &T) -> String {
        let mut s = serde_json::to_string(v).expect("journal records serialise");
        s.push('\n');
        s
    }

    /// Record an event; returns once it is on disk, with the record written. (The run's
    /// engine records through its event bus, `events::EventBus::record`, which hands the record
    /// to the run's other consumers too.)
    pub async fn record(&self, node: &str, event: Event) -> Record {
        tracing::debug!(node, ?event, "journal");
        let r = Record {
            time: now(),
            node: node.to_string(),
            event,
        };
        self.append("events.jsonl", Self::line(&r)).await;
        r
    }

    /// Record an event from synchronous code (not from inside the async runtime's tasks).
    pub fn record_blocking(&self, node: &str, event: Event) {
        let r = Record {
            time: now(),
            node: node.to_string(),
            event,
        };
        self.append_blocking("events.jsonl", Self::line(&r));
    }

    /// Record a backup (intent or written); returns once it is on disk.
    pub async fn backup(&self, rec: BackupRecord) {
        self.append("backups.jsonl", Self::line(&rec)).await;
    }

    /// Record an undo command (intent or applied); returns once it is on disk.
    pub async fn undo(&self, rec: UndoRecord) {
        self.append("undo.jsonl", Self::line(&rec)).await;
    }

    /// Save a document (`plan.json`, `result.json`) atomically.
    pub fn save(&self, name: &str, value: &serde_json::Value) {
        let text = serde_json::to_string_pretty(value).unwrap_or_default();
        if let Err(e) = write_atomic(&self.dir.join(name), text.as_bytes()) {
            eprintln!("pvefleet: {e}");
        }
    }

    /// All events (unreadable lines are skipped: a line cut by a kill is the last one).
    pub fn events(&self) -> Vec<Record> {
        read_lines(&self.dir.join("events.jsonl"))
    }

    /// Every backup record, in order.
    pub fn backups(&self) -> Vec<BackupRecord> {
        read_lines(&self.dir.join("backups.jsonl"))
    }

    /// Every undo record, in order.
    pub fn undos(&self) -> Vec<UndoRecord> {
        read_lines(&self.dir.join("undo.jsonl"))
    }

    /// What the journal says of each node, for resume and `runs show`.
    pub fn histories(&self) -> BTreeMap<String, NodeHistory> {
        histories(&self.events())
    }
}

/// Every file of a run's journal parses: `run.json` whole, and each line of the `.jsonl` files,
/// except a last line without its newline (a write cut short by a kill, which the journal's
/// appends can leave and which holds nothing acted on yet). The first that does not, with its
/// file and line.
pub fn check_whole(dir: &Path) -> Result<(), JournalError> {
    let meta = dir.join("run.json");
    if let Ok(text) = std::fs::read_to_string(&meta) {
        if let Err(e) = serde_json::from_str::<RunMeta>(&text) {
            return Err(JournalError::Corrupt {
                path: meta.display().to_string(),
                line: e.line(),
                why: e.to_string(),
            });
        }
    }
    fn lines_of<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<(), JournalError> {
        let Ok(text) = std::fs::read_to_string(path) else {
            return Ok(());
        };
        let cut_last = !text.is_empty() && !text.ends_with('\n');
        let count = text.lines().count();
        for (i, l) in text.lines().enumerate() {
            if l.trim().is_empty() || (cut_last && i + 1 == count) {
                continue;
            }
            if let Err(e) = serde_json::from_str::<T>(l) {
                return Err(JournalError::Corrupt {
                    path: path.display().to_string(),
                    line: i + 1,
                    why: e.to_string(),
                });
            }
        }
        Ok(())
    }
    lines_of::<Record>(&dir.join("events.jsonl"))?;
    lines_of::<BackupRecord>(&dir.join("backups.jsonl"))?;
    lines_of::<UndoRecord>(&dir.join("undo.jsonl"))?;
    Ok(())
}

fn read_lines<T: for<'de> Deserialize<'de>>(path: &Path) -> Vec<T> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Write `bytes` to `path` atomically: a temporary file in the same directory, synced, renamed
/// over `path`, then the directory synced so the rename itself survives a crash.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), JournalError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    // A name of its own for each write: two writers never share a temporary file.
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id(),
        SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let res = (|| {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    res.map_err(|e| io_err(path, e))
}

/// The reboot of one step as far as the journal knows it.
#[derive(Debug, Clone, Default)]
pub struct RebootProgress {
    /// Last state reached.
    pub state: String,
    /// Boot id before the reboot.
    pub old_boot_id: Option<String>,
}

/// One node's history in a run, rebuilt from the events.
#[derive(Debug, Clone, Default)]
pub struct NodeHistory {
    /// The node finished well.
    pub done: bool,
    /// Last result of each step index.
    pub steps: BTreeMap<usize, StepResult>,
    /// A step that started and never ended (killed or interrupted there).
    pub in_step: Option<(usize, String)>,
    /// Reboot progress by step index (reboots not finished).
    pub reboots: BTreeMap<usize, RebootProgress>,
    /// HA maintenance is on (switched on by the run and not yet off).
    pub maintenance_on: bool,
    /// Guests the run stopped and has not started again.
    pub stopped_guests: Vec<GuestRef>,
    /// Guests the run moved away and has not returned: (guest, origin, where it is).
    pub moved_guests: Vec<(GuestRef, String, String)>,
    /// Migrations started and never recorded as done (the controller stopped during one):
    /// (guest, from, to).
    pub moving_guests: Vec<(GuestRef, String, String)>,
    /// Return migrations started and never recorded as done: (guest, its node, where it was).
    /// Each is also in `moved_guests` until it is known back.
    pub returning_guests: Vec<(GuestRef, String, String)>,
    /// Ceph noout the run set for the node and has not unset (`host` or `cluster`).
    pub noout: Option<String>,
    /// Last interruption point.
    pub interrupted: Option<StopPoint>,
    /// A rollback ran on the node: `Some(true)` when it put everything back.
    pub rolled_back: Option<bool>,
}

impl NodeHistory {
    /// The run left something in the cluster for this node and has not put it back: HA
    /// maintenance, Ceph noout, guests shut down, moved away or in the middle of a move.
    pub fn left_in_cluster(&self) -> bool {
        self.maintenance_on
            || self.noout.is_some()
            || !self.stopped_guests.is_empty()
            || !self.moved_guests.is_empty()
            || !self.moving_guests.is_empty()
    }
}

/// Rebuild every node's history from the events, in order.
pub fn histories(events: &[Record]) -> BTreeMap<String, NodeHistory> {
    let mut out: BTreeMap<String, NodeHistory> = BTreeMap::new();
    for r in events {
        if r.node == "-" {
            continue;
        }
        let h = out.entry(r.node.clone()).or_default();
        match &r.event {
            Event::NodeStarted {} => {
                h.done = false;
                h.interrupted = None;
            }
            Event::StepStarted { index, step } => h.in_step = Some((*index, step.clone())),
            Event::RolledBack { complete, .. } => h.rolled_back = Some(*complete),
            Event::StepDone { index, result } => {
                h.in_step = None;
                h.steps.insert(*index, result.clone());
                if result.status != crate::outcome::StepStatus::Failed {
                    h.reboots.remove(index);
                }
            }
            Event::Reboot {
                index,
                state,
                old_boot_id,
                ..
            } => {
                let p = h.reboots.entry(*index).or_default();
                p.state = state.clone();
                if old_boot_id.is_some() {
                    p.old_boot_id = old_boot_id.clone();
                }
            }
            // Only what the run switched on: `found-on` (someone else's maintenance) is not.
            Event::Maintenance { state, .. } => {
                if let Some(on) = state.run_owns_on() {
                    h.maintenance_on = on;
                }
            }
            Event::GuestStopped { guest, .. } if !h.stopped_guests.contains(guest) => {
                h.stopped_guests.push(guest.clone());
            }
            Event::GuestStarted { guest } => h.stopped_guests.retain(|g| g != guest),
            Event::GuestMoved {
                guest,
                from,
                to,
                phase,
                ..
            } => {
                h.moving_guests.retain(|(g, _, _)| g != guest);
                if *phase == Phase::Done {
                    h.moved_guests.retain(|(g, _, _)| g != guest);
                    h.moved_guests
                        .push((guest.clone(), from.clone(), to.clone()));
                } else {
                    h.moving_guests
                        .push((guest.clone(), from.clone(), to.clone()));
                }
            }
            Event::GuestReturning { guest, from, to } => {
                h.returning_guests.retain(|(g, _, _)| g != guest);
                h.returning_guests
                    .push((guest.clone(), to.clone(), from.clone()));
            }
            Event::GuestReturned { guest, .. } => {
                h.moved_guests.retain(|(g, _, _)| g != guest);
                h.moving_guests.retain(|(g, _, _)| g != guest);
                h.returning_guests.retain(|(g, _, _)| g != guest);
            }
            // Only what the run set: `found-set` (an operator's noout) is left alone.
            Event::Noout { state, scope, .. } => match state.run_owns_set() {
                Some(true) => h.noout = Some(scope.clone()),
                Some(false) => h.noout = None,
                None => {}
            },
            Event::NodeDone { .. } => h.done = true,
            Event::NodeInterrupted { step, state } => {
                h.interrupted = Some(StopPoint {
                    node: r.node.clone(),
                    step: step.clone(),
                    state: state.clone(),
                })
            }
            _ => {}
        }
    }
    out
}

/// How long things took in earlier runs, oldest first, read once per process from every run's
/// `events.jsonl`: each node's reboots, and each node's steps by name.
#[derive(Debug, Default)]
pub struct Timings {
    /// Per node, its reboots (see [`reboot_durations`]).
    pub reboots: BTreeMap<String, Vec<std::time::Duration>>,
    /// Per (node, step name), the step's runs (see [`step_durations`]).
    pub steps: BTreeMap<(String, String), Vec<std::time::Duration>>,
    /// Per node, the part of each of its reboots spent migrating guests away and back (same
    /// order as `reboots`).
    pub reboot_migrating: BTreeMap<String, Vec<std::time::Duration>>,
    /// Every live migration away whose guest's memory is known: (bytes, how long).
    pub migrations: Vec<(u64, std::time::Duration)>,
}

impl Timings {
    /// Seconds per GiB of guest memory migrated, from every migration in the journal; `None`
    /// without one.
    pub fn secs_per_gib(&self) -> Option<f64> {
        let bytes: u64 = self.migrations.iter().map(|(b, _)| b).sum();
        let secs: f64 = self.migrations.iter().map(|(_, d)| d.as_secs_f64()).sum();
        (bytes > 0).then(|| secs / (bytes as f64 / (1u64 << 30) as f64))
    }
}

/// The mean of the last (at most) three of `past`, the prediction pvefleet makes from history;
/// `None` without any.
pub fn recent_mean(past: &[std::time::Duration]) -> Option<std::time::Duration> {
    let last = &past[past.len().saturating_sub(3)..];
    (!last.is_empty()).then(|| last.iter().sum::<std::time::Duration>() / last.len() as u32)
}

/// Every run's timings (read once per process).
pub fn timings() -> &'static Timings {
    static TIMINGS: std::sync::OnceLock<Timings> = std::sync::OnceLock::new();
    TIMINGS.get_or_init(|| {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(runs_dir())
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect();
        dirs.sort();
        let mut out = Timings::default();
        for d in dirs {
            let events: Vec<Record> = read_lines(&d.join("events.jsonl"));
            for (node, took, migrating) in reboot_times(&events) {
                out.reboots.entry(node.clone()).or_default().push(took);
                out.reboot_migrating
                    .entry(node)
                    .or_default()
                    .push(migrating);
            }
            out.migrations.extend(migration_times(&events));
            for (node, step, took) in step_durations(&events) {
                out.steps.entry((node, step)).or_default().push(took);
            }
        }
        out
    })
}

/// How long each node's reboots took in earlier runs (the first `reboot` event of a reboot step
/// to its `done`: drain, boot, health, Ceph and the guests' return), oldest first. Only reboots
/// one controller drove from start to end count (a resumed run's gap is not a reboot's time).
pub fn reboot_history() -> &'static BTreeMap<String, Vec<std::time::Duration>> {
    &timings().reboots
}

/// One process drove the run from start to end (a resumed run's gaps are no step's time).
fn one_controller(events: &[Record]) -> bool {
    events
        .iter()
        .filter(|r| matches!(r.event, Event::RunStarted { .. }))
        .count()
        == 1
}

/// When a record was written.
fn record_time(r: &Record) -> Option<std::time::SystemTime> {
    humantime::parse_rfc3339_weak(&r.time).ok()
}

/// The steps in one run's events that one controller drove from `step_started` to
/// `step_done`: (node, step name, how long).
pub fn step_durations(events: &[Record]) -> Vec<(String, String, std::time::Duration)> {
    if !one_controller(events) {
        return Vec::new();
    }
    let mut begun: BTreeMap<(String, usize), std::time::SystemTime> = BTreeMap::new();
    let mut out = Vec::new();
    for r in events {
        let Some(t) = record_time(r) else { continue };
        match &r.event {
            Event::StepStarted { index, .. } => {
                begun.insert((r.node.clone(), *index), t);
            }
            Event::StepDone { index, result } => {
                if let Some(took) = begun
                    .remove(&(r.node.clone(), *index))
                    .and_then(|t0| t.duration_since(t0).ok())
                {
                    out.push((r.node.clone(), result.step.clone(), took));
                }
            }
            _ => {}
        }
    }
    out
}

/// The reboots in one run's events that one controller drove from their first state to
/// `done`: (node, how long).
pub fn reboot_durations(events: &[Record]) -> Vec<(String, std::time::Duration)> {
    reboot_times(events)
        .into_iter()
        .map(|(node, took, _)| (node, took))
        .collect()
}

/// Each reboot as [`reboot_durations`] gives it, with the part of it spent migrating guests
/// away and back (`guest_moved` intent to done, `guest_returning` to `guest_returned`).
fn reboot_times(events: &[Record]) -> Vec<(String, std::time::Duration, std::time::Duration)> {
    use std::time::{Duration, SystemTime};
    if !one_controller(events) {
        return Vec::new();
    }
    let mut begun: BTreeMap<(String, usize), SystemTime> = BTreeMap::new();
    let mut migrating: BTreeMap<String, Duration> = BTreeMap::new();
    // Per node, the migrations under way and since when one has been: migrations run several
    // at once, so the time spent migrating is the time any of them ran, not their sum.
    let mut busy: BTreeMap<String, (BTreeSet<u32>, SystemTime)> = BTreeMap::new();
    let mut out = Vec::new();
    for r in events {
        let Some(t) = record_time(r) else { continue };
        let started = |vmid: u32, busy: &mut BTreeMap<String, (BTreeSet<u32>, SystemTime)>| {
            let (set, since) = busy
                .entry(r.node.clone())
                .or_insert_with(|| (BTreeSet::new(), t));
            if set.is_empty() {
                *since = t;
            }
            set.insert(vmid);
        };
        let mut ended = |vmid: u32, busy: &mut BTreeMap<String, (BTreeSet<u32>, SystemTime)>| {
            if let Some((set, since)) = busy.get_mut(&r.node) {
                if set.remove(&vmid) && set.is_empty() {
                    if let Ok(d) = t.duration_since(*since) {
                        *migrating.entry(r.node.clone()).or_default() += d;
                    }
                }
            }
        };
        match &r.event {
            Event::GuestMoved { guest, phase, .. } if *phase == Phase::Intent => {
                started(guest.vmid, &mut busy);
            }
            Event::GuestMoved { guest, .. } => ended(guest.vmid, &mut busy),
            Event::GuestReturning { guest, .. } => started(guest.vmid, &mut busy),
            Event::GuestReturned { guest, .. } => ended(guest.vmid, &mut busy),
            Event::Reboot { index, state, .. } => {
                let key = (r.node.clone(), *index);
                if state == "done" {
                    if let Some(took) = begun.remove(&key).and_then(|t0| t.duration_since(t0).ok())
                    {
                        let m = migrating.remove(&r.node).unwrap_or_default();
                        out.push((r.node.clone(), took, m.min(took)));
                    }
                } else if let std::collections::btree_map::Entry::Vacant(e) = begun.entry(key) {
                    e.insert(t);
                    migrating.remove(&r.node);
                }
            }
            _ => {}
        }
    }
    out
}

/// The live migrations away in one run's events, timed as the drain ran them: each stretch
/// of time in which a node had migrations away under way (one at a time, or several at once),
/// with the memory of the guests moved in it and how long it lasted: (bytes, how long). A
/// stretch with a guest whose memory was not recorded, or a move that did not end, is left
/// out. Only runs one controller drove.
pub fn migration_times(events: &[Record]) -> Vec<(u64, std::time::Duration)> {
    use std::time::SystemTime;
    if !one_controller(events) {
        return Vec::new();
    }
    struct Stretch {
        since: SystemTime,
        under_way: BTreeSet<u32>,
        bytes: u64,
        unknown: bool,
    }
    let mut busy: BTreeMap<String, Stretch> = BTreeMap::new();
    let mut out = Vec::new();
    for r in events {
        let Some(t) = record_time(r) else { continue };
        match &r.event {
            Event::GuestMoved {
                guest,
                phase,
                maxmem,
                ..
            } if *phase == Phase::Intent => {
                let s = busy.entry(r.node.clone()).or_insert_with(|| Stretch {
                    since: t,
                    under_way: BTreeSet::new(),
                    bytes: 0,
                    unknown: false,
                });
                s.under_way.insert(guest.vmid);
                match maxmem {
                    Some(b) => s.bytes += b,
                    None => s.unknown = true,
                }
            }
            Event::GuestMoved { guest, .. } => {
                let Some(s) = busy.get_mut(&r.node) else {
                    continue;
                };
                if s.under_way.remove(&guest.vmid) && s.under_way.is_empty() {
                    let s = busy.remove(&r.node).expect("just seen");
                    if let (false, Ok(took)) = (s.unknown, t.duration_since(s.since)) {
                        if s.bytes > 0 {
                            out.push((s.bytes, took));
                        }
                    }
                }
            }
            // A reboot's end (done, or a node interrupted) ends what its drain left open: a
            // move without its done is not timed.
            Event::Reboot { state, .. } if state == "done" => {
                busy.remove(&r.node);
            }
            _ => {}
        }
    }
    out
}

/// Every recorded run, newest first. A run directory whose `run.json` cannot be read is not
/// hidden: it is said on stderr (file, line, why) and left out of the list.
pub fn list() -> Vec<RunMeta> {
    let mut out: Vec<RunMeta> = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(runs_dir())
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    for d in dirs {
        let p = d.join("run.json");
        let Ok(text) = std::fs::read_to_string(&p) else {
            // A run being created (no run.json yet) or not a run.
            continue;
        };
        match serde_json::from_str::<RunMeta>(&text) {
            Ok(m) => out.push(m),
            Err(e) => eprintln!(
                "pvefleet: WARNING: {}",
                crate::sanitize::sanitize_str(
                    &JournalError::Corrupt {
                        path: p.display().to_string(),
                        line: e.line(),
                        why: e.to_string(),
                    }
                    .to_string()
                )
            ),
        }
    }
    out.sort_by(|a, b| b.id.cmp(&a.id));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_never_paths() {
        assert!(valid_id("20261124T130501-1a2b"));
        for bad in ["", "..", "../x", "/etc", "a/b", "a b", "x\n"] {
            assert!(!valid_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_reboot_counts_from_its_first_state_to_done_and_only_when_one_controller_drove_it() {
        let rec = |time: &str, node: &str, event: Event| Record {
            time: time.into(),
            node: node.into(),
            event,
        };
        let reboot = |state: &str| Event::Reboot {
            index: 2,
            state: state.into(),
            old_boot_id: None,
            detail: None,
        };
        let started = || Event::RunStarted {
            pid: 1,
            resumed: false,
        };
        let mut events = vec![
            rec("2026-12-01T10:00:00.000Z", "-", started()),
            rec("2026-12-01T10:00:05.000Z", "pve1", reboot("maintenance-on")),
            rec("2026-12-01T10:00:20.000Z", "pve1", reboot("reboot-issued")),
            rec("2026-12-01T10:01:35.500Z", "pve1", reboot("done")),
            // pve2 never finished: no duration.
            rec("2026-12-01T10:02:00.000Z", "pve2", reboot("reboot-issued")),
        ];
        assert_eq!(
            reboot_durations(&events),
            vec![("pve1".to_string(), std::time::Duration::from_millis(90_500))]
        );
        events.push(rec("2026-12-01T11:00:00.000Z", "-", started()));
        assert!(
            reboot_durations(&events).is_empty(),
            "a resumed run's gap is not a reboot"
        );
    }

    #[test]
    fn a_reboot_s_migrations_are_timed_and_the_rate_per_gib_learnt() {
        let rec = |time: &str, event: Event| Record {
            time: time.into(),
            node: "pve1".into(),
            event,
        };
        let g = GuestRef {
            kind: "qm".into(),
            vmid: 101,
            name: "web".into(),
        };
        let reboot = |state: &str| Event::Reboot {
            index: 1,
            state: state.into(),
            old_boot_id: None,
            detail: None,
        };
        let moved = |phase: Phase| Event::GuestMoved {
            guest: g.clone(),
            from: "pve1".into(),
            to: "pve2".into(),
            phase,
            maxmem: Some(2 << 30),
        };
        let events = vec![
            Record {
                time: "2026-12-01T10:00:00.000Z".into(),
                node: "-".into(),
                event: Event::RunStarted {
                    pid: 1,
                    resumed: false,
                },
            },
            rec("2026-12-01T10:00:00.000Z", reboot("maintenance-on")),
            rec("2026-12-01T10:00:01.000Z", moved(Phase::Intent)),
            rec("2026-12-01T10:00:05.000Z", moved(Phase::Done)),
            rec("2026-12-01T10:00:06.000Z", reboot("reboot-issued")),
            rec(
                "2026-12-01T10:00:20.000Z",
                Event::GuestReturning {
                    guest: g.clone(),
                    from: "pve2".into(),
                    to: "pve1".into(),
                },
            ),
            rec(
                "2026-12-01T10:00:24.000Z",
                Event::GuestReturned {
                    guest: g.clone(),
                    to: "pve1".into(),
                },
            ),
            rec("2026-12-01T10:00:30.000Z", reboot("done")),
        ];
        let s = std::time::Duration::from_secs;
        assert_eq!(
            reboot_times(&events),
            vec![("pve1".to_string(), s(30), s(8))],
            "30 s in all, 4 s away and 4 s back"
        );
        let m = migration_times(&events);
        assert_eq!(m, vec![(2u64 << 30, s(4))]);
        let t = Timings {
            migrations: m,
            ..Timings::default()
        };
        assert_eq!(t.secs_per_gib(), Some(2.0));
        assert_eq!(
            Timings::default().secs_per_gib(),
            None,
            "no migration, no rate"
        );
    }

    #[test]
    fn migrations_at_once_count_by_the_time_any_of_them_ran() {
        let rec = |time: &str, event: Event| Record {
            time: format!("2026-12-01T10:00:{time}.000Z"),
            node: "pve1".into(),
            event,
        };
        let g = |vmid: u32| GuestRef {
            kind: "qm".into(),
            vmid,
            name: format!("g{vmid}"),
        };
        let moved = |vmid: u32, phase: Phase, maxmem: Option<u64>| Event::GuestMoved {
            guest: g(vmid),
            from: "pve1".into(),
            to: "pve2".into(),
            phase,
            maxmem,
        };
        let reboot = |state: &str| Event::Reboot {
            index: 1,
            state: state.into(),
            old_boot_id: None,
            detail: None,
        };
        let gib = 1u64 << 30;
        let events = vec![
            Record {
                time: "2026-12-01T10:00:00.000Z".into(),
                node: "-".into(),
                event: Event::RunStarted {
                    pid: 1,
                    resumed: false,
                },
            },
            rec("00", reboot("maintenance-on")),
            // Three at once from 01 to 07 (6 s, 4 GiB), then one alone 10 to 12 (2 s, 1 GiB).
            rec("01", moved(101, Phase::Intent, Some(gib))),
            rec("01", moved(102, Phase::Intent, Some(2 * gib))),
            rec("02", moved(103, Phase::Intent, Some(gib))),
            rec("04", moved(101, Phase::Done, Some(gib))),
            rec("06", moved(103, Phase::Done, Some(gib))),
            rec("07", moved(102, Phase::Done, Some(2 * gib))),
            rec("10", moved(104, Phase::Intent, Some(gib))),
            rec("12", moved(104, Phase::Done, Some(gib))),
            // One whose memory is not known: its stretch is not timed.
            rec("13", moved(105, Phase::Intent, None)),
            rec("14", moved(105, Phase::Done, None)),
            rec("30", reboot("done")),
        ];
        let s = std::time::Duration::from_secs;
        assert_eq!(
            reboot_times(&events),
            vec![("pve1".to_string(), s(30), s(9))],
            "6 s + 2 s + 1 s spent migrating, not the 13 s their sum would say"
        );
        let m = migration_times(&events);
        assert_eq!(m, vec![(4 * gib, s(6)), (gib, s(2))]);
        let t = Timings {
            migrations: m,
            ..Timings::default()
        };
        assert_eq!(t.secs_per_gib(), Some(8.0 / 5.0));
    }

    #[test]
    fn a_step_counts_from_started_to_done_and_only_when_one_controller_drove_it() {
        let rec = |time: &str, node: &str, event: Event| Record {
            time: time.into(),
            node: node.into(),
            event,
        };
        let started = |index: usize| Event::StepStarted {
            index,
            step: "upgrade".into(),
        };
        let done = |index: usize| Event::StepDone {
            index,
            result: StepResult::new("upgrade", crate::outcome::StepStatus::Changed, ""),
        };
        let run = || Event::RunStarted {
            pid: 1,
            resumed: false,
        };
        let mut events = vec![
            rec("2026-12-01T10:00:00.000Z", "-", run()),
            rec("2026-12-01T10:00:01.000Z", "pve1", started(1)),
            rec("2026-12-01T10:00:02.000Z", "pve2", started(1)),
            rec("2026-12-01T10:00:43.250Z", "pve1", done(1)),
            // pve2's never ended: no duration.
        ];
        assert_eq!(
            step_durations(&events),
            vec![(
                "pve1".to_string(),
                "upgrade".to_string(),
                std::time::Duration::from_millis(42_250)
            )]
        );
        events.push(rec("2026-12-01T11:00:00.000Z", "-", run()));
        assert!(step_durations(&events).is_empty(), "resumed: not counted");
    }

    #[test]
    fn histories_follow_the_events() {
        use crate::outcome::StepStatus;
        let step = |s: StepStatus| StepResult::new("x", s, "");
        let ev = |node: &str, event: Event| Record {
            time: now(),
            node: node.into(),
            event,
        };
        let g = GuestRef {
            kind: "qm".into(),
            vmid: 101,
            name: "db".into(),
        };
        let events = vec![
            ev("pve1", Event::NodeStarted {}),
            ev(
                "pve1",
                Event::StepDone {
                    index: 0,
                    result: step(StepStatus::Changed),
                },
            ),
            ev(
                "pve1",
                Event::StepStarted {
                    index: 1,
                    step: "reboot".into(),
                },
            ),
            ev(
                "pve1",
                Event::Maintenance {
                    state: crate::vocab::MaintenanceState::On,
                    why: None,
                },
            ),
            ev(
                "pve1",
                Event::GuestStopped {
                    guest: g.clone(),
                    phase: crate::vocab::Phase::Intent,
                },
            ),
            ev(
                "pve1",
                Event::Reboot {
                    index: 1,
                    state: "reboot-issued".into(),
                    old_boot_id: Some("b1".into()),
                    detail: None,
                },
            ),
            ev("pve2", Event::NodeStarted {}),
            ev("pve2", Event::NodeDone { rebooted: false }),
        ];
        let h = histories(&events);
        let p1 = &h["pve1"];
        assert!(!p1.done);
        assert_eq!(p1.steps[&0].status, StepStatus::Changed);
        assert_eq!(p1.in_step, Some((1, "reboot".into())));
        assert_eq!(p1.reboots[&1].state, "reboot-issued");
        assert_eq!(p1.reboots[&1].old_boot_id.as_deref(), Some("b1"));
        assert!(p1.maintenance_on);
        assert_eq!(p1.stopped_guests, vec![g.clone()]);
        assert!(h["pve2"].done);
    }

    #[test]
    fn events_round_trip_through_json_lines() {
        let r = Record {
            time: now(),
            node: "pve1".into(),
            event: Event::Maintenance {
                state: crate::vocab::MaintenanceState::LeftOn,
                why: Some("node down".into()),
            },
        };
        let line = serde_json::to_string(&r).unwrap();
        assert!(line.contains("\"event\":\"maintenance\""), "{line}");
        assert!(line.contains("\"data\":{"), "{line}");
        let back: Record = serde_json::from_str(&line).unwrap();
        assert!(matches!(back.event, Event::Maintenance { .. }));
    }
}

#[cfg(test)]
mod atomic_tests {
    use super::*;

    #[test]
    fn concurrent_atomic_writes_never_mix_their_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.json");
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let body = format!(
                        "{{\"writer\": {i}, \"pad\": \"{}\"}}",
                        "x".repeat(50_000 + i)
                    );
                    for _ in 0..20 {
                        write_atomic(&path, body.as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let i = v["writer"].as_u64().unwrap() as usize;
        assert_eq!(v["pad"].as_str().unwrap().len(), 50_000 + i);
    }
}

#[cfg(test)]
mod move_tests {
    use super::*;

    #[test]
    fn a_move_with_an_intent_and_no_done_is_unfinished() {
        let g = |vmid| GuestRef {
            kind: "qm".into(),
            vmid,
            name: format!("vm{vmid}"),
        };
        let moved = |vmid, phase: &str| Record {
            time: now(),
            node: "pve1".into(),
            event: Event::GuestMoved {
                guest: g(vmid),
                from: "pve1".into(),
                to: "pve2".into(),
                phase: crate::vocab::Phase::parse(phase).expect("a phase"),
                maxmem: None,
            },
        };
        let h = histories(&[
            moved(101, "intent"),
            moved(101, "done"),
            moved(103, "intent"),
        ]);
        let p1 = &h["pve1"];
        assert_eq!(
            p1.moved_guests,
            vec![(g(101), "pve1".into(), "pve2".into())]
        );
        assert_eq!(
            p1.moving_guests,
            vec![(g(103), "pve1".into(), "pve2".into())]
        );
        assert!(p1.left_in_cluster());
        // Returned (by a resume or a rollback): neither moved nor moving any more.
        let returned = |vmid| Record {
            time: now(),
            node: "pve1".into(),
            event: Event::GuestReturned {
                guest: g(vmid),
                to: "pve1".into(),
            },
        };
        let h = histories(&[
            moved(101, "intent"),
            moved(101, "done"),
            moved(103, "intent"),
            returned(101),
            returned(103),
        ]);
        let p1 = &h["pve1"];
        assert!(p1.moved_guests.is_empty() && p1.moving_guests.is_empty());
        assert!(!p1.left_in_cluster());
    }

    #[test]
    fn a_return_with_an_intent_and_no_done_is_unfinished_and_still_away() {
        let g = GuestRef {
            kind: "qm".into(),
            vmid: 101,
            name: "web".into(),
        };
        let rec = |event| Record {
            time: now(),
            node: "pve1".into(),
            event,
        };
        let events = [
            rec(Event::GuestMoved {
                guest: g.clone(),
                from: "pve1".into(),
                to: "pve2".into(),
                phase: crate::vocab::Phase::Done,
                maxmem: None,
            }),
            rec(Event::GuestReturning {
                guest: g.clone(),
                from: "pve2".into(),
                to: "pve1".into(),
            }),
        ];
        let h = histories(&events);
        let p1 = &h["pve1"];
        assert_eq!(
            p1.returning_guests,
            vec![(g.clone(), "pve1".into(), "pve2".into())]
        );
        // Not known back yet: still counted as moved away.
        assert_eq!(
            p1.moved_guests,
            vec![(g.clone(), "pve1".into(), "pve2".into())]
        );
        assert!(p1.left_in_cluster());
        let mut events = events.to_vec();
        events.push(rec(Event::GuestReturned {
            guest: g.clone(),
            to: "pve1".into(),
        }));
        let p1 = &histories(&events)["pve1"];
        assert!(p1.returning_guests.is_empty() && p1.moved_guests.is_empty());
        assert!(!p1.left_in_cluster());
    }
}

#[cfg(test)]
mod bus_tests {
    use super::*;
    use crate::events::{EventBus, RunEvent};

    #[tokio::test]
    async fn an_event_on_the_bus_is_on_disk_before_record_returns_and_before_any_consumer_sees_it()
    {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::start(dir.path().to_path_buf(), "t", None);
        let file = dir.path().join("events.jsonl");
        // What each consumer found on disk when it was told.
        let seen: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let s = Arc::clone(&seen);
        let f = file.clone();
        let bus = EventBus::new(Some(j.clone())).consumer(Arc::new(move |e: &RunEvent| {
            if let RunEvent::Recorded(r) = e {
                let on_disk = std::fs::read_to_string(&f).unwrap_or_default();
                s.lock().unwrap().push((r.time.clone(), on_disk));
            }
        }));
        bus.record("pve1", Event::NodeStarted {}).await;
        bus.record("pve1", Event::NodeDone { rebooted: false })
            .await;
        let lines: Vec<Record> = j.events();
        assert_eq!(lines.len(), 2, "both on disk when record returned");
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        for (i, (time, on_disk)) in seen.iter().enumerate() {
            assert_eq!(on_disk.lines().count(), i + 1, "written before it was told");
            assert_eq!(*time, lines[i].time, "the record as written");
        }
    }
}
