//! `ceph`: hyper-converged Ceph's health, OSDs, placement groups and flags (DOMAIN.md §9), and
//! the pure parsers of Ceph's JSON that the rolling path's Ceph gates use too.
//!
//! Ceph is detected from the node, never assumed: `/etc/pve/ceph.conf` present and a `ceph`
//! that answers. A `ceph.conf` with no working `ceph` is *unknown*, graded FAIL (and a stop for
//! a rolling run), not "no Ceph".

use serde::{Deserialize, Serialize};

use super::{marker, sub, Finding, Grade, ParseError, Thresholds};

/// Probe name.
pub const NAME: &str = "ceph";

/// The snippet: changes nothing (read-only `ceph` queries, each bounded by `timeout`).
pub const SNIPPET: &str = r#"if [ ! -e /etc/pve/ceph.conf ]; then echo "@@ceph none"
elif ! command -v ceph >/dev/null 2>&1; then echo "@@ceph nobinary"
else
  echo "@@ceph present"
  echo "@@sub ceph_status"; timeout 20 ceph status -f json 2>&1; echo; echo "@@ceph_status_rc $?"
  echo "@@sub ceph_osd_tree"; timeout 20 ceph osd tree -f json 2>/dev/null; echo
  echo "@@sub ceph_osd_dump"; timeout 20 ceph osd dump -f json 2>/dev/null; echo
fi"#;

/// Whether the node has Ceph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Presence {
    /// No `/etc/pve/ceph.conf`: no Ceph on this cluster.
    None,
    /// `ceph.conf` but no `ceph` command: unknown.
    NoBinary,
    /// Ceph answers (or was asked).
    Present,
}

/// One health check (`health.checks.<CODE>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// Code, e.g. `OSDMAP_FLAGS`, `PG_DEGRADED`.
    pub code: String,
    /// `HEALTH_WARN` or `HEALTH_ERR`.
    pub severity: String,
    /// `summary.message`.
    pub message: String,
}

/// `ceph status -f json`, the parts pvefleet reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CephStatus {
    /// `HEALTH_OK`, `HEALTH_WARN`, `HEALTH_ERR`.
    pub health: String,
    /// Health checks.
    pub checks: Vec<HealthCheck>,
    /// `pgmap.num_pgs`.
    pub num_pgs: u64,
    /// `pgmap.pgs_by_state`.
    pub pgs_by_state: Vec<(String, u64)>,
    /// `mgrmap.available`: a mgr is active (`None` when the output does not say).
    pub mgr_available: Option<bool>,
}

impl CephStatus {
    /// The PG statistics are known: the mgr reports them (DOMAIN.md §12: with no active mgr,
    /// `ceph status` has `num_pgs` 0 and an empty `pgs_by_state`, which says nothing about the
    /// PGs' health). Zero known PGs is unknown, never "all clean".
    /// With MGR_DOWN the monitors still serve the last report a mgr sent (MgrStatMonitor keeps
    /// its digest), which may read `active+clean` for PGs that are degraded now: also unknown.
    /// Ceph 16 (checked on the lab's real daemons): a cluster whose mgrs are all stopped keeps
    /// serving the last digest with no MGR_DOWN for a while (a young cluster raises none at all),
    /// but `mgrmap.available` is false at once: that too makes the statistics unknown.
    pub fn pg_stats_known(&self) -> bool {
        self.mgr_available != Some(false)
            && self.num_pgs > 0
            && !self.pgs_by_state.is_empty()
            && !self.checks.iter().any(|c| c.code == "MGR_DOWN")
    }

    /// Every PG `active+clean` (the only state, its count the total), and PGs are known.
    pub fn all_clean(&self) -> bool {
        self.pg_stats_known()
            && self.pgs_by_state.iter().all(|(s, _)| s == "active+clean")
            && self.pgs_by_state.iter().map(|(_, c)| c).sum::<u64>() == self.num_pgs
    }

    /// How many PGs are `active+clean`, when the statistics are known (the live display's
    /// "96/128 active+clean"; unknown is not zero).
    pub fn clean_pgs(&self) -> Option<u64> {
        self.pg_stats_known().then(|| {
            self.pgs_by_state
                .iter()
                .filter(|(s, _)| s == "active+clean")
                .map(|(_, c)| c)
                .sum()
        })
    }

    /// PGs whose data is unavailable: not active, or `stale` (no OSD has reported them to the
    /// monitors; Ceph raises PG_AVAILABILITY for both), whatever else they say
    /// (`stale+active+clean` included).
    pub fn inactive_pgs(&self) -> u64 {
        self.pgs_by_state
            .iter()
            .filter(|(s, _)| {
                let mut parts = s.split('+');
                !s.split('+').any(|p| p == "active") || parts.any(|p| p == "stale")
            })
            .map(|(_, c)| c)
            .sum()
    }

    /// Health checks other than those in `ignore` (codes).
    pub fn checks_except(&self, ignore: &[&str]) -> Vec<&HealthCheck> {
        self.checks
            .iter()
            .filter(|c| !ignore.contains(&c.code.as_str()))
            .collect()
    }
}

fn perr(message: impl Into<String>) -> ParseError {
    ParseError {
        probe: NAME,
        message: message.into(),
    }
}

/// Parse `ceph status -f json`.
pub fn parse_status(json: &str) -> Result<CephStatus, ParseError> {
    let v: serde_json::Value = serde_json::from_str(json.trim())
        .map_err(|e| perr(format!("ceph status is not JSON: {e}")))?;
    let health = v["health"]["status"]
        .as_str()
        .ok_or_else(|| perr("ceph status: no health.status"))?
        .to_string();
    let mut checks: Vec<HealthCheck> = v["health"]["checks"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(code, c)| HealthCheck {
                    code: code.clone(),
                    severity: c["severity"].as_str().unwrap_or("").to_string(),
                    message: c["summary"]["message"].as_str().unwrap_or("").to_string(),
                })
                .collect()
        })
        .unwrap_or_default();
    checks.sort_by(|a, b| a.code.cmp(&b.code));
    let num_pgs = v["pgmap"]["num_pgs"].as_u64().unwrap_or(0);
    let pgs_by_state = v["pgmap"]["pgs_by_state"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| Some((s["state_name"].as_str()?.to_string(), s["count"].as_u64()?)))
                .collect()
        })
        .unwrap_or_default();
    Ok(CephStatus {
        health,
        checks,
        num_pgs,
        pgs_by_state,
        mgr_available: v["mgrmap"]["available"].as_bool(),
    })
}

/// One OSD in `ceph osd tree -f json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Osd {
    /// Id.
    pub id: i64,
    /// Its host bucket.
    pub host: String,
    /// `status` is `up`.
    pub up: bool,
}

/// Parse `ceph osd tree -f json`: OSDs with their host (from the host buckets' children).
pub fn parse_osd_tree(json: &str) -> Result<Vec<Osd>, ParseError> {
    let v: serde_json::Value = serde_json::from_str(json.trim())
        .map_err(|e| perr(format!("ceph osd tree is not JSON: {e}")))?;
    let nodes = v["nodes"]
        .as_array()
        .ok_or_else(|| perr("ceph osd tree: no nodes"))?;
    let mut out = Vec::new();
    for host in nodes.iter().filter(|n| n["type"] == "host") {
        let hname = host["name"].as_str().unwrap_or("").to_string();
        for child in host["children"].as_array().into_iter().flatten() {
            let Some(id) = child.as_i64() else { continue };
            let osd = nodes.iter().find(|n| n["id"].as_i64() == Some(id));
            out.push(Osd {
                id,
                host: hname.clone(),
                up: osd.is_some_and(|o| o["status"] == "up"),
            });
        }
    }
    out.sort_by_key(|o| o.id);
    Ok(out)
}

/// `flags` of `ceph osd dump -f json` (`noout,sortbitwise,...`).
pub fn parse_flags(json: &str) -> Vec<String> {
    serde_json::from_str::<serde_json::Value>(json.trim())
        .ok()
        .and_then(|v| v["flags"].as_str().map(str::to_string))
        .map(|f| {
            f.split(',')
                .filter(|x| !x.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// What the probe found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CephFacts {
    /// Whether Ceph is there.
    pub presence: Presence,
    /// Status, when Ceph answered.
    pub status: Option<CephStatus>,
    /// Why it could not be read (unknown state).
    pub error: Option<String>,
    /// OSDs.
    pub osds: Vec<Osd>,
    /// Cluster flags (`noout` ...), from `ceph osd dump`.
    pub flags: Vec<String>,
}

/// Parse the snippet's output.
pub fn parse(text: &str) -> Result<CephFacts, ParseError> {
    let presence = match marker(text, "ceph") {
        Some("none") => Presence::None,
        Some("nobinary") => Presence::NoBinary,
        Some("present") => Presence::Present,
        _ => return Err(perr("output cut short (no @@ceph marker)")),
    };
    let mut f = CephFacts {
        presence,
        status: None,
        error: None,
        osds: Vec::new(),
        flags: Vec::new(),
    };
    if presence != Presence::Present {
        return Ok(f);
    }
    let status_text = sub(text, "ceph_status").unwrap_or("");
    match (marker(text, "ceph_status_rc"), parse_status(status_text)) {
        (Some("0"), Ok(s)) => f.status = Some(s),
        (rc, Err(_)) => {
            f.error = Some(format!(
                "ceph status failed (exit {}): {}",
                rc.unwrap_or("?"),
                crate::sanitize::first_line(status_text, 120)
            ))
        }
        (rc, Ok(_)) => f.error = Some(format!("ceph status exited {}", rc.unwrap_or("?"))),
    }
    f.osds = parse_osd_tree(sub(text, "ceph_osd_tree").unwrap_or("")).unwrap_or_default();
    f.flags = parse_flags(sub(text, "ceph_osd_dump").unwrap_or(""));
    Ok(f)
}

/// Flags that stop Ceph from healing or rebalancing when left set.
const MAINTENANCE_FLAGS: [&str; 6] = [
    "noout",
    "norecover",
    "nobackfill",
    "norebalance",
    "nodown",
    "pause",
];

/// Grade: `ceph.health`, `ceph.osds`, `ceph.pgs`, `ceph.flags`.
pub fn grade(f: &CephFacts, _t: &Thresholds) -> Vec<Finding> {
    match f.presence {
        Presence::None => {
            return vec![Finding::new(
                "ceph.health",
                Grade::Skip,
                "no Ceph on this cluster (no /etc/pve/ceph.conf)",
            )]
        }
        Presence::NoBinary => {
            return vec![Finding::new(
                "ceph.health",
                Grade::Fail,
                "/etc/pve/ceph.conf exists but the ceph command is not installed: Ceph's state is unknown",
            )
            .fix("apt-get install ceph-common (or pveceph install), then check `ceph status`")]
        }
        Presence::Present => {}
    }
    let Some(s) = &f.status else {
        return vec![Finding::new(
            "ceph.health",
            Grade::Fail,
            format!(
                "Ceph's state is unknown: {}",
                f.error.as_deref().unwrap_or("no answer")
            ),
        )
        .fix("check the monitors: `ceph -s`, `systemctl status ceph-mon@$(hostname)`")];
    };
    let mut out = Vec::new();
    let codes: Vec<String> = s
        .checks
        .iter()
        .map(|c| format!("{} ({})", c.code, c.message))
        .collect();
    out.push(match s.health.as_str() {
        "HEALTH_OK" => Finding::new("ceph.health", Grade::Pass, "HEALTH_OK"),
        "HEALTH_WARN" => Finding::new(
            "ceph.health",
            Grade::Warn,
            format!("HEALTH_WARN: {}", codes.join("; ")),
        )
        .fix("ceph health detail"),
        other => Finding::new(
            "ceph.health",
            Grade::Fail,
            format!("{other}: {}", codes.join("; ")),
        )
        .fix("ceph health detail"),
    });
    let down: Vec<String> = f
        .osds
        .iter()
        .filter(|o| !o.up)
        .map(|o| format!("osd.{} on {}", o.id, o.host))
        .collect();
    out.push(if down.is_empty() {
        Finding::new(
            "ceph.osds",
            Grade::Pass,
            format!("{} OSD(s) up", f.osds.len()),
        )
    } else {
        Finding::new(
            "ceph.osds",
            Grade::Fail,
            format!("down: {}", down.join(", ")),
        )
        .fix("systemctl status ceph-osd@ID on the OSD's node")
    });
    let states: Vec<String> = s
        .pgs_by_state
        .iter()
        .map(|(st, c)| format!("{c} {st}"))
        .collect();
    out.push(if s.all_clean() {
        Finding::new(
            "ceph.pgs",
            Grade::Pass,
            format!("{} PGs active+clean", s.num_pgs),
        )
    } else if !s.pg_stats_known() {
        Finding::new(
            "ceph.pgs",
            Grade::Fail,
            "PG state unknown: no PG statistics (no active mgr?)".to_string(),
        )
        .fix("ceph mgr stat; systemctl status ceph-mgr@NODE")
    } else if s.inactive_pgs() > 0 {
        Finding::new(
            "ceph.pgs",
            Grade::Fail,
            format!(
                "{} PG(s) inactive (data unavailable): {}",
                s.inactive_pgs(),
                states.join(", ")
            ),
        )
        .fix("ceph pg dump_stuck inactive")
    } else {
        Finding::new(
            "ceph.pgs",
            Grade::Warn,
            format!("not all clean: {}", states.join(", ")),
        )
    });
    let set: Vec<&String> = f
        .flags
        .iter()
        .filter(|x| MAINTENANCE_FLAGS.contains(&x.as_str()))
        .collect();
    let group = s.checks.iter().find(|c| c.code == "OSD_FLAGS");
    out.push(if set.is_empty() && group.is_none() {
        Finding::new("ceph.flags", Grade::Pass, "no maintenance flag set")
    } else {
        let mut what: Vec<String> = set.iter().map(|x| x.to_string()).collect();
        if let Some(g) = group {
            what.push(g.message.clone());
        }
        Finding::new(
            "ceph.flags",
            Grade::Warn,
            format!("set: {} (left over from maintenance?)", what.join("; ")),
        )
        .fix("ceph osd unset noout (or ceph osd unset-group noout HOST) once maintenance is over")
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // Shapes as documented by Ceph (`ceph status -f json`, `ceph osd tree -f json`) and used in
    // DOMAIN.md §9.
    const STATUS_NOOUT: &str = r#"{"fsid":"x","health":{"status":"HEALTH_WARN","checks":{"OSDMAP_FLAGS":{"severity":"HEALTH_WARN","summary":{"message":"noout flag(s) set","count":1},"muted":false}},"mutes":[]},"pgmap":{"pgs_by_state":[{"state_name":"active+clean","count":129}],"num_pgs":129,"num_pools":2}}"#;
    const STATUS_DEGRADED: &str = r#"{"health":{"status":"HEALTH_WARN","checks":{"OSD_DOWN":{"severity":"HEALTH_WARN","summary":{"message":"2 osds down"}},"PG_DEGRADED":{"severity":"HEALTH_WARN","summary":{"message":"Degraded data redundancy"}}}},"pgmap":{"pgs_by_state":[{"state_name":"active+undersized+degraded","count":40},{"state_name":"active+clean","count":88}],"num_pgs":128}}"#;
    const TREE: &str = r#"{"nodes":[{"id":-1,"name":"default","type":"root","type_id":11,"children":[-5,-3]},{"id":-3,"name":"pve1","type":"host","type_id":1,"pool_weights":{},"children":[1,0]},{"id":0,"device_class":"ssd","name":"osd.0","type":"osd","type_id":0,"crush_weight":0.9,"depth":2,"exists":1,"status":"up","reweight":1,"primary_affinity":1},{"id":1,"name":"osd.1","type":"osd","type_id":0,"status":"up"},{"id":-5,"name":"pve2","type":"host","children":[2]},{"id":2,"name":"osd.2","type":"osd","type_id":0,"status":"down"}],"stray":[]}"#;

    #[test]
    fn status_health_checks_and_pgs() {
        let s = parse_status(STATUS_NOOUT).unwrap();
        assert_eq!(s.health, "HEALTH_WARN");
        assert_eq!(s.checks[0].code, "OSDMAP_FLAGS");
        assert!(s.all_clean());
        assert!(s.checks_except(&["OSDMAP_FLAGS"]).is_empty());
        let d = parse_status(STATUS_DEGRADED).unwrap();
        assert!(!d.all_clean());
        assert_eq!(d.inactive_pgs(), 0);
        assert_eq!(d.checks_except(&[]).len(), 2);
        assert!(parse_status("Error initializing cluster client").is_err());
    }

    // With no active mgr the monitors have no PG statistics: Ceph's MgrStatMonitor serves an
    // empty PGMapDigest (pgs_by_state [], num_pgs 0) and raises MGR_DOWN "no active mgr"
    // (DOMAIN.md §12; the layout of Pacific's `ceph status -f json`).
    const STATUS_NO_MGR: &str = r#"{"fsid":"x","health":{"status":"HEALTH_WARN","checks":{"MGR_DOWN":{"severity":"HEALTH_WARN","summary":{"message":"no active mgr","count":1},"muted":false},"OSDMAP_FLAGS":{"severity":"HEALTH_WARN","summary":{"message":"noout flag(s) set","count":1},"muted":false}},"mutes":[]},"pgmap":{"pgs_by_state":[],"num_pgs":0,"num_pools":0,"num_objects":0,"data_bytes":0,"bytes_used":0,"bytes_avail":0,"bytes_total":0}}"#;
    // PGs whose OSDs stopped reporting keep their last state with `stale` in front: their data
    // is unavailable (PG_AVAILABILITY), whatever the rest says.
    const STATUS_STALE: &str = r#"{"health":{"status":"HEALTH_WARN","checks":{"PG_AVAILABILITY":{"severity":"HEALTH_WARN","summary":{"message":"Reduced data availability: 4 pgs stale"}}}},"pgmap":{"pgs_by_state":[{"state_name":"active+clean","count":124},{"state_name":"stale+active+clean","count":4}],"num_pgs":128}}"#;

    #[test]
    fn zero_known_pgs_are_unknown_never_clean() {
        let s = parse_status(STATUS_NO_MGR).unwrap();
        assert!(!s.pg_stats_known());
        assert!(!s.all_clean(), "no mgr: nothing is known of the PGs");
        assert!(s.checks.iter().any(|c| c.code == "MGR_DOWN"));
        assert_eq!(s.clean_pgs(), None, "the display says unknown, not 0 clean");
    }

    #[test]
    fn the_clean_count_is_the_active_clean_pgs_only() {
        assert_eq!(parse_status(STATUS_DEGRADED).unwrap().clean_pgs(), Some(88));
        assert_eq!(parse_status(STATUS_STALE).unwrap().clean_pgs(), Some(124));
        assert_eq!(parse_status(STATUS_NOOUT).unwrap().clean_pgs(), Some(129));
    }

    #[test]
    fn a_digest_without_an_available_mgr_is_unknown_even_without_mgr_down() {
        // Ceph 16 with every mgr stopped: the last digest (all clean) is still served and no
        // MGR_DOWN is raised yet, but mgrmap.available is false.
        let json = STATUS_NOOUT.replace(
            "\"pgmap\"",
            "\"mgrmap\":{\"available\":false,\"num_standbys\":0,\"modules\":[\"iostat\"],\"services\":{}},\"pgmap\"",
        );
        let s = parse_status(&json).unwrap();
        assert_eq!(s.mgr_available, Some(false));
        assert!(!s.pg_stats_known());
        assert!(!s.all_clean());
        let s = parse_status(&json.replace("\"available\":false", "\"available\":true")).unwrap();
        assert!(s.all_clean(), "with an active mgr the same digest is clean");
    }

    #[test]
    fn a_stale_digest_under_mgr_down_is_unknown_too() {
        // The mgr stopped after reporting: the monitors keep its last digest (all clean).
        let s = parse_status(&STATUS_NOOUT.replace(
            "\"OSDMAP_FLAGS\"",
            "\"MGR_DOWN\":{\"severity\":\"HEALTH_WARN\",\"summary\":{\"message\":\"no active mgr\"}},\"OSDMAP_FLAGS\"",
        ))
        .unwrap();
        assert_eq!(s.num_pgs, 129);
        assert!(!s.pg_stats_known());
        assert!(!s.all_clean());
    }

    #[test]
    fn stale_pgs_are_data_unavailable() {
        let s = parse_status(STATUS_STALE).unwrap();
        assert!(!s.all_clean());
        assert_eq!(s.inactive_pgs(), 4, "stale+active+clean is not available");
    }

    #[test]
    fn osd_tree_gives_each_osd_its_host() {
        let o = parse_osd_tree(TREE).unwrap();
        assert_eq!(
            o,
            vec![
                Osd {
                    id: 0,
                    host: "pve1".into(),
                    up: true
                },
                Osd {
                    id: 1,
                    host: "pve1".into(),
                    up: true
                },
                Osd {
                    id: 2,
                    host: "pve2".into(),
                    up: false
                },
            ]
        );
    }

    #[test]
    fn no_ceph_is_skipped_unknown_ceph_fails() {
        let none = parse("@@ceph none\n").unwrap();
        assert_eq!(grade(&none, &Thresholds::default())[0].grade, Grade::Skip);
        let nob = parse("@@ceph nobinary\n").unwrap();
        assert_eq!(grade(&nob, &Thresholds::default())[0].grade, Grade::Fail);
        let broken = parse("@@ceph present\n@@sub ceph_status\n[errno 110] RADOS timed out (error connecting to the cluster)\n\n@@ceph_status_rc 1\n@@sub ceph_osd_tree\n\n@@sub ceph_osd_dump\n\n").unwrap();
        let g = grade(&broken, &Thresholds::default());
        assert_eq!(g[0].grade, Grade::Fail);
        assert!(g[0].detail.contains("unknown"), "{}", g[0].detail);
        assert!(parse("").is_err());
    }

    #[test]
    fn flags_osds_and_pgs_are_graded() {
        let text = format!(
            "@@ceph present\n@@sub ceph_status\n{STATUS_DEGRADED}\n@@ceph_status_rc 0\n@@sub ceph_osd_tree\n{TREE}\n@@sub ceph_osd_dump\n{{\"flags\":\"noout,sortbitwise,recovery_deletes\"}}\n"
        );
        let f = parse(&text).unwrap();
        let g = grade(&f, &Thresholds::default());
        let by = |c: &str| g.iter().find(|x| x.check == c).unwrap();
        assert_eq!(by("ceph.health").grade, Grade::Warn);
        assert_eq!(by("ceph.osds").grade, Grade::Fail);
        assert!(by("ceph.osds").detail.contains("osd.2 on pve2"));
        assert_eq!(by("ceph.pgs").grade, Grade::Warn);
        assert_eq!(by("ceph.flags").grade, Grade::Warn);
        assert!(by("ceph.flags").detail.contains("noout"));
    }
}
