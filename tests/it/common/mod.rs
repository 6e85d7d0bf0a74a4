//! Shared harness for integration tests: plain sshd servers (`sshd`) and the simulated Proxmox lab (`lab`).

pub mod bin;
pub mod lab;
pub mod runs;
pub mod sshd;
pub mod tmux;
pub mod wait;
