//! The manual pages, generated from the clap definitions in [`crate::cli`] with clap_mangen, so
//! they never drift from `--help`. Not a subcommand of the shipped binary (clap_complete would
//! offer even a hidden one in completions): `examples/manpage.rs` calls [`write_pages`], and the
//! Debian package build (`packaging/build-deb.sh`) runs that example.
//!
//! pvefleet(1) gets, besides what clap knows, the files and environment variables the program
//! reads; each subcommand gets its own page (pvefleet-run(1), ...), as git's do. No date is
//! written, so the pages are the same on every build of one version.

use std::path::{Path, PathBuf};

use clap::CommandFactory;

use super::{shipped, LOCAL_MEMBERS};
use crate::cli::Cli;
use crate::inventory::DEFAULT_INVENTORY;

/// Write pvefleet.1 and pvefleet-SUB[-SUB].1 for every visible subcommand into `dir` (created);
/// returns the files written, sorted.
pub fn write_pages(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    // clap_mangen writes the subcommands' pages (and a plain top page, replaced below).
    clap_mangen::generate_to(Cli::command(), dir)?;
    std::fs::write(dir.join("pvefleet.1"), render_main())?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "1"))
        .collect();
    files.sort();
    Ok(files)
}

/// pvefleet(1) in roff: clap_mangen's page with FILES and ENVIRONMENT before its VERSION section.
pub fn render_main() -> String {
    let mut page = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .render(&mut page)
        .expect("writing to a Vec cannot fail");
    let mut page = String::from_utf8(page).expect("clap_mangen writes UTF-8");
    let at = page.find("\n.SH VERSION\n").map_or(page.len(), |i| i + 1);
    page.insert_str(at, &files_and_environment());
    page
}

/// The FILES and ENVIRONMENT sections, in roff.
fn files_and_environment() -> String {
    let files = [
        (
            DEFAULT_INVENTORY.to_string(),
            "The inventory used when -i is not given.".to_string(),
        ),
        (
            LOCAL_MEMBERS.to_string(),
            "Read as the inventory when there is no other one and pvefleet runs on a Proxmox VE \
             node."
                .to_string(),
        ),
        (
            format!("{}/NAME.toml", shipped::LOCAL_DIR),
            "A playbook given by NAME to plan or run (after ./NAME.toml).".to_string(),
        ),
        (
            format!("{}/NAME.toml", shipped::SHIPPED_DIR),
            "The shipped playbooks (fix-rrd, igpu-passthrough, ...), found by NAME when not in \
             the current directory; their README.md is beside them."
                .to_string(),
        ),
        (
            "~/.ssh/known_hosts".to_string(),
            "Host keys checked first (after an inventory's own known_hosts files); where \
             accept-new, a key accepted at inventory discover's prompt, and the cluster's keys \
             discover takes from /etc/pve are recorded unless the inventory names a file."
                .to_string(),
        ),
        (
            crate::ssh::known_hosts::GLOBAL_FILES.join(", "),
            "The system's host keys (OpenSSH's GlobalKnownHostsFile), checked after the user's, \
             never written; on a Proxmox VE node a link to /etc/pve/priv/known_hosts."
                .to_string(),
        ),
        (
            "~/.local/state/pvefleet/runs/".to_string(),
            "Run journals (rollback, resume); see PVEFLEET_STATE_DIR.".to_string(),
        ),
    ];
    let env = [
        ("PVEFLEET_INVENTORY", "Inventory file, as -i."),
        (
            "PVEFLEET_STATE_DIR",
            "Where run journals are kept (else $XDG_STATE_HOME/pvefleet, else \
             ~/.local/state/pvefleet).",
        ),
        (
            shipped::SHIPPED_DIR_ENV,
            "Where the shipped playbooks are, instead of /usr/share/pvefleet/playbooks.",
        ),
        (
            "PVEFLEET_LOG",
            "Log filter (tracing EnvFilter syntax), instead of the one -v sets.",
        ),
        ("NO_COLOR", "When set and not empty: no colour in tables."),
        ("SSH_AUTH_SOCK", "The SSH agent used for authentication."),
    ];
    let mut out = String::from(".SH FILES\n");
    for (path, what) in &files {
        out.push_str(&format!(
            ".TP\n\\fI{}\\fR\n{}\n",
            roff_text(path),
            roff_text(what)
        ));
    }
    out.push_str(".SH ENVIRONMENT\n");
    for (name, what) in env {
        out.push_str(&format!(
            ".TP\n\\fB{}\\fR\n{}\n",
            roff_text(name),
            roff_text(what)
        ));
    }
    out
}

/// `s` as roff text: backslashes and hyphens escaped, no line starting with a control
/// character.
fn roff_text(s: &str) -> String {
    let escaped = s.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with(['.', '\'']) {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roff_text_escapes_what_roff_would_interpret() {
        assert_eq!(roff_text("fix-rrd"), "fix\\-rrd");
        assert_eq!(roff_text("a\\b"), "a\\eb");
        assert_eq!(roff_text(".members"), "\\&.members");
    }

    #[test]
    fn main_page_has_clap_sections_then_files_environment_and_version() {
        let page = render_main();
        let order: Vec<usize> = [
            ".TH pvefleet 1",
            ".SH NAME",
            ".SH SYNOPSIS",
            ".SH OPTIONS",
            ".SH SUBCOMMANDS",
            ".SH FILES",
            ".SH ENVIRONMENT",
            ".SH VERSION",
        ]
        .iter()
        .map(|s| {
            page.find(s)
                .unwrap_or_else(|| panic!("{s} missing:\n{page}"))
        })
        .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
        assert!(page.contains("/usr/share/pvefleet/playbooks/NAME.toml"));
        assert!(page.contains("PVEFLEET_SHIPPED_PLAYBOOKS"));
    }
}
