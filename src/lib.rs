//! pvefleet: look after a Proxmox VE cluster over SSH from one machine.
//!
//! Data flows one way: inventory -> targets -> plan -> transport -> results -> report.
//! The binary (`src/main.rs`) only parses arguments, calls [`app::main`] and maps the outcome to
//! an exit code; all behaviour lives here so tests drive the same code.

pub mod app;
pub mod audit;
pub mod bootloader;
pub mod capacity;
pub mod cli;
pub mod events;
pub mod exec;
pub mod exit;
pub mod fanout;
pub mod inventory;
pub mod journal;
pub mod maintenance;
pub mod nodeset;
pub mod notify;
pub mod outcome;
pub mod paths;
pub mod playbook;
pub mod probe;
pub mod progress;
pub mod quote;
pub mod report;
pub mod sanitize;
pub mod ssh;
pub mod vocab;
