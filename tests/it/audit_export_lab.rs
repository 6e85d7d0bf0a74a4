//! The audit for machines and for cron: `--format openmetrics` read back by a real OpenMetrics
//! parser (Debian's python3-prometheus-client, as a Prometheus scraper would), `-o FILE.prom`
//! written atomically, and `--accept FILE` (accepted findings) through the binary on the lab.

use std::collections::BTreeMap;
use std::process::Command;

use crate::common::bin::{pvefleet, text};
use crate::common::lab::Lab;

/// Parse OpenMetrics text with prometheus_client's parser (`text_string_to_metric_families`,
/// which raises on anything the OpenMetrics 1.0 grammar refuses, a missing `# EOF` included) and
/// return every sample as `[family, type, name, labels, value]` in JSON.
fn parse_openmetrics(text: &str) -> Vec<serde_json::Value> {
    let script = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = []
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        out.append([fam.name, fam.type, s.name, s.labels, s.value])
print(json.dumps(out))
"#;
    // Debian's python3 (the package is installed for it), not a pyenv one earlier in PATH.
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 (tests/lab/setup.sh installs python3-prometheus-client)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the OpenMetrics parser refused the output: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn grade_value(g: &str) -> f64 {
    match g {
        "SKIP" => -1.0,
        "PASS" => 0.0,
        "WARN" => 1.0,
        "FAIL" => 2.0,
        other => panic!("grade {other}"),
    }
}

/// (node, check) -> worst grade value, from the JSON report.
fn json_grades(v: &serde_json::Value) -> BTreeMap<(String, String), f64> {
    let mut out: BTreeMap<(String, String), f64> = BTreeMap::new();
    for n in v["nodes"].as_array().unwrap() {
        for f in n["findings"].as_array().unwrap() {
            let key = (
                n["node"].as_str().unwrap().to_string(),
                f["check"].as_str().unwrap().to_string(),
            );
            let g = grade_value(f["grade"].as_str().unwrap());
            let e = out.entry(key).or_insert(g);
            *e = e.max(g);
        }
    }
    out
}

#[test]
fn openmetrics_output_parses_and_matches_the_json_report() {
    let Some(lab) = Lab::up("openmetrics_output", 94, 2, &[]) else {
        return;
    };
    lab.fault("pve1", &["clock", "+90"]);
    let dir = tempfile::tempdir().unwrap();
    let prom = dir.path().join("pvefleet.prom");
    let json = dir.path().join("report.json");
    let inv = lab.inventory();
    // One audit, both documents: `-o x.prom` takes the format from the extension.
    let out = pvefleet(&[
        "-i",
        inv.to_str().unwrap(),
        "audit",
        "-o",
        prom.to_str().unwrap(),
        "--save-json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "no temporary file left behind: {names:?}");
    let metrics = std::fs::read_to_string(&prom).unwrap();
    assert!(metrics.ends_with("# EOF\n"), "{metrics}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let samples = parse_openmetrics(&metrics);

    let mut grades = BTreeMap::new();
    let mut offsets = BTreeMap::new();
    let mut counts = BTreeMap::new();
    for s in &samples {
        let labels = &s[3];
        let label = |k: &str| labels[k].as_str().unwrap_or_default().to_string();
        assert_eq!(s[1], "gauge", "{s}");
        let value = s[4].as_f64().unwrap();
        match s[2].as_str().unwrap() {
            "pvefleet_check_grade" => {
                let dup = grades.insert((label("node"), label("check")), value);
                assert!(dup.is_none(), "one sample per node and check: {s}");
            }
            "pvefleet_clock_offset_seconds" => {
                offsets.insert(label("node"), value);
            }
            "pvefleet_findings" => {
                counts.insert(label("grade"), value);
            }
            _ => {}
        }
    }
    assert_eq!(grades, json_grades(&report), "grades as in the JSON report");
    assert_eq!(
        grades[&("pve1".to_string(), "clock.offset".to_string())],
        2.0
    );
    for n in report["nodes"].as_array().unwrap() {
        let node = n["node"].as_str().unwrap();
        assert_eq!(
            offsets[node],
            n["clock"]["offset_s"].as_f64().unwrap(),
            "{node}"
        );
    }
    assert!((89.0..91.0).contains(&offsets["pve1"]), "{offsets:?}");
    for g in ["pass", "warn", "fail", "skip"] {
        assert_eq!(
            counts[&g.to_uppercase()],
            report["summary"][g].as_f64().unwrap(),
            "{g}"
        );
    }
    let families: Vec<&str> = samples.iter().map(|s| s[0].as_str().unwrap()).collect();
    for f in [
        "pvefleet_cluster_check_grade",
        "pvefleet_node_audited",
        "pvefleet_audit_timestamp_seconds",
    ] {
        assert!(families.contains(&f), "{f} in {families:?}");
    }
    // The same through --format on stdout; --compare has no OpenMetrics form.
    let out = pvefleet(&[
        "-i",
        inv.to_str().unwrap(),
        "audit",
        "--format",
        "openmetrics",
        "--probes",
        "services",
    ]);
    assert!(!parse_openmetrics(&text(&out.stdout)).is_empty());
}
