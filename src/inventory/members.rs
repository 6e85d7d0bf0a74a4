//! Discovery from a Proxmox node's `/etc/pve/.members` (pmxcfs's JSON view of the cluster).
//!
//! Format (DOMAIN.md §5): `{"nodename": "pve1", "version": 5, "cluster": {"name": "c", "version": 3,
//! "nodes": 3, "quorate": 1}, "nodelist": {"pve1": {"id": 1, "online": 1, "ip": "10.0.0.1"}, ...}}`.
//! A standalone node has no `cluster` and may have a `nodelist` with itself only.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{Inventory, SourceError};

/// `.members`' `cluster` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {
    /// Cluster name.
    pub name: String,
    /// Config version.
    #[serde(default)]
    pub version: u64,
    /// Number of nodes configured.
    #[serde(default)]
    pub nodes: u64,
    /// 1 when quorate.
    #[serde(default)]
    pub quorate: u8,
}

/// One `nodelist` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberNode {
    /// Corosync node id.
    #[serde(default)]
    pub id: u64,
    /// 1 when the node is currently online.
    #[serde(default)]
    pub online: u8,
    /// The node's cluster address.
    #[serde(default)]
    pub ip: Option<String>,
}

/// The parsed `/etc/pve/.members`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Members {
    /// The node that wrote this view (the local node).
    pub nodename: String,
    /// Membership version.
    #[serde(default)]
    pub version: u64,
    /// Cluster info; absent on a standalone node.
    #[serde(default)]
    pub cluster: Option<ClusterInfo>,
    /// Nodes by name (sorted).
    #[serde(default)]
    pub nodelist: BTreeMap<String, MemberNode>,
}

/// `.members` text could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("/etc/pve/.members: {0}")]
pub struct MembersError(pub String);

/// Parse the JSON of `/etc/pve/.members`.
pub fn parse_members(json: &str) -> Result<Members, MembersError> {
    if json.trim().is_empty() {
        return Err(MembersError(
            "empty (is pmxcfs running and /etc/pve mounted?)".into(),
        ));
    }
    serde_json::from_str(json).map_err(|e| MembersError(format!("not the expected JSON: {e}")))
}

impl Members {
    /// Nodes in corosync id order, with the address to reach each (its `ip`, else its name).
    pub fn nodes_by_id(&self) -> Vec<(&str, &MemberNode)> {
        let mut v: Vec<_> = self.nodelist.iter().map(|(n, m)| (n.as_str(), m)).collect();
        v.sort_by_key(|(n, m)| (m.id, n.to_string()));
        v
    }

    /// Render an inventory file for these nodes. `defaults` is written as the `[defaults]` body.
    pub fn to_inventory_toml(&self, source: &str, defaults: &str) -> String {
        let mut out = String::new();
        let cluster = self
            .cluster
            .as_ref()
            .map_or("(standalone)", |c| c.name.as_str());
        let _ = writeln!(
            out,
            "# Discovered by `pvefleet inventory discover` from {source}: cluster {cluster}."
        );
        let _ = writeln!(
            out,
            "# Review before use. Format: see inventory/example.toml.\n"
        );
        let _ = writeln!(out, "[defaults]\n{defaults}");
        for (name, m) in self.nodes_by_id() {
            let _ = writeln!(out, "[nodes.{}]", toml_key(name));
            let addr = m.ip.as_deref().unwrap_or(name);
            let _ = writeln!(out, "address = {}", toml_string(addr));
            let _ = writeln!(out, "vars = {{ corosync_id = {} }}\n", m.id);
        }
        out
    }

    /// A resolved inventory straight from this view (used when pvefleet runs on a Proxmox node
    /// without an inventory file).
    pub fn to_inventory(&self, source: &str) -> Result<Inventory, SourceError> {
        let text = self.to_inventory_toml(source, "user = \"root\"\n");
        Inventory::parse(&text, Path::new(source))
    }
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn toml_key(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        s.to_string()
    } else {
        toml_string(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const THREE: &str = r#"{
"nodename": "pve2",
"version": 7,
"cluster": { "name": "homelab", "version": 3, "nodes": 3, "quorate": 1 },
"nodelist": {
  "pve1": { "id": 1, "online": 1, "ip": "192.168.15.91"},
  "pve3": { "id": 3, "online": 0, "ip": "192.168.15.93"},
  "pve2": { "id": 2, "online": 1, "ip": "192.168.15.92"}
  }
}
"#;

    #[test]
    fn parses_a_cluster_view() {
        let m = parse_members(THREE).unwrap();
        assert_eq!(m.nodename, "pve2");
        assert_eq!(m.cluster.as_ref().unwrap().name, "homelab");
        let order: Vec<_> = m.nodes_by_id().iter().map(|(n, _)| *n).collect();
        assert_eq!(order, ["pve1", "pve2", "pve3"]);
        assert_eq!(m.nodelist["pve3"].online, 0);
    }

    #[test]
    fn renders_a_loadable_inventory() {
        let m = parse_members(THREE).unwrap();
        let inv = m.to_inventory("pve2:/etc/pve/.members").unwrap();
        assert_eq!(inv.names(), ["pve1", "pve2", "pve3"]);
        assert_eq!(inv.nodes[2].address, "192.168.15.93");
        assert_eq!(inv.nodes[0].vars["corosync_id"].as_integer(), Some(1));
    }

    #[test]
    fn standalone_and_bad_input() {
        let m = parse_members(r#"{"nodename":"solo","version":1}"#).unwrap();
        assert!(m.cluster.is_none() && m.nodelist.is_empty());
        assert!(parse_members("").unwrap_err().0.contains("empty"));
        assert!(parse_members("{nodename").unwrap_err().0.contains("JSON"));
    }
}
