//! One remote script for many probes: concatenation with section markers, and splitting the
//! output back into per-probe sections.
//!
//! Each snippet runs in its own subshell (an `exit` inside one cannot end the others), with its
//! stderr folded into its section, between `@@pvefleet-probe-begin NAME` and
//! `@@pvefleet-probe-end NAME rc=N` lines. The markers start with `@@`, which no probed command
//! prints at the start of a line.

use std::collections::BTreeMap;

use super::by_name;

/// One probe's part of the combined output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// The snippet's output (stdout and stderr).
    pub text: String,
    /// The subshell's exit status; `None` if the end marker never came (output cut short).
    pub rc: Option<i32>,
}

/// The script that runs the named probes' snippets one after the other (unknown names skipped).
pub fn combined_script(names: &[String]) -> String {
    let mut s = String::from("export LC_ALL=C PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH\n");
    for name in names {
        let Some(p) = by_name(name) else { continue };
        s.push_str(&format!(
            "echo '@@pvefleet-probe-begin {name}'\n(\n{}\n) </dev/null 2>&1\necho \"@@pvefleet-probe-end {name} rc=$?\"\n",
            p.snippet.trim_end()
        ));
    }
    s
}

/// Split combined output into sections by probe name.
pub fn split_sections(output: &str) -> BTreeMap<String, Section> {
    let mut out = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    for line in output.lines() {
        if let Some(name) = line.strip_prefix("@@pvefleet-probe-begin ") {
            current = Some((name.trim().to_string(), String::new()));
        } else if let Some(rest) = line.strip_prefix("@@pvefleet-probe-end ") {
            let mut parts = rest.split_whitespace();
            let name = parts.next().unwrap_or("").to_string();
            let rc = parts
                .next()
                .and_then(|r| r.strip_prefix("rc="))
                .and_then(|r| r.parse().ok());
            if let Some((n, text)) = current.take() {
                if n == name {
                    out.insert(n, Section { text, rc });
                }
            }
        } else if let Some((_, text)) = current.as_mut() {
            text.push_str(line);
            text.push('\n');
        }
    }
    if let Some((n, text)) = current {
        out.insert(n, Section { text, rc: None });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn sections_split_back_even_when_a_snippet_exits() {
        let out = "@@pvefleet-probe-begin clock\n@@epoch 1.5\n@@pvefleet-probe-end clock rc=0\n\
                   @@pvefleet-probe-begin rrd\nline\n@@pvefleet-probe-end rrd rc=3\n@@pvefleet-probe-begin gpu\npartial\n";
        let s = split_sections(out);
        assert_eq!(s["clock"].text, "@@epoch 1.5\n");
        assert_eq!(s["rrd"].rc, Some(3));
        assert_eq!(
            s["gpu"],
            Section {
                text: "partial\n".into(),
                rc: None
            }
        );
    }

    #[test]
    fn the_combined_script_is_valid_posix_sh_and_runs_locally() {
        let names: Vec<String> = super::super::all()
            .iter()
            .map(|p| p.name.to_string())
            .collect();
        let script = combined_script(&names);
        for shell in ["sh", "dash", "bash"] {
            if Command::new(shell).arg("-c").arg("true").output().is_err() {
                continue;
            }
            let check = Command::new(shell)
                .arg("-n")
                .arg("-c")
                .arg(&script)
                .output()
                .unwrap();
            assert!(
                check.status.success(),
                "{shell} -n: {}",
                String::from_utf8_lossy(&check.stderr)
            );
        }
    }
}
