//! `pvefleet rollback RUN`: undo what a run changed, node by node (honouring `--limit`); what
//! is done on each node is [`crate::playbook::rollback`]'s. Here the journal is opened (locked),
//! the nodes chosen, the operator asked, and the outcome printed with the exit code.

use super::playbook::journal_error;
use super::{ctrl_c_token, load_inventory, print_json, signals, AppError};
use crate::cli::{GlobalOpts, RollbackArgs};
use crate::exit;
use crate::inventory::limit;
use crate::inventory::{Inventory, Node};
use crate::journal::{Journal, NodeHistory};
use crate::maintenance::balancers;
use crate::maintenance::cluster_lock::{cluster_members, ClusterLocks, LockOwner};
use crate::playbook::rollback::{
    files_by_node, json_entry, settle_status, undos_by_node, Ended, NodeRollback, NodeWork,
};
use crate::sanitize::sanitize_str;
use crate::ssh;
use std::collections::BTreeMap;
use std::io::IsTerminal;

/// `pvefleet rollback`.
pub async fn cmd_rollback(g: &GlobalOpts, args: &RollbackArgs) -> Result<u8, AppError> {
    let (id, yes, force) = (args.run_id.as_str(), args.yes, args.force);
    let j = Journal::open_locked(id).map_err(journal_error)?;
    let meta = j.meta().map_err(journal_error)?;
    let mut files = files_by_node(&j.backups());
    let mut undos = undos_by_node(&j.undos());
    let mut left: BTreeMap<String, NodeHistory> = j
        .histories()
        .into_iter()
        .filter(|(_, h)| h.left_in_cluster())
        .collect();
    let mut g2 = g.clone();
    if g2.inventory.is_none() {
        g2.inventory = meta.inventory_path.clone();
    }
    let inv = load_inventory(&g2)?;
    if let Some(l) = g.limit.as_deref() {
        let keep: Vec<String> = limit::select(&inv, Some(l))
            .map_err(|e| AppError::Usage(e.to_string()))?
            .into_iter()
            .map(|n| n.name.clone())
            .collect();
        files.retain(|n, _| keep.contains(n));
        undos.retain(|n, _| keep.contains(n));
        left.retain(|n, _| keep.contains(n));
    }
    let nodes: Vec<String> = files
        .keys()
        .chain(undos.keys())
        .chain(left.keys())
        .cloned()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    // The cluster's HA rebalancing the run paused and did not restore (a killed controller):
    // cluster-wide, not a node's, so not limited by --limit.
    let balancers_owed = balancers::owed(&j.events());
    if nodes.is_empty() && !balancers_owed {
        if g.json {
            print_json(&serde_json::json!({"version": 1, "run": id, "nodes": []}));
        } else {
            println!("run {id} changed nothing that can be rolled back on the selected nodes");
        }
        return Ok(exit::OK);
    }
    let nfiles: usize = files.values().map(Vec::len).sum();
    let nundo: usize = undos.values().map(Vec::len).sum();
    let nguests: usize = left
        .values()
        .map(|h| h.moved_guests.len() + h.moving_guests.len() + h.stopped_guests.len())
        .sum();
    let nstate = left
        .values()
        .filter(|h| h.maintenance_on || h.noout.is_some())
        .count();
    if !yes && !std::io::stdin().is_terminal() {
        return Err(AppError::Usage(
            "not on a terminal: pass --yes to roll back".into(),
        ));
    }
    if !yes {
        match signals::confirm(&format!(
            "Roll back run {id} on {} node(s): {nfiles} file(s), {nundo} undo command(s), {nguests} guest(s) to put back, HA maintenance / Ceph noout left on {nstate} node(s){}?",
            nodes.len(),
            if balancers_owed { ", balancers (HA rebalancing, ProxLB) paused" } else { "" }
        ))
        .await
        {
            Some(true) => {}
            _ => {
                eprintln!("nothing done");
                return Ok(exit::OK);
            }
        }
    }
    // The cluster lock, as a run takes it: a rollback moves guests and switches HA maintenance,
    // noout and the balancers, so it never acts while another run drives the cluster. The lock
    // the rolled-back run left (its controller killed) is taken over, as its resume would, and
    // released at the end: the run is over once it is rolled back.
    // Each remote command's bound, as the run's own: --timeout, else the run's, else the
    // inventory's command_timeout.
    let timeout = super::playbook::remote_timeout(
        g.timeout
            .or(meta.timeout_ms.map(std::time::Duration::from_millis)),
        &inv.nodes,
    );
    let lock_nodes = lock_nodes(&inv.nodes, &nodes, balancers_owed.then_some(&meta.nodes));
    let owner = LockOwner::this_process(id, &format!("rollback of {}", meta.playbook_name()));
    let locks = match ClusterLocks::take(&lock_nodes, &owner, Some(id), timeout).await {
        Ok(l) => l,
        Err(refusals) => return Ok(super::playbook::refused_by_lock(&refusals)),
    };
    let work = roll_back(
        g,
        (&j, &meta),
        &inv,
        nodes,
        (files, undos, left),
        force,
        balancers_owed,
        timeout,
    );
    Ok(locks.held_while(work).await)
}

/// The nodes through which the rollback's cluster locks are taken: every inventory node of a
/// cluster that has a node to roll back (any of them may answer for it), and with
/// `whole_run` (balancers to restore) every cluster of the run's nodes.
fn lock_nodes(all: &[Node], rolled: &[String], whole_run: Option<&Vec<String>>) -> Vec<Node> {
    let named: Vec<Node> = all
        .iter()
        .filter(|n| rolled.contains(&n.name) || whole_run.is_some_and(|w| w.contains(&n.name)))
        .cloned()
        .collect();
    cluster_members(all, &named).into_iter().cloned().collect()
}

/// What the journal says to put back, node by node.
type Owed = (
    BTreeMap<String, Vec<crate::playbook::rollback::FileRec>>,
    BTreeMap<String, Vec<crate::journal::UndoRecord>>,
    BTreeMap<String, NodeHistory>,
);

/// Roll back each node, then the balancers; the JSON report is printed here.
#[allow(clippy::too_many_arguments)]
async fn roll_back(
    g: &GlobalOpts,
    (j, meta): (&Journal, &crate::journal::RunMeta),
    inv: &Inventory,
    nodes: Vec<String>,
    (files, undos, left): Owed,
    force: bool,
    balancers_owed: bool,
    timeout: std::time::Duration,
) -> u8 {
    let id = j.id.as_str();
    let mut code = exit::OK;
    let mut report: Vec<serde_json::Value> = Vec::new();
    let quiet = g.json;
    let alone = |node: &str, status: &str, why: String| {
        if !quiet {
            eprintln!("{node}: {}", sanitize_str(&why));
        }
        json_entry(node, status, 0, 0, &[], &[why])
    };
    for node in nodes {
        let Some(n) = inv.node(&node) else {
            report.push(alone(
                &node,
                "skipped",
                format!("not in the inventory {}; skipped", inv.source),
            ));
            code = code.max(exit::FAILED);
            continue;
        };
        let session = match ssh::connect(&n.connect_spec()).await {
            Ok(s) => s,
            Err(e) => {
                report.push(alone(&node, "unreachable", e.to_string()));
                code = code.max(exit::UNREACHABLE);
                continue;
            }
        };
        let work = NodeWork {
            node: n,
            inv,
            files: files.get(&node).map(Vec::as_slice).unwrap_or_default(),
            undos: undos.get(&node).map(Vec::as_slice).unwrap_or_default(),
            left: left.get(&node),
        };
        let mut nr = NodeRollback::new(&node, &session, force, g.json);
        let ended = nr.run(work, j, ctrl_c_token).await;
        if ended != Ended::RolledBack {
            code = code.max(exit::FAILED);
        }
        report.push(nr.entry(ended.as_str()));
        session.close().await;
    }
    let bus = crate::events::EventBus::new(Some(j.clone())).consumer(crate::events::stderr_notes());
    if balancers_owed
        && balancers::restore_all(&bus, &inv.nodes, timeout)
            .await
            .is_err()
    {
        code = code.max(exit::FAILED);
    }
    settle_status(j, meta);
    if g.json {
        let status = j.meta().map(|m| m.status.to_string()).unwrap_or_default();
        print_json(&serde_json::json!({
            "version": 1, "run": id, "status": status, "nodes": report,
        }));
    }
    code
}
