//! The playbook file: TOML parsed into typed steps, validated up front with file:line:column.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::inventory::{HumanDuration, SourceError};

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

/// One `[[step]]`. Fields not used by the step's kind are rejected by validation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Unique name.
    pub name: Spanned<String>,
    /// Kind.
    pub kind: Spanned<StepKind>,
    /// Run only when this expression is true.
    pub when: Option<Spanned<String>>,
    /// When `when` is false: the skip's detail, a template (rendered empty: the usual words,
    /// which variables and facts `when` read). Says what the skip leaves to do ("reboot
    /// pending: KERNEL").
    pub skip_note: Option<Spanned<String>>,
    /// Run only if one of these earlier steps changed something on the node (once).
    #[serde(default)]
    pub on_change: Vec<Spanned<String>>,

    // run / wait_for
    /// Command (run, wait_for).
    pub command: Option<Spanned<String>>,
    /// run: skip when this path exists.
    pub creates: Option<Spanned<String>>,
    /// run: skip when this command succeeds.
    pub unless: Option<Spanned<String>>,
    /// run: run only when this command succeeds.
    pub only_if: Option<Spanned<String>>,
    /// run: expression over `rc`, `stdout`, `stderr`; default: always changed.
    pub changed_when: Option<Spanned<String>>,
    /// run: expression; default `rc != 0`.
    pub failed_when: Option<Spanned<String>>,
    /// run: a command that undoes what the step changed; `pvefleet rollback` runs it (in
    /// reverse step order) on nodes where the step reported a change. Templated like `command`
    /// (`run_id` is defined).
    pub undo: Option<Spanned<String>>,
    /// run: which parts of the step only read the node, so that `pvefleet plan` may execute
    /// them: `"guards"` (`unless` / `only_if`) or `"all"` (the guards and the command: a
    /// check). Without it a plan evaluates no `unless` / `only_if` (only `creates`, which is
    /// pvefleet's own `test -e`) and shows the step as "would run".
    pub read_only: Option<Spanned<String>>,
    /// run: run the command detached from the SSH session (its own session, output and exit
    /// status in files under `/run/pvefleet/` on the node): a killed controller or a dropped
    /// connection does not stop it halfway, and a resume reads how it ended (or waits while it
    /// still runs) instead of running it again.
    pub detach: Option<Spanned<bool>>,
    /// run with `detach`: what repairs the step's own command when it was cut off without an
    /// exit status (e.g. `dpkg --configure -a` after a killed dist-upgrade). A resume runs it,
    /// journaled, before the node's facts are gathered, then runs the step again.
    pub repair: Option<Spanned<String>>,

    // files
    /// Target file.
    pub path: Option<Spanned<String>>,
    /// line: the line.
    pub line: Option<Spanned<String>>,
    /// lines: the lines.
    pub lines: Option<Vec<Spanned<String>>>,
    /// line: replace the (last) line matching this regex.
    pub regexp: Option<Spanned<String>>,
    /// line: insert after the first line matching this regex (templated) instead of at the end.
    pub after: Option<Spanned<String>>,
    /// line/lines/block/file: present or absent.
    #[serde(default)]
    pub state: Option<Spanned<String>>,
    /// block: content between the markers.
    pub block: Option<Spanned<String>>,
    /// file: content.
    pub content: Option<Spanned<String>>,
    /// file: octal mode (`"0644"`).
    pub mode: Option<Spanned<String>>,
    /// file: owner (`root:root`).
    pub owner: Option<Spanned<String>>,

    // kernel_cmdline / modules
    /// Parameters or modules to ensure present.
    #[serde(default)]
    pub add: Vec<Spanned<String>>,
    /// Parameters or modules to ensure absent.
    #[serde(default)]
    pub remove: Vec<Spanned<String>>,

    // service
    /// Unit name.
    pub service: Option<Spanned<String>>,

    // reboot / wait_for
    /// Deadline.
    pub timeout: Option<Spanned<HumanDuration>>,
    /// reboot: empty the node first: HA guests through node maintenance, other running VMs
    /// live-migrated (`qm migrate --online`), containers moved (`pct migrate --restart`) to
    /// nodes with room; guests that cannot move meet `--guests`.
    pub drain: Option<Spanned<bool>>,
    /// reboot with drain: allow `--with-local-disks` (copies local disks; slow).
    pub local_disks: Option<Spanned<bool>>,
    /// reboot with drain: move the guests back to the node once it is back (default true).
    pub return_guests: Option<Spanned<bool>>,
    /// reboot: Ceph health check codes that do not stop the run (e.g. `["MON_CLOCK_SKEW"]`).
    #[serde(default)]
    pub ceph_accept_warnings: Vec<Spanned<String>>,
    /// reboot: how long PGs may take to be active+clean again (default 30m).
    pub pg_timeout: Option<Spanned<HumanDuration>>,

    // probe / assert
    /// probe: probe names.
    #[serde(default)]
    pub probes: Vec<Spanned<String>>,
    /// assert: expression that must be true.
    pub that: Option<Spanned<String>>,
    /// assert: message when it is not.
    pub message: Option<Spanned<String>>,
}

/// A reboot step's deadline when the playbook gives none (`timeout`).
pub const REBOOT_TIMEOUT: Duration = Duration::from_secs(600);

/// A playbook file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaybookFile {
    /// Name.
    pub name: String,
    /// What it does.
    #[serde(default)]
    pub description: String,
    /// Variables with defaults (inventory vars and `-e` override them).
    #[serde(default)]
    pub vars: BTreeMap<String, toml::Value>,
    /// Probes whose facts are gathered before the steps (`facts.<probe>`).
    #[serde(default)]
    pub gather: Vec<Spanned<String>>,
    /// How nodes are worked through.
    #[serde(default)]
    pub strategy: Strategy,
    /// The steps, in order.
    #[serde(rename = "step", default)]
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
    pub(crate) fn reboot_steps(&self) -> impl Iterator<Item = &Step> {
        self.file
            .steps
            .iter()
            .filter(|st| *st.kind.get_ref() == StepKind::Reboot)
    }

    /// The playbook has a reboot step.
    pub fn reboots(&self) -> bool {
        self.reboot_steps().next().is_some()
    }

    /// The names of the reboot steps.
    pub fn reboot_step_names(&self) -> Vec<String> {
        self.reboot_steps()
            .map(|st| st.name.get_ref().clone())
            .collect()
    }

    /// The playbook has a reboot step that drains its node.
    pub fn drains(&self) -> bool {
        self.reboot_steps().any(|st| Step::flag(&st.drain, false))
    }

    /// An error at a span of this playbook.
    pub fn error_at(&self, span: std::ops::Range<usize>, message: String) -> SourceError {
        SourceError::at(&self.path, &self.text, span, message)
    }
}

impl Step {
    /// A boolean field's value, or `default`.
    pub fn flag(field: &Option<Spanned<bool>>, default: bool) -> bool {
        field.as_ref().map_or(default, |b| *b.get_ref())
    }

    /// The step's timeout, or `default`.
    pub fn timeout_or(&self, default: Duration) -> Duration {
        self.timeout.as_ref().map_or(default, |t| t.get_ref().0)
    }

    /// `read_only`, parsed (validated already).
    pub fn read_only(&self) -> ReadOnly {
        match self.read_only.as_ref().map(|s| s.get_ref().as_str()) {
            Some("guards") => ReadOnly::Guards,
            Some("all") => ReadOnly::All,
            _ => ReadOnly::Nothing,
        }
    }

    /// `state`, parsed (validated already).
    pub fn presence(&self) -> Presence {
        match self.state.as_ref().map(|s| s.get_ref().as_str()) {
            Some("absent") => Presence::Absent,
            _ => Presence::Present,
        }
    }
}
