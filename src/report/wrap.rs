//! Word-wrapping text for a terminal of known width, with a hanging indent: what keeps the audit's
//! findings from being wrapped (and misaligned) by the terminal.

use std::fmt::Write as _;

/// Word-wrap `text` to `width` columns: the first line after `first`, the others after `rest`
/// (both plain indentation or labels). Any whitespace separates words (a detail's line breaks
/// become spaces); words longer than a line are cut.
pub fn wrap(text: &str, first: &str, rest: &str, width: Option<usize>) -> String {
    let Some(width) = width else {
        return format!("{first}{text}\n");
    };
    let mut out = String::new();
    let mut line = first.to_string();
    let mut fresh = true;
    for word in text.split(char::is_whitespace).filter(|w| !w.is_empty()) {
        let mut word = word.to_string();
        loop {
            let len = line.chars().count();
            let wlen = word.chars().count();
            let sep = usize::from(!fresh);
            if len + sep + wlen <= width {
                if !fresh {
                    line.push(' ');
                }
                line.push_str(&word);
                fresh = false;
                break;
            }
            if fresh {
                // Even alone the word does not fit: cut it.
                let room = width.saturating_sub(len).max(1);
                let head: String = word.chars().take(room).collect();
                word = word.chars().skip(room).collect();
                line.push_str(&head);
                if word.is_empty() {
                    fresh = false;
                    break;
                }
            }
            let _ = writeln!(out, "{}", line.trim_end());
            line = rest.to_string();
            fresh = true;
        }
    }
    let _ = writeln!(out, "{}", line.trim_end());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapping_keeps_every_line_within_the_width() {
        let text = "12 RRD error lines in the last hour: /var/lib/rrdcached/db/pve2-vm/900-a-very-long-path-indeed-longer-than-a-line";
        let out = wrap(
            text,
            "  FAIL rrd.journal_errors [pve2] ",
            "       ",
            Some(40),
        );
        assert!(out.lines().all(|l| l.chars().count() <= 40), "{out}");
        assert!(
            out.lines().skip(1).all(|l| l.starts_with("       ")),
            "{out}"
        );
        let joined: String = out.split_whitespace().collect();
        assert!(joined.contains("900-a-very-long"), "nothing lost: {out}");
        assert_eq!(wrap("a b", "> ", "", None), "> a b\n");
    }
}
