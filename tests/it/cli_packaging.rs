//! What the Debian package relies on, without root, a lab or the package itself: `plan` and
//! `run` finding a playbook by name (in `./playbooks/`, then the shipped directory, here a
//! temporary one through `PVEFLEET_SHIPPED_PLAYBOOKS`), the man pages generated from the clap
//! definitions, the completion scripts, and `[package.metadata.deb]` naming files that exist.
//! Building and installing the package itself is `.ci/run`'s job.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use clap::CommandFactory;

/// The repository's own playbooks: what the package ships.
fn repo_playbooks() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("playbooks")
}

/// `pvefleet ARGS` in `cwd` with `shipped` as the shipped playbooks' directory.
fn pvefleet(cwd: &Path, shipped: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pvefleet"))
        .args(args)
        .current_dir(cwd)
        .env_remove("PVEFLEET_INVENTORY")
        .env("PVEFLEET_SHIPPED_PLAYBOOKS", shipped)
        .env("HOME", "/nonexistent-home")
        .output()
        .expect("run pvefleet")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A current directory holding an invalid inventory, so that a command that got past loading
/// its playbook stops at the inventory (exit 65, the error naming `bad-inventory.toml`) before
/// any connection.
fn dir_with_bad_inventory() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad-inventory.toml"), "[nodes\n").unwrap();
    dir
}

const BAD_INV: [&str; 2] = ["-i", "bad-inventory.toml"];

#[test]
fn plan_and_run_check_find_a_shipped_playbook_by_name() {
    let dir = dir_with_bad_inventory();
    for cmd in [&["plan"][..], &["run", "--check"][..]] {
        for name in ["fix-rrd", "fix-rrd.toml", "playbooks/fix-rrd.toml"] {
            let mut args = BAD_INV.to_vec();
            args.extend_from_slice(cmd);
            args.push(name);
            let out = pvefleet(dir.path(), &repo_playbooks(), &args);
            let err = stderr(&out);
            // Got past the playbook: the inventory is what stops it.
            assert_eq!(out.status.code(), Some(65), "{args:?}: {err}");
            assert!(
                err.contains("bad-inventory.toml:"),
                "{args:?}: expected the inventory error, got {err}"
            );
        }
    }
}

#[test]
fn the_playbook_found_is_the_shipped_file_unless_playbooks_dir_has_one() {
    let dir = tempfile::tempdir().unwrap();
    let shipped = dir.path().join("shipped");
    let cwd = dir.path().join("work");
    std::fs::create_dir_all(&shipped).unwrap();
    std::fs::create_dir_all(cwd.join("playbooks")).unwrap();
    // Invalid on line 2 in each place, so the error's location tells which file was read.
    std::fs::write(shipped.join("mine.toml"), "name = \"mine\"\nsteps = 3\n").unwrap();
    let out = pvefleet(&cwd, &shipped, &["plan", "mine"]);
    assert_eq!(out.status.code(), Some(65), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("{}:2:", shipped.join("mine.toml").display())),
        "{}",
        stderr(&out)
    );

    std::fs::write(cwd.join("playbooks/mine.toml"), "name = \"mine\"\nx = [\n").unwrap();
    let out = pvefleet(&cwd, &shipped, &["plan", "mine"]);
    assert_eq!(out.status.code(), Some(65), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("playbooks/mine.toml:2:"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains(&shipped.display().to_string()));
}

#[test]
fn an_unknown_playbook_name_lists_where_it_looked_and_the_shipped_names() {
    let dir = dir_with_bad_inventory();
    let shipped = repo_playbooks();
    let out = pvefleet(dir.path(), &shipped, &["run", "--check", "fix-rdd"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(65), "{err}");
    let mut names: Vec<String> = std::fs::read_dir(&shipped)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.contains(&"fix-rrd".to_string()), "{names:?}");
    let expected = format!(
        "pvefleet: no playbook \"fix-rdd\"; looked for:\n  fix-rdd\n  fix-rdd.toml\n  \
         playbooks/fix-rdd.toml\n  {}/fix-rdd.toml\nshipped playbooks (in {}): {}\n",
        shipped.display(),
        shipped.display(),
        names.join(", ")
    );
    assert_eq!(err, expected);
}

#[test]
fn a_missing_path_is_reported_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let out = pvefleet(
        dir.path(),
        &repo_playbooks(),
        &["plan", "elsewhere/fix-rrd.toml"],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(65), "{err}");
    assert!(err.contains("elsewhere/fix-rrd.toml"), "{err}");
    assert!(!err.contains("looked for"), "{err}");
}

/// Every subcommand path not hidden: `["run"]`, `["inventory", "show"]`, ...
fn visible_subcommands(cmd: &clap::Command, prefix: &[String], out: &mut Vec<Vec<String>>) {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let mut path = prefix.to_vec();
        path.push(sub.get_name().to_string());
        visible_subcommands(sub, &path, out);
        out.push(path);
    }
}

#[test]
fn man_pages_cover_every_subcommand_and_render() {
    let dir = tempfile::tempdir().unwrap();
    let files = pvefleet::app::manpage::write_pages(dir.path()).unwrap();
    let mut subs = Vec::new();
    visible_subcommands(&pvefleet::cli::Cli::command(), &[], &mut subs);
    let mut expected: Vec<PathBuf> = subs
        .iter()
        .map(|p| dir.path().join(format!("pvefleet-{}.1", p.join("-"))))
        .chain([dir.path().join("pvefleet.1")])
        .collect();
    expected.sort();
    assert_eq!(files, expected);
    assert!(files.iter().any(|f| f.ends_with("pvefleet-run.1")));

    let main = std::fs::read_to_string(dir.path().join("pvefleet.1")).unwrap();
    for s in ["run", "plan", "audit", "exec"] {
        assert!(main.contains(&format!("pvefleet\\-{s}(1)")), "{s}:\n{main}");
    }
    assert!(main.contains("/usr/share/pvefleet/playbooks/NAME.toml"));

    if Command::new("man").arg("--version").output().is_err() {
        eprintln!(
            "SKIPPED part of man_pages_cover_every_subcommand_and_render: no `man` to render with"
        );
        return;
    }
    for f in &files {
        let out = Command::new("man")
            .arg("-l")
            .arg(f)
            .env("MANWIDTH", "80")
            .env_remove("MAN_KEEP_FORMATTING")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}: {}", f.display(), stderr(&out));
        assert!(text.contains("NAME") && text.contains("SYNOPSIS"), "{text}");
        assert!(
            !String::from_utf8_lossy(&out.stderr).contains("warning"),
            "{}: {}",
            f.display(),
            stderr(&out)
        );
    }
}

#[test]
fn the_packaged_completion_scripts_are_valid_shell() {
    let dir = tempfile::tempdir().unwrap();
    let shipped = repo_playbooks();
    // bash is always there; zsh and fish are checked where installed.
    for (shell, check) in [
        ("bash", &["bash", "-n"][..]),
        ("zsh", &["zsh", "-n"][..]),
        ("fish", &["fish", "--no-execute"][..]),
    ] {
        let out = pvefleet(dir.path(), &shipped, &["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}: {}", stderr(&out));
        let script = dir.path().join(shell);
        std::fs::write(&script, &out.stdout).unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).contains("run"));
        match Command::new(check[0])
            .args(&check[1..])
            .arg(&script)
            .output()
        {
            Ok(o) => assert!(o.status.success(), "{shell}: {}", stderr(&o)),
            Err(_) if shell != "bash" => eprintln!("SKIPPED {shell} syntax check: not installed"),
            Err(e) => panic!("bash: {e}"),
        }
    }
}

#[test]
fn package_assets_exist_or_are_generated_by_the_build_script() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest: toml::Table =
        toml::from_str(&std::fs::read_to_string(root.join("Cargo.toml")).unwrap()).unwrap();
    let assets = manifest["package"]["metadata"]["deb"]["assets"]
        .as_array()
        .expect("[package.metadata.deb] assets");
    let script = std::fs::read_to_string(root.join("packaging/build-deb.sh")).unwrap();
    let mut targets = Vec::new();
    for a in assets {
        let a = a.as_array().unwrap();
        let (src, dest) = (a[0].as_str().unwrap(), a[1].as_str().unwrap());
        targets.push(dest.to_string());
        if src.starts_with("target/release/") {
            continue; // built by cargo
        }
        if let Some(generated) = src.strip_prefix("target/pvefleet-deb/") {
            let dir = generated.split('/').next().unwrap();
            assert!(
                script.contains(&format!("$gen/{dir}")),
                "{src}: build-deb.sh does not generate {dir}/"
            );
            continue;
        }
        let found = match src.split_once('*') {
            Some((dir_and_prefix, suffix)) => std::fs::read_dir(root.join(dir_and_prefix))
                .unwrap()
                .any(|e| e.unwrap().file_name().to_string_lossy().ends_with(suffix)),
            None => root.join(src).is_file(),
        };
        assert!(found, "{src}: no such file in the repository");
    }
    for dest in [
        "usr/bin/",
        "usr/share/man/man1/",
        "usr/share/bash-completion/completions/pvefleet",
        "usr/share/zsh/vendor-completions/_pvefleet",
        "usr/share/fish/vendor_completions.d/pvefleet.fish",
        "usr/share/pvefleet/playbooks/",
        "usr/share/pvefleet/playbooks/README.md",
    ] {
        assert!(targets.iter().any(|t| t == dest), "{dest} not packaged");
    }
}

/// The shipped systemd units: one file each in packaging/systemd/, every one an asset installed
/// into /lib/systemd/system, the timers' services present, and each passing `systemd-analyze
/// verify` (with the built binary as `/usr/bin/pvefleet`, man pages not looked up). A machine
/// without systemd-analyze fails the test unless PVEFLEET_SKIP_LAB=1 skips the check on purpose.
#[test]
fn the_systemd_units_are_packaged_and_verify() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let units = [
        "pvefleet-audit.service",
        "pvefleet-audit.timer",
        "pvefleet-upgrade.service",
        "pvefleet-upgrade.timer",
    ];
    let dir = root.join("packaging/systemd");
    let mut found: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    assert_eq!(found, units, "packaging/systemd/");
    let manifest: toml::Table =
        toml::from_str(&std::fs::read_to_string(root.join("Cargo.toml")).unwrap()).unwrap();
    let assets = manifest["package"]["metadata"]["deb"]["assets"]
        .as_array()
        .unwrap();
    for u in units {
        let src = format!("packaging/systemd/{u}");
        assert!(
            assets.iter().any(|a| a[0].as_str() == Some(src.as_str())
                && a[1].as_str() == Some("lib/systemd/system/")),
            "{src} is not installed into lib/systemd/system/ by [package.metadata.deb]"
        );
    }
    let audit = std::fs::read_to_string(dir.join("pvefleet-audit.service")).unwrap();
    assert!(
        audit.contains(
            "audit --compare /var/lib/pvefleet/last.json --save-json /var/lib/pvefleet/last.json"
        ),
        "{audit}"
    );
    assert!(audit.contains("StateDirectory=pvefleet"), "{audit}");
    let upgrade = std::fs::read_to_string(dir.join("pvefleet-upgrade.service")).unwrap();
    assert!(
        upgrade.contains("run upgrade --yes --window 02:00-05:00"),
        "{upgrade}"
    );
    assert!(upgrade.contains("SuccessExitStatus=4"), "{upgrade}");

    // systemd-analyze wants ExecStart's binary to exist: the built one stands in.
    let tmp = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for u in units {
        let text = std::fs::read_to_string(dir.join(u))
            .unwrap()
            .replace("/usr/bin/pvefleet", env!("CARGO_BIN_EXE_pvefleet"));
        let p = tmp.path().join(u);
        std::fs::write(&p, text).unwrap();
        paths.push(p);
    }
    let out = match Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&paths)
        .output()
    {
        Ok(o) => o,
        Err(e) if std::env::var_os("PVEFLEET_SKIP_LAB").is_some_and(|v| v == "1") => {
            eprintln!("SKIPPED systemd-analyze verify: {e}; skipped because PVEFLEET_SKIP_LAB=1");
            return;
        }
        Err(e) => panic!(
            "systemd-analyze: {e}: install systemd, or set PVEFLEET_SKIP_LAB=1 to skip the check \
             on purpose"
        ),
    };
    let err = stderr(&out);
    assert!(out.status.success(), "systemd-analyze verify: {err}");
    assert!(err.trim().is_empty(), "systemd-analyze verify: {err}");
}

/// The rolling reboot without packages is one shipped playbook, found by name (`run reboot`)
/// from any directory and listed by `pvefleet playbooks` with its purpose; the upgrade declares
/// the choice of reboot as bool variables (so `-e skip_reboot=maybe` is refused).
#[test]
fn the_reboot_playbook_is_shipped_and_found_by_name() {
    let dir = dir_with_bad_inventory();
    for cmd in [&["plan"][..], &["run", "--check"][..]] {
        let mut args = BAD_INV.to_vec();
        args.extend_from_slice(cmd);
        args.push("reboot");
        refused_with(dir.path(), &args, "bad-inventory.toml:");
    }
    let out = pvefleet(dir.path(), &repo_playbooks(), &["playbooks"]);
    let listed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        listed.contains("reboot             Rolling reboot without package changes"),
        "{listed}"
    );
    // A node never reached: the refusal comes before SSH.
    std::fs::write(
        dir.path().join("inv.toml"),
        "[nodes.pve1]\naddress = \"127.0.0.1\"\nport = 1\n",
    )
    .unwrap();
    let args = [
        "-i",
        "inv.toml",
        "plan",
        "upgrade",
        "-e",
        "skip_reboot=maybe",
    ];
    refused_with(
        dir.path(),
        &args,
        "`skip_reboot` is a bool in the playbook upgrade",
    );
}

/// `pvefleet ARGS` in `cwd` (the repository's playbooks shipped) is invalid input (65) saying
/// `what`.
fn refused_with(cwd: &Path, args: &[&str], what: &str) {
    let out = pvefleet(cwd, &repo_playbooks(), args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(65), "{args:?}: {err}");
    assert!(err.contains(what), "{args:?}: {err}");
}
