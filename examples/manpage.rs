//! Writes pvefleet's manual pages (roff) into a directory, generated from the clap definitions:
//! `cargo run --example manpage -- DIR` (DIR defaults to `target/man`). The Debian package build
//! (`packaging/build-deb.sh`) runs it; see [`pvefleet::app::manpage`].

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let dir = std::env::args_os()
        .nth(1)
        .map_or_else(|| PathBuf::from("target/man"), PathBuf::from);
    match pvefleet::app::manpage::write_pages(&dir) {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("manpage: cannot write man pages to {}: {e}", dir.display());
            ExitCode::FAILURE
        }
    }
}
