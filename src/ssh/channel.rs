//! Commands over an open [`Session`]: one exec channel per command, its output collected (whole,
//! or up to a cap per stream), and every wait on the server bounded.
//!
//! Once a connection is established, nothing below waits on the server for longer than the
//! node's connect timeout (`answer_within`) without hearing from it: opening a channel, sending
//! the exec request, and a command that stays silent (its silence is probed with an OpenSSH
//! keepalive that must be answered). A node that goes down or off the network therefore ends a
//! command with [`SshError::ConnectionLost`] within that deadline, rather than after the command
//! timeout or the keepalive count (a minute by default).

use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use russh::{ChannelMsg, Sig};

use super::{ExecOutput, ExitStatus, Session, SshError};
use crate::quote::shell_quote;

/// The text sudo prints when it wants a password and `-n` forbids asking.
const SUDO_NEEDS_PASSWORD: &str = "a password is required";

/// One stream's output held in memory: the first `cap` bytes, and a count of the bytes that came
/// after and were dropped. The head is kept (not the tail) so that what is shown is what the
/// command printed first, byte-exact, and memory never exceeds `cap` per stream.
#[derive(Debug, Clone)]
pub struct CappedBuf {
    kept: Vec<u8>,
    dropped: u64,
    cap: usize,
}

impl CappedBuf {
    /// An empty buffer keeping at most `cap` bytes.
    pub fn new(cap: usize) -> CappedBuf {
        CappedBuf {
            kept: Vec::new(),
            dropped: 0,
            cap,
        }
    }

    /// Keep what fits of `data`, count the rest.
    pub fn push(&mut self, data: &[u8]) {
        let take = self.cap.saturating_sub(self.kept.len()).min(data.len());
        let needed = self.kept.len() + take;
        if needed > self.kept.capacity() {
            // Grow by doubling as Vec does, but never past the cap.
            let target = (self.kept.capacity() * 2).max(needed).min(self.cap);
            self.kept.reserve_exact(target - self.kept.len());
        }
        self.kept.extend_from_slice(&data[..take]);
        self.dropped += (data.len() - take) as u64;
    }

    /// The kept bytes and the dropped count.
    pub fn into_parts(self) -> (Vec<u8>, u64) {
        (self.kept, self.dropped)
    }
}

/// Which of a command's output streams a piece of output came on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error (the channel's extended data, type 1).
    Stderr,
}

/// Receives each piece of a command's output as it arrives.
pub type Tap<'a> = &'a (dyn Fn(Stream, &[u8]) + Send + Sync);

/// The transfer of a command's input (then end of file), polled beside its output.
type Sending<'a> = Pin<Box<dyn Future<Output = Result<(), russh::Error>> + Send + 'a>>;

type Ping<'a> = Pin<
    Box<
        dyn Future<Output = Result<Result<(), russh::Error>, tokio::time::error::Elapsed>>
            + Send
            + 'a,
    >,
>;

impl Session {
    /// Run `command` through the login shell and collect all its output; see
    /// [`Session::exec_capped`].
    pub async fn exec(&self, command: &str, timeout: Duration) -> Result<ExecOutput, SshError> {
        self.exec_capped(command, timeout, usize::MAX).await
    }

    /// Run `command` through the login shell, keeping at most `cap` bytes of each of stdout and
    /// stderr (the rest is read, counted in `*_dropped`, and discarded, so the command is never
    /// blocked by a full window).
    ///
    /// The command is signalled, its channel closed and [`SshError::Timeout`] returned if it runs
    /// longer than `timeout`; [`SshError::ConnectionLost`] is returned when the server stops
    /// answering for the node's connect timeout or the connection closes under the command.
    pub async fn exec_capped(
        &self,
        command: &str,
        timeout: Duration,
        cap: usize,
    ) -> Result<ExecOutput, SshError> {
        self.run(command, timeout, cap, None, None).await
    }

    /// Run `command` with `input` on its standard input (then end of file), collecting all its
    /// output. The input is sent while the output is read, so any command and any size of
    /// input will do (`cat > FILE`, `sha256sum`, `cat`): no argument-length limit applies.
    pub async fn exec_with_stdin(
        &self,
        command: &str,
        input: &[u8],
        timeout: Duration,
    ) -> Result<ExecOutput, SshError> {
        self.run(command, timeout, usize::MAX, Some(input), None)
            .await
    }

    /// [`Session::exec_capped`] with `input` on the command's standard input (then end of
    /// file): what `exec --stdin` sends every node.
    pub async fn exec_capped_with_stdin(
        &self,
        command: &str,
        input: &[u8],
        timeout: Duration,
        cap: usize,
    ) -> Result<ExecOutput, SshError> {
        self.run(command, timeout, cap, Some(input), None).await
    }

    /// [`Session::exec`], also handing each piece of output to `tap` as it arrives (`-v`
    /// follows a long command live; the display reads what it waits for).
    pub async fn exec_tapped(
        &self,
        command: &str,
        timeout: Duration,
        tap: Tap<'_>,
    ) -> Result<ExecOutput, SshError> {
        self.run(command, timeout, usize::MAX, None, Some(tap))
            .await
    }

    async fn run(
        &self,
        command: &str,
        timeout: Duration,
        cap: usize,
        input: Option<&[u8]>,
        tap: Option<Tap<'_>>,
    ) -> Result<ExecOutput, SshError> {
        let command = if self.inner.become_root {
            format!("sudo -n -- sh -c {}", shell_quote(command))
        } else {
            command.to_string()
        };
        let _permit = self
            .inner
            .channels
            .acquire()
            .await
            .map_err(|_| SshError::Protocol("connection closed".into()))?;
        let start = Instant::now();
        let channel = self
            .answered(
                "opening a channel",
                self.inner.handle.channel_open_session(),
            )
            .await?;
        self.answered(
            "sending the command",
            channel.exec(true, command.as_bytes()),
        )
        .await?;
        // The write half sends the input (if any) while the read half collects the output, so a
        // command that prints as it reads (`cat`, `tee`) never stalls on a full window either
        // way, whatever the size of the input.
        let (mut channel, writer) = channel.split();
        let writer = &writer;
        let mut sending: Option<Sending<'_>> = match input {
            Some(data) => Some(Box::pin(async move {
                writer.data(data).await?;
                writer.eof().await
            })),
            None => {
                // No input: end of file at once, as `ssh host cmd </dev/null`, so a command
                // that reads its standard input (`cat`, a prompt, `read`) ends instead of
                // waiting for the command's deadline. A command quick enough to have ended
                // already has closed its channel: not an error.
                let _ = tokio::time::timeout(self.inner.answer_within, writer.eof()).await;
                None
            }
        };
        let (mut stdout, mut stderr) = (CappedBuf::new(cap), CappedBuf::new(cap));
        let mut exit: Option<ExitStatus> = None;
        // Silence longer than `probe_after` is probed with a keepalive that must be answered
        // within the rest of the node's connect timeout.
        let probe_after = self.inner.answer_within / 2;
        let reply_within = self.inner.answer_within - probe_after;
        let idle = tokio::time::sleep(probe_after);
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(idle, deadline);
        let mut ping: Option<Ping<'_>> = None;
        loop {
            tokio::select! {
                msg = channel.wait() => {
                    // Anything from the server shows the connection is alive.
                    ping = None;
                    idle.as_mut().reset(tokio::time::Instant::now() + probe_after);
                    match msg {
                        Some(ChannelMsg::Data { data }) => {
                            if let Some(t) = tap {
                                t(Stream::Stdout, &data);
                            }
                            stdout.push(&data)
                        }
                        Some(ChannelMsg::ExtendedData { data, ext: 1 }) => {
                            if let Some(t) = tap {
                                t(Stream::Stderr, &data);
                            }
                            stderr.push(&data)
                        }
                        Some(ChannelMsg::ExitStatus { exit_status }) => {
                            exit = Some(ExitStatus::Code(exit_status));
                        }
                        Some(ChannelMsg::ExitSignal { signal_name, .. }) => {
                            exit = Some(ExitStatus::Signal(signal_name_of(&signal_name)));
                        }
                        Some(ChannelMsg::Close) | None => break,
                        Some(_) => {}
                    }
                }
                // A command that ends without reading all its input (`head -1`) closes the
                // channel under the transfer: its exit status, not the transfer, says how it went.
                _sent = async { sending.as_mut().expect("guarded by is_some").await }, if sending.is_some() => {
                    sending = None;
                }
                () = &mut idle, if ping.is_none() => {
                    ping = Some(Box::pin(tokio::time::timeout(
                        reply_within,
                        self.inner.handle.send_ping(),
                    )));
                }
                answer = async { ping.as_mut().expect("guarded by is_some").await }, if ping.is_some() => {
                    match answer {
                        Ok(Ok(())) if !self.is_closed() => {
                            ping = None;
                            idle.as_mut().reset(tokio::time::Instant::now() + probe_after);
                        }
                        Ok(_) => return Err(self.closed_while("a command was running")),
                        Err(_) => {
                            return Err(SshError::ConnectionLost(format!(
                                "no answer to a keepalive within {} while a command was running",
                                humantime::format_duration(self.inner.answer_within)
                            )))
                        }
                    }
                }
                () = &mut deadline => {
                    let bound = self.inner.answer_within;
                    drop(sending);
                    let _ = tokio::time::timeout(bound, writer.signal(Sig::TERM)).await;
                    let _ = tokio::time::timeout(bound, writer.close()).await;
                    return Err(SshError::Timeout(timeout));
                }
            }
        }
        let Some(exit) = exit else {
            if self.is_closed() {
                return Err(self.closed_while("a command was running"));
            }
            return Err(SshError::Protocol(
                "the channel closed without an exit status".into(),
            ));
        };
        let (stdout, stdout_dropped) = stdout.into_parts();
        let (stderr, stderr_dropped) = stderr.into_parts();
        if self.inner.become_root
            && exit == ExitStatus::Code(1)
            && stdout.is_empty()
            && String::from_utf8_lossy(&stderr).contains(SUDO_NEEDS_PASSWORD)
        {
            return Err(SshError::SudoPassword);
        }
        Ok(ExecOutput {
            stdout,
            stderr,
            stdout_dropped,
            stderr_dropped,
            exit,
            duration: start.elapsed(),
        })
    }

    /// Await a request to the server for at most the node's connect timeout. No answer in time
    /// is [`SshError::ConnectionLost`]; so is an error once the connection has closed.
    async fn answered<T, E: Display>(
        &self,
        what: &str,
        request: impl Future<Output = Result<T, E>>,
    ) -> Result<T, SshError> {
        match tokio::time::timeout(self.inner.answer_within, request).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(_)) if self.is_closed() => Err(self.closed_while(what)),
            Ok(Err(e)) => Err(SshError::Protocol(format!("{what}: {e}"))),
            Err(_) => Err(SshError::ConnectionLost(format!(
                "no answer within {} while {what}",
                humantime::format_duration(self.inner.answer_within)
            ))),
        }
    }

    fn closed_while(&self, what: &str) -> SshError {
        SshError::ConnectionLost(format!("the connection closed while {what}"))
    }

    /// Whether the connection has gone (the node rebooted, the network dropped).
    pub fn is_closed(&self) -> bool {
        self.inner.handle.is_closed()
    }

    /// Close the connection politely (waiting at most the node's connect timeout: a dead
    /// connection is simply dropped).
    pub async fn close(&self) {
        let _ = tokio::time::timeout(
            self.inner.answer_within,
            self.inner
                .handle
                .disconnect(russh::Disconnect::ByApplication, "", "en"),
        )
        .await;
    }
}

fn signal_name_of(sig: &Sig) -> String {
    let s = format!("{sig:?}");
    s.strip_prefix("Custom(\"")
        .and_then(|r| r.strip_suffix("\")"))
        .unwrap_or(&s)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capped_buffer_keeps_the_head_and_counts_the_rest() {
        let mut b = CappedBuf::new(10);
        b.push(b"12345");
        b.push(b"67890abc");
        b.push(b"defg");
        assert!(b.kept.capacity() <= 10);
        let (kept, dropped) = b.into_parts();
        assert_eq!((kept.as_slice(), dropped), (&b"1234567890"[..], 7));
        let mut whole = CappedBuf::new(usize::MAX);
        whole.push(b"all of it");
        assert_eq!(whole.into_parts(), (b"all of it".to_vec(), 0));
    }
}
