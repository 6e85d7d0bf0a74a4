//! ProxLB (github.com/gyptazy/ProxLB), the third-party balancer operators run beside Proxmox
//! VE, paused while a run drains nodes: it migrates guests by itself on a schedule, and would
//! move the guests the drain placed, or pull guests onto a node about to reboot.
//!
//! Facts taken from ProxLB's repository: it runs as the systemd unit `proxlb.service`
//! (`service/proxlb.service`, `WantedBy=multi-user.target`), reading
//! `/etc/proxlb/proxlb.yaml`; its docs (`docs/03_configuration.md`, "Run as a
//! Systemd-Service") install it on a node or on any host that reaches the API, and it can also
//! run as a container. pvefleet can only see it where it runs as that unit on a node of the
//! inventory; a ProxLB elsewhere is said to be out of sight in the README.
//!
//! The run owns only what it changes, per node: a running unit is stopped, an enabled one is
//! disabled (a stopped but enabled unit would start again when the run reboots that node, as
//! systemd starts what multi-user.target wants at boot). The change is journaled `pausing`
//! before and `paused` after, with which of the two it made. At the end (or on `run --resume`
//! and `rollback`, from the journal) the run enables what it disabled only if the unit is
//! still disabled, and starts what it stopped only if it is still not running; a unit an
//! operator started or enabled meanwhile is left as found (`kept`). A node that cannot be read
//! is never taken as "no ProxLB".
//!
//! [`state`] and [`decide`] are pure; [`pause`] and [`restore`] go through each node.

use std::collections::BTreeMap;
use std::time::Duration;

use super::remote::Remote;
use crate::events::EventBus;
use crate::inventory::Node;
use crate::journal::{BalancerState, Event, Record};
use crate::ssh::ExitStatus;

/// The systemd unit ProxLB ships.
pub const UNIT: &str = "proxlb.service";

/// ProxLB's configuration file.
pub const CONFIG: &str = "/etc/proxlb/proxlb.yaml";

/// One command: the unit's active and enabled states, and whether the config exists, one
/// `key=value` a line. `systemctl is-active` prints a state even for a unit that does not exist
/// (`inactive`, systemd's `systemctl-is-active.c`); `is-enabled` prints nothing on stdout for
/// one and says so on stderr (`Failed to get unit file state ...`), which is dropped here.
const PROBE: &str = "a=$(systemctl is-active proxlb.service 2>/dev/null); \
e=$(systemctl is-enabled proxlb.service 2>/dev/null); \
if [ -e /etc/proxlb/proxlb.yaml ]; then c=yes; else c=no; fi; \
printf 'active=%s\\nenabled=%s\\nconfig=%s\\n' \"$a\" \"$e\" \"$c\"";

/// What a node says of ProxLB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// `systemctl is-active`: the unit runs (or is starting or reloading).
    pub running: bool,
    /// `systemctl is-enabled` said `enabled`: it starts at boot. `enabled-runtime` is not: its
    /// link lives in /run and is gone at the next boot (systemctl(1), `enable --runtime`), and
    /// a plain `disable`/`enable` would not put back what was found.
    pub enabled: bool,
    /// `is-enabled` printed nothing: no such unit on the node.
    pub installed: bool,
    /// `/etc/proxlb/proxlb.yaml` exists.
    pub config: bool,
}

/// A probe answer that cannot be read with certainty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{UNIT}: {0}")]
pub struct StateError(pub String);

/// Read the probe's output ([`PROBE`]). The active states are systemd's `UnitActiveState`
/// names (`src/basic/unit-def.c`): `active`, `reloading`, `inactive`, `failed`, `activating`,
/// `deactivating`, `maintenance`, `refreshing`; the enablement states are `systemctl
/// is-enabled`'s (systemctl(1)). Anything else is an error: unknown is not "not running".
pub fn state(out: &str) -> Result<State, StateError> {
    let mut kv: BTreeMap<&str, &str> = BTreeMap::new();
    for line in out.lines() {
        if let Some((k, v)) = line.split_once('=') {
            kv.insert(k.trim(), v.trim());
        }
    }
    let get = |k: &str| {
        kv.get(k)
            .copied()
            .ok_or_else(|| StateError(format!("no {k} in the answer {out:?}")))
    };
    let running = match get("active")? {
        "active" | "reloading" | "activating" | "refreshing" => true,
        "inactive" | "failed" | "deactivating" | "maintenance" => false,
        other => return Err(StateError(format!("is-active said {other:?}"))),
    };
    let e = get("enabled")?;
    let enabled = match e {
        "enabled" => true,
        "" | "enabled-runtime" | "disabled" | "static" | "indirect" | "generated" | "transient"
        | "linked" | "linked-runtime" | "alias" | "masked" | "masked-runtime" | "bad"
        | "not-found" => false,
        other => return Err(StateError(format!("is-enabled said {other:?}"))),
    };
    let config = match get("config")? {
        "yes" => true,
        "no" => false,
        other => return Err(StateError(format!("config={other:?}"))),
    };
    Ok(State {
        running,
        enabled,
        installed: !e.is_empty() && e != "not-found",
        config,
    })
}

/// What the run changes on a node to pause ProxLB there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Change {
    /// Stop the running unit.
    pub stop: bool,
    /// Disable the enabled unit (else it starts at the node's next boot).
    pub disable: bool,
}

impl Change {
    /// Nothing to change.
    pub fn is_empty(&self) -> bool {
        !self.stop && !self.disable
    }

    /// In words: "stopped and disabled", "stopped", "disabled".
    pub fn words(&self) -> &'static str {
        match (self.stop, self.disable) {
            (true, true) => "stopped and disabled",
            (true, false) => "stopped",
            (false, true) => "disabled",
            (false, false) => "left as it is",
        }
    }
}

/// What pausing changes for a node in state `s` (an `enabled-runtime` unit is stopped, not
/// disabled: see [`State::enabled`]).
pub fn decide(s: &State) -> Change {
    Change {
        stop: s.running,
        disable: s.enabled,
    }
}

/// A line for the plan and the run: what pausing does on a node, or `None` when ProxLB is not
/// there. A node with only the config says that a ProxLB run some other way is not paused.
pub fn describe(node: &str, s: &State) -> Option<String> {
    let c = decide(s);
    if !c.is_empty() {
        let what = match (s.running, s.enabled) {
            (true, true) => "running and enabled",
            (true, false) => "running",
            _ => "enabled (it would start at the node's boot)",
        };
        Some(format!(
            "ProxLB on {node}: {UNIT} {what}: {} for the run, put back at its end",
            c.words()
        ))
    } else if s.config {
        Some(format!(
            "ProxLB on {node}: {CONFIG} exists but {UNIT} is neither running nor enabled: a ProxLB run from cron, a timer or a container is not paused; pause it yourself"
        ))
    } else {
        None
    }
}

/// What the journal says the run paused on each node and has not restored: node -> (the
/// change, whether it is known done). A `pausing` without `paused` may or may not have been
/// carried out (a kill in between): [`restore`] tells by the unit's state now.
pub fn outstanding(events: &[Record]) -> BTreeMap<String, (Change, bool)> {
    let mut out = BTreeMap::new();
    for r in events {
        let Event::Proxlb {
            state,
            stop,
            disable,
            ..
        } = &r.event
        else {
            continue;
        };
        let c = Change {
            stop: *stop,
            disable: *disable,
        };
        // A resume that pauses again (an operator started the unit meanwhile) adds to what
        // the run owes: it still owes the enable of the first pause.
        let prev = out.get(&r.node).copied();
        let merged = |p: Option<(Change, bool)>| match p {
            Some((p, _)) => Change {
                stop: p.stop || c.stop,
                disable: p.disable || c.disable,
            },
            None => c,
        };
        match state {
            BalancerState::Pausing => {
                let done = prev.is_some_and(|(_, d)| d);
                out.insert(r.node.clone(), (merged(prev), done));
            }
            BalancerState::Paused => {
                out.insert(r.node.clone(), (merged(prev), true));
            }
            BalancerState::NotPaused | BalancerState::Restored | BalancerState::Kept => {
                out.remove(&r.node);
            }
        }
    }
    out
}

/// Why ProxLB could not be paused.
#[derive(Debug, thiserror::Error)]
pub enum ProxlbError {
    /// A node of the run could not tell whether ProxLB runs there.
    #[error("{node}: cannot tell whether ProxLB runs there: {why}")]
    Unknown {
        /// The node.
        node: String,
        /// What went wrong.
        why: String,
    },
    /// The stop or disable failed.
    #[error("{node}: pausing ProxLB failed: {why}")]
    Failed {
        /// The node.
        node: String,
        /// What went wrong.
        why: String,
    },
}

/// Ask one node.
async fn probe(n: &Node, timeout: Duration) -> Result<(Remote, State), String> {
    let r = Remote::connect(n, timeout)
        .await
        .map_err(|e| e.to_string())?;
    let (exit, out) = r.text(PROBE).await.map_err(|e| e.to_string())?;
    if exit != ExitStatus::Code(0) {
        return Err(format!("the probe exited {exit:?}"));
    }
    let s = state(&out).map_err(|e| e.to_string())?;
    Ok((r, s))
}

/// One member's ProxLB as [`survey`] found it.
pub enum Probed {
    /// Read: the connection (to act on it) and the unit's state.
    Read(Box<Remote>, State),
    /// A node of the run that cannot be read: the run must not start (whether ProxLB would
    /// move guests onto or off it during the maintenance is not known).
    Blocks(String),
    /// A node outside the run that does not answer: said and passed over (it may be the
    /// reason for the maintenance).
    Silent(String),
}

/// Ask every node of `members` at once; a node that cannot be read is classified by whether
/// it is one of the run's (`run`). The one rule [`pause`] and the plan's preview share.
pub async fn survey<'a>(
    members: &[&'a Node],
    run: &[Node],
    timeout: Duration,
) -> Vec<(&'a Node, Probed)> {
    let probes = futures::future::join_all(members.iter().map(|n| probe(n, timeout))).await;
    members
        .iter()
        .zip(probes)
        .map(|(n, p)| {
            let seen = match p {
                Ok((r, s)) => Probed::Read(Box::new(r), s),
                Err(why) if run.iter().any(|r| r.name == n.name) => Probed::Blocks(why),
                Err(why) => Probed::Silent(why),
            };
            (*n, seen)
        })
        .collect()
}

/// Pause ProxLB on every node of `members` where it runs or is enabled. A node of the run
/// (`run`) that cannot be read is an error (the run must not start); a node outside it that
/// does not answer is said and passed over (it may be the reason for the maintenance).
/// Journals `pausing` before each change and `paused` (or `not-paused`) after; says it on the
/// run's bus (its journal, and its notes for the operator).
pub async fn pause(
    bus: &EventBus,
    members: &[&Node],
    run: &[Node],
    timeout: Duration,
) -> Result<(), ProxlbError> {
    // What this run paused already (a resume): its own, not an operator's stopped ProxLB.
    let own = outstanding(&bus.journal_events());
    let mut found = Vec::new();
    for (n, p) in survey(members, run, timeout).await {
        match p {
            Probed::Read(r, s) => found.push((*r, s)),
            Probed::Blocks(why) => {
                return Err(ProxlbError::Unknown {
                    node: n.name.clone(),
                    why,
                })
            }
            Probed::Silent(why) => bus.warning(format!(
                "{}: not answering ({why}): whether ProxLB runs there is not known, and it is not paused",
                n.name
            )),
        }
    }
    for (r, s) in found {
        let c = decide(&s);
        if let Some(line) = describe(&r.node.name, &s) {
            if c.is_empty() && !own.contains_key(&r.node.name) {
                bus.warning(line);
            }
        }
        if c.is_empty() {
            continue;
        }
        let event = |state, why| Event::Proxlb {
            state,
            stop: c.stop,
            disable: c.disable,
            why,
        };
        bus.record(&r.node.name, event(BalancerState::Pausing, None))
            .await;
        let cmd = match (c.stop, c.disable) {
            (true, true) => format!("systemctl disable --now {UNIT}"),
            (true, false) => format!("systemctl stop {UNIT}"),
            _ => format!("systemctl disable {UNIT}"),
        };
        match r.ok(&cmd).await {
            Ok(_) => {
                bus.record(&r.node.name, event(BalancerState::Paused, None))
                    .await;
                bus.told(format!(
                    "pausing ProxLB for the run on {}: {UNIT} {}",
                    r.node.name,
                    c.words()
                ));
            }
            Err(e) => {
                let why = e.to_string();
                bus.record(
                    &r.node.name,
                    event(BalancerState::NotPaused, Some(why.clone())),
                )
                .await;
                return Err(ProxlbError::Failed {
                    node: r.node.name.clone(),
                    why,
                });
            }
        }
    }
    Ok(())
}

/// What restoring does for a node whose journal says `c` (`done`: the change is known
/// carried out) when its unit is now in state `now`: (start it, enable it, what is kept
/// as found, whether the change was never made).
fn restore_plan(c: Change, done: bool, now: &State) -> (bool, bool, Vec<&'static str>, bool) {
    // Intent only, and the unit just as it was: the kill came before the change.
    if !done && now.running == c.stop && now.enabled == c.disable {
        return (false, false, Vec::new(), true);
    }
    let mut kept = Vec::new();
    let enable = c.disable && !now.enabled;
    if c.disable && now.enabled {
        kept.push("enabled again");
    }
    let start = c.stop && !now.running;
    if c.stop && now.running {
        kept.push("running again");
    }
    (start, enable, kept, false)
}

/// Put back what the journal says the run paused and did not restore ([`outstanding`]), on
/// each such node of `nodes`. Errors are said on the bus and returned; the journal keeps them
/// outstanding for a resume or `rollback`.
pub async fn restore(bus: &EventBus, nodes: &[Node], timeout: Duration) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    for (name, (c, done)) in outstanding(&bus.journal_events()) {
        match restore_node(bus, &name, nodes, c, done, timeout).await {
            Ok(()) => {}
            Err(why) => {
                let msg = format!(
                    "{name}: ProxLB ({UNIT} {} by the run) could not be put back: {why}; put it back with: pvefleet rollback {}",
                    c.words(),
                    super::balancers::run_id(bus)
                );
                errors.push(msg);
            }
        }
    }
    super::balancers::said(bus, errors)
}

async fn restore_node(
    bus: &EventBus,
    name: &str,
    nodes: &[Node],
    c: Change,
    done: bool,
    timeout: Duration,
) -> Result<(), String> {
    let n = nodes
        .iter()
        .find(|n| n.name == name)
        .ok_or_else(|| "not in the inventory".to_string())?;
    let (r, now) = probe(n, timeout).await?;
    let (start, enable, kept, never) = restore_plan(c, done, &now);
    let event = |state, why| Event::Proxlb {
        state,
        stop: c.stop,
        disable: c.disable,
        why,
    };
    if never {
        bus.record(
            name,
            event(
                BalancerState::NotPaused,
                Some("the run was stopped before its change".into()),
            ),
        )
        .await;
        return Ok(());
    }
    if enable {
        r.ok(&format!("systemctl enable {UNIT}"))
            .await
            .map_err(|e| e.to_string())?;
    }
    if start {
        r.ok(&format!("systemctl start {UNIT}"))
            .await
            .map_err(|e| e.to_string())?;
    }
    if kept.is_empty() {
        bus.told(format!(
            "restored ProxLB on {name}: {UNIT} {}",
            back_words(start, enable)
        ));
        bus.record(name, event(BalancerState::Restored, None)).await;
    } else {
        let why = format!("{} since the run paused it", kept.join(" and "));
        bus.said(
            name,
            format!(
                "{UNIT} {why}: left as it is{}",
                if start || enable {
                    format!(" (otherwise {})", back_words(start, enable))
                } else {
                    String::new()
                }
            ),
        );
        bus.record(name, event(BalancerState::Kept, Some(why)))
            .await;
    }
    Ok(())
}

fn back_words(start: bool, enable: bool) -> &'static str {
    match (start, enable) {
        (true, true) => "enabled and started",
        (true, false) => "started",
        (false, true) => "enabled",
        (false, false) => "as it was",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(running: bool, enabled: bool) -> State {
        State {
            running,
            enabled,
            installed: true,
            config: true,
        }
    }

    #[test]
    fn the_probe_answer_is_read_as_systemd_prints_it() {
        // A running, enabled unit.
        let s = state("active=active\nenabled=enabled\nconfig=yes\n").unwrap();
        assert_eq!(s, st(true, true));
        // No unit at all: is-active says inactive, is-enabled prints nothing on stdout.
        let none = state("active=inactive\nenabled=\nconfig=no\n").unwrap();
        assert_eq!(
            none,
            State {
                running: false,
                enabled: false,
                installed: false,
                config: false
            }
        );
        assert!(decide(&none).is_empty());
        assert_eq!(describe("pve1", &none), None);
        // A unit that failed, still enabled: it would start at the boot.
        let failed = state("active=failed\nenabled=enabled\nconfig=yes\n").unwrap();
        assert_eq!(
            decide(&failed),
            Change {
                stop: false,
                disable: true
            }
        );
        assert!(
            state("active=activating\nenabled=disabled\nconfig=yes\n")
                .unwrap()
                .running
        );
        // Enabled for this boot only (a link in /run): stopped, never disabled, so the restore
        // does not enable it for good.
        let runtime = state("active=active\nenabled=enabled-runtime\nconfig=yes\n").unwrap();
        assert_eq!(
            decide(&runtime),
            Change {
                stop: true,
                disable: false
            }
        );
    }

    #[test]
    fn an_answer_that_cannot_be_read_is_an_error_not_no_proxlb() {
        for bad in [
            "",
            "active=\nenabled=\nconfig=no\n",
            "active=running\nenabled=enabled\nconfig=yes\n",
            "active=active\nenabled=maybe\nconfig=yes\n",
            "active=active\nconfig=yes\n",
            "active=active\nenabled=enabled\n",
        ] {
            assert!(state(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn pausing_stops_what_runs_and_disables_what_would_start_at_boot() {
        assert_eq!(
            decide(&st(true, true)),
            Change {
                stop: true,
                disable: true
            }
        );
        assert_eq!(
            decide(&st(true, false)),
            Change {
                stop: true,
                disable: false
            }
        );
        assert!(decide(&st(false, false)).is_empty());
        let line = describe("pve2", &st(true, true)).unwrap();
        assert!(line.contains("stopped and disabled for the run"), "{line}");
        // Configured but neither running nor enabled: said, nothing changed.
        let cron = describe("pve2", &st(false, false)).unwrap();
        assert!(cron.contains("is not paused"), "{cron}");
    }

    #[test]
    fn restoring_puts_back_only_what_is_still_as_the_run_left_it() {
        let both = Change {
            stop: true,
            disable: true,
        };
        // Still stopped and disabled: start and enable.
        assert_eq!(
            restore_plan(both, true, &st(false, false)),
            (true, true, vec![], false)
        );
        // An operator started it meanwhile: enable only, the start is theirs.
        assert_eq!(
            restore_plan(both, true, &st(true, false)),
            (false, true, vec!["running again"], false)
        );
        // Intent only and the unit as it was: the change was never made.
        assert_eq!(
            restore_plan(both, false, &st(true, true)),
            (false, false, vec![], true)
        );
        // Intent only, and the change was made before the kill: put back.
        assert_eq!(
            restore_plan(both, false, &st(false, false)),
            (true, true, vec![], false)
        );
    }

    fn rec(node: &str, state: BalancerState) -> Record {
        Record {
            time: String::new(),
            node: node.into(),
            event: Event::Proxlb {
                state,
                stop: true,
                disable: true,
                why: None,
            },
        }
    }

    #[test]
    fn outstanding_is_what_was_paused_and_not_restored_per_node() {
        use BalancerState::*;
        assert!(outstanding(&[]).is_empty());
        let o = outstanding(&[
            rec("pve1", Pausing),
            rec("pve2", Pausing),
            rec("pve2", Paused),
        ]);
        assert!(!o["pve1"].1);
        assert!(o["pve2"].1);
        for end in [Restored, Kept, NotPaused] {
            assert!(
                outstanding(&[rec("pve1", Pausing), rec("pve1", Paused), rec("pve1", end)])
                    .is_empty()
            );
        }
        // A resume that stops it again (stop only) still owes the first pause's enable.
        let mut again = vec![rec("pve1", Pausing), rec("pve1", Paused)];
        let stop_only = |state| Record {
            time: String::new(),
            node: "pve1".into(),
            event: Event::Proxlb {
                state,
                stop: true,
                disable: false,
                why: None,
            },
        };
        again.push(stop_only(Pausing));
        assert_eq!(
            outstanding(&again)["pve1"],
            (
                Change {
                    stop: true,
                    disable: true
                },
                true
            )
        );
        again.push(stop_only(Paused));
        assert!(outstanding(&again)["pve1"].0.disable);
        let line = serde_json::to_string(&rec("pve1", Paused)).unwrap();
        assert!(line.contains("\"event\":\"proxlb\""), "{line}");
        let back: Record = serde_json::from_str(&line).unwrap();
        assert!(matches!(back.event, Event::Proxlb { state: Paused, .. }));
    }
}
