//! A shell command in a detached tmux session of a given size (a terminal for tests that check
//! what an operator sees), killed when the value is dropped.

use super::sshd::sh;

/// What [`crate::common::runs::Env::in_tmux`] prints before the command's exit code.
pub const EXIT_MARK: &str = "RUN-EXIT-";

/// A running tmux session.
pub struct Tmux {
    /// Its name.
    pub name: String,
}

impl Tmux {
    /// Run `cmd` (a shell command line) in a new session `columns` x `rows`, named after `tag`
    /// and this process.
    pub fn start(tag: &str, columns: u16, rows: u16, cmd: &str) -> Tmux {
        let name = format!("pvefleet-{tag}-{}", std::process::id());
        sh(&format!(
            "tmux new-session -d -s {name} -x {columns} -y {rows} '{}'",
            cmd.replace('\'', "'\\''")
        ));
        Tmux { name }
    }

    /// The pane's text; `joined`: wrapped lines joined (what the terminal had to wrap shows
    /// as one line longer than the width), with `history` lines of scrollback.
    pub fn capture(&self, joined: bool, history: u32) -> String {
        let j = if joined { " -J" } else { "" };
        sh(&format!(
            "tmux capture-pane -p{j} -S -{history} -t {}",
            self.name
        ))
    }

    /// Capture the pane (as [`Tmux::capture`]) until `want` holds, up to `secs`: whether it did,
    /// and the last capture either way (for the assertion's message).
    pub fn until(
        &self,
        secs: u64,
        joined: bool,
        history: u32,
        want: impl Fn(&str) -> bool,
    ) -> (bool, String) {
        let mut screen = String::new();
        let ok = super::wait::eventually(secs, || {
            screen = self.capture(joined, history);
            want(&screen)
        });
        (ok, screen)
    }

    /// The exit code a command started by [`crate::common::runs::Env::in_tmux`] printed, once
    /// it did (up to `secs`), and the whole pane with its scrollback.
    pub fn exit_code(&self, secs: u64) -> (Option<i32>, String) {
        let (_, screen) = self.until(secs, true, 2000, |s| s.contains(EXIT_MARK));
        let code = screen.lines().find_map(|l| {
            l.split_once(EXIT_MARK)
                .and_then(|(_, c)| c.trim().parse::<i32>().ok())
        });
        (code, screen)
    }

    /// `tmux send-keys KEYS`.
    pub fn keys(&self, keys: &str) {
        sh(&format!("tmux send-keys -t {} {keys}", self.name));
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = std::process::Command::new("tmux")
            .args(["kill-session", "-t", &self.name])
            .status();
    }
}
