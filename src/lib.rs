//! pvefleet: look after a Proxmox VE cluster over SSH from one machine.
//!
//! Data flows one way: inventory -> targets -> plan -> transport -> results -> report.
//! The binary (`src/main.rs`) only parses arguments, calls [`cli::run`] and maps the outcome to
//! an exit code; all behaviour lives here so tests drive the same code.

pub mod probe;
pub mod ssh;
