//! One node's open SSH session as the playbook engine and maintenance use it: commands with the
//! node's deadline, commands that must succeed (a typed [`RemoteError`] naming the command, its
//! exit status and the first line of its stderr), file reads, and the node's identity.
//!
//! [`NodeShell`] is what the reboot state machine, the drain, the health checks and the Ceph
//! gate need of a node, as a trait: [`Remote`] is the real one (SSH), and unit tests hand them
//! a scripted shell (command -> output, recording what ran) so the machine runs without a lab.

use std::future::Future;
use std::pin::Pin;
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

/// A future a [`NodeShell`] returns (boxed, so the trait can be used as `&dyn NodeShell`).
pub type ShellFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One attempt to reach a node again after its reboot ([`NodeShell::reconnect`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconnect {
    /// Nothing listens yet (sshd is not up): the next attempt can come soon.
    NotListening,
    /// Listening, but no session could be opened yet.
    NotYet,
    /// A new session is open and replaces the old one.
    Connected,
}

/// A node's shell as the reboot state machine and what it calls (drain, health, Ceph gate)
/// use it: commands with the node's deadline (or one of their own), the session's state, and
/// reconnecting after a reboot.
pub trait NodeShell: Send + Sync {
    /// The node.
    fn node(&self) -> &Node;

    /// The per-command deadline.
    fn timeout(&self) -> Duration;

    /// Run `cmd` with the node's command deadline.
    fn sh<'a>(&'a self, cmd: &'a str) -> ShellFuture<'a, Result<ExecOutput, SshError>>;

    /// Run `cmd` with a deadline of its own (a probe shorter, a migration longer).
    fn sh_within<'a>(
        &'a self,
        cmd: &'a str,
        within: Duration,
    ) -> ShellFuture<'a, Result<ExecOutput, SshError>>;

    /// Run `cmd` with `input` on its standard input.
    fn sh_stdin<'a>(
        &'a self,
        cmd: &'a str,
        input: &'a [u8],
    ) -> ShellFuture<'a, Result<ExecOutput, SshError>>;

    /// The session has dropped (the node went down).
    fn is_closed(&self) -> bool;

    /// Try once to open a new session to the node (after its reboot).
    fn reconnect(&mut self) -> ShellFuture<'_, Reconnect>;

    /// Run `cmd` with the node's command deadline, handing its output to `tap` as it arrives.
    fn sh_tapped<'a>(
        &'a self,
        cmd: &'a str,
        tap: crate::ssh::Tap<'a>,
    ) -> ShellFuture<'a, Result<ExecOutput, SshError>>;

    /// The SSH session itself, for the probes that time their own round trips (clock
    /// sampling); `None` when there is none (a scripted shell).
    fn session(&self) -> Option<&Session> {
        None
    }

    /// Close the session (the node's work is over).
    fn close(&self) -> ShellFuture<'_, ()>;

    /// Run `cmd`: its exit status and stdout as text.
    fn text<'a>(&'a self, cmd: &'a str) -> ShellFuture<'a, Result<(ExitStatus, String), SshError>> {
        Box::pin(async move {
            let o = self.sh(cmd).await?;
            Ok((o.exit, String::from_utf8_lossy(&o.stdout).into_owned()))
        })
    }

    /// Run `cmd`, which must exit 0: its stdout as text.
    fn ok<'a>(&'a self, cmd: &'a str) -> ShellFuture<'a, Result<String, RemoteError>> {
        Box::pin(async move { must_succeed(cmd, self.sh(cmd).await?) })
    }

    /// A file's content, or `None` when it does not exist.
    fn read<'a>(&'a self, path: &'a str) -> ShellFuture<'a, Result<Option<String>, RemoteError>> {
        Box::pin(async move {
            let p = shell_quote(path);
            read_result(&p, self.sh(&read_cmd(&p)).await?)
        })
    }
}

/// `cmd`'s stdout when it exited 0, else its failure.
fn must_succeed(cmd: &str, o: ExecOutput) -> Result<String, RemoteError> {
    if o.exit != ExitStatus::Code(0) {
        return Err(RemoteError::failed(cmd, &o));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// The command reading the file at (quoted) `p`: its content, or exit 3 when there is none.
fn read_cmd(p: &str) -> String {
    format!("if [ -e {p} ]; then cat {p}; else exit 3; fi")
}

/// What [`read_cmd`] said of the file at (quoted) `p`.
fn read_result(p: &str, out: ExecOutput) -> Result<Option<String>, RemoteError> {
    match out.exit {
        ExitStatus::Code(0) => Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned())),
        ExitStatus::Code(3) => Ok(None),
        _ => Err(RemoteError::failed(&format!("cat {p}"), &out)),
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
        must_succeed(cmd, self.sh(cmd).await?)
    }

    /// A file's content, or `None` when it does not exist.
    pub async fn read(&self, path: &str) -> Result<Option<String>, RemoteError> {
        let p = shell_quote(path);
        read_result(&p, self.sh(&read_cmd(&p)).await?)
    }

    /// One attempt to open a new session after a reboot. While the node is down, a plain TCP
    /// connect with a 1 s limit tells when sshd listens again (an SSH connect attempt could sit
    /// in SYN retransmissions for the whole connect timeout and notice the node seconds late).
    async fn reconnect_once(&mut self) -> Reconnect {
        let spec = self.node.connect_spec();
        if spec.jump.is_none() {
            let port = spec.port.unwrap_or(22);
            let probe = tokio::time::timeout(
                Duration::from_secs(1),
                tokio::net::TcpStream::connect((spec.host.as_str(), port)),
            );
            if !matches!(probe.await, Ok(Ok(_))) {
                return Reconnect::NotListening;
            }
        }
        match crate::ssh::connect(&spec).await {
            Ok(session) => {
                self.session = session;
                Reconnect::Connected
            }
            Err(_) => Reconnect::NotYet,
        }
    }
}

impl NodeShell for Remote {
    fn node(&self) -> &Node {
        &self.node
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }

    fn sh<'a>(&'a self, cmd: &'a str) -> ShellFuture<'a, Result<ExecOutput, SshError>> {
        Box::pin(Remote::sh(self, cmd))
    }

    fn sh_within<'a>(
        &'a self,
        cmd: &'a str,
        within: Duration,
    ) -> ShellFuture<'a, Result<ExecOutput, SshError>> {
        tracing::trace!(node = %self.node.name, cmd, ?within, "exec");
        Box::pin(self.session.exec(cmd, within))
    }

    fn sh_stdin<'a>(
        &'a self,
        cmd: &'a str,
        input: &'a [u8],
    ) -> ShellFuture<'a, Result<ExecOutput, SshError>> {
        Box::pin(Remote::sh_stdin(self, cmd, input))
    }

    fn is_closed(&self) -> bool {
        self.session.is_closed()
    }

    fn reconnect(&mut self) -> ShellFuture<'_, Reconnect> {
        Box::pin(self.reconnect_once())
    }

    fn sh_tapped<'a>(
        &'a self,
        cmd: &'a str,
        tap: crate::ssh::Tap<'a>,
    ) -> ShellFuture<'a, Result<ExecOutput, SshError>> {
        Box::pin(Remote::sh_tapped(self, cmd, tap))
    }

    fn session(&self) -> Option<&Session> {
        Some(&self.session)
    }

    fn close(&self) -> ShellFuture<'_, ()> {
        Box::pin(self.session.close())
    }

    fn text<'a>(&'a self, cmd: &'a str) -> ShellFuture<'a, Result<(ExitStatus, String), SshError>> {
        Box::pin(Remote::text(self, cmd))
    }

    fn ok<'a>(&'a self, cmd: &'a str) -> ShellFuture<'a, Result<String, RemoteError>> {
        Box::pin(Remote::ok(self, cmd))
    }

    fn read<'a>(&'a self, path: &'a str) -> ShellFuture<'a, Result<Option<String>, RemoteError>> {
        Box::pin(Remote::read(self, path))
    }
}

/// The first line of remote output, sanitised and cut to a readable length.
pub fn first_line(b: &[u8]) -> String {
    crate::sanitize::first_line(&String::from_utf8_lossy(b), 160)
}
