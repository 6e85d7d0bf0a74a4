//! Discovery from a Proxmox node's `/etc/pve/.members` (pmxcfs's JSON view of the cluster).
//!
//! Format (DOMAIN.md §5): `{"nodename": "pve1", "version": 5, "cluster": {"name": "c", "version": 3,
//! "nodes": 3, "quorate": 1}, "nodelist": {"pve1": {"id": 1, "online": 1, "ip": "10.0.0.1"}, ...}}`.
//! A standalone node writes only `nodename` and `version` (pve-cluster src/pmxcfs/status.c,
//! `cfs_create_memberlist_msg`), and a node's `ip` is absent until pmxcfs has learnt it.
//!
//! pmxcfs prints the strings without escaping them, and the file comes from the node asked: it is
//! untrusted input. [`parse_members`] validates every string in it (see [`MembersError`]) before
//! anything of it can reach an inventory.

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

/// A `.members` document pvefleet will not use, and why.
///
/// The file is written by pmxcfs on the node asked, so it is untrusted input: every string in it
/// (node names, addresses, the cluster name) is validated before any of it reaches an inventory,
/// and a bad entry is named in the error with its value escaped (it may hold control characters).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembersError {
    /// Nothing in the file.
    #[error("/etc/pve/.members: empty (is pmxcfs running and /etc/pve mounted?)")]
    Empty,
    /// Not the JSON pmxcfs writes.
    #[error("/etc/pve/.members: not the expected JSON: {0}")]
    Json(String),
    /// An entry a real Proxmox VE node could not have written.
    #[error("/etc/pve/.members: {entry} {value}: {expected}")]
    Invalid {
        /// Which entry (`node name`, `address of node pve2`, `cluster name`, `nodename`).
        entry: String,
        /// Its value, escaped and shortened for display.
        value: String,
        /// What it should have been.
        expected: &'static str,
    },
    /// A standalone node: pmxcfs lists no nodes outside a cluster.
    #[error(
        "/etc/pve/.members: lists no cluster nodes ({nodename} is a standalone node, not in a \
         cluster); write its inventory by hand: [nodes.{nodename}] address = \"...\""
    )]
    NoNodes {
        /// The node that wrote the file.
        nodename: String,
    },
    /// The inventory rendered from a valid document did not load (a bug).
    #[error("/etc/pve/.members: the inventory made from it does not load: {0}")]
    Inventory(#[from] SourceError),
}

/// What a node name must look like: pve-common's `pve-node` format (`pve_verify_node_name` in
/// src/PVE/JSONSchema.pm: `^([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)$`), which is a DNS label;
/// the label's 63-character limit applies because the node name is the host name.
const NODE_NAME_RULE: &str =
    "a Proxmox node name is a DNS label: letters, digits and `-`, not first or last, at most 63 characters";

/// pve-cluster's `pvecm create` takes the cluster name in the same `pve-node` format
/// (src/PVE/API2/ClusterConfig.pm, `clustername`, with `maxLength => 15`; older clusters may be
/// longer, so only the label rule is enforced).
const CLUSTER_NAME_RULE: &str =
    "a cluster name is a DNS label: letters, digits and `-`, not first or last, at most 63 characters";

const ADDRESS_RULE: &str =
    "expected an IP address or a host name (DNS labels of letters, digits and `-`, joined by `.`)";

/// Parse the JSON of `/etc/pve/.members` and validate every string in it.
pub fn parse_members(json: &str) -> Result<Members, MembersError> {
    if json.trim().is_empty() {
        return Err(MembersError::Empty);
    }
    let members: Members =
        serde_json::from_str(json).map_err(|e| MembersError::Json(escape(&e.to_string())))?;
    members.validate()?;
    Ok(members)
}

/// A DNS label (RFC 1123): 1 to 63 letters, digits and `-`, not starting or ending with `-`.
fn is_dns_label(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// An IP address (v4 or v6), or a host name as pve-common's `dns-name` format allows it (DNS
/// labels joined by dots), at most 253 characters.
fn is_address(s: &str) -> bool {
    s.parse::<std::net::IpAddr>().is_ok() || (s.len() <= 253 && s.split('.').all(is_dns_label))
}

/// `s` for an error message: quoted, control and invisible characters escaped (Rust's debug
/// escaping), cut to 64 characters.
fn shown(s: &str) -> String {
    const MAX: usize = 64;
    if s.chars().count() > MAX {
        let cut: String = s.chars().take(MAX).collect();
        format!("{cut:?}... ({} characters)", s.chars().count())
    } else {
        format!("{s:?}")
    }
}

/// Escape the characters Rust's debug formatting would (control, format and other invisible
/// characters), except quotes and backslashes: for messages that quote remote text themselves,
/// and for the one-line TOML comment naming the source (a line break would end the comment).
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '"' | '\'' | '\\') || c.escape_debug().len() == 1 {
            out.push(c);
        } else {
            out.extend(c.escape_debug());
        }
    }
    out
}

fn invalid(entry: String, value: &str, expected: &'static str) -> MembersError {
    MembersError::Invalid {
        entry,
        value: shown(value),
        expected,
    }
}

impl Members {
    /// Check every string of the document: node names, addresses, the cluster name and the
    /// writer's own name. The first bad entry is the error.
    pub fn validate(&self) -> Result<(), MembersError> {
        if !is_dns_label(&self.nodename) {
            return Err(invalid("nodename".into(), &self.nodename, NODE_NAME_RULE));
        }
        if let Some(c) = &self.cluster {
            if !is_dns_label(&c.name) {
                return Err(invalid("cluster name".into(), &c.name, CLUSTER_NAME_RULE));
            }
        }
        for (name, m) in &self.nodelist {
            if !is_dns_label(name) {
                return Err(invalid("node name".into(), name, NODE_NAME_RULE));
            }
            if let Some(ip) = &m.ip {
                if !is_address(ip) {
                    return Err(invalid(format!("address of node {name}"), ip, ADDRESS_RULE));
                }
            }
        }
        Ok(())
    }

    /// Nodes in corosync id order, with the address to reach each (its `ip`, else its name).
    pub fn nodes_by_id(&self) -> Vec<(&str, &MemberNode)> {
        let mut v: Vec<_> = self.nodelist.iter().map(|(n, m)| (n.as_str(), m)).collect();
        v.sort_by_key(|(n, m)| (m.id, n.to_string()));
        v
    }

    /// Render an inventory file for these nodes. `defaults` is written as the `[defaults]` body
    /// (the caller's own, TOML-encoded, settings). The document is validated first, so nothing
    /// from the node can add a key: names are DNS labels, addresses IPs or host names, and they
    /// are written as TOML keys and strings all the same.
    pub fn to_inventory_toml(&self, source: &str, defaults: &str) -> Result<String, MembersError> {
        self.validate()?;
        if self.nodelist.is_empty() {
            return Err(MembersError::NoNodes {
                nodename: self.nodename.clone(),
            });
        }
        let mut out = String::new();
        let cluster = self
            .cluster
            .as_ref()
            .map_or("(standalone)", |c| c.name.as_str());
        let _ = writeln!(
            out,
            "# Discovered by `pvefleet inventory discover` from {}: cluster {}.",
            escape(source),
            escape(cluster)
        );
        let _ = writeln!(
            out,
            "# Review before use. Format: see inventory/example.toml.\n"
        );
        let _ = writeln!(out, "[defaults]\n{defaults}");
        out.push_str(&self.node_tables()?);
        Ok(out)
    }

    /// One `[nodes.NAME]` table per member, with its cluster address, corosync id and cluster
    /// name (`inventory discover --append` adds these to an existing inventory).
    pub fn node_tables(&self) -> Result<String, MembersError> {
        self.validate()?;
        let mut out = String::new();
        for (name, m) in self.nodes_by_id() {
            let _ = writeln!(out, "[nodes.{}]", toml_key(name));
            let addr = m.ip.as_deref().unwrap_or(name);
            let _ = writeln!(out, "address = {}", toml_string(addr));
            if let Some(c) = &self.cluster {
                let _ = writeln!(out, "cluster = {}", toml_string(&c.name));
            }
            let _ = writeln!(out, "vars = {{ corosync_id = {} }}\n", m.id);
        }
        Ok(out)
    }

    /// A resolved inventory straight from this view (used when pvefleet runs on a Proxmox node
    /// without an inventory file).
    pub fn to_inventory(&self, source: &str) -> Result<Inventory, MembersError> {
        let text = self.to_inventory_toml(source, "user = \"root\"\n")?;
        Ok(Inventory::parse(&text, Path::new(source))?)
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
    fn a_standalone_node_lists_no_nodes_and_is_refused_clearly() {
        // What pmxcfs writes outside a cluster (status.c): nodename and version only.
        let m = parse_members("{\n\"nodename\": \"solo\",\n\"version\": 1\n}\n").unwrap();
        assert!(m.cluster.is_none() && m.nodelist.is_empty());
        let e = m.to_inventory("/etc/pve/.members").unwrap_err();
        assert_eq!(
            e,
            MembersError::NoNodes {
                nodename: "solo".into()
            }
        );
        assert!(e.to_string().contains("[nodes.solo]"), "{e}");
    }

    #[test]
    fn empty_and_malformed_documents_are_errors() {
        assert_eq!(parse_members(" \n").unwrap_err(), MembersError::Empty);
        let e = parse_members("{nodename").unwrap_err();
        assert!(matches!(e, MembersError::Json(_)), "{e}");
    }

    /// A `.members` document with these strings, JSON-encoded the way a tampered file would be.
    fn doc(nodename: &str, cluster: &str, node: &str, ip: &str) -> String {
        serde_json::json!({
            "nodename": nodename,
            "version": 5,
            "cluster": { "name": cluster, "version": 3, "nodes": 2, "quorate": 1 },
            "nodelist": {
                "pve1": { "id": 1, "online": 1, "ip": "10.0.0.1" },
                node: { "id": 2, "online": 1, "ip": ip },
            }
        })
        .to_string()
    }

    /// Strings that would add keys, tables or terminal escapes if they reached the TOML or the
    /// terminal unchecked.
    const HOSTILE: &[&str] = &[
        "pve2\n[defaults]\nhost_key_policy = \"insecure\"",
        "pve2\"\nhost_key_policy = \"insecure",
        "pve2]",
        "pve2 = 1",
        "a=b",
        "pve2\u{1b}]0;title\u{7}",
        "pve2\r",
        "pve\u{202e}2",
        "pve\u{0}2",
        "",
        "-oProxyCommand=sh",
        "pve 2",
        "pve2.",
    ];

    fn assert_refused(json: &str, entry: &str, value: &str) {
        let e = parse_members(json).unwrap_err();
        let MembersError::Invalid {
            entry: got_entry,
            value: shown_value,
            ..
        } = &e
        else {
            panic!("{value:?}: expected an invalid entry, got {e}");
        };
        assert_eq!(got_entry, entry, "{value:?}");
        assert_eq!(
            shown_value,
            &format!("{value:?}"),
            "the value is named, escaped"
        );
        let msg = e.to_string();
        assert!(
            !msg.chars().any(|c| c.is_control() || c == '\u{202e}'),
            "raw control characters in {msg:?}"
        );
    }

    #[test]
    fn hostile_node_names_are_refused_naming_the_entry() {
        for bad in HOSTILE {
            assert_refused(&doc("pve1", "homelab", bad, "10.0.0.2"), "node name", bad);
        }
        assert_refused(
            &doc("pve1", "homelab", &"p".repeat(64), "10.0.0.2"),
            "node name",
            &"p".repeat(64),
        );
        assert!(parse_members(&doc("pve1", "homelab", &"p".repeat(63), "10.0.0.2")).is_ok());
        let e = parse_members(&doc("pve1", "homelab", &"p".repeat(5000), "10.0.0.2")).unwrap_err();
        assert!(e.to_string().contains("... (5000 characters)"), "{e}");
        assert!(e.to_string().len() < 400, "a huge value is shortened: {e}");
    }

    #[test]
    fn hostile_addresses_are_refused_naming_the_node() {
        for bad in HOSTILE {
            if bad.is_empty() {
                continue; // covered below: "" is not an address either
            }
            assert_refused(
                &doc("pve1", "homelab", "pve2", bad),
                "address of node pve2",
                bad,
            );
        }
        for bad in ["", "10.0.0.2:22", "[::1]", "10.0.0.2/24", "host_name"] {
            assert_refused(
                &doc("pve1", "homelab", "pve2", bad),
                "address of node pve2",
                bad,
            );
        }
    }

    #[test]
    fn hostile_cluster_names_and_nodenames_are_refused() {
        for bad in HOSTILE {
            assert_refused(&doc("pve1", bad, "pve2", "10.0.0.2"), "cluster name", bad);
            assert_refused(&doc(bad, "homelab", "pve2", "10.0.0.2"), "nodename", bad);
        }
    }

    #[test]
    fn json_errors_never_carry_raw_control_characters() {
        let e = parse_members("{\"nodename\": \"pve1\", \"version\": \"\u{1b}[2J\"}").unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, MembersError::Json(_)), "{msg}");
        assert!(!msg.contains('\u{1b}'), "{msg:?}");
    }

    #[test]
    fn addresses_may_be_ipv4_ipv6_or_host_names() {
        let json = doc("pve1", "home-lab", "PVE-2", "fe80::2");
        let inv = parse_members(&json)
            .unwrap()
            .to_inventory("/etc/pve/.members")
            .unwrap();
        assert_eq!(inv.names(), ["pve1", "PVE-2"]);
        assert_eq!(inv.nodes[1].address, "fe80::2");
        let json = doc("pve1", "c", "pve2", "pve2.example.org");
        let inv = parse_members(&json)
            .unwrap()
            .to_inventory("/etc/pve/.members")
            .unwrap();
        assert_eq!(inv.nodes[1].address, "pve2.example.org");
    }

    #[test]
    fn rendering_validates_even_a_document_built_in_code() {
        let mut m = parse_members(THREE).unwrap();
        m.cluster.as_mut().unwrap().name = "c\nhost_key_policy = \"insecure\"".into();
        let e = m.to_inventory_toml("x", "").unwrap_err();
        assert!(
            matches!(e, MembersError::Invalid { ref entry, .. } if entry == "cluster name"),
            "{e}"
        );
    }

    #[test]
    fn the_source_in_the_header_comment_cannot_break_out_of_it() {
        let m = parse_members(THREE).unwrap();
        let text = m
            .to_inventory_toml("evil\n[defaults]\nhost_key_policy = \"insecure\"", "")
            .unwrap();
        assert!(text.starts_with("# Discovered by `pvefleet inventory discover` from evil\\n[defaults]\\nhost_key_policy = \"insecure\": cluster homelab.\n"), "{text}");
        let inv = Inventory::parse(&text, Path::new("d.toml")).unwrap();
        assert!(inv
            .nodes
            .iter()
            .all(|n| n.host_key_policy == crate::ssh::HostKeyPolicy::default()));
    }
}
