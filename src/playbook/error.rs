//! Typed errors of playbook execution: what stopped a step (a reboot's own errors are
//! `maintenance::error::RebootError`).
//! The application layer matches on these (a lost connection is `unreachable`, an interruption
//! is not a failure) instead of reading prefixes of strings.

use crate::maintenance::error::RebootError;
use crate::maintenance::remote::RemoteError;
use crate::ssh::SshError;

/// Why a step could not complete.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The SSH connection failed or a command timed out.
    #[error("{0}")]
    Ssh(#[from] SshError),
    /// A template did not render (the message carries file:line:column).
    #[error("{0}")]
    Template(String),
    /// A remote command the step relies on failed.
    #[error("{0}")]
    Remote(String),
    /// A remote command that had to succeed did not (command, exit status, stderr).
    #[error(transparent)]
    Command(#[from] RemoteError),
    /// The reboot did not complete.
    #[error(transparent)]
    Reboot(#[from] RebootError),
    /// Ctrl-C, SIGTERM or SIGHUP came first.
    #[error("interrupted")]
    Interrupted,
}

impl From<StepError> for RebootError {
    fn from(e: StepError) -> Self {
        match e {
            StepError::Ssh(s) => RebootError::Ssh(s),
            StepError::Reboot(r) => r,
            StepError::Interrupted => RebootError::Interrupted("waiting".into()),
            StepError::Command(c) => RebootError::Remote(c),
            other => RebootError::Command(other.to_string()),
        }
    }
}
