//! What one node's run needs while its steps execute: the run's settings (shared by all nodes),
//! the node's state (variables, facts, what changed, backups taken), and the small helpers every
//! step kind uses. Below the step kinds, the reboot state machine and the engine, so none of them
//! needs another's types.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use minijinja::value::Value;
use tokio_util::sync::CancellationToken;

use super::error::StepError;
use super::model::{Playbook, Step};
use super::template::{TemplateError, Templates};
use crate::inventory::Node;
use crate::journal::{Journal, NodeHistory};
use crate::outcome::{GuestPolicy, StepResult, StepStatus};

/// A receiver of live step changes: (node, current step); an empty step when the node is done.
pub type StepSink = Arc<dyn Fn(&str, &str) + Send + Sync>;

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
    /// `--allow-maintained`: a node already in HA maintenance is not refused (and its
    /// maintenance is never switched off).
    pub allow_maintained: bool,
    /// Nodes whose HA maintenance is this run's own (switched on by the run being resumed): not
    /// someone else's, also in the plan of the resume, whose `resume` is empty.
    pub own_maintenance: std::collections::BTreeSet<String>,
    /// Live display.
    pub on_step: Option<StepSink>,
    /// Ctrl-C, SIGTERM, SIGHUP: nodes stop at the next safe point.
    pub cancel: CancellationToken,
    /// Per-node history of the run being resumed.
    pub resume: BTreeMap<String, NodeHistory>,
    /// Every node of the inventory (to reach the node a moved guest is on).
    pub cluster: Vec<Node>,
    /// Which nodes of the run are still to come and which are in the running batch (drain
    /// targets avoid both when they can).
    pub rolling: std::sync::Mutex<crate::maintenance::RollingView>,
    /// The nodes whose plan (made just before the run) has a reboot step that would run, or
    /// could not be planned. `None`: not known, every node counts as rebooting. The quorum gate
    /// of a batch counts only these; the reboot itself checks quorum again before it starts.
    pub planned_reboots: Option<std::collections::BTreeSet<String>>,
    /// Windows, pauses, approvals and backups between the nodes of a rolling run.
    pub pacing: Arc<super::pacing::Pacing>,
}

/// Variables every playbook has without declaring them: `node`, `facts`, `vars`, `run_id`,
/// `changed` (see playbooks/README.md, Templates).
pub const BUILTIN_VARS: [&str; 5] = ["node", "facts", "vars", "run_id", "changed"];

/// Where backups go on the node.
pub fn backup_dir(run_id: &str) -> String {
    format!("/var/lib/pvefleet/backups/{run_id}")
}

/// Per-node state while steps run.
pub(crate) struct NodeState<'a> {
    pub s: &'a RunSettings,
    pub t: Templates,
    pub vars: serde_json::Map<String, serde_json::Value>,
    pub facts: serde_json::Map<String, serde_json::Value>,
    /// Steps that changed something (also in an earlier, interrupted attempt of this run).
    pub changed: HashSet<String>,
    pub rebooted: bool,
    /// Check mode: a reboot step would run, so later facts cannot be known now.
    pub reboot_pending: bool,
    /// Paths already backed up in this run on this node, with whether they existed then (the
    /// first backup of a path is never replaced).
    pub backed_up: BTreeMap<String, bool>,
    /// The node's history in the resumed run.
    pub history: Option<&'a NodeHistory>,
    /// Index of the step running.
    pub index: usize,
    /// Left switched on on purpose.
    pub left_on: Vec<String>,
    /// Current reboot state, for the stop point.
    pub reboot_state: Option<String>,
}

impl NodeState<'_> {
    pub fn ctx(&self, extra: Option<serde_json::Value>) -> Value {
        let mut m = self.vars.clone();
        m.insert("vars".into(), serde_json::Value::Object(self.vars.clone()));
        m.insert(
            "facts".into(),
            serde_json::Value::Object(self.facts.clone()),
        );
        // The steps that changed something on this node so far (in a plan: would change), so a
        // later step can say "not needed when that one ran" and the plan predicts it exactly.
        let mut changed: Vec<&String> = self.changed.iter().collect();
        changed.sort();
        m.insert("changed".into(), serde_json::json!(changed));
        if let Some(serde_json::Value::Object(e)) = extra {
            m.extend(e);
        }
        Value::from(minijinja::value::Serde(serde_json::Value::Object(m)))
    }

    /// `e` as the step error of the template at `span` of the playbook file.
    fn template_error(&self, span: std::ops::Range<usize>, e: TemplateError) -> StepError {
        StepError::Template(self.s.playbook.error_at(span, e.to_string()).to_string())
    }

    pub fn render(
        &self,
        s: &Option<toml::Spanned<String>>,
        command: bool,
    ) -> Result<Option<String>, StepError> {
        match s {
            None => Ok(None),
            Some(x) => {
                let ctx = self.ctx(None);
                let r = if command {
                    self.t.command(x.get_ref(), &ctx)
                } else {
                    self.t.text(x.get_ref(), &ctx)
                };
                r.map(Some).map_err(|e| self.template_error(x.span(), e))
            }
        }
    }

    pub fn render_list(&self, items: &[toml::Spanned<String>]) -> Result<Vec<String>, StepError> {
        items
            .iter()
            .map(|x| {
                self.t
                    .text(x.get_ref(), &self.ctx(None))
                    .map_err(|e| self.template_error(x.span(), e))
            })
            .collect()
    }

    pub fn truth(
        &self,
        x: &toml::Spanned<String>,
        extra: Option<serde_json::Value>,
    ) -> Result<bool, StepError> {
        self.t
            .truth(x.get_ref(), &self.ctx(extra))
            .map_err(|e| self.template_error(x.span(), e))
    }
}

/// A step result with `status` and `detail`.
pub(crate) fn result(step: &Step, status: StepStatus, detail: impl Into<String>) -> StepResult {
    StepResult {
        step: step.name.get_ref().clone(),
        status,
        detail: detail.into(),
        diff: None,
        commands: Vec::new(),
        checks: Vec::new(),
        predicted_ms: None,
    }
}
