//! The reboot state machine's unit tests: a scripted node shell and paused tokio time (no lab).

use super::*;
use crate::events::Recorder;
use crate::maintenance::scripted::ScriptedShell;
use crate::vocab::{MaintenanceState, Phase};

/// `pvecm status` of a quorate three-node cluster, every vote present.
const PVECM_3: &str = "Quorum information\n------------------\nNodes:            3\nQuorate:          Yes\n\nVotequorum information\n----------------------\nExpected votes:   3\nHighest expected: 3\nTotal votes:      3\nQuorum:           2\nFlags:            Quorate\n\nMembership information\n----------------------\n    Nodeid      Votes Name\n0x00000001          1 10.0.0.1 (local)\n0x00000002          1 10.0.0.2\n0x00000003          1 10.0.0.3\n";

/// `ha-manager status` with an LRM on pve1 and pve2, no service on pve1.
const HA: &str = "quorum OK\nmaster pve2 (active, Thu Dec  3 05:00:00 2026)\nlrm pve1 (active, Thu Dec  3 05:00:00 2026)\nlrm pve2 (active, Thu Dec  3 05:00:00 2026)\nservice vm:200 (pve2, started)\n";

const QM_EMPTY: &str = "      VMID NAME                 STATUS     MEM(MB)    BOOTDISK(GB) PID\n";
const PCT_EMPTY: &str = "VMID       Status     Lock         Name\n";

/// What a test's reboot needs besides the shell: the bus (with a recorder), the stop
/// token, the stop point, the rolling view.
struct Fixture {
    recorder: Recorder,
    events: EventBus,
    cancel: CancellationToken,
    rolling: std::sync::Mutex<RollingView>,
    reached: std::sync::Arc<std::sync::Mutex<Option<RebootState>>>,
}

impl Fixture {
    fn new() -> Fixture {
        let recorder = Recorder::default();
        Fixture {
            events: EventBus::new(None).consumer(recorder.consumer()),
            recorder,
            cancel: CancellationToken::new(),
            rolling: Default::default(),
            reached: Default::default(),
        }
    }

    fn ctx<'a>(
        &'a self,
        resume: Option<&'a NodeHistory>,
        on_state: &'a (dyn Fn(RebootState) + Send + Sync),
    ) -> RebootCtx<'a> {
        RebootCtx {
            index: 2,
            timeout: Duration::from_secs(600),
            guests: GuestPolicy::Refuse,
            allow_maintained: false,
            step: "reboot",
            events: &self.events,
            cancel: &self.cancel,
            resume,
            on_state,
            drain: None,
            ceph_accept: Vec::new(),
            pg_timeout: Duration::from_secs(1800),
            cluster: &[],
            rolling: &self.rolling,
        }
    }

    /// The reboot states journaled, in order.
    fn states(&self) -> Vec<String> {
        self.recorder
            .recorded()
            .into_iter()
            .filter_map(|(_, e)| match e {
                Event::Reboot { state, .. } => Some(state),
                _ => None,
            })
            .collect()
    }

    /// What a resume would read of the node from the events journaled.
    fn history(&self, node: &str) -> NodeHistory {
        let records: Vec<crate::journal::Record> = self
            .recorder
            .events()
            .into_iter()
            .filter_map(|e| match e {
                crate::events::RunEvent::Recorded(r) => Some(r),
                _ => None,
            })
            .collect();
        crate::journal::histories(&records)
            .remove(node)
            .unwrap_or_default()
    }
}

/// A healthy HA node, without Ceph or guests, that goes down at the reboot command.
fn rebooting_node() -> ScriptedShell {
    ScriptedShell::new("pve1")
        .on("pvecm status", PVECM_3)
        .on("ceph.conf", "none\n")
        .on("node-maintenance", "")
        .on("ha-manager status", HA)
        .on("qm list", QM_EMPTY)
        .on("pct list", PCT_EMPTY)
        .on("boot_id", "old-boot\n")
        .drops_on("reboot")
}

#[tokio::test(start_paused = true)]
async fn interrupted_while_down_the_reboot_leaves_down_seen_and_maintenance_on_in_the_journal() {
    let f = Fixture::new();
    let reached = std::sync::Arc::clone(&f.reached);
    let on_state = move |s: RebootState| *reached.lock().unwrap() = Some(s);
    let cx = f.ctx(None, &on_state);
    let mut shell = rebooting_node();
    // The operator's Ctrl-C comes while the node is down (it never answers again).
    let cancel = f.cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(30)).await;
        cancel.cancel();
    });
    let started = std::time::Instant::now();
    let (e, left) = reboot_and_wait(&mut shell, &cx)
        .await
        .expect_err("interrupted");
    assert!(
        matches!(&e, RebootError::Interrupted(at) if at == "down-seen"),
        "{e:?}"
    );
    assert_eq!(
        f.states(),
        [
            "maintenance-on",
            "guests-stopped",
            "reboot-issued",
            "down-seen"
        ],
        "every transition journaled in order, nothing past down-seen"
    );
    assert_eq!(*f.reached.lock().unwrap(), Some(RebootState::DownSeen));
    // Maintenance intent before the command, then left on on purpose (never switched off
    // while the node is down).
    let maintenance: Vec<MaintenanceState> = f
        .recorder
        .recorded()
        .into_iter()
        .filter_map(|(_, e)| match e {
            Event::Maintenance { state, .. } => Some(state),
            _ => None,
        })
        .collect();
    assert_eq!(
        maintenance,
        [MaintenanceState::On, MaintenanceState::LeftOn]
    );
    assert_eq!(shell.count("node-maintenance enable"), 1);
    assert_eq!(
        shell.count("node-maintenance disable"),
        0,
        "{:?}",
        shell.ran()
    );
    assert_eq!(shell.count("reboot"), 1, "the reboot is issued once");
    assert!(shell.count("(reconnect)") > 1, "it waited for the node");
    assert!(
        left.iter().any(|l| l
            .starts_with("HA maintenance left ON for pve1 on purpose (the run was interrupted)")),
        "{left:?}"
    );
    // What `run --resume` reads: the reboot continues from down-seen, with the old boot id,
    // and the maintenance is the run's own.
    let h = f.history("pve1");
    let p = h.reboots.get(&2).expect("the reboot is in progress");
    assert_eq!(p.state, "down-seen");
    assert_eq!(p.old_boot_id.as_deref(), Some("old-boot"));
    assert!(h.maintenance_on && h.left_in_cluster());
    assert!(reboot_underway(&h));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "paused time: {:?}",
        started.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn a_reboot_resumed_at_down_seen_waits_for_the_new_boot_and_switches_maintenance_off() {
    let f = Fixture::new();
    // The stopped run's journal: maintenance on, the reboot issued and seen down.
    let stopped = Fixture::new();
    for (state, boot) in [("reboot-issued", Some("old-boot")), ("down-seen", None)] {
        stopped
            .events
            .record(
                "pve1",
                Event::Reboot {
                    index: 2,
                    state: state.into(),
                    old_boot_id: boot.map(str::to_string),
                    detail: None,
                },
            )
            .await;
    }
    stopped
        .events
        .record(
            "pve1",
            Event::Maintenance {
                state: MaintenanceState::On,
                why: None,
            },
        )
        .await;
    let history = stopped.history("pve1");
    let on_state = |_: RebootState| {};
    let cx = f.ctx(Some(&history), &on_state);
    let mut shell = ScriptedShell::new("pve1")
        .on("boot_id", "old-boot\n")
        .on("boot_id", "new-boot\n")
        .on("systemctl is-active", "corosync active\npve-cluster active\npveproxy active\npvestatd active\npve-ha-lrm active\n")
        .on("pvecm status", PVECM_3)
        .on("ceph.conf", "none\n")
        .on("node-maintenance", "")
        .on("ha-manager status", HA)
        .reconnects(&[Reconnect::NotListening, Reconnect::NotYet, Reconnect::Connected, Reconnect::Connected]);
    // Closed: the node is still down when the resume starts.
    shell = shell.drops_on("never-sent");
    shell.text("never-sent").await.unwrap();
    let rep = reboot_and_wait(&mut shell, &cx).await.expect("back");
    assert_eq!(rep.resumed_from, Some(RebootState::DownSeen));
    assert_eq!(
        f.states(),
        [
            "up-new-boot",
            "services-active",
            "quorate",
            "maintenance-off",
            "done"
        ]
    );
    assert_eq!(shell.count("reboot"), 0, "not rebooted a second time");
    assert_eq!(shell.count("node-maintenance disable"), 1);
    assert_eq!(
        shell.count("boot_id"),
        2,
        "the old boot id once, then the new one"
    );
}

fn web() -> GuestRef {
    GuestRef {
        kind: "qm".into(),
        vmid: 101,
        name: "web".into(),
    }
}

/// The cluster's resources with guest 101 on `node` (`lock` as given).
fn resources_with_101_on(node: &str, lock: &str) -> String {
    serde_json::json!([
        {"type": "node", "node": "pve1", "status": "online", "maxmem": 68719476736u64, "mem": 1073741824u64},
        {"type": "node", "node": "pve2", "status": "online", "maxmem": 68719476736u64, "mem": 1073741824u64},
        {"type": "qemu", "vmid": 101, "node": node, "status": "running", "name": "web",
         "maxmem": 2147483648u64, "lock": lock},
    ])
    .to_string()
}

/// The history of a run stopped while it migrated 101 from pve1 to pve2: the intent
/// journaled, no done.
async fn stopped_mid_migration() -> NodeHistory {
    let h = crate::journal::histories(&history_records(&stopped_records().await))
        .remove("pve1")
        .unwrap_or_default();
    assert_eq!(h.moving_guests.len(), 1, "an unfinished move: {h:?}");
    h
}

#[tokio::test(start_paused = true)]
async fn a_migration_journaled_as_intent_is_waited_for_then_recorded_done_where_it_landed() {
    let history = stopped_mid_migration().await;
    let f = Fixture::new();
    let on_state = |_: RebootState| {};
    let cx = f.ctx(Some(&history), &on_state);
    let upid = "UPID:pve1:000CFFFA:03E8EF53:619480BA:qmigrate:101:root@pam:";
    // The migration's task still runs at first; the next look finds the guest on pve2.
    let shell = ScriptedShell::new("pve1")
        .on("/cluster/resources", &resources_with_101_on("pve1", ""))
        .on("/cluster/resources", &resources_with_101_on("pve2", ""))
        .on(
            "tasks --source active",
            &serde_json::json!([{"upid": upid, "status": "RUNNING"}]).to_string(),
        )
        .on("/status --output-format json", r#"{"status": "running"}"#);
    let mut m = Machine::new(&cx);
    m.settle_unfinished_moves(&shell).await.expect("settled");
    let moved: Vec<(GuestRef, String, String, Phase)> = f
        .recorder
        .recorded()
        .into_iter()
        .filter_map(|(_, e)| match e {
            Event::GuestMoved {
                guest,
                from,
                to,
                phase,
                ..
            } => Some((guest, from, to, phase)),
            _ => None,
        })
        .collect();
    assert_eq!(
        moved,
        [(web(), "pve1".into(), "pve2".into(), Phase::Done)],
        "recorded done, not migrated again"
    );
    assert_eq!(
        m.moved,
        [(web(), "pve1".into(), "pve2".into())],
        "to be returned"
    );
    assert!(m.moving.is_empty());
    assert_eq!(shell.count("qm migrate"), 0);
    assert_eq!(shell.count("unlock"), 0);
    assert!(
        f.recorder.notes().iter().any(|n| n.starts_with(&format!(
            "pvefleet: pve1: waiting for the migration of qm 101 (web) the stopped run started (task {upid}) to end"
        ))),
        "{:?}",
        f.recorder.notes()
    );
    // What a later resume reads: the guest is away, to come back; nothing under way.
    let mut all = history_records(&stopped_records().await);
    all.extend(history_records(&f.recorder.events()));
    let h = crate::journal::histories(&all).remove("pve1").unwrap();
    assert!(h.moving_guests.is_empty());
    assert_eq!(h.moved_guests, [(web(), "pve1".into(), "pve2".into())]);
}

#[tokio::test(start_paused = true)]
async fn a_migration_left_locked_with_no_task_is_unlocked_to_be_moved_again_not_recorded_done() {
    let history = stopped_mid_migration().await;
    let f = Fixture::new();
    let on_state = |_: RebootState| {};
    let cx = f.ctx(Some(&history), &on_state);
    let shell = ScriptedShell::new("pve1")
        .on(
            "/cluster/resources",
            &resources_with_101_on("pve1", "migrate"),
        )
        .on("tasks --source active", "[]")
        .on("qm unlock 101", "");
    let mut m = Machine::new(&cx);
    m.settle_unfinished_moves(&shell).await.expect("settled");
    assert_eq!(shell.count("qm unlock 101"), 1, "{:?}", shell.ran());
    assert!(
        !f.recorder
            .recorded()
            .iter()
            .any(|(_, e)| matches!(e, Event::GuestMoved { .. })),
        "no move recorded: the guest never left"
    );
    assert!(m.moved.is_empty() && m.moving.is_empty());
    assert_eq!(
        f.recorder.notes(),
        ["pvefleet: pve1: qm 101 (web) was left locked by a migration the stopped run had started, which is no longer running; unlocking it to move it again"]
    );
}

/// The records among `events`.
fn history_records(events: &[crate::events::RunEvent]) -> Vec<crate::journal::Record> {
    events
        .iter()
        .filter_map(|e| match e {
            crate::events::RunEvent::Recorded(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

/// The events of [`stopped_mid_migration`]'s run.
async fn stopped_records() -> Vec<crate::events::RunEvent> {
    let r = Recorder::default();
    let bus = EventBus::new(None).consumer(r.consumer());
    bus.record(
        "pve1",
        Event::GuestMoved {
            guest: web(),
            from: "pve1".into(),
            to: "pve2".into(),
            phase: Phase::Intent,
            maxmem: None,
        },
    )
    .await;
    r.events()
}

#[tokio::test(start_paused = true)]
async fn a_quorum_answer_that_cannot_be_read_stops_the_reboot_before_anything_is_touched() {
    let f = Fixture::new();
    let on_state = |_: RebootState| {};
    let cx = f.ctx(None, &on_state);
    // pvecm's answer cut short: no `Quorate:` line. Unknown, not "no cluster" (which the
    // gate lets pass).
    let mut shell = ScriptedShell::new("pve1")
        .on(
            "pvecm status",
            "Quorum information\n------------------\nDate: x\n",
        )
        .on("ceph.conf", "none\n")
        .on("node-maintenance", "")
        .on("ha-manager status", HA)
        .on("qm list", QM_EMPTY)
        .on("pct list", PCT_EMPTY)
        .on("boot_id", "old-boot\n")
        .drops_on("reboot");
    let (e, left) = reboot_and_wait(&mut shell, &cx).await.expect_err("refused");
    assert!(e.to_string().contains("cannot read pvecm status"), "{e}");
    assert_eq!(
        shell.ran(),
        ["pvecm status 2>&1"],
        "nothing else asked or done"
    );
    assert!(f.states().is_empty(), "{:?}", f.states());
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test(start_paused = true)]
async fn a_ceph_state_that_cannot_be_read_stops_the_reboot_before_anything_is_touched() {
    let f = Fixture::new();
    let on_state = |_: RebootState| {};
    let cx = f.ctx(None, &on_state);
    let mut shell = ScriptedShell::new("pve1")
        .on("pvecm status", PVECM_3)
        .on("ceph.conf", "present\n")
        .on("ceph status", "{\"fsid\": ")
        .on("node-maintenance", "")
        .on("ha-manager status", HA)
        .on("boot_id", "old-boot\n")
        .drops_on("reboot");
    let (e, left) = reboot_and_wait(&mut shell, &cx).await.expect_err("refused");
    assert!(
        matches!(&e, RebootError::Ceph(m) if m.contains("unknown")),
        "{e}"
    );
    assert_eq!(shell.count("node-maintenance"), 0, "{:?}", shell.ran());
    assert_eq!(shell.count("noout"), 0);
    assert_eq!(shell.count("reboot"), 0);
    assert!(f.states().is_empty() && left.is_empty());
}

#[test]
fn states_round_trip_and_are_ordered() {
    use RebootState::*;
    for s in [
        Preflight,
        DrainUndone,
        MaintenanceOn,
        GuestsMigrated,
        GuestsStopped,
        NooutSet,
        RebootIssued,
        DownSeen,
        UpNewBoot,
        ServicesActive,
        Quorate,
        CephClean,
        NooutUnset,
        MaintenanceOff,
        GuestsReturned,
        GuestsStarted,
        Done,
    ] {
        assert_eq!(serde_json::to_value(s).unwrap(), s.as_str(), "journal name");
        assert_eq!(RebootState::parse(s.as_str()), Some(s));
    }
    assert!(RebootState::RebootIssued < RebootState::DownSeen);
    // An undone drain is before the drain, never among the states of a finished reboot.
    assert!(RebootState::DrainUndone < RebootState::MaintenanceOn);
    assert!(RebootState::Quorate < RebootState::MaintenanceOff);
    assert_eq!(RebootState::parse("bogus"), None);
}
