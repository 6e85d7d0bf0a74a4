//! Playbooks: ordered, idempotent steps, planned first (diffs), run with backups, in parallel or
//! in rolling batches with reboots that wait for the node and the cluster to be healthy again.

pub mod edit;
pub mod engine;
pub mod model;
pub mod rolling;
pub mod template;
pub mod validate;

pub use model::Playbook;
