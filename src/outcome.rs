//! The plain data of a playbook step's outcome and of the guest policy: what the engine
//! produces, the journal records and the reports render. Below all three.

use serde::{Deserialize, Serialize};

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
    /// What was checked before deciding (a reboot's readiness: quorum, guests, Ceph, dpkg), one
    /// line each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<String>,
    /// A planned reboot's predicted duration, milliseconds, from the node's earlier reboots in
    /// the journal (absent without history).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted_ms: Option<u64>,
    /// In a plan: a step whose outcome only the run can know (a wait, a check of the state
    /// after the reboot the plan would do); `skipped` in the plan, said as what the run does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deferred: Option<Deferred>,
    /// In the preview of a resume: the step finished in the stopped run, and the resume keeps
    /// its result (it is not run again).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resumed: bool,
    /// In a plan: where the reboot's drain would move each guest that leaves the node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub moves: Vec<PlannedMove>,
    /// What a `run` step's command printed, capped by [`capped_output`] (journals written
    /// before it was recorded have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

/// Lines of a step's output the journal keeps: the last ones.
pub const OUTPUT_LINES: usize = 100;
/// Bytes of a step's output the journal keeps, at most (the last ones, whole lines).
pub const OUTPUT_BYTES: usize = 4096;

/// A step command's output as the journal keeps it: its stdout, then its stderr under a
/// `stderr:` line, cut to the last [`OUTPUT_LINES`] lines and [`OUTPUT_BYTES`] bytes; a cut
/// output opens with a line saying how much was cut. `None` when the command printed nothing.
/// The tail is kept: what a command prints last (its error, its summary) says most.
pub fn capped_output(stdout: &[u8], stderr: &[u8]) -> Option<String> {
    let (out, err) = (
        String::from_utf8_lossy(stdout),
        String::from_utf8_lossy(stderr),
    );
    let mut lines: Vec<&str> = out.lines().collect();
    if !err.trim().is_empty() {
        lines.push("stderr:");
        lines.extend(err.lines());
    }
    if lines.iter().all(|l| l.trim().is_empty()) {
        return None;
    }
    let total = lines.len();
    let mut kept: Vec<&str> = Vec::new();
    let mut bytes = 0;
    for l in lines.iter().rev().take(OUTPUT_LINES) {
        if bytes + l.len() + 1 > OUTPUT_BYTES && !kept.is_empty() {
            break;
        }
        bytes += l.len() + 1;
        kept.push(l);
    }
    kept.reverse();
    let mut text = String::new();
    if kept.len() < total {
        text.push_str(&format!(
            "[output cut: the first {} of {total} lines not kept; the last {} shown]\n",
            total - kept.len(),
            kept.len()
        ));
    }
    for l in kept {
        // One line longer than the cap keeps its end.
        let cut = l.len().saturating_sub(OUTPUT_BYTES);
        let start = (cut..=l.len())
            .find(|&i| l.is_char_boundary(i))
            .unwrap_or(l.len());
        text.push_str(&l[start..]);
        text.push('\n');
    }
    Some(text)
}

/// A guest a planned reboot's drain would move away, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedMove {
    /// `qm` or `pct`.
    pub kind: String,
    /// VMID.
    pub vmid: u32,
    /// Name (display only).
    pub name: String,
    /// The node it would go to (for an HA guest: where the room is; HA chooses).
    pub to: String,
    /// HA moves it (through HA maintenance), not the drain.
    pub by_ha: bool,
    /// Its memory, bytes, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maxmem: Option<u64>,
}

/// What a plan cannot decide about a step, and the run will.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Deferred {
    /// A `wait_for`: the run waits until its command succeeds.
    Wait,
    /// A read of the node's state after a reboot the plan would do.
    AfterReboot,
}

impl StepResult {
    /// A result with `status` and `detail` and nothing else (no diff, commands or checks).
    pub fn new(step: &str, status: StepStatus, detail: impl Into<String>) -> StepResult {
        StepResult {
            step: step.to_string(),
            status,
            detail: detail.into(),
            diff: None,
            commands: Vec::new(),
            checks: Vec::new(),
            predicted_ms: None,
            deferred: None,
            resumed: false,
            moves: Vec::new(),
            output: None,
        }
    }

    /// The plan's word for this step: `ok`, `would change` (a file), `would run` (a command, a
    /// reboot), `would skip`, `would wait`, `after reboot`, `done` (before a resume), `FAILED`.
    pub fn plan_verb(&self) -> &'static str {
        if self.resumed {
            return "done";
        }
        match (self.status, self.deferred) {
            (StepStatus::Failed, _) => "FAILED",
            (_, Some(Deferred::Wait)) => "would wait",
            (_, Some(Deferred::AfterReboot)) => "after reboot",
            (StepStatus::Ok, None) => "ok",
            (StepStatus::Changed, None) if self.diff.is_some() => "would change",
            (StepStatus::Changed, None) => "would run",
            (StepStatus::Skipped, None) => "would skip",
        }
    }
}

/// What guests on a node about to reboot mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GuestPolicy {
    /// Stop the node's run with a message listing them (default).
    Refuse,
    /// Shut them down (`qm shutdown` / `pct shutdown`) before the reboot and start them again
    /// once the node is back.
    Shutdown,
    /// Leave them running and reboot anyway (the operator's choice; `--guests skip` too).
    Ignore,
}

impl std::fmt::Display for GuestPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            GuestPolicy::Refuse => "refuse",
            GuestPolicy::Shutdown => "shutdown",
            GuestPolicy::Ignore => "ignore",
        })
    }
}

/// Human duration for tables and step details: `850ms`, `1.2s`, `2m03s`.
pub fn short_duration(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_output_is_kept_whole_with_stderr_after_stdout() {
        let thirty: String = (1..=30).map(|i| format!("line {i}\n")).collect();
        assert_eq!(
            capped_output(thirty.as_bytes(), b"").as_deref(),
            Some(thirty.as_str())
        );
        assert_eq!(
            capped_output(b"done\n", b"warning: x\n").as_deref(),
            Some("done\nstderr:\nwarning: x\n")
        );
        assert_eq!(capped_output(b"", b"\n"), None);
    }

    #[test]
    fn a_long_output_keeps_its_last_lines_and_says_it_was_cut() {
        let many: String = (1..=100_000).map(|i| format!("{i}\n")).collect();
        let kept = capped_output(many.as_bytes(), b"").unwrap();
        let lines: Vec<&str> = kept.lines().collect();
        assert_eq!(
            lines[0],
            "[output cut: the first 99900 of 100000 lines not kept; the last 100 shown]"
        );
        assert_eq!(lines.len(), 101);
        assert_eq!(lines[100], "100000");
        let wide: String = (0..100).map(|_| format!("{}\n", "x".repeat(200))).collect();
        let kept = capped_output(wide.as_bytes(), b"").unwrap();
        assert!(kept.len() <= OUTPUT_BYTES + 100, "{}", kept.len());
        assert!(
            kept.starts_with("[output cut: the first 80 of 100 lines"),
            "{kept}"
        );
        let one = "y".repeat(10_000);
        assert_eq!(
            capped_output(one.as_bytes(), b"").unwrap().len(),
            OUTPUT_BYTES + 1
        );
    }
}
