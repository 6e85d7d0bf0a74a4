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
    /// The journal (none in plan mode): backups and undo records. Events go through
    /// `events`, whose journal writer is this journal.
    pub journal: Option<Journal>,
    /// The run's event stream: the journal writer, the live display, notifications and the
    /// notes on stderr consume it.
    pub events: crate::events::EventBus,
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
    /// `-v`: each command's output, line by line as it arrives.
    pub output: Option<crate::progress::OutputSink>,
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
    /// `run --max-migrations` / `--bwlimit`: each one set overrides every drain step's own.
    pub migration_pace: crate::maintenance::drain::MigrationPace,
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
        Value::from(minijinja::value::Serde(serde_json::Value::Object(
            self.ctx_map(extra),
        )))
    }

    /// Why a step's `when` is false, in words: the variables and facts it read, each with its
    /// value (lists and tables summarised; a fact's number, a measurement, only named),
    /// instead of the condition's text.
    pub fn why_false(&self, when: &toml::Spanned<String>) -> String {
        let ctx = serde_json::Value::Object(self.ctx_map(None));
        let read: Vec<String> = self
            .t
            .condition_paths(when.get_ref())
            .into_iter()
            .map(|p| {
                let v = p.split('.').try_fold(&ctx, |v, k| v.get(k));
                match v {
                    // A fact's number is a measurement (a clock offset): named, not shown, so
                    // nodes alike still fold together.
                    Some(n) if n.is_number() && p.starts_with("facts.") => p,
                    Some(v) => format!("{p} = {}", summarise(v)),
                    None => format!("{p} = undefined"),
                }
            })
            .collect();
        if read.is_empty() {
            "its `when` is false".into()
        } else {
            format!("its `when` is false with {}", read.join(", "))
        }
    }

    fn ctx_map(
        &self,
        extra: Option<serde_json::Value>,
    ) -> serde_json::Map<String, serde_json::Value> {
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
        m
    }

    /// `e` as the step error of the template at `span` of the playbook file.
    fn template_error(&self, span: std::ops::Range<usize>, e: TemplateError) -> StepError {
        StepError::Template(self.s.playbook.error_at(span, e.to_string()).to_string())
    }

    /// An optional template rendered (a command's values shell-quoted when `command`).
    pub fn render(
        &self,
        s: &Option<toml::Spanned<String>>,
        command: bool,
    ) -> Result<Option<String>, StepError> {
        s.as_ref().map(|x| self.render_one(x, command)).transpose()
    }

    /// A template rendered (a command's values shell-quoted when `command`).
    pub fn render_one(
        &self,
        x: &toml::Spanned<String>,
        command: bool,
    ) -> Result<String, StepError> {
        let ctx = self.ctx(None);
        let r = if command {
            self.t.command(x.get_ref(), &ctx)
        } else {
            self.t.text(x.get_ref(), &ctx)
        };
        r.map_err(|e| self.template_error(x.span(), e))
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

/// A value as a plan line shows it: scalars as they are (strings quoted, long ones cut), a
/// short list of scalars in full, other lists and tables by their size.
fn summarise(v: &serde_json::Value) -> String {
    use serde_json::Value as J;
    fn cut(s: &str) -> String {
        if s.chars().count() > 40 {
            format!("{}…", s.chars().take(39).collect::<String>())
        } else {
            s.to_string()
        }
    }
    match v {
        J::Null => "none".into(),
        J::Bool(b) => b.to_string(),
        // Measured values (a clock offset) at two decimals, so nodes alike fold together.
        J::Number(n) if n.is_f64() => {
            let v = format!("{:.2}", n.as_f64().unwrap_or_default());
            v.trim_end_matches('0').trim_end_matches('.').to_string()
        }
        J::Number(n) => n.to_string(),
        J::String(s) => format!("'{}'", cut(s)),
        J::Array(a) if a.is_empty() => "[] (empty)".into(),
        J::Array(a) => {
            let scalars: Option<Vec<String>> = a
                .iter()
                .map(|x| (!x.is_array() && !x.is_object()).then(|| summarise(x)))
                .collect();
            match scalars {
                Some(items) if items.iter().map(String::len).sum::<usize>() <= 40 => {
                    format!("[{}]", items.join(", "))
                }
                _ => format!("[{} item(s)]", a.len()),
            }
        }
        J::Object(o) => format!("{{{} key(s)}}", o.len()),
    }
}

/// A step result with `status` and `detail`.
pub(crate) fn result(step: &Step, status: StepStatus, detail: impl Into<String>) -> StepResult {
    StepResult::new(step.name.get_ref(), status, detail)
}

#[cfg(test)]
mod tests {
    use super::summarise;
    use serde_json::json;

    #[test]
    fn values_are_summarised_for_a_plan_line() {
        assert_eq!(summarise(&json!(false)), "false");
        assert_eq!(summarise(&json!(null)), "none");
        assert_eq!(summarise(&json!(2.5)), "2.5");
        assert_eq!(summarise(&json!(0.008549)), "0.01");
        assert_eq!(summarise(&json!(0.0009)), "0");
        assert_eq!(summarise(&json!(12)), "12");
        assert_eq!(summarise(&json!("bridge-ports")), "'bridge-ports'");
        assert_eq!(summarise(&json!(["a", "b"])), "['a', 'b']");
        assert_eq!(summarise(&json!([])), "[] (empty)");
        assert_eq!(
            summarise(&json!([{"name": "eno1"}, {"name": "eno2"}])),
            "[2 item(s)]"
        );
        assert_eq!(summarise(&json!({"a": 1, "b": 2})), "{2 key(s)}");
        let long = "x".repeat(100);
        let cut = summarise(&json!(long));
        assert_eq!(cut.chars().count(), 42, "{cut}");
        assert!(cut.ends_with("…'"));
    }
}
