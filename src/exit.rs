//! Process exit codes, shared by every command (documented in the README's "Exit codes").

/// Everything succeeded (audit: every check PASS).
pub const OK: u8 = 0;
/// Audit: warnings, no failures.
pub const WARNINGS: u8 = 1;
/// Something failed: a command exited non-zero or timed out on a node, an audit check is FAIL,
/// a playbook step failed.
pub const FAILED: u8 = 2;
/// At least one node could not be reached (unreachable, host key, authentication).
pub const UNREACHABLE: u8 = 3;
/// The command line was wrong.
pub const USAGE: u8 = 64;
/// An input file (inventory, playbook) is invalid.
pub const BAD_INPUT: u8 = 65;
/// Another run holds the cluster's lock (or its lock could not be checked): nothing was done;
/// try again later (sysexits' EX_TEMPFAIL).
pub const LOCKED: u8 = 75;
/// `plan --detailed-exitcode`: a node could not be planned.
pub const PLAN_ERROR: u8 = 1;
/// `plan --detailed-exitcode`: something would change.
pub const PLAN_CHANGES: u8 = 2;
/// An internal error (a bug, or the local machine failed us, e.g. cannot write a file).
pub const INTERNAL: u8 = 70;
/// Interrupted by Ctrl-C (128 + SIGINT).
pub const INTERRUPTED: u8 = 130;
/// `run --window`: the next node would not end inside a window; the run paused cleanly before
/// it (journal status `paused: outside window`; `run --resume` continues it).
pub const OUTSIDE_WINDOW: u8 = 4;
/// `run`: paused on purpose before its next node (`--pause-after`, `--confirm-each-node`
/// answered no, a backup of the next node's guests running); `run --resume` continues it.
pub const PAUSED: u8 = 5;
