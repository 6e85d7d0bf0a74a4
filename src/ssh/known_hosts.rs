//! known_hosts files: lookup (plain, `[host]:port`, wildcard, negated and hashed `|1|` entries,
//! `@revoked` markers) and appending for trust-on-first-use.
//!
//! As OpenSSH (ssh_config(5), `UserKnownHostsFile` and `GlobalKnownHostsFile`), a key is looked
//! up in the user's files first, then in the system's ([`GLOBAL_FILES`]; on a Proxmox VE node
//! `/etc/ssh/ssh_known_hosts` is a link to the cluster's `/etc/pve/priv/known_hosts`): a matching
//! entry in any of them makes the key known, a revoked one or another key of the host in any of
//! them refuses it, and keys are only ever written to a user file.
//!
//! Appending is safe when many connections learn keys at once (accept-new on a fleet of new
//! nodes): each entry is written with one `write` under an exclusive `flock` on the file, and the
//! file is read again under the lock, so a host another task (or another pvefleet) recorded in the
//! meantime is not appended twice. OpenSSH itself takes no lock on known_hosts, so this protects
//! pvefleet against itself, not against a concurrent `ssh` writing the same file.
//!
//! Written here rather than taken from russh because pvefleet must report the exact file and line
//! of a conflicting entry (so the operator knows what to fix), must know which key algorithms are
//! recorded for a host before the key exchange (so the server is asked for a key we can check, as
//! OpenSSH does), and must honour `@revoked`.

use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use data_encoding::BASE64;
use hmac::{Hmac, KeyInit, Mac};
use russh::keys::{Algorithm, PublicKey};
use sha1::Sha1;

/// OpenSSH's default `GlobalKnownHostsFile`: the system-wide known_hosts files (ssh_config(5)).
pub const GLOBAL_FILES: [&str; 2] = ["/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2"];

/// One key recorded for a host.
#[derive(Debug, Clone)]
pub struct KnownKey {
    /// The file it is in.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// The key.
    pub key: PublicKey,
    /// Marked `@revoked`.
    pub revoked: bool,
}

/// What the known_hosts files say about a key a server offered.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// A matching, non-revoked entry exists.
    Known {
        /// Where.
        file: PathBuf,
        /// 1-based line.
        line: usize,
    },
    /// Entries exist for the host, none match: the key changed (or is revoked).
    Changed {
        /// The first conflicting entry's file.
        file: PathBuf,
        /// Its line.
        line: usize,
    },
    /// No entry for this host.
    Unknown,
}

/// The name a host is recorded under: `host` on port 22, `[host]:port` otherwise.
pub fn lookup_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

fn wildcard_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi].eq_ignore_ascii_case(&t[ti])) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

fn hashed_match(entry: &str, name: &str) -> bool {
    // |1|base64(salt)|base64(hmac-sha1(salt, name))
    let mut parts = entry.split('|').skip(2);
    let (Some(salt), Some(hash)) = (parts.next(), parts.next()) else {
        return false;
    };
    let (Ok(salt), Ok(hash)) = (
        BASE64.decode(salt.as_bytes()),
        BASE64.decode(hash.as_bytes()),
    ) else {
        return false;
    };
    let Ok(mut mac) = <Hmac<Sha1> as KeyInit>::new_from_slice(&salt) else {
        return false;
    };
    mac.update(name.as_bytes());
    mac.verify_slice(&hash).is_ok()
}

/// Whether a host-pattern list (`a,b,!c,*.lan,[h]:2222,|1|..|..`) matches `name`.
pub fn hosts_match(patterns: &str, name: &str) -> bool {
    let mut matched = false;
    for pat in patterns.split(',') {
        if let Some(neg) = pat.strip_prefix('!') {
            if wildcard_match(neg, name) {
                return false;
            }
        } else if pat.starts_with("|1|") {
            matched |= hashed_match(pat, name);
        } else {
            matched |= wildcard_match(pat, name);
        }
    }
    matched
}

/// All keys recorded for `name` in `files` (missing files are skipped).
pub fn keys_for(files: &[PathBuf], name: &str) -> Vec<KnownKey> {
    let mut out = Vec::new();
    for file in files {
        if let Ok(text) = std::fs::read_to_string(file) {
            out.extend(keys_in(&text, file, name));
        }
    }
    out
}

/// The keys recorded for `name` in `text`, the content of `file` (which may be a remote file,
/// named for messages only).
pub fn keys_in(text: &str, file: &Path, name: &str) -> Vec<KnownKey> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let mut first = fields.next().unwrap_or("");
        let mut revoked = false;
        if first.starts_with('@') {
            match first {
                "@revoked" => revoked = true,
                _ => continue, // @cert-authority: host certificates are not used
            }
            first = fields.next().unwrap_or("");
        }
        let (Some(algo), Some(b64)) = (fields.next(), fields.next()) else {
            continue;
        };
        if !hosts_match(first, name) {
            continue;
        }
        if let Ok(key) = PublicKey::from_openssh(&format!("{algo} {b64}")) {
            out.push(KnownKey {
                file: file.to_path_buf(),
                line: i + 1,
                key,
                revoked,
            });
        }
    }
    out
}

/// Judge `offered` against the keys recorded for the host.
pub fn check(known: &[KnownKey], offered: &PublicKey) -> Verdict {
    let same = |k: &KnownKey| k.key.key_data() == offered.key_data();
    if let Some(k) = known.iter().find(|k| k.revoked && same(k)) {
        return Verdict::Changed {
            file: k.file.clone(),
            line: k.line,
        };
    }
    if let Some(k) = known.iter().find(|k| !k.revoked && same(k)) {
        return Verdict::Known {
            file: k.file.clone(),
            line: k.line,
        };
    }
    match known.iter().find(|k| !k.revoked) {
        // Prefer pointing at an entry of the offered algorithm: that is the one to fix.
        Some(first) => {
            let k = known
                .iter()
                .find(|k| !k.revoked && k.key.algorithm() == offered.algorithm())
                .unwrap_or(first);
            Verdict::Changed {
                file: k.file.clone(),
                line: k.line,
            }
        }
        None => Verdict::Unknown,
    }
}

/// The host-key algorithms to ask the server for: those recorded for the host first (so the
/// server presents a key we can check), then the usual order.
pub fn preferred_algorithms(known: &[KnownKey], defaults: &[Algorithm]) -> Vec<Algorithm> {
    let mut out: Vec<Algorithm> = Vec::new();
    for k in known.iter().filter(|k| !k.revoked) {
        let algo = k.key.algorithm();
        if algo.clone().is_rsa() {
            for d in defaults.iter().filter(|d| (*d).clone().is_rsa()) {
                if !out.contains(d) {
                    out.push(d.clone());
                }
            }
        } else if !out.contains(&algo) {
            out.push(algo);
        }
    }
    if out.is_empty() {
        return defaults.to_vec();
    }
    out
}

/// What [`learn`] did with a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Learned {
    /// The entry was appended.
    Added,
    /// The same key was already recorded for the host (by another task, since the caller looked).
    AlreadyKnown,
    /// Another key was recorded for the host in the meantime: the caller must refuse it.
    Conflict {
        /// The file.
        file: PathBuf,
        /// 1-based line of the other key.
        line: usize,
    },
}

/// Record `key` for `name` in `file` (trust on first use), unless the file has gained an entry
/// for `name` since the caller looked. The file is created 0600 (its directory 0700) if missing.
///
/// Under an exclusive `flock` on the file: read it again, judge the key against what it now
/// holds, and append the entry (with a leading newline if the file does not end in one) with a
/// single `write`, then fsync. So concurrent learners never interleave lines or record a host
/// twice. Blocking: call it from a blocking thread in async code.
pub fn learn(file: &Path, name: &str, key: &PublicKey) -> std::io::Result<Learned> {
    let new_line = entry_line(name, key)?;
    append_locked(file, |text| {
        Ok(match check(&keys_in(text, file, name), key) {
            Verdict::Known { .. } => (Learned::AlreadyKnown, String::new()),
            Verdict::Changed { file, line } => (Learned::Conflict { file, line }, String::new()),
            Verdict::Unknown => (Learned::Added, new_line),
        })
    })
}

/// Under an exclusive lock on `file` (opened as [`open_for_append`]): read it whole, let
/// `decide` say what to append, and append that (after a newline if the file does not end in
/// one) with one `write` (O_APPEND: never pieces another writer could split), then fsync.
fn append_locked<T>(
    file: &Path,
    decide: impl FnOnce(&str) -> std::io::Result<(T, String)>,
) -> std::io::Result<T> {
    let f = open_for_append(file)?;
    let _lock = FileLock::exclusive(&f)?;
    let mut handle = &f;
    let mut text = String::new();
    handle.rewind()?;
    handle.read_to_string(&mut text)?;
    let (result, mut added) = decide(&text)?;
    if added.is_empty() {
        return Ok(result);
    }
    if !text.is_empty() && !text.ends_with('\n') {
        added.insert(0, '\n');
    }
    handle.write_all(added.as_bytes())?;
    f.sync_all()?;
    Ok(result)
}

/// How a key from a trusted source (the cluster's own known_hosts) compares with the entries
/// already recorded for a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// The same key is recorded (not revoked).
    Same,
    /// Another key of the same type is recorded for the host, or this key is `@revoked`: a
    /// changed host key, never replaced silently.
    Conflict {
        /// The file of the entry in the way.
        file: PathBuf,
        /// Its 1-based line.
        line: usize,
    },
    /// Nothing of this key type is recorded for the host: the key can be added (a host may have
    /// one key per type, as OpenSSH records them).
    New,
}

/// Whether two keys are of the same type (all RSA signature variants are one type).
fn same_type(a: &PublicKey, b: &PublicKey) -> bool {
    let (x, y) = (a.algorithm(), b.algorithm());
    x == y || (x.is_rsa() && y.is_rsa())
}

/// Judge `key` against `known`, the entries recorded for one host (see [`Recorded`]).
pub fn recorded(known: &[KnownKey], key: &PublicKey) -> Recorded {
    let same = |k: &&KnownKey| k.key.key_data() == key.key_data();
    if let Some(k) = known.iter().filter(|k| k.revoked).find(same) {
        return Recorded::Conflict {
            file: k.file.clone(),
            line: k.line,
        };
    }
    if known.iter().filter(|k| !k.revoked).any(|k| same(&k)) {
        return Recorded::Same;
    }
    match known.iter().find(|k| !k.revoked && same_type(&k.key, key)) {
        Some(k) => Recorded::Conflict {
            file: k.file.clone(),
            line: k.line,
        },
        None => Recorded::New,
    }
}

/// Record each `(name, key)` of `entries` in `file` unless it is recorded there already: under
/// the file's exclusive lock, judged against what the file holds now (and the entries added
/// before it), all new lines appended with one `write`. If any entry conflicts
/// ([`Recorded::Conflict`]), nothing is written. Returns each entry's verdict, in order. The file
/// is created 0600 (its directory 0700) if missing. Blocking.
pub fn record(file: &Path, entries: &[(String, PublicKey)]) -> std::io::Result<Vec<Recorded>> {
    append_locked(file, |text| {
        let mut added = String::new();
        let mut verdicts = Vec::with_capacity(entries.len());
        let before = text.lines().count();
        for (name, key) in entries {
            let mut known = keys_in(text, file, name);
            known.extend(keys_in(&added, file, name).into_iter().map(|k| KnownKey {
                line: before + k.line,
                ..k
            }));
            let verdict = recorded(&known, key);
            if verdict == Recorded::New {
                added.push_str(&entry_line(name, key)?);
            }
            verdicts.push(verdict);
        }
        if verdicts
            .iter()
            .any(|v| matches!(v, Recorded::Conflict { .. }))
        {
            added.clear();
        }
        Ok((verdicts, added))
    })
}

/// `name algo base64\n`: a known_hosts line for `key`, without the key's comment.
fn entry_line(name: &str, key: &PublicKey) -> std::io::Result<String> {
    let openssh = key
        .to_openssh()
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut parts = openssh.split_whitespace();
    let (algo, b64) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    Ok(format!("{name} {algo} {b64}\n"))
}

/// Open (create 0600, its directory 0700) a known_hosts file for reading and appending.
fn open_for_append(file: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
    }
    std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .open(file)
}

/// An exclusive `flock(2)` held until dropped (closing the file would release it too).
struct FileLock<'a> {
    file: &'a std::fs::File,
}

impl<'a> FileLock<'a> {
    fn exclusive(file: &'a std::fs::File) -> std::io::Result<FileLock<'a>> {
        loop {
            // SAFETY: flock on a file descriptor we own for the lifetime of `file`.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(FileLock { file });
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

impl Drop for FileLock<'_> {
    fn drop(&mut self) {
        // SAFETY: as above; unlocking a lock we hold.
        unsafe { libc::flock(self.file.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// SHA256 fingerprint as OpenSSH prints it (`SHA256:...`).
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(russh::keys::HashAlg::Sha256).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED1: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB5MvwJRjJsaSx7KMJc5zuMVei+X5L145hUaVS9TEiWB";
    const ED2: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDJOJru1OyCtr/x1NT9UpagguvBp9fj1uq4k7VDgBvG6";

    fn key(s: &str) -> PublicKey {
        PublicKey::from_openssh(s).unwrap()
    }

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("known_hosts");
        std::fs::write(&p, text).unwrap();
        (dir, p)
    }

    #[test]
    fn patterns_wildcards_negation_and_ports() {
        assert!(hosts_match("pve1,10.0.0.1", "10.0.0.1"));
        assert!(hosts_match("*.lan", "pve1.lan"));
        assert!(!hosts_match("*.lan,!pve2.lan", "pve2.lan"));
        assert!(hosts_match(
            "[10.0.0.1]:2222",
            &lookup_name("10.0.0.1", 2222)
        ));
        assert!(!hosts_match("10.0.0.1", &lookup_name("10.0.0.1", 2222)));
        assert!(hosts_match("pve?", "PVE3"));
    }

    #[test]
    fn hashed_entries_match_their_host_only() {
        // Salt and HMAC-SHA1("10.0.0.1") computed here, the way `ssh-keygen -H` writes them.
        let salt = [7u8; 20];
        let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(&salt).unwrap();
        mac.update(b"10.0.0.1");
        let entry = format!(
            "|1|{}|{}",
            BASE64.encode(&salt),
            BASE64.encode(&mac.finalize().into_bytes())
        );
        assert!(hosts_match(&entry, "10.0.0.1"));
        assert!(!hosts_match(&entry, "10.0.0.2"));
    }

    #[test]
    fn known_changed_unknown_with_file_and_line() {
        let (_d, p) = write(&format!("# comment\n\nother {ED2}\npve1 {ED1}\n"));
        let files = vec![p.clone()];
        let known = keys_for(&files, "pve1");
        assert!(matches!(
            check(&known, &key(ED1)),
            Verdict::Known { line: 4, .. }
        ));
        match check(&known, &key(ED2)) {
            Verdict::Changed { file, line } => assert_eq!((file, line), (p.clone(), 4)),
            v => panic!("{v:?}"),
        }
        assert!(matches!(
            check(&keys_for(&files, "pve9"), &key(ED1)),
            Verdict::Unknown
        ));
    }

    #[test]
    fn revoked_keys_are_refused() {
        let (_d, p) = write(&format!("@revoked * {ED1}\npve1 {ED1}\n"));
        let known = keys_for(&[p], "pve1");
        assert!(matches!(
            check(&known, &key(ED1)),
            Verdict::Changed { line: 1, .. }
        ));
    }

    #[test]
    fn learn_then_known() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/known_hosts");
        assert_eq!(
            learn(&p, "[10.1.1.1]:2222", &key(ED1)).unwrap(),
            Learned::Added
        );
        let known = keys_for(std::slice::from_ref(&p), &lookup_name("10.1.1.1", 2222));
        assert!(matches!(
            check(&known, &key(ED1)),
            Verdict::Known { line: 1, .. }
        ));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn learning_again_is_a_no_op_and_another_key_is_a_conflict() {
        let (_d, p) = write(&format!("other {ED2}")); // no final newline
        assert_eq!(learn(&p, "pve1", &key(ED1)).unwrap(), Learned::Added);
        assert_eq!(learn(&p, "pve1", &key(ED1)).unwrap(), Learned::AlreadyKnown);
        assert_eq!(
            learn(&p, "pve1", &key(ED2)).unwrap(),
            Learned::Conflict {
                file: p.clone(),
                line: 2
            }
        );
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text, format!("other {ED2}\npve1 {ED1}\n"));
    }

    #[test]
    fn recorded_algorithms_are_asked_for_first() {
        let (_d, p) = write(&format!("pve1 {ED1}\n"));
        let known = keys_for(&[p], "pve1");
        let defaults = vec![
            Algorithm::Ecdsa {
                curve: russh::keys::EcdsaCurve::NistP256,
            },
            Algorithm::Ed25519,
        ];
        assert_eq!(
            preferred_algorithms(&known, &defaults),
            vec![Algorithm::Ed25519]
        );
        assert_eq!(preferred_algorithms(&[], &defaults), defaults);
    }

    #[test]
    fn the_system_file_is_read_after_the_users_and_either_can_refuse() {
        // As OpenSSH: UserKnownHostsFile, then GlobalKnownHostsFile; any match is known, a
        // revoked key or another key of the host in either refuses.
        let (_d1, user) = write("");
        let (_d2, global) = write(&format!("pve1,10.0.0.1 {ED1}\n"));
        let files = vec![user.clone(), global.clone()];
        assert!(matches!(
            check(&keys_for(&files, "10.0.0.1"), &key(ED1)),
            Verdict::Known { ref file, line: 1 } if *file == global
        ));
        match check(&keys_for(&files, "pve1"), &key(ED2)) {
            Verdict::Changed { file, line } => assert_eq!((file, line), (global.clone(), 1)),
            v => panic!("{v:?}"),
        }
        std::fs::write(&user, format!("@revoked * {ED1}\n")).unwrap();
        match check(&keys_for(&files, "pve1"), &key(ED1)) {
            Verdict::Changed { file, line } => assert_eq!((file, line), (user.clone(), 1)),
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn a_trusted_key_is_new_same_or_a_conflict_by_type() {
        const RSA: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQCupseGRWjHKCtkod3BYBojC2i2o5oEnaLSTkHbqE0JYgxJkw4m6YOG7U51c8zto0wmStJlNlPwZELw+NR4zkLOG2C3qkQgyIUl+Eg6gawR0qcWa6mKd6XV7UD0emxb5DBAV5D2eih7rxsQjmvPS4hzEUwsSHkvwBsjlOis9joeZ9dxpo4M3S5xWsyAr4IKqYZuKsQhzaCnseV5LoyKpmExJVi/fFpmQ9fJDgYFu/WnIzacolYjAlQagq5z8Ta+5440DC+v3Toc4Ghvqh4Xo6E7dLZ8awJHDBcNgX50tnnrYyefF7+6tqvBWYoEWBers0jgVPymS1RNcEodMduo6IBH";
        let (_d, p) = write(&format!("pve1 {ED1}\n@revoked pve3 {ED2}\n"));
        let files = vec![p.clone()];
        let rsa = PublicKey::from_openssh(RSA).unwrap();
        assert_eq!(
            recorded(&keys_for(&files, "pve1"), &key(ED1)),
            Recorded::Same
        );
        // Another type than the one recorded: added, as OpenSSH keeps one key per type.
        assert_eq!(recorded(&keys_for(&files, "pve1"), &rsa), Recorded::New);
        assert_eq!(
            recorded(&keys_for(&files, "pve1"), &key(ED2)),
            Recorded::Conflict {
                file: p.clone(),
                line: 1
            }
        );
        assert_eq!(
            recorded(&keys_for(&files, "pve3"), &key(ED2)),
            Recorded::Conflict {
                file: p.clone(),
                line: 2
            }
        );
        assert_eq!(
            recorded(&keys_for(&files, "pve2"), &key(ED2)),
            Recorded::New
        );
    }

    #[test]
    fn record_appends_what_is_new_and_nothing_on_a_conflict() {
        let (_d, p) = write(&format!("pve1 {ED1}")); // no final newline
        let v = record(
            &p,
            &[
                ("pve1".into(), key(ED1)),
                ("10.0.0.2".into(), key(ED2)),
                ("pve2".into(), key(ED2)),
                ("pve2".into(), key(ED2)),
            ],
        )
        .unwrap();
        assert_eq!(
            v,
            [Recorded::Same, Recorded::New, Recorded::New, Recorded::Same]
        );
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text, format!("pve1 {ED1}\n10.0.0.2 {ED2}\npve2 {ED2}\n"));
        let v = record(&p, &[("pve3".into(), key(ED1)), ("pve1".into(), key(ED2))]).unwrap();
        assert_eq!(
            v,
            [
                Recorded::New,
                Recorded::Conflict {
                    file: p.clone(),
                    line: 1
                }
            ]
        );
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            text,
            "written on a conflict"
        );
    }
}
