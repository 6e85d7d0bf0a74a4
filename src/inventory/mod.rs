//! The node inventory: file model, defaults, groups, vars, and resolution into [`Node`]s.
//!
//! An inventory is a TOML file (`inventory/example.toml` documents every key). It is parsed once into
//! typed structs; every error names the file, line and column and says what was expected. Resolution
//! merges `[defaults]`, group vars and per-node overrides into one [`Node`] per entry, in file order
//! (which is also the order rolling playbooks use). Target selection (`--limit`) lives in [`limit`];
//! discovery from a Proxmox node's `/etc/pve/.members` in [`members`].

pub mod host_keys;
pub mod limit;
pub mod members;
mod source;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::ssh::{ConnectSpec, HostKeyPolicy};
pub use source::{Location, SourceError};

/// Where the default inventory lives, relative to the working directory.
pub const DEFAULT_INVENTORY: &str = "inventory/cluster.toml";

/// Free-form variables (inventory `vars`), as TOML values.
pub type Vars = BTreeMap<String, toml::Value>;

/// A duration written the human way in TOML (`"5s"`, `"2m"`, `"1h30m"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text)
            .map(HumanDuration)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "expected a duration such as \"5s\", \"2m\" or \"1h30m\", found {text:?} ({e})"
                ))
            })
    }
}

/// A connect or command timeout: a [`HumanDuration`] above zero. A zero deadline would fail every
/// connection or command at once, which is never what an operator meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Timeout(Duration);

impl<'de> Deserialize<'de> for Timeout {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let HumanDuration(duration) = HumanDuration::deserialize(d)?;
        if duration.is_zero() {
            return Err(serde::de::Error::custom(
                "a timeout of 0 would fail every connection or command at once; expected a \
                 duration above zero such as \"10s\" or \"5m\"",
            ));
        }
        Ok(Timeout(duration))
    }
}

/// One path or a list of paths.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// `ssh_config = "path"` or `ssh_config = false`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum SshConfigSetting {
    Enabled(bool),
    Path(String),
}

/// The settings of `[defaults]` and of each `[nodes.X]` (where they override the defaults).
/// One struct for both so that unknown keys keep their location (serde's `flatten` loses it).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeEntry {
    address: Option<Spanned<String>>,
    #[serde(default)]
    groups: Vec<Spanned<String>>,
    #[serde(default)]
    vars: Vars,
    user: Option<String>,
    port: Option<u16>,
    identity_files: Option<Vec<String>>,
    known_hosts: Option<OneOrMany>,
    host_key_policy: Option<HostKeyPolicy>,
    connect_timeout: Option<Timeout>,
    command_timeout: Option<Timeout>,
    keepalive: Option<HumanDuration>,
    jump: Option<String>,
    #[serde(rename = "become")]
    become_root: Option<bool>,
    ssh_config: Option<SshConfigSetting>,
    /// The Proxmox VE cluster the node belongs to (several clusters in one inventory).
    cluster: Option<Spanned<String>>,
}

impl NodeEntry {
    /// Fill every unset connection setting of `self` from `base`.
    fn or(self, base: &NodeEntry) -> NodeEntry {
        NodeEntry {
            address: self.address,
            groups: self.groups,
            vars: self.vars,
            user: self.user.or_else(|| base.user.clone()),
            port: self.port.or(base.port),
            identity_files: self.identity_files.or_else(|| base.identity_files.clone()),
            known_hosts: self.known_hosts.or_else(|| base.known_hosts.clone()),
            host_key_policy: self.host_key_policy.or(base.host_key_policy),
            connect_timeout: self.connect_timeout.or(base.connect_timeout),
            command_timeout: self.command_timeout.or(base.command_timeout),
            keepalive: self.keepalive.or(base.keepalive),
            jump: self.jump.or_else(|| base.jump.clone()),
            become_root: self.become_root.or(base.become_root),
            ssh_config: self.ssh_config.or_else(|| base.ssh_config.clone()),
            cluster: self.cluster.or_else(|| base.cluster.clone()),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupEntry {
    #[serde(default)]
    vars: Vars,
    /// Members listed on the group side, in addition to each node's own `groups`.
    #[serde(default)]
    nodes: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InventoryFile {
    /// `notify = [URL, ...]`: where `run` sends its notifications (with any `--notify`).
    #[serde(default)]
    notify: Vec<String>,
    #[serde(default)]
    defaults: NodeEntry,
    #[serde(default)]
    nodes: IndexMap<Spanned<String>, NodeEntry>,
    #[serde(default)]
    groups: IndexMap<String, GroupEntry>,
}

/// One fully resolved node.
#[derive(Debug, Clone, Serialize)]
pub struct Node {
    /// The node's name (the inventory key; on Proxmox, the node name).
    pub name: String,
    /// Address or host name to connect to.
    pub address: String,
    /// Port, if set in the inventory (else ssh_config, else 22).
    pub port: Option<u16>,
    /// Login user, if set (else ssh_config, else root).
    pub user: Option<String>,
    /// Identity files (absolute).
    pub identity_files: Vec<PathBuf>,
    /// known_hosts files (absolute), checked before `~/.ssh/known_hosts`.
    pub known_hosts: Vec<PathBuf>,
    /// Host-key policy.
    pub host_key_policy: HostKeyPolicy,
    /// Deadline for connect + key exchange + auth.
    #[serde(with = "duration_secs")]
    pub connect_timeout: Duration,
    /// Deadline for each command.
    #[serde(with = "duration_secs")]
    pub command_timeout: Duration,
    /// Keepalive interval.
    #[serde(with = "duration_secs")]
    pub keepalive: Duration,
    /// Jump host, `[user@]host[:port]`.
    pub jump: Option<String>,
    /// Run commands through `sudo -n`.
    pub become_root: bool,
    /// ssh_config file to consult (`None`: do not read one).
    pub ssh_config: Option<PathBuf>,
    /// Groups, in the order declared.
    pub groups: Vec<String>,
    /// The Proxmox VE cluster the node belongs to (`cluster = "NAME"`), when the inventory says;
    /// nodes without one form one unnamed cluster.
    pub cluster: Option<String>,
    /// Variables: inventory-wide, then group vars (in group declaration order), then node vars.
    pub vars: Vars,
}

mod duration_secs {
    use serde::Serializer;
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

/// A resolved inventory.
#[derive(Debug, Clone, Serialize)]
pub struct Inventory {
    /// Where it came from (a file path, or a description such as `/etc/pve/.members`).
    pub source: String,
    /// Nodes in inventory order.
    pub nodes: Vec<Node>,
    /// Declared groups, in declaration order, with their members.
    pub groups: IndexMap<String, Vec<String>>,
    /// Where `run` sends its notifications (top-level `notify = [...]`; never shown: URLs may
    /// hold secrets).
    #[serde(skip)]
    pub notify: Vec<String>,
}

/// Connection defaults when neither inventory nor ssh_config says otherwise.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default per-command deadline.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(300);
/// Default keepalive interval.
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(15);

impl Inventory {
    /// Read and resolve an inventory file.
    pub fn load(path: &Path) -> Result<Inventory, SourceError> {
        let text = std::fs::read_to_string(path).map_err(|e| SourceError::io(path, e))?;
        Inventory::parse(&text, path)
    }

    /// Parse inventory text; `path` is used for messages and to resolve relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Inventory, SourceError> {
        let file: InventoryFile =
            toml::from_str(text).map_err(|e| SourceError::from_toml(path, text, &e))?;
        let base_dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        resolve(file, text, path, &base_dir)
    }

    /// Names of all nodes, in order.
    pub fn names(&self) -> Vec<&str> {
        self.nodes.iter().map(|n| n.name.as_str()).collect()
    }

    /// Find a node by name.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }
}

fn is_valid_node_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
}

fn resolve(
    file: InventoryFile,
    text: &str,
    path: &Path,
    base_dir: &Path,
) -> Result<Inventory, SourceError> {
    let err = |span: std::ops::Range<usize>, msg: String| SourceError::at(path, text, span, msg);

    if let Some(a) = &file.defaults.address {
        return Err(err(
            a.span(),
            "`address` belongs in a [nodes.NAME] table, not in [defaults]".into(),
        ));
    }
    if let Some(g) = file.defaults.groups.first() {
        return Err(err(
            g.span(),
            "`groups` belongs in a [nodes.NAME] table (or use [groups.NAME] nodes = [...])".into(),
        ));
    }

    // Group membership from the group side first, validated against node names.
    let mut groups: IndexMap<String, Vec<String>> = file
        .groups
        .keys()
        .map(|g| (g.clone(), Vec::new()))
        .collect();
    for (gname, g) in &file.groups {
        for member in &g.nodes {
            if !file.nodes.keys().any(|k| k.get_ref() == member.get_ref()) {
                return Err(err(
                    member.span(),
                    format!(
                        "group `{gname}` lists unknown node `{}`; expected one of: {}",
                        member.get_ref(),
                        list_or_none(file.nodes.keys().map(|k| k.get_ref().as_str()))
                    ),
                ));
            }
        }
    }

    let mut nodes = Vec::with_capacity(file.nodes.len());
    for (name, entry) in file.nodes {
        let span = name.span();
        let name = name.into_inner();
        if !is_valid_node_name(&name) {
            return Err(err(
                span,
                format!("invalid node name `{name}`: expected letters, digits, `-`, `.` or `_`, starting with a letter or digit"),
            ));
        }
        let mut node_groups: Vec<String> = Vec::new();
        for g in &entry.groups {
            if !file.groups.contains_key(g.get_ref()) {
                return Err(err(
                    g.span(),
                    format!(
                        "unknown group `{}`; declared groups: {} (declare it with a [groups.{}] table)",
                        g.get_ref(),
                        list_or_none(file.groups.keys().map(String::as_str)),
                        g.get_ref()
                    ),
                ));
            }
            if !node_groups.contains(g.get_ref()) {
                node_groups.push(g.get_ref().clone());
            }
        }
        for (gname, g) in &file.groups {
            if g.nodes.iter().any(|m| m.get_ref() == &name) && !node_groups.contains(gname) {
                node_groups.push(gname.clone());
            }
        }
        for g in &node_groups {
            groups
                .get_mut(g)
                .expect("validated above")
                .push(name.clone());
        }

        let mut vars = file.defaults.vars.clone();
        for (gname, g) in &file.groups {
            if node_groups.contains(gname) {
                vars.extend(g.vars.clone());
            }
        }
        let conn = entry.or(&file.defaults);
        vars.extend(conn.vars);
        let address = conn
            .address
            .map_or_else(|| name.clone(), Spanned::into_inner);
        let abs = |p: &str| absolutise(p, base_dir);
        let ssh_config = match conn.ssh_config {
            Some(SshConfigSetting::Enabled(false)) => None,
            Some(SshConfigSetting::Path(p)) => Some(abs(&p)),
            Some(SshConfigSetting::Enabled(true)) | None => {
                home_dir().map(|h| h.join(".ssh/config"))
            }
        };
        nodes.push(Node {
            name,
            address,
            port: conn.port,
            user: conn.user,
            identity_files: conn
                .identity_files
                .unwrap_or_default()
                .iter()
                .map(|p| abs(p))
                .collect(),
            known_hosts: conn
                .known_hosts
                .map(OneOrMany::into_vec)
                .unwrap_or_default()
                .iter()
                .map(|p| abs(p))
                .collect(),
            host_key_policy: conn.host_key_policy.unwrap_or_default(),
            connect_timeout: conn
                .connect_timeout
                .map_or(DEFAULT_CONNECT_TIMEOUT, |d| d.0),
            command_timeout: conn
                .command_timeout
                .map_or(DEFAULT_COMMAND_TIMEOUT, |d| d.0),
            keepalive: conn.keepalive.map_or(DEFAULT_KEEPALIVE, |d| d.0),
            jump: conn.jump,
            become_root: conn.become_root.unwrap_or(false),
            ssh_config,
            groups: node_groups,
            cluster: conn.cluster.as_ref().map(|c| c.get_ref().clone()),
            vars,
        });
    }
    if nodes.is_empty() {
        // Running on no node "succeeds" and hides the mistake (a wrong file, a table misspelt).
        return Err(SourceError {
            file: path.to_path_buf(),
            location: None,
            message: "no nodes: an inventory needs at least one [nodes.NAME] table \
                      (see inventory/example.toml)"
                .into(),
        });
    }
    Ok(Inventory {
        source: path.display().to_string(),
        nodes,
        groups,
        notify: file.notify,
    })
}

fn list_or_none<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let v: Vec<&str> = items.collect();
    if v.is_empty() {
        "(none)".to_string()
    } else {
        v.join(", ")
    }
}

pub use crate::paths::home_dir;

/// Expand `~/` and make a relative path relative to `base_dir`.
pub fn absolutise(p: &str, base_dir: &Path) -> PathBuf {
    if let Some(rest) = p.strip_prefix("~/") {
        if let Some(home) = home_dir() {
            return home.join(rest);
        }
    }
    let path = Path::new(p);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base_dir.join(path)
    }
}

pub use crate::ssh::parse_destination as parse_jump;

/// The system's known_hosts files, as OpenSSH's default `GlobalKnownHostsFile`.
fn global_known_hosts() -> Vec<PathBuf> {
    crate::ssh::known_hosts::GLOBAL_FILES
        .iter()
        .map(PathBuf::from)
        .collect()
}

impl Node {
    /// The transport's view of this node.
    pub fn connect_spec(&self) -> ConnectSpec {
        let mut known_hosts = self.known_hosts.clone();
        if let Some(home) = home_dir() {
            let user_kh = home.join(".ssh/known_hosts");
            if !known_hosts.contains(&user_kh) {
                known_hosts.push(user_kh);
            }
        }
        let jump = self.jump.as_deref().map(|j| {
            let (user, host, port) = parse_jump(j);
            Box::new(ConnectSpec {
                name: host.clone(),
                host,
                port,
                user,
                identity_files: self.identity_files.clone(),
                known_hosts: known_hosts.clone(),
                global_known_hosts: global_known_hosts(),
                host_key_policy: self.host_key_policy,
                jump: None,
                connect_timeout: self.connect_timeout,
                keepalive: Some(self.keepalive),
                use_agent: true,
                ssh_config: self.ssh_config.clone(),
                become_root: false,
                agent_socket: None,
            })
        });
        ConnectSpec {
            name: self.name.clone(),
            host: self.address.clone(),
            port: self.port,
            user: self.user.clone(),
            identity_files: self.identity_files.clone(),
            known_hosts,
            global_known_hosts: global_known_hosts(),
            host_key_policy: self.host_key_policy,
            jump,
            connect_timeout: self.connect_timeout,
            keepalive: Some(self.keepalive),
            use_agent: true,
            ssh_config: self.ssh_config.clone(),
            become_root: self.become_root,
            agent_socket: None,
        }
    }
}

/// A node's Proxmox VE name from its host name (`uname -n`, `hostname`): up to the first dot,
/// as pve-common's PVE::INotify nodename takes it. The inventory's table keys must be these
/// names wherever a name is handed to Proxmox (HA, guest moves, Ceph's CRUSH host).
pub fn proxmox_node_name(hostname: &str) -> &str {
    let h = hostname.trim();
    h.split('.').next().unwrap_or(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Inventory, SourceError> {
        Inventory::parse(text, Path::new("/inv/cluster.toml"))
    }

    #[test]
    fn top_level_notify_is_read_and_never_serialised() {
        let inv = parse(
            "notify = [\"http://u:secret@h/x\", \"mailto:ops@example.org\"]\n\
             [nodes.pve1]\naddress = \"10.0.0.1\"\n",
        )
        .unwrap();
        assert_eq!(
            inv.notify,
            ["http://u:secret@h/x", "mailto:ops@example.org"]
        );
        assert!(!serde_json::to_string(&inv).unwrap().contains("secret"));
        assert!(parse("[nodes.pve1]\naddress = \"10.0.0.1\"\n")
            .unwrap()
            .notify
            .is_empty());
    }

    #[test]
    fn defaults_groups_and_overrides_resolve() {
        let inv = parse(
            r#"
[defaults]
user = "admin"
identity_files = ["keys/id"]
known_hosts = "known_hosts"
connect_timeout = "3s"
ssh_config = false

vars = { site = "lab" }

[nodes.pve1]
address = "10.0.0.1"
groups = ["gpu"]
vars = { role = "first" }

[nodes.pve2]
address = "10.0.0.2"
user = "root"
port = 2222
command_timeout = "2m"

[groups.gpu]
vars = { gpu_mode = "passthrough", role = "group" }
"#,
        )
        .unwrap();
        assert_eq!(inv.names(), vec!["pve1", "pve2"]);
        let a = &inv.nodes[0];
        assert_eq!(a.user.as_deref(), Some("admin"));
        assert_eq!(a.identity_files, vec![PathBuf::from("/inv/keys/id")]);
        assert_eq!(a.known_hosts, vec![PathBuf::from("/inv/known_hosts")]);
        assert_eq!(a.connect_timeout, Duration::from_secs(3));
        assert_eq!(a.command_timeout, DEFAULT_COMMAND_TIMEOUT);
        assert_eq!(a.groups, vec!["gpu"]);
        assert_eq!(
            a.vars["role"].as_str(),
            Some("first"),
            "node vars win over group vars"
        );
        assert_eq!(a.vars["gpu_mode"].as_str(), Some("passthrough"));
        assert_eq!(a.vars["site"].as_str(), Some("lab"));
        assert!(a.ssh_config.is_none());
        let b = &inv.nodes[1];
        assert_eq!(b.user.as_deref(), Some("root"));
        assert_eq!(b.port, Some(2222));
        assert_eq!(b.command_timeout, Duration::from_secs(120));
        assert_eq!(inv.groups["gpu"], vec!["pve1"]);
    }

    #[test]
    fn group_side_membership_counts() {
        let inv = parse(
            r#"
[nodes.a]
[nodes.b]
[groups.g]
nodes = ["b"]
"#,
        )
        .unwrap();
        assert_eq!(inv.groups["g"], vec!["b"]);
        assert_eq!(inv.nodes[1].groups, vec!["g"]);
        assert_eq!(inv.nodes[0].address, "a", "address defaults to the name");
    }

    #[test]
    fn unknown_key_is_located() {
        let e = parse("[nodes.pve1]\naddress = \"x\"\nadress = \"y\"\n").unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("/inv/cluster.toml:3:1: "), "{msg}");
        assert!(msg.contains("unknown field `adress`"), "{msg}");
        assert!(msg.contains("expected one of"), "{msg}");
    }

    #[test]
    fn duplicate_node_is_located() {
        let e =
            parse("[nodes.pve1]\naddress = \"x\"\n\n[nodes.pve1]\naddress = \"y\"\n").unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("/inv/cluster.toml:4:"), "{msg}");
        assert!(msg.to_lowercase().contains("duplicate"), "{msg}");
    }

    #[test]
    fn bad_duration_is_located() {
        let e = parse("[defaults]\nconnect_timeout = \"5 parsecs\"\n").unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("/inv/cluster.toml:2:19: "), "{msg}");
        assert!(msg.contains("expected a duration"), "{msg}");
    }

    #[test]
    fn a_zero_timeout_is_located() {
        for (key, col) in [("connect_timeout", 19), ("command_timeout", 19)] {
            for zero in ["0s", "0", "0ms"] {
                let e = parse(&format!("[defaults]\n{key} = \"{zero}\"\n[nodes.a]\n")).unwrap_err();
                let msg = e.to_string();
                assert!(
                    msg.starts_with(&format!("/inv/cluster.toml:2:{col}: a timeout of 0")),
                    "{msg}"
                );
            }
            let e = parse(&format!("[nodes.a]\n\n[nodes.b]\n{key} = \"0s\"\n")).unwrap_err();
            assert!(
                e.to_string()
                    .starts_with(&format!("/inv/cluster.toml:4:{col}: a timeout of 0")),
                "{e}"
            );
        }
        let inv = parse("[defaults]\ncommand_timeout = \"1ms\"\n[nodes.a]\n").unwrap();
        assert_eq!(inv.nodes[0].command_timeout, Duration::from_millis(1));
    }

    #[test]
    fn an_inventory_without_nodes_is_an_error() {
        for text in [
            "",
            "[defaults]\nuser = \"root\"\n",
            "[groups.gpu]\n",
            "[nodes]\n",
        ] {
            let e = parse(text).unwrap_err();
            assert_eq!(
                e.to_string(),
                "/inv/cluster.toml: no nodes: an inventory needs at least one [nodes.NAME] table \
                 (see inventory/example.toml)",
                "{text:?}"
            );
        }
    }

    #[test]
    fn unknown_group_is_located() {
        let e = parse("[groups.gpu]\n\n[nodes.pve1]\ngroups = [\"gpu\", \"gpuu\"]\n").unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("/inv/cluster.toml:4:18: "), "{msg}");
        assert!(
            msg.contains("unknown group `gpuu`; declared groups: gpu"),
            "{msg}"
        );
    }

    #[test]
    fn bad_policy_names_the_choices() {
        let e = parse("[defaults]\nhost_key_policy = \"yolo\"\n").unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("/inv/cluster.toml:2:19: "), "{msg}");
        assert!(msg.contains("strict"), "{msg}");
    }

    #[test]
    fn jump_forms_parse() {
        assert_eq!(
            parse_jump("admin@bastion:2200"),
            (Some("admin".into()), "bastion".into(), Some(2200))
        );
        assert_eq!(parse_jump("bastion"), (None, "bastion".into(), None));
        assert_eq!(parse_jump("[::1]:22"), (None, "::1".into(), Some(22)));
    }
}
