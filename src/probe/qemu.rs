//! `qemu`: running VMs still on the QEMU binary they started with, older than the one installed.
//!
//! An upgrade of `pve-qemu-kvm` replaces the binary on disk; a running VM keeps the QEMU process
//! (and its bugs and security holes) it was started with until that process ends: a live
//! migration (the target starts a new process), or a stop and start from the host (`qm reboot`;
//! a reboot inside the guest keeps the process). qemu-server reports the running version in
//! `qm status ID --verbose` as `running-qemu: MAJOR.MINOR.MICRO` (PVE/QemuServer.pm `vmstatus`:
//! QMP `query-version`, `unknown` when it does not answer; the CLI prints the top-level keys
//! sorted as `key: value`, nested ones indented by tabs, PVE/CLI/qm.pm `print_recursive_hash`).
//! The installed version is the package's (`dpkg-query -W -f='${Version}' pve-qemu-kvm`, e.g.
//! `9.0.2-4`: the QEMU release, then the Debian revision).

use serde::{Deserialize, Serialize};

use super::{marker, missing, Finding, Grade, ParseError, Thresholds};

/// Probe name.
pub const NAME: &str = "qemu";

/// The snippet: the installed package version, then per running VM (from `qm list`) the
/// top-level lines of `qm status ID --verbose`.
pub const SNIPPET: &str = r#"if ! command -v qm >/dev/null 2>&1; then echo "@@missing qm"; else
echo "@@installed $(dpkg-query -W -f='${Version}' pve-qemu-kvm 2>/dev/null)"
for id in $(qm list 2>/dev/null | awk 'NR > 1 && $3 == "running" {print $1}'); do
  echo "@@vm $id"
  qm status "$id" --verbose 2>/dev/null | grep -v '^[[:space:]]'
done
fi"#;

/// One running VM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunningVm {
    /// VMID.
    pub vmid: u32,
    /// Its name (`VM ID` when it has none, as qemu-server says).
    pub name: String,
    /// `running-qemu` (None when the status had none).
    pub running_qemu: Option<String>,
}

/// What the snippet found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QemuFacts {
    /// No `qm` (not a Proxmox VE node).
    pub no_qm: bool,
    /// The installed pve-qemu-kvm version (`9.0.2-4`), when installed.
    pub installed: Option<String>,
    /// The running VMs.
    pub vms: Vec<RunningVm>,
}

impl QemuFacts {
    /// The QEMU release of the installed package (`9.0.2` of `9.0.2-4`).
    pub fn installed_release(&self) -> Option<&str> {
        let v = self.installed.as_deref()?;
        let v = v.split_once(':').map_or(v, |(_, rest)| rest);
        Some(v.rsplit_once('-').map_or(v, |(up, _)| up))
    }
}

/// Parse the snippet's output.
pub fn parse(text: &str) -> Result<QemuFacts, ParseError> {
    let mut vms: Vec<RunningVm> = Vec::new();
    for line in text.lines() {
        if let Some(id) = line.strip_prefix("@@vm ") {
            let vmid = id.trim().parse().map_err(|_| ParseError {
                probe: NAME,
                message: format!("not a VMID: {line:?}"),
            })?;
            vms.push(RunningVm {
                vmid,
                name: format!("VM {vmid}"),
                running_qemu: None,
            });
        } else if let (Some(vm), Some((k, v))) = (vms.last_mut(), line.split_once(": ")) {
            match k {
                "name" => vm.name = v.trim().to_string(),
                "running-qemu" => vm.running_qemu = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    Ok(QemuFacts {
        no_qm: missing(text).contains(&"qm"),
        installed: marker(text, "installed")
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string),
        vms,
    })
}

/// Grade: `qemu.outdated`, naming every VM whose running QEMU is not the installed one.
pub fn grade(f: &QemuFacts, _t: &Thresholds) -> Vec<Finding> {
    const CHECK: &str = "qemu.outdated";
    if f.no_qm {
        return vec![Finding::new(
            CHECK,
            Grade::Skip,
            "qm not available (not a Proxmox VE node)",
        )];
    }
    let Some(installed) = f.installed_release() else {
        return vec![Finding::new(
            CHECK,
            Grade::Skip,
            "pve-qemu-kvm is not installed",
        )];
    };
    if f.vms.is_empty() {
        return vec![Finding::new(CHECK, Grade::Pass, "no running VMs")];
    }
    let behind: Vec<String> = f
        .vms
        .iter()
        .filter_map(|vm| {
            let r = vm.running_qemu.as_deref()?;
            (r != "unknown" && r != installed).then(|| format!("{} {} ({r})", vm.vmid, vm.name))
        })
        .collect();
    if behind.is_empty() {
        return vec![Finding::new(
            CHECK,
            Grade::Pass,
            format!(
                "{} running VM(s) on the installed QEMU {installed}",
                f.vms.len()
            ),
        )];
    }
    vec![Finding::new(
        CHECK,
        Grade::Warn,
        format!(
            "{} running VM(s) not on the installed QEMU {installed}: {}",
            behind.len(),
            behind.join(", ")
        ),
    )
    .fix("migrate each away and back (a drain does: pvefleet run playbooks/upgrade.toml drains nodes it reboots), or restart it from the host: qm reboot VMID (a reboot inside the guest keeps the old QEMU)")]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vms_on_an_older_qemu_are_named_with_their_version() {
        let f = parse(&crate::probe::fixture(
            "qm-status-verbose/after-upgrade.txt",
        ))
        .unwrap();
        assert_eq!(f.installed_release(), Some("9.0.2"));
        assert_eq!(f.vms.len(), 2);
        let g = grade(&f, &Thresholds::default());
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].grade, Grade::Warn);
        assert_eq!(
            g[0].detail,
            "1 running VM(s) not on the installed QEMU 9.0.2: 100 web (8.1.5)"
        );
        assert!(g[0].remediation.as_deref().unwrap().contains("qm reboot"));
    }

    #[test]
    fn no_running_vms_pass_and_no_qm_skips() {
        let g = grade(
            &parse("@@installed 9.0.2-4\n").unwrap(),
            &Thresholds::default(),
        );
        assert_eq!(
            (g[0].grade, g[0].detail.as_str()),
            (Grade::Pass, "no running VMs")
        );
        let g = grade(&parse("@@missing qm\n").unwrap(), &Thresholds::default());
        assert_eq!(g[0].grade, Grade::Skip);
        let g = grade(
            &parse("@@installed 9.0.2-4\n@@vm 100\nrunning-qemu: unknown\nstatus: running\n")
                .unwrap(),
            &Thresholds::default(),
        );
        assert_eq!(
            g[0].grade,
            Grade::Pass,
            "unknown is not a version: {}",
            g[0].detail
        );
    }
}
