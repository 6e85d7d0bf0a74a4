//! Inventories from a cluster's own `/etc/pve/.members`: `inventory discover` over SSH, and the
//! default inventory when pvefleet runs on a Proxmox node; a hostile `.members` is refused by both.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::common::bin::{json_of, pvefleet, text};
use crate::common::lab::Lab;

/// Copy the pvefleet binary to `/tmp/pvefleet` on the node at `addr` (the test target directory
/// may be hidden inside the node).
fn install_pvefleet(lab: &Lab, addr: &str) {
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
            &format!("root@{addr}"),
            "cat > /tmp/pvefleet && chmod +x /tmp/pvefleet",
        ])
        .stdin(Stdio::from(bin))
        .status()
        .unwrap();
    assert!(
        status.success(),
        "copying pvefleet to {addr} failed: {status}"
    );
}

/// `pvefleet inventory discover` from the node at `addr` with the lab's key and known_hosts,
/// writing `out`.
fn discover(lab: &Lab, addr: &str, out: &Path) -> Output {
    let d = lab.dir.path();
    pvefleet(&[
        "inventory",
        "discover",
        "--from",
        &format!("root@{addr}"),
        "--identity",
        d.join("id_ed25519").to_str().unwrap(),
        "--known-hosts",
        d.join("known_hosts").to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ])
}

/// Replace the node's `/etc/pve/.members` with `doc`. In the lab it is a file bind-mounted from
/// the node's run directory, rewritten only when a node boots or goes down (tests/lab/node,
/// `refresh_members`), so it keeps what is written here for the rest of the test.
fn write_members(lab: &Lab, node: &str, doc: &serde_json::Value) {
    let json = doc.to_string();
    let quoted = format!("'{}'", json.replace('\'', r"'\''"));
    lab.sh(
        node,
        &format!("printf '%s\\n' {quoted} > /etc/pve/.members"),
    );
    assert_eq!(lab.sh(node, "cat /etc/pve/.members").trim_end(), json);
}

/// A `.members` document like pmxcfs's (pve-cluster src/pmxcfs/status.c) with these strings,
/// JSON-escaped as a tampered file would hold them.
fn members(net: u8, cluster: &str, second: &str, second_ip: &str) -> serde_json::Value {
    serde_json::json!({
        "nodename": "pve1",
        "version": 4,
        "cluster": { "name": cluster, "version": 2, "nodes": 2, "quorate": 1 },
        "nodelist": {
            "pve1": { "id": 1, "online": 1, "ip": format!("127.{net}.0.1") },
            second: { "id": 2, "online": 1, "ip": second_ip },
        }
    })
}

/// (what to plant, the entry the error must name, its value) for each kind of injection.
fn hostile_cases(net: u8) -> Vec<(serde_json::Value, &'static str, &'static str)> {
    let ip2 = format!("127.{net}.0.2");
    let name_injection = "pve2\n[defaults]\nhost_key_policy = \"insecure\"";
    let addr_injection = "127.0.0.2\"\nhost_key_policy = \"insecure";
    let cluster_injection = "pvelab\nhost_key_policy = \"insecure\"";
    let escape = "pve2\u{1b}]0;owned\u{7}";
    vec![
        (
            members(net, "pvelab", name_injection, &ip2),
            "node name",
            name_injection,
        ),
        (
            members(net, "pvelab", "pve2", addr_injection),
            "address of node pve2",
            addr_injection,
        ),
        (
            members(net, cluster_injection, "pve2", &ip2),
            "cluster name",
            cluster_injection,
        ),
        (
            members(net, "pvelab", "pve]=2", &ip2),
            "node name",
            "pve]=2",
        ),
        (members(net, "pvelab", escape, &ip2), "node name", escape),
    ]
}

/// The one-line error naming `entry` and its escaped `value`, with nothing raw in it.
fn assert_names_the_entry(stderr: &str, entry: &str, value: &str) {
    assert!(
        stderr.contains(&format!("/etc/pve/.members: {entry} {value:?}: ")),
        "{entry}: {stderr:?}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr:?}");
    assert!(
        !stderr.trim_end().chars().any(char::is_control),
        "raw control characters: {stderr:?}"
    );
}

#[test]
fn discover_writes_a_working_inventory_from_a_node() {
    let Some(lab) = Lab::up(
        "discover_writes_a_working_inventory_from_a_node",
        90,
        3,
        &[],
    ) else {
        return;
    };
    let d = lab.dir.path();
    let out_path = d.join("discovered.toml");
    let out = discover(&lab, "127.90.0.2", &out_path);
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
    let v = json_of(&show);
    let names: Vec<&str> = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["pve1", "pve2", "pve3"]);
    assert_eq!(v["nodes"][2]["address"], "127.90.0.3");
    // The written inventory works as is: every node answers, with its own name.
    let exec = pvefleet(&[
        "-i",
        out_path.to_str().unwrap(),
        "--json",
        "exec",
        "--",
        "hostname",
    ]);
    assert!(exec.status.success(), "{}", text(&exec.stderr));
    let answers: Vec<(String, String)> = json_of(&exec)["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["node"].as_str().unwrap().to_string(),
                n["stdout"].as_str().unwrap().trim_end().to_string(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = ["pve1", "pve2", "pve3"]
        .iter()
        .map(|n| (n.to_string(), n.to_string()))
        .collect();
    assert_eq!(answers, expected);
}

#[test]
fn discover_refuses_a_hostile_members_file_naming_the_bad_entry() {
    let net = 150;
    let Some(lab) = Lab::up(
        "discover_refuses_a_hostile_members_file_naming_the_bad_entry",
        net,
        2,
        &[],
    ) else {
        return;
    };
    let d = lab.dir.path();
    for (doc, entry, value) in hostile_cases(net) {
        write_members(&lab, "pve2", &doc);
        let out_path = d.join("discovered.toml");
        let out = discover(&lab, &format!("127.{net}.0.2"), &out_path);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(65), "{entry}: {err}");
        assert_names_the_entry(&err, entry, value);
        assert!(
            err.starts_with(&format!(
                "pvefleet: root@127.{net}.0.2: /etc/pve/.members: "
            )),
            "{err}"
        );
        assert!(!out_path.exists(), "{entry}: an inventory was written");
        assert!(
            out.stdout.is_empty(),
            "{entry}: printed {}",
            text(&out.stdout)
        );
    }
}

#[test]
fn on_a_proxmox_node_the_cluster_itself_is_the_default_inventory() {
    let Some(lab) = Lab::up(
        "on_a_proxmox_node_the_cluster_itself_is_the_default_inventory",
        91,
        3,
        &[],
    ) else {
        return;
    };
    install_pvefleet(&lab, "127.91.0.1");
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

#[test]
fn on_a_node_with_a_hostile_members_file_the_default_inventory_is_refused() {
    let net = 151;
    let Some(lab) = Lab::up(
        "on_a_node_with_a_hostile_members_file_the_default_inventory_is_refused",
        net,
        2,
        &[],
    ) else {
        return;
    };
    install_pvefleet(&lab, &format!("127.{net}.0.1"));
    for (doc, entry, value) in hostile_cases(net) {
        write_members(&lab, "pve1", &doc);
        let (code, out, err) = lab.ssh("pve1", "cd /root && /tmp/pvefleet inventory show");
        assert_eq!(code, 65, "{entry}: {out}{err}");
        assert_names_the_entry(&err, entry, value);
        assert!(err.starts_with("pvefleet: /etc/pve/.members: "), "{err}");
        assert!(out.is_empty(), "{entry}: showed {out}");
    }
}
