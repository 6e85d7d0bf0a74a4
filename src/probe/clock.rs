//! `clock`: the node's time and its NTP daemon (DOMAIN.md §2).
//!
//! The offset itself is measured by the controller (several tiny execs of [`CLOCK_SAMPLE_CMD`],
//! lowest round trip kept, NTP's rule), see [`offset_from_samples`] and [`grade_offset`]. The
//! snippet reports the NTP daemon's view: `timedatectl show` and `chronyc tracking`.

use serde::{Deserialize, Serialize};

use super::{marker, missing, sub, Finding, Grade, ParseError, Thresholds, SYNC_CLOCK};

/// Probe name.
pub const NAME: &str = "clock";

/// The command sampled by the controller: the node's clock with nanoseconds.
pub const CLOCK_SAMPLE_CMD: &str = "date +%s.%N";

/// The snippet.
pub const SNIPPET: &str = r#"echo "@@epoch $(date +%s.%N)"
if command -v timedatectl >/dev/null 2>&1; then
  echo "@@ntp_sync $(timedatectl show -p NTPSynchronized --value 2>/dev/null)"
else
  echo "@@missing timedatectl"
fi
echo "@@chrony $(systemctl is-active chrony 2>/dev/null)"
echo "@@timesyncd $(systemctl is-active systemd-timesyncd 2>/dev/null)"
if command -v chronyc >/dev/null 2>&1; then
  echo "@@sub tracking"
  chronyc tracking 2>&1
else
  echo "@@missing chronyc"
fi"#;

/// The fields of `chronyc tracking` that matter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tracking {
    /// `Reference ID` (hex id and name).
    pub reference: String,
    /// `Stratum`.
    pub stratum: u32,
    /// `System time`, signed seconds: positive when the system clock is fast (ahead) of NTP time.
    pub system_time_s: f64,
    /// `Leap status` (`Normal`, `Insert second`, `Delete second`, `Not synchronised`).
    pub leap_status: String,
}

/// Parse `chronyc tracking`.
pub fn parse_tracking(text: &str) -> Result<Tracking, ParseError> {
    let err = |m: String| ParseError {
        probe: NAME,
        message: m,
    };
    if text.contains("506 Cannot talk to daemon") {
        return Err(err(
            "chronyd is not running (506 Cannot talk to daemon)".into()
        ));
    }
    let field = |key: &str| -> Option<&str> {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == key).then(|| v.trim())
        })
    };
    let reference = field("Reference ID")
        .ok_or_else(|| err("chronyc tracking: no `Reference ID` line".into()))?;
    let stratum = field("Stratum")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| err("chronyc tracking: no numeric `Stratum`".into()))?;
    let sys = field("System time")
        .ok_or_else(|| err("chronyc tracking: no `System time` line".into()))?;
    // "0.000006523 seconds slow of NTP time" / "... fast of NTP time"
    let mut words = sys.split_whitespace();
    let value: f64 = words
        .next()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| err(format!("chronyc tracking: cannot read System time {sys:?}")))?;
    let signed = if sys.contains(" slow ") {
        -value
    } else if sys.contains(" fast ") {
        value
    } else {
        return Err(err(format!(
            "chronyc tracking: System time is neither fast nor slow: {sys:?}"
        )));
    };
    Ok(Tracking {
        reference: reference.to_string(),
        stratum,
        system_time_s: signed,
        leap_status: field("Leap status").unwrap_or("").to_string(),
    })
}

/// What the node says about its time keeping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClockFacts {
    /// The node's clock when the snippet ran (epoch seconds).
    pub epoch: Option<f64>,
    /// `timedatectl show -p NTPSynchronized`.
    pub ntp_synchronized: Option<bool>,
    /// Which NTP daemon is active: `chrony`, `systemd-timesyncd` or `none`.
    pub daemon: String,
    /// `chronyc tracking`, when chrony answers.
    pub tracking: Option<Tracking>,
    /// Why `chronyc tracking` could not be read.
    pub tracking_error: Option<String>,
    /// Tools not installed.
    pub missing: Vec<String>,
}

/// Parse the snippet's output.
pub fn parse(text: &str) -> Result<ClockFacts, ParseError> {
    let daemon = if marker(text, "chrony") == Some("active") {
        "chrony"
    } else if marker(text, "timesyncd") == Some("active") {
        "systemd-timesyncd"
    } else {
        "none"
    };
    let (tracking, tracking_error) = match sub(text, "tracking") {
        Some(t) if daemon == "chrony" || !t.trim().is_empty() => match parse_tracking(t) {
            Ok(t) => (Some(t), None),
            Err(e) => (None, Some(e.message)),
        },
        _ => (None, None),
    };
    Ok(ClockFacts {
        epoch: marker(text, "epoch").and_then(|e| e.parse().ok()),
        ntp_synchronized: marker(text, "ntp_sync").and_then(|v| match v {
            "yes" => Some(true),
            "no" => Some(false),
            _ => None,
        }),
        daemon: daemon.to_string(),
        tracking,
        tracking_error,
        missing: missing(text).into_iter().map(str::to_string).collect(),
    })
}

/// NTP's rule over `(t_send, t_remote, t_recv)` samples (controller clock at send and receive,
/// node clock in between): keep the sample with the smallest round trip; offset =
/// t_remote - (t_send + t_recv) / 2, error bound = round trip / 2.
pub fn offset_from_samples(samples: &[(f64, f64, f64)]) -> (f64, f64) {
    let best = samples
        .iter()
        .min_by(|a, b| (a.2 - a.0).total_cmp(&(b.2 - b.0)))
        .expect("at least one sample");
    let (send, remote, recv) = *best;
    (remote - (send + recv) / 2.0, (recv - send).max(0.0) / 2.0)
}

/// `clock.offset`: the node's offset from the controller.
pub fn grade_offset(offset_s: f64, error_s: f64, t: &Thresholds) -> Finding {
    let dir = if offset_s >= 0.0 {
        "ahead of"
    } else {
        "behind"
    };
    let detail = format!(
        "{:+.3} s ({} the controller, ±{:.1} ms)",
        offset_s,
        dir,
        error_s * 1000.0
    );
    let abs = offset_s.abs();
    if abs > t.clock_ticket_s {
        Finding::new(
            "clock.offset",
            Grade::Fail,
            format!(
                "{detail}: beyond {:.0} s, API tickets between nodes are refused",
                t.clock_ticket_s
            ),
        )
        .fix(SYNC_CLOCK)
    } else if abs > t.clock_fail_s {
        Finding::new(
            "clock.offset",
            Grade::Fail,
            format!("{detail}: HA reports time drift above 2 s; RRD updates fail"),
        )
        .fix(SYNC_CLOCK)
    } else if abs > t.clock_warn_s {
        Finding::new("clock.offset", Grade::Warn, detail).fix(SYNC_CLOCK)
    } else {
        Finding::new("clock.offset", Grade::Pass, detail)
    }
}

impl Tracking {
    /// chronyd says it is synchronised to a source: leap status not `Not synchronised`, a
    /// reference id other than all zeros, a stratum from 1 to 15 (chrony's `tracking` report;
    /// stratum 0 and id `00000000` are what chronyd prints before any source was selected).
    pub fn synchronised(&self) -> bool {
        let id = self.reference.split_whitespace().next().unwrap_or("");
        self.leap_status != "Not synchronised"
            && !id.is_empty()
            && !id.chars().all(|c| c == '0')
            && (1..16).contains(&self.stratum)
    }

    fn describe(&self) -> String {
        format!(
            "stratum {}, reference {}, leap {}",
            self.stratum, self.reference, self.leap_status
        )
    }
}

/// `clock.ntp`: an NTP daemon is active and synchronised. `chronyc tracking` is enough to
/// grade on its own; `timedatectl` (which may say nothing: old systemd, an error, an empty
/// value) only adds a warning when it says "no".
pub fn grade(f: &ClockFacts, _t: &Thresholds) -> Vec<Finding> {
    let ntp = |g: Grade, d: String| Finding::new("clock.ntp", g, d);
    let finding = match (f.daemon.as_str(), &f.tracking, f.ntp_synchronized) {
        ("none", _, _) => ntp(
            Grade::Fail,
            "no NTP daemon active (neither chrony nor systemd-timesyncd)".into(),
        )
        .fix("systemctl enable --now chrony"),
        (_, Some(t), _) if !t.synchronised() => ntp(
            Grade::Warn,
            format!("chrony is not synchronised ({})", t.describe()),
        )
        .fix(SYNC_CLOCK),
        (d, _, Some(false)) => ntp(
            Grade::Warn,
            format!("{d} active but timedatectl says the clock is not synchronised"),
        )
        .fix(SYNC_CLOCK),
        ("chrony", None, _) => ntp(
            Grade::Warn,
            format!(
                "chrony active but its state cannot be read: {}",
                f.tracking_error
                    .as_deref()
                    .unwrap_or("chronyc tracking gave nothing")
            ),
        )
        .fix(SYNC_CLOCK),
        (d, Some(t), _) => ntp(Grade::Pass, format!("{d} synchronised, {}", t.describe())),
        (d, None, Some(true)) => ntp(Grade::Pass, format!("{d} synchronised (timedatectl)")),
        (d, None, None) => ntp(
            Grade::Warn,
            format!("{d} active but nothing says whether it is synchronised"),
        ),
    };
    vec![finding]
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::probe::fixture;

    #[test]
    fn tracking_from_real_captures() {
        let t = parse_tracking(&fixture("chronyc-tracking/stratum1-pps.txt")).unwrap();
        assert_eq!(t.reference, "50505300 (PPS)");
        assert_eq!(t.stratum, 1);
        assert!(
            (t.system_time_s - 0.000000072).abs() < 1e-12,
            "fast is positive"
        );
        assert_eq!(t.leap_status, "Normal");
        let t = parse_tracking(&fixture("chronyc-tracking/fedora-docs-slow.txt")).unwrap();
        assert!(
            (t.system_time_s + 0.000001501).abs() < 1e-12,
            "slow is negative"
        );
        assert_eq!(t.stratum, 3);
    }

    #[test]
    fn tracking_errors() {
        assert!(parse_tracking("506 Cannot talk to daemon\n")
            .unwrap_err()
            .message
            .contains("not running"));
        assert!(parse_tracking("").is_err());
        let truncated = "Reference ID    : 50505300 (PPS)\nStratum         : 1\n";
        assert!(parse_tracking(truncated)
            .unwrap_err()
            .message
            .contains("System time"));
    }

    #[test]
    fn ntp_rule_keeps_the_fastest_round_trip() {
        // Node 90 s ahead; the second sample has the smallest RTT (2 ms).
        let samples = [
            (100.0, 190.020, 100.030),
            (200.0, 290.001, 200.002),
            (300.0, 390.1, 300.2),
        ];
        let (off, err) = offset_from_samples(&samples);
        assert!((off - 90.0).abs() < 1e-9, "{off}");
        assert!((err - 0.001).abs() < 1e-9, "{err}");
    }

    #[test]
    fn offset_grades() {
        let t = Thresholds::default();
        assert_eq!(grade_offset(0.01, 0.001, &t).grade, Grade::Pass);
        assert_eq!(grade_offset(-0.9, 0.001, &t).grade, Grade::Warn);
        let f = grade_offset(90.02, 0.0004, &t);
        assert_eq!(f.grade, Grade::Fail);
        assert!(
            f.detail
                .starts_with("+90.020 s (ahead of the controller, ±0.4 ms)"),
            "{}",
            f.detail
        );
        assert!(grade_offset(-3600.0, 0.0, &t)
            .detail
            .contains("API tickets"));
    }

    #[test]
    fn snippet_output_parses_and_grades() {
        let out = format!(
            "@@epoch 1732453000.123\n@@ntp_sync yes\n@@chrony active\n@@timesyncd inactive\n@@sub tracking\n{}",
            fixture("chronyc-tracking/stratum1-pps.txt")
        );
        let f = parse(&out).unwrap();
        assert_eq!(f.daemon, "chrony");
        assert_eq!(f.ntp_synchronized, Some(true));
        assert_eq!(grade(&f, &Thresholds::default())[0].grade, Grade::Pass);
        let f =
            parse("@@ntp_sync no\n@@chrony inactive\n@@timesyncd inactive\n@@missing chronyc\n")
                .unwrap();
        assert_eq!(f.daemon, "none");
        assert_eq!(f.missing, vec!["chronyc"]);
        assert_eq!(grade(&f, &Thresholds::default())[0].grade, Grade::Fail);
        let f =
            parse("@@ntp_sync no\n@@chrony active\n@@sub tracking\n506 Cannot talk to daemon\n")
                .unwrap();
        assert!(f.tracking_error.unwrap().contains("506"));
    }

    fn chrony_with(tracking: &str, ntp_sync: &str) -> ClockFacts {
        parse(&format!(
            "@@epoch 1.0\n@@ntp_sync {ntp_sync}\n@@chrony active\n@@timesyncd inactive\n@@sub tracking\n{tracking}"
        ))
        .unwrap()
    }

    #[test]
    fn not_synchronised_chrony_warns_whatever_timedatectl_says() {
        let t = Thresholds::default();
        for file in [
            "chronyc-tracking/not-synchronised-no-source.txt",
            "chronyc-tracking/not-synchronised-stratum3-lost-source.txt",
        ] {
            // timedatectl with no answer (old systemd, an error, an empty value) and "yes".
            for sync in ["", "yes", "no"] {
                let f = chrony_with(&fixture(file), sync);
                assert!(!f.tracking.as_ref().unwrap().synchronised(), "{file}");
                let g = &grade(&f, &t)[0];
                assert_eq!(g.grade, Grade::Warn, "{file} with timedatectl {sync:?}");
                assert!(
                    g.detail.starts_with("chrony is not synchronised (stratum "),
                    "{}",
                    g.detail
                );
                assert_eq!(g.remediation.as_deref(), Some(SYNC_CLOCK));
            }
        }
        let t0 =
            parse_tracking(&fixture("chronyc-tracking/not-synchronised-no-source.txt")).unwrap();
        assert_eq!((t0.stratum, t0.reference.as_str()), (0, "00000000 ()"));
    }

    #[test]
    fn synchronised_chrony_passes_without_timedatectl_and_warns_when_it_says_no() {
        let t = Thresholds::default();
        let f = chrony_with(&fixture("chronyc-tracking/stratum1-pps.txt"), "");
        assert_eq!(f.ntp_synchronized, None);
        let g = &grade(&f, &t)[0];
        assert_eq!(g.grade, Grade::Pass);
        assert_eq!(
            g.detail,
            "chrony synchronised, stratum 1, reference 50505300 (PPS), leap Normal"
        );
        let f = chrony_with(&fixture("chronyc-tracking/fedora-docs-slow.txt"), "no");
        assert_eq!(grade(&f, &t)[0].grade, Grade::Warn);
        let f = chrony_with("506 Cannot talk to daemon\n", "");
        let g = &grade(&f, &t)[0];
        assert_eq!(g.grade, Grade::Warn);
        assert!(g.detail.contains("506"), "{}", g.detail);
    }
}
