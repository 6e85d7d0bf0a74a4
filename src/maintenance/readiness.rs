//! Decide before you change: whether a node whose run reboots it can finish that reboot, asked
//! of the cluster before anything on the node changes (issue 14 §8). The plan shows the answer
//! per node; the run asks again just before the node's first step, and a node that cannot
//! finish is refused there, untouched. The reboot itself checks once more when it comes (the
//! cluster may have changed in between): this is the early answer, not the only one.
//!
//! What is asked, in the order an operator would:
//! - the quorum margin: taking this node's votes away keeps the cluster quorate;
//! - the guests under the run's policy: with a drain, which guests move where (memory placed as
//!   the drain will place it, HA-managed guests included, over the nodes the drain may use) and
//!   which cannot move (host devices, local disks, a lock), which `--guests refuse` refuses;
//!   without a drain, which running guests the policy refuses, shuts down or leaves running;
//! - Ceph (when the node has it): health, apart from accepted warnings (the run gives a Ceph
//!   that is not healthy [`CEPH_SETTLE`] to become so: real Ceph re-peers a PG for a moment just
//!   after a recovery), and `ok-to-stop` for the node's OSDs and its monitor;
//! - dpkg: nothing half-way (`dpkg --audit` empty), as a node is not rebooted in the middle of
//!   someone else's package run.
//!
//! Every answer that could not be read is a refusal (unknown is not ready).

use super::drain;
use super::error::RebootError;
use super::reboot::{DrainOpts, RollingView};
use super::remote::NodeShell;
use crate::capacity::placement::{gib, Placer};
use crate::capacity::resources::GuestRes;
use crate::inventory::Node;
use crate::outcome::{GuestPolicy, PlannedMove};

pub use super::ceph_gate::SETTLE as CEPH_SETTLE;

/// What the reboot step of the run will do, as far as this check needs it.
pub struct Ask<'a> {
    /// The run's guest policy.
    pub guests: GuestPolicy,
    /// The reboot step drains, with its options.
    pub drain: Option<DrainOpts>,
    /// Ceph health check codes the reboot step accepts.
    pub ceph_accept: Vec<String>,
    /// Every node of the inventory (drain targets must be reachable).
    pub cluster: &'a [Node],
    /// The rolling run as a drain sees it.
    pub rolling: &'a std::sync::Mutex<RollingView>,
    /// How long a Ceph that is not healthy may take to become so before the node is refused
    /// (the run: a PG re-peering for a moment just after the previous node's recovery is not a
    /// reason to stop; the plan answers at once).
    pub ceph_settle: std::time::Duration,
    /// In the preview of a resume: the run's nodes whose reboot the resume continues first
    /// (their votes are gone now and back before this node's turn).
    pub coming_back: Vec<String>,
}

/// What the cluster said when asked whether a node can finish its reboot.
#[derive(Debug, Default)]
pub struct Found {
    /// One line each: quorum, guests, Ceph, dpkg.
    pub lines: Vec<String>,
    /// Where each guest that leaves would go.
    pub moves: Vec<PlannedMove>,
}

/// The node can finish its reboot: what was found.
pub async fn check(r: &dyn NodeShell, ask: &Ask<'_>) -> Result<Found, RebootError> {
    let mut found = Found::default();
    found.lines.push(quorum(r, &ask.coming_back).await?);
    let (lines, moves) = guests(r, ask).await?;
    found.lines.extend(lines);
    found.moves = moves;
    if let Some(line) = ceph(r, ask).await? {
        found.lines.push(line);
    }
    found.lines.push(dpkg(r).await?);
    Ok(found)
}

async fn quorum(r: &dyn NodeShell, coming_back: &[String]) -> Result<String, RebootError> {
    match super::health::votes(r).await? {
        None => Ok("quorum: not in a cluster".into()),
        Some((expected, total, _)) => {
            let q = super::health::quorum_of(expected);
            match super::health::gate(expected, total, 1) {
                Ok(()) => Ok(format!(
                    "quorum: {total} of {expected} votes, quorum {q}: {} may be down at once",
                    total - q
                )),
                // A preview of a resume: the run waits for the nodes it is rebooting before
                // this one's turn (one vote each counted back; the run's gate asks again).
                Err(e) if coming_back.is_empty() => Err(RebootError::Quorum(e)),
                Err(e) => {
                    let back = total + coming_back.len() as u32;
                    super::health::gate(expected, back, 1).map_err(|_| RebootError::Quorum(e))?;
                    Ok(format!(
                        "quorum: {total} of {expected} votes now; {} coming back first from the reboot the resume continues, then {back} of {expected}, quorum {q}: {} may be down at once",
                        coming_back.join(", "),
                        back - q
                    ))
                }
            }
        }
    }
}

async fn guests(
    r: &dyn NodeShell,
    ask: &Ask<'_>,
) -> Result<(Vec<String>, Vec<PlannedMove>), RebootError> {
    let me = r.node().name.as_str();
    let Some(opts) = ask.drain else {
        // No drain: the policy meets every running guest that HA does not move.
        let running = drain::running_not_ha(r).await?;
        if running.is_empty() {
            return Ok((vec!["guests: none running outside HA".into()], Vec::new()));
        }
        let list = drain::describe(&running);
        let line = match ask.guests {
            GuestPolicy::Refuse => return Err(RebootError::GuestsRunning(list)),
            GuestPolicy::Shutdown => {
                format!("guests: would shut down {list} and start them again after the boot")
            }
            GuestPolicy::Ignore => {
                format!("guests: {list} left running through the reboot (--guests ignore)")
            }
        };
        return Ok((vec![line], Vec::new()));
    };
    let res = drain::resources(r).await?;
    let plan = drain::plan_drain(r, &res, opts.local_disks).await?;
    let mut lines = Vec::new();
    if !plan.unmovable.is_empty() {
        let why = plan.unmovable_why();
        match ask.guests {
            GuestPolicy::Refuse => return Err(RebootError::GuestsRunning(why)),
            GuestPolicy::Shutdown => {
                lines.push(format!("guests: cannot move, would shut down: {why}"))
            }
            GuestPolicy::Ignore => lines.push(format!("guests: cannot move, left running: {why}")),
        }
    }
    // Room for everything that leaves: the HA-managed guests (HA moves them, to nodes of its
    // choosing, but they need the room all the same) and the ones the drain migrates.
    let stuck: Vec<u32> = plan.unmovable.iter().map(|(g, _)| g.vmid).collect();
    let ha: Vec<&GuestRes> = res
        .running_on(me)
        .filter(|g| g.ha && !stuck.contains(&g.vmid))
        .collect();
    let leaving: Vec<&GuestRes> = ha.iter().copied().chain(plan.movable.iter()).collect();
    if leaving.is_empty() {
        if lines.is_empty() {
            lines.push("guests: none to move".into());
        }
        return Ok((lines, Vec::new()));
    }
    let (excluded, later) = drain::targets(r, &res, ask.cluster, ask.rolling).await?;
    let mut placer = Placer::new(&res, me, &excluded, &later);
    let targets = placer.place_all(&leaving).map_err(|e| {
        RebootError::Command(format!(
            "the drain cannot place every guest: {e}{}",
            if excluded.is_empty() {
                String::new()
            } else {
                format!(
                    " (not drain targets: {})",
                    excluded.iter().cloned().collect::<Vec<_>>().join(", ")
                )
            }
        ))
    })?;
    let moves: Vec<PlannedMove> = leaving
        .iter()
        .zip(&targets)
        .map(|(g, t)| {
            let at = drain::guest_ref(g);
            PlannedMove {
                kind: at.kind,
                vmid: at.vmid,
                name: at.name,
                to: t.clone(),
                by_ha: g.ha,
                maxmem: g.maxmem,
            }
        })
        .collect();
    let said: Vec<String> = leaving
        .iter()
        .zip(&moves)
        .map(|(g, m)| {
            let mem = m.maxmem.map(gib).unwrap_or_default();
            let how = if m.by_ha { ", by HA" } else { "" };
            format!(
                "{} -> {} ({mem}{how})",
                drain::describe(std::slice::from_ref(&drain::guest_ref(g))),
                m.to
            )
        })
        .collect();
    lines.push(format!("guests: {}", said.join("; ")));
    Ok((lines, moves))
}

async fn ceph(r: &dyn NodeShell, ask: &Ask<'_>) -> Result<Option<String>, RebootError> {
    if !super::ceph_gate::detect(r).await? {
        return Ok(None);
    }
    super::ceph_gate::check_health_settled(r, &ask.ceph_accept, false, ask.ceph_settle).await?;
    super::ceph_gate::ok_to_stop_settled(r, &r.node().name, ask.ceph_settle).await?;
    Ok(Some(
        "ceph: healthy enough, ok-to-stop for the node's OSDs and monitor".into(),
    ))
}

async fn dpkg(r: &dyn NodeShell) -> Result<String, RebootError> {
    let (_, text) = r.text("LC_ALL=C dpkg --audit 2>&1").await?;
    let names = crate::probe::updates::dpkg_audit_findings(&text);
    if names.is_empty() {
        return Ok("dpkg: nothing half-way".into());
    }
    Err(RebootError::Command(format!(
        "dpkg --audit: {}: a dpkg run stopped half-way; finish it (dpkg --configure -a) before rebooting",
        names.join(", ")
    )))
}
