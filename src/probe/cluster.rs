//! `cluster`: quorum and votes (`pvecm status`), version (`pveversion`), HA state
//! (`ha-manager status`), running guests (`qm list`, `pct list`) (DOMAIN.md §5).

use serde::{Deserialize, Serialize};

use super::{marker, missing, sub, Finding, Grade, ParseError, Thresholds};

/// Probe name.
pub const NAME: &str = "cluster";

/// The snippet.
pub const SNIPPET: &str = r#"if ! command -v pveversion >/dev/null 2>&1; then
  echo "@@missing pveversion"
else
  echo "@@hostname $(hostname)"
  echo "@@sub pveversion"
  pveversion 2>&1
  echo "@@sub pvecm"
  pvecm status 2>&1
  echo "@@pvecm_rc $?"
  echo "@@sub ha"
  ha-manager status 2>&1
  echo "@@sub qm"
  qm list 2>/dev/null
  echo "@@sub pct"
  pct list 2>/dev/null
  echo "@@sub hostpci"
  grep -l '^hostpci' /etc/pve/qemu-server/*.conf 2>/dev/null
  echo "@@sub resources"
  pvesh get /cluster/resources --output-format json 2>/dev/null; echo
fi"#;

/// One `Membership information` row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Corosync node id.
    pub nodeid: u32,
    /// Votes.
    pub votes: u32,
    /// Address or name (`Qdevice` for a QDevice row).
    pub name: String,
    /// The node that printed this.
    pub local: bool,
}

/// `pvecm status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quorum {
    /// `Quorate: Yes`.
    pub quorate: bool,
    /// `Expected votes`.
    pub expected_votes: u32,
    /// `Total votes`.
    pub total_votes: u32,
    /// `Quorum` (votes needed).
    pub quorum: u32,
    /// `Flags` (Quorate, Qdevice, ...).
    pub flags: Vec<String>,
    /// `Activity blocked` after the quorum number.
    pub activity_blocked: bool,
    /// Membership rows.
    pub members: Vec<Member>,
}

/// Parse `pvecm status`; `Ok(None)` outside a cluster.
pub fn parse_pvecm_status(text: &str) -> Result<Option<Quorum>, ParseError> {
    if text.contains("does not exist - is this node part of a cluster?") {
        return Ok(None);
    }
    let err = |m: &str| ParseError {
        probe: NAME,
        message: format!("pvecm status: {m}"),
    };
    let field = |key: &str| -> Option<&str> {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == key).then_some(v)
        })
    };
    let num = |key: &str| -> Result<u32, ParseError> {
        field(key)
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| err(&format!("no numeric `{key}`")))
    };
    let quorate = match field("Quorate").map(str::trim) {
        Some("Yes") => true,
        Some("No") => false,
        _ => return Err(err("no `Quorate: Yes|No` line")),
    };
    let mut members = Vec::new();
    let mut in_members = false;
    for l in text.lines() {
        if l.trim_start().starts_with("Nodeid") {
            in_members = true;
            continue;
        }
        if !in_members {
            continue;
        }
        let w: Vec<&str> = l.split_whitespace().collect();
        if w.len() < 3 || !w[0].starts_with("0x") {
            continue;
        }
        let nodeid = u32::from_str_radix(w[0].trim_start_matches("0x"), 16)
            .map_err(|_| err("bad node id"))?;
        let votes = w[1].parse().map_err(|_| err("bad vote count"))?;
        let local = l.trim_end().ends_with("(local)");
        // With a QDevice a flags column (A,V,NMW) sits between votes and name.
        let name_words: Vec<&str> = w[2..]
            .iter()
            .copied()
            .filter(|x| {
                *x != "(local)"
                    && !(x.contains(',') && x.chars().all(|c| c.is_ascii_uppercase() || c == ','))
            })
            .collect();
        members.push(Member {
            nodeid,
            votes,
            name: name_words.join(" "),
            local,
        });
    }
    let quorum_line = field("Quorum").unwrap_or("");
    Ok(Some(Quorum {
        quorate,
        expected_votes: num("Expected votes")?,
        total_votes: num("Total votes")?,
        quorum: num("Quorum")?,
        flags: field("Flags")
            .unwrap_or("")
            .split_whitespace()
            .map(str::to_string)
            .collect(),
        activity_blocked: quorum_line.contains("Activity blocked"),
        members,
    }))
}

/// `pveversion`: (pve-manager version, running kernel).
pub fn parse_pveversion(text: &str) -> Option<(String, String)> {
    let line = text.lines().find(|l| l.starts_with("pve-manager/"))?;
    let version = line
        .strip_prefix("pve-manager/")?
        .split('/')
        .next()?
        .to_string();
    let kernel = line
        .split("(running kernel: ")
        .nth(1)?
        .trim_end_matches(')')
        .trim()
        .to_string();
    Some((version, kernel))
}

/// `ha-manager status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaStatus {
    /// `quorum OK`.
    pub quorum_ok: bool,
    /// The CRM master.
    pub master: Option<String>,
    /// LRM per node: (node, state) e.g. ("pve2", "maintenance mode").
    pub lrm: Vec<(String, String)>,
    /// Services: (sid, node, state).
    pub services: Vec<(String, String, String)>,
}

/// Parse `ha-manager status`.
pub fn parse_ha_status(text: &str) -> HaStatus {
    let mut h = HaStatus::default();
    for l in text.lines() {
        let l = l.trim();
        if l == "quorum OK" {
            h.quorum_ok = true;
        } else if let Some(rest) = l.strip_prefix("master ") {
            h.master = rest.split_whitespace().next().map(str::to_string);
        } else if let Some(rest) = l.strip_prefix("lrm ") {
            let (node, st) = rest.split_once(" (").unwrap_or((rest, ""));
            let state = st
                .split(',')
                .next()
                .unwrap_or("")
                .trim_end_matches(')')
                .to_string();
            h.lrm.push((node.to_string(), state));
        } else if let Some(rest) = l.strip_prefix("service ") {
            let (sid, st) = rest.split_once(" (").unwrap_or((rest, ""));
            let mut parts = st.trim_end_matches(')').split(", ");
            let node = parts.next().unwrap_or("").to_string();
            let state = parts.next().unwrap_or("").to_string();
            h.services.push((sid.to_string(), node, state));
        }
    }
    h
}

/// A running guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Guest {
    /// `qemu` or `lxc`.
    pub kind: String,
    /// VMID.
    pub vmid: u32,
    /// Name.
    pub name: String,
    /// Has a `hostpci` passthrough device (cannot migrate).
    pub hostpci: bool,
}

/// What the probe found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterFacts {
    /// Not a Proxmox VE node (no pveversion).
    pub not_proxmox: bool,
    /// Node name.
    pub hostname: String,
    /// pve-manager version.
    pub manager_version: Option<String>,
    /// Running kernel.
    pub kernel: Option<String>,
    /// Quorum, `None` outside a cluster.
    pub quorum: Option<Quorum>,
    /// HA.
    pub ha: HaStatus,
    /// Running guests.
    pub running_guests: Vec<Guest>,
    /// The cluster's nodes and guests (`pvesh get /cluster/resources`), when it answered.
    #[serde(default)]
    pub resources: Option<crate::capacity::resources::Resources>,
}

/// Parse the snippet's output.
pub fn parse(text: &str) -> Result<ClusterFacts, ParseError> {
    if missing(text).contains(&"pveversion") {
        return Ok(ClusterFacts {
            not_proxmox: true,
            hostname: String::new(),
            manager_version: None,
            kernel: None,
            quorum: None,
            ha: HaStatus::default(),
            running_guests: Vec::new(),
            resources: None,
        });
    }
    let version = parse_pveversion(sub(text, "pveversion").unwrap_or(""));
    let hostpci: Vec<u32> = sub(text, "hostpci")
        .unwrap_or("")
        .lines()
        .filter_map(|l| l.rsplit('/').next()?.strip_suffix(".conf")?.parse().ok())
        .collect();
    let mut guests = Vec::new();
    for l in sub(text, "qm").unwrap_or("").lines().skip(1) {
        let w: Vec<&str> = l.split_whitespace().collect();
        if w.len() >= 3 && w[2] == "running" {
            if let Ok(vmid) = w[0].parse() {
                guests.push(Guest {
                    kind: "qemu".into(),
                    vmid,
                    name: w[1].to_string(),
                    hostpci: hostpci.contains(&vmid),
                });
            }
        }
    }
    for l in sub(text, "pct").unwrap_or("").lines().skip(1) {
        let w: Vec<&str> = l.split_whitespace().collect();
        if w.len() >= 2 && w[1] == "running" {
            if let Ok(vmid) = w[0].parse() {
                guests.push(Guest {
                    kind: "lxc".into(),
                    vmid,
                    name: w.last().unwrap_or(&"").to_string(),
                    hostpci: false,
                });
            }
        }
    }
    Ok(ClusterFacts {
        not_proxmox: false,
        hostname: marker(text, "hostname").unwrap_or("").to_string(),
        manager_version: version.as_ref().map(|v| v.0.clone()),
        kernel: version.map(|v| v.1),
        quorum: parse_pvecm_status(sub(text, "pvecm").unwrap_or(""))?,
        ha: parse_ha_status(sub(text, "ha").unwrap_or("")),
        running_guests: guests,
        resources: sub(text, "resources")
            .filter(|t| !t.trim().is_empty())
            .and_then(|t| crate::capacity::resources::parse(t).ok()),
    })
}

/// Grade: `cluster.quorum`, `cluster.ha`, `cluster.guests`.
pub fn grade(f: &ClusterFacts, _t: &Thresholds) -> Vec<Finding> {
    if f.not_proxmox {
        return vec![Finding::new(
            "cluster.quorum",
            Grade::Skip,
            "not a Proxmox VE node (no pveversion)",
        )];
    }
    let mut out = Vec::new();
    out.push(match &f.quorum {
        None => Finding::new(
            "cluster.quorum",
            Grade::Skip,
            "standalone node (no corosync.conf)",
        ),
        Some(q) if q.quorate => Finding::new(
            "cluster.quorum",
            Grade::Pass,
            format!(
                "quorate, {}/{} votes (quorum {})",
                q.total_votes, q.expected_votes, q.quorum
            ),
        ),
        Some(q) => Finding::new(
            "cluster.quorum",
            Grade::Fail,
            format!(
                "NOT quorate: {}/{} votes, {} needed; /etc/pve is read-only",
                q.total_votes, q.expected_votes, q.quorum
            ),
        )
        .fix("bring the missing nodes back; never reboot another node now"),
    });
    let me = &f.hostname;
    if let Some((_, state)) = f.ha.lrm.iter().find(|(n, _)| n == me) {
        if state.contains("maintenance") {
            out.push(
                Finding::new(
                    "cluster.ha",
                    Grade::Warn,
                    format!("{me} is in HA maintenance mode"),
                )
                .fix(&format!(
                    "ha-manager crm-command node-maintenance disable {me}"
                )),
            );
        }
    }
    let pinned: Vec<String> = f
        .running_guests
        .iter()
        .filter(|g| g.hostpci)
        .map(|g| format!("{} ({})", g.vmid, g.name))
        .collect();
    if !pinned.is_empty() {
        out.push(Finding::new(
            "cluster.guests",
            Grade::Pass,
            format!(
                "{} running guests; with PCI passthrough (cannot migrate): {}",
                f.running_guests.len(),
                pinned.join(", ")
            ),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::probe::fixture;

    #[test]
    fn pvecm_status_real_capture_with_qdevice() {
        let q = parse_pvecm_status(&fixture("pvecm-status/qdevice-2of4-nodes.txt"))
            .unwrap()
            .unwrap();
        assert!(q.quorate);
        assert_eq!((q.expected_votes, q.total_votes, q.quorum), (4, 3, 3));
        assert_eq!(q.flags, vec!["Quorate", "Qdevice"]);
        assert!(!q.activity_blocked);
        assert_eq!(q.members.len(), 3);
        assert_eq!(
            q.members[1],
            Member {
                nodeid: 2,
                votes: 1,
                name: "192.168.50.218".into(),
                local: true
            }
        );
        assert_eq!(q.members[2].name, "Qdevice");
    }

    #[test]
    fn pvecm_not_quorate_outside_and_truncated() {
        let blocked = "Quorate:          No\nExpected votes:   3\nTotal votes:      1\nQuorum:           2 Activity blocked\nFlags:            \n";
        let q = parse_pvecm_status(blocked).unwrap().unwrap();
        assert!(!q.quorate && q.activity_blocked && q.flags.is_empty());
        let outside = "Error: Corosync config '/etc/pve/corosync.conf' does not exist - is this node part of a cluster?\n";
        assert_eq!(parse_pvecm_status(outside).unwrap(), None);
        assert!(parse_pvecm_status("Quorum information\n------------------\n").is_err());
    }

    #[test]
    fn pveversion_and_ha() {
        // DOMAIN.md §5 quotes this line.
        assert_eq!(
            parse_pveversion("pve-manager/8.3.2/3e76eec21c4a14a7 (running kernel: 6.8.12-5-pve)\n"),
            Some(("8.3.2".into(), "6.8.12-5-pve".into()))
        );
        let ha = parse_ha_status("quorum OK\nmaster pve1 (active, Fri Apr  3 04:05:16 2026)\nlrm pve1 (active, Fri Apr  3 04:05:16 2026)\nlrm pve2 (maintenance mode, Fri Apr  3 04:05:16 2026)\nservice vm:100 (pve1, started)\n");
        assert!(ha.quorum_ok);
        assert_eq!(ha.master.as_deref(), Some("pve1"));
        assert_eq!(ha.lrm[1], ("pve2".into(), "maintenance mode".into()));
        assert_eq!(
            ha.services[0],
            ("vm:100".into(), "pve1".into(), "started".into())
        );
    }

    #[test]
    fn real_pveversion_and_ha_status() {
        assert_eq!(
            parse_pveversion(&fixture("pveversion/8.4.11.txt")),
            Some(("8.4.11".into(), "6.8.12-13-pve".into()))
        );
        let ha = parse_ha_status(&fixture("ha-manager-status/single-node-queued.txt"));
        assert!(ha.quorum_ok && ha.master.is_none() && ha.lrm.is_empty());
        assert_eq!(
            ha.services,
            vec![(
                "vm:100".to_string(),
                "pve-1".to_string(),
                "queued".to_string()
            )]
        );
    }

    #[test]
    fn guests_and_grades() {
        let text = "@@hostname pve2\n@@sub pveversion\npve-manager/8.3.2/3e76eec21c4a14a7 (running kernel: 6.8.12-5-pve)\n@@sub pvecm\nQuorate:          Yes\nExpected votes:   3\nTotal votes:      3\nQuorum:           2  \nFlags:            Quorate \n@@pvecm_rc 0\n@@sub ha\nquorum OK\nlrm pve2 (maintenance mode, x)\n@@sub qm\n      VMID NAME                 STATUS     MEM(MB)    BOOTDISK(GB) PID\n       100 web                  running    2048              32.00 2017\n       102 media                running    4096              32.00 2034\n       103 old                  stopped    1024              32.00 0\n@@sub pct\n@@sub hostpci\n/etc/pve/qemu-server/102.conf\n";
        let f = parse(text).unwrap();
        assert_eq!(f.running_guests.len(), 2);
        assert!(f.running_guests[1].hostpci);
        let g = grade(&f, &Thresholds::default());
        assert_eq!(g[0].grade, Grade::Pass);
        assert!(g
            .iter()
            .any(|x| x.check == "cluster.ha" && x.grade == Grade::Warn));
        let np = parse("@@missing pveversion\n").unwrap();
        assert_eq!(grade(&np, &Thresholds::default())[0].grade, Grade::Skip);
    }

    #[test]
    fn real_inquorate_captures() {
        let q = parse_pvecm_status(&fixture("pvecm-status/two-node-inquorate.txt"))
            .unwrap()
            .unwrap();
        assert!(!q.quorate && q.activity_blocked);
        assert_eq!((q.expected_votes, q.total_votes, q.quorum), (2, 1, 2));
        assert!(q.flags.is_empty());
        assert_eq!(
            q.members,
            vec![Member {
                nodeid: 2,
                votes: 1,
                name: "10.10.10.102".into(),
                local: true
            }]
        );
        let q = parse_pvecm_status(&fixture(
            "pvecm-status/three-node-inquorate-cluster-info.txt",
        ))
        .unwrap()
        .unwrap();
        assert!(!q.quorate && q.activity_blocked);
        assert_eq!((q.expected_votes, q.total_votes, q.quorum), (3, 1, 2));
        assert!(q.members.is_empty());
        let f = ClusterFacts {
            not_proxmox: false,
            hostname: "pve3".into(),
            manager_version: None,
            kernel: None,
            quorum: Some(q),
            ha: HaStatus::default(),
            running_guests: Vec::new(),
            resources: None,
        };
        let g = grade(&f, &Thresholds::default());
        assert_eq!(g[0].grade, Grade::Fail);
        assert_eq!(
            g[0].detail,
            "NOT quorate: 1/3 votes, 2 needed; /etc/pve is read-only"
        );
    }
}
