//! Emptying a node before its reboot and filling it again after: HA node maintenance (the HA
//! stack moves HA-managed guests away, DOMAIN.md §5 and §8) and the guest policy for the other
//! running guests (refuse, shut down and start again, or ignore).
//!
//! Order matters: maintenance first, so HA guests are migrated rather than stopped; then the
//! policy for what is still running. Guest ids read from the node are validated before they go
//! into a command.

use std::collections::BTreeSet;
use std::time::Duration;
// tokio's clock (the same as std's unless paused): unit tests run the waits in paused time.
use tokio::time::Instant;

use tokio_util::sync::CancellationToken;

use super::error::RebootError;
use super::remote::{NodeShell, Remote};
use crate::inventory::Node;
use crate::journal::GuestRef;
use crate::probe::cluster::parse_ha_status;
use crate::quote::shell_quote;
use crate::ssh::ExitStatus;

/// How long HA guests may take to leave a node in maintenance.
pub const HA_DRAIN_TIMEOUT: Duration = Duration::from_secs(300);

/// A VMID as Proxmox allows it (100 ..= 999999999); anything else read from a node is refused.
pub fn parse_vmid(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 9 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|v| (100..=999_999_999).contains(v))
}

/// The rows of a `qm list` / `pct list` table (header skipped) as (VMID, words); a row whose
/// first word is not a valid VMID is an error.
fn rows<'a>(table: &'a str, tool: &str) -> Result<Vec<(u32, Vec<&'a str>)>, RebootError> {
    table
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            match w.first().and_then(|v| parse_vmid(v)) {
                Some(id) => Ok((id, w)),
                None => Err(RebootError::Command(format!(
                    "unexpected `{tool} list` row: {}",
                    crate::sanitize::first_line(l, 80)
                ))),
            }
        })
        .collect()
}

/// Running guests in `qm list` / `pct list` output. Rows whose VMID is not a valid id are
/// errors (a node printing something unexpected must not put it into a command).
pub fn parse_running(qm: &str, pct: &str) -> Result<Vec<GuestRef>, RebootError> {
    let mut out = Vec::new();
    // qm list: VMID NAME STATUS MEM(MB) BOOTDISK(GB) PID (DOMAIN.md §5).
    for (vmid, w) in rows(qm, "qm")? {
        if w.get(2) == Some(&"running") {
            out.push(GuestRef {
                kind: "qm".into(),
                vmid,
                name: w.get(1).unwrap_or(&"").to_string(),
            });
        }
    }
    // pct list: VMID Status Lock Name (Lock may be empty).
    for (vmid, w) in rows(pct, "pct")? {
        if w.get(1) == Some(&"running") {
            out.push(GuestRef {
                kind: "pct".into(),
                vmid,
                name: w.last().unwrap_or(&"").to_string(),
            });
        }
    }
    Ok(out)
}

/// The guests running on the node now.
pub async fn running_guests(r: &dyn NodeShell) -> Result<Vec<GuestRef>, RebootError> {
    let (_, qm) = r.text("qm list 2>/dev/null").await?;
    let (_, pct) = r.text("pct list 2>/dev/null").await?;
    parse_running(&qm, &pct)
}

/// The guests running on the node that the HA stack does not manage (those meet the guest
/// policy; HA guests leave through node maintenance).
pub async fn running_not_ha(r: &dyn NodeShell) -> Result<Vec<GuestRef>, RebootError> {
    let ha = ha_vmids(r).await.unwrap_or_default();
    Ok(running_guests(r)
        .await?
        .into_iter()
        .filter(|g| !ha.contains(&g.vmid))
        .collect())
}

/// `qm 100 (web)`, for messages.
pub fn describe(g: &[GuestRef]) -> String {
    g.iter()
        .map(|g| {
            format!(
                "{} {} ({})",
                g.kind,
                g.vmid,
                crate::sanitize::first_line(&g.name, 40)
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether the node has an HA LRM (is part of an HA setup) according to `ha-manager status`.
pub async fn has_ha(r: &dyn NodeShell) -> Result<bool, RebootError> {
    let (rc, status) = r
        .text("command -v ha-manager >/dev/null && ha-manager status 2>/dev/null")
        .await?;
    Ok(rc == ExitStatus::Code(0)
        && parse_ha_status(&status)
            .lrm
            .iter()
            .any(|(n, _)| n == &r.node().name))
}

/// HA services placed on this node now.
pub async fn ha_services_here(r: &dyn NodeShell) -> Result<Vec<String>, RebootError> {
    let (_, s) = r.text("ha-manager status 2>/dev/null").await?;
    Ok(parse_ha_status(&s)
        .services
        .into_iter()
        .filter(|(_, node, _)| node == &r.node().name)
        .map(|(sid, _, _)| sid)
        .collect())
}

/// `ha-manager crm-command node-maintenance enable|disable NODE`.
pub fn maintenance_cmd(node: &str, on: bool) -> String {
    let verb = if on { "enable" } else { "disable" };
    format!(
        "ha-manager crm-command node-maintenance {verb} {}",
        shell_quote(node)
    )
}

/// Switch HA node maintenance on or off.
pub async fn set_maintenance(r: &dyn NodeShell, on: bool) -> Result<(), RebootError> {
    r.ok(&maintenance_cmd(&r.node().name, on)).await?;
    Ok(())
}

/// Wait until no HA service remains on the node (the LRM shows maintenance before the guests
/// have moved, DOMAIN.md §5).
pub async fn wait_ha_drained(
    r: &dyn NodeShell,
    cancel: &CancellationToken,
) -> Result<(), RebootError> {
    let deadline = Instant::now() + HA_DRAIN_TIMEOUT;
    loop {
        let left = ha_services_here(r).await?;
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(RebootError::DrainTimeout {
                within: HA_DRAIN_TIMEOUT,
                left: left.join(", "),
            });
        }
        tokio::select! {
            _ = cancel.cancelled() => return Err(RebootError::Interrupted("HA guests were leaving the node".into())),
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Shut a guest down (`qm shutdown ID` / `pct shutdown ID`).
pub async fn shutdown(r: &dyn NodeShell, g: &GuestRef) -> Result<(), RebootError> {
    guest_cmd(r, g, "shutdown").await
}

/// Start a guest again.
pub async fn start(r: &dyn NodeShell, g: &GuestRef) -> Result<(), RebootError> {
    guest_cmd(r, g, "start").await
}

/// Release a guest's lock (`qm unlock ID` / `pct unlock ID`).
pub async fn unlock(r: &dyn NodeShell, g: &GuestRef) -> Result<(), RebootError> {
    guest_cmd(r, g, "unlock").await
}

/// Migrate a guest from `at`, the node it is on (found in `nodes`, the inventory), to `target`.
pub async fn migrate_from(
    nodes: &[Node],
    at: &str,
    g: &GuestRef,
    target: &str,
    local_disks: bool,
    bwlimit_kib: Option<u64>,
    timeout: Duration,
) -> Result<(), RebootError> {
    let Some(node) = nodes.iter().find(|n| n.name == at) else {
        return Err(RebootError::Command(format!(
            "cannot move {} to {target}: it is on {at}, which is not in the inventory",
            describe(std::slice::from_ref(g))
        )));
    };
    let there = Remote::connect(node, timeout).await?;
    let res = migrate(&there, g, target, local_disks, bwlimit_kib).await;
    there.session.close().await;
    res
}

async fn guest_cmd(r: &dyn NodeShell, g: &GuestRef, verb: &str) -> Result<(), RebootError> {
    let tool = match g.kind.as_str() {
        "qm" => "qm",
        "pct" => "pct",
        other => return Err(RebootError::Command(format!("unknown guest kind {other}"))),
    };
    // The id was validated when read; it is a number, so no quoting is needed.
    r.ok(&format!("{tool} {verb} {}", g.vmid)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A captured output under tests/fixtures/DIR/.
    fn fixture_in(dir: &str, name: &str) -> String {
        std::fs::read_to_string(format!(
            "{}/tests/fixtures/{dir}/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    fn fixture(name: &str) -> String {
        fixture_in("pvesh-tasks", name)
    }

    #[test]
    fn running_tasks_are_the_ones_listed_without_an_end() {
        // A real node's task list: one vzdump RUNNING, two ended OK.
        let upids = listed_running_upids(&fixture("node-tasks-all.json")).unwrap();
        assert_eq!(
            upids,
            vec!["UPID:mini-pve-0:000CFFFA:03E8EF53:619480BA:vzdump:103:root@pam:".to_string()]
        );
        assert_eq!(listed_running_upids("[]").unwrap(), Vec::<String>::new());
        // A finished task's status answer is not a list.
        let status = fixture("task-status-stopped.json");
        assert!(listed_running_upids(&status).is_err());
        let v: serde_json::Value = serde_json::from_str(&status).unwrap();
        assert_eq!(v["status"], "stopped");
    }

    #[test]
    fn a_upid_that_is_not_one_is_refused() {
        for bad in [
            r#"[{"upid":"UPID:n:1:2:3:qmigrate:100:root@pam:;reboot"}]"#,
            r#"[{"upid":"$(reboot)"}]"#,
            r#"[{"status":"RUNNING"}]"#,
            "not json",
        ] {
            assert!(listed_running_upids(bad).is_err(), "{bad}");
        }
        assert_eq!(
            listed_running_upids(r#"[{"upid":"$(reboot)"}]"#)
                .unwrap_err()
                .to_string(),
            "task list: not a UPID: $(reboot)"
        );
        assert_eq!(
            listed_running_upids(r#"[{"status":"RUNNING"}]"#)
                .unwrap_err()
                .to_string(),
            "task list: a task without a upid"
        );
    }

    #[test]
    fn migration_words() {
        assert_eq!(
            migrate_argv("qm", 101, "pve 2", true, None).join(" "),
            "qm migrate 101 pve 2 --online --with-local-disks"
        );
        assert_eq!(
            migrate_argv("pct", 200, "pve2", true, Some(51200)).join(" "),
            "pct migrate 200 pve2 --restart --bwlimit 51200"
        );
    }

    #[test]
    fn max_workers_is_read_as_pve_writes_it() {
        assert_eq!(max_workers("keyboard: de\nmax_workers: 6\n"), Ok(Some(6)));
        assert_eq!(
            max_workers("# max_workers: 9\r\nkeyboard: de\r\n"),
            Ok(None)
        );
        assert_eq!(max_workers(""), Ok(None));
        let e = max_workers("keyboard: de\nmax_workers: many\n").unwrap_err();
        assert!(e.contains("line 2") && e.contains("\"many\""), "{e}");
        assert!(max_workers("max_workers: 0\n").is_err());
    }

    #[test]
    fn the_bandwidth_budget_is_shared_evenly() {
        let pace = MigrationPace {
            max: Some(4),
            bwlimit_kib: Some(1_000_000),
        };
        assert_eq!(share(pace, 4), Some(250_000));
        assert_eq!(share(pace, 0), Some(1_000_000));
        assert_eq!(share(MigrationPace::default(), 4), None);
        let tiny = MigrationPace {
            max: None,
            bwlimit_kib: Some(3),
        };
        assert_eq!(share(tiny, 8), Some(1));
    }

    fn qm_fixture(name: &str) -> String {
        fixture_in("qm-migrate", name)
    }

    #[test]
    fn a_refused_migration_says_why() {
        // Real task output on stdout, the CLI's die line on stderr.
        let d = migration_detail(&qm_fixture("hostkey-stdout.txt"), "migration aborted\n");
        assert_eq!(
            d,
            "migration aborted: Can't connect to destination address using public key"
        );
        // A terminal paste (stdout and stderr mixed): the reason is still found.
        let d = migration_detail(&qm_fixture("local-devices-terminal.txt"), "");
        assert!(
            d.starts_with("can't migrate VM which uses local devices: usb1"),
            "{d}"
        );
        // A failure without `migration aborted`: the last ERROR line.
        let out = "2026-01-01 10:00:00 ERROR: online migrate failure - aborting\n2026-01-01 10:00:00 aborting phase 2 - cleanup resources\n2026-01-01 10:00:01 ERROR: migration finished with problems (duration 00:00:01)\n";
        assert_eq!(
            migration_detail(out, "migration problems\n"),
            "migration problems: online migrate failure - aborting"
        );
        assert_eq!(
            migration_detail("", "no such cluster node 'x'\n"),
            "no such cluster node 'x'"
        );
    }

    #[test]
    fn vmids_are_validated() {
        assert_eq!(parse_vmid("100"), Some(100));
        assert_eq!(parse_vmid("999999999"), Some(999_999_999));
        for bad in ["", "99", "1000000000", "100;reboot", "-100", "1e3", " 100"] {
            assert_eq!(parse_vmid(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn running_guests_come_from_qm_and_pct_lists() {
        let qm = "      VMID NAME                 STATUS     MEM(MB)    BOOTDISK(GB) PID       \n       100 web                  running    2048              32.00 2017      \n       101 db                   stopped    4096              32.00 0         \n";
        let pct = "VMID       Status     Lock         Name                \n200        running                 ct-dns              \n";
        let g = parse_running(qm, pct).unwrap();
        assert_eq!(
            g,
            vec![
                GuestRef {
                    kind: "qm".into(),
                    vmid: 100,
                    name: "web".into()
                },
                GuestRef {
                    kind: "pct".into(),
                    vmid: 200,
                    name: "ct-dns".into()
                }
            ]
        );
        assert_eq!(describe(&g), "qm 100 (web), pct 200 (ct-dns)");
    }

    #[test]
    fn a_hostile_row_is_refused_not_run() {
        let qm = "VMID NAME STATUS\n100;reboot x running\n";
        assert!(parse_running(qm, "").is_err());
    }
}

/// The cluster picture from one `pvesh get /cluster/resources` call. A guest the answer gives no
/// memory (`maxmem`) has it read from its configuration (`memory:`, MiB; pmxcfs shows every
/// node's configs on each node); without that line it stays unknown, and placing it is refused.
pub async fn resources(
    r: &dyn NodeShell,
) -> Result<crate::capacity::resources::Resources, RebootError> {
    let o = r
        .sh("pvesh get /cluster/resources --output-format json")
        .await?;
    if o.exit != ExitStatus::Code(0) {
        return Err(RebootError::Command(format!(
            "pvesh get /cluster/resources failed: {}",
            super::remote::first_line(&o.stderr)
        )));
    }
    let mut res = crate::capacity::resources::parse(&String::from_utf8_lossy(&o.stdout))
        .map_err(|e| RebootError::Command(e.to_string()))?;
    let unknown: Vec<String> = res
        .guests
        .iter()
        .filter(|g| g.maxmem.is_none())
        .map(|g| {
            let dir = match g.kind {
                crate::capacity::resources::GuestType::Qemu => "qemu-server",
                crate::capacity::resources::GuestType::Lxc => "lxc",
            };
            format!(
                "echo '==> {} <=='; cat /etc/pve/nodes/{}/{dir}/{}.conf 2>/dev/null",
                g.vmid,
                shell_quote(&g.node),
                g.vmid
            )
        })
        .collect();
    if !unknown.is_empty() {
        let (_, text) = r.text(&unknown.join("; ")).await?;
        let mut current: Option<u32> = None;
        let mut bodies: Vec<(u32, String)> = Vec::new();
        for l in text.lines() {
            if let Some(id) = l.strip_prefix("==> ").and_then(|f| f.strip_suffix(" <==")) {
                current = parse_vmid(id);
                if let Some(id) = current {
                    bodies.push((id, String::new()));
                }
            } else if let (Some(_), Some((_, b))) = (current, bodies.last_mut()) {
                b.push_str(l);
                b.push('\n');
            }
        }
        for g in res.guests.iter_mut().filter(|g| g.maxmem.is_none()) {
            g.maxmem = bodies
                .iter()
                .find(|(id, _)| *id == g.vmid)
                .and_then(|(_, b)| crate::capacity::resources::config_memory(b));
        }
    }
    Ok(res)
}

/// Of the online nodes other than `me`, those a drain must not send guests to because the
/// controller could not bring them back from there: not in the run's inventory, or SSH to
/// them does not work now (asked before the drain). Each with why.
pub async fn unreachable_targets(
    cluster: &[Node],
    res: &crate::capacity::resources::Resources,
    me: &str,
    timeout: Duration,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for n in res.nodes.iter().filter(|n| n.online && n.name != me) {
        let Some(node) = cluster.iter().find(|c| c.name == n.name) else {
            out.push((n.name.clone(), "not in the inventory".to_string()));
            continue;
        };
        match Remote::connect(node, timeout).await {
            Ok(there) => {
                let ok = there
                    .sh("true")
                    .await
                    .map(|o| o.exit == ExitStatus::Code(0));
                there.session.close().await;
                if !matches!(ok, Ok(true)) {
                    out.push((n.name.clone(), "SSH does not work".to_string()));
                }
            }
            Err(e) => out.push((n.name.clone(), format!("SSH does not work: {e}"))),
        }
    }
    out
}

/// Where guests leaving `r`'s node may go: the nodes excluded (in HA maintenance, rebooting
/// with it in this batch, or ones the controller could not bring the guests back from: not in
/// the inventory or SSH not working now) and those to use only as a last resort (rebooted later
/// in this run). Shared by the drain and the check made before the node's first change.
pub async fn targets(
    r: &dyn NodeShell,
    res: &crate::capacity::resources::Resources,
    cluster: &[Node],
    rolling: &std::sync::Mutex<super::reboot::RollingView>,
) -> Result<(BTreeSet<String>, BTreeSet<String>), RebootError> {
    let me = r.node().name.as_str();
    let mut excluded: BTreeSet<String> = nodes_in_maintenance(r).await?.into_iter().collect();
    let later = match rolling.lock() {
        Ok(v) => {
            excluded.extend(v.current.iter().filter(|n| *n != me).cloned());
            v.pending.difference(&v.current).cloned().collect()
        }
        Err(_) => BTreeSet::new(),
    };
    for (n, why) in unreachable_targets(cluster, res, me, r.timeout()).await {
        tracing::info!(node = %me, target = %n, %why, "not a drain target");
        excluded.insert(n);
    }
    Ok((excluded, later))
}

/// A guest of the cluster picture as the journal and the messages name it.
pub fn guest_ref(g: &crate::capacity::resources::GuestRes) -> GuestRef {
    GuestRef {
        kind: g.kind.tool().into(),
        vmid: g.vmid,
        name: g.name.clone(),
    }
}

/// A guest the drain will move, and one it cannot.
#[derive(Debug, Clone)]
pub struct DrainPlan {
    /// Guests to migrate, biggest first.
    pub movable: Vec<crate::capacity::resources::GuestRes>,
    /// Guests that cannot move, with why.
    pub unmovable: Vec<(GuestRef, String)>,
}

impl DrainPlan {
    /// The guests that cannot move, each with why: `qm 105 (gpu) uses local devices: hostpci0; ...`.
    pub fn unmovable_why(&self) -> String {
        self.unmovable
            .iter()
            .map(|(g, w)| format!("{} {w}", describe(std::slice::from_ref(g))))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Sort the node's running guests that are not HA-managed into movable and not: local devices,
/// local disks (unless allowed), a lock.
pub async fn plan_drain(
    r: &dyn NodeShell,
    res: &crate::capacity::resources::Resources,
    allow_local_disks: bool,
) -> Result<DrainPlan, RebootError> {
    use crate::capacity::resources::{local_storages, unmovable_reason, GuestType};
    let node = shell_quote(&r.node().name);
    // Every configuration of the node and the storage definitions, in one round trip.
    let (_, text) = r
        .text(&format!(
            "for f in /etc/pve/nodes/{node}/qemu-server/*.conf /etc/pve/nodes/{node}/lxc/*.conf; do [ -f \"$f\" ] && {{ echo \"==> $f <==\"; cat \"$f\"; }}; done; echo '==> storage.cfg <=='; cat /etc/pve/storage.cfg 2>/dev/null"
        ))
        .await?;
    let mut files: Vec<(String, String)> = Vec::new();
    for l in text.lines() {
        if let Some(f) = l.strip_prefix("==> ").and_then(|f| f.strip_suffix(" <==")) {
            files.push((f.to_string(), String::new()));
        } else if let Some((_, body)) = files.last_mut() {
            body.push_str(l);
            body.push('\n');
        }
    }
    let storage = files
        .iter()
        .find(|(f, _)| f == "storage.cfg")
        .map(|(_, b)| b.as_str())
        .unwrap_or("");
    let mut local = local_storages(storage);
    if storage.trim().is_empty() {
        // No storage.cfg readable: the installer's local storages are local.
        local = vec!["local".into(), "local-lvm".into(), "local-zfs".into()];
    }
    let config_of = |kind: GuestType, vmid: u32| {
        let dir = if kind == GuestType::Qemu {
            "qemu-server"
        } else {
            "lxc"
        };
        let suffix = format!("/{dir}/{vmid}.conf");
        files
            .iter()
            .find(|(f, _)| f.ends_with(&suffix))
            .map(|(_, b)| b.clone())
            .unwrap_or_default()
    };
    let mut plan = DrainPlan {
        movable: Vec::new(),
        unmovable: Vec::new(),
    };
    // HA-managed guests leave through node maintenance, but one that cannot move (local
    // devices, local disks: the HA stack's migration meets the same refusals) would keep the
    // node in maintenance until the drain timed out: it is unmovable as well.
    for g in res.running_on(&r.node().name) {
        let gref = guest_ref(g);
        let why = if let Some(lock) = &g.lock {
            Some(format!("is locked ({lock})"))
        } else {
            unmovable_reason(
                g.kind,
                &config_of(g.kind, g.vmid),
                &local,
                allow_local_disks,
            )
        };
        // HA moves its guests with its own migration, which copies no local disks.
        let why = if g.ha {
            unmovable_reason(g.kind, &config_of(g.kind, g.vmid), &local, false)
                .map(|w| format!("(HA-managed) {w}"))
        } else {
            why
        };
        match why {
            Some(w) => plan.unmovable.push((gref, w)),
            None if g.ha => {}
            None => plan.movable.push(g.clone()),
        }
    }
    plan.movable.sort_by_key(|g| std::cmp::Reverse(g.maxmem));
    Ok(plan)
}

/// How long one migration may take, and how long a resumed drain waits for a migration the
/// stopped run had started.
pub const MIGRATION_TIMEOUT: Duration = Duration::from_secs(3600);

/// How many migrations a drain runs at once, and the bandwidth they share (the reboot step's
/// `max_migrations` and `bwlimit`, or `run --max-migrations` / `--bwlimit`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MigrationPace {
    /// At most this many at once; `None`: the cluster's `max_workers` (see [`concurrency`]).
    pub max: Option<u32>,
    /// A budget for all the migrations running at once, KiB/s (the unit of `qm migrate
    /// --bwlimit`): each gets an equal share as its own `--bwlimit`. `None`: no `--bwlimit`
    /// (the cluster's own `bwlimit: migration=` in datacenter.cfg applies to each, as always).
    pub bwlimit_kib: Option<u64>,
}

/// Without `max_workers` in datacenter.cfg: 4, the default the GUI shows for it (pve-manager
/// `www/manager6/dc/OptionView.js`, "Maximal Workers/bulk-action", `defaultValue: 4`).
/// (`pvesh create /nodes/N/migrateall` refuses to run without one or `--max-workers`:
/// pve-manager `PVE/API2/Nodes.pm` migrateall; its start/stop bulk actions fall back to
/// min(cpus - 1, 8): `get_max_workers`.)
pub const DEFAULT_MAX_WORKERS: u32 = 4;

/// The most migrations run at once over one SSH connection: OpenSSH's sshd allows 10 sessions
/// per connection by default (sshd_config(5) `MaxSessions`), and a drain keeps two for its
/// own queries. A larger `max_migrations` is used as this.
pub const PER_CONNECTION: u32 = 8;

/// `max_workers` of a `datacenter.cfg` (pve-cluster `src/PVE/DataCenterConfig.pm`:
/// `max_workers`, an integer, minimum 1; the file is `key: value` lines, `#` comments). `None`
/// when it is not set; a value that is not a positive integer is an error naming the line.
pub fn max_workers(text: &str) -> Result<Option<u32>, String> {
    let mut found = None;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        let Some(v) = line.strip_prefix("max_workers:") else {
            continue;
        };
        let v = v.trim();
        match v.parse::<u32>() {
            Ok(n) if n >= 1 => found = Some(n),
            _ => {
                return Err(format!(
                    "{} line {}: max_workers is not a positive integer: {:?}",
                    super::balancers::PATH,
                    i + 1,
                    crate::sanitize::first_line(v, 40)
                ))
            }
        }
    }
    Ok(found)
}

/// How many migrations to run at once from or to `r`'s node: the pace's `max`, else the
/// cluster's `max_workers` (read through `r`; a file that cannot be read is an error, not the
/// default), else [`DEFAULT_MAX_WORKERS`]; at most [`PER_CONNECTION`].
pub async fn concurrency(r: &dyn NodeShell, pace: MigrationPace) -> Result<u32, RebootError> {
    let n = match pace.max {
        Some(n) => n,
        None => {
            let text = r.read(super::balancers::PATH).await?;
            max_workers(text.as_deref().unwrap_or_default())
                .map_err(RebootError::Command)?
                .unwrap_or(DEFAULT_MAX_WORKERS)
        }
    };
    Ok(n.clamp(1, PER_CONNECTION))
}

/// Each migration's share of the pace's bandwidth budget when `n` run at once (KiB/s, at
/// least 1).
pub fn share(pace: MigrationPace, n: u32) -> Option<u64> {
    pace.bwlimit_kib.map(|b| (b / u64::from(n.max(1))).max(1))
}

/// The migration command for a guest to `target`, as words.
pub fn migrate_argv(
    kind: &str,
    vmid: u32,
    target: &str,
    local_disks: bool,
    bwlimit_kib: Option<u64>,
) -> Vec<String> {
    let mut argv: Vec<String> = match kind {
        "pct" => vec!["pct".into(), "migrate".into()],
        _ => vec!["qm".into(), "migrate".into()],
    };
    argv.push(vmid.to_string());
    argv.push(target.to_string());
    match kind {
        "pct" => argv.push("--restart".into()),
        _ => {
            argv.push("--online".into());
            if local_disks {
                argv.push("--with-local-disks".into());
            }
        }
    }
    // qm migrate and pct migrate: `--bwlimit <integer>`, KiB/s (qemu-server
    // PVE/API2/Qemu.pm migrate_vm and pve-container PVE/API2/LXC.pm migrate_vm, both
    // "Override I/O bandwidth limit (in KiB/s).").
    if let Some(b) = bwlimit_kib {
        argv.push("--bwlimit".into());
        argv.push(b.to_string());
    }
    argv
}

/// The shell text that runs a migration detached from the SSH session and waits for it.
///
/// `qm migrate` run in the session would die with it: if the controller is killed (or quits on
/// a second signal) in the middle, the CLI process loses its output pipe and kills its worker
/// (pve-common RESTEnvironment fork_worker: the synchronous CLI parent kills the worker's
/// process group when it stops), which leaves the source guest locked and the target's incoming
/// VM behind. Run in a session of its own (`setsid -w`, in the background of the session's
/// shell, which waits for it), writing to files under /run, the migration ends on its own if the
/// session goes away; the session's shell reports its output and exit status as if it had run
/// in place, and a resume finds the task still running (see [`running_migration_tasks`]) or
/// done.
pub fn detached_migration_script(argv: &[String]) -> String {
    let words: Vec<String> = argv.iter().map(|w| shell_quote(w)).collect();
    format!(
        "d=$(mktemp -d /run/pvefleet-migrate.XXXXXX) || exit 125\n\
         setsid -w {} <\"/dev/null\" >\"$d/out\" 2>\"$d/err\" &\n\
         wait $!; rc=$?\n\
         out=$(cat \"$d/out\"; echo x); err=$(cat \"$d/err\"; echo x); rm -rf \"$d\"\n\
         printf '%s' \"${{out%x}}\"; printf '%s' \"${{err%x}}\" >&2; exit \"$rc\"\n",
        words.join(" ")
    )
}

/// What a failed `qm migrate` / `pct migrate` said. qemu-server logs the reason on stdout
/// (pve-guest-common PVE/AbstractMigrate.pm: `log('err', "migration aborted (duration D):
/// ERR")`, each line as `DATE TIME ERROR: ...`) and the CLI writes only the task's final die
/// message to stderr (pve-common PVE/RESTEnvironment.pm tee_worker: `TASK ERROR: MSG` ->
/// `MSG` on STDERR), e.g. `migration aborted`. So: stderr's line, with the reason from stdout
/// (`migration aborted (...): REASON`, else the last `ERROR:` line).
pub fn migration_detail(stdout: &str, stderr: &str) -> String {
    let err = super::remote::first_line(stderr.as_bytes());
    let errors: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.split_once("ERROR: ").map(|(_, m)| m.trim()))
        .filter(|m| !m.is_empty())
        .collect();
    let reason = errors
        .iter()
        .rev()
        .find_map(|m| {
            m.strip_prefix("migration aborted (")
                .and_then(|rest| rest.split_once("): ").map(|(_, why)| why))
        })
        .or_else(|| {
            errors
                .iter()
                .find(|m| !m.starts_with("migration finished with problems"))
                .or(errors.last())
                .copied()
        })
        .map(|m| crate::sanitize::first_line(m, 200));
    match reason {
        Some(why) if err.is_empty() => why,
        Some(why) if why.contains(&err) => why,
        Some(why) => format!("{err}: {why}"),
        None if !err.is_empty() => err,
        None => stdout
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(|l| crate::sanitize::first_line(l, 160))
            .unwrap_or_default(),
    }
}

/// How long a migration that the command handed on (an HA-managed guest's `qm migrate` only
/// queues a request to the HA manager, "Requesting HA migration for VM ID to node T", and
/// exits 0: qemu-server PVE/API2/Qemu.pm migrate_vm) may take to put the guest on its target.
pub const HANDED_ON_TIMEOUT: Duration = Duration::from_secs(600);

/// Run a migration on the node the guest is on (`r`), detached from the session (see
/// [`detached_migration_script`]), and wait for it. The move is done when the cluster shows
/// the guest on `target`, not when the command exits 0.
pub async fn migrate(
    r: &dyn NodeShell,
    g: &GuestRef,
    target: &str,
    local_disks: bool,
    bwlimit_kib: Option<u64>,
) -> Result<(), RebootError> {
    let argv = migrate_argv(&g.kind, g.vmid, target, local_disks, bwlimit_kib);
    let o = r
        .sh_within(&detached_migration_script(&argv), MIGRATION_TIMEOUT)
        .await?;
    let failed = |detail: String| RebootError::Migration {
        guest: describe(std::slice::from_ref(g)),
        target: target.to_string(),
        detail,
    };
    if o.exit != ExitStatus::Code(0) {
        return Err(failed(migration_detail(
            &String::from_utf8_lossy(&o.stdout),
            &String::from_utf8_lossy(&o.stderr),
        )));
    }
    wait_on(r, g, target, HANDED_ON_TIMEOUT)
        .await
        .map_err(|e| match e {
            RebootError::Command(d) => failed(d),
            e => e,
        })
}

/// Wait until the cluster shows `g` on `target` (bounded).
pub async fn wait_on(
    r: &dyn NodeShell,
    g: &GuestRef,
    target: &str,
    within: Duration,
) -> Result<(), RebootError> {
    let deadline = Instant::now() + within;
    loop {
        let res = resources(r).await?;
        let now = res.guests.iter().find(|x| x.vmid == g.vmid);
        match now {
            Some(x) if x.node == target && x.lock.is_none() => return Ok(()),
            None => {
                return Err(RebootError::Command(format!(
                    "the command ended, but the cluster no longer lists {}",
                    describe(std::slice::from_ref(g))
                )))
            }
            Some(x) if Instant::now() > deadline => {
                return Err(RebootError::Command(format!(
                    "the command ended, but after {} the guest is still on {}{}",
                    humantime::format_duration(within),
                    x.node,
                    x.lock
                        .as_deref()
                        .map(|l| format!(" (lock {l})"))
                        .unwrap_or_default()
                )))
            }
            Some(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// The migration tasks (`qmigrate` / `vzmigrate`) of a guest that are still running on `node`
/// (the node `r` is connected to), by UPID.
///
/// The active task list alone cannot tell: a worker that died is listed without a status until
/// the list is next refreshed. So each listed task is asked for its status, which pve-manager
/// (PVE/API2/Tasks.pm read_task_status) answers from the worker's pid and start time.
pub async fn running_migration_tasks(
    r: &dyn NodeShell,
    node: &str,
    g: &GuestRef,
) -> Result<Vec<String>, RebootError> {
    let kind = if g.kind == "pct" {
        "vzmigrate"
    } else {
        "qmigrate"
    };
    let n = shell_quote(node);
    let list = format!(
        "pvesh get /nodes/{n}/tasks --source active --vmid {} --typefilter {kind} --output-format json",
        g.vmid
    );
    let cannot = |why: String| {
        RebootError::Command(format!(
            "cannot tell whether a migration of {} is still running on {node} ({why}); check its tasks by hand",
            describe(std::slice::from_ref(g))
        ))
    };
    let o = r.sh(&list).await?;
    if o.exit != ExitStatus::Code(0) {
        return Err(cannot(super::remote::first_line(&o.stderr)));
    }
    let listed = listed_running_upids(&String::from_utf8_lossy(&o.stdout))
        .map_err(|e| cannot(e.to_string()))?;
    let mut running = Vec::new();
    for upid in listed {
        let o = r
            .sh(&format!(
                "pvesh get /nodes/{n}/tasks/{}/status --output-format json",
                shell_quote(&upid)
            ))
            .await?;
        if o.exit != ExitStatus::Code(0) {
            return Err(cannot(super::remote::first_line(&o.stderr)));
        }
        let v: serde_json::Value =
            serde_json::from_slice(&o.stdout).map_err(|e| cannot(format!("task status: {e}")))?;
        if v["status"] == "running" {
            running.push(upid);
        }
    }
    Ok(running)
}

/// A `pvesh get /nodes/N/tasks` answer that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TaskListError {
    /// Not JSON.
    #[error("task list: {0}")]
    NotJson(serde_json::Error),
    /// JSON, but not an array.
    #[error("task list: not a JSON array")]
    NotAnArray,
    /// A running task without its `upid`.
    #[error("task list: a task without a upid")]
    NoUpid,
    /// A `upid` that does not look like one (its first line, sanitised, at most 80 characters).
    #[error("task list: not a UPID: {0}")]
    NotAUpid(String),
}

/// The UPIDs of the tasks a `pvesh get /nodes/N/tasks --source active` answer lists as running
/// (status `RUNNING`, which the API gives a task that has not recorded an end). A UPID that does
/// not look like one (`UPID:` and no characters a shell would act on) is refused.
pub fn listed_running_upids(json: &str) -> Result<Vec<String>, TaskListError> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(TaskListError::NotJson)?;
    let Some(tasks) = v.as_array() else {
        return Err(TaskListError::NotAnArray);
    };
    let mut out = Vec::new();
    for t in tasks {
        if t["status"].as_str().is_some_and(|s| s != "RUNNING") {
            continue;
        }
        let Some(upid) = t["upid"].as_str() else {
            return Err(TaskListError::NoUpid);
        };
        let sane = upid.starts_with("UPID:")
            && upid
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b":@._-!".contains(&b));
        if !sane {
            return Err(TaskListError::NotAUpid(crate::sanitize::first_line(
                upid, 80,
            )));
        }
        out.push(upid.to_string());
    }
    Ok(out)
}

/// Nodes in HA maintenance now (`lrm NODE (maintenance mode, ...)`).
pub async fn nodes_in_maintenance(r: &dyn NodeShell) -> Result<Vec<String>, RebootError> {
    let (_, s) = r.text("ha-manager status 2>/dev/null").await?;
    Ok(parse_ha_status(&s)
        .lrm
        .into_iter()
        .filter(|(_, st)| st.contains("maintenance"))
        .map(|(n, _)| n)
        .collect())
}

/// HA-managed guest ids (`vm:100`, `ct:200` -> 100, 200), wherever they run.
pub async fn ha_vmids(r: &dyn NodeShell) -> Result<Vec<u32>, RebootError> {
    let (_, s) = r.text("ha-manager status 2>/dev/null").await?;
    Ok(parse_ha_status(&s)
        .services
        .iter()
        .filter_map(|(sid, _, _)| sid.split_once(':').and_then(|(_, id)| parse_vmid(id)))
        .collect())
}

/// What bringing the drain's guests back did.
#[derive(Debug, Default)]
pub struct Returned {
    /// Back on their node (moved back now, or found there).
    pub returned: Vec<GuestRef>,
    /// Back, but stopped, and starting them failed.
    pub not_started: Vec<GuestRef>,
    /// Still away: (guest, origin, where it is now).
    pub away: Vec<(GuestRef, String, String)>,
    /// Each guest not brought back as it left, with why.
    pub failed: Vec<String>,
}

/// Journal a guest back home (`guest_returned`), as soon as it is.
async fn returned(events: &crate::events::EventBus, node: &str, g: &GuestRef, origin: &str) {
    events
        .record(
            node,
            crate::journal::Event::GuestReturned {
                guest: g.clone(),
                to: origin.to_string(),
            },
        )
        .await;
}

fn say(events: &crate::events::EventBus, node: &str, msg: &str) {
    tracing::warn!(node = %node, "{msg}");
    events.said(node, msg);
}

/// Bring the guests a drain moved away from `r`'s node back as they left. Each is looked up in
/// the cluster first and moved back from where it is now (an operator may have moved it on);
/// one the cluster no longer lists (deleted) is said and skipped; with `return_guests = false`
/// they stay where they are (said when that is not where the drain put them). Every guest the
/// drain moved was running: one found back but stopped (something else stopped it while it
/// was away, e.g. its host rebooted) is started again, loudly. What could not be done is in
/// `failed`, with the guest named. Each return is journaled as it starts (`guest_returning`)
/// and as it ends (`guest_returned`, also for a guest found home already).
pub async fn return_guests(
    r: &dyn NodeShell,
    cluster: &[Node],
    moved: &[(GuestRef, String, String)],
    opts: super::reboot::DrainOpts,
    events: &crate::events::EventBus,
    step: &str,
) -> Result<Returned, RebootError> {
    use futures::stream::{FuturesUnordered, StreamExt};
    let me = r.node().name.clone();
    let mut out = Returned::default();
    let res = resources(r).await?;
    // (guest, its origin, where it is now) of the ones to migrate back.
    let mut back: Vec<(GuestRef, String, String)> = Vec::new();
    for (g, origin, at) in moved {
        let what = describe(std::slice::from_ref(g));
        let Some(now) = res.guests.iter().find(|x| x.vmid == g.vmid) else {
            say(
                events,
                &me,
                &format!("{what}, moved to {at} by this run, is no longer in the cluster (deleted?): nothing to bring back"),
            );
            continue;
        };
        if now.node != *at && now.node != *origin {
            say(
                events,
                &me,
                &format!(
                    "{what} is on {} now, not on {at} where this run moved it (moved by someone else){}",
                    now.node,
                    if opts.return_guests {
                        "; moving it back from there"
                    } else {
                        "; left there (return_guests = false)"
                    }
                ),
            );
        }
        if !opts.return_guests {
            out.away.push((g.clone(), origin.clone(), now.node.clone()));
            continue;
        }
        if now.node == *origin {
            returned(events, &me, g, origin).await;
            out.returned.push(g.clone());
            continue;
        }
        back.push((g.clone(), origin.clone(), now.node.clone()));
    }
    // Up to `concurrency` at once, as the moves away; each journaled intent-first as it starts.
    // A failed return does not stop the others: every guest that can come home does.
    let total = back.len();
    let limit = if total == 0 {
        1
    } else {
        concurrency(r, opts.pace).await? as usize
    };
    let bwlimit = share(opts.pace, limit.min(total.max(1)) as u32);
    let mut queue = back.into_iter();
    let mut running = FuturesUnordered::new();
    let mut under_way: Vec<(GuestRef, String)> = Vec::new();
    let mut finished = 0usize;
    loop {
        while running.len() < limit {
            let Some((g, origin, at)) = queue.next() else {
                break;
            };
            // Intent first: a resume that finds this without its `guest_returned` settles it.
            events
                .record(
                    &me,
                    crate::journal::Event::GuestReturning {
                        guest: g.clone(),
                        from: at.clone(),
                        to: origin.clone(),
                    },
                )
                .await;
            under_way.push((g.clone(), at.clone()));
            running.push(async move {
                let res = migrate_from(
                    cluster,
                    &at,
                    &g,
                    &origin,
                    opts.local_disks,
                    bwlimit,
                    r.timeout(),
                )
                .await;
                (g, origin, at, res)
            });
        }
        if running.is_empty() {
            break;
        }
        events.doing(
            &me,
            crate::events::Activity::Migrating {
                step: step.to_string(),
                under_way: under_way.clone(),
                finished,
                total,
                back: true,
            },
        );
        let Some((g, origin, at, res)) = running.next().await else {
            break;
        };
        under_way.retain(|(x, _)| *x != g);
        finished += 1;
        match res {
            Ok(()) => {
                returned(events, &me, &g, &origin).await;
                out.returned.push(g);
            }
            Err(e) => {
                let why = match e {
                    RebootError::Migration { detail, .. } => detail,
                    e => e.to_string(),
                };
                out.failed.push(format!(
                    "{} could not be moved back from {at}: {why}",
                    describe(std::slice::from_ref(&g))
                ));
                out.away.push((g, origin, at));
            }
        }
    }
    if out.returned.is_empty() {
        return Ok(out);
    }
    let res = resources(r).await?;
    for g in &out.returned {
        let what = describe(std::slice::from_ref(g));
        let Some(now) = res.guests.iter().find(|x| x.vmid == g.vmid) else {
            continue;
        };
        if now.running || now.node != me {
            continue;
        }
        say(
            events,
            &me,
            &format!("{what} was running before the drain and is back STOPPED (something else stopped it while it was away); starting it again"),
        );
        if let Err(e) = start(r, g).await {
            out.failed.push(format!(
                "{what} is back but stopped and could not be started: {e}"
            ));
            out.not_started.push(g.clone());
        }
    }
    Ok(out)
}
