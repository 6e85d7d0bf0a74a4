//! Maintenance windows (`run --window [DAYS ]HH:MM-HH:MM`, repeatable): when a node may start.
//! A node starts only when its predicted duration ends inside a window that it starts in; times
//! are the controller's local time. Pure: the clock is a value ([`LocalTime`]) passed in, so
//! the decision is tested without waiting for the wall clock.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A window that could not be parsed (a usage error, 64).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--window {given:?}: {why}; expected [DAYS ]HH:MM-HH:MM, e.g. 02:00-05:00, 22:00-04:00, \"Mon-Fri 02:00-05:00\" or \"Sat,Sun 00:00-06:00\"")]
pub struct WindowError {
    /// The text given.
    pub given: String,
    /// What is wrong with it.
    pub why: String,
}

const DAY_NAMES: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const FULL_NAMES: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

/// One window: the days it may start on (Monday first) and its start and end in minutes after
/// midnight; an end not after the start is on the next day (`22:00-04:00`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// The days the window opens on, Monday first.
    pub days: [bool; 7],
    /// Opening, minutes after midnight.
    pub start: u32,
    /// Closing, minutes after midnight (1440 for `24:00`); not after `start`: the next day.
    pub end: u32,
    text: String,
}

/// A moment of the controller's local time, as much of it as windows need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalTime {
    /// Day of the week, 0 = Monday.
    pub weekday: u8,
    /// Seconds since local midnight.
    pub secs: u32,
}

impl LocalTime {
    /// Now, in the controller's time zone (`localtime_r`).
    pub fn now() -> LocalTime {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as libc::time_t)
            .unwrap_or(0);
        // SAFETY: localtime_r writes only into `tm`, which we own; `t` outlives the call.
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        let ok = unsafe { !libc::localtime_r(&t, &mut tm).is_null() };
        if !ok {
            // No time zone could be applied: UTC (1970-01-01 was a Thursday).
            let days = t.max(0) as u64 / 86400;
            return LocalTime {
                weekday: ((days + 3) % 7) as u8,
                secs: (t.max(0) as u64 % 86400) as u32,
            };
        }
        LocalTime {
            weekday: ((tm.tm_wday + 6) % 7) as u8,
            secs: (tm.tm_hour * 3600 + tm.tm_min * 60 + tm.tm_sec.min(59)) as u32,
        }
    }
}

fn hhmm(s: &str, end: bool) -> Result<u32, String> {
    let (h, m) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not a time HH:MM"))?;
    let ok = |x: &str| !x.is_empty() && x.len() <= 2 && x.chars().all(|c| c.is_ascii_digit());
    if !ok(h) || m.len() != 2 || !ok(m) {
        return Err(format!("{s:?} is not a time HH:MM"));
    }
    let (h, m): (u32, u32) = (h.parse().unwrap_or(99), m.parse().unwrap_or(99));
    if end && h == 24 && m == 0 {
        return Ok(1440);
    }
    if h > 23 || m > 59 {
        return Err(format!(
            "{s:?} is not a time of day (00:00 to 23:59, or 24:00 as an end)"
        ));
    }
    Ok(h * 60 + m)
}

fn day(s: &str) -> Result<usize, String> {
    let l = s.to_ascii_lowercase();
    DAY_NAMES
        .iter()
        .position(|d| d.to_ascii_lowercase() == l)
        .or_else(|| FULL_NAMES.iter().position(|d| *d == l))
        .ok_or_else(|| format!("{s:?} is not a day (Mon, Tue, Wed, Thu, Fri, Sat, Sun)"))
}

fn days(s: &str) -> Result<[bool; 7], String> {
    let mut out = [false; 7];
    for item in s.split(',') {
        match item.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (day(a)?, day(b)?);
                // Fri-Mon wraps over the weekend.
                let mut d = a;
                loop {
                    out[d] = true;
                    if d == b {
                        break;
                    }
                    d = (d + 1) % 7;
                }
            }
            None => out[day(item)?] = true,
        }
    }
    Ok(out)
}

impl FromStr for Window {
    type Err = WindowError;

    fn from_str(given: &str) -> Result<Window, WindowError> {
        let err = |why: String| WindowError {
            given: given.to_string(),
            why,
        };
        let parts: Vec<&str> = given.split_whitespace().collect();
        let (d, span) = match parts.as_slice() {
            [span] => ([true; 7], *span),
            [d, span] => (days(d).map_err(err)?, *span),
            [] => return Err(err("empty".into())),
            _ => return Err(err("too many parts".into())),
        };
        let (a, b) = span
            .split_once('-')
            .ok_or_else(|| err(format!("{span:?} is not a span HH:MM-HH:MM")))?;
        let start = hhmm(a, false).map_err(err)?;
        let end = hhmm(b, true).map_err(err)?;
        if start == end {
            return Err(err("it opens and closes at the same time".into()));
        }
        Ok(Window {
            days: d,
            start,
            end,
            text: given.split_whitespace().collect::<Vec<_>>().join(" "),
        })
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Window {
    /// Its length in seconds.
    fn len_secs(&self) -> u64 {
        let mins = if self.end > self.start {
            self.end - self.start
        } else {
            self.end + 1440 - self.start
        };
        u64::from(mins) * 60
    }

    /// Whether something starting at `now` and lasting `took` is inside one opening of the
    /// window: it opened (on one of its days, today or, for a window crossing midnight,
    /// yesterday) at or before `now`, has not closed at `now`, and closes at or after
    /// `now + took`.
    pub fn holds(&self, now: LocalTime, took: Duration) -> bool {
        let now_s = u64::from(now.secs);
        let open = u64::from(self.start) * 60;
        // Today's opening, then yesterday's (which may reach into today).
        for (back, opened_day) in [(0u64, now.weekday), (86400, (now.weekday + 6) % 7)] {
            if !self.days[usize::from(opened_day)] {
                continue;
            }
            let (from, to) = (open, open + self.len_secs());
            let at = now_s + back;
            // Open at `now` (the closing minute is not in the window) and closed no earlier
            // than the end.
            let end = at + took.as_secs() + u64::from(took.subsec_nanos() > 0);
            if from <= at && at < to && end <= to {
                return true;
            }
        }
        false
    }
}

/// Whether a node may start at `now` when it is predicted to take `took`: it ends inside one of
/// `windows` it starts in (no windows: always).
pub fn fits(windows: &[Window], now: LocalTime, took: Duration) -> bool {
    windows.is_empty() || windows.iter().any(|w| w.holds(now, took))
}

/// Parse every `--window` given.
pub fn parse_all(items: &[String]) -> Result<Vec<Window>, WindowError> {
    items.iter().map(|s| s.parse()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(weekday: u8, h: u32, m: u32) -> LocalTime {
        LocalTime {
            weekday,
            secs: h * 3600 + m * 60,
        }
    }
    fn w(s: &str) -> Window {
        s.parse().unwrap()
    }
    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn parses_spans_and_days() {
        let x = w("02:00-05:00");
        assert_eq!((x.start, x.end, x.days), (120, 300, [true; 7]));
        let x = w("Mon-Fri 02:00-05:00");
        assert_eq!(x.days, [true, true, true, true, true, false, false]);
        let x = w("sat,SUN 00:00-06:00");
        assert_eq!(x.days, [false, false, false, false, false, true, true]);
        let x = w("Fri-Mon 22:00-04:00");
        assert_eq!(x.days, [true, false, false, false, true, true, true]);
        assert_eq!((x.start, x.end), (1320, 240));
        assert_eq!(w("Mon,Wed-Thu 1:30-24:00").end, 1440);
        assert!(w("Monday 01:00-02:00").days[0]);
        assert_eq!(w("  Mon   01:00-02:00 ").to_string(), "Mon 01:00-02:00");
    }

    #[test]
    fn bad_windows_say_what_was_expected() {
        for (bad, why) in [
            ("", "empty"),
            ("02:00", "is not a span"),
            ("2-5", "is not a time HH:MM"),
            ("02:00-25:00", "is not a time of day"),
            ("02:60-03:00", "is not a time of day"),
            ("24:00-03:00", "is not a time of day"),
            ("02:0-03:00", "is not a time HH:MM"),
            ("Mun 02:00-03:00", "\"Mun\" is not a day"),
            ("Mon-Fry 02:00-03:00", "\"Fry\" is not a day"),
            ("03:00-03:00", "same time"),
            ("Mon 02:00-03:00 extra", "too many parts"),
        ] {
            let e = bad.parse::<Window>().unwrap_err().to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
            assert!(e.contains("expected [DAYS ]HH:MM-HH:MM"), "{e}");
        }
    }

    #[test]
    fn a_node_starts_only_when_it_ends_inside_the_window() {
        let win = [w("02:00-05:00")];
        assert!(fits(&win, at(0, 2, 0), 30 * MIN));
        assert!(
            fits(&win, at(0, 4, 30), 30 * MIN),
            "ends exactly at the close"
        );
        assert!(
            !fits(&win, at(0, 4, 31), 30 * MIN),
            "would end after the close"
        );
        assert!(!fits(&win, at(0, 1, 59), MIN), "not open yet");
        assert!(!fits(&win, at(0, 5, 0), Duration::ZERO), "closed");
        assert!(
            !fits(&win, at(0, 2, 0), 181 * MIN),
            "longer than the window"
        );
        // A second more than the window leaves is too much.
        assert!(!fits(
            &win,
            at(0, 4, 30),
            30 * MIN + Duration::from_millis(1)
        ));
        assert!(fits(&[], at(3, 12, 0), 100 * MIN), "no window: always");
    }

    #[test]
    fn a_window_crossing_midnight_holds_on_both_sides() {
        let win = [w("22:00-04:00")];
        assert!(
            fits(&win, at(2, 23, 0), 4 * 60 * MIN),
            "23:00 + 4 h = 03:00"
        );
        assert!(!fits(&win, at(2, 23, 0), 5 * 60 * MIN + MIN));
        assert!(fits(&win, at(3, 1, 0), 3 * 60 * MIN), "opened yesterday");
        assert!(!fits(&win, at(3, 4, 0), MIN));
        assert!(!fits(&win, at(3, 12, 0), MIN));
    }

    #[test]
    fn days_are_the_days_the_window_opens() {
        let win = [w("Fri 22:00-04:00")];
        assert!(fits(&win, at(4, 22, 30), 60 * MIN), "Friday night");
        assert!(
            fits(&win, at(5, 3, 0), 60 * MIN),
            "Saturday morning: Friday's window"
        );
        assert!(
            !fits(&win, at(5, 22, 30), 60 * MIN),
            "Saturday night: not a Friday"
        );
        assert!(
            !fits(&win, at(4, 3, 0), 10 * MIN),
            "Friday morning: Thursday's, not open"
        );
        let weekend = [w("Sat,Sun 00:00-06:00"), w("Mon-Fri 02:00-05:00")];
        assert!(
            fits(&weekend, at(6, 0, 10), 5 * 60 * MIN),
            "Sunday, the first window"
        );
        assert!(
            fits(&weekend, at(1, 2, 10), 2 * 60 * MIN),
            "Tuesday, the second"
        );
        assert!(
            !fits(&weekend, at(1, 0, 10), 60 * MIN),
            "Tuesday 00:10: neither"
        );
        // Monday's first minutes belong to Sunday's window only if it crosses midnight.
        assert!(fits(&[w("Sun 23:00-01:00")], at(0, 0, 30), 30 * MIN));
        assert!(!fits(&[w("Sun 23:00-01:00")], at(0, 0, 31), 30 * MIN));
    }
}
