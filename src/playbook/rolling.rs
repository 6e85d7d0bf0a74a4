//! Strategies: all nodes at once (parallel) or rolling batches that halt on failure, with the
//! quorum gate before any batch that reboots (DOMAIN.md §5). A parallel playbook with reboot
//! steps is one batch of every node, so it meets the same gate. Between batches (and before a
//! parallel run's one batch) the run's pacing (`pacing`: windows, pauses, approvals, backups)
//! may pause it: the nodes not started are `paused`, never half done.
//!
//! Interruption: nodes not started when Ctrl-C (or TERM/HUP) comes are not started; running
//! nodes are not dropped mid-flight but stop at their next safe point (see `engine`), so what
//! they switched on is settled and the journal says where each stopped.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::engine::{run_node, NodeRun, RunSettings};
use super::model::Mode;
use super::pacing::Pause;
use crate::exec::NodeStatus;
use crate::exit;
use crate::fanout::{self, Outcome};
use crate::inventory::Node;
use crate::journal::{RunStatus, StopPoint};
use crate::maintenance::error::RebootError;
use crate::maintenance::health::{gate, votes, QuorumGateError};
use crate::maintenance::remote::Remote;
use crate::ssh::SshError;

/// Order nodes: the strategy's explicit order first, then inventory order.
pub fn ordered(nodes: Vec<Node>, order: &[String]) -> Vec<Node> {
    let mut out: Vec<Node> = order
        .iter()
        .filter_map(|n| nodes.iter().find(|x| &x.name == n).cloned())
        .collect();
    for n in nodes {
        if !out.iter().any(|x| x.name == n.name) {
            out.push(n);
        }
    }
    out
}

async fn run_many(nodes: Vec<Node>, s: Arc<RunSettings>, forks: usize) -> Vec<NodeRun> {
    // The fan-out's events (nodes started and finished) join the run's stream.
    let events = Some(s.events.fanout_sink());
    // The fan-out's own token is never cancelled: running nodes see `s.cancel` themselves and
    // stop at a safe point; nodes not yet started return at once.
    let never = CancellationToken::new();
    let out = fanout::run(
        nodes,
        forks,
        &never,
        events,
        |n: &Node| n.name.clone(),
        |r: &NodeRun| !r.failed() && !r.interrupted(),
        move |node: Node| {
            let s = s.clone();
            async move { run_node(&node, &s).await }
        },
    )
    .await;
    out.into_iter()
        .map(|(n, o)| match o {
            Outcome::Done(r) => r,
            Outcome::Cancelled => NodeRun::not_started(&n.name, "interrupted before it started"),
            Outcome::Panicked(m) => {
                let mut r = NodeRun::not_started(&n.name, &format!("internal error: {m}"));
                r.not_started = false;
                r.status = NodeStatus::Error;
                r
            }
        })
        .collect()
}

/// Why a batch did not pass its quorum gate.
#[derive(Debug, thiserror::Error)]
enum GateError {
    /// The node asked could not be connected to.
    #[error("{node}: {error}")]
    Connect {
        /// The node asked (the batch's first).
        node: String,
        /// Why.
        error: SshError,
    },
    /// The node could not tell the cluster's votes.
    #[error("{node}: {error}")]
    Votes {
        /// The node asked.
        node: String,
        /// Why.
        error: RebootError,
    },
    /// No node of the cluster could be asked (every node of the batch mid-reboot, no other).
    #[error("no node of the cluster could be asked for its votes")]
    NoNode,
    /// Taking the batch down would cost the cluster its quorum.
    #[error("{0}")]
    Quorum(QuorumGateError),
}

impl GateError {
    /// The node asked, when it was lost (not reached, or its connection dropped) and the status
    /// that gives it (`unreachable`, `timeout`).
    fn lost(&self) -> Option<(&str, NodeStatus)> {
        match self {
            GateError::Connect { node, error } => Some((node, NodeStatus::of_connect_error(error))),
            GateError::Votes {
                node,
                error: RebootError::Ssh(e),
            } => Some((node, NodeStatus::of_ssh_error(e))),
            _ => None,
        }
    }
}

/// The quorum gate before a batch: the batch's nodes that will reboot (by the run's plan, all
/// of them when it is not known) may go down together without costing the cluster its quorum.
/// A node whose reboot a resumed run left in progress is not counted (its vote is already gone,
/// or it is coming back); the cluster is asked through the first node that answers: the batch's
/// other nodes first, then the rest of its cluster in the inventory (a node mid-reboot cannot).
async fn check_gate(batch: &[Node], s: &RunSettings) -> Result<(), GateError> {
    let planned = s.planned_reboots.as_ref();
    // Issued and not done: the node's vote is gone, or coming back.
    let in_progress = |n: &Node| {
        s.resume
            .get(&n.name)
            .is_some_and(crate::maintenance::reboot::reboot_underway)
    };
    let down = batch
        .iter()
        .filter(|n| planned.is_none_or(|p| p.contains(&n.name)) && !in_progress(n))
        .count() as u32;
    if down == 0 {
        return Ok(());
    }
    let cluster = &batch[0].cluster;
    let askable: Vec<&Node> = batch
        .iter()
        .filter(|n| !in_progress(n))
        .chain(
            s.cluster
                .iter()
                .filter(|n| &n.cluster == cluster && !batch.iter().any(|b| b.name == n.name)),
        )
        .collect();
    let mut first_error: Option<GateError> = None;
    for node in askable {
        let r = match Remote::connect(node, Duration::from_secs(30)).await {
            Ok(r) => r,
            Err(error) => {
                first_error.get_or_insert(GateError::Connect {
                    node: node.name.clone(),
                    error,
                });
                continue;
            }
        };
        let v = votes(&r).await;
        r.session.close().await;
        match v {
            Ok(None) => return Ok(()),
            Ok(Some((expected, total, _))) => {
                return gate(expected, total, down).map_err(GateError::Quorum)
            }
            // The connection dropped: ask the next node.
            Err(RebootError::Ssh(e)) => {
                first_error.get_or_insert(GateError::Votes {
                    node: node.name.clone(),
                    error: RebootError::Ssh(e),
                });
            }
            Err(error) => {
                return Err(GateError::Votes {
                    node: node.name.clone(),
                    error,
                })
            }
        }
    }
    Err(first_error.unwrap_or(GateError::NoNode))
}

/// N-1 before anything moves: when a reboot step drains, every node of the run must be able
/// to hand its running guests to the others (memory). The reason when not (or when it cannot
/// be told).
async fn drain_preflight(s: &RunSettings, todo: &[Node]) -> Option<String> {
    if !s.playbook.drains() || todo.is_empty() {
        return None;
    }
    let node = &todo[0];
    let r = match Remote::connect(node, Duration::from_secs(60)).await {
        Ok(x) => x,
        Err(e) => return Some(format!("drain preflight: {}: {e}", node.name)),
    };
    let res = crate::maintenance::drain::resources(&r).await;
    // Room counts only on nodes that can take guests: out of HA maintenance and reachable.
    let maintained = crate::maintenance::drain::nodes_in_maintenance(&r).await;
    r.session.close().await;
    let (res, maintained) = match (res, maintained) {
        (Ok(x), Ok(m)) => (x, m),
        (Err(e), _) | (_, Err(e)) => return Some(format!("drain preflight: {e}")),
    };
    let mut excluded: std::collections::BTreeSet<String> = maintained.into_iter().collect();
    for (n, _) in crate::maintenance::drain::unreachable_targets(
        &s.cluster,
        &res,
        "",
        Duration::from_secs(15),
    )
    .await
    {
        excluded.insert(n);
    }
    let names: Vec<String> = todo.iter().map(|n| n.name.clone()).collect();
    crate::capacity::placement::preflight(&res, &names, &excluded)
        .err()
        .map(|e| format!("drain preflight (N-1): {e}"))
}

/// `batch = "auto"`: as many of the next nodes at once as keep quorum, keep every Ceph PG
/// available (`ceph osd ok-to-stop` over the batch's OSDs) and, when the reboot drains, leave
/// room for their guests on the other nodes. Asked of the cluster before each batch; 1 when it
/// cannot be told (the gates then decide as for a batch of one).
async fn auto_batch(s: &RunSettings, rest: &[Node]) -> usize {
    let Ok(r) = Remote::connect(&rest[0], Duration::from_secs(60)).await else {
        return 1;
    };
    let mut k = rest.len();
    match votes(&r).await {
        Ok(Some((expected, total, _))) => {
            k = k
                .min(total.saturating_sub(crate::maintenance::health::quorum_of(expected)) as usize)
        }
        Ok(None) => {}
        // Quorum cannot be told: one node at a time (its gate then decides).
        Err(_) => k = 1,
    }
    let res = if s.playbook.drains() {
        crate::maintenance::drain::resources(&r).await.ok()
    } else {
        None
    };
    let ceph = crate::maintenance::ceph_gate::detect(&r)
        .await
        .unwrap_or(false);
    while k > 1 {
        let group: Vec<String> = rest[..k].iter().map(|n| n.name.clone()).collect();
        let room = res.as_ref().is_none_or(|res| {
            crate::capacity::placement::group_fits(res, &group, &Default::default()).is_ok()
        });
        let safe = !ceph || ceph_ok_to_stop(&r, &group).await;
        if room && safe {
            break;
        }
        k -= 1;
    }
    r.session.close().await;
    tracing::info!(batch = k, "batch = auto");
    k.max(1)
}

async fn ceph_ok_to_stop(r: &Remote, group: &[String]) -> bool {
    let mut ids = Vec::new();
    for h in group {
        match crate::maintenance::ceph_gate::osds_of(r, h).await {
            Ok(v) => ids.extend(v),
            Err(_) => return false,
        }
    }
    crate::maintenance::ceph_gate::osds_ok_to_stop(r, &ids)
        .await
        .is_ok()
}

/// The run pauses before `nodes` (recorded for its status): why, and the nodes not started.
fn paused_here(s: &RunSettings, p: Pause, nodes: &[Node]) -> (String, Vec<NodeRun>) {
    let why = p.why(&s.pacing.windows);
    tracing::warn!("{why}");
    s.pacing.record(p);
    let rs = nodes
        .iter()
        .map(|n| NodeRun::paused(&n.name, &why))
        .collect();
    (why, rs)
}

/// Run the playbook on `nodes` following its strategy; `done` nodes (resume) are skipped.
pub async fn execute(
    nodes: Vec<Node>,
    s: Arc<RunSettings>,
    forks: usize,
    done: &HashSet<String>,
    after_batch: &(dyn Fn(&[NodeRun]) + Sync),
) -> Vec<NodeRun> {
    let strategy = s.playbook.file.strategy.clone();
    let nodes = ordered(nodes, &strategy.order);
    let mut results: Vec<NodeRun> = Vec::new();
    let todo: Vec<Node> = nodes
        .iter()
        .filter(|n| {
            if done.contains(&n.name) {
                results.push(NodeRun::not_started(
                    &n.name,
                    "already done in the resumed run",
                ));
                false
            } else {
                true
            }
        })
        .cloned()
        .collect();
    let reboots = s.playbook.reboots();
    if s.check || (strategy.mode == Mode::Parallel && !reboots) {
        // One batch: the final table shows it; no per-batch table. Paced as one batch per
        // cluster (each cluster's backups are its own).
        if !s.check && !s.pacing.is_idle() {
            for (_, group) in crate::maintenance::cluster_lock::by_cluster(&todo) {
                if let Err(p) = s.pacing.before(&group, &s.cluster).await {
                    results.extend(paused_here(&s, p, &todo).1);
                    return results;
                }
            }
        }
        results.extend(run_many(todo, s.clone(), forks).await);
        return results;
    }
    if let Ok(mut v) = s.rolling.lock() {
        v.pending = todo.iter().map(|n| n.name.clone()).collect();
    }
    // Several clusters in one inventory: each rolls on its own (its own quorum gate, Ceph,
    // drain targets and halting), all at once.
    let clusters = crate::maintenance::cluster_lock::by_cluster(&todo);
    let rolls = clusters
        .into_iter()
        .map(|(_, nodes)| roll(nodes, s.clone(), forks, reboots, after_batch));
    for r in futures::future::join_all(rolls).await {
        results.extend(r);
    }
    let order: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
    results.sort_by_key(|r| order.iter().position(|n| *n == r.node));
    results
}

/// One cluster's nodes, batch by batch.
async fn roll(
    todo: Vec<Node>,
    s: Arc<RunSettings>,
    forks: usize,
    reboots: bool,
    after_batch: &(dyn Fn(&[NodeRun]) + Sync),
) -> Vec<NodeRun> {
    let strategy = s.playbook.file.strategy.clone();
    let mut results: Vec<NodeRun> = Vec::new();
    let auto = strategy.mode == Mode::Rolling && strategy.batch_size().is_auto();
    let size = if strategy.mode == Mode::Parallel {
        todo.len().max(1)
    } else if auto {
        1
    } else {
        strategy.batch_size().resolve(todo.len()).unwrap_or(1)
    };
    let mut failures = 0usize;
    let mut halted: Option<String> = None;
    let mut paused: Option<String> = None;
    if let Some(why) = drain_preflight(&s, &todo).await {
        let mut rs: Vec<NodeRun> = todo
            .iter()
            .map(|n| {
                let mut r = NodeRun::not_started(&n.name, &why);
                r.not_started = false;
                r.status = NodeStatus::Failed;
                r
            })
            .collect();
        after_batch(&rs);
        results.append(&mut rs);
        return results;
    }
    let mut rest: &[Node] = &todo;
    while !rest.is_empty() {
        let take = if auto && halted.is_none() && !s.cancel.is_cancelled() {
            auto_batch(&s, rest).await
        } else {
            size
        }
        .clamp(1, rest.len());
        let (batch, tail) = rest.split_at(take);
        rest = tail;
        if let Some(why) = &halted {
            results.extend(batch.iter().map(|n| NodeRun::halted(&n.name, why)));
            continue;
        }
        if s.cancel.is_cancelled() {
            results.extend(
                batch
                    .iter()
                    .map(|n| NodeRun::not_started(&n.name, "interrupted before its batch")),
            );
            continue;
        }
        if let Some(why) = &paused {
            results.extend(batch.iter().map(|n| NodeRun::paused(&n.name, why)));
            continue;
        }
        // Between nodes, never inside one: a window, --pause-after, the operator's answer, a
        // backup of the batch's guests. A pause stops the run here, resumable.
        if !s.pacing.is_idle() {
            if let Err(p) = s.pacing.before(batch, &s.cluster).await {
                let (why, rs) = paused_here(&s, p, batch);
                results.extend(rs);
                paused = Some(why);
                continue;
            }
        }
        if reboots {
            if let Err(err) = check_gate(batch, &s).await {
                let e = err.to_string();
                tracing::warn!("{e}");
                halted = Some(format!("halted: {e}"));
                // The node asked was lost: it is unreachable (or timed out), as it would be
                // in any step; the rest of the batch could not be gated, so it fails. Each is
                // journaled.
                let lost = err.lost();
                let mut rs: Vec<NodeRun> = Vec::new();
                for n in batch {
                    let mut r = NodeRun::not_started(&n.name, &e);
                    r.not_started = false;
                    r.status = match lost {
                        Some((node, status)) if node == n.name => status,
                        _ => NodeStatus::Failed,
                    };
                    s.events
                        .record(
                            &n.name,
                            crate::journal::Event::NodeFailed {
                                error: format!("quorum gate: {e}"),
                            },
                        )
                        .await;
                    rs.push(r);
                }
                after_batch(&rs);
                results.append(&mut rs);
                continue;
            }
        }
        if let Ok(mut v) = s.rolling.lock() {
            v.current.extend(batch.iter().map(|n| n.name.clone()));
        }
        let r = run_many(batch.to_vec(), s.clone(), forks).await;
        if let Ok(mut v) = s.rolling.lock() {
            for n in batch {
                v.pending.remove(&n.name);
                v.current.remove(&n.name);
            }
        }
        failures += r.iter().filter(|x| x.failed()).count();
        after_batch(&r);
        if failures > strategy.max_failures {
            let names: Vec<&str> = r
                .iter()
                .filter(|x| x.failed())
                .map(|x| x.node.as_str())
                .collect();
            halted = Some(format!(
                "halted: {} failed in an earlier batch",
                names.join(", ")
            ));
        }
        results.extend(r);
    }
    results
}

/// How a run ended, told from its nodes' results: what the journal records and the exit code.
#[derive(Debug, Clone)]
pub struct Ending {
    /// The exit code ([`exit_code`]).
    pub code: u8,
    /// The run's status in the journal.
    pub status: RunStatus,
    /// Where the nodes that stopped short stopped.
    pub stopped_at: Vec<StopPoint>,
    /// What the run left switched on on purpose, each once, sorted.
    pub left_on: Vec<String>,
}

/// The exit code of a run's (or a plan's) results: interrupted, then unreachable, then failed
/// (or halted), then the pause that kept nodes from starting (`pause`, a window or
/// `--pause-after`), else ok.
pub fn exit_code(runs: &[NodeRun], interrupted: bool, pause: Option<&Pause>) -> u8 {
    if interrupted || runs.iter().any(NodeRun::interrupted) {
        exit::INTERRUPTED
    } else if runs.iter().any(|r| r.status.is_connection_failure()) {
        exit::UNREACHABLE
    } else if runs.iter().any(|r| r.failed() || r.halted) {
        exit::FAILED
    } else if let Some(p) = pause.filter(|_| runs.iter().any(|r| r.paused)) {
        p.exit_code()
    } else {
        exit::OK
    }
}

/// How the run whose nodes came to `runs` ended ([`exit_code`] and the status it gives: a
/// failure is `halted` when the run halted, a pause is the pause's own status).
pub fn ending(runs: &[NodeRun], interrupted: bool, pause: Option<&Pause>) -> Ending {
    let code = exit_code(runs, interrupted, pause);
    let paused_status = pause.map(|p| p.status());
    let status = match code {
        exit::OK => RunStatus::Ok,
        exit::INTERRUPTED => RunStatus::Interrupted,
        exit::OUTSIDE_WINDOW | exit::PAUSED => {
            RunStatus::parse(paused_status.as_deref().unwrap_or("paused"))
        }
        _ if runs.iter().any(|r| r.halted) => RunStatus::Halted,
        _ => RunStatus::Failed,
    };
    let stopped_at: Vec<StopPoint> = runs.iter().filter_map(|r| r.stopped_at.clone()).collect();
    let left_on: Vec<String> = runs
        .iter()
        .flat_map(|r| r.left_on.iter().cloned())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    Ending {
        code,
        status,
        stopped_at,
        left_on,
    }
}
