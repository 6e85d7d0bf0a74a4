//! Where the operator's files are: the home directory (`~` in inventories, ssh_config, the
//! default known_hosts and the state directory). Below every other module.

use std::path::PathBuf;

/// The user's home directory (`$HOME`).
pub fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}
