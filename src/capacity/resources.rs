//! The cluster's guests and nodes from one `pvesh get /cluster/resources --output-format json`
//! call (DOMAIN.md §8; field names as pve-manager's `PVE/API2/Cluster.pm` `resources` returns
//! them), and each guest's configuration lines that decide whether it can move.

use serde::{Deserialize, Serialize};

/// A node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRes {
    /// Name.
    pub name: String,
    /// `status` is `online`.
    pub online: bool,
    /// Memory, bytes.
    pub maxmem: u64,
    /// In use, bytes.
    pub mem: u64,
}

impl NodeRes {
    /// Free memory, bytes.
    pub fn free(&self) -> u64 {
        self.maxmem.saturating_sub(self.mem)
    }
}

/// `qemu` or `lxc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GuestType {
    /// A VM.
    Qemu,
    /// A container.
    Lxc,
}

impl GuestType {
    /// The CLI that manages it.
    pub fn tool(self) -> &'static str {
        match self {
            GuestType::Qemu => "qm",
            GuestType::Lxc => "pct",
        }
    }
}

/// A guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestRes {
    /// Type.
    pub kind: GuestType,
    /// VMID.
    pub vmid: u32,
    /// Node it is on.
    pub node: String,
    /// `status` is `running`.
    pub running: bool,
    /// Name.
    pub name: String,
    /// Configured memory, bytes; `None` when the cluster did not say (no `maxmem`), until read
    /// from the guest's configuration ([`config_memory`]). Never taken as 0.
    pub maxmem: Option<u64>,
    /// HA-managed (`hastate` present).
    pub ha: bool,
    /// `lock`, when locked.
    pub lock: Option<String>,
    /// A template.
    pub template: bool,
}

/// The cluster picture.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// Nodes.
    pub nodes: Vec<NodeRes>,
    /// Guests.
    pub guests: Vec<GuestRes>,
}

impl Resources {
    /// A node by name.
    pub fn node(&self, name: &str) -> Option<&NodeRes> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// Running guests on `node`.
    pub fn running_on<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a GuestRes> + 'a {
        self.guests
            .iter()
            .filter(move |g| g.node == node && g.running && !g.template)
    }
}

/// Why a `pvesh get /cluster/resources` answer could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ResourcesError {
    /// Not JSON at all.
    #[error("pvesh get /cluster/resources is not JSON: {0}")]
    NotJson(serde_json::Error),
    /// JSON, but not an array.
    #[error("pvesh get /cluster/resources: expected a JSON array")]
    NotAnArray,
    /// A `node` item without its name.
    #[error("a node without `node`")]
    NodeWithoutName,
    /// A guest whose `vmid` is missing or outside 100..=999999999 (its `id`, as JSON).
    #[error("a guest with a bad vmid: {0}")]
    BadVmid(serde_json::Value),
    /// A guest without the node it is on.
    #[error("a guest without `node`")]
    GuestWithoutNode,
}

/// Parse `pvesh get /cluster/resources --output-format json` (all types; storage and others are
/// ignored).
pub fn parse(json: &str) -> Result<Resources, ResourcesError> {
    let v: serde_json::Value =
        serde_json::from_str(json.trim()).map_err(ResourcesError::NotJson)?;
    let items = v.as_array().ok_or(ResourcesError::NotAnArray)?;
    let mut out = Resources::default();
    for it in items {
        let s = |k: &str| it[k].as_str().map(str::to_string);
        match it["type"].as_str() {
            Some("node") => out.nodes.push(NodeRes {
                name: s("node").ok_or(ResourcesError::NodeWithoutName)?,
                online: it["status"] == "online",
                maxmem: it["maxmem"].as_u64().unwrap_or(0),
                mem: it["mem"].as_u64().unwrap_or(0),
            }),
            Some(t @ ("qemu" | "lxc")) => {
                let vmid = it["vmid"]
                    .as_u64()
                    .and_then(|v| u32::try_from(v).ok())
                    .filter(|v| (100..=999_999_999).contains(v))
                    .ok_or_else(|| ResourcesError::BadVmid(it["id"].clone()))?;
                out.guests.push(GuestRes {
                    kind: if t == "qemu" {
                        GuestType::Qemu
                    } else {
                        GuestType::Lxc
                    },
                    vmid,
                    node: s("node").ok_or(ResourcesError::GuestWithoutNode)?,
                    running: it["status"] == "running",
                    name: s("name").unwrap_or_default(),
                    maxmem: it["maxmem"].as_u64().filter(|m| *m > 0),
                    ha: it.get("hastate").is_some_and(|h| !h.is_null()),
                    lock: s("lock").filter(|l| !l.is_empty()),
                    template: it["template"].as_u64() == Some(1),
                })
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The memory a guest's configuration gives it (`memory: MIB`, the current config, not a
/// snapshot section), bytes; `None` without the line (then the guest's memory is unknown).
pub fn config_memory(config: &str) -> Option<u64> {
    config
        .lines()
        .take_while(|l| !l.starts_with('['))
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim() == "memory")
        .and_then(|(_, v)| v.trim().parse::<u64>().ok())
        .filter(|m| *m > 0)
        .map(|m| m << 20)
}

/// Why a guest cannot be live-migrated, from its configuration lines (qemu-server refuses
/// `hostpciN` and host `usbN` devices: "can't migrate VM which uses local devices"; a local disk
/// needs `--with-local-disks`). `local_storages` are the storage ids that are not shared.
pub fn unmovable_reason(
    kind: GuestType,
    config: &str,
    local_storages: &[String],
    allow_local_disks: bool,
) -> Option<String> {
    let mut devices = Vec::new();
    let mut disks = Vec::new();
    for l in config.lines() {
        // The current config only: snapshot sections start with `[name]`.
        if l.starts_with('[') {
            break;
        }
        let Some((key, value)) = l.split_once(':') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        let base = key.trim_end_matches(|c: char| c.is_ascii_digit());
        if kind == GuestType::Qemu && base == "hostpci" {
            devices.push(key.to_string());
        }
        if kind == GuestType::Qemu && base == "usb" && value.contains("host=") {
            devices.push(key.to_string());
        }
        let disk_key = matches!(
            base,
            "scsi" | "sata" | "ide" | "virtio" | "efidisk" | "tpmstate" | "rootfs" | "mp"
        );
        if disk_key && !value.contains("media=cdrom") {
            let storage = value.split(':').next().unwrap_or("");
            if local_storages.iter().any(|s| s == storage) {
                disks.push(format!("{key} on {storage}"));
            }
        }
    }
    if !devices.is_empty() {
        return Some(format!("uses local devices: {}", devices.join(", ")));
    }
    if !disks.is_empty() && (kind == GuestType::Lxc || !allow_local_disks) {
        return Some(format!(
            "has local disks ({}){}",
            disks.join(", "),
            if kind == GuestType::Qemu {
                "; set local_disks = true on the reboot step to copy them (slow)"
            } else {
                ""
            }
        ));
    }
    None
}

/// Storage ids that are not shared, from `/etc/pve/storage.cfg` (`TYPE: ID` headers; `dir`,
/// `lvm`, `lvmthin`, `zfspool`, `btrfs` are local unless `shared 1`).
pub fn local_storages(storage_cfg: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<(String, bool)> = None;
    let mut flush = |c: &mut Option<(String, bool)>| {
        if let Some((id, local)) = c.take() {
            if local {
                out.push(id);
            }
        }
    };
    for l in storage_cfg.lines() {
        if !l.starts_with(|c: char| c.is_whitespace()) && l.contains(':') {
            flush(&mut current);
            let (t, id) = l.split_once(':').unwrap_or(("", ""));
            let local = matches!(t.trim(), "dir" | "lvm" | "lvmthin" | "zfspool" | "btrfs");
            current = Some((id.trim().to_string(), local));
        } else if l.trim() == "shared 1" {
            if let Some(c) = current.as_mut() {
                c.1 = false;
            }
        }
    }
    flush(&mut current);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const RES: &str = r#"[
 {"id":"node/pve1","type":"node","node":"pve1","status":"online","maxmem":34359738368,"mem":6442450944,"maxcpu":6,"cpu":0.04,"level":""},
 {"id":"node/pve2","type":"node","node":"pve2","status":"offline"},
 {"id":"qemu/100","type":"qemu","vmid":100,"node":"pve1","status":"running","name":"web","maxmem":2147483648,"mem":1073741824,"maxcpu":2,"template":0,"hastate":"started"},
 {"id":"qemu/101","type":"qemu","vmid":101,"node":"pve1","status":"running","name":"db","maxmem":4294967296,"template":0,"lock":"backup"},
 {"id":"lxc/200","type":"lxc","vmid":200,"node":"pve1","status":"stopped","name":"dns","maxmem":536870912,"template":0},
 {"id":"storage/pve1/local","type":"storage","node":"pve1","storage":"local","status":"available"}
]"#;

    #[test]
    fn nodes_and_guests_from_cluster_resources() {
        let r = parse(RES).unwrap();
        assert_eq!(r.nodes.len(), 2);
        assert_eq!(r.node("pve1").unwrap().free(), 34359738368 - 6442450944);
        assert!(!r.node("pve2").unwrap().online);
        assert_eq!(r.guests.len(), 3);
        assert!(r.guests[0].ha);
        assert_eq!(r.guests[1].lock.as_deref(), Some("backup"));
        assert_eq!(r.running_on("pve1").count(), 2);
        assert_eq!(r.guests[0].maxmem, Some(2147483648));
        assert!(parse("{}").is_err());
        // No `maxmem`: unknown, not 0.
        let r = parse(r#"[{"type":"qemu","vmid":105,"node":"pve1","status":"running"}]"#).unwrap();
        assert_eq!(r.guests[0].maxmem, None);
        assert_eq!(
            config_memory("memory: 6144\n[snap]\nmemory: 1\n"),
            Some(6144 << 20)
        );
        assert_eq!(config_memory("cores: 2\n[snap]\nmemory: 1024\n"), None);
        assert!(parse(r#"[{"type":"qemu","vmid":5,"node":"x"}]"#).is_err());
        assert_eq!(
            parse(r#"[{"id":"qemu/5","type":"qemu","vmid":5,"node":"x"}]"#)
                .unwrap_err()
                .to_string(),
            "a guest with a bad vmid: \"qemu/5\""
        );
        assert_eq!(
            parse("{}").unwrap_err().to_string(),
            "pvesh get /cluster/resources: expected a JSON array"
        );
    }

    #[test]
    fn local_devices_and_disks_keep_a_guest_home() {
        let local = local_storages("dir: local\n\tpath /var/lib/vz\n\nlvmthin: local-lvm\n\tthinpool data\n\nrbd: ceph-pool\n\tpool vm\n\nnfs: backup\n\tpath /mnt\n\ndir: shared-dir\n\tpath /mnt/x\n\tshared 1\n");
        assert_eq!(local, vec!["local", "local-lvm"]);
        let q = GuestType::Qemu;
        assert_eq!(
            unmovable_reason(
                q,
                "hostpci0: 0000:00:02.0\nscsi0: ceph-pool:vm-100-disk-0,size=32G\n",
                &local,
                false
            )
            .unwrap(),
            "uses local devices: hostpci0"
        );
        assert!(unmovable_reason(q, "usb0: host=1-2\n", &local, false).is_some());
        assert!(unmovable_reason(q, "usb0: spice\n", &local, false).is_none());
        let disk = "scsi0: local-lvm:vm-101-disk-0,size=32G\nide2: local:iso/x.iso,media=cdrom\n";
        assert!(unmovable_reason(q, disk, &local, false)
            .unwrap()
            .contains("scsi0 on local-lvm"));
        assert!(
            unmovable_reason(q, disk, &local, true).is_none(),
            "allowed: --with-local-disks"
        );
        assert!(unmovable_reason(
            GuestType::Lxc,
            "rootfs: local-lvm:vm-200-disk-0,size=8G\n",
            &local,
            true
        )
        .is_some());
        assert!(unmovable_reason(
            q,
            "scsi0: ceph-pool:vm-1-disk-0\n[snap1]\nhostpci0: x\n",
            &local,
            false
        )
        .is_none());
    }
}
