//! First contact with a cluster, as the README's Quick start has it, from an empty `$HOME` on the
//! lab: the first node's key asked about on a terminal (or refused without one, or accept-new),
//! the output directory created, the other nodes' keys taken from the cluster's pmxcfs so that
//! `exec` reaches every node with no prompt; a changed key refused; `--from` a node of the
//! current inventory keeping how it is reached; `/etc/ssh/ssh_known_hosts` (a link into pmxcfs)
//! verifying the peers of pvefleet run on a node.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::common::bin::{command, json_of, text};
use crate::common::lab::Lab;
use crate::common::tmux::Tmux;
use crate::common::wait::eventually;

/// An operator's fresh machine: an empty home directory and an empty working directory.
struct Fresh {
    _dir: tempfile::TempDir,
    home: PathBuf,
    work: PathBuf,
}

impl Fresh {
    fn new() -> Fresh {
        let dir = tempfile::tempdir().unwrap();
        let (home, work) = (dir.path().join("home"), dir.path().join("work"));
        std::fs::create_dir_all(&home).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        Fresh {
            _dir: dir,
            home,
            work,
        }
    }

    /// `pvefleet ARGS` in the working directory with this home, no agent, stdin empty (no
    /// terminal); the shipped playbooks where the package puts them (here: the repository's).
    fn run(&self, args: &[&str]) -> Output {
        command()
            .env("HOME", &self.home)
            .env(
                "PVEFLEET_SHIPPED_PLAYBOOKS",
                Path::new(env!("CARGO_MANIFEST_DIR")).join("playbooks"),
            )
            .current_dir(&self.work)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn known_hosts(&self) -> PathBuf {
        self.home.join(".ssh/known_hosts")
    }
}

/// The SHA256 fingerprint of a lab node's ed25519 host key, as OpenSSH prints it.
fn fingerprint(lab: &Lab, node: &str) -> String {
    let pub_key = lab
        .dir
        .path()
        .join(format!("nodes/{node}/ssh_host_ed25519_key.pub"));
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(&pub_key)
        .output()
        .unwrap();
    text(&out.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string()
}

/// `exec -- hostname --json` with the default inventory: each node's (name, answer, status).
fn hostnames(fresh: &Fresh) -> Vec<(String, String, String)> {
    let out = fresh.run(&["--json", "exec", "--", "hostname"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    json_of(&out)["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["node"].as_str().unwrap().to_string(),
                n["stdout"].as_str().unwrap_or("").trim_end().to_string(),
                n["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn every_node_answers(n: usize) -> Vec<(String, String, String)> {
    (1..=n)
        .map(|i| (format!("pve{i}"), format!("pve{i}"), "ok".to_string()))
        .collect()
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn quick_start_from_an_empty_home() {
    let net = 92;
    let Some(lab) = Lab::up("quick_start_from_an_empty_home", net, 3, &[]) else {
        return;
    };
    let key = lab.dir.path().join("id_ed25519");
    let from = format!("root@127.{net}.0.1");
    let discover = |fresh: &Fresh, extra: &[&str]| {
        let mut args = vec![
            "inventory",
            "discover",
            "--from",
            &from,
            "--identity",
            key.to_str().unwrap(),
            "-o",
            "inventory/cluster.toml",
        ];
        args.extend(extra);
        fresh.run(&args)
    };

    // Without a terminal an unknown key is refused: exit 3, the fingerprint shown, nothing written.
    let fresh = Fresh::new();
    let out = discover(&fresh, &[]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("is not known"), "{err}");
    assert!(err.contains(&fingerprint(&lab, "pve1")), "{err}");
    assert!(!fresh.work.join("inventory").exists(), "{err}");
    assert!(!fresh.known_hosts().exists(), "{err}");

    // On a terminal: OpenSSH's question, answered "yes" (after one answer it does not take).
    let rc = fresh.work.join("rc");
    let tmux = Tmux::start(
        "first-contact",
        120,
        40,
        &format!(
            "cd {work} && env -u SSH_AUTH_SOCK HOME={home} {bin} inventory discover --from {from} \
             --identity {key} -o inventory/cluster.toml; echo $? > {rc}; sleep 60",
            work = fresh.work.display(),
            home = fresh.home.display(),
            bin = env!("CARGO_BIN_EXE_pvefleet"),
            key = key.display(),
            rc = rc.display(),
        ),
    );
    let question = "Are you sure you want to continue connecting (yes/no/[fingerprint])? ";
    assert!(
        eventually(20, || tmux.capture(true, 100).contains(question.trim_end())),
        "no question: {}",
        tmux.capture(true, 100)
    );
    let screen = tmux.capture(true, 100);
    assert!(
        screen.contains(&format!(
            "The authenticity of host '127.{net}.0.1 (127.{net}.0.1)' can't be established.\n\
             ED25519 key fingerprint is {}.\n",
            fingerprint(&lab, "pve1")
        )),
        "{screen}"
    );
    assert!(!rc.exists(), "it did not wait for the answer: {screen}");
    tmux.keys("maybe Enter");
    assert!(
        eventually(30, || tmux
            .capture(true, 100)
            .contains("Please type 'yes', 'no' or the fingerprint:")),
        "{}",
        tmux.capture(true, 100)
    );
    tmux.keys("yes Enter");
    assert!(
        eventually(30, || rc.exists()),
        "{}",
        tmux.capture(true, 100)
    );
    let screen = tmux.capture(true, 100);
    assert_eq!(
        std::fs::read_to_string(&rc).unwrap().trim(),
        "0",
        "{screen}"
    );
    assert!(
        screen.contains(&format!(
            "Warning: Permanently added '127.{net}.0.1' (ED25519) to the list of known hosts."
        )),
        "{screen}"
    );
    assert!(
        screen.contains("wrote inventory/cluster.toml with 3 nodes"),
        "{screen}"
    );
    drop(tmux);
    assert_eq!(mode(&fresh.known_hosts()), 0o600);
    assert_eq!(mode(&fresh.home.join(".ssh")), 0o700);
    // The cluster's keys of every node, under its address and its name: RSA, as pve-cluster
    // records them; the first node's ed25519 key as accepted.
    let kh = std::fs::read_to_string(fresh.known_hosts()).unwrap();
    for i in 1..=3 {
        let rsa = std::fs::read_to_string(
            lab.dir
                .path()
                .join(format!("nodes/pve{i}/ssh_host_rsa_key.pub")),
        )
        .unwrap();
        let rsa: Vec<&str> = rsa.split_whitespace().take(2).collect();
        for name in [format!("127.{net}.0.{i}"), format!("pve{i}")] {
            assert!(
                kh.lines().any(|l| l == format!("{name} {}", rsa.join(" "))),
                "{name} missing:\n{kh}"
            );
        }
    }

    // The README's next commands: every node at once, no prompt, stdin not a terminal.
    assert_eq!(hostnames(&fresh), every_node_answers(3));
    let show = fresh.run(&["--json", "inventory", "show"]);
    assert_eq!(json_of(&show)["source"], "inventory/cluster.toml");
    let audit = fresh.run(&["--json", "audit"]);
    let v = json_of(&audit);
    let statuses: Vec<&str> = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["ok", "ok", "ok"], "{}", text(&audit.stderr));
    assert_ne!(audit.status.code(), Some(3), "{}", text(&audit.stderr));
    // From an empty directory `playbooks/fix-rrd.toml` is the shipped playbook.
    let plan = fresh.run(&["plan", "playbooks/fix-rrd.toml"]);
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan.stderr));
    // Planned on every node (the plan groups the nodes alike: `pve[1-3] (3)`).
    assert!(
        text(&plan.stdout).contains("== pve[1-3] (3) =="),
        "{}",
        text(&plan.stdout)
    );
    // `run` asks first: without a terminal (and without --yes) it applies nothing.
    let run = fresh.run(&["run", "playbooks/fix-rrd.toml"]);
    assert_eq!(run.status.code(), Some(64), "{}", text(&run.stderr));
    assert!(
        text(&run.stderr).contains("not on a terminal: pass --yes to apply the plan"),
        "{}",
        text(&run.stderr)
    );
    // Discovering again: the file is not overwritten without --force; with it, known_hosts is
    // left as it is (every key already recorded).
    let again = discover(&fresh, &[]);
    assert_eq!(again.status.code(), Some(64), "{}", text(&again.stderr));
    let forced = discover(&fresh, &["--force"]);
    assert_eq!(forced.status.code(), Some(0), "{}", text(&forced.stderr));
    assert_eq!(std::fs::read_to_string(fresh.known_hosts()).unwrap(), kh);

    // accept-new without a terminal: the same, the first key recorded as accept-new does.
    let fresh = Fresh::new();
    let out = discover(&fresh, &["--host-key-policy", "accept-new"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(mode(&fresh.known_hosts()), 0o600);
    assert_eq!(hostnames(&fresh), every_node_answers(3));

    // A key in the cluster that differs from one already known: refused, naming both entries,
    // nothing written.
    let fresh = Fresh::new();
    std::fs::create_dir_all(fresh.home.join(".ssh")).unwrap();
    let first = std::fs::read_to_string(lab.dir.path().join("known_hosts"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string();
    let other = lab.dir.path().join("other_rsa");
    let gen = Command::new("ssh-keygen")
        .args(["-q", "-t", "rsa", "-b", "2048", "-N", "", "-f"])
        .arg(&other)
        .status()
        .unwrap();
    assert!(gen.success());
    let other_pub = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let other_pub: Vec<&str> = other_pub.split_whitespace().take(2).collect();
    let before = format!("{first}\n127.{net}.0.3 {}\n", other_pub.join(" "));
    std::fs::write(fresh.known_hosts(), &before).unwrap();
    let out = discover(&fresh, &[]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains(&format!(
            "host key for 127.{net}.0.3 (node pve3) changed: the cluster's {from}:/etc/pve/nodes/pve3/ssh_known_hosts:1 differs from {}:2",
            fresh.known_hosts().display()
        )),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(fresh.known_hosts()).unwrap(),
        before
    );
    assert!(!fresh.work.join("inventory").exists(), "{err}");
}

#[test]
fn discover_from_an_inventory_node_and_the_global_known_hosts_on_a_node() {
    let net = 93;
    let Some(lab) = Lab::up(
        "discover_from_an_inventory_node_and_the_global_known_hosts_on_a_node",
        net,
        2,
        &[],
    ) else {
        return;
    };
    let d = lab.dir.path();
    // An inventory in another directory, with its own known_hosts and an explicit port.
    let inv_dir = d.join("site");
    std::fs::create_dir_all(&inv_dir).unwrap();
    std::fs::copy(d.join("known_hosts"), inv_dir.join("kh")).unwrap();
    std::fs::copy(d.join("id_ed25519"), inv_dir.join("key")).unwrap();
    let inv = std::fs::read_to_string(lab.inventory())
        .unwrap()
        .replace(
            "known_hosts = [\"known_hosts\"]",
            "known_hosts = [\"kh\"]\nport = 22",
        )
        .replace(
            "identity_files = [\"id_ed25519\"]",
            "identity_files = [\"key\"]",
        );
    let inv_path = inv_dir.join("inventory.toml");
    std::fs::write(&inv_path, inv).unwrap();
    let out_path = d.join("elsewhere/new.toml");
    let out = command()
        .args(["-i", inv_path.to_str().unwrap()])
        .args(["inventory", "discover", "--from", "pve1", "-o"])
        .arg(&out_path)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let written = std::fs::read_to_string(&out_path).unwrap();
    for line in [
        "user = \"root\"".to_string(),
        "port = 22".to_string(),
        format!("identity_files = [\"{}\"]", inv_dir.join("key").display()),
        format!("known_hosts = [\"{}\"]", inv_dir.join("kh").display()),
        "ssh_config = false".to_string(),
    ] {
        assert!(written.lines().any(|l| l == line), "{line}:\n{written}");
    }
    // It reaches every node as it is, from another directory, with no home directory.
    let exec = command()
        .args([
            "-i",
            out_path.to_str().unwrap(),
            "--json",
            "exec",
            "--",
            "hostname",
        ])
        .current_dir("/")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(exec.status.code(), Some(0), "{}", text(&exec.stderr));
    let names: Vec<String> = json_of(&exec)["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["stdout"].as_str().unwrap().trim_end().to_string())
        .collect();
    assert_eq!(names, ["pve1", "pve2"]);

    // On a node, without an inventory or a ~/.ssh/known_hosts: the peers are verified by
    // /etc/ssh/ssh_known_hosts, the link into pmxcfs.
    install_pvefleet_with_key(&lab, "pve1");
    let run = "cd /root && /tmp/pvefleet --json exec -- hostname";
    let (code, stdout, stderr) = lab.ssh("pve1", run);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let ok: Vec<&str> = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["status"].as_str().unwrap())
        .collect();
    assert_eq!(ok, ["ok", "ok"], "{stdout}");
    assert_eq!(
        lab.sh("pve1", "ls -A /root/.ssh")
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["id_ed25519"],
        "strict wrote a user known_hosts"
    );
    // Without it the same run is refused: it was the global file that verified them.
    lab.sh("pve1", "mv /etc/ssh/ssh_known_hosts /etc/ssh/moved");
    let (code, stdout, stderr) = lab.ssh("pve1", "cd /root && /tmp/pvefleet --json exec -- true");
    assert_eq!(code, 3, "{stdout}{stderr}");
    assert!(
        node_errors(&stdout)
            .iter()
            .all(|e| e.contains("is not known")),
        "{stdout}{stderr}"
    );
    // A changed key in it counts: the cluster's entry for pve2 replaced by another key.
    lab.sh(
        "pve1",
        "ln -s /etc/pve/priv/known_hosts /etc/ssh/ssh_known_hosts && rm /etc/ssh/moved",
    );
    let other = lab.sh("pve1", "cut -d' ' -f1,2 /etc/ssh/ssh_host_rsa_key.pub");
    let pve2 = format!("127.{net}.0.2");
    lab.sh(
        "pve1",
        &format!(
            "cp /etc/pve/priv/known_hosts /tmp/kh && sed -i '/^{pve2} /d; /^pve2 /d' /etc/pve/priv/known_hosts \
             && echo '{pve2} {}' >> /etc/pve/priv/known_hosts",
            other.trim()
        ),
    );
    let (code, stdout, stderr) = lab.ssh(
        "pve1",
        "cd /root && /tmp/pvefleet --json -l pve2 exec -- true; r=$?; cp /tmp/kh /etc/pve/priv/known_hosts; exit $r",
    );
    assert_eq!(code, 3, "{stdout}{stderr}");
    let errors = node_errors(&stdout);
    assert_eq!(errors.len(), 1, "{stdout}");
    assert!(
        errors[0].starts_with(&format!(
            "host key for {pve2} changed: offending entry in /etc/ssh/ssh_known_hosts:"
        )),
        "{stdout}{stderr}"
    );
}

/// The `error` of each node of an `exec --json` document.
fn node_errors(json: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["error"].as_str().unwrap_or("").to_string())
        .collect()
}

/// Copy pvefleet and the lab's client key (as root's default identity) onto `node`.
fn install_pvefleet_with_key(lab: &Lab, node: &str) {
    for (local, remote) in [
        (
            PathBuf::from(env!("CARGO_BIN_EXE_pvefleet")),
            "/tmp/pvefleet",
        ),
        (lab.dir.path().join("id_ed25519"), "/root/.ssh/id_ed25519"),
    ] {
        let file = std::fs::File::open(&local).unwrap();
        let out = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lab/lab"))
            .args([
                "exec",
                node,
                &format!(
                    "mkdir -p /root/.ssh && chmod 700 /root/.ssh && cat > {remote} && chmod 700 {remote}"
                ),
                "--dir",
            ])
            .arg(lab.dir.path())
            .stdin(Stdio::from(file))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
}
