//! A plan that is exact: on lab scenarios for each shipped playbook, the steps `plan` predicts
//! to change are the steps `run` then reports changed, node by node and step by step.

use std::collections::BTreeMap;

use crate::common::lab::Lab;
use crate::common::runs::{shipped, Env};

/// Per node, the names of the steps whose status is `changed`.
fn changes(v: &serde_json::Value) -> BTreeMap<String, Vec<String>> {
    v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["node"].as_str().unwrap().to_string(),
                n["steps"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|s| s["status"] == "changed")
                    .map(|s| s["step"].as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect()
}

/// Plan, run, and compare; then plan again: nothing is left to change.
fn plan_equals_run(env: &Env, lab: &Lab, args: &[&str]) {
    let mut plan_args = vec!["plan"];
    plan_args.extend_from_slice(args);
    let (code, plan) = env.json(lab, &plan_args);
    assert_eq!(code, Some(0), "{plan}");
    let mut run_args = vec!["run", "--yes"];
    run_args.extend_from_slice(args);
    let (code, run) = env.json(lab, &run_args);
    assert_eq!(code, Some(0), "{run}");
    let (predicted, done) = (changes(&plan), changes(&run));
    assert_eq!(predicted, done, "plan vs run for {args:?}");
    assert!(
        done.values().any(|v| !v.is_empty()),
        "the scenario changes something: {args:?}"
    );
    let (_, again) = env.json(lab, &plan_args);
    assert!(
        changes(&again).values().all(Vec::is_empty),
        "after the run the plan is empty: {:?}",
        changes(&again)
    );
}

/// The plan on a real 80-column terminal (tmux): no line wider than the terminal (lines the
/// terminal had to wrap show joined, longer than 80), identical nodes folded under one header,
/// and the plan of 3 nodes within two screens.
fn plan_fits_80_columns(env: &Env, lab: &Lab, playbook: &str) {
    let cmd = format!(
        "PVEFLEET_STATE_DIR={} {} -i {} plan {playbook}; echo PLAN-EXIT-$?; sleep 60",
        env.state.path().display(),
        env!("CARGO_BIN_EXE_pvefleet"),
        lab.inventory().display(),
    );
    let t = crate::common::tmux::Tmux::start("plan80", 80, 50, &cmd);
    let mut screen = String::new();
    assert!(
        crate::common::wait::eventually(60, || {
            screen = t.capture(true, 2000);
            screen.contains("PLAN-EXIT-")
        }),
        "the plan did not finish:\n{screen}"
    );
    assert!(screen.contains("PLAN-EXIT-0"), "{screen}");
    let lines: Vec<&str> = screen.trim_end().lines().collect();
    let wide: Vec<&&str> = lines.iter().filter(|l| l.chars().count() > 80).collect();
    assert!(
        wide.is_empty(),
        "wider than 80 columns: {wide:#?}\n{screen}"
    );
    // pve1 and pve3 boot alike (pve2 by systemd-boot): one block for the two.
    assert!(screen.contains("== pve[1,3] (2) =="), "{screen}");
    for word in ["would change", "would run", "after reboot"] {
        assert!(screen.contains(word), "{word}:\n{screen}");
    }
    // A screen for each boot loader's block (about 50 lines each with their diffs).
    assert!(lines.len() <= 110, "{} lines:\n{screen}", lines.len());
    let first = lines
        .iter()
        .skip(1)
        .position(|l| l.starts_with("== "))
        .unwrap_or(lines.len());
    assert!(first <= 55, "the first block has {first} lines:\n{screen}");
}

#[test]
fn fix_rrd_and_sync_clock_plans_are_what_the_runs_do() {
    let Some(lab) = Lab::up("plan_exact_rrd", 122, 3, &[]) else {
        return;
    };
    let env = Env::new();
    lab.fault("pve1", &["clock", "+45"]);
    lab.fault("pve2", &["rrd-zero", "2"]);
    crate::common::wait::wait_rrd_errors(&lab, &["pve2"]);
    plan_equals_run(&env, &lab, &[&shipped("fix-rrd.toml")]);
    lab.fault("pve3", &["clock", "-30"]);
    plan_equals_run(&env, &lab, &[&shipped("sync-clock.toml")]);
}

#[test]
fn igpu_passthrough_and_disable_offload_plans_are_what_the_runs_do() {
    let Some(lab) = Lab::up(
        "plan_exact_igpu",
        123,
        3,
        &[
            "--profile",
            "pve2:systemd-boot",
            "--profile",
            "pve3:ports=2",
        ],
    ) else {
        return;
    };
    let env = Env::new();
    plan_fits_80_columns(&env, &lab, &shipped("igpu-passthrough.toml"));
    plan_equals_run(&env, &lab, &[&shipped("igpu-passthrough.toml")]);
    plan_equals_run(&env, &lab, &[&shipped("disable-offload.toml")]);
}

#[test]
fn the_upgrade_plan_is_what_the_run_does() {
    let Some(lab) = Lab::up("plan_exact_upgrade", 124, 3, &[]) else {
        return;
    };
    let env = Env::new();
    lab.fault("pve1", &["pending-kernel", "6.8.12-9-pve"]);
    lab.fault("pve2", &["pending", "pve-manager=8.3.5"]);
    plan_equals_run(
        &env,
        &lab,
        &["-e", "min_free_mib=64", &shipped("upgrade.toml")],
    );
}
