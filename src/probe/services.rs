//! `services`: the Proxmox VE daemons and the time daemon are active.

use serde::{Deserialize, Serialize};

use super::{missing, Finding, Grade, ParseError, Thresholds};

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
}
