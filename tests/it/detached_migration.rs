//! The shell text that runs a migration detached from the SSH session
//! (`maintenance::drain::detached_migration_script`), run by /bin/sh on this machine: it writes
//! under /run, so it needs root like the lab tests.

use crate::common::sshd::require_root;
use pvefleet::maintenance::drain::detached_migration_script;

/// The detached script, run by /bin/sh here: the command's stdout, stderr and exit code come
/// back as its own, arguments arrive as single words whatever they hold, the command runs in
/// a session of its own (so the SSH session's end does not reach it), and nothing is left
/// in /run.
#[test]
fn a_detached_command_reports_as_if_run_in_place() {
    if !require_root("a_detached_command_reports_as_if_run_in_place") {
        return;
    }
    let argv: Vec<String> = [
        "/bin/sh",
        "-c",
        "printf '%s|' \"$1\" \"$2\"; echo; echo \"sid=$(cut -d' ' -f6 /proc/$$/stat) pid=$$\" >&2; exit 7",
        "sh",
        "it's $(not) run",
        "two words",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let before = leftover_dirs();
    let script = detached_migration_script(&argv);
    let o = std::process::Command::new("/bin/sh")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(7));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "it's $(not) run|two words|\n"
    );
    // The command runs in a new session (setsid), not in the caller's, which an SSH
    // session's end would reach.
    let err = String::from_utf8_lossy(&o.stderr);
    let w: Vec<&str> = err.split_whitespace().collect();
    assert_eq!(w.len(), 2, "{err}");
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let mine = stat.rsplit(") ").next().unwrap().split(' ').nth(3).unwrap();
    assert_ne!(w[0], format!("sid={mine}"), "{err}");
    assert!(w[0].len() > 4, "{err}");
    assert_eq!(leftover_dirs(), before, "nothing left under /run");

    // The session dies (its whole process group killed) while the command runs: the command
    // goes on and ends on its own.
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("done");
    let argv: Vec<String> = [
        "/bin/sh",
        "-c",
        "touch \"$1.started\"; sleep 3; touch \"$1\"",
        "sh",
        marker.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut session = std::process::Command::new("/bin/sh")
        .args(["-c", &detached_migration_script(&argv)])
        .process_group(0)
        .spawn()
        .unwrap();
    let started = dir.path().join("done.started");
    assert!(
        crate::common::wait::eventually(30, || started.exists()),
        "the command started"
    );
    let killed = std::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", session.id())])
        .status()
        .unwrap();
    assert!(killed.success());
    let _ = session.wait();
    assert!(!marker.exists(), "killed before the command ended");
    assert!(
        crate::common::wait::eventually(30, || marker.exists()),
        "the command outlived its session"
    );
}

fn leftover_dirs() -> usize {
    std::fs::read_dir("/run")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("pvefleet-migrate.")
        })
        .count()
}
