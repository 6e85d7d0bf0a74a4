//! `pvefleet plan` and `run` (new runs and `--resume`): parameters recorded and reused, the
//! plan, the confirmation, the journal, and the report at the end.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{ctrl_c_token, load_inventory, print_json, signals, targets, use_color, AppError};
use crate::cli::DEFAULT_FORKS;
use crate::cli::{GlobalOpts, PlanArgs, RunArgs};
use crate::exec::NodeStatus;
use crate::exit;
use crate::inventory::{Inventory, Node};
use crate::journal::{self, Event, Journal, JournalError, NodeHistory, RunMeta, StopPoint};
use crate::maintenance::balancers;
use crate::maintenance::cluster_lock::{ClusterLocks, LockOwner};
use crate::playbook::engine::{GuestPolicy, NodeRun, RunSettings, StepStatus};
use crate::playbook::{rolling, Playbook};
use crate::report::exec::short_duration;
use crate::report::plan::{plan_summary, render_plan, render_results};
use crate::sanitize::sanitize_str;

/// `-e KEY=VALUE` items as the playbook declares each KEY (see `playbook::extra`); a value of
/// the wrong type or an undeclared name is invalid input (65).
pub fn parse_extra(
    items: &[String],
    pb: &Playbook,
) -> Result<BTreeMap<String, toml::Value>, AppError> {
    crate::playbook::extra::typed_extra(items, &pb.file.vars, &pb.file.name)
        .map(|m| m.into_iter().collect())
        .map_err(|e| match *e {
            crate::playbook::extra::ExtraVarError::Syntax(_) => AppError::Usage(e.to_string()),
            _ => AppError::BadInput(e.to_string()),
        })
}

/// Before any node is asked: the targets' inventory variables the playbook declares have its
/// types, and every variable the templates use is defined for each target (invalid input, 65,
/// with file:line:column, instead of a failed node at run time).
fn check_inputs(
    pb: &Playbook,
    extra: &BTreeMap<String, toml::Value>,
    nodes: &[Node],
) -> Result<(), AppError> {
    use crate::playbook::engine::BUILTIN_VARS;
    for n in nodes {
        crate::playbook::extra::check_inventory_vars(
            &pb.file.vars,
            &n.name,
            &n.vars,
            &pb.file.name,
        )
        .map_err(|e| AppError::BadInput(e.to_string()))?;
        let known: HashSet<String> = pb
            .file
            .vars
            .keys()
            .chain(n.vars.keys())
            .chain(extra.keys())
            .cloned()
            .chain(BUILTIN_VARS.iter().map(|s| s.to_string()))
            .collect();
        crate::playbook::validate::check_variables(pb, &known)
            .map_err(|e| AppError::BadInput(format!("{e} (node {})", n.name)))?;
    }
    Ok(())
}

fn load_playbook(path: &Path) -> Result<Playbook, AppError> {
    let path = super::shipped::find_playbook(path)?;
    Playbook::load(&path).map_err(|e| AppError::BadInput(e.to_string()))
}

pub(super) fn journal_error(e: JournalError) -> AppError {
    match e {
        JournalError::Io { .. } => AppError::Internal(e.to_string()),
        JournalError::Corrupt { .. } => AppError::BadInput(e.to_string()),
        _ => AppError::Usage(e.to_string()),
    }
}

/// `plan` and a resume's preview on stdout: the plan, then its summary, both wrapped to the
/// terminal.
fn print_plan(runs: &[NodeRun]) {
    let width = plan_width(false);
    print!("{}", render_plan(runs, width));
    print!(
        "{}",
        crate::report::wrap::wrap(
            &format!("{}; nothing was changed", plan_summary(runs)),
            "",
            "  ",
            width
        )
    );
}

/// The width of the terminal the plan is shown on (`stderr` for `run`, `stdout` for `plan`).
fn plan_width(on_stderr: bool) -> Option<usize> {
    use std::io::IsTerminal;
    let tty = if on_stderr {
        std::io::stderr().is_terminal()
    } else {
        std::io::stdout().is_terminal()
    };
    if !tty {
        return None;
    }
    comfy_table::Table::new().width().map(usize::from)
}

/// What a run is asked to do, new or resumed.
struct Params {
    pb: Playbook,
    extra_items: Vec<String>,
    extra: BTreeMap<String, toml::Value>,
    guests: GuestPolicy,
    allow_maintained: bool,
    /// Nodes whose HA maintenance the run being resumed switched on.
    own_maintenance: BTreeSet<String>,
    nodes: Vec<Node>,
    inv: Inventory,
    inventory_path: Option<PathBuf>,
    forks: u16,
    timeout: Option<std::time::Duration>,
    limit: Option<String>,
    /// `--window`s as given (recorded; a resume's own replace them).
    windows: Vec<String>,
    /// How the run is paced between nodes (set by `cmd_run` once the windows are parsed).
    pace: Option<PaceArgs>,
    /// Where the run's notifications go (`--notify`; set by `cmd_run`, never recorded).
    notify: Vec<crate::notify::Target>,
    /// `--max-migrations`, `--bwlimit` (recorded; a resume's own replace them).
    migration_pace: crate::maintenance::drain::MigrationPace,
}

impl Params {
    /// The time one remote command of the run's own may take outside the steps (the cluster
    /// lock, the balancers): [`remote_timeout`] of the run's timeout and nodes.
    fn remote_timeout(&self) -> std::time::Duration {
        remote_timeout(self.timeout, &self.nodes)
    }
}

/// The bound of a remote command outside the steps (a run's or a rollback's cluster lock and
/// balancers): `timeout` (`--timeout`, or a resumed run's), else the first node's command
/// timeout, else 30 s.
pub(super) fn remote_timeout(
    timeout: Option<std::time::Duration>,
    nodes: &[crate::inventory::Node],
) -> std::time::Duration {
    timeout
        .or_else(|| nodes.first().map(|n| n.command_timeout))
        .unwrap_or(std::time::Duration::from_secs(30))
}

fn settings(p: &Params, check: bool, run_id: String, journal: Option<Journal>) -> RunSettings {
    RunSettings {
        playbook: p.pb.clone(),
        check,
        extra_vars: p.extra.clone(),
        run_id,
        events: crate::events::EventBus::new(journal.clone()),
        journal,
        timeout: p.timeout,
        guests: p.guests,
        allow_maintained: p.allow_maintained,
        own_maintenance: p.own_maintenance.clone(),
        output: None,
        cancel: ctrl_c_token(),
        resume: BTreeMap::new(),
        cluster: p.inv.nodes.clone(),
        rolling: Default::default(),
        planned_reboots: None,
        pacing: Default::default(),
        migration_pace: p.migration_pace,
    }
}

/// The nodes whose plan has a reboot step that would run, or whose plan failed (counted as
/// rebooting: nothing is known of them).
fn planned_reboots(pb: &Playbook, plan: &[NodeRun]) -> std::collections::BTreeSet<String> {
    let reboot_steps = pb.reboot_step_names();
    plan.iter()
        .filter(|r| {
            r.failed()
                || r.steps
                    .iter()
                    .any(|st| st.status == StepStatus::Changed && reboot_steps.contains(&st.step))
        })
        .map(|r| r.node.clone())
        .collect()
}

/// The plan of every node not in `skip`; for a resume, `resume` holds the stopped run's
/// histories, so the plan shows what the resume will do (steps done, reboots continued).
async fn plan_runs(
    p: &Params,
    skip: &HashSet<String>,
    resume: &BTreeMap<String, NodeHistory>,
) -> Vec<NodeRun> {
    let mut s = settings(p, true, "plan".into(), None);
    s.resume = resume.clone();
    // On a terminal, planning many nodes shows its progress (the nodes planned, a line per node
    // being planned), cleared before the plan is printed.
    let shown = Arc::new(crate::progress::StepProgress::new(
        "plan",
        p.nodes.len().saturating_sub(skip.len()),
    ));
    s.events = crate::events::EventBus::new(None).consumer(shown.notes());
    if let Some(display) = shown.consumer() {
        s.events = s.events.display(display);
    }
    let s = Arc::new(s);
    let nodes: Vec<Node> = p
        .nodes
        .iter()
        .filter(|n| !skip.contains(&n.name))
        .cloned()
        .collect();
    let runs = rolling::execute(nodes, s, usize::from(p.forks), &HashSet::new(), &|_| {}).await;
    shown.finish();
    runs
}

/// `pvefleet plan`.
pub async fn cmd_plan(g: &GlobalOpts, a: &PlanArgs) -> Result<u8, AppError> {
    let (path, extra, detailed) = (&a.playbook, a.extra.as_slice(), a.detailed_exitcode);
    let pb = load_playbook(path)?;
    let inv = load_inventory(g)?;
    let nodes = targets(&inv, g)?;
    let p = Params {
        extra: parse_extra(extra, &pb)?,
        pb,
        extra_items: extra.to_vec(),
        guests: a.guest_policy(),
        allow_maintained: false,
        own_maintenance: BTreeSet::new(),
        nodes,
        inv,
        inventory_path: None,
        forks: g.forks(),
        timeout: g.timeout,
        limit: g.limit.clone(),
        windows: Vec::new(),
        pace: None,
        notify: Vec::new(),
        migration_pace: Default::default(),
    };
    check_inputs(&p.pb, &p.extra, &p.nodes)?;
    let runs = plan_runs(&p, &HashSet::new(), &BTreeMap::new()).await;
    // The cluster's own balancers a draining run would pause (read only).
    let balancer_lines = if p.pb.drains() {
        let t = p.remote_timeout();
        balancers::preview(&p.inv.nodes, &p.nodes, t).await
    } else {
        Vec::new()
    };
    if g.json {
        // The file that was read (a shipped playbook found by name, made absolute), not the
        // name given.
        let file = std::fs::canonicalize(&p.pb.path).unwrap_or_else(|_| p.pb.path.clone());
        print_json(
            &serde_json::json!({"version": 1, "playbook": file, "check": true, "nodes": runs,
                "balancers": balancer_lines.iter().map(|(l, refuses)| serde_json::json!({"line": l, "refuses": refuses})).collect::<Vec<_>>()}),
        );
    } else {
        print_plan(&runs);
        for (l, _) in &balancer_lines {
            println!("balancers: {}", sanitize_str(l));
        }
    }
    let failed = runs.iter().any(|r| r.failed()) || balancer_lines.iter().any(|(_, r)| *r);
    Ok(if detailed {
        let changes = runs.iter().any(|r| r.count(StepStatus::Changed) > 0);
        match (failed, changes) {
            (true, _) => exit::PLAN_ERROR,
            (false, true) => exit::PLAN_CHANGES,
            (false, false) => exit::OK,
        }
    } else if failed {
        rolling::exit_code(&runs, false, None).max(exit::FAILED)
    } else {
        exit::OK
    })
}

/// The inventory file in use (absolute), when it is a file.
fn inventory_file(g: &GlobalOpts) -> Option<PathBuf> {
    let p = match &g.inventory {
        Some(p) => p.clone(),
        None if Path::new(crate::inventory::DEFAULT_INVENTORY).exists() => {
            PathBuf::from(crate::inventory::DEFAULT_INVENTORY)
        }
        None => return None,
    };
    Some(std::fs::canonicalize(&p).unwrap_or(p))
}

fn new_params(g: &GlobalOpts, a: &RunArgs) -> Result<Params, AppError> {
    let pb = load_playbook(a.playbook.as_deref().expect("clap requires it"))?;
    let inv = load_inventory(g)?;
    let nodes = targets(&inv, g)?;
    Ok(Params {
        extra: parse_extra(&a.extra, &pb)?,
        pb,
        extra_items: a.extra.to_vec(),
        guests: a.guest_policy().unwrap_or(GuestPolicy::Refuse),
        allow_maintained: a.allow_maintained,
        own_maintenance: BTreeSet::new(),
        nodes,
        inv,
        inventory_path: inventory_file(g),
        forks: g.forks(),
        timeout: g.timeout,
        limit: g.limit.clone(),
        windows: a.windows.to_vec(),
        pace: None,
        notify: Vec::new(),
        migration_pace: crate::maintenance::drain::MigrationPace {
            max: a.max_migrations,
            bwlimit_kib: a.bwlimit,
        },
    })
}

/// The parameters of the run being resumed, checked against what the command line says.
fn resumed_params(g: &GlobalOpts, a: &RunArgs, j: &Journal) -> Result<Params, AppError> {
    let meta = j.meta().map_err(journal_error)?;
    if meta.status.rolled_back() && !a.force {
        return Err(AppError::Usage(format!(
            "run {}: it was {}; resuming it would apply it again over the rollback (pass --force \
             to do so anyway, or start a new run)",
            meta.id, meta.status
        )));
    }
    let mut conflicts = Vec::new();
    if !a.extra.is_empty() && a.extra != meta.extra_vars {
        conflicts.push(format!("-e (the run has: {:?})", meta.extra_vars));
    }
    if a.guest_policy().is_some_and(|x| x != meta.guests) {
        conflicts.push(format!("--guests (the run has: {})", meta.guests));
    }
    if g.limit.is_some() && g.limit != meta.limit {
        conflicts.push(format!("--limit (the run has: {:?})", meta.limit));
    }
    // Another inventory file would be other nodes, addresses or variables.
    if let (Some(_), Some(given)) = (&g.inventory, inventory_file(g)) {
        if meta.inventory_path.as_ref().is_some_and(|p| *p != given) {
            conflicts.push(format!(
                "-i {} (the run has: {})",
                given.display(),
                meta.inventory_path
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            ));
        }
    }
    if !conflicts.is_empty() {
        return Err(AppError::Usage(format!(
            "run {}: a resumed run keeps the parameters it was started with; drop {} or start a new run",
            meta.id,
            conflicts.join(", ")
        )));
    }
    // The playbook: the file it was started with, unless it changed (then only with --force);
    // the journal's copy when the file is gone.
    let path = PathBuf::from(&meta.playbook);
    let pb = match std::fs::read_to_string(&path) {
        Ok(text) => {
            let now = journal::sha1_hex(text.as_bytes());
            if now != meta.playbook_sha1 && !meta.playbook_sha1.is_empty() && !a.force {
                return Err(AppError::BadInput(format!(
                    "{}: changed since run {} started (sha1 {} then, {} now); restore it, or pass --force to resume with the file as it is now",
                    path.display(),
                    meta.id,
                    &meta.playbook_sha1[..12.min(meta.playbook_sha1.len())],
                    &now[..12]
                )));
            }
            Playbook::parse(&text, &path).map_err(|e| AppError::BadInput(e.to_string()))?
        }
        Err(_) => {
            eprintln!(
                "pvefleet: {} is gone; resuming with the copy recorded when the run started",
                path.display()
            );
            let copy = j.playbook_copy();
            let text = std::fs::read_to_string(&copy)
                .map_err(|e| AppError::Internal(format!("{}: {e}", copy.display())))?;
            Playbook::parse(&text, &path).map_err(|e| AppError::BadInput(e.to_string()))?
        }
    };
    let mut g2 = g.clone();
    if g2.inventory.is_none() {
        g2.inventory = meta.inventory_path.clone();
    }
    g2.limit = meta.limit.clone();
    let inv = load_inventory(&g2)?;
    let selected = targets(&inv, &g2)?;
    let mut nodes = Vec::new();
    for name in &meta.nodes {
        match selected.iter().find(|n| &n.name == name) {
            Some(n) => nodes.push(n.clone()),
            None => {
                return Err(AppError::BadInput(format!(
                    "run {}: node {name} is no longer in the inventory {}",
                    meta.id, inv.source
                )))
            }
        }
    }
    Ok(Params {
        extra: parse_extra(&meta.extra_vars, &pb)?,
        pb,
        extra_items: meta.extra_vars.clone(),
        guests: meta.guests,
        allow_maintained: meta.allow_maintained || a.allow_maintained,
        own_maintenance: j
            .histories()
            .into_iter()
            .filter(|(_, h)| h.maintenance_on)
            .map(|(n, _)| n)
            .collect(),
        nodes,
        inv,
        inventory_path: inventory_file(&g2),
        forks: g.forks.or(meta.forks).unwrap_or(DEFAULT_FORKS),
        // Pace, not what is done: --forks and --timeout given to a resume are honoured.
        timeout: g
            .timeout
            .or(meta.timeout_ms.map(std::time::Duration::from_millis)),
        limit: meta.limit.clone(),
        // The run's windows, unless the resume gives its own (or drops them).
        windows: if a.no_window {
            Vec::new()
        } else if a.windows.is_empty() {
            meta.windows.clone()
        } else {
            a.windows.to_vec()
        },
        pace: None,
        notify: Vec::new(),
        // Pace, not what is done: a resume's own are honoured, else the run's.
        migration_pace: crate::maintenance::drain::MigrationPace {
            max: a.max_migrations.or(meta.max_migrations),
            bwlimit_kib: a.bwlimit.or(meta.bwlimit_kib),
        },
    })
}

/// `pvefleet run --resume ID --check`: what the resume would do, from the run's journal (steps
/// done before, the reboot state it continues from, the nodes left), changing nothing and
/// taking no lock.
async fn cmd_preview_resume(g: &GlobalOpts, a: &RunArgs) -> Result<u8, AppError> {
    let id = a.resume.as_deref().unwrap_or_default();
    let j = Journal::open(id).map_err(journal_error)?;
    let p = resumed_params(g, a, &j)?;
    let histories = j.histories();
    let done: HashSet<String> = histories
        .iter()
        .filter(|(_, h)| h.done)
        .map(|(n, _)| n.clone())
        .collect();
    check_inputs(&p.pb, &p.extra, &p.nodes)?;
    let runs = plan_runs(&p, &done, &histories).await;
    let done_nodes: Vec<&str> = p
        .nodes
        .iter()
        .filter(|n| done.contains(&n.name))
        .map(|n| n.name.as_str())
        .collect();
    if g.json {
        print_json(&serde_json::json!({
            "version": 1, "resume": j.id, "check": true, "done": done_nodes, "nodes": runs,
        }));
    } else {
        println!(
            "resume of run {}: {} of {} node(s) done before",
            j.id,
            done_nodes.len(),
            p.nodes.len()
        );
        if !done_nodes.is_empty() {
            println!("done: {}", crate::nodeset::fold(&done_nodes));
        }
        print_plan(&runs);
    }
    Ok(rolling::exit_code(&runs, false, None))
}

/// `pvefleet run`.
pub async fn cmd_run(g: &GlobalOpts, a: &RunArgs) -> Result<u8, AppError> {
    if a.check && a.resume.is_some() {
        return cmd_preview_resume(g, a).await;
    }
    if a.check {
        let path = a
            .playbook
            .clone()
            .ok_or_else(|| AppError::Usage("--check needs a playbook".into()))?;
        let plan = PlanArgs {
            playbook: path,
            extra: a.extra.clone(),
            detailed_exitcode: false,
            guests: a.guests,
        };
        return cmd_plan(g, &plan).await;
    }
    crate::playbook::window::parse_all(&a.windows).map_err(|e| AppError::Usage(e.to_string()))?;
    let notify = a
        .notify
        .iter()
        .map(|u| crate::notify::Target::parse(u))
        .collect::<Result<Vec<_>, _>>()
        .map_err(AppError::Usage)?;
    if a.confirm_each_node && !std::io::stdin().is_terminal() {
        return Err(AppError::Usage(
            "--confirm-each-node asks on the terminal before each node: not on a terminal \
             (without one, pace the run with --pause-after or --window)"
                .into(),
        ));
    }
    let resumed = match a.resume.as_deref() {
        Some(id) => Some(Journal::open_locked(id).map_err(journal_error)?),
        None => None,
    };
    let mut p = match &resumed {
        Some(j) => resumed_params(g, a, j)?,
        None => new_params(g, a)?,
    };
    p.notify = notify;
    for u in &p.inv.notify {
        let t = crate::notify::Target::parse(u)
            .map_err(|e| AppError::Usage(format!("{e} (the inventory's notify)")))?;
        if !p.notify.contains(&t) {
            p.notify.push(t);
        }
    }
    let windows = crate::playbook::window::parse_all(&p.windows)
        .map_err(|e| AppError::BadInput(format!("the run's recorded windows: {e}")))?;
    if let Some(j) = resumed.as_ref().filter(|_| !p.windows.is_empty()) {
        eprintln!(
            "run {}: window(s) {}{}",
            j.id,
            p.windows.join(", "),
            if a.windows.is_empty() {
                " (the run's own)"
            } else {
                " (given to this resume)"
            }
        );
    }
    let histories: BTreeMap<String, NodeHistory> =
        resumed.as_ref().map(Journal::histories).unwrap_or_default();
    let done: HashSet<String> = histories
        .iter()
        .filter(|(_, h)| h.done)
        .map(|(n, _)| n.clone())
        .collect();
    if let Some(j) = &resumed {
        eprintln!(
            "resuming run {}: {} of {} node(s) already done",
            j.id,
            done.len(),
            p.nodes.len()
        );
    }
    check_inputs(&p.pb, &p.extra, &p.nodes)?;
    // The plan first (of a resume: from its journal).
    let plan = plan_runs(&p, &done, &histories).await;
    if !g.json {
        let width = plan_width(true);
        eprint!("{}", render_plan(&plan, width));
        eprint!(
            "{}",
            crate::report::wrap::wrap(&plan_summary(&plan), "", "  ", width)
        );
    }
    // A node that could not be planned (unreachable, an error) stops its own cluster before
    // anything changes there, never the other clusters of the inventory.
    let mut p = p;
    let mut refused: Vec<NodeRun> = Vec::new();
    let unplanned: Vec<&NodeRun> = plan
        .iter()
        .filter(|r| {
            r.failed() && (r.status.is_connection_failure() || r.status == NodeStatus::Error)
        })
        .collect();
    for bad in &unplanned {
        eprintln!(
            "pvefleet: planning failed on {}: {}",
            bad.node,
            sanitize_str(bad.error.as_deref().unwrap_or(""))
        );
    }
    // A node that is down after a reboot the run left unfinished is why a resume is needed;
    // let the run itself report it (maintenance stays on, journaled).
    if resumed.is_none() && !unplanned.is_empty() {
        let cluster_of = |name: &str| {
            p.nodes
                .iter()
                .find(|n| n.name == name)
                .map(|n| n.cluster.clone())
        };
        let stopped: BTreeMap<Option<String>, &NodeRun> = unplanned
            .iter()
            .filter_map(|r| cluster_of(&r.node).map(|c| (c, *r)))
            .collect();
        if p.nodes.iter().all(|n| stopped.contains_key(&n.cluster)) {
            return Ok(rolling::exit_code(&plan, false, None));
        }
        for n in p.nodes.iter().filter(|n| stopped.contains_key(&n.cluster)) {
            let bad = stopped[&n.cluster];
            let c = n.cluster.as_deref().unwrap_or("(unnamed)");
            let mut r = plan
                .iter()
                .find(|r| r.node == n.name && r.node == bad.node)
                .cloned()
                .unwrap_or_else(|| {
                    NodeRun::not_started(
                        &n.name,
                        &format!("cluster {c} not started: {} could not be planned", bad.node),
                    )
                });
            r.not_started = true;
            refused.push(r);
        }
        for (c, bad) in &stopped {
            eprintln!(
                "pvefleet: cluster {} is not started ({} could not be planned); the other \
                 clusters go on",
                c.as_deref().unwrap_or("(unnamed)"),
                bad.node
            );
        }
        p.nodes.retain(|n| !stopped.contains_key(&n.cluster));
    }
    if ctrl_c_token().is_cancelled() {
        eprintln!("nothing done");
        return Ok(exit::INTERRUPTED);
    }
    // Not over a backup: refused before any change while vzdump tasks run on a cluster of the
    // run (or when they cannot be told), unless --ignore-backups.
    if !a.ignore_backups && !p.nodes.is_empty() {
        if let Err(why) = crate::playbook::pacing::cluster_backups(&p.nodes).await {
            eprintln!("pvefleet: {}", sanitize_str(&why));
            eprintln!("nothing done");
            return Ok(exit::LOCKED);
        }
    }
    // --confirm-each-node asks before each node instead of once for the run.
    if !a.yes && !a.confirm_each_node {
        if !std::io::stdin().is_terminal() {
            return Err(AppError::Usage(
                "not on a terminal: pass --yes to apply the plan".into(),
            ));
        }
        match signals::confirm(&format!(
            "Apply {} to {} node(s)?",
            p.pb.file.name,
            p.nodes.len() - done.len()
        ))
        .await
        {
            Some(true) => {}
            Some(false) => {
                eprintln!("nothing done");
                return Ok(exit::OK);
            }
            None => {
                eprintln!("nothing done");
                return Ok(exit::INTERRUPTED);
            }
        }
    }
    // One driver per cluster: the cluster-wide lock, taken before the run's first change and
    // held (renewed) to its end; a resume takes over its own run's lock.
    let run_id = match &resumed {
        Some(j) => j.id.clone(),
        None => journal::new_run_id(),
    };
    let owner = LockOwner::this_process(&run_id, &p.pb.file.name);
    let lock_timeout = p.remote_timeout();
    let resume_of = resumed.as_ref().map(|j| j.id.clone());
    let locks = match ClusterLocks::take(&p.nodes, &owner, resume_of.as_deref(), lock_timeout).await
    {
        Ok(l) => l,
        Err(refusals) => return Ok(refused_by_lock(&refusals)),
    };
    let journal = match resumed {
        Some(j) => Ok(j),
        None => create_journal(&p, run_id),
    };
    let journal = match journal {
        Ok(j) => j,
        Err(e) => {
            locks.release().await;
            return Err(e);
        }
    };
    locks
        .held_while(async {
            if resumed_with_windows(a) {
                if let Ok(mut m) = journal.meta() {
                    m.windows = p.windows.clone();
                    journal.write_meta(&m).map_err(journal_error)?;
                }
            }
            p.pace = Some(PaceArgs {
                windows,
                confirm: a.confirm_each_node,
                pause_after: a.pause_after(),
                check_backups: !a.ignore_backups,
            });
            execute_run(g, p, journal, histories, done, plan, refused).await
        })
        .await
}

/// Say why the cluster locks could not be taken (a `run` or a `rollback`, before anything is
/// done): its exit code.
pub(super) fn refused_by_lock(refusals: &[crate::maintenance::cluster_lock::Refusal]) -> u8 {
    for r in refusals {
        eprintln!("pvefleet: {}", sanitize_str(&r.describe()));
    }
    eprintln!("nothing done");
    exit::LOCKED
}

/// The pacing of the run: its windows, `--pause-after`, `--confirm-each-node` (asking on the
/// terminal above the live display, each node's plan as its preview) and the backup check.
fn pacing(
    pace: &PaceArgs,
    plan: &[NodeRun],
    predicted: BTreeMap<String, std::time::Duration>,
    display: &Arc<crate::progress::StepProgress>,
) -> crate::playbook::pacing::Pacing {
    use crate::playbook::pacing::{Confirm, Pacing};
    let mut previews = BTreeMap::new();
    for r in plan {
        let mut text = render_plan(std::slice::from_ref(r), plan_width(true));
        text.push_str(&match predicted.get(&r.node) {
            Some(d) => format!("  predicted duration: {}\n", short_duration(*d)),
            None => "  predicted duration: none (no reboot planned, no history of its steps)\n"
                .to_string(),
        });
        previews.insert(r.node.clone(), text);
    }
    let confirm: Option<Confirm> = pace.confirm.then(|| {
        let display = Arc::clone(display);
        let ask: Confirm = Arc::new(move |question: String| {
            let display = Arc::clone(&display);
            Box::pin(async move {
                let (preview, q) = match question.rsplit_once('\n') {
                    Some((p, q)) => (p.to_string(), q.to_string()),
                    None => (String::new(), question),
                };
                display.hide();
                if !preview.is_empty() {
                    display.println(&preview);
                }
                let answer = signals::confirm(&format!("{q} (n or q pauses the run)")).await;
                display.show();
                answer
            })
        });
        ask
    });
    Pacing {
        windows: pace.windows.clone(),
        predicted,
        pause_after: pace.pause_after,
        confirm,
        previews,
        check_backups: pace.check_backups,
        ..Pacing::default()
    }
}

/// A resume given its own windows, or none (recorded in place of the run's).
fn resumed_with_windows(a: &RunArgs) -> bool {
    a.resume.is_some() && (!a.windows.is_empty() || a.no_window)
}

/// How the run is paced between nodes (see `playbook::pacing`).
struct PaceArgs {
    windows: Vec<crate::playbook::window::Window>,
    confirm: bool,
    pause_after: Option<usize>,
    check_backups: bool,
}

/// Each node's predicted duration: its plan's reboot steps (the journal's history of its
/// reboots, or the step's timeout without one; a node the run counts as rebooting whose plan
/// shows no reboot, begun in the run being resumed or not planned, its first reboot step's
/// timeout) plus its other steps that run (each the mean of its last three runs on the node in
/// the journal; without history, nothing). A node with neither is not predicted: it only has to
/// start inside a window.
fn predicted_durations(
    pb: &Playbook,
    plan: &[NodeRun],
    planned: &BTreeSet<String>,
    past: &journal::Timings,
) -> BTreeMap<String, std::time::Duration> {
    use crate::playbook::model::REBOOT_TIMEOUT;
    use std::time::Duration;
    let steps: Vec<_> = pb.reboot_steps().map(|(step, _)| step).collect();
    let mut out = BTreeMap::new();
    for r in plan {
        let mut total: Option<Duration> = None;
        for st in r.steps.iter().filter(|s| s.status == StepStatus::Changed) {
            if let Some(step) = steps.iter().find(|s| s.name.get_ref() == &st.step) {
                let d = st
                    .predicted_ms
                    .map(Duration::from_millis)
                    .unwrap_or_else(|| step.timeout_or(REBOOT_TIMEOUT));
                *total.get_or_insert(Duration::ZERO) += d;
            }
        }
        if total.is_none() && planned.contains(&r.node) {
            total = steps.first().map(|s| s.timeout_or(REBOOT_TIMEOUT));
        }
        for st in r.steps.iter().filter(|s| s.status != StepStatus::Skipped) {
            if steps.iter().any(|s| s.name.get_ref() == &st.step) {
                continue;
            }
            let took = past
                .steps
                .get(&(r.node.clone(), st.step.clone()))
                .and_then(|v| journal::recent_mean(v));
            if let Some(d) = took {
                *total.get_or_insert(Duration::ZERO) += d;
            }
        }
        if let Some(t) = total {
            out.insert(r.node.clone(), t);
        }
    }
    out
}

fn create_journal(p: &Params, id: String) -> Result<Journal, AppError> {
    let path = std::fs::canonicalize(&p.pb.path).unwrap_or(p.pb.path.clone());
    let meta = RunMeta {
        id,
        playbook: path.display().to_string(),
        playbook_sha1: journal::sha1_hex(p.pb.text.as_bytes()),
        inventory: p.inv.source.clone(),
        inventory_path: p.inventory_path.clone(),
        nodes: p.nodes.iter().map(|n| n.name.clone()).collect(),
        started: journal::now(),
        status: journal::RunStatus::Running,
        limit: p.limit.clone(),
        extra_vars: p.extra_items.clone(),
        guests: p.guests,
        allow_maintained: p.allow_maintained,
        forks: Some(p.forks),
        timeout_ms: p.timeout.map(|t| t.as_millis() as u64),
        max_migrations: p.migration_pace.max,
        bwlimit_kib: p.migration_pace.bwlimit_kib,
        stopped_at: Vec::new(),
        left_on: Vec::new(),
        ended: None,
        windows: p.windows.clone(),
        paused: None,
    };
    Journal::create(&meta, &p.pb.text).map_err(journal_error)
}

async fn execute_run(
    g: &GlobalOpts,
    p: Params,
    journal: Journal,
    histories: BTreeMap<String, NodeHistory>,
    done: HashSet<String>,
    plan: Vec<NodeRun>,
    refused: Vec<NodeRun>,
) -> Result<u8, AppError> {
    let run_id = journal.id.clone();
    // The run's event stream: the journal writer first (awaited), then notifications (sent
    // from their own task); the notes on stderr, the live display and what each node is doing
    // (for a forced exit) join once the nodes are about to start.
    let mut bus = crate::events::EventBus::new(Some(journal.clone()));
    let notifier = (!p.notify.is_empty()).then(|| {
        let clusters = p
            .nodes
            .iter()
            .filter_map(|n| Some((n.name.clone(), n.cluster.clone()?)))
            .collect();
        let builder = crate::notify::Builder::new(&run_id, clusters);
        let (tx, handle) = crate::notify::start(p.notify.clone(), builder);
        (crate::notify::Feed::new(tx), handle)
    });
    if let Some((feed, _)) = &notifier {
        bus = bus.consumer(feed.consumer());
    }
    bus.record(
        "-",
        Event::RunStarted {
            pid: std::process::id(),
            resumed: !histories.is_empty(),
        },
    )
    .await;
    journal.set_status(journal::RunStatus::Running, Vec::new(), Vec::new());
    journal.save(
        "plan.json",
        &serde_json::to_value(&plan).unwrap_or_default(),
    );
    eprintln!("run {run_id} (journal: {})", journal.dir.display());
    // The cluster's own balancers would move guests the drain placed (or put back): paused
    // before the first node starts, restored at the end below, whatever the ending.
    let crs_timeout = p.remote_timeout();
    if p.pb.drains() {
        // The live display starts below: until then the notes go to stderr as they come.
        let early = bus.clone().consumer(crate::events::stderr_notes());
        if let Err(e) = balancers::pause_all(&early, &p.inv.nodes, &p.nodes, crs_timeout).await {
            eprintln!("pvefleet: {}; nothing done on the nodes", sanitize_str(&e));
            let _ = balancers::restore_all(&early, &p.inv.nodes, crs_timeout).await;
            journal.set_status(journal::RunStatus::Failed, Vec::new(), Vec::new());
            bus.record(
                "-",
                Event::RunStopped {
                    status: journal::RunStatus::Failed.to_string(),
                },
            )
            .await;
            return Ok(exit::FAILED);
        }
    }
    // Where each node is, for the journal when a second signal forces the exit.
    let current: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    {
        let j = journal.clone();
        let current = Arc::clone(&current);
        signals::on_forced_exit(move || {
            let at: Vec<StopPoint> = current
                .lock()
                .map(|m| {
                    m.iter()
                        .map(|(node, step)| StopPoint {
                            node: node.clone(),
                            step: Some(step.clone()),
                            state: Some("forced exit".into()),
                        })
                        .collect()
                })
                .unwrap_or_default();
            j.set_status(journal::RunStatus::Interrupted, at, Vec::new());
            j.record_blocking(
                "-",
                Event::RunStopped {
                    status: journal::RunStatus::Interrupted.to_string(),
                },
            );
        });
    }
    let steps = Arc::new(crate::progress::StepProgress::new(
        &p.pb.file.name,
        p.nodes.len(),
    ));
    bus = bus.consumer(steps.notes());
    if let Some(display) = steps.consumer() {
        bus = bus.display(display);
    }
    let track = Arc::clone(&current);
    bus = bus.consumer(Arc::new(move |e: &crate::events::RunEvent| {
        use crate::events::RunEvent;
        if let Ok(mut m) = track.lock() {
            match e {
                RunEvent::Idle { node } => {
                    m.remove(node);
                }
                RunEvent::Doing { node, activity } => {
                    m.insert(node.clone(), crate::progress::doing(activity).what);
                }
                _ => {}
            }
        }
    }));
    let mut s = settings(&p, false, run_id.clone(), Some(journal.clone()));
    s.events = bus.clone();
    // -v: every command's output as it arrives, a line at a time under the live display,
    // prefixed with its node (sanitised: it is the node's text).
    if g.verbose > 0 {
        let shown = Arc::clone(&steps);
        s.output = Some(Arc::new(
            move |node: &str, _: crate::ssh::Stream, line: &str| {
                shown.println(&format!("{node} | {}", crate::sanitize::sanitize_str(line)));
            },
        ));
    }
    // A resumed run reuses the journal's step results, which the plan does not see: a node the
    // stopped run had begun counts as rebooting; the others as their plan says.
    let mut planned = planned_reboots(&p.pb, &plan);
    planned.extend(histories.keys().cloned());
    let predicted = predicted_durations(&p.pb, &plan, &planned, journal::timings());
    s.planned_reboots = Some(planned);
    s.resume = histories;
    if let Some(pace) = &p.pace {
        s.pacing = Arc::new(pacing(pace, &plan, predicted, &steps));
    }
    let cancel = s.cancel.clone();
    let json = g.json;
    let color = use_color();
    let shown = Arc::clone(&steps);
    let after = move |batch: &[NodeRun]| {
        if !json && !batch.is_empty() {
            shown.println(&render_results(
                batch,
                color,
                super::audit::terminal_width(),
            ));
        }
    };
    let s_pacing = Arc::clone(&s.pacing);
    let runs = rolling::execute(
        p.nodes.clone(),
        Arc::new(s),
        usize::from(p.forks),
        &done,
        &after,
    )
    .await;
    steps.finish();
    // The clusters refused at the plan: in the result, and in the exit code.
    let mut runs = runs;
    runs.extend(refused);
    let pause = s_pacing.paused();
    let ending = rolling::ending(&runs, cancel.is_cancelled(), pause.as_ref());
    let (code, status, left_on) = (ending.code, ending.status, ending.left_on);
    // Restored before the status is set: a run killed before this still owes it, and its
    // resume or rollback pays it (from the journal, which also covers a resumed run's pause).
    let code = match balancers::restore_all(&bus, &p.inv.nodes, crs_timeout).await {
        Ok(()) => code,
        Err(_) => code.max(exit::FAILED),
    };
    journal.set_status(status.clone(), ending.stopped_at, left_on.clone());
    journal.set_paused(pause.as_ref().map(|p| p.why(&s_pacing.windows)));
    bus.record(
        "-",
        Event::RunStopped {
            status: status.to_string(),
        },
    )
    .await;
    if let Some((feed, handle)) = notifier {
        feed.close();
        crate::notify::finish(handle).await;
    }
    signals::clear_hooks();
    journal.save(
        "result.json",
        &serde_json::to_value(&runs).unwrap_or_default(),
    );
    if g.json {
        print_json(&serde_json::json!({
            "version": 1, "run": run_id, "status": status, "nodes": runs, "left_on": left_on,
            "paused": pause.as_ref().map(|p| p.why(&s_pacing.windows)),
        }));
    } else {
        println!(
            "{}",
            render_results(&runs, color, super::audit::terminal_width())
        );
        if let Some(p) = &pause {
            println!("run {run_id}: {}", p.why(&s_pacing.windows));
        }
        println!(
            "run {run_id}: {status}{}",
            if status == journal::RunStatus::Ok {
                String::new()
            } else {
                format!("\n  resume with: pvefleet run --resume {run_id}")
            }
        );
    }
    for l in &left_on {
        eprintln!("pvefleet: WARNING: {}", sanitize_str(l));
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::StepResult;
    use crate::report::plan::tests::node;
    use std::time::Duration;

    /// A step with only a status and a predicted duration.
    fn predicted_step(name: &str, status: StepStatus, predicted_ms: Option<u64>) -> StepResult {
        let mut s = StepResult::new(name, status, "");
        s.predicted_ms = predicted_ms;
        s
    }

    #[test]
    fn a_node_is_predicted_from_its_plans_reboot_steps() {
        let pb = Playbook::parse(
            "name = \"p\"\n[[step]]\nname = \"mark\"\nkind = \"line\"\npath = \"/x\"\nline = \"x\"\n\
             [[step]]\nname = \"reboot\"\nkind = \"reboot\"\ntimeout = \"90s\"\n",
            Path::new("p.toml"),
        )
        .unwrap();
        let plan = vec![
            // History in the journal: its mean.
            node(
                "pve1",
                vec![
                    predicted_step("mark", StepStatus::Changed, None),
                    predicted_step("reboot", StepStatus::Changed, Some(42_000)),
                ],
            ),
            // No history: the step's timeout.
            node(
                "pve2",
                vec![predicted_step("reboot", StepStatus::Changed, None)],
            ),
            // Its plan does not reboot it: no prediction (only its start must be inside).
            node(
                "pve3",
                vec![predicted_step("reboot", StepStatus::Skipped, None)],
            ),
            // Begun in the run being resumed (counted as rebooting): the timeout.
            node("pve4", vec![predicted_step("reboot", StepStatus::Ok, None)]),
        ];
        let planned: BTreeSet<String> = ["pve1", "pve2", "pve4"].map(String::from).into();
        let none = journal::Timings::default();
        let p = predicted_durations(&pb, &plan, &planned, &none);
        assert_eq!(p.get("pve1"), Some(&Duration::from_secs(42)));
        assert_eq!(p.get("pve2"), Some(&Duration::from_secs(90)));
        assert_eq!(p.get("pve3"), None);
        assert_eq!(p.get("pve4"), Some(&Duration::from_secs(90)));
        // The other steps that run: the mean of their last three runs on the node.
        let mut past = journal::Timings::default();
        past.steps.insert(
            ("pve1".into(), "mark".into()),
            [100, 2, 4, 6].map(Duration::from_secs).to_vec(),
        );
        past.steps
            .insert(("pve3".into(), "mark".into()), vec![Duration::from_secs(7)]);
        let plan3 = node(
            "pve3",
            vec![
                predicted_step("mark", StepStatus::Ok, None),
                predicted_step("reboot", StepStatus::Skipped, None),
            ],
        );
        let mut plan = plan;
        plan[2] = plan3;
        let p = predicted_durations(&pb, &plan, &planned, &past);
        assert_eq!(p.get("pve1"), Some(&Duration::from_secs(42 + 4)));
        assert_eq!(
            p.get("pve3"),
            Some(&Duration::from_secs(7)),
            "no reboot: its steps"
        );
    }
}
