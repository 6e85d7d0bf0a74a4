//! Making remote output safe for the operator's terminal.
//!
//! A node's output may hold escape sequences (cursor moves, colour, OSC 52 clipboard writes, a
//! terminal title) that must never reach the operator's terminal raw. Everything but newline and
//! tab that is a control character is shown escaped (`\x1b`, `\r`, `\u{9b}`); invalid UTF-8 becomes
//! U+FFFD. JSON output is not sanitised this way: JSON encoding already escapes control characters.

/// Escape control characters in `bytes` (decoded as UTF-8, lossily) for display on a terminal.
pub fn sanitize(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    sanitize_str(&text)
}

/// Escape control characters in `text` for display on a terminal.
pub fn sanitize_str(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' | '\t' => out.push(c),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c1_or_bidi(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// C1 controls (U+0080-U+009F, e.g. the single-byte CSI U+009B) and bidirectional overrides,
/// which can make text read differently from what it is: escaped on a terminal and in JSON.
fn c1_or_bidi(c: char) -> bool {
    matches!(c as u32, 0x80..=0x9f | 0x202a..=0x202e | 0x2066..=0x2069)
}

/// JSON text (as serde_json writes it) with the characters it leaves raw that a terminal or a
/// reader would act on escaped as `\uXXXX`: C1 controls (U+0080-U+009F, e.g. the one-byte
/// CSI) and bidirectional overrides. C0 controls are already escaped by the encoder. Such
/// characters only occur inside JSON strings, where the escape means the same character, so the
/// document is unchanged for a parser.
pub fn escape_json_controls(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c1_or_bidi(c) {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// The first non-empty line of `text`, sanitised and cut to `max` characters.
pub fn first_line(text: &str, max: usize) -> String {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let clean = sanitize_str(line);
    if clean.chars().count() > max {
        let cut: String = clean.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    } else {
        clean
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_leaves_no_c1_or_bidi_raw_and_parses_to_the_same_value() {
        let v = serde_json::json!({"name": "a\u{9b}31mb\u{202e}c\u{1b}d"});
        let text = escape_json_controls(&serde_json::to_string(&v).unwrap());
        assert!(text.is_ascii(), "{text}");
        assert!(text.contains("\\u009b") && text.contains("\\u202e") && text.contains("\\u001b"));
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn escape_sequences_are_neutralised() {
        let evil = b"ok\x1b]52;c;ZXZpbA==\x07\x1b[2J\rdone\n\ttab";
        let s = sanitize(evil);
        assert!(!s.contains('\x1b') && !s.contains('\x07') && !s.contains('\r'));
        assert_eq!(s, "ok\\x1b]52;c;ZXZpbA==\\x07\\x1b[2J\\rdone\n\ttab");
    }

    #[test]
    fn c1_controls_bidi_and_bad_utf8() {
        assert_eq!(sanitize("a\u{9b}31m".as_bytes()), "a\\u{9b}31m");
        assert_eq!(sanitize_str("x\u{202e}y"), "x\\u{202e}y");
        assert_eq!(sanitize(b"\xffok"), "\u{fffd}ok");
    }

    #[test]
    fn first_line_skips_blanks_and_truncates() {
        assert_eq!(first_line("\n\n  error: boom\nmore", 80), "error: boom");
        assert_eq!(first_line("abcdef", 4), "abc…");
    }
}
