//! One node's open SSH session as the playbook engine uses it: commands with the node's
//! deadline, file reads, and the node's identity.

use std::time::Duration;

use super::error::StepError;
use crate::inventory::Node;
use crate::quote::shell_quote;
use crate::ssh::{ExecOutput, ExitStatus, Session, SshError};

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

    /// A file's content, or `None` when it does not exist.
    pub async fn read(&self, path: &str) -> Result<Option<String>, StepError> {
        let p = shell_quote(path);
        let out = self
            .sh(&format!("if [ -e {p} ]; then cat {p}; else exit 3; fi"))
            .await?;
        match out.exit {
            ExitStatus::Code(0) => Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned())),
            ExitStatus::Code(3) => Ok(None),
            _ => Err(StepError::Remote(format!(
                "cannot read {path}: {}",
                first_line(&out.stderr)
            ))),
        }
    }
}

/// The first line of remote output, sanitised and cut to a readable length.
pub fn first_line(b: &[u8]) -> String {
    crate::sanitize::first_line(&String::from_utf8_lossy(b), 160)
}
