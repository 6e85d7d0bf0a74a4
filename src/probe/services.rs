//! `services`: the Proxmox VE daemons and the time daemon are active.

use serde::{Deserialize, Serialize};

use super::{marker, missing, Finding, Grade, ParseError, Thresholds};

/// Probe name.
pub const NAME: &str = "services";

/// The units checked.
pub const UNITS: [&str; 8] = [
    "corosync",
    "pve-cluster",
    "pveproxy",
    "pvedaemon",
    "pvestatd",
    "pve-ha-lrm",
    "rrdcached",
    "chrony",
];

/// The snippet.
pub const SNIPPET: &str = r#"if ! command -v systemctl >/dev/null 2>&1; then echo "@@missing systemctl"; fi
if ! command -v pveversion >/dev/null 2>&1; then echo "@@missing pveversion"; fi
if [ -e /etc/pve/corosync.conf ] || [ -e /etc/corosync/corosync.conf ]; then echo "@@clustered yes"; else echo "@@clustered no"; fi
for u in corosync pve-cluster pveproxy pvedaemon pvestatd pve-ha-lrm rrdcached chrony systemd-timesyncd; do
  echo "$u $(systemctl is-active "$u" 2>/dev/null)"
done"#;

/// Unit -> state (`active`, `inactive`, `failed`, `unknown`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServicesFacts {
    /// States in check order.
    pub units: Vec<(String, String)>,
    /// Not a Proxmox VE node.
    pub not_proxmox: bool,
    /// No systemctl.
    pub no_systemd: bool,
    /// Part of a cluster: a corosync.conf exists (`/etc/pve/corosync.conf`, which `pvecm`
    /// checks, or the local copy `/etc/corosync/corosync.conf`, there even while pmxcfs is
    /// down). `None` when the snippet did not say.
    pub clustered: Option<bool>,
}

/// Parse the snippet's output.
pub fn parse(text: &str) -> Result<ServicesFacts, ParseError> {
    let miss = missing(text);
    let units = text
        .lines()
        .filter(|l| !l.starts_with("@@"))
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let u = w.next()?;
            Some((u.to_string(), w.next().unwrap_or("unknown").to_string()))
        })
        .collect();
    Ok(ServicesFacts {
        units,
        not_proxmox: miss.contains(&"pveversion"),
        no_systemd: miss.contains(&"systemctl"),
        clustered: match marker(text, "clustered") {
            Some("yes") => Some(true),
            Some("no") => Some(false),
            _ => None,
        },
    })
}

/// Grade: `services.<unit>` for each unit.
pub fn grade(f: &ServicesFacts, _t: &Thresholds) -> Vec<Finding> {
    if f.no_systemd {
        return vec![Finding::new(
            "services.systemd",
            Grade::Skip,
            "systemctl not available",
        )];
    }
    let state = |u: &str| {
        f.units
            .iter()
            .find(|(n, _)| n == u)
            .map_or("unknown", |(_, s)| s.as_str())
    };
    let mut out = Vec::new();
    for u in UNITS {
        let check = format!("services.{u}");
        let s = state(u);
        let finding = if u == "chrony" && s != "active" && state("systemd-timesyncd") == "active" {
            Finding::new(&check, Grade::Pass, "systemd-timesyncd keeps time instead")
        } else if s == "active" {
            Finding::new(&check, Grade::Pass, "active")
        } else if u == "corosync" && f.clustered == Some(false) {
            // A standalone node has no corosync.conf, so corosync does not start (its unit
            // has ConditionPathExists=/etc/corosync/corosync.conf).
            Finding::new(
                &check,
                Grade::Skip,
                format!("standalone node (no corosync.conf): corosync is {s}, as it should be"),
            )
        } else if f.not_proxmox && u != "chrony" {
            Finding::new(&check, Grade::Skip, "not a Proxmox VE node")
        } else {
            Finding::new(&check, Grade::Fail, format!("{u} is {s}"))
                .fix(&format!("systemctl restart {u}; journalctl -u {u} -b"))
        };
        out.push(finding);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inactive_units_fail_and_timesyncd_replaces_chrony() {
        let text = "corosync active\npve-cluster active\npveproxy active\npvedaemon active\npvestatd failed\npve-ha-lrm active\nrrdcached inactive\nchrony inactive\nsystemd-timesyncd active\n";
        let g = grade(&parse(text).unwrap(), &Thresholds::default());
        let by = |u: &str| {
            g.iter()
                .find(|x| x.check == format!("services.{u}"))
                .unwrap()
                .grade
        };
        assert_eq!(by("pvestatd"), Grade::Fail);
        assert_eq!(by("rrdcached"), Grade::Fail);
        assert_eq!(by("chrony"), Grade::Pass);
        assert_eq!(by("corosync"), Grade::Pass);
        let np = parse("@@missing pveversion\ncorosync inactive\nchrony active\n").unwrap();
        assert_eq!(grade(&np, &Thresholds::default())[0].grade, Grade::Skip);
    }

    #[test]
    fn a_standalone_node_is_not_failed_for_corosync() {
        let units = "corosync inactive\npve-cluster active\npveproxy active\npvedaemon active\npvestatd active\npve-ha-lrm active\nrrdcached active\nchrony active\n";
        let standalone = parse(&format!("@@clustered no\n{units}")).unwrap();
        assert_eq!(standalone.clustered, Some(false));
        let g = grade(&standalone, &Thresholds::default());
        assert_eq!(g[0].check, "services.corosync");
        assert_eq!(g[0].grade, Grade::Skip, "{}", g[0].detail);
        assert!(g[0].detail.starts_with("standalone node"));
        assert!(g[1..].iter().all(|f| f.grade == Grade::Pass));
        // In a cluster (or when the snippet did not say), an inactive corosync fails.
        for head in ["@@clustered yes\n", ""] {
            let g = grade(
                &parse(&format!("{head}{units}")).unwrap(),
                &Thresholds::default(),
            );
            assert_eq!(g[0].grade, Grade::Fail, "{head:?}");
        }
        let failed = units.replace("corosync inactive", "corosync failed");
        let g = grade(
            &parse(&format!("@@clustered no\n{failed}")).unwrap(),
            &Thresholds::default(),
        );
        assert_eq!(
            g[0].grade,
            Grade::Skip,
            "standalone: any state of corosync is fine"
        );
    }
}
