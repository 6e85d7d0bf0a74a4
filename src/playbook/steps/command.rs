//! `run` (a command with guards, changed_when/failed_when, and an optional `undo` recorded for
//! rollback) and `wait_for` (a command that must succeed within a timeout).
//!
//! Guards are commands on the node. A plan must change nothing, so it evaluates `unless` /
//! `only_if` only when the step declares them read-only (`read_only = "guards"`), and runs the
//! command itself only when the whole step is a declared check (`read_only = "all"`).

use crate::vocab::Phase;
use std::time::{Duration, Instant};

use super::super::context::{result, NodeState};
use super::super::error::StepError;
use super::super::model::{ReadOnly, RunStep, Step, WaitForStep};
use super::detached::{self, Status};
use crate::events::Activity;
use crate::journal::UndoRecord;
use crate::maintenance::remote::{first_line, NodeShell};
use crate::outcome::{StepResult, StepStatus};
use crate::ssh::{ExecOutput, ExitStatus, Stream};

fn rc_of(o: &ExecOutput) -> i64 {
    match o.exit {
        ExitStatus::Code(c) => i64::from(c),
        ExitStatus::Signal(_) => -1,
    }
}

/// A command that can be interrupted: Ctrl-C drops the channel (the remote command gets
/// SIGHUP from sshd) and the step counts as interrupted.
async fn interruptible(
    r: &dyn NodeShell,
    st: &NodeState<'_>,
    cmd: &str,
) -> Result<ExecOutput, StepError> {
    tokio::select! {
        _ = st.s.cancel.cancelled() => Err(StepError::Interrupted),
        o = r.sh(cmd) => Ok(o?),
    }
}

/// A `run` step's own command, run so that its output can be followed when someone follows it:
/// `-v` gets each line as it arrives, and the live display says when apt waits for another
/// apt/dpkg to let go of the lock (then what the step runs again). Otherwise as
/// [`interruptible`].
async fn followed(
    r: &dyn NodeShell,
    st: &NodeState<'_>,
    step: &str,
    cmd: &str,
) -> Result<ExecOutput, StepError> {
    if !is_followed(st) {
        return interruptible(r, st, cmd).await;
    }
    let out = st.s.output.clone();
    let events = &st.s.events;
    let live = events.live();
    let node = r.node().name.clone();
    let waiting = std::sync::atomic::AtomicBool::new(false);
    let lines = crate::progress::LineSplitter::default();
    // A finished line: followed; and apt has moved on from any wait it reported.
    let on_line = |stream: Stream, line: &str| {
        if let Some(o) = &out {
            o(&node, stream, line);
        }
        if live && waiting.swap(false, std::sync::atomic::Ordering::Relaxed) {
            events.doing(
                &node,
                Activity::Step {
                    step: step.to_string(),
                },
            );
        }
    };
    // apt reports the wait as a line it finishes only once the lock is taken.
    let tap = |stream: Stream, data: &[u8]| {
        lines.push(stream, data, |l| on_line(stream, l));
        // Once the wait is shown, the rest of it is not read again (apt's spinner rewrites the
        // same unfinished line every second).
        let shown = waiting.load(std::sync::atomic::Ordering::Relaxed);
        if live && !shown {
            if let Some(holder) = apt_lock_wait(&lines.unfinished(stream)) {
                if !waiting.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    events.doing(
                        &node,
                        Activity::DpkgLock {
                            step: step.to_string(),
                            holder,
                        },
                    );
                }
            }
        }
    };
    let o = tokio::select! {
        _ = st.s.cancel.cancelled() => return Err(StepError::Interrupted),
        o = r.sh_tapped(cmd, &tap) => o?,
    };
    lines.finish(&on_line);
    Ok(o)
}

/// Someone follows the run's commands as they go: `-v`, or the live display.
fn is_followed(st: &NodeState<'_>) -> bool {
    st.s.output.is_some() || st.s.events.live()
}

/// apt waiting for the lock another apt or dpkg holds (`-o DPkg::Lock::Timeout=N`): apt-pkg's
/// debSystem GetLockMaybeWait reports "Waiting for cache lock: " and the lock error ("Could not
/// get lock /var/lib/dpkg/lock-frontend. It is held by process 1234 (apt-get)") through its
/// progress, on stdout, without a newline until the wait is over (with -q once, without a
/// "\r... N%" spinner: apt-pkg/contrib/progress.cc OpTextProgress). Who holds it, when apt says.
fn apt_lock_wait(line: &str) -> Option<String> {
    let (_, why) = line.split_once("Waiting for cache lock: ")?;
    Some(match why.split_once("held by process ") {
        Some((_, who)) => {
            // "1234 (apt-get)..." or "1234 (apt-get)... 5s": up to the holder's name.
            let who = who.find(')').map_or(who, |i| &who[..=i]);
            format!("(held by process {who})")
        }
        None => "(another apt or dpkg holds it)".into(),
    })
}

/// How the guards of a `run` step decided.
/// A guard command as a skip reason says it: its first line, cut at 60 characters (a plan
/// line names the guard; the playbook holds the whole command).
fn short_guard(g: &str) -> String {
    let first = g.lines().next().unwrap_or("").trim_end();
    let more = g.lines().count() > 1 || first.chars().count() > 60;
    let cut: String = first.chars().take(60).collect();
    if more {
        format!("{cut} …")
    } else {
        cut
    }
}

enum Guards {
    /// Run the command.
    Run,
    /// Do not: why.
    Skip(String),
    /// A plan did not evaluate them (not declared read-only): what was not evaluated.
    NotEvaluated(Vec<String>),
}

/// Evaluate `creates`, `unless` and `only_if` on the node. Guards are commands run on the node,
/// so a plan (check mode) runs only those that cannot change it: `creates` (pvefleet's own
/// `test -e`) always; `unless` / `only_if` only when the step declares them read-only
/// (`read_only = "guards"` or `"all"`). Otherwise the plan says which guard it did not evaluate.
async fn guards(
    r: &dyn NodeShell,
    st: &NodeState<'_>,
    step: &RunStep,
) -> Result<Guards, StepError> {
    if let Some(path) = st.render(&step.creates, true)? {
        let o = r.sh(&format!("test -e {path}")).await?;
        if o.exit == ExitStatus::Code(0) {
            return Ok(Guards::Skip(format!("{path} exists")));
        }
    }
    let unless = st.render(&step.unless, true)?;
    let only_if = st.render(&step.only_if, true)?;
    if st.s.check && step.read_only == ReadOnly::Nothing {
        let skipped: Vec<String> = [("unless", &unless), ("only_if", &only_if)]
            .into_iter()
            .filter_map(|(k, g)| g.as_ref().map(|g| format!("{k} `{g}`")))
            .collect();
        if !skipped.is_empty() {
            return Ok(Guards::NotEvaluated(skipped));
        }
        return Ok(Guards::Run);
    }
    if let Some(g) = unless {
        let o = r.sh(&g).await?;
        if o.exit == ExitStatus::Code(0) {
            return Ok(Guards::Skip(format!(
                "unless `{}` succeeded",
                short_guard(&g)
            )));
        }
    }
    if let Some(g) = only_if {
        let o = r.sh(&g).await?;
        if o.exit != ExitStatus::Code(0) {
            return Ok(Guards::Skip(format!(
                "only_if `{}` failed",
                short_guard(&g)
            )));
        }
    }
    Ok(Guards::Run)
}

pub(super) async fn run(
    r: &mut dyn NodeShell,
    st: &mut NodeState<'_>,
    step: &Step,
    run: &RunStep,
) -> Result<StepResult, StepError> {
    let cmd = st.render_one(&run.command, true)?;
    let read_only = run.read_only;
    if st.s.check && st.reboot_pending && read_only == ReadOnly::All {
        // A check after a reboot the plan would do reads a state the node is not in yet.
        let mut res = result(
            step,
            StepStatus::Skipped,
            "checked after the reboot (not in a plan)",
        );
        res.deferred = Some(crate::outcome::Deferred::AfterReboot);
        res.commands.push(cmd);
        return Ok(res);
    }
    let not_evaluated = match guards(r, st, run).await? {
        Guards::Skip(why) => return Ok(result(step, StepStatus::Skipped, why)),
        Guards::NotEvaluated(g) => Some(g),
        Guards::Run => None,
    };
    if st.s.check && read_only != ReadOnly::All {
        // A step declared never to change anything (a check) is not a change in the plan.
        let checks_only = run
            .changed_when
            .as_ref()
            .is_some_and(|c| c.get_ref().trim() == "false");
        let (status, mut detail) = if checks_only {
            (
                StepStatus::Ok,
                "would run (a check: changes nothing)".to_string(),
            )
        } else {
            (StepStatus::Changed, "would run".to_string())
        };
        if let Some(g) = not_evaluated {
            detail.push_str(&format!(
                "; guard not evaluated in a plan ({}): not declared read_only",
                g.join(", ")
            ));
        }
        let mut res = result(step, status, detail);
        res.commands.push(cmd);
        return Ok(res);
    }
    let undo = st.render(&run.undo, true)?;
    let undo_record = |phase: Phase| {
        undo.as_ref().map(|u| UndoRecord {
            node: r.node().name.clone(),
            step: step.name.get_ref().clone(),
            command: u.clone(),
            phase,
        })
    };
    // Intent first: a controller killed while the step runs still leaves the undo on record.
    if let (Some(j), Some(rec)) = (&st.s.journal, undo_record(Phase::Intent)) {
        j.undo(rec).await;
    }
    let mut note = "";
    let o = if run.detach.is_some() {
        let dir = detached::dir(&st.s.run_id, st.index);
        // The interrupted attempt started this very step: how did its command end?
        let resumed = st
            .history
            .and_then(|h| h.in_step.as_ref())
            .is_some_and(|(i, _)| *i == st.index);
        let earlier = if resumed {
            match detached::settle(r, &dir, &st.s.cancel).await? {
                None => return Err(StepError::Interrupted),
                Some(s) => Some(s),
            }
        } else {
            None
        };
        match earlier {
            Some(Status::Ended(o)) => {
                note = " (it ended while no controller was there; not run again)";
                o
            }
            // Never started, cut off (repaired before the facts were gathered), or gone with a
            // reboot of the node: run it (again).
            _ => {
                let script = if is_followed(st) {
                    detached::start_script_followed(&dir, &cmd)
                } else {
                    detached::start_script(&dir, &cmd)
                };
                followed(r, st, step.name.get_ref(), &script).await?
            }
        }
    } else {
        followed(r, st, step.name.get_ref(), &cmd).await?
    };
    let vars = serde_json::json!({
        "rc": rc_of(&o),
        "stdout": String::from_utf8_lossy(&o.stdout),
        "stderr": String::from_utf8_lossy(&o.stderr),
    });
    let failed = match &run.failed_when {
        Some(e) => st.truth(e, Some(vars.clone()))?,
        None => o.exit != ExitStatus::Code(0),
    };
    let changed = match &run.changed_when {
        Some(e) => st.truth(e, Some(vars))?,
        None => true,
    };
    let status = if failed {
        StepStatus::Failed
    } else if changed {
        StepStatus::Changed
    } else {
        StepStatus::Ok
    };
    if let (Some(j), Some(rec)) = (
        &st.s.journal,
        undo_record(if status == StepStatus::Ok {
            Phase::Unchanged
        } else {
            Phase::Applied
        }),
    ) {
        j.undo(rec).await;
    }
    let detail = match status {
        StepStatus::Failed => format!("exit {}: {}", rc_of(&o), first_line(&o.stderr)),
        _ => first_line(&o.stdout),
    } + note;
    let mut res = result(step, status, detail);
    res.commands.push(cmd);
    res.output = crate::outcome::capped_output(&o.stdout, &o.stderr);
    Ok(res)
}

/// On a resume: this detached `run` step is the one the stopped run was in, and its command has
/// ended on the node since (its exit status is there to read).
pub(super) async fn ended_while_away(
    r: &dyn NodeShell,
    st: &NodeState<'_>,
    step: &Step,
) -> Result<bool, StepError> {
    let resumed = st
        .history
        .and_then(|h| h.in_step.as_ref())
        .is_some_and(|(i, _)| *i == st.index);
    if st.s.check || !resumed || step.detached().is_none() {
        return Ok(false);
    }
    let dir = detached::dir(&st.s.run_id, st.index);
    Ok(matches!(detached::status(r, &dir).await?, Status::Ended(_)))
}

/// On a resume: the step the interrupted attempt was in, if it is a detached `run` step whose
/// command was cut off without an exit status, gets its `repair` (journaled) before anything
/// reads the node; one still running is waited for. Returns what was said.
pub(crate) async fn repair_interrupted(
    r: &dyn NodeShell,
    st: &NodeState<'_>,
) -> Result<Option<String>, StepError> {
    let Some((index, _)) = st.history.and_then(|h| h.in_step.clone()) else {
        return Ok(None);
    };
    let Some(step) = st.s.playbook.file.steps.get(index) else {
        return Ok(None);
    };
    let Some(detach) = step.detached().filter(|_| !st.s.check) else {
        return Ok(None);
    };
    let dir = detached::dir(&st.s.run_id, index);
    if matches!(detached::status(r, &dir).await?, Status::Running) {
        st.s.events.said(
            &r.node().name,
            format!(
                "waiting for `{}` the stopped run started to end",
                step.name.get_ref()
            ),
        );
    }
    let Some(state) = detached::settle(r, &dir, &st.s.cancel).await? else {
        return Err(StepError::Interrupted);
    };
    let (Status::Dead, Some(repair)) = (state, st.render(&detach.repair, true)?) else {
        return Ok(None);
    };
    let o = interruptible(r, st, &repair).await?;
    let detail = format!(
        "exit {}: {}",
        rc_of(&o),
        if o.exit == ExitStatus::Code(0) {
            first_line(&o.stdout)
        } else {
            first_line(&o.stderr)
        }
    );
    st.s.events
        .record(
            &r.node().name,
            crate::journal::Event::Repaired {
                index,
                command: repair.clone(),
                detail: detail.clone(),
            },
        )
        .await;
    let said = format!(
        "`{}` of the stopped run was cut off halfway: repaired with `{repair}` ({detail})",
        step.name.get_ref()
    );
    st.s.events.said(&r.node().name, said.as_str());
    if o.exit != ExitStatus::Code(0) {
        return Err(StepError::Remote(said));
    }
    Ok(Some(said))
}

pub(super) async fn wait_for(
    r: &mut dyn NodeShell,
    st: &mut NodeState<'_>,
    step: &Step,
    wait: &WaitForStep,
) -> Result<StepResult, StepError> {
    let cmd = st.render_one(&wait.command, true)?;
    let deadline = Instant::now() + step.timeout_or(Duration::from_secs(120));
    if st.s.check {
        let mut res = result(
            step,
            StepStatus::Skipped,
            format!(
                "until it succeeds, up to {}",
                crate::outcome::short_duration(step.timeout_or(Duration::from_secs(120)))
            ),
        );
        res.deferred = Some(crate::outcome::Deferred::Wait);
        res.commands.push(cmd);
        return Ok(res);
    }
    loop {
        let o = interruptible(r, st, &cmd).await?;
        if o.exit == ExitStatus::Code(0) {
            return Ok(result(step, StepStatus::Ok, first_line(&o.stdout)));
        }
        if Instant::now() > deadline {
            return Ok(result(
                step,
                StepStatus::Failed,
                format!("`{cmd}` did not succeed in time: {}", first_line(&o.stderr)),
            ));
        }
        tokio::select! {
            _ = st.s.cancel.cancelled() => return Err(StepError::Interrupted),
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apts_lock_wait_is_read_with_its_holder() {
        // As apt-get -q prints it (stdout, no newline yet), and as the spinner does without -q.
        let q = "Waiting for cache lock: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 4242 (apt-get)...";
        assert_eq!(
            apt_lock_wait(q).as_deref(),
            Some("(held by process 4242 (apt-get))")
        );
        let spinner = "\rWaiting for cache lock: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 77 (unattended-upgr)... 3%\r";
        assert_eq!(
            apt_lock_wait(spinner).as_deref(),
            Some("(held by process 77 (unattended-upgr))")
        );
        assert_eq!(
            apt_lock_wait("Waiting for cache lock: Could not get lock /var/lib/dpkg/lock. Resource temporarily unavailable...").as_deref(),
            Some("(another apt or dpkg holds it)")
        );
        assert_eq!(apt_lock_wait("Reading package lists..."), None);
        assert_eq!(
            apt_lock_wait("E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 1 (apt-get)"),
            None,
            "the error after the timeout is no wait"
        );
    }
}
