//! Live progress on stderr (indicatif), only when stderr is a terminal; nothing when piped.
//!
//! Consumes [`FanoutEvent`]s: nodes done out of total, and failures so far.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::fanout::{EventSink, FanoutEvent};

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
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} nodes {msg} ({elapsed})")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(what.to_string());
        Progress { bar: Some(bar) }
    }

    /// The event sink feeding this bar (`None` when there is no bar).
    pub fn sink(&self) -> Option<EventSink> {
        let bar = self.bar.clone()?;
        let failed = Arc::new(AtomicUsize::new(0));
        Some(Arc::new(move |e: FanoutEvent| {
            if let FanoutEvent::Finished { ok, .. } = e {
                if !ok {
                    let n = failed.fetch_add(1, Ordering::Relaxed) + 1;
                    bar.set_message(format!("{n} failed"));
                }
                bar.inc(1);
            }
        }))
    }

    /// Remove the bar before results are printed.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
