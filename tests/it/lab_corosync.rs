//! The lab's corosync is the real one (Debian's corosync 3.1.7: knet, votequorum), one daemon in
//! each cluster node: votes, quorum and membership as the daemon reports them, through the real
//! `corosync-quorumtool` and `pvecm` (which runs it), and `/etc/pve/.members` following them.

use std::time::{Duration, Instant};

use crate::common::lab::Lab;

/// Run `cmd` on `node` until its output (stdout and stderr) satisfies `want`, at most `secs`
/// seconds; the output that did. Panics with the last output when it never does.
fn until(lab: &Lab, node: &str, cmd: &str, secs: u64, want: impl Fn(&str) -> bool) -> String {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        let (_, out, err) = lab.ssh(node, cmd);
        let out = out + &err;
        if want(&out) {
            return out;
        }
        assert!(
            Instant::now() < end,
            "{node}: `{cmd}` not as wanted within {secs} s; last output:\n{out}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `corosync-quorumtool -s` on `node` once its "Total votes" is `votes`.
fn votes(lab: &Lab, node: &str, votes: u32, secs: u64) -> String {
    let line = format!("Total votes:      {votes}\n");
    until(lab, node, "corosync-quorumtool -s", secs, |o| {
        o.contains(&line)
    })
}

fn field<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no `{key}` in:\n{text}"))
}

#[test]
fn a_reboot_costs_the_node_its_vote_as_corosync_reports_it() {
    let Some(lab) = Lab::up(
        "a_reboot_costs_the_node_its_vote_as_corosync_reports_it",
        200,
        3,
        &[],
    ) else {
        return;
    };
    // Each node's tools talk to its own daemon (filesystem IPC sockets in the node's own root).
    for (i, node) in ["pve1", "pve2", "pve3"].iter().enumerate() {
        let s = lab.sh(node, "corosync-quorumtool -s");
        assert_eq!(field(&s, "Node ID:"), (i + 1).to_string(), "{s}");
        assert_eq!(field(&s, "Quorate:"), "Yes", "{s}");
        assert!(s.contains("Total votes:      3\n"), "{s}");
        assert_eq!(lab.sh(node, "systemctl is-active corosync"), "active\n");
    }
    let before = lab.sh("pve1", "corosync-quorumtool -s");
    let pvecm = lab.sh("pve1", "pvecm status");
    assert!(pvecm.starts_with("Cluster information\n-------------------\nName:             pvelab\nConfig Version:   1\nTransport:        knet\nSecure auth:      on\n\nQuorum information\n"), "{pvecm}");
    assert!(
        pvecm.contains("0x00000001          1 127.200.0.1 (local)\n0x00000002          1 127.200.0.2\n0x00000003          1 127.200.0.3\n"),
        "{pvecm}"
    );
    assert_eq!(
        lab.sh("pve2", "pvecm nodes"),
        "\nMembership information\n----------------------\n    Nodeid      Votes Name\n         1          1 pve1\n         2          1 pve2 (local)\n         3          1 pve3\n"
    );

    // The reboot stops pve3's corosync (as systemd does on the way down): its vote goes at once.
    // A slow boot keeps pve3 down while everything below looks (a loaded machine once had it
    // back before pve2's .members was read).
    lab.fault("pve3", &["slow-boot", "20"]);
    let t = Instant::now();
    lab.run(&["reboot", "pve3"]);
    let down = votes(&lab, "pve1", 2, 10);
    let gone = t.elapsed();
    // About a second here, 4.3 s once on a loaded CI machine (the bound includes `lab reboot`
    // itself): well before the node could be back, which is what the gates depend on.
    assert!(gone < Duration::from_secs(8), "vote gone after {gone:?}");
    assert_eq!(field(&down, "Quorate:"), "Yes", "{down}");
    assert_ne!(field(&down, "Ring ID:"), field(&before, "Ring ID:"));
    let pvecm = lab.sh("pve1", "pvecm status");
    assert!(
        pvecm.contains("Total votes:      2\n") && !pvecm.contains("127.200.0.3"),
        "{pvecm}"
    );
    // pmxcfs's stand-in follows corosync's membership (a second here; more on a loaded machine).
    let members = until(&lab, "pve2", "cat /etc/pve/.members", 15, |m| {
        m.contains("\"pve3\": { \"id\": 3, \"online\": 0")
    });
    assert!(members.contains("\"quorate\": 1 }"), "{members}");
    // The boot brings it back.
    assert!(lab.wait("pve3", "up", 60));
    votes(&lab, "pve1", 3, 10);
    assert_eq!(lab.sh("pve3", "systemctl is-active corosync"), "active\n");

    // A corosync killed without its unit's stop: the unit failed, the others lose its vote after
    // the token timeout; starting the unit brings it back.
    lab.sh("pve2", "kill -KILL $(cat /run/corosync.pid)");
    let (code, out, _) = lab.ssh("pve2", "systemctl is-active corosync");
    assert_eq!((code, out.as_str()), (3, "failed\n"));
    let t = Instant::now();
    votes(&lab, "pve1", 2, 10);
    // Token 600 ms: about 1.4 s here; the bound leaves a loaded machine room.
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    lab.sh("pve2", "systemctl start corosync");
    assert_eq!(lab.sh("pve2", "systemctl is-active corosync"), "active\n");
    votes(&lab, "pve1", 3, 10);

    // Two of three stopped: pve1 alone is below quorum, and everything that reads quorum says so.
    lab.sh("pve2", "systemctl stop corosync");
    lab.sh("pve3", "systemctl stop corosync");
    let (code, _, _) = lab.ssh("pve3", "corosync-quorumtool -s");
    assert_ne!(code, 0, "no corosync to ask on pve3");
    let alone = votes(&lab, "pve1", 1, 10);
    assert_eq!(field(&alone, "Quorate:"), "No", "{alone}");
    assert!(
        alone.contains("Quorum:           2 Activity blocked\nFlags:            \n"),
        "{alone}"
    );
    let pvecm = lab.ssh("pve1", "pvecm status").1;
    assert!(
        pvecm.contains("Quorum:           2 Activity blocked"),
        "{pvecm}"
    );
    until(&lab, "pve1", "cat /etc/pve/.members", 5, |m| {
        m.contains("\"quorate\": 0 }")
    });
    assert!(lab
        .sh("pve1", "ha-manager status")
        .starts_with("quorum No quorum\n"));
    // Without quorum pmxcfs takes writes away: /etc/pve is read-only on that node.
    let (code, _, err) = lab.ssh("pve1", "touch /etc/pve/probe");
    assert_ne!(code, 0);
    assert!(err.contains("Read-only file system"), "{err}");
    lab.sh("pve2", "systemctl start corosync");
    let back = votes(&lab, "pve1", 2, 10);
    assert_eq!(field(&back, "Quorate:"), "Yes", "{back}");
    assert!(lab
        .sh("pve1", "ha-manager status")
        .starts_with("quorum OK\n"));
    until(
        &lab,
        "pve1",
        "touch /etc/pve/probe && echo written",
        5,
        |o| o == "written\n",
    );
}

#[test]
fn two_nodes_without_two_node_lose_quorum_with_one_down() {
    let Some(lab) = Lab::up(
        "two_nodes_without_two_node_lose_quorum_with_one_down",
        201,
        2,
        &[],
    ) else {
        return;
    };
    // As pvecm writes it: no two_node in the quorum section.
    assert!(!lab
        .sh("pve1", "cat /etc/corosync/corosync.conf")
        .contains("two_node"));
    let s = lab.sh("pve1", "corosync-quorumtool -s");
    assert!(
        s.contains("Expected votes:   2\n")
            && s.contains("Quorum:           2  \nFlags:            Quorate \n"),
        "{s}"
    );
    lab.fault("pve2", &["no-return"]);
    lab.run(&["reboot", "pve2"]);
    let s = votes(&lab, "pve1", 1, 10);
    assert_eq!(field(&s, "Quorate:"), "No", "{s}");
    assert!(s.contains("Quorum:           2 Activity blocked\n"), "{s}");
    let pvecm = lab.ssh("pve1", "pvecm status").1;
    assert!(
        pvecm.contains("Quorate:          No") && pvecm.contains("Activity blocked"),
        "{pvecm}"
    );
    assert!(lab.ssh("pve1", "touch /etc/pve/probe").0 != 0, "read-only");
    // The operator's way out (pvecm expected 1, which sets votequorum's expected votes): quorate
    // alone, and .members and /etc/pve follow although corosync's membership did not change.
    lab.sh("pve1", "pvecm expected 1");
    let s = lab.sh("pve1", "corosync-quorumtool -s");
    assert!(
        s.contains("Expected votes:   1\n") && s.contains("Quorate:          Yes\n"),
        "{s}"
    );
    until(&lab, "pve1", "cat /etc/pve/.members", 6, |m| {
        m.contains("\"quorate\": 1 }")
    });
    lab.sh("pve1", "touch /etc/pve/probe");
    lab.clear("pve2", Some("no-return"));
    assert!(lab.wait("pve2", "up", 30));
    let s = votes(&lab, "pve1", 2, 10);
    assert_eq!(field(&s, "Quorate:"), "Yes", "{s}");
}

#[test]
fn two_node_keeps_quorum_with_one_down_and_waits_for_all_at_start() {
    let Some(lab) = Lab::up(
        "two_node_keeps_quorum_with_one_down_and_waits_for_all_at_start",
        202,
        2,
        &["--quorum", "two_node"],
    ) else {
        return;
    };
    let s = lab.sh("pve1", "corosync-quorumtool -s");
    // votequorum(5): two_node sets the quorum to 1 and turns wait_for_all on.
    assert!(
        s.contains("Quorum:           1  \nFlags:            2Node Quorate WaitForAll \n"),
        "{s}"
    );
    lab.sh("pve2", "systemctl stop corosync");
    let s = votes(&lab, "pve1", 1, 10);
    assert_eq!(field(&s, "Quorate:"), "Yes", "{s}");
    // pve1 starting again while pve2 is still away: wait_for_all keeps it inquorate until it has
    // seen every node at once.
    lab.sh("pve1", "systemctl restart corosync");
    let s = until(&lab, "pve1", "corosync-quorumtool -s", 10, |o| {
        o.contains("Total votes:      1\n")
    });
    assert_eq!(field(&s, "Quorate:"), "No", "{s}");
    assert!(s.contains("Activity blocked"), "{s}");
    lab.sh("pve2", "systemctl start corosync");
    // Real corosync passes through a moment where the votes are counted but the new membership
    // is not yet quorate ("Total votes: 2", "Quorate: No", one node listed): wait for it to settle.
    let s = until(&lab, "pve1", "corosync-quorumtool -s", 30, |o| {
        o.contains("Total votes:      2\n") && o.contains("Quorate:          Yes\n")
    });
    assert_eq!(field(&s, "Quorate:"), "Yes", "{s}");
    assert!(s.contains("pve2"), "both members listed: {s}");
}

#[test]
fn last_man_standing_lowers_expected_votes_as_nodes_leave() {
    let Some(lab) = Lab::up(
        "last_man_standing_lowers_expected_votes_as_nodes_leave",
        203,
        4,
        &[
            "--quorum",
            "last_man_standing,last_man_standing_window=1000",
        ],
    ) else {
        return;
    };
    let s = lab.sh("pve1", "corosync-quorumtool -s");
    assert!(
        s.contains("Flags:            Quorate LastManStanding \n"),
        "{s}"
    );
    lab.sh("pve4", "systemctl stop corosync");
    until(&lab, "pve1", "corosync-quorumtool -s", 10, |o| {
        o.contains("Expected votes:   3\n")
    });
    lab.sh("pve3", "systemctl stop corosync");
    // Two of the four nodes left, and still quorate: without last_man_standing, 2 of 4 votes
    // are below the quorum of 3.
    let s = until(&lab, "pve1", "corosync-quorumtool -s", 10, |o| {
        o.contains("Expected votes:   2\n")
    });
    assert_eq!(field(&s, "Quorate:"), "Yes", "{s}");
    assert!(s.contains("Total votes:      2\n"), "{s}");
}

#[test]
fn a_node_with_more_votes_keeps_quorum_alone() {
    let Some(lab) = Lab::up(
        "a_node_with_more_votes_keeps_quorum_alone",
        204,
        3,
        &["--profile", "pve1:votes=3"],
    ) else {
        return;
    };
    let s = lab.sh("pve1", "pvecm status");
    assert!(
        s.contains("Expected votes:   5\n") && s.contains("Quorum:           3  \n"),
        "{s}"
    );
    assert!(
        s.contains("0x00000001          3 127.204.0.1 (local)\n"),
        "{s}"
    );
    lab.sh("pve2", "systemctl stop corosync");
    lab.sh("pve3", "systemctl stop corosync");
    let s = votes(&lab, "pve1", 3, 10);
    assert_eq!(field(&s, "Quorate:"), "Yes", "{s}");
}
