//! Playbooks: ordered, idempotent steps, planned first (diffs), run with backups, in parallel or
//! in rolling batches with reboots that wait for the node and the cluster to be healthy again.
//!
//! Layers, each using only those above it: `model`/`raw`/`validate`/`template`/`edit` (the typed
//! playbook, the file as serde reads it, the one conversion between them, and pure edits) ->
//! `error`, `context` -> `steps` (the step kinds; the reboot step hands the node to
//! `crate::maintenance`) -> `engine` (one node's run) -> `rolling` (strategies over nodes, paced
//! by `pacing` and `window`); `rollback` undoes a run from its journal, node by node.

pub mod context;
pub mod edit;
pub mod engine;
pub mod error;
pub mod extra;
pub mod model;
pub mod pacing;
mod raw;
pub mod rollback;
pub mod rolling;
mod steps;
pub mod template;
pub mod validate;
pub mod window;

pub use model::Playbook;
pub use steps::refresh_for;
