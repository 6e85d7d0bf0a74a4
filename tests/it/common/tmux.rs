//! A shell command in a detached tmux session of a given size (a terminal for tests that check
//! what an operator sees), killed when the value is dropped.

use super::sshd::sh;

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
