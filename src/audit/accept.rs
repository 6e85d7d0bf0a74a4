//! Accepted findings (`audit --accept FILE`): known deviations an operator has decided to live
//! with until a date, so that a cron job mails only what is new or worse.
//!
//! The file is TOML, one `[[accept]]` table per acceptance:
//!
//! ```toml
//! [[accept]]
//! check = "gpu.iommu"          # a check name, as the report prints it
//! node = "pve3"                # a node, or "*" for every node (and the cluster checks)
//! until = 2027-03-31           # the last day it applies (a TOML date or "YYYY-MM-DD")
//! reason = "no passthrough on pve3"
//! ```
//!
//! An accepted WARN or FAIL stays in the report (under "Accepted", with its reason and date) but
//! counts neither for the exit code nor as new in `--compare`. An acceptance past its date no
//! longer applies and is listed as expired, so the report says why the finding is back. Errors
//! in the file (bad TOML, an unknown key or check, a bad date) carry file:line:column.

use std::ops::Range;
use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{AuditReport, NodeAudit};
use crate::inventory::SourceError;
use crate::probe::{Finding, Grade};

/// One acceptance, as read from the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Acceptance {
    /// The check (`gpu.iommu`).
    pub check: String,
    /// The node, or `*` for every node and the cluster-level checks.
    pub node: String,
    /// The last day it applies, `YYYY-MM-DD` (UTC).
    #[schemars(pattern(r"^\d{4}-\d{2}-\d{2}$"))]
    pub until: String,
    /// Why it is accepted.
    pub reason: String,
}

impl Acceptance {
    /// Whether it covers `check` on `node` (`cluster` for the cluster-level checks).
    pub fn covers(&self, node: &str, check: &str) -> bool {
        self.check == check && (self.node == "*" || self.node == node)
    }
}

/// A finding an acceptance covered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct AcceptedFinding {
    /// Node name, or `cluster`.
    pub node: String,
    /// The finding (WARN or FAIL).
    pub finding: Finding,
    /// The reason given.
    pub reason: String,
    /// The last day the acceptance applies.
    pub until: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    accept: Vec<RawAcceptance>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAcceptance {
    check: toml::Spanned<String>,
    node: toml::Spanned<String>,
    until: toml::Spanned<toml::Value>,
    reason: String,
}

/// `YYYY-MM-DD` with a month 1-12 and a day that month has; the text back, or why not.
fn parse_date(s: &str) -> Result<String, String> {
    let bad = || format!("`{s}` is not a date YYYY-MM-DD");
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return Err(bad());
    }
    let num = |r: Range<usize>| s[r].parse::<u32>().map_err(|_| bad());
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return Err(format!("`{s}`: month {m} is not 1-12")),
    };
    if d == 0 || d > days {
        return Err(format!("`{s}`: day {d} is not in month {m}"));
    }
    Ok(s.to_string())
}

/// Read an acceptance file; `known` says whether a check name exists.
pub fn parse(
    path: &Path,
    text: &str,
    known: &dyn Fn(&str) -> bool,
) -> Result<Vec<Acceptance>, SourceError> {
    let raw: RawFile = toml::from_str(text).map_err(|e| SourceError::from_toml(path, text, &e))?;
    let mut out = Vec::new();
    for a in raw.accept {
        let check = a.check.get_ref();
        if !known(check) {
            return Err(SourceError::at(
                path,
                text,
                a.check.span(),
                format!("unknown check `{check}` (the names are those of the audit's report, e.g. `gpu.iommu`)"),
            ));
        }
        if a.node.get_ref().trim().is_empty() {
            return Err(SourceError::at(
                path,
                text,
                a.node.span(),
                "node is empty (a node name, or \"*\" for every node)".into(),
            ));
        }
        let until = match a.until.get_ref() {
            toml::Value::Datetime(d) if d.date.is_some() && d.time.is_none() => {
                parse_date(&d.to_string())
            }
            toml::Value::String(s) => parse_date(s),
            other => Err(format!(
                "until must be a date YYYY-MM-DD, got {}",
                other.type_str()
            )),
        }
        .map_err(|m| SourceError::at(path, text, a.until.span(), m))?;
        out.push(Acceptance {
            check: check.clone(),
            node: a.node.into_inner(),
            until,
            reason: a.reason,
        });
    }
    Ok(out)
}

/// The fixed check names the probes and the cluster checks grade (besides `services.UNIT` and
/// `PROBE.output`). The lab test accepts every check of a real audit through this list.
const CHECKS: &[&str] = &[
    "ceph.flags",
    "ceph.health",
    "ceph.osds",
    "ceph.pgs",
    "clock.ntp",
    "clock.offset",
    "cluster.capacity",
    "cluster.clock_spread",
    "cluster.guests",
    "cluster.ha",
    "cluster.names",
    "cluster.nodes_down",
    "cluster.quorum",
    "cluster.versions",
    "gpu.bootloader",
    "gpu.cmdline",
    "gpu.devices",
    "gpu.driver",
    "gpu.gvt",
    "gpu.gvt_conflict",
    "gpu.iommu",
    "gpu.passthrough",
    "gpu.vfio_virqfd",
    "offload.hang",
    "offload.nics",
    "offload.persist",
    "qemu.outdated",
    "rrd.db",
    "rrd.disk",
    "rrd.future",
    "rrd.journal_errors",
    "rrd.zero_byte",
    "services.systemd",
    "tls.pve-ssl",
    "tls.pveproxy-ssl",
    "updates.dpkg",
    "updates.pending",
    "updates.reboot",
    "updates.repos",
];

/// Whether `check` is a check name an audit can report.
pub fn known_check(check: &str) -> bool {
    if CHECKS.contains(&check) {
        return true;
    }
    if let Some(unit) = check.strip_prefix("services.") {
        return crate::probe::services::UNITS.contains(&unit);
    }
    check
        .strip_suffix(".output")
        .is_some_and(|p| crate::probe::by_name(p).is_some())
}

fn is_problem(f: &Finding) -> bool {
    matches!(f.grade, Grade::Warn | Grade::Fail)
}

/// Apply `list` to `report` on day `today` (`YYYY-MM-DD`, UTC): acceptances past their date go
/// to `expired_acceptances`; the WARN/FAIL findings the others cover go to `accepted` and leave
/// the grouped findings (they stay in the nodes' rows and cells, graded as they are).
pub fn apply(report: &mut AuditReport, list: &[Acceptance], today: &str) {
    let (live, expired): (Vec<&Acceptance>, Vec<&Acceptance>) =
        list.iter().partition(|a| a.until.as_str() >= today);
    report.expired_acceptances = expired.into_iter().cloned().collect();
    let mut accepted = Vec::new();
    let mut take = |node: &str, f: &Finding| {
        if let Some(a) = live
            .iter()
            .find(|a| is_problem(f) && a.covers(node, &f.check))
        {
            accepted.push(AcceptedFinding {
                node: node.to_string(),
                finding: f.clone(),
                reason: a.reason.clone(),
                until: a.until.clone(),
            });
        }
    };
    for row in &report.nodes {
        for f in &row.findings {
            take(&row.node, f);
        }
    }
    for f in &report.cluster {
        take("cluster", f);
    }
    report.accepted = accepted;
    let open_rows: Vec<NodeAudit> = report
        .nodes
        .iter()
        .map(|r| NodeAudit {
            findings: r
                .findings
                .iter()
                .filter(|f| !report.is_accepted(&r.node, &f.check))
                .cloned()
                .collect(),
            ..r.clone()
        })
        .collect();
    let open_cluster: Vec<Finding> = report
        .cluster
        .iter()
        .filter(|f| !report.is_accepted("cluster", &f.check))
        .cloned()
        .collect();
    report.findings = super::group_findings(&open_rows, &open_cluster);
    report.summary.accepted = report.accepted.len();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(c: &str) -> bool {
        known_check(c)
    }

    #[test]
    fn check_names_are_the_listed_ones_the_units_and_the_probe_outputs() {
        for c in [
            "gpu.iommu",
            "services.pve-cluster",
            "rrd.output",
            "cluster.quorum",
        ] {
            assert!(known_check(c), "{c}");
        }
        for c in ["gpu.iommmu", "services.nginx", "nosuch.output", "gpu"] {
            assert!(!known_check(c), "{c}");
        }
    }

    fn load(text: &str) -> Result<Vec<Acceptance>, String> {
        parse(Path::new("a.toml"), text, &known).map_err(|e| e.to_string())
    }

    #[test]
    fn an_acceptance_file_is_read_with_dates_as_toml_dates_or_strings() {
        let list = load(
            "[[accept]]\ncheck = \"gpu.iommu\"\nnode = \"pve3\"\nuntil = 2027-03-31\nreason = \"no passthrough\"\n\n[[accept]]\ncheck = \"clock.offset\"\nnode = \"*\"\nuntil = \"2028-02-29\"\nreason = \"lab\"\n",
        )
        .unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].until, "2027-03-31");
        assert!(list[0].covers("pve3", "gpu.iommu") && !list[0].covers("pve1", "gpu.iommu"));
        assert!(list[1].covers("cluster", "clock.offset"));
    }

    #[test]
    fn bad_files_are_errors_at_their_line_and_column() {
        let head = "[[accept]]\ncheck = \"gpu.iommu\"\nnode = \"pve3\"\n";
        for (text, want) in [
            (
                "[[accept]]\ncheck = \"gpu.iommmu\"\nnode = \"pve3\"\nuntil = 2027-01-01\nreason = \"x\"\n".to_string(),
                "a.toml:2:9: unknown check `gpu.iommmu`",
            ),
            (format!("{head}until = 2027-02-30\nreason = \"x\"\n"), "a.toml:4:9: invalid date"),
            (format!("{head}until = \"2027-02-29\"\nreason = \"x\"\n"), "a.toml:4:9: `2027-02-29`: day 29"),
            (format!("{head}until = \"31.12.2027\"\nreason = \"x\"\n"), "a.toml:4:9: `31.12.2027` is not a date"),
            (format!("{head}until = 2027-01-01T10:00:00\nreason = \"x\"\n"), "a.toml:4:9: until must be a date"),
            (format!("{head}until = 2027-01-01\n"), "missing field `reason`"),
            (format!("{head}until = 2027-01-01\nreason = \"x\"\nwhy = 1\n"), "a.toml:6:1: unknown field `why`"),
        ] {
            let e = load(&text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    fn row(node: &str, findings: Vec<Finding>) -> NodeAudit {
        NodeAudit::reached(node, findings)
    }

    #[test]
    fn accepted_findings_leave_the_exit_code_and_expired_ones_do_not() {
        let opts = super::super::AuditOptions {
            probes: vec![],
            thresholds: Default::default(),
            forks: 1,
            timeout: None,
            inventory: "i".into(),
        };
        let rows = vec![
            row("pve1", vec![Finding::new("gpu.iommu", Grade::Warn, "off")]),
            row(
                "pve2",
                vec![Finding::new("clock.offset", Grade::Fail, "+90 s")],
            ),
        ];
        let accept = |check: &str, until: &str| Acceptance {
            check: check.into(),
            node: "*".into(),
            until: until.into(),
            reason: "known".into(),
        };
        let mut r = super::super::assemble(rows, &opts);
        assert_eq!(r.exit_code(), crate::exit::FAILED);
        apply(
            &mut r,
            &[accept("clock.offset", "2026-12-02")],
            "2026-12-02",
        );
        assert_eq!(
            r.exit_code(),
            crate::exit::WARNINGS,
            "the FAIL accepted up to its last day"
        );
        assert_eq!(r.accepted.len(), 1);
        assert!(
            r.findings.iter().all(|g| g.finding.check != "clock.offset"),
            "the accepted one left the grouped findings"
        );
        assert!(r.findings.iter().any(|g| g.finding.check == "gpu.iommu"));
        apply(
            &mut r,
            &[
                accept("clock.offset", "2026-12-01"),
                accept("gpu.iommu", "2030-01-01"),
            ],
            "2026-12-02",
        );
        assert_eq!(
            r.exit_code(),
            crate::exit::FAILED,
            "expired: applies no more"
        );
        assert_eq!(r.expired_acceptances.len(), 1);
        assert_eq!(r.accepted[0].finding.check, "gpu.iommu");
    }
}
