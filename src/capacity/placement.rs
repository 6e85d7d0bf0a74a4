//! Where guests go when their node is drained: enough free memory; never an offline node, a node
//! in maintenance, or one still to be rebooted in this run when another choice exists; spread
//! (the roomiest node first, accounting for what was already placed), not piled onto one node.
//! And the run's preflight: can the cluster hold each node's running guests on the others (N-1)?

use std::collections::{BTreeMap, BTreeSet};

use super::resources::{GuestRes, Resources};

/// Bytes as GiB with one decimal.
pub fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// Free memory per candidate node, updated as guests are placed.
#[derive(Debug, Clone)]
pub struct Placer {
    free: BTreeMap<String, u64>,
    /// Nodes to use only when nothing else fits (to be rebooted later in this run).
    later: BTreeSet<String>,
}

impl Placer {
    /// Candidates for guests leaving `me`: online nodes other than `me` and not in `excluded`
    /// (maintenance, rebooting now); `later` ones only as a last resort.
    pub fn new(
        res: &Resources,
        me: &str,
        excluded: &BTreeSet<String>,
        later: &BTreeSet<String>,
    ) -> Placer {
        let free = res
            .nodes
            .iter()
            .filter(|n| n.online && n.name != me && !excluded.contains(&n.name))
            .map(|n| (n.name.clone(), n.free()))
            .collect();
        Placer {
            free,
            later: later.clone(),
        }
    }

    /// The target for a guest needing `mem` bytes, reserved; or why none fits.
    pub fn place(&mut self, g: &GuestRes) -> Result<String, String> {
        let pick = |later: bool| {
            self.free
                .iter()
                .filter(|(n, f)| self.later.contains(*n) == later && **f >= g.maxmem)
                .max_by_key(|(n, f)| (**f, std::cmp::Reverse((*n).clone())))
                .map(|(n, _)| n.clone())
        };
        let target = pick(false).or_else(|| pick(true));
        match target {
            Some(t) => {
                if let Some(f) = self.free.get_mut(&t) {
                    *f -= g.maxmem;
                }
                Ok(t)
            }
            None => Err(format!(
                "no node has room for {} {} ({}, {}): {}",
                g.kind.tool(),
                g.vmid,
                g.name,
                gib(g.maxmem),
                if self.free.is_empty() {
                    "no other online node out of maintenance".to_string()
                } else {
                    self.free
                        .iter()
                        .map(|(n, f)| format!("{n} {} free", gib(*f)))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            )),
        }
    }
}

/// N-1: for each node of `nodes` (those the run will drain), its running guests must fit on
/// the other online nodes (first fit, biggest guest first). The first node that does not fit,
/// with the numbers.
pub fn preflight(res: &Resources, nodes: &[String]) -> Result<(), String> {
    for n in nodes {
        let mut guests: Vec<&GuestRes> = res.running_on(n).collect();
        guests.sort_by_key(|g| std::cmp::Reverse(g.maxmem));
        let mut placer = Placer::new(res, n, &BTreeSet::new(), &BTreeSet::new());
        let need: u64 = guests.iter().map(|g| g.maxmem).sum();
        let free: u64 = placer.free.values().sum();
        for g in guests {
            if let Err(e) = placer.place(g) {
                return Err(format!(
                    "the cluster cannot hold {n}'s running guests ({}) on the other nodes ({} free in all): {e}",
                    gib(need),
                    gib(free)
                ));
            }
        }
    }
    Ok(())
}

/// Whether the running guests of every node of `group` (rebooted together) fit on the online
/// nodes outside it.
pub fn group_fits(res: &Resources, group: &[String]) -> Result<(), String> {
    let excluded: BTreeSet<String> = group.iter().cloned().collect();
    let mut guests: Vec<&GuestRes> = group.iter().flat_map(|n| res.running_on(n)).collect();
    guests.sort_by_key(|g| std::cmp::Reverse(g.maxmem));
    let first = group.first().map(String::as_str).unwrap_or("");
    let mut placer = Placer::new(res, first, &excluded, &BTreeSet::new());
    for g in guests {
        placer.place(g)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capacity::resources::{GuestType, NodeRes};

    const G: u64 = 1 << 30;

    fn res(nodes: &[(&str, bool, u64, u64)], guests: &[(u32, &str, u64)]) -> Resources {
        Resources {
            nodes: nodes
                .iter()
                .map(|(n, on, max, mem)| NodeRes {
                    name: n.to_string(),
                    online: *on,
                    maxmem: max * G,
                    mem: mem * G,
                })
                .collect(),
            guests: guests
                .iter()
                .map(|(id, node, mem)| GuestRes {
                    kind: GuestType::Qemu,
                    vmid: *id,
                    node: node.to_string(),
                    running: true,
                    name: format!("g{id}"),
                    maxmem: mem * G,
                    ha: false,
                    lock: None,
                    template: false,
                })
                .collect(),
        }
    }

    #[test]
    fn guests_spread_and_avoid_nodes_rebooted_later() {
        let r = res(
            &[
                ("pve1", true, 32, 20),
                ("pve2", true, 32, 4),
                ("pve3", true, 32, 14),
                ("pve4", false, 64, 0),
            ],
            &[(100, "pve1", 8), (101, "pve1", 8), (102, "pve1", 4)],
        );
        let mut p = Placer::new(&r, "pve1", &BTreeSet::new(), &BTreeSet::new());
        let t: Vec<String> = r.running_on("pve1").map(|g| p.place(g).unwrap()).collect();
        assert_eq!(
            t,
            vec!["pve2", "pve2", "pve3"],
            "roomiest first, accounting for what was placed"
        );
        // pve2 is rebooted later in the run: pve3 first while it has room.
        let later: BTreeSet<String> = ["pve2".to_string()].into();
        let mut p = Placer::new(&r, "pve1", &BTreeSet::new(), &later);
        let t: Vec<String> = r.running_on("pve1").map(|g| p.place(g).unwrap()).collect();
        assert_eq!(
            t,
            vec!["pve3", "pve3", "pve2"],
            "later nodes only when nothing else fits"
        );
    }

    #[test]
    fn no_room_is_said_with_numbers() {
        let r = res(
            &[("pve1", true, 32, 20), ("pve2", true, 16, 14)],
            &[(100, "pve1", 8)],
        );
        let mut p = Placer::new(&r, "pve1", &BTreeSet::new(), &BTreeSet::new());
        let e = p.place(&r.guests[0]).unwrap_err();
        assert!(
            e.contains("qm 100 (g100, 8.0 GiB)") && e.contains("pve2 2.0 GiB free"),
            "{e}"
        );
        let ex: BTreeSet<String> = ["pve2".to_string()].into();
        let mut p = Placer::new(&r, "pve1", &ex, &BTreeSet::new());
        assert!(p
            .place(&r.guests[0])
            .unwrap_err()
            .contains("no other online node"));
    }

    #[test]
    fn a_group_fits_only_on_nodes_outside_it() {
        let r = res(
            &[
                ("pve1", true, 32, 8),
                ("pve2", true, 32, 8),
                ("pve3", true, 32, 20),
            ],
            &[(100, "pve1", 8), (101, "pve2", 8)],
        );
        assert!(group_fits(&r, &["pve1".into()]).is_ok());
        let e = group_fits(&r, &["pve1".into(), "pve2".into()]).unwrap_err();
        assert!(e.contains("pve3 4.0 GiB free"), "{e}");
    }

    #[test]
    fn preflight_checks_every_node_to_be_drained() {
        let r = res(
            &[
                ("pve1", true, 64, 40),
                ("pve2", true, 32, 20),
                ("pve3", true, 32, 20),
            ],
            &[(100, "pve1", 16), (101, "pve1", 16), (200, "pve2", 4)],
        );
        let e = preflight(&r, &["pve2".into(), "pve1".into()]).unwrap_err();
        assert!(
            e.starts_with("the cluster cannot hold pve1's running guests (32.0 GiB)"),
            "{e}"
        );
        assert!(preflight(&r, &["pve2".into(), "pve3".into()]).is_ok());
    }
}
