//! The cluster's own balancers, paused while a run drains nodes: Proxmox VE's HA cluster
//! resource scheduler (CRS) can move HA guests by itself (`ha-rebalance-on-start`, and 9.x's
//! `ha-auto-rebalance`), which would fight the drain's placement and the migrations back. Both
//! are keys of the `crs` property string in `/etc/pve/datacenter.cfg` (cluster-wide, pmxcfs).
//!
//! The run owns only what it sets: a key that is on is set to `0` before the first node starts
//! (journaled `pausing` before the write, `paused` after), and put back at the run's end only if
//! it is still the `0` the run wrote; a key that was off or absent is never touched or recorded.
//! The file is rewritten byte-for-byte but for those values, and only when its SHA-1 is still
//! the one read (someone else's edit in between is never overwritten). What the journal says is
//! paused and not restored is restored by the end of a `run --resume` and by `rollback`.
//!
//! The text functions ([`rebalancing`], [`with_values`]) are pure; [`pause`] and [`restore`]
//! go through the first node of each cluster that answers.

use std::collections::BTreeMap;
use std::time::Duration;

use super::remote::Remote;
use crate::events::EventBus;
use crate::inventory::Node;
use crate::journal::{BalancerState, Event, Record};
use crate::ssh::ExitStatus;

/// The file, shared by every node of a cluster (pmxcfs).
pub const PATH: &str = "/etc/pve/datacenter.cfg";

/// The `crs` keys that make the HA manager move guests by itself, both booleans.
///
/// - `ha-rebalance-on-start`: pve-cluster `src/PVE/DataCenterConfig.pm`, `$crs_format`
///   (`type => 'boolean'`, default 0); shown in pve-manager `www/manager6/form/CRSOptions.js`.
/// - `ha-auto-rebalance`: pve-cluster `src/PVE/DataCenterConfig.pm`, `$crs_format`
///   (`type => 'boolean'`, default 0, "balancing HA resources automatically"); pve-manager
///   `www/manager6/form/CRSOptions.js` ("Automatically rebalance HA resources"). Its companions
///   (`ha-auto-rebalance-threshold`, `-method`, `-hold-duration`, `-margin`) only tune it and
///   are left alone.
///
/// `ha` (the scheduler mode, `basic`/`static`/`dynamic`) only chooses where the HA manager
/// places guests it has to place anyway; it is not a balancer and is never changed.
pub const KEYS: &[&str] = &["ha-rebalance-on-start", "ha-auto-rebalance"];

/// The value written to pause a key.
const OFF: &str = "0";

/// A `datacenter.cfg` that cannot be read with certainty: the run refuses rather than guess.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{PATH} line {line}: {why}: {text:?}")]
pub struct CrsError {
    /// The line (from 1).
    pub line: usize,
    /// The line as written (sanitised by the caller when shown).
    pub text: String,
    /// What is wrong with it.
    pub why: String,
}

/// A JSON-schema boolean as pve-common's `PVE::JSONSchema` `parse_boolean` reads one.
fn boolean(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "on" | "yes" | "true" => Some(true),
        "0" | "off" | "no" | "false" => Some(false),
        _ => None,
    }
}

/// The `crs` line: its index among `text.split_inclusive('\n')`, and the byte range of its
/// value inside that line. `None` without one. `PVE::JSONSchema::parse_config` trims the line,
/// skips `#` comments and splits at the first `:`.
fn crs_line(text: &str) -> Result<Option<(usize, std::ops::Range<usize>)>, CrsError> {
    let mut found = None;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let body = line.trim_end_matches(['\n', '\r']);
        let lead = body.len() - body.trim_start().len();
        let t = body.trim();
        if t.starts_with('#') {
            continue;
        }
        let Some(rest) = t.strip_prefix("crs") else {
            continue;
        };
        let Some(after) = rest.trim_start().strip_prefix(':') else {
            continue;
        };
        if found.is_some() {
            return Err(CrsError {
                line: i + 1,
                text: body.to_string(),
                why: "a second crs line".into(),
            });
        }
        let value = after.trim_start();
        let start = lead + (t.len() - value.len());
        found = Some((i, start..start + value.len()));
    }
    Ok(found)
}

/// The `crs` value split into `key=value` parts, refusing what `parse_property_string` might
/// read otherwise (quotes, a part without `=`, a rebalancing key that is not a boolean).
fn parts(line_no: usize, line: &str, value: &str) -> Result<Vec<(String, String)>, CrsError> {
    let bad = |why: &str| CrsError {
        line: line_no,
        text: line.trim_end_matches(['\n', '\r']).to_string(),
        why: why.to_string(),
    };
    if value.contains('"') {
        return Err(bad("quoted crs values are not read"));
    }
    let mut out: Vec<(String, String)> = Vec::new();
    for part in value.split(',') {
        let Some((k, v)) = part.split_once('=') else {
            return Err(bad("a crs part without key=value"));
        };
        let key_ok = !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !key_ok {
            return Err(bad("a crs key that is not read"));
        }
        if out.iter().any(|(seen, _)| seen == k) {
            return Err(bad(&format!("crs key {k} given twice")));
        }
        if KEYS.contains(&k) && boolean(v).is_none() {
            return Err(bad(&format!("crs {k}={v} is not a boolean")));
        }
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

/// The rebalancing keys ([`KEYS`]) present in the `crs` line, with their values as written;
/// empty without a `crs` line. An unreadable line is an error naming it.
pub fn rebalancing(text: &str) -> Result<BTreeMap<String, String>, CrsError> {
    let Some((i, range)) = crs_line(text)? else {
        return Ok(BTreeMap::new());
    };
    let line = text.split_inclusive('\n').nth(i).unwrap_or_default();
    Ok(parts(i + 1, line, &line[range])?
        .into_iter()
        .filter(|(k, _)| KEYS.contains(&k.as_str()))
        .collect())
}

/// Of `rebalancing`'s keys, those that are on.
pub fn on(keys: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    keys.iter()
        .filter(|(_, v)| boolean(v) == Some(true))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// `text` with each key of `set` given its value in the `crs` line; every other byte (other
/// lines, other keys, their order, comments, line ends) as it was. A key of `set` that is not
/// in the line is an error (the run only changes values it read).
pub fn with_values(text: &str, set: &BTreeMap<String, String>) -> Result<String, CrsError> {
    let Some((i, range)) = crs_line(text)? else {
        return Err(CrsError {
            line: 0,
            text: String::new(),
            why: "no crs line".into(),
        });
    };
    let mut out = String::with_capacity(text.len() + 8);
    for (n, line) in text.split_inclusive('\n').enumerate() {
        if n != i {
            out.push_str(line);
            continue;
        }
        let mut p = parts(i + 1, line, &line[range.clone()])?;
        for k in set.keys() {
            if !p.iter().any(|(pk, _)| pk == k) {
                return Err(CrsError {
                    line: i + 1,
                    text: line.trim_end_matches(['\n', '\r']).to_string(),
                    why: format!("crs has no {k}"),
                });
            }
        }
        for (k, v) in p.iter_mut() {
            if let Some(new) = set.get(k.as_str()) {
                *v = new.clone();
            }
        }
        let value = p
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        out.push_str(&line[..range.start]);
        out.push_str(&value);
        out.push_str(&line[range.end..]);
    }
    Ok(out)
}

/// `k=v k=v`, for messages.
pub fn describe(keys: &BTreeMap<String, String>) -> String {
    keys.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// What the journal says the run paused and has not restored, per cluster: key -> (its value
/// before the run, whether the write is known done). A `pausing` without `paused` may or may
/// not have been written (a kill in between): [`restore`] tells them apart by the value.
pub fn outstanding(
    events: &[Record],
) -> BTreeMap<Option<String>, BTreeMap<String, (String, bool)>> {
    let mut out: BTreeMap<Option<String>, BTreeMap<String, (String, bool)>> = BTreeMap::new();
    for r in events {
        let Event::Balancers {
            state,
            cluster,
            keys,
            ..
        } = &r.event
        else {
            continue;
        };
        let c = out.entry(cluster.clone()).or_default();
        for (k, v) in keys {
            match state {
                BalancerState::Pausing => {
                    c.insert(k.clone(), (v.clone(), false));
                }
                BalancerState::Paused => {
                    c.insert(k.clone(), (v.clone(), true));
                }
                BalancerState::NotPaused | BalancerState::Restored | BalancerState::Kept => {
                    c.remove(k);
                }
            }
        }
    }
    out.retain(|_, keys| !keys.is_empty());
    out
}

/// Why pausing or restoring could not be done on a cluster.
#[derive(Debug, thiserror::Error)]
pub enum BalancerError {
    /// The file could not be read with certainty.
    #[error("cluster {cluster}, via {node}: {error}")]
    Unreadable {
        /// The cluster.
        cluster: String,
        /// The node read through.
        node: String,
        /// What is wrong.
        error: CrsError,
    },
    /// No node of the cluster answered, or the read or write failed.
    #[error("cluster {cluster}: {PATH}: {why}")]
    Remote {
        /// The cluster.
        cluster: String,
        /// The last node's error.
        why: String,
    },
}

fn cluster_name(c: &Option<String>) -> String {
    c.clone().unwrap_or_else(|| "(unnamed)".into())
}

/// The file through the first node of `members` that answers: (the session, its text or
/// `None` when absent).
async fn read_any(members: &[Node], timeout: Duration) -> Result<(Remote, Option<String>), String> {
    let mut last = "no node".to_string();
    for n in members {
        let r = match Remote::connect(n, timeout).await {
            Ok(r) => r,
            Err(e) => {
                last = format!("{}: {e}", n.name);
                continue;
            }
        };
        let o = match r
            .sh(&format!(
                "if [ -e {PATH} ]; then cat {PATH}; else exit 3; fi"
            ))
            .await
        {
            Ok(o) => o,
            Err(e) => {
                last = format!("{}: {e}", n.name);
                continue;
            }
        };
        match o.exit {
            ExitStatus::Code(3) => return Ok((r, None)),
            ExitStatus::Code(0) => match String::from_utf8(o.stdout) {
                Ok(t) => return Ok((r, Some(t))),
                Err(_) => return Err(format!("{}: not UTF-8 text", n.name)),
            },
            _ => {
                last = format!(
                    "{}: cat failed: {}",
                    n.name,
                    super::remote::first_line(&o.stderr)
                )
            }
        }
    }
    Err(last)
}

/// The outcome of a guarded write.
enum Wrote {
    Yes,
    /// The file is not the one read any more.
    Changed,
}

/// Replace the file by `new` through a temporary file in `/etc/pve` and `mv`, only if its SHA-1
/// is still `sha1` (what was read): an edit by someone else in between is never overwritten.
async fn write_guarded(r: &Remote, sha1: &str, new: &str) -> Result<Wrote, String> {
    let script = format!(
        "f={PATH}; t=/etc/pve/.datacenter.cfg.pvefleet.$$; \
         cur=$(sha1sum < \"$f\" | cut -d' ' -f1) || exit 2; \
         if [ \"$cur\" != {sha1} ]; then echo changed; exit 4; fi; \
         cat > \"$t\" && mv \"$t\" \"$f\" && echo written",
        sha1 = crate::quote::shell_quote(sha1)
    );
    let o = r
        .sh_stdin(&script, new.as_bytes())
        .await
        .map_err(|e| format!("{}: {e}", r.node.name))?;
    match o.exit {
        ExitStatus::Code(0) => Ok(Wrote::Yes),
        ExitStatus::Code(4) => Ok(Wrote::Changed),
        _ => Err(format!(
            "{}: writing {PATH} failed: {}",
            r.node.name,
            super::remote::first_line(&o.stderr)
        )),
    }
}

/// Pause the rebalancing keys that are on, in every cluster among `nodes` (read through its
/// first node that answers). Journals `pausing` before each write and `paused` (or
/// `not-paused`) after; says it on the bus. A cluster whose file cannot be read is an error: the
/// run must not start.
/// A cluster's file and the rebalancing keys that are on in it, read through the first of
/// `members` that answers: `None` without the file. Serves [`pause`] and [`preview`].
async fn keys_on(
    name: &str,
    members: &[Node],
    timeout: Duration,
) -> Result<Option<(Remote, String, BTreeMap<String, String>)>, BalancerError> {
    let (r, text) = read_any(members, timeout)
        .await
        .map_err(|why| BalancerError::Remote {
            cluster: name.to_string(),
            why,
        })?;
    let Some(text) = text else { return Ok(None) };
    match rebalancing(&text) {
        Ok(keys) => Ok(Some((r, text, on(&keys)))),
        Err(error) => Err(BalancerError::Unreadable {
            cluster: name.to_string(),
            node: r.node.name.clone(),
            error,
        }),
    }
}

pub async fn pause(bus: &EventBus, nodes: &[Node], timeout: Duration) -> Result<(), BalancerError> {
    for (cluster, members) in super::cluster_lock::by_cluster(nodes) {
        let name = cluster_name(&cluster);
        let Some((r, text, was)) = keys_on(&name, &members, timeout).await? else {
            continue;
        };
        if was.is_empty() {
            continue;
        }
        let unreadable = |error| BalancerError::Unreadable {
            cluster: name.clone(),
            node: r.node.name.clone(),
            error,
        };
        let set: BTreeMap<String, String> =
            was.keys().map(|k| (k.clone(), OFF.to_string())).collect();
        let new = with_values(&text, &set).map_err(unreadable)?;
        let event = |state, why| Event::Balancers {
            state,
            cluster: cluster.clone(),
            via: r.node.name.clone(),
            keys: was.clone(),
            why,
        };
        bus.record("-", event(BalancerState::Pausing, None)).await;
        let sha1 = crate::journal::sha1_hex(text.as_bytes());
        let why = match write_guarded(&r, &sha1, &new).await {
            Ok(Wrote::Yes) => {
                bus.record("-", event(BalancerState::Paused, None)).await;
                bus.told(format!(
                    "pausing HA rebalancing for the run (cluster {name}, {PATH} via {}): crs {} -> 0",
                    r.node.name,
                    describe(&was)
                ));
                continue;
            }
            Ok(Wrote::Changed) => format!("{PATH} changed on {} while being read", r.node.name),
            Err(why) => why,
        };
        bus.record("-", event(BalancerState::NotPaused, Some(why.clone())))
            .await;
        return Err(BalancerError::Remote { cluster: name, why });
    }
    Ok(())
}

/// Put back what the journal says the run paused and did not restore ([`outstanding`]), in
/// every such cluster among `nodes`: a key still `0` gets its value before the run; one changed
/// meanwhile is kept (said, journaled `kept`). Errors are said on the bus and returned; the
/// journal keeps them outstanding for a resume or `rollback`.
pub async fn restore(bus: &EventBus, nodes: &[Node], timeout: Duration) -> Result<(), Vec<String>> {
    let pending = outstanding(&bus.journal_events());
    let mut errors = Vec::new();
    for (cluster, keys) in pending {
        let name = cluster_name(&cluster);
        let members: Vec<Node> = nodes
            .iter()
            .filter(|n| n.cluster == cluster)
            .cloned()
            .collect();
        match restore_cluster(bus, &cluster, &members, &keys, timeout).await {
            Ok(()) => {}
            Err(why) => {
                let msg = format!(
                    "cluster {name}: HA rebalancing (crs {}) could not be restored in {PATH}: {why}; restore it with: pvefleet rollback {}",
                    keys.iter()
                        .map(|(k, (v, _))| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(" "),
                    run_id(bus)
                );
                errors.push(msg);
            }
        }
    }
    said(bus, errors)
}

/// The id of the run whose journal `bus` writes, for the commands the warnings give.
pub(super) fn run_id(bus: &EventBus) -> String {
    bus.journal().map(|j| j.id.clone()).unwrap_or_default()
}

/// Restore errors, each said as a warning: `Err` when there are any.
pub(super) fn said(bus: &EventBus, errors: Vec<String>) -> Result<(), Vec<String>> {
    for msg in &errors {
        bus.warning(msg.clone());
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

async fn restore_cluster(
    bus: &EventBus,
    cluster: &Option<String>,
    members: &[Node],
    keys: &BTreeMap<String, (String, bool)>,
    timeout: Duration,
) -> Result<(), String> {
    let name = cluster_name(cluster);
    // A file changed between the read and the write is read again (a few times).
    for _ in 0..3 {
        let (r, text) = read_any(members, timeout).await?;
        let text = text.unwrap_or_default();
        let now = rebalancing(&text).map_err(|e| format!("via {}: {e}", r.node.name))?;
        let mut back = BTreeMap::new();
        let mut kept = BTreeMap::new();
        let mut never = BTreeMap::new();
        let mut already = BTreeMap::new();
        for (k, (was, written)) in keys {
            match now.get(k) {
                Some(v) if v == OFF => {
                    back.insert(k.clone(), was.clone());
                }
                // Intent only and the value as before: the kill came before the write.
                Some(v) if !written && v == was => {
                    never.insert(k.clone(), was.clone());
                }
                // Written, and back to its value before the run: a restore whose write landed
                // before a kill could journal it. Nothing to write; journaled restored.
                Some(v) if v == was => {
                    already.insert(k.clone(), was.clone());
                }
                found => {
                    kept.insert(
                        k.clone(),
                        found.cloned().unwrap_or_else(|| "(absent)".into()),
                    );
                }
            }
        }
        let event = |state, keys, why| Event::Balancers {
            state,
            cluster: cluster.clone(),
            via: r.node.name.clone(),
            keys,
            why,
        };
        if !back.is_empty() {
            let new = with_values(&text, &back).map_err(|e| format!("via {}: {e}", r.node.name))?;
            let sha1 = crate::journal::sha1_hex(text.as_bytes());
            match write_guarded(&r, &sha1, &new).await? {
                Wrote::Changed => continue,
                Wrote::Yes => {
                    bus.told(format!(
                        "restored HA rebalancing (cluster {name}, {PATH} via {}): crs {}",
                        r.node.name,
                        describe(&back)
                    ));
                    bus.record("-", event(BalancerState::Restored, back, None))
                        .await;
                }
            }
        }
        if !already.is_empty() {
            bus.told(format!(
                "HA rebalancing (cluster {name}): crs {} found as before the run (restored already)",
                describe(&already)
            ));
            bus.record(
                "-",
                event(
                    BalancerState::Restored,
                    already,
                    Some("found as before the run".into()),
                ),
            )
            .await;
        }
        if !never.is_empty() {
            bus.record(
                "-",
                event(
                    BalancerState::NotPaused,
                    never,
                    Some("the run was stopped before its write".into()),
                ),
            )
            .await;
        }
        if !kept.is_empty() {
            let why = format!("changed in {PATH} since the run paused it");
            bus.told(format!(
                "pvefleet: cluster {name}: crs {} {why}: left as it is (not restored)",
                describe(&kept)
            ));
            bus.record("-", event(BalancerState::Kept, kept, Some(why)))
                .await;
        }
        return Ok(());
    }
    Err(format!("{PATH} kept changing while being restored"))
}

/// Every balancer a draining run pauses, before its first node starts: the HA rebalancing of
/// each cluster among `run` ([`pause`]), then ProxLB on the inventory's nodes of those clusters
/// ([`super::proxlb::pause`]). An error means the run must not start (what was paused is still
/// journaled: [`restore_all`] puts it back).
pub async fn pause_all(
    bus: &EventBus,
    inventory: &[Node],
    run: &[Node],
    timeout: Duration,
) -> Result<(), String> {
    pause(bus, run, timeout).await.map_err(|e| e.to_string())?;
    let members = super::cluster_lock::cluster_members(inventory, run);
    super::proxlb::pause(bus, &members, run, timeout)
        .await
        .map_err(|e| e.to_string())
}

/// Put back every balancer the journal says the run paused and has not restored, through the
/// inventory's nodes: HA rebalancing, then ProxLB. The errors, each said on the bus as a warning.
pub async fn restore_all(
    bus: &EventBus,
    inventory: &[Node],
    timeout: Duration,
) -> Result<(), Vec<String>> {
    let mut errors = restore(bus, inventory, timeout)
        .await
        .err()
        .unwrap_or_default();
    if let Err(e) = super::proxlb::restore(bus, inventory, timeout).await {
        errors.extend(e);
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// What [`pause_all`] would do, for the plan: a line per balancer it would pause or could not
/// read, and whether it makes the run refuse (read-only: nothing is written).
pub async fn preview(inventory: &[Node], run: &[Node], timeout: Duration) -> Vec<(String, bool)> {
    let mut lines = Vec::new();
    for (cluster, members) in super::cluster_lock::by_cluster(run) {
        let name = cluster_name(&cluster);
        match keys_on(&name, &members, timeout).await {
            Err(e) => lines.push((format!("HA rebalancing: {e}: the run would refuse"), true)),
            Ok(None) => {}
            Ok(Some((_, _, on))) if on.is_empty() => {}
            Ok(Some((_, _, on))) => lines.push((
                format!(
                    "HA rebalancing (cluster {name}): crs {} would be set to 0 for the run, put back at its end",
                    describe(&on)
                ),
                false,
            )),
        }
    }
    use super::proxlb::Probed;
    let members = super::cluster_lock::cluster_members(inventory, run);
    for (n, seen) in super::proxlb::survey(&members, run, timeout).await {
        match seen {
            Probed::Read(_, s) => {
                lines.extend(super::proxlb::describe(&n.name, &s).map(|l| (l, false)))
            }
            Probed::Blocks(why) => lines.push((
                format!(
                    "ProxLB on {}: cannot tell whether it runs there ({why}): the run would refuse",
                    n.name
                ),
                true,
            )),
            Probed::Silent(why) => lines.push((
                format!(
                    "ProxLB on {}: not answering ({why}): not known, and not paused",
                    n.name
                ),
                false,
            )),
        }
    }
    lines
}

/// The journal says the run paused a balancer it has not put back.
pub fn owed(events: &[Record]) -> bool {
    !outstanding(events).is_empty() || !super::proxlb::outstanding(events).is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const REAL: &str = "# managed by the team, see wiki\n\
keyboard: en-us\n\
crs: ha=static,ha-rebalance-on-start=1\n\
migration: secure,network=10.0.0.0/24\n\
ha: shutdown_policy=migrate\n";

    #[test]
    fn the_rebalancing_keys_are_read_from_the_crs_line() {
        assert_eq!(
            rebalancing(REAL).unwrap(),
            m(&[("ha-rebalance-on-start", "1")])
        );
        assert_eq!(
            on(&rebalancing(REAL).unwrap()),
            m(&[("ha-rebalance-on-start", "1")])
        );
    }

    #[test]
    fn pausing_changes_only_the_value() {
        let new = with_values(REAL, &m(&[("ha-rebalance-on-start", "0")])).unwrap();
        assert_eq!(
            new,
            REAL.replace("ha-rebalance-on-start=1", "ha-rebalance-on-start=0")
        );
        // And back, byte for byte.
        assert_eq!(
            with_values(&new, &m(&[("ha-rebalance-on-start", "1")])).unwrap(),
            REAL
        );
    }

    #[test]
    fn keys_in_another_order_and_9x_auto_rebalance() {
        let t = "crs: ha-auto-rebalance=1,ha-auto-rebalance-threshold=40,ha=dynamic,ha-rebalance-on-start=on\r\nkeyboard: de\r\n";
        let found = rebalancing(t).unwrap();
        assert_eq!(
            found,
            m(&[("ha-auto-rebalance", "1"), ("ha-rebalance-on-start", "on")])
        );
        let new = with_values(
            t,
            &m(&[("ha-auto-rebalance", "0"), ("ha-rebalance-on-start", "0")]),
        )
        .unwrap();
        assert_eq!(
            new,
            "crs: ha-auto-rebalance=0,ha-auto-rebalance-threshold=40,ha=dynamic,ha-rebalance-on-start=0\r\nkeyboard: de\r\n"
        );
        // `on` is put back as `on`, not as `1`.
        assert_eq!(with_values(&new, &found).unwrap(), t);
    }

    #[test]
    fn nothing_on_without_crs_or_with_only_the_mode() {
        assert!(rebalancing("keyboard: en-us\n").unwrap().is_empty());
        assert!(rebalancing("").unwrap().is_empty());
        assert!(rebalancing("crs: ha=static\n").unwrap().is_empty());
        let off = rebalancing("crs: ha=static,ha-rebalance-on-start=0\n").unwrap();
        assert_eq!(off, m(&[("ha-rebalance-on-start", "0")]));
        assert!(on(&off).is_empty());
    }

    #[test]
    fn a_commented_crs_line_is_not_the_crs_line() {
        let t = "#crs: ha=static,ha-rebalance-on-start=1\ncrs: ha=basic\n";
        assert!(rebalancing(t).unwrap().is_empty());
        assert!(rebalancing("# crs: ha-rebalance-on-start=1\n")
            .unwrap()
            .is_empty());
    }

    #[test]
    fn spacing_and_a_missing_final_newline_are_kept() {
        let t = "keyboard: en-us\n  crs :  ha=static,ha-rebalance-on-start=1  ";
        assert_eq!(
            rebalancing(t).unwrap(),
            m(&[("ha-rebalance-on-start", "1")])
        );
        let new = with_values(t, &m(&[("ha-rebalance-on-start", "0")])).unwrap();
        assert_eq!(
            new,
            "keyboard: en-us\n  crs :  ha=static,ha-rebalance-on-start=0  "
        );
    }

    #[test]
    fn an_unreadable_value_is_refused_naming_its_line() {
        for bad in [
            "crs: ha=static,ha-rebalance-on-start=maybe\n",
            "crs: static\n",
            "crs: ha=static,,ha-rebalance-on-start=1\n",
            "crs: ha=\"static\",ha-rebalance-on-start=1\n",
            "crs: ha-rebalance-on-start=1,ha-rebalance-on-start=0\n",
            "crs: Ha-Rebalance-On-Start=1\n",
        ] {
            let t = format!("keyboard: en-us\n{bad}");
            let e = rebalancing(&t).unwrap_err();
            assert_eq!(e.line, 2, "{bad}");
            assert_eq!(e.text, bad.trim_end(), "{bad}");
            assert!(
                e.to_string()
                    .starts_with("/etc/pve/datacenter.cfg line 2: "),
                "{e}"
            );
        }
        let e = rebalancing("crs: ha=static\ncrs: ha-rebalance-on-start=1\n").unwrap_err();
        assert_eq!((e.line, e.why.as_str()), (2, "a second crs line"));
    }

    #[test]
    fn a_key_not_in_the_line_is_not_added() {
        let e = with_values("crs: ha=static\n", &m(&[("ha-rebalance-on-start", "1")])).unwrap_err();
        assert_eq!(e.why, "crs has no ha-rebalance-on-start");
        assert!(with_values("keyboard: en-us\n", &m(&[("ha-rebalance-on-start", "1")])).is_err());
    }

    fn rec(state: BalancerState, keys: &[(&str, &str)]) -> Record {
        Record {
            time: String::new(),
            node: "-".into(),
            event: Event::Balancers {
                state,
                cluster: Some("lab".into()),
                via: "pve1".into(),
                keys: m(keys),
                why: None,
            },
        }
    }

    #[test]
    fn outstanding_is_what_was_paused_and_not_restored() {
        use BalancerState::*;
        let k = [("ha-rebalance-on-start", "1")];
        assert!(outstanding(&[]).is_empty());
        let pausing = outstanding(&[rec(Pausing, &k)]);
        assert_eq!(
            pausing[&Some("lab".to_string())]["ha-rebalance-on-start"],
            ("1".to_string(), false)
        );
        let paused = outstanding(&[rec(Pausing, &k), rec(Paused, &k)]);
        assert_eq!(
            paused[&Some("lab".to_string())]["ha-rebalance-on-start"],
            ("1".to_string(), true)
        );
        for end in [Restored, Kept, NotPaused] {
            assert!(outstanding(&[rec(Pausing, &k), rec(Paused, &k), rec(end, &k)]).is_empty());
        }
        // A resume that paused again after a restore owes it again.
        let again = outstanding(&[rec(Paused, &k), rec(Restored, &k), rec(Paused, &k)]);
        assert_eq!(again.len(), 1);
    }

    #[test]
    fn the_event_round_trips_through_the_journal_format() {
        let r = rec(BalancerState::Paused, &[("ha-auto-rebalance", "1")]);
        let line = serde_json::to_string(&r).unwrap();
        assert!(line.contains("\"event\":\"balancers\""), "{line}");
        assert!(line.contains("\"state\":\"paused\""), "{line}");
        let back: Record = serde_json::from_str(&line).unwrap();
        assert!(matches!(
            back.event,
            Event::Balancers {
                state: BalancerState::Paused,
                ..
            }
        ));
    }
}
