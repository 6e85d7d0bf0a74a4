//! Rolling a run back, node by node: the playbook's `undo` commands in reverse order, then every
//! file restored byte for byte (content, mode and owner, from the backup on the node) or removed
//! when the run created it, then what makes the restored files take effect (update-initramfs
//! before the boot loader's refresh, since proxmox-boot-tool copies the initramfs to the ESPs).
//! A file that changed since the run (drift: its SHA-1 is not what the run wrote) is refused
//! unless forced, and with it the whole node (all or nothing). Then what the run left in the
//! cluster and never put back (a run that halted or was stopped): guests it moved away go back
//! to their node, guests it shut down are started, its HA maintenance is switched off and its
//! Ceph noout unset, each journaled as the run itself would have.
//!
//! [`files_by_node`] and [`undos_by_node`] read the journal's records, [`NodeRollback`] acts on
//! one node over SSH, and [`settle_status`] records the outcome in the run's journal. Choosing
//! the nodes, asking for confirmation and the exit code are `pvefleet rollback`'s (`app`).

use std::collections::BTreeMap;

use tokio_util::sync::CancellationToken;

use crate::capacity::resources::Resources;
use crate::inventory::{Inventory, Node};
use crate::journal::{BackupRecord, Event, GuestRef, Journal, NodeHistory, RunStatus, UndoRecord};
use crate::maintenance::remote::Remote;
use crate::maintenance::{ceph_gate, drain};
use crate::quote::shell_quote;
use crate::sanitize::{first_line, sanitize_str};
use crate::ssh::{self, ExitStatus, Session};

/// One file as the journal knows it.
#[derive(Debug, Clone)]
pub struct FileRec {
    /// The file on the node.
    pub path: String,
    /// Its backup on the node (the original, when it existed).
    pub backup: String,
    /// It existed before the run (else the run created it, and a rollback removes it).
    pub existed: bool,
    /// What makes it take effect once restored (update-initramfs, proxmox-boot-tool refresh ...).
    pub refresh: Vec<String>,
    /// `Some(Some(sha))` written, `Some(None)` removed, `None` never confirmed written.
    pub written: Option<Option<String>>,
}

/// Files per node, in the order the run first touched them.
pub fn files_by_node(backups: &[BackupRecord]) -> BTreeMap<String, Vec<FileRec>> {
    let mut out: BTreeMap<String, Vec<FileRec>> = BTreeMap::new();
    for b in backups {
        let list = out.entry(b.node.clone()).or_default();
        let i = match list.iter().position(|f| f.path == b.path) {
            Some(i) => i,
            None => {
                // The first record of a path defines the original.
                list.push(FileRec {
                    path: b.path.clone(),
                    backup: b.backup.clone(),
                    existed: b.existed,
                    refresh: Vec::new(),
                    written: None,
                });
                list.len() - 1
            }
        };
        let f = &mut list[i];
        if let Some(r) = &b.refresh {
            if !f.refresh.contains(r) {
                f.refresh.push(r.clone());
            }
        }
        if b.phase == crate::vocab::Phase::Written {
            f.written = Some(b.written_sha1.clone());
        }
    }
    out
}

/// Undo commands per node, latest phase per step, in the order the steps ran.
pub fn undos_by_node(undos: &[UndoRecord]) -> BTreeMap<String, Vec<UndoRecord>> {
    let mut out: BTreeMap<String, Vec<UndoRecord>> = BTreeMap::new();
    for u in undos {
        let list = out.entry(u.node.clone()).or_default();
        match list.iter_mut().find(|x| x.step == u.step) {
            Some(x) => *x = u.clone(),
            None => list.push(u.clone()),
        }
    }
    for list in out.values_mut() {
        list.retain(|u| u.phase != crate::vocab::Phase::Unchanged);
    }
    out
}

/// Run `cmd` on the node (up to 5 minutes): whether it exited 0, its stdout, the first line of
/// its stderr.
async fn sh(session: &Session, cmd: &str) -> Result<(bool, String, String), ssh::SshError> {
    let timeout = std::time::Duration::from_secs(300);
    let o = session.exec(cmd, timeout).await?;
    Ok((
        o.exit == ExitStatus::Code(0),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        first_line(&String::from_utf8_lossy(&o.stderr), 200),
    ))
}

/// What makes a restored GRUB file reach the next boot, asked of the node (the boot-loader
/// detection shared with the gpu probe and the playbook engine).
async fn grub_refresh(session: &Session) -> Vec<String> {
    match sh(session, crate::bootloader::SNIPPET).await {
        Ok((_, out, _)) => match crate::bootloader::parse(&out) {
            Ok(setup) => setup.cmdline_target().refresh,
            Err(_) => vec![crate::bootloader::UPDATE_GRUB.to_string()],
        },
        Err(_) => vec![crate::bootloader::UPDATE_GRUB.to_string()],
    }
}

/// One node's entry in `rollback --json`.
pub fn json_entry(
    node: &str,
    status: &str,
    restored: usize,
    undone: usize,
    done: &[String],
    errors: &[String],
) -> serde_json::Value {
    serde_json::json!({
        "node": node, "status": status, "files_restored": restored,
        "undone": undone, "done": done, "errors": errors,
    })
}

/// What the journal says to put back on one node.
#[derive(Debug, Clone, Copy)]
pub struct NodeWork<'a> {
    /// The node, as the inventory reaches it.
    pub node: &'a Node,
    /// The inventory (a guest moved away is moved back through its current node).
    pub inv: &'a Inventory,
    /// Its files, in the order the run first touched them ([`files_by_node`]).
    pub files: &'a [FileRec],
    /// Its undo commands, in the order the steps ran ([`undos_by_node`]).
    pub undos: &'a [UndoRecord],
    /// What the run left in the cluster for it, when it left something.
    pub left: Option<&'a NodeHistory>,
}

/// How one node's rollback ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// A check failed (drift, a missing backup): nothing on the node was changed.
    Refused,
    /// Everything was put back.
    RolledBack,
    /// Something could not be put back (said, and in the node's errors).
    PartlyRolledBack,
}

impl Ended {
    /// The node's status in `rollback --json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Ended::Refused => "refused",
            Ended::RolledBack => "rolled back",
            Ended::PartlyRolledBack => "partly rolled back",
        }
    }
}

/// One node's rollback over its SSH session: what it did and what failed, said as it goes (on
/// stdout and stderr, or collected for `--json`).
pub struct NodeRollback<'a> {
    node: &'a str,
    session: &'a Session,
    force: bool,
    failed: bool,
    restored: usize,
    undone: usize,
    /// `--json`: what was done and what failed are collected for the document, not printed.
    json: bool,
    done: Vec<String>,
    errors: Vec<String>,
}

impl<'a> NodeRollback<'a> {
    /// A rollback of `node` over `session`; `force` restores files that changed since the run
    /// too, `json` collects what is said instead of printing it.
    pub fn new(node: &'a str, session: &'a Session, force: bool, json: bool) -> Self {
        NodeRollback {
            node,
            session,
            force,
            failed: false,
            restored: 0,
            undone: 0,
            json,
            done: Vec::new(),
            errors: Vec::new(),
        }
    }

    /// Roll the node back (see the module header) and journal it (`rolled_back`, unless it was
    /// refused). `stop` gives the stop token, asked only when waiting for the node's OSDs.
    pub async fn run(
        &mut self,
        work: NodeWork<'_>,
        j: &Journal,
        stop: impl Fn() -> CancellationToken,
    ) -> Ended {
        let node = self.node;
        // All or nothing on a node: every file is checked (drift, backups) before any of them,
        // or any undo command, changes it; a node that fails a check is refused whole (the
        // others go on), never left half restored in a configuration nobody wrote.
        let mut actions = Vec::new();
        for f in work.files.iter().rev() {
            if let Some(a) = self.check_file(f).await {
                actions.push((f, a));
            }
        }
        if self.failed {
            let why = "not rolled back: nothing on it was changed (a file that changed since \
                 the run is restored only with --force)";
            if !self.json {
                eprintln!("{node}: {why}");
            }
            self.errors.push(why.to_string());
            return Ended::Refused;
        }
        for u in work.undos.iter().rev() {
            self.undo(u).await;
        }
        let mut refresh: Vec<String> = Vec::new();
        for (f, action) in actions {
            self.file(f, action).await;
            for r in &f.refresh {
                if !refresh.contains(r) {
                    refresh.push(r.clone());
                }
            }
            if f.path == "/etc/default/grub" || f.path.starts_with("/etc/default/grub.d/") {
                for r in grub_refresh(self.session).await {
                    if !refresh.contains(&r) {
                        refresh.push(r);
                    }
                }
            }
        }
        if self.restored > 0 {
            // The initramfs first: proxmox-boot-tool refresh copies it to the ESPs.
            refresh.sort_by_key(|r| !r.starts_with("update-initramfs"));
            for r in &refresh {
                let ok = matches!(sh(self.session, r).await, Ok((true, _, _)));
                self.say(&format!("{r}: {}", if ok { "done" } else { "FAILED" }));
                if !ok {
                    self.failed = true;
                }
            }
            if !refresh.is_empty() {
                self.say("a reboot is needed for the restored boot configuration to take effect");
            }
        }
        if let Some(h) = work.left {
            self.cluster_state(work.node, work.inv, h, j, stop).await;
        }
        j.record(
            node,
            Event::RolledBack {
                files: self.restored,
                undone: self.undone,
                complete: !self.failed,
            },
        )
        .await;
        if self.failed {
            Ended::PartlyRolledBack
        } else {
            Ended::RolledBack
        }
    }

    fn say(&mut self, what: &str) {
        if self.json {
            self.done.push(what.to_string());
        } else {
            println!("{}: {}", self.node, sanitize_str(what));
        }
    }

    fn fail(&mut self, what: &str) {
        self.failed = true;
        self.errors.push(what.to_string());
        if !self.json {
            eprintln!("{}: {}", self.node, sanitize_str(what));
        }
    }

    /// The node's entry in `rollback --json`.
    pub fn entry(&self, status: &str) -> serde_json::Value {
        json_entry(
            self.node,
            status,
            self.restored,
            self.undone,
            &self.done,
            &self.errors,
        )
    }

    async fn undo(&mut self, u: &UndoRecord) {
        match sh(self.session, &u.command).await {
            Ok((true, _, _)) => {
                self.undone += 1;
                self.say(&format!("undid step `{}`", u.step));
            }
            Ok((false, _, err)) => self.fail(&format!("undo of step `{}` failed: {err}", u.step)),
            Err(e) => self.fail(&format!("undo of step `{}`: {e}", u.step)),
        }
    }

    /// What restoring `f` would do, checked without changing anything; a file that changed
    /// since the run (drift, without `--force`), a missing backup or a failed check is recorded
    /// as this node's failure and gives `None`.
    async fn check_file(&mut self, f: &FileRec) -> Option<FileAction> {
        let (p, b) = (shell_quote(&f.path), shell_quote(&f.backup));
        let probe = format!(
            "if [ -e {p} ]; then sha1sum < {p} | cut -d' ' -f1; else echo absent; fi; \
             if [ -e {b} ]; then sha1sum < {b} | cut -d' ' -f1; else echo absent; fi"
        );
        let (current, backup) = match sh(self.session, &probe).await {
            Ok((true, out, _)) => {
                let mut l = out.lines();
                (
                    l.next().unwrap_or("").to_string(),
                    l.next().unwrap_or("").to_string(),
                )
            }
            Ok((false, _, err)) => {
                self.fail(&format!("{}: {err}", f.path));
                return None;
            }
            Err(e) => {
                self.fail(&format!("{}: {e}", f.path));
                return None;
            }
        };
        let expected = match &f.written {
            Some(Some(sha)) => Some(sha.as_str()),
            Some(None) => Some("absent"),
            // Killed between intent and write: the file is either the original or the run's.
            None => None,
        };
        let original = if f.existed { backup.as_str() } else { "absent" };
        if current == original {
            return Some(FileAction::AsBefore);
        }
        if let Some(exp) = expected {
            if current != exp && !self.force {
                self.fail(&format!(
                    "{} changed since the run (drift: now {}, the run left {}); pass --force to restore it anyway",
                    f.path,
                    short(&current),
                    short(exp)
                ));
                return None;
            }
        }
        if f.existed && backup == "absent" {
            self.fail(&format!(
                "{}: the backup {} is missing on the node",
                f.path, f.backup
            ));
            return None;
        }
        Some(if f.existed {
            FileAction::Restore
        } else {
            FileAction::Remove
        })
    }

    /// Do what [`Self::check_file`] found.
    async fn file(&mut self, f: &FileRec, action: FileAction) {
        let (p, b) = (shell_quote(&f.path), shell_quote(&f.backup));
        let cmd = match action {
            FileAction::AsBefore => {
                self.say(&format!("{} already as before the run", f.path));
                return;
            }
            FileAction::Restore => {
                let tmp = shell_quote(&format!("{}.pvefleet-restore", f.path));
                format!("cp -a {b} {tmp} && mv -f {tmp} {p} && cmp -s {b} {p}")
            }
            FileAction::Remove => format!("rm -f {p}"),
        };
        match sh(self.session, &cmd).await {
            Ok((true, _, _)) => {
                self.restored += 1;
                self.say(&if f.existed {
                    format!("restored {}", f.path)
                } else {
                    format!("removed {} (created by the run)", f.path)
                });
            }
            Ok((false, _, err)) => self.fail(&format!("{}: {err}", f.path)),
            Err(e) => self.fail(&format!("{}: {e}", f.path)),
        }
    }
}

/// What rolling a file back does, decided before anything on the node changes.
#[derive(Debug, Clone, Copy)]
enum FileAction {
    /// Already as before the run.
    AsBefore,
    /// Copy the backup back.
    Restore,
    /// Remove it (the run created it).
    Remove,
}

fn short(sha: &str) -> &str {
    &sha[..12.min(sha.len())]
}

/// After a rollback the run's record tells it: `rolled back` when every node of the run that had
/// something to put back was put back whole, else `partly rolled back (NODES)`; what the run had
/// left on is recomputed (an entry stays only for a node that still has something left).
pub fn settle_status(j: &Journal, meta: &crate::journal::RunMeta) {
    let histories = j.histories();
    let (backups, undos) = (j.backups(), j.undos());
    let needing: Vec<&String> = meta
        .nodes
        .iter()
        .filter(|n| {
            let files = backups.iter().any(|b| &b.node == *n);
            let undo = undos.iter().any(|u| &u.node == *n);
            let left = histories.get(*n).is_some_and(|h| h.left_in_cluster());
            files || undo || left || histories.get(*n).is_some_and(|h| h.rolled_back.is_some())
        })
        .collect();
    let done: Vec<&String> = needing
        .iter()
        .copied()
        .filter(|n| {
            histories
                .get(*n)
                .is_some_and(|h| h.rolled_back == Some(true) && !h.left_in_cluster())
        })
        .collect();
    let status = if !needing.is_empty() && done.len() == needing.len() {
        RunStatus::RolledBack
    } else if done.is_empty() {
        return;
    } else {
        RunStatus::PartlyRolledBack(Some(
            done.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(","),
        ))
    };
    let still: Vec<&String> = histories
        .iter()
        .filter(|(_, h)| h.left_in_cluster())
        .map(|(n, _)| n)
        .collect();
    let left_on: Vec<String> = meta
        .left_on
        .iter()
        .filter(|l| still.iter().any(|n| l.contains(n.as_str())))
        .cloned()
        .collect();
    j.set_status(status, meta.stopped_at.clone(), left_on);
}

impl NodeRollback<'_> {
    /// Put back what the run left in the cluster for this node (see the module header). Each
    /// part goes on when another fails; failures are said and make the rollback fail.
    async fn cluster_state(
        &mut self,
        node: &Node,
        inv: &Inventory,
        h: &NodeHistory,
        j: &Journal,
        stop: impl Fn() -> CancellationToken,
    ) {
        let r = Remote {
            session: self.session.clone(),
            node: node.clone(),
            timeout: std::time::Duration::from_secs(300),
        };
        if let Some(scope) = h.noout.as_deref().and_then(ceph_gate::NooutScope::parse) {
            // As after the run's own reboots: the node's OSDs up first, or noout stays (unset
            // while they are down, Ceph would start moving their data away).
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
            let up = ceph_gate::wait_osds_up(
                &r,
                &node.name,
                tokio::time::Instant::from_std(deadline),
                &stop(),
            )
            .await;
            let unset = match up {
                Ok(()) => ceph_gate::unset_noout(&r, &node.name, scope).await,
                Err(e) => Err(e),
            };
            match unset {
                Ok(()) => {
                    self.say(&format!("Ceph noout ({}) unset", scope.as_str()));
                    j.record(
                        &node.name,
                        Event::Noout {
                            state: crate::vocab::NooutState::Unset,
                            scope: scope.as_str().into(),
                            why: Some("rollback".into()),
                        },
                    )
                    .await;
                }
                Err(e) => self.fail(&format!("Ceph noout: {e}")),
            }
        }
        if h.maintenance_on {
            match drain::set_maintenance(&r, false).await {
                Ok(()) => {
                    self.say("HA maintenance off");
                    j.record(
                        &node.name,
                        Event::Maintenance {
                            state: crate::vocab::MaintenanceState::Off,
                            why: Some("rollback".into()),
                        },
                    )
                    .await;
                }
                Err(e) => self.fail(&format!("HA maintenance: {e}")),
            }
        }
        let away: Vec<&(GuestRef, String, String)> =
            h.moved_guests.iter().chain(&h.moving_guests).collect();
        if !away.is_empty() {
            match drain::resources(&r).await {
                Ok(res) => {
                    for (g, origin, _) in away {
                        self.return_guest(&r, inv, &res, g, origin, j).await;
                    }
                }
                Err(e) => self.fail(&format!("cannot see where the guests are: {e}")),
            }
        }
        for g in &h.stopped_guests {
            match drain::start(&r, g).await {
                Ok(()) => {
                    self.say(&format!(
                        "{} started again",
                        drain::describe(std::slice::from_ref(g))
                    ));
                    j.record(&node.name, Event::GuestStarted { guest: g.clone() })
                        .await;
                }
                Err(e) => self.fail(&format!("{e}")),
            }
        }
    }

    /// Move one guest the run moved away back to `origin`, from wherever it is now. A guest
    /// still locked (a migration running) is left alone and said.
    async fn return_guest(
        &mut self,
        r: &Remote,
        inv: &Inventory,
        res: &Resources,
        g: &GuestRef,
        origin: &str,
        j: &Journal,
    ) {
        let what = drain::describe(std::slice::from_ref(g));
        let Some(now) = res.guests.iter().find(|x| x.vmid == g.vmid) else {
            self.fail(&format!(
                "{what}: not in the cluster any more; nothing moved"
            ));
            return;
        };
        // A migration the run started may still be running, even from the guest's home.
        if now.lock.as_deref() == Some("migrate") {
            self.fail(&format!(
                "{what} is being migrated (lock: migrate) on {}; put it on {origin} when that is over",
                now.node
            ));
            return;
        }
        if now.node == origin {
            self.say(&format!("{what} is on {origin} already"));
            return;
        }
        if let Some(lock) = &now.lock {
            self.fail(&format!(
                "{what} is locked ({lock}) on {}; move it back to {origin} when that is over",
                now.node
            ));
            return;
        }
        // With local disks allowed: a guest that has some was moved with them (a drain moves
        // no other way), and for one without the flag changes nothing.
        let moved =
            drain::migrate_from(&inv.nodes, &now.node, g, origin, true, None, r.timeout).await;
        match moved {
            Ok(()) => {
                self.say(&format!("{what} moved back from {} to {origin}", now.node));
                j.record(
                    &r.node.name,
                    Event::GuestReturned {
                        guest: g.clone(),
                        to: origin.to_string(),
                    },
                )
                .await;
            }
            Err(e) => self.fail(&format!("{what}: moving it back from {}: {e}", now.node)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(path: &str, existed: bool, phase: &str, sha: Option<&str>) -> BackupRecord {
        BackupRecord {
            node: "pve1".into(),
            path: path.into(),
            backup: format!("/b{path}"),
            existed,
            refresh: None,
            phase: crate::vocab::Phase::parse(phase).expect("a phase"),
            written_sha1: sha.map(str::to_string),
        }
    }

    #[test]
    fn the_first_record_of_a_path_defines_the_original() {
        // Created by the run, then removed by a later step: rollback must remove, not restore.
        let f = files_by_node(&[
            rec("/etc/x", false, "intent", None),
            rec("/etc/x", false, "written", Some("aa")),
            rec("/etc/x", false, "written", None),
        ]);
        let x = &f["pve1"][0];
        assert!(!x.existed);
        assert_eq!(x.written, Some(None));
    }

    #[test]
    fn an_intent_without_a_write_is_not_drift() {
        let f = files_by_node(&[rec("/etc/y", true, "intent", None)]);
        assert_eq!(f["pve1"][0].written, None);
    }

    #[test]
    fn undo_commands_keep_their_last_phase_and_drop_unchanged_steps() {
        let u = |step: &str, phase: &str| UndoRecord {
            node: "pve1".into(),
            step: step.into(),
            command: format!("undo {step}"),
            phase: crate::vocab::Phase::parse(phase).expect("a phase"),
        };
        let by = undos_by_node(&[
            u("a", "intent"),
            u("a", "applied"),
            u("b", "intent"),
            u("b", "unchanged"),
            u("c", "intent"),
        ]);
        let steps: Vec<(&str, &str)> = by["pve1"]
            .iter()
            .map(|x| (x.step.as_str(), x.phase.as_str()))
            .collect();
        assert_eq!(steps, vec![("a", "applied"), ("c", "intent")]);
    }
}
