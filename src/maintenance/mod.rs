//! A node's maintenance as the rolling path needs it, apart from the playbook language that asks
//! for it: the reboot state machine (journaled at every transition), the drain (HA maintenance,
//! placement, migrations away and back), the Ceph gate, cluster and node health, and the open
//! session commands go through. Used by the playbook engine's reboot step, by `rollback` and by
//! `pvefleet maintenance`.
//!
//! Layers, each using only those above it: `remote` and `error` (one node's session and what
//! can fail) -> `health`, `ceph_gate`, `drain`, `backups` (asking and changing one node or the cluster) ->
//! `readiness` (can the node finish its reboot, asked before it changes) and `reboot` (the state
//! machine). Each reaches a node through `remote::NodeShell` and reports through the run's event
//! bus (`crate::events`), so unit tests drive them with `scripted::ScriptedShell` (tests only).

pub mod backups;
pub mod balancers;
pub mod ceph_gate;
pub mod cluster_lock;
pub mod drain;
pub mod error;
pub mod health;
pub mod proxlb;
pub mod readiness;
pub mod reboot;
pub mod remote;
#[cfg(test)]
pub(crate) mod scripted;

pub use reboot::RollingView;
