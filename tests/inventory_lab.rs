//! Inventories from a cluster's own `/etc/pve/.members`: `inventory discover` over SSH, and the
//! default inventory when pvefleet runs on a Proxmox node.

mod common;

use std::process::{Command, Stdio};

use common::bin::{pvefleet, text};
use common::lab::Lab;

#[test]
fn discover_writes_a_working_inventory_from_a_node() {
    let Some(lab) = Lab::up("discover", 90, 3, &[]) else {
        return;
    };
    let d = lab.dir.path();
    let out_path = d.join("discovered.toml");
    let out = pvefleet(&[
        "inventory",
        "discover",
        "--from",
        "root@127.90.0.2",
        "--identity",
        d.join("id_ed25519").to_str().unwrap(),
        "--known-hosts",
        d.join("known_hosts").to_str().unwrap(),
        "-o",
        out_path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let written = std::fs::read_to_string(&out_path).unwrap();
    assert!(written.contains("cluster pvelab"), "{written}");
    let show = pvefleet(&[
        "-i",
        out_path.to_str().unwrap(),
        "--json",
        "inventory",
        "show",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    let names: Vec<&str> = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["pve1", "pve2", "pve3"]);
    assert_eq!(v["nodes"][2]["address"], "127.90.0.3");
    // The written inventory works as is.
    let exec = pvefleet(&["-i", out_path.to_str().unwrap(), "exec", "--", "hostname"]);
    assert!(exec.status.success(), "{}", text(&exec.stdout));
    // It refuses to overwrite without --force.
    let again = pvefleet(&[
        "inventory",
        "discover",
        "--from",
        "root@127.90.0.2",
        "-o",
        out_path.to_str().unwrap(),
    ]);
    assert_eq!(again.status.code(), Some(64));
    assert!(text(&again.stderr).contains("--force"));
}

#[test]
fn on_a_proxmox_node_the_cluster_itself_is_the_default_inventory() {
    let Some(lab) = Lab::up("local_members", 91, 3, &[]) else {
        return;
    };
    // Copy the binary onto the node (the test target directory may be hidden there).
    let bin = std::fs::File::open(env!("CARGO_BIN_EXE_pvefleet")).unwrap();
    let d = lab.dir.path();
    let status = Command::new("ssh")
        .args(["-F", "/dev/null", "-i"])
        .arg(d.join("id_ed25519"))
        .args([
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
        ])
        .arg(format!(
            "UserKnownHostsFile={}",
            d.join("known_hosts").display()
        ))
        .args([
            "root@127.91.0.1",
            "cat > /tmp/pvefleet && chmod +x /tmp/pvefleet",
        ])
        .stdin(Stdio::from(bin))
        .status()
        .unwrap();
    assert!(status.success());
    let out = lab.sh("pve1", "cd /root && /tmp/pvefleet --json inventory show");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["source"], "/etc/pve/.members");
    let addrs: Vec<&str> = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["address"].as_str().unwrap())
        .collect();
    assert_eq!(addrs, ["127.91.0.1", "127.91.0.2", "127.91.0.3"]);
}
