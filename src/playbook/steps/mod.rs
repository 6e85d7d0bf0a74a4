//! The step kinds, one file each family: [`command`] (run, wait_for), [`files`] (line, lines,
//! block, file, kernel_cmdline, modules), [`service`], [`facts`] (probe, assert) and the reboot
//! step, which hands over to [`super::reboot`]. This file holds what every kind shares: the
//! `when` / `on_change` guards and the dispatch.

mod command;
pub(crate) mod detached;
mod facts;
mod files;
mod service;

use std::time::Duration;

use super::context::{result, NodeState, RunSettings};
use super::error::StepError;
use super::model::{Action, RebootStep, Step, StepKind};
use crate::maintenance::readiness;
use crate::maintenance::reboot::{self, RebootCtx, RebootState};
use crate::maintenance::remote::NodeShell;
use crate::outcome::{StepResult, StepStatus};

pub(crate) use command::repair_interrupted;
pub(crate) use facts::gather;
pub use files::refresh_for;

/// Run (or plan) one step on the node.
pub(super) async fn run_step(
    r: &mut dyn NodeShell,
    st: &mut NodeState<'_>,
    step: &Step,
) -> Result<StepResult, StepError> {
    // A reboot the stopped run left in progress continues from where it stood, whatever its
    // guards say now (a reboot into a new kernel is no longer "needed" once the node runs it,
    // yet what its drain set must be put back).
    let in_progress = (step.kind() == StepKind::Reboot)
        .then(|| reboot_in_progress(st.history, st.index))
        .flatten();
    if let (true, Some(state)) = (st.s.check, &in_progress) {
        return Ok(continued_reboot(st, step, state));
    }
    let continuing = in_progress.is_some();
    if let Some(w) = step.when.as_ref().filter(|_| !continuing) {
        // A detached command the stopped run started and that has ended since is taken as
        // done, whatever the guard now says (the guard read the node before it ran).
        if !st.truth(w, None)? && !command::ended_while_away(r, st, step).await? {
            let note = st
                .render(&step.skip_note, false)?
                .map(|n| n.trim().to_string())
                .filter(|n| !n.is_empty());
            let why = note.unwrap_or_else(|| st.why_false(w));
            return Ok(result(step, StepStatus::Skipped, why));
        }
    }
    if !continuing
        && !step.on_change.is_empty()
        && !step
            .on_change
            .iter()
            .any(|c| st.changed.contains(c.get_ref()))
    {
        return Ok(result(
            step,
            StepStatus::Skipped,
            "nothing it depends on changed",
        ));
    }
    if st.reboot_pending
        && matches!(
            step.action,
            Action::Probe(_) | Action::Assert(_) | Action::WaitFor(_)
        )
    {
        let mut res = result(
            step,
            StepStatus::Skipped,
            "checked after the reboot (not in a plan)",
        );
        res.deferred = Some(crate::outcome::Deferred::AfterReboot);
        return Ok(res);
    }
    match &step.action {
        Action::Run(a) => command::run(r, st, step, a).await,
        Action::WaitFor(a) => command::wait_for(r, st, step, a).await,
        Action::Line(a) => files::line(r, st, step, a).await,
        Action::Lines(a) => files::lines(r, st, step, a).await,
        Action::Block(a) => files::block(r, st, step, a).await,
        Action::File(a) => files::file(r, st, step, a).await,
        Action::KernelCmdline(a) => files::kernel_cmdline(r, st, step, a).await,
        Action::Modules(a) => files::modules(r, st, step, a).await,
        Action::Service(a) => service::service(r, st, step, a).await,
        Action::Probe(a) => facts::probe(r, st, step, a).await,
        Action::Assert(a) => facts::assert(st, step, a),
        Action::Reboot(a) => reboot_step(r, st, step, a).await,
    }
}

/// In the preview of a resume: the reboot the stopped run left at `state`, which the resume
/// continues from there (no readiness check: the node is past that point).
fn continued_reboot(st: &mut NodeState<'_>, step: &Step, state: &str) -> StepResult {
    st.reboot_pending = true;
    continued_reboot_result(step, state, false)
}

/// The preview's result for a reboot the stopped run left at `state`; `down`: the node does
/// not answer yet (the reboot was issued).
pub(crate) fn continued_reboot_result(step: &Step, state: &str, down: bool) -> StepResult {
    let issued = down || RebootState::parse(state).is_some_and(|s| s >= RebootState::RebootIssued);
    let what = match (down, issued) {
        (true, _) => {
            "the node does not answer yet; the resume waits for its new boot, then for its \
             services and the cluster, and puts back what the drain set"
        }
        (false, true) => {
            "the reboot was issued: the resume waits for the node's new boot, then for its \
             services and the cluster, and puts back what the drain set"
        }
        (false, false) => {
            "the resume finishes the drain, reboots the node and waits for it and the cluster"
        }
    };
    let mut res = result(
        step,
        StepStatus::Changed,
        format!("would continue the stopped run's reboot from {state}: {what}"),
    );
    if !issued {
        res.commands.push("reboot".into());
    }
    res
}

/// The state a reboot step reached in the stopped run, when it is one to continue from: the
/// drain had begun (or the reboot was issued) and the step did not finish. A state the journal
/// holds but this version cannot read counts as in progress (unknown is not "nothing done").
/// `preflight` and `drain-undone` left nothing behind: the step starts afresh, guards and all.
pub(crate) fn reboot_in_progress(
    history: Option<&crate::journal::NodeHistory>,
    index: usize,
) -> Option<String> {
    let p = history?.reboots.get(&index)?;
    match RebootState::parse(&p.state) {
        Some(RebootState::Preflight | RebootState::DrainUndone | RebootState::Done) => None,
        _ => Some(p.state.clone()),
    }
}

/// A node's reboot predicted from the journal: its boots (the mean of its last three reboots,
/// without the time they spent migrating guests), plus the guests this drain would move, at the
/// migration time per GiB measured over every migration recorded (there and back when they
/// return); and the plan's line for it.
fn predicted(
    node: &str,
    timeout: Duration,
    moves: &[crate::outcome::PlannedMove],
    back: bool,
) -> (Option<Duration>, String) {
    let t = crate::journal::timings();
    let past = t.reboots.get(node).map(Vec::as_slice).unwrap_or(&[]);
    let migrating = t
        .reboot_migrating
        .get(node)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let boots: Vec<Duration> = past
        .iter()
        .enumerate()
        .map(|(i, d)| d.saturating_sub(migrating.get(i).copied().unwrap_or_default()))
        .collect();
    let short = crate::outcome::short_duration;
    let Some(boot) = crate::journal::recent_mean(&boots) else {
        return (
            None,
            format!(
                "predicted: no history of this node's reboots (its timeout: {})",
                short(timeout)
            ),
        );
    };
    let n = boots.len().min(3);
    let bytes: u64 = moves.iter().filter_map(|m| m.maxmem).sum();
    let gib = bytes as f64 / (1u64 << 30) as f64;
    let trips = if back { 2.0 } else { 1.0 };
    match (moves.is_empty(), t.secs_per_gib()) {
        (true, _) => (
            Some(boot),
            format!(
                "predicted: about {} (the mean of its last {n} reboot(s) in the journal)",
                short(boot)
            ),
        ),
        (false, Some(rate)) => {
            let moving = Duration::from_secs_f64(gib * rate * trips);
            (
                Some(boot + moving),
                format!(
                    "predicted: about {} (its boots: {}, the mean of its last {n} in the journal; \
                     {gib:.1} GiB of guests {} at {rate:.1} s/GiB measured: {})",
                    short(boot + moving),
                    short(boot),
                    if back { "there and back" } else { "away" },
                    short(moving)
                ),
            )
        }
        (false, None) => (
            Some(boot),
            format!(
                "predicted: about {} for its boots (the mean of its last {n} in the journal), \
                 plus moving {gib:.1} GiB of guests: no migration in the journal to time it",
                short(boot)
            ),
        ),
    }
}

/// What [`readiness::check`] needs to know of a reboot step and the run.
pub(crate) fn readiness_ask<'a>(
    st: &'a NodeState<'_>,
    step: &RebootStep,
) -> Result<readiness::Ask<'a>, StepError> {
    Ok(readiness::Ask {
        guests: st.s.guests,
        drain: drain_opts(step, st.s),
        ceph_accept: st.render_list(&step.ceph_accept_warnings)?,
        cluster: &st.s.cluster,
        rolling: &st.s.rolling,
        ceph_settle: if st.s.check {
            Duration::ZERO
        } else {
            readiness::CEPH_SETTLE
        },
        coming_back: Vec::new(),
    })
}

/// The step's drain, with the run's `--max-migrations` / `--bwlimit` over its own.
fn drain_opts(step: &RebootStep, run: &RunSettings) -> Option<reboot::DrainOpts> {
    let over = run.migration_pace;
    step.drain.map(|d| reboot::DrainOpts {
        local_disks: d.local_disks,
        return_guests: d.return_guests,
        pace: crate::maintenance::drain::MigrationPace {
            max: over.max.or(d.pace.max),
            bwlimit_kib: over.bwlimit_kib.or(d.pace.bwlimit_kib),
        },
    })
}

async fn reboot_step(
    r: &mut dyn NodeShell,
    st: &mut NodeState<'_>,
    step: &Step,
    reboot_step: &RebootStep,
) -> Result<StepResult, StepError> {
    if st.s.check {
        st.reboot_pending = true;
        // Decide before you change: the plan asks the cluster now whether the node could
        // finish this reboot, and shows what it found (or why the run will refuse the node).
        let mut ask = readiness_ask(st, reboot_step)?;
        ask.coming_back =
            st.s.resume
                .iter()
                .filter(|(n, h)| **n != r.node().name && reboot::reboot_underway(h))
                .map(|(n, _)| n.clone())
                .collect();
        let timeout = step.timeout_or(crate::playbook::model::REBOOT_TIMEOUT);
        let back = ask.drain.is_some_and(|d| d.return_guests);
        let (mut predicted, _) = predicted(&r.node().name, timeout, &[], back);
        let mut res = match readiness::check(r, &ask).await {
            Ok(found) => {
                let mut res = result(
                    step,
                    StepStatus::Changed,
                    "would reboot and wait for the node and the cluster",
                );
                let (p, said) = self::predicted(&r.node().name, timeout, &found.moves, back);
                predicted = p;
                res.checks = found.lines;
                res.checks.push(said);
                res.moves = found.moves;
                res
            }
            Err(e) => result(
                step,
                StepStatus::Failed,
                format!("the run would refuse this node before changing it: {e}"),
            ),
        };
        res.commands.push("reboot".into());
        res.predicted_ms = predicted.map(|d| d.as_millis() as u64);
        return Ok(res);
    }
    let state = std::sync::Mutex::new(None::<RebootState>);
    let on_state = |s: RebootState| {
        *state.lock().expect("reboot state") = Some(s);
    };
    let name = step.name.get_ref().clone();
    let timeout = step.timeout_or(crate::playbook::model::REBOOT_TIMEOUT);
    let cx = RebootCtx {
        index: st.index,
        timeout,
        guests: st.s.guests,
        allow_maintained: st.s.allow_maintained,
        step: &name,
        events: &st.s.events,
        cancel: &st.s.cancel,
        resume: st.history,
        on_state: &on_state,
        drain: drain_opts(reboot_step, st.s),
        ceph_accept: st.render_list(&reboot_step.ceph_accept_warnings)?,
        pg_timeout: reboot_step.pg_timeout,
        cluster: &st.s.cluster,
        rolling: &st.s.rolling,
    };
    let outcome = reboot::reboot_and_wait(r, &cx).await;
    st.reboot_state = state
        .lock()
        .expect("reboot state")
        .map(|s| s.as_str().to_string());
    match outcome {
        Ok(rep) => {
            st.rebooted = true;
            let mut detail =
                "rebooted; new boot id; every service active; cluster quorate".to_string();
            if let Some(from) = rep.resumed_from {
                detail.push_str(&format!(" (continued from {})", from.as_str()));
            }
            if !rep.moved.is_empty() {
                detail.push_str(&format!(
                    "; moved {}",
                    rep.moved
                        .iter()
                        .map(|(g, to)| format!(
                            "{} to {to}",
                            crate::maintenance::drain::describe(std::slice::from_ref(g))
                        ))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            if !rep.restarted.is_empty() {
                detail.push_str(&format!(
                    "; started again: {}",
                    crate::maintenance::drain::describe(&rep.restarted)
                ));
            }
            Ok(result(step, StepStatus::Changed, detail))
        }
        Err((e, left)) => {
            // Back with a new boot id before a later check failed (services, quorum, Ceph, the
            // guests' return): the node did reboot, and its result says so.
            let reached = st
                .reboot_state
                .as_deref()
                .or_else(|| {
                    st.history
                        .and_then(|h| h.reboots.get(&st.index))
                        .map(|p| p.state.as_str())
                })
                .and_then(RebootState::parse);
            if reached.is_some_and(|s| s >= RebootState::UpNewBoot) {
                st.rebooted = true;
            }
            for l in &left {
                st.s.events.warning(l.as_str());
            }
            st.left_on.extend(left);
            Err(StepError::Reboot(e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{histories, Event, Record};

    fn reboot(state: &str) -> Record {
        Record {
            time: crate::journal::now(),
            node: "pve1".into(),
            event: Event::Reboot {
                index: 3,
                state: state.into(),
                old_boot_id: Some("b1".into()),
                detail: None,
            },
        }
    }

    #[test]
    fn a_reboot_left_in_progress_continues_whatever_its_guard_says() {
        for (states, want) in [
            (
                vec!["maintenance-on", "guests-migrated"],
                Some("guests-migrated"),
            ),
            (
                vec!["maintenance-on", "reboot-issued", "up-new-boot"],
                Some("up-new-boot"),
            ),
            (vec!["maintenance-off"], Some("maintenance-off")),
            // Undone before the reboot: nothing to continue, the guards decide again.
            (
                vec!["maintenance-on", "guests-migrated", "drain-undone"],
                None,
            ),
            (vec!["done"], None),
            (
                vec!["a-state-of-a-later-version"],
                Some("a-state-of-a-later-version"),
            ),
        ] {
            let events: Vec<Record> = states.iter().map(|s| reboot(s)).collect();
            let h = histories(&events);
            assert_eq!(
                reboot_in_progress(h.get("pve1"), 3).as_deref(),
                want,
                "{states:?}"
            );
            assert_eq!(reboot_in_progress(h.get("pve1"), 2), None, "another step");
        }
        assert_eq!(reboot_in_progress(None, 3), None, "not a resume");
    }
}
