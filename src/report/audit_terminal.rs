//! The audit for a terminal: the node x check matrix, cluster checks, findings with their fixes.
//!
//! The matrix is made to be read at 80 columns: one short cell per check (the grade word,
//! coloured, and for WARN/FAIL a few characters of value such as `+90.0s` or `2 files`); the full
//! detail is in the findings below it. When the columns do not fit the terminal, the checks are
//! laid out in several blocks, each repeating the node column (the way `ls` wraps columns), so a
//! row is never wrapped by the terminal. `--wide` gives the long cells (grade and detail) in one
//! table instead. Findings are word-wrapped to the width with a hanging indent (their fixes are
//! not: a fix is often a command to paste).

use std::fmt::Write as _;

use comfy_table::{presets, Cell, Color, ContentArrangement, Table};

use super::sanitize::sanitize_str;
use super::wrap::wrap;
use crate::audit::{AuditReport, MatrixCell, NodeAudit};
use crate::exec::NodeStatus;
use crate::probe::Grade;

/// How the terminal output is laid out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TerminalOptions {
    /// ANSI colours (stdout is a terminal and `NO_COLOR` is unset).
    pub color: bool,
    /// The terminal's width in columns; `None` (not a terminal) means no limit.
    pub width: Option<usize>,
    /// Long cells (grade and detail) instead of grade and short value.
    pub wide: bool,
}

/// Longest short value in a compact cell (after the grade word).
/// (11: the longest daemon name, `pve-cluster`.)
const SHORT_MAX: usize = 11;
/// Space between matrix columns.
const GAP: &str = "  ";

/// The word of a grade, as every format prints it.
pub fn grade_word(g: Grade) -> &'static str {
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

/// The SGR code of a grade's colour (what comfy-table emits for [`grade_color`]).
fn grade_sgr(g: Option<Grade>) -> &'static str {
    match g {
        Some(Grade::Pass) => "32",
        Some(Grade::Warn) => "33",
        Some(Grade::Fail) | None => "31",
        Some(Grade::Skip) => "90",
    }
}

/// The status word of a row (`ok`, `unreachable`, `host-key`, ...).
pub fn node_status_text(row: &NodeAudit) -> String {
    row.status.as_str().to_string()
}

/// The summary line shared by every format.
pub fn summary_line(r: &AuditReport) -> String {
    let s = &r.summary;
    let accepted = if s.accepted > 0 {
        format!(" ({} accepted)", s.accepted)
    } else {
        String::new()
    };
    format!(
        "{} nodes ({} not audited): {} PASS, {} WARN, {} FAIL, {} SKIP{accepted}",
        s.nodes, s.unreachable, s.pass, s.warn, s.fail, s.skip
    )
}

/// The first line of `s`, cut to `max` characters with `…`.
pub fn shorten(s: &str, max: usize) -> String {
    let one_line = s.lines().next().unwrap_or("");
    if one_line.chars().count() > max {
        let cut: String = one_line.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    } else {
        one_line.to_string()
    }
}

/// A clock offset in a few characters: `+90.0s`, `-2.31s`, `+5ms`.
fn offset_text(s: f64) -> String {
    let a = s.abs();
    let sign = if s < 0.0 { '-' } else { '+' };
    if a >= 100.0 {
        format!("{sign}{a:.0}s")
    } else if a >= 10.0 {
        format!("{sign}{a:.1}s")
    } else if a >= 1.0 {
        format!("{sign}{a:.2}s")
    } else {
        format!("{sign}{:.0}ms", a * 1000.0)
    }
}

/// What a count at the start of a finding's detail counts, by check.
fn unit_of(check: &str) -> &'static str {
    match check {
        "rrd.zero_byte" | "rrd.future" => "files",
        "rrd.journal_errors" => "errors",
        "rrd.disk" => "used",
        "updates.pending" => "pkgs",
        "ceph.pgs" => "PGs",
        _ => "",
    }
}

/// A count (or percentage) opening `detail`: `2` of "2 0-byte RRD file(s)", `97%` of "97% used".
fn leading_count(detail: &str) -> Option<&str> {
    let token = detail.split_whitespace().next()?;
    let digits = token.trim_end_matches('%');
    (!digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit() || c == '.')).then_some(token)
}

/// A few characters of a WARN or FAIL cell's value, enough to tell two of them apart:
/// the clock offset, a count with its unit, the NIC, else the failing sub-check
/// (`pveproxy`, `iommu`, `quorum`). PASS and SKIP cells have none.
pub fn short_value(row: &NodeAudit, probe: &str, cell: &MatrixCell) -> String {
    if matches!(cell.grade, Grade::Pass | Grade::Skip) {
        return String::new();
    }
    let prefix = format!("{probe}.");
    let check = row
        .findings
        .iter()
        .find(|f| f.grade == cell.grade && f.detail == cell.detail && f.check.starts_with(&prefix))
        .map_or("", |f| f.check.as_str());
    let sub = check.strip_prefix(&prefix).unwrap_or(check);
    let text = if let (true, Some(c)) = (check == "clock.offset", row.clock) {
        offset_text(c.offset_s)
    } else if let Some(n) = leading_count(&cell.detail) {
        match unit_of(check) {
            "" => n.to_string(),
            unit => format!("{n} {unit}"),
        }
    } else if probe == "offload" {
        // "eno1 (e1000e): 10 hang/reset lines ..." / "eno1: tso off in the config ...": the NIC.
        cell.detail
            .split([' ', ':'])
            .next()
            .unwrap_or(sub)
            .to_string()
    } else {
        sub.to_string()
    };
    shorten(&sanitize_str(&text), SHORT_MAX)
}

/// One compact cell: grade word and short value, or `-` for a node not audited.
fn compact_cell(row: &NodeAudit, probe: &str) -> (Option<Grade>, String) {
    if row.status != NodeStatus::Ok {
        return (None, "-".into());
    }
    match row.cells.get(probe) {
        Some(cell) => {
            let short = short_value(row, probe, cell);
            let word = grade_word(cell.grade);
            if short.is_empty() {
                (Some(cell.grade), word.into())
            } else {
                (Some(cell.grade), format!("{word} {short}"))
            }
        }
        None => (Some(Grade::Skip), "SKIP".into()),
    }
}

fn paint(text: &str, sgr: &str, color: bool) -> String {
    if color {
        format!("\x1b[{sgr}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

fn pad(text: &str, width: usize) -> String {
    let n = text.chars().count();
    format!("{text}{}", " ".repeat(width.saturating_sub(n)))
}

/// One column of the compact matrix: header and one (grade, text) per node row.
struct Column {
    header: String,
    cells: Vec<(Option<Grade>, String)>,
    width: usize,
}

impl Column {
    fn new(header: String, cells: Vec<(Option<Grade>, String)>) -> Column {
        let width = cells
            .iter()
            .map(|(_, t)| t.chars().count())
            .chain([header.chars().count()])
            .max()
            .unwrap_or(0);
        Column {
            header,
            cells,
            width,
        }
    }
}

/// Split the check columns into blocks that fit `width` beside the fixed columns.
fn blocks(fixed: usize, columns: &[Column], width: Option<usize>) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut used = fixed;
    for (i, c) in columns.iter().enumerate() {
        let need = GAP.len() + c.width;
        if let Some(w) = width {
            if i > start && used + need > w {
                out.push(start..i);
                start = i;
                used = fixed;
            }
        }
        used += need;
    }
    if start < columns.len() || out.is_empty() {
        out.push(start..columns.len());
    }
    out
}

/// The compact node x check matrix.
fn compact_matrix(r: &AuditReport, opts: &TerminalOptions) -> String {
    let color = opts.color;
    let mut fixed = vec![Column::new(
        "node".into(),
        r.nodes
            .iter()
            .map(|n| (None, sanitize_str(&n.node)))
            .collect(),
    )];
    if r.nodes.iter().any(|n| n.status != NodeStatus::Ok) {
        fixed.push(Column::new(
            "status".into(),
            r.nodes
                .iter()
                .map(|n| {
                    let g = (n.status == NodeStatus::Ok).then_some(Grade::Pass);
                    (g, node_status_text(n))
                })
                .collect(),
        ));
    }
    let checks: Vec<Column> = r
        .checks
        .iter()
        .map(|c| {
            Column::new(
                sanitize_str(c),
                r.nodes.iter().map(|n| compact_cell(n, c)).collect(),
            )
        })
        .collect();
    let fixed_width = fixed.iter().map(|c| c.width).sum::<usize>() + GAP.len() * (fixed.len() - 1);
    let mut out = String::new();
    for (b, range) in blocks(fixed_width, &checks, opts.width)
        .into_iter()
        .enumerate()
    {
        if b > 0 {
            out.push('\n');
        }
        let cols: Vec<&Column> = fixed.iter().chain(&checks[range]).collect();
        // Each cell padded to its column (the last one not: no trailing blanks), then painted.
        let line = |cell: &dyn Fn(&Column, String) -> String, text: &dyn Fn(&Column) -> String| {
            let last = cols.len() - 1;
            let cells: Vec<String> = cols
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let t = text(c);
                    cell(c, if i == last { t } else { pad(&t, c.width) })
                })
                .collect();
            cells.join(GAP)
        };
        let bold = |_: &Column, t: String| paint(&t, "1", color);
        let _ = writeln!(out, "{}", line(&bold, &|c| c.header.clone()));
        let _ = writeln!(out, "{}", line(&|_, t| t, &|c| "─".repeat(c.width)));
        for i in 0..r.nodes.len() {
            let painted = |c: &Column, t: String| match (c.cells[i].0, c.header.as_str()) {
                (_, "node") => t,
                (None, "status") => paint(&t, "31", color),
                (None, _) => paint(&t, "90", color),
                (g, _) => paint(&t, grade_sgr(g), color),
            };
            let _ = writeln!(out, "{}", line(&painted, &|c| c.cells[i].1.clone()));
        }
    }
    out
}

/// The text of one wide matrix cell: the grade and its whole detail (`--wide` is asked for to
/// read it; it was cut to 28 characters, a few words of most details).
fn wide_cell(row: &NodeAudit, check: &str) -> (Option<Grade>, String) {
    if row.status != NodeStatus::Ok {
        return (None, String::new());
    }
    match row.cells.get(check) {
        Some(MatrixCell { grade, detail }) => {
            let d = detail.trim();
            if d.is_empty() {
                (Some(*grade), grade_word(*grade).to_string())
            } else {
                (Some(*grade), format!("{} {d}", grade_word(*grade)))
            }
        }
        None => (Some(Grade::Skip), "SKIP".to_string()),
    }
}

/// The wide matrix (`--wide`): grade and detail in each cell, comfy-table borders, one line per
/// node whatever the terminal's width (for wide terminals, or `less -S`).
fn wide_matrix(r: &AuditReport, opts: &TerminalOptions) -> String {
    let mut matrix = Table::new();
    matrix
        .load_preset(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Disabled);
    style(
        &mut matrix,
        &TerminalOptions {
            width: None,
            ..*opts
        },
    );
    let mut header = vec!["node".to_string(), "status".to_string()];
    header.extend(r.checks.iter().cloned());
    matrix.set_header(header);
    for row in &r.nodes {
        let mut cells = vec![Cell::new(&row.node)];
        let mut status = Cell::new(node_status_text(row));
        if opts.color {
            status = status.fg(if row.status == NodeStatus::Ok {
                Color::Green
            } else {
                Color::Red
            });
        }
        cells.push(status);
        for check in &r.checks {
            let (grade, text) = wide_cell(row, check);
            let mut cell = Cell::new(sanitize_str(&text));
            if let (true, Some(g)) = (opts.color, grade) {
                cell = cell.fg(grade_color(g));
            }
            cells.push(cell);
        }
        matrix.add_row(cells);
    }
    format!("{matrix}\n")
}

fn style(t: &mut Table, opts: &TerminalOptions) {
    if opts.color {
        t.enforce_styling();
    } else {
        t.force_no_tty();
    }
    if let Some(w) = opts.width {
        t.set_width(u16::try_from(w).unwrap_or(u16::MAX));
    }
}

/// The accepted findings (`--accept`) with their reason and date, and the expired acceptances.
fn accepted_text(r: &AuditReport, out: &mut String, width: Option<usize>) {
    if !r.accepted.is_empty() {
        let _ = writeln!(out, "Accepted (not counted in the exit code):");
    }
    for a in &r.accepted {
        let head = format!(
            "  {} {} [{}] ",
            grade_word(a.finding.grade),
            a.finding.check,
            sanitize_str(&a.node)
        );
        let text = format!(
            "{}; accepted until {}: {}",
            sanitize_str(&a.finding.detail),
            sanitize_str(&a.until),
            sanitize_str(&a.reason)
        );
        out.push_str(&wrap(&text, &head, "       ", width));
    }
    for a in &r.expired_acceptances {
        let text = format!(
            "{} on {} was accepted until {} ({}); it no longer applies",
            a.check,
            sanitize_str(&a.node),
            sanitize_str(&a.until),
            sanitize_str(&a.reason)
        );
        out.push_str(&wrap(&text, "  EXPIRED acceptance: ", "       ", width));
    }
}

/// Terminal output: the node x check matrix, cluster checks, grouped findings with remedies.
pub fn render_terminal(r: &AuditReport, opts: &TerminalOptions) -> String {
    let mut out = if opts.wide {
        wide_matrix(r, opts)
    } else {
        compact_matrix(r, opts) + "\n"
    };
    let width = if opts.wide { None } else { opts.width };
    if !r.cluster.is_empty() {
        let mut t = Table::new();
        t.load_preset(presets::UTF8_FULL_CONDENSED)
            .set_content_arrangement(ContentArrangement::Dynamic)
            .set_header(vec!["cluster check", "grade", "detail"]);
        style(&mut t, opts);
        for f in &r.cluster {
            let mut g = Cell::new(grade_word(f.grade));
            if opts.color {
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
        let head = format!("  {} {}: ", node_status_text(row).to_uppercase(), row.node);
        let text = sanitize_str(row.error.as_deref().unwrap_or(""));
        out.push_str(&wrap(&text, &head, "       ", width));
    }
    for g in &r.findings {
        let word = grade_word(g.finding.grade);
        let head = format!(
            "  {} {} [{}] ",
            paint(word, grade_sgr(Some(g.finding.grade)), opts.color),
            g.finding.check,
            g.nodeset
        );
        // Wrap on the plain text (colour codes take no columns), then put the colour back.
        let plain = format!("  {word} {} [{}] ", g.finding.check, g.nodeset);
        let wrapped = wrap(&sanitize_str(&g.finding.detail), &plain, "       ", width);
        out.push_str(&wrapped.replacen(&plain, &head, 1));
        if let Some(fix) = &g.finding.remediation {
            // Not wrapped: a fix is often a command, and a line break pasted into a shell
            // would run half of it.
            let _ = writeln!(out, "       fix: {}", sanitize_str(fix));
        }
    }
    accepted_text(r, &mut out, width);
    let passed = super::passthrough::passed_through(r);
    if !passed.is_empty() {
        let _ = writeln!(out, "Passed through (vfio-pci):");
        for p in &passed {
            let text = format!(
                "{} [{}] {} ({})",
                sanitize_str(&p.slot),
                sanitize_str(&p.class),
                sanitize_str(&p.name),
                sanitize_str(&p.id)
            );
            out.push_str(&wrap(&text, &format!("  {} ", p.node), "       ", width));
        }
    }
    out.push_str(&wrap(&summary_line(r), "", "", width));
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::audit::{ClockMeasurement, Summary, AUDIT_SCHEMA_VERSION};
    use crate::probe::Finding;

    fn row(node: &str, findings: Vec<Finding>) -> NodeAudit {
        let mut cells = BTreeMap::new();
        for probe in ["clock", "rrd", "offload", "updates", "services"] {
            let mine: Vec<Finding> = findings
                .iter()
                .filter(|f| f.check.starts_with(&format!("{probe}.")))
                .cloned()
                .collect();
            cells.insert(probe.to_string(), crate::audit::cell_of(&mine));
        }
        NodeAudit {
            node: node.into(),
            address: "x".into(),
            status: NodeStatus::Ok,
            error: None,
            cells,
            findings,
            facts: BTreeMap::new(),
            clock: None,
            duration_ms: 1,
        }
    }

    fn report(nodes: Vec<NodeAudit>) -> AuditReport {
        AuditReport {
            version: AUDIT_SCHEMA_VERSION,
            generated_at: "2026-11-30T23:00:00Z".into(),
            inventory: "inv.toml".into(),
            checks: ["clock", "rrd", "offload", "updates", "services"]
                .map(String::from)
                .to_vec(),
            nodes,
            cluster: Vec::new(),
            findings: Vec::new(),
            summary: Summary::default(),
            accepted: Vec::new(),
            expired_acceptances: Vec::new(),
        }
    }

    #[test]
    fn cells_are_the_grade_and_a_few_characters_of_value() {
        let f = |c: &str, g, d: &str| Finding::new(c, g, d);
        let mut pve1 = row(
            "pve1",
            vec![
                f(
                    "clock.offset",
                    Grade::Fail,
                    "+90.009 s (ahead of the controller)",
                ),
                f(
                    "rrd.zero_byte",
                    Grade::Fail,
                    "2 0-byte RRD file(s): /var/lib/x",
                ),
                f(
                    "offload.hang",
                    Grade::Fail,
                    "eno1 (e1000e): 10 hang/reset lines",
                ),
                f("updates.pending", Grade::Warn, "136 pending"),
                f("services.pveproxy", Grade::Fail, "pveproxy is failed"),
            ],
        );
        pve1.clock = Some(ClockMeasurement {
            offset_s: 90.009,
            error_s: 0.01,
        });
        let r = report(vec![pve1, row("pve2", vec![])]);
        let cell = |p: &str| compact_cell(&r.nodes[0], p).1;
        assert_eq!(cell("clock"), "FAIL +90.0s");
        assert_eq!(cell("rrd"), "FAIL 2 files");
        assert_eq!(cell("offload"), "FAIL eno1");
        assert_eq!(cell("updates"), "WARN 136 pkgs");
        assert_eq!(cell("services"), "FAIL pveproxy");
        let mut pve3 = row(
            "pve3",
            vec![Finding::new(
                "services.pve-cluster",
                Grade::Fail,
                "pve-cluster is failed",
            )],
        );
        pve3.cells.insert(
            "ceph".into(),
            crate::audit::cell_of(&[Finding::new(
                "ceph.pgs",
                Grade::Fail,
                "12 PG(s) inactive (data unavailable): 12 peering",
            )]),
        );
        pve3.findings.push(Finding::new(
            "ceph.pgs",
            Grade::Fail,
            "12 PG(s) inactive (data unavailable): 12 peering",
        ));
        assert_eq!(compact_cell(&pve3, "services").1, "FAIL pve-cluster");
        assert_eq!(compact_cell(&pve3, "ceph").1, "FAIL 12 PGs");
        assert_eq!(
            compact_cell(&r.nodes[1], "rrd").1,
            "SKIP",
            "no findings: SKIP"
        );
        assert_eq!(offset_text(-0.0042), "-4ms");
        assert_eq!(offset_text(2.314), "+2.31s");
    }

    #[test]
    fn accepted_findings_and_expired_acceptances_are_shown_with_reason_and_date() {
        let f = Finding::new("gpu.iommu", Grade::Warn, "IOMMU off");
        let mut r = report(vec![row("pve3", vec![f.clone()])]);
        r.accepted.push(crate::audit::accept::AcceptedFinding {
            node: "pve3".into(),
            finding: f,
            reason: "no passthrough here".into(),
            until: "2027-03-31".into(),
        });
        r.summary.accepted = 1;
        r.expired_acceptances
            .push(crate::audit::accept::Acceptance {
                check: "clock.offset".into(),
                node: "*".into(),
                until: "2026-01-01".into(),
                reason: "old".into(),
            });
        let text = render_terminal(&r, &TerminalOptions::default());
        assert!(
            text.contains(
                "WARN gpu.iommu [pve3] IOMMU off; accepted until 2027-03-31: no passthrough here"
            ),
            "{text}"
        );
        assert!(
            text.contains("EXPIRED acceptance: clock.offset on * was accepted until 2026-01-01"),
            "{text}"
        );
        assert!(text.contains("(1 accepted)"), "{text}");
        let md = crate::report::audit::render_markdown(&r);
        assert!(
            md.contains("(accepted until 2027-03-31: no passthrough here)"),
            "{md}"
        );
        let html = crate::report::audit::render_html(&r);
        assert!(
            html.contains("Accepted until 2027-03-31: no passthrough here"),
            "{html}"
        );
        assert!(html.contains("it no longer applies"), "{html}");
    }

    #[test]
    fn wide_cells_carry_the_whole_detail() {
        let long = "+90.009 s (ahead of the controller): HA reports time drift above 2 s; RRD updates fail";
        let r = report(vec![row(
            "pve1",
            vec![Finding::new("clock.offset", Grade::Fail, long)],
        )]);
        assert_eq!(wide_cell(&r.nodes[0], "clock").1, format!("FAIL {long}"));
        let text = render_terminal(
            &r,
            &TerminalOptions {
                wide: true,
                width: Some(80),
                ..TerminalOptions::default()
            },
        );
        let row = text.lines().find(|l| l.contains(" pve1 ")).unwrap();
        assert!(row.contains(long), "{text}");
    }

    #[test]
    fn the_matrix_splits_into_blocks_rather_than_overflowing() {
        let r = report(vec![
            row(
                "pve1",
                vec![Finding::new("rrd.zero_byte", Grade::Fail, "2 x")],
            ),
            row("pve2", vec![]),
        ]);
        let narrow = TerminalOptions {
            width: Some(30),
            ..TerminalOptions::default()
        };
        let text = compact_matrix(&r, &narrow);
        assert!(text.lines().all(|l| l.chars().count() <= 30), "{text}");
        assert!(
            text.matches("node").count() >= 2,
            "node column repeated:\n{text}"
        );
        let wide = TerminalOptions::default();
        let text = compact_matrix(&r, &wide);
        assert_eq!(text.matches("node").count(), 1, "{text}");
        assert!(text.lines().next().unwrap().ends_with("services"), "{text}");
    }
}
