//! `run` steps with `detach = true`: the command runs in its own session (`setsid`), detached
//! from the SSH session, with its output and exit status in files under `/run/pvefleet/` on the
//! node, as migrations do ([`crate::maintenance::drain::detached_migration_script`]). A killed
//! controller or a dropped connection no longer kills it halfway (a `dist-upgrade` leaving dpkg
//! half-configured); the resume reads how it ended, or waits while it still runs, instead of
//! starting it a second time.
//!
//! The files live in `/run/pvefleet/RUN.stepINDEX/`: `pid` (the session leader, a `sh` whose
//! `$0` is `pvefleet-detached`), `out`, `err`, and `rc` once it ended (written to `rc.new`, then
//! renamed). `/run` is a tmpfs: after the node rebooted nothing is left, and the command's fate is
//! unknown (the resume does not call that "ended").

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::maintenance::remote::NodeShell;
use crate::quote::shell_quote;
use crate::ssh::{ExecOutput, SshError};

/// Where a step's detached command keeps its files on the node.
pub fn dir(run_id: &str, index: usize) -> String {
    let id: String = run_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        .collect();
    format!("/run/pvefleet/{id}.step{index}")
}

/// Start `cmd` detached and wait for it: the script's own output and exit status are the
/// command's (exit 125 and a line on stderr when it ended without an exit status).
pub fn start_script(dir: &str, cmd: &str) -> String {
    format!("{}wait $!\n{}", launch(dir, cmd), collect_tail())
}

/// [`start_script`] for a command whose output is followed live (`-v`, the display): the same
/// files and the same detachment, but `out` and `err` are streamed while the command runs
/// (GNU `tail -f --pid`, which reads to the end once the command's session has ended) instead
/// of printed at its end. The script's output is the command's either way.
pub fn start_script_followed(dir: &str, cmd: &str) -> String {
    format!(
        "{}p=$!\n\
         tail -s 0.2 -c +1 -f --pid=\"$p\" \"$d/out\" &\n\
         t=$!\n\
         tail -s 0.2 -c +1 -f --pid=\"$p\" \"$d/err\" >&2\n\
         wait \"$t\"\n\
         wait \"$p\"\n\
         if [ -f \"$d/rc\" ]; then exit \"$(cat \"$d/rc\")\"; fi\n{}",
        launch(dir, cmd),
        NO_STATUS
    )
}

/// Both scripts' start: `d` set to the step's directory made afresh, with empty `out` and `err`
/// (so a follower can open them at once), and the command started in its own session in the
/// background (`$!`), writing its pid, output and, once it ended, `rc`.
fn launch(dir: &str, cmd: &str) -> String {
    format!(
        "d={}; rm -rf \"$d\"; mkdir -p \"$d\" || exit 125\n\
         : >\"$d/out\"; : >\"$d/err\"\n\
         setsid -w sh -c 'echo $$ >\"$1/pid\"; sh -c \"$2\" </dev/null >\"$1/out\" 2>\"$1/err\"; echo $? >\"$1/rc.new\"; mv \"$1/rc.new\" \"$1/rc\"' pvefleet-detached \"$d\" {} &\n",
        shell_quote(dir),
        shell_quote(cmd)
    )
}

/// The command's output and exit status from its files, as if it had run in the session (the
/// end of [`start_script`], and how [`status`] reads one that ended).
fn collect_tail() -> String {
    format!(
        "if [ -f \"$d/rc\" ]; then cat \"$d/out\"; cat \"$d/err\" >&2; exit \"$(cat \"$d/rc\")\"; fi\n{NO_STATUS}"
    )
}

/// The scripts' end when the command left no exit status.
const NO_STATUS: &str =
    "echo \"pvefleet: the detached command ended without an exit status ($d)\" >&2; exit 125\n";

/// What the node says about a step's detached command.
#[derive(Debug)]
pub enum Status {
    /// It ended: its output and exit status, as if it had run in the session.
    Ended(ExecOutput),
    /// Still running.
    Running,
    /// Started (its files are there) and gone without an exit status: killed with its session
    /// (or the whole node's processes), cut off halfway.
    Dead,
    /// No trace of it (never started, or the node rebooted since: `/run` is a tmpfs).
    Absent,
}

/// Look the detached command up.
pub async fn status(r: &dyn NodeShell, dir: &str) -> Result<Status, SshError> {
    let d = shell_quote(dir);
    let o = r
        .sh(&format!(
            "d={d}; if [ -f \"$d/rc\" ]; then echo ended; \
             elif [ -f \"$d/pid\" ] && grep -qa pvefleet-detached \"/proc/$(cat \"$d/pid\")/cmdline\" 2>/dev/null; then echo running; \
             elif [ -d \"$d\" ]; then echo dead; else echo absent; fi"
        ))
        .await?;
    Ok(match String::from_utf8_lossy(&o.stdout).trim() {
        "ended" => Status::Ended(r.sh(&format!("d={d}\n{}", collect_tail())).await?),
        "running" => Status::Running,
        "dead" => Status::Dead,
        _ => Status::Absent,
    })
}

/// Wait while the detached command runs; then how it ended (never [`Status::Running`]).
/// `None`: cancelled.
pub async fn settle(
    r: &dyn NodeShell,
    dir: &str,
    cancel: &CancellationToken,
) -> Result<Option<Status>, SshError> {
    loop {
        match status(r, dir).await? {
            Status::Running => {}
            other => return Ok(Some(other)),
        }
        tokio::select! {
            _ = cancel.cancelled() => return Ok(None),
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_directory_names_the_run_and_the_step_only() {
        assert_eq!(
            dir("20261201T221300-1f2e", 5),
            "/run/pvefleet/20261201T221300-1f2e.step5"
        );
        assert_eq!(dir("../x y", 1), "/run/pvefleet/xy.step1");
    }

    /// Followed, the script gives the same output and status as it streams them, the last
    /// lines too (written just before the command ended), and the files are the same.
    #[test]
    fn a_followed_detached_command_streams_the_same_output() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("f").to_string_lossy().into_owned();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(start_script_followed(
                &d,
                "echo one; sleep 0.5; echo two; echo oops >&2; printf last; exit 3",
            ))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "one\ntwo\nlast");
        assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");
        let dir = std::path::Path::new(&d);
        assert_eq!(std::fs::read_to_string(dir.join("rc")).unwrap(), "3\n");
        assert_eq!(
            std::fs::read_to_string(dir.join("out")).unwrap(),
            "one\ntwo\nlast"
        );
        assert!(dir.join("pid").exists());
    }

    /// The script runs the command in its own session and hands back its output and status;
    /// killing the caller's session (SIGHUP from sshd, SIGKILL) does not stop the command.
    #[test]
    fn a_detached_command_outlives_its_caller() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("s").to_string_lossy().into_owned();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(start_script(&d, "echo hello; echo oops >&2; exit 3"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
        assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");

        let d2 = tmp.path().join("t").to_string_lossy().into_owned();
        let marker = tmp.path().join("done");
        let mut child = std::process::Command::new("setsid")
            .arg("sh")
            .arg("-c")
            .arg(start_script(
                &d2,
                &format!("sleep 2; echo finished > {}", marker.display()),
            ))
            .spawn()
            .unwrap();
        let pid = std::path::Path::new(&d2).join("pid");
        let t = std::time::Instant::now();
        while !pid.exists() && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        // The caller's whole process group goes, as a dropped SSH session's does.
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", child.id())])
            .status();
        let _ = child.wait();
        let rc = std::path::Path::new(&d2).join("rc");
        let t = std::time::Instant::now();
        while !rc.exists() && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(std::fs::read_to_string(&rc).unwrap().trim(), "0");
        assert!(marker.exists());
    }
}
