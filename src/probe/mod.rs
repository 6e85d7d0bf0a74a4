//! Probes: the remote shell snippet each check runs and the pure parser of its output.
//!
//! A probe never prints and never touches the network: it offers a POSIX `sh` snippet, a parser
//! `&str -> Result<Facts, ParseError>` and a grader `Facts -> Vec<Finding>`. The audit concatenates
//! the snippets into one script per node; the transport runs it; the report renders findings.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How a check came out, worst last so `max()` gives the overall grade.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Finding {
    /// The check, e.g. `clock.offset`, `rrd.zero_byte`, `gpu.iommu`.
    #[schemars(pattern(r"^[a-z_]+\.[a-z0-9_.-]+$"))]
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

pub mod ceph;
pub mod clock;
pub mod cluster;
pub mod gpu;
pub mod offload;
pub mod qemu;
pub mod rrd;
mod sections;
pub mod services;
pub mod tls;
pub mod updates;

pub use sections::{combined_script, split_sections, Section};

/// Grading thresholds, with defaults; loadable from TOML (`--thresholds FILE`).
///
/// Every value is checked as it is read, so a bad one is reported with the toml crate's span
/// (file:line:column): seconds must be finite and not negative (TOML allows `nan` and `inf`,
/// and a `nan` threshold would make every comparison false, so everything would PASS),
/// percentages at most 100.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Thresholds {
    /// Clock offset (or cluster spread) above which a node is WARN, seconds.
    #[serde(deserialize_with = "seconds")]
    pub clock_warn_s: f64,
    /// Above which it is FAIL (HA's `detected time drift!` starts at 2 s), seconds.
    #[serde(deserialize_with = "seconds")]
    pub clock_fail_s: f64,
    /// Above which API tickets from other nodes are rejected (-300 s .. +7200 s), seconds.
    #[serde(deserialize_with = "seconds")]
    pub clock_ticket_s: f64,
    /// Used space of the RRD file system above which it is WARN, percent.
    #[serde(deserialize_with = "percent")]
    pub disk_warn_pct: u8,
    /// Above which it is FAIL, percent.
    #[serde(deserialize_with = "percent")]
    pub disk_fail_pct: u8,
    /// A TLS certificate expiring in fewer days than this is WARN.
    pub cert_warn_days: u32,
    /// In fewer days than this, FAIL (an expired one always FAILs).
    pub cert_fail_days: u32,
}

fn seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let v = f64::deserialize(d)?;
    if !v.is_finite() {
        return Err(serde::de::Error::custom(format!(
            "{v} is not a number of seconds (must be finite)"
        )));
    }
    if v < 0.0 {
        return Err(serde::de::Error::custom(format!(
            "{v} is negative (a threshold is a distance in seconds)"
        )));
    }
    Ok(v)
}

fn percent<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    let v = u8::deserialize(d)?;
    if v > 100 {
        return Err(serde::de::Error::custom(format!("{v} is above 100 %")));
    }
    Ok(v)
}

/// Two thresholds the wrong way round (a WARN level above its FAIL level): a node would FAIL
/// before it ever WARNs.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{lower} ({lower_value}) is above {higher} ({higher_value}): a node would be graded by the higher level first; expected {lower} <= {higher}")]
pub struct ThresholdOrder {
    /// The key that must be the smaller.
    pub lower: &'static str,
    /// Its value.
    pub lower_value: f64,
    /// The key that must be the larger.
    pub higher: &'static str,
    /// Its value.
    pub higher_value: f64,
}

impl Thresholds {
    /// Each WARN level at most its FAIL level (clock, disk; certificates count days down, so
    /// there the FAIL level is the smaller), and the clock's FAIL level at most
    /// the ticket limit.
    pub fn check_order(&self) -> Result<(), ThresholdOrder> {
        let pairs = [
            (
                "clock_warn_s",
                self.clock_warn_s,
                "clock_fail_s",
                self.clock_fail_s,
            ),
            (
                "clock_fail_s",
                self.clock_fail_s,
                "clock_ticket_s",
                self.clock_ticket_s,
            ),
            (
                "disk_warn_pct",
                f64::from(self.disk_warn_pct),
                "disk_fail_pct",
                f64::from(self.disk_fail_pct),
            ),
            // Days left count down: the FAIL level is the smaller one.
            (
                "cert_fail_days",
                f64::from(self.cert_fail_days),
                "cert_warn_days",
                f64::from(self.cert_warn_days),
            ),
        ];
        for (lower, lower_value, higher, higher_value) in pairs {
            if lower_value > higher_value {
                return Err(ThresholdOrder {
                    lower,
                    lower_value,
                    higher,
                    higher_value,
                });
            }
        }
        Ok(())
    }
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            clock_warn_s: 0.5,
            clock_fail_s: 2.0,
            clock_ticket_s: 300.0,
            disk_warn_pct: 90,
            disk_fail_pct: 98,
            cert_warn_days: 30,
            cert_fail_days: 0,
        }
    }
}

/// The remediation for RRD problems.
pub const FIX_RRD: &str = "pvefleet run playbooks/fix-rrd.toml";
/// The remediation for clock problems.
pub const SYNC_CLOCK: &str = "pvefleet run playbooks/sync-clock.toml";
/// The remediation for NIC offload problems.
pub const DISABLE_OFFLOAD: &str = "pvefleet run playbooks/disable-offload.toml";
/// The remediation for passthrough set-up problems.
pub const IGPU_PASSTHROUGH: &str = "pvefleet run playbooks/igpu-passthrough.toml";

impl Finding {
    /// A finding without remediation.
    pub fn new(check: &str, grade: Grade, detail: impl Into<String>) -> Finding {
        Finding {
            check: check.to_string(),
            grade,
            detail: detail.into(),
            remediation: None,
        }
    }

    /// Attach a remediation.
    pub fn fix(mut self, remediation: &str) -> Finding {
        self.remediation = Some(remediation.to_string());
        self
    }
}

/// What a probe produced for one node: its facts (as JSON, for reports and playbook templates)
/// and its graded findings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeReport {
    /// Typed facts, serialised.
    pub facts: serde_json::Value,
    /// Findings.
    pub findings: Vec<Finding>,
}

/// One probe: name, what it checks, the snippet, and the evaluation of its section.
pub struct ProbeDef {
    /// Name (`clock`, `rrd` ...).
    pub name: &'static str,
    /// One line on what it checks.
    pub description: &'static str,
    /// The POSIX sh snippet run on the node.
    pub snippet: &'static str,
    /// Parse and grade the snippet's output.
    pub evaluate: fn(&str, &Thresholds) -> Result<ProbeReport, ParseError>,
}

fn report<F: Serialize>(facts: &F, findings: Vec<Finding>) -> ProbeReport {
    ProbeReport {
        facts: serde_json::to_value(facts).expect("facts serialise"),
        findings,
    }
}

/// Every probe, in matrix order.
pub fn all() -> &'static [ProbeDef] {
    static ALL: [ProbeDef; 10] = [
        ProbeDef {
            name: clock::NAME,
            description: "clock offset from the controller (RTT-corrected), NTP daemon and sync state",
            snippet: clock::SNIPPET,
            evaluate: |s, t| clock::parse(s).map(|f| report(&f, clock::grade(&f, t))),
        },
        ProbeDef {
            name: rrd::NAME,
            description: "RRD errors in the journal, 0-byte and future-dated RRD files, free space",
            snippet: rrd::SNIPPET,
            evaluate: |s, t| rrd::parse(s).map(|f| report(&f, rrd::grade(&f, t))),
        },
        ProbeDef {
            name: offload::NAME,
            description: "physical NICs' offload features, e1000e hangs, persisted ethtool settings",
            snippet: offload::SNIPPET,
            evaluate: |s, t| offload::parse(s).map(|f| report(&f, offload::grade(&f, t))),
        },
        ProbeDef {
            name: gpu::NAME,
            description: "GPUs, drivers, IOMMU, boot loader and kernel command line, vfio and GVT-g set-up",
            snippet: gpu::SNIPPET,
            evaluate: |s, t| gpu::parse(s).map(|f| report(&f, gpu::grade(&f, t))),
        },
        ProbeDef {
            name: cluster::NAME,
            description: "quorum, votes, members, pve-manager version, HA state, running guests",
            snippet: cluster::SNIPPET,
            evaluate: |s, t| cluster::parse(s).map(|f| report(&f, cluster::grade(&f, t))),
        },
        ProbeDef {
            name: services::NAME,
            description: "corosync, pve-cluster, pveproxy, pvedaemon, pvestatd, pve-ha-lrm, rrdcached, chrony",
            snippet: services::SNIPPET,
            evaluate: |s, t| services::parse(s).map(|f| report(&f, services::grade(&f, t))),
        },
        ProbeDef {
            name: updates::NAME,
            description: "pending upgrades, a new kernel waiting for a reboot, repositories vs subscription",
            snippet: updates::SNIPPET,
            evaluate: |s, t| updates::parse(s).map(|f| report(&f, updates::grade(&f, t))),
        },
        ProbeDef {
            name: ceph::NAME,
            description: "Ceph health, OSDs, placement groups and maintenance flags (when the cluster has Ceph)",
            snippet: ceph::SNIPPET,
            evaluate: |s, t| ceph::parse(s).map(|f| report(&f, ceph::grade(&f, t))),
        },
        ProbeDef {
            name: tls::NAME,
            description: "days until the node's TLS certificates (pve-ssl.pem, pveproxy-ssl.pem) expire",
            snippet: tls::SNIPPET,
            evaluate: |s, t| tls::parse(s).map(|f| report(&f, tls::grade(&f, t))),
        },
        ProbeDef {
            name: qemu::NAME,
            description: "running VMs on an older QEMU than the installed pve-qemu-kvm (after an upgrade)",
            snippet: qemu::SNIPPET,
            evaluate: |s, t| qemu::parse(s).map(|f| report(&f, qemu::grade(&f, t))),
        },
    ];
    &ALL
}

/// Look a probe up by name.
pub fn by_name(name: &str) -> Option<&'static ProbeDef> {
    all().iter().find(|p| p.name == name)
}

/// Lines of a snippet section after `@@sub NAME` up to the next line starting with `@@`.
pub fn sub<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let marker = format!("@@sub {name}\n");
    let start = if text.starts_with(&marker) {
        marker.len()
    } else {
        text.find(&format!("\n{marker}"))? + marker.len() + 1
    };
    let rest = &text[start..];
    let mut end = 0;
    for line in rest.split_inclusive('\n') {
        if line.starts_with("@@") {
            break;
        }
        end += line.len();
    }
    Some(&rest[..end])
}

/// The value of a one-line `@@key value` marker.
pub fn marker<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let prefix = format!("@@{key}");
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(&prefix)?;
        if rest.is_empty() {
            Some("")
        } else {
            rest.strip_prefix(' ')
        }
    })
}

/// Tools the snippet reported missing (`@@missing NAME`).
pub fn missing(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|l| l.strip_prefix("@@missing "))
        .collect()
}

/// Read a captured output from `tests/fixtures/` (for the probes' unit tests).
#[cfg(test)]
pub(crate) fn fixture(path: &str) -> String {
    let p = format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

#[cfg(test)]
mod thresholds_tests {
    use super::Thresholds;

    fn load(text: &str) -> Result<Thresholds, crate::inventory::SourceError> {
        toml::from_str(text).map_err(|e: toml::de::Error| {
            crate::inventory::SourceError::from_toml(std::path::Path::new("t.toml"), text, &e)
        })
    }

    #[test]
    fn a_warn_level_above_its_fail_level_is_refused() {
        let t = load("clock_warn_s = 10\nclock_fail_s = 5\n").unwrap();
        let e = t.check_order().unwrap_err();
        assert_eq!(e.lower, "clock_warn_s");
        assert_eq!(
            e.to_string(),
            "clock_warn_s (10) is above clock_fail_s (5): a node would be graded by the higher level first; expected clock_warn_s <= clock_fail_s"
        );
        assert_eq!(
            load("disk_warn_pct = 99\n")
                .unwrap()
                .check_order()
                .unwrap_err()
                .higher,
            "disk_fail_pct"
        );
        assert!(Thresholds::default().check_order().is_ok());
    }

    #[test]
    fn nan_inf_and_negative_thresholds_are_errors_with_their_position() {
        for (text, col, what) in [
            ("clock_warn_s = nan\n", 16, "must be finite"),
            (
                "clock_warn_s = 1.0\nclock_fail_s = +inf\n",
                16,
                "must be finite",
            ),
            ("clock_ticket_s = -5.0\n", 18, "negative"),
            ("disk_warn_pct = 120\n", 17, "above 100"),
        ] {
            let e = load(text).unwrap_err().to_string();
            let line = text.lines().count();
            assert!(
                e.starts_with(&format!("t.toml:{line}:{col}")),
                "{text:?}: {e}"
            );
            assert!(e.contains(what), "{text:?}: {e}");
        }
        let ok = load("clock_warn_s = 0.25\ndisk_fail_pct = 100\n").unwrap();
        assert_eq!((ok.clock_warn_s, ok.disk_fail_pct), (0.25, 100));
        assert_eq!(ok.clock_fail_s, Thresholds::default().clock_fail_s);
    }
}
