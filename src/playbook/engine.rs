//! Running a playbook's steps on one node: plan (check mode: compute, diff, change nothing) or
//! apply (back up, write, run), producing plain [`NodeRun`] data.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use data_encoding::BASE64;
use minijinja::value::Value;
use serde::{Deserialize, Serialize};

use super::edit;
use super::model::{Playbook, Presence, Step, StepKind};
use super::rolling;
use super::template::Templates;
use super::validate::{check_variables, kind_name};
use crate::exec::NodeStatus;
use crate::inventory::Node;
use crate::journal::Journal;
use crate::quote::shell_quote;
use crate::ssh::{self, ExecOutput, ExitStatus, Session, SshError};

/// How one step ended on one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    /// Already as wanted.
    Ok,
    /// Changed (in check mode: would change).
    Changed,
    /// Not run (`when`, guards, `on_change`).
    Skipped,
    /// Failed: the node stops here.
    Failed,
}

/// One step's result on one node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepResult {
    /// Step name.
    pub step: String,
    /// Outcome.
    pub status: StepStatus,
    /// What happened, in a line.
    pub detail: String,
    /// Unified diff of the file it changed (or would change).
    pub diff: Option<String>,
    /// Commands it ran (or would run).
    pub commands: Vec<String>,
}

/// One node's whole run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeRun {
    /// Node name.
    pub node: String,
    /// `ok` when every step ran; otherwise why not.
    pub status: NodeStatus,
    /// Steps in order.
    pub steps: Vec<StepResult>,
    /// The node was rebooted.
    pub rebooted: bool,
    /// Wall time, milliseconds.
    pub duration_ms: u64,
    /// What stopped it.
    pub error: Option<String>,
    /// Not started (an earlier batch failed, or it was done in the run being resumed).
    pub not_started: bool,
}

impl NodeRun {
    /// A node that was never started.
    pub fn not_started(node: &str, why: &str) -> NodeRun {
        NodeRun {
            node: node.to_string(),
            status: NodeStatus::Cancelled,
            steps: Vec::new(),
            rebooted: false,
            duration_ms: 0,
            error: Some(why.to_string()),
            not_started: true,
        }
    }

    /// Count of steps with `s`.
    pub fn count(&self, s: StepStatus) -> usize {
        self.steps.iter().filter(|r| r.status == s).count()
    }

    /// The node failed (a step, or the connection).
    pub fn failed(&self) -> bool {
        !self.not_started && self.status != NodeStatus::Ok
    }
}

/// What guests on a node about to reboot mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum GuestPolicy {
    /// Stop the node's run with a message listing them (default).
    Refuse,
    /// Shut them down (`qm shutdown` / `pct shutdown`) before the reboot.
    Shutdown,
    /// Reboot anyway (the operator's choice).
    Ignore,
}

/// Everything a node run needs besides the node.
pub struct RunSettings {
    /// The playbook.
    pub playbook: Playbook,
    /// Plan only.
    pub check: bool,
    /// `-e key=value` overrides.
    pub extra_vars: BTreeMap<String, toml::Value>,
    /// Run id (journal, backups).
    pub run_id: String,
    /// The journal (none in plan mode).
    pub journal: Option<Journal>,
    /// Per-command deadline override.
    pub timeout: Option<Duration>,
    /// Guests on a node to reboot.
    pub guests: GuestPolicy,
    /// Live display: (node, current step); an empty step when the node is done.
    pub on_step: Option<crate::progress::StepSink>,
}

/// Where backups go on the node.
pub fn backup_dir(run_id: &str) -> String {
    format!("/var/lib/pvefleet/backups/{run_id}")
}

pub(crate) struct Remote {
    pub session: Session,
    pub node: Node,
    pub timeout: Duration,
}

impl Remote {
    pub async fn sh(&self, cmd: &str) -> Result<ExecOutput, SshError> {
        self.session.exec(cmd, self.timeout).await
    }

    async fn read(&self, path: &str) -> Result<Option<String>, String> {
        let p = shell_quote(path);
        let out = self
            .sh(&format!("if [ -e {p} ]; then cat {p}; else exit 3; fi"))
            .await
            .map_err(|e| e.to_string())?;
        match out.exit {
            ExitStatus::Code(0) => Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned())),
            ExitStatus::Code(3) => Ok(None),
            _ => Err(format!(
                "cannot read {path}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )),
        }
    }
}

fn rc_of(o: &ExecOutput) -> i64 {
    match o.exit {
        ExitStatus::Code(c) => i64::from(c),
        ExitStatus::Signal(_) => -1,
    }
}

fn first_line(b: &[u8]) -> String {
    crate::report::sanitize::first_line(&String::from_utf8_lossy(b), 160)
}

/// Per-node state while steps run.
struct NodeState<'a> {
    s: &'a RunSettings,
    t: Templates,
    vars: serde_json::Map<String, serde_json::Value>,
    facts: serde_json::Map<String, serde_json::Value>,
    changed: HashSet<String>,
    rebooted: bool,
    /// Check mode: a reboot step would run, so later facts cannot be known now.
    reboot_pending: bool,
}

impl NodeState<'_> {
    fn ctx(&self, extra: Option<serde_json::Value>) -> Value {
        let mut m = self.vars.clone();
        m.insert("vars".into(), serde_json::Value::Object(self.vars.clone()));
        m.insert(
            "facts".into(),
            serde_json::Value::Object(self.facts.clone()),
        );
        if let Some(serde_json::Value::Object(e)) = extra {
            m.extend(e);
        }
        Value::from(minijinja::value::Serde(serde_json::Value::Object(m)))
    }

    fn render(
        &self,
        s: &Option<toml::Spanned<String>>,
        command: bool,
    ) -> Result<Option<String>, String> {
        match s {
            None => Ok(None),
            Some(x) => {
                let ctx = self.ctx(None);
                let r = if command {
                    self.t.command(x.get_ref(), &ctx)
                } else {
                    self.t.text(x.get_ref(), &ctx)
                };
                r.map(Some)
                    .map_err(|e| self.s.playbook.error_at(x.span(), e).to_string())
            }
        }
    }

    fn render_list(&self, items: &[toml::Spanned<String>]) -> Result<Vec<String>, String> {
        items
            .iter()
            .map(|x| {
                self.t
                    .text(x.get_ref(), &self.ctx(None))
                    .map_err(|e| self.s.playbook.error_at(x.span(), e).to_string())
            })
            .collect()
    }

    fn truth(
        &self,
        x: &toml::Spanned<String>,
        extra: Option<serde_json::Value>,
    ) -> Result<bool, String> {
        self.t
            .truth(x.get_ref(), &self.ctx(extra))
            .map_err(|e| self.s.playbook.error_at(x.span(), e).to_string())
    }
}

fn result(step: &Step, status: StepStatus, detail: impl Into<String>) -> StepResult {
    StepResult {
        step: step.name.get_ref().clone(),
        status,
        detail: detail.into(),
        diff: None,
        commands: Vec::new(),
    }
}

/// Gather probe facts over the session (one exec for all of them).
pub(crate) async fn gather(
    r: &Remote,
    names: &[String],
) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    let script = crate::probe::combined_script(names);
    let out = r.sh(&script).await.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    let sections = crate::probe::split_sections(&text);
    let mut facts = serde_json::Map::new();
    let t = crate::probe::Thresholds::default();
    for n in names {
        let def = crate::probe::by_name(n).ok_or_else(|| format!("unknown probe {n}"))?;
        let sec = sections
            .get(n)
            .ok_or_else(|| format!("probe {n}: no output"))?;
        let rep = (def.evaluate)(&sec.text, &t).map_err(|e| e.to_string())?;
        facts.insert(n.clone(), rep.facts);
    }
    Ok(facts)
}

/// Back up `path` (if it exists) into this run's backup directory and write `content` atomically.
async fn write_file(
    r: &Remote,
    st: &NodeState<'_>,
    path: &str,
    content: &str,
    refresh: Option<&str>,
) -> Result<(), String> {
    let dir = backup_dir(&st.s.run_id);
    let p = shell_quote(path);
    let b = shell_quote(&format!("{dir}{path}"));
    let tmp = shell_quote(&format!("{path}.pvefleet-tmp"));
    let cmd = format!(
        "set -e; existed=0; if [ -e {p} ]; then existed=1; mkdir -p \"$(dirname {b})\"; [ -e {b} ] || cp -a {p} {b}; fi; \
         mkdir -p \"$(dirname {p})\"; printf %s {data} | base64 -d > {tmp}; \
         if [ -e {p} ]; then chmod --reference={p} {tmp}; chown --reference={p} {tmp}; fi; mv {tmp} {p}; echo $existed",
        data = shell_quote(&BASE64.encode(content.as_bytes())),
    );
    let out = r.sh(&cmd).await.map_err(|e| e.to_string())?;
    if out.exit != ExitStatus::Code(0) {
        return Err(format!("cannot write {path}: {}", first_line(&out.stderr)));
    }
    let existed = String::from_utf8_lossy(&out.stdout).trim() == "1";
    if let Some(j) = &st.s.journal {
        j.backup(
            &r.node.name,
            path,
            &format!("{dir}{path}"),
            existed,
            refresh,
        );
    }
    Ok(())
}

async fn file_step(
    r: &Remote,
    st: &NodeState<'_>,
    step: &Step,
    path: &str,
    new_of: impl Fn(&str) -> String,
    refresh: Option<&str>,
) -> Result<StepResult, String> {
    let current = r.read(path).await?;
    let old = current.clone().unwrap_or_default();
    let new = new_of(&old);
    if new == old && current.is_some() {
        return Ok(result(
            step,
            StepStatus::Ok,
            format!("{path} already as wanted"),
        ));
    }
    let mut res = result(
        step,
        StepStatus::Changed,
        format!(
            "{path} {}",
            if st.s.check {
                "would change"
            } else {
                "changed"
            }
        ),
    );
    res.diff = Some(edit::diff(path, &old, &new));
    if let Some(cmd) = refresh {
        res.commands.push(cmd.to_string());
    }
    if !st.s.check {
        write_file(r, st, path, &new, refresh).await?;
        if let Some(cmd) = refresh {
            let out = r.sh(cmd).await.map_err(|e| e.to_string())?;
            if out.exit != ExitStatus::Code(0) {
                return Ok(StepResult {
                    status: StepStatus::Failed,
                    detail: format!("{cmd} failed: {}", first_line(&out.stderr)),
                    ..res
                });
            }
        }
    }
    Ok(res)
}

/// Which boot loader reads the kernel command line on this node.
async fn bootloader(r: &Remote) -> Result<&'static str, String> {
    let out = r
        .sh("if grep -q '^initrd=\\\\EFI' /proc/cmdline || { proxmox-boot-tool status 2>/dev/null | grep -q 'configured with: uefi'; }; then echo systemd-boot; else echo grub; fi")
        .await
        .map_err(|e| e.to_string())?;
    Ok(
        if String::from_utf8_lossy(&out.stdout).trim() == "systemd-boot" {
            "systemd-boot"
        } else {
            "grub"
        },
    )
}

async fn run_step(
    r: &mut Remote,
    st: &mut NodeState<'_>,
    step: &Step,
) -> Result<StepResult, String> {
    if let Some(w) = &step.when {
        if !st.truth(w, None)? {
            return Ok(result(
                step,
                StepStatus::Skipped,
                format!("when: {} is false", w.get_ref()),
            ));
        }
    }
    if !step.on_change.is_empty()
        && !step
            .on_change
            .iter()
            .any(|c| st.changed.contains(c.get_ref()))
    {
        return Ok(result(
            step,
            StepStatus::Skipped,
            "nothing it depends on changed",
        ));
    }
    let kind = *step.kind.get_ref();
    if st.reboot_pending && matches!(kind, StepKind::Probe | StepKind::Assert | StepKind::WaitFor) {
        return Ok(result(
            step,
            StepStatus::Skipped,
            "checked after the reboot (not in a plan)",
        ));
    }
    match kind {
        StepKind::Run => {
            let cmd = st.render(&step.command, true)?.expect("validated");
            if let Some(path) = st.render(&step.creates, true)? {
                let o = r
                    .sh(&format!("test -e {path}"))
                    .await
                    .map_err(|e| e.to_string())?;
                if o.exit == ExitStatus::Code(0) {
                    return Ok(result(step, StepStatus::Skipped, format!("{path} exists")));
                }
            }
            if let Some(g) = st.render(&step.unless, true)? {
                let o = r.sh(&g).await.map_err(|e| e.to_string())?;
                if o.exit == ExitStatus::Code(0) {
                    return Ok(result(
                        step,
                        StepStatus::Skipped,
                        format!("unless `{g}` succeeded"),
                    ));
                }
            }
            if let Some(g) = st.render(&step.only_if, true)? {
                let o = r.sh(&g).await.map_err(|e| e.to_string())?;
                if o.exit != ExitStatus::Code(0) {
                    return Ok(result(
                        step,
                        StepStatus::Skipped,
                        format!("only_if `{g}` failed"),
                    ));
                }
            }
            if st.s.check {
                // A step declared never to change anything (a check) is not a change in the plan.
                let checks_only = step
                    .changed_when
                    .as_ref()
                    .is_some_and(|c| c.get_ref().trim() == "false");
                let (status, detail) = if checks_only {
                    (StepStatus::Ok, "would run (a check: changes nothing)")
                } else {
                    (StepStatus::Changed, "would run")
                };
                let mut res = result(step, status, detail);
                res.commands.push(cmd);
                return Ok(res);
            }
            let o = r.sh(&cmd).await.map_err(|e| e.to_string())?;
            let vars = serde_json::json!({
                "rc": rc_of(&o),
                "stdout": String::from_utf8_lossy(&o.stdout),
                "stderr": String::from_utf8_lossy(&o.stderr),
            });
            let failed = match &step.failed_when {
                Some(e) => st.truth(e, Some(vars.clone()))?,
                None => o.exit != ExitStatus::Code(0),
            };
            let changed = match &step.changed_when {
                Some(e) => st.truth(e, Some(vars))?,
                None => true,
            };
            let status = if failed {
                StepStatus::Failed
            } else if changed {
                StepStatus::Changed
            } else {
                StepStatus::Ok
            };
            let detail = match status {
                StepStatus::Failed => format!("exit {}: {}", rc_of(&o), first_line(&o.stderr)),
                _ => first_line(&o.stdout),
            };
            let mut res = result(step, status, detail);
            res.commands.push(cmd);
            Ok(res)
        }
        StepKind::Line | StepKind::Lines => {
            let path = st.render(&step.path, false)?.expect("validated");
            let lines = match kind {
                StepKind::Line => vec![st.render(&step.line, false)?.expect("validated")],
                _ => st.render_list(step.lines.as_deref().unwrap_or(&[]))?,
            };
            let re = match &step.regexp {
                Some(x) => Some(regex::Regex::new(x.get_ref()).map_err(|e| e.to_string())?),
                None => None,
            };
            let after = match st.render(&step.after, false)? {
                Some(a) => Some(regex::Regex::new(&a).map_err(|e| format!("after: {e}"))?),
                None => None,
            };
            let state = step.presence();
            file_step(
                r,
                st,
                step,
                &path,
                |old| {
                    lines.iter().fold(old.to_string(), |acc, l| {
                        edit::ensure_line_after(&acc, l, re.as_ref(), after.as_ref(), state)
                    })
                },
                None,
            )
            .await
        }
        StepKind::Block => {
            let path = st.render(&step.path, false)?.expect("validated");
            let body = st.render(&step.block, false)?.expect("validated");
            let name = step.name.get_ref().clone();
            let state = step.presence();
            file_step(
                r,
                st,
                step,
                &path,
                |old| edit::ensure_block(old, &name, &body, state),
                None,
            )
            .await
        }
        StepKind::File => {
            let path = st.render(&step.path, false)?.expect("validated");
            if step.presence() == Presence::Absent {
                let exists = r.read(&path).await?.is_some();
                if !exists {
                    return Ok(result(step, StepStatus::Ok, format!("{path} absent")));
                }
                if !st.s.check {
                    let dir = backup_dir(&st.s.run_id);
                    let (p, b) = (shell_quote(&path), shell_quote(&format!("{dir}{path}")));
                    let o = r
                        .sh(&format!(
                            "mkdir -p \"$(dirname {b})\" && cp -a {p} {b} && rm -f {p}"
                        ))
                        .await
                        .map_err(|e| e.to_string())?;
                    if o.exit != ExitStatus::Code(0) {
                        return Err(format!("cannot remove {path}: {}", first_line(&o.stderr)));
                    }
                    if let Some(j) = &st.s.journal {
                        j.backup(&r.node.name, &path, &format!("{dir}{path}"), true, None);
                    }
                }
                return Ok(result(step, StepStatus::Changed, format!("{path} removed")));
            }
            let content = st.render(&step.content, false)?.unwrap_or_default();
            let mut res = file_step(r, st, step, &path, |_| content.clone(), None).await?;
            if res.status != StepStatus::Failed {
                let mut fix = Vec::new();
                if let Some(m) = &step.mode {
                    fix.push(format!(
                        "chmod {} {}",
                        shell_quote(m.get_ref()),
                        shell_quote(&path)
                    ));
                }
                if let Some(o) = &step.owner {
                    fix.push(format!(
                        "chown {} {}",
                        shell_quote(o.get_ref()),
                        shell_quote(&path)
                    ));
                }
                if !fix.is_empty() && !st.s.check {
                    r.sh(&fix.join(" && ")).await.map_err(|e| e.to_string())?;
                }
            }
            if res.status == StepStatus::Ok && (step.mode.is_some() || step.owner.is_some()) {
                res.detail.push_str(" (mode/owner enforced)");
            }
            Ok(res)
        }
        StepKind::KernelCmdline => {
            let add = st.render_list(&step.add)?;
            let remove = st.render_list(&step.remove)?;
            match bootloader(r).await? {
                "systemd-boot" => {
                    file_step(
                        r,
                        st,
                        step,
                        "/etc/kernel/cmdline",
                        |old| edit::kernel_cmdline_file(old, &add, &remove),
                        Some("proxmox-boot-tool refresh"),
                    )
                    .await
                }
                _ => {
                    file_step(
                        r,
                        st,
                        step,
                        "/etc/default/grub",
                        |old| edit::grub_cmdline(old, &add, &remove),
                        Some("update-grub"),
                    )
                    .await
                }
            }
        }
        StepKind::Modules => {
            let add = st.render_list(&step.add)?;
            let remove = st.render_list(&step.remove)?;
            file_step(
                r,
                st,
                step,
                "/etc/modules",
                |old| edit::modules(old, &add, &remove),
                Some("update-initramfs -u -k all"),
            )
            .await
        }
        StepKind::Service => {
            let unit = st.render(&step.service, false)?.expect("validated");
            let want = step
                .state
                .as_ref()
                .map(|s| s.get_ref().as_str())
                .unwrap_or("started");
            let q = shell_quote(&unit);
            let active = r
                .sh(&format!("systemctl is-active {q}"))
                .await
                .map_err(|e| e.to_string())?;
            let is_active = String::from_utf8_lossy(&active.stdout).trim() == "active";
            let cmd = match (want, is_active) {
                ("started", true) | ("stopped", false) => None,
                ("started", false) => Some(format!("systemctl start {q}")),
                ("stopped", true) => Some(format!("systemctl stop {q}")),
                ("restarted", _) => Some(format!("systemctl restart {q}")),
                ("enabled", _) => Some(format!("systemctl enable {q}")),
                _ => Some(format!("systemctl disable {q}")),
            };
            let Some(cmd) = cmd else {
                return Ok(result(
                    step,
                    StepStatus::Ok,
                    format!("{unit} already {want}"),
                ));
            };
            let mut res = result(step, StepStatus::Changed, format!("{unit} {want}"));
            res.commands.push(cmd.clone());
            if !st.s.check {
                let o = r.sh(&cmd).await.map_err(|e| e.to_string())?;
                if o.exit != ExitStatus::Code(0) {
                    res.status = StepStatus::Failed;
                    res.detail = format!("{cmd}: {}", first_line(&o.stderr));
                }
            }
            Ok(res)
        }
        StepKind::WaitFor => {
            let cmd = st.render(&step.command, true)?.expect("validated");
            let deadline = Instant::now() + step.timeout_or(Duration::from_secs(120));
            if st.s.check {
                let mut res = result(step, StepStatus::Skipped, "would wait");
                res.commands.push(cmd);
                return Ok(res);
            }
            loop {
                let o = r.sh(&cmd).await.map_err(|e| e.to_string())?;
                if o.exit == ExitStatus::Code(0) {
                    return Ok(result(step, StepStatus::Ok, first_line(&o.stdout)));
                }
                if Instant::now() > deadline {
                    return Ok(result(
                        step,
                        StepStatus::Failed,
                        format!("`{cmd}` did not succeed in time: {}", first_line(&o.stderr)),
                    ));
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
        StepKind::Probe => {
            let names: Vec<String> = step.probes.iter().map(|p| p.get_ref().clone()).collect();
            let facts = gather(r, &names).await?;
            st.facts.extend(facts);
            Ok(result(
                step,
                StepStatus::Ok,
                format!("facts: {}", names.join(", ")),
            ))
        }
        StepKind::Assert => {
            let that = step.that.as_ref().expect("validated");
            if st.truth(that, None)? {
                Ok(result(
                    step,
                    StepStatus::Ok,
                    format!("{} holds", that.get_ref()),
                ))
            } else {
                let msg = match st.render(&step.message, false)? {
                    Some(m) => m,
                    None => format!("assertion failed: {}", that.get_ref()),
                };
                Ok(result(step, StepStatus::Failed, msg))
            }
        }
        StepKind::Reboot => {
            if st.s.check {
                st.reboot_pending = true;
                let mut res = result(
                    step,
                    StepStatus::Changed,
                    "would reboot and wait for the node and the cluster",
                );
                res.commands.push("reboot".into());
                return Ok(res);
            }
            let timeout = step.timeout_or(Duration::from_secs(600));
            rolling::reboot_and_wait(r, timeout, st.s.guests).await?;
            st.rebooted = true;
            Ok(result(
                step,
                StepStatus::Changed,
                "rebooted; new boot id; services active; cluster quorate",
            ))
        }
    }
}

fn to_json(v: &toml::Value) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

/// Run (or plan) the playbook on one node.
pub async fn run_node(node: &Node, s: &RunSettings) -> NodeRun {
    let start = Instant::now();
    let mut run = NodeRun {
        node: node.name.clone(),
        status: NodeStatus::Ok,
        steps: Vec::new(),
        rebooted: false,
        duration_ms: 0,
        error: None,
        not_started: false,
    };
    let journal = s.journal.clone();
    if let Some(j) = &journal {
        j.event(&node.name, "node_started", serde_json::json!({}));
    }
    let session = match ssh::connect(&node.connect_spec()).await {
        Ok(x) => x,
        Err(e) => {
            run.status = NodeStatus::of_connect_error(&e);
            run.error = Some(e.to_string());
            if let Some(j) = &journal {
                j.event(
                    &node.name,
                    "node_failed",
                    serde_json::json!({"error": run.error}),
                );
            }
            return run;
        }
    };
    let mut remote = Remote {
        session,
        node: node.clone(),
        timeout: s.timeout.unwrap_or(node.command_timeout),
    };
    let mut vars = serde_json::Map::new();
    for (k, v) in &s.playbook.file.vars {
        vars.insert(k.clone(), to_json(v));
    }
    for (k, v) in &node.vars {
        vars.insert(k.clone(), to_json(v));
    }
    for (k, v) in &s.extra_vars {
        vars.insert(k.clone(), to_json(v));
    }
    vars.insert(
        "node".into(),
        serde_json::json!({"name": node.name, "address": node.address, "groups": node.groups}),
    );
    let mut known: HashSet<String> = vars.keys().cloned().collect();
    known.extend(["vars".to_string(), "facts".to_string(), "node".to_string()]);
    if let Err(e) = check_variables(&s.playbook, &known) {
        run.status = NodeStatus::Error;
        run.error = Some(e.to_string());
        return run;
    }
    let mut st = NodeState {
        s,
        t: Templates::new(),
        vars,
        facts: serde_json::Map::new(),
        changed: HashSet::new(),
        rebooted: false,
        reboot_pending: false,
    };
    let gather_names: Vec<String> = s
        .playbook
        .file
        .gather
        .iter()
        .map(|g| g.get_ref().clone())
        .collect();
    if !gather_names.is_empty() {
        match gather(&remote, &gather_names).await {
            Ok(f) => st.facts = f,
            Err(e) => {
                run.status = NodeStatus::Error;
                run.error = Some(format!("gathering facts: {e}"));
                return run;
            }
        }
    }
    for step in &s.playbook.file.steps {
        if let Some(f) = &s.on_step {
            f(&node.name, step.name.get_ref());
        }
        let res = match run_step(&mut remote, &mut st, step).await {
            Ok(r) => r,
            Err(e) => {
                let mut r = result(step, StepStatus::Failed, e);
                r.detail = format!("{}: {}", kind_name(*step.kind.get_ref()), r.detail);
                r
            }
        };
        if res.status == StepStatus::Changed {
            st.changed.insert(step.name.get_ref().clone());
        }
        if let Some(j) = &journal {
            j.event(
                &node.name,
                "step",
                serde_json::to_value(&res).unwrap_or_default(),
            );
        }
        let failed = res.status == StepStatus::Failed;
        if failed {
            run.status = NodeStatus::Failed;
            run.error = Some(format!("step `{}`: {}", res.step, res.detail));
        }
        run.steps.push(res);
        if failed {
            break;
        }
    }
    remote.session.close().await;
    if let Some(f) = &s.on_step {
        f(&node.name, "");
    }
    run.rebooted = st.rebooted;
    run.duration_ms = start.elapsed().as_millis() as u64;
    if let Some(j) = &journal {
        let kind = if run.status == NodeStatus::Ok {
            "node_done"
        } else {
            "node_failed"
        };
        j.event(
            &node.name,
            kind,
            serde_json::json!({"error": run.error, "rebooted": run.rebooted}),
        );
    }
    run
}
