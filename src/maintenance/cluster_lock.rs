//! One driver per cluster: the cluster-wide lock a `run` holds from its first change to its end,
//! so that two operators (or a cron job and an operator) never roll one cluster at once.
//!
//! The lock lives where every controller sees it, in pmxcfs, and works the way Proxmox's own
//! cluster locks do (pve-cluster `PVE/Cluster.pm`, `$cfs_lock`): `mkdir` of a directory under
//! `/etc/pve/priv/lock/` is atomic for the whole cluster, so the one `mkdir` that succeeds holds
//! it; `rmdir` releases it. pmxcfs gives its own locks a timeout of 120 s ("cfs locks have a
//! timeout of 120"), so the holder renews the directory's time well inside it, and a lock whose
//! time is older than that is one nobody renews: its controller is gone or cut off. Such a
//! lock is reported, with who held it and how to break it, never broken silently: only
//! `pvefleet lock break RUN_ID` (naming the run it breaks) or a resume of that same run takes it
//! over.
//!
//! Who holds it is written beside the directory (`/etc/pve/priv/pvefleet-run-lock.json`: run id,
//! controller host, pid, start time, playbook), since pmxcfs keeps lock directories empty.
//! Read-only commands (audit, plan, exec) never take the lock.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::remote::{Remote, RemoteError};
use crate::inventory::Node;
use crate::quote::shell_quote;
use crate::ssh::{ExitStatus, SshError};

/// The lock directory (created by `mkdir`: atomic across the cluster in pmxcfs).
pub const LOCK_DIR: &str = "/etc/pve/priv/lock/pvefleet-run";
/// Who holds the lock, one line of JSON.
pub const OWNER_FILE: &str = "/etc/pve/priv/pvefleet-run-lock.json";
/// A lock not renewed for this long is stale (pmxcfs's own lock timeout, PVE/Cluster.pm).
pub const TTL: Duration = Duration::from_secs(120);
/// How long a lock that cannot be asked is asked again before the run is refused.
pub const UNKNOWN_FOR: Duration = Duration::from_secs(30);
/// How often the holder renews it (well inside [`TTL`], even with a node rebooting).
pub const RENEW_EVERY: Duration = Duration::from_secs(20);

/// Who holds the lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockOwner {
    /// The run id.
    pub run: String,
    /// The controller's host name.
    pub controller: String,
    /// The controller's process id.
    pub pid: u32,
    /// When the run took the lock (seconds since the epoch).
    pub started: u64,
    /// The playbook's name.
    pub playbook: String,
}

impl LockOwner {
    /// This process, for `run`.
    pub fn this_process(run: &str, playbook: &str) -> LockOwner {
        LockOwner {
            run: run.to_string(),
            controller: local_host_name(),
            pid: std::process::id(),
            started: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            playbook: playbook.to_string(),
        }
    }

    fn json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A lock someone holds, as the cluster shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldLock {
    /// Who, when the owner file could be read (a holder that has only just taken it may not have
    /// written it yet).
    pub owner: Option<LockOwner>,
    /// Seconds since it was taken or last renewed (node's clock).
    pub age_s: u64,
}

impl HeldLock {
    /// Why the run that holds it is dead, when it is known to be: no longer renewed, or its
    /// process gone on this very controller.
    pub fn dead(&self) -> Option<String> {
        if let Some(o) = &self.owner {
            if o.controller == local_host_name() && !process_alive(o.pid) {
                return Some(format!(
                    "its controller process {} on {} is gone",
                    o.pid, o.controller
                ));
            }
        }
        (self.age_s > TTL.as_secs()).then(|| format!("nobody has renewed it for {} s", self.age_s))
    }

    /// One line: who holds it, since when, and whether it is dead.
    pub fn describe(&self) -> String {
        let who = match &self.owner {
            Some(o) => format!(
                "run {} ({}) of {} pid {}, taken {}",
                o.run,
                o.playbook,
                o.controller,
                o.pid,
                humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH + Duration::from_secs(o.started)
                )
            ),
            None => "a run whose owner record is not written (yet)".to_string(),
        };
        match self.dead() {
            Some(why) => format!("{who}; stale: {why}"),
            None => format!("{who}; renewed {} s ago", self.age_s),
        }
    }
}

/// What an attempt to take the lock found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquired {
    /// Taken (or, for a resume, taken over from the same run).
    Yes,
    /// Someone else holds it.
    Held(HeldLock),
}

/// The lock cannot be taken or read at all (no pmxcfs, read-only without quorum, command
/// failed): unknown, which stops the run.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The remote command failed.
    #[error("cluster lock: {0}")]
    Remote(#[from] RemoteError),
    /// What the node answered could not be read.
    #[error("cluster lock: unreadable answer from {node}: {answer}")]
    Unreadable {
        /// The node asked.
        node: String,
        /// What it printed (first line, sanitised).
        answer: String,
    },
}

/// The script's part that prints the state of a held lock: `held AGE` then the owner line.
fn held_report() -> String {
    let d = shell_quote(LOCK_DIR);
    let f = shell_quote(OWNER_FILE);
    // awk's srand() returns the previous seed, the time of day: the node's real clock, as the
    // directory's mtime is (the lab's clock fault shifts only `date`).
    format!(
        "now=$(awk 'BEGIN {{ srand(); print srand() }}'); m=$(stat -c %Y {d}) || exit 2; \
         echo \"held $((now - m))\"; cat {f} 2>/dev/null; exit 1"
    )
}

/// Take the lock through `r`. `resume_of`: this run's own id when resuming, so a lock that run
/// left (killed controller) is taken over instead of refused.
pub async fn acquire(
    r: &Remote,
    me: &LockOwner,
    resume_of: Option<&str>,
) -> Result<Acquired, LockError> {
    let d = shell_quote(LOCK_DIR);
    let f = shell_quote(OWNER_FILE);
    let owner = shell_quote(&me.json());
    let mine = shell_quote(&format!(
        "\"run\":{}",
        serde_json::json!(resume_of.unwrap_or(""))
    ));
    let takeover = if resume_of.is_some() {
        // The same run's lock: write ourselves as its owner and renew it.
        format!(
            "if [ -d {d} ] && grep -qF {mine} {f} 2>/dev/null; then \
             printf '%s\\n' {owner} > {f}.new && mv {f}.new {f} && touch {d} && echo acquired; \
             exit 0; fi; "
        )
    } else {
        String::new()
    };
    let script = format!(
        "mkdir -p /etc/pve/priv/lock 2>/dev/null; {takeover}\
         if mkdir {d} 2>/dev/null; then if printf '%s\\n' {owner} > {f}.new && mv {f}.new {f}; \
         then echo acquired; exit 0; fi; rmdir {d}; exit 2; fi; \
         [ -d {d} ] || {{ echo 'cannot create {LOCK_DIR}: is /etc/pve mounted and the cluster \
         quorate?' >&2; exit 2; }}; {}",
        held_report()
    );
    let o = r.sh(&script).await.map_err(RemoteError::from)?;
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    match o.exit {
        ExitStatus::Code(0) if out.trim() == "acquired" => Ok(Acquired::Yes),
        ExitStatus::Code(1) => parse_held(&r.node.name, &out).map(Acquired::Held),
        _ => Err(RemoteError::failed("mkdir /etc/pve/priv/lock/pvefleet-run", &o).into()),
    }
}

/// The lock as the cluster shows it now (`None`: free).
pub async fn show(r: &Remote) -> Result<Option<HeldLock>, LockError> {
    let d = shell_quote(LOCK_DIR);
    let script = format!("[ -d {d} ] || exit 0; {}", held_report());
    let o = r.sh(&script).await.map_err(RemoteError::from)?;
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    match o.exit {
        ExitStatus::Code(0) => Ok(None),
        ExitStatus::Code(1) => parse_held(&r.node.name, &out).map(Some),
        _ => Err(RemoteError::failed("stat /etc/pve/priv/lock/pvefleet-run", &o).into()),
    }
}

/// Renew the lock if it is still `run`'s: `false` when it is not (broken by an operator).
pub async fn renew(r: &Remote, run: &str) -> Result<bool, LockError> {
    let script = format!(
        "if grep -qF {} {} 2>/dev/null && [ -d {} ]; then touch {}; echo ours; else echo lost; fi",
        shell_quote(&format!("\"run\":{}", serde_json::json!(run))),
        shell_quote(OWNER_FILE),
        shell_quote(LOCK_DIR),
        shell_quote(LOCK_DIR),
    );
    Ok(r.ok(&script).await?.trim() == "ours")
}

/// Release the lock if it is `run`'s (a lock taken over or broken by someone else is left).
pub async fn release(r: &Remote, run: &str) -> Result<bool, LockError> {
    let script = format!(
        "if grep -qF {m} {f} 2>/dev/null; then rm -f {f}; rmdir {d} 2>/dev/null; echo released; \
         else echo not-ours; fi",
        m = shell_quote(&format!("\"run\":{}", serde_json::json!(run))),
        f = shell_quote(OWNER_FILE),
        d = shell_quote(LOCK_DIR),
    );
    Ok(r.ok(&script).await?.trim() == "released")
}

/// Break the lock held by run `run` (the operator names it, so a newer holder's lock is never
/// broken by mistake): `Ok(false)` when the lock is not held by that run.
pub async fn break_lock(r: &Remote, run: &str) -> Result<bool, LockError> {
    let script = format!(
        "[ -d {d} ] || {{ echo free; exit 0; }}; \
         if grep -qF {m} {f} 2>/dev/null; then rm -f {f}; rmdir {d}; echo broken; \
         else echo other; fi",
        m = shell_quote(&format!("\"run\":{}", serde_json::json!(run))),
        f = shell_quote(OWNER_FILE),
        d = shell_quote(LOCK_DIR),
    );
    Ok(r.ok(&script).await?.trim() == "broken")
}

/// `held AGE` then the owner's JSON line (possibly absent).
pub fn parse_held(node: &str, out: &str) -> Result<HeldLock, LockError> {
    let mut lines = out.lines();
    let age_s = lines
        .next()
        .and_then(|l| l.strip_prefix("held "))
        .and_then(|a| a.trim().parse::<i64>().ok())
        .ok_or_else(|| LockError::Unreadable {
            node: node.to_string(),
            answer: crate::sanitize::first_line(out, 120),
        })?;
    let owner = lines
        .find(|l| !l.trim().is_empty())
        .and_then(|l| serde_json::from_str::<LockOwner>(l.trim()).ok());
    Ok(HeldLock {
        owner,
        age_s: age_s.max(0) as u64,
    })
}

/// Why a cluster's lock could not be taken.
#[derive(Debug)]
pub enum Refusal {
    /// Another run holds it.
    Held {
        /// The cluster (`None`: the inventory's unnamed one).
        cluster: Option<String>,
        /// Who holds it.
        lock: HeldLock,
    },
    /// No node of the cluster could answer: the lock's state is unknown, a stop.
    Unknown {
        /// The cluster.
        cluster: Option<String>,
        /// The last node's error.
        why: LockUnreachable,
    },
}

impl Refusal {
    /// What to tell the operator: who holds it and how to go on.
    pub fn describe(&self) -> String {
        match self {
            Refusal::Held { cluster, lock } => {
                let c = cluster_name(cluster);
                let mut s = format!("cluster {c} is being driven by {}", lock.describe());
                if let Some(o) = &lock.owner {
                    if lock.dead().is_some() {
                        s.push_str(&format!(
                            "; resume that run (pvefleet run --resume {r}) or, once you are sure nothing drives the cluster, break its lock: pvefleet lock break {r}",
                            r = o.run
                        ));
                    } else {
                        s.push_str("; wait for it to end");
                    }
                }
                s
            }
            Refusal::Unknown { cluster, why } => format!(
                "cluster {}: its lock could not be checked on any node ({why}); nothing was started",
                cluster_name(cluster)
            ),
        }
    }
}

fn cluster_name(c: &Option<String>) -> &str {
    c.as_deref().unwrap_or("(unnamed)")
}

/// The nodes of `inventory` in the clusters of `of` (every member of each, whether or not it
/// is one of `of`: a ProxLB on any of them balances the cluster; any of them may answer for
/// its lock).
pub fn cluster_members<'a>(inventory: &'a [Node], of: &[Node]) -> Vec<&'a Node> {
    inventory
        .iter()
        .filter(|n| of.iter().any(|r| r.cluster == n.cluster))
        .collect()
}

/// The inventory's nodes, cluster by cluster (in inventory order).
pub fn by_cluster(nodes: &[Node]) -> Vec<(Option<String>, Vec<Node>)> {
    let mut out: Vec<(Option<String>, Vec<Node>)> = Vec::new();
    for n in nodes {
        match out.iter_mut().find(|(c, _)| *c == n.cluster) {
            Some((_, v)) => v.push(n.clone()),
            None => out.push((n.cluster.clone(), vec![n.clone()])),
        }
    }
    out
}

/// No node of a cluster could be asked about its lock: the last node's error.
#[derive(Debug, thiserror::Error)]
pub enum LockUnreachable {
    /// The cluster has no node to ask.
    #[error("no node")]
    NoNode,
    /// The last node tried could not be connected to.
    #[error("{node}: {error}")]
    Connect {
        /// The node.
        node: String,
        /// Why.
        error: SshError,
    },
    /// The last node tried answered, but the lock could not be taken or read through it.
    #[error("{node}: {error}")]
    Lock {
        /// The node.
        node: String,
        /// Why.
        error: LockError,
    },
}

/// Ask the first node of `nodes` that answers; the last error when none does.
async fn through_any<T, F, Fut>(
    nodes: &[Node],
    timeout: Duration,
    f: F,
) -> Result<T, LockUnreachable>
where
    F: Fn(Remote) -> Fut,
    Fut: std::future::Future<Output = Result<T, LockError>>,
{
    let mut last = LockUnreachable::NoNode;
    for n in nodes {
        match Remote::connect(n, timeout).await {
            Ok(r) => match f(r).await {
                Ok(v) => return Ok(v),
                Err(error) => {
                    last = LockUnreachable::Lock {
                        node: n.name.clone(),
                        error,
                    }
                }
            },
            Err(error) => {
                last = LockUnreachable::Connect {
                    node: n.name.clone(),
                    error,
                }
            }
        }
    }
    Err(last)
}

/// The locks a run holds, one per cluster of its nodes.
#[derive(Debug)]
pub struct ClusterLocks {
    run: String,
    clusters: Vec<(Option<String>, Vec<Node>)>,
    timeout: Duration,
}

impl ClusterLocks {
    /// Take the lock of every cluster among `nodes` (asked through any of its nodes that
    /// answers). All or nothing: on any refusal the locks already taken are released again.
    pub async fn take(
        nodes: &[Node],
        me: &LockOwner,
        resume_of: Option<&str>,
        timeout: Duration,
    ) -> Result<ClusterLocks, Vec<Refusal>> {
        let mut taken = ClusterLocks {
            run: me.run.clone(),
            clusters: Vec::new(),
            timeout,
        };
        let mut refused = Vec::new();
        for (cluster, members) in by_cluster(nodes) {
            // A lock that cannot be asked yet (/etc/pve read-only while a node that has just
            // booted is not quorate again) is asked again for a while; held or unknown after
            // that is final.
            let asked = tokio::time::Instant::now();
            let got = loop {
                let got = through_any(&members, timeout, |r| async move {
                    acquire(&r, me, resume_of).await
                })
                .await;
                if got.is_ok() || asked.elapsed() > UNKNOWN_FOR {
                    break got;
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            };
            match got {
                Ok(Acquired::Yes) => taken.clusters.push((cluster, members)),
                Ok(Acquired::Held(lock)) => refused.push(Refusal::Held { cluster, lock }),
                Err(why) => refused.push(Refusal::Unknown { cluster, why }),
            }
        }
        if refused.is_empty() {
            Ok(taken)
        } else {
            taken.release().await;
            Err(refused)
        }
    }

    /// Renew every lock each [`RENEW_EVERY`] until `stop` is cancelled (through whichever node
    /// of the cluster answers: the one that took it may be rebooting). A lock found broken is
    /// said loudly, once.
    fn keep_renewed(
        &self,
        stop: tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let run = self.run.clone();
        let clusters = self.clusters.clone();
        let timeout = self.timeout;
        tokio::spawn(async move {
            let mut lost: std::collections::BTreeSet<Option<String>> = Default::default();
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(RENEW_EVERY) => {}
                }
                for (cluster, members) in &clusters {
                    let run = run.as_str();
                    match through_any(members, timeout, |r| async move { renew(&r, run).await })
                        .await
                    {
                        Ok(true) => {}
                        Ok(false) => {
                            if lost.insert(cluster.clone()) {
                                eprintln!(
                                    "pvefleet: WARNING: the lock of cluster {} is no longer this run's (broken by an operator?): another run may now act on it",
                                    cluster_name(cluster)
                                );
                            }
                        }
                        Err(why) => {
                            tracing::warn!(cluster = cluster_name(cluster), %why, "cluster lock not renewed")
                        }
                    }
                }
            }
        })
    }

    /// Run `work` holding the locks: renewed (`keep_renewed`) while it runs, released
    /// when it ends, whatever it returns.
    pub async fn held_while<T>(self, work: impl std::future::Future<Output = T>) -> T {
        let stop = tokio_util::sync::CancellationToken::new();
        let renewing = self.keep_renewed(stop.clone());
        let out = work.await;
        stop.cancel();
        let _ = renewing.await;
        self.release().await;
        out
    }

    /// Release every lock this run still holds (one that is no longer its own is left).
    pub async fn release(&self) {
        for (cluster, members) in &self.clusters {
            let run = self.run.as_str();
            if let Err(why) =
                through_any(
                    members,
                    self.timeout,
                    |r| async move { release(&r, run).await },
                )
                .await
            {
                eprintln!(
                    "pvefleet: WARNING: the lock of cluster {} could not be released ({why}); break it with: pvefleet lock break {run}",
                    cluster_name(cluster)
                );
            }
        }
    }
}

/// `pvefleet lock show` for each cluster among `nodes`: (cluster, the lock or `None` when free),
/// or why it could not be read.
pub async fn show_all(
    nodes: &[Node],
    timeout: Duration,
) -> Vec<(Option<String>, Result<Option<HeldLock>, LockUnreachable>)> {
    let mut out = Vec::new();
    for (cluster, members) in by_cluster(nodes) {
        let got = through_any(&members, timeout, |r| async move { show(&r).await }).await;
        out.push((cluster, got));
    }
    out
}

/// `pvefleet lock break RUN_ID` for each cluster among `nodes`: (cluster, broken or not held by
/// that run), or why it could not be done.
pub async fn break_all(
    nodes: &[Node],
    run: &str,
    timeout: Duration,
) -> Vec<(Option<String>, Result<bool, LockUnreachable>)> {
    let mut out = Vec::new();
    for (cluster, members) in by_cluster(nodes) {
        let got = through_any(
            &members,
            timeout,
            |r| async move { break_lock(&r, run).await },
        )
        .await;
        out.push((cluster, got));
    }
    out
}

fn local_host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into a buffer this function owns.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn process_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(pid: u32, host: &str) -> LockOwner {
        LockOwner {
            run: "20261201-220000-ab12".into(),
            controller: host.into(),
            pid,
            started: 1_764_626_400,
            playbook: "upgrade".into(),
        }
    }

    #[test]
    fn a_held_lock_names_its_run_and_age() {
        let line = owner(4242, "ops1").json();
        let h = parse_held("pve1", &format!("held 7\n{line}\n")).unwrap();
        assert_eq!(h.age_s, 7);
        assert_eq!(h.owner.as_ref().unwrap().run, "20261201-220000-ab12");
        let d = h.describe();
        assert!(
            d.contains("run 20261201-220000-ab12 (upgrade) of ops1 pid 4242"),
            "{d}"
        );
        assert!(d.contains("renewed 7 s ago"), "{d}");
    }

    #[test]
    fn a_lock_nobody_renews_is_stale_and_says_why() {
        let line = owner(4242, "elsewhere").json();
        let h = parse_held("pve1", &format!("held 300\n{line}\n")).unwrap();
        assert_eq!(h.dead().unwrap(), "nobody has renewed it for 300 s");
    }

    #[test]
    fn a_lock_of_a_dead_process_on_this_controller_is_stale_at_once() {
        // A pid above the kernel's pid_max cannot exist.
        let line = owner(u32::MAX / 2, &local_host_name()).json();
        let h = parse_held("pve1", &format!("held 3\n{line}\n")).unwrap();
        assert!(h.dead().unwrap().contains("is gone"), "{:?}", h.dead());
        let alive = owner(std::process::id(), &local_host_name()).json();
        let h = parse_held("pve1", &format!("held 3\n{alive}\n")).unwrap();
        assert_eq!(h.dead(), None);
    }

    #[test]
    fn a_lock_without_its_owner_record_is_still_held() {
        let h = parse_held("pve1", "held 0\n").unwrap();
        assert_eq!(h.owner, None);
        assert!(h.describe().contains("not written"));
    }

    #[test]
    fn an_answer_that_is_not_a_lock_report_is_an_error_not_free() {
        assert!(parse_held("pve1", "").is_err());
        assert!(parse_held("pve1", "stat: cannot stat\n").is_err());
    }
}
