//! Several clusters in one inventory, on several labs: `--limit @cluster:NAME`, rolling batches and
//! quorum gates per cluster with the clusters rolled side by side, cluster checks per cluster in
//! the audit, and `inventory discover --append`.

use std::path::Path;

use crate::common::bin::{command, json_of, text};
use crate::common::lab::Lab;
use crate::common::runs::write_playbook;

/// One inventory over two labs: lab `a`'s nodes as a1.., lab `b`'s as b1.., each with its own
/// key, known_hosts and `cluster`.
fn combined(dir: &Path, labs: &[(&str, &Lab)]) -> std::path::PathBuf {
    let mut text = String::from(
        "[defaults]\nuser = \"root\"\nssh_config = false\nconnect_timeout = \"5s\"\n\n",
    );
    for (name, lab) in labs {
        let inv = std::fs::read_to_string(lab.inventory()).unwrap();
        for (i, addr) in inv
            .lines()
            .filter_map(|l| l.strip_prefix("address = "))
            .enumerate()
        {
            text.push_str(&format!(
                "[nodes.{name}{}]\naddress = {addr}\ncluster = \"{name}\"\nidentity_files = [\"{}\"]\nknown_hosts = [\"{}\"]\nhost_key_policy = \"strict\"\n\n",
                i + 1,
                lab.dir.path().join("id_ed25519").display(),
                lab.dir.path().join("known_hosts").display()
            ));
        }
    }
    let p = dir.join("clusters.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn two_clusters_roll_side_by_side_each_behind_its_own_gates() {
    let Some(a) = Lab::up("clusters_a", 127, 3, &[]) else {
        return;
    };
    let Some(b) = Lab::up("clusters_b", 128, 3, &[]) else {
        return;
    };
    let Some(c) = Lab::up("clusters_c", 130, 2, &[]) else {
        return;
    };
    let state = tempfile::tempdir().unwrap();
    let inv = combined(state.path(), &[("a", &a), ("b", &b), ("c", &c)]);
    let pvefleet = |args: &[&str]| {
        command()
            .arg("-i")
            .arg(&inv)
            .args(args)
            .env("PVEFLEET_STATE_DIR", state.path())
            .output()
            .unwrap()
    };
    // --limit @cluster:NAME
    let out = pvefleet(&["--json", "-l", "@cluster:c", "inventory", "show"]);
    let v = json_of(&out);
    let names: Vec<&str> = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["c1", "c2"]);
    // A rolling reboot over all three: a and b roll node by node, side by side; c, two nodes
    // without a QDevice, is refused by its own quorum gate, which stops neither a nor b.
    let pb = write_playbook(
        state.path(),
        "pb.toml",
        "name = \"r\"\n[strategy]\nmode = \"rolling\"\n[[step]]\nname = \"mark\"\nkind = \"line\"\npath = \"/etc/pvefleet-test\"\nline = \"x\"\n[[step]]\nname = \"reboot\"\nkind = \"reboot\"\ntimeout = \"60s\"\non_change = [\"mark\"]\n",
    );
    let out = pvefleet(&["--json", "run", "--yes", pb.to_str().unwrap()]);
    let v = json_of(&out);
    assert_eq!(out.status.code(), Some(2), "{v}");
    let by: std::collections::BTreeMap<&str, &serde_json::Value> = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["node"].as_str().unwrap(), n))
        .collect();
    for n in ["a1", "a2", "a3", "b1", "b2", "b3"] {
        assert_eq!(by[n]["status"], "ok", "{}", by[n]);
        assert_eq!(by[n]["rebooted"], true);
    }
    let refused = by["c1"]["error"].as_str().unwrap();
    assert!(refused.contains("2-node cluster"), "{refused}");
    for n in ["pve1", "pve2", "pve3"] {
        assert_eq!(a.boots(n), 2, "a/{n}");
        assert_eq!(b.boots(n), 2, "b/{n}");
    }
    for n in ["pve1", "pve2"] {
        assert_eq!(c.boots(n), 1, "c/{n} untouched");
        assert_eq!(c.ssh(n, "test -e /etc/pvefleet-test").0, 1);
    }
    // Side by side: at some moment a node of a and a node of b were rebooting together, while
    // within each cluster one node at a time.
    let mut events: Vec<serde_json::Value> = Vec::new();
    for d in std::fs::read_dir(state.path().join("runs"))
        .unwrap()
        .flatten()
    {
        let text = std::fs::read_to_string(d.path().join("events.jsonl")).unwrap_or_default();
        events.extend(text.lines().filter_map(|l| serde_json::from_str(l).ok()));
    }
    let mut rebooting: Vec<String> = Vec::new();
    let mut together = false;
    for e in &events {
        let node = e["node"].as_str().unwrap_or("").to_string();
        match (e["event"].as_str(), e["data"]["state"].as_str()) {
            (Some("reboot"), Some("reboot-issued")) => {
                assert!(
                    !rebooting.iter().any(|n| n[..1] == node[..1]),
                    "two nodes of one cluster at once: {rebooting:?} + {node}"
                );
                rebooting.push(node);
                together |= rebooting.len() > 1;
            }
            (Some("reboot"), Some("done")) => rebooting.retain(|n| *n != node),
            _ => {}
        }
    }
    assert!(together, "the clusters rolled one after the other");
    // The audit checks each cluster on its own.
    let out = pvefleet(&["--json", "audit"]);
    let v = json_of(&out);
    let cluster = v["cluster"].to_string();
    assert!(
        cluster.contains("cluster a: ") && cluster.contains("cluster b: "),
        "{cluster}"
    );
}

#[test]
fn discover_appends_a_second_cluster_to_an_inventory() {
    let Some(a) = Lab::up("discover_append", 129, 2, &[]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let inv = dir.path().join("inv.toml");
    std::fs::write(
        &inv,
        "[defaults]\nuser = \"root\"\n\n[nodes.other1]\naddress = \"192.0.2.10\"\ncluster = \"home\"\n",
    )
    .unwrap();
    let addr = std::fs::read_to_string(a.inventory())
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("address = ")
                .map(|x| x.trim_matches('"').to_string())
        })
        .unwrap();
    let append = || {
        command()
            .args([
                "inventory",
                "discover",
                "--from",
                &format!("root@{addr}"),
                "--append",
                "-o",
            ])
            .arg(&inv)
            .arg("--identity")
            .arg(a.dir.path().join("id_ed25519"))
            .arg("--known-hosts")
            .arg(a.dir.path().join("known_hosts"))
            .output()
            .unwrap()
    };
    let out = append();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let written = std::fs::read_to_string(&inv).unwrap();
    assert!(written.contains("[nodes.other1]"), "{written}");
    assert!(
        written.contains("[nodes.pve1]") && written.contains("cluster = \"pvelab\""),
        "{written}"
    );
    // A second append of the same cluster would put its nodes in twice: refused.
    let again = append();
    assert_eq!(again.status.code(), Some(64), "{}", text(&again.stderr));
    assert!(text(&again.stderr).contains("already has node(s) pve1, pve2"));
}

/// A node of cluster b that cannot be planned (unreachable) stops cluster b before anything
/// changes there, and cluster a runs (README: "a failure in one cluster does not stop the
/// others"); the exit code says a node was unreachable. The old code stopped the whole run.
#[test]
fn an_unplannable_node_stops_only_its_own_cluster() {
    let Some(a) = Lab::up("clusters_plan_a", 253, 2, &[]) else {
        return;
    };
    let Some(b) = Lab::up("clusters_plan_b", 254, 2, &[]) else {
        return;
    };
    b.fault("pve2", &["unreachable"]);
    let state = tempfile::tempdir().unwrap();
    let inv = combined(state.path(), &[("a", &a), ("b", &b)]);
    let pb = write_playbook(
        state.path(),
        "pb.toml",
        "name = \"m\"\n[[step]]\nname = \"mark\"\nkind = \"line\"\npath = \"/etc/pvefleet-test\"\nline = \"x\"\n",
    );
    let out = command()
        .arg("-i")
        .arg(&inv)
        .args(["--json", "run", "--yes", pb.to_str().unwrap()])
        .env("PVEFLEET_STATE_DIR", state.path())
        .output()
        .unwrap();
    let v = json_of(&out);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}{v}");
    assert!(
        err.contains("cluster b is not started (b2 could not be planned)"),
        "{err}"
    );
    let node = |name: &str| {
        v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["node"] == name)
            .unwrap_or_else(|| panic!("{name} in {v}"))
            .clone()
    };
    for n in ["a1", "a2"] {
        assert_eq!(node(n)["status"], "ok", "{v}");
    }
    for n in ["b1", "b2"] {
        assert_eq!(node(n)["not_started"], true, "{v}");
    }
    assert_eq!(a.sh("pve1", "cat /etc/pvefleet-test").trim(), "x");
    assert_eq!(a.sh("pve2", "cat /etc/pvefleet-test").trim(), "x");
    let (code, _, _) = b.ssh("pve1", "test -e /etc/pvefleet-test");
    assert_ne!(code, 0, "nothing changed in cluster b");
}
