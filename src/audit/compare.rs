//! `pvefleet audit --compare OLD.json`: what changed since an earlier audit.
//!
//! A *problem* is a WARN or FAIL finding of a node or of the cluster, or a node that could not be
//! audited (check `node.reachable`). SKIP means "not applicable here" and PASS is fine, so neither
//! is a problem. Problems are matched by (node, check); a check that appears several times on one
//! node (one `offload.hang` per NIC) is matched by identical detail first, then in order.
//!
//! Each problem of either audit lands in exactly one list:
//! - `new`: in this audit only;
//! - `resolved`: in the old audit only, and this audit did check it (the node answered and the
//!   probe ran), so it is really gone;
//! - `still_open`: in both (with the old grade, so a WARN that became a FAIL shows as worse);
//! - `unchecked`: in the old audit only, but this audit could not tell (node not audited, or the
//!   probe not run, e.g. `--probes`).
//!
//! Pure functions of two [`AuditReport`]s; rendering lives in [`crate::report::compare`].

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::AuditReport;
use crate::exec::NodeStatus;
use crate::exit;
use crate::probe::{Finding, Grade};

/// The check name under which a node that could not be audited is a problem.
pub const NODE_REACHABLE: &str = "node.reachable";

/// Version of the comparison JSON document; bumped on incompatible changes.
pub const COMPARE_SCHEMA_VERSION: u32 = 1;

/// One problem of one node (or `cluster`), as the newer audit saw it (or the older one, for
/// `resolved` and `unchecked`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Problem {
    /// Node name, or `cluster` for cluster-level checks.
    pub node: String,
    /// The finding.
    pub finding: Finding,
    /// The grade in the older audit, for problems still open.
    pub was: Option<Grade>,
}

impl Problem {
    /// Still open and graded worse than before (WARN -> FAIL).
    pub fn is_worse(&self) -> bool {
        self.was.is_some_and(|w| self.finding.grade > w)
    }
}

/// How many problems each list holds, and how many of those still open got worse.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct CompareSummary {
    /// Problems only in the newer audit.
    pub new: usize,
    /// Problems still open that got worse.
    pub worse: usize,
    /// Problems gone.
    pub resolved: usize,
    /// Problems in both audits.
    pub still_open: usize,
    /// Old problems this audit could not check.
    pub unchecked: usize,
}

/// What changed between two audits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Comparison {
    /// [`COMPARE_SCHEMA_VERSION`].
    #[schemars(extend("const" = COMPARE_SCHEMA_VERSION))]
    pub version: u32,
    /// When the older audit ran.
    pub old_generated_at: String,
    /// When the newer audit ran.
    pub generated_at: String,
    /// Problems only in the newer audit.
    pub new: Vec<Problem>,
    /// Problems of the older audit that the newer one checked and did not find.
    pub resolved: Vec<Problem>,
    /// Problems in both (as the newer audit saw them; `was` holds the old grade).
    pub still_open: Vec<Problem>,
    /// Problems of the older audit that the newer one could not check.
    pub unchecked: Vec<Problem>,
    /// Counts.
    pub summary: CompareSummary,
}

impl Comparison {
    /// Exit code of `audit --compare`: 0 when nothing is new or worse (problems resolved or
    /// still open only), 1 when a problem is new or got worse.
    pub fn exit_code(&self) -> u8 {
        if self.summary.new > 0 || self.summary.worse > 0 {
            exit::WARNINGS
        } else {
            exit::OK
        }
    }
}

fn is_problem(f: &Finding) -> bool {
    matches!(f.grade, Grade::Warn | Grade::Fail)
}

/// Every problem of `r`, keyed by (node, check), in report order within a key. A finding the
/// report accepted (`--accept`) is no problem: it is neither new nor still open.
fn problems_of(r: &AuditReport) -> BTreeMap<(String, String), Vec<Finding>> {
    let mut out: BTreeMap<(String, String), Vec<Finding>> = BTreeMap::new();
    let mut add = |node: &str, f: &Finding| {
        if r.is_accepted(node, &f.check) {
            return;
        }
        out.entry((node.to_string(), f.check.clone()))
            .or_default()
            .push(f.clone());
    };
    for row in &r.nodes {
        if row.status != NodeStatus::Ok {
            let detail = match &row.error {
                Some(e) => format!("{}: {e}", row.status.as_str()),
                None => row.status.as_str().to_string(),
            };
            add(
                &row.node,
                &Finding::new(NODE_REACHABLE, Grade::Fail, detail),
            );
        }
        for f in row.findings.iter().filter(|f| is_problem(f)) {
            add(&row.node, f);
        }
    }
    for f in r.cluster.iter().filter(|f| is_problem(f)) {
        add("cluster", f);
    }
    out
}

/// Whether `new` checked `check` on `node`: the node answered and the check's probe ran.
/// Cluster-level checks and `node.reachable` are checked whenever the node was targeted.
fn checked(new: &AuditReport, node: &str, check: &str) -> bool {
    if node == "cluster" {
        return true;
    }
    let Some(row) = new.nodes.iter().find(|n| n.node == node) else {
        return false;
    };
    if check == NODE_REACHABLE {
        return true;
    }
    let probe = check.split('.').next().unwrap_or(check);
    row.status == NodeStatus::Ok && new.checks.iter().any(|c| c == probe)
}

/// Pair the old and new findings of one (node, check): identical details first, then in order.
/// Returns (pairs, old leftovers, new leftovers).
fn pair(
    old: Vec<Finding>,
    new: Vec<Finding>,
) -> (Vec<(Finding, Finding)>, Vec<Finding>, Vec<Finding>) {
    let mut old: Vec<Option<Finding>> = old.into_iter().map(Some).collect();
    let mut new: Vec<Option<Finding>> = new.into_iter().map(Some).collect();
    let mut pairs = Vec::new();
    for n in new.iter_mut() {
        let detail = n.as_ref().map(|f| f.detail.clone());
        if let Some(o) = old
            .iter_mut()
            .find(|o| o.as_ref().map(|f| &f.detail) == detail.as_ref())
        {
            pairs.push((o.take().expect("found"), n.take().expect("present")));
        }
    }
    let mut old: Vec<Finding> = old.into_iter().flatten().collect();
    let mut new: Vec<Finding> = new.into_iter().flatten().collect();
    let k = old.len().min(new.len());
    pairs.extend(old.drain(..k).zip(new.drain(..k)));
    (pairs, old, new)
}

/// Compare an older audit with a newer one.
pub fn compare(old: &AuditReport, new: &AuditReport) -> Comparison {
    let mut old_p = problems_of(old);
    let new_p = problems_of(new);
    let mut c = Comparison {
        version: COMPARE_SCHEMA_VERSION,
        old_generated_at: old.generated_at.clone(),
        generated_at: new.generated_at.clone(),
        new: Vec::new(),
        resolved: Vec::new(),
        still_open: Vec::new(),
        unchecked: Vec::new(),
        summary: CompareSummary::default(),
    };
    let problem = |node: &str, finding: Finding, was: Option<Grade>| Problem {
        node: node.to_string(),
        finding,
        was,
    };
    for ((node, check), findings) in new_p {
        let before = old_p.remove(&(node.clone(), check)).unwrap_or_default();
        let (pairs, gone, added) = pair(before, findings);
        for (o, n) in pairs {
            c.still_open.push(problem(&node, n, Some(o.grade)));
        }
        c.new
            .extend(added.into_iter().map(|f| problem(&node, f, None)));
        c.resolved
            .extend(gone.into_iter().map(|f| problem(&node, f, None)));
    }
    for ((node, check), findings) in old_p {
        let list = if checked(new, &node, &check) {
            &mut c.resolved
        } else {
            &mut c.unchecked
        };
        list.extend(findings.into_iter().map(|f| problem(&node, f, None)));
    }
    let order =
        |r: &AuditReport| -> Vec<String> { r.nodes.iter().map(|n| n.node.clone()).collect() };
    let (new_order, old_order) = (order(new), order(old));
    let rank = |node: &str| {
        new_order
            .iter()
            .chain(&old_order)
            .position(|n| n == node)
            .unwrap_or(usize::MAX)
    };
    for list in [
        &mut c.new,
        &mut c.resolved,
        &mut c.still_open,
        &mut c.unchecked,
    ] {
        // Worst first, then by check, then nodes in inventory order (cluster last).
        list.sort_by(|a, b| {
            b.finding
                .grade
                .cmp(&a.finding.grade)
                .then_with(|| a.finding.check.cmp(&b.finding.check))
                .then_with(|| rank(&a.node).cmp(&rank(&b.node)))
        });
    }
    c.summary = CompareSummary {
        new: c.new.len(),
        worse: c.still_open.iter().filter(|p| p.is_worse()).count(),
        resolved: c.resolved.len(),
        still_open: c.still_open.len(),
        unchecked: c.unchecked.len(),
    };
    c
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::audit::{NodeAudit, Summary, AUDIT_SCHEMA_VERSION};

    fn f(check: &str, grade: Grade, detail: &str) -> Finding {
        Finding::new(check, grade, detail)
    }

    fn node(name: &str, findings: Vec<Finding>) -> NodeAudit {
        NodeAudit::reached(name, findings)
    }

    fn report(at: &str, nodes: Vec<NodeAudit>, cluster: Vec<Finding>) -> AuditReport {
        AuditReport {
            version: AUDIT_SCHEMA_VERSION,
            generated_at: at.into(),
            inventory: "inv.toml".into(),
            checks: ["clock", "rrd", "offload", "updates"]
                .map(String::from)
                .to_vec(),
            nodes,
            cluster,
            findings: Vec::new(),
            summary: Summary::default(),
            accepted: Vec::new(),
            expired_acceptances: Vec::new(),
        }
    }

    /// The pair of reports as JSON, as `--compare` reads the old one from a file.
    fn via_json(r: AuditReport) -> AuditReport {
        serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap()
    }

    fn keys(list: &[Problem]) -> Vec<String> {
        list.iter()
            .map(|p| format!("{} {} {:?}", p.node, p.finding.check, p.finding.grade))
            .collect()
    }

    #[test]
    fn new_resolved_and_still_open_are_told_apart() {
        let old = via_json(report(
            "2026-11-29T03:00:00Z",
            vec![
                node(
                    "pve1",
                    vec![
                        f("clock.offset", Grade::Fail, "+90.009 s"),
                        f("rrd.zero_byte", Grade::Pass, "no 0-byte RRD files"),
                    ],
                ),
                node(
                    "pve2",
                    vec![f("updates.pending", Grade::Warn, "136 pending")],
                ),
            ],
            vec![f("cluster.clock_spread", Grade::Fail, "spread 90 s")],
        ));
        let new = via_json(report(
            "2026-11-30T03:00:00Z",
            vec![
                node(
                    "pve1",
                    vec![
                        f("clock.offset", Grade::Pass, "+0.004 s"),
                        f("rrd.zero_byte", Grade::Fail, "2 0-byte RRD file(s)"),
                    ],
                ),
                node(
                    "pve2",
                    vec![f("updates.pending", Grade::Warn, "137 pending")],
                ),
            ],
            vec![f("cluster.clock_spread", Grade::Pass, "spread 0.1 s")],
        ));
        let c = compare(&old, &new);
        assert_eq!(keys(&c.new), ["pve1 rrd.zero_byte Fail"]);
        assert_eq!(
            keys(&c.resolved),
            [
                "pve1 clock.offset Fail",
                "cluster cluster.clock_spread Fail"
            ]
        );
        assert_eq!(keys(&c.still_open), ["pve2 updates.pending Warn"]);
        assert_eq!(
            c.still_open[0].finding.detail, "137 pending",
            "the newer detail"
        );
        assert!(c.unchecked.is_empty());
        assert_eq!(c.exit_code(), exit::WARNINGS, "something new");
        assert_eq!(c.old_generated_at, "2026-11-29T03:00:00Z");
    }

    #[test]
    fn nothing_new_exits_zero_and_a_worse_grade_does_not() {
        let old = report(
            "a",
            vec![node("pve1", vec![f("rrd.disk", Grade::Warn, "85% used")])],
            vec![],
        );
        let same = report(
            "b",
            vec![node("pve1", vec![f("rrd.disk", Grade::Warn, "86% used")])],
            vec![],
        );
        let c = compare(&old, &same);
        assert_eq!(c.summary.still_open, 1);
        assert_eq!(c.exit_code(), exit::OK);
        let worse = report(
            "c",
            vec![node("pve1", vec![f("rrd.disk", Grade::Fail, "97% used")])],
            vec![],
        );
        let c = compare(&old, &worse);
        assert!(c.still_open[0].is_worse());
        assert_eq!(c.still_open[0].was, Some(Grade::Warn));
        assert_eq!(c.summary.worse, 1);
        assert_eq!(c.exit_code(), exit::WARNINGS);
        // Better again: resolved-or-improved is not news worth a non-zero exit.
        assert_eq!(compare(&worse, &old).exit_code(), exit::OK);
        assert_eq!(
            compare(&old, &report("d", vec![node("pve1", vec![])], vec![])).exit_code(),
            exit::OK
        );
    }

    #[test]
    fn a_node_not_audited_leaves_its_old_problems_unchecked_and_is_new_itself() {
        let old = report(
            "a",
            vec![
                node(
                    "pve1",
                    vec![f("offload.hang", Grade::Fail, "eno1: 10 hangs")],
                ),
                node("pve2", vec![]),
            ],
            vec![],
        );
        let mut down = node("pve1", vec![]);
        down.status = NodeStatus::Unreachable;
        down.error = Some("connection refused".into());
        let new = report("b", vec![down, node("pve2", vec![])], vec![]);
        let c = compare(&old, &new);
        assert_eq!(keys(&c.new), ["pve1 node.reachable Fail"]);
        assert_eq!(c.new[0].finding.detail, "unreachable: connection refused");
        assert_eq!(keys(&c.unchecked), ["pve1 offload.hang Fail"]);
        assert!(c.resolved.is_empty(), "not audited is not resolved");
        // Back again, without the hang: both resolved.
        let c = compare(&new, &old);
        assert_eq!(keys(&c.resolved), ["pve1 node.reachable Fail"]);
        assert_eq!(keys(&c.new), ["pve1 offload.hang Fail"]);
    }

    #[test]
    fn a_probe_left_out_does_not_resolve_its_problems() {
        let old = report(
            "a",
            vec![node(
                "pve1",
                vec![f("updates.pending", Grade::Warn, "3 pending")],
            )],
            vec![],
        );
        let mut new = report("b", vec![node("pve1", vec![])], vec![]);
        new.checks = vec!["clock".into()];
        let c = compare(&old, &new);
        assert_eq!(keys(&c.unchecked), ["pve1 updates.pending Warn"]);
        assert!(c.resolved.is_empty());
    }

    #[test]
    fn repeated_checks_on_one_node_match_by_detail_first() {
        let old = report(
            "a",
            vec![node(
                "pve1",
                vec![
                    f("offload.hang", Grade::Fail, "eno1: 10 hangs"),
                    f("offload.hang", Grade::Fail, "eno2: 3 hangs"),
                ],
            )],
            vec![],
        );
        let new = report(
            "b",
            vec![node(
                "pve1",
                vec![f("offload.hang", Grade::Fail, "eno2: 3 hangs")],
            )],
            vec![],
        );
        let c = compare(&old, &new);
        assert_eq!(c.still_open[0].finding.detail, "eno2: 3 hangs");
        assert_eq!(c.resolved.len(), 1);
        assert_eq!(c.resolved[0].finding.detail, "eno1: 10 hangs");
        assert!(c.new.is_empty());
    }

    #[test]
    fn skip_and_pass_are_not_problems() {
        let old = report(
            "a",
            vec![node("pve1", vec![f("ceph.health", Grade::Skip, "no Ceph")])],
            vec![],
        );
        let c = compare(&old, &old);
        assert_eq!(c.summary, CompareSummary::default());
        assert_eq!(c.exit_code(), exit::OK);
    }
}
