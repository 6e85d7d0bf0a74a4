//! `rrd`: RRD errors and their causes (DOMAIN.md §1): journal lines of pmxcfs (priority notice,
//! so `-p err` misses them) and rrdcached, 0-byte and future-dated files, free space.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{marker, missing, sub, Finding, Grade, ParseError, Thresholds, FIX_RRD};

/// Probe name.
pub const NAME: &str = "rrd";

/// The snippet. PVE <= 8 keeps `pve2-*` directories, PVE 9 `pve-*-9.0` (and the old ones).
pub const SNIPPET: &str = r#"db=/var/lib/rrdcached/db
now=$(date +%s)
echo "@@now $now"
if [ ! -d "$db" ]; then
  echo "@@missing $db"
else
  echo "@@sub layout"
  ls "$db" 2>/dev/null
  echo "@@sub zero"
  find "$db" -type f -size 0 2>/dev/null | head -n 200
  echo "@@sub future_mtime"
  find "$db" -type f -newermt "@$((now + 60))" 2>/dev/null | head -n 200
  echo "@@sub last_update"
  if command -v rrdtool >/dev/null 2>&1; then
    find "$db" -type f -size +0 2>/dev/null | head -n 500 | while read -r f; do
      printf '%s %s\n' "$(rrdtool last "$f" 2>/dev/null || echo ERR)" "$f"
    done
  else
    echo "@@missing rrdtool"
  fi
fi
echo "@@sub df"
df -P /var/lib/rrdcached 2>/dev/null | tail -n 1
echo "@@sub journal"
journalctl -u pve-cluster -u rrdcached --since -1h -o short-iso --no-pager -q 2>/dev/null \
  | grep -E 'RRD|rrd|Could not read' | tail -n 400"#;

/// Kinds of RRD errors in the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RrdErrorKind {
    /// `mmaping file '<f>': Invalid argument`: a 0-byte file.
    ZeroByte,
    /// `'<f>' is not an RRD file`: garbage content.
    NotRrd,
    /// `'<f>' is too small`: truncated.
    TooSmall,
    /// `illegal attempt to update using time X when last update time is Y`: future last_update.
    IllegalUpdate,
    /// rrdcached's own errors (`handle_request_update: Could not read RRD file.`) and
    /// pmxcfs' `RRDC update error <file>: -1`.
    Daemon,
}

impl RrdErrorKind {
    fn describe(self) -> &'static str {
        match self {
            RrdErrorKind::ZeroByte => "0-byte file",
            RrdErrorKind::NotRrd => "not an RRD file",
            RrdErrorKind::TooSmall => "truncated file",
            RrdErrorKind::IllegalUpdate => "update time before last update (future-dated file)",
            RrdErrorKind::Daemon => "rrdcached error",
        }
    }
}

/// One journal line, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RrdLine {
    /// Kind.
    pub kind: RrdErrorKind,
    /// The affected file, when the line names one.
    pub file: Option<String>,
}

/// Classify one journal line (any output format); `None` for lines that are not RRD errors.
pub fn classify(line: &str) -> Option<RrdLine> {
    let file_after = |key: &str| -> Option<String> {
        let i = line.find(key)? + key.len();
        let rest = line[i..].trim_start();
        let f: String = rest
            .chars()
            .take_while(|c| !c.is_whitespace() && *c != ':' && *c != '\'')
            .collect();
        (!f.is_empty()).then_some(f)
    };
    if line.contains("mmaping file") && line.contains("Invalid argument") {
        Some(RrdLine {
            kind: RrdErrorKind::ZeroByte,
            file: file_after("RRD update error"),
        })
    } else if line.contains("is not an RRD file") {
        Some(RrdLine {
            kind: RrdErrorKind::NotRrd,
            file: file_after("RRD update error"),
        })
    } else if line.contains("is too small") {
        Some(RrdLine {
            kind: RrdErrorKind::TooSmall,
            file: file_after("RRD update error"),
        })
    } else if line.contains("illegal attempt to update using time") {
        Some(RrdLine {
            kind: RrdErrorKind::IllegalUpdate,
            file: file_after("RRD update error"),
        })
    } else if line.contains("RRDC update error") {
        Some(RrdLine {
            kind: RrdErrorKind::Daemon,
            file: file_after("RRDC update error"),
        })
    } else if line.contains("Could not read RRD file")
        || (line.contains("rrdcached[") && line.contains("rror"))
    {
        Some(RrdLine {
            kind: RrdErrorKind::Daemon,
            file: None,
        })
    } else {
        None
    }
}

/// Journal errors of one kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KindSummary {
    /// Lines seen.
    pub lines: usize,
    /// Files named, sorted, unique.
    pub files: Vec<String>,
}

/// What the probe found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RrdFacts {
    /// The node's clock.
    pub now: Option<i64>,
    /// Directories under the db (`pve2-node`, `pve-node-9.0` ...).
    pub layout: Vec<String>,
    /// Whether the db directory exists.
    pub db_present: bool,
    /// 0-byte files.
    pub zero_byte: Vec<String>,
    /// Files whose mtime is in the future.
    pub future_mtime: Vec<String>,
    /// Files whose last_update (rrdtool last) is in the future: (file, last_update).
    pub future_last_update: Vec<(String, i64)>,
    /// Whether last_update could be checked (rrdtool installed).
    pub last_update_checked: bool,
    /// Journal errors in the last hour by kind.
    pub journal: BTreeMap<RrdErrorKind, KindSummary>,
    /// Free space of the file system holding the db: (used %, available KiB).
    pub disk: Option<(u8, u64)>,
}

/// Parse the snippet's output.
pub fn parse(text: &str) -> Result<RrdFacts, ParseError> {
    let lines = |name: &str| -> Vec<String> {
        sub(text, name)
            .unwrap_or("")
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with("@@"))
            .map(str::to_string)
            .collect()
    };
    let now: Option<i64> = marker(text, "now").and_then(|n| n.parse().ok());
    let missing = missing(text);
    let mut future_last_update = Vec::new();
    for l in lines("last_update") {
        let Some((lu, file)) = l.split_once(' ') else {
            continue;
        };
        if let (Ok(lu), Some(now)) = (lu.parse::<i64>(), now) {
            if lu > now + 60 {
                future_last_update.push((file.to_string(), lu));
            }
        }
    }
    let mut journal: BTreeMap<RrdErrorKind, KindSummary> = BTreeMap::new();
    for l in lines("journal") {
        if let Some(c) = classify(&l) {
            let e = journal.entry(c.kind).or_default();
            e.lines += 1;
            if let Some(f) = c.file {
                if !e.files.contains(&f) {
                    e.files.push(f);
                }
            }
        }
    }
    for s in journal.values_mut() {
        s.files.sort();
    }
    let disk = lines("df").first().and_then(|l| {
        // Filesystem 1024-blocks Used Available Capacity Mounted-on
        let f: Vec<&str> = l.split_whitespace().collect();
        let avail = f.get(3)?.parse().ok()?;
        let pct = f.get(4)?.trim_end_matches('%').parse().ok()?;
        Some((pct, avail))
    });
    Ok(RrdFacts {
        now,
        layout: lines("layout"),
        db_present: !missing.iter().any(|m| m.contains("rrdcached/db")),
        zero_byte: lines("zero"),
        future_mtime: lines("future_mtime"),
        future_last_update,
        last_update_checked: !missing.contains(&"rrdtool"),
        journal,
        disk,
    })
}

fn list(files: &[String]) -> String {
    let shown: Vec<&str> = files.iter().take(3).map(String::as_str).collect();
    if files.len() > 3 {
        format!("{} (+{} more)", shown.join(", "), files.len() - 3)
    } else {
        shown.join(", ")
    }
}

/// Grade: `rrd.zero_byte`, `rrd.future`, `rrd.journal_errors`, `rrd.disk`.
pub fn grade(f: &RrdFacts, t: &Thresholds) -> Vec<Finding> {
    if !f.db_present {
        return vec![Finding::new(
            "rrd.db",
            Grade::Skip,
            "no /var/lib/rrdcached/db (not a Proxmox VE node?)",
        )];
    }
    let mut out = Vec::new();
    out.push(if f.zero_byte.is_empty() {
        Finding::new("rrd.zero_byte", Grade::Pass, "no 0-byte RRD files")
    } else {
        Finding::new(
            "rrd.zero_byte",
            Grade::Fail,
            format!(
                "{} 0-byte RRD file(s): {}",
                f.zero_byte.len(),
                list(&f.zero_byte)
            ),
        )
        .fix(FIX_RRD)
    });
    let mut future: Vec<String> = f.future_mtime.clone();
    for (file, _) in &f.future_last_update {
        if !future.contains(file) {
            future.push(file.clone());
        }
    }
    out.push(if !future.is_empty() {
        Finding::new(
            "rrd.future",
            Grade::Fail,
            format!(
                "{} RRD file(s) dated in the future: {}",
                future.len(),
                list(&future)
            ),
        )
        .fix(FIX_RRD)
    } else if f.last_update_checked {
        Finding::new("rrd.future", Grade::Pass, "no future-dated RRD files")
    } else {
        Finding::new(
            "rrd.future",
            Grade::Pass,
            "no future mtimes (last_update not read: rrdtool not installed)",
        )
    });
    let errors: usize = f.journal.values().map(|k| k.lines).sum();
    out.push(if errors == 0 {
        Finding::new(
            "rrd.journal_errors",
            Grade::Pass,
            "no RRD errors in the journal in the last hour",
        )
    } else {
        let parts: Vec<String> = f
            .journal
            .iter()
            .map(|(k, s)| {
                if s.files.is_empty() {
                    format!("{} x {}", s.lines, k.describe())
                } else {
                    format!("{} x {} ({})", s.lines, k.describe(), list(&s.files))
                }
            })
            .collect();
        Finding::new(
            "rrd.journal_errors",
            Grade::Fail,
            format!(
                "{errors} RRD error lines in the last hour: {}",
                parts.join("; ")
            ),
        )
        .fix(FIX_RRD)
    });
    if let Some((pct, avail)) = f.disk {
        let detail = format!("{pct}% used, {} MiB free", avail / 1024);
        out.push(if pct >= t.disk_fail_pct {
            Finding::new("rrd.disk", Grade::Fail, detail)
                .fix("free space on the file system of /var/lib/rrdcached")
        } else if pct >= t.disk_warn_pct {
            Finding::new("rrd.disk", Grade::Warn, detail)
                .fix("free space on the file system of /var/lib/rrdcached")
        } else {
            Finding::new("rrd.disk", Grade::Pass, detail)
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // The three lines DOMAIN.md §1 quotes from a real node, in short format.
    const REAL: &str = "Dec 28 11:21:56 pm-81 rrdcached[4513]: handle_request_update: Could not read RRD file.
Dec 28 11:21:56 pm-81 pmxcfs[4527]: [status] notice: RRDC update error /var/lib/rrdcached/db/pve2-vm/85235: -1
Dec 28 11:21:56 pm-81 pmxcfs[4527]: [status] notice: RRD update error /var/lib/rrdcached/db/pve2-vm/85235: mmaping file '/var/lib/rrdcached/db/pve2-vm/85235': Invalid argument
";

    #[test]
    fn journal_lines_are_classified_with_their_files() {
        let kinds: Vec<_> = REAL.lines().filter_map(classify).collect();
        assert_eq!(
            kinds[0],
            RrdLine {
                kind: RrdErrorKind::Daemon,
                file: None
            }
        );
        assert_eq!(
            kinds[1].file.as_deref(),
            Some("/var/lib/rrdcached/db/pve2-vm/85235")
        );
        assert_eq!(kinds[2].kind, RrdErrorKind::ZeroByte);
        assert_eq!(
            kinds[2].file.as_deref(),
            Some("/var/lib/rrdcached/db/pve2-vm/85235")
        );
        let future = "2024-10-19T11:34:38+02:00 pve1 pmxcfs[895]: [status] notice: RRD update error /var/lib/rrdcached/db/pve2-node/pve2: /var/lib/rrdcached/db/pve2-node/pve2: illegal attempt to update using time 1729330478 when last update time is 1729334000 (minimum one second step)";
        let c = classify(future).unwrap();
        assert_eq!(c.kind, RrdErrorKind::IllegalUpdate);
        assert_eq!(
            c.file.as_deref(),
            Some("/var/lib/rrdcached/db/pve2-node/pve2")
        );
        assert!(classify("Dec 28 pve1 pmxcfs[1]: [status] notice: received log").is_none());
    }

    #[test]
    fn a_broken_node_fails_three_checks() {
        let out = format!(
            "@@now 1735385000\n@@sub layout\npve2-node\npve2-vm\n@@sub zero\n/var/lib/rrdcached/db/pve2-vm/85235\n\
             @@sub future_mtime\n@@sub last_update\n@@missing rrdtool\n@@sub df\n/dev/mapper/pve-root 98559220 9212340 84296568 10% /\n@@sub journal\n{REAL}"
        );
        let f = parse(&out).unwrap();
        assert_eq!(f.zero_byte, vec!["/var/lib/rrdcached/db/pve2-vm/85235"]);
        assert_eq!(f.disk, Some((10, 84296568)));
        assert!(!f.last_update_checked);
        assert_eq!(f.journal[&RrdErrorKind::Daemon].lines, 2);
        let g = grade(&f, &Thresholds::default());
        let by = |c: &str| g.iter().find(|x| x.check == c).unwrap().grade;
        assert_eq!(by("rrd.zero_byte"), Grade::Fail);
        assert_eq!(by("rrd.journal_errors"), Grade::Fail);
        assert_eq!(by("rrd.future"), Grade::Pass);
        assert_eq!(by("rrd.disk"), Grade::Pass);
        assert_eq!(g[0].remediation.as_deref(), Some(FIX_RRD));
    }

    #[test]
    fn future_last_update_and_a_clean_node() {
        let out = "@@now 1000\n@@sub zero\n@@sub future_mtime\n@@sub last_update\n5000 /db/pve2-node/pve1\n990 /db/pve2-node/pve2\n@@sub df\nx 1 1 1 95% /\n@@sub journal\n";
        let f = parse(out).unwrap();
        assert_eq!(
            f.future_last_update,
            vec![("/db/pve2-node/pve1".to_string(), 5000)]
        );
        let g = grade(&f, &Thresholds::default());
        assert_eq!(
            g.iter().find(|x| x.check == "rrd.future").unwrap().grade,
            Grade::Fail
        );
        assert_eq!(
            g.iter().find(|x| x.check == "rrd.disk").unwrap().grade,
            Grade::Warn
        );
        let clean = parse("@@now 1\n@@sub zero\n@@sub journal\n").unwrap();
        assert!(grade(&clean, &Thresholds::default())
            .iter()
            .all(|x| x.grade == Grade::Pass));
        let none = parse("@@now 1\n@@missing /var/lib/rrdcached/db\n").unwrap();
        assert_eq!(grade(&none, &Thresholds::default())[0].grade, Grade::Skip);
    }

    #[test]
    fn real_journal_lines_of_several_releases() {
        let journal = |file: &str| {
            let text = crate::probe::fixture(file);
            let out = format!("@@now 1735385000\n@@sub zero\n@@sub journal\n{text}");
            parse(&out).unwrap().journal
        };
        let j = journal("journal-rrd/pve8-2024-rsyslog-zero-byte-storage.txt");
        assert_eq!(
            j[&RrdErrorKind::ZeroByte].files,
            vec!["/var/lib/rrdcached/db/pve2-storage/pve1/local"]
        );
        assert_eq!(
            j[&RrdErrorKind::Daemon].lines,
            2,
            "rrdcached and RRDC lines"
        );
        let j = journal("journal-rrd/pve8-2023-illegal-update-node.txt");
        assert_eq!(
            j[&RrdErrorKind::IllegalUpdate].files,
            vec!["/var/lib/rrdcached/db/pve2-node/pve"]
        );
        let j = journal("journal-rrd/pve6-2020-illegal-update-redacted.txt");
        assert_eq!(j[&RrdErrorKind::IllegalUpdate].lines, 1);
        assert_eq!(
            j[&RrdErrorKind::Daemon].files,
            vec!["/var/lib/rrdcached/db/pve2-node/{SERVERNAME}"]
        );
        assert_eq!(j.len(), 2, "the pvestatd line is not an RRD error");
    }
}
