//! `pvefleet audit` against the lab: injected faults give exactly their findings, a clean lab
//! passes, an unreachable node has its row, and every output format is well-formed.

use std::collections::BTreeSet;

use crate::common::bin::{json_of, pvefleet};
use crate::common::lab::Lab;

fn audit_json(lab: &Lab) -> (Option<i32>, serde_json::Value) {
    let inv = lab.inventory();
    let out = pvefleet(&["-i", inv.to_str().unwrap(), "audit", "--format", "json"]);
    (out.status.code(), json_of(&out))
}

/// (node, check, grade) of every non-PASS finding, cluster findings as node "cluster".
/// WARN and FAIL findings (SKIP is "not applicable here", e.g. ceph.health on a lab without Ceph).
fn problems(v: &serde_json::Value) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for n in v["nodes"].as_array().unwrap() {
        for f in n["findings"].as_array().unwrap() {
            if f["grade"] != "PASS" && f["grade"] != "SKIP" {
                out.insert((
                    n["node"].as_str().unwrap().to_string(),
                    f["check"].as_str().unwrap().to_string(),
                    f["grade"].as_str().unwrap().to_string(),
                ));
            }
        }
    }
    for f in v["cluster"].as_array().unwrap() {
        if f["grade"] != "PASS" && f["grade"] != "SKIP" {
            out.insert((
                "cluster".into(),
                f["check"].as_str().unwrap().into(),
                f["grade"].as_str().unwrap().into(),
            ));
        }
    }
    out
}

fn set(items: &[(&str, &str, &str)]) -> BTreeSet<(String, String, String)> {
    items
        .iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect()
}

/// `v` is valid against the shipped audit report schema.
pub(crate) fn schema_check(v: &serde_json::Value) {
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!(
            "{}/docs/audit-report.schema.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(v)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "audit JSON does not match its schema: {errors:#?}"
    );
}

#[test]
fn injected_faults_give_exactly_their_findings() {
    let Some(lab) = Lab::up(
        "injected_faults_give_exactly_their_findings",
        70,
        3,
        &["--profile", "pve3:kernel=6.5.13-6-pve"],
    ) else {
        return;
    };
    lab.fault("pve1", &["clock", "+90"]);
    lab.fault("pve2", &["rrd-zero", "2"]);
    lab.fault("pve3", &["offload-hang"]);
    crate::common::wait::wait_rrd_errors(&lab, &["pve2"]);
    let (code, v) = audit_json(&lab);
    assert_eq!(code, Some(2), "failures give exit 2");
    schema_check(&v);
    assert_eq!(
        problems(&v),
        set(&[
            ("pve1", "clock.offset", "FAIL"),
            ("pve1", "clock.ntp", "WARN"),
            ("cluster", "cluster.clock_spread", "FAIL"),
            ("pve2", "rrd.zero_byte", "FAIL"),
            ("pve2", "rrd.journal_errors", "FAIL"),
            ("pve3", "offload.hang", "FAIL"),
            ("pve3", "gpu.iommu", "WARN"),
        ])
    );
    let pve1 = &v["nodes"][0];
    let offset = pve1["clock"]["offset_s"].as_f64().unwrap();
    assert!((89.0..91.0).contains(&offset), "{offset}");
    assert!(pve1["clock"]["error_s"].as_f64().unwrap() < 0.05);
    assert_eq!(v["nodes"][1]["cells"]["rrd"]["grade"], "FAIL");
    assert!(v["nodes"][1]["cells"]["rrd"]["detail"]
        .as_str()
        .unwrap()
        .starts_with("2 0-byte RRD file(s)"));
    // Every problem found carries its remediation: the shipped playbook that fixes it.
    for f in v["findings"].as_array().unwrap() {
        if f["finding"]["grade"] != "SKIP" {
            assert!(f["finding"]["remediation"].is_string(), "{f}");
        }
    }
    assert!(v["findings"]
        .to_string()
        .contains("pvefleet run playbooks/fix-rrd.toml"));

    // The same audit as Markdown and HTML.
    let inv = lab.inventory();
    let md = pvefleet(&["-i", inv.to_str().unwrap(), "audit", "--format", "markdown"]);
    let md = String::from_utf8(md.stdout).unwrap();
    let table: Vec<&str> = md.lines().filter(|l| l.starts_with('|')).take(5).collect();
    let cols = |l: &str| l.replace("\\|", "").matches('|').count();
    assert_eq!(table.len(), 5, "{md}");
    assert!(table.iter().all(|l| cols(l) == cols(table[0])), "{md}");
    assert!(table[1].starts_with("|---|"));
    assert!(md.contains("- **FAIL** `rrd.zero_byte` on `pve2`"), "{md}");

    let html_path = lab.dir.path().join("audit.html");
    let out = pvefleet(&[
        "-i",
        inv.to_str().unwrap(),
        "audit",
        "--format",
        "html",
        "-o",
        html_path.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let html = std::fs::read_to_string(&html_path).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>") && html.trim_end().ends_with("</html>"));
    assert!(
        !html.contains("src=\"http") && !html.contains("href=\"http") && !html.contains("@import"),
        "self-contained"
    );
    assert_eq!(html.matches("<tr").count(), html.matches("</tr>").count());
    // The offset as measured (89 to 91 s, as above): +90.0 here, off by a little under load.
    assert!(
        ["+89.", "+90."]
            .iter()
            .any(|o| html.contains(&format!("<td class=\"FAIL\">FAIL<small>{o}"))),
        "coloured matrix cells: {}",
        html.lines()
            .filter(|l| l.contains("class=\"FAIL\""))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn a_clean_lab_passes_everything() {
    let Some(lab) = Lab::up("a_clean_lab_passes_everything", 71, 3, &[]) else {
        return;
    };
    let (code, v) = audit_json(&lab);
    assert_eq!(problems(&v), BTreeSet::new());
    assert_eq!(code, Some(0));
    assert_eq!(v["summary"]["fail"], 0);
    assert_eq!(v["summary"]["warn"], 0);
    assert!(v["summary"]["pass"].as_u64().unwrap() >= 3 * 15);
    schema_check(&v);
    // Terminal output: one row per node, and the summary line.
    let inv = lab.inventory();
    let out = pvefleet(&["-i", inv.to_str().unwrap(), "audit"]);
    let text = String::from_utf8(out.stdout).unwrap();
    for n in ["pve1", "pve2", "pve3"] {
        assert!(
            text.lines().any(|l| l.split_whitespace().next() == Some(n)),
            "{text}"
        );
    }
    assert!(text.contains("3 nodes (0 not audited): "), "{text}");
}

#[test]
fn an_unreachable_node_is_a_row_of_its_own() {
    let Some(lab) = Lab::up("an_unreachable_node_is_a_row_of_its_own", 72, 3, &[]) else {
        return;
    };
    lab.fault("pve2", &["unreachable"]);
    let (code, v) = audit_json(&lab);
    assert_eq!(code, Some(3), "unreachable nodes give exit 3");
    schema_check(&v);
    let rows = v["nodes"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[1]["node"], "pve2");
    assert_eq!(rows[1]["status"], "unreachable");
    assert!(rows[1]["error"].as_str().is_some());
    assert_eq!(rows[0]["status"], "ok");
    assert!(problems(&v).contains(&("cluster".into(), "cluster.nodes_down".into(), "FAIL".into())));
    let inv = lab.inventory();
    let out = pvefleet(&["-i", inv.to_str().unwrap(), "audit", "--format", "html"]);
    let html = String::from_utf8(out.stdout).unwrap();
    // One cell across the status and every check column (there are as many checks as probes).
    let colspan = v["checks"].as_array().unwrap().len() + 1;
    assert!(
        html.contains(&format!(
            "<td class=\"DOWN\" colspan=\"{colspan}\">unreachable"
        )),
        "unreachable row in the page"
    );
}

#[test]
fn probe_command_lists_and_runs_single_probes() {
    let Some(lab) = Lab::up(
        "probe_command_lists_and_runs_single_probes",
        73,
        2,
        &["--profile", "pve2:gpu=none"],
    ) else {
        return;
    };
    let list = pvefleet(&["probe", "--list"]);
    let text = String::from_utf8(list.stdout).unwrap();
    for p in ["clock", "rrd", "offload", "gpu", "cluster", "services"] {
        assert!(text.contains(p), "{text}");
    }
    let inv = lab.inventory();
    let out = pvefleet(&["-i", inv.to_str().unwrap(), "--json", "probe", "gpu"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["nodes"][0]["facts"]["gpu"]["gpus"][0]["id"], "8086:3e92");
    assert_eq!(v["nodes"][0]["facts"]["gpu"]["bootloader"], "grub");
    let devices = v["nodes"][1]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == "gpu.devices")
        .expect("a gpu.devices finding");
    assert_eq!(devices["grade"], "SKIP", "no GPU: SKIP with the reason");
    assert_eq!(devices["detail"], "no display-class PCI device");
    let bad = pvefleet(&["-i", inv.to_str().unwrap(), "probe", "gpuu"]);
    assert_eq!(bad.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown probe `gpuu`"));
}

#[test]
fn gpu_probe_reports_the_boot_loader_of_each_profile() {
    let Some(lab) = Lab::up(
        "gpu_probe_reports_the_boot_loader_of_each_profile",
        193,
        3,
        &[
            "--profile",
            "pve2:systemd-boot",
            "--profile",
            "pve3:grub-pbt,bios",
        ],
    ) else {
        return;
    };
    let inv = lab.inventory();
    let out = pvefleet(&["-i", inv.to_str().unwrap(), "--json", "probe", "gpu"]);
    let v = json_of(&out);
    let row = |i: usize| &v["nodes"][i]["facts"]["gpu"];
    let expect = [
        // (loader, file, refresh, booted by UEFI): pve1 is the default UEFI + GRUB node.
        ("grub", "/etc/default/grub", "update-grub", true),
        (
            "systemd-boot",
            "/etc/kernel/cmdline",
            "proxmox-boot-tool refresh",
            true,
        ),
        (
            "grub-pbt",
            "/etc/default/grub",
            "proxmox-boot-tool refresh",
            false,
        ),
    ];
    for (i, (loader, file, refresh, uefi)) in expect.into_iter().enumerate() {
        let g = row(i);
        assert_eq!(g["bootloader"], loader, "pve{}: {g}", i + 1);
        assert_eq!(g["boot"]["loader"], loader);
        assert_eq!(g["boot"]["cmdline_file"], file);
        assert_eq!(g["boot"]["refresh"], serde_json::json!([refresh]));
        assert_eq!(g["boot"]["uefi"], uefi, "pve{}: {g}", i + 1);
    }
    assert_eq!(row(2)["boot"]["esps"][0]["uuid"], "5D5C-1A2B");
    assert_eq!(row(2)["boot"]["esps"][0]["grub"], true);
    let finding = v["nodes"][2]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == "gpu.bootloader")
        .unwrap();
    assert_eq!(
        finding["detail"],
        "GRUB managed by proxmox-boot-tool: kernel command line in /etc/default/grub, applied by proxmox-boot-tool refresh"
    );
}

/// The findings of one node for one probe, from `pvefleet --json probe NAME`.
fn probe_findings(lab: &Lab, probe: &str) -> (serde_json::Value, Vec<serde_json::Value>) {
    let inv = lab.inventory();
    let out = pvefleet(&["-i", inv.to_str().unwrap(), "--json", "probe", probe]);
    let v = json_of(&out);
    let node = v["nodes"][0].clone();
    let findings = node["findings"].as_array().unwrap().clone();
    (node, findings)
}

fn finding<'a>(findings: &'a [serde_json::Value], check: &str) -> &'a serde_json::Value {
    findings
        .iter()
        .find(|f| f["check"] == check)
        .unwrap_or_else(|| panic!("no {check} in {findings:?}"))
}

#[test]
fn chrony_without_sources_warns_even_when_timedatectl_is_silent() {
    let Some(lab) = Lab::up(
        "chrony_without_sources_warns_even_when_timedatectl_is_silent",
        134,
        1,
        &[],
    ) else {
        return;
    };
    let (_, findings) = probe_findings(&lab, "clock");
    assert_eq!(finding(&findings, "clock.ntp")["grade"], "PASS");
    // chronyd with no source, and no timedatectl to ask (an old systemd, or not installed).
    lab.sh(
        "pve1",
        "mkdir -p /etc/chrony && printf 'driftfile /var/lib/chrony/chrony.drift\\n' > /etc/chrony/chrony.conf && rm /usr/bin/timedatectl",
    );
    let (node, findings) = probe_findings(&lab, "clock");
    assert_eq!(
        node["facts"]["clock"]["ntp_synchronized"],
        serde_json::Value::Null
    );
    assert_eq!(
        node["facts"]["clock"]["missing"],
        serde_json::json!(["timedatectl"])
    );
    let ntp = finding(&findings, "clock.ntp");
    assert_eq!(ntp["grade"], "WARN");
    assert_eq!(
        ntp["detail"],
        "chrony is not synchronised (stratum 0, reference 00000000 (), leap Not synchronised)"
    );
}

#[test]
fn a_standalone_node_is_not_failed_for_corosync() {
    let Some(lab) = Lab::up(
        "a_standalone_node_is_not_failed_for_corosync",
        194,
        1,
        &["--standalone"],
    ) else {
        return;
    };
    // Outside a cluster there is no corosync.conf, and corosync does not run; the host's
    // corosync package (installed for the cluster labs) does not show through.
    assert_eq!(
        lab.sh(
            "pve1",
            "ls /etc/pve/corosync.conf /etc/corosync/corosync.conf /usr/sbin/corosync 2>/dev/null | wc -l; pgrep -c corosync; systemctl is-active corosync; true"
        ),
        "0\n0\ninactive\n"
    );
    let (_, findings) = probe_findings(&lab, "services");
    let corosync = finding(&findings, "services.corosync");
    assert_eq!(corosync["grade"], "SKIP", "{corosync}");
    assert!(corosync["detail"]
        .as_str()
        .unwrap()
        .starts_with("standalone node"));
    assert!(findings
        .iter()
        .filter(|f| f["check"] != "services.corosync")
        .all(|f| f["grade"] == "PASS"));
    let (_, findings) = probe_findings(&lab, "cluster");
    assert_eq!(finding(&findings, "cluster.quorum")["grade"], "SKIP");
}

#[test]
fn offload_configured_but_not_applied_until_ifreload() {
    let Some(lab) = Lab::up(
        "offload_configured_but_not_applied_until_ifreload",
        195,
        1,
        &[],
    ) else {
        return;
    };
    lab.sh(
        "pve1",
        "sed -i 's/^iface eno1 inet manual/iface eno1 inet manual\\n\\tpost-up \\/usr\\/sbin\\/ethtool -K $IFACE tso off gso off/' /etc/network/interfaces",
    );
    let (_, findings) = probe_findings(&lab, "offload");
    let persist = finding(&findings, "offload.persist");
    assert_eq!(persist["grade"], "WARN");
    assert!(
        persist["detail"]
            .as_str()
            .unwrap()
            .ends_with("off in the config but on now: configured, not applied"),
        "{persist}"
    );
    assert_eq!(persist["remediation"], "ifreload -a");
    lab.sh("pve1", "ifreload -a");
    let (_, findings) = probe_findings(&lab, "offload");
    let persist = finding(&findings, "offload.persist");
    assert_eq!(persist["grade"], "PASS", "{persist}");
}

/// `audit -o FILE` without `--format` writes the format FILE's extension names (it wrote the
/// terminal table into report.html): .html/.htm, .md/.markdown, .json, .prom (OpenMetrics), in
/// any case; `--format` still wins.
#[test]
fn audit_output_takes_its_format_from_the_extension() {
    let Some(lab) = Lab::up("audit_output_extension", 52, 1, &[]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let inv = lab.inventory();
    let write = |name: &str, extra: &[&str]| {
        let path = dir.path().join(name);
        let mut a = vec![
            "-i",
            inv.to_str().unwrap(),
            "audit",
            "-o",
            path.to_str().unwrap(),
        ];
        a.extend_from_slice(extra);
        let out = pvefleet(&a);
        assert!(out.status.code().is_some_and(|c| c <= 2), "{out:?}");
        std::fs::read_to_string(path).unwrap()
    };
    let html = write("report.html", &[]);
    assert!(
        html.trim_start().starts_with("<!DOCTYPE html"),
        "{}",
        &html[..80.min(html.len())]
    );
    let md = write("report.md", &[]);
    assert!(md.starts_with("# "), "{}", &md[..80.min(md.len())]);
    let json = write("report.json", &[]);
    assert!(serde_json::from_str::<serde_json::Value>(&json).is_ok());
    let htm = write("REPORT.HTM", &[]);
    assert!(
        htm.trim_start().starts_with("<!DOCTYPE html"),
        "the case of the extension does not matter"
    );
    let markdown = write("report.markdown", &[]);
    assert!(
        markdown.starts_with("# "),
        "{}",
        &markdown[..80.min(markdown.len())]
    );
    let prom = write("pvefleet.prom", &[]);
    assert!(
        prom.starts_with("# TYPE pvefleet_check_grade gauge\n") && prom.ends_with("# EOF\n"),
        "{prom}"
    );
    let forced = write("report.html", &["--format", "json"]);
    assert!(serde_json::from_str::<serde_json::Value>(&forced).is_ok());
    let plain = write("report.txt", &[]);
    assert!(
        !plain.contains("<!DOCTYPE") && !plain.trim_start().starts_with('{'),
        "{plain}"
    );
}

/// The README's cron recipe, run twice from nothing: the first run has no `last.json` (every
/// finding is new: exit 1 with one, and the report is saved), the second finds nothing new (0).
/// The old code exited 65 on the missing file and never saved one, forever.
#[test]
fn the_cron_compare_recipe_starts_from_no_earlier_report() {
    let Some(lab) = Lab::up("audit_cron_recipe", 53, 1, &[]) else {
        return;
    };
    lab.fault("pve1", &["rrd-zero", "2"]);
    // Both RRD findings from the first run on: the 0-byte files at once, pmxcfs's logged errors
    // within its 10 s update cycle (a first audit before them made the second see one "new").
    crate::common::wait::wait_rrd_errors(&lab, &["pve1"]);
    let dir = tempfile::tempdir().unwrap();
    let last = dir.path().join("last.json");
    let inv = lab.inventory();
    let cron = || {
        pvefleet(&[
            "-i",
            inv.to_str().unwrap(),
            "audit",
            "--compare",
            last.to_str().unwrap(),
            "--save-json",
            last.to_str().unwrap(),
        ])
    };
    let first = cron();
    let err = String::from_utf8_lossy(&first.stderr);
    assert_eq!(first.status.code(), Some(1), "{err}");
    assert!(err.contains("every finding counts as new"), "{err}");
    assert!(
        String::from_utf8_lossy(&first.stdout).contains("rrd"),
        "the RRD finding is new"
    );
    assert!(last.exists(), "the report was saved for the next run");
    let second = cron();
    assert_eq!(
        second.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&second.stdout),
        String::from_utf8_lossy(&second.stderr)
    );
}
