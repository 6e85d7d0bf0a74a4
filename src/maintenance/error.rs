//! Why a node's maintenance (drain, Ceph gate, reboot) did not complete. The application layer
//! matches on these (a lost connection is `unreachable`, an interruption is not a failure)
//! instead of reading prefixes of strings.

use super::remote::RemoteError;
use crate::ssh::SshError;

/// Why the reboot of a node did not complete.
#[derive(Debug, thiserror::Error)]
pub enum RebootError {
    /// Guests are running and the policy is `refuse`.
    #[error("guests are running: {0}; migrate them, or pass --guests shutdown|ignore")]
    GuestsRunning(String),
    /// The node is already in HA maintenance that this run did not switch on.
    #[error("the node is already in HA maintenance that this run did not switch on ({0}); someone else may be working on it: pass --allow-maintained to go on (its maintenance is then left on), or wait")]
    Maintained(String),
    /// Taking the node down would cost the cluster its quorum.
    #[error("{0}")]
    Quorum(super::health::QuorumGateError),
    /// No new boot id within the deadline.
    #[error("did not come back with a new boot id within {}", humantime::format_duration(*.0))]
    NeverReturned(std::time::Duration),
    /// Back with a new boot id, but a service or the cluster is not healthy.
    #[error("came back (new boot id), but not healthy within {}: {why}", humantime::format_duration(*.within))]
    Unhealthy {
        /// The deadline.
        within: std::time::Duration,
        /// What is not healthy (each unit named).
        why: String,
    },
    /// HA guests did not leave the node.
    #[error("HA services did not leave the node within {}: {left}", humantime::format_duration(*.within))]
    DrainTimeout {
        /// The deadline.
        within: std::time::Duration,
        /// Services still on the node.
        left: String,
    },
    /// A command of the reboot sequence failed.
    #[error("{0}")]
    Command(String),
    /// A remote command that had to succeed did not (command, exit status, stderr).
    #[error(transparent)]
    Remote(#[from] RemoteError),
    /// A guest could not be moved away: the node is not rebooted.
    #[error("migration of {guest} to {target} failed: {detail}; the node is not rebooted")]
    Migration {
        /// `qm 100 (web)`.
        guest: String,
        /// Target node.
        target: String,
        /// What the tool said.
        detail: String,
    },
    /// After the reboot, guests of the drain could not be brought back as they left (back on
    /// their node and running, when they were): each named with why.
    #[error("guests not brought back as they left: {0}")]
    GuestsNotRestored(String),
    /// A moved guest could not be moved back after the reboot (the node is rebooted).
    #[error("moving {guest} back from {from} to {target} failed: {detail}; the node is rebooted, the guest is still away")]
    ReturnMigration {
        /// `qm 100 (web)`.
        guest: String,
        /// Where it is.
        from: String,
        /// Its node.
        target: String,
        /// What the tool said.
        detail: String,
    },
    /// Ceph is not safe, or its state is unknown.
    #[error("ceph: {0}")]
    Ceph(String),
    /// The connection failed where the node was expected to answer.
    #[error("{0}")]
    Ssh(#[from] SshError),
    /// Interrupted; the state says where.
    #[error("interrupted while {0}")]
    Interrupted(String),
}
