//! `gpu`: display devices, drivers, IOMMU, boot loader and kernel command line, and the vfio /
//! GVT-g set-up (DOMAIN.md §4, with its traps: systemd-boot ignores /etc/default/grub,
//! `vfio_virqfd` is gone since kernel 6.2, vfio-pci and GVT-g exclude each other).

use serde::{Deserialize, Serialize};

use super::{marker, missing, sub, Finding, Grade, ParseError, Thresholds, IGPU_PASSTHROUGH};

/// Probe name.
pub const NAME: &str = "gpu";

/// The snippet: the shared boot-loader evidence ([`crate::bootloader::SNIPPET`]), then the
/// devices, IOMMU, kernel and vfio / GVT-g configuration.
pub const SNIPPET: &str = concat!(
    crate::bootloader::boot_evidence_sh!(),
    "\n",
    r#"if command -v lspci >/dev/null 2>&1; then
  echo "@@sub lspci"
  lspci -nnk 2>&1
else
  echo "@@missing lspci"
fi
echo "@@iommu_groups $(ls /sys/kernel/iommu_groups 2>/dev/null | wc -l)"
echo "@@kernel $(uname -r)"
echo "@@sub etc_kernel_cmdline"
cat /etc/kernel/cmdline 2>/dev/null
echo "@@sub grub_default"
grep -E '^[[:space:]]*GRUB_CMDLINE_LINUX(_DEFAULT)?=' /etc/default/grub 2>/dev/null
echo "@@sub modules"
grep -vE '^[[:space:]]*(#|$)' /etc/modules 2>/dev/null
echo "@@sub modprobe"
grep -shE '^[[:space:]]*(options|blacklist)[[:space:]]' /etc/modprobe.d/*.conf
echo "@@sub mdev"
ls /sys/bus/pci/devices/*/mdev_supported_types 2>/dev/null | grep -v ':$' | grep -v '^$'"#
);

/// One PCI device of `lspci -nnk` (display devices, and devices bound to vfio-pci).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PciDevice {
    /// PCI address (`00:02.0`).
    pub slot: String,
    /// Class id (`0300`).
    pub class: String,
    /// `vendor:device` (`8086:3e92`).
    pub id: String,
    /// Description.
    pub name: String,
    /// `Kernel driver in use`, absent when unbound.
    pub driver: Option<String>,
    /// `Kernel modules`.
    pub modules: Vec<String>,
}

/// Display classes: VGA, 3D, Display.
const DISPLAY_CLASSES: [&str; 3] = ["0300", "0302", "0380"];

/// A display-class device.
pub type Gpu = PciDevice;

/// Parse `lspci -nnk`, keeping display-class devices.
pub fn parse_lspci_nnk(text: &str) -> Result<Vec<Gpu>, ParseError> {
    Ok(parse_lspci_devices(text)?
        .into_iter()
        .filter(|d| DISPLAY_CLASSES.contains(&d.class.as_str()))
        .collect())
}

/// Parse `lspci -nnk` into every device (with its class id).
pub fn parse_lspci_devices(text: &str) -> Result<Vec<PciDevice>, ParseError> {
    let mut out: Vec<PciDevice> = Vec::new();
    let mut in_gpu = false;
    for line in text.lines() {
        if line.starts_with('\t') || line.starts_with("  ") {
            if !in_gpu {
                continue;
            }
            let g = out.last_mut().expect("in a device");
            let l = line.trim();
            if let Some(d) = l.strip_prefix("Kernel driver in use:") {
                g.driver = Some(d.trim().to_string());
            } else if let Some(m) = l.strip_prefix("Kernel modules:") {
                g.modules = m
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect();
            }
            continue;
        }
        in_gpu = false;
        if line.trim().is_empty() {
            continue;
        }
        // 00:02.0 VGA compatible controller [0300]: Intel Corporation ... [8086:3e92] (rev 02)
        let Some((slot, rest)) = line.split_once(' ') else {
            return Err(ParseError {
                probe: NAME,
                message: format!("lspci: unexpected line {line:?}"),
            });
        };
        let Some(open) = rest.find(" [") else {
            continue;
        };
        let Some(close) = rest[open..].find("]:") else {
            continue;
        };
        let class = &rest[open + 2..open + close];
        let desc = rest[open + close + 2..].trim();
        let desc = match desc.rfind(" (rev ") {
            Some(i) => &desc[..i],
            None => desc,
        };
        let (name, id) = match (desc.rfind('['), desc.rfind(']')) {
            (Some(a), Some(b)) if b > a && desc[a + 1..b].contains(':') => {
                (desc[..a].trim(), &desc[a + 1..b])
            }
            _ => (desc, ""),
        };
        out.push(PciDevice {
            slot: slot.to_string(),
            class: class.to_string(),
            id: id.to_lowercase(),
            name: name.to_string(),
            driver: None,
            modules: Vec::new(),
        });
        in_gpu = true;
    }
    Ok(out)
}

pub use crate::bootloader::Loader as BootLoader;

/// What the probe found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuFacts {
    /// Display devices.
    pub gpus: Vec<Gpu>,
    /// Every device bound to vfio-pci, whatever its class (GPUs, HBAs, NICs passed through).
    pub passthrough: Vec<PciDevice>,
    /// lspci missing.
    pub lspci_missing: bool,
    /// IOMMU groups present.
    pub iommu_groups: usize,
    /// Running kernel command line.
    pub cmdline: String,
    /// Booted by UEFI.
    pub uefi: bool,
    /// Running kernel.
    pub kernel: String,
    /// Boot loader (`grub`, `grub-pbt`, `systemd-boot`).
    pub bootloader: BootLoader,
    /// The whole boot set-up: loader, ESPs, the file holding the command line, the refresh
    /// command, grub.d overrides.
    pub boot: crate::bootloader::BootSetup,
    /// The command line the boot loader is configured with (what the next boot gets after the
    /// boot loader is refreshed): GRUB's `GRUB_CMDLINE_LINUX(_DEFAULT)` or `/etc/kernel/cmdline`.
    pub configured_cmdline: String,
    /// Parameters in `/etc/default/grub` (also on systemd-boot nodes, where they do nothing).
    pub grub_params: String,
    /// Modules listed in /etc/modules.
    pub modules: Vec<String>,
    /// `options vfio-pci ids=` (lower case).
    pub vfio_ids: Vec<String>,
    /// Blacklisted modules.
    pub blacklisted: Vec<String>,
    /// GVT-g mediated device types available.
    pub mdev_types: Vec<String>,
}

/// The value of a shell assignment as GRUB's files write it: quotes removed, a trailing
/// comment after the closing quote dropped.
fn grub_value(v: &str) -> String {
    let v = v.trim();
    match v.chars().next() {
        Some(q @ ('"' | '\'')) => v[1..].split(q).next().unwrap_or("").trim().to_string(),
        _ => v.split_whitespace().next().unwrap_or("").to_string(),
    }
}

fn params(s: &str) -> Vec<&str> {
    s.split_whitespace().collect()
}

/// Parse the snippet's output.
pub fn parse(text: &str) -> Result<GpuFacts, ParseError> {
    let devices = match sub(text, "lspci") {
        Some(t) => parse_lspci_devices(t)?,
        None => Vec::new(),
    };
    let gpus: Vec<Gpu> = devices
        .iter()
        .filter(|d| DISPLAY_CLASSES.contains(&d.class.as_str()))
        .cloned()
        .collect();
    let passthrough: Vec<PciDevice> = devices
        .into_iter()
        .filter(|d| d.driver.as_deref() == Some("vfio-pci"))
        .collect();
    let boot = crate::bootloader::parse(text).map_err(|e| ParseError {
        probe: NAME,
        message: e.to_string(),
    })?;
    let bootloader = boot.loader;
    let cmdline = boot.running_cmdline.clone();
    let etc_kernel = sub(text, "etc_kernel_cmdline")
        .unwrap_or("")
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    // What GRUB will get: /etc/default/grub, then the grub.d files sourced after it (a line
    // that does not mention its own key replaces the earlier value).
    let mut linux = String::new();
    let mut default = String::new();
    let grub_default = sub(text, "grub_default").unwrap_or("");
    let assignments = grub_default
        .lines()
        .filter_map(|l| {
            let (k, v) = l.trim().split_once('=')?;
            Some((k.trim().to_string(), grub_value(v), true))
        })
        .chain(
            boot.grub_d
                .iter()
                .map(|o| (o.key.clone(), o.value.clone(), o.replaces)),
        );
    for (key, value, replaces) in assignments {
        let slot = match key.as_str() {
            "GRUB_CMDLINE_LINUX" => &mut linux,
            "GRUB_CMDLINE_LINUX_DEFAULT" => &mut default,
            _ => continue,
        };
        if replaces {
            *slot = value;
        } else {
            // `"$GRUB_CMDLINE_LINUX_DEFAULT iommu=pt"`: the earlier value, then the rest.
            let own = [format!("${key}"), format!("${{{key}}}")];
            let extra: Vec<&str> = value
                .split_whitespace()
                .filter(|w| !own.iter().any(|o| o == w))
                .collect();
            *slot = format!("{} {}", slot, extra.join(" ")).trim().to_string();
        }
    }
    let grub_params = format!("{linux} {default}").trim().to_string();
    let configured_cmdline = match bootloader {
        BootLoader::SystemdBoot => etc_kernel,
        _ => grub_params.clone(),
    };
    let mut vfio_ids = Vec::new();
    let mut blacklisted = Vec::new();
    for l in sub(text, "modprobe").unwrap_or("").lines() {
        let w: Vec<&str> = l.split_whitespace().collect();
        match w.as_slice() {
            ["options", m, rest @ ..] if *m == "vfio-pci" || *m == "vfio_pci" => {
                for opt in rest {
                    if let Some(ids) = opt.strip_prefix("ids=") {
                        vfio_ids.extend(ids.split(',').map(|s| s.to_lowercase()));
                    }
                }
            }
            ["blacklist", m, ..] => blacklisted.push(m.to_string()),
            _ => {}
        }
    }
    Ok(GpuFacts {
        gpus,
        passthrough,
        lspci_missing: missing(text).contains(&"lspci"),
        iommu_groups: marker(text, "iommu_groups")
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0),
        uefi: boot.uefi,
        kernel: marker(text, "kernel").unwrap_or("").trim().to_string(),
        cmdline,
        bootloader,
        boot,
        configured_cmdline,
        grub_params,
        modules: sub(text, "modules")
            .unwrap_or("")
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_string)
            .collect(),
        vfio_ids,
        blacklisted,
        mdev_types: sub(text, "mdev")
            .unwrap_or("")
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect(),
    })
}

/// Grade: `gpu.bootloader`, `gpu.passthrough`, `gpu.devices`, `gpu.iommu`, `gpu.driver`,
/// `gpu.cmdline`, `gpu.vfio_virqfd`, `gpu.gvt_conflict`.
pub fn grade(f: &GpuFacts, _t: &Thresholds) -> Vec<Finding> {
    let mut out = Vec::new();
    out.push(Finding::new(
        "gpu.bootloader",
        Grade::Pass,
        format!(
            "{}: kernel command line in {}, applied by {}",
            f.boot.loader.describe(),
            f.boot.cmdline_file,
            f.boot.refresh.join(" && ")
        ),
    ));
    if !f.passthrough.is_empty() {
        let list: Vec<String> = f
            .passthrough
            .iter()
            .map(|d| format!("{} [{}] {} ({})", d.slot, d.class, d.name, d.id))
            .collect();
        out.push(Finding::new(
            "gpu.passthrough",
            Grade::Pass,
            format!("bound to vfio-pci: {}", list.join("; ")),
        ));
    }
    if f.modules.iter().any(|m| m == "vfio_virqfd") {
        out.push(
            Finding::new(
                "gpu.vfio_virqfd",
                Grade::Warn,
                "/etc/modules lists vfio_virqfd, built into vfio since kernel 6.2: it logs \"Failed to find module\" at every boot",
            )
            .fix("remove vfio_virqfd from /etc/modules (pvefleet run playbooks/igpu-passthrough.toml does)"),
        );
    }
    // Parameters configured where the boot loader does not read them (systemd-boot trap).
    if f.bootloader == BootLoader::SystemdBoot {
        let ignored: Vec<&str> = params(&f.grub_params)
            .into_iter()
            .filter(|p| *p != "quiet" && !params(&f.configured_cmdline).contains(p))
            .collect();
        if !ignored.is_empty() {
            out.push(
                Finding::new(
                    "gpu.cmdline",
                    Grade::Warn,
                    format!(
                        "systemd-boot ignores /etc/default/grub: {} only there; put it in /etc/kernel/cmdline and run proxmox-boot-tool refresh",
                        ignored.join(" ")
                    ),
                )
                .fix(IGPU_PASSTHROUGH),
            );
        }
    }
    let running = params(&f.cmdline);
    let pending: Vec<&str> = params(&f.configured_cmdline)
        .into_iter()
        .filter(|p| !running.contains(p) && !p.starts_with("root=") && !p.starts_with("boot="))
        .collect();
    if !pending.is_empty() {
        let how = f.boot.refresh.join(" && ");
        out.push(Finding::new(
            "gpu.cmdline",
            Grade::Warn,
            format!(
                "configured but not running: {} ({how}, then reboot)",
                pending.join(" ")
            ),
        ));
    }
    if f.lspci_missing {
        out.push(Finding::new(
            "gpu.devices",
            Grade::Skip,
            "lspci is not installed",
        ));
        return out;
    }
    if f.gpus.is_empty() {
        out.push(Finding::new(
            "gpu.devices",
            Grade::Skip,
            "no display-class PCI device",
        ));
        return out;
    }
    for g in &f.gpus {
        let drv = g.driver.as_deref().unwrap_or("no driver");
        let wants_vfio = f.vfio_ids.contains(&g.id);
        let gvt = f.cmdline.contains("i915.enable_gvt=1") || f.modules.iter().any(|m| m == "kvmgt");
        if wants_vfio && gvt && g.id.starts_with("8086:") {
            out.push(
                Finding::new(
                    "gpu.gvt_conflict",
                    Grade::Fail,
                    format!("{} {}: vfio-pci ids and GVT-g (i915.enable_gvt/kvmgt) both configured; vfio-pci takes the iGPU and no mediated types appear", g.slot, g.id),
                )
                .fix("choose one mode: gpu_mode = \"passthrough\" or \"gvt-g\" in playbooks/igpu-passthrough.toml"),
            );
        }
        out.push(if wants_vfio && g.driver.as_deref() != Some("vfio-pci") {
            Finding::new(
                "gpu.driver",
                Grade::Fail,
                format!("{} {} is configured for vfio-pci but bound to {drv} (update-initramfs -u -k all and reboot; IOMMU on?)", g.slot, g.id),
            )
            .fix(IGPU_PASSTHROUGH)
        } else {
            Finding::new("gpu.driver", Grade::Pass, format!("{} {} bound to {drv}", g.slot, g.id))
        });
    }
    out.push(if f.iommu_groups > 0 {
        Finding::new("gpu.iommu", Grade::Pass, format!("IOMMU on ({} groups)", f.iommu_groups))
    } else {
        Finding::new(
            "gpu.iommu",
            Grade::Warn,
            format!(
                "IOMMU off (no IOMMU groups; kernel {}): no PCI passthrough possible; enable VT-d and intel_iommu=on",
                f.kernel
            ),
        )
        .fix(IGPU_PASSTHROUGH)
    });
    if !f.mdev_types.is_empty() {
        out.push(Finding::new(
            "gpu.gvt",
            Grade::Pass,
            format!("GVT-g types: {}", f.mdev_types.join(", ")),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // DOMAIN.md §4 quotes the M720q's line exactly; the -k lines follow lspci's format.
    const LSPCI: &str = "00:00.0 Host bridge [0600]: Intel Corporation 8th Gen Core Processor Host Bridge/DRAM Registers [8086:3ec2] (rev 07)
\tSubsystem: Lenovo 8th Gen Core Processor Host Bridge/DRAM Registers [17aa:3136]
\tKernel driver in use: skl_uncore
00:02.0 VGA compatible controller [0300]: Intel Corporation CoffeeLake-S GT2 [UHD Graphics 630] [8086:3e92]
\tSubsystem: Lenovo CoffeeLake-S GT2 [UHD Graphics 630] [17aa:3136]
\tKernel driver in use: i915
\tKernel modules: i915
00:1f.6 Ethernet controller [0200]: Intel Corporation Ethernet Connection (7) I219-LM [8086:15bb] (rev 10)
";

    #[test]
    fn display_devices_from_lspci() {
        let g = parse_lspci_nnk(LSPCI).unwrap();
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].slot, "00:02.0");
        assert_eq!(g[0].id, "8086:3e92");
        assert_eq!(
            g[0].name,
            "Intel Corporation CoffeeLake-S GT2 [UHD Graphics 630]"
        );
        assert_eq!(g[0].driver.as_deref(), Some("i915"));
        assert_eq!(g[0].modules, vec!["i915"]);
        let unbound = LSPCI.replace("\tKernel driver in use: i915\n", "");
        assert_eq!(parse_lspci_nnk(&unbound).unwrap()[0].driver, None);
        let nv = "01:00.0 VGA compatible controller [0300]: NVIDIA Corporation GP106 [GeForce GTX 1060 6GB] [10de:1c03] (rev a1)\n\tKernel modules: nvidiafb, nouveau\n";
        let g = parse_lspci_nnk(nv).unwrap();
        assert_eq!((g[0].id.as_str(), g[0].modules.len()), ("10de:1c03", 2));
        assert!(parse_lspci_nnk("").unwrap().is_empty());
    }

    #[test]
    fn real_captures_of_other_hardware() {
        use crate::probe::fixture;
        let g = parse_lspci_nnk(&fixture("lspci-nnk/alderlake-n-vfio-pci.txt")).unwrap();
        assert_eq!(g.len(), 1);
        assert_eq!(
            (g[0].id.as_str(), g[0].driver.as_deref()),
            ("8086:46d0", Some("vfio-pci"))
        );
        assert_eq!(g[0].name, "Intel Corporation Alder Lake-N [UHD Graphics]");
        assert_eq!(g[0].modules, vec!["i915"]);
        let g = parse_lspci_nnk(&fixture("lspci-nnk/gtx1650-nvidia-with-audio.txt")).unwrap();
        assert_eq!(g.len(), 1, "the audio function is not a display device");
        assert_eq!(g[0].id, "10de:1f91");
        assert_eq!(g[0].driver.as_deref(), Some("nvidia"));
        assert_eq!(g[0].modules, vec!["nouveau", "nvidia_drm", "nvidia"]);
    }

    /// The boot-loader evidence as [`crate::bootloader::SNIPPET`] prints it.
    fn boot(efi: bool, cmdline: &str, pbt: &str, rc: u8, grub_d: &str) -> String {
        format!(
            "@@boot_efi {}\n@@boot_cmdline {cmdline}\n@@sub boot_pbt\n{pbt}@@boot_pbt_rc {rc}\n@@sub boot_grub_d\n{grub_d}@@boot_end\n",
            if efi { "yes" } else { "no" }
        )
    }

    const NO_PBT: &str = "E: /etc/kernel/proxmox-boot-uuids does not exist.\n";

    fn out(cmdline: &str, groups: u32, extra: &str) -> String {
        format!(
            "{}@@sub lspci\n{LSPCI}@@iommu_groups {groups}\n@@kernel 6.8.12-5-pve\n@@sub etc_kernel_cmdline\n@@sub grub_default\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\nGRUB_CMDLINE_LINUX=\"\"\n{extra}",
            boot(true, cmdline, NO_PBT, 2, "")
        )
    }

    #[test]
    fn a_clean_grub_node_passes_and_iommu_off_warns() {
        let f = parse(&out(
            "BOOT_IMAGE=/boot/vmlinuz-6.8.12-5-pve root=/dev/mapper/pve-root ro quiet",
            14,
            "",
        ))
        .unwrap();
        assert_eq!(f.bootloader, BootLoader::Grub);
        assert!(f.uefi);
        let g = grade(&f, &Thresholds::default());
        assert!(g.iter().all(|x| x.grade == Grade::Pass), "{g:?}");
        let f = parse(&out("BOOT_IMAGE=/boot/vmlinuz root=/dev/x ro quiet", 0, "")).unwrap();
        let g = grade(&f, &Thresholds::default());
        assert_eq!(
            g.iter().find(|x| x.check == "gpu.iommu").unwrap().grade,
            Grade::Warn
        );
    }

    #[test]
    fn vfio_set_up_problems_are_found() {
        let extra = "@@sub modules\nvfio\nvfio_iommu_type1\nvfio_pci\nvfio_virqfd\nkvmgt\n@@sub modprobe\noptions vfio-pci ids=8086:3E92\nblacklist i915\n@@sub mdev\n";
        let f = parse(&out("BOOT_IMAGE=/x ro quiet i915.enable_gvt=1", 14, extra)).unwrap();
        assert_eq!(f.vfio_ids, vec!["8086:3e92"]);
        assert_eq!(f.blacklisted, vec!["i915"]);
        let g = grade(&f, &Thresholds::default());
        let by = |c: &str| g.iter().find(|x| x.check == c).map(|x| x.grade);
        assert_eq!(by("gpu.vfio_virqfd"), Some(Grade::Warn));
        assert_eq!(by("gpu.gvt_conflict"), Some(Grade::Fail));
        assert_eq!(
            by("gpu.driver"),
            Some(Grade::Fail),
            "configured for vfio but i915 bound"
        );
    }

    #[test]
    fn systemd_boot_ignores_grub_params() {
        let text = format!(
            "{}@@sub etc_kernel_cmdline\nroot=ZFS=rpool/ROOT/pve-1 boot=zfs\n@@sub grub_default\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet intel_iommu=on\"\n@@missing lspci\n",
            boot(
                true,
                "initrd=\\EFI\\proxmox\\6.8.12-5-pve\\initrd.img-6.8.12-5-pve root=ZFS=rpool/ROOT/pve-1 boot=zfs",
                "System currently booted with uefi\n5D5C-1A2B is configured with: uefi (versions: 6.8.12-5-pve)\n",
                0,
                ""
            )
        );
        let f = parse(&text).unwrap();
        assert_eq!(f.bootloader, BootLoader::SystemdBoot);
        let g = grade(&f, &Thresholds::default());
        assert!(
            g.iter().any(|x| x.check == "gpu.cmdline"
                && x.detail
                    .contains("systemd-boot ignores /etc/default/grub: intel_iommu=on")),
            "{g:?}"
        );
        assert!(g.iter().any(|x| x.grade == Grade::Skip));
    }

    #[test]
    fn grub_managed_by_proxmox_boot_tool_says_refresh() {
        let text = format!(
            "{}@@sub etc_kernel_cmdline\n@@sub grub_default\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet intel_iommu=on\" # for passthrough\n@@missing lspci\n",
            boot(
                false,
                "BOOT_IMAGE=/vmlinuz-6.8.12-8-pve root=ZFS=rpool/ROOT/pve-1 ro root=ZFS=rpool/ROOT/pve-1 boot=zfs quiet",
                &crate::probe::fixture("proxmox-boot-tool-status/legacy-grub-stale.txt"),
                0,
                ""
            )
        );
        let f = parse(&text).unwrap();
        assert_eq!(f.bootloader, BootLoader::GrubPbt);
        assert_eq!(
            f.configured_cmdline, "quiet intel_iommu=on",
            "trailing comment dropped"
        );
        let g = grade(&f, &Thresholds::default());
        let pending = g.iter().find(|x| x.check == "gpu.cmdline").unwrap();
        assert!(
            pending
                .detail
                .contains("intel_iommu=on (proxmox-boot-tool refresh, then reboot)"),
            "{}",
            pending.detail
        );
        let loader = g.iter().find(|x| x.check == "gpu.bootloader").unwrap();
        assert_eq!(
            loader.detail,
            "GRUB managed by proxmox-boot-tool: kernel command line in /etc/default/grub, applied by proxmox-boot-tool refresh"
        );
    }

    #[test]
    fn grub_d_files_count_in_the_configured_line() {
        let grub_d = "/etc/default/grub.d/iommu.cfg:1:GRUB_CMDLINE_LINUX_DEFAULT=\"$GRUB_CMDLINE_LINUX_DEFAULT iommu=pt\"\n";
        let text = format!(
            "{}@@sub etc_kernel_cmdline\n@@sub grub_default\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\nGRUB_CMDLINE_LINUX=\"\"\n@@missing lspci\n",
            boot(true, "BOOT_IMAGE=/x ro quiet", NO_PBT, 2, grub_d)
        );
        let f = parse(&text).unwrap();
        assert_eq!(f.configured_cmdline, "quiet iommu=pt");
        assert_eq!(
            f.boot.cmdline_file, "/etc/default/grub",
            "an append is not a replacement"
        );
        let replacing = grub_d.replace("$GRUB_CMDLINE_LINUX_DEFAULT ", "");
        let f = parse(&text.replace(grub_d, &replacing)).unwrap();
        assert_eq!(f.configured_cmdline, "iommu=pt");
        assert_eq!(f.boot.cmdline_file, "/etc/default/grub.d/iommu.cfg");
    }

    #[test]
    fn several_gpus_and_what_is_passed_through() {
        use crate::probe::fixture;
        // grep -A separators are not lspci output.
        let text: String = fixture("lspci-nnk/three-gpus-one-vfio-grep.txt")
            .lines()
            .filter(|l| *l != "--")
            .map(|l| format!("{l}\n"))
            .collect();
        let gpus = parse_lspci_nnk(&text).unwrap();
        let summary: Vec<(&str, Option<&str>)> = gpus
            .iter()
            .map(|g| (g.slot.as_str(), g.driver.as_deref()))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("03:00.0", Some("ast")),
                ("17:00.0", Some("vfio-pci")),
                ("65:00.0", Some("nvidia"))
            ]
        );
        assert_eq!(gpus[1].id, "10de:1ff2");
        assert_eq!(gpus[1].name, "NVIDIA Corporation TU117GL [T400 4GB]");
        // Non-display devices on vfio-pci: an HBA (header line of a real SAS2004, GitHub
        // eLvErDe/hwraid issue #21) and a NIC; the -k lines follow lspci's format.
        let hba_nic = "0c:00.0 Serial Attached SCSI controller [0107]: LSI Logic / Symbios Logic SAS2004 PCI-Express Fusion-MPT SAS-2 [Spitfire] [1000:0070] (rev 03)\n\tKernel driver in use: vfio-pci\n\tKernel modules: mpt3sas\n\
             00:1f.6 Ethernet controller [0200]: Intel Corporation Ethernet Connection (7) I219-LM [8086:15bb] (rev 10)\n\tKernel driver in use: e1000e\n";
        let out = format!(
            "{}@@sub lspci\n{text}{hba_nic}@@iommu_groups 30\n@@kernel 6.8.12-5-pve\n",
            boot(true, "BOOT_IMAGE=/x ro quiet", NO_PBT, 2, "")
        );
        let f = parse(&out).unwrap();
        assert_eq!(f.gpus.len(), 3, "the HBA and the NIC are not GPUs");
        let passed: Vec<(&str, &str, &str)> = f
            .passthrough
            .iter()
            .map(|d| (d.slot.as_str(), d.class.as_str(), d.id.as_str()))
            .collect();
        assert_eq!(
            passed,
            vec![
                ("17:00.0", "0300", "10de:1ff2"),
                ("0c:00.0", "0107", "1000:0070")
            ]
        );
        let g = grade(&f, &Thresholds::default());
        let pt = g.iter().find(|x| x.check == "gpu.passthrough").unwrap();
        assert_eq!(pt.grade, Grade::Pass);
        assert!(
            pt.detail.contains("0c:00.0 [0107] LSI Logic / Symbios Logic SAS2004 PCI-Express Fusion-MPT SAS-2 [Spitfire] (1000:0070)"),
            "{}",
            pt.detail
        );
        let one = parse_lspci_devices(&fixture("lspci-nnk/alderlake-n-vfio-pci.txt")).unwrap();
        assert_eq!(
            one.iter()
                .filter(|d| d.driver.as_deref() == Some("vfio-pci"))
                .count(),
            1
        );
    }
}
