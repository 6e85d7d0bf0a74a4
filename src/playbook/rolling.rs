//! Strategies (parallel, rolling batches), the quorum gate, and reboot-and-wait
//! (DOMAIN.md §5: a new boot id, services active, the cluster quorate with the node back).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::engine::{run_node, GuestPolicy, NodeRun, Remote, RunSettings};
use super::model::{Mode, StepKind};
use crate::exec::NodeStatus;
use crate::fanout::{self, EventSink, Outcome};
use crate::inventory::Node;
use crate::probe::cluster::parse_pvecm_status;
use crate::ssh::{self, ExitStatus};

/// Services that must be active again after a reboot.
pub const HEALTH_UNITS: &str = "corosync pve-cluster pveproxy pvestatd pve-ha-lrm";

/// Votes needed for quorum with `expected` votes.
pub fn quorum_of(expected: u32) -> u32 {
    expected / 2 + 1
}

/// Whether taking `down` votes away from `total` keeps quorum; the reason when it does not.
pub fn gate(expected: u32, total: u32, down: u32) -> Result<(), String> {
    let q = quorum_of(expected);
    if total.saturating_sub(down) >= q {
        Ok(())
    } else {
        Err(format!(
            "quorum gate: {total} of {expected} votes present, taking {down} down leaves {} < quorum {q}{}",
            total.saturating_sub(down),
            if expected == 2 { " (a 2-node cluster without QDevice cannot lose a node)" } else { "" }
        ))
    }
}

async fn text(r: &Remote, cmd: &str) -> Result<(ExitStatus, String), String> {
    let o = r.sh(cmd).await.map_err(|e| e.to_string())?;
    Ok((o.exit, String::from_utf8_lossy(&o.stdout).into_owned()))
}

async fn running_guests(r: &Remote) -> Result<Vec<(String, String, String)>, String> {
    let (_, qm) = text(r, "qm list 2>/dev/null").await?;
    let (_, pct) = text(r, "pct list 2>/dev/null").await?;
    let mut out = Vec::new();
    for l in qm.lines().skip(1) {
        let w: Vec<&str> = l.split_whitespace().collect();
        if w.len() >= 3 && w[2] == "running" {
            out.push(("qm".into(), w[0].to_string(), w[1].to_string()));
        }
    }
    for l in pct.lines().skip(1) {
        let w: Vec<&str> = l.split_whitespace().collect();
        if w.len() >= 2 && w[1] == "running" {
            out.push((
                "pct".into(),
                w[0].to_string(),
                w.last().unwrap_or(&"").to_string(),
            ));
        }
    }
    Ok(out)
}

async fn boot_id(r: &Remote) -> Result<String, String> {
    let (_, id) = text(r, "cat /proc/sys/kernel/random/boot_id").await?;
    Ok(id.trim().to_string())
}

async fn ha_maintenance(r: &Remote, enable: bool) -> Result<bool, String> {
    let name = crate::quote::shell_quote(&r.node.name);
    let (rc, status) = text(
        r,
        "command -v ha-manager >/dev/null && ha-manager status 2>/dev/null",
    )
    .await?;
    if rc != ExitStatus::Code(0)
        || !status
            .lines()
            .any(|l| l.starts_with(&format!("lrm {} ", r.node.name)))
    {
        return Ok(false);
    }
    let verb = if enable { "enable" } else { "disable" };
    let (rc, _) = text(
        r,
        &format!("ha-manager crm-command node-maintenance {verb} {name}"),
    )
    .await?;
    if rc != ExitStatus::Code(0) {
        return Err(format!(
            "ha-manager crm-command node-maintenance {verb} failed"
        ));
    }
    if enable {
        // The LRM shows maintenance before the guests have moved: wait until none is left here.
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let (_, s) = text(r, "ha-manager status").await?;
            let here = format!("({}, ", r.node.name);
            if !s
                .lines()
                .any(|l| l.starts_with("service ") && l.contains(&here))
            {
                break;
            }
            if Instant::now() > deadline {
                return Err("HA services did not leave the node within 5 minutes".into());
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
    Ok(true)
}

async fn votes(r: &Remote) -> Result<Option<(u32, u32)>, String> {
    let (_, s) = text(r, "pvecm status 2>&1").await?;
    match parse_pvecm_status(&s) {
        Ok(Some(q)) => Ok(Some((q.expected_votes, q.total_votes))),
        Ok(None) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// Reboot the node behind `r` and wait until it is back and healthy; `r.session` is replaced.
pub(crate) async fn reboot_and_wait(
    r: &mut Remote,
    timeout: Duration,
    guests: GuestPolicy,
) -> Result<(), String> {
    let running = running_guests(r).await?;
    if !running.is_empty() {
        let list: Vec<String> = running
            .iter()
            .map(|(k, id, n)| format!("{k} {id} ({n})"))
            .collect();
        match guests {
            GuestPolicy::Refuse => {
                return Err(format!(
                    "guests are running: {}; migrate them, or pass --guests shutdown|ignore",
                    list.join(", ")
                ))
            }
            GuestPolicy::Shutdown => {
                for (k, id, _) in &running {
                    let (rc, _) = text(r, &format!("{k} shutdown {id}")).await?;
                    if rc != ExitStatus::Code(0) {
                        return Err(format!("{k} shutdown {id} failed"));
                    }
                }
            }
            GuestPolicy::Ignore => {}
        }
    }
    let votes_before = votes(r).await?;
    let maintenance = ha_maintenance(r, true).await?;
    let old = boot_id(r).await?;
    let (rc, _) = text(r, "(sleep 1; reboot) </dev/null >/dev/null 2>&1 &").await?;
    if rc != ExitStatus::Code(0) {
        return Err("could not issue the reboot".into());
    }
    let deadline = Instant::now() + timeout;
    // Wait for the connection to drop.
    while !r.session.is_closed() {
        if r.sh("true").await.is_err() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Reconnect with backoff until a new boot id.
    let spec = r.node.connect_spec();
    let mut backoff = Duration::from_millis(500);
    loop {
        if Instant::now() > deadline {
            return Err(format!(
                "did not come back with a new boot id within {}",
                humantime::format_duration(timeout)
            ));
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
        let Ok(session) = ssh::connect(&spec).await else {
            continue;
        };
        r.session = session;
        match boot_id(r).await {
            Ok(id) if !id.is_empty() && id != old => break,
            _ => continue,
        }
    }
    // Health: services, then the cluster with this node's votes back.
    loop {
        let (rc, _) = text(
            r,
            &format!("systemctl is-active {HEALTH_UNITS} >/dev/null 2>&1"),
        )
        .await?;
        let quorum_ok = match (votes(r).await?, votes_before) {
            (Some((_, total)), Some((_, before))) => {
                let (_, s) = text(r, "pvecm status").await?;
                s.contains("Quorate:          Yes") && total >= before
            }
            (None, _) => true,
            (Some(_), None) => true,
        };
        if rc == ExitStatus::Code(0) && quorum_ok {
            break;
        }
        if Instant::now() > deadline {
            return Err("came back, but services or the cluster are not healthy in time".into());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    if maintenance {
        ha_maintenance(r, false).await?;
    }
    Ok(())
}

/// Order nodes: the strategy's explicit order first, then inventory order.
pub fn ordered(nodes: Vec<Node>, order: &[String]) -> Vec<Node> {
    let mut out: Vec<Node> = order
        .iter()
        .filter_map(|n| nodes.iter().find(|x| &x.name == n).cloned())
        .collect();
    for n in nodes {
        if !out.iter().any(|x| x.name == n.name) {
            out.push(n);
        }
    }
    out
}

async fn run_many(
    nodes: Vec<Node>,
    s: Arc<RunSettings>,
    forks: usize,
    cancel: &CancellationToken,
    events: Option<EventSink>,
) -> Vec<NodeRun> {
    let out = fanout::run(
        nodes,
        forks,
        cancel,
        events,
        |n: &Node| n.name.clone(),
        |r: &NodeRun| !r.failed(),
        move |node: Node| {
            let s = s.clone();
            async move { run_node(&node, &s).await }
        },
    )
    .await;
    out.into_iter()
        .map(|(n, o)| match o {
            Outcome::Done(r) => r,
            Outcome::Cancelled => {
                let mut r = NodeRun::not_started(&n.name, "interrupted");
                r.not_started = false;
                r.status = NodeStatus::Cancelled;
                r
            }
            Outcome::Panicked(m) => {
                let mut r = NodeRun::not_started(&n.name, &format!("internal error: {m}"));
                r.not_started = false;
                r.status = NodeStatus::Error;
                r
            }
        })
        .collect()
}

async fn check_gate(batch: &[Node]) -> Result<(), String> {
    // Ask the cluster (through the first node of the batch) how many votes are present.
    let node = &batch[0];
    let session = ssh::connect(&node.connect_spec())
        .await
        .map_err(|e| format!("{}: {e}", node.name))?;
    let r = Remote {
        session,
        node: node.clone(),
        timeout: Duration::from_secs(30),
    };
    let v = votes(&r).await?;
    r.session.close().await;
    match v {
        None => Ok(()),
        Some((expected, total)) => gate(expected, total, batch.len() as u32),
    }
}

/// Run the playbook on `nodes` following its strategy; `done` nodes (resume) are skipped.
pub async fn execute(
    nodes: Vec<Node>,
    s: Arc<RunSettings>,
    forks: usize,
    cancel: &CancellationToken,
    events: Option<EventSink>,
    done: &HashSet<String>,
    after_batch: &(dyn Fn(&[NodeRun]) + Sync),
) -> Vec<NodeRun> {
    let strategy = s.playbook.file.strategy.clone();
    let nodes = ordered(nodes, &strategy.order);
    let mut results: Vec<NodeRun> = Vec::new();
    let todo: Vec<Node> = nodes
        .iter()
        .filter(|n| {
            if done.contains(&n.name) {
                results.push(NodeRun::not_started(
                    &n.name,
                    "already done in the resumed run",
                ));
                false
            } else {
                true
            }
        })
        .cloned()
        .collect();
    if s.check || strategy.mode == Mode::Parallel {
        // One batch: the final table shows it; no per-batch table.
        results.extend(run_many(todo, s.clone(), forks, cancel, events).await);
        return results;
    }
    let size = strategy.batch.resolve(todo.len()).unwrap_or(1);
    let reboots = s
        .playbook
        .file
        .steps
        .iter()
        .any(|st| *st.kind.get_ref() == StepKind::Reboot);
    let mut failures = 0usize;
    let mut halted: Option<String> = None;
    for batch in todo.chunks(size) {
        if let Some(why) = &halted {
            results.extend(batch.iter().map(|n| NodeRun::not_started(&n.name, why)));
            continue;
        }
        if cancel.is_cancelled() {
            results.extend(
                batch
                    .iter()
                    .map(|n| NodeRun::not_started(&n.name, "interrupted before its batch")),
            );
            continue;
        }
        if reboots {
            if let Err(e) = check_gate(batch).await {
                halted = Some(format!("halted: {e}"));
                let mut rs: Vec<NodeRun> = batch
                    .iter()
                    .map(|n| {
                        let mut r = NodeRun::not_started(&n.name, &e);
                        r.not_started = false;
                        r.status = NodeStatus::Failed;
                        r
                    })
                    .collect();
                after_batch(&rs);
                results.append(&mut rs);
                continue;
            }
        }
        let r = run_many(batch.to_vec(), s.clone(), forks, cancel, events.clone()).await;
        failures += r.iter().filter(|x| x.failed()).count();
        after_batch(&r);
        if failures > strategy.max_failures {
            let names: Vec<&str> = r
                .iter()
                .filter(|x| x.failed())
                .map(|x| x.node.as_str())
                .collect();
            halted = Some(format!(
                "halted: {} failed in an earlier batch",
                names.join(", ")
            ));
        }
        results.extend(r);
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_keeps_quorum() {
        assert!(gate(3, 3, 1).is_ok());
        assert!(gate(3, 2, 1).is_err(), "a second node down loses quorum");
        let e = gate(2, 2, 1).unwrap_err();
        assert!(e.contains("2-node cluster"), "{e}");
        assert!(gate(5, 5, 2).is_ok());
        assert!(gate(5, 5, 3).is_err());
        assert_eq!(quorum_of(4), 3);
    }
}
