//! Playbooks: ordered, idempotent steps, planned first (diffs), run with backups, in parallel or
//! in rolling batches with reboots that wait for the node and the cluster to be healthy again.
//!
//! Layers, each using only those above it: `model`/`validate`/`template`/`edit` (the file and
//! pure edits) -> `error`, `remote`, `health`, `drain` (talking to one node) -> `reboot` (the
//! reboot state machine) -> `steps` (the step kinds) -> `engine` (one node's run) -> `rolling`
//! (strategies over nodes).

pub mod ceph_gate;
pub mod context;
pub mod drain;
pub mod edit;
pub mod engine;
pub mod error;
pub mod health;
pub mod model;
pub mod reboot;
pub mod remote;
pub mod rolling;
mod steps;
pub mod template;
pub mod validate;

pub use model::Playbook;
pub use steps::refresh_for;
