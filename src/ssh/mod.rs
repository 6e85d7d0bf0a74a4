//! SSH transport on russh: connect, authenticate, verify host keys, run commands.
//!
//! This module owns everything that touches the SSH protocol: the TCP (or jump-host) stream, key
//! exchange preferences, host-key policy against known_hosts files, `~/.ssh/config` resolution,
//! authentication (ssh-agent, then identity files), and exec channels that return stdout, stderr
//! and the exit status separately. It knows nothing of probes, playbooks or reports: callers hand
//! it a [`ConnectSpec`] and get back a [`Session`] or a typed [`SshError`].
//!
//! One [`Session`] is one SSH connection; it is cheap to clone and every clone shares the
//! connection, so a run opens one connection per node and runs many commands over it (several
//! channels at once, fewer than the server's `MaxSessions`).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What to do with a server host key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum HostKeyPolicy {
    /// The key must already be in a known_hosts file (the default).
    #[default]
    Strict,
    /// Trust on first use: an unknown host's key is appended to the first known_hosts file;
    /// a *changed* key is still refused.
    AcceptNew,
    /// Accept any key, with a loud warning. For throwaway labs only.
    Insecure,
}

/// Everything needed to reach one node. Built by the inventory from its defaults and per-node
/// overrides; `~/.ssh/config` is consulted by [`connect`] for what the inventory leaves unset.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectSpec {
    /// The node's name (for messages and for `~/.ssh/config` `Host` matching).
    pub name: String,
    /// Address or host name to connect to.
    pub host: String,
    /// TCP port; `None` means "from ssh_config, else 22".
    pub port: Option<u16>,
    /// Login user; `None` means "from ssh_config, else root".
    pub user: Option<String>,
    /// Identity files tried after the agent, before ssh_config's and the default ones.
    pub identity_files: Vec<PathBuf>,
    /// known_hosts files checked in order (the inventory's first, then `~/.ssh/known_hosts`).
    pub known_hosts: Vec<PathBuf>,
    /// Host-key policy.
    pub host_key_policy: HostKeyPolicy,
    /// Jump host (`ProxyJump`), reached first; the node is reached over a direct-tcpip channel.
    pub jump: Option<Box<ConnectSpec>>,
    /// Deadline for TCP connect + key exchange + authentication.
    pub connect_timeout: Duration,
    /// Interval of SSH keepalives (`None`: off).
    pub keepalive: Option<Duration>,
    /// Use the ssh-agent at `SSH_AUTH_SOCK` when set.
    pub use_agent: bool,
    /// Read `~/.ssh/config` (or the file given) for HostName, User, Port, IdentityFile, ProxyJump.
    pub ssh_config: Option<PathBuf>,
    /// Run commands through `sudo -n` (for a non-root login user).
    pub become_root: bool,
}

/// How a remote command ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitStatus {
    /// Exited with this code.
    Code(u32),
    /// Killed by this signal (name as the server sent it, e.g. `KILL`).
    Signal(String),
}

/// The full result of one remote command.
#[derive(Debug, Clone, Serialize)]
pub struct ExecOutput {
    /// Everything the command wrote to stdout, unaltered.
    pub stdout: Vec<u8>,
    /// Everything the command wrote to stderr, unaltered.
    pub stderr: Vec<u8>,
    /// How it ended.
    pub exit: ExitStatus,
    /// Wall time from channel open to exit status.
    pub duration: Duration,
}

/// Why a connection or a command failed. Each variant maps to one per-node status in reports.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// TCP connect failed or did not complete in time (refused, no route, black-holed).
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The connect deadline or a command deadline passed.
    #[error("timeout after {0:?}")]
    Timeout(Duration),
    /// The server's host key differs from the one recorded.
    #[error("host key for {host} changed: offending entry in {file}:{line}")]
    HostKeyChanged {
        /// Host as looked up (`host` or `[host]:port`).
        host: String,
        /// known_hosts file holding the old key.
        file: PathBuf,
        /// 1-based line of the old key.
        line: usize,
    },
    /// The host is in no known_hosts file and the policy is strict.
    #[error("host key for {host} is not known ({fingerprint}); add it to known_hosts or use --host-key-policy accept-new")]
    HostKeyUnknown {
        /// Host as looked up.
        host: String,
        /// SHA256 fingerprint of the offered key.
        fingerprint: String,
    },
    /// No method worked.
    #[error("authentication failed for {user}: {detail}")]
    AuthFailed {
        /// Login user.
        user: String,
        /// What was tried.
        detail: String,
    },
    /// sudo wanted a password (become without NOPASSWD).
    #[error("sudo needs a password on this node; configure NOPASSWD for the login user or log in as root")]
    SudoPassword,
    /// Anything else from the protocol layer.
    #[error("ssh: {0}")]
    Protocol(String),
}

/// An open, authenticated connection to one node. Clones share the connection.
#[derive(Clone)]
pub struct Session {
    _private: (),
}

/// Open one connection to the node described by `spec` (through its jump host if any).
pub async fn connect(spec: &ConnectSpec) -> Result<Session, SshError> {
    let _ = spec;
    unimplemented!("filled in by the transport work")
}

impl Session {
    /// Run `command` through the login shell and collect its output; the command is killed
    /// (channel closed) and [`SshError::Timeout`] returned if it runs longer than `timeout`.
    pub async fn exec(&self, command: &str, timeout: Duration) -> Result<ExecOutput, SshError> {
        let _ = (command, timeout);
        unimplemented!("filled in by the transport work")
    }

    /// Close the connection politely.
    pub async fn close(&self) {}
}
