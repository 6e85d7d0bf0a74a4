//! Rendering of `plan` and `run`: each node's plan as text (identical plans folded under one
//! header, as `exec` folds identical output), the plan's one-line summary, and the per-node
//! result table. Pure functions of [`NodeRun`]s; the terminal's width is the caller's to ask.

use comfy_table::{presets, Cell, CellAlignment, ContentArrangement, Table};

use super::exec::short_duration;
use super::sanitize::sanitize_str;
use super::wrap::wrap;
use crate::outcome::StepStatus;
use crate::playbook::engine::NodeRun;

/// Per-node plan, as text: what would change.
pub fn render_plan(runs: &[NodeRun], width: Option<usize>) -> String {
    // Each node's plan, then the nodes whose plans are identical folded under one header
    // (`pve[1-4]`), as exec folds identical output.
    let mut groups: Vec<(Vec<&str>, String)> = Vec::new();
    for r in runs {
        let mut body = String::new();
        if let Some(e) = &r.error {
            body.push_str(&wrap(&sanitize_str(e), "  ERROR: ", "          ", width));
        }
        // One vocabulary (`ok`, `would change`, `would run`, `would skip`, `would wait`, `after
        // reboot`, `done`, `FAILED`), the step's detail after its name unless it only repeats
        // the verb; commands, checks and diffs indented under the step.
        const IND: &str = "                ";
        // Steps skipped for the same reason are said once, at the first of them.
        let mut said = vec![false; r.steps.len()];
        for (i, s) in r.steps.iter().enumerate() {
            if said[i] {
                continue;
            }
            let verb = s.plan_verb();
            let mut names = vec![sanitize_str(&s.step)];
            if verb == "would skip" {
                for (j, t) in r.steps.iter().enumerate().skip(i + 1) {
                    if t.plan_verb() == verb && t.detail == s.detail {
                        said[j] = true;
                        names.push(sanitize_str(&t.step));
                    }
                }
            }
            let names = names.join(", ");
            let detail = sanitize_str(&s.detail);
            let line = if detail.is_empty() || detail == verb {
                names
            } else {
                format!("{names}: {detail}")
            };
            body.push_str(&wrap(&line, &format!("  {verb:<12}  "), IND, width));
            for c in &s.commands {
                // A multi-line command stays indented under its step, each line wrapped.
                for (i, l) in c.lines().enumerate() {
                    let first = if i == 0 {
                        format!("{IND}$ ")
                    } else {
                        format!("{IND}  ")
                    };
                    body.push_str(&wrap(
                        &sanitize_str(l),
                        &first,
                        &format!("{IND}    "),
                        width,
                    ));
                }
            }
            for c in &s.checks {
                body.push_str(&wrap(
                    &sanitize_str(c),
                    &format!("{IND}- "),
                    &format!("{IND}  "),
                    width,
                ));
            }
            if let Some(d) = &s.diff {
                for l in d.lines() {
                    body.push_str(&wrap(&sanitize_str(l), IND, &format!("{IND}  "), width));
                }
            }
        }
        match groups.iter_mut().find(|(_, b)| *b == body) {
            Some((names, _)) => names.push(&r.node),
            None => groups.push((vec![&r.node], body)),
        }
    }
    let mut out = String::new();
    for (names, body) in groups {
        let header = if names.len() == 1 {
            names[0].to_string()
        } else {
            format!("{} ({})", crate::nodeset::fold(&names), names.len())
        };
        out.push_str(&format!("== {header} ==\n{body}"));
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
    let reboots: Vec<&crate::outcome::StepResult> = runs
        .iter()
        .flat_map(|r| &r.steps)
        .filter(|s| s.status == StepStatus::Changed && s.commands.iter().any(|c| c == "reboot"))
        .collect();
    let mut out = format!("plan: {changes} change(s) on {nodes} node(s)");
    if !reboots.is_empty() {
        let known: Vec<u64> = reboots.iter().filter_map(|s| s.predicted_ms).collect();
        let unknown = reboots.len() - known.len();
        let total = std::time::Duration::from_millis(known.iter().sum());
        out.push_str(&match (known.is_empty(), unknown) {
            (true, _) => format!(
                "; {} reboot(s), no history to predict their time",
                reboots.len()
            ),
            (false, 0) => format!(
                "; {} reboot(s) predicted to take about {} in all",
                reboots.len(),
                short_duration(total)
            ),
            (false, n) => format!(
                "; {} reboot(s): about {} for those with history, {n} without",
                reboots.len(),
                short_duration(total)
            ),
        });
    }
    out
}

/// The per-node result table, each node's error below it word-wrapped to `width` (none: not
/// wrapped).
pub fn render_results(runs: &[NodeRun], color: bool, width: Option<usize>) -> String {
    let mut t = Table::new();
    t.load_preset(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(vec![
            "node", "status", "ok", "changed", "skipped", "failed", "reboot", "duration",
        ]);
    if !color {
        t.force_no_tty();
    }
    for r in runs {
        let status = if r.halted {
            "halted".to_string()
        } else if r.paused {
            "paused".to_string()
        } else if r.not_started {
            "not started".to_string()
        } else if r.interrupted() {
            "interrupted".to_string()
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
        ]);
    }
    // Errors below the table, each node's in full and word-wrapped with a hanging indent (in a
    // column they were squeezed to a few characters and broke words).
    let mut out = t.to_string();
    let name_w = runs
        .iter()
        .map(|r| r.node.chars().count())
        .max()
        .unwrap_or(0);
    for r in runs.iter().filter(|r| r.error.is_some()) {
        let first = format!("  {:name_w$}  ", r.node);
        let rest = " ".repeat(first.chars().count());
        out.push('\n');
        out.push_str(
            wrap(
                &sanitize_str(r.error.as_deref().unwrap_or("")),
                &first,
                &rest,
                width,
            )
            .trim_end_matches('\n'),
        );
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::exec::NodeStatus;
    use crate::outcome::{Deferred, StepResult};

    fn step(name: &str, status: StepStatus, detail: &str) -> StepResult {
        StepResult::new(name, status, detail)
    }

    /// A node whose run (or plan) went through with these steps (also for the run's tests in
    /// `app`).
    pub(crate) fn node(name: &str, steps: Vec<StepResult>) -> NodeRun {
        let mut r = NodeRun::not_started(name, "");
        r.status = NodeStatus::Ok;
        r.not_started = false;
        r.error = None;
        r.steps = steps;
        r
    }

    fn steps() -> Vec<StepResult> {
        let mut edit = step("grub", StepStatus::Changed, "would change");
        edit.diff = Some("-GRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\n+GRUB_CMDLINE_LINUX_DEFAULT=\"quiet intel_iommu=on iommu=pt\"".into());
        let mut run = step("update-grub", StepStatus::Changed, "would run");
        run.commands = vec!["update-grub\nproxmox-boot-tool refresh".into()];
        let mut wait = step(
            "wait for pveproxy",
            StepStatus::Skipped,
            "until it succeeds, up to 2m",
        );
        wait.deferred = Some(Deferred::Wait);
        let mut after = step(
            "vfio bound",
            StepStatus::Skipped,
            "checked after the reboot (not in a plan)",
        );
        after.deferred = Some(Deferred::AfterReboot);
        let mut done = step(
            "mark",
            StepStatus::Changed,
            "written (done before the resume)",
        );
        done.resumed = true;
        vec![
            done,
            step("modules", StepStatus::Ok, "already as wanted"),
            edit,
            run,
            step(
                "blacklist",
                StepStatus::Skipped,
                "its `when` is false with blacklist_i915 = false",
            ),
            wait,
            after,
        ]
    }

    #[test]
    fn a_plan_speaks_one_vocabulary_and_folds_identical_nodes_within_80_columns() {
        let runs: Vec<NodeRun> = ["pve1", "pve2", "pve3", "pve4"]
            .iter()
            .map(|n| node(n, steps()))
            .collect();
        let text = render_plan(&runs, Some(80));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "== pve[1-4] (4) ==", "{text}");
        for (verb, name) in [
            ("done", "mark"),
            ("ok", "modules"),
            ("would change", "grub"),
            ("would run", "update-grub"),
            ("would skip", "blacklist"),
            ("would wait", "wait for pveproxy"),
            ("after reboot", "vfio bound"),
        ] {
            assert!(
                lines
                    .iter()
                    .any(|l| l.trim_start().starts_with(verb) && l.contains(name)),
                "{verb} {name}:\n{text}"
            );
        }
        // A detail that only repeats the verb is not said twice; no `skip ... would wait`.
        assert!(!text.contains("would change: would change"), "{text}");
        assert!(!text.contains("update-grub: would run"), "{text}");
        assert!(
            !lines.iter().any(|l| l.trim_start().starts_with("skip")),
            "no other word for a skip: {text}"
        );
        assert!(lines.iter().all(|l| l.chars().count() <= 80), "{text}");
        // A multi-line command's lines stay under their step.
        let i = lines
            .iter()
            .position(|l| l.contains("$ update-grub"))
            .unwrap();
        assert!(
            lines[i + 1].trim_start() == "proxmox-boot-tool refresh",
            "{text}"
        );
        assert!(lines[i + 1].starts_with("                  "), "{text}");
        // Steps skipped for one reason are said once.
        let mut merged = steps();
        merged.push(step(
            "gvt-g types",
            StepStatus::Skipped,
            "its `when` is false with blacklist_i915 = false",
        ));
        let text = render_plan(&[node("pve1", merged)], Some(80));
        assert!(
            text.contains("would skip    blacklist, gvt-g types: its `when` is false"),
            "{text}"
        );
        assert_eq!(text.matches("would skip").count(), 1, "{text}");
        // A node that differs gets its own block, after the folded ones.
        let mut other = runs.clone();
        other[2].steps[1] = step("modules", StepStatus::Changed, "would change");
        let text = render_plan(&other, Some(80));
        assert!(text.contains("== pve[1-2,4] (3) =="), "{text}");
        assert!(text.contains("== pve3 =="), "{text}");
    }
}
