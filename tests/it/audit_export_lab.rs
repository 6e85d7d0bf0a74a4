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
    // The same through --format on stdout; --compare has no OpenMetrics form (usage, 64).
    assert!(!openmetrics_of(&lab, &["--probes", "services"]).is_empty());
    let out = pvefleet(&[
        "-i",
        inv.to_str().unwrap(),
        "audit",
        "--format",
        "openmetrics",
        "--compare",
        json.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
}

/// `audit --format openmetrics EXTRA...` on the lab, parsed.
fn openmetrics_of(lab: &Lab, extra: &[&str]) -> Vec<serde_json::Value> {
    let inv = lab.inventory();
    let mut args = vec![
        "-i",
        inv.to_str().unwrap(),
        "audit",
        "--format",
        "openmetrics",
    ];
    args.extend_from_slice(extra);
    parse_openmetrics(&text(&pvefleet(&args).stdout))
}

fn audit(lab: &Lab, extra: &[&str]) -> (Option<i32>, serde_json::Value, String) {
    let inv = lab.inventory();
    let mut args = vec!["-i", inv.to_str().unwrap(), "audit", "--format", "json"];
    args.extend_from_slice(extra);
    let out = pvefleet(&args);
    let v = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.code(), v, text(&out.stderr))
}

/// The node's findings of `check` as (grade, detail).
fn findings_of(v: &serde_json::Value, node: &str, check: &str) -> Vec<(String, String)> {
    v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["node"] == node)
        .flat_map(|n| n["findings"].as_array().unwrap().clone())
        .filter(|f| f["check"] == check)
        .map(|f| {
            (
                f["grade"].as_str().unwrap().to_string(),
                f["detail"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The TLS and QEMU checks see the lab's real certificates and `qm status --verbose`, and
/// `--accept` takes an accepted FAIL out of the exit code and of `--compare`'s new problems
/// while an expired acceptance applies no more.
#[test]
fn certificates_outdated_qemu_and_accepted_findings() {
    let Some(lab) = Lab::up("certificates_outdated_qemu", 95, 2, &[]) else {
        return;
    };
    lab.fault("pve1", &["guests"]);
    lab.fault("pve1", &["qemu-upgrade", "9.2.0-5"]);
    lab.fault("pve2", &["cert-expires", "10"]);
    lab.fault("pve2", &["cert-expires", "-1", "proxy"]);
    let (code, v, err) = audit(&lab, &[]);
    assert_eq!(code, Some(2), "{err}");
    let qemu = findings_of(&v, "pve1", "qemu.outdated");
    assert_eq!(qemu.len(), 1, "{qemu:?}");
    assert_eq!(qemu[0].0, "WARN");
    assert_eq!(
        qemu[0].1,
        "2 running VM(s) not on the installed QEMU 9.2.0: 100 web (9.0.2), 101 db (9.0.2)"
    );
    assert_eq!(
        findings_of(&v, "pve2", "qemu.outdated")[0],
        ("PASS".to_string(), "no running VMs".to_string())
    );
    let ssl = &findings_of(&v, "pve2", "tls.pve-ssl")[0];
    assert_eq!(ssl.0, "WARN", "{ssl:?}");
    assert!(
        ssl.1.contains("in 9 days") || ssl.1.contains("in 10 days"),
        "{ssl:?}"
    );
    let proxy = &findings_of(&v, "pve2", "tls.pveproxy-ssl")[0];
    assert_eq!(proxy.0, "FAIL", "{proxy:?}");
    assert!(proxy.1.contains("expired on"), "{proxy:?}");
    let pve1_ssl = &findings_of(&v, "pve1", "tls.pve-ssl")[0];
    assert_eq!(pve1_ssl.0, "PASS", "{pve1_ssl:?}");
    assert!(
        findings_of(&v, "pve1", "tls.pveproxy-ssl").is_empty(),
        "no custom certificate: no finding"
    );

    // A restart from the host and a migration away and back each start a new QEMU.
    lab.sh("pve1", "qm stop 100 && qm start 100");
    let (_, v, _) = audit(&lab, &["--probes", "qemu"]);
    assert!(
        findings_of(&v, "pve1", "qemu.outdated")[0]
            .1
            .ends_with(": 101 db (9.0.2)"),
        "{v}"
    );
    lab.sh("pve1", "qm migrate 101 pve2 --online");
    lab.sh("pve2", "qm migrate 101 pve1 --online");
    let (_, v, _) = audit(&lab, &["--probes", "qemu"]);
    assert_eq!(findings_of(&v, "pve1", "qemu.outdated")[0].0, "PASS", "{v}");
    // A dist-upgrade that brings a new pve-qemu-kvm leaves both on the one they run.
    lab.fault("pve1", &["pending", "pve-qemu-kvm=9.2.1-1"]);
    lab.sh("pve1", "apt-get dist-upgrade -y >/dev/null");
    let (_, v, _) = audit(&lab, &["--probes", "qemu"]);
    assert_eq!(
        findings_of(&v, "pve1", "qemu.outdated")[0].1,
        "2 running VM(s) not on the installed QEMU 9.2.1: 100 web (9.2.0), 101 db (9.2.0)"
    );

    // Accepted: the expired proxy certificate; an acceptance of the QEMU check that expired.
    let dir = tempfile::tempdir().unwrap();
    let accept = dir.path().join("accept.toml");
    std::fs::write(
        &accept,
        "[[accept]]\ncheck = \"tls.pveproxy-ssl\"\nnode = \"pve2\"\nuntil = 2099-12-31\nreason = \"test certificate\"\n\n\
         [[accept]]\ncheck = \"tls.pve-ssl\"\nnode = \"*\"\nuntil = 2020-01-01\nreason = \"was renewed\"\n",
    )
    .unwrap();
    let a = accept.to_str().unwrap();
    let (code, v, err) = audit(&lab, &["--accept", a]);
    assert_eq!(
        code,
        Some(1),
        "the FAIL is accepted, the WARN is not: {err}"
    );
    assert_eq!(v["accepted"][0]["node"], "pve2", "{v}");
    assert_eq!(v["accepted"][0]["finding"]["check"], "tls.pveproxy-ssl");
    assert_eq!(v["accepted"][0]["reason"], "test certificate");
    assert_eq!(v["expired_acceptances"][0]["check"], "tls.pve-ssl", "{v}");
    assert_eq!(v["summary"]["accepted"], 1);
    crate::audit_lab::schema_check(&v);
    let inv = lab.inventory();
    let out = pvefleet(&["-i", inv.to_str().unwrap(), "audit", "--accept", a]);
    let terminal = text(&out.stdout);
    assert!(
        terminal.contains("FAIL tls.pveproxy-ssl [pve2]")
            && terminal.contains("accepted until 2099-12-31: test certificate"),
        "{terminal}"
    );
    assert!(
        terminal.contains("EXPIRED acceptance: tls.pve-ssl on * was accepted until 2020-01-01"),
        "{terminal}"
    );
    // In OpenMetrics the accepted check keeps its grade and has a pvefleet_check_accepted sample.
    let accepted: Vec<String> = openmetrics_of(&lab, &["--probes", "tls", "--accept", a])
        .iter()
        .filter(|s| s[2] == "pvefleet_check_accepted")
        .map(|s| {
            format!(
                "{} {} {}",
                s[3]["node"],
                s[3]["check"],
                s[4].as_f64().unwrap()
            )
        })
        .collect();
    assert_eq!(accepted, ["\"pve2\" \"tls.pveproxy-ssl\" 1"]);
    // --compare from no earlier report: everything is new but the accepted finding.
    let none = dir.path().join("none.json");
    let (_, c, _) = audit(&lab, &["--accept", a, "--compare", none.to_str().unwrap()]);
    let new: Vec<String> = c["new"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{} {}",
                p["node"].as_str().unwrap(),
                p["finding"]["check"].as_str().unwrap()
            )
        })
        .collect();
    assert!(new.contains(&"pve2 tls.pve-ssl".to_string()), "{new:?}");
    assert!(
        !new.contains(&"pve2 tls.pveproxy-ssl".to_string()),
        "{new:?}"
    );

    // Every check of a real report is a name the file may use: accept them all, exit 0.
    let mut all = String::new();
    let mut checks: Vec<String> = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|n| n["findings"].as_array().unwrap().clone())
        .chain(v["cluster"].as_array().unwrap().clone())
        .map(|f| f["check"].as_str().unwrap().to_string())
        .collect();
    checks.sort();
    checks.dedup();
    for c in &checks {
        all.push_str(&format!(
            "[[accept]]\ncheck = \"{c}\"\nnode = \"*\"\nuntil = 2099-01-01\nreason = \"all\"\n"
        ));
    }
    std::fs::write(&accept, &all).unwrap();
    let (code, _, err) = audit(&lab, &["--accept", a]);
    assert_eq!(code, Some(0), "{checks:?}: {err}");
    // A name no audit reports is an error at its place in the file.
    std::fs::write(
        &accept,
        "[[accept]]\ncheck = \"tls.pve_ssl\"\nnode = \"*\"\nuntil = 2099-01-01\nreason = \"typo\"\n",
    )
    .unwrap();
    let (code, _, err) = audit(&lab, &["--accept", a]);
    assert_eq!(code, Some(65), "{err}");
    assert!(
        err.contains(&format!("{a}:2:9: unknown check `tls.pve_ssl`")),
        "{err}"
    );
}
