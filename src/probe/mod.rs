//! Probes: the remote shell snippet each check runs and the pure parser of its output.
//!
//! A probe never prints and never touches the network: it offers a POSIX `sh` snippet, a parser
//! `&str -> Result<Facts, ParseError>` and a grader `Facts -> Vec<Finding>`. The audit concatenates
//! the snippets into one script per node; the transport runs it; the report renders findings.

use serde::{Deserialize, Serialize};

/// How a check came out, worst last so `max()` gives the overall grade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Grade {
    /// Not applicable or not measurable here (with the reason in the detail).
    Skip,
    /// Fine.
    Pass,
    /// Worth a look.
    Warn,
    /// Broken.
    Fail,
}

/// One graded observation about one node (or the cluster).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// The check, e.g. `clock.offset`, `rrd.zero_byte`, `gpu.iommu`.
    pub check: String,
    /// The grade.
    pub grade: Grade,
    /// A short, human detail ("+90.02 s ahead of the controller (±0.4 ms)").
    pub detail: String,
    /// What to do about it, e.g. `pvefleet run playbooks/fix-rrd.toml`.
    pub remediation: Option<String>,
}

/// A probe's output could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{probe}: {message}")]
pub struct ParseError {
    /// The probe name.
    pub probe: &'static str,
    /// What was wrong, with the offending line where there is one.
    pub message: String,
}
