//! Client authentication in OpenSSH's order: ssh-agent, then identity files.
//!
//! Identity files come from the inventory, then `~/.ssh/config`'s `IdentityFile`, then the
//! defaults `~/.ssh/id_ed25519`, `id_ecdsa`, `id_rsa` that exist. RSA keys sign with the best
//! rsa-sha2 hash the server accepts. An encrypted key asks for its passphrase on a terminal (once
//! per key file per process); without a terminal it is skipped with a clear reason. Passphrases
//! are never printed or logged.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use russh::client::{AuthResult, Handle};
use russh::keys::agent::client::AgentClient;
use russh::keys::agent::AgentIdentity;
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg};

use super::SshError;

/// Keys decrypted this process, by file: asked for once, kept in memory only.
fn key_cache() -> &'static Mutex<HashMap<PathBuf, Arc<PrivateKey>>> {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, Arc<PrivateKey>>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Serialises passphrase prompts so parallel connections do not interleave them.
fn prompt_lock() -> &'static tokio::sync::Mutex<()> {
    static LOCK: OnceLock<tokio::sync::Mutex<()>> = OnceLock::new();
    LOCK.get_or_init(|| tokio::sync::Mutex::new(()))
}

/// The identity files to try, in order, without duplicates.
pub fn identity_candidates(explicit: &[PathBuf], from_config: &[PathBuf]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    let mut push = |p: PathBuf| {
        if !out.contains(&p) {
            out.push(p);
        }
    };
    explicit.iter().cloned().for_each(&mut push);
    from_config.iter().cloned().for_each(&mut push);
    if let Some(home) = crate::paths::home_dir() {
        for name in ["id_ed25519", "id_ecdsa", "id_rsa"] {
            let p = home.join(".ssh").join(name);
            if p.exists() {
                push(p);
            }
        }
    }
    out
}

/// Why an identity file gave no key (one entry of what [`SshError::AuthFailed`] says was tried).
#[derive(Debug, thiserror::Error)]
enum KeyError {
    /// The file is not a key this client can read.
    #[error("{}: cannot load key: {error}", .path.display())]
    Unloadable {
        /// The identity file.
        path: PathBuf,
        /// Why.
        error: russh::keys::Error,
    },
    /// Encrypted, and no terminal to ask for its passphrase.
    #[error("{} is encrypted and there is no terminal to ask for its passphrase; load it into ssh-agent (ssh-add) or use an unencrypted key", .0.display())]
    NoTerminal(PathBuf),
    /// The passphrase could not be read from the terminal.
    #[error("{0}")]
    Prompt(std::io::Error),
    /// Encrypted, and the passphrase given does not open it.
    #[error("{}: wrong passphrase or unreadable key: {error}", .path.display())]
    WrongPassphrase {
        /// The identity file.
        path: PathBuf,
        /// Why.
        error: russh::keys::Error,
    },
    /// The task asking for the passphrase did not finish.
    #[error("{0}")]
    Prompter(tokio::task::JoinError),
}

/// Load a private key, asking for its passphrase on the terminal if it is encrypted.
async fn load_key(path: &Path) -> Result<Arc<PrivateKey>, KeyError> {
    if let Some(k) = key_cache().lock().expect("key cache").get(path) {
        return Ok(k.clone());
    }
    match russh::keys::load_secret_key(path, None) {
        Ok(k) => return Ok(Arc::new(k)),
        Err(russh::keys::Error::KeyIsEncrypted) => {}
        Err(error) => {
            return Err(KeyError::Unloadable {
                path: path.to_path_buf(),
                error,
            })
        }
    }
    if !std::io::stdin().is_terminal() {
        return Err(KeyError::NoTerminal(path.to_path_buf()));
    }
    let _guard = prompt_lock().lock().await;
    if let Some(k) = key_cache().lock().expect("key cache").get(path) {
        return Ok(k.clone());
    }
    let prompt = format!("Enter passphrase for key '{}': ", path.display());
    let path_buf = path.to_path_buf();
    let key = tokio::task::spawn_blocking(move || {
        let pass = rpassword::prompt_password(prompt).map_err(KeyError::Prompt)?;
        russh::keys::load_secret_key(&path_buf, Some(&pass)).map_err(|error| {
            KeyError::WrongPassphrase {
                path: path_buf.clone(),
                error,
            }
        })
    })
    .await
    .map_err(KeyError::Prompter)??;
    let key = Arc::new(key);
    key_cache()
        .lock()
        .expect("key cache")
        .insert(path.to_path_buf(), key.clone());
    Ok(key)
}

/// The hash to sign with: for RSA keys the best rsa-sha2 variant the server accepts, else none.
async fn signature_hash<H: russh::client::Handler>(
    handle: &Handle<H>,
    algorithm: &russh::keys::Algorithm,
) -> Option<russh::keys::HashAlg> {
    if !algorithm.clone().is_rsa() {
        return None;
    }
    handle
        .best_supported_rsa_hash()
        .await
        .ok()
        .flatten()
        .flatten()
}

/// Authenticate `user` on `handle`: agent identities first (if `agent_socket`), then key files.
pub async fn authenticate<H: russh::client::Handler>(
    handle: &mut Handle<H>,
    user: &str,
    agent_socket: Option<&Path>,
    identity_files: &[PathBuf],
) -> Result<(), SshError> {
    let mut tried: Vec<String> = Vec::new();
    if let Some(sock) = agent_socket {
        match AgentClient::connect_uds(sock).await {
            Ok(mut agent) => {
                let identities = agent.request_identities().await.unwrap_or_default();
                if identities.is_empty() {
                    tried.push("ssh-agent (no keys)".into());
                }
                for id in identities {
                    let AgentIdentity::PublicKey { key, comment } = id else {
                        continue;
                    };
                    let hash = signature_hash(handle, &key.algorithm()).await;
                    match handle
                        .authenticate_publickey_with(user, key, hash, &mut agent)
                        .await
                    {
                        Ok(AuthResult::Success) => return Ok(()),
                        Ok(AuthResult::Failure { .. }) => {
                            tried.push(format!("agent key {comment}"));
                        }
                        Err(e) => tried.push(format!("agent key {comment}: {e}")),
                    }
                }
            }
            Err(e) => tried.push(format!("ssh-agent at {}: {e}", sock.display())),
        }
    }
    for path in identity_files {
        if !path.exists() {
            continue;
        }
        let key = match load_key(path).await {
            Ok(k) => k,
            Err(reason) => {
                tried.push(reason.to_string());
                continue;
            }
        };
        let hash = signature_hash(handle, &key.algorithm()).await;
        let result = handle
            .authenticate_publickey(user, PrivateKeyWithHashAlg::new(key, hash))
            .await
            .map_err(|e| SshError::Protocol(e.to_string()))?;
        match result {
            AuthResult::Success => return Ok(()),
            AuthResult::Failure { .. } => tried.push(format!("{} (refused)", path.display())),
        }
    }
    let detail = if tried.is_empty() {
        "no ssh-agent and no identity file found (set identity_files in the inventory)".to_string()
    } else {
        format!("tried {}", tried.join("; "))
    };
    Err(SshError::AuthFailed {
        user: user.to_string(),
        detail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_keep_order_and_drop_duplicates() {
        let a = PathBuf::from("/k/a");
        let b = PathBuf::from("/k/b");
        let c = identity_candidates(&[a.clone(), b.clone()], &[b.clone(), a.clone()]);
        assert_eq!(&c[..2], &[a, b]);
    }
}
