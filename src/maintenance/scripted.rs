//! A scripted node shell for unit tests: commands are answered from a script (the first rule
//! whose pattern the command contains; a rule's answers are given in turn, its last one
//! repeated), every command run is recorded, and the session can be made to drop (a reboot
//! command that takes the node down) and to come back or not. With paused tokio time, it puts
//! the reboot state machine or the engine in a given state in milliseconds, without a lab.
//!
//! Not a fake SSH: nothing here is about the transport, which the lab tests against real
//! OpenSSH servers. A command no rule matches exits 127 with `not scripted` on stderr, as a
//! missing binary would, so a test sees what the code does with an answer it cannot read.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::remote::{NodeShell, Reconnect, ShellFuture};
use crate::inventory::Node;
use crate::ssh::{ExecOutput, ExitStatus, SshError};

/// One answer of the script: the command's exit code, stdout and stderr.
#[derive(Debug, Clone)]
struct Answer(u32, String, String);

struct Rule {
    pattern: String,
    answers: VecDeque<Answer>,
    /// Running the command drops the session (the node goes down).
    drops: bool,
}

/// A node's shell answered from a script (see the module's documentation).
pub(crate) struct ScriptedShell {
    node: Node,
    rules: Mutex<Vec<Rule>>,
    ran: Mutex<Vec<String>>,
    closed: AtomicBool,
    reconnects: Mutex<VecDeque<Reconnect>>,
}

/// An inventory node named `name` (nothing is connected to).
pub(crate) fn node(name: &str) -> Node {
    let text = format!("[nodes.{name}]\naddress = \"192.0.2.1\"\n");
    crate::inventory::Inventory::parse(&text, std::path::Path::new("/inv/cluster.toml"))
        .expect("a test inventory")
        .nodes
        .remove(0)
}

impl ScriptedShell {
    /// A shell on node `name` with an empty script.
    pub(crate) fn new(name: &str) -> ScriptedShell {
        ScriptedShell {
            node: node(name),
            rules: Mutex::new(Vec::new()),
            ran: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
            reconnects: Mutex::new(VecDeque::new()),
        }
    }

    fn add(self, pattern: &str, answer: Answer, drops: bool) -> ScriptedShell {
        {
            let mut rules = self.rules.lock().expect("script");
            match rules.iter_mut().find(|r| r.pattern == pattern) {
                Some(r) => {
                    r.answers.push_back(answer);
                    r.drops |= drops;
                }
                None => rules.push(Rule {
                    pattern: pattern.to_string(),
                    answers: VecDeque::from([answer]),
                    drops,
                }),
            }
        }
        self
    }

    /// Commands containing `pattern` exit 0 with `stdout` (the next answer of the rule when it
    /// has one already).
    pub(crate) fn on(self, pattern: &str, stdout: &str) -> ScriptedShell {
        self.add(pattern, Answer(0, stdout.into(), String::new()), false)
    }

    /// Commands containing `pattern` exit `code` with `stderr`.
    pub(crate) fn fails(self, pattern: &str, code: u32, stderr: &str) -> ScriptedShell {
        self.add(pattern, Answer(code, String::new(), stderr.into()), false)
    }

    /// Commands containing `pattern` exit 0 and the session drops right after (a reboot).
    pub(crate) fn drops_on(self, pattern: &str) -> ScriptedShell {
        self.add(pattern, Answer(0, String::new(), String::new()), true)
    }

    /// The attempts to reconnect after the session dropped answer these, in turn (then
    /// [`Reconnect::NotListening`] for ever: the node stays down).
    pub(crate) fn reconnects(self, answers: &[Reconnect]) -> ScriptedShell {
        self.reconnects
            .lock()
            .expect("script")
            .extend(answers.iter().copied());
        self
    }

    /// Every command run, in order.
    pub(crate) fn ran(&self) -> Vec<String> {
        self.ran.lock().expect("script").clone()
    }

    /// How many commands run contained `pattern`.
    pub(crate) fn count(&self, pattern: &str) -> usize {
        self.ran().iter().filter(|c| c.contains(pattern)).count()
    }

    fn answer(&self, cmd: &str) -> Result<ExecOutput, SshError> {
        self.ran.lock().expect("script").push(cmd.to_string());
        if self.closed.load(Ordering::SeqCst) {
            return Err(SshError::ConnectionLost("the node is down".into()));
        }
        let (answer, drops) = {
            let mut rules = self.rules.lock().expect("script");
            match rules.iter_mut().find(|r| cmd.contains(&r.pattern)) {
                Some(r) => {
                    let a = if r.answers.len() > 1 {
                        r.answers.pop_front()
                    } else {
                        r.answers.front().cloned()
                    };
                    (a, r.drops)
                }
                None => (None, false),
            }
        };
        if drops {
            self.closed.store(true, Ordering::SeqCst);
        }
        let (code, out, err) = match answer {
            Some(Answer(code, out, err)) => (code, out, err),
            None => (127, String::new(), format!("sh: not scripted: {cmd}")),
        };
        Ok(ExecOutput {
            stdout: out.into_bytes(),
            stderr: err.into_bytes(),
            stdout_dropped: 0,
            stderr_dropped: 0,
            exit: ExitStatus::Code(code),
            duration: Duration::from_millis(1),
        })
    }
}

impl NodeShell for ScriptedShell {
    fn node(&self) -> &Node {
        &self.node
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(30)
    }

    fn sh<'a>(&'a self, cmd: &'a str) -> ShellFuture<'a, Result<ExecOutput, SshError>> {
        Box::pin(async move { self.answer(cmd) })
    }

    fn sh_within<'a>(
        &'a self,
        cmd: &'a str,
        _within: Duration,
    ) -> ShellFuture<'a, Result<ExecOutput, SshError>> {
        Box::pin(async move { self.answer(cmd) })
    }

    fn sh_stdin<'a>(
        &'a self,
        cmd: &'a str,
        _input: &'a [u8],
    ) -> ShellFuture<'a, Result<ExecOutput, SshError>> {
        Box::pin(async move { self.answer(cmd) })
    }

    fn sh_tapped<'a>(
        &'a self,
        cmd: &'a str,
        tap: crate::ssh::Tap<'a>,
    ) -> ShellFuture<'a, Result<ExecOutput, SshError>> {
        Box::pin(async move {
            let o = self.answer(cmd)?;
            tap(crate::ssh::Stream::Stdout, &o.stdout);
            tap(crate::ssh::Stream::Stderr, &o.stderr);
            Ok(o)
        })
    }

    fn close(&self) -> ShellFuture<'_, ()> {
        Box::pin(async move {
            self.ran.lock().expect("script").push("(close)".into());
        })
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    fn reconnect(&mut self) -> ShellFuture<'_, Reconnect> {
        Box::pin(async move {
            self.ran.lock().expect("script").push("(reconnect)".into());
            let next = self.reconnects.lock().expect("script").pop_front();
            let r = next.unwrap_or(Reconnect::NotListening);
            if r == Reconnect::Connected {
                self.closed.store(false, Ordering::SeqCst);
            }
            r
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_come_in_turn_the_last_repeated_and_everything_is_recorded() {
        let sh = ScriptedShell::new("pve1")
            .on("boot_id", "a\n")
            .on("boot_id", "b\n")
            .drops_on("reboot");
        assert_eq!(sh.text("cat boot_id").await.unwrap().1, "a\n");
        assert_eq!(sh.text("cat boot_id").await.unwrap().1, "b\n");
        assert_eq!(sh.text("cat boot_id").await.unwrap().1, "b\n");
        let (rc, _) = sh.text("uptime").await.unwrap();
        assert_eq!(rc, ExitStatus::Code(127), "not scripted");
        assert!(!sh.is_closed());
        sh.text("reboot").await.unwrap();
        assert!(sh.is_closed(), "the reboot took the node down");
        assert!(sh.text("cat boot_id").await.is_err(), "nothing answers now");
        assert_eq!(sh.count("boot_id"), 4);
        assert_eq!(sh.ran().len(), 6);
    }
}
