//! Live progress on stderr (indicatif), only when stderr is a terminal; nothing when piped.
//!
//! Consumes [`FanoutEvent`]s: nodes done out of total, and failures so far.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::fanout::{EventSink, FanoutEvent};

/// The "nodes done" bar style shared by every display.
fn nodes_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} nodes {msg} ({elapsed})")
        .expect("valid template")
        .progress_chars("=> ")
}

/// An event sink that advances `bar` for each finished node and counts failures in its message.
fn count_finished(bar: ProgressBar) -> EventSink {
    let failed = Arc::new(AtomicUsize::new(0));
    Arc::new(move |e: FanoutEvent| {
        if let FanoutEvent::Finished { ok, .. } = e {
            if !ok {
                let n = failed.fetch_add(1, Ordering::Relaxed) + 1;
                bar.set_message(format!("{n} failed"));
            }
            bar.inc(1);
        }
    })
}

/// A progress bar over `total` nodes, or nothing when stderr is not a terminal.
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// A bar titled `what` (e.g. `exec`) over `total` nodes, if stderr is a terminal.
    pub fn new(what: &str, total: usize) -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress { bar: None };
        }
        let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
        bar.set_style(nodes_style());
        bar.set_prefix(what.to_string());
        Progress { bar: Some(bar) }
    }

    /// The event sink feeding this bar (`None` when there is no bar).
    pub fn sink(&self) -> Option<EventSink> {
        self.bar.clone().map(count_finished)
    }

    /// Remove the bar before results are printed.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Callback: node `.0` is now at step `.1`.
pub type StepSink = Arc<dyn Fn(&str, &str) + Send + Sync>;

/// Live per-node progress for playbook runs: a bar of nodes done, and one line per running node
/// showing its current step. Only when stderr is a terminal.
pub struct StepProgress {
    multi: Option<indicatif::MultiProgress>,
    main: Option<ProgressBar>,
    lines: Arc<std::sync::Mutex<std::collections::HashMap<String, ProgressBar>>>,
}

impl StepProgress {
    /// A display for a run titled `what` over `total` nodes, or nothing without a terminal.
    pub fn new(what: &str, total: usize) -> StepProgress {
        if !std::io::stderr().is_terminal() {
            return StepProgress {
                multi: None,
                main: None,
                lines: Default::default(),
            };
        }
        let multi = indicatif::MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let main = multi.add(ProgressBar::new(total as u64));
        main.set_style(nodes_style());
        main.set_prefix(what.to_string());
        // The run's clock keeps going between nodes.
        main.enable_steady_tick(std::time::Duration::from_millis(500));
        StepProgress {
            multi: Some(multi),
            main: Some(main),
            lines: Default::default(),
        }
    }

    /// Fan-out events feeding the nodes-done bar.
    pub fn events(&self) -> Option<EventSink> {
        self.main.clone().map(count_finished)
    }

    /// The sink steps report to (`None` without a terminal).
    pub fn sink(&self) -> Option<StepSink> {
        let multi = self.multi.clone()?;
        let lines = Arc::clone(&self.lines);
        Some(Arc::new(move |node: &str, step: &str| {
            let mut map = lines.lock().expect("progress lines");
            let bar = map.entry(node.to_string()).or_insert_with(|| {
                let b = multi.add(ProgressBar::new_spinner());
                b.set_style(
                    ProgressStyle::with_template("  {spinner} {prefix:<12} {msg} ({elapsed})")
                        .expect("valid template"),
                );
                b.set_prefix(node.to_string());
                b.enable_steady_tick(std::time::Duration::from_millis(120));
                b
            });
            if step.is_empty() {
                bar.finish_and_clear();
            } else {
                // The time shown is since this line's state began (a slow boot shows its own
                // wait, not the step's whole time).
                let msg = crate::sanitize::sanitize_str(step);
                if bar.message() != msg {
                    bar.reset_elapsed();
                    bar.set_message(msg);
                }
            }
        }))
    }

    /// Print a block of text above the live lines (or plainly without a terminal).
    pub fn println(&self, text: &str) {
        match &self.multi {
            Some(m) => m.suspend(|| eprintln!("{text}")),
            None => eprintln!("{text}"),
        }
    }

    /// Stop drawing while a question is asked on the terminal (the run's clock would draw over
    /// it); [`StepProgress::show`] draws again.
    pub fn hide(&self) {
        if let Some(m) = &self.multi {
            let _ = m.clear();
            m.set_draw_target(ProgressDrawTarget::hidden());
        }
    }

    /// Draw again after [`StepProgress::hide`].
    pub fn show(&self) {
        if let Some(m) = &self.multi {
            m.set_draw_target(ProgressDrawTarget::stderr());
        }
    }

    /// Remove every line.
    pub fn finish(&self) {
        for b in self.lines.lock().expect("progress lines").values() {
            b.finish_and_clear();
        }
        if let Some(b) = &self.main {
            b.finish_and_clear();
        }
        if let Some(m) = &self.multi {
            let _ = m.clear();
        }
    }
}
