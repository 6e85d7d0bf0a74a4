//! The cluster audit: every probe on every targeted node, one remote script per node, graded.
//!
//! Per node: one connection; a few tiny clock samples (the controller measures the node's offset
//! itself, RTT-corrected, keeping the lowest-RTT sample as NTP does); then **one** exec of all probe
//! snippets concatenated with section markers. The sections are parsed and graded on the
//! controller. Then cluster-level checks (clock spread, mixed versions, nodes down, quorum) are
//! derived from the per-node results. The result is an [`AuditReport`]: plain data that every
//! output format in [`crate::report::audit`] renders.

pub mod accept;
pub mod cluster;
pub mod compare;
mod evaluate;
pub mod schema;

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::exec::NodeStatus;
use crate::fanout::{self, EventSink, Outcome};
use crate::inventory::Node;
use crate::probe::{Finding, Grade};
use crate::ssh::{self, ExitStatus, Session};

pub use evaluate::cell_of;
pub use evaluate::{probe_names, Thresholds};

/// Version of the audit JSON schema (`--format json`); bumped on incompatible changes.
pub const AUDIT_SCHEMA_VERSION: u32 = 1;

/// How many clock samples are taken per node (the lowest-RTT one is kept).
pub const CLOCK_SAMPLES: usize = 5;

/// The controller's measurement of one node's clock.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ClockMeasurement {
    /// Node clock minus controller clock, seconds (positive: node ahead).
    pub offset_s: f64,
    /// Bound on the error of `offset_s` (half the kept sample's round trip), seconds.
    #[schemars(range(min = 0.0))]
    pub error_s: f64,
}

/// One cell of the node x check matrix: the worst grade of the probe's findings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct MatrixCell {
    /// Worst grade.
    pub grade: Grade,
    /// The detail of the worst finding (or a summary when all pass).
    pub detail: String,
}

/// Everything the audit learned about one node.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct NodeAudit {
    /// Node name.
    pub node: String,
    /// Address used.
    pub address: String,
    /// Whether the node could be audited (`ok`) or why not.
    pub status: NodeStatus,
    /// What went wrong when status is not ok.
    pub error: Option<String>,
    /// Probe name -> cell, for the matrix.
    pub cells: BTreeMap<String, MatrixCell>,
    /// Every finding, in probe order.
    pub findings: Vec<Finding>,
    /// Probe name -> typed facts (as JSON).
    pub facts: BTreeMap<String, serde_json::Value>,
    /// Clock offset as measured by the controller.
    pub clock: Option<ClockMeasurement>,
    /// Wall time for this node.
    pub duration_ms: u64,
}

/// Findings that several nodes share, grouped (like `clush -b`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct FindingGroup {
    /// The shared finding.
    pub finding: Finding,
    /// Nodes that have it, in inventory order (`["cluster"]` for cluster-level checks).
    #[schemars(length(min = 1))]
    pub nodes: Vec<String>,
    /// The nodes folded (`pve[1-3]`).
    pub nodeset: String,
}

/// Counts over all findings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Summary {
    /// Nodes targeted.
    pub nodes: usize,
    /// Nodes that could not be audited.
    pub unreachable: usize,
    /// PASS findings.
    pub pass: usize,
    /// WARN findings.
    pub warn: usize,
    /// FAIL findings.
    pub fail: usize,
    /// SKIP findings.
    pub skip: usize,
    /// WARN and FAIL findings accepted (`--accept`): counted in `warn`/`fail` too, but not in
    /// the exit code.
    #[serde(default)]
    pub accepted: usize,
}

/// The whole audit.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct AuditReport {
    /// Schema version ([`AUDIT_SCHEMA_VERSION`]).
    #[schemars(extend("const" = AUDIT_SCHEMA_VERSION))]
    pub version: u32,
    /// When the audit ran (UTC, RFC 3339).
    #[schemars(pattern(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$"))]
    pub generated_at: String,
    /// Where the inventory came from.
    pub inventory: String,
    /// The matrix columns: probe names, in order.
    pub checks: Vec<String>,
    /// One row per targeted node, in inventory order (unreachable nodes included).
    pub nodes: Vec<NodeAudit>,
    /// Cluster-level findings (clock spread, versions, nodes down, quorum).
    pub cluster: Vec<Finding>,
    /// Non-PASS findings grouped by identical content, worst first.
    pub findings: Vec<FindingGroup>,
    /// Counts.
    pub summary: Summary,
    /// WARN and FAIL findings an acceptance covered (`--accept FILE`), with its reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accepted: Vec<accept::AcceptedFinding>,
    /// Acceptances of the file past their date: they no longer apply.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expired_acceptances: Vec<accept::Acceptance>,
}

impl AuditReport {
    /// Whether the finding `check` of `node` (`cluster` for cluster-level checks) is accepted.
    pub fn is_accepted(&self, node: &str, check: &str) -> bool {
        self.accepted
            .iter()
            .any(|a| a.node == node && a.finding.check == check)
    }

    /// Exit code: 0 all PASS, 1 warnings, 2 failures, 3 nodes unreachable; accepted findings
    /// do not count.
    pub fn exit_code(&self) -> u8 {
        use crate::exit;
        let rows = self
            .nodes
            .iter()
            .flat_map(|r| r.findings.iter().map(move |f| (r.node.as_str(), f)));
        let cluster = self.cluster.iter().map(|f| ("cluster", f));
        let worst = rows
            .chain(cluster)
            .filter(|(n, f)| !self.is_accepted(n, &f.check))
            .map(|(_, f)| f.grade)
            .max();
        if self.summary.unreachable > 0 {
            exit::UNREACHABLE
        } else if worst == Some(Grade::Fail) {
            exit::FAILED
        } else if worst == Some(Grade::Warn) {
            exit::WARNINGS
        } else {
            exit::OK
        }
    }
}

/// Options of one audit.
#[derive(Debug, Clone)]
pub struct AuditOptions {
    /// Probes to run (matrix columns), in order.
    pub probes: Vec<String>,
    /// Grading thresholds.
    pub thresholds: Thresholds,
    /// Nodes at once.
    pub forks: usize,
    /// Overrides every node's command timeout.
    pub timeout: Option<Duration>,
    /// Where the inventory came from (for the report header).
    pub inventory: String,
}

fn epoch_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Take [`CLOCK_SAMPLES`] samples of the node's clock over the open session; keep the best.
pub async fn measure_clock(
    session: &Session,
    timeout: Duration,
) -> Result<Option<ClockMeasurement>, ssh::SshError> {
    let mut samples = Vec::with_capacity(CLOCK_SAMPLES);
    for _ in 0..CLOCK_SAMPLES {
        let sent = epoch_secs(SystemTime::now());
        let out = session
            .exec(crate::probe::clock::CLOCK_SAMPLE_CMD, timeout)
            .await?;
        let received = epoch_secs(SystemTime::now());
        if out.exit != ExitStatus::Code(0) {
            return Ok(None);
        }
        if let Ok(remote) = String::from_utf8_lossy(&out.stdout).trim().parse::<f64>() {
            samples.push((sent, remote, received));
        }
    }
    if samples.is_empty() {
        return Ok(None);
    }
    let (offset_s, error_s) = crate::probe::clock::offset_from_samples(&samples);
    Ok(Some(ClockMeasurement { offset_s, error_s }))
}

fn failed_node(node: &Node, status: NodeStatus, error: String, took: Duration) -> NodeAudit {
    NodeAudit {
        node: node.name.clone(),
        address: node.address.clone(),
        status,
        error: Some(error),
        cells: BTreeMap::new(),
        findings: Vec::new(),
        facts: BTreeMap::new(),
        clock: None,
        duration_ms: took.as_millis() as u64,
    }
}

/// Audit one node: connect, sample the clock, run the combined script once, grade.
pub async fn audit_node(node: &Node, opts: &AuditOptions) -> NodeAudit {
    let start = Instant::now();
    let timeout = opts.timeout.unwrap_or(node.command_timeout);
    let session = match ssh::connect(&node.connect_spec()).await {
        Ok(s) => s,
        Err(e) => {
            return failed_node(
                node,
                NodeStatus::of_connect_error(&e),
                e.to_string(),
                start.elapsed(),
            )
        }
    };
    let wants_clock = opts.probes.iter().any(|p| p == "clock");
    let clock = if wants_clock {
        match measure_clock(&session, timeout).await {
            Ok(c) => c,
            Err(e) => {
                session.close().await;
                return failed_node(
                    node,
                    NodeStatus::of_exec_error(&e),
                    e.to_string(),
                    start.elapsed(),
                );
            }
        }
    } else {
        None
    };
    let script = evaluate::combined_script(&opts.probes);
    let result = session.exec(&script, timeout).await;
    session.close().await;
    let output = match result {
        Ok(o) => o,
        Err(e) => {
            return failed_node(
                node,
                NodeStatus::of_exec_error(&e),
                e.to_string(),
                start.elapsed(),
            )
        }
    };
    let text = String::from_utf8_lossy(&output.stdout);
    let evaluated = evaluate::evaluate_all(&opts.probes, &text, clock, &opts.thresholds);
    NodeAudit {
        node: node.name.clone(),
        address: node.address.clone(),
        status: NodeStatus::Ok,
        error: None,
        cells: evaluated.cells,
        findings: evaluated.findings,
        facts: evaluated.facts,
        clock,
        duration_ms: start.elapsed().as_millis() as u64,
    }
}

/// Audit every node (bounded by `forks`), then derive the cluster checks and the summary.
pub async fn run(
    nodes: Vec<Node>,
    opts: &AuditOptions,
    cancel: &CancellationToken,
    events: Option<EventSink>,
) -> AuditReport {
    // Several clusters in one inventory: the cluster checks run per cluster, rows by cluster.
    let mut groups: Vec<(Option<String>, Vec<String>)> = Vec::new();
    for n in &nodes {
        match groups.iter_mut().find(|(c, _)| *c == n.cluster) {
            Some((_, v)) => v.push(n.name.clone()),
            None => groups.push((n.cluster.clone(), vec![n.name.clone()])),
        }
    }
    let shared = std::sync::Arc::new(opts.clone());
    let outcomes = fanout::run(
        nodes,
        opts.forks,
        cancel,
        events,
        |n: &Node| n.name.clone(),
        |a: &NodeAudit| a.status == NodeStatus::Ok,
        move |node: Node| {
            let opts = shared.clone();
            async move { audit_node(&node, &opts).await }
        },
    )
    .await;
    let rows: Vec<NodeAudit> = outcomes
        .into_iter()
        .map(|(node, o)| match o {
            Outcome::Done(a) => a,
            Outcome::Cancelled => failed_node(
                &node,
                NodeStatus::Cancelled,
                "interrupted".into(),
                Duration::ZERO,
            ),
            Outcome::Panicked(m) => failed_node(
                &node,
                NodeStatus::Error,
                format!("internal error: {m}"),
                Duration::ZERO,
            ),
        })
        .collect();
    assemble_clusters(rows, opts, &groups)
}

/// Build the report from node rows: cluster checks, grouped findings, summary.
pub fn assemble(rows: Vec<NodeAudit>, opts: &AuditOptions) -> AuditReport {
    assemble_clusters(rows, opts, &[])
}

/// [`assemble`] for an inventory of several clusters (`groups`: cluster name and its nodes, in
/// inventory order): rows are ordered by cluster and the cluster checks run for each cluster on
/// its own, each finding's detail naming its cluster. One group (or none) is the plain report.
pub fn assemble_clusters(
    mut rows: Vec<NodeAudit>,
    opts: &AuditOptions,
    groups: &[(Option<String>, Vec<String>)],
) -> AuditReport {
    let cluster = if groups.len() <= 1 {
        cluster::cluster_findings(&rows, &opts.thresholds)
    } else {
        let pos = |n: &str| {
            groups
                .iter()
                .position(|(_, names)| names.iter().any(|x| x == n))
                .unwrap_or(usize::MAX)
        };
        rows.sort_by_key(|r| pos(&r.node));
        let mut out = Vec::new();
        for (name, names) in groups {
            let mine: Vec<NodeAudit> = rows
                .iter()
                .filter(|r| names.contains(&r.node))
                .cloned()
                .collect();
            let label = match name {
                Some(c) => format!("cluster {c}"),
                None => "nodes without a cluster".to_string(),
            };
            for mut f in cluster::cluster_findings(&mine, &opts.thresholds) {
                f.detail = format!("{label}: {}", f.detail);
                out.push(f);
            }
        }
        out
    };
    let mut summary = Summary {
        nodes: rows.len(),
        unreachable: rows.iter().filter(|r| r.status != NodeStatus::Ok).count(),
        ..Summary::default()
    };
    for f in rows.iter().flat_map(|r| &r.findings).chain(&cluster) {
        match f.grade {
            Grade::Pass => summary.pass += 1,
            Grade::Warn => summary.warn += 1,
            Grade::Fail => summary.fail += 1,
            Grade::Skip => summary.skip += 1,
        }
    }
    let findings = group_findings(&rows, &cluster);
    AuditReport {
        version: AUDIT_SCHEMA_VERSION,
        generated_at: rfc3339_now(),
        inventory: opts.inventory.clone(),
        checks: opts.probes.clone(),
        nodes: rows,
        cluster,
        findings,
        summary,
        accepted: Vec::new(),
        expired_acceptances: Vec::new(),
    }
}

/// Group identical non-PASS findings across nodes; cluster findings form their own groups.
/// Order: FAIL before WARN before SKIP, then by check id.
pub fn group_findings(rows: &[NodeAudit], cluster: &[Finding]) -> Vec<FindingGroup> {
    let mut groups: Vec<FindingGroup> = Vec::new();
    for row in rows {
        for f in row.findings.iter().filter(|f| f.grade != Grade::Pass) {
            match groups.iter_mut().find(|g| &g.finding == f) {
                Some(g) => g.nodes.push(row.node.clone()),
                None => groups.push(FindingGroup {
                    finding: f.clone(),
                    nodes: vec![row.node.clone()],
                    nodeset: String::new(),
                }),
            }
        }
    }
    for f in cluster.iter().filter(|f| f.grade != Grade::Pass) {
        groups.push(FindingGroup {
            finding: f.clone(),
            nodes: vec!["cluster".into()],
            nodeset: String::new(),
        });
    }
    for g in &mut groups {
        let names: Vec<&str> = g.nodes.iter().map(String::as_str).collect();
        g.nodeset = crate::nodeset::fold(&names);
    }
    groups.sort_by(|a, b| {
        b.finding
            .grade
            .cmp(&a.finding.grade)
            .then_with(|| a.finding.check.cmp(&b.finding.check))
    });
    groups
}

/// The current UTC time as RFC 3339 (seconds precision), e.g. `2026-11-30T23:00:00Z`.
pub fn rfc3339_now() -> String {
    rfc3339(SystemTime::now())
}

/// Format an instant as RFC 3339 in UTC, seconds precision (`YYYY-MM-DDTHH:MM:SSZ`).
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
impl NodeAudit {
    /// A node reached in 1 ms with these findings and nothing else measured (unit tests).
    pub(crate) fn reached(node: &str, findings: Vec<Finding>) -> NodeAudit {
        NodeAudit {
            node: node.into(),
            address: "x".into(),
            status: crate::exec::NodeStatus::Ok,
            error: None,
            cells: BTreeMap::new(),
            findings,
            facts: BTreeMap::new(),
            clock: None,
            duration_ms: 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        let at = |secs| rfc3339(UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(1_735_385_716), "2024-12-28T11:35:16Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
    }

    fn finding(check: &str, grade: Grade, detail: &str) -> Finding {
        Finding {
            check: check.into(),
            grade,
            detail: detail.into(),
            remediation: None,
        }
    }

    fn row(node: &str, findings: Vec<Finding>) -> NodeAudit {
        NodeAudit::reached(node, findings)
    }

    #[test]
    fn identical_findings_group_and_worst_come_first() {
        let rows = vec![
            row(
                "pve1",
                vec![finding("rrd.zero_byte", Grade::Fail, "2 files")],
            ),
            row("pve2", vec![finding("offload.hang", Grade::Warn, "eno1")]),
            row(
                "pve3",
                vec![finding("rrd.zero_byte", Grade::Fail, "2 files")],
            ),
        ];
        let groups = group_findings(&rows, &[finding("cluster.quorum", Grade::Pass, "ok")]);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].nodeset, "pve[1,3]");
        assert_eq!(groups[1].finding.check, "offload.hang");
    }
}
