//! Errors in input files (inventories, playbooks) located by file, line and column.
//!
//! Every configuration error the operator can make is reported as `FILE:LINE:COL: what was
//! expected`, computed from the byte span the TOML parser (or our own validation) points at.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// A 1-based line and column in a text file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
}

impl Location {
    /// The location of byte offset `offset` in `text`.
    pub fn of_offset(text: &str, offset: usize) -> Location {
        let offset = offset.min(text.len());
        let before = &text[..floor_char_boundary(text, offset)];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        Location { line, column }
    }
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while i > 0 && !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// A bad input file: where, and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SourceError {
    /// The file.
    pub file: PathBuf,
    /// Where in it, when known.
    pub location: Option<Location>,
    /// What is wrong and what was expected.
    pub message: String,
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.location {
            Some(l) => write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                l.line,
                l.column,
                self.message
            ),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

impl SourceError {
    /// An error at a byte span of `text`.
    pub fn at(file: &Path, text: &str, span: Range<usize>, message: String) -> SourceError {
        SourceError {
            file: file.to_path_buf(),
            location: Some(Location::of_offset(text, span.start)),
            message,
        }
    }

    /// The file could not be read.
    pub fn io(file: &Path, e: std::io::Error) -> SourceError {
        SourceError {
            file: file.to_path_buf(),
            location: None,
            message: format!("cannot read: {e}"),
        }
    }

    /// Translate a TOML parse/deserialise error, keeping its span and its message's first line
    /// (the rest of toml's message is a source excerpt we replace with file:line:col).
    pub fn from_toml(file: &Path, text: &str, e: &toml::de::Error) -> SourceError {
        let message = e.message().trim().replace('\n', " ");
        SourceError {
            file: file.to_path_buf(),
            location: e.span().map(|s| Location::of_offset(text, s.start)),
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_map_to_lines_and_columns() {
        let t = "ab\ncdé\nf";
        assert_eq!(Location::of_offset(t, 0), Location { line: 1, column: 1 });
        assert_eq!(Location::of_offset(t, 3), Location { line: 2, column: 1 });
        assert_eq!(Location::of_offset(t, 7), Location { line: 2, column: 4 });
        assert_eq!(Location::of_offset(t, 99), Location { line: 3, column: 2 });
    }
}
