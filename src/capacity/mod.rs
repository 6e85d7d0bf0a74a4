//! The cluster's guests and nodes as `pvesh get /cluster/resources` reports them, and where
//! guests can go: the target choice of a drain and the N-1 check ("can the cluster lose this
//! node?"). Pure data and arithmetic, below both the audit and the playbook engine.

pub mod placement;
pub mod resources;
