//! One node's open SSH session as the playbook engine and maintenance use it: commands with the
//! node's deadline, commands that must succeed (a typed [`RemoteError`] naming the command, its
//! exit status and the first line of its stderr), file reads, and the node's identity.

use std::time::Duration;

use crate::inventory::Node;
use crate::quote::shell_quote;
use crate::ssh::{ExecOutput, ExitStatus, Session, SshError};

/// A remote command that had to succeed and did not, or could not be run at all.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The connection failed or the command timed out.
    #[error(transparent)]
    Ssh(#[from] SshError),
    /// The command ran and failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        /// What ran (as sent, at most one line of it).
        command: String,
        /// Its exit status.
        status: ExitStatus,
        /// The first line of its stderr (sanitised), or of its stdout when stderr was empty.
        stderr: String,
    },
}

impl RemoteError {
    /// The failure of `command` as `out` reports it.
    pub fn failed(command: &str, out: &ExecOutput) -> RemoteError {
        let mut stderr = first_line(&out.stderr);
        if stderr.is_empty() {
            stderr = first_line(&out.stdout);
        }
        RemoteError::Failed {
            command: crate::sanitize::first_line(command, 120),
            status: out.exit.clone(),
            stderr,
        }
    }
}

/// A node and its session (replaced after a reboot).
pub struct Remote {
    /// The open session.
    pub session: Session,
    /// The node.
    pub node: Node,
    /// Per-command deadline.
    pub timeout: Duration,
}

impl Remote {
    /// Connect to `node`, with `timeout` as the per-command deadline.
    pub async fn connect(node: &Node, timeout: Duration) -> Result<Remote, SshError> {
        Ok(Remote {
            session: crate::ssh::connect(&node.connect_spec()).await?,
            node: node.clone(),
            timeout,
        })
    }

    /// Run `cmd` with the node's command deadline.
    pub async fn sh(&self, cmd: &str) -> Result<ExecOutput, SshError> {
        tracing::trace!(node = %self.node.name, cmd, "exec");
        self.session.exec(cmd, self.timeout).await
    }

    /// Run `cmd` with the node's command deadline, handing its output to `tap` as it arrives.
    pub async fn sh_tapped(
        &self,
        cmd: &str,
        tap: crate::ssh::Tap<'_>,
    ) -> Result<ExecOutput, SshError> {
        tracing::trace!(node = %self.node.name, cmd, "exec, output followed");
        self.session.exec_tapped(cmd, self.timeout, tap).await
    }

    /// Run `cmd` with `input` on its standard input (any size).
    pub async fn sh_stdin(&self, cmd: &str, input: &[u8]) -> Result<ExecOutput, SshError> {
        tracing::trace!(node = %self.node.name, cmd, bytes = input.len(), "exec with input");
        self.session.exec_with_stdin(cmd, input, self.timeout).await
    }

    /// Run `cmd`: its exit status and stdout as text.
    pub async fn text(&self, cmd: &str) -> Result<(ExitStatus, String), SshError> {
        let o = self.sh(cmd).await?;
        Ok((o.exit, String::from_utf8_lossy(&o.stdout).into_owned()))
    }

    /// Run `cmd`, which must exit 0: its stdout as text.
    pub async fn ok(&self, cmd: &str) -> Result<String, RemoteError> {
        let o = self.sh(cmd).await?;
        if o.exit != ExitStatus::Code(0) {
            return Err(RemoteError::failed(cmd, &o));
        }
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    }

    /// A file's content, or `None` when it does not exist.
    pub async fn read(&self, path: &str) -> Result<Option<String>, RemoteError> {
        let p = shell_quote(path);
        let cmd = format!("if [ -e {p} ]; then cat {p}; else exit 3; fi");
        let out = self.sh(&cmd).await?;
        match out.exit {
            ExitStatus::Code(0) => Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned())),
            ExitStatus::Code(3) => Ok(None),
            _ => Err(RemoteError::failed(&format!("cat {p}"), &out)),
        }
    }
}

/// The first line of remote output, sanitised and cut to a readable length.
pub fn first_line(b: &[u8]) -> String {
    crate::sanitize::first_line(&String::from_utf8_lossy(b), 160)
}
