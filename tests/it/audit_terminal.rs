//! `pvefleet audit` as an operator sees it: the matrix on a real terminal (tmux) at 80 and 120
//! columns, and `audit --compare OLD.json` through the binary on the lab.

use std::collections::BTreeSet;
use std::process::Command;

use crate::common::bin::{json_of, pvefleet};
use crate::common::lab::Lab;

fn shell(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Kills the tmux server (one per terminal, on its own socket) when the test ends, passed or
/// not.
struct Session(String);

impl Drop for Session {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.0, "kill-server"])
            .status();
    }
}

/// Run `pvefleet audit ARGS` in a detached tmux session of `cols` columns and return the whole
/// screen and scrollback with wrapped lines joined (`capture-pane -J`), so a line longer than
/// the terminal shows as one long line.
fn audit_on_terminal(lab: &Lab, cols: usize, args: &str) -> String {
    let session = format!(
        "pvefleet-audit-{}-{cols}-{}",
        std::process::id(),
        args.len()
    );
    let cmd = format!(
        "{} -i {} audit {args}; echo AUDIT-EXIT-$?; sleep 60",
        env!("CARGO_BIN_EXE_pvefleet"),
        lab.inventory().display(),
    );
    crate::common::sshd::sh(&format!(
        "tmux -L {session} new-session -d -s {session} -x {cols} -y 50 {}",
        shell(&cmd)
    ));
    let _kill = Session(session.clone());
    let mut screen = String::new();
    for _ in 0..120 {
        std::thread::sleep(std::time::Duration::from_millis(250));
        screen = crate::common::sshd::sh(&format!(
            "tmux -L {session} capture-pane -p -J -S - -E - -t {session}"
        ));
        if screen.contains("AUDIT-EXIT-") {
            break;
        }
    }
    assert!(
        screen.contains("AUDIT-EXIT-"),
        "the audit did not finish:\n{screen}"
    );
    screen
}

fn longest(screen: &str) -> usize {
    screen.lines().map(|l| l.chars().count()).max().unwrap_or(0)
}

#[test]
fn the_matrix_fits_80_and_120_column_terminals() {
    let Some(lab) = Lab::up(
        "the_matrix_fits_80_and_120_column_terminals",
        196,
        3,
        &["--profile", "pve3:kernel=6.5.13-6-pve"],
    ) else {
        return;
    };
    lab.fault("pve1", &["clock", "+90"]);
    lab.fault("pve2", &["rrd-zero", "2"]);
    lab.fault("pve3", &["offload-hang"]);
    crate::common::wait::wait_rrd_errors(&lab, &["pve2"]);

    for cols in [80, 120] {
        let screen = audit_on_terminal(&lab, cols, "");
        assert!(
            longest(&screen) <= cols,
            "a line is longer than the {cols}-column terminal:\n{screen}"
        );
        // Short cells: grade and a few characters of value; the detail is in the findings.
        let row = |node: &str| {
            screen
                .lines()
                .filter(|l| l.starts_with(&format!("{node} ")))
                .collect::<Vec<_>>()
                .join(" ")
        };
        // The lab's clock fault is +90 s; measured, it is within a few ms of that.
        let pve1 = row("pve1");
        assert!(
            pve1.contains("FAIL +90.0s") || pve1.contains("FAIL +89.9s"),
            "{screen}"
        );
        assert!(row("pve2").contains("FAIL 2 files"), "{screen}");
        assert!(row("pve3").contains("FAIL eno1"), "{screen}");
        assert!(row("pve3").contains("WARN iommu"), "{screen}");
        assert!(
            screen.contains("FAIL rrd.zero_byte [pve2] 2 0-byte RRD file(s):"),
            "full detail below the matrix:\n{screen}"
        );
        let headers: Vec<&str> = screen.lines().filter(|l| l.starts_with("node ")).collect();
        let all_in_one = headers
            .iter()
            .any(|h| h.contains("clock") && h.contains("ceph"));
        if cols == 120 {
            assert!(all_in_one, "one block at 120 columns:\n{screen}");
            assert_eq!(headers.len(), 1, "{screen}");
        } else {
            assert!(
                !all_in_one,
                "at 80 columns the checks wrap into blocks:\n{screen}"
            );
            assert_eq!(headers.len(), 2, "{screen}");
            let every: String = headers.join(" ");
            for check in [
                "clock", "rrd", "offload", "gpu", "cluster", "services", "updates", "ceph",
            ] {
                assert!(every.contains(check), "{check} missing:\n{screen}");
            }
        }
        assert!(
            screen.contains("AUDIT-EXIT-2"),
            "failures give exit 2:\n{screen}"
        );
    }
    // --wide: each cell the grade and its whole detail (it was cut at 28 characters), the
    // same text as the finding below the matrix; one line per node (joined by capture -J).
    let screen = audit_on_terminal(&lab, 120, "--wide");
    let pve1 = screen
        .lines()
        .find(|l| l.contains(" pve1 "))
        .unwrap_or_else(|| panic!("no pve1 row:\n{screen}"));
    let detail = screen
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("FAIL clock.offset [pve1] "))
        .unwrap_or_else(|| panic!("no clock finding:\n{screen}"))
        .trim_end();
    assert!(detail.chars().count() > 33, "a long detail: {detail}");
    assert!(
        pve1.contains(&format!("FAIL {detail}")),
        "the whole detail in the wide cell ({detail}):\n{screen}"
    );
}

/// `v` is valid against the shipped schema at `path` (relative to the crate root).
fn assert_valid(v: &serde_json::Value, path: &str) {
    let text = std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(v)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "not valid against {path}: {errors:#?}");
}

/// (node, check) of each problem in one list of the comparison JSON.
fn keys(v: &serde_json::Value, list: &str) -> BTreeSet<(String, String)> {
    v[list]
        .as_array()
        .unwrap_or_else(|| panic!("no {list} in {v}"))
        .iter()
        .map(|p| {
            (
                p["node"].as_str().unwrap().to_string(),
                p["finding"]["check"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn compare_shows_what_is_new_resolved_and_still_open_since_an_earlier_audit() {
    let Some(lab) = Lab::up(
        "compare_shows_what_is_new_resolved_and_still_open_since_an_earlier_audit",
        197,
        3,
        &[],
    ) else {
        return;
    };
    let inv = lab.inventory();
    let inv = inv.to_str().unwrap();
    let old = lab.dir.path().join("old.json");
    let last = lab.dir.path().join("last.json");
    lab.fault("pve1", &["clock", "+90"]);
    lab.fault("pve3", &["offload-hang"]);
    let first = pvefleet(&["-i", inv, "audit", "--save-json", old.to_str().unwrap()]);
    assert_eq!(first.status.code(), Some(2), "failures give exit 2");
    assert!(old.exists());

    // The clock is fixed, two RRD files break; the NIC still hangs.
    lab.clear("pve1", Some("clock"));
    lab.fault("pve2", &["rrd-zero", "2"]);
    crate::common::wait::wait_rrd_errors(&lab, &["pve2"]);
    let out = pvefleet(&[
        "-i",
        inv,
        "audit",
        "--compare",
        old.to_str().unwrap(),
        "--save-json",
        last.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(1), "something new: exit 1");
    let v = json_of(&out);
    let pair = |n: &str, c: &str| (n.to_string(), c.to_string());
    let new = keys(&v, "new");
    let resolved = keys(&v, "resolved");
    let open = keys(&v, "still_open");
    assert!(new.contains(&pair("pve2", "rrd.zero_byte")), "{v:#}");
    assert!(resolved.contains(&pair("pve1", "clock.offset")), "{v:#}");
    assert!(
        resolved.contains(&pair("cluster", "cluster.clock_spread")),
        "{v:#}"
    );
    assert!(open.contains(&pair("pve3", "offload.hang")), "{v:#}");
    assert!(
        new.is_disjoint(&resolved) && new.is_disjoint(&open),
        "{v:#}"
    );
    assert_eq!(v["summary"]["new"], new.len());
    assert_valid(&v, "docs/audit-compare.schema.json");
    // The saved report is a whole audit report, ready for the next comparison.
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&last).unwrap()).unwrap();
    assert_eq!(saved["version"], 1);
    assert_eq!(saved["nodes"].as_array().unwrap().len(), 3);
    assert_valid(&saved, "docs/audit-report.schema.json");

    // Against that saved report nothing is new: exit 0, terminal text says so.
    let out = pvefleet(&["-i", inv, "audit", "--compare", last.to_str().unwrap()]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "nothing new: exit 0\n{text}");
    assert!(text.starts_with("Compared with the audit of "), "{text}");
    assert!(!text.contains("New ("), "{text}");
    assert!(text.contains("Still open ("), "{text}");
    assert!(text.contains("FAIL offload.hang [pve3]"), "{text}");
    assert!(
        text.lines()
            .last()
            .unwrap()
            .starts_with("0 new, 0 worse, 0 resolved, "),
        "{text}"
    );

    // A file that is not an audit report is bad input, with where it went wrong.
    let junk = lab.dir.path().join("junk.json");
    std::fs::write(&junk, "{\"version\": 1,\n \"nodes\": 3}\n").unwrap();
    let out = pvefleet(&["-i", inv, "audit", "--compare", junk.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(65));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("junk.json:2:"), "{err}");
}
