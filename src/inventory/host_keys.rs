//! The SSH host keys a Proxmox VE cluster keeps of its own nodes, taken over one trusted
//! connection so that the other nodes need no first-contact prompt (`inventory discover`).
//!
//! Where pve-cluster keeps them (src/PVE/Cluster/Setup.pm, src/PVE/SSHInfo.pm):
//! - `/etc/pve/priv/known_hosts` ([`CLUSTER_KNOWN_HOSTS`]): `ssh_merge_known_hosts` writes each
//!   node's `ssh-rsa` key twice, under its lower-cased node name and under its address
//!   (`NAME ssh-rsa KEY` and `IP ssh-rsa KEY`), and keeps the lines merged from the node's earlier
//!   `/etc/ssh/ssh_known_hosts` (possibly hashed, possibly stale). `/etc/ssh/ssh_known_hosts` is a
//!   link to it. Every release writes it when a cluster is created or joined; before pve-cluster
//!   8.0.6 (PVE 8.2) `pvecm updatecerts` merged it again at every start.
//! - `/etc/pve/nodes/NODE/ssh_known_hosts` ([`node_known_hosts`]), since pve-cluster 8.0.6
//!   (`ssh_create_node_known_hosts`, fix #4886): the node's own `NODE ssh-rsa KEY`, rewritten by
//!   `pvecm updatecerts` from the node's `/etc/ssh/ssh_host_rsa_key.pub`. Proxmox's own ssh
//!   trusts only this file for the node when it exists (`ssh_info_to_ssh_opts`:
//!   `UserKnownHostsFile=` it, `GlobalKnownHostsFile=none`, `HostKeyAlias=NODE`).
//!
//! So a node's keys are those of its own file when it has one (the shared file may still hold an
//! old key of a reinstalled node), else the shared file's entries for its name or address.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use russh::keys::PublicKey;

use super::members::Members;
use crate::ssh::known_hosts::{self, lookup_name};
use crate::ssh::{ExitStatus, Session, SshError};

/// pmxcfs's shared known_hosts of the cluster's nodes (linked from `/etc/ssh/ssh_known_hosts`).
pub const CLUSTER_KNOWN_HOSTS: &str = "/etc/pve/priv/known_hosts";

/// A node's own known_hosts entry in pmxcfs (pve-cluster 8.0.6 and later).
pub fn node_known_hosts(node: &str) -> String {
    format!("/etc/pve/nodes/{node}/ssh_known_hosts")
}

/// The cluster's known_hosts files as read from one node: path on the node, then content.
/// Files the node does not have are left out.
pub type ClusterFiles = BTreeMap<String, String>;

/// One key of a cluster node, with the names to record it under.
#[derive(Debug, Clone)]
pub struct NodeKey {
    /// The node's name.
    pub node: String,
    /// The known_hosts names the inventory reaches it by: its address and its name, as
    /// [`lookup_name`] writes them for the port.
    pub names: Vec<String>,
    /// The key.
    pub key: PublicKey,
    /// Where in the cluster's files it is (`/etc/pve/...`, 1-based line).
    pub source: (PathBuf, usize),
}

/// Read the cluster's known_hosts files over `session`: the shared one and each member's own.
/// A file that is missing (an older release, a node not yet started on 8.0.6) is left out;
/// the connection failing is an error.
pub async fn fetch(
    session: &Session,
    members: &Members,
    timeout: Duration,
) -> Result<ClusterFiles, SshError> {
    let mut paths = vec![CLUSTER_KNOWN_HOSTS.to_string()];
    paths.extend(members.nodelist.keys().map(|n| node_known_hosts(n)));
    let mut out = ClusterFiles::new();
    for path in paths {
        let got = session
            .exec(
                &format!("cat {}", crate::quote::shell_quote(&path)),
                timeout,
            )
            .await?;
        if got.exit == ExitStatus::Code(0) {
            out.insert(path, String::from_utf8_lossy(&got.stdout).into_owned());
        }
    }
    Ok(out)
}

/// Each member's keys from `files`, to be recorded under the address the inventory gives it
/// (its `.members` address, else its name) and its name, on `port`. A member with no key in
/// the files is missing from the result.
pub fn node_keys(members: &Members, files: &ClusterFiles, port: Option<u16>) -> Vec<NodeKey> {
    let port = port.unwrap_or(22);
    let shared = files.get(CLUSTER_KNOWN_HOSTS);
    let mut out = Vec::new();
    for (name, m) in members.nodes_by_id() {
        let address = m.ip.as_deref().unwrap_or(name);
        // ssh and pve-cluster compare host names lower-cased.
        let lname = name.to_ascii_lowercase();
        let own_path = node_known_hosts(name);
        let mut found = files
            .get(&own_path)
            .map(|text| known_hosts::keys_in(text, Path::new(&own_path), &lname))
            .unwrap_or_default();
        if found.is_empty() {
            if let Some(text) = shared {
                let file = Path::new(CLUSTER_KNOWN_HOSTS);
                found = known_hosts::keys_in(text, file, &lname);
                if address != name {
                    for k in known_hosts::keys_in(text, file, &address.to_ascii_lowercase()) {
                        if !found.iter().any(|f| f.key.key_data() == k.key.key_data()) {
                            found.push(k);
                        }
                    }
                }
            }
        }
        let mut names = vec![lookup_name(address, port)];
        if address != name {
            names.push(lookup_name(name, port));
        }
        for k in found.into_iter().filter(|k| !k.revoked) {
            out.push(NodeKey {
                node: name.to_string(),
                names: names.clone(),
                key: k.key,
                source: (k.file, k.line),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::members::parse_members;

    const RSA1: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQClrejjEZKms5ETEzlyD2hoG6QqPzIlOaFwKYfdmLNkUcqWg+OEV6GRTqDE/Nq6hUSKl/Q6sgBLV9VxPQ6iym2FvUc6taEveqKckEHJb/UyI2OVSn98dUBDA+EUoZr2DaOlLk52qYNmjlhYmZzKxwTU0sFZt6EbhceTWdH2DkCGeGHgldOLSwjtQVxDrQqvCUJBJrvfQMmRWPEBqS8ZJfApybLyFBf7RF7/2ElYzHRpGehIvJOEabLI+DfEeYEHcId4LDhaItU0PRQJ+/XFXR+xspnJChxfw8tbmH0bGsMi9LL7lBIQsvbTHAW5e4fey0sPlUwx8wYjqGCUJmg7+kLv";
    const RSA2: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQDYepJGjQkoubwJ73PSC4b1PcJiPh/8L5eM6jiLqy1I/38/gYII64+iG7DpIJHqSYqJ8AqEgz9cBIf8ks9y2yyCjUMKTDAq132tsBxwDNZBaca6VMIsN0ROPRmL/uPvio7dikSJNbV04BNLhGkNl+3UBFLXkJulNBfq+u65r08Y4j/bRMewrSPDXsjJlsPtCgZrffkGmpFUYCA2akQWHL8YwJ/wIt3qwNeP2TnNMKcYV7BvW0pcY0SeERpZ2g3wieuIP0QDrQtDsLfElyibhUUqSgYyM5/6mkslcr9TE3+IyPXgmX5ItuO31br2uWbXWwVMXg8MipnOzW5vpahCvMU9";

    const MEMBERS: &str = r#"{"nodename": "pve1", "version": 3,
"cluster": { "name": "c", "version": 2, "nodes": 2, "quorate": 1 },
"nodelist": { "pve1": { "id": 1, "online": 1, "ip": "10.0.0.1"},
              "pve2": { "id": 2, "online": 1, "ip": "10.0.0.2"} } }"#;

    fn files(entries: &[(&str, String)]) -> ClusterFiles {
        entries
            .iter()
            .map(|(p, t)| (p.to_string(), t.clone()))
            .collect()
    }

    #[test]
    fn shared_file_entries_by_name_and_address() {
        // As ssh_merge_known_hosts writes them: name line, then address line, per node.
        let m = parse_members(MEMBERS).unwrap();
        let shared = format!("pve1 {RSA1}\n10.0.0.1 {RSA1}\npve2 {RSA2}\n10.0.0.2 {RSA2}\n");
        let keys = node_keys(&m, &files(&[(CLUSTER_KNOWN_HOSTS, shared)]), None);
        let got: Vec<(&str, Vec<String>, usize)> = keys
            .iter()
            .map(|k| (k.node.as_str(), k.names.clone(), k.source.1))
            .collect();
        assert_eq!(
            got,
            vec![
                ("pve1", vec!["10.0.0.1".into(), "pve1".into()], 1),
                ("pve2", vec!["10.0.0.2".into(), "pve2".into()], 3),
            ]
        );
        assert_eq!(keys[1].key, PublicKey::from_openssh(RSA2).unwrap());
    }

    #[test]
    fn a_nodes_own_file_wins_over_a_stale_shared_entry() {
        let m = parse_members(MEMBERS).unwrap();
        // pve2 reinstalled: the shared file still has its old key; its own file (no final
        // newline, as file_set_contents writes it) has the new one.
        let shared = format!("pve1 {RSA1}\npve2 {RSA1}\n");
        let keys = node_keys(
            &m,
            &files(&[
                (CLUSTER_KNOWN_HOSTS, shared),
                (
                    "/etc/pve/nodes/pve2/ssh_known_hosts",
                    format!("pve2 {RSA2}"),
                ),
            ]),
            Some(2222),
        );
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[1].key, PublicKey::from_openssh(RSA2).unwrap());
        assert_eq!(
            keys[1].source,
            (PathBuf::from("/etc/pve/nodes/pve2/ssh_known_hosts"), 1)
        );
        assert_eq!(keys[1].names, ["[10.0.0.2]:2222", "[pve2]:2222"]);
    }

    #[test]
    fn a_node_without_a_key_is_left_out() {
        let m = parse_members(MEMBERS).unwrap();
        let keys = node_keys(
            &m,
            &files(&[(CLUSTER_KNOWN_HOSTS, format!("pve1 {RSA1}\n"))]),
            None,
        );
        assert_eq!(
            keys.iter().map(|k| k.node.as_str()).collect::<Vec<_>>(),
            ["pve1"]
        );
        assert!(node_keys(&m, &ClusterFiles::new(), None).is_empty());
    }
}
