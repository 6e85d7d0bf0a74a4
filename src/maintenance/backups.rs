//! Backups running on the cluster (`vzdump` tasks), which a rolling run does not start over:
//! read from `pvesh get /cluster/tasks --output-format json`.
//!
//! The format (pve-manager PVE/API2/Cluster.pm `tasks`, which returns pve-cluster's
//! `PVE::Cluster::get_tasklist`: each node's list of active workers as pve-common's
//! `RESTEnvironment::active_workers` gives it and `broadcast_tasklist` shares it through
//! pmxcfs, at every worker's start and end and every 10 s from pvestatd): one object per task,
//! the fields of its UPID decoded (`PVE::Tools::upid_decode`: `upid`, `node`, `pid`, `pstart`,
//! `starttime`, `type`, `id`, `user`), plus `endtime` and `status` once it ended. A backup is
//! `type` `vzdump`; its `id` is the guest's VMID when the job backs up one guest of the node
//! (pve-manager PVE/API2/VZDump.pm: the task id is set only for a single local guest), empty
//! otherwise; it runs on the node that holds the guests (`node`). Running: no `endtime`.
//!
//! Unknown is not "no backup": a list that cannot be read is an error, never an empty list.

use serde::Deserialize;

use super::remote::Remote;
use crate::ssh::ExitStatus;

/// Why the running backups could not be told.
#[derive(Debug, thiserror::Error)]
pub enum BackupsError {
    /// The connection failed.
    #[error(transparent)]
    Ssh(#[from] crate::ssh::SshError),
    /// `pvesh` failed.
    #[error("`pvesh get /cluster/tasks` failed ({status}): {stderr}")]
    Failed {
        /// Its exit status.
        status: ExitStatus,
        /// The first line of its stderr.
        stderr: String,
    },
    /// Its output is not the task list.
    #[error("`pvesh get /cluster/tasks` printed something that is not a task list: {0}")]
    Parse(String),
}

/// A task of the cluster's list, as far as backups need it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Task {
    /// The task's UPID.
    pub upid: String,
    /// The node it runs on.
    pub node: String,
    /// Its type (`vzdump`, `qmigrate` ...).
    #[serde(rename = "type")]
    pub kind: String,
    /// Its id: for a backup, the VMID of its one guest, or empty.
    #[serde(default, deserialize_with = "id_text")]
    pub id: String,
    /// When it ended (Unix time), absent while it runs.
    #[serde(default)]
    pub endtime: Option<u64>,
    /// Its exit status once ended (`OK`, an error).
    #[serde(default)]
    pub status: Option<String>,
}

/// `id` is a string in the API, but a JSON number should not make the list unreadable.
fn id_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(match v {
        serde_json::Value::String(s) => s,
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    })
}

impl Task {
    /// A backup that has not ended.
    pub fn running_backup(&self) -> bool {
        self.kind == "vzdump" && self.endtime.is_none()
    }

    /// `vzdump of VM 100 on pve2` / `vzdump on pve2` (the UPID's node and id, sanitised).
    pub fn describe(&self) -> String {
        let node = crate::sanitize::sanitize_str(&self.node);
        if self.id.is_empty() {
            format!("vzdump on {node}")
        } else {
            format!(
                "vzdump of guest {} on {node}",
                crate::sanitize::sanitize_str(&self.id)
            )
        }
    }
}

/// The tasks of `pvesh get /cluster/tasks --output-format json`.
pub fn parse(text: &str) -> Result<Vec<Task>, BackupsError> {
    serde_json::from_str(text).map_err(|e| BackupsError::Parse(e.to_string()))
}

/// The backups running on the cluster, asked through `r`.
pub async fn running(r: &Remote) -> Result<Vec<Task>, BackupsError> {
    let o = r
        .sh("pvesh get /cluster/tasks --output-format json")
        .await?;
    if o.exit != ExitStatus::Code(0) {
        return Err(BackupsError::Failed {
            status: o.exit,
            stderr: super::remote::first_line(&o.stderr),
        });
    }
    Ok(parse(&String::from_utf8_lossy(&o.stdout))?
        .into_iter()
        .filter(Task::running_backup)
        .collect())
}

/// The running backups that concern `node`: those running on it (its guests are backed up
/// where they are) and those whose one guest is among `guests` (its guests now).
pub fn of_node<'a>(tasks: &'a [Task], node: &str, guests: &[u32]) -> Vec<&'a Task> {
    tasks
        .iter()
        .filter(|t| t.node == node || t.id.parse::<u32>().is_ok_and(|id| guests.contains(&id)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_backups_are_vzdump_tasks_without_an_end() {
        let text = include_str!("../../tests/fixtures/pvesh-tasks/cluster-tasks.json");
        let tasks = parse(text).unwrap();
        assert!(tasks.len() >= 4, "{tasks:?}");
        let running: Vec<&Task> = tasks.iter().filter(|t| t.running_backup()).collect();
        assert_eq!(running.len(), 2, "{running:?}");
        assert_eq!(running[0].describe(), "vzdump of guest 100 on pve2");
        assert_eq!(running[1].describe(), "vzdump on pve3");
        // A finished backup and a running migration are not running backups.
        assert!(tasks
            .iter()
            .any(|t| t.kind == "vzdump" && t.endtime.is_some() && !t.running_backup()));
        assert!(tasks
            .iter()
            .any(|t| t.kind == "qmigrate" && t.endtime.is_none() && !t.running_backup()));
        let owned: Vec<Task> = running.into_iter().cloned().collect();
        assert_eq!(of_node(&owned, "pve1", &[]).len(), 0);
        assert_eq!(of_node(&owned, "pve1", &[100]).len(), 1, "its guest");
        assert_eq!(of_node(&owned, "pve3", &[]).len(), 1, "on the node");
    }

    #[test]
    fn an_unreadable_list_is_an_error_not_an_empty_one() {
        assert!(parse("").is_err());
        assert!(parse("{\"data\": []}").is_err());
        assert!(parse("[{\"node\": \"pve1\"}]").is_err(), "no upid/type");
        assert_eq!(parse("[]").unwrap(), Vec::new());
    }
}
