//! Live progress on stderr (indicatif), only when stderr is a terminal; nothing when piped.
//!
//! Consumes [`FanoutEvent`]s: nodes done out of total, and failures so far. A playbook run's
//! display is a consumer of the run's event stream ([`crate::events`]): the fan-out's events
//! for that bar, and each running node's [`Activity`], rendered as a [`Doing`] ([`doing`]): what
//! it does or waits for, its own clock, and the deadline when there is one.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::events::{Activity, Consumer, RunEvent};
use crate::fanout::{EventSink, FanoutEvent};
use crate::journal::GuestRef;

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

/// What a node is doing now, for the live display: "reboot: waiting for a new boot id (14 s of
/// 10 m)", "reboot: migrating 101 (web) to pve3 (8 s)", "reboot: Ceph PGs 96/128 active+clean
/// (8 s of 30 m)".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Doing {
    /// The activity; its clock starts when this changes.
    pub what: String,
    /// How far it is (a count that changes while the clock goes on).
    pub detail: Option<String>,
    /// How long it may take, when it is bounded.
    pub deadline: Option<Duration>,
}

impl Doing {
    /// An activity with no detail and no deadline (a step running).
    pub fn new(what: impl Into<String>) -> Doing {
        Doing {
            what: what.into(),
            detail: None,
            deadline: None,
        }
    }

    /// The same with a deadline.
    pub fn within(mut self, deadline: Duration) -> Doing {
        self.deadline = Some(deadline);
        self
    }

    /// The same with how far it is.
    pub fn detail(mut self, detail: impl Into<String>) -> Doing {
        self.detail = Some(detail.into());
        self
    }

    /// The same, its activity named under `prefix` ("reboot: ...").
    pub fn under(mut self, prefix: &str) -> Doing {
        self.what = format!("{prefix}: {}", self.what);
        self
    }

    /// The line without its clock: `what`, then the detail.
    pub fn text(&self) -> String {
        match &self.detail {
            Some(d) => format!("{} {d}", self.what),
            None => self.what.clone(),
        }
    }

    /// The whole line after `elapsed` in this activity: "waiting for a new boot id (14 s of
    /// 10 m)".
    pub fn line(&self, elapsed: Duration) -> String {
        match self.deadline {
            Some(d) => format!("{} ({} of {})", self.text(), clock(elapsed), clock(d)),
            None => format!("{} ({})", self.text(), clock(elapsed)),
        }
    }
}

/// A duration as the live display says it: "14 s", "3 m 07 s", "10 m", "1 h 05 m".
pub fn clock(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s} s"),
        60..3600 if s % 60 == 0 => format!("{} m", s / 60),
        60..3600 => format!("{} m {:02} s", s / 60, s % 60),
        _ if s % 3600 / 60 == 0 => format!("{} h", s / 3600),
        _ => format!("{} h {:02} m", s / 3600, s % 3600 / 60),
    }
}

/// A live line's current activity, read by its style at each tick.
type SharedDoing = Arc<std::sync::Mutex<Doing>>;

/// Remote text (guest names, Ceph's words) made safe for the terminal.
fn sanitized(d: &Doing) -> Doing {
    Doing {
        what: crate::sanitize::sanitize_str(&d.what),
        detail: d.detail.as_deref().map(crate::sanitize::sanitize_str),
        deadline: d.deadline,
    }
}

/// Receives a running command's output line by line as it arrives: (node, stream, line without
/// its newline). `-v` prints it under the live display, prefixed with the node.
pub type OutputSink = Arc<dyn Fn(&str, crate::ssh::Stream, &str) + Send + Sync>;

/// Cuts a command's output into lines as its pieces arrive (a piece may end mid-line, or hold
/// many lines), each stream on its own; [`LineSplitter::finish`] gives what is left without a
/// final newline. Invalid UTF-8 is replaced, never dropped.
#[derive(Default)]
pub struct LineSplitter {
    partial: std::sync::Mutex<[Vec<u8>; 2]>,
}

impl LineSplitter {
    fn slot(stream: crate::ssh::Stream) -> usize {
        match stream {
            crate::ssh::Stream::Stdout => 0,
            crate::ssh::Stream::Stderr => 1,
        }
    }

    /// Take a piece of `stream`'s output; `line` is called for each line it completes.
    pub fn push(&self, stream: crate::ssh::Stream, data: &[u8], mut line: impl FnMut(&str)) {
        let mut done = Vec::new();
        {
            let mut p = self.partial.lock().expect("line splitter");
            let buf = &mut p[Self::slot(stream)];
            buf.extend_from_slice(data);
            while let Some(i) = buf.iter().position(|&b| b == b'\n') {
                let rest = buf.split_off(i + 1);
                let mut l = std::mem::replace(buf, rest);
                l.pop();
                if l.last() == Some(&b'\r') {
                    l.pop();
                }
                done.push(l);
            }
        }
        for l in done {
            line(&String::from_utf8_lossy(&l));
        }
    }

    /// What `stream` has of a line not finished yet (a progress text waiting for its newline).
    pub fn unfinished(&self, stream: crate::ssh::Stream) -> String {
        let p = self.partial.lock().expect("line splitter");
        String::from_utf8_lossy(&p[Self::slot(stream)]).into_owned()
    }

    /// The unfinished last line of each stream, if any (the command ended without a newline).
    pub fn finish(&self, mut line: impl FnMut(crate::ssh::Stream, &str)) {
        let rest = std::mem::take(&mut *self.partial.lock().expect("line splitter"));
        for (stream, l) in [crate::ssh::Stream::Stdout, crate::ssh::Stream::Stderr]
            .into_iter()
            .zip(rest)
        {
            if !l.is_empty() {
                line(stream, &String::from_utf8_lossy(&l));
            }
        }
    }
}

/// A guest as the display names it: "qm 101 (web)".
fn guest(g: &GuestRef) -> String {
    format!(
        "{} {} ({})",
        g.kind,
        g.vmid,
        crate::sanitize::first_line(&g.name, 40)
    )
}

/// The live display's line for the migrations under way: the one guest and its target, or how
/// many run at once and how far the drain is ("migrating 3 at once (5 of 12 done): qm 101 (web)
/// to pve3, ..."); `back` for the return trip.
fn migrating(under_way: &[(GuestRef, String)], finished: usize, total: usize, back: bool) -> Doing {
    let one = |(g, t): &(GuestRef, String)| {
        if back {
            format!("{} back from {t}", guest(g))
        } else {
            format!("{} to {t}", guest(g))
        }
    };
    match under_way {
        [single] if total == 1 => Doing::new(format!("migrating {}", one(single))),
        [single] => Doing::new(format!("migrating {}", one(single)))
            .detail(format!("({finished} of {total} done)")),
        many => Doing::new(format!(
            "migrating{} {} at once",
            if back { " back" } else { "" },
            many.len()
        ))
        .detail(format!(
            "({finished} of {total} done): {}",
            many.iter().map(one).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// What the live display says of an activity: a step's name; within a step, what it does under
/// the step's name ("reboot: waiting for a new boot id", with the wait's deadline).
pub fn doing(a: &Activity) -> Doing {
    match a {
        Activity::Step { step } => Doing::new(step.as_str()),
        Activity::DpkgLock { step, holder } => {
            Doing::new(format!("{step}: waiting for the dpkg lock")).detail(holder.as_str())
        }
        Activity::Reboot {
            step,
            state,
            deadline,
        } => {
            let d = Doing::new(state.awaiting());
            match deadline {
                Some(t) => d.within(*t),
                None => d,
            }
            .under(step)
        }
        Activity::Migrating {
            step,
            under_way,
            finished,
            total,
            back,
        } => migrating(under_way, *finished, *total, *back).under(step),
        Activity::OsdsDown {
            step,
            down,
            deadline,
        } => Doing::new("waiting for its OSDs to be up")
            .detail(format!("({down} down)"))
            .within(*deadline)
            .under(step),
        Activity::CephPgs {
            step,
            clean,
            total,
            deadline,
        } => {
            let d = Doing::new("Ceph PGs").within(*deadline);
            match clean {
                Some(c) => d.detail(format!("{c}/{total} active+clean")),
                None => d.detail("state not known yet (no PG statistics from a mgr)"),
            }
            .under(step)
        }
    }
}

/// Live per-node progress for playbook runs: a bar of nodes done, and one line per running node
/// showing its current step. Only when stderr is a terminal.
pub struct StepProgress {
    multi: Option<indicatif::MultiProgress>,
    main: Option<ProgressBar>,
    lines: Arc<std::sync::Mutex<std::collections::HashMap<String, (ProgressBar, SharedDoing)>>>,
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

    /// This display as a consumer of the run's events: a line per running node (`None`
    /// without a terminal).
    pub fn consumer(&self) -> Option<Consumer> {
        let multi = self.multi.clone()?;
        let lines = Arc::clone(&self.lines);
        // The nodes-done bar counts the fan-out's finished nodes.
        let finished = self.main.clone().map(count_finished);
        Some(Arc::new(move |e: &RunEvent| {
            let (node, activity) = match e {
                RunEvent::Fanout(f) => {
                    if let Some(count) = &finished {
                        count(f.clone());
                    }
                    return;
                }
                RunEvent::Doing { node, activity } => (node.as_str(), activity),
                RunEvent::Idle { node } => {
                    let map = lines.lock().expect("progress lines");
                    if let Some((bar, _)) = map.get(node) {
                        bar.finish_and_clear();
                    }
                    return;
                }
                _ => return,
            };
            let mut map = lines.lock().expect("progress lines");
            let (bar, shown) = map.entry(node.to_string()).or_insert_with(|| {
                let b = multi.add(ProgressBar::new_spinner());
                let shown: SharedDoing = Arc::new(std::sync::Mutex::new(Doing::new("")));
                let line = Arc::clone(&shown);
                b.set_style(
                    ProgressStyle::with_template("  {spinner} {prefix:<12} {line}")
                        .expect("valid template")
                        .with_key(
                            "line",
                            move |st: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                                let d = line.lock().expect("progress line");
                                let _ = w.write_str(&d.line(st.elapsed()));
                            },
                        ),
                );
                b.set_prefix(node.to_string());
                b.enable_steady_tick(std::time::Duration::from_millis(120));
                (b, shown)
            });
            let next = sanitized(&doing(activity));
            // The clock is this activity's (a slow boot shows its own wait, not the step's whole
            // time); a new count keeps it going. (No drawing while the line is locked: the
            // style reads it.)
            let (new_activity, changed) = {
                let mut now = shown.lock().expect("progress line");
                let seen = (now.what != next.what, *now != next);
                *now = next;
                seen
            };
            if new_activity {
                bar.reset_elapsed();
            }
            if changed {
                bar.tick();
            }
        }))
    }

    /// The notes and warnings of the run's events, printed above the live lines (or plainly
    /// without a terminal) as [`crate::events::note_line`] says them.
    pub fn notes(self: &Arc<Self>) -> Consumer {
        let me = Arc::clone(self);
        Arc::new(move |e: &RunEvent| {
            if let Some(line) = crate::events::note_line(e) {
                me.println(&line);
            }
        })
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
        for (b, _) in self.lines.lock().expect("progress lines").values() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_says_seconds_minutes_and_hours_as_the_display_does() {
        let s = Duration::from_secs;
        assert_eq!(clock(s(0)), "0 s");
        assert_eq!(clock(s(14)), "14 s");
        assert_eq!(clock(s(60)), "1 m");
        assert_eq!(clock(s(187)), "3 m 07 s");
        assert_eq!(clock(s(600)), "10 m");
        assert_eq!(clock(s(3600)), "1 h");
        assert_eq!(clock(s(3900)), "1 h 05 m");
        assert_eq!(clock(Duration::from_millis(59_999)), "59 s");
    }

    #[test]
    fn a_line_says_what_how_far_since_when_and_until_when() {
        let wait = Doing::new("waiting for a new boot id")
            .within(Duration::from_secs(600))
            .under("reboot");
        assert_eq!(
            wait.line(Duration::from_secs(14)),
            "reboot: waiting for a new boot id (14 s of 10 m)"
        );
        let pgs = Doing::new("Ceph PGs")
            .detail("96/128 active+clean")
            .within(Duration::from_secs(1800));
        assert_eq!(
            pgs.line(Duration::from_secs(8)),
            "Ceph PGs 96/128 active+clean (8 s of 30 m)"
        );
        let moving = Doing::new("migrating qm 101 (web) to pve3");
        assert_eq!(
            moving.line(Duration::from_secs(8)),
            "migrating qm 101 (web) to pve3 (8 s)"
        );
    }

    #[test]
    fn output_is_cut_into_lines_whatever_the_pieces() {
        use crate::ssh::Stream::{Stderr, Stdout};
        let split = LineSplitter::default();
        let mut seen = Vec::new();
        split.push(Stdout, b"Get:1 http://deb", |l| seen.push(l.to_string()));
        assert!(seen.is_empty(), "no line yet");
        split.push(Stderr, b"W: one\r\nW: tw", |l| {
            seen.push(format!("err {l}"))
        });
        split.push(Stdout, b"ian.org ok\n\nSetting up x\n", |l| {
            seen.push(l.to_string())
        });
        split.push(Stdout, b"tail \xff", |l| seen.push(l.to_string()));
        assert_eq!(split.unfinished(Stdout), "tail \u{fffd}");
        assert_eq!(split.unfinished(Stderr), "W: tw");
        split.finish(|s, l| seen.push(format!("{s:?} {l}")));
        assert_eq!(
            seen,
            [
                "err W: one",
                "Get:1 http://debian.org ok",
                "",
                "Setting up x",
                "Stdout tail \u{fffd}",
                "Stderr W: tw",
            ]
        );
    }

    #[test]
    fn activities_render_as_the_live_lines_under_their_step() {
        let g = |vmid, name: &str| GuestRef {
            kind: "qm".into(),
            vmid,
            name: name.into(),
        };
        let wait = doing(&Activity::Reboot {
            step: "reboot".into(),
            state: crate::vocab::RebootState::DownSeen,
            deadline: Some(Duration::from_secs(600)),
        });
        assert_eq!(
            wait.line(Duration::from_secs(14)),
            "reboot: waiting for a new boot id (14 s of 10 m)"
        );
        let one = doing(&Activity::Migrating {
            step: "reboot".into(),
            under_way: vec![(g(101, "web"), "pve3".into())],
            finished: 0,
            total: 1,
            back: false,
        });
        assert_eq!(one.text(), "reboot: migrating qm 101 (web) to pve3");
        let back = doing(&Activity::Migrating {
            step: "reboot".into(),
            under_way: vec![
                (g(101, "web"), "pve3".into()),
                (g(102, "db"), "pve2".into()),
            ],
            finished: 5,
            total: 12,
            back: true,
        });
        assert_eq!(
            back.text(),
            "reboot: migrating back 2 at once (5 of 12 done): qm 101 (web) back from pve3, qm 102 (db) back from pve2"
        );
        let pgs = doing(&Activity::CephPgs {
            step: "reboot".into(),
            clean: None,
            total: 128,
            deadline: Duration::from_secs(1800),
        });
        assert_eq!(
            pgs.line(Duration::from_secs(8)),
            "reboot: Ceph PGs state not known yet (no PG statistics from a mgr) (8 s of 30 m)"
        );
        let lock = doing(&Activity::DpkgLock {
            step: "upgrade".into(),
            holder: "(held by process 12 (apt-get))".into(),
        });
        assert_eq!(
            lock.text(),
            "upgrade: waiting for the dpkg lock (held by process 12 (apt-get))"
        );
    }

    #[test]
    fn remote_words_reach_the_terminal_sanitised() {
        let d = sanitized(&Doing::new("migrating qm 101 (\u{1b}[2Jweb)").detail("\u{7}x"));
        assert!(
            !d.text().contains('\u{1b}') && !d.text().contains('\u{7}'),
            "{d:?}"
        );
    }
}
