//! Rendering of an [`AuditReport`]: terminal (comfy-table), JSON, Markdown and self-contained HTML.
//!
//! All four are pure functions of the report. Text that came from nodes (details) is sanitised
//! for the terminal, escaped for Markdown tables and HTML-escaped for the page.

use std::fmt::Write as _;

use comfy_table::{presets, Cell, Color, ContentArrangement, Table};

use super::sanitize::sanitize_str;
use crate::audit::{AuditReport, MatrixCell, NodeAudit};
use crate::exec::NodeStatus;
use crate::probe::Grade;

/// Output formats of `pvefleet audit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Tables for a terminal (colour when stdout is a terminal and NO_COLOR is unset).
    Terminal,
    /// The versioned JSON document.
    Json,
    /// GitHub-flavoured Markdown.
    Markdown,
    /// One self-contained HTML page (no external assets), printable.
    Html,
}

/// Render `report` in `format`.
pub fn render(report: &AuditReport, format: Format, color: bool) -> String {
    match format {
        Format::Terminal => render_terminal(report, color),
        Format::Json => render_json(report),
        Format::Markdown => render_markdown(report),
        Format::Html => render_html(report),
    }
}

fn grade_word(g: Grade) -> &'static str {
    match g {
        Grade::Pass => "PASS",
        Grade::Warn => "WARN",
        Grade::Fail => "FAIL",
        Grade::Skip => "SKIP",
    }
}

fn grade_color(g: Grade) -> Color {
    match g {
        Grade::Pass => Color::Green,
        Grade::Warn => Color::Yellow,
        Grade::Fail => Color::Red,
        Grade::Skip => Color::DarkGrey,
    }
}

/// The text of one matrix cell for a node row: the grade and a short detail, or the reason the
/// node could not be audited.
fn cell_text(row: &NodeAudit, check: &str, max: usize) -> (Option<Grade>, String) {
    if row.status != NodeStatus::Ok {
        return (None, String::new());
    }
    match row.cells.get(check) {
        Some(MatrixCell { grade, detail }) => {
            let d = shorten(detail, max);
            if d.is_empty() {
                (Some(*grade), grade_word(*grade).to_string())
            } else {
                (Some(*grade), format!("{} {d}", grade_word(*grade)))
            }
        }
        None => (Some(Grade::Skip), "SKIP".to_string()),
    }
}

fn shorten(s: &str, max: usize) -> String {
    let one_line = s.lines().next().unwrap_or("");
    if one_line.chars().count() > max {
        let cut: String = one_line.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    } else {
        one_line.to_string()
    }
}

fn node_status_text(row: &NodeAudit) -> String {
    match row.status {
        NodeStatus::Ok => "ok".into(),
        s => s.as_str().to_string(),
    }
}

fn summary_line(r: &AuditReport) -> String {
    let s = &r.summary;
    format!(
        "{} nodes ({} not audited): {} PASS, {} WARN, {} FAIL, {} SKIP",
        s.nodes, s.unreachable, s.pass, s.warn, s.fail, s.skip
    )
}

/// Terminal tables: the node x check matrix, cluster checks, grouped findings with remedies.
pub fn render_terminal(r: &AuditReport, color: bool) -> String {
    let mut out = String::new();
    let mut matrix = Table::new();
    matrix
        .load_preset(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic);
    if !color {
        matrix.force_no_tty();
    }
    let mut header = vec!["node".to_string(), "status".to_string()];
    header.extend(r.checks.iter().cloned());
    matrix.set_header(header);
    for row in &r.nodes {
        let mut cells = vec![Cell::new(&row.node)];
        let mut status = Cell::new(node_status_text(row));
        if color {
            status = status.fg(if row.status == NodeStatus::Ok {
                Color::Green
            } else {
                Color::Red
            });
        }
        cells.push(status);
        for check in &r.checks {
            let (grade, text) = cell_text(row, check, 28);
            let mut cell = Cell::new(sanitize_str(&text));
            if let (true, Some(g)) = (color, grade) {
                cell = cell.fg(grade_color(g));
            }
            cells.push(cell);
        }
        matrix.add_row(cells);
    }
    let _ = writeln!(out, "{matrix}");

    if !r.cluster.is_empty() {
        let mut t = Table::new();
        t.load_preset(presets::UTF8_FULL_CONDENSED)
            .set_content_arrangement(ContentArrangement::Dynamic)
            .set_header(vec!["cluster check", "grade", "detail"]);
        if !color {
            t.force_no_tty();
        }
        for f in &r.cluster {
            let mut g = Cell::new(grade_word(f.grade));
            if color {
                g = g.fg(grade_color(f.grade));
            }
            t.add_row(vec![
                Cell::new(&f.check),
                g,
                Cell::new(sanitize_str(&f.detail)),
            ]);
        }
        let _ = writeln!(out, "{t}");
    }

    let unreachable: Vec<&NodeAudit> = r
        .nodes
        .iter()
        .filter(|n| n.status != NodeStatus::Ok)
        .collect();
    if !r.findings.is_empty() || !unreachable.is_empty() {
        let _ = writeln!(out, "Findings:");
    }
    for row in unreachable {
        let _ = writeln!(
            out,
            "  {} {}: {}",
            node_status_text(row).to_uppercase(),
            row.node,
            sanitize_str(row.error.as_deref().unwrap_or(""))
        );
    }
    for g in &r.findings {
        let _ = writeln!(
            out,
            "  {} {} [{}] {}",
            grade_word(g.finding.grade),
            g.finding.check,
            g.nodeset,
            sanitize_str(&g.finding.detail)
        );
        if let Some(fix) = &g.finding.remediation {
            let _ = writeln!(out, "       fix: {}", sanitize_str(fix));
        }
    }
    let passed = passed_through(r);
    if !passed.is_empty() {
        let _ = writeln!(out, "Passed through (vfio-pci):");
        for p in &passed {
            let _ = writeln!(
                out,
                "  {} {} [{}] {} ({})",
                p.node,
                sanitize_str(&p.slot),
                sanitize_str(&p.class),
                sanitize_str(&p.name),
                sanitize_str(&p.id)
            );
        }
    }
    let _ = writeln!(out, "{}", summary_line(r));
    out
}

/// One device bound to vfio-pci on a node (GPUs, HBAs, NICs passed through), from the node's
/// `gpu` facts: what an operator asks as "what is passed through on which node".
#[derive(Debug, Clone, PartialEq, Eq)]
struct PassedThrough {
    node: String,
    slot: String,
    class: String,
    name: String,
    id: String,
}

fn passed_through(r: &AuditReport) -> Vec<PassedThrough> {
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
    r.nodes
        .iter()
        .flat_map(|row| {
            let devices = row
                .facts
                .get("gpu")
                .and_then(|g| g.get("passthrough"))
                .and_then(|p| p.as_array())
                .cloned()
                .unwrap_or_default();
            devices.into_iter().map(move |d| PassedThrough {
                node: row.node.clone(),
                slot: text(&d["slot"]),
                class: text(&d["class"]),
                name: text(&d["name"]),
                id: text(&d["id"]),
            })
        })
        .collect()
}

/// The JSON document (schema version in `version`).
pub fn render_json(r: &AuditReport) -> String {
    serde_json::to_string_pretty(r).expect("report serialises")
}

fn md_escape(s: &str) -> String {
    sanitize_str(s)
        .replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace('\n', " ")
        .replace('<', "&lt;")
}

/// GitHub-flavoured Markdown: header, summary, matrix table, cluster table, findings list.
pub fn render_markdown(r: &AuditReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Proxmox VE cluster audit\n");
    let _ = writeln!(
        out,
        "Generated {} by pvefleet from `{}`.\n\n**{}**\n",
        r.generated_at,
        md_escape(&r.inventory),
        summary_line(r)
    );
    let _ = write!(out, "| node | status |");
    for c in &r.checks {
        let _ = write!(out, " {} |", md_escape(c));
    }
    let _ = write!(out, "\n|---|---|");
    for _ in &r.checks {
        let _ = write!(out, "---|");
    }
    out.push('\n');
    for row in &r.nodes {
        let _ = write!(
            out,
            "| {} | {} |",
            md_escape(&row.node),
            node_status_text(row)
        );
        for c in &r.checks {
            let (_, text) = cell_text(row, c, 60);
            let _ = write!(out, " {} |", md_escape(&text));
        }
        out.push('\n');
    }
    if !r.cluster.is_empty() {
        let _ = writeln!(
            out,
            "\n## Cluster\n\n| check | grade | detail |\n|---|---|---|"
        );
        for f in &r.cluster {
            let _ = writeln!(
                out,
                "| {} | {} | {} |",
                md_escape(&f.check),
                grade_word(f.grade),
                md_escape(&f.detail)
            );
        }
    }
    let _ = writeln!(out, "\n## Findings\n");
    let mut any = false;
    for row in r.nodes.iter().filter(|n| n.status != NodeStatus::Ok) {
        any = true;
        let _ = writeln!(
            out,
            "- **{}** `{}`: {}",
            node_status_text(row).to_uppercase(),
            md_escape(&row.node),
            md_escape(row.error.as_deref().unwrap_or(""))
        );
    }
    for g in &r.findings {
        any = true;
        let _ = writeln!(
            out,
            "- **{}** `{}` on `{}`: {}",
            grade_word(g.finding.grade),
            md_escape(&g.finding.check),
            md_escape(&g.nodeset),
            md_escape(&g.finding.detail)
        );
        if let Some(fix) = &g.finding.remediation {
            let _ = writeln!(out, "  - fix: `{}`", md_escape(fix).replace('`', "'"));
        }
    }
    if !any {
        let _ = writeln!(out, "None: every check passed.");
    }
    let passed = passed_through(r);
    if !passed.is_empty() {
        let _ = writeln!(
            out,
            "\n## Passed through (vfio-pci)\n\n| node | device | class | name | id |\n|---|---|---|---|---|"
        );
        for p in &passed {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                md_escape(&p.node),
                md_escape(&p.slot),
                md_escape(&p.class),
                md_escape(&p.name),
                md_escape(&p.id)
            );
        }
    }
    out
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in sanitize_str(s).chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const HTML_STYLE: &str = r#"
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2em; color: #1d2125; }
h1 { font-size: 1.6em; margin-bottom: .2em; }
.meta { color: #555; margin-bottom: 1em; }
.summary span { display: inline-block; padding: .2em .6em; margin-right: .4em; border-radius: 3px; font-weight: 600; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #c8ccd0; padding: .35em .6em; text-align: left; vertical-align: top; }
th { background: #eef0f2; }
td.PASS, span.PASS { background: #d9f2dc; color: #14532d; }
td.WARN, span.WARN { background: #fff1c2; color: #713f12; }
td.FAIL, span.FAIL { background: #fbd5d5; color: #7f1d1d; }
td.SKIP, span.SKIP { background: #eceff1; color: #4b5563; }
td.DOWN { background: #7f1d1d; color: #fff; font-weight: 600; }
td small { display: block; color: inherit; opacity: .85; }
.finding { border-left: 4px solid #c8ccd0; padding: .3em .8em; margin: .6em 0; }
.finding.FAIL { border-color: #dc2626; } .finding.WARN { border-color: #d97706; } .finding.SKIP { border-color: #9ca3af; }
code { background: #f3f4f6; padding: 0 .25em; border-radius: 3px; }
@media print { body { margin: 0; } td, th { font-size: 11px; } .finding { break-inside: avoid; } }
"#;

/// One self-contained HTML page: matrix with coloured cells, cluster checks, findings with fixes.
pub fn render_html(r: &AuditReport) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>Proxmox VE cluster audit {}</title>\n<style>{HTML_STYLE}</style>\n</head>\n<body>\n",
        html_escape(&r.generated_at)
    );
    let _ = writeln!(out, "<h1>Proxmox VE cluster audit</h1>");
    let _ = writeln!(
        out,
        "<div class=\"meta\">Generated {} by pvefleet from <code>{}</code>; {} nodes, {} not audited.</div>",
        html_escape(&r.generated_at),
        html_escape(&r.inventory),
        r.summary.nodes,
        r.summary.unreachable
    );
    let s = &r.summary;
    let _ = writeln!(
        out,
        "<div class=\"summary\"><span class=\"PASS\">{} PASS</span><span class=\"WARN\">{} WARN</span>\
         <span class=\"FAIL\">{} FAIL</span><span class=\"SKIP\">{} SKIP</span></div>",
        s.pass, s.warn, s.fail, s.skip
    );
    let _ = write!(
        out,
        "<table id=\"matrix\">\n<thead><tr><th>node</th><th>status</th>"
    );
    for c in &r.checks {
        let _ = write!(out, "<th>{}</th>", html_escape(c));
    }
    let _ = writeln!(out, "</tr></thead>\n<tbody>");
    for row in &r.nodes {
        let _ = write!(out, "<tr><th>{}</th>", html_escape(&row.node));
        if row.status != NodeStatus::Ok {
            let _ = writeln!(
                out,
                "<td class=\"DOWN\" colspan=\"{}\">{}<small>{}</small></td></tr>",
                r.checks.len() + 1,
                html_escape(&node_status_text(row)),
                html_escape(row.error.as_deref().unwrap_or(""))
            );
            continue;
        }
        let _ = write!(out, "<td class=\"PASS\">ok</td>");
        for c in &r.checks {
            let (grade, detail) = match row.cells.get(c) {
                Some(cell) => (cell.grade, cell.detail.as_str()),
                None => (Grade::Skip, ""),
            };
            let _ = write!(
                out,
                "<td class=\"{0}\">{0}<small>{1}</small></td>",
                grade_word(grade),
                html_escape(&shorten(detail, 80))
            );
        }
        let _ = writeln!(out, "</tr>");
    }
    let _ = writeln!(out, "</tbody>\n</table>");
    if !r.cluster.is_empty() {
        let _ = writeln!(
            out,
            "<h2>Cluster</h2>\n<table id=\"cluster\">\n<thead><tr><th>check</th><th>grade</th><th>detail</th></tr></thead>\n<tbody>"
        );
        for f in &r.cluster {
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td class=\"{g}\">{g}</td><td>{}</td></tr>",
                html_escape(&f.check),
                html_escape(&f.detail),
                g = grade_word(f.grade)
            );
        }
        let _ = writeln!(out, "</tbody>\n</table>");
    }
    let _ = writeln!(out, "<h2>Findings</h2>");
    let mut any = false;
    for row in r.nodes.iter().filter(|n| n.status != NodeStatus::Ok) {
        any = true;
        let _ = writeln!(
            out,
            "<div class=\"finding FAIL\"><strong>{}</strong> <code>{}</code>: {}</div>",
            html_escape(&node_status_text(row).to_uppercase()),
            html_escape(&row.node),
            html_escape(row.error.as_deref().unwrap_or(""))
        );
    }
    for g in &r.findings {
        any = true;
        let _ = write!(
            out,
            "<div class=\"finding {gr}\"><strong>{gr}</strong> <code>{}</code> on <code>{}</code>: {}",
            html_escape(&g.finding.check),
            html_escape(&g.nodeset),
            html_escape(&g.finding.detail),
            gr = grade_word(g.finding.grade)
        );
        if let Some(fix) = &g.finding.remediation {
            let _ = write!(out, "<br>Fix: <code>{}</code>", html_escape(fix));
        }
        let _ = writeln!(out, "</div>");
    }
    if !any {
        let _ = writeln!(out, "<p>None: every check passed.</p>");
    }
    let passed = passed_through(r);
    if !passed.is_empty() {
        let _ = writeln!(
            out,
            "<h2>Passed through (vfio-pci)</h2>\n<table id=\"passthrough\">\n<thead><tr><th>node</th><th>device</th><th>class</th><th>name</th><th>id</th></tr></thead>\n<tbody>"
        );
        for p in &passed {
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                html_escape(&p.node),
                html_escape(&p.slot),
                html_escape(&p.class),
                html_escape(&p.name),
                html_escape(&p.id)
            );
        }
        let _ = writeln!(out, "</tbody>\n</table>");
    }
    let _ = writeln!(out, "</body>\n</html>");
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::audit::{AuditReport, Summary, AUDIT_SCHEMA_VERSION};

    fn report_with_passthrough() -> AuditReport {
        let facts = serde_json::json!({
            "passthrough": [
                {"slot": "17:00.0", "class": "0300", "name": "NVIDIA Corporation TU117GL [T400 4GB]", "id": "10de:1ff2"},
                {"slot": "0c:00.0", "class": "0107", "name": "LSI <SAS2004>\u{1b}[31m", "id": "1000:0070"}
            ]
        });
        let row = NodeAudit {
            node: "pve2".into(),
            address: "10.0.0.2".into(),
            status: NodeStatus::Ok,
            error: None,
            cells: BTreeMap::new(),
            findings: Vec::new(),
            facts: BTreeMap::from([("gpu".to_string(), facts)]),
            clock: None,
            duration_ms: 1,
        };
        AuditReport {
            version: AUDIT_SCHEMA_VERSION,
            generated_at: "2026-11-30T23:00:00Z".into(),
            inventory: "inv.toml".into(),
            checks: vec!["gpu".into()],
            nodes: vec![row],
            cluster: Vec::new(),
            findings: Vec::new(),
            summary: Summary::default(),
        }
    }

    #[test]
    fn every_format_says_what_is_passed_through_on_which_node() {
        let r = report_with_passthrough();
        let md = render_markdown(&r);
        assert!(md.contains("## Passed through (vfio-pci)"), "{md}");
        assert!(
            md.contains(
                "| pve2 | 17:00.0 | 0300 | NVIDIA Corporation TU117GL [T400 4GB] | 10de:1ff2 |"
            ),
            "{md}"
        );
        let html = render_html(&r);
        assert!(
            html.contains("<td>0c:00.0</td><td>0107</td><td>LSI &lt;SAS2004&gt;"),
            "{html}"
        );
        let term = render_terminal(&r, false);
        assert!(
            term.contains("Passed through (vfio-pci):\n  pve2 17:00.0 [0300]"),
            "{term}"
        );
        assert!(
            !term.contains('\u{1b}'),
            "remote text is sanitised: {term:?}"
        );
        let mut none = r.clone();
        none.nodes[0].facts.clear();
        assert!(!render_markdown(&none).contains("Passed through"));
    }
}
