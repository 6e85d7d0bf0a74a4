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

/// Why a guest cannot be placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlaceError {
    /// Its memory is not known, and unknown is not 0 bytes.
    #[error("the memory of {tool} {vmid} ({name}) is unknown (no maxmem in /cluster/resources, no memory: in its config): it cannot be placed")]
    UnknownMemory {
        /// The CLI that manages it (`qm`, `pct`).
        tool: &'static str,
        /// VMID.
        vmid: u32,
        /// Name.
        name: String,
    },
    /// No candidate node has the memory it needs free.
    #[error("no node has room for {tool} {vmid} ({name}, {}): {}", gib(*.mem), room(.free))]
    NoRoom {
        /// The CLI that manages it (`qm`, `pct`).
        tool: &'static str,
        /// VMID.
        vmid: u32,
        /// Name.
        name: String,
        /// The memory it needs, bytes.
        mem: u64,
        /// Free memory of every candidate node (empty: no node can take guests).
        free: BTreeMap<String, u64>,
    },
}

/// The candidates' free memory as [`PlaceError::NoRoom`] says it.
fn room(free: &BTreeMap<String, u64>) -> String {
    if free.is_empty() {
        "no other node can take guests (online, reachable, out of maintenance)".to_string()
    } else {
        free.iter()
            .map(|(n, f)| format!("{n} {} free", gib(*f)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A node whose running guests the other nodes cannot hold ([`preflight`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the cluster cannot hold {node}'s running guests ({}) on the other nodes ({} free in all): {error}", gib(*.need), gib(*.free))]
pub struct PreflightError {
    /// The node.
    pub node: String,
    /// Memory of its running guests (those whose memory is known), bytes.
    pub need: u64,
    /// Free memory of the nodes that can take guests, bytes, in all.
    pub free: u64,
    /// The first guest that could not be placed.
    pub error: PlaceError,
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

    /// The target for a guest needing `mem` bytes, reserved; or why none fits. The roomiest
    /// node first (spreading); nodes rebooted later in the run only when nothing else fits.
    pub fn place(&mut self, g: &GuestRes) -> Result<String, PlaceError> {
        let mem = need(g)?;
        let pick = |later: bool| {
            self.free
                .iter()
                .filter(|(n, f)| self.later.contains(*n) == later && **f >= mem)
                .max_by_key(|(n, f)| (**f, std::cmp::Reverse((*n).clone())))
                .map(|(n, _)| n.clone())
        };
        let target = pick(false).or_else(|| pick(true));
        self.reserve(g, mem, target)
    }

    /// Best fit: the node with the least room that still holds the guest (later nodes last).
    fn place_tight(&mut self, g: &GuestRes) -> Result<String, PlaceError> {
        let mem = need(g)?;
        let pick = |later: bool| {
            self.free
                .iter()
                .filter(|(n, f)| self.later.contains(*n) == later && **f >= mem)
                .min_by_key(|(n, f)| (**f, (*n).clone()))
                .map(|(n, _)| n.clone())
        };
        let target = pick(false).or_else(|| pick(true));
        self.reserve(g, mem, target)
    }

    fn reserve(
        &mut self,
        g: &GuestRes,
        mem: u64,
        target: Option<String>,
    ) -> Result<String, PlaceError> {
        match target {
            Some(t) => {
                if let Some(f) = self.free.get_mut(&t) {
                    *f -= mem;
                }
                Ok(t)
            }
            None => Err(PlaceError::NoRoom {
                tool: g.kind.tool(),
                vmid: g.vmid,
                name: g.name.clone(),
                mem,
                free: self.free.clone(),
            }),
        }
    }

    /// Targets for all of `guests` (in the order given), reserved: spread (roomiest first) when
    /// that fits; when it does not, packed with care (best fit, biggest guest first), which
    /// fits wherever first-fit decreasing does and more often. The spreading answer's error
    /// when neither fits.
    pub fn place_all(&mut self, guests: &[&GuestRes]) -> Result<Vec<String>, PlaceError> {
        let mut spread = self.clone();
        let first = guests
            .iter()
            .map(|g| spread.place(g))
            .collect::<Result<Vec<_>, _>>();
        let err = match first {
            Ok(t) => {
                *self = spread;
                return Ok(t);
            }
            Err(e) => e,
        };
        let mut order: Vec<usize> = (0..guests.len()).collect();
        order.sort_by_key(|i| std::cmp::Reverse(guests[*i].maxmem));
        let mut packed = self.clone();
        let mut targets = vec![String::new(); guests.len()];
        for i in order {
            match packed.place_tight(guests[i]) {
                Ok(t) => targets[i] = t,
                Err(_) => return Err(err),
            }
        }
        *self = packed;
        Ok(targets)
    }
}

/// A guest's memory, or why it cannot be placed (unknown is not 0 bytes).
fn need(g: &GuestRes) -> Result<u64, PlaceError> {
    g.maxmem.ok_or_else(|| PlaceError::UnknownMemory {
        tool: g.kind.tool(),
        vmid: g.vmid,
        name: g.name.clone(),
    })
}

/// N-1: for each node of `nodes` (those the run will drain), its running guests must fit on
/// the other nodes that can take guests: online and not in `excluded` (in HA maintenance,
/// unreachable, rebooting in the run with it). The first node that does not fit, with the
/// numbers.
pub fn preflight(
    res: &Resources,
    nodes: &[String],
    excluded: &BTreeSet<String>,
) -> Result<(), PreflightError> {
    for n in nodes {
        let guests: Vec<&GuestRes> = res.running_on(n).collect();
        let mut placer = Placer::new(res, n, excluded, &BTreeSet::new());
        let need: u64 = guests.iter().filter_map(|g| g.maxmem).sum();
        let free: u64 = placer.free.values().sum();
        if let Err(error) = placer.place_all(&guests) {
            return Err(PreflightError {
                node: n.clone(),
                need,
                free,
                error,
            });
        }
    }
    Ok(())
}

/// Whether the running guests of every node of `group` (rebooted together) fit on the online
/// nodes outside it (and outside `excluded`).
pub fn group_fits(
    res: &Resources,
    group: &[String],
    excluded: &BTreeSet<String>,
) -> Result<(), PlaceError> {
    let mut excluded = excluded.clone();
    excluded.extend(group.iter().cloned());
    let guests: Vec<&GuestRes> = group.iter().flat_map(|n| res.running_on(n)).collect();
    let first = group.first().map(String::as_str).unwrap_or("");
    let mut placer = Placer::new(res, first, &excluded, &BTreeSet::new());
    placer.place_all(&guests).map(|_| ())
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
                    maxmem: Some(mem * G),
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
        let e = p.place(&r.guests[0]).unwrap_err().to_string();
        assert!(
            e.contains("qm 100 (g100, 8.0 GiB)") && e.contains("pve2 2.0 GiB free"),
            "{e}"
        );
        let ex: BTreeSet<String> = ["pve2".to_string()].into();
        let mut p = Placer::new(&r, "pve1", &ex, &BTreeSet::new());
        assert!(p
            .place(&r.guests[0])
            .unwrap_err()
            .to_string()
            .contains("no other node can take guests"));
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
        assert!(group_fits(&r, &["pve1".into()], &BTreeSet::new()).is_ok());
        let e = group_fits(&r, &["pve1".into(), "pve2".into()], &BTreeSet::new())
            .unwrap_err()
            .to_string();
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
        let e = preflight(&r, &["pve2".into(), "pve1".into()], &BTreeSet::new())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("the cluster cannot hold pve1's running guests (32.0 GiB)"),
            "{e}"
        );
        assert!(preflight(&r, &["pve2".into(), "pve3".into()], &BTreeSet::new()).is_ok());
    }

    #[test]
    fn what_fits_packed_with_care_is_not_refused() {
        // pve2 10 GiB free, pve3 6 GiB free; guests 6, 5, 5: roomiest first puts 6 on pve2 and
        // then has no room for the second 5; best fit puts 6 on pve3 and both 5 on pve2.
        let r = res(
            &[
                ("pve1", true, 32, 20),
                ("pve2", true, 32, 22),
                ("pve3", true, 32, 26),
            ],
            &[(100, "pve1", 6), (101, "pve1", 5), (102, "pve1", 5)],
        );
        let guests: Vec<&GuestRes> = r.running_on("pve1").collect();
        let mut spread = Placer::new(&r, "pve1", &BTreeSet::new(), &BTreeSet::new());
        assert!(guests.iter().map(|g| spread.place(g)).any(|t| t.is_err()));
        let mut p = Placer::new(&r, "pve1", &BTreeSet::new(), &BTreeSet::new());
        assert_eq!(p.place_all(&guests).unwrap(), vec!["pve3", "pve2", "pve2"]);
        assert!(preflight(&r, &["pve1".into()], &BTreeSet::new()).is_ok());
        // Spreading is kept when it fits.
        let mut p = Placer::new(&r, "pve1", &BTreeSet::new(), &BTreeSet::new());
        assert_eq!(p.place_all(&guests[1..]).unwrap(), vec!["pve2", "pve3"]);
    }

    #[test]
    fn unknown_memory_is_not_zero_and_excluded_nodes_give_no_room() {
        let mut r = res(
            &[("pve1", true, 32, 20), ("pve2", true, 32, 4)],
            &[(100, "pve1", 6)],
        );
        r.guests[0].maxmem = None;
        let e = preflight(&r, &["pve1".into()], &BTreeSet::new()).unwrap_err();
        assert!(
            matches!(e.error, PlaceError::UnknownMemory { vmid: 100, .. }),
            "{e:?}"
        );
        let e = e.to_string();
        assert!(e.contains("memory of qm 100 (g100) is unknown"), "{e}");
        r.guests[0].maxmem = Some(6 * G);
        assert!(preflight(&r, &["pve1".into()], &BTreeSet::new()).is_ok());
        // pve2 in HA maintenance (or unreachable): its room does not count.
        let ex: BTreeSet<String> = ["pve2".to_string()].into();
        assert!(preflight(&r, &["pve1".into()], &ex).is_err());
    }
}
