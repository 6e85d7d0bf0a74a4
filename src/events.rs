//! The run's one stream of events, as plain data, and the bus that carries them to their
//! consumers.
//!
//! The engine, the reboot state machine and the drain say what happens by emitting a
//! [`RunEvent`] on the run's [`EventBus`]; they never print, never call the live display and
//! never write the journal themselves. The consumers only render: the journal writer (the one
//! consumer that is awaited: [`EventBus::record`] returns once the event is on disk, so an event
//! the journal must have is durable before the engine goes on), the live display
//! (`progress`), notifications (`notify`, fed every journaled record on its own task), the notes
//! printed on stderr, and, in unit tests, a recorder ([`Recorder`]). This mirrors nextest's
//! runner and reporter: events as data, output a function of them.
//!
//! What this is not: the final report. That is a function of the nodes' results
//! (`NodeRun`), which the engine returns.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::fanout::FanoutEvent;
use crate::journal::{Event, GuestRef, Journal, Record};
use crate::vocab::RebootState;

/// What a node is doing or waiting for now, as data; the live display renders it
/// (`progress::doing`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Activity {
    /// A step runs.
    Step {
        /// The step's name.
        step: String,
    },
    /// A step's apt waits for the dpkg lock another apt or dpkg holds.
    DpkgLock {
        /// The step's name.
        step: String,
        /// Who holds it, as apt says ("(held by process 1234 (apt-get))"), when it says.
        holder: String,
    },
    /// A reboot step reached `state` and does what follows it ([`RebootState::awaiting`]).
    Reboot {
        /// The step's name.
        step: String,
        /// The state reached.
        state: RebootState,
        /// How long the wait may take, when it is bounded.
        deadline: Option<Duration>,
    },
    /// Migrations under way (away from the node, or back to it).
    Migrating {
        /// The step's name.
        step: String,
        /// (guest, target; or where it comes back from) of each migration running now.
        under_way: Vec<(GuestRef, String)>,
        /// Migrations finished so far.
        finished: usize,
        /// Migrations in all.
        total: usize,
        /// The return trip.
        back: bool,
    },
    /// Waiting for the node's Ceph OSDs to be up.
    OsdsDown {
        /// The step's name.
        step: String,
        /// OSDs still down.
        down: usize,
        /// How long the wait may take.
        deadline: Duration,
    },
    /// Waiting for every Ceph PG to be active+clean.
    CephPgs {
        /// The step's name.
        step: String,
        /// PGs active+clean (`None`: not known, no PG statistics from a mgr).
        clean: Option<u64>,
        /// PGs in all.
        total: u64,
        /// How long the wait may take.
        deadline: Duration,
    },
}

/// Something that happened in a run.
#[derive(Debug, Clone)]
pub enum RunEvent {
    /// An event of the journal, as recorded (on disk already when the run has a journal).
    Recorded(Record),
    /// A node is now doing this.
    Doing {
        /// The node.
        node: String,
        /// What it does.
        activity: Activity,
    },
    /// A node's work ended (the live display removes its line).
    Idle {
        /// The node.
        node: String,
    },
    /// A note for the operator about one node, to be read now ("waiting for the migration the
    /// stopped run started"): printed as `pvefleet: NODE: TEXT`.
    Said {
        /// The node.
        node: String,
        /// What is said (remote text in it is sanitised by the renderer).
        text: String,
    },
    /// A line for the operator about the run, not one node ("pausing HA rebalancing for the
    /// run ..."): printed as it is (sanitised).
    Told {
        /// The line.
        text: String,
    },
    /// Something left as it should not stay, said loudly: `pvefleet: WARNING: TEXT`.
    Warning {
        /// What is said.
        text: String,
    },
    /// The fan-out started or finished a node's work (the live display's nodes-done bar).
    Fanout(FanoutEvent),
}

/// A consumer of the stream: called for each event, in order, from the task that emitted it.
/// It must be cheap (hand slow work to a task of its own, as notifications do).
pub type Consumer = Arc<dyn Fn(&RunEvent) + Send + Sync>;

struct Inner {
    journal: Option<Journal>,
    consumers: Vec<Consumer>,
    live: bool,
}

/// The run's bus: the journal writer, then every consumer, for each event (cheap to clone).
#[derive(Clone)]
pub struct EventBus {
    inner: Arc<Inner>,
}

impl Default for EventBus {
    fn default() -> EventBus {
        EventBus::new(None)
    }
}

impl EventBus {
    /// A bus that writes journal events to `journal` (none: they only reach the consumers).
    pub fn new(journal: Option<Journal>) -> EventBus {
        EventBus {
            inner: Arc::new(Inner {
                journal,
                consumers: Vec::new(),
                live: false,
            }),
        }
    }

    fn with(mut self, c: Consumer, live: bool) -> EventBus {
        let inner = Arc::get_mut(&mut self.inner).map(|i| {
            i.consumers.push(c.clone());
            i.live |= live;
        });
        if inner.is_none() {
            // Shared already: a new bus with the same journal and consumers, plus this one.
            let mut consumers = self.inner.consumers.clone();
            consumers.push(c);
            self.inner = Arc::new(Inner {
                journal: self.inner.journal.clone(),
                consumers,
                live: self.inner.live || live,
            });
        }
        self
    }

    /// The same bus with one more consumer.
    pub fn consumer(self, c: Consumer) -> EventBus {
        self.with(c, false)
    }

    /// The same bus with a live display as one more consumer: someone watches what nodes do
    /// (commands' output is then followed as it arrives, to show what it waits for).
    pub fn display(self, c: Consumer) -> EventBus {
        self.with(c, true)
    }

    /// A live display consumes the stream.
    pub fn live(&self) -> bool {
        self.inner.live
    }

    /// The journal events go to, if any.
    pub fn journal(&self) -> Option<&Journal> {
        self.inner.journal.as_ref()
    }

    fn emit(&self, e: &RunEvent) {
        for c in &self.inner.consumers {
            c(e);
        }
    }

    /// Journal `event` for `node` (`-`: the run itself) and hand the record to every consumer.
    /// Returns once the journal writer has it on disk (at once without a journal).
    pub async fn record(&self, node: &str, event: Event) {
        let r = match &self.inner.journal {
            Some(j) => j.record(node, event).await,
            None => Record {
                time: crate::journal::now(),
                node: node.to_string(),
                event,
            },
        };
        self.emit(&RunEvent::Recorded(r));
    }

    /// `node` is now doing `activity`.
    pub fn doing(&self, node: &str, activity: Activity) {
        self.emit(&RunEvent::Doing {
            node: node.to_string(),
            activity,
        });
    }

    /// `node`'s work ended.
    pub fn idle(&self, node: &str) {
        self.emit(&RunEvent::Idle {
            node: node.to_string(),
        });
    }

    /// A note about `node` for the operator.
    pub fn said(&self, node: &str, text: impl Into<String>) {
        self.emit(&RunEvent::Said {
            node: node.to_string(),
            text: text.into(),
        });
    }

    /// A line for the operator about the run.
    pub fn told(&self, text: impl Into<String>) {
        self.emit(&RunEvent::Told { text: text.into() });
    }

    /// The events of the journal this bus writes to (none without one).
    pub fn journal_events(&self) -> Vec<Record> {
        self.journal().map(Journal::events).unwrap_or_default()
    }

    /// A warning for the operator.
    pub fn warning(&self, text: impl Into<String>) {
        self.emit(&RunEvent::Warning { text: text.into() });
    }

    /// The fan-out's events as this bus's ([`RunEvent::Fanout`]), for `fanout::run`.
    pub fn fanout_sink(&self) -> crate::fanout::EventSink {
        let bus = self.clone();
        Arc::new(move |e: FanoutEvent| bus.emit(&RunEvent::Fanout(e)))
    }
}

/// The line a note or a warning prints on stderr (sanitised: it may hold the node's text);
/// `None` for the events that are not notes.
pub fn note_line(e: &RunEvent) -> Option<String> {
    match e {
        RunEvent::Said { node, text } => Some(format!(
            "pvefleet: {node}: {}",
            crate::sanitize::sanitize_str(text)
        )),
        RunEvent::Told { text } => Some(crate::sanitize::sanitize_str(text)),
        RunEvent::Warning { text } => Some(format!(
            "pvefleet: WARNING: {}",
            crate::sanitize::sanitize_str(text)
        )),
        _ => None,
    }
}

/// A consumer that prints the notes ([`note_line`]) on stderr: for a bus without a live
/// display (a rollback; a run before its display starts).
pub fn stderr_notes() -> Consumer {
    Arc::new(|e: &RunEvent| {
        if let Some(line) = note_line(e) {
            eprintln!("{line}");
        }
    })
}

/// A consumer that keeps every event (unit tests read what a run emitted).
#[derive(Clone, Default)]
pub struct Recorder {
    seen: Arc<Mutex<Vec<RunEvent>>>,
}

impl Recorder {
    /// The consumer feeding this recorder.
    pub fn consumer(&self) -> Consumer {
        let seen = Arc::clone(&self.seen);
        Arc::new(move |e: &RunEvent| {
            if let Ok(mut s) = seen.lock() {
                s.push(e.clone());
            }
        })
    }

    /// Every event so far.
    pub fn events(&self) -> Vec<RunEvent> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The journal events so far, with their node.
    pub fn recorded(&self) -> Vec<(String, Event)> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                RunEvent::Recorded(r) => Some((r.node, r.event)),
                _ => None,
            })
            .collect()
    }

    /// The notes and warnings so far, as printed.
    pub fn notes(&self) -> Vec<String> {
        self.events().iter().filter_map(note_line).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_consumer_sees_every_event_in_order() {
        let (a, b) = (Recorder::default(), Recorder::default());
        let bus = EventBus::new(None)
            .consumer(a.consumer())
            .display(b.consumer());
        assert!(bus.live(), "a display was added");
        bus.record("pve1", Event::NodeStarted {}).await;
        bus.doing("pve1", Activity::Step { step: "apt".into() });
        bus.said("pve1", "waiting\u{1b}[2J");
        bus.idle("pve1");
        for r in [&a, &b] {
            let e = r.events();
            assert_eq!(e.len(), 4, "{e:?}");
            assert!(matches!(&e[0], RunEvent::Recorded(r) if r.node == "pve1"));
            assert!(matches!(&e[1], RunEvent::Doing { .. }));
            assert!(matches!(&e[3], RunEvent::Idle { .. }));
        }
        let notes = a.notes();
        assert_eq!(notes.len(), 1);
        assert!(notes[0].starts_with("pvefleet: pve1: waiting"), "{notes:?}");
        assert!(!notes[0].contains('\u{1b}'), "sanitised: {notes:?}");
    }

    #[test]
    fn a_line_about_the_run_is_told_as_it_is_and_a_warning_loudly() {
        let a = Recorder::default();
        let bus = EventBus::new(None).consumer(a.consumer());
        bus.told("pausing HA rebalancing for the run\u{1b}]0;x\u{7}");
        bus.warning("left on");
        assert!(bus.journal_events().is_empty(), "no journal, no events");
        assert_eq!(
            a.notes(),
            [
                // Sanitised: the control bytes are shown escaped, never sent to the terminal.
                "pausing HA rebalancing for the run\\x1b]0;x\\x07".to_string(),
                "pvefleet: WARNING: left on".to_string()
            ]
        );
    }

    #[test]
    fn a_bus_without_a_display_is_not_live() {
        let bus = EventBus::new(None).consumer(Recorder::default().consumer());
        assert!(!bus.live());
        let shared = bus.clone();
        let more = shared.display(Recorder::default().consumer());
        assert!(more.live() && !bus.live(), "a shared bus is not changed");
    }
}
