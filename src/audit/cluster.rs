//! Cluster-level checks, derived from the per-node audit rows: clock spread, mixed versions,
//! nodes down, quorum. Pure functions of [`NodeAudit`]s.

use std::collections::BTreeMap;

use super::{NodeAudit, Thresholds};
use crate::exec::NodeStatus;
use crate::nodeset::fold;
use crate::probe::{Finding, Grade};

fn finding(check: &str, grade: Grade, detail: String, remediation: Option<&str>) -> Finding {
    Finding {
        check: check.into(),
        grade,
        detail,
        remediation: remediation.map(str::to_string),
    }
}

/// `cluster.clock_spread`: max - min of the controller-measured offsets of the audited nodes.
/// Every node writes every node's RRD metrics with its own clock (DOMAIN.md §1), so the spread
/// between nodes matters even when the controller's own clock is off.
pub fn clock_spread(rows: &[NodeAudit], t: &Thresholds) -> Option<Finding> {
    let offsets: Vec<(&str, f64)> = rows
        .iter()
        .filter_map(|r| r.clock.map(|c| (r.node.as_str(), c.offset_s)))
        .collect();
    if offsets.len() < 2 {
        return None;
    }
    let (min_node, min) = offsets
        .iter()
        .copied()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .expect("non-empty");
    let (max_node, max) = offsets
        .iter()
        .copied()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .expect("non-empty");
    let spread = max - min;
    let grade = if spread > t.clock_fail_s {
        Grade::Fail
    } else if spread > t.clock_warn_s {
        Grade::Warn
    } else {
        Grade::Pass
    };
    let detail = format!(
        "spread {spread:.3} s between {max_node} ({max:+.3} s) and {min_node} ({min:+.3} s)"
    );
    Some(finding(
        "cluster.clock_spread",
        grade,
        detail,
        (grade > Grade::Pass).then_some("pvefleet run playbooks/sync-clock.toml"),
    ))
}

/// `cluster.nodes_down`: targeted nodes that could not be audited.
pub fn nodes_down(rows: &[NodeAudit]) -> Finding {
    let down: Vec<&str> = rows
        .iter()
        .filter(|r| r.status != NodeStatus::Ok)
        .map(|r| r.node.as_str())
        .collect();
    if down.is_empty() {
        finding(
            "cluster.nodes_down",
            Grade::Pass,
            format!("all {} nodes reachable", rows.len()),
            None,
        )
    } else {
        finding(
            "cluster.nodes_down",
            Grade::Fail,
            format!(
                "{} of {} not audited: {}",
                down.len(),
                rows.len(),
                fold(&down)
            ),
            Some("check the node's power and network, then `pvefleet -l NODE exec -- true`"),
        )
    }
}

/// `cluster.versions`: the pve-manager versions seen (from each node's `cluster` facts).
pub fn versions(
    rows: &[NodeAudit],
    version_of: impl Fn(&NodeAudit) -> Option<String>,
) -> Option<Finding> {
    let mut by_version: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.status == NodeStatus::Ok) {
        if let Some(v) = version_of(r) {
            by_version.entry(v).or_default().push(&r.node);
        }
    }
    if by_version.is_empty() {
        return None;
    }
    if by_version.len() == 1 {
        let v = by_version.keys().next().expect("one");
        return Some(finding(
            "cluster.versions",
            Grade::Pass,
            format!("all nodes run pve-manager {v}"),
            None,
        ));
    }
    let parts: Vec<String> = by_version
        .iter()
        .map(|(v, nodes)| format!("{v} on {}", fold(nodes)))
        .collect();
    Some(finding(
        "cluster.versions",
        Grade::Warn,
        format!("mixed pve-manager versions: {}", parts.join("; ")),
        Some("upgrade the older nodes one at a time (apt full-upgrade), rebooting between nodes"),
    ))
}

/// `cluster.quorum`: whether the nodes report a quorate cluster.
pub fn quorum(
    rows: &[NodeAudit],
    quorate_of: impl Fn(&NodeAudit) -> Option<bool>,
) -> Option<Finding> {
    let mut yes = Vec::new();
    let mut no = Vec::new();
    for r in rows.iter().filter(|r| r.status == NodeStatus::Ok) {
        match quorate_of(r) {
            Some(true) => yes.push(r.node.as_str()),
            Some(false) => no.push(r.node.as_str()),
            None => {}
        }
    }
    if yes.is_empty() && no.is_empty() {
        return None;
    }
    Some(if no.is_empty() {
        finding(
            "cluster.quorum",
            Grade::Pass,
            format!("quorate as seen from {}", fold(&yes)),
            None,
        )
    } else {
        finding(
            "cluster.quorum",
            Grade::Fail,
            format!("not quorate as seen from {}", fold(&no)),
            Some(
                "bring the missing nodes back (pvecm status); do not reboot anything until quorate",
            ),
        )
    })
}

/// `cluster.names`: every audited node's inventory name is its Proxmox VE node name (the
/// cluster probe's `hostname`, up to the first dot, as pve-common's nodename takes it). A reboot
/// hands that name to HA maintenance, to guest moves and to Ceph's CRUSH host, so a playbook that
/// reboots refuses a node whose name differs while any of those is in play.
pub fn names(rows: &[NodeAudit]) -> Option<Finding> {
    let pairs: Vec<(&str, String)> = rows
        .iter()
        .filter_map(|r| {
            let h = r.facts.get("cluster")?.get("hostname")?.as_str()?;
            let short = crate::inventory::proxmox_node_name(h);
            (!short.is_empty()).then(|| (r.node.as_str(), crate::sanitize::first_line(short, 64)))
        })
        .collect();
    if pairs.is_empty() {
        return None;
    }
    let wrong: Vec<String> = pairs
        .iter()
        .filter(|(n, h)| n != h)
        .map(|(n, h)| format!("{n} is {h}"))
        .collect();
    Some(if wrong.is_empty() {
        finding(
            "cluster.names",
            Grade::Pass,
            format!(
                "{} inventory name(s) are the Proxmox node names",
                pairs.len()
            ),
            None,
        )
    } else {
        finding(
            "cluster.names",
            Grade::Warn,
            format!(
                "inventory names that are not the Proxmox node name: {}",
                wrong.join(", ")
            ),
            Some("name each [nodes.NAME] table after the node's Proxmox name (`pvecm nodes`; `pvefleet inventory discover` writes them): a playbook that reboots refuses the node while drains, HA or Ceph would be handed the wrong name"),
        )
    })
}

/// All cluster-level findings, in a fixed order.
pub fn cluster_findings(rows: &[NodeAudit], t: &Thresholds) -> Vec<Finding> {
    let mut out = vec![nodes_down(rows)];
    out.extend(names(rows));
    out.extend(quorum(rows, super::evaluate::quorate_of));
    out.extend(versions(rows, super::evaluate::manager_version_of));
    out.extend(clock_spread(rows, t));
    out.push(capacity(rows));
    out
}

/// `cluster.capacity`: can the cluster lose any one node, i.e. hold that node's running guests
/// on the other online nodes (memory, first fit)? From the first node that answered
/// `pvesh get /cluster/resources`.
pub fn capacity(rows: &[NodeAudit]) -> Finding {
    use crate::capacity::{placement, resources::Resources};
    let res: Option<Resources> = rows.iter().find_map(|r| {
        serde_json::from_value(r.facts.get("cluster")?.get("resources")?.clone()).ok()
    });
    let Some(res) = res else {
        return finding(
            "cluster.capacity",
            Grade::Skip,
            "no node answered pvesh get /cluster/resources".into(),
            None,
        );
    };
    let online: Vec<String> = res
        .nodes
        .iter()
        .filter(|n| n.online)
        .map(|n| n.name.clone())
        .collect();
    let mut failing = Vec::new();
    for n in &online {
        if let Err(e) = placement::preflight(&res, std::slice::from_ref(n), &Default::default()) {
            failing.push(e.to_string());
        }
    }
    let biggest = online
        .iter()
        .map(|n| (res.running_on(n).filter_map(|g| g.maxmem).sum::<u64>(), n))
        .max();
    if failing.is_empty() {
        finding(
            "cluster.capacity",
            Grade::Pass,
            match biggest {
                Some((mem, n)) => format!(
                    "the cluster can lose any one node (the biggest, {n}, runs {} of guests)",
                    placement::gib(mem)
                ),
                None => "no online node".into(),
            },
            None,
        )
    } else {
        finding(
            "cluster.capacity",
            Grade::Warn,
            failing.join("; "),
            Some("free memory on the other nodes (or add a node) before a rolling reboot: a drain will refuse"),
        )
    }
}

#[cfg(test)]
mod capacity_tests {
    use super::*;
    use crate::exec::NodeStatus;
    use std::collections::BTreeMap;

    fn row(resources: &str) -> NodeAudit {
        let res = crate::capacity::resources::parse(resources).unwrap();
        let mut facts = BTreeMap::new();
        facts.insert(
            "cluster".to_string(),
            serde_json::json!({ "resources": res }),
        );
        NodeAudit {
            node: "pve1".into(),
            address: "x".into(),
            status: NodeStatus::Ok,
            error: None,
            cells: BTreeMap::new(),
            findings: Vec::new(),
            facts,
            clock: None,
            duration_ms: 1,
        }
    }

    const GIB: u64 = 1 << 30;

    fn named(node: &str, hostname: &str) -> NodeAudit {
        let mut r = row("[]");
        r.node = node.into();
        r.facts.insert(
            "cluster".to_string(),
            serde_json::json!({ "hostname": hostname }),
        );
        r
    }

    #[test]
    fn inventory_names_must_be_the_proxmox_node_names() {
        let ok = names(&[named("pve1", "pve1"), named("pve2", "pve2.example.com")]).unwrap();
        assert_eq!(ok.grade, Grade::Pass, "{}", ok.detail);
        let bad = names(&[named("pve1", "pve1"), named("web1", "pve2")]).unwrap();
        assert_eq!(bad.grade, Grade::Warn);
        assert_eq!(
            bad.detail,
            "inventory names that are not the Proxmox node name: web1 is pve2"
        );
        assert!(bad.remediation.unwrap().contains("[nodes.NAME]"));
        // No cluster probe ran: nothing to say.
        assert!(names(&[row("[]")]).is_none());
    }

    fn resources(pve2_mem_gib: u64) -> String {
        serde_json::json!([
            {"type": "node", "node": "pve1", "status": "online", "maxmem": 32 * GIB, "mem": 20 * GIB},
            {"type": "node", "node": "pve2", "status": "online", "maxmem": 32 * GIB, "mem": pve2_mem_gib * GIB},
            {"type": "qemu", "vmid": 100, "node": "pve1", "status": "running", "name": "big", "maxmem": 16 * GIB},
        ])
        .to_string()
    }

    #[test]
    fn the_cluster_must_hold_any_one_nodes_guests_on_the_others() {
        let ok = capacity(&[row(&resources(4))]);
        assert_eq!(ok.grade, Grade::Pass, "{}", ok.detail);
        assert!(
            ok.detail.contains("the biggest, pve1, runs 16.0 GiB"),
            "{}",
            ok.detail
        );
        let tight = capacity(&[row(&resources(20))]);
        assert_eq!(tight.grade, Grade::Warn);
        assert!(
            tight
                .detail
                .contains("cannot hold pve1's running guests (16.0 GiB)"),
            "{}",
            tight.detail
        );
        assert_eq!(capacity(&[]).grade, Grade::Skip);
    }
}
