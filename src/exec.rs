//! `pvefleet exec`: one command on every targeted node, one [`NodeResult`] per node.
//!
//! Connection failures are values, not early returns: an unreachable node, a changed host key or a
//! timeout becomes that node's status while the other nodes run to completion.
//!
//! Output is bounded: each node keeps at most `max_output` bytes of stdout and as many of stderr
//! (the first bytes, byte-exact); what came after is read, counted and dropped, so a node that
//! prints 300 MB costs 16 MiB per stream by default, not 300 MB (or several times that while
//! rendering). The counts are in the results (`stdout_truncated_bytes`, `stderr_truncated_bytes`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::fanout::{self, EventSink, Outcome};
use crate::inventory::Node;
use crate::ssh::{self, ExitStatus, SshError};

/// How one node's run ended, from the operator's point of view.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum NodeStatus {
    /// Ran, exit code 0.
    Ok,
    /// Ran, non-zero exit code or killed by a signal.
    Failed,
    /// Did not finish within the command timeout.
    Timeout,
    /// Could not connect (refused, no route, black-holed, connect timeout).
    Unreachable,
    /// The host key was unknown (strict policy) or has changed.
    HostKey,
    /// Authentication (or sudo) failed.
    Auth,
    /// Ctrl-C came first.
    Cancelled,
    /// Anything else (protocol error, internal error).
    Error,
}

impl NodeStatus {
    /// The word shown in tables and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Ok => "ok",
            NodeStatus::Failed => "failed",
            NodeStatus::Timeout => "timeout",
            NodeStatus::Unreachable => "unreachable",
            NodeStatus::HostKey => "host-key",
            NodeStatus::Auth => "auth",
            NodeStatus::Cancelled => "cancelled",
            NodeStatus::Error => "error",
        }
    }

    /// Whether the node could not be reached at all (no command ran).
    pub fn is_connection_failure(self) -> bool {
        matches!(
            self,
            NodeStatus::Unreachable | NodeStatus::HostKey | NodeStatus::Auth
        )
    }

    /// The status an error of [`ssh::connect`] gives a node. A timeout while connecting is
    /// `unreachable`.
    pub fn of_connect_error(e: &SshError) -> NodeStatus {
        match e {
            SshError::Timeout(_) => NodeStatus::Unreachable,
            other => NodeStatus::of_ssh_error(other),
        }
    }

    /// The status any error on an established session gives a node: a command over its
    /// deadline is `timeout`; a connection lost under it (the node went down or dark, see
    /// [`SshError::is_connection_lost`]) is `unreachable`, like a node never reached.
    pub fn of_ssh_error(e: &SshError) -> NodeStatus {
        match e {
            SshError::Timeout(_) => NodeStatus::Timeout,
            SshError::Unreachable(_) | SshError::ConnectionLost(_) => NodeStatus::Unreachable,
            SshError::HostKeyChanged { .. } | SshError::HostKeyUnknown { .. } => {
                NodeStatus::HostKey
            }
            SshError::AuthFailed { .. } | SshError::SudoPassword => NodeStatus::Auth,
            SshError::Protocol(_) => NodeStatus::Error,
        }
    }

    /// The status an error of a running command gives a node (the same as
    /// [`NodeStatus::of_ssh_error`]).
    pub fn of_exec_error(e: &SshError) -> NodeStatus {
        NodeStatus::of_ssh_error(e)
    }
}

/// The result of running one command on one node.
#[derive(Debug, Clone, Serialize)]
pub struct NodeResult {
    /// Node name.
    pub node: String,
    /// Address connected to.
    pub address: String,
    /// Outcome.
    pub status: NodeStatus,
    /// Exit status, when the command ran to its end.
    pub exit: Option<ExitStatus>,
    /// Standard output (lossless bytes; rendered as UTF-8 text, lossily, in reports).
    #[serde(serialize_with = "lossy_text")]
    pub stdout: Vec<u8>,
    /// Standard error.
    #[serde(serialize_with = "lossy_text")]
    pub stderr: Vec<u8>,
    /// Bytes of stdout past the `max_output` cap, read and dropped (0: `stdout` is complete).
    pub stdout_truncated_bytes: u64,
    /// Bytes of stderr past the cap, read and dropped.
    pub stderr_truncated_bytes: u64,
    /// Wall time for this node, connect included.
    #[serde(rename = "duration_ms", serialize_with = "millis")]
    pub duration: Duration,
    /// What went wrong, when something did (connection errors, timeouts).
    pub error: Option<String>,
}

fn lossy_text<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(b))
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

impl NodeResult {
    fn empty(node: &Node, status: NodeStatus, duration: Duration, error: Option<String>) -> Self {
        NodeResult {
            node: node.name.clone(),
            address: node.address.clone(),
            status,
            exit: None,
            stdout: Vec::new(),
            stderr: Vec::new(),
            stdout_truncated_bytes: 0,
            stderr_truncated_bytes: 0,
            duration,
            error,
        }
    }

    /// The exit code, if the command exited normally.
    pub fn exit_code(&self) -> Option<u32> {
        match self.exit {
            Some(ExitStatus::Code(c)) => Some(c),
            _ => None,
        }
    }
}

/// Options of one `exec` run.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// Maximum nodes worked on at once.
    pub forks: usize,
    /// Overrides every node's command timeout.
    pub timeout: Option<Duration>,
    /// Bytes of each stream (stdout, stderr) kept per node; the rest is counted and dropped.
    pub max_output: usize,
    /// What every node's command reads on its standard input (`--stdin`: the same bytes to
    /// each), then end of file; `None`: end of file at once.
    pub stdin: Option<Arc<[u8]>>,
}

/// The most `exec --stdin` reads from the controller's standard input: it is held in memory
/// once and sent to every node, so it is bounded.
pub const MAX_STDIN: usize = 64 << 20;

/// Why `exec --stdin` refused its input.
#[derive(Debug, thiserror::Error)]
pub enum StdinError {
    /// More than [`MAX_STDIN`] bytes.
    #[error("--stdin takes at most {} MiB of input; copy larger files with a playbook's file step or scp", MAX_STDIN >> 20)]
    TooLarge,
    /// Reading failed.
    #[error("cannot read standard input: {0}")]
    Read(#[from] std::io::Error),
}

/// Read all of `input` for `exec --stdin`, refusing more than `cap` bytes (without reading
/// more than one byte past it).
pub fn read_stdin(input: impl std::io::Read, cap: usize) -> Result<Vec<u8>, StdinError> {
    use std::io::Read;
    let mut buf = Vec::new();
    input.take(cap as u64 + 1).read_to_end(&mut buf)?;
    if buf.len() > cap {
        return Err(StdinError::TooLarge);
    }
    Ok(buf)
}

/// The default `--max-output`: 16 MiB per stream and node.
pub const DEFAULT_MAX_OUTPUT: usize = 16 << 20;

/// Why a `--max-output` size was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// Not digits with an optional `K`/`M`/`G` suffix (the text as given).
    #[error("{0:?} is not a size; expected bytes or a number with K, M or G (e.g. 16M)")]
    NotASize(String),
    /// More bytes than this machine can address (the text as given).
    #[error("{0:?} is too large")]
    TooLarge(String),
    /// Zero bytes.
    #[error("the output cap must be at least 1 byte")]
    Zero,
}

/// Parse a size for `--max-output`: bytes (`1048576`), or a number with a binary suffix
/// `K`/`M`/`G` (also `KiB`/`MiB`/`GiB`, any case; `16M` is 16 MiB). Zero is refused.
pub fn parse_size(text: &str) -> Result<usize, SizeError> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let bad = || SizeError::NotASize(text.to_string());
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(bad()),
    };
    let bytes = n
        .checked_mul(1u64 << shift)
        .and_then(|b| usize::try_from(b).ok())
        .ok_or_else(|| SizeError::TooLarge(text.to_string()))?;
    if bytes == 0 {
        return Err(SizeError::Zero);
    }
    Ok(bytes)
}

/// Connect to `node` and run `command` (with `stdin` on its standard input, if any), keeping at
/// most `max_output` bytes of each stream; every failure becomes the node's status.
pub async fn exec_on_node(
    node: &Node,
    command: &str,
    timeout: Option<Duration>,
    max_output: usize,
    stdin: Option<&[u8]>,
) -> NodeResult {
    let start = Instant::now();
    let session = match ssh::connect(&node.connect_spec()).await {
        Ok(s) => s,
        Err(e) => {
            return NodeResult::empty(
                node,
                NodeStatus::of_connect_error(&e),
                start.elapsed(),
                Some(e.to_string()),
            )
        }
    };
    let timeout = timeout.unwrap_or(node.command_timeout);
    let result = match stdin {
        Some(input) => {
            session
                .exec_capped_with_stdin(command, input, timeout, max_output)
                .await
        }
        None => session.exec_capped(command, timeout, max_output).await,
    };
    // A lost connection is just dropped: there is no one to say goodbye to.
    if !matches!(&result, Err(e) if e.is_connection_lost()) {
        session.close().await;
    }
    match result {
        Ok(out) => {
            let status = match out.exit {
                ExitStatus::Code(0) => NodeStatus::Ok,
                _ => NodeStatus::Failed,
            };
            NodeResult {
                node: node.name.clone(),
                address: node.address.clone(),
                status,
                exit: Some(out.exit),
                stdout: out.stdout,
                stderr: out.stderr,
                stdout_truncated_bytes: out.stdout_dropped,
                stderr_truncated_bytes: out.stderr_dropped,
                duration: start.elapsed(),
                error: None,
            }
        }
        Err(e) => NodeResult::empty(
            node,
            NodeStatus::of_exec_error(&e),
            start.elapsed(),
            Some(e.to_string()),
        ),
    }
}

/// Run `command` on every node, at most `opts.forks` at once, until done or cancelled.
pub async fn exec_all(
    nodes: Vec<Node>,
    command: &str,
    opts: &ExecOptions,
    cancel: &CancellationToken,
    events: Option<EventSink>,
) -> Vec<NodeResult> {
    let command = command.to_string();
    let (timeout, max_output) = (opts.timeout, opts.max_output);
    let stdin = opts.stdin.clone();
    let out = fanout::run(
        nodes,
        opts.forks,
        cancel,
        events,
        |n: &Node| n.name.clone(),
        |r: &NodeResult| r.status == NodeStatus::Ok,
        move |node: Node| {
            let (command, stdin) = (command.clone(), stdin.clone());
            async move { exec_on_node(&node, &command, timeout, max_output, stdin.as_deref()).await }
        },
    )
    .await;
    out.into_iter()
        .map(|(node, outcome)| match outcome {
            Outcome::Done(r) => r,
            Outcome::Cancelled => NodeResult::empty(
                &node,
                NodeStatus::Cancelled,
                Duration::ZERO,
                Some("interrupted".into()),
            ),
            Outcome::Panicked(m) => NodeResult::empty(
                &node,
                NodeStatus::Error,
                Duration::ZERO,
                Some(format!("internal error: {m}")),
            ),
        })
        .collect()
}

/// Exit code of `pvefleet exec` for these results (documented in the README).
pub fn exit_code(results: &[NodeResult]) -> u8 {
    use crate::exit;
    if results.iter().any(|r| r.status == NodeStatus::Cancelled) {
        exit::INTERRUPTED
    } else if results.iter().any(|r| r.status.is_connection_failure()) {
        exit::UNREACHABLE
    } else if results.iter().any(|r| r.status != NodeStatus::Ok) {
        exit::FAILED
    } else {
        exit::OK
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_connection_is_unreachable_and_a_slow_command_a_timeout() {
        let lost = SshError::ConnectionLost("no answer within 2s while opening a channel".into());
        assert!(lost.is_connection_lost());
        assert_eq!(NodeStatus::of_ssh_error(&lost), NodeStatus::Unreachable);
        assert_eq!(NodeStatus::of_exec_error(&lost), NodeStatus::Unreachable);
        let slow = SshError::Timeout(Duration::from_secs(1));
        assert!(!slow.is_connection_lost());
        assert_eq!(NodeStatus::of_ssh_error(&slow), NodeStatus::Timeout);
        assert_eq!(NodeStatus::of_connect_error(&slow), NodeStatus::Unreachable);
        assert_eq!(
            NodeStatus::of_ssh_error(&SshError::SudoPassword),
            NodeStatus::Auth
        );
    }

    #[test]
    fn sizes_take_bytes_and_binary_suffixes() {
        assert_eq!(parse_size("16M"), Ok(DEFAULT_MAX_OUTPUT));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("512 MiB"), Ok(512 << 20));
        for bad in ["", "M", "1.5M", "16X", "-1", "0", "99999999999999999999G"] {
            assert!(parse_size(bad).is_err(), "{bad:?} must be refused");
        }
        assert_eq!(
            parse_size("16X").unwrap_err().to_string(),
            "\"16X\" is not a size; expected bytes or a number with K, M or G (e.g. 16M)"
        );
        assert_eq!(
            parse_size("99999999999G").unwrap_err().to_string(),
            "\"99999999999G\" is too large"
        );
        assert_eq!(parse_size("0"), Err(SizeError::Zero));
    }

    #[test]
    fn stdin_is_read_whole_up_to_the_cap_and_refused_past_it() {
        assert_eq!(read_stdin(&b"a\nb\n"[..], 4).unwrap(), b"a\nb\n");
        assert_eq!(read_stdin(&b""[..], 4).unwrap(), b"");
        let e = read_stdin(&b"12345"[..], 4).unwrap_err();
        assert!(matches!(e, StdinError::TooLarge), "{e}");
        assert!(e.to_string().contains("at most 64 MiB"), "{e}");
    }

    #[test]
    fn exec_keeps_16_mib_by_default_and_takes_max_output() {
        use crate::cli::{Cli, Command};
        use clap::Parser;
        let max = |args: &[&str]| match Cli::try_parse_from(args).unwrap().command {
            Command::Exec(args) => args.max_output,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            max(&["pvefleet", "exec", "--", "uptime"]),
            DEFAULT_MAX_OUTPUT
        );
        assert_eq!(
            max(&["pvefleet", "exec", "--max-output", "1K", "--", "uptime"]),
            1024
        );
    }
}
