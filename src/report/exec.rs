//! Rendering of `exec` results: output grouped by identical content (like `clush -b`), a per-node
//! status table, and the JSON document. Pure functions of [`NodeResult`]s.

use comfy_table::{presets, Cell, CellAlignment, Color, ContentArrangement, Table};
use serde::Serialize;

use super::nodeset::fold;
use super::sanitize::{first_line, sanitize};
use crate::exec::{NodeResult, NodeStatus};
use crate::ssh::ExitStatus;

/// Version of the `exec --json` document; bumped on incompatible changes.
pub const EXEC_JSON_VERSION: u32 = 1;

/// Nodes whose stdout, stderr and exit were identical, with that output.
pub struct OutputGroup<'a> {
    /// Member node names, in inventory order.
    pub nodes: Vec<&'a str>,
    /// The shared result (of the first member).
    pub sample: &'a NodeResult,
}

/// Group nodes that ran and produced identical output and exit status, largest group first
/// (ties in inventory order). Nodes that did not run are left to the status table.
pub fn group_outputs(results: &[NodeResult]) -> Vec<OutputGroup<'_>> {
    let mut groups: Vec<OutputGroup> = Vec::new();
    for r in results.iter().filter(|r| r.exit.is_some()) {
        match groups.iter_mut().find(|g| {
            g.sample.stdout == r.stdout
                && g.sample.stderr == r.stderr
                && g.sample.exit == r.exit
                && g.sample.stdout_truncated_bytes == r.stdout_truncated_bytes
                && g.sample.stderr_truncated_bytes == r.stderr_truncated_bytes
        }) {
            Some(g) => g.nodes.push(&r.node),
            None => groups.push(OutputGroup {
                nodes: vec![&r.node],
                sample: r,
            }),
        }
    }
    groups.sort_by_key(|g| std::cmp::Reverse(g.nodes.len()));
    groups
}

fn exit_text(exit: &Option<ExitStatus>) -> String {
    match exit {
        Some(ExitStatus::Code(c)) => c.to_string(),
        Some(ExitStatus::Signal(s)) => format!("SIG{s}"),
        None => "-".into(),
    }
}

// Below the playbook engine, which says durations in its step details too; re-exported here
// for the renderers that have always called it from this module.
pub use crate::outcome::short_duration;

/// The note for output cut at the cap: `[stdout truncated: 1048576 bytes shown, 3146962 more
/// dropped (--max-output)]`, or `None` when the stream is complete.
pub fn truncation_note(stream: &str, shown: usize, dropped: u64) -> Option<String> {
    (dropped > 0).then(|| {
        format!("[{stream} truncated: {shown} bytes shown, {dropped} more dropped (--max-output)]")
    })
}

/// The grouped output block: a header per group (`pve[1-3,5] (4)`), then its output, sanitised,
/// with a note under a stream that was cut at the cap.
pub fn render_groups(results: &[NodeResult]) -> String {
    let mut out = String::new();
    for g in group_outputs(results) {
        let header = format!("{} ({})", fold(&g.nodes), g.nodes.len());
        let rule = "-".repeat(header.chars().count().clamp(8, 78));
        out.push_str(&format!("{rule}\n{header}\n{rule}\n"));
        let stdout = sanitize(&g.sample.stdout);
        out.push_str(&stdout);
        if !stdout.is_empty() && !stdout.ends_with('\n') {
            out.push('\n');
        }
        let s = g.sample;
        if let Some(note) = truncation_note("stdout", s.stdout.len(), s.stdout_truncated_bytes) {
            out.push_str(&format!("{note}\n"));
        }
        let stderr = sanitize(&g.sample.stderr);
        for line in stderr.lines() {
            out.push_str(&format!("stderr: {line}\n"));
        }
        if let Some(note) = truncation_note("stderr", s.stderr.len(), s.stderr_truncated_bytes) {
            out.push_str(&format!("{note}\n"));
        }
        if g.sample.exit != Some(ExitStatus::Code(0)) {
            out.push_str(&format!("[exit {}]\n", exit_text(&g.sample.exit)));
        }
    }
    out
}

fn status_color(s: NodeStatus) -> Color {
    match s {
        NodeStatus::Ok => Color::Green,
        NodeStatus::Failed | NodeStatus::Timeout | NodeStatus::Cancelled => Color::Yellow,
        _ => Color::Red,
    }
}

/// The per-node status table: node, status, exit, duration, first line of the error (and a
/// note when the node's output was truncated).
pub fn render_table(results: &[NodeResult], color: bool) -> String {
    let mut table = Table::new();
    table
        .load_preset(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(vec!["node", "status", "exit", "duration", "error"]);
    if !color {
        table.force_no_tty();
    }
    for r in results {
        let error = match (&r.error, r.status) {
            (Some(e), _) => first_line(e, 200),
            (None, NodeStatus::Ok) => String::new(),
            (None, _) => first_line(&String::from_utf8_lossy(&r.stderr), 120),
        };
        let notes: Vec<String> = [
            ("stdout", r.stdout.len(), r.stdout_truncated_bytes),
            ("stderr", r.stderr.len(), r.stderr_truncated_bytes),
        ]
        .into_iter()
        .filter_map(|(stream, shown, dropped)| truncation_note(stream, shown, dropped))
        .collect();
        let error = [error]
            .into_iter()
            .chain(notes)
            .filter(|t| !t.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        let mut status = Cell::new(r.status.as_str());
        if color {
            status = status.fg(status_color(r.status));
        }
        table.add_row(vec![
            Cell::new(&r.node),
            status,
            Cell::new(exit_text(&r.exit)).set_alignment(CellAlignment::Right),
            Cell::new(short_duration(r.duration)).set_alignment(CellAlignment::Right),
            Cell::new(error),
        ]);
    }
    table.to_string()
}

/// One-line summary: `5 nodes: 4 ok, 1 unreachable`.
pub fn summary(results: &[NodeResult]) -> String {
    let mut counts: Vec<(NodeStatus, usize)> = Vec::new();
    for r in results {
        match counts.iter_mut().find(|(s, _)| *s == r.status) {
            Some((_, n)) => *n += 1,
            None => counts.push((r.status, 1)),
        }
    }
    counts.sort();
    let parts: Vec<String> = counts
        .iter()
        .map(|(s, n)| format!("{n} {}", s.as_str()))
        .collect();
    format!("{} nodes: {}", results.len(), parts.join(", "))
}

#[derive(Serialize)]
struct ExecDocument<'a> {
    version: u32,
    command: &'a str,
    summary: String,
    nodes: &'a [NodeResult],
}

/// The `--json` document: every node's full result.
pub fn render_json(command: &str, results: &[NodeResult]) -> String {
    let doc = ExecDocument {
        version: EXEC_JSON_VERSION,
        command,
        summary: summary(results),
        nodes: results,
    };
    serde_json::to_string_pretty(&doc).expect("results serialise")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn r(node: &str, status: NodeStatus, code: Option<u32>, out: &str) -> NodeResult {
        NodeResult {
            node: node.into(),
            address: "127.0.0.1".into(),
            status,
            exit: code.map(ExitStatus::Code),
            stdout: out.as_bytes().to_vec(),
            stderr: Vec::new(),
            stdout_truncated_bytes: 0,
            stderr_truncated_bytes: 0,
            duration: Duration::from_millis(42),
            error: (status == NodeStatus::Unreachable)
                .then(|| "unreachable: connection refused".into()),
        }
    }

    #[test]
    fn identical_outputs_group_under_a_folded_header() {
        let rs = vec![
            r("pve1", NodeStatus::Ok, Some(0), "6.8.12-5-pve\n"),
            r("pve2", NodeStatus::Ok, Some(0), "6.8.12-5-pve\n"),
            r("pve3", NodeStatus::Ok, Some(0), "6.8.12-5-pve\n"),
            r("pve4", NodeStatus::Failed, Some(1), "6.8.12-5-pve\n"),
            r("pve5", NodeStatus::Ok, Some(0), "6.8.12-5-pve\n"),
            r("pve6", NodeStatus::Unreachable, None, ""),
        ];
        let text = render_groups(&rs);
        assert!(text.contains("pve[1-3,5] (4)\n"), "{text}");
        assert!(text.contains("pve4 (1)\n"), "{text}");
        assert!(text.contains("[exit 1]"), "{text}");
        assert!(
            !text.contains("pve6"),
            "unreachable nodes have no output group"
        );
    }

    #[test]
    fn table_shows_status_exit_and_error() {
        let rs = vec![
            r("pve1", NodeStatus::Ok, Some(0), ""),
            r("pve6", NodeStatus::Unreachable, None, ""),
        ];
        let t = render_table(&rs, false);
        assert!(t.contains("unreachable: connection refused"), "{t}");
        assert!(t
            .lines()
            .any(|l| l.contains("pve1") && l.contains("ok") && l.contains('0')));
        assert_eq!(summary(&rs), "2 nodes: 1 ok, 1 unreachable");
    }

    #[test]
    fn json_carries_everything() {
        let rs = vec![r("pve1", NodeStatus::Ok, Some(0), "hi\x1b\n")];
        let v: serde_json::Value = serde_json::from_str(&render_json("echo hi", &rs)).unwrap();
        assert_eq!(v["version"], 1);
        assert_eq!(v["nodes"][0]["status"], "ok");
        assert_eq!(v["nodes"][0]["exit"]["code"], 0);
        assert_eq!(v["nodes"][0]["stdout"], "hi\u{1b}\n");
        assert_eq!(v["nodes"][0]["duration_ms"], 42);
        assert_eq!(v["nodes"][0]["stdout_truncated_bytes"], 0);
        assert_eq!(v["nodes"][0]["stderr_truncated_bytes"], 0);
    }

    #[test]
    fn truncated_output_is_marked_in_groups_and_table_and_not_grouped_with_complete_output() {
        let mut cut = r("pve1", NodeStatus::Ok, Some(0), "head");
        cut.stdout_truncated_bytes = 1000;
        let whole = r("pve2", NodeStatus::Ok, Some(0), "head");
        let rs = vec![cut, whole];
        let text = render_groups(&rs);
        assert!(text.contains("pve1 (1)\n"), "{text}");
        assert!(text.contains("pve2 (1)\n"), "{text}");
        assert!(
            text.contains("[stdout truncated: 4 bytes shown, 1000 more dropped (--max-output)]"),
            "{text}"
        );
        let t = render_table(&rs, false);
        let row = t.lines().find(|l| l.contains("pve1")).unwrap();
        assert!(row.contains("stdout truncated"), "{t}");
        assert!(!t
            .lines()
            .find(|l| l.contains("pve2"))
            .unwrap()
            .contains("truncated"));
    }
}
