//! Rendering of results for people and machines: terminal tables, grouped output, JSON.
//!
//! Every function here is a pure function of result data; nothing here touches the network.

pub mod audit;
pub mod audit_terminal;
pub mod compare;
pub mod exec;
pub mod inventory;
pub mod openmetrics;
pub mod passthrough;
pub mod plan;
pub use crate::nodeset;
pub mod runs;
pub use crate::sanitize;
pub mod wrap;
