//! The reboot of one node as an explicit state machine, journaled at every transition so a
//! controller killed at any point resumes from the state it reached (DESIGN.md, safety model):
//!
//! preflight (Ceph health and ok-to-stop; with `drain`, what can move and where) ->
//! maintenance-on (HA guests moved away) -> guests-migrated (with `drain`) -> guests-stopped
//! (policy for the rest) -> noout-set (Ceph) -> reboot-issued (old boot id recorded first) ->
//! down-seen -> up-new-boot -> services-active (each unit on its own) -> quorate (votes back) ->
//! ceph-clean (OSDs up, every PG active+clean) -> noout-unset -> maintenance-off ->
//! guests-returned -> guests-started -> done.
//!
//! A drain undone before the reboot was issued (a stop or a failure there) ends in
//! `drain-undone`, which sorts before the drain: the states after `reboot-issued` are only ever
//! journaled for a node that was rebooted, so a resume never takes an undone drain for a
//! finished reboot.
//!
//! What the run switched on is switched back when the node is back. When it stops with the node
//! not back (never returned, unhealthy, interrupted while down), HA maintenance stays on on
//! purpose: recorded in the journal (`maintenance` `left-on`) and reported loudly; `run --resume`
//! or `pvefleet maintenance off NODE` clears it. Stopping before the reboot was issued undoes
//! the drain at once (maintenance off, stopped guests started).

use std::time::Duration;
// tokio's clock (the same as std's unless paused): unit tests run the waits in paused time.
use tokio::time::Instant;

use tokio_util::sync::CancellationToken;

use super::drain;
use super::error::RebootError;
use super::health;
use super::remote::{NodeShell, Reconnect, Remote};
use crate::events::{Activity, EventBus};
use crate::journal::{Event, GuestRef, NodeHistory};
use crate::outcome::GuestPolicy;
use crate::ssh;

pub use crate::vocab::RebootState;

/// A reboot of the node that the stopped run issued and did not see finish: its vote is gone,
/// or coming back, and the resume continues it before anything else on that node.
pub fn reboot_underway(h: &NodeHistory) -> bool {
    h.reboots
        .values()
        .filter_map(|p| RebootState::parse(&p.state))
        .any(|st| st >= RebootState::RebootIssued && st != RebootState::Done)
}

/// What a reboot needs besides the node.
pub struct RebootCtx<'a> {
    /// Index of the reboot step (journal key).
    pub index: usize,
    /// Deadline for coming back healthy.
    pub timeout: Duration,
    /// Running guests that are not HA-managed.
    pub guests: GuestPolicy,
    /// A node already in HA maintenance (someone else's) may be rebooted; its maintenance is
    /// never switched off.
    pub allow_maintained: bool,
    /// The reboot step's name (what the live display shows the node doing under).
    pub step: &'a str,
    /// The run's events: every transition journaled through it, what the reboot does within a
    /// state (each migration, the Ceph wait's counts) for the live display, notes.
    pub events: &'a EventBus,
    /// Ctrl-C, SIGTERM, SIGHUP.
    pub cancel: &'a CancellationToken,
    /// The node's history when resuming.
    pub resume: Option<&'a NodeHistory>,
    /// Told each state reached (the stop point).
    pub on_state: &'a (dyn Fn(RebootState) + Send + Sync),
    /// Drain the node (migrate guests away and back), with its options.
    pub drain: Option<DrainOpts>,
    /// Ceph health check codes that do not stop the run.
    pub ceph_accept: Vec<String>,
    /// How long PGs may take to be clean again.
    pub pg_timeout: Duration,
    /// Every node of the inventory (to reach where a moved guest is).
    pub cluster: &'a [crate::inventory::Node],
    /// Which nodes are still to come / rebooting now.
    pub rolling: &'a std::sync::Mutex<RollingView>,
}

/// The rolling run as a drain sees it.
#[derive(Debug, Clone, Default)]
pub struct RollingView {
    /// Nodes not finished yet (this batch and later ones).
    pub pending: std::collections::BTreeSet<String>,
    /// Nodes of the batch running now.
    pub current: std::collections::BTreeSet<String>,
}

/// A drain's options (the reboot step's fields).
#[derive(Debug, Clone, Copy)]
pub struct DrainOpts {
    /// `--with-local-disks` allowed.
    pub local_disks: bool,
    /// Move guests back after the reboot.
    pub return_guests: bool,
    /// How many migrations at once, and their bandwidth.
    pub pace: drain::MigrationPace,
}

/// How a reboot ended.
#[derive(Debug, Default)]
pub struct RebootReport {
    /// Things left switched on on purpose, each with how to clear it.
    pub left_on: Vec<String>,
    /// Guests stopped and started again.
    pub restarted: Vec<GuestRef>,
    /// Guests moved away (and back, unless return_guests is off).
    pub moved: Vec<(GuestRef, String)>,
    /// The reboot was already done before a resume (not rebooted again).
    pub resumed_from: Option<RebootState>,
}

struct Machine<'a, 'c> {
    cx: &'a RebootCtx<'c>,
    state: RebootState,
    old_boot: Option<String>,
    votes_before: Option<u32>,
    maintenance: bool,
    stopped: Vec<GuestRef>,
    /// Moved away and not back: (guest, origin, where it is).
    moved: Vec<(GuestRef, String, String)>,
    /// Migrations a stopped controller left unfinished: (guest, from, to).
    moving: Vec<(GuestRef, String, String)>,
    /// Return migrations a stopped controller left unfinished: (guest, its node, where it was).
    returning: Vec<(GuestRef, String, String)>,
    /// Undoing the drain before the reboot: the states of a finished reboot are not journaled.
    undoing: bool,
    /// Every guest this reboot moved (for the report).
    moved_all: Vec<(GuestRef, String)>,
    /// Ceph present (`None`: not asked yet).
    ceph: Option<bool>,
    /// noout set by this run for the node.
    noout: Option<super::ceph_gate::NooutScope>,
}

impl Machine<'_, '_> {
    fn node<'r>(&self, r: &'r dyn NodeShell) -> &'r str {
        &r.node().name
    }

    async fn record(&self, r: &dyn NodeShell, event: Event) {
        self.cx.events.record(self.node(r), event).await;
    }

    /// The live display is told what the node does now.
    fn doing(&self, r: &dyn NodeShell, activity: Activity) {
        self.cx.events.doing(self.node(r), activity);
    }

    /// A note for the operator about this node.
    fn say(&self, r: &dyn NodeShell, text: String) {
        self.cx.events.said(self.node(r), text);
    }

    async fn to(&mut self, r: &dyn NodeShell, state: RebootState, detail: Option<String>) {
        if self.undoing && state > RebootState::RebootIssued {
            // Undoing a drain reaches the same steps as the end of a reboot (noout unset,
            // maintenance off, guests back) but is not one: the events say what was done, the
            // state stays where the drain stood.
            tracing::info!(node = %r.node().name, step = state.as_str(), "undoing the drain");
            return;
        }
        self.state = state;
        tracing::info!(node = %r.node().name, state = state.as_str(), "reboot");
        (self.cx.on_state)(state);
        self.doing(
            r,
            Activity::Reboot {
                step: self.cx.step.to_string(),
                state,
                deadline: state.waits().then_some(self.cx.timeout),
            },
        );
        let detail = detail.or_else(|| self.votes_before.map(|v| format!("votes_before={v}")));
        self.record(
            r,
            Event::Reboot {
                index: self.cx.index,
                state: state.as_str().into(),
                old_boot_id: self.old_boot.clone(),
                detail,
            },
        )
        .await;
    }

    fn cancelled(&self) -> Result<(), RebootError> {
        if self.cx.cancel.is_cancelled() {
            Err(RebootError::Interrupted(self.state.as_str().to_string()))
        } else {
            Ok(())
        }
    }

    async fn sleep(&self, d: Duration) -> Result<(), RebootError> {
        tokio::select! {
            _ = self.cx.cancel.cancelled() => Err(RebootError::Interrupted(self.state.as_str().to_string())),
            _ = tokio::time::sleep(d) => Ok(()),
        }
    }

    /// Before anything is touched: which running guests (not HA-managed) would stop the node
    /// under `--guests refuse`, and, with `drain`, which of them can move.
    async fn guests_plan(
        &self,
        r: &dyn NodeShell,
    ) -> Result<(Vec<GuestRef>, Option<drain::DrainPlan>), RebootError> {
        let running = drain::running_not_ha(r).await?;
        let Some(opts) = self.cx.drain else {
            return Ok((running, None));
        };
        let res = drain::resources(r).await?;
        let plan = drain::plan_drain(r, &res, opts.local_disks).await?;
        let stuck: Vec<GuestRef> = plan.unmovable.iter().map(|(g, _)| g.clone()).collect();
        Ok((stuck, Some(plan)))
    }

    /// A migration the stopped controller left unfinished. Its task may still be running on
    /// the node (migrations run detached from the session, see
    /// [`drain::detached_migration_script`]): wait while the node lists it as running, up to
    /// [`drain::MIGRATION_TIMEOUT`]. Then, if the guest reached its target, the move is recorded
    /// as done; if it is still here and still locked by the migration (`lock: migrate`, which
    /// nothing else would have set on a guest this run was moving) with no migration task
    /// running, the migration died and the lock is released so the drain can move it again.
    async fn settle_unfinished_moves(&mut self, r: &dyn NodeShell) -> Result<(), RebootError> {
        if self.moving.is_empty() {
            return Ok(());
        }
        let deadline = Instant::now() + drain::MIGRATION_TIMEOUT;
        let mut told = false;
        let res = loop {
            let res = drain::resources(r).await?;
            let mut running = Vec::new();
            let mut asked = false;
            for (g, from, _) in &self.moving {
                // Still here, locked or not: a migration that had just started may not have
                // taken its lock yet.
                let here = res
                    .guests
                    .iter()
                    .any(|x| x.vmid == g.vmid && &x.node == from);
                if here {
                    asked = true;
                    for upid in drain::running_migration_tasks(r, from, g).await? {
                        running.push((g.clone(), upid));
                    }
                }
            }
            let Some((g, upid)) = running.first() else {
                // No migration task runs now; one may have ended between the guest list and
                // the task list, so the final picture is read after the tasks were asked.
                if asked {
                    break drain::resources(r).await?;
                }
                break res;
            };
            let what = drain::describe(std::slice::from_ref(g));
            if Instant::now() > deadline {
                return Err(RebootError::Command(format!(
                    "the migration of {what} the stopped run started (task {upid}) is still running after {}; let it end or stop it, then resume",
                    humantime::format_duration(drain::MIGRATION_TIMEOUT)
                )));
            }
            if !told {
                told = true;
                self.say(
                    r,
                    format!("waiting for the migration of {what} the stopped run started (task {upid}) to end"),
                );
                tracing::info!(node = %r.node().name, guest = g.vmid, %upid, "waiting for an unfinished migration");
            }
            self.sleep(Duration::from_secs(2)).await?;
        };
        for (g, from, to) in std::mem::take(&mut self.moving) {
            let now = res.guests.iter().find(|x| x.vmid == g.vmid);
            match now {
                Some(x) if x.node == to => {
                    self.record(
                        r,
                        Event::GuestMoved {
                            guest: g.clone(),
                            from: from.clone(),
                            to: to.clone(),
                            phase: crate::vocab::Phase::Done,
                            maxmem: None,
                        },
                    )
                    .await;
                    self.moved.push((g.clone(), from, to.clone()));
                    self.moved_all.push((g, to));
                }
                Some(x) if x.node == from && x.lock.as_deref() == Some("migrate") => {
                    tracing::warn!(node = %from, guest = g.vmid, "unlocking a migration the stopped run left");
                    self.say(
                        r,
                        format!(
                            "{} was left locked by a migration the stopped run had started, which is no longer running; unlocking it to move it again",
                            drain::describe(std::slice::from_ref(&g))
                        ),
                    );
                    drain::unlock(r, &g).await?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Return migrations the stopped controller left unfinished (`guest_returning` with no
    /// `guest_returned`). Settled as the moves away are ([`Self::settle_unfinished_moves`]): the
    /// migration's task is looked for on the node it runs on (where the guest was) and waited
    /// for while it runs; then the guest is looked up where it is now. Home: the return is
    /// recorded as done (not run a second time from a node the guest has left). Still where it
    /// was and locked `migrate` with no task running: the migration died, the lock is released
    /// and the return is done again. Elsewhere: it is returned from there.
    async fn settle_unfinished_returns(&mut self, r: &dyn NodeShell) -> Result<(), RebootError> {
        for (g, origin, at) in std::mem::take(&mut self.returning) {
            let what = drain::describe(std::slice::from_ref(&g));
            let Some(node) = self.cx.cluster.iter().find(|n| n.name == at) else {
                return Err(RebootError::Command(format!(
                    "cannot tell whether the return of {what} from {at} the stopped run started is still running: {at} is not in the inventory"
                )));
            };
            let there = Remote::connect(node, r.timeout()).await?;
            let settled = self.settle_return(r, &there, &g, &origin, &at).await;
            there.session.close().await;
            if let Some(now) = settled? {
                tracing::info!(node = %r.node().name, guest = g.vmid, at = %now, "return to do again");
                match self.moved.iter_mut().find(|(x, _, _)| *x == g) {
                    Some(m) => m.2 = now,
                    None => self.moved.push((g, origin, now)),
                }
            }
        }
        Ok(())
    }

    /// One unfinished return: `Some(node)` where the guest is when it still has to be returned,
    /// `None` when it is home (recorded).
    async fn settle_return(
        &mut self,
        r: &dyn NodeShell,
        there: &dyn NodeShell,
        g: &GuestRef,
        origin: &str,
        at: &str,
    ) -> Result<Option<String>, RebootError> {
        let what = drain::describe(std::slice::from_ref(g));
        let deadline = Instant::now() + drain::MIGRATION_TIMEOUT;
        let mut told = false;
        loop {
            let running = drain::running_migration_tasks(there, at, g).await?;
            let Some(upid) = running.first() else {
                break;
            };
            if Instant::now() > deadline {
                return Err(RebootError::Command(format!(
                    "the return of {what} the stopped run started (task {upid} on {at}) is still running after {}; let it end or stop it, then resume",
                    humantime::format_duration(drain::MIGRATION_TIMEOUT)
                )));
            }
            if !told {
                told = true;
                self.say(
                    r,
                    format!("waiting for the return of {what} from {at} the stopped run started (task {upid}) to end"),
                );
            }
            self.sleep(Duration::from_secs(2)).await?;
        }
        // Read after the task list: a task that ended in between has its result in the picture.
        let res = drain::resources(r).await?;
        let Some(now) = res.guests.iter().find(|x| x.vmid == g.vmid) else {
            return Err(RebootError::Command(format!(
                "{what}, which the stopped run was moving back from {at}, is not in the cluster's resources; find it by hand"
            )));
        };
        if now.node == origin {
            self.say(
                r,
                format!("{what} is back (its return, started by the stopped run, completed)"),
            );
            self.moved.retain(|(x, _, _)| x != g);
            self.record(
                r,
                Event::GuestReturned {
                    guest: g.clone(),
                    to: origin.to_string(),
                },
            )
            .await;
            self.moved_all.push((g.clone(), at.to_string()));
            return Ok(None);
        }
        if now.node == at && now.lock.as_deref() == Some("migrate") {
            self.say(
                r,
                format!("{what} was left locked on {at} by a return the stopped run had started, which is no longer running; unlocking it to move it back again"),
            );
            drain::unlock(there, g).await?;
        }
        Ok(Some(now.node.clone()))
    }

    /// Maintenance on, HA guests away, movable guests migrated, then the policy for the rest.
    async fn drain(&mut self, r: &dyn NodeShell) -> Result<(), RebootError> {
        self.settle_unfinished_moves(r).await?;
        // The policy `refuse` stops the node before anything is touched.
        let (stuck, plan) = self.guests_plan(r).await?;
        if self.cx.guests == GuestPolicy::Refuse && !stuck.is_empty() {
            let why = match &plan {
                Some(p) => p.unmovable_why(),
                None => drain::describe(&stuck),
            };
            return Err(RebootError::GuestsRunning(why));
        }
        // The run's own maintenance (a resume) is not someone else's.
        let foreign = if self.maintenance {
            None
        } else {
            maintained(r).await?
        };
        if let Some(holder) = foreign {
            // Someone else's maintenance: refused unless allowed; then waited on like ours
            // (its HA guests must be gone) but never switched off by this run.
            if !self.cx.allow_maintained {
                return Err(RebootError::Maintained(holder));
            }
            self.record(
                r,
                Event::Maintenance {
                    state: crate::vocab::MaintenanceState::FoundOn,
                    why: Some(format!(
                        "already on before the run ({holder}); left as found"
                    )),
                },
            )
            .await;
            drain::wait_ha_drained(r, self.cx.cancel).await?;
            self.to(r, RebootState::MaintenanceOn, None).await;
        } else if drain::has_ha(r).await? {
            // Intent first: if we die between the two, resume knows to switch it off again.
            self.record(
                r,
                Event::Maintenance {
                    state: crate::vocab::MaintenanceState::On,
                    why: None,
                },
            )
            .await;
            self.maintenance = true;
            drain::set_maintenance(r, true).await?;
            drain::wait_ha_drained(r, self.cx.cancel).await?;
            self.to(r, RebootState::MaintenanceOn, None).await;
        }
        self.cancelled()?;
        if let (Some(opts), Some(_)) = (self.cx.drain, &plan) {
            self.migrate_away(r, opts).await?;
            self.to(r, RebootState::GuestsMigrated, None).await;
        }
        // What is still running (not HA, not moved) meets the policy.
        let running = drain::running_not_ha(r).await?;
        if !running.is_empty() {
            match self.cx.guests {
                GuestPolicy::Refuse => {
                    return Err(RebootError::GuestsRunning(drain::describe(&running)));
                }
                GuestPolicy::Shutdown => {
                    for g in running {
                        self.cancelled()?;
                        self.record(
                            r,
                            Event::GuestStopped {
                                guest: g.clone(),
                                phase: crate::vocab::Phase::Intent,
                            },
                        )
                        .await;
                        if !self.stopped.contains(&g) {
                            self.stopped.push(g.clone());
                        }
                        drain::shutdown(r, &g).await?;
                        self.record(
                            r,
                            Event::GuestStopped {
                                guest: g,
                                phase: crate::vocab::Phase::Done,
                            },
                        )
                        .await;
                    }
                }
                GuestPolicy::Ignore => {}
            }
        }
        self.to(r, RebootState::GuestsStopped, None).await;
        Ok(())
    }

    /// Live-migrate the movable guests to nodes with room (re-read after HA moved its guests),
    /// up to [`drain::concurrency`] at once, the largest first. Each move is journaled
    /// intent-first when it starts and done when the cluster shows the guest on its target, so
    /// a resume finds every move that was under way ([`Self::settle_unfinished_moves`]). A
    /// failed migration starts no further one; those already running are waited for (they run
    /// detached and would end anyway) and recorded, then the failure is returned. A stop
    /// request likewise starts none, lets the running ones end, and stops.
    async fn migrate_away(
        &mut self,
        r: &dyn NodeShell,
        opts: DrainOpts,
    ) -> Result<(), RebootError> {
        use futures::stream::{FuturesUnordered, StreamExt};
        let res = drain::resources(r).await?;
        let plan = drain::plan_drain(r, &res, opts.local_disks).await?;
        let me = r.node().name.clone();
        let (excluded, later) = drain::targets(r, &res, self.cx.cluster, self.cx.rolling).await?;
        let mut placer = crate::capacity::placement::Placer::new(&res, &me, &excluded, &later);
        let movable: Vec<&crate::capacity::resources::GuestRes> = plan.movable.iter().collect();
        let targets = placer
            .place_all(&movable)
            .map_err(|e| RebootError::Command(e.to_string()))?;
        if plan.movable.is_empty() {
            return Ok(());
        }
        let total = plan.movable.len();
        let limit = drain::concurrency(r, opts.pace).await? as usize;
        let at_once = limit.min(total) as u32;
        let bwlimit = drain::share(opts.pace, at_once);
        tracing::info!(node = %me, guests = total, at_once, ?bwlimit, "drain");
        let mut queue = plan.movable.iter().zip(targets);
        let mut running = FuturesUnordered::new();
        // (guest, target) of the migrations under way, for the display.
        let mut under_way: Vec<(GuestRef, String)> = Vec::new();
        let mut failed: Option<RebootError> = None;
        let mut finished = 0usize;
        loop {
            while running.len() < limit && failed.is_none() && !self.cx.cancel.is_cancelled() {
                let Some((g, target)) = queue.next() else {
                    break;
                };
                let gref = drain::guest_ref(g);
                self.record(
                    r,
                    Event::GuestMoved {
                        guest: gref.clone(),
                        from: me.clone(),
                        to: target.clone(),
                        phase: crate::vocab::Phase::Intent,
                        maxmem: g.maxmem,
                    },
                )
                .await;
                tracing::info!(node = %me, guest = g.vmid, to = %target, "migrate");
                under_way.push((gref.clone(), target.clone()));
                let maxmem = g.maxmem;
                running.push(async move {
                    let out = drain::migrate(r, &gref, &target, opts.local_disks, bwlimit).await;
                    (gref, target, maxmem, out)
                });
            }
            if running.is_empty() {
                break;
            }
            self.doing(
                r,
                Activity::Migrating {
                    step: self.cx.step.to_string(),
                    under_way: under_way.clone(),
                    finished,
                    total,
                    back: false,
                },
            );
            let Some((gref, target, maxmem, out)) = running.next().await else {
                break;
            };
            under_way.retain(|(g, _)| *g != gref);
            finished += 1;
            match out {
                Ok(()) => {
                    self.record(
                        r,
                        Event::GuestMoved {
                            guest: gref.clone(),
                            from: me.clone(),
                            to: target.clone(),
                            phase: crate::vocab::Phase::Done,
                            maxmem,
                        },
                    )
                    .await;
                    self.moved.push((gref.clone(), me.clone(), target.clone()));
                    self.moved_all.push((gref, target));
                }
                Err(e) => {
                    tracing::warn!(node = %me, guest = gref.vmid, error = %e, "migration failed");
                    if failed.is_none() {
                        failed = Some(e);
                    } else {
                        self.say(r, e.to_string());
                    }
                }
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        self.cancelled()
    }

    /// Ceph before the node goes down: detected, healthy enough, ok to stop, noout set.
    async fn ceph_before(&mut self, r: &dyn NodeShell) -> Result<(), RebootError> {
        if !self.ceph_present(r).await? {
            return Ok(());
        }
        super::ceph_gate::check_health_settled(
            r,
            &self.cx.ceph_accept,
            self.noout.is_some(),
            super::ceph_gate::SETTLE,
        )
        .await?;
        super::ceph_gate::ok_to_stop_settled(r, &r.node().name, super::ceph_gate::SETTLE).await?;
        Ok(())
    }

    async fn ceph_present(&mut self, r: &dyn NodeShell) -> Result<bool, RebootError> {
        if let Some(c) = self.ceph {
            return Ok(c);
        }
        let c = super::ceph_gate::detect(r).await?;
        self.ceph = Some(c);
        Ok(c)
    }

    async fn set_noout(&mut self, r: &dyn NodeShell) -> Result<(), RebootError> {
        if !self.ceph_present(r).await? || self.noout.is_some() {
            return Ok(());
        }
        // Checked again right before: the drain took time and another node may be down now.
        super::ceph_gate::ok_to_stop_settled(r, &r.node().name, super::ceph_gate::SETTLE).await?;
        // noout already set (an operator's, cluster-wide or for this host): left exactly as
        // found, never unset by this run.
        if let Some(found) = super::ceph_gate::noout_found(r, &r.node().name).await? {
            self.record(
                r,
                Event::Noout {
                    state: crate::vocab::NooutState::FoundSet,
                    scope: found.as_str().into(),
                    why: Some("set before the run; left as found".into()),
                },
            )
            .await;
            self.to(r, RebootState::NooutSet, None).await;
            return Ok(());
        }
        // Intent first (as host scope, the usual one); the scope used is recorded after.
        self.record(
            r,
            Event::Noout {
                state: crate::vocab::NooutState::Set,
                scope: "host".into(),
                why: None,
            },
        )
        .await;
        let scope = super::ceph_gate::set_noout(r, &r.node().name).await?;
        self.noout = Some(scope);
        self.record(
            r,
            Event::Noout {
                state: crate::vocab::NooutState::Set,
                scope: scope.as_str().into(),
                why: None,
            },
        )
        .await;
        self.to(r, RebootState::NooutSet, None).await;
        Ok(())
    }

    async fn ceph_after(
        &mut self,
        r: &dyn NodeShell,
        deadline: Instant,
    ) -> Result<(), RebootError> {
        if !self.ceph_present(r).await? {
            return Ok(());
        }
        let started = Instant::now();
        let pg_deadline = started + self.cx.pg_timeout;
        let osd_deadline = deadline.max(pg_deadline);
        super::ceph_gate::wait_osds_up_shown(
            r,
            &r.node().name,
            osd_deadline,
            self.cx.cancel,
            &|down| {
                self.doing(
                    r,
                    Activity::OsdsDown {
                        step: self.cx.step.to_string(),
                        down,
                        deadline: osd_deadline.saturating_duration_since(started),
                    },
                )
            },
        )
        .await?;
        super::ceph_gate::wait_clean(r, pg_deadline, self.cx.cancel, &|clean, total| {
            self.doing(
                r,
                Activity::CephPgs {
                    step: self.cx.step.to_string(),
                    clean,
                    total,
                    deadline: self.cx.pg_timeout,
                },
            )
        })
        .await?;
        self.to(r, RebootState::CephClean, None).await;
        self.unset_noout(r).await
    }

    async fn unset_noout(&mut self, r: &dyn NodeShell) -> Result<(), RebootError> {
        if let Some(scope) = self.noout {
            super::ceph_gate::unset_noout(r, &r.node().name, scope).await?;
            self.noout = None;
            self.record(
                r,
                Event::Noout {
                    state: crate::vocab::NooutState::Unset,
                    scope: scope.as_str().into(),
                    why: None,
                },
            )
            .await;
            self.to(r, RebootState::NooutUnset, None).await;
        }
        Ok(())
    }

    /// Move the guests the drain moved back to this node, from wherever they are now (see
    /// [`drain::return_guests`]).
    async fn return_guests(&mut self, r: &dyn NodeShell) -> Result<(), RebootError> {
        let opts = self.cx.drain.unwrap_or(DrainOpts {
            local_disks: false,
            return_guests: true,
            pace: drain::MigrationPace::default(),
        });
        if self.moved.is_empty() {
            return Ok(());
        }
        let moved = std::mem::take(&mut self.moved);
        // Each return is journaled intent-first (`guest_returning`), as the move away: the migration
        // runs detached and may end after a killed controller; a resume settles it
        // ([`Self::settle_unfinished_returns`]).
        let back = drain::return_guests(
            r,
            self.cx.cluster,
            &moved,
            opts,
            self.cx.events,
            self.cx.step,
        )
        .await?;
        for g in &back.not_started {
            // Listed by `runs show` and started by a resume.
            self.record(
                r,
                Event::GuestStopped {
                    guest: g.clone(),
                    phase: crate::vocab::Phase::Done,
                },
            )
            .await;
        }
        self.moved = back.away;
        if !back.failed.is_empty() {
            return Err(RebootError::GuestsNotRestored(back.failed.join("; ")));
        }
        if opts.return_guests {
            self.to(r, RebootState::GuestsReturned, None).await;
        }
        Ok(())
    }

    async fn issue(&mut self, r: &dyn NodeShell) -> Result<(), RebootError> {
        self.old_boot = Some(health::boot_id(r).await?);
        // Recorded before the command: a resume that finds the same boot id knows the reboot
        // may not have happened; one that finds another knows it did.
        self.to(r, RebootState::RebootIssued, None).await;
        let (rc, _) = r
            .text("(sleep 0.1; reboot) </dev/null >/dev/null 2>&1 &")
            .await?;
        if rc != ssh::ExitStatus::Code(0) {
            return Err(RebootError::Command("could not issue the reboot".into()));
        }
        Ok(())
    }

    /// Wait until the old session drops (or the node answers with another boot id).
    async fn wait_down(
        &mut self,
        r: &dyn NodeShell,
        deadline: Instant,
    ) -> Result<bool, RebootError> {
        let probe = Duration::from_secs(5);
        while Instant::now() < deadline {
            if r.is_closed() {
                return Ok(true);
            }
            match r
                .sh_within("cat /proc/sys/kernel/random/boot_id", probe)
                .await
            {
                Err(_) => return Ok(true),
                Ok(o) => {
                    let id = String::from_utf8_lossy(&o.stdout).trim().to_string();
                    if !id.is_empty() && Some(&id) != self.old_boot.as_ref() {
                        return Ok(true);
                    }
                }
            }
            self.sleep(Duration::from_millis(200)).await?;
        }
        Ok(false)
    }

    /// Reconnect until the node answers with a new boot id ([`NodeShell::reconnect`]: while
    /// nothing listens, the next attempt comes sooner).
    async fn wait_up(
        &mut self,
        r: &mut dyn NodeShell,
        deadline: Instant,
    ) -> Result<(), RebootError> {
        loop {
            if Instant::now() > deadline {
                return Err(RebootError::NeverReturned(self.cx.timeout));
            }
            let attempt = tokio::select! {
                _ = self.cx.cancel.cancelled() => return Err(RebootError::Interrupted(self.state.as_str().into())),
                a = r.reconnect() => a,
            };
            match attempt {
                Reconnect::NotListening => {
                    self.sleep(Duration::from_millis(100)).await?;
                    continue;
                }
                Reconnect::Connected => match health::boot_id(r).await {
                    Ok(id) if !id.is_empty() && Some(&id) != self.old_boot.as_ref() => {
                        return Ok(());
                    }
                    _ => {}
                },
                Reconnect::NotYet => {}
            }
            self.sleep(Duration::from_millis(250)).await?;
        }
    }

    async fn wait_healthy(
        &mut self,
        r: &dyn NodeShell,
        deadline: Instant,
    ) -> Result<(), RebootError> {
        let within = self.cx.timeout;
        loop {
            let bad = health::unhealthy_units(r).await?;
            if bad.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                return Err(RebootError::Unhealthy {
                    within,
                    why: format!("not active: {}", bad.join(", ")),
                });
            }
            self.sleep(Duration::from_millis(250)).await?;
        }
        self.to(r, RebootState::ServicesActive, None).await;
        loop {
            let ok = match health::votes(r).await {
                Ok(None) => true,
                Ok(Some((_, total, quorate))) => {
                    quorate && self.votes_before.is_none_or(|b| total >= b)
                }
                // A node just back may not answer pvecm yet: not quorate yet, asked again.
                Err(RebootError::Ssh(e)) => return Err(e.into()),
                Err(_) => false,
            };
            if ok {
                break;
            }
            if Instant::now() > deadline {
                return Err(RebootError::Unhealthy {
                    within,
                    why: "the cluster is not quorate with this node's votes back".into(),
                });
            }
            self.sleep(Duration::from_millis(250)).await?;
        }
        self.to(r, RebootState::Quorate, None).await;
        Ok(())
    }

    async fn restore(&mut self, r: &dyn NodeShell) -> Result<Vec<GuestRef>, RebootError> {
        self.unset_noout(r).await?;
        if self.maintenance {
            drain::set_maintenance(r, false).await?;
            self.maintenance = false;
            self.record(
                r,
                Event::Maintenance {
                    state: crate::vocab::MaintenanceState::Off,
                    why: None,
                },
            )
            .await;
            self.to(r, RebootState::MaintenanceOff, None).await;
        }
        self.settle_unfinished_returns(r).await?;
        self.return_guests(r).await?;
        let mut started = Vec::new();
        for g in std::mem::take(&mut self.stopped) {
            drain::start(r, &g).await?;
            self.record(r, Event::GuestStarted { guest: g.clone() })
                .await;
            started.push(g);
        }
        if !started.is_empty() {
            self.to(r, RebootState::GuestsStarted, None).await;
        }
        Ok(started)
    }

    /// After an error or an interruption: undo the drain when the node never went down; leave
    /// maintenance on, loudly and in the journal, when it is down or not healthy.
    async fn settle(&mut self, r: &dyn NodeShell, why: &str) -> Vec<String> {
        let mut left = Vec::new();
        if self.state < RebootState::RebootIssued {
            self.undoing = true;
            let undone = self.restore(r).await;
            self.undoing = false;
            match undone {
                Ok(_) => {
                    if self.state > RebootState::DrainUndone {
                        self.to(r, RebootState::DrainUndone, None).await;
                    }
                }
                Err(e) => left.push(format!(
                    "could not undo the drain of {} ({e}): check HA maintenance and guests by hand",
                    r.node().name
                )),
            }
            return left;
        }
        if self.maintenance {
            self.record(
                r,
                Event::Maintenance {
                    state: crate::vocab::MaintenanceState::LeftOn,
                    why: Some(why.to_string()),
                },
            )
            .await;
            left.push(format!(
                "HA maintenance left ON for {} on purpose ({why}); when the node is healthy: pvefleet maintenance off {}",
                r.node().name, r.node().name
            ));
        }
        if let Some(scope) = self.noout {
            self.record(
                r,
                Event::Noout {
                    state: crate::vocab::NooutState::LeftSet,
                    scope: scope.as_str().into(),
                    why: Some(why.to_string()),
                },
            )
            .await;
            let clear = match scope {
                super::ceph_gate::NooutScope::Host => {
                    format!("ceph osd unset-group noout {}", r.node().name)
                }
                super::ceph_gate::NooutScope::Cluster => "ceph osd unset noout".to_string(),
            };
            left.push(format!(
                "Ceph noout left SET for {} on purpose ({why}), so its OSDs are not marked out while it is down; when it is back and PGs are clean: {clear} (or pvefleet run --resume)",
                r.node().name
            ));
        }
        if !self.moved.is_empty() {
            left.push(format!(
                "guests moved away from {} are not back yet: {}",
                r.node().name,
                self.moved
                    .iter()
                    .map(|(g, _, at)| format!(
                        "{} on {at}",
                        drain::describe(std::slice::from_ref(g))
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if !self.stopped.is_empty() {
            left.push(format!(
                "guests stopped by this run on {} are still stopped: {}",
                r.node().name,
                drain::describe(&self.stopped)
            ));
        }
        left
    }
}

impl<'a, 'c> Machine<'a, 'c> {
    /// The machine for `cx`'s reboot: from the start, or where the journaled history of a
    /// stopped run left it (state, old boot id, what it had switched on and moved).
    fn new(cx: &'a RebootCtx<'c>) -> Machine<'a, 'c> {
        let progress = cx.resume.and_then(|h| h.reboots.get(&cx.index));
        Machine {
            cx,
            state: progress
                .and_then(|p| RebootState::parse(&p.state))
                .unwrap_or(RebootState::Preflight),
            old_boot: progress.and_then(|p| p.old_boot_id.clone()),
            votes_before: None,
            maintenance: cx.resume.is_some_and(|h| h.maintenance_on),
            stopped: cx
                .resume
                .map(|h| h.stopped_guests.clone())
                .unwrap_or_default(),
            moved: cx
                .resume
                .map(|h| h.moved_guests.clone())
                .unwrap_or_default(),
            moving: cx
                .resume
                .map(|h| h.moving_guests.clone())
                .unwrap_or_default(),
            returning: cx
                .resume
                .map(|h| h.returning_guests.clone())
                .unwrap_or_default(),
            undoing: false,
            moved_all: Vec::new(),
            ceph: None,
            noout: cx
                .resume
                .and_then(|h| h.noout.as_deref())
                .and_then(super::ceph_gate::NooutScope::parse),
        }
    }
}

/// Reboot the node behind `r` (or continue a reboot a killed controller left) and wait until
/// it is back and healthy; `r.session` is replaced. On error, `left_on` in the error path is
/// returned alongside so the caller can report it.
pub async fn reboot_and_wait(
    r: &mut dyn NodeShell,
    cx: &RebootCtx<'_>,
) -> Result<RebootReport, (RebootError, Vec<String>)> {
    let progress = cx.resume.and_then(|h| h.reboots.get(&cx.index));
    let mut m = Machine::new(cx);
    // A drain undone (or nothing done) is no reboot to continue: it starts again.
    let resumed_from = progress
        .map(|_| m.state)
        .filter(|s| *s > RebootState::DrainUndone);
    match run(&mut m, r).await {
        Ok(restarted) => Ok(RebootReport {
            left_on: Vec::new(),
            restarted,
            moved: m.moved_all.clone(),
            resumed_from,
        }),
        Err(e) => {
            let why = match &e {
                RebootError::Interrupted(_) => "the run was interrupted".to_string(),
                RebootError::NeverReturned(_) => "the node did not come back".to_string(),
                RebootError::Unhealthy { .. } => "the node is not healthy".to_string(),
                _ => "the reboot did not complete".to_string(),
            };
            let left = m.settle(r, &why).await;
            Err((e, left))
        }
    }
}

/// Whether the node is already in HA maintenance that this run did not switch on, and what the
/// cluster says of it (`ha-manager status`'s lrm line); `None` when it is not.
pub async fn maintained(r: &dyn NodeShell) -> Result<Option<String>, RebootError> {
    let node = r.node().name.as_str();
    if !drain::nodes_in_maintenance(r)
        .await?
        .iter()
        .any(|n| n == node)
    {
        return Ok(None);
    }
    let (_, s) = r.text("ha-manager status 2>/dev/null").await?;
    let line = s
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("lrm {node} ")))
        .map(|l| crate::sanitize::first_line(l.trim(), 120))
        .unwrap_or_else(|| format!("lrm {node} (maintenance mode)"));
    Ok(Some(format!("ha-manager status: {line}")))
}

/// Before a playbook that reboots touches the node: a node already in someone else's HA
/// maintenance is refused unless `allow` (`--allow-maintained`); `history` is the run's own
/// record (a resumed run's own maintenance is not someone else's).
pub async fn check_not_maintained(
    r: &dyn NodeShell,
    allow: bool,
    history: Option<&NodeHistory>,
) -> Result<(), RebootError> {
    if allow || history.is_some_and(|h| h.maintenance_on) {
        return Ok(());
    }
    match maintained(r).await? {
        Some(holder) => Err(RebootError::Maintained(holder)),
        None => Ok(()),
    }
}

/// The node's Proxmox VE name, from `uname -n` ([`crate::inventory::proxmox_node_name`]).
pub async fn pve_node_name(r: &dyn NodeShell) -> Result<String, RebootError> {
    let (_, out) = r.text("uname -n").await?;
    Ok(crate::inventory::proxmox_node_name(&out).to_string())
}

/// Before a playbook that reboots touches the node: the inventory's name for it must be its
/// Proxmox name wherever a reboot hands that name to Proxmox: HA maintenance and the HA
/// services on the node, the guests a drain moves (where they are, and back), Ceph's CRUSH host
/// (its OSDs, ok-to-stop, noout). With another name each of those would act on, or look for,
/// the wrong node (no maintenance, no OSDs to check) while the node itself goes down. A name
/// that differs where none of them is in play is accepted.
pub async fn check_node_name(r: &dyn NodeShell, drains: bool) -> Result<(), RebootError> {
    let pve = pve_node_name(r).await?;
    if pve.is_empty() || pve == r.node().name {
        return Ok(());
    }
    let mut uses = Vec::new();
    if drains {
        uses.push("the drain's guest moves");
    }
    if !drain::ha_vmids(r).await?.is_empty() {
        uses.push("HA maintenance");
    }
    // Unknown Ceph state counts as Ceph.
    if super::ceph_gate::detect(r).await.unwrap_or(true) {
        uses.push("Ceph's CRUSH host");
    }
    if uses.is_empty() {
        return Ok(());
    }
    let pve = crate::sanitize::first_line(&pve, 64);
    Err(RebootError::Command(format!(
        "the inventory calls this node `{}`, but Proxmox VE knows it as `{pve}` (uname -n): {} would name the wrong node; name it [nodes.{pve}] in the inventory",
        r.node().name,
        uses.join(", ")
    )))
}

async fn run(m: &mut Machine<'_, '_>, r: &mut dyn NodeShell) -> Result<Vec<GuestRef>, RebootError> {
    if m.state < RebootState::RebootIssued {
        let votes = health::votes(r).await?;
        // The batch's gate counted the nodes the plan said would reboot; this one is about to,
        // whatever the plan said: it must not cost the cluster its quorum now.
        if let Some((expected, total, _)) = votes {
            health::gate(expected, total, 1).map_err(RebootError::Quorum)?;
        }
        m.votes_before = votes.map(|(_, total, _)| total);
        m.ceph_before(r).await?;
        m.drain(r).await?;
        m.cancelled()?;
        m.set_noout(r).await?;
        m.cancelled()?;
        m.issue(r).await?;
    } else if m.state == RebootState::RebootIssued {
        // Resumed right after the reboot was issued: did it happen?
        if !m
            .wait_down(r, Instant::now() + Duration::from_secs(20))
            .await?
        {
            tracing::warn!(node = %r.node().name, "the recorded reboot did not happen; issuing it again");
            m.issue(r).await?;
        }
    }
    // The step's timeout runs from the reboot command (a long drain does not eat into it).
    let deadline = Instant::now() + m.cx.timeout;
    if m.state < RebootState::DownSeen {
        if !m.wait_down(r, deadline).await? {
            return Err(RebootError::Command(
                "the node did not go down after the reboot command".into(),
            ));
        }
        m.to(r, RebootState::DownSeen, None).await;
    }
    if m.state < RebootState::UpNewBoot {
        m.wait_up(r, deadline).await?;
        m.to(r, RebootState::UpNewBoot, None).await;
    }
    if m.state < RebootState::Quorate {
        m.wait_healthy(r, deadline).await?;
    }
    if m.state < RebootState::CephClean || m.noout.is_some() {
        m.ceph_after(r, deadline).await?;
    }
    let started = m.restore(r).await?;
    m.to(r, RebootState::Done, None).await;
    Ok(started)
}

#[cfg(test)]
mod tests;
