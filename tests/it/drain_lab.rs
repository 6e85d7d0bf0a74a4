//! The drain's migrations run several at once (issue 18): bounded by `--max-migrations` (or
//! the step's `max_migrations`, else the cluster's `max_workers`), each with its share of the
//! `--bwlimit` budget, every move journaled intent-first, and a run killed with several under
//! way resumed without moving any guest twice. The lab's migration model (tests/lab/README.md,
//! "Migrations") shares a node's link among its transfers, so the migrations overlap for real.

use crate::common::bin::text;
use crate::common::lab::Lab;
use crate::common::runs::{signal, Env};

/// The lab's `migrated` events: [vmid, from, to, tool, optional bwlimit=N].
fn migrations(lab: &Lab) -> Vec<Vec<String>> {
    lab.events()
        .iter()
        .map(|e| {
            e.split_whitespace()
                .skip(1)
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter(|w| w.len() >= 4 && w[0] == "migrated")
        .map(|w| w[1..].to_vec())
        .collect()
}

/// The most moves of `node` under way at once in the journal, away (`guest_moved` intent to
/// done) and back (`guest_returning` to `guest_returned`), from the events after `from`.
fn most_at_once(events: &[serde_json::Value], node: &str) -> (usize, usize) {
    let (mut away, mut back) = (
        std::collections::BTreeSet::new(),
        std::collections::BTreeSet::new(),
    );
    let (mut most_away, mut most_back) = (0, 0);
    for e in events.iter().filter(|e| e["node"] == node) {
        let vmid = e["data"]["guest"]["vmid"].as_u64().unwrap_or_default();
        match (e["event"].as_str(), e["data"]["phase"].as_str()) {
            (Some("guest_moved"), Some("intent")) => {
                away.insert(vmid);
            }
            (Some("guest_moved"), _) => {
                away.remove(&vmid);
            }
            (Some("guest_returning"), _) => {
                back.insert(vmid);
            }
            (Some("guest_returned"), _) => {
                back.remove(&vmid);
            }
            _ => {}
        }
        most_away = most_away.max(away.len());
        most_back = most_back.max(back.len());
    }
    (most_away, most_back)
}

const GUESTS: [u32; 6] = [101, 102, 103, 104, 105, 106];

/// Six running VMs of MIB MiB each on pve1, whose link is 512 MiB/s.
fn six_guests_on_pve1(lab: &Lab, mib: u32) {
    for id in GUESTS {
        lab.fault(
            "pve1",
            &[
                "guest",
                &id.to_string(),
                &format!("name=g{id}"),
                &format!("mem={mib}"),
            ],
        );
    }
    // 1 GiB at 512 MiB/s: 2 s alone, 6 s with three at once on the link.
    lab.fault("pve1", &["migration-link", "512", "1000"]);
}

#[test]
fn a_drain_runs_max_migrations_at_once_each_with_its_share_of_the_bandwidth() {
    let Some(lab) = Lab::up("drain_parallel", 152, 3, &[]) else {
        return;
    };
    let env = Env::new();
    six_guests_on_pve1(&lab, 512);
    let pb = env.playbook("drain-and-reboot.toml");
    let out = env.run(
        &lab,
        &[
            "-l",
            "pve1",
            "run",
            "--yes",
            "--max-migrations",
            "3",
            "--bwlimit",
            "300000",
            pb.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let events = env.events();
    assert_eq!(
        most_at_once(&events, "pve1"),
        (3, 3),
        "three at once away and back, never more"
    );
    // Each guest left pve1 once and came back once, with a third of the budget each way.
    let moves = migrations(&lab);
    for id in GUESTS {
        let mine: Vec<&Vec<String>> = moves.iter().filter(|m| m[0] == id.to_string()).collect();
        assert_eq!(mine.len(), 2, "{id}: {moves:?}");
        assert_eq!(mine[0][1], "pve1", "{id} away: {moves:?}");
        assert_eq!(mine[1][2], "pve1", "{id} back: {moves:?}");
        assert!(
            mine.iter()
                .all(|m| m.get(4).map(String::as_str) == Some("bwlimit=100000")),
            "{id}: {moves:?}"
        );
        assert_eq!(lab.guest(id), ("pve1".into(), "running".into()), "{id}");
    }
    assert_eq!(env.meta()["max_migrations"], 3, "recorded for a resume");
    // The step's own max_migrations and the cluster's max_workers: 2 from datacenter.cfg.
    lab.sh(
        "pve1",
        "printf 'keyboard: en-us\\nmax_workers: 2\\n' > /etc/pve/datacenter.cfg",
    );
    let env2 = Env::new();
    let pb2 = env2.playbook("drain-and-reboot.toml");
    let out = env2.run(
        &lab,
        &[
            "-l",
            "pve1",
            "run",
            "--yes",
            "-e",
            "marker=again",
            pb2.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        most_at_once(&env2.events(), "pve1"),
        (2, 2),
        "max_workers: 2"
    );
}

#[test]
fn a_drain_killed_with_migrations_under_way_resumes_without_moving_a_guest_twice() {
    let Some(lab) = Lab::up("drain_parallel_kill", 153, 3, &[]) else {
        return;
    };
    let env = Env::new();
    six_guests_on_pve1(&lab, 1024);
    // The first three migrations share a link so slow (3 MiB/s: 1 GiB each would take half an
    // hour) that they are still under way when the resume asks, however loaded the machine; the
    // link is made fast again once the resume says it is waiting for them (every tick of a
    // transfer reads its link: sim/bin/qm).
    lab.fault("pve1", &["migration-link", "3"]);
    let pb = env.playbook("drain-and-reboot.toml");
    let child = env.spawn(
        &lab,
        &[
            "-l",
            "pve1",
            "run",
            "--yes",
            "--max-migrations",
            "3",
            pb.to_str().unwrap(),
        ],
    );
    assert!(
        env.wait_event(60, |_| most_at_once(&env.events(), "pve1").0 == 3),
        "three migrations under way"
    );
    // Each migration holds its guest's `lock: migrate` while it runs (sim/bin/qm): killed once
    // the three have started on the node.
    let locked = || {
        GUESTS
            .iter()
            .filter(|id| {
                std::fs::read_to_string(
                    lab.dir
                        .path()
                        .join(format!("pve/nodes/pve1/qemu-server/{id}.conf")),
                )
                .is_ok_and(|c| c.lines().any(|l| l == "lock: migrate"))
            })
            .count()
    };
    let t = std::time::Instant::now();
    while locked() < 3 && t.elapsed() < std::time::Duration::from_secs(20) {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(locked(), 3, "three migrations started");
    // And each is sending memory (its transfer registered, its link read: sim/bin/qm).
    let transfers = || {
        std::fs::read_dir(lab.dir.path().join("cluster/transfers"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    let t = std::time::Instant::now();
    while transfers() < 3 && t.elapsed() < std::time::Duration::from_secs(20) {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(transfers(), 3, "three transfers under way");
    signal(&child, "KILL");
    let _ = child.wait_with_output();
    assert_eq!(locked(), 3, "the three migrations outlived the controller");
    let mut resume = env.spawn(&lab, &["run", "--resume", &env.run_id(), "--yes"]);
    // The resume's stderr, line by line: the link is made fast once it says it waits.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let err = resume.stderr.take().unwrap();
    let mut out = resume.stdout.take().unwrap();
    let drained = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut s);
    });
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut all = String::new();
        for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(line.clone());
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let waits = std::time::Instant::now();
    let mut said_wait = false;
    while let Ok(line) = rx.recv_timeout(std::time::Duration::from_secs(180)) {
        if line.contains("waiting for the migration of qm 10") {
            said_wait = true;
            break;
        }
        if waits.elapsed() > std::time::Duration::from_secs(180) {
            break;
        }
    }
    lab.clear("pve1", Some("migration-link"));
    let status = resume.wait().unwrap();
    drained.join().unwrap();
    let stderr = reader.join().unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(
        said_wait && stderr.contains("waiting for the migration of qm 10"),
        "the resume waited for the migrations the killed run started: {stderr}\nmoves: {:?}\nevents: {:?}",
        migrations(&lab),
        env.events()
            .iter()
            .filter(|e| e["event"].as_str().is_some_and(|k| k.starts_with("guest") || k == "run_started"))
            .map(|e| format!("{} {} {}", e["time"], e["event"], e["data"]))
            .collect::<Vec<_>>()
    );
    assert!(!stderr.contains("unlocking"), "{stderr}");
    let moves = migrations(&lab);
    for id in GUESTS {
        let mine: Vec<&Vec<String>> = moves.iter().filter(|m| m[0] == id.to_string()).collect();
        assert_eq!(
            mine.len(),
            2,
            "{id} moved away once and back once: {moves:?}"
        );
        assert_eq!(lab.guest(id), ("pve1".into(), "running".into()), "{id}");
    }
    // The resume kept the run's --max-migrations.
    let events = env.events();
    let resumed = events
        .iter()
        .rposition(|e| e["event"] == "run_started")
        .expect("the resume's start");
    let (away, back) = most_at_once(&events[resumed..], "pve1");
    assert!(away <= 3 && back == 3, "{away} {back}");
    assert_eq!(lab.boots("pve1"), 2, "rebooted exactly once");
}
