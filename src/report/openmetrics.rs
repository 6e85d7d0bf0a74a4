//! The audit as OpenMetrics text (`audit --format openmetrics`), for Prometheus.
//!
//! A pure function of the [`AuditReport`], written for node_exporter's textfile collector (a
//! `.prom` file it reads on every scrape) or a pushgateway. Both parse the Prometheus text
//! format 0.0.4, and the OpenMetrics text format 1.0.0 written here is kept inside what that
//! parser also reads: `# UNIT` and `# EOF` are comments to it, no HELP text contains a `"`
//! (which only OpenMetrics escapes), and no gauge name ends in `_total` (a counter's suffix).
//!
//! Label values are escaped as the OpenMetrics specification says (`\\`, `\"`, `\n`), after
//! [`sanitize_str`] so that no control character from an inventory reaches a scraper. One sample
//! per label set: a node's findings of the same check are folded into their worst grade, and the
//! cluster checks (one per cluster in a multi-cluster inventory) into one sample per check.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::sanitize::sanitize_str;
use crate::audit::AuditReport;
use crate::exec::NodeStatus;
use crate::probe::{Finding, Grade};

/// The value of a grade in the `*_grade` gauges (`-1` SKIP, `0` PASS, `1` WARN, `2` FAIL), so an
/// alert is `pvefleet_check_grade > 0`.
pub fn grade_value(g: Grade) -> i8 {
    match g {
        Grade::Skip => -1,
        Grade::Pass => 0,
        Grade::Warn => 1,
        Grade::Fail => 2,
    }
}

const GRADE_HELP: &str = "0 PASS, 1 WARN, 2 FAIL, -1 SKIP (not applicable here)";

/// A label value as the OpenMetrics ABNF `escaped-string` wants it: backslash, double quote and
/// line feed escaped (other control characters are already `\xNN` text after sanitising).
pub fn escape_label(v: &str) -> String {
    sanitize_str(v)
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, unit: Option<&str>, help: &str) {
    let _ = writeln!(out, "# TYPE {name} gauge");
    if let Some(u) = unit {
        let _ = writeln!(out, "# UNIT {name} {u}");
    }
    let _ = writeln!(out, "# HELP {name} {help}");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
    let labels: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
        .collect();
    if labels.is_empty() {
        let _ = writeln!(out, "{name} {value}");
    } else {
        let _ = writeln!(out, "{name}{{{}}} {value}", labels.join(","));
    }
}

/// Check -> the worst grade of its findings (one sample per label set).
fn worst_by_check(findings: &[Finding]) -> BTreeMap<&str, Grade> {
    let mut worst: BTreeMap<&str, Grade> = BTreeMap::new();
    for f in findings {
        let g = worst.entry(f.check.as_str()).or_insert(f.grade);
        *g = (*g).max(f.grade);
    }
    worst
}

/// The OpenMetrics exposition of `r`, ending in `# EOF`.
pub fn render_openmetrics(r: &AuditReport) -> String {
    let mut out = String::new();
    family(
        &mut out,
        "pvefleet_check_grade",
        None,
        &format!("Grade of each check on each node (the worst of its findings): {GRADE_HELP}."),
    );
    for row in &r.nodes {
        for (check, g) in worst_by_check(&row.findings) {
            sample(
                &mut out,
                "pvefleet_check_grade",
                &[("node", &row.node), ("check", check)],
                grade_value(g),
            );
        }
    }
    family(
        &mut out,
        "pvefleet_cluster_check_grade",
        None,
        &format!("Grade of each cluster-level check (the worst over the clusters): {GRADE_HELP}."),
    );
    for (check, g) in worst_by_check(&r.cluster) {
        sample(
            &mut out,
            "pvefleet_cluster_check_grade",
            &[("check", check)],
            grade_value(g),
        );
    }
    family(
        &mut out,
        "pvefleet_check_accepted",
        None,
        "1 for a WARN or FAIL check an acceptance (audit --accept) covers; alert on pvefleet_check_grade > 0 unless on(node, check) pvefleet_check_accepted.",
    );
    let mut accepted: Vec<(&str, &str)> = r
        .accepted
        .iter()
        .map(|a| (a.node.as_str(), a.finding.check.as_str()))
        .collect();
    accepted.sort_unstable();
    accepted.dedup();
    for (node, check) in accepted {
        sample(
            &mut out,
            "pvefleet_check_accepted",
            &[("node", node), ("check", check)],
            1,
        );
    }
    family(
        &mut out,
        "pvefleet_node_audited",
        None,
        "1 when the node could be audited, 0 when not (unreachable, refused, timed out).",
    );
    for row in &r.nodes {
        let up = u8::from(row.status == NodeStatus::Ok);
        sample(
            &mut out,
            "pvefleet_node_audited",
            &[("node", &row.node)],
            up,
        );
    }
    family(
        &mut out,
        "pvefleet_clock_offset_seconds",
        Some("seconds"),
        "Node clock minus the controller's clock as the audit measured it (RTT-corrected).",
    );
    for row in &r.nodes {
        if let Some(c) = row.clock {
            sample(
                &mut out,
                "pvefleet_clock_offset_seconds",
                &[("node", &row.node)],
                c.offset_s,
            );
        }
    }
    family(
        &mut out,
        "pvefleet_findings",
        None,
        "Findings of the audit by grade (nodes and cluster).",
    );
    let s = &r.summary;
    for (grade, n) in [
        ("PASS", s.pass),
        ("WARN", s.warn),
        ("FAIL", s.fail),
        ("SKIP", s.skip),
    ] {
        sample(&mut out, "pvefleet_findings", &[("grade", grade)], n);
    }
    family(
        &mut out,
        "pvefleet_nodes_unaudited",
        None,
        "Targeted nodes the audit could not reach or run on.",
    );
    sample(&mut out, "pvefleet_nodes_unaudited", &[], s.unreachable);
    if let Ok(at) = humantime::parse_rfc3339(&r.generated_at) {
        family(
            &mut out,
            "pvefleet_audit_timestamp_seconds",
            Some("seconds"),
            "When the audit ran (Unix time), to alert on a stale file.",
        );
        let secs = at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        sample(&mut out, "pvefleet_audit_timestamp_seconds", &[], secs);
    }
    out.push_str("# EOF\n");
    out
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::audit::{AuditReport, ClockMeasurement, NodeAudit, Summary};

    fn node(name: &str, findings: Vec<Finding>) -> NodeAudit {
        NodeAudit {
            clock: Some(ClockMeasurement {
                offset_s: -0.25,
                error_s: 0.001,
            }),
            ..NodeAudit::reached(name, findings)
        }
    }

    fn report(nodes: Vec<NodeAudit>) -> AuditReport {
        AuditReport {
            version: 1,
            generated_at: "2026-12-02T05:00:00Z".into(),
            inventory: "i.toml".into(),
            checks: vec!["services".into()],
            nodes,
            cluster: vec![
                Finding::new("cluster.quorum", Grade::Pass, "ok"),
                Finding::new("cluster.quorum", Grade::Fail, "cluster b: no quorum"),
            ],
            findings: Vec::new(),
            summary: Summary {
                nodes: 1,
                pass: 3,
                fail: 2,
                ..Summary::default()
            },
            accepted: Vec::new(),
            expired_acceptances: Vec::new(),
        }
    }

    #[test]
    fn accepted_checks_have_their_own_gauge() {
        let f = Finding::new("gpu.iommu", Grade::Warn, "off");
        let mut r = report(vec![node("pve3", vec![f.clone()])]);
        r.accepted.push(crate::audit::accept::AcceptedFinding {
            node: "pve3".into(),
            finding: f,
            reason: "r".into(),
            until: "2099-01-01".into(),
        });
        let text = render_openmetrics(&r);
        assert!(
            text.contains("pvefleet_check_accepted{node=\"pve3\",check=\"gpu.iommu\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("pvefleet_check_grade{node=\"pve3\",check=\"gpu.iommu\"} 1\n"),
            "still graded"
        );
    }

    #[test]
    fn label_values_are_escaped_as_the_specification_says() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("a\nb"), "a\\nb");
        assert!(!escape_label("a\u{1b}[31m").contains('\u{1b}'));
    }

    #[test]
    fn one_sample_per_node_and_check_with_the_worst_grade() {
        let r = report(vec![node(
            "pve\"1",
            vec![
                Finding::new("gpu.driver", Grade::Pass, "a"),
                Finding::new("gpu.driver", Grade::Warn, "b"),
                Finding::new("clock.offset", Grade::Fail, "c"),
            ],
        )]);
        let text = render_openmetrics(&r);
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(text.contains("pvefleet_check_grade{node=\"pve\\\"1\",check=\"gpu.driver\"} 1\n"));
        assert!(text.contains("pvefleet_check_grade{node=\"pve\\\"1\",check=\"clock.offset\"} 2\n"));
        assert_eq!(text.matches("check=\"gpu.driver\"").count(), 1);
        assert!(text.contains("pvefleet_cluster_check_grade{check=\"cluster.quorum\"} 2\n"));
        assert!(text.contains("pvefleet_clock_offset_seconds{node=\"pve\\\"1\"} -0.25\n"));
        assert!(text.contains("pvefleet_findings{grade=\"FAIL\"} 2\n"));
        assert!(text.contains("pvefleet_audit_timestamp_seconds 1796187600\n"));
        assert!(
            !text.contains("pvefleet_check_accepted{"),
            "nothing accepted"
        );
        // Every HELP without a double quote (Prometheus 0.0.4 would read it literally).
        assert!(text
            .lines()
            .filter(|l| l.starts_with("# HELP"))
            .all(|l| !l.contains('"')));
    }
}
