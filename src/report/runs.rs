//! Rendering of `runs` and `runs show ID` from the run journal: the list of runs, one run's
//! head, parameters, where each node is (and what a run that did not finish left in the
//! cluster), where the time went, its events and backups. Functions of journal records; beyond
//! them only the journal directory is read, to tell whether a process still drives a `running`
//! run.

use std::fmt::Write;

use comfy_table::{presets, Table};

use super::sanitize::sanitize_str;
use crate::journal::{self, BackupRecord, Event, Journal, RunMeta};

/// The status to show: a `running` run that no process drives was killed.
pub fn shown_status(j: &Journal, status: &journal::RunStatus) -> String {
    if *status == journal::RunStatus::Running && !journal::is_driven(&j.dir) {
        "killed (no pvefleet process drives it)".to_string()
    } else {
        status.to_string()
    }
}

/// One journal event as `runs show` lists it: its kind, then what it says.
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
        Event::Balancers {
            state,
            cluster,
            via,
            keys,
            why,
        } => format!(
            "HA rebalancing {state}{} via {via}: crs {}{}",
            cluster
                .as_deref()
                .map(|c| format!(" (cluster {c})"))
                .unwrap_or_default(),
            crate::maintenance::balancers::describe(keys),
            why.as_deref()
                .map(|w| format!(" ({w})"))
                .unwrap_or_default()
        ),
        Event::Proxlb {
            state,
            stop,
            disable,
            why,
        } => format!(
            "ProxLB {state}: {} {}{}",
            crate::maintenance::proxlb::UNIT,
            crate::maintenance::proxlb::Change {
                stop: *stop,
                disable: *disable
            }
            .words(),
            why.as_deref()
                .map(|w| format!(" ({w})"))
                .unwrap_or_default()
        ),
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

/// A journal timestamp (RFC 3339), when it reads as one.
fn at(time: &str) -> Option<std::time::SystemTime> {
    humantime::parse_rfc3339(time).ok()
}

/// The time from `a` to `b` in seconds, to the tenth.
fn secs(a: std::time::SystemTime, b: std::time::SystemTime) -> String {
    let d = b.duration_since(a).unwrap_or_default();
    format!("{:.1}s", d.as_secs_f64())
}

/// Where the time went: per node its duration, per step its duration, per reboot state the
/// time since the previous state (from the journal's millisecond timestamps); `color` as
/// [`render_list`]'s.
pub fn timings(events: &[journal::Record], color: bool) -> String {
    let mut t = Table::new();
    t.load_preset(presets::UTF8_FULL_CONDENSED).set_header(vec![
        "node",
        "step / reboot state",
        "took",
    ]);
    if !color {
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

/// The `runs` table, newest first as the journal lists them: each run's id, status (as
/// [`shown_status`] says it), playbook, nodes and start; `color` when the table goes to a
/// terminal that may have it.
pub fn render_list(runs: &[RunMeta], color: bool) -> String {
    // Fits 80 columns: the playbook by name (its path is in `runs show`), nodes folded as
    // exec folds them (pve[1-4]), the start to the minute.
    let mut t = Table::new();
    t.load_preset(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(comfy_table::ContentArrangement::Dynamic)
        .set_header(vec!["run", "status", "playbook", "nodes", "started"]);
    if !color {
        t.force_no_tty();
    }
    for r in runs {
        let status = match Journal::open(&r.id) {
            Ok(j) => shown_status(&j, &r.status),
            Err(_) => r.status.to_string(),
        };
        let playbook = r.playbook_name();
        let names: Vec<&str> = r.nodes.iter().map(String::as_str).collect();
        let started = r.started.get(..16).unwrap_or(&r.started).replace('T', " ");
        t.add_row(vec![
            r.id.clone(),
            sanitize_str(&status),
            sanitize_str(&playbook),
            super::nodeset::fold(&names),
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
    t.to_string()
}

/// `runs show ID` as text: the run's head (status as [`shown_status`] says it, playbook, nodes,
/// start, journal), its parameters as they would be typed, where each of `shown_nodes` is (and
/// what a run that did not finish left in the cluster for it), the [`timings`], every event
/// (a step's output under it), the backups, what was left on, and how to finish or undo a run
/// that left the cluster changed. `events` and `backups` are those to show (`-l` may have
/// dropped some).
pub fn render_run(
    j: &Journal,
    meta: &RunMeta,
    shown_nodes: &[String],
    events: &[journal::Record],
    backups: &[BackupRecord],
    color: bool,
) -> String {
    // Writing to a String cannot fail.
    macro_rules! say {
        ($out:expr, $($arg:tt)*) => {
            let _ = writeln!($out, $($arg)*);
        };
    }
    let histories = journal::histories(events);
    let status = shown_status(j, &meta.status);
    let mut out = String::new();
    say!(
        out,
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
    say!(out, "parameters: {}", sanitize_str(&params.join(" ")));
    if let Some(why) = meta.paused.as_ref().filter(|_| meta.status.paused()) {
        say!(
            out,
            "{}\n  continue with: pvefleet run --resume {}",
            sanitize_str(why),
            meta.id
        );
    }
    for node in shown_nodes {
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
        say!(out, "  {node:8} {}", sanitize_str(&where_));
    }
    say!(out, "{}", timings(events, color));
    for r in events {
        say!(
            out,
            "{} {:8} {}",
            r.time,
            r.node,
            sanitize_str(&describe(&r.event))
        );
        // A step's output (capped when recorded) under it, indented.
        if let Event::StepDone { result, .. } = &r.event {
            for line in result.output.iter().flat_map(|o| o.lines()) {
                say!(out, "    {}", sanitize_str(line));
            }
        }
    }
    for b in backups
        .iter()
        .filter(|b| b.phase != crate::vocab::Phase::Intent)
    {
        say!(out, "backup {}: {} -> {}", b.node, b.path, b.backup);
    }
    for l in &meta.left_on {
        say!(out, "left on: {}", sanitize_str(l));
    }
    // The cluster's HA rebalancing the run paused and has not put back (a killed run): from the
    // whole journal, whatever -l shows (it is the cluster's, not a node's).
    let owed = crate::maintenance::balancers::outstanding(&j.events());
    for (cluster, keys) in &owed {
        let before: std::collections::BTreeMap<String, String> = keys
            .iter()
            .map(|(k, (v, _))| (k.clone(), v.clone()))
            .collect();
        say!(
            out,
            "HA rebalancing still paused by this run{}: crs {} before it",
            cluster
                .as_deref()
                .map(|c| format!(" in cluster {c}"))
                .unwrap_or_default(),
            sanitize_str(&crate::maintenance::balancers::describe(&before))
        );
    }
    let owed_proxlb = crate::maintenance::proxlb::outstanding(&j.events());
    for (node, (c, _)) in &owed_proxlb {
        say!(
            out,
            "ProxLB still paused by this run on {}: {} {} by it",
            sanitize_str(node),
            crate::maintenance::proxlb::UNIT,
            c.words()
        );
    }
    let leftovers = histories
        .values()
        .any(|h| !h.done && h.left_in_cluster() && h.rolled_back != Some(true));
    if leftovers || !owed.is_empty() || !owed_proxlb.is_empty() {
        say!(
            out,
            "the cluster is not as the run found it: `pvefleet run --resume {}` finishes the run, `pvefleet rollback {}` puts it back",
            j.id, j.id
        );
    }
    out
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
