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
//!
//! Once connected, no wait on the server lasts longer than the node's connect timeout without an
//! answer (`channel.rs`): a node that goes dark mid-run is [`SshError::ConnectionLost`] quickly.

pub mod auth;
mod channel;
pub use channel::{Stream, Tap};
pub mod config;
pub use config::parse_destination;
pub mod known_hosts;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use russh::client::{self, Handle};
use russh::keys::{Algorithm, PublicKey};
use russh::Preferred;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

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
    /// known_hosts files checked in order (the inventory's first, then `~/.ssh/known_hosts`);
    /// accept-new records a key in the first.
    pub known_hosts: Vec<PathBuf>,
    /// The system's known_hosts files (OpenSSH's `GlobalKnownHostsFile`,
    /// [`known_hosts::GLOBAL_FILES`]), checked after `known_hosts` and never written.
    pub global_known_hosts: Vec<PathBuf>,
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
    /// ssh-agent socket; `None` means `$SSH_AUTH_SOCK` when `use_agent` is set.
    pub agent_socket: Option<PathBuf>,
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

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit {c}"),
            ExitStatus::Signal(s) => write!(f, "killed by SIG{s}"),
        }
    }
}

/// The result of one remote command.
#[derive(Debug, Clone, Serialize)]
pub struct ExecOutput {
    /// What the command wrote to stdout, unaltered: all of it, or the first `cap` bytes
    /// ([`Session::exec_capped`]).
    pub stdout: Vec<u8>,
    /// What the command wrote to stderr, likewise.
    pub stderr: Vec<u8>,
    /// Bytes of stdout read past the cap and not kept (0: `stdout` is complete).
    pub stdout_dropped: u64,
    /// Bytes of stderr read past the cap and not kept.
    pub stderr_dropped: u64,
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
    /// An established connection stopped answering (no reply within the node's connect timeout
    /// to a channel open or to a keepalive while a command was silent) or was closed under a
    /// running command: the node went down or off the network.
    #[error("connection lost: {0}")]
    ConnectionLost(String),
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
        /// The offered key (none for a host certificate), for a caller that asks the operator
        /// and records it (`inventory discover` on a terminal).
        key: Option<Box<PublicKey>>,
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

impl SshError {
    /// Whether an established connection was lost (the node is down or unreachable now), as
    /// opposed to a command that failed or timed out on a live connection.
    pub fn is_connection_lost(&self) -> bool {
        matches!(self, SshError::ConnectionLost(_))
    }
}

/// At most this many channels are open on one connection at once (OpenSSH's `MaxSessions`
/// defaults to 10).
pub const MAX_CHANNELS: usize = 8;

/// What the host-key check concluded, kept by the handler so a refused connection can be
/// turned into a precise error after russh gives up.
#[derive(Debug, Clone)]
enum KeyDecision {
    Unknown {
        fingerprint: String,
        key: Option<Box<PublicKey>>,
    },
    Changed {
        file: PathBuf,
        line: usize,
    },
    LearnFailed(String),
}

/// The russh client handler: host-key verification only.
struct Client {
    host: String,
    lookup: String,
    known: Vec<known_hosts::KnownKey>,
    files: Vec<PathBuf>,
    policy: HostKeyPolicy,
    decision: Arc<Mutex<Option<KeyDecision>>>,
}

impl client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        offered: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key: &PublicKey = match offered {
            russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } => key,
            russh::keys::PublicKeyOrCertificate::Certificate(_) => {
                *self.decision.lock().expect("decision") = Some(KeyDecision::Unknown {
                    fingerprint: "host certificate (not supported)".into(),
                    key: None,
                });
                return Ok(false);
            }
        };
        let verdict = known_hosts::check(&self.known, key);
        let decision = match (verdict, self.policy) {
            (_, HostKeyPolicy::Insecure) => {
                tracing::warn!(
                    host = %self.host,
                    "INSECURE: accepting host key {} without verification (--host-key-policy insecure)",
                    known_hosts::fingerprint(key)
                );
                return Ok(true);
            }
            (known_hosts::Verdict::Known { .. }, _) => return Ok(true),
            (known_hosts::Verdict::Changed { file, line }, _) => {
                KeyDecision::Changed { file, line }
            }
            (known_hosts::Verdict::Unknown, HostKeyPolicy::AcceptNew) => {
                let Some(file) = self.files.first() else {
                    *self.decision.lock().expect("decision") = Some(KeyDecision::LearnFailed(
                        "no known_hosts file to record the key in".into(),
                    ));
                    return Ok(false);
                };
                // Under the file's lock, on a blocking thread: many nodes may be learning keys
                // at once, and another may have recorded this host since `known` was read.
                let (path, lookup, offered) = (file.clone(), self.lookup.clone(), key.clone());
                let learned = tokio::task::spawn_blocking(move || {
                    known_hosts::learn(&path, &lookup, &offered)
                })
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
                match learned {
                    Ok(known_hosts::Learned::Added) => {
                        tracing::warn!(
                            host = %self.host,
                            "added host key {} to {}",
                            known_hosts::fingerprint(key),
                            file.display()
                        );
                        return Ok(true);
                    }
                    Ok(known_hosts::Learned::AlreadyKnown) => return Ok(true),
                    Ok(known_hosts::Learned::Conflict { file, line }) => {
                        KeyDecision::Changed { file, line }
                    }
                    Err(e) => KeyDecision::LearnFailed(format!("{}: {e}", file.display())),
                }
            }
            (known_hosts::Verdict::Unknown, HostKeyPolicy::Strict) => KeyDecision::Unknown {
                fingerprint: known_hosts::fingerprint(key),
                key: Some(Box::new(key.clone())),
            },
        };
        *self.decision.lock().expect("decision") = Some(decision);
        Ok(false)
    }
}

struct Inner {
    handle: Handle<Client>,
    channels: Semaphore,
    become_root: bool,
    /// How long a live connection may take to answer (the node's connect timeout): bounds every
    /// wait on the server once connected, so a node that goes dark is noticed, not waited for.
    answer_within: Duration,
    /// The jump host's connection, kept open as long as this one.
    _jump: Option<Session>,
}

/// An open, authenticated connection to one node. Clones share the connection.
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

/// The effective connection parameters after ssh_config.
struct Resolved {
    host: String,
    port: u16,
    user: String,
    identity_files: Vec<PathBuf>,
    jump: Option<ConnectSpec>,
}

fn resolve(spec: &ConnectSpec) -> Result<Resolved, SshError> {
    let cfg = match &spec.ssh_config {
        Some(file) => {
            config::lookup(file, &spec.name).map_err(|e| SshError::Protocol(e.to_string()))?
        }
        None => config::HostConfig::default(),
    };
    // The inventory's address wins, unless it is just the node's name (the default), in which
    // case ssh_config's HostName may say where the name really is.
    let host = match &cfg.host_name {
        Some(h) if spec.host == spec.name => h.clone(),
        _ => spec.host.clone(),
    };
    let jump = match (&spec.jump, &cfg.proxy_jump) {
        (Some(j), _) => Some((**j).clone()),
        (None, Some(pj)) => {
            let (user, jhost, port) = config::parse_destination(pj);
            Some(ConnectSpec {
                name: jhost.clone(),
                host: jhost,
                port,
                user,
                jump: None,
                become_root: false,
                ..spec.clone()
            })
        }
        (None, None) => None,
    };
    Ok(Resolved {
        host,
        port: spec.port.or(cfg.port).unwrap_or(22),
        user: spec
            .user
            .clone()
            .or(cfg.user)
            .unwrap_or_else(|| "root".to_string()),
        identity_files: auth::identity_candidates(&spec.identity_files, &cfg.identity_files),
        jump,
    })
}

fn client_config(spec: &ConnectSpec, host_keys: Vec<Algorithm>) -> client::Config {
    let preferred = Preferred {
        key: host_keys.into(),
        ..Preferred::DEFAULT
    };
    client::Config {
        preferred,
        keepalive_interval: spec.keepalive,
        keepalive_max: 3,
        nodelay: true,
        inactivity_timeout: None,
        ..Default::default()
    }
}

/// Open one connection to the node described by `spec` (through its jump host if any).
pub async fn connect(spec: &ConnectSpec) -> Result<Session, SshError> {
    let deadline = spec.connect_timeout;
    match tokio::time::timeout(deadline, connect_inner(spec)).await {
        Ok(r) => r,
        Err(_) => Err(SshError::Timeout(deadline)),
    }
}

fn connect_inner(
    spec: &ConnectSpec,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Session, SshError>> + Send + '_>> {
    Box::pin(async move {
        let r = resolve(spec)?;
        let lookup = known_hosts::lookup_name(&r.host, r.port);
        // The user's files, then the system's (OpenSSH's UserKnownHostsFile, then
        // GlobalKnownHostsFile): a key is known, changed or revoked by any of them.
        let checked: Vec<PathBuf> = spec
            .known_hosts
            .iter()
            .chain(&spec.global_known_hosts)
            .cloned()
            .collect();
        let known = known_hosts::keys_for(&checked, &lookup);
        let algos = known_hosts::preferred_algorithms(&known, &Preferred::DEFAULT.key);
        let config = Arc::new(client_config(spec, algos));
        let decision = Arc::new(Mutex::new(None));
        let handler = Client {
            host: spec.name.clone(),
            lookup: lookup.clone(),
            known,
            // Only the user's files are written (accept-new), never the system's.
            files: spec.known_hosts.clone(),
            policy: spec.host_key_policy,
            decision: decision.clone(),
        };
        let started = Instant::now();
        let (jump_session, handshake) = match &r.jump {
            Some(jspec) => {
                let jump = connect_inner(jspec).await.map_err(|e| match e {
                    SshError::Unreachable(m) => {
                        SshError::Unreachable(format!("jump host {}: {m}", jspec.host))
                    }
                    other => other,
                })?;
                let channel = jump
                    .inner
                    .handle
                    .channel_open_direct_tcpip(r.host.clone(), u32::from(r.port), "127.0.0.1", 0)
                    .await
                    .map_err(|e| {
                        SshError::Unreachable(format!(
                            "jump host {} cannot reach {}:{}: {e}",
                            jspec.host, r.host, r.port
                        ))
                    })?;
                let hs = client::connect_stream(config, channel.into_stream(), handler).await;
                (Some(jump), hs)
            }
            None => {
                let tcp = tokio::net::TcpStream::connect((r.host.as_str(), r.port))
                    .await
                    .map_err(|e| SshError::Unreachable(format!("{}:{}: {e}", r.host, r.port)))?;
                let _ = tcp.set_nodelay(true);
                (None, client::connect_stream(config, tcp, handler).await)
            }
        };
        let mut handle = match handshake {
            Ok(h) => h,
            Err(e) => {
                let decided = decision.lock().expect("decision").take();
                return Err(match decided {
                    Some(KeyDecision::Changed { file, line }) => SshError::HostKeyChanged {
                        host: lookup,
                        file,
                        line,
                    },
                    Some(KeyDecision::Unknown { fingerprint, key }) => SshError::HostKeyUnknown {
                        host: lookup,
                        fingerprint,
                        key,
                    },
                    Some(KeyDecision::LearnFailed(m)) => {
                        SshError::Protocol(format!("cannot record host key: {m}"))
                    }
                    None => SshError::Protocol(format!("handshake with {lookup} failed: {e}")),
                });
            }
        };
        let agent = if spec.use_agent {
            spec.agent_socket
                .clone()
                .or_else(|| std::env::var_os("SSH_AUTH_SOCK").map(PathBuf::from))
                .filter(|p| !p.as_os_str().is_empty())
        } else {
            None
        };
        auth::authenticate(&mut handle, &r.user, agent.as_deref(), &r.identity_files).await?;
        tracing::debug!(node = %spec.name, "connected in {:?}", started.elapsed());
        Ok(Session {
            inner: Arc::new(Inner {
                handle,
                channels: Semaphore::new(MAX_CHANNELS),
                become_root: spec.become_root,
                answer_within: spec.connect_timeout,
                _jump: jump_session,
            }),
        })
    })
}
