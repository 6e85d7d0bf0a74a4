//! Running the built `pvefleet` binary the way an operator would, with a scrubbed environment
//! (no ssh-agent, no home directory with keys or known_hosts of the machine running the tests).

use std::process::{Command, Output};

/// `pvefleet ARGS`, waited for.
pub fn pvefleet(args: &[&str]) -> Output {
    command().args(args).output().expect("run pvefleet")
}

/// The command, for callers that need to spawn it themselves.
pub fn command() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pvefleet"));
    c.env_remove("SSH_AUTH_SOCK")
        .env("HOME", "/nonexistent-home");
    c
}

/// Output bytes as text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The JSON document a run printed on stdout; panics with both streams when it is not JSON.
pub fn json_of(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", text(&out.stdout), text(&out.stderr)))
}
