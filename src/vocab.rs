//! The journal's vocabulary: the states and phases a run records and every reader compares
//! (the engine, the reboot state machine, rollback, `runs show`, the reports). Each is an enum
//! whose journaled name is written once, next to its variant; the on-disk names are the ones
//! earlier versions wrote. Below the engine, the journal and the reports.

/// An enum whose values are written in the journal by name: the names are given once, and
/// `as_str`, `parse`, `Display` and serde all use them.
macro_rules! vocabulary {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident = $s:literal,)+ }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $($(#[$vm])* $v,)+
        }

        impl $name {
            /// Every value, in order.
            pub const ALL: &'static [$name] = &[$($name::$v,)+];

            /// The name as journaled.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$v => $s,)+
                }
            }

            /// The value of a journaled name.
            pub fn parse(s: &str) -> Option<$name> {
                match s {
                    $($s => Some($name::$v),)+
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <String as serde::Deserialize>::deserialize(d)?;
                $name::parse(&s).ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "{s:?} is not a {} (expected one of: {})",
                        stringify!($name),
                        $name::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", ")
                    ))
                })
            }
        }
    };
}

vocabulary! {
    /// The states of a node's reboot, in order. The journal's reboot events keep the state as
    /// text: a state this version cannot read is kept, and counted as in progress.
    RebootState {
        /// Nothing done yet.
        Preflight = "preflight",
        /// A drain undone before the reboot was issued (maintenance off, guests back and
        /// started): nothing is left, the node was not rebooted, a resume starts again from the
        /// preflight.
        DrainUndone = "drain-undone",
        /// HA maintenance on and no HA service left on the node.
        MaintenanceOn = "maintenance-on",
        /// Movable guests migrated away (`drain`).
        GuestsMigrated = "guests-migrated",
        /// The guest policy applied to the other running guests.
        GuestsStopped = "guests-stopped",
        /// Ceph noout set for the node.
        NooutSet = "noout-set",
        /// The reboot command was sent (the old boot id is in the journal).
        RebootIssued = "reboot-issued",
        /// The node went down.
        DownSeen = "down-seen",
        /// It answers again with a new boot id.
        UpNewBoot = "up-new-boot",
        /// Every health unit is active.
        ServicesActive = "services-active",
        /// The cluster is quorate with the node's votes back.
        Quorate = "quorate",
        /// The node's OSDs are up and every PG is active+clean.
        CephClean = "ceph-clean",
        /// noout unset.
        NooutUnset = "noout-unset",
        /// HA maintenance switched off again.
        MaintenanceOff = "maintenance-off",
        /// Moved guests are back.
        GuestsReturned = "guests-returned",
        /// Guests the run stopped are running again.
        GuestsStarted = "guests-started",
        /// Complete.
        Done = "done",
    }
}

impl RebootState {
    /// What the reboot does or waits for once it has reached this state (the live display's
    /// line for the node).
    pub fn awaiting(self) -> &'static str {
        match self {
            RebootState::Preflight => "checking quorum, guests and Ceph",
            RebootState::DrainUndone => "starting again from the preflight",
            RebootState::MaintenanceOn => "migrating the other guests away (HA has moved its own)",
            RebootState::GuestsMigrated => "applying the guest policy to the others",
            RebootState::GuestsStopped => "setting Ceph noout",
            RebootState::NooutSet => "issuing the reboot",
            RebootState::RebootIssued => "waiting for the node to go down",
            RebootState::DownSeen => "waiting for a new boot id",
            RebootState::UpNewBoot => "waiting for every service to be active",
            RebootState::ServicesActive => "waiting for a quorate cluster with its votes",
            RebootState::Quorate => "waiting for Ceph: its OSDs up, every PG active+clean",
            RebootState::CephClean => "unsetting noout",
            RebootState::NooutUnset => "switching HA maintenance off",
            RebootState::MaintenanceOff => "migrating guests back",
            RebootState::GuestsReturned => "starting the guests it stopped",
            RebootState::GuestsStarted => "finishing",
            RebootState::Done => "done",
        }
    }

    /// After this state the reboot waits on the node or the cluster, within the step's timeout.
    pub fn waits(self) -> bool {
        matches!(
            self,
            RebootState::RebootIssued
                | RebootState::DownSeen
                | RebootState::UpNewBoot
                | RebootState::ServicesActive
                | RebootState::Quorate
        )
    }
}

vocabulary! {
    /// Where a journaled action stood: recorded before it is done (`intent`), then once done.
    Phase {
        /// About to be done (written before the action, so a crash cannot lose it).
        Intent = "intent",
        /// A file: written (its SHA-1 recorded).
        Written = "written",
        /// An undo command: the step it undoes changed something.
        Applied = "applied",
        /// An undo command: the step changed nothing, nothing to undo.
        Unchanged = "unchanged",
        /// A guest moved or stopped: done.
        Done = "done",
    }
}

vocabulary! {
    /// A node's HA maintenance as the run recorded it.
    MaintenanceState {
        /// Switched on by the run.
        On = "on",
        /// Switched off by the run (or its rollback).
        Off = "off",
        /// Left on on purpose (the node did not come back healthy).
        LeftOn = "left-on",
        /// Found on before the run touched it: someone else's, never switched off by the run.
        FoundOn = "found-on",
    }
}

vocabulary! {
    /// Ceph's noout for a node as the run recorded it.
    NooutState {
        /// Set by the run (`scope` host or cluster).
        Set = "set",
        /// Unset by the run (or its rollback).
        Unset = "unset",
        /// Left set on purpose (the node's OSDs did not come back).
        LeftSet = "left-set",
        /// Found set before the run: an operator's, left as found.
        FoundSet = "found-set",
    }
}

vocabulary! {
    /// The cluster's HA rebalancing (`crs` in `/etc/pve/datacenter.cfg`) as the run recorded
    /// it; intent before the write, so a run killed in between is still restored.
    BalancerState {
        /// About to write `0` for the keys (their values before, as written).
        Pausing = "pausing",
        /// Written: the keys are `0` by the run.
        Paused = "paused",
        /// Not written after all (the file changed before the write, or the write failed).
        NotPaused = "not-paused",
        /// Put back to their values before the run.
        Restored = "restored",
        /// Found changed by someone else since the run paused them: left as found.
        Kept = "kept",
    }
}

impl MaintenanceState {
    /// The run's own maintenance is on after this (not someone else's, `found-on`).
    pub fn run_owns_on(self) -> Option<bool> {
        match self {
            MaintenanceState::On | MaintenanceState::LeftOn => Some(true),
            MaintenanceState::Off => Some(false),
            MaintenanceState::FoundOn => None,
        }
    }
}

impl NooutState {
    /// The run's own noout is set after this (not an operator's, `found-set`).
    pub fn run_owns_set(self) -> Option<bool> {
        match self {
            NooutState::Set | NooutState::LeftSet => Some(true),
            NooutState::Unset => Some(false),
            NooutState::FoundSet => None,
        }
    }
}

/// A run's status, as its `run.json` records it (`running`, `ok`, `failed`, `halted`,
/// `interrupted`, `paused: WHY`, `rolled back`, `partly rolled back (NODES)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunStatus {
    /// A process drives it (or drove it until it was killed).
    Running,
    /// Every node ended well.
    Ok,
    /// A node failed.
    Failed,
    /// A rolling run stopped before its next batch after a failure.
    Halted,
    /// Stopped by a signal.
    Interrupted,
    /// Stopped between nodes on purpose, resumable: why (`outside window`, `after 2 node(s)
    /// (--pause-after)`, ...; empty when not said).
    Paused(String),
    /// Rolled back on every node that needed it.
    RolledBack,
    /// Rolled back on some nodes: which, as written (`pve1,pve2`).
    PartlyRolledBack(Option<String>),
    /// A status this version does not know, kept as written.
    Other(String),
}

impl RunStatus {
    /// The status of a recorded name (never fails: an unknown one is kept as `Other`).
    pub fn parse(s: &str) -> RunStatus {
        match s {
            "running" => RunStatus::Running,
            "ok" => RunStatus::Ok,
            "failed" => RunStatus::Failed,
            "halted" => RunStatus::Halted,
            "interrupted" => RunStatus::Interrupted,
            "paused" => RunStatus::Paused(String::new()),
            "rolled back" => RunStatus::RolledBack,
            "partly rolled back" => RunStatus::PartlyRolledBack(None),
            _ => {
                if let Some(why) = s.strip_prefix("paused: ") {
                    RunStatus::Paused(why.to_string())
                } else if let Some(n) = s
                    .strip_prefix("partly rolled back (")
                    .and_then(|r| r.strip_suffix(')'))
                {
                    RunStatus::PartlyRolledBack(Some(n.to_string()))
                } else {
                    RunStatus::Other(s.to_string())
                }
            }
        }
    }

    /// A rollback ran (on every node that needed it, or on some).
    pub fn rolled_back(&self) -> bool {
        matches!(self, RunStatus::RolledBack | RunStatus::PartlyRolledBack(_))
    }

    /// Paused between nodes, resumable.
    pub fn paused(&self) -> bool {
        matches!(self, RunStatus::Paused(_))
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunStatus::Running => f.write_str("running"),
            RunStatus::Ok => f.write_str("ok"),
            RunStatus::Failed => f.write_str("failed"),
            RunStatus::Halted => f.write_str("halted"),
            RunStatus::Interrupted => f.write_str("interrupted"),
            RunStatus::Paused(w) if w.is_empty() => f.write_str("paused"),
            RunStatus::Paused(w) => write!(f, "paused: {w}"),
            RunStatus::RolledBack => f.write_str("rolled back"),
            RunStatus::PartlyRolledBack(None) => f.write_str("partly rolled back"),
            RunStatus::PartlyRolledBack(Some(n)) => write!(f, "partly rolled back ({n})"),
            RunStatus::Other(s) => f.write_str(s),
        }
    }
}

impl serde::Serialize for RunStatus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for RunStatus {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(RunStatus::parse(
            &<String as serde::Deserialize>::deserialize(d)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_are_refused_with_the_known_ones() {
        for s in RebootState::ALL {
            assert_eq!(RebootState::parse(s.as_str()), Some(*s));
            let j = serde_json::to_string(s).unwrap();
            assert_eq!(serde_json::from_str::<RebootState>(&j).unwrap(), *s);
        }
        assert!(RebootState::ALL.windows(2).all(|w| w[0] < w[1]), "in order");
        for p in Phase::ALL {
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
        }
        assert_eq!(
            serde_json::to_value(MaintenanceState::LeftOn).unwrap(),
            "left-on"
        );
        assert_eq!(
            serde_json::to_value(NooutState::FoundSet).unwrap(),
            "found-set"
        );
        let e = serde_json::from_str::<Phase>("\"halfway\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"halfway\" is not a Phase"), "{e}");
        assert!(
            e.contains("intent, written, applied, unchanged, done"),
            "{e}"
        );
        assert_eq!(RebootState::parse("warp-drive"), None);
    }

    #[test]
    fn run_statuses_keep_their_recorded_names() {
        for s in [
            "running",
            "ok",
            "failed",
            "halted",
            "interrupted",
            "paused",
            "paused: outside window",
            "paused: after 2 node(s) (--pause-after)",
            "rolled back",
            "partly rolled back",
            "partly rolled back (pve1,pve3)",
            "something newer",
        ] {
            assert_eq!(RunStatus::parse(s).to_string(), s);
            let v: RunStatus = serde_json::from_value(serde_json::json!(s)).unwrap();
            assert_eq!(serde_json::to_value(&v).unwrap(), s);
        }
        assert!(RunStatus::parse("partly rolled back (pve2)").rolled_back());
        assert!(!RunStatus::parse("ok").rolled_back());
        assert_eq!(
            RunStatus::parse("paused: outside window"),
            RunStatus::Paused("outside window".into())
        );
        assert_eq!(
            RunStatus::parse("brand new"),
            RunStatus::Other("brand new".into())
        );
    }
}
