//! Running a playbook's steps on one node: plan (check mode: compute, diff, change nothing) or
//! apply (back up, write, run), producing plain [`NodeRun`] data. The step kinds live in
//! [`super::steps`], the reboot state machine in [`super::reboot`]; this file owns the node's
//! loop, its variables, and resuming a node from its journaled history.

use std::collections::{BTreeMap, HashSet};

use std::time::Instant;

use serde::{Deserialize, Serialize};

pub use super::context::{backup_dir, RunSettings, BUILTIN_VARS};
use super::context::{result, NodeState};
use super::error::StepError;
use super::model::StepKind;
use super::steps;
use super::template::Templates;
use super::validate::{check_variables, kind_name};
use crate::exec::NodeStatus;
use crate::inventory::Node;
use crate::journal::{Event, StopPoint};
use crate::maintenance::remote::{NodeShell, Remote};
pub use crate::maintenance::RollingView;
pub use crate::outcome::{GuestPolicy, StepResult, StepStatus};

/// One node's whole run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeRun {
    /// Node name.
    pub node: String,
    /// `ok` when every step ran; otherwise why not.
    pub status: NodeStatus,
    /// Steps in order.
    pub steps: Vec<StepResult>,
    /// The node was rebooted.
    pub rebooted: bool,
    /// Wall time, milliseconds.
    pub duration_ms: u64,
    /// What stopped it.
    pub error: Option<String>,
    /// Not started (an earlier batch failed, or it was done in the run being resumed).
    pub not_started: bool,
    /// Not started because the run halted (a failure or the quorum gate).
    #[serde(default)]
    pub halted: bool,
    /// Not started because the run paused before it (a window, --pause-after, a backup).
    #[serde(default)]
    pub paused: bool,
    /// Where it stopped, when it stopped short.
    #[serde(default)]
    pub stopped_at: Option<StopPoint>,
    /// Things left switched on on purpose (HA maintenance of a node that is down ...).
    #[serde(default)]
    pub left_on: Vec<String>,
}

impl NodeRun {
    fn new(node: &str) -> NodeRun {
        NodeRun {
            node: node.to_string(),
            status: NodeStatus::Ok,
            steps: Vec::new(),
            rebooted: false,
            duration_ms: 0,
            error: None,
            not_started: false,
            halted: false,
            paused: false,
            stopped_at: None,
            left_on: Vec::new(),
        }
    }

    /// A node that was never started.
    pub fn not_started(node: &str, why: &str) -> NodeRun {
        NodeRun {
            status: NodeStatus::Cancelled,
            error: Some(why.to_string()),
            not_started: true,
            ..NodeRun::new(node)
        }
    }

    /// A node not started because the run halted.
    pub fn halted(node: &str, why: &str) -> NodeRun {
        NodeRun {
            halted: true,
            ..NodeRun::not_started(node, why)
        }
    }

    /// A node not started because the run paused before it.
    pub fn paused(node: &str, why: &str) -> NodeRun {
        NodeRun {
            paused: true,
            ..NodeRun::not_started(node, why)
        }
    }

    /// Count of steps with `s`.
    pub fn count(&self, s: StepStatus) -> usize {
        self.steps.iter().filter(|r| r.status == s).count()
    }

    /// The node failed (a step, or the connection).
    pub fn failed(&self) -> bool {
        !self.not_started && self.status != NodeStatus::Ok && self.status != NodeStatus::Cancelled
    }

    /// The node was interrupted while running.
    pub fn interrupted(&self) -> bool {
        !self.not_started && self.status == NodeStatus::Cancelled
    }
}

fn to_json(v: &toml::Value) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

/// Steps whose earlier result a resume reuses: everything but reads of the node's present state.
fn reusable(kind: StepKind) -> bool {
    !matches!(kind, StepKind::Probe | StepKind::Assert | StepKind::WaitFor)
}

/// The reboot step the stopped run had issued on this node and not seen finish: its index and
/// the state journaled.
fn issued_reboot(
    s: &RunSettings,
    history: Option<&crate::journal::NodeHistory>,
) -> Option<(usize, String)> {
    use crate::maintenance::reboot::RebootState;
    s.playbook
        .file
        .steps
        .iter()
        .enumerate()
        .filter(|(_, st)| st.kind() == StepKind::Reboot)
        .find_map(|(i, _)| {
            steps::reboot_in_progress(history, i)
                .filter(|st| RebootState::parse(st).is_none_or(|x| x >= RebootState::RebootIssued))
                .map(|st| (i, st))
        })
}

/// The preview of a resume for a node still down in the reboot the stopped run issued: from
/// the journal alone (steps done before, the reboot continued, what follows checked after it).
fn preview_while_down(
    node: &Node,
    s: &RunSettings,
    history: Option<&crate::journal::NodeHistory>,
    reboot: usize,
    state: &str,
    start: Instant,
) -> NodeRun {
    let mut run = NodeRun::new(&node.name);
    for (index, step) in s.playbook.file.steps.iter().enumerate() {
        let res = if index == reboot {
            steps::continued_reboot_result(step, state, true)
        } else if let Some(prev) = reused(history, index, step) {
            prev
        } else if index < reboot && history.is_some_and(|h| !h.steps.contains_key(&index)) {
            result(step, StepStatus::Skipped, "not run before the reboot")
        } else {
            let mut r = result(
                step,
                StepStatus::Skipped,
                "checked after the reboot (not in a plan)",
            );
            r.deferred = Some(crate::outcome::Deferred::AfterReboot);
            r
        };
        run.steps.push(res);
    }
    run.duration_ms = start.elapsed().as_millis() as u64;
    run
}

/// The stopped run's result of step `index`, when a resume keeps it instead of running the
/// step again (it did not fail, and it is no read of the node's present state), marked so.
fn reused(
    history: Option<&crate::journal::NodeHistory>,
    index: usize,
    step: &super::model::Step,
) -> Option<StepResult> {
    let prev = history?
        .steps
        .get(&index)
        .filter(|r| r.status != StepStatus::Failed && reusable(step.kind()))?;
    let mut prev = prev.clone();
    prev.detail = format!("{} (done before the resume)", prev.detail);
    prev.resumed = true;
    Some(prev)
}

/// Run (or plan) the playbook on one node.
pub async fn run_node(node: &Node, s: &RunSettings) -> NodeRun {
    let start = Instant::now();
    let mut run = NodeRun::new(&node.name);
    let history = s.resume.get(&node.name);
    let record = move |event: Event| s.events.record(&node.name, event);
    if s.cancel.is_cancelled() {
        return NodeRun::not_started(&node.name, "interrupted before it started");
    }
    record(Event::NodeStarted {}).await;
    tracing::info!(node = %node.name, "connecting");
    let timeout = s.timeout.unwrap_or(node.command_timeout);
    let issued = issued_reboot(s, history);
    let connected = match (&issued, Remote::connect(node, timeout).await) {
        // The stopped run had told the node to reboot and not seen it back: a node that does not
        // answer yet is still rebooting. The preview says what the resume will do from the
        // journal; the resume waits for the node as the reboot would have.
        (Some((i, state)), Err(e))
            if NodeStatus::of_connect_error(&e) == NodeStatus::Unreachable =>
        {
            if s.check {
                return preview_while_down(node, s, history, *i, state, start);
            }
            let step = &s.playbook.file.steps[*i];
            let wait = step.timeout_or(std::time::Duration::from_secs(600));
            s.events.said(
                &node.name,
                format!(
                    "does not answer yet (the reboot the stopped run issued, at {state}); waiting up to {} for it",
                    crate::outcome::short_duration(wait)
                ),
            );
            let deadline = Instant::now() + wait;
            let mut last = Err(e);
            while Instant::now() < deadline && !s.cancel.is_cancelled() {
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
                    _ = s.cancel.cancelled() => break,
                }
                last = Remote::connect(node, timeout).await;
                if last.is_ok() {
                    break;
                }
            }
            last
        }
        (_, r) => r,
    };
    let mut remote = match connected {
        Ok(x) => x,
        Err(e) => {
            run.status = NodeStatus::of_connect_error(&e);
            run.error = Some(e.to_string());
            if history.is_some_and(|h| h.maintenance_on) {
                run.left_on.push(format!(
                    "HA maintenance is still ON for {} from the interrupted run; clear it when the node is healthy: pvefleet maintenance off {}",
                    node.name, node.name
                ));
            }
            record(Event::NodeFailed {
                error: e.to_string(),
            })
            .await;
            return run;
        }
    };
    run_connected(node, s, &mut remote, run, start).await
}

/// The node's run once it answers (`remote`): its variables, the checks before any change,
/// the repair of what a stopped run left halfway, facts, then the steps in order until one
/// fails or the run is interrupted. Every event goes through the run's bus.
pub(crate) async fn run_connected(
    node: &Node,
    s: &RunSettings,
    remote: &mut dyn NodeShell,
    mut run: NodeRun,
    start: Instant,
) -> NodeRun {
    let history = s.resume.get(&node.name);
    let record = move |event: Event| s.events.record(&node.name, event);
    let mut vars = serde_json::Map::new();
    for (k, v) in &s.playbook.file.vars {
        vars.insert(k.clone(), to_json(v));
    }
    for (k, v) in &node.vars {
        vars.insert(k.clone(), to_json(v));
    }
    for (k, v) in &s.extra_vars {
        vars.insert(k.clone(), to_json(v));
    }
    vars.insert(
        "node".into(),
        serde_json::json!({"name": node.name, "address": node.address, "groups": node.groups}),
    );
    vars.insert("run_id".into(), serde_json::json!(s.run_id));
    let mut known: HashSet<String> = vars.keys().cloned().collect();
    known.extend(BUILTIN_VARS.iter().map(|s| s.to_string()));
    // Refused before any step: undefined variables, or a node a reboot would name wrongly.
    let refused = match check_variables(&s.playbook, &known) {
        Err(e) => Some(e.to_string()),
        Ok(()) if s.playbook.reboots() => {
            // Before anything on the node changes: its name is the one Proxmox knows, and it is
            // not in HA maintenance someone else switched on (unless --allow-maintained).
            let history = s.resume.get(&node.name);
            match crate::maintenance::reboot::check_node_name(remote, s.playbook.drains()).await {
                Err(e) => Some(e.to_string()),
                Ok(()) => crate::maintenance::reboot::check_not_maintained(
                    remote,
                    s.allow_maintained || s.own_maintenance.contains(&node.name),
                    history,
                )
                .await
                .err()
                .map(|e| e.to_string()),
            }
        }
        Ok(()) => None,
    };
    if let Some(error) = refused {
        run.status = NodeStatus::Error;
        run.error = Some(error.clone());
        record(Event::NodeFailed { error }).await;
        remote.close().await;
        return run;
    }
    let mut backed_up = BTreeMap::new();
    if let Some(j) = &s.journal {
        for b in j.backups().into_iter().filter(|b| b.node == node.name) {
            backed_up.entry(b.path).or_insert(b.existed);
        }
    }
    let mut st = NodeState {
        s,
        t: Templates::new(),
        vars,
        facts: serde_json::Map::new(),
        changed: HashSet::new(),
        rebooted: false,
        reboot_pending: false,
        backed_up,
        history,
        index: 0,
        left_on: Vec::new(),
        reboot_state: None,
    };
    // Resume: what the stopped run's own detached command left halfway is repaired before
    // anything reads the node (a killed dist-upgrade: `dpkg --configure -a`).
    if let Err(e) = steps::repair_interrupted(remote, &st).await {
        run.status = status_of(&e);
        run.error = Some(e.to_string());
        record(Event::NodeFailed {
            error: e.to_string(),
        })
        .await;
        remote.close().await;
        return run;
    }
    let gather_names: Vec<String> = s
        .playbook
        .file
        .gather
        .iter()
        .map(|g| g.get_ref().clone())
        .collect();
    if !gather_names.is_empty() {
        match steps::gather(remote, &gather_names).await {
            Ok(f) => st.facts = f,
            Err(e) => {
                run.status = status_of(&e);
                run.error = Some(format!("gathering facts: {e}"));
                record(Event::NodeFailed {
                    error: run.error.clone().unwrap_or_default(),
                })
                .await;
                return run;
            }
        }
    }
    // Decide before you change: a node the run's plan reboots is asked, before its first step,
    // whether it can finish that reboot (quorum, guests under the policy, Ceph, dpkg). A node
    // that cannot is refused untouched. A resumed node is past that point: its reboot step
    // settles what the stopped run left.
    let planned = s
        .planned_reboots
        .as_ref()
        .is_some_and(|p| p.contains(&node.name));
    if !s.check && history.is_none() && planned {
        if let Some((_, step)) = s.playbook.reboot_steps().next() {
            let found = match steps::readiness_ask(&st, step) {
                Ok(ask) => crate::maintenance::readiness::check(remote, &ask)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match found {
                Ok(found) => {
                    for f in found.lines {
                        tracing::info!(node = %node.name, "before any change: {f}");
                    }
                }
                Err(e) => {
                    let error = format!("refused before any change: {e}");
                    run.status = NodeStatus::Failed;
                    run.error = Some(error.clone());
                    record(Event::NodeFailed { error }).await;
                    remote.close().await;
                    return run;
                }
            }
        }
    }
    for (index, step) in s.playbook.file.steps.iter().enumerate() {
        st.index = index;
        st.reboot_state = None;
        let name = step.name.get_ref();
        if s.cancel.is_cancelled() {
            run.status = NodeStatus::Cancelled;
            run.error = Some(format!("interrupted before step `{name}`"));
            run.stopped_at = Some(StopPoint {
                node: node.name.clone(),
                step: Some(name.clone()),
                state: Some("not started".into()),
            });
            break;
        }
        // Resume: a step that completed in the interrupted attempt is not run again (its
        // result, and whether it changed something, come from the journal).
        if let Some(prev) = reused(history, index, step) {
            if prev.status == StepStatus::Changed {
                st.changed.insert(name.clone());
                if step.kind() == StepKind::Reboot {
                    st.rebooted = true;
                }
            }
            run.steps.push(prev);
            continue;
        }
        s.events.doing(
            &node.name,
            crate::events::Activity::Step { step: name.clone() },
        );
        if !s.check {
            record(Event::StepStarted {
                index,
                step: name.clone(),
            })
            .await;
        }
        tracing::info!(node = %node.name, step = %name, "step");
        let res = match steps::run_step(remote, &mut st, step).await {
            Ok(r) => r,
            Err(e) => {
                if matches!(e, StepError::Interrupted)
                    || matches!(
                        &e,
                        StepError::Reboot(crate::maintenance::error::RebootError::Interrupted(_))
                    )
                {
                    run.status = NodeStatus::Cancelled;
                    run.error = Some(format!("interrupted in step `{name}`: {e}"));
                    run.stopped_at = Some(StopPoint {
                        node: node.name.clone(),
                        step: Some(name.clone()),
                        state: st.reboot_state.clone(),
                    });
                    record(Event::NodeInterrupted {
                        step: Some(name.clone()),
                        state: st.reboot_state.clone(),
                    })
                    .await;
                    break;
                }
                run.status = status_of(&e);
                let mut r = result(step, StepStatus::Failed, e.to_string());
                r.detail = format!("{}: {}", kind_name(step.kind()), r.detail);
                r
            }
        };
        if res.status == StepStatus::Changed {
            st.changed.insert(name.clone());
        }
        if !s.check {
            record(Event::StepDone {
                index,
                result: res.clone(),
            })
            .await;
        }
        tracing::info!(node = %node.name, step = %name, status = ?res.status, "step done");
        let failed = res.status == StepStatus::Failed;
        if failed {
            if run.status == NodeStatus::Ok {
                run.status = NodeStatus::Failed;
            }
            run.error = Some(format!("step `{}`: {}", res.step, res.detail));
            run.stopped_at = Some(StopPoint {
                node: node.name.clone(),
                step: Some(name.clone()),
                state: st.reboot_state.clone(),
            });
        }
        run.steps.push(res);
        if failed {
            break;
        }
    }
    remote.close().await;
    s.events.idle(&node.name);
    run.rebooted = st.rebooted;
    run.left_on.append(&mut st.left_on);
    run.duration_ms = start.elapsed().as_millis() as u64;
    match run.status {
        NodeStatus::Ok => {
            record(Event::NodeDone {
                rebooted: run.rebooted,
            })
            .await
        }
        NodeStatus::Cancelled => {}
        _ => {
            record(Event::NodeFailed {
                error: run.error.clone().unwrap_or_default(),
            })
            .await
        }
    }
    run
}

/// The node status a step error gives.
fn status_of(e: &StepError) -> NodeStatus {
    match e {
        StepError::Ssh(s) => NodeStatus::of_exec_error(s),
        StepError::Reboot(crate::maintenance::error::RebootError::Ssh(s)) => {
            NodeStatus::of_exec_error(s)
        }
        StepError::Interrupted => NodeStatus::Cancelled,
        _ => NodeStatus::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Activity, EventBus, Recorder, RunEvent};
    use crate::maintenance::scripted::{self, ScriptedShell};

    /// The settings of a run (not a plan) of `playbook` whose events `recorder` sees.
    fn settings(playbook: &str, recorder: &Recorder) -> RunSettings {
        RunSettings {
            playbook: super::super::model::Playbook::parse(
                playbook,
                std::path::Path::new("pb.toml"),
            )
            .expect("a valid playbook"),
            check: false,
            extra_vars: BTreeMap::new(),
            run_id: "test-run".into(),
            journal: None,
            events: EventBus::new(None).consumer(recorder.consumer()),
            timeout: None,
            guests: GuestPolicy::Refuse,
            allow_maintained: false,
            own_maintenance: Default::default(),
            output: None,
            cancel: Default::default(),
            resume: BTreeMap::new(),
            cluster: Vec::new(),
            rolling: Default::default(),
            planned_reboots: None,
            pacing: Default::default(),
            migration_pace: Default::default(),
        }
    }

    const THREE_STEPS: &str = "name = \"p\"\n\
        [[step]]\nname = \"first\"\nkind = \"run\"\ncommand = \"echo one\"\n\
        [[step]]\nname = \"second\"\nkind = \"run\"\ncommand = \"apply-it\"\n\
        [[step]]\nname = \"third\"\nkind = \"run\"\ncommand = \"echo three\"\n";

    #[tokio::test(start_paused = true)]
    async fn a_failed_step_stops_the_node_failed_at_that_step_and_runs_nothing_after_it() {
        let recorder = Recorder::default();
        let s = settings(THREE_STEPS, &recorder);
        let node = scripted::node("pve1");
        let mut shell = ScriptedShell::new("pve1")
            .on("echo one", "one\n")
            .fails("apply-it", 2, "apply-it: no such file\n")
            .on("echo three", "three\n");
        let run = run_connected(&node, &s, &mut shell, NodeRun::new("pve1"), Instant::now()).await;
        assert_eq!(run.status, NodeStatus::Failed);
        assert!(run.failed() && !run.interrupted());
        let statuses: Vec<StepStatus> = run.steps.iter().map(|r| r.status).collect();
        assert_eq!(statuses, [StepStatus::Changed, StepStatus::Failed]);
        assert_eq!(run.steps[1].detail, "exit 2: apply-it: no such file");
        let error = run.error.as_deref().unwrap_or_default();
        assert_eq!(error, "step `second`: exit 2: apply-it: no such file");
        let at = run.stopped_at.as_ref().expect("a stop point");
        assert_eq!(
            (at.node.as_str(), at.step.as_deref()),
            ("pve1", Some("second"))
        );
        assert_eq!(shell.count("echo three"), 0, "{:?}", shell.ran());
        assert_eq!(shell.count("(close)"), 1, "the session is closed");
        // The journal's trail: each step started then done, the node failed with the error.
        let trail: Vec<String> = recorder
            .recorded()
            .into_iter()
            .map(|(node, e)| {
                assert_eq!(node, "pve1");
                match e {
                    Event::StepStarted { index, step } => format!("started {index} {step}"),
                    Event::StepDone { index, result } => {
                        format!("done {index} {:?}", result.status)
                    }
                    Event::NodeFailed { error } => format!("failed: {error}"),
                    other => format!("{other:?}"),
                }
            })
            .collect();
        assert_eq!(
            trail,
            [
                "started 0 first".to_string(),
                "done 0 Changed".into(),
                "started 1 second".into(),
                "done 1 Failed".into(),
                format!("failed: {error}"),
            ]
        );
        // The live display was told each step, then that the node is idle.
        let shown: Vec<String> = recorder
            .events()
            .into_iter()
            .filter_map(|e| match e {
                RunEvent::Doing {
                    activity: Activity::Step { step },
                    ..
                } => Some(step),
                RunEvent::Idle { .. } => Some("(idle)".into()),
                _ => None,
            })
            .collect();
        assert_eq!(shown, ["first", "second", "(idle)"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_interrupted_between_steps_is_cancelled_there_and_journaled_as_interrupted() {
        let recorder = Recorder::default();
        let s = settings(THREE_STEPS, &recorder);
        s.cancel.cancel();
        let node = scripted::node("pve1");
        let mut shell = ScriptedShell::new("pve1").on("echo", "x\n");
        let run = run_connected(&node, &s, &mut shell, NodeRun::new("pve1"), Instant::now()).await;
        assert_eq!(run.status, NodeStatus::Cancelled);
        assert!(run.interrupted() && !run.failed());
        assert!(run.steps.is_empty());
        let at = run.stopped_at.as_ref().expect("a stop point");
        assert_eq!(at.step.as_deref(), Some("first"));
        assert_eq!(at.state.as_deref(), Some("not started"));
        assert_eq!(shell.count("echo"), 0, "nothing ran");
        assert!(
            !recorder
                .recorded()
                .iter()
                .any(|(_, e)| matches!(e, Event::NodeFailed { .. } | Event::NodeDone { .. })),
            "an interrupted node is neither done nor failed: {:?}",
            recorder.recorded()
        );
    }
}
