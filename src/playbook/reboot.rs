//! The reboot of one node as an explicit state machine, journaled at every transition so a
//! controller killed at any point resumes from the state it reached (DESIGN.md, safety model):
//!
//! preflight -> maintenance-on (HA guests moved away) -> guests-stopped (policy for the rest)
//! -> reboot-issued (old boot id recorded first) -> down-seen -> up-new-boot -> services-active
//! (each unit on its own) -> quorate (votes back) -> maintenance-off -> guests-started -> done.
//!
//! What the run switched on is switched back when the node is back. When it stops with the node
//! not back (never returned, unhealthy, interrupted while down), HA maintenance stays on on
//! purpose: recorded in the journal (`maintenance` `left-on`) and reported loudly; `run --resume`
//! or `pvefleet maintenance off NODE` clears it. Stopping before the reboot was issued undoes
//! the drain at once (maintenance off, stopped guests started).

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::drain;
use super::engine::GuestPolicy;
use super::error::RebootError;
use super::health;
use super::remote::Remote;
use crate::journal::{Event, GuestRef, Journal, NodeHistory};
use crate::ssh;

/// The states of a node's reboot, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RebootState {
    /// Nothing done yet.
    Preflight,
    /// HA maintenance on and no HA service left on the node.
    MaintenanceOn,
    /// The guest policy applied to the other running guests.
    GuestsStopped,
    /// The reboot command was sent (the old boot id is in the journal).
    RebootIssued,
    /// The node went down.
    DownSeen,
    /// It answers again with a new boot id.
    UpNewBoot,
    /// Every health unit is active.
    ServicesActive,
    /// The cluster is quorate with the node's votes back.
    Quorate,
    /// HA maintenance switched off again.
    MaintenanceOff,
    /// Guests the run stopped are running again.
    GuestsStarted,
    /// Complete.
    Done,
}

impl RebootState {
    /// The state's name as journaled.
    pub fn as_str(self) -> &'static str {
        match self {
            RebootState::Preflight => "preflight",
            RebootState::MaintenanceOn => "maintenance-on",
            RebootState::GuestsStopped => "guests-stopped",
            RebootState::RebootIssued => "reboot-issued",
            RebootState::DownSeen => "down-seen",
            RebootState::UpNewBoot => "up-new-boot",
            RebootState::ServicesActive => "services-active",
            RebootState::Quorate => "quorate",
            RebootState::MaintenanceOff => "maintenance-off",
            RebootState::GuestsStarted => "guests-started",
            RebootState::Done => "done",
        }
    }

    /// Parse a journaled state name.
    pub fn parse(s: &str) -> Option<RebootState> {
        use RebootState::*;
        [
            Preflight,
            MaintenanceOn,
            GuestsStopped,
            RebootIssued,
            DownSeen,
            UpNewBoot,
            ServicesActive,
            Quorate,
            MaintenanceOff,
            GuestsStarted,
            Done,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }
}

/// What a reboot needs besides the node.
pub struct RebootCtx<'a> {
    /// Index of the reboot step (journal key).
    pub index: usize,
    /// Deadline for coming back healthy.
    pub timeout: Duration,
    /// Running guests that are not HA-managed.
    pub guests: GuestPolicy,
    /// The run journal.
    pub journal: Option<&'a Journal>,
    /// Ctrl-C, SIGTERM, SIGHUP.
    pub cancel: &'a CancellationToken,
    /// The node's history when resuming.
    pub resume: Option<&'a NodeHistory>,
    /// Told each state reached (live display, stop point).
    pub on_state: &'a (dyn Fn(RebootState) + Send + Sync),
}

/// How a reboot ended.
#[derive(Debug, Default)]
pub struct RebootReport {
    /// Things left switched on on purpose, each with how to clear it.
    pub left_on: Vec<String>,
    /// Guests stopped and started again.
    pub restarted: Vec<GuestRef>,
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
}

impl Machine<'_, '_> {
    fn node<'r>(&self, r: &'r Remote) -> &'r str {
        &r.node.name
    }

    async fn record(&self, r: &Remote, event: Event) {
        if let Some(j) = self.cx.journal {
            j.record(self.node(r), event).await;
        }
    }

    async fn to(&mut self, r: &Remote, state: RebootState, detail: Option<String>) {
        self.state = state;
        tracing::info!(node = %r.node.name, state = state.as_str(), "reboot");
        (self.cx.on_state)(state);
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

    /// Maintenance on, HA guests away, then the policy for the rest.
    async fn drain(&mut self, r: &Remote) -> Result<(), RebootError> {
        if drain::has_ha(r).await? {
            // Intent first: if we die between the two, resume knows to switch it off again.
            self.record(
                r,
                Event::Maintenance {
                    state: "on".into(),
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
        let running = drain::running_guests(r).await?;
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
                                phase: "intent".into(),
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
                                phase: "done".into(),
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

    async fn issue(&mut self, r: &Remote) -> Result<(), RebootError> {
        self.old_boot = Some(health::boot_id(r).await?);
        // Recorded before the command: a resume that finds the same boot id knows the reboot
        // may not have happened; one that finds another knows it did.
        self.to(r, RebootState::RebootIssued, None).await;
        let (rc, _) = r
            .text("(sleep 1; reboot) </dev/null >/dev/null 2>&1 &")
            .await?;
        if rc != ssh::ExitStatus::Code(0) {
            return Err(RebootError::Command("could not issue the reboot".into()));
        }
        Ok(())
    }

    /// Wait until the old session drops (or the node answers with another boot id).
    async fn wait_down(&mut self, r: &Remote, deadline: Instant) -> Result<bool, RebootError> {
        let probe = Duration::from_secs(5);
        while Instant::now() < deadline {
            if r.session.is_closed() {
                return Ok(true);
            }
            match r
                .session
                .exec("cat /proc/sys/kernel/random/boot_id", probe)
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
            self.sleep(Duration::from_millis(300)).await?;
        }
        Ok(false)
    }

    /// Reconnect with backoff until the node answers with a new boot id.
    async fn wait_up(&mut self, r: &mut Remote, deadline: Instant) -> Result<(), RebootError> {
        let spec = r.node.connect_spec();
        let mut backoff = Duration::from_millis(250);
        loop {
            if Instant::now() > deadline {
                return Err(RebootError::NeverReturned(
                    humantime::format_duration(self.cx.timeout).to_string(),
                ));
            }
            let attempt = tokio::select! {
                _ = self.cx.cancel.cancelled() => return Err(RebootError::Interrupted(self.state.as_str().into())),
                s = ssh::connect(&spec) => s,
            };
            if let Ok(session) = attempt {
                r.session = session;
                match health::boot_id(r).await {
                    Ok(id) if !id.is_empty() && Some(&id) != self.old_boot.as_ref() => {
                        return Ok(());
                    }
                    _ => {}
                }
            }
            self.sleep(backoff).await?;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    async fn wait_healthy(&mut self, r: &Remote, deadline: Instant) -> Result<(), RebootError> {
        let within = humantime::format_duration(self.cx.timeout).to_string();
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
            self.sleep(Duration::from_millis(500)).await?;
        }
        self.to(r, RebootState::ServicesActive, None).await;
        loop {
            let ok = match health::votes(r).await? {
                None => true,
                Some((_, total, quorate)) => {
                    quorate && self.votes_before.is_none_or(|b| total >= b)
                }
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
            self.sleep(Duration::from_millis(500)).await?;
        }
        self.to(r, RebootState::Quorate, None).await;
        Ok(())
    }

    async fn restore(&mut self, r: &Remote) -> Result<Vec<GuestRef>, RebootError> {
        if self.maintenance {
            drain::set_maintenance(r, false).await?;
            self.maintenance = false;
            self.record(
                r,
                Event::Maintenance {
                    state: "off".into(),
                    why: None,
                },
            )
            .await;
            self.to(r, RebootState::MaintenanceOff, None).await;
        }
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
    async fn settle(&mut self, r: &Remote, why: &str) -> Vec<String> {
        let mut left = Vec::new();
        if self.state < RebootState::RebootIssued {
            if let Err(e) = self.restore(r).await {
                left.push(format!(
                    "could not undo the drain of {} ({e}): check HA maintenance and guests by hand",
                    r.node.name
                ));
            }
            return left;
        }
        if self.maintenance {
            self.record(
                r,
                Event::Maintenance {
                    state: "left-on".into(),
                    why: Some(why.to_string()),
                },
            )
            .await;
            left.push(format!(
                "HA maintenance left ON for {} on purpose ({why}); when the node is healthy: pvefleet maintenance off {}",
                r.node.name, r.node.name
            ));
        }
        if !self.stopped.is_empty() {
            left.push(format!(
                "guests stopped by this run on {} are still stopped: {}",
                r.node.name,
                drain::describe(&self.stopped)
            ));
        }
        left
    }
}

/// Reboot the node behind `r` (or continue a reboot a killed controller left) and wait until
/// it is back and healthy; `r.session` is replaced. On error, `left_on` in the error path is
/// returned alongside so the caller can report it.
pub async fn reboot_and_wait(
    r: &mut Remote,
    cx: &RebootCtx<'_>,
) -> Result<RebootReport, (RebootError, Vec<String>)> {
    let progress = cx.resume.and_then(|h| h.reboots.get(&cx.index));
    let mut m = Machine {
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
    };
    let resumed_from = progress.map(|_| m.state);
    match run(&mut m, r).await {
        Ok(restarted) => Ok(RebootReport {
            left_on: Vec::new(),
            restarted,
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

async fn run(m: &mut Machine<'_, '_>, r: &mut Remote) -> Result<Vec<GuestRef>, RebootError> {
    let deadline = Instant::now() + m.cx.timeout;
    if m.state < RebootState::RebootIssued {
        m.votes_before = health::votes(r).await?.map(|(_, total, _)| total);
        m.drain(r).await?;
        m.cancelled()?;
        m.issue(r).await?;
    } else if m.state == RebootState::RebootIssued {
        // Resumed right after the reboot was issued: did it happen?
        if !m
            .wait_down(r, Instant::now() + Duration::from_secs(20))
            .await?
        {
            tracing::warn!(node = %r.node.name, "the recorded reboot did not happen; issuing it again");
            m.issue(r).await?;
        }
    }
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
    let started = m.restore(r).await?;
    m.to(r, RebootState::Done, None).await;
    Ok(started)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_and_are_ordered() {
        for s in [
            RebootState::Preflight,
            RebootState::RebootIssued,
            RebootState::UpNewBoot,
            RebootState::Done,
        ] {
            assert_eq!(RebootState::parse(s.as_str()), Some(s));
        }
        assert!(RebootState::RebootIssued < RebootState::DownSeen);
        assert!(RebootState::Quorate < RebootState::MaintenanceOff);
        assert_eq!(RebootState::parse("bogus"), None);
    }
}
