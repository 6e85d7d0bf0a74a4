//! Every integration test in one binary (as ripgrep and nextest do): one link instead of one per
//! area, the shared harness in `common` compiled once, and every test in one pool of test
//! threads. A module per area; `cargo test --test it maintenance_lab::` runs one area.
//!
//! Lab tests need root (network namespaces, mounts, iptables); without it they fail, unless
//! `PVEFLEET_SKIP_LAB=1` is set (README, Development).

mod common;

mod audit_export_lab;
mod audit_lab;
mod audit_terminal;
mod balancers_lab;
mod cli_exec;
mod cli_inventory;
mod cli_packaging;
mod cli_runs;
mod cluster_lock_lab;
mod clusters_lab;
mod detached_migration;
mod drain_lab;
mod first_contact_lab;
mod guests_lab;
mod inventory_lab;
mod lab_cluster;
mod lab_corosync;
mod lab_nodes;
mod maintenance_lab;
mod notify_lab;
mod ownership_lab;
mod plan_exact_lab;
mod playbook_lab;
mod rollback_lab;
mod rolling_lab;
mod runs_show_lab;
mod shipped_playbooks_lab;
mod ssh_transport;
mod upgrade_lab;
mod windows_lab;
