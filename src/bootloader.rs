//! Which boot loader reads the kernel command line on a node, which file holds that line, and
//! what makes an edit of it reach the next boot (DOMAIN.md §4 and §11).
//!
//! One detection for everything that needs it: the `gpu` probe reports it, and the playbook
//! engine asks it which file a `kernel_cmdline` step edits and what it runs afterwards. This
//! module sits below both (it knows no SSH, no probe and no playbook): a POSIX `sh` snippet that
//! gathers the evidence ([`SNIPPET`]) and a pure parser of that evidence into a [`BootSetup`].
//!
//! The three cases, told apart by `proxmox-boot-tool status` (proxmox-kernel-helper,
//! `src/bin/proxmox-boot-tool`, functions `status` and `_status_detail`):
//! - exit 2 with `E: /etc/kernel/proxmox-boot-uuids does not exist.`: plain GRUB, the command
//!   line is `GRUB_CMDLINE_LINUX_DEFAULT` in `/etc/default/grub` (or a `/etc/default/grub.d/*.cfg`
//!   that sets it again: those are sourced after it), applied by `update-grub`;
//! - exit 0, `System currently booted with uefi|legacy bios`, then one
//!   `XXXX-XXXX is configured with: uefi (versions: ...)` line per ESP: systemd-boot, the
//!   command line is `/etc/kernel/cmdline`, applied by `proxmox-boot-tool refresh`;
//! - the same with `grub (versions: ...)` (ZFS root on legacy BIOS, or UEFI with Secure Boot):
//!   GRUB installed on the ESPs by proxmox-boot-tool. The line is still in `/etc/default/grub`,
//!   but `update-grub` alone writes `/boot/grub/grub.cfg` on the root file system, which no
//!   firmware reads; `proxmox-boot-tool refresh` bind-mounts each ESP on `/boot` and runs
//!   `update-grub` there (hook `zz-proxmox-boot`, function `update_esp_func`).

use serde::{Deserialize, Serialize};

/// Gathers the evidence; a macro so that probes can `concat!` it into their own snippets.
macro_rules! boot_evidence_sh {
    () => {
        r#"if [ -d /sys/firmware/efi ]; then echo "@@boot_efi yes"; else echo "@@boot_efi no"; fi
echo "@@boot_cmdline $(cat /proc/cmdline 2>/dev/null)"
echo "@@sub boot_pbt"
if command -v proxmox-boot-tool >/dev/null 2>&1; then
  proxmox-boot-tool status 2>&1
  echo "@@boot_pbt_rc $?"
else
  echo "@@boot_pbt_rc missing"
fi
echo "@@sub boot_grub_d"
for f in /etc/default/grub.d/*.cfg; do
  [ -f "$f" ] && grep -nE '^[[:space:]]*(export[[:space:]]+)?GRUB_CMDLINE_LINUX(_DEFAULT)?=' "$f" 2>/dev/null | sed "s|^|$f:|"
done
echo "@@boot_end""#
    };
}
pub(crate) use boot_evidence_sh;

/// The POSIX `sh` snippet whose output [`parse`] reads: `/sys/firmware/efi`, `/proc/cmdline`,
/// `proxmox-boot-tool status` (output and exit code) and the `/etc/default/grub.d/*.cfg` lines
/// that set `GRUB_CMDLINE_LINUX_DEFAULT` or `GRUB_CMDLINE_LINUX` (as `file:line:text`). It
/// changes nothing on the node (`proxmox-boot-tool status` only mounts ESPs read-only in a
/// private namespace to list them).
pub const SNIPPET: &str = boot_evidence_sh!();

/// The main configuration file of GRUB on Debian.
pub const ETC_DEFAULT_GRUB: &str = "/etc/default/grub";
/// The kernel command line of systemd-boot entries written by proxmox-boot-tool.
pub const ETC_KERNEL_CMDLINE: &str = "/etc/kernel/cmdline";
/// Regenerates `/boot/grub/grub.cfg` (plain GRUB).
pub const UPDATE_GRUB: &str = "update-grub";
/// Copies kernels and the command line to every ESP that proxmox-boot-tool manages.
pub const PBT_REFRESH: &str = "proxmox-boot-tool refresh";

/// Which boot loader reads the kernel command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Loader {
    /// GRUB from the root file system (ext4/LVM installs): `/etc/default/grub` + `update-grub`.
    Grub,
    /// GRUB on ESPs managed by proxmox-boot-tool (ZFS root on legacy BIOS, UEFI with Secure
    /// Boot): `/etc/default/grub` + `proxmox-boot-tool refresh`.
    GrubPbt,
    /// systemd-boot (ZFS root on UEFI): `/etc/kernel/cmdline` + `proxmox-boot-tool refresh`.
    SystemdBoot,
}

impl Loader {
    /// A short human name.
    pub fn describe(self) -> &'static str {
        match self {
            Loader::Grub => "GRUB",
            Loader::GrubPbt => "GRUB managed by proxmox-boot-tool",
            Loader::SystemdBoot => "systemd-boot",
        }
    }
}

/// How the command-line file is written, so the caller picks the right edit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CmdlineFormat {
    /// A shell-sourced GRUB file: edit the `GRUB_CMDLINE_LINUX_DEFAULT="..."` line.
    GrubDefault,
    /// One line of parameters (`/etc/kernel/cmdline`).
    KernelCmdline,
}

/// One ESP listed by `proxmox-boot-tool status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Esp {
    /// The ESP's VFAT UUID (`5D5C-1A2B`).
    pub uuid: String,
    /// Set up for systemd-boot (`uefi (versions: ...)`).
    pub uefi: bool,
    /// Set up for GRUB (`grub (versions: ...)`).
    pub grub: bool,
    /// Kernel versions on it.
    pub versions: Vec<String>,
}

/// A `/etc/default/grub.d/*.cfg` line that sets the GRUB command line again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrubOverride {
    /// The file.
    pub file: String,
    /// Its line number (1-based).
    pub line: u32,
    /// `GRUB_CMDLINE_LINUX_DEFAULT` or `GRUB_CMDLINE_LINUX`.
    pub key: String,
    /// The value as written (quotes removed).
    pub value: String,
    /// It replaces the earlier value (does not mention `$KEY`), so edits of
    /// `/etc/default/grub` lose to it.
    pub replaces: bool,
}

/// What the evidence says about the node's boot set-up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootSetup {
    /// The boot loader.
    pub loader: Loader,
    /// Booted by UEFI (`/sys/firmware/efi` exists).
    pub uefi: bool,
    /// The running kernel's command line (`/proc/cmdline`).
    pub running_cmdline: String,
    /// proxmox-boot-tool is installed.
    pub pbt_installed: bool,
    /// ESPs managed by proxmox-boot-tool (empty on plain GRUB).
    pub esps: Vec<Esp>,
    /// The file whose edit changes the next boot's command line.
    pub cmdline_file: String,
    /// How that file is written.
    pub cmdline_format: CmdlineFormat,
    /// What to run after editing it, in order.
    pub refresh: Vec<String>,
    /// `/etc/default/grub.d/*.cfg` lines that set the command line again (GRUB loaders only
    /// read them; listed on systemd-boot too, where they do nothing).
    pub grub_d: Vec<GrubOverride>,
    /// Oddities worth telling the operator (stale ESP list, ...).
    pub notes: Vec<String>,
}

/// Where a `kernel_cmdline` edit goes and what applies it: what the playbook engine needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdlineTarget {
    /// The file to edit.
    pub path: String,
    /// How to edit it.
    pub format: CmdlineFormat,
    /// Commands to run after the edit, in order.
    pub refresh: Vec<String>,
}

impl BootSetup {
    /// The file to edit, its format and the commands that make the edit reach the next boot.
    pub fn cmdline_target(&self) -> CmdlineTarget {
        CmdlineTarget {
            path: self.cmdline_file.clone(),
            format: self.cmdline_format,
            refresh: self.refresh.clone(),
        }
    }
}

/// The evidence could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BootError {
    /// A marker the snippet always prints is missing: the output was cut short.
    #[error("boot-loader evidence cut short: no `@@{0}` line")]
    Truncated(&'static str),
    /// `proxmox-boot-tool status` exited in a way it never does.
    #[error("proxmox-boot-tool status exited with {rc}: {first_line}")]
    UnexpectedPbt {
        /// The exit code as printed.
        rc: String,
        /// Its first line of output.
        first_line: String,
    },
}

fn marker<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let prefix = format!("@@{key}");
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(&prefix)?;
        if rest.is_empty() {
            Some("")
        } else {
            rest.strip_prefix(' ')
        }
    })
}

fn section<'a>(text: &'a str, name: &str) -> &'a str {
    let marker = format!("@@sub {name}\n");
    let Some(at) = text.find(&marker) else {
        return "";
    };
    let rest = &text[at + marker.len()..];
    let mut end = 0;
    for line in rest.split_inclusive('\n') {
        if line.starts_with("@@") {
            break;
        }
        end += line.len();
    }
    &rest[..end]
}

/// Parse one `XXXX-XXXX is configured with: uefi (versions: a, b), grub (versions: c)` line.
pub fn parse_esp_line(line: &str) -> Option<Esp> {
    let (uuid, what) = line.trim().split_once(" is configured with: ")?;
    let mut esp = Esp {
        uuid: uuid.to_string(),
        uefi: false,
        grub: false,
        versions: Vec::new(),
    };
    // Split at "), " between the loaders; each part is `NAME` or `NAME (versions: ...)`.
    for part in what.split("), ") {
        let (name, versions) = match part.split_once(" (versions:") {
            Some((n, v)) => (n.trim(), v.trim().trim_end_matches(')')),
            None => (part.trim(), ""),
        };
        match name {
            "uefi" => esp.uefi = true,
            "grub" => esp.grub = true,
            // Older proxmox-boot-tool (before the versions were listed): `uefi,grub`.
            "uefi,grub" => {
                esp.uefi = true;
                esp.grub = true;
            }
            _ => {}
        }
        esp.versions.extend(
            versions
                .split(',')
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_string),
        );
    }
    Some(esp)
}

/// Parse one `FILE:LINE:TEXT` line of the grub.d section.
fn parse_grub_d_line(l: &str) -> Option<GrubOverride> {
    let (file, rest) = l.split_once(".cfg:")?;
    let (num, text) = rest.split_once(':')?;
    let text = text.trim();
    let text = text.strip_prefix("export").map_or(text, str::trim_start);
    let (key, value) = text.split_once('=')?;
    // A trailing comment after the closing quote is not part of the value.
    let value = value.trim();
    let value = match value.chars().next() {
        Some(q @ ('"' | '\'')) => value[1..].split(q).next().unwrap_or(""),
        _ => value.split_whitespace().next().unwrap_or(""),
    };
    Some(GrubOverride {
        file: format!("{file}.cfg"),
        line: num.parse().ok()?,
        key: key.trim().to_string(),
        replaces: !value.contains(&format!("${key}")) && !value.contains(&format!("${{{key}}}")),
        value: value.to_string(),
    })
}

/// Parse the output of [`SNIPPET`].
pub fn parse(text: &str) -> Result<BootSetup, BootError> {
    if marker(text, "boot_end").is_none() {
        return Err(BootError::Truncated("boot_end"));
    }
    let uefi = marker(text, "boot_efi").ok_or(BootError::Truncated("boot_efi"))? == "yes";
    let running_cmdline = marker(text, "boot_cmdline")
        .ok_or(BootError::Truncated("boot_cmdline"))?
        .trim()
        .to_string();
    let rc = marker(text, "boot_pbt_rc")
        .ok_or(BootError::Truncated("boot_pbt_rc"))?
        .trim();
    let pbt = section(text, "boot_pbt");
    let esps: Vec<Esp> = pbt.lines().filter_map(parse_esp_line).collect();
    let grub_d: Vec<GrubOverride> = section(text, "boot_grub_d")
        .lines()
        .filter_map(parse_grub_d_line)
        .collect();
    let sd_cmdline = running_cmdline.starts_with("initrd=\\EFI\\");
    let mut notes = Vec::new();
    let loader = match rc {
        "missing" => {
            notes.push("proxmox-boot-tool is not installed (not a Proxmox VE node?)".into());
            Loader::Grub
        }
        // "Exits with 0 if any ESP is configured, else with 2" (proxmox-boot-tool help).
        "2" => Loader::Grub,
        "0" => {
            let (any_uefi, any_grub) = (esps.iter().any(|e| e.uefi), esps.iter().any(|e| e.grub));
            if esps.is_empty() {
                notes.push(
                    "proxmox-boot-tool lists no usable ESP (stale /etc/kernel/proxmox-boot-uuids?)"
                        .into(),
                );
            }
            // zz-proxmox-boot writes systemd-boot entries only when booted by UEFI and the
            // ESP has no GRUB; otherwise it runs update-grub on the ESP.
            if !uefi {
                Loader::GrubPbt
            } else if any_uefi && !any_grub {
                Loader::SystemdBoot
            } else if any_grub && !any_uefi {
                Loader::GrubPbt
            } else if sd_cmdline {
                Loader::SystemdBoot
            } else if running_cmdline.starts_with("BOOT_IMAGE=") {
                Loader::GrubPbt
            } else {
                Loader::SystemdBoot
            }
        }
        other => {
            return Err(BootError::UnexpectedPbt {
                rc: other.to_string(),
                first_line: pbt.lines().next().unwrap_or("").to_string(),
            })
        }
    };
    let (cmdline_file, cmdline_format, refresh) = match loader {
        Loader::SystemdBoot => (
            ETC_KERNEL_CMDLINE.to_string(),
            CmdlineFormat::KernelCmdline,
            vec![PBT_REFRESH.to_string()],
        ),
        Loader::Grub | Loader::GrubPbt => {
            // grub.d files are sourced after /etc/default/grub, in glob order: the last one
            // that replaces GRUB_CMDLINE_LINUX_DEFAULT decides it, so that is the one to edit.
            let file = grub_d
                .iter()
                .rev()
                .find(|o| o.key == "GRUB_CMDLINE_LINUX_DEFAULT" && o.replaces)
                .map_or(ETC_DEFAULT_GRUB.to_string(), |o| o.file.clone());
            let refresh = if loader == Loader::Grub {
                UPDATE_GRUB
            } else {
                PBT_REFRESH
            };
            (file, CmdlineFormat::GrubDefault, vec![refresh.to_string()])
        }
    };
    if loader != Loader::SystemdBoot && sd_cmdline {
        notes.push("running kernel was started by systemd-boot".into());
    }
    Ok(BootSetup {
        loader,
        uefi,
        running_cmdline,
        pbt_installed: rc != "missing",
        esps,
        cmdline_file,
        cmdline_format,
        refresh,
        grub_d,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(path: &str) -> String {
        let p = format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
    }

    fn evidence(efi: bool, cmdline: &str, pbt: &str, rc: &str, grub_d: &str) -> String {
        format!(
            "@@boot_efi {}\n@@boot_cmdline {cmdline}\n@@sub boot_pbt\n{pbt}@@boot_pbt_rc {rc}\n@@sub boot_grub_d\n{grub_d}@@boot_end\n",
            if efi { "yes" } else { "no" }
        )
    }

    const GRUB_CMDLINE: &str =
        "BOOT_IMAGE=/boot/vmlinuz-6.8.12-5-pve root=/dev/mapper/pve-root ro quiet";
    const SD_CMDLINE: &str = "initrd=\\EFI\\proxmox\\6.8.12-5-pve\\initrd.img-6.8.12-5-pve root=ZFS=rpool/ROOT/pve-1 boot=zfs";

    #[test]
    fn plain_grub_when_proxmox_boot_tool_has_no_esp_list() {
        let b = parse(&evidence(
            true,
            GRUB_CMDLINE,
            "E: /etc/kernel/proxmox-boot-uuids does not exist.\n",
            "2",
            "",
        ))
        .unwrap();
        assert_eq!(b.loader, Loader::Grub);
        assert_eq!(
            b.cmdline_target(),
            CmdlineTarget {
                path: "/etc/default/grub".into(),
                format: CmdlineFormat::GrubDefault,
                refresh: vec!["update-grub".into()],
            }
        );
        assert!(b.uefi && b.pbt_installed && b.esps.is_empty());
    }

    #[test]
    fn systemd_boot_from_uefi_esps() {
        let pbt = fixture("proxmox-boot-tool-status/uefi-2-esps-stale.txt");
        let b = parse(&evidence(true, SD_CMDLINE, &pbt, "0", "")).unwrap();
        assert_eq!(b.loader, Loader::SystemdBoot);
        assert_eq!(b.cmdline_file, "/etc/kernel/cmdline");
        assert_eq!(b.cmdline_format, CmdlineFormat::KernelCmdline);
        assert_eq!(b.refresh, vec!["proxmox-boot-tool refresh"]);
        assert_eq!(
            b.esps.len(),
            2,
            "the WARN line of a stale ESP is not an ESP"
        );
        assert!(b.esps.iter().all(|e| e.uefi && !e.grub));
        assert_eq!(b.esps[1].uuid, "CE07-78FC");
        assert_eq!(b.esps[1].versions.len(), 3);
    }

    #[test]
    fn grub_managed_by_proxmox_boot_tool_needs_refresh_not_update_grub() {
        let pbt = fixture("proxmox-boot-tool-status/legacy-grub-stale.txt");
        let b = parse(&evidence(false, GRUB_CMDLINE, &pbt, "0", "")).unwrap();
        assert_eq!(b.loader, Loader::GrubPbt);
        assert_eq!(b.cmdline_file, "/etc/default/grub");
        assert_eq!(b.cmdline_format, CmdlineFormat::GrubDefault);
        assert_eq!(b.refresh, vec!["proxmox-boot-tool refresh"]);
        assert_eq!(b.esps.len(), 1);
        assert!(b.esps[0].grub && !b.esps[0].uefi);
        assert_eq!(b.esps[0].versions, vec!["6.8.12-1-pve", "6.8.12-8-pve"]);
        // UEFI with Secure Boot: GRUB (shim-signed) on the ESP, also refreshed by the tool.
        let pbt = fixture("proxmox-boot-tool-status/uefi-grub-secure-boot.txt");
        let b = parse(&evidence(true, GRUB_CMDLINE, &pbt, "0", "")).unwrap();
        assert_eq!(b.loader, Loader::GrubPbt);
        assert_eq!(b.esps[0].uuid, "D34B-A25D");
    }

    #[test]
    fn esp_lines_old_and_new_formats() {
        let e = parse_esp_line(
            "2F1A-8C3D is configured with: uefi (versions: 6.8.12-4-pve, 6.8.12-5-pve), grub (versions: 6.8.12-5-pve)",
        )
        .unwrap();
        assert!(e.uefi && e.grub);
        assert_eq!(
            e.versions,
            vec!["6.8.12-4-pve", "6.8.12-5-pve", "6.8.12-5-pve"]
        );
        let old = parse_esp_line("2F1A-8C3D is configured with: uefi,grub").unwrap();
        assert!(old.uefi && old.grub && old.versions.is_empty());
        assert_eq!(parse_esp_line("System currently booted with uefi"), None);
    }

    #[test]
    fn both_loaders_on_an_esp_are_told_apart_by_the_running_cmdline() {
        let pbt = "System currently booted with uefi\nAAAA-BBBB is configured with: uefi (versions: 6.8.12-5-pve), grub (versions: 6.8.12-5-pve)\n";
        assert_eq!(
            parse(&evidence(true, SD_CMDLINE, pbt, "0", ""))
                .unwrap()
                .loader,
            Loader::SystemdBoot
        );
        assert_eq!(
            parse(&evidence(true, GRUB_CMDLINE, pbt, "0", ""))
                .unwrap()
                .loader,
            Loader::GrubPbt
        );
    }

    #[test]
    fn a_grub_d_file_that_replaces_the_default_line_is_the_one_to_edit() {
        let grub_d = "/etc/default/grub.d/10-append.cfg:2:GRUB_CMDLINE_LINUX_DEFAULT=\"$GRUB_CMDLINE_LINUX_DEFAULT iommu=pt\"\n\
                      /etc/default/grub.d/50-iommu.cfg:3:GRUB_CMDLINE_LINUX_DEFAULT=\"quiet intel_iommu=on\" # set by hand\n\
                      /etc/default/grub.d/60-linux.cfg:1:export GRUB_CMDLINE_LINUX='console=ttyS0'\n";
        let b = parse(&evidence(
            true,
            GRUB_CMDLINE,
            "E: /etc/kernel/proxmox-boot-uuids does not exist.\n",
            "2",
            grub_d,
        ))
        .unwrap();
        assert_eq!(b.grub_d.len(), 3);
        assert!(
            !b.grub_d[0].replaces,
            "appends to $GRUB_CMDLINE_LINUX_DEFAULT"
        );
        assert_eq!(b.grub_d[1].value, "quiet intel_iommu=on");
        assert_eq!(b.grub_d[1].line, 3);
        assert_eq!(b.grub_d[2].key, "GRUB_CMDLINE_LINUX");
        assert_eq!(b.cmdline_file, "/etc/default/grub.d/50-iommu.cfg");
    }

    #[test]
    fn missing_tool_cut_short_and_odd_exit_codes() {
        let b = parse(&evidence(
            false,
            "BOOT_IMAGE=/vmlinuz ro",
            "",
            "missing",
            "",
        ))
        .unwrap();
        assert_eq!(b.loader, Loader::Grub);
        assert!(!b.pbt_installed && !b.notes.is_empty());
        assert_eq!(
            parse("@@boot_efi yes\n@@boot_cmdline x\n@@sub boot_pbt\n").unwrap_err(),
            BootError::Truncated("boot_end")
        );
        let e = parse(&evidence(
            true,
            GRUB_CMDLINE,
            "Segmentation fault\n",
            "139",
            "",
        ))
        .unwrap_err();
        assert!(e.to_string().contains("139: Segmentation fault"), "{e}");
    }
}
