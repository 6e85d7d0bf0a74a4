//! A loaded playbook: the typed values [`super::validate`] builds from the TOML (read by serde
//! into [`super::raw`] first). A step is a [`Step`] (what every kind shares: name, `when`,
//! `on_change`) holding an [`Action`], one variant per kind with only that kind's fields, the
//! required ones not optional: once a playbook is loaded, a step its kind cannot run is not
//! representable. Spans stay on the template strings, for errors located at run time.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::inventory::SourceError;

/// How nodes are worked through.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// All nodes at once (bounded by --forks).
    #[default]
    Parallel,
    /// Batches, one after the other; a failing batch halts the run.
    Rolling,
}

/// A batch size: a number of nodes or a percentage.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum BatchSize {
    /// Nodes per batch (negative numbers are read, then refused by validation).
    Count(i64),
    /// `"25%"` of the targeted nodes (at least one), or `"auto"`.
    Percent(String),
}

impl BatchSize {
    /// `batch = "auto"`: sized before each batch by what the cluster can afford.
    pub fn is_auto(&self) -> bool {
        matches!(self, BatchSize::Percent(p) if p == "auto")
    }

    /// Nodes per batch for `total` targeted nodes.
    pub fn resolve(&self, total: usize) -> Result<usize, BatchSizeError> {
        match self {
            BatchSize::Count(n) if *n < 1 => Err(BatchSizeError::TooFew(*n)),
            BatchSize::Count(n) => Ok(usize::try_from(*n).unwrap_or(usize::MAX)),
            BatchSize::Percent(p) => {
                let v: f64 = p
                    .strip_suffix('%')
                    .and_then(|v| v.trim().parse().ok())
                    .filter(|v: &f64| *v > 0.0 && *v <= 100.0)
                    .ok_or_else(|| BatchSizeError::NotAPercentage(p.clone()))?;
                Ok(((total as f64 * v / 100.0).floor() as usize).max(1))
            }
        }
    }
}

/// A `batch` that gives no number of nodes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchSizeError {
    /// A count below 1.
    #[error("batch = {0}: expected at least 1 node")]
    TooFew(i64),
    /// A string that is not a percentage above 0% and at most 100% (`"auto"` included: it is
    /// sized by the cluster, not resolved).
    #[error("batch = {0:?}: expected a number of nodes (at least 1), a percentage above 0% and at most 100% like \"25%\", or \"auto\"")]
    NotAPercentage(String),
}

/// `[strategy]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Strategy {
    /// `parallel` or `rolling`.
    #[serde(default)]
    pub mode: Mode,
    /// Nodes per rolling batch (default 1); validated: at least 1, a percentage in (0, 100].
    #[serde(default)]
    pub batch: Option<Spanned<BatchSize>>,
    /// Failed nodes tolerated before the run halts (default 0: the first failure halts).
    #[serde(default)]
    pub max_failures: usize,
    /// Explicit node order (others follow in inventory order).
    #[serde(default)]
    pub order: Vec<String>,
}

impl Default for Strategy {
    fn default() -> Self {
        Strategy {
            mode: Mode::Parallel,
            batch: None,
            max_failures: 0,
            order: Vec::new(),
        }
    }
}

impl Strategy {
    /// The batch size (1 when not given).
    pub fn batch_size(&self) -> BatchSize {
        self.batch
            .as_ref()
            .map_or(BatchSize::Count(1), |b| b.get_ref().clone())
    }
}

/// The kinds of step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    /// A shell command with guards.
    Run,
    /// One line present or absent (optionally replacing the line a regex matches).
    Line,
    /// Several lines present or absent.
    Lines,
    /// A marked block managed as a whole.
    Block,
    /// A whole file's content, mode, owner; or absent.
    File,
    /// Kernel command line parameters, boot-loader aware.
    KernelCmdline,
    /// Kernel modules in /etc/modules (+ update-initramfs when changed).
    Modules,
    /// A systemd service's state.
    Service,
    /// Reboot and wait for the node and the cluster to be healthy.
    Reboot,
    /// A command that must succeed within a timeout.
    WaitFor,
    /// Run probes; their facts become `facts.<probe>`.
    Probe,
    /// Stop the node unless a condition holds.
    Assert,
}

/// `present` / `absent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Presence {
    /// Ensure present.
    #[default]
    Present,
    /// Ensure absent.
    Absent,
}

/// What a `run` step declares read-only (`read_only`): what a plan may execute on the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOnly {
    /// Nothing declared: a plan evaluates only `creates`.
    Nothing,
    /// `unless` / `only_if` only read the node: a plan evaluates them.
    Guards,
    /// The command too: a plan runs the whole step (a check) and reports its real result.
    All,
}

/// One step of a loaded playbook: what every kind shares, and the kind's own fields in
/// [`Action`]. Built only by [`super::validate`], so a step that loads is one that can run.
#[derive(Debug, Clone)]
pub struct Step {
    /// Unique name.
    pub name: Spanned<String>,
    /// Run only when this expression is true.
    pub when: Option<Spanned<String>>,
    /// When `when` is false: the skip's detail, a template (rendered empty: the usual words,
    /// which variables and facts `when` read). Says what the skip leaves to do ("reboot
    /// pending: KERNEL").
    pub skip_note: Option<Spanned<String>>,
    /// Run only if one of these earlier steps changed something on the node (once).
    pub on_change: Vec<Spanned<String>>,
    /// What the step does, with the fields of its kind.
    pub action: Action,
}

/// What a step does: one variant per kind, each holding only the fields that kind takes.
#[derive(Debug, Clone)]
pub enum Action {
    /// `run`: a shell command with guards.
    Run(RunStep),
    /// `wait_for`: a command that must succeed within a timeout.
    WaitFor(WaitForStep),
    /// `line`: one line present or absent.
    Line(LineStep),
    /// `lines`: several lines present or absent.
    Lines(LinesStep),
    /// `block`: a marked block managed as a whole.
    Block(BlockStep),
    /// `file`: a whole file's content, mode, owner; or absent.
    File(FileStep),
    /// `kernel_cmdline`: kernel command line parameters, boot-loader aware.
    KernelCmdline(AddRemove),
    /// `modules`: kernel modules in /etc/modules (+ update-initramfs when changed).
    Modules(AddRemove),
    /// `service`: a systemd unit's state.
    Service(ServiceStep),
    /// `probe`: run probes; their facts become `facts.<probe>`.
    Probe(ProbeStep),
    /// `assert`: stop the node unless a condition holds.
    Assert(AssertStep),
    /// `reboot`: reboot and wait for the node and the cluster to be healthy.
    Reboot(RebootStep),
}

/// A `run` step.
#[derive(Debug, Clone)]
pub struct RunStep {
    /// The command (templated).
    pub command: Spanned<String>,
    /// Skip when this path exists.
    pub creates: Option<Spanned<String>>,
    /// Skip when this command succeeds.
    pub unless: Option<Spanned<String>>,
    /// Run only when this command succeeds.
    pub only_if: Option<Spanned<String>>,
    /// Expression over `rc`, `stdout`, `stderr`; default: always changed.
    pub changed_when: Option<Spanned<String>>,
    /// Expression over `rc`, `stdout`, `stderr`; default `rc != 0`.
    pub failed_when: Option<Spanned<String>>,
    /// A command that undoes what the step changed; `pvefleet rollback` runs it (in reverse
    /// step order) on nodes where the step reported a change. Templated like `command`
    /// (`run_id` is defined).
    pub undo: Option<Spanned<String>>,
    /// Which parts of the step only read the node, so that `pvefleet plan` may execute them.
    /// `Guards` comes only with an `unless` or `only_if`.
    pub read_only: ReadOnly,
    /// `detach = true`: the command runs detached from the SSH session (its own session,
    /// output and exit status in files under `/run/pvefleet/` on the node): a killed
    /// controller or a dropped connection does not stop it halfway, and a resume reads how it
    /// ended (or waits while it still runs) instead of running it again.
    pub detach: Option<Detach>,
}

/// How a detached `run` step is repaired.
#[derive(Debug, Clone)]
pub struct Detach {
    /// What repairs the step's own command when it was cut off without an exit status (e.g.
    /// `dpkg --configure -a` after a killed dist-upgrade). A resume runs it, journaled, before
    /// the node's facts are gathered, then runs the step again.
    pub repair: Option<Spanned<String>>,
}

/// A `wait_for` step.
#[derive(Debug, Clone)]
pub struct WaitForStep {
    /// The command that must succeed (templated).
    pub command: Spanned<String>,
    /// How long it may take (default 2m).
    pub timeout: Option<Duration>,
}

/// A `line` step.
#[derive(Debug, Clone)]
pub struct LineStep {
    /// Target file.
    pub path: Spanned<String>,
    /// The line.
    pub line: Spanned<String>,
    /// Replace the (last) line matching this regex.
    pub regexp: Option<regex::Regex>,
    /// Insert after the first line matching this regex (templated) instead of at the end.
    pub after: Option<Spanned<String>>,
    /// Present or absent.
    pub state: Presence,
}

/// A `lines` step.
#[derive(Debug, Clone)]
pub struct LinesStep {
    /// Target file.
    pub path: Spanned<String>,
    /// The lines (templated each).
    pub lines: Vec<Spanned<String>>,
    /// Present or absent.
    pub state: Presence,
}

/// A `block` step.
#[derive(Debug, Clone)]
pub struct BlockStep {
    /// Target file.
    pub path: Spanned<String>,
    /// Content between the markers.
    pub block: Spanned<String>,
    /// Present or absent.
    pub state: Presence,
}

/// A `file` step.
#[derive(Debug, Clone)]
pub struct FileStep {
    /// Target file.
    pub path: Spanned<String>,
    /// Content (empty when not given).
    pub content: Option<Spanned<String>>,
    /// Octal mode (`"0644"`).
    pub mode: Option<Spanned<String>>,
    /// Owner (`root:root`).
    pub owner: Option<Spanned<String>>,
    /// Present or absent.
    pub state: Presence,
}

/// A `kernel_cmdline` or `modules` step: at least one of the lists has an item.
#[derive(Debug, Clone)]
pub struct AddRemove {
    /// Parameters or modules to ensure present.
    pub add: Vec<Spanned<String>>,
    /// Parameters or modules to ensure absent.
    pub remove: Vec<Spanned<String>>,
}

/// A `service` step.
#[derive(Debug, Clone)]
pub struct ServiceStep {
    /// Unit name (templated).
    pub service: Spanned<String>,
    /// The state wanted.
    pub state: ServiceState,
}

/// What a `service` step makes of its unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceState {
    /// Active (started when it is not).
    Started,
    /// Inactive (stopped when it is active).
    Stopped,
    /// Restarted, always.
    Restarted,
    /// Enabled at boot.
    Enabled,
    /// Disabled at boot.
    Disabled,
}

impl ServiceState {
    /// Every state, as written in files.
    pub const NAMES: [&'static str; 5] = ["started", "stopped", "restarted", "enabled", "disabled"];

    /// The state named `s` in a file.
    pub fn parse(s: &str) -> Option<ServiceState> {
        use ServiceState::*;
        Some(match s {
            "started" => Started,
            "stopped" => Stopped,
            "restarted" => Restarted,
            "enabled" => Enabled,
            "disabled" => Disabled,
            _ => return None,
        })
    }

    /// The name as written in files.
    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

/// A `probe` step.
#[derive(Debug, Clone)]
pub struct ProbeStep {
    /// Probe names (each a known probe).
    pub probes: Vec<Spanned<String>>,
}

/// An `assert` step.
#[derive(Debug, Clone)]
pub struct AssertStep {
    /// Expression that must be true.
    pub that: Spanned<String>,
    /// Message when it is not (templated; default: the expression).
    pub message: Option<Spanned<String>>,
}

/// A reboot step's deadline when the playbook gives none (`timeout`).
pub const REBOOT_TIMEOUT: Duration = Duration::from_secs(600);

/// A `reboot` step.
#[derive(Debug, Clone)]
pub struct RebootStep {
    /// How long the node may take to come back (default 10m).
    pub timeout: Option<Duration>,
    /// `drain = true`: empty the node first: HA guests through node maintenance, other running
    /// VMs live-migrated (`qm migrate --online`), containers moved (`pct migrate --restart`) to
    /// nodes with room; guests that cannot move meet `--guests`.
    pub drain: Option<Drain>,
    /// Ceph health check codes that do not stop the run (e.g. `["MON_CLOCK_SKEW"]`).
    pub ceph_accept_warnings: Vec<Spanned<String>>,
    /// How long PGs may take to be active+clean again (default 30m).
    pub pg_timeout: Duration,
}

/// How a reboot step drains its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drain {
    /// `local_disks`: allow `--with-local-disks` (copies local disks; slow).
    pub local_disks: bool,
    /// `return_guests`: move the guests back to the node once it is back (default true).
    pub return_guests: bool,
    /// `max_migrations`, `bwlimit`: how many migrations at once and their bandwidth budget.
    pub pace: crate::maintenance::drain::MigrationPace,
}

/// A template string of a step, as validation and the variable check see it.
#[derive(Debug, Clone, Copy)]
pub struct TemplateRef<'a> {
    /// The text, with its span.
    pub text: &'a Spanned<String>,
    /// An expression (`when`, `changed_when`, `failed_when`, `that`), not text.
    pub expression: bool,
    /// Evaluated over a command's result: `rc`, `stdout`, `stderr` are defined.
    pub sees_result: bool,
}

/// A loaded, validated playbook file.
#[derive(Debug, Clone)]
pub struct PlaybookFile {
    /// Name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// Variables with defaults (inventory vars and `-e` override them).
    pub vars: BTreeMap<String, toml::Value>,
    /// Probes whose facts are gathered before the steps (`facts.<probe>`), each known.
    pub gather: Vec<Spanned<String>>,
    /// How nodes are worked through.
    pub strategy: Strategy,
    /// The steps, in order.
    pub steps: Vec<Step>,
}

/// A loaded, validated playbook.
#[derive(Debug, Clone)]
pub struct Playbook {
    /// Where it came from.
    pub path: std::path::PathBuf,
    /// Its text (for error locations at run time).
    pub text: String,
    /// The parsed file.
    pub file: PlaybookFile,
}

impl Playbook {
    /// The reboot steps, in order.
    pub(crate) fn reboot_steps(&self) -> impl Iterator<Item = (&Step, &RebootStep)> {
        self.file
            .steps
            .iter()
            .filter_map(|st| st.reboot().map(|r| (st, r)))
    }

    /// The playbook has a reboot step.
    pub fn reboots(&self) -> bool {
        self.reboot_steps().next().is_some()
    }

    /// The names of the reboot steps.
    pub fn reboot_step_names(&self) -> Vec<String> {
        self.reboot_steps()
            .map(|(st, _)| st.name.get_ref().clone())
            .collect()
    }

    /// The playbook has a reboot step that drains its node.
    pub fn drains(&self) -> bool {
        self.reboot_steps().any(|(_, r)| r.drain.is_some())
    }

    /// An error at a span of this playbook.
    pub fn error_at(&self, span: std::ops::Range<usize>, message: String) -> SourceError {
        SourceError::at(&self.path, &self.text, span, message)
    }
}

impl Step {
    /// The step's kind.
    pub fn kind(&self) -> StepKind {
        self.action.kind()
    }

    /// The reboot step's own fields, when it is one.
    pub fn reboot(&self) -> Option<&RebootStep> {
        match &self.action {
            Action::Reboot(r) => Some(r),
            _ => None,
        }
    }

    /// The step's timeout (`wait_for`, `reboot`), or `default`.
    pub fn timeout_or(&self, default: Duration) -> Duration {
        let t = match &self.action {
            Action::WaitFor(w) => w.timeout,
            Action::Reboot(r) => r.timeout,
            _ => None,
        };
        t.unwrap_or(default)
    }

    /// What the step declares read-only (only a `run` step declares anything).
    pub fn read_only(&self) -> ReadOnly {
        match &self.action {
            Action::Run(r) => r.read_only,
            _ => ReadOnly::Nothing,
        }
    }

    /// A detached `run` step (see [`RunStep::detach`]).
    pub fn detached(&self) -> Option<&Detach> {
        match &self.action {
            Action::Run(r) => r.detach.as_ref(),
            _ => None,
        }
    }

    /// Every template string of the step, in the order validation checks them: the kind's
    /// texts, then `when`, then the kind's expressions.
    pub fn templates(&self) -> Vec<TemplateRef<'_>> {
        let text = |t| TemplateRef {
            text: t,
            expression: false,
            sees_result: false,
        };
        let expr = |t, sees_result| TemplateRef {
            text: t,
            expression: true,
            sees_result,
        };
        let mut v: Vec<TemplateRef<'_>> = Vec::new();
        let mut exprs: Vec<TemplateRef<'_>> = Vec::new();
        match &self.action {
            Action::Run(r) => {
                v.push(text(&r.command));
                let repair = r.detach.as_ref().and_then(|d| d.repair.as_ref());
                for t in [&r.creates, &r.unless, &r.only_if, &r.undo]
                    .into_iter()
                    .flatten()
                    .chain(repair)
                {
                    v.push(text(t));
                }
                for t in [&r.changed_when, &r.failed_when].into_iter().flatten() {
                    exprs.push(expr(t, true));
                }
            }
            Action::WaitFor(w) => v.push(text(&w.command)),
            Action::Line(l) => v.extend([text(&l.path), text(&l.line)]),
            Action::Lines(l) => {
                v.push(text(&l.path));
                v.extend(l.lines.iter().map(text));
            }
            Action::Block(b) => v.extend([text(&b.path), text(&b.block)]),
            Action::File(f) => {
                v.push(text(&f.path));
                v.extend(f.content.iter().map(text));
            }
            Action::KernelCmdline(a) | Action::Modules(a) => {
                v.extend(a.add.iter().chain(&a.remove).map(text));
            }
            Action::Assert(a) => exprs.push(expr(&a.that, false)),
            Action::Service(_) | Action::Probe(_) | Action::Reboot(_) => {}
        }
        v.extend(self.skip_note.iter().map(text));
        v.extend(self.when.iter().map(|w| expr(w, false)));
        v.extend(exprs);
        v
    }
}

impl Action {
    /// The kind this action is.
    pub fn kind(&self) -> StepKind {
        match self {
            Action::Run(_) => StepKind::Run,
            Action::WaitFor(_) => StepKind::WaitFor,
            Action::Line(_) => StepKind::Line,
            Action::Lines(_) => StepKind::Lines,
            Action::Block(_) => StepKind::Block,
            Action::File(_) => StepKind::File,
            Action::KernelCmdline(_) => StepKind::KernelCmdline,
            Action::Modules(_) => StepKind::Modules,
            Action::Service(_) => StepKind::Service,
            Action::Probe(_) => StepKind::Probe,
            Action::Assert(_) => StepKind::Assert,
            Action::Reboot(_) => StepKind::Reboot,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_state_reads_back_as_written() {
        for name in ServiceState::NAMES {
            let state = ServiceState::parse(name).expect(name);
            assert_eq!(state.as_str(), name);
        }
        assert_eq!(ServiceState::parse("on"), None);
    }
}
