//! `pvefleet runs [show ID]` (what the journal says, including where a killed run stopped) and
//! `pvefleet maintenance on|off NODE...` (HA node maintenance by hand).

use comfy_table::{presets, Table};

use super::playbook::journal_error;
use super::{load_inventory, print_json, use_color, AppError};
use crate::cli::GlobalOpts;
use crate::exit;
use crate::journal::{self, Event, Journal};
use crate::sanitize::sanitize_str;
use crate::ssh::{self, ExitStatus};

/// The status to show: a `running` run that no process drives was killed.
fn shown_status(j: &Journal, status: &journal::RunStatus) -> String {
    if *status == journal::RunStatus::Running && !journal::is_driven(&j.dir) {
        "killed (no pvefleet process drives it)".to_string()
    } else {
        status.to_string()
    }
}

fn describe(e: &Event) -> String {
    match e {
        Event::StepDone { result, .. } => format!(
            "{} {}: {}",
            serde_json::to_value(result.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            result.step,
            result.detail
        ),
        Event::StepStarted { step, .. } => format!("step_started {step}"),
        Event::Reboot { state, .. } => format!("reboot {state}"),
        Event::Maintenance { state, why } => match why {
            Some(w) => format!("maintenance {state} ({w})"),
            None => format!("maintenance {state}"),
        },
        other => {
            let v = serde_json::to_value(other).unwrap_or_default();
            let kind = v["event"].as_str().unwrap_or("").to_string();
            let data = &v["data"];
            if data.is_null() || data.as_object().is_some_and(|o| o.is_empty()) {
                kind
            } else {
                format!("{kind} {data}")
            }
        }
    }
}

fn at(time: &str) -> Option<std::time::SystemTime> {
    humantime::parse_rfc3339(time).ok()
}

fn secs(a: std::time::SystemTime, b: std::time::SystemTime) -> String {
    let d = b.duration_since(a).unwrap_or_default();
    format!("{:.1}s", d.as_secs_f64())
}

/// Where the time went: per node its duration, per step its duration, per reboot state the
/// time since the previous state (from the journal's millisecond timestamps).
pub fn timings(events: &[journal::Record]) -> String {
    let mut t = Table::new();
    t.load_preset(presets::UTF8_FULL_CONDENSED).set_header(vec![
        "node",
        "step / reboot state",
        "took",
    ]);
    if !use_color() {
        t.force_no_tty();
    }
    let mut nodes: Vec<&str> = Vec::new();
    for r in events {
        if r.node != "-" && !nodes.contains(&r.node.as_str()) {
            nodes.push(&r.node);
        }
    }
    for node in nodes {
        let mine: Vec<&journal::Record> = events.iter().filter(|r| r.node == node).collect();
        let start = mine
            .iter()
            .find(|r| matches!(r.event, Event::NodeStarted {}))
            .and_then(|r| at(&r.time));
        let end = mine
            .iter()
            .rev()
            .find(|r| matches!(r.event, Event::NodeDone { .. } | Event::NodeFailed { .. }))
            .and_then(|r| at(&r.time));
        if let (Some(a), Some(b)) = (start, end) {
            t.add_row(vec![node.to_string(), "(whole node)".into(), secs(a, b)]);
        }
        let mut step_start: Option<(String, std::time::SystemTime)> = None;
        let mut last_state: Option<std::time::SystemTime> = None;
        for r in &mine {
            let Some(time) = at(&r.time) else { continue };
            match &r.event {
                Event::StepStarted { step, .. } => {
                    step_start = Some((step.clone(), time));
                    last_state = Some(time);
                }
                Event::Reboot { state, .. } => {
                    if let Some(prev) = last_state {
                        t.add_row(vec![
                            node.to_string(),
                            format!("  reboot: {state}"),
                            secs(prev, time),
                        ]);
                    }
                    last_state = Some(time);
                }
                Event::StepDone { result, .. } => {
                    if let Some((name, a)) = step_start.take() {
                        if name == result.step {
                            t.add_row(vec![node.to_string(), sanitize_str(&name), secs(a, time)]);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    t.to_string()
}

/// `pvefleet runs [show ID]`.
pub fn cmd_runs(g: &GlobalOpts, show: Option<&str>) -> Result<u8, AppError> {
    let Some(id) = show else {
        let runs = journal::list();
        if g.json {
            print_json(&runs);
            return Ok(exit::OK);
        }
        // Fits 80 columns: the playbook by name (its path is in `runs show`), nodes folded as
        // exec folds them (pve[1-4]), the start to the minute.
        let mut t = Table::new();
        t.load_preset(presets::UTF8_FULL_CONDENSED)
            .set_content_arrangement(comfy_table::ContentArrangement::Dynamic)
            .set_header(vec!["run", "status", "playbook", "nodes", "started"]);
        if !use_color() {
            t.force_no_tty();
        }
        for r in runs {
            let status = match Journal::open(&r.id) {
                Ok(j) => shown_status(&j, &r.status),
                Err(_) => r.status.to_string(),
            };
            let playbook = std::path::Path::new(&r.playbook)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| r.playbook.clone());
            let names: Vec<&str> = r.nodes.iter().map(String::as_str).collect();
            let started = r.started.get(..16).unwrap_or(&r.started).replace('T', " ");
            t.add_row(vec![
                r.id,
                sanitize_str(&status),
                sanitize_str(&playbook),
                crate::nodeset::fold(&names),
                started,
            ]);
        }
        // The id is copied into `runs show`, `rollback`, `run --resume`, and the start is read
        // at a glance: neither is ever broken over two lines (the playbook and status wrap).
        for c in [0, 4] {
            if let Some(col) = t.column_mut(c) {
                col.set_constraint(comfy_table::ColumnConstraint::ContentWidth);
            }
        }
        println!("{t}");
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
    let histories = journal::histories(&events);
    let status = shown_status(&j, &meta.status);
    if g.json {
        print_json(&serde_json::json!({
            "run": meta, "shown_status": status, "events": events, "backups": backups,
            "undo": j.undos(),
        }));
        return Ok(exit::OK);
    }
    println!(
        "run {} ({status}): {} on {}\nstarted {}; journal {}",
        meta.id,
        meta.playbook,
        meta.nodes.join(","),
        meta.started,
        j.dir.display()
    );
    // The run's parameters as they would be typed.
    let mut params: Vec<String> = meta.extra_vars.iter().map(|e| format!("-e {e}")).collect();
    if let Some(l) = &meta.limit {
        params.push(format!("--limit {l}"));
    }
    params.push(format!("--guests {}", meta.guests));
    if let Some(f) = meta.forks {
        params.push(format!("--forks {f}"));
    }
    if let Some(t) = meta.timeout_ms {
        params.push(format!(
            "--timeout {}",
            humantime::format_duration(std::time::Duration::from_millis(t))
        ));
    }
    for w in &meta.windows {
        params.push(format!("--window {w:?}"));
    }
    println!("parameters: {}", sanitize_str(&params.join(" ")));
    if let Some(why) = meta.paused.as_ref().filter(|_| meta.status.paused()) {
        println!(
            "{}\n  continue with: pvefleet run --resume {}",
            sanitize_str(why),
            meta.id
        );
    }
    for node in &shown_nodes {
        let where_ = match histories.get(node) {
            None => "not started".to_string(),
            Some(h) if h.rolled_back == Some(true) => "rolled back".to_string(),
            Some(h) if h.done && h.rolled_back == Some(false) => {
                "done; rollback incomplete (see the events)".to_string()
            }
            Some(h) if h.done => "done".to_string(),
            Some(h) => {
                let mut w = match (&h.in_step, &h.interrupted) {
                    (_, Some(p)) => format!(
                        "interrupted in step `{}`{}",
                        p.step.as_deref().unwrap_or("?"),
                        p.state
                            .as_deref()
                            .map(|s| format!(" ({s})"))
                            .unwrap_or_default()
                    ),
                    (Some((_, step)), None) => format!("stopped in step `{step}`"),
                    (None, None) => format!("stopped after {} step(s)", h.steps.len()),
                };
                if let Some((_, p)) = h.reboots.iter().next_back() {
                    w.push_str(&format!("; reboot state {}", p.state));
                }
                if h.maintenance_on {
                    w.push_str("; HA maintenance ON");
                }
                w.push_str(&what_is_left(h));
                w
            }
        };
        println!("  {node:8} {}", sanitize_str(&where_));
    }
    println!("{}", timings(&events));
    for r in &events {
        println!(
            "{} {:8} {}",
            r.time,
            r.node,
            sanitize_str(&describe(&r.event))
        );
        // A step's output (capped when recorded) under it, indented.
        if let Event::StepDone { result, .. } = &r.event {
            for line in result.output.iter().flat_map(|o| o.lines()) {
                println!("    {}", sanitize_str(line));
            }
        }
    }
    for b in backups
        .iter()
        .filter(|b| b.phase != crate::vocab::Phase::Intent)
    {
        println!("backup {}: {} -> {}", b.node, b.path, b.backup);
    }
    for l in &meta.left_on {
        println!("left on: {}", sanitize_str(l));
    }
    let leftovers = histories
        .values()
        .any(|h| !h.done && h.left_in_cluster() && h.rolled_back != Some(true));
    if leftovers {
        println!(
            "the cluster is not as the run found it: `pvefleet run --resume {}` finishes the run, `pvefleet rollback {}` puts it back",
            j.id, j.id
        );
    }
    Ok(exit::OK)
}

/// What a run that did not finish left in the cluster for a node, besides HA maintenance:
/// guests moved away (and where they are), guests it shut down, a migration it did not see
/// end, Ceph noout. Empty when nothing.
fn what_is_left(h: &crate::journal::NodeHistory) -> String {
    use crate::maintenance::drain::describe;
    let mut w = String::new();
    for (g, origin, at) in &h.moved_guests {
        w.push_str(&format!(
            "; {} moved to {at} (belongs on {origin})",
            describe(std::slice::from_ref(g))
        ));
    }
    for (g, from, to) in &h.moving_guests {
        w.push_str(&format!(
            "; {} was being moved from {from} to {to}",
            describe(std::slice::from_ref(g))
        ));
    }
    if !h.stopped_guests.is_empty() {
        w.push_str(&format!("; shut down: {}", describe(&h.stopped_guests)));
    }
    if let Some(scope) = &h.noout {
        w.push_str(&format!("; Ceph noout set ({scope})"));
    }
    w
}

/// `pvefleet runs prune`: the runs beyond the `keep` newest and/or started more than
/// `older_than` ago, their backups on the nodes first (a node that cannot be reached keeps the
/// run's journal, so nothing is orphaned), then the journal.
pub async fn cmd_prune(
    g: &GlobalOpts,
    keep: Option<usize>,
    older_than: Option<std::time::Duration>,
    force: bool,
) -> Result<u8, AppError> {
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
