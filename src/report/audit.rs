//! Rendering of an [`AuditReport`]: terminal, JSON, Markdown and self-contained HTML.
//!
//! All four are pure functions of the report. The terminal layout lives in
//! [`super::audit_terminal`]; Markdown and HTML are minijinja templates (`templates/audit.md`,
//! `templates/audit.html`) filled from a view of the report in which every text that came from
//! nodes is already sanitised (control characters escaped). The HTML template is autoescaped;
//! the Markdown one escapes table cells with the `md` filter.

use std::sync::OnceLock;

use minijinja::{syntax::SyntaxConfig, Environment};
use serde::Serialize;

use super::audit_terminal::{grade_word, node_status_text, shorten, summary_line};
pub use super::audit_terminal::{render_terminal, TerminalOptions};
use super::passthrough::PassedThrough;
use super::sanitize::sanitize_str;
use crate::audit::{AuditReport, NodeAudit, Summary};
use crate::exec::NodeStatus;
use crate::probe::{Finding, Grade};

/// Output formats of `pvefleet audit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Tables for a terminal (colour when stdout is a terminal and NO_COLOR is unset).
    Terminal,
    /// The versioned JSON document.
    Json,
    /// GitHub-flavoured Markdown.
    Markdown,
    /// One self-contained HTML page (no external assets), printable.
    Html,
    /// OpenMetrics text (Prometheus): one gauge per node and check ([`super::openmetrics`]).
    OpenMetrics,
}

/// Render `report` in `format` (`terminal` options matter only to the terminal format).
pub fn render(report: &AuditReport, format: Format, terminal: &TerminalOptions) -> String {
    match format {
        Format::Terminal => render_terminal(report, terminal),
        Format::Json => render_json(report),
        Format::Markdown => render_markdown(report),
        Format::Html => render_html(report),
        Format::OpenMetrics => super::openmetrics::render_openmetrics(report),
    }
}

/// The JSON document (schema version in `version`).
pub fn render_json(r: &AuditReport) -> String {
    serde_json::to_string_pretty(r).expect("report serialises")
}

/// A Markdown table cell or inline text: sanitised, pipes and backslashes escaped, one line,
/// no raw HTML.
fn md_escape(s: &str) -> String {
    sanitize_str(s)
        .replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace('\n', " ")
        .replace('<', "&lt;")
}

/// What the templates see: the report with every node-sourced text sanitised.
#[derive(Serialize)]
struct View {
    generated_at: String,
    inventory: String,
    summary_line: String,
    summary: Summary,
    checks: Vec<String>,
    rows: Vec<RowView>,
    cluster: Vec<FindingView>,
    down: Vec<RowView>,
    findings: Vec<GroupView>,
    passed: Vec<PassedThrough>,
    accepted: Vec<AcceptedView>,
    expired: Vec<AcceptedView>,
}

/// An accepted finding, or an expired acceptance (grade and detail empty).
#[derive(Serialize)]
struct AcceptedView {
    node: String,
    check: String,
    grade: &'static str,
    detail: String,
    until: String,
    reason: String,
}

#[derive(Serialize)]
struct RowView {
    node: String,
    ok: bool,
    status: String,
    error: String,
    cells: Vec<CellView>,
}

#[derive(Serialize)]
struct CellView {
    grade: &'static str,
    /// Grade and detail, for the Markdown table.
    text: String,
    /// Detail cut to 80 characters, for the HTML cell.
    detail: String,
}

#[derive(Serialize)]
struct FindingView {
    check: String,
    grade: &'static str,
    detail: String,
}

#[derive(Serialize)]
struct GroupView {
    check: String,
    grade: &'static str,
    nodeset: String,
    detail: String,
    fix: Option<String>,
}

fn row_view(r: &AuditReport, row: &NodeAudit) -> RowView {
    let ok = row.status == NodeStatus::Ok;
    let cells = if ok {
        r.checks
            .iter()
            .map(|c| {
                let (grade, detail) = match row.cells.get(c) {
                    Some(cell) => (cell.grade, cell.detail.as_str()),
                    None => (Grade::Skip, ""),
                };
                let short = shorten(detail, 60);
                let text = if short.is_empty() || !row.cells.contains_key(c) {
                    grade_word(grade).to_string()
                } else {
                    format!("{} {short}", grade_word(grade))
                };
                CellView {
                    grade: grade_word(grade),
                    text: sanitize_str(&text),
                    detail: sanitize_str(&shorten(detail, 80)),
                }
            })
            .collect()
    } else {
        r.checks
            .iter()
            .map(|_| CellView {
                grade: "",
                text: String::new(),
                detail: String::new(),
            })
            .collect()
    };
    RowView {
        node: sanitize_str(&row.node),
        ok,
        status: node_status_text(row),
        error: sanitize_str(row.error.as_deref().unwrap_or("")),
        cells,
    }
}

fn finding_view(f: &Finding) -> FindingView {
    FindingView {
        check: sanitize_str(&f.check),
        grade: grade_word(f.grade),
        detail: sanitize_str(&f.detail),
    }
}

fn view(r: &AuditReport) -> View {
    let rows: Vec<RowView> = r.nodes.iter().map(|n| row_view(r, n)).collect();
    let down = r
        .nodes
        .iter()
        .filter(|n| n.status != NodeStatus::Ok)
        .map(|n| row_view(r, n))
        .collect();
    let clean = |s: &str| sanitize_str(s);
    View {
        generated_at: clean(&r.generated_at),
        inventory: clean(&r.inventory),
        summary_line: summary_line(r),
        summary: r.summary.clone(),
        checks: r.checks.iter().map(|c| clean(c)).collect(),
        rows,
        cluster: r.cluster.iter().map(finding_view).collect(),
        down,
        findings: r
            .findings
            .iter()
            .map(|g| GroupView {
                check: clean(&g.finding.check),
                grade: grade_word(g.finding.grade),
                nodeset: clean(&g.nodeset),
                detail: clean(&g.finding.detail),
                fix: g.finding.remediation.as_deref().map(clean),
            })
            .collect(),
        accepted: r
            .accepted
            .iter()
            .map(|a| AcceptedView {
                node: clean(&a.node),
                check: clean(&a.finding.check),
                grade: grade_word(a.finding.grade),
                detail: clean(&a.finding.detail),
                until: clean(&a.until),
                reason: clean(&a.reason),
            })
            .collect(),
        expired: r
            .expired_acceptances
            .iter()
            .map(|a| AcceptedView {
                node: clean(&a.node),
                check: clean(&a.check),
                grade: "",
                detail: String::new(),
                until: clean(&a.until),
                reason: clean(&a.reason),
            })
            .collect(),
        passed: super::passthrough::passed_through(r)
            .into_iter()
            .map(|p| PassedThrough {
                node: clean(&p.node),
                slot: clean(&p.slot),
                class: clean(&p.class),
                name: clean(&p.name),
                id: clean(&p.id),
            })
            .collect(),
    }
}

/// The template environment: `audit.md` and `audit.html` (autoescaped, by its name), block
/// tags on their own lines leave no blank lines behind.
fn templates() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_syntax(
            SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()
                .expect("default delimiters"),
        );
        env.add_filter("md", |s: String| md_escape(&s));
        env.add_template("audit.md", include_str!("templates/audit.md"))
            .expect("the Markdown template parses");
        env.add_template("audit.html", include_str!("templates/audit.html"))
            .expect("the HTML template parses");
        env
    })
}

fn render_template(name: &str, r: &AuditReport) -> String {
    let template = templates()
        .get_template(name)
        .expect("template is built in");
    template
        .render(minijinja::Value::from(minijinja::value::Serde(view(r))))
        .expect("the report view renders")
}

/// GitHub-flavoured Markdown: header, summary, matrix table, cluster table, findings list.
pub fn render_markdown(r: &AuditReport) -> String {
    render_template("audit.md", r)
}

/// One self-contained HTML page: matrix with coloured cells, cluster checks, findings with fixes.
pub fn render_html(r: &AuditReport) -> String {
    render_template("audit.html", r)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::audit::{AuditReport, Summary, AUDIT_SCHEMA_VERSION};
    use crate::probe::Finding;

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
            accepted: Vec::new(),
            expired_acceptances: Vec::new(),
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
        let term = render_terminal(&r, &TerminalOptions::default());
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

    fn report_with_a_hostile_detail_and_a_down_node() -> AuditReport {
        let mut r = report_with_passthrough();
        r.nodes[0].facts.clear();
        r.checks = vec!["rrd".into(), "gpu".into()];
        let evil = "<script>alert(1)</script> a|b \u{1b}[2J";
        r.nodes[0].cells.insert(
            "rrd".into(),
            crate::audit::MatrixCell {
                grade: Grade::Fail,
                detail: evil.into(),
            },
        );
        let finding = Finding::new("rrd.zero_byte", Grade::Fail, evil).fix("rm `x` && y");
        r.findings = vec![crate::audit::FindingGroup {
            finding,
            nodes: vec!["pve2".into()],
            nodeset: "pve2".into(),
        }];
        let mut down = r.nodes[0].clone();
        down.node = "pve3".into();
        down.status = NodeStatus::HostKey;
        down.error = Some("host key changed <see known_hosts:3>".into());
        r.nodes.push(down);
        r
    }

    #[test]
    fn html_is_autoescaped_and_a_down_node_spans_its_row() {
        let html = render_html(&report_with_a_hostile_detail_and_a_down_node());
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;"), "{html}");
        assert!(
            !html.contains('\u{1b}'),
            "control characters escaped: {html}"
        );
        assert!(
            html.contains("<td class=\"DOWN\" colspan=\"3\">host-key<small>host key changed &lt;see known_hosts:3&gt;</small></td>"),
            "{html}"
        );
        assert!(
            html.contains("<br>Fix: <code>rm `x` &amp;&amp; y</code>"),
            "{html}"
        );
        assert_eq!(html.matches("<tr").count(), html.matches("</tr>").count());
        assert!(
            html.contains("<td class=\"SKIP\">SKIP<small></small></td>"),
            "no gpu cell: SKIP"
        );
    }

    #[test]
    fn markdown_cells_escape_pipes_and_html_and_every_row_has_every_column() {
        let md = render_markdown(&report_with_a_hostile_detail_and_a_down_node());
        let table: Vec<&str> = md.lines().filter(|l| l.starts_with("| ")).collect();
        let cols = |l: &str| l.replace("\\|", "").matches('|').count();
        assert_eq!(table.len(), 3, "{md}");
        assert!(table.iter().all(|l| cols(l) == 5), "{md}");
        assert!(
            md.contains(
                "| pve2 | ok | FAIL &lt;script>alert(1)&lt;/script> a\\|b \\\\x1b[2J | SKIP |"
            ),
            "{md}"
        );
        assert!(md.contains("| pve3 | host-key |  |  |"), "{md}");
        assert!(
            md.contains("- **HOST-KEY** `pve3`: host key changed &lt;see known_hosts:3>"),
            "{md}"
        );
        assert!(md.contains("  - fix: `rm 'x' && y`"), "{md}");
        assert!(!md.contains("None: every check passed."));
        let mut clean = report_with_passthrough();
        clean.nodes[0].facts.clear();
        let md = render_markdown(&clean);
        assert!(
            md.contains("## Findings\n\nNone: every check passed.\n"),
            "{md}"
        );
        assert!(!md.contains("## Cluster"), "{md}");
    }
}
