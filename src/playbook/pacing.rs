//! Pacing a rolling run between nodes: maintenance windows (`--window`), a pause after N nodes
//! (`--pause-after`), the operator's approval of each node (`--confirm-each-node`) and backups
//! running on a node's guests. Asked before each batch, never inside one: a run that must stop
//! stops cleanly before its next node (journal status `paused: ...`, resumable), never with a
//! node half done.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::window::{fits, LocalTime, Window};
use crate::inventory::Node;
use crate::maintenance::remote::Remote;

/// Asks the operator whether to start a node, after showing it: `Some(true)` go, `Some(false)`
/// pause the run, `None` interrupted.
pub type Confirm = Arc<
    dyn Fn(String) -> futures::future::BoxFuture<'static, Option<bool>> + Send + Sync + 'static,
>;

/// Why a run paused before its next node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pause {
    /// The next node would not end inside a window.
    OutsideWindow {
        /// The node.
        node: String,
        /// Its predicted duration.
        predicted: Duration,
    },
    /// `--pause-after N`: N nodes were started.
    After(usize),
    /// `--confirm-each-node`: the operator said no.
    NotConfirmed(String),
    /// A backup of the node's guests runs.
    Backup {
        /// The node.
        node: String,
        /// What runs.
        what: String,
    },
    /// The running backups could not be told (unknown is not "no backup").
    BackupsUnknown {
        /// The node.
        node: String,
        /// Why.
        why: String,
    },
}

impl Pause {
    /// The journal status: `paused: outside window` ...
    pub fn status(&self) -> String {
        match self {
            Pause::OutsideWindow { .. } => "paused: outside window".into(),
            Pause::After(n) => format!("paused: after {n} node(s) (--pause-after)"),
            Pause::NotConfirmed(_) => "paused: not confirmed".into(),
            Pause::Backup { .. } => "paused: backup running".into(),
            Pause::BackupsUnknown { .. } => "paused: backups could not be told".into(),
        }
    }

    /// Why, for the node not started and the operator.
    pub fn why(&self, windows: &[Window]) -> String {
        match self {
            Pause::OutsideWindow { node, predicted } => format!(
                "paused: outside window: {node} is predicted to take {} and would not end inside {}",
                crate::outcome::short_duration(*predicted),
                windows
                    .iter()
                    .map(|w| w.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Pause::After(n) => format!("paused after {n} node(s) (--pause-after)"),
            Pause::NotConfirmed(node) => format!("paused: {node} not confirmed"),
            Pause::Backup { node, what } => {
                format!("paused: {node} not started while a backup runs: {what}")
            }
            Pause::BackupsUnknown { node, why } => format!(
                "paused: {node} not started: the running backups could not be told: {why}"
            ),
        }
    }

    /// The exit status of a run that paused so.
    pub fn exit_code(&self) -> u8 {
        match self {
            Pause::OutsideWindow { .. } => crate::exit::OUTSIDE_WINDOW,
            _ => crate::exit::PAUSED,
        }
    }
}

/// What paces a run: given once, shared by every cluster's roll.
pub struct Pacing {
    /// `--window`s (none: any time).
    pub windows: Vec<Window>,
    /// Each node's predicted duration.
    pub predicted: BTreeMap<String, Duration>,
    /// `--pause-after N`.
    pub pause_after: Option<usize>,
    /// `--confirm-each-node`: how to ask, and each node's preview.
    pub confirm: Option<Confirm>,
    /// The text shown before asking about a node.
    pub previews: BTreeMap<String, String>,
    /// Check for backups of each node's guests before it starts (not with --ignore-backups).
    pub check_backups: bool,
    /// The clock (tests inject one).
    pub clock: fn() -> LocalTime,
    /// Nodes started so far.
    pub(crate) started: AtomicUsize,
    /// One question at a time.
    pub(crate) asking: tokio::sync::Mutex<()>,
    /// The first pause.
    pub(crate) paused: std::sync::Mutex<Option<Pause>>,
}

impl Default for Pacing {
    fn default() -> Pacing {
        Pacing {
            windows: Vec::new(),
            predicted: BTreeMap::new(),
            pause_after: None,
            confirm: None,
            previews: BTreeMap::new(),
            check_backups: false,
            clock: LocalTime::now,
            started: AtomicUsize::new(0),
            asking: tokio::sync::Mutex::new(()),
            paused: std::sync::Mutex::new(None),
        }
    }
}

impl Pacing {
    /// Nothing to pace.
    pub fn is_idle(&self) -> bool {
        self.windows.is_empty()
            && self.pause_after.is_none()
            && self.confirm.is_none()
            && !self.check_backups
    }

    /// The window decision for `batch` at `now`: the first node that would not end inside a
    /// window (a batch's nodes run together: each must end inside).
    pub fn window_pause(&self, batch: &[&str], now: LocalTime) -> Option<Pause> {
        batch.iter().find_map(|n| {
            let predicted = self.predicted.get(*n).copied().unwrap_or_default();
            (!fits(&self.windows, now, predicted)).then(|| Pause::OutsideWindow {
                node: n.to_string(),
                predicted,
            })
        })
    }

    /// `--pause-after` (the nodes started so far), then the windows.
    pub fn count_or_window(&self, batch: &[&str], now: LocalTime) -> Option<Pause> {
        if let Some(n) = self.pause_after {
            if self.started.load(Ordering::SeqCst) >= n {
                return Some(Pause::After(n));
            }
        }
        self.window_pause(batch, now)
    }

    /// Remember why the run paused (the first pause, when several clusters roll).
    pub fn record(&self, p: Pause) {
        if let Ok(mut x) = self.paused.lock() {
            x.get_or_insert(p);
        }
    }

    /// Why the run paused, if it did.
    pub fn paused(&self) -> Option<Pause> {
        self.paused.lock().ok().and_then(|x| x.clone())
    }

    /// Count `n` nodes as started.
    fn count(&self, n: usize) {
        self.started.fetch_add(n, Ordering::SeqCst);
    }

    /// Before `batch` starts: whether it may. `cluster` is every node of the inventory (to ask
    /// the cluster's task list through the first of the batch's cluster that answers).
    pub async fn before(&self, batch: &[Node], cluster: &[Node]) -> Result<(), Pause> {
        let names: Vec<&str> = batch.iter().map(|n| n.name.as_str()).collect();
        if let Some(p) = self.count_or_window(&names, (self.clock)()) {
            return Err(p);
        }
        if self.check_backups {
            backups_of(batch, cluster).await?;
        }
        if let Some(ask) = &self.confirm {
            // One question at a time, also with several clusters rolling at once.
            let _one = self.asking.lock().await;
            for n in &names {
                let preview = self.previews.get(*n).cloned().unwrap_or_default();
                match ask(format!("{preview}Start {n}?")).await {
                    Some(true) => {}
                    _ => return Err(Pause::NotConfirmed(n.to_string())),
                }
            }
            // The window may have closed while the operator read.
            if let Some(p) = self.window_pause(&names, (self.clock)()) {
                return Err(p);
            }
        }
        self.count(batch.len());
        Ok(())
    }
}

/// Before a run starts: no backup runs on any cluster of `nodes` (each asked through its first
/// node that answers). The reason to refuse: what runs, or why it could not be told.
pub async fn cluster_backups(nodes: &[Node]) -> Result<(), String> {
    for (cluster, members) in crate::maintenance::cluster_lock::by_cluster(nodes) {
        let name = cluster.as_deref().unwrap_or("(unnamed)");
        let mut last_error = None;
        let mut told = false;
        for node in &members {
            let r = match Remote::connect(node, Duration::from_secs(30)).await {
                Ok(r) => r,
                Err(e) => {
                    last_error = Some(format!("{}: {e}", node.name));
                    continue;
                }
            };
            let found = crate::maintenance::backups::running(&r).await;
            r.session.close().await;
            let tasks = found.map_err(|e| {
                format!(
                    "cluster {name}: the running backups could not be told ({}: {e}); nothing is \
                     started over a backup that could not be seen (--ignore-backups to start anyway)",
                    node.name
                )
            })?;
            if !tasks.is_empty() {
                return Err(format!(
                    "cluster {name}: backups are running ({}); wait for them to end, or pass \
                     --ignore-backups",
                    tasks
                        .iter()
                        .map(|t| t.describe())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            told = true;
            break;
        }
        if !told {
            return Err(format!(
                "cluster {name}: the running backups could not be told: no node answered ({}); \
                 --ignore-backups to start anyway",
                last_error.unwrap_or_default()
            ));
        }
    }
    Ok(())
}

/// A node of `batch` whose guests are being backed up (or the backups could not be told).
async fn backups_of(batch: &[Node], cluster: &[Node]) -> Result<(), Pause> {
    let first = &batch[0];
    // The batch's nodes first, then the rest of their cluster (a node may be mid-reboot).
    let askable = batch.iter().chain(
        cluster
            .iter()
            .filter(|n| n.cluster == first.cluster && !batch.iter().any(|b| b.name == n.name)),
    );
    let mut last_error = String::from("no node of the cluster could be asked");
    for node in askable {
        let r = match Remote::connect(node, Duration::from_secs(30)).await {
            Ok(r) => r,
            Err(e) => {
                last_error = format!("{}: {e}", node.name);
                continue;
            }
        };
        let tasks = match crate::maintenance::backups::running(&r).await {
            Ok(t) => t,
            Err(e) => {
                r.session.close().await;
                return Err(Pause::BackupsUnknown {
                    node: first.name.clone(),
                    why: format!("{}: {e}", node.name),
                });
            }
        };
        // Where the guests are matters only while a backup runs.
        let res = if tasks.is_empty() {
            None
        } else {
            match crate::maintenance::drain::resources(&r).await {
                Ok(res) => Some(res),
                Err(e) => {
                    r.session.close().await;
                    return Err(Pause::BackupsUnknown {
                        node: first.name.clone(),
                        why: format!("{}: the guests' nodes: {e}", node.name),
                    });
                }
            }
        };
        r.session.close().await;
        for n in batch {
            let guests: Vec<u32> = res
                .iter()
                .flat_map(|res| &res.guests)
                .filter(|g| g.node == n.name)
                .map(|g| g.vmid)
                .collect();
            let of = crate::maintenance::backups::of_node(&tasks, &n.name, &guests);
            if !of.is_empty() {
                return Err(Pause::Backup {
                    node: n.name.clone(),
                    what: of
                        .iter()
                        .map(|t| t.describe())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        }
        return Ok(());
    }
    Err(Pause::BackupsUnknown {
        node: first.name.clone(),
        why: last_error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noon() -> LocalTime {
        LocalTime {
            weekday: 2,
            secs: 12 * 3600,
        }
    }

    #[test]
    fn the_window_decision_uses_each_nodes_prediction() {
        let p = Pacing {
            windows: vec!["11:00-13:00".parse().unwrap()],
            predicted: [
                ("pve1".to_string(), Duration::from_secs(30 * 60)),
                ("pve2".to_string(), Duration::from_secs(61 * 60)),
            ]
            .into_iter()
            .collect(),
            clock: noon,
            ..Pacing::default()
        };
        assert_eq!(p.window_pause(&["pve1"], noon()), None);
        // Not predicted (its plan does not reboot it): it only has to start inside.
        assert_eq!(p.window_pause(&["pve3"], noon()), None);
        let paused = p.window_pause(&["pve1", "pve2"], noon()).unwrap();
        assert_eq!(
            paused,
            Pause::OutsideWindow {
                node: "pve2".into(),
                predicted: Duration::from_secs(61 * 60)
            }
        );
        assert_eq!(paused.status(), "paused: outside window");
        assert_eq!(paused.exit_code(), crate::exit::OUTSIDE_WINDOW);
        assert!(paused.why(&p.windows).contains("11:00-13:00"));
        let late = LocalTime {
            weekday: 2,
            secs: 13 * 3600,
        };
        assert!(p.window_pause(&["pve3"], late).is_some(), "closed");
    }

    #[test]
    fn pause_after_counts_the_nodes_started() {
        let p = Pacing {
            pause_after: Some(2),
            clock: noon,
            ..Pacing::default()
        };
        assert_eq!(p.count_or_window(&["pve1"], noon()), None);
        p.count(1);
        assert_eq!(p.count_or_window(&["pve2"], noon()), None);
        p.count(1);
        assert_eq!(p.count_or_window(&["pve3"], noon()), Some(Pause::After(2)));
        assert_eq!(Pause::After(2).exit_code(), crate::exit::PAUSED);
        assert_eq!(
            Pause::After(2).status(),
            "paused: after 2 node(s) (--pause-after)"
        );
    }
}
