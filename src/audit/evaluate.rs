//! Turning one node's combined probe output into matrix cells, findings and facts.

use std::collections::BTreeMap;

use super::{ClockMeasurement, MatrixCell, NodeAudit};
use crate::probe::{self, clock, split_sections, Finding, Grade};

pub use crate::probe::Thresholds;

/// Every probe name, in matrix order.
pub fn probe_names() -> Vec<String> {
    probe::all().iter().map(|p| p.name.to_string()).collect()
}

/// The one script for `names`.
pub fn combined_script(names: &[String]) -> String {
    probe::combined_script(names)
}

/// What came out of one node's script.
pub struct Evaluated {
    /// Probe -> cell.
    pub cells: BTreeMap<String, MatrixCell>,
    /// All findings, in probe order.
    pub findings: Vec<Finding>,
    /// Probe -> facts.
    pub facts: BTreeMap<String, serde_json::Value>,
}

/// The cell of a probe: its worst grade (SKIP only when nothing else), with that finding's detail.
pub fn cell_of(findings: &[Finding]) -> MatrixCell {
    let graded: Vec<&Finding> = findings.iter().filter(|f| f.grade != Grade::Skip).collect();
    let pool = if graded.is_empty() {
        findings.iter().collect()
    } else {
        graded
    };
    // The first of the worst findings (max_by_key would give the last).
    let worst = pool
        .iter()
        .copied()
        .fold(None::<&Finding>, |acc, f| match acc {
            Some(a) if a.grade >= f.grade => Some(a),
            _ => Some(f),
        });
    match worst {
        Some(worst) if worst.grade > Grade::Pass => MatrixCell {
            grade: worst.grade,
            detail: worst.detail.clone(),
        },
        Some(first) if first.grade == Grade::Skip => MatrixCell {
            grade: Grade::Skip,
            detail: first.detail.clone(),
        },
        Some(_) => MatrixCell {
            grade: Grade::Pass,
            detail: pool.first().map(|f| f.detail.clone()).unwrap_or_default(),
        },
        None => MatrixCell {
            grade: Grade::Skip,
            detail: "no checks".into(),
        },
    }
}

/// Parse and grade every requested probe's section of `output`.
pub fn evaluate_all(
    names: &[String],
    output: &str,
    clock_measurement: Option<ClockMeasurement>,
    t: &Thresholds,
) -> Evaluated {
    let sections = split_sections(output);
    let mut ev = Evaluated {
        cells: BTreeMap::new(),
        findings: Vec::new(),
        facts: BTreeMap::new(),
    };
    for name in names {
        let Some(def) = probe::by_name(name) else {
            continue;
        };
        let mut findings = Vec::new();
        if name == clock::NAME {
            if let Some(m) = clock_measurement {
                findings.push(clock::grade_offset(m.offset_s, m.error_s, t));
            }
        }
        match sections.get(name.as_str()) {
            Some(section) if section.rc.is_some() => match (def.evaluate)(&section.text, t) {
                Ok(r) => {
                    findings.extend(r.findings);
                    ev.facts.insert(name.clone(), r.facts);
                }
                Err(e) => findings.push(Finding::new(
                    &format!("{name}.output"),
                    Grade::Warn,
                    format!("could not understand the output: {}", e.message),
                )),
            },
            _ => findings.push(Finding::new(
                &format!("{name}.output"),
                Grade::Warn,
                "the probe's output was cut short",
            )),
        }
        ev.cells.insert(name.clone(), cell_of(&findings));
        ev.findings.extend(findings);
    }
    ev
}

/// The node's view of quorum, from its `cluster` facts.
pub fn quorate_of(row: &NodeAudit) -> Option<bool> {
    row.facts
        .get("cluster")?
        .get("quorum")?
        .get("quorate")?
        .as_bool()
}

/// The node's pve-manager version, from its `cluster` facts.
pub fn manager_version_of(row: &NodeAudit) -> Option<String> {
    row.facts
        .get("cluster")?
        .get("manager_version")?
        .as_str()
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_take_the_worst_grade_and_skip_only_when_nothing_else() {
        let f = |g, d: &str| Finding::new("x.y", g, d);
        assert_eq!(
            cell_of(&[
                f(Grade::Pass, "a"),
                f(Grade::Warn, "b"),
                f(Grade::Skip, "c")
            ])
            .detail,
            "b"
        );
        assert_eq!(
            cell_of(&[f(Grade::Pass, "a"), f(Grade::Skip, "c")]).grade,
            Grade::Pass
        );
        assert_eq!(cell_of(&[f(Grade::Skip, "c")]).grade, Grade::Skip);
    }

    #[test]
    fn a_cut_short_section_is_a_warning_not_a_crash() {
        let names = vec!["services".to_string()];
        let ev = evaluate_all(
            &names,
            "@@pvefleet-probe-begin services\ncorosync active\n",
            None,
            &Thresholds::default(),
        );
        assert_eq!(ev.cells["services"].grade, Grade::Warn);
        assert!(ev.findings[0].detail.contains("cut short"));
    }
}
