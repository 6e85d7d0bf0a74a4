//! Keeping Ceph safe around a node's reboot (DOMAIN.md §9): Ceph is detected from the node,
//! never assumed (no `/etc/pve/ceph.conf`: no Ceph, no wait; `ceph.conf` but no answer: unknown,
//! a stop); before the node goes down, health must be OK apart from accepted warnings, its OSDs
//! must be ok to stop (and its monitor, if it runs one); noout is set for the node (per host with
//! `set-group`, else cluster-wide); after it is back, its OSDs must be up and every PG
//! active+clean before noout is unset and the run moves on.

use std::time::Duration;
// tokio's clock (the same as std's unless paused): unit tests run the waits in paused time.
use tokio::time::Instant;

use tokio_util::sync::CancellationToken;

use super::error::RebootError;
use super::remote::{first_line, NodeShell};
use crate::probe::ceph::{parse_osd_tree, parse_status, CephStatus};
use crate::quote::shell_quote;
use crate::ssh::ExitStatus;

/// Health checks that noout itself raises: the run's own doing while it holds noout.
pub const NOOUT_CHECKS: [&str; 2] = ["OSDMAP_FLAGS", "OSD_FLAGS"];

/// How noout was set for a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NooutScope {
    /// `ceph osd set-group noout HOST`.
    Host,
    /// `ceph osd set noout`.
    Cluster,
}

impl NooutScope {
    /// As journaled.
    pub fn as_str(self) -> &'static str {
        match self {
            NooutScope::Host => "host",
            NooutScope::Cluster => "cluster",
        }
    }

    /// From the journal.
    pub fn parse(s: &str) -> Option<NooutScope> {
        match s {
            "host" => Some(NooutScope::Host),
            "cluster" => Some(NooutScope::Cluster),
            _ => None,
        }
    }
}

/// Whether the cluster has Ceph, as the node says; an error when it cannot tell.
pub async fn detect(r: &dyn NodeShell) -> Result<bool, RebootError> {
    let (rc, out) = r
        .text("if [ ! -e /etc/pve/ceph.conf ]; then echo none; elif ! command -v ceph >/dev/null 2>&1; then echo nobinary; else echo present; fi")
        .await?;
    match (rc, out.trim()) {
        (ExitStatus::Code(0), "none") => Ok(false),
        (ExitStatus::Code(0), "present") => {
            status(r).await?;
            Ok(true)
        }
        (_, "nobinary") => Err(RebootError::Ceph(
            "/etc/pve/ceph.conf exists but there is no ceph command: Ceph's state is unknown, so the node is not touched".into(),
        )),
        _ => Err(RebootError::Ceph(format!(
            "cannot tell whether the cluster has Ceph: {}",
            first_line(out.as_bytes())
        ))),
    }
}

/// `ceph status`, parsed; unknown state is an error.
pub async fn status(r: &dyn NodeShell) -> Result<CephStatus, RebootError> {
    let o = r.sh("timeout 30 ceph status -f json").await?;
    let text = String::from_utf8_lossy(&o.stdout);
    if o.exit != ExitStatus::Code(0) {
        return Err(RebootError::Ceph(format!(
            "ceph status failed, Ceph's state is unknown: {}",
            first_line(&o.stderr)
        )));
    }
    parse_status(&text).map_err(|e| RebootError::Ceph(format!("Ceph's state is unknown: {e}")))
}

/// Health OK apart from `accepted` and the run's own noout checks.
pub async fn check_health(
    r: &dyn NodeShell,
    accepted: &[String],
    own_noout: bool,
) -> Result<(), RebootError> {
    let s = status(r).await?;
    let mut ignore: Vec<&str> = accepted.iter().map(String::as_str).collect();
    if own_noout {
        ignore.extend(NOOUT_CHECKS);
    }
    let left = s.checks_except(&ignore);
    if s.health == "HEALTH_OK" || left.is_empty() {
        return Ok(());
    }
    Err(RebootError::Ceph(format!(
        "Ceph is {}: {} (accept a warning by listing its code in the reboot step's ceph_accept_warnings)",
        s.health,
        left.iter()
            .map(|c| format!("{} ({})", c.code, c.message))
            .collect::<Vec<_>>()
            .join("; ")
    )))
}

/// How long a run waits for a Ceph that is not healthy to become so, before a node's reboot.
pub const SETTLE: Duration = Duration::from_secs(20);

/// `ask` again every 2 s for up to `settle` while Ceph says not yet (a `RebootError::Ceph`):
/// real Ceph re-peers a PG for a moment just after a recovery (`PG_AVAILABILITY ... 1 pg
/// peering`, EBUSY from `ok-to-stop`; seen on the lab's Ceph 16 between two nodes of a run).
async fn settled<F, Fut>(
    r: &dyn NodeShell,
    settle: Duration,
    what: &str,
    ask: F,
) -> Result<(), RebootError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), RebootError>>,
{
    let until = Instant::now() + settle;
    loop {
        match ask().await {
            Err(RebootError::Ceph(why)) if Instant::now() < until => {
                tracing::info!(node = %r.node().name, %why, "waiting for Ceph: {what}");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            other => return other,
        }
    }
}

/// [`check_health`], given up to `settle` to become healthy.
pub async fn check_health_settled(
    r: &dyn NodeShell,
    accepted: &[String],
    own_noout: bool,
    settle: Duration,
) -> Result<(), RebootError> {
    settled(r, settle, "health", || check_health(r, accepted, own_noout)).await
}

/// [`ok_to_stop`], given up to `settle` to say yes.
pub async fn ok_to_stop_settled(
    r: &dyn NodeShell,
    host: &str,
    settle: Duration,
) -> Result<(), RebootError> {
    settled(r, settle, "ok-to-stop", || ok_to_stop(r, host)).await
}

/// The node's OSD ids (`ceph osd ls-tree HOST`).
pub async fn osds_of(r: &dyn NodeShell, host: &str) -> Result<Vec<i64>, RebootError> {
    let o = r
        .sh(&format!(
            "timeout 30 ceph osd ls-tree {}",
            shell_quote(host)
        ))
        .await?;
    if o.exit != ExitStatus::Code(0) {
        // A host that is not in the CRUSH map has no OSDs.
        return Ok(Vec::new());
    }
    Ok(String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect())
}

/// `ceph osd ok-to-stop` for these OSDs together: no PG would become inactive.
pub async fn osds_ok_to_stop(r: &dyn NodeShell, ids: &[i64]) -> Result<(), RebootError> {
    if ids.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = ids.iter().map(i64::to_string).collect();
    let o = r
        .sh(&format!(
            "timeout 30 ceph osd ok-to-stop {} -f json",
            list.join(" ")
        ))
        .await?;
    let ok = o.exit == ExitStatus::Code(0)
        && serde_json::from_slice::<serde_json::Value>(&o.stdout)
            .map(|v| v["ok_to_stop"] != false)
            .unwrap_or(true);
    if ok {
        Ok(())
    } else {
        Err(RebootError::Ceph(format!(
            "ceph osd ok-to-stop {}: not safe: {}",
            list.join(" "),
            first_line(if o.stderr.is_empty() {
                &o.stdout
            } else {
                &o.stderr
            })
        )))
    }
}

/// `ceph osd ok-to-stop` for the node's OSDs and `ceph mon ok-to-stop` if it runs a monitor.
pub async fn ok_to_stop(r: &dyn NodeShell, host: &str) -> Result<(), RebootError> {
    osds_ok_to_stop(r, &osds_of(r, host).await?).await?;
    // Whether the node runs a monitor: a dump that fails or cannot be read is unknown, and
    // unknown is a stop (it used to skip `mon ok-to-stop`).
    let o = r.sh("timeout 30 ceph mon dump -f json").await?;
    if o.exit != ExitStatus::Code(0) {
        return Err(RebootError::Ceph(format!(
            "ceph mon dump failed, so whether {host} runs a monitor is unknown: {}",
            first_line(&o.stderr)
        )));
    }
    let mons = serde_json::from_slice::<serde_json::Value>(&o.stdout)
        .ok()
        .and_then(|v| v["mons"].as_array().cloned())
        .ok_or_else(|| {
            RebootError::Ceph(format!(
                "ceph mon dump gave no monitor list, so whether {host} runs a monitor is unknown: {}",
                first_line(&o.stdout)
            ))
        })?;
    let is_mon = mons.iter().any(|x| x["name"] == host);
    if is_mon {
        let o = r
            .sh(&format!(
                "timeout 30 ceph mon ok-to-stop {}",
                shell_quote(host)
            ))
            .await?;
        if o.exit != ExitStatus::Code(0) {
            return Err(RebootError::Ceph(format!(
                "ceph mon ok-to-stop {host}: not safe: {}",
                first_line(&o.stderr)
            )));
        }
    }
    Ok(())
}

/// noout as it is now for `host`: cluster-wide (`flags` of `ceph osd dump`), for the host
/// (`crush_node_flags`), or not set; a dump that fails or cannot be read is unknown, a stop.
pub async fn noout_found(r: &dyn NodeShell, host: &str) -> Result<Option<NooutScope>, RebootError> {
    let o = r.sh("timeout 30 ceph osd dump -f json").await?;
    if o.exit != ExitStatus::Code(0) {
        return Err(RebootError::Ceph(format!(
            "ceph osd dump failed, so whether noout is already set is unknown: {}",
            first_line(&o.stderr)
        )));
    }
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).map_err(|e| {
        RebootError::Ceph(format!(
            "ceph osd dump is not JSON ({e}), so whether noout is already set is unknown"
        ))
    })?;
    let flags = v["flags"].as_str().ok_or_else(|| {
        RebootError::Ceph("ceph osd dump has no flags: whether noout is set is unknown".into())
    })?;
    Ok(noout_scope_in(flags, &v["crush_node_flags"], host))
}

/// Which noout `flags` (the cluster's) and `crush_node_flags` (per CRUSH node) hold for `host`.
pub fn noout_scope_in(
    flags: &str,
    crush_node_flags: &serde_json::Value,
    host: &str,
) -> Option<NooutScope> {
    if flags.split(',').any(|f| f == "noout") {
        return Some(NooutScope::Cluster);
    }
    crush_node_flags[host]
        .as_array()
        .is_some_and(|a| a.iter().any(|f| f == "noout"))
        .then_some(NooutScope::Host)
}

/// Set noout for the node: per host, else cluster-wide.
pub async fn set_noout(r: &dyn NodeShell, host: &str) -> Result<NooutScope, RebootError> {
    let o = r
        .sh(&format!(
            "timeout 30 ceph osd set-group noout {}",
            shell_quote(host)
        ))
        .await?;
    if o.exit == ExitStatus::Code(0) {
        return Ok(NooutScope::Host);
    }
    let o = r.sh("timeout 30 ceph osd set noout").await?;
    if o.exit == ExitStatus::Code(0) {
        Ok(NooutScope::Cluster)
    } else {
        Err(RebootError::Ceph(format!(
            "cannot set noout: {}",
            first_line(&o.stderr)
        )))
    }
}

/// Unset what [`set_noout`] set.
pub async fn unset_noout(
    r: &dyn NodeShell,
    host: &str,
    scope: NooutScope,
) -> Result<(), RebootError> {
    let cmd = match scope {
        NooutScope::Host => format!(
            "timeout 30 ceph osd unset-group noout {}",
            shell_quote(host)
        ),
        NooutScope::Cluster => "timeout 30 ceph osd unset noout".to_string(),
    };
    r.ok(&cmd).await?;
    Ok(())
}

async fn pause(cancel: &CancellationToken, what: &str) -> Result<(), RebootError> {
    tokio::select! {
        _ = cancel.cancelled() => Err(RebootError::Interrupted(what.into())),
        _ = tokio::time::sleep(Duration::from_secs(1)) => Ok(()),
    }
}

/// Wait until the node's OSDs are up.
pub async fn wait_osds_up(
    r: &dyn NodeShell,
    host: &str,
    deadline: Instant,
    cancel: &CancellationToken,
) -> Result<(), RebootError> {
    wait_osds_up_shown(r, host, deadline, cancel, &|_| {}).await
}

/// [`wait_osds_up`], telling `shown` how many of them are still down at each look.
pub async fn wait_osds_up_shown(
    r: &dyn NodeShell,
    host: &str,
    deadline: Instant,
    cancel: &CancellationToken,
    shown: &(dyn Fn(usize) + Sync),
) -> Result<(), RebootError> {
    loop {
        let (_, tree) = r.text("timeout 30 ceph osd tree -f json").await?;
        let down: Vec<String> = parse_osd_tree(&tree)
            .map_err(|e| RebootError::Ceph(e.to_string()))?
            .into_iter()
            .filter(|o| o.host == host && !o.up)
            .map(|o| format!("osd.{}", o.id))
            .collect();
        if down.is_empty() {
            return Ok(());
        }
        shown(down.len());
        if Instant::now() > deadline {
            return Err(RebootError::Ceph(format!(
                "OSDs of {host} not up in time: {}",
                down.join(", ")
            )));
        }
        pause(cancel, "waiting for the node's OSDs").await?;
    }
}

/// Wait until every PG is active+clean, telling `shown` at each look how many are (`None`: not
/// known, no PG statistics) of how many.
pub async fn wait_clean(
    r: &dyn NodeShell,
    deadline: Instant,
    cancel: &CancellationToken,
    shown: &(dyn Fn(Option<u64>, u64) + Sync),
) -> Result<(), RebootError> {
    loop {
        let s = status(r).await?;
        if s.all_clean() {
            return Ok(());
        }
        shown(s.clean_pgs(), s.num_pgs);
        if Instant::now() > deadline {
            if !s.pg_stats_known() {
                return Err(RebootError::Ceph(format!(
                    "PG state unknown in time: no PG statistics ({} PGs known; is a mgr active?{}); noout stays set",
                    s.num_pgs,
                    if s.checks.iter().any(|c| c.code == "MGR_DOWN") {
                        " MGR_DOWN"
                    } else if s.mgr_available == Some(false) {
                        " no mgr available"
                    } else {
                        ""
                    }
                )));
            }
            let states: Vec<String> = s
                .pgs_by_state
                .iter()
                .map(|(st, c)| format!("{c} {st}"))
                .collect();
            let unavailable = s.inactive_pgs();
            return Err(RebootError::Ceph(format!(
                "PGs not all active+clean in time: {}{}",
                states.join(", "),
                if unavailable > 0 {
                    format!(" ({unavailable} with data unavailable: inactive or stale)")
                } else {
                    String::new()
                }
            )));
        }
        pause(cancel, "waiting for PGs to be clean").await?;
    }
}

#[cfg(test)]
mod scripted_tests {
    use super::*;
    use crate::maintenance::scripted::ScriptedShell;

    const HAS_CEPH: &str = "present\n";

    #[tokio::test(start_paused = true)]
    async fn a_ceph_status_that_cannot_be_read_is_unknown_never_healthy() {
        for sh in [
            ScriptedShell::new("pve1").on("ceph status", "{\"health\": "),
            ScriptedShell::new("pve1").on("ceph status", "[]"),
            ScriptedShell::new("pve1").fails("ceph status", 1, "monclient: hunting for new mon"),
        ] {
            let started = std::time::Instant::now();
            let e = check_health_settled(&sh, &[], false, SETTLE)
                .await
                .expect_err("unknown is a stop");
            assert!(
                matches!(&e, RebootError::Ceph(m) if m.contains("unknown")),
                "{e}"
            );
            assert!(
                sh.count("ceph status") > 1,
                "asked again while it settles: {:?}",
                sh.ran()
            );
            assert!(started.elapsed() < Duration::from_secs(2), "paused time");
        }
    }

    #[tokio::test]
    async fn a_node_that_cannot_tell_whether_it_has_ceph_counts_as_unknown() {
        let answers = [
            ScriptedShell::new("pve1").on("ceph.conf", "nobinary\n"),
            ScriptedShell::new("pve1").on("ceph.conf", "Permission denied\n"),
            // ceph.conf and the binary are there, but its status cannot be read.
            ScriptedShell::new("pve1").on("ceph.conf", HAS_CEPH).fails(
                "ceph status",
                1,
                "timed out",
            ),
        ];
        for sh in answers {
            let d = detect(&sh).await;
            assert!(
                matches!(d, Err(RebootError::Ceph(_))),
                "{d:?}: {:?}",
                sh.ran()
            );
        }
        let none = ScriptedShell::new("pve1").on("ceph.conf", "none\n");
        assert!(!detect(&none).await.unwrap(), "no Ceph");
    }

    #[tokio::test]
    async fn noout_flags_that_cannot_be_read_stop_the_node() {
        let sh = ScriptedShell::new("pve1").on("ceph osd dump", "not json");
        assert!(matches!(
            noout_found(&sh, "pve1").await,
            Err(RebootError::Ceph(_))
        ));
    }
}
