//! The raw layer of a playbook file: what serde reads from the TOML, every step field optional
//! and spanned, before [`super::validate`] turns it into the typed [`super::model`]. Nothing
//! outside the conversion sees these structs.

use std::collections::BTreeMap;
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

use super::model::{StepKind, Strategy};
use crate::inventory::HumanDuration;

/// A playbook file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPlaybookFile {
    /// Name.
    pub(super) name: String,
    /// What it does.
    #[serde(default)]
    pub(super) description: String,
    /// Variables with defaults (inventory vars and `-e` override them).
    #[serde(default)]
    pub(super) vars: BTreeMap<String, toml::Value>,
    /// Probes whose facts are gathered before the steps (`facts.<probe>`).
    #[serde(default)]
    pub(super) gather: Vec<Spanned<String>>,
    /// How nodes are worked through.
    #[serde(default)]
    pub(super) strategy: Strategy,
    /// The steps, in order.
    #[serde(rename = "step", default)]
    pub(super) steps: Vec<RawStep>,
}

/// One `[[step]]` as written: every field of every kind, each optional, with its span.
/// [`super::validate`] turns it into a [`super::model::Step`] or says what is wrong where.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStep {
    /// Unique name.
    pub(super) name: Spanned<String>,
    /// Kind.
    pub(super) kind: Spanned<StepKind>,
    /// Run only when this expression is true.
    pub(super) when: Option<Spanned<String>>,
    /// When `when` is false: the skip's detail (a template).
    pub(super) skip_note: Option<Spanned<String>>,
    /// Run only if one of these earlier steps changed something on the node (once).
    #[serde(default)]
    pub(super) on_change: Vec<Spanned<String>>,

    // run / wait_for
    /// Command (run, wait_for).
    pub(super) command: Option<Spanned<String>>,
    /// run: skip when this path exists.
    pub(super) creates: Option<Spanned<String>>,
    /// run: skip when this command succeeds.
    pub(super) unless: Option<Spanned<String>>,
    /// run: run only when this command succeeds.
    pub(super) only_if: Option<Spanned<String>>,
    /// run: expression over `rc`, `stdout`, `stderr`; default: always changed.
    pub(super) changed_when: Option<Spanned<String>>,
    /// run: expression; default `rc != 0`.
    pub(super) failed_when: Option<Spanned<String>>,
    /// run: a command that undoes what the step changed; `pvefleet rollback` runs it (in
    /// reverse step order) on nodes where the step reported a change. Templated like `command`
    /// (`run_id` is defined).
    pub(super) undo: Option<Spanned<String>>,
    /// run: which parts of the step only read the node, so that `pvefleet plan` may execute
    /// them: `"guards"` (`unless` / `only_if`) or `"all"` (the guards and the command: a
    /// check). Without it a plan evaluates no `unless` / `only_if` (only `creates`, which is
    /// pvefleet's own `test -e`) and shows the step as "would run".
    pub(super) read_only: Option<Spanned<String>>,
    /// run: run the command detached from the SSH session (its own session, output and exit
    /// status in files under `/run/pvefleet/` on the node): a killed controller or a dropped
    /// connection does not stop it halfway, and a resume reads how it ended (or waits while it
    /// still runs) instead of running it again.
    pub(super) detach: Option<Spanned<bool>>,
    /// run with `detach`: what repairs the step's own command when it was cut off without an
    /// exit status (e.g. `dpkg --configure -a` after a killed dist-upgrade). A resume runs it,
    /// journaled, before the node's facts are gathered, then runs the step again.
    pub(super) repair: Option<Spanned<String>>,

    // files
    /// Target file.
    pub(super) path: Option<Spanned<String>>,
    /// line: the line.
    pub(super) line: Option<Spanned<String>>,
    /// lines: the lines.
    pub(super) lines: Option<Vec<Spanned<String>>>,
    /// line: replace the (last) line matching this regex.
    pub(super) regexp: Option<Spanned<String>>,
    /// line: insert after the first line matching this regex (templated) instead of at the end.
    pub(super) after: Option<Spanned<String>>,
    /// line/lines/block/file: present or absent.
    #[serde(default)]
    pub(super) state: Option<Spanned<String>>,
    /// block: content between the markers.
    pub(super) block: Option<Spanned<String>>,
    /// file: content.
    pub(super) content: Option<Spanned<String>>,
    /// file: octal mode (`"0644"`).
    pub(super) mode: Option<Spanned<String>>,
    /// file: owner (`root:root`).
    pub(super) owner: Option<Spanned<String>>,

    // kernel_cmdline / modules
    /// Parameters or modules to ensure present.
    #[serde(default)]
    pub(super) add: Vec<Spanned<String>>,
    /// Parameters or modules to ensure absent.
    #[serde(default)]
    pub(super) remove: Vec<Spanned<String>>,

    // service
    /// Unit name.
    pub(super) service: Option<Spanned<String>>,

    // reboot / wait_for
    /// Deadline.
    pub(super) timeout: Option<Spanned<HumanDuration>>,
    /// reboot: empty the node first: HA guests through node maintenance, other running VMs
    /// live-migrated (`qm migrate --online`), containers moved (`pct migrate --restart`) to
    /// nodes with room; guests that cannot move meet `--guests`.
    pub(super) drain: Option<Spanned<bool>>,
    /// reboot with drain: allow `--with-local-disks` (copies local disks; slow).
    pub(super) local_disks: Option<Spanned<bool>>,
    /// reboot with drain: move the guests back to the node once it is back (default true).
    pub(super) return_guests: Option<Spanned<bool>>,
    /// reboot with drain: how many migrations at once (default: the cluster's `max_workers`,
    /// else 4; at most 8).
    pub(super) max_migrations: Option<Spanned<i64>>,
    /// reboot with drain: a bandwidth budget for the migrations running at once, KiB/s, shared
    /// evenly among them (each one's `--bwlimit`).
    pub(super) bwlimit: Option<Spanned<i64>>,
    /// reboot: Ceph health check codes that do not stop the run (e.g. `["MON_CLOCK_SKEW"]`).
    #[serde(default)]
    pub(super) ceph_accept_warnings: Vec<Spanned<String>>,
    /// reboot: how long PGs may take to be active+clean again (default 30m).
    pub(super) pg_timeout: Option<Spanned<HumanDuration>>,

    // probe / assert
    /// probe: probe names.
    #[serde(default)]
    pub(super) probes: Vec<Spanned<String>>,
    /// assert: expression that must be true.
    pub(super) that: Option<Spanned<String>>,
    /// assert: message when it is not.
    pub(super) message: Option<Spanned<String>>,
}

impl RawStep {
    /// The kind fields a step still sets, in the order they are written in [`RawStep`], with
    /// their spans (a list counts once it has an item; `lines = []` counts too, at the step's
    /// name). The conversion takes the fields its kind uses out of the step first, so what
    /// this finds afterwards does not apply to the kind.
    pub(super) fn set_fields(&self) -> Vec<(&'static str, Range<usize>)> {
        let mut v = Vec::new();
        macro_rules! opt {
            ($f:ident) => {
                if let Some(x) = &self.$f {
                    v.push((stringify!($f), x.span()));
                }
            };
        }
        macro_rules! list {
            ($f:ident) => {
                if let Some(x) = self.$f.first() {
                    v.push((stringify!($f), x.span()));
                }
            };
        }
        opt!(command);
        opt!(creates);
        opt!(unless);
        opt!(only_if);
        opt!(changed_when);
        opt!(failed_when);
        opt!(undo);
        opt!(read_only);
        opt!(detach);
        opt!(repair);
        opt!(path);
        opt!(line);
        if let Some(l) = &self.lines {
            v.push(("lines", l.first().map_or(self.name.span(), Spanned::span)));
        }
        opt!(regexp);
        opt!(after);
        opt!(state);
        opt!(block);
        opt!(content);
        opt!(mode);
        opt!(owner);
        list!(add);
        list!(remove);
        opt!(service);
        opt!(timeout);
        opt!(drain);
        opt!(local_disks);
        opt!(return_guests);
        opt!(max_migrations);
        opt!(bwlimit);
        list!(ceph_accept_warnings);
        opt!(pg_timeout);
        list!(probes);
        opt!(that);
        opt!(message);
        v
    }
}
