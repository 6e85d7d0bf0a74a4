//! `pvefleet runs [show ID]` (what the journal says, including where a killed run stopped) and
//! `pvefleet maintenance on|off NODE...` (HA node maintenance by hand).

use super::playbook::journal_error;
use super::{load_inventory, print_json, use_color, AppError};
use crate::cli::{GlobalOpts, PruneArgs};
use crate::exit;
use crate::journal::{self, Journal};
use crate::report::runs::{render_list, render_run, shown_status};
use crate::sanitize::sanitize_str;
use crate::ssh::{self, ExitStatus};

/// `pvefleet runs [show ID]`.
pub fn cmd_runs(g: &GlobalOpts, show: Option<&str>) -> Result<u8, AppError> {
    let Some(id) = show else {
        let runs = journal::list();
        if g.json {
            print_json(&runs);
            return Ok(exit::OK);
        }
        println!("{}", render_list(&runs, use_color()));
        return Ok(exit::OK);
    };
    let j = Journal::open(id).map_err(journal_error)?;
    let meta = j.meta().map_err(journal_error)?;
    let mut events = j.events();
    // `-l`: only the selected nodes' sections and events; the run's own events (not a node's)
    // stay. The pattern is read against the inventory (groups, clusters).
    let mut backups = j.backups();
    let mut shown_nodes = meta.nodes.clone();
    if g.limit.is_some() {
        let inv = load_inventory(g)?;
        let selected: Vec<String> = super::targets(&inv, g)?
            .into_iter()
            .map(|n| n.name)
            .collect();
        let run_nodes = meta.nodes.clone();
        let shown =
            |node: &str| !run_nodes.iter().any(|n| n == node) || selected.iter().any(|n| n == node);
        events.retain(|r| shown(&r.node));
        backups.retain(|b| shown(&b.node));
        shown_nodes.retain(|n| selected.contains(n));
    }
    if g.json {
        let status = shown_status(&j, &meta.status);
        print_json(&serde_json::json!({
            "run": meta, "shown_status": status, "events": events, "backups": backups,
            "undo": j.undos(),
        }));
        return Ok(exit::OK);
    }
    print!(
        "{}",
        render_run(&j, &meta, &shown_nodes, &events, &backups, use_color())
    );
    Ok(exit::OK)
}

/// `pvefleet runs prune`: the runs beyond the `keep` newest and/or started more than
/// `older_than` ago, their backups on the nodes first (a node that cannot be reached keeps the
/// run's journal, so nothing is orphaned), then the journal.
pub async fn cmd_prune(g: &GlobalOpts, args: &PruneArgs) -> Result<u8, AppError> {
    let PruneArgs {
        keep,
        older_than,
        force,
    } = *args;
    if keep.is_none() && older_than.is_none() {
        return Err(AppError::Usage(
            "runs prune: say which runs: --keep N and/or --older-than AGE".into(),
        ));
    }
    let now = std::time::SystemTime::now();
    let mut code = exit::OK;
    let (mut pruned, mut kept) = (0usize, 0usize);
    for (i, meta) in journal::list().into_iter().enumerate() {
        if keep.is_some_and(|k| i < k) {
            continue;
        }
        let old_enough = older_than.is_none_or(|age| {
            humantime::parse_rfc3339(&meta.started)
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|d| d > age)
        });
        if !old_enough {
            continue;
        }
        let Ok(j) = Journal::open(&meta.id) else {
            continue;
        };
        if journal::is_driven(&j.dir) {
            println!("{}: kept: a pvefleet process drives it", meta.id);
            kept += 1;
            continue;
        }
        let backups: Vec<_> = j
            .backups()
            .into_iter()
            .filter(|b| b.phase != crate::vocab::Phase::Intent)
            .collect();
        let undoable = j
            .undos()
            .iter()
            .any(|u| u.phase == crate::vocab::Phase::Applied);
        let rollbackable = (!backups.is_empty() || undoable) && !meta.status.rolled_back();
        if rollbackable && !force {
            println!(
                "{}: kept: it can still be rolled back (pvefleet rollback {}); --force prunes it",
                meta.id, meta.id
            );
            kept += 1;
            continue;
        }
        // The backups on the nodes first.
        let nodes: std::collections::BTreeSet<&str> =
            backups.iter().map(|b| b.node.as_str()).collect();
        let mut all_gone = true;
        if !nodes.is_empty() {
            let mut g2 = g.clone();
            if g2.inventory.is_none() {
                g2.inventory = meta.inventory_path.clone();
            }
            let inv = load_inventory(&g2)?;
            let dir = crate::playbook::engine::backup_dir(&meta.id);
            for name in nodes {
                let gone = match inv.node(name) {
                    Some(n) => match crate::maintenance::remote::Remote::connect(
                        n,
                        g.timeout.unwrap_or(n.command_timeout),
                    )
                    .await
                    {
                        Ok(r) => {
                            let done = r
                                .ok(&format!("rm -rf -- {}", crate::quote::shell_quote(&dir)))
                                .await;
                            r.session.close().await;
                            done.map_err(|e| e.to_string())
                        }
                        Err(e) => Err(e.to_string()),
                    },
                    None => Err(format!("not in the inventory {}", inv.source)),
                };
                if let Err(why) = gone {
                    eprintln!(
                        "{}: {name}: its backups {dir} could not be removed ({}); the run is kept",
                        meta.id,
                        sanitize_str(&why)
                    );
                    all_gone = false;
                    code = code.max(exit::UNREACHABLE);
                }
            }
        }
        if !all_gone {
            kept += 1;
            continue;
        }
        match std::fs::remove_dir_all(&j.dir) {
            Ok(()) => {
                println!("{}: pruned ({})", meta.id, meta.status);
                pruned += 1;
            }
            Err(e) => {
                eprintln!("{}: cannot remove {}: {e}", meta.id, j.dir.display());
                code = code.max(exit::INTERNAL);
            }
        }
    }
    println!("{pruned} run(s) pruned, {kept} kept");
    Ok(code)
}

/// `pvefleet lock show` (`brk` `None`) and `pvefleet lock break RUN_ID`: per targeted cluster.
pub async fn cmd_lock(g: &GlobalOpts, brk: Option<&str>) -> Result<u8, AppError> {
    use crate::maintenance::cluster_lock::{break_all, show_all};
    let inv = load_inventory(g)?;
    let nodes = super::targets(&inv, g)?;
    let timeout = g
        .timeout
        .or_else(|| nodes.first().map(|n| n.command_timeout))
        .unwrap_or(std::time::Duration::from_secs(30));
    let name = |c: &Option<String>| c.clone().unwrap_or_else(|| "(unnamed)".into());
    let mut code = exit::OK;
    match brk {
        None => {
            for (c, got) in show_all(&nodes, timeout).await {
                match got {
                    Ok(None) => println!("{}: free", name(&c)),
                    Ok(Some(h)) => {
                        println!("{}: held by {}", name(&c), sanitize_str(&h.describe()))
                    }
                    Err(why) => {
                        eprintln!(
                            "{}: cannot read the lock: {}",
                            name(&c),
                            sanitize_str(&why.to_string())
                        );
                        code = code.max(exit::UNREACHABLE);
                    }
                }
            }
        }
        Some(run) => {
            for (c, got) in break_all(&nodes, run, timeout).await {
                match got {
                    Ok(true) => println!("{}: lock of run {run} broken", name(&c)),
                    Ok(false) => {
                        println!("{}: not held by run {run}; left as it is", name(&c));
                        code = code.max(exit::FAILED);
                    }
                    Err(why) => {
                        eprintln!(
                            "{}: cannot break the lock: {}",
                            name(&c),
                            sanitize_str(&why.to_string())
                        );
                        code = code.max(exit::UNREACHABLE);
                    }
                }
            }
        }
    }
    Ok(code)
}

/// The nodes `maintenance` acts on: those named, those `-l` selects when none is named, or,
/// with both, the named ones the pattern matches (a named node it leaves out is said and
/// skipped). Neither is a usage error: HA maintenance on every node is never a default.
fn maintenance_nodes(
    inv: &crate::inventory::Inventory,
    g: &GlobalOpts,
    named: &[String],
) -> Result<Vec<String>, AppError> {
    let selected = || -> Result<Vec<String>, AppError> {
        Ok(super::targets(inv, g)?
            .into_iter()
            .map(|n| n.name)
            .collect())
    };
    match (named.is_empty(), g.limit.is_some()) {
        (true, false) => Err(AppError::Usage(
            "name the nodes (`maintenance on pve2`) or select them with -l PATTERN".into(),
        )),
        (true, true) => selected(),
        (false, false) => Ok(named.to_vec()),
        (false, true) => {
            let selected = selected()?;
            let (kept, left): (Vec<String>, Vec<String>) =
                named.iter().cloned().partition(|n| selected.contains(n));
            if !left.is_empty() {
                eprintln!(
                    "not selected by -l {}, skipped: {}",
                    sanitize_str(g.limit.as_deref().unwrap_or_default()),
                    sanitize_str(&left.join(", "))
                );
            }
            Ok(kept)
        }
    }
}

/// `pvefleet maintenance on|off NODE...` (with `--json`, one document: each node's result).
pub async fn cmd_maintenance(g: &GlobalOpts, named: &[String], on: bool) -> Result<u8, AppError> {
    let inv = load_inventory(g)?;
    let nodes = maintenance_nodes(&inv, g, named)?;
    let mut code = exit::OK;
    let mut report: Vec<serde_json::Value> = Vec::new();
    let state = if on { "on" } else { "off" };
    // Each node's outcome: said on stdout (done) or stderr (not), or collected for --json.
    let mut said = |name: &str, status: &str, error: Option<String>| {
        match &error {
            None if !g.json => println!("{name}: HA maintenance {state}"),
            Some(e) if !g.json => eprintln!("{name}: {}", sanitize_str(e)),
            _ => {}
        }
        report.push(serde_json::json!({
            "node": name, "status": status, "maintenance": state, "error": error,
        }));
    };
    for name in &nodes {
        let name = name.as_str();
        let Some(n) = inv.node(name) else {
            return Err(AppError::Usage(format!(
                "{name}: not in the inventory {}",
                inv.source
            )));
        };
        let session = match ssh::connect(&n.connect_spec()).await {
            Ok(s) => s,
            Err(e) => {
                said(name, "unreachable", Some(e.to_string()));
                code = code.max(exit::UNREACHABLE);
                continue;
            }
        };
        let cmd = crate::maintenance::drain::maintenance_cmd(name, on);
        let timeout = g.timeout.unwrap_or(n.command_timeout);
        match session.exec(&cmd, timeout).await {
            Ok(o) if o.exit == ExitStatus::Code(0) => said(name, "ok", None),
            Ok(o) => {
                said(
                    name,
                    "failed",
                    Some(format!(
                        "{cmd} failed: {}",
                        String::from_utf8_lossy(&o.stderr).trim()
                    )),
                );
                code = code.max(exit::FAILED);
            }
            Err(e) => {
                said(name, "failed", Some(e.to_string()));
                code = code.max(exit::FAILED);
            }
        }
        session.close().await;
    }
    if g.json {
        print_json(&serde_json::json!({"version": 1, "nodes": report}));
    }
    Ok(code)
}
