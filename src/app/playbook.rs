//! `pvefleet plan`, `run`, `rollback`, `runs`.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;

use comfy_table::{presets, Cell, CellAlignment, ContentArrangement, Table};

use super::{ctrl_c_token, load_inventory, print_json, targets, use_color, AppError};
use crate::cli::GlobalOpts;
use crate::exec::NodeStatus;
use crate::exit;
use crate::journal::{self, Journal, RunMeta};
use crate::playbook::engine::{GuestPolicy, NodeRun, RunSettings, StepStatus};
use crate::playbook::{rolling, Playbook};
use crate::report::exec::short_duration;
use crate::report::sanitize::sanitize_str;
use crate::ssh::{self, ExitStatus};

fn parse_extra(items: &[String]) -> Result<BTreeMap<String, toml::Value>, AppError> {
    let mut out = BTreeMap::new();
    for it in items {
        let (k, v) = it
            .split_once('=')
            .ok_or_else(|| AppError::Usage(format!("-e {it}: expected KEY=VALUE")))?;
        let value = toml::from_str::<toml::Table>(&format!("v = {v}"))
            .ok()
            .and_then(|t| t.get("v").cloned())
            .unwrap_or_else(|| toml::Value::String(v.to_string()));
        out.insert(k.trim().to_string(), value);
    }
    Ok(out)
}

fn load_playbook(path: &Path) -> Result<Playbook, AppError> {
    Playbook::load(path).map_err(|e| AppError::BadInput(e.to_string()))
}

/// Per-node plan, as text: what would change.
pub fn render_plan(runs: &[NodeRun]) -> String {
    let mut out = String::new();
    for r in runs {
        out.push_str(&format!("== {} ==\n", r.node));
        if let Some(e) = &r.error {
            out.push_str(&format!("  ERROR: {}\n", sanitize_str(e)));
        }
        for s in &r.steps {
            let mark = match s.status {
                StepStatus::Ok => "ok     ",
                StepStatus::Changed => "CHANGE ",
                StepStatus::Skipped => "skip   ",
                StepStatus::Failed => "FAILED ",
            };
            out.push_str(&format!(
                "  {mark} {}: {}\n",
                s.step,
                sanitize_str(&s.detail)
            ));
            for c in &s.commands {
                out.push_str(&format!("           $ {}\n", sanitize_str(c)));
            }
            if let Some(d) = &s.diff {
                for l in d.lines() {
                    out.push_str(&format!("           {}\n", sanitize_str(l)));
                }
            }
        }
    }
    out
}

/// `plan: N change(s) on M node(s)`.
pub fn plan_summary(runs: &[NodeRun]) -> String {
    let changes: usize = runs.iter().map(|r| r.count(StepStatus::Changed)).sum();
    let nodes = runs
        .iter()
        .filter(|r| r.count(StepStatus::Changed) > 0)
        .count();
    format!("plan: {changes} change(s) on {nodes} node(s)")
}

/// The per-node result table.
pub fn render_results(runs: &[NodeRun], color: bool) -> String {
    let mut t = Table::new();
    t.load_preset(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(vec![
            "node", "status", "ok", "changed", "skipped", "failed", "reboot", "duration", "error",
        ]);
    if !color {
        t.force_no_tty();
    }
    for r in runs {
        let status = if r.not_started {
            "not started".to_string()
        } else {
            r.status.as_str().to_string()
        };
        t.add_row(vec![
            Cell::new(&r.node),
            Cell::new(status),
            Cell::new(r.count(StepStatus::Ok)).set_alignment(CellAlignment::Right),
            Cell::new(r.count(StepStatus::Changed)).set_alignment(CellAlignment::Right),
            Cell::new(r.count(StepStatus::Skipped)).set_alignment(CellAlignment::Right),
            Cell::new(r.count(StepStatus::Failed)).set_alignment(CellAlignment::Right),
            Cell::new(if r.rebooted { "yes" } else { "" }),
            Cell::new(short_duration(std::time::Duration::from_millis(
                r.duration_ms,
            )))
            .set_alignment(CellAlignment::Right),
            Cell::new(sanitize_str(r.error.as_deref().unwrap_or(""))),
        ]);
    }
    t.to_string()
}

fn exit_code(runs: &[NodeRun], interrupted: bool) -> u8 {
    if interrupted
        || runs
            .iter()
            .any(|r| r.status == NodeStatus::Cancelled && !r.not_started)
    {
        exit::INTERRUPTED
    } else if runs.iter().any(|r| r.status.is_connection_failure()) {
        exit::UNREACHABLE
    } else if runs.iter().any(|r| {
        r.failed() || (r.not_started && r.error.as_deref().is_some_and(|e| e.starts_with("halted")))
    }) {
        exit::FAILED
    } else {
        exit::OK
    }
}

fn settings(
    pb: Playbook,
    check: bool,
    extra: BTreeMap<String, toml::Value>,
    g: &GlobalOpts,
    run_id: String,
    journal: Option<Journal>,
    guests: GuestPolicy,
) -> Arc<RunSettings> {
    Arc::new(RunSettings {
        playbook: pb,
        check,
        extra_vars: extra,
        run_id,
        journal,
        timeout: g.timeout,
        guests,
        on_step: None,
    })
}

async fn plan_runs(
    g: &GlobalOpts,
    pb: &Playbook,
    extra: &BTreeMap<String, toml::Value>,
    nodes: &[crate::inventory::Node],
) -> Vec<NodeRun> {
    let cancel = ctrl_c_token();
    let s = settings(
        pb.clone(),
        true,
        extra.clone(),
        g,
        "plan".into(),
        None,
        GuestPolicy::Refuse,
    );
    rolling::execute(
        nodes.to_vec(),
        s,
        usize::from(g.forks),
        &cancel,
        None,
        &HashSet::new(),
        &|_| {},
    )
    .await
}

/// `pvefleet plan`.
pub async fn cmd_plan(g: &GlobalOpts, path: &Path, extra: &[String]) -> Result<u8, AppError> {
    let pb = load_playbook(path)?;
    let extra = parse_extra(extra)?;
    let inv = load_inventory(g)?;
    let nodes = targets(&inv, g)?;
    let runs = plan_runs(g, &pb, &extra, &nodes).await;
    if g.json {
        print_json(
            &serde_json::json!({"version": 1, "playbook": path, "check": true, "nodes": runs}),
        );
    } else {
        print!("{}", render_plan(&runs));
        println!("{}; nothing was changed", plan_summary(&runs));
    }
    Ok(if runs.iter().any(|r| r.failed()) {
        exit_code(&runs, false).max(exit::FAILED)
    } else {
        exit::OK
    })
}

fn confirm(question: &str) -> bool {
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    matches!(line.trim(), "y" | "Y" | "yes")
}

/// `pvefleet run`.
#[allow(clippy::too_many_arguments)]
pub async fn cmd_run(
    g: &GlobalOpts,
    path: Option<&Path>,
    check: bool,
    yes: bool,
    extra: &[String],
    guests: GuestPolicy,
    resume: Option<&str>,
) -> Result<u8, AppError> {
    let (journal, pb, done, limit) = match resume {
        Some(id) => {
            let j = Journal::open(id).map_err(|e| AppError::Usage(e.to_string()))?;
            let meta = j.meta().map_err(|e| AppError::Internal(e.to_string()))?;
            let pb = load_playbook(Path::new(&meta.playbook))?;
            let done = j.done_nodes();
            eprintln!("resuming run {id}: {} node(s) already done", done.len());
            (Some(j), pb, done, meta.limit.clone())
        }
        None => (
            None,
            load_playbook(path.expect("clap requires it"))?,
            HashSet::new(),
            g.limit.clone(),
        ),
    };
    if check {
        return cmd_plan(g, &pb.path.clone(), extra).await;
    }
    let extra = parse_extra(extra)?;
    let mut g2 = g.clone();
    g2.limit = limit.clone();
    let inv = load_inventory(&g2)?;
    let nodes = targets(&inv, &g2)?;
    // The plan first.
    let plan = plan_runs(g, &pb, &extra, &nodes).await;
    if !g.json {
        eprint!("{}", render_plan(&plan));
        eprintln!("{}", plan_summary(&plan));
    }
    if let Some(bad) = plan.iter().find(|r| r.failed() && !done.contains(&r.node)) {
        if bad.status.is_connection_failure() || bad.status == NodeStatus::Error {
            eprintln!(
                "pvefleet: planning failed on {}: {}",
                bad.node,
                bad.error.as_deref().unwrap_or("")
            );
            return Ok(exit_code(&plan, false));
        }
    }
    if !yes {
        if !std::io::stdin().is_terminal() {
            return Err(AppError::Usage(
                "not on a terminal: pass --yes to apply the plan".into(),
            ));
        }
        if !confirm(&format!(
            "Apply {} to {} node(s)?",
            pb.file.name,
            nodes.len()
        )) {
            eprintln!("nothing done");
            return Ok(exit::OK);
        }
    }
    let journal = match journal {
        Some(j) => j,
        None => {
            let id = journal::new_run_id();
            Journal::create(&RunMeta {
                id: id.clone(),
                playbook: std::fs::canonicalize(&pb.path)
                    .unwrap_or(pb.path.clone())
                    .display()
                    .to_string(),
                inventory: inv.source.clone(),
                nodes: nodes.iter().map(|n| n.name.clone()).collect(),
                started: crate::audit::rfc3339_now(),
                status: "running".into(),
                limit: g.limit.clone(),
            })
            .map_err(|e| AppError::Internal(format!("cannot create the run journal: {e}")))?
        }
    };
    journal.set_status("running");
    journal.save(
        "plan.json",
        &serde_json::to_value(&plan).unwrap_or_default(),
    );
    let run_id = journal.meta().map(|m| m.id).unwrap_or_default();
    eprintln!("run {run_id} (journal: {})", journal.dir.display());
    let cancel = ctrl_c_token();
    let steps = Arc::new(crate::progress::StepProgress::new(
        &pb.file.name,
        nodes.len(),
    ));
    let mut s = settings(
        pb.clone(),
        false,
        extra,
        g,
        run_id.clone(),
        Some(journal.clone()),
        guests,
    );
    if let Some(inner) = Arc::get_mut(&mut s) {
        inner.on_step = steps.sink();
    }
    let json = g.json;
    let color = use_color();
    let shown = Arc::clone(&steps);
    let after = move |batch: &[NodeRun]| {
        if !json && !batch.is_empty() {
            shown.println(&render_results(batch, color));
        }
    };
    let runs = rolling::execute(
        nodes,
        s,
        usize::from(g.forks),
        &cancel,
        steps.events(),
        &done,
        &after,
    )
    .await;
    steps.finish();
    let code = exit_code(&runs, cancel.is_cancelled());
    let status = match code {
        exit::OK => "ok",
        exit::INTERRUPTED => "interrupted",
        _ if runs.iter().any(|r| {
            r.not_started && r.error.as_deref().is_some_and(|e| e.starts_with("halted"))
        }) =>
        {
            "halted"
        }
        _ => "failed",
    };
    journal.set_status(status);
    journal.save(
        "result.json",
        &serde_json::to_value(&runs).unwrap_or_default(),
    );
    if g.json {
        print_json(
            &serde_json::json!({"version": 1, "run": run_id, "status": status, "nodes": runs}),
        );
    } else {
        println!("{}", render_results(&runs, color));
        println!(
            "run {run_id}: {status}{}",
            if status == "ok" {
                String::new()
            } else {
                format!(" (resume with: pvefleet run --resume {run_id})")
            }
        );
    }
    Ok(code)
}

/// `pvefleet rollback`.
pub async fn cmd_rollback(g: &GlobalOpts, id: &str, yes: bool) -> Result<u8, AppError> {
    let j = Journal::open(id).map_err(|e| AppError::Usage(e.to_string()))?;
    let backups = j.backups();
    if backups.is_empty() {
        println!("run {id} changed no file; nothing to roll back");
        return Ok(exit::OK);
    }
    if !yes
        && !confirm(&format!(
            "Restore {} file(s) changed by run {id}?",
            backups.len()
        ))
    {
        return Ok(exit::OK);
    }
    let inv = load_inventory(g)?;
    let mut code = exit::OK;
    let mut by_node: BTreeMap<String, Vec<&journal::BackupRecord>> = BTreeMap::new();
    for b in &backups {
        by_node.entry(b.node.clone()).or_default().push(b);
    }
    for (node, recs) in by_node {
        let Some(n) = inv.node(&node) else {
            eprintln!("{node}: not in the inventory; skipped");
            code = exit::FAILED;
            continue;
        };
        let session = match ssh::connect(&n.connect_spec()).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{node}: {e}");
                code = exit::UNREACHABLE;
                continue;
            }
        };
        let mut refresh: Vec<String> = Vec::new();
        for b in recs.iter().rev() {
            let (p, bk) = (
                crate::quote::shell_quote(&b.path),
                crate::quote::shell_quote(&b.backup),
            );
            let cmd = if b.existed {
                format!("cp -a {bk} {p}")
            } else {
                format!("rm -f {p}")
            };
            match session.exec(&cmd, n.command_timeout).await {
                Ok(o) if o.exit == ExitStatus::Code(0) => println!("{node}: restored {}", b.path),
                Ok(o) => {
                    eprintln!(
                        "{node}: {}: {}",
                        b.path,
                        String::from_utf8_lossy(&o.stderr).trim()
                    );
                    code = exit::FAILED;
                }
                Err(e) => {
                    eprintln!("{node}: {e}");
                    code = exit::FAILED;
                }
            }
            if let Some(r) = &b.refresh {
                if !refresh.contains(r) {
                    refresh.push(r.clone());
                }
            }
        }
        for r in &refresh {
            let ok = matches!(session.exec(r, n.command_timeout).await, Ok(o) if o.exit == ExitStatus::Code(0));
            println!("{node}: {r}: {}", if ok { "done" } else { "FAILED" });
            if !ok {
                code = exit::FAILED;
            }
        }
        if !refresh.is_empty() {
            println!(
                "{node}: a reboot is needed for the restored boot configuration to take effect"
            );
        }
        session.close().await;
    }
    j.event(
        "-",
        "rolled_back",
        serde_json::json!({"files": backups.len()}),
    );
    Ok(code)
}

/// `pvefleet runs [show ID]`.
pub fn cmd_runs(g: &GlobalOpts, show: Option<&str>) -> Result<u8, AppError> {
    match show {
        None => {
            let runs = journal::list();
            if g.json {
                print_json(&runs);
                return Ok(exit::OK);
            }
            let mut t = Table::new();
            t.load_preset(presets::UTF8_FULL_CONDENSED)
                .set_header(vec!["run", "status", "playbook", "nodes", "started"]);
            if !use_color() {
                t.force_no_tty();
            }
            for r in runs {
                t.add_row(vec![
                    r.id,
                    r.status,
                    r.playbook,
                    r.nodes.join(","),
                    r.started,
                ]);
            }
            println!("{t}");
        }
        Some(id) => {
            let j = Journal::open(id).map_err(|e| AppError::Usage(e.to_string()))?;
            let meta = j.meta().map_err(|e| AppError::Internal(e.to_string()))?;
            let events = j.events();
            if g.json {
                print_json(
                    &serde_json::json!({"run": meta, "events": events, "backups": j.backups()}),
                );
                return Ok(exit::OK);
            }
            println!(
                "run {} ({}): {} on {}\nstarted {}; journal {}",
                meta.id,
                meta.status,
                meta.playbook,
                meta.nodes.join(","),
                meta.started,
                j.dir.display()
            );
            for e in events {
                let data = &e["data"];
                let what = match e["event"].as_str() {
                    Some("step") => format!(
                        "{} {}: {}",
                        data["status"].as_str().unwrap_or(""),
                        data["step"].as_str().unwrap_or(""),
                        data["detail"].as_str().unwrap_or("")
                    ),
                    Some(k) => format!(
                        "{k} {}",
                        if data.is_null() || data.as_object().is_some_and(|o| o.is_empty()) {
                            String::new()
                        } else {
                            data.to_string()
                        }
                    ),
                    None => continue,
                };
                println!(
                    "{} {:8} {}",
                    e["time"].as_str().unwrap_or(""),
                    e["node"].as_str().unwrap_or(""),
                    sanitize_str(&what)
                );
            }
            for b in j.backups() {
                println!("backup {}: {} -> {}", b.node, b.path, b.backup);
            }
        }
    }
    Ok(exit::OK)
}
