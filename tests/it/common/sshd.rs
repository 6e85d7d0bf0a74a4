//! Real OpenSSH `sshd` servers on loopback addresses, for transport and `exec` tests.
//!
//! Each server gets its own host key, listens on `127.77.<net>.<i>:22` (`net` is chosen per test
//! so that test binaries and tests can run in parallel), and accepts a throwaway client key for
//! root and for the test users. Servers are killed when the [`Fleet`] is dropped.

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The variable that lets a machine without root skip the tests that need it, on purpose.
pub const SKIP_LAB: &str = "PVEFLEET_SKIP_LAB";

/// Whether this process may run a test that needs root (real sshd on 127.x addresses, the lab's
/// namespaces and mounts, iptables). Without root such a test never passes silently:
/// - in CI (`CI` set to anything non-empty) it fails;
/// - elsewhere it fails too, unless `PVEFLEET_SKIP_LAB=1` opts out: then it prints a SKIPPED line
///   (past the test harness's output capture, so it shows in a normal `cargo test`) and returns
///   false, and the caller returns early.
pub fn require_root(test: &str) -> bool {
    if unsafe_geteuid() == 0 {
        return true;
    }
    let why = "needs root (real sshd on 127.x addresses, namespaces, mounts, iptables)";
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
        panic!("{test}: {why}; CI must run the tests as root");
    }
    if std::env::var_os(SKIP_LAB).is_none_or(|v| v != "1") {
        panic!(
            "{test}: {why}. Run the tests as root (see README.md, Development), or set \
             {SKIP_LAB}=1 to skip the tests that need root on purpose"
        );
    }
    // Straight to the process's stderr: libtest captures `eprintln!` of passing tests.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: {why}; skipped because {SKIP_LAB}=1, so this test checked nothing"
    );
    false
}

fn unsafe_geteuid() -> u32 {
    // No libc dependency: ask `id`.
    let out = Command::new("id").arg("-u").output().expect("run id -u");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(1)
}

/// Run a command, panic with its output if it fails.
pub fn sh(cmd: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Make sure a local test user exists with `authorized` as its only key. `sudo`: `Some(true)`
/// NOPASSWD sudo, `Some(false)` sudo that wants a password, `None` no sudo rule.
pub fn ensure_user(name: &str, authorized: &Path, sudo: Option<bool>) {
    if Command::new("id")
        .arg(name)
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        sh(&format!(
            "useradd --create-home --shell /bin/sh {name} && passwd -d {name} >/dev/null 2>&1 || true"
        ));
    }
    let home = sh(&format!("getent passwd {name} | cut -d: -f6"))
        .trim()
        .to_string();
    sh(&format!(
        "install -d -m 700 -o {name} {home}/.ssh && install -m 600 -o {name} {} {home}/.ssh/authorized_keys",
        authorized.display()
    ));
    if let Some(nopasswd) = sudo {
        let rule = if nopasswd {
            format!("{name} ALL=(ALL) NOPASSWD: ALL\n")
        } else {
            format!("{name} ALL=(ALL) ALL\n")
        };
        let path = format!("/etc/sudoers.d/{name}");
        std::fs::write(&path, rule).unwrap();
        sh(&format!("chmod 440 {path}"));
    }
}

/// One sshd.
pub struct Server {
    /// Node name (`node1` ...).
    pub name: String,
    /// Listen address.
    pub addr: String,
    /// Listen port.
    pub port: u16,
    /// Its host private key file.
    pub host_key: PathBuf,
    config: PathBuf,
    child: Option<Child>,
}

/// Several sshd servers with a shared client key and known_hosts file.
pub struct Fleet {
    /// Scratch directory (keys, configs, inventory).
    pub dir: tempfile::TempDir,
    /// The servers.
    pub servers: Vec<Server>,
    /// Unencrypted ed25519 client key accepted by every server for root.
    pub client_key: PathBuf,
    /// known_hosts listing every server.
    pub known_hosts: PathBuf,
}

fn keygen(path: &Path, kind: &str, pass: &str) {
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(path.with_extension("pub"));
    sh(&format!(
        "ssh-keygen -q -t {kind} -N '{pass}' -C pvefleet-test -f {}",
        path.display()
    ));
}

fn wait_listening(addr: &str, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if TcpStream::connect((addr, port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("sshd on {addr}:{port} did not start");
}

impl Server {
    fn start(&mut self) {
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sshd");
        self.child = Some(child);
        wait_listening(&self.addr, self.port);
    }

    /// Stop this server (connections to it are then refused).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Give the server a new host key and restart it.
    pub fn change_host_key(&mut self) {
        self.stop();
        keygen(&self.host_key, "ed25519", "");
        self.start();
    }
}

impl Fleet {
    /// Start `n` servers on `127.77.<net>.1..n` port 22. `net` must be unique per test.
    pub fn start(net: u8, n: usize) -> Fleet {
        std::fs::create_dir_all("/run/sshd").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let client_key = dir.path().join("id_ed25519");
        keygen(&client_key, "ed25519", "");
        let authorized = dir.path().join("authorized_keys");
        std::fs::copy(client_key.with_extension("pub"), &authorized).unwrap();
        let known_hosts = dir.path().join("known_hosts");
        let mut kh = std::fs::File::create(&known_hosts).unwrap();
        let mut servers = Vec::new();
        for i in 1..=n {
            let addr = format!("127.77.{net}.{i}");
            let host_key = dir.path().join(format!("host{i}"));
            keygen(&host_key, "ed25519", "");
            let config = dir.path().join(format!("sshd{i}.conf"));
            std::fs::write(
                &config,
                format!(
                    "ListenAddress {addr}:22\nHostKey {}\nPidFile none\nUsePAM no\n\
                     PermitRootLogin prohibit-password\nPasswordAuthentication no\n\
                     KbdInteractiveAuthentication no\nAuthorizedKeysFile {} .ssh/authorized_keys\n\
                     StrictModes no\nMaxSessions 10\nMaxStartups 100\nAllowTcpForwarding yes\n\
                     LogLevel ERROR\nPrintMotd no\nUseDNS no\n",
                    host_key.display(),
                    authorized.display()
                ),
            )
            .unwrap();
            let public = std::fs::read_to_string(host_key.with_extension("pub")).unwrap();
            let mut fields = public.split_whitespace();
            writeln!(
                kh,
                "{addr} {} {}",
                fields.next().unwrap(),
                fields.next().unwrap()
            )
            .unwrap();
            let mut server = Server {
                name: format!("node{i}"),
                addr,
                port: 22,
                host_key,
                config,
                child: None,
            };
            server.start();
            servers.push(server);
        }
        Fleet {
            dir,
            servers,
            client_key,
            known_hosts,
        }
    }

    /// Write an inventory for the servers with `defaults` added to `[defaults]`; returns its path.
    ///
    /// The connect timeout is pvefleet's default (10 s) unless `defaults` sets one. It also
    /// bounds the answer to a keepalive while a command is silent, and under CI's load (eight
    /// tests on two cores, a debug build ciphering megabytes) a 3 s one lost a node mid-transfer.
    /// A stopped server is refused at once whatever it is; the tests about timeouts set theirs.
    pub fn inventory(&self, defaults: &str) -> PathBuf {
        let mut text = format!(
            "[defaults]\nidentity_files = [\"{}\"]\nknown_hosts = [\"{}\"]\nssh_config = false\n\
             {defaults}\n",
            self.client_key.display(),
            self.known_hosts.display()
        );
        for s in &self.servers {
            text.push_str(&format!("[nodes.{}]\naddress = \"{}\"\n", s.name, s.addr));
        }
        let path = self.dir.path().join("inventory.toml");
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for s in &mut self.servers {
            s.stop();
        }
    }
}

/// iptables rules dropping packets to `addr` (and, from [`BlackHole::both_ways`], from it),
/// removed on drop (even when the test panics).
pub struct BlackHole {
    /// The `-d addr` / `-s addr` matches inserted into INPUT.
    rules: Vec<[String; 2]>,
}

impl BlackHole {
    /// Start dropping every packet to `addr` (enough to black-hole new connections).
    pub fn new(addr: &str) -> BlackHole {
        BlackHole::with_rules(vec![["-d".into(), addr.into()]])
    }

    /// Drop every packet to and from `addr`: an established connection goes dark in both
    /// directions, as when a node loses power or its network. (Dropping only packets to the
    /// server lets its output still reach the client over loopback.)
    pub fn both_ways(addr: &str) -> BlackHole {
        BlackHole::with_rules(vec![["-d".into(), addr.into()], ["-s".into(), addr.into()]])
    }

    fn with_rules(rules: Vec<[String; 2]>) -> BlackHole {
        for [flag, addr] in &rules {
            sh(&format!("iptables -I INPUT {flag} {addr} -j DROP"));
        }
        BlackHole { rules }
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        for [flag, addr] in &self.rules {
            let _ = Command::new("iptables")
                .args(["-D", "INPUT", flag, addr, "-j", "DROP"])
                .status();
        }
    }
}
