//! `~/.ssh/config` resolution (HostName, User, Port, IdentityFile, ProxyJump) with ssh2-config.
//!
//! The inventory wins over ssh_config, which wins over the built-in defaults (root, port 22).
//! `Host` patterns are matched against the node's name, as OpenSSH matches them against the name
//! typed on its command line.

use std::path::{Path, PathBuf};

use ssh2_config::{ParseRule, SshConfig, SshParserError};

/// What ssh_config says about one host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostConfig {
    /// `HostName`.
    pub host_name: Option<String>,
    /// `User`.
    pub user: Option<String>,
    /// `Port`.
    pub port: Option<u16>,
    /// `IdentityFile`s, `~` expanded.
    pub identity_files: Vec<PathBuf>,
    /// `ProxyJump`'s first hop (`none` means no jump).
    pub proxy_jump: Option<String>,
}

/// An ssh_config file that exists but cannot be parsed.
#[derive(Debug, thiserror::Error)]
#[error("{}: {error}", .file.display())]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// What the parser said.
    pub error: SshParserError,
}

/// Read `file` (missing file: empty config) and query it for `host`.
pub fn lookup(file: &Path, host: &str) -> Result<HostConfig, ConfigError> {
    let Ok(f) = std::fs::File::open(file) else {
        return Ok(HostConfig::default());
    };
    let mut reader = std::io::BufReader::new(f);
    let config = SshConfig::default()
        .parse(
            &mut reader,
            ParseRule::ALLOW_UNKNOWN_FIELDS | ParseRule::ALLOW_UNSUPPORTED_FIELDS,
        )
        .map_err(|e| ConfigError {
            file: file.to_path_buf(),
            error: e,
        })?;
    let p = config.query(host);
    let home = crate::paths::home_dir();
    let expand = |path: &PathBuf| -> PathBuf {
        match (path.strip_prefix("~"), &home) {
            (Ok(rest), Some(h)) => h.join(rest),
            _ => path.clone(),
        }
    };
    Ok(HostConfig {
        host_name: p.host_name.map(|h| h.replace("%h", host)),
        user: p.user,
        port: p.port,
        identity_files: p
            .identity_file
            .unwrap_or_default()
            .iter()
            .map(expand)
            .collect(),
        proxy_jump: p
            .proxy_jump
            .and_then(|v| v.into_iter().next())
            .filter(|j| !j.eq_ignore_ascii_case("none")),
    })
}

/// Parse a destination written `[user@]host[:port]` (ProxyJump, `inventory discover --from`).
pub fn parse_destination(s: &str) -> (Option<String>, String, Option<u16>) {
    let (user, rest) = match s.rsplit_once('@') {
        Some((u, r)) => (Some(u.to_string()), r),
        None => (None, s),
    };
    // `[v6addr]:port` or `host:port`
    if let Some(inner) = rest.strip_prefix('[') {
        if let Some((host, after)) = inner.split_once(']') {
            let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
            return (user, host.to_string(), port);
        }
    }
    match rest.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => match p.parse() {
            Ok(port) => (user, h.to_string(), Some(port)),
            Err(_) => (user, rest.to_string(), None),
        },
        _ => (user, rest.to_string(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_blocks_are_matched_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config");
        std::fs::write(
            &p,
            "Host pve*\n  HostName %h.lan\n  User admin\n  Port 2200\n  IdentityFile /keys/pve\n  \
             ProxyJump jump@bastion:22\n  ForwardX11 no\n\nHost *\n  User fallback\n",
        )
        .unwrap();
        let c = lookup(&p, "pve1").unwrap();
        assert_eq!(c.host_name.as_deref(), Some("pve1.lan"));
        assert_eq!(c.user.as_deref(), Some("admin"));
        assert_eq!(c.port, Some(2200));
        assert_eq!(c.identity_files, vec![PathBuf::from("/keys/pve")]);
        assert_eq!(c.proxy_jump.as_deref(), Some("jump@bastion:22"));
        let other = lookup(&p, "backup").unwrap();
        assert_eq!(other.user.as_deref(), Some("fallback"));
        assert_eq!(other.host_name, None);
        assert_eq!(
            lookup(&dir.path().join("missing"), "x").unwrap(),
            HostConfig::default()
        );
    }
}
