//! `pvefleet inventory discover`: an inventory from one node's `/etc/pve/.members`, and the host
//! keys of every node from the cluster's own known_hosts, over one trusted connection.
//!
//! First contact goes as with OpenSSH: an unknown key of the node asked is shown with its SHA256
//! fingerprint and the operator answers yes/no on a terminal (without one it is refused, unless
//! `--host-key-policy accept-new`). The other nodes' keys are then taken from pmxcfs
//! ([`crate::inventory::host_keys`]) and recorded in the known_hosts file the written inventory
//! uses, so that the next command reaches every node with no prompt. A key there that differs
//! from one already recorded is a changed host key: refused, naming both entries, nothing written.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use russh::keys::PublicKey;

use super::{load_inventory, AppError, LOCAL_MEMBERS};
use crate::cli::{DiscoverArgs, GlobalOpts};
use crate::exit;
use crate::inventory::{self, host_keys, members, Inventory, Node, DEFAULT_INVENTORY};
use crate::report;
use crate::ssh::{self, known_hosts, ConnectSpec, HostKeyPolicy, SshError};

/// How the node asked was reached: what the written inventory's `[defaults]` says, so that it
/// reaches the other nodes the same way.
#[derive(Debug, Default)]
struct Reach {
    user: String,
    port: Option<u16>,
    identity_files: Vec<PathBuf>,
    known_hosts: Vec<PathBuf>,
    jump: Option<String>,
    become_root: bool,
    /// `None`: the default (`~/.ssh/config`); `Some(None)`: `ssh_config = false`.
    ssh_config: Option<Option<PathBuf>>,
}

impl Reach {
    /// What reaching `node` of the current inventory takes.
    fn of_node(node: &Node) -> Reach {
        let default_config = inventory::home_dir().map(|h| h.join(".ssh/config"));
        Reach {
            user: node.user.clone().unwrap_or_else(|| "root".into()),
            port: node.port,
            identity_files: node.identity_files.clone(),
            known_hosts: node.known_hosts.clone(),
            jump: node.jump.clone(),
            become_root: node.become_root,
            ssh_config: match &node.ssh_config {
                None => Some(None),
                Some(p) if Some(p) == default_config.as_ref() => None,
                Some(p) => Some(Some(p.clone())),
            },
        }
    }

    /// The `[defaults]` body, TOML-encoded.
    fn to_toml(&self) -> String {
        let s = |v: &str| toml::Value::String(v.to_string()).to_string();
        let list = |v: &[PathBuf]| {
            let items: Vec<String> = v.iter().map(|p| s(&p.display().to_string())).collect();
            format!("[{}]", items.join(", "))
        };
        let mut out = format!("user = {}\n", s(&self.user));
        if let Some(p) = self.port {
            out.push_str(&format!("port = {p}\n"));
        }
        if !self.identity_files.is_empty() {
            out.push_str(&format!(
                "identity_files = {}\n",
                list(&self.identity_files)
            ));
        }
        if !self.known_hosts.is_empty() {
            out.push_str(&format!("known_hosts = {}\n", list(&self.known_hosts)));
        }
        if let Some(j) = &self.jump {
            out.push_str(&format!("jump = {}\n", s(j)));
        }
        if self.become_root {
            out.push_str("become = true\n");
        }
        match &self.ssh_config {
            None => {}
            Some(None) => out.push_str("ssh_config = false\n"),
            Some(Some(p)) => {
                out.push_str(&format!("ssh_config = {}\n", s(&p.display().to_string())))
            }
        }
        out
    }

    /// The known_hosts files the written inventory's nodes are checked against (its own, then
    /// the user's), the first of which receives the cluster's keys.
    fn checked_files(&self) -> Vec<PathBuf> {
        let mut files = self.known_hosts.clone();
        if let Some(home) = inventory::home_dir() {
            let user = home.join(".ssh/known_hosts");
            if !files.contains(&user) {
                files.push(user);
            }
        }
        files
    }
}

/// An absolute path (the written inventory may live in another directory than the current one).
fn absolute(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| {
        std::env::current_dir()
            .unwrap_or_else(|_| PathBuf::from("."))
            .join(p)
    })
}

/// The node to ask and how: a node of the current inventory named `from` (reached as that
/// inventory reaches it), else the `[user@]host[:port]` given.
fn source(g: &GlobalOpts, a: &DiscoverArgs) -> Result<(ConnectSpec, Reach), AppError> {
    let known = if g.inventory.is_some() || Path::new(DEFAULT_INVENTORY).exists() {
        load_inventory(g)?.node(&a.from).cloned()
    } else {
        None
    };
    let mut node = match known {
        Some(node) => node,
        None => {
            let (user, host, port) = inventory::parse_jump(&a.from);
            let mut node = Inventory::parse("[nodes.discover]\n", Path::new("discover.toml"))
                .map_err(|e| AppError::Internal(e.to_string()))?
                .nodes
                .remove(0);
            node.name = host.clone();
            node.address = host;
            node.port = port;
            node.user = user;
            node
        }
    };
    if let Some(p) = &a.identity {
        node.identity_files = vec![absolute(p)];
    }
    if let Some(p) = &a.known_hosts {
        node.known_hosts = vec![absolute(p)];
    }
    let mut spec = node.connect_spec();
    if let Some(p) = g.host_key_policy {
        spec.host_key_policy = p.into();
    }
    Ok((spec, Reach::of_node(&node)))
}

/// OpenSSH's name of a key type in its messages (`sshkey_type`): ED25519, RSA, ECDSA.
fn key_type(key: &PublicKey) -> String {
    match key.algorithm() {
        russh::keys::Algorithm::Ed25519 => "ED25519".into(),
        russh::keys::Algorithm::Ecdsa { .. } => "ECDSA".into(),
        a if a.clone().is_rsa() => "RSA".into(),
        a => a.as_str().to_ascii_uppercase(),
    }
}

/// `host (ip)` as OpenSSH names a host in its question: the known_hosts name (`host` or
/// `[host]:port`) and the address it resolves to, in the same form.
fn host_and_address(lookup: &str) -> String {
    let (user, host, port) = inventory::parse_jump(lookup);
    debug_assert!(user.is_none());
    let port = port.unwrap_or(22);
    let ip = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => Some(ip),
        Err(_) => std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))
            .ok()
            .and_then(|mut a| a.next())
            .map(|a| a.ip()),
    };
    match ip {
        Some(ip) => format!(
            "{lookup} ({})",
            known_hosts::lookup_name(&ip.to_string(), port)
        ),
        None => lookup.to_string(),
    }
}

/// Ask the operator on the terminal whether to trust `key` for `host`, with OpenSSH's words
/// (sshconnect.c): yes, no, or the fingerprint itself; anything else asks again; end of input
/// is no.
fn ask_host_key(host: &str, key: &PublicKey) -> bool {
    use std::io::BufRead;
    let fp = known_hosts::fingerprint(key);
    let mut err = std::io::stderr().lock();
    let _ = write!(
        err,
        "The authenticity of host '{}' can't be established.\n{} key fingerprint is {fp}.\n\
         This key is not known by any other names.\n\
         Are you sure you want to continue connecting (yes/no/[fingerprint])? ",
        crate::sanitize::sanitize_str(&host_and_address(host)),
        key_type(key)
    );
    let _ = err.flush();
    let stdin = std::io::stdin();
    loop {
        let mut line = String::new();
        match stdin.lock().read_line(&mut line) {
            Ok(0) | Err(_) => return false,
            Ok(_) => {}
        }
        match line.trim() {
            "yes" => return true,
            "no" => return false,
            answer if answer == fp => return true,
            _ => {
                let _ = write!(err, "Please type 'yes', 'no' or the fingerprint: ");
                let _ = err.flush();
            }
        }
    }
}

/// Connect to the node asked. An unknown key under the default policy is shown and asked about
/// on a terminal; accepted, it is recorded (as accept-new records it) and the connection made
/// again, now strictly: a node that shows another key the second time is refused.
async fn connect_first(
    spec: &ConnectSpec,
    may_ask: bool,
    from: &str,
) -> Result<ssh::Session, AppError> {
    let unreachable = |e: SshError| AppError::Unreachable(format!("cannot reach {from}: {e}"));
    let err = match ssh::connect(spec).await {
        Ok(s) => return Ok(s),
        Err(e) => e,
    };
    let SshError::HostKeyUnknown {
        host,
        key: Some(key),
        ..
    } = &err
    else {
        return Err(unreachable(err));
    };
    if !may_ask || !std::io::stdin().is_terminal() {
        return Err(unreachable(err));
    }
    let (host, key) = (host.clone(), (**key).clone());
    let asked = (host.clone(), key.clone());
    let yes = tokio::task::spawn_blocking(move || ask_host_key(&asked.0, &asked.1))
        .await
        .unwrap_or(false);
    if !yes {
        return Err(AppError::Unreachable(format!(
            "cannot reach {from}: host key verification failed (not accepted)"
        )));
    }
    let Some(file) = spec.known_hosts.first().cloned() else {
        return Err(AppError::Usage(
            "no known_hosts file to record the key in: set HOME or pass --known-hosts FILE".into(),
        ));
    };
    let (f, h, k) = (file.clone(), host.clone(), key.clone());
    let learned = tokio::task::spawn_blocking(move || known_hosts::learn(&f, &h, &k))
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?
        .map_err(|e| AppError::Internal(format!("cannot write {}: {e}", file.display())))?;
    match learned {
        known_hosts::Learned::Added | known_hosts::Learned::AlreadyKnown => eprintln!(
            "Warning: Permanently added '{}' ({}) to the list of known hosts.",
            crate::sanitize::sanitize_str(&host),
            key_type(&key)
        ),
        known_hosts::Learned::Conflict { file, line } => {
            return Err(unreachable(SshError::HostKeyChanged { host, file, line }))
        }
    }
    let mut strict = spec.clone();
    strict.host_key_policy = HostKeyPolicy::Strict;
    ssh::connect(&strict).await.map_err(unreachable)
}

/// `inventory discover`.
pub(super) async fn cmd_discover(g: &GlobalOpts, a: &DiscoverArgs) -> Result<u8, AppError> {
    let from = a.from.as_str();
    if let Some(out) = &a.output {
        if out.exists() && !a.force && !a.append {
            return Err(AppError::Usage(format!(
                "{} exists; pass --force to overwrite it",
                out.display()
            )));
        }
    }
    let (spec, reach) = source(g, a)?;
    // OpenSSH's default (StrictHostKeyChecking=ask): asked on a terminal unless a policy is given.
    let may_ask = g.host_key_policy.is_none() && spec.host_key_policy == HostKeyPolicy::Strict;
    let timeout = g.timeout.unwrap_or(inventory::DEFAULT_COMMAND_TIMEOUT);
    let session = connect_first(&spec, may_ask, from).await?;
    let lost = |e: SshError| AppError::Unreachable(format!("{from}: {e}"));
    let out = session
        .exec(&format!("cat {LOCAL_MEMBERS}"), timeout)
        .await
        .map_err(lost)?;
    if out.exit != ssh::ExitStatus::Code(0) {
        session.close().await;
        return Err(AppError::BadInput(format!(
            "{from}: cannot read {LOCAL_MEMBERS} (is it a Proxmox VE node?): {}",
            report::sanitize::first_line(&String::from_utf8_lossy(&out.stderr), 200)
        )));
    }
    let m = members::parse_members(&String::from_utf8_lossy(&out.stdout))
        .map_err(|e| AppError::BadInput(format!("{from}: {e}")))?;
    let files = host_keys::fetch(&session, &m, timeout)
        .await
        .map_err(lost)?;
    session.close().await;
    let keys = host_keys::node_keys(&m, &files, reach.port);
    let plan = plan_keys(from, &reach, &keys)?;

    if a.append {
        let path = a
            .output
            .as_deref()
            .expect("clap requires --output with --append");
        append_cluster(path, from, &m)?;
    } else {
        let text = m
            .to_inventory_toml(&format!("{from}:{LOCAL_MEMBERS}"), &reach.to_toml())
            .map_err(|e| AppError::BadInput(format!("{from}: {e}")))?;
        match a.output.as_deref() {
            Some(path) => {
                write_creating_dirs(path, &text)?;
                eprintln!(
                    "wrote {} with {} nodes from {from}",
                    path.display(),
                    m.nodelist.len()
                );
            }
            None => print!("{text}"),
        }
    }
    record_keys(from, &m, &keys, plan)?;
    Ok(exit::OK)
}

/// The cluster's keys to record, and where: the first known_hosts file of the written
/// inventory (else the user's). Every key is judged against everything its node will be checked
/// against (the inventory's files, the user's, the system's): the same key is skipped, another
/// key of the same type is a changed host key and an error naming both entries.
struct KeyPlan {
    file: PathBuf,
    entries: Vec<(String, PublicKey)>,
}

fn plan_keys(
    from: &str,
    reach: &Reach,
    keys: &[host_keys::NodeKey],
) -> Result<Option<KeyPlan>, AppError> {
    let files = reach.checked_files();
    let Some(file) = files.first().cloned() else {
        if !keys.is_empty() {
            eprintln!(
                "pvefleet: warning: no known_hosts file to record the cluster's host keys in \
                 (set HOME or pass --known-hosts FILE)"
            );
        }
        return Ok(None);
    };
    let checked: Vec<PathBuf> = files
        .iter()
        .cloned()
        .chain(known_hosts::GLOBAL_FILES.iter().map(PathBuf::from))
        .collect();
    let mut entries = Vec::new();
    for k in keys {
        for name in &k.names {
            let known = known_hosts::keys_for(&checked, name);
            match known_hosts::recorded(&known, &k.key) {
                known_hosts::Recorded::Same => {}
                known_hosts::Recorded::New => entries.push((name.clone(), k.key.clone())),
                known_hosts::Recorded::Conflict { file, line } => {
                    return Err(changed_key(from, k, name, &file, line))
                }
            }
        }
    }
    Ok(Some(KeyPlan { file, entries }))
}

/// The error for a cluster key that differs from a recorded one (exit 3: a host key).
fn changed_key(
    from: &str,
    k: &host_keys::NodeKey,
    name: &str,
    file: &Path,
    line: usize,
) -> AppError {
    AppError::Unreachable(format!(
        "host key for {name} (node {}) changed: the cluster's {from}:{}:{} differs from {}:{line}; \
         neither the inventory nor the cluster's keys were written. If the node was reinstalled \
         or its key renewed, remove the old entry (ssh-keygen -f {} -R {name}) and run discover \
         again",
        k.node,
        k.source.0.display(),
        k.source.1,
        file.display(),
        file.display(),
    ))
}

/// Record the planned keys, and say what was done and which nodes the cluster had no key for.
fn record_keys(
    from: &str,
    m: &members::Members,
    keys: &[host_keys::NodeKey],
    plan: Option<KeyPlan>,
) -> Result<(), AppError> {
    let missing: Vec<&str> = m
        .nodelist
        .keys()
        .filter(|n| !keys.iter().any(|k| &k.node == *n))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "pvefleet: warning: the cluster has no host key of {} ({} or {}): the first \
             connection to it needs --host-key-policy accept-new",
            missing.join(", "),
            host_keys::CLUSTER_KNOWN_HOSTS,
            host_keys::node_known_hosts("NODE")
        );
    }
    let Some(plan) = plan else { return Ok(()) };
    if plan.entries.is_empty() {
        return Ok(());
    }
    let verdicts = known_hosts::record(&plan.file, &plan.entries)
        .map_err(|e| AppError::Internal(format!("cannot write {}: {e}", plan.file.display())))?;
    for (v, (name, key)) in verdicts.iter().zip(&plan.entries) {
        if let known_hosts::Recorded::Conflict { file, line } = v {
            let k = keys
                .iter()
                .find(|k| &k.key == key && k.names.contains(name))
                .expect("planned from these keys");
            return Err(changed_key(from, k, name, file, *line));
        }
    }
    let added = verdicts
        .iter()
        .filter(|v| **v == known_hosts::Recorded::New)
        .count();
    eprintln!(
        "recorded {added} host key entries of the cluster's nodes from {from} in {}",
        plan.file.display()
    );
    Ok(())
}

/// Write `text` to `path`, creating its directory first (`-o inventory/cluster.toml` on a fresh
/// checkout).
fn write_creating_dirs(path: &Path, text: &str) -> Result<(), AppError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| AppError::Internal(format!("cannot create {}: {e}", dir.display())))?;
    }
    std::fs::write(path, text)
        .map_err(|e| AppError::Internal(format!("cannot write {}: {e}", path.display())))
}

/// `inventory discover --append`: add a cluster's nodes to an existing inventory file; the result
/// must still load, and no node name may be there twice.
fn append_cluster(path: &Path, from: &str, m: &members::Members) -> Result<(), AppError> {
    let old = std::fs::read_to_string(path)
        .map_err(|e| AppError::Usage(format!("{}: {e} (nothing to append to)", path.display())))?;
    let existing = Inventory::parse(&old, path).map_err(|e| AppError::BadInput(e.to_string()))?;
    let tables = m
        .node_tables()
        .map_err(|e| AppError::BadInput(format!("{from}: {e}")))?;
    let clash: Vec<&str> = m
        .nodelist
        .keys()
        .filter(|n| existing.node(n).is_some())
        .map(String::as_str)
        .collect();
    if !clash.is_empty() {
        return Err(AppError::Usage(format!(
            "{}: already has node(s) {}; a node belongs to one cluster (edit the file, or write another inventory)",
            path.display(),
            clash.join(", ")
        )));
    }
    let cluster = m
        .cluster
        .as_ref()
        .map_or("(standalone)", |c| c.name.as_str());
    let mut text = old.trim_end().to_string();
    text.push_str(&format!(
        "\n\n# Appended by `pvefleet inventory discover --append` from {}: cluster {}.\n",
        crate::sanitize::sanitize_str(from).replace('\n', " "),
        cluster
    ));
    text.push_str(&tables);
    Inventory::parse(&text, path).map_err(|e| AppError::BadInput(e.to_string()))?;
    std::fs::write(path, &text)
        .map_err(|e| AppError::Internal(format!("cannot write {}: {e}", path.display())))?;
    eprintln!(
        "appended {} nodes of cluster {cluster} from {from} to {}",
        m.nodelist.len(),
        path.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_named_as_openssh_names_them() {
        assert_eq!(host_and_address("10.0.0.1"), "10.0.0.1 (10.0.0.1)");
        assert_eq!(
            host_and_address("[10.0.0.1]:2222"),
            "[10.0.0.1]:2222 ([10.0.0.1]:2222)"
        );
        // A name with the address it resolves to (IPv4 or IPv6 first, as the resolver says).
        let local = host_and_address("localhost");
        assert!(
            local == "localhost (127.0.0.1)" || local == "localhost (::1)",
            "{local}"
        );
    }

    #[test]
    fn a_nodes_reach_is_written_as_the_new_defaults() {
        let inv = Inventory::parse(
            "[defaults]\nuser = \"admin\"\nport = 2222\nidentity_files = [\"keys/id\"]\n\
             known_hosts = \"kh\"\njump = \"j@bastion\"\nbecome = true\nssh_config = false\n\
             [nodes.pve1]\naddress = \"10.0.0.1\"\n",
            Path::new("/inv/cluster.toml"),
        )
        .unwrap();
        let text = Reach::of_node(&inv.nodes[0]).to_toml();
        assert_eq!(
            text,
            "user = \"admin\"\nport = 2222\nidentity_files = [\"/inv/keys/id\"]\n\
             known_hosts = [\"/inv/kh\"]\njump = \"j@bastion\"\nbecome = true\nssh_config = false\n"
        );
        // And it loads as the same reach.
        let again = Inventory::parse(
            &format!("[defaults]\n{text}[nodes.pve2]\n"),
            Path::new("/other/x.toml"),
        )
        .unwrap();
        let (a, b) = (&inv.nodes[0], &again.nodes[0]);
        assert_eq!(
            (&a.user, a.port, &a.identity_files, &a.known_hosts, &a.jump),
            (&b.user, b.port, &b.identity_files, &b.known_hosts, &b.jump)
        );
        assert_eq!(
            (a.become_root, &a.ssh_config),
            (b.become_root, &b.ssh_config)
        );
    }
}
