//! Rendering of a [`Comparison`] (`pvefleet audit --compare OLD.json`): terminal text and JSON.
//!
//! The terminal text lists what is new (and worse) first, then what was resolved, then what is
//! still open, identical findings folded across nodes (`pve[1-3]`) as the audit does; it is
//! short when nothing changed, for cron jobs that mail only changes.

use std::fmt::Write as _;

use super::audit_terminal::{grade_word, TerminalOptions};
use super::nodeset::fold;
use super::sanitize::sanitize_str;
use super::wrap::wrap;
use crate::audit::compare::{Comparison, Problem};
use crate::probe::{Finding, Grade};

/// The comparison as JSON (version in `version`).
pub fn render_json(c: &Comparison) -> String {
    serde_json::to_string_pretty(c).expect("comparison serialises")
}

/// Problems with the same finding (and old grade) folded into one line per node set.
fn folded(list: &[Problem]) -> Vec<(Finding, Option<Grade>, String)> {
    let mut groups: Vec<(Finding, Option<Grade>, Vec<&str>)> = Vec::new();
    for p in list {
        match groups
            .iter_mut()
            .find(|(f, was, _)| f == &p.finding && *was == p.was)
        {
            Some((_, _, nodes)) => nodes.push(&p.node),
            None => groups.push((p.finding.clone(), p.was, vec![&p.node])),
        }
    }
    groups
        .into_iter()
        .map(|(f, was, nodes)| (f, was, fold(&nodes)))
        .collect()
}

fn section(out: &mut String, title: &str, list: &[Problem], fixes: bool, opts: &TerminalOptions) {
    if list.is_empty() {
        return;
    }
    let why = if title.starts_with("Not checked") {
        ", node not audited or probe not run"
    } else {
        ""
    };
    let _ = writeln!(out, "{title} ({}{why}):", list.len());
    for (f, was, nodes) in folded(list) {
        let worse = match was {
            Some(w) if f.grade > w => format!(" (was {})", grade_word(w)),
            _ => String::new(),
        };
        let head = format!("  {}{worse} {} [{}] ", grade_word(f.grade), f.check, nodes);
        out.push_str(&wrap(
            &sanitize_str(&f.detail),
            &head,
            "       ",
            opts.width,
        ));
        if let (true, Some(fix)) = (fixes, &f.remediation) {
            // Not wrapped: a command to paste (see `audit_terminal`).
            let _ = writeln!(out, "       fix: {}", sanitize_str(fix));
        }
    }
}

/// Terminal text: new (with fixes), resolved, still open, unchecked, then one summary line.
pub fn render_terminal(c: &Comparison, opts: &TerminalOptions) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Compared with the audit of {}:",
        sanitize_str(&c.old_generated_at)
    );
    let (worse, open): (Vec<Problem>, Vec<Problem>) =
        c.still_open.iter().cloned().partition(Problem::is_worse);
    section(&mut out, "New", &c.new, true, opts);
    section(&mut out, "Worse", &worse, true, opts);
    section(&mut out, "Resolved", &c.resolved, false, opts);
    section(&mut out, "Still open", &open, false, opts);
    section(&mut out, "Not checked this time", &c.unchecked, false, opts);
    let s = &c.summary;
    let _ = writeln!(
        out,
        "{} new, {} worse, {} resolved, {} still open, {} not checked",
        s.new, s.worse, s.resolved, s.still_open, s.unchecked
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::compare::CompareSummary;

    fn p(node: &str, grade: Grade, was: Option<Grade>) -> Problem {
        Problem {
            node: node.into(),
            finding: Finding::new("updates.pending", grade, "3 pending").fix("pvefleet run x"),
            was,
        }
    }

    #[test]
    fn identical_problems_fold_and_worse_ones_say_what_they_were() {
        let c = Comparison {
            version: 1,
            old_generated_at: "2026-11-29T03:00:00Z".into(),
            generated_at: "2026-11-30T03:00:00Z".into(),
            new: vec![p("pve1", Grade::Warn, None), p("pve2", Grade::Warn, None)],
            resolved: vec![],
            still_open: vec![p("pve3", Grade::Fail, Some(Grade::Warn))],
            unchecked: vec![],
            summary: CompareSummary {
                new: 2,
                worse: 1,
                still_open: 1,
                ..CompareSummary::default()
            },
        };
        let text = render_terminal(&c, &TerminalOptions::default());
        assert!(
            text.starts_with("Compared with the audit of 2026-11-29T03:00:00Z:\n"),
            "{text}"
        );
        assert!(text.contains("New (2):\n  WARN updates.pending [pve[1-2]] 3 pending\n       fix: pvefleet run x\n"), "{text}");
        assert!(
            text.contains("Worse (1):\n  FAIL (was WARN) updates.pending [pve3] 3 pending\n"),
            "{text}"
        );
        assert!(
            !text.contains("Still open"),
            "the worse one is not listed twice: {text}"
        );
        assert!(
            text.ends_with("2 new, 1 worse, 0 resolved, 1 still open, 0 not checked\n"),
            "{text}"
        );
        let v: serde_json::Value = serde_json::from_str(&render_json(&c)).unwrap();
        assert_eq!(v["still_open"][0]["was"], "WARN");
        assert_eq!(v["new"][1]["node"], "pve2");
    }
}
