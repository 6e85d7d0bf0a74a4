//! Cluster and node health as the rolling path needs it: the quorum arithmetic and gate
//! (DOMAIN.md §5), the votes present, the boot id, and the per-unit service check.
//!
//! Trap (DOMAIN.md §7): `systemctl is-active A B C` exits 0 when ANY unit is active, so the
//! service gate asks for each unit's state on its own line and requires every one.

use super::error::RebootError;
use super::remote::NodeShell;
use crate::probe::cluster::parse_pvecm_status;
use crate::ssh::SshError;

/// Services that must be active again after a reboot.
pub const HEALTH_UNITS: [&str; 5] = [
    "corosync",
    "pve-cluster",
    "pveproxy",
    "pvestatd",
    "pve-ha-lrm",
];

/// Votes needed for quorum with `expected` votes.
pub fn quorum_of(expected: u32) -> u32 {
    expected / 2 + 1
}

/// Taking nodes down would cost the cluster its quorum: the numbers [`gate`] was given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "quorum gate: {total} of {expected} votes present, taking {down} down leaves {} < quorum {}{}",
    .total.saturating_sub(*.down),
    quorum_of(*.expected),
    if *.expected == 2 { " (a 2-node cluster without QDevice cannot lose a node)" } else { "" }
)]
pub struct QuorumGateError {
    /// Expected votes.
    pub expected: u32,
    /// Votes present.
    pub total: u32,
    /// Votes to be taken down.
    pub down: u32,
}

/// Whether taking `down` votes away from `total` keeps quorum; the reason when it does not.
pub fn gate(expected: u32, total: u32, down: u32) -> Result<(), QuorumGateError> {
    let q = quorum_of(expected);
    if total.saturating_sub(down) >= q {
        Ok(())
    } else {
        Err(QuorumGateError {
            expected,
            total,
            down,
        })
    }
}

/// The cluster's votes as this node sees them: `(expected, total, quorate)`; `None` outside a
/// cluster. Output that cannot be read is an error, never "not in a cluster" (which would let
/// every quorum gate pass).
pub async fn votes(r: &dyn NodeShell) -> Result<Option<(u32, u32, bool)>, RebootError> {
    let (_, s) = r.text("pvecm status 2>&1").await?;
    match parse_pvecm_status(&s) {
        Ok(q) => Ok(q.map(|q| (q.expected_votes, q.total_votes, q.quorate))),
        Err(e) => Err(RebootError::Command(format!(
            "cannot read pvecm status: {e}"
        ))),
    }
}

/// The node's boot id.
pub async fn boot_id(r: &dyn NodeShell) -> Result<String, SshError> {
    let (_, id) = r.text("cat /proc/sys/kernel/random/boot_id").await?;
    Ok(id.trim().to_string())
}

/// The script that prints `UNIT STATE` for each unit, one `systemctl is-active` per unit.
pub fn units_script(units: &[&str]) -> String {
    let list: Vec<String> = units.iter().map(|u| crate::quote::shell_quote(u)).collect();
    format!(
        "for u in {}; do s=$(systemctl is-active \"$u\" 2>/dev/null); echo \"$u ${{s:-unknown}}\"; done",
        list.join(" ")
    )
}

/// Units of `units` that are not active in the output of [`units_script`], with their states
/// (`pveproxy failed`). A unit missing from the output counts as not active.
pub fn inactive_units(units: &[&str], out: &str) -> Vec<String> {
    units
        .iter()
        .filter_map(|u| {
            let state = out.lines().find_map(|l| {
                let (name, state) = l.split_once(' ')?;
                (name == *u).then(|| state.trim().to_string())
            });
            match state.as_deref() {
                // systemd counts reloading (and refreshing) as active (systemctl-is-active.c).
                Some("active") | Some("reloading") | Some("refreshing") => None,
                Some(s) => Some(format!("{u} {s}")),
                None => Some(format!("{u} unknown")),
            }
        })
        .collect()
}

/// The units of [`HEALTH_UNITS`] that are not active on the node.
pub async fn unhealthy_units(r: &dyn NodeShell) -> Result<Vec<String>, SshError> {
    let (_, out) = r.text(&units_script(&HEALTH_UNITS)).await?;
    Ok(inactive_units(&HEALTH_UNITS, &out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maintenance::scripted::ScriptedShell;

    #[tokio::test]
    async fn a_quorum_answer_that_cannot_be_read_is_unknown_never_no_cluster() {
        // Cut short, an error from pvecm itself, nothing at all: each an error (the gate
        // stops), never `None` (a node outside a cluster, which the gate lets pass).
        for answer in [
            "Quorum information\n------------------\n",
            "Cannot initialize CMAP service\n",
            "",
        ] {
            let sh = ScriptedShell::new("pve1").on("pvecm status", answer);
            let v = votes(&sh).await;
            assert!(
                matches!(&v, Err(RebootError::Command(m)) if m.contains("cannot read pvecm status")),
                "{answer:?}: {v:?}"
            );
        }
        let unscripted = ScriptedShell::new("pve1");
        assert!(votes(&unscripted).await.is_err(), "no pvecm at all");
        let alone = ScriptedShell::new("pve1").on(
            "pvecm status",
            "Error: Corosync config '/etc/pve/corosync.conf' does not exist - is this node part of a cluster?\n",
        );
        assert_eq!(
            votes(&alone).await.unwrap(),
            None,
            "a node outside a cluster"
        );
    }

    #[test]
    fn the_gate_keeps_quorum() {
        assert!(gate(3, 3, 1).is_ok());
        assert!(gate(3, 2, 1).is_err(), "a second node down loses quorum");
        let e = gate(2, 2, 1).unwrap_err().to_string();
        assert!(e.contains("2-node cluster"), "{e}");
        assert_eq!(
            gate(3, 2, 1).unwrap_err().to_string(),
            "quorum gate: 2 of 3 votes present, taking 1 down leaves 1 < quorum 2"
        );
        assert!(gate(5, 5, 2).is_ok());
        assert!(gate(5, 5, 3).is_err());
        assert_eq!(quorum_of(4), 3);
    }

    #[test]
    fn every_unit_must_be_active_on_its_own() {
        let units = ["corosync", "pveproxy", "pvestatd"];
        let out = "corosync active\npveproxy failed\npvestatd reloading\n";
        assert_eq!(inactive_units(&units, out), vec!["pveproxy failed"]);
        let missing = "corosync active\n";
        assert_eq!(
            inactive_units(&units, missing),
            vec!["pveproxy unknown", "pvestatd unknown"]
        );
        assert!(inactive_units(
            &units,
            "corosync active\npveproxy active\npvestatd active\n"
        )
        .is_empty());
    }

    #[test]
    fn the_units_script_asks_once_per_unit() {
        let s = units_script(&["a", "b c"]);
        assert!(s.contains("for u in a 'b c'; do"), "{s}");
        assert!(s.contains("systemctl is-active \"$u\""), "{s}");
    }
}
