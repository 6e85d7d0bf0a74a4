//! The lab itself: stand-ins print the real formats, state persists across commands and reboots,
//! boot semantics follow the node's applied configuration, faults appear and clear.

use crate::common::lab::Lab;

fn fixture(path: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/{path}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// `Key   : value` keys, in order, with the column where the value starts.
fn keyed_lines(text: &str, sep: char) -> Vec<(String, usize)> {
    text.lines()
        .filter_map(|l| {
            let i = l.find(sep)?;
            let key = l[..i].trim_end().to_string();
            let col = l[i + 1..].len() - l[i + 1..].trim_start().len() + i + 1;
            (!key.is_empty()).then_some((key, col))
        })
        .collect()
}

#[test]
fn chronyc_tracking_has_the_real_fields_in_the_real_layout() {
    let Some(lab) = Lab::up(
        "chronyc_tracking_has_the_real_fields_in_the_real_layout",
        190,
        1,
        &[],
    ) else {
        return;
    };
    let sim = keyed_lines(&lab.sh("pve1", "chronyc tracking"), ':');
    for real in [
        "chronyc-tracking/stratum1-pps.txt",
        "chronyc-tracking/fedora-docs-slow.txt",
    ] {
        let real = keyed_lines(&fixture(real), ':');
        let real_keys: Vec<&String> = real.iter().map(|(k, _)| k).collect();
        let sim_keys: Vec<&String> = sim.iter().map(|(k, _)| k).collect();
        assert_eq!(sim_keys, real_keys);
        // Values start in the same column (chronyc pads keys to 16 characters).
        assert_eq!(sim[0].1, real[0].1);
    }
    let out = lab.sh("pve1", "chronyc tracking");
    assert!(out.contains("System time     : 0.0000"), "{out}");
    assert!(out.contains("seconds fast of NTP time") || out.contains("seconds slow of NTP time"));
}

#[test]
fn pvecm_status_matches_the_real_sections_and_quorum_arithmetic() {
    let Some(lab) = Lab::up(
        "pvecm_status_matches_the_real_sections_and_quorum_arithmetic",
        61,
        3,
        &[],
    ) else {
        return;
    };
    let out = lab.sh("pve2", "pvecm status");
    let real = fixture("pvecm-status/qdevice-2of4-nodes.txt");
    // Every key of the real "Quorum information" and "Votequorum information" sections is there,
    // in the same order, values in the same column.
    let want: Vec<(String, usize)> = keyed_lines(&real, ':')
        .into_iter()
        .filter(|(k, _)| !k.starts_with("0x") && !k.contains("Nodeid"))
        .collect();
    let got: Vec<(String, usize)> = keyed_lines(&out, ':')
        .into_iter()
        .filter(|(k, _)| want.iter().any(|(w, _)| w == k))
        .collect();
    assert_eq!(got, want, "{out}");
    assert!(out.contains("Quorate:          Yes"), "{out}");
    assert!(
        out.contains("Quorum:           2  \n"),
        "quorate quorum line keeps its 2 trailing spaces"
    );
    assert!(out.contains("Flags:            Quorate \n"), "{out}");
    assert!(
        out.contains("0x00000002          1 127.61.0.2 (local)"),
        "{out}"
    );

    // One node down: 2 of 3 votes is still quorate; two down is not ("Activity blocked").
    lab.fault("pve3", &["unreachable"]);
    let out = lab.sh("pve1", "pvecm status");
    assert!(
        out.contains("Total votes:      2") && out.contains("Quorate:          Yes"),
        "{out}"
    );
    assert!(!out.contains("127.61.0.3"), "{out}");
    let members = lab.sh("pve1", "cat /etc/pve/.members");
    let v: serde_json::Value = serde_json::from_str(&members).unwrap();
    assert_eq!(v["nodename"], "pve1");
    assert_eq!(v["nodelist"]["pve3"]["online"], 0);
    assert_eq!(v["nodelist"]["pve2"]["online"], 1);
    lab.fault("pve2", &["unreachable"]);
    // Inquorate, pvecm status exits 2: it execs corosync-quorumtool, whose exit says so.
    let (code, out, _) = lab.ssh("pve1", "pvecm status");
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("Quorate:          No"), "{out}");
    assert!(
        out.contains("Quorum:           2 Activity blocked"),
        "{out}"
    );
    lab.clear("pve2", Some("unreachable"));
    lab.clear("pve3", Some("unreachable"));
    assert!(lab
        .sh("pve1", "pvecm status")
        .contains("Total votes:      3"));
}

#[test]
fn ethtool_k_prints_the_real_feature_lines_and_k_changes_them() {
    let Some(lab) = Lab::up(
        "ethtool_k_prints_the_real_feature_lines_and_k_changes_them",
        62,
        1,
        &[],
    ) else {
        return;
    };
    let out = lab.sh("pve1", "ethtool -k eno1");
    assert!(out.starts_with("Features for eno1:\n"), "{out}");
    let line = regex_like_feature_line;
    for l in out.lines().skip(1) {
        assert!(line(l), "not an ethtool -k line: {l:?}");
    }
    for real in [
        "ethtool-k/eth0-all-off-openwrt.txt",
        "ethtool-k/e1000e-eno1-tso-gso-off-grep.txt",
    ] {
        for l in fixture(real).lines().filter(|l| !l.starts_with("Features")) {
            assert!(line(l), "the checker rejects a real line: {l:?}");
        }
    }
    // The order of the main features is the real one.
    let order = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| !l.starts_with('\t'))
            .filter_map(|l| l.split(':').next().map(str::to_string))
            .filter(|k| {
                k.ends_with("-offload") || k.ends_with("checksumming") || k == "scatter-gather"
            })
            .collect()
    };
    let real = order(&fixture("ethtool-k/eth0-all-off-openwrt.txt"));
    let sim: Vec<String> = order(&out)
        .into_iter()
        .filter(|k| real.contains(k))
        .collect();
    let real: Vec<String> = real.into_iter().filter(|k| sim.contains(k)).collect();
    assert!(sim.len() >= 8, "{sim:?}");
    assert_eq!(sim, real);

    assert!(out.contains("tcp-segmentation-offload: on\n"));
    let (code, k_out, _) = lab.ssh("pve1", "ethtool -K eno1 tso off gso off");
    assert_eq!(
        (code, k_out.as_str()),
        (0, ""),
        "ethtool -K prints nothing when all applied"
    );
    let out = lab.sh("pve1", "ethtool -k eno1");
    assert!(
        out.contains("tcp-segmentation-offload: off\n")
            && out.contains("generic-segmentation-offload: off\n")
    );
    assert!(out.contains("\ttx-tcp-segmentation: off\n"));
    let (code, _, err) = lab.ssh("pve1", "ethtool -K eno1 lro on");
    assert_ne!(code, 0, "a [fixed] feature cannot change: {err}");
    let info = lab.sh("pve1", "ethtool -i eno1");
    assert!(
        info.starts_with("driver: e1000e\n") && info.contains("bus-info: 0000:00:1f.6\n"),
        "{info}"
    );
}

fn regex_like_feature_line(l: &str) -> bool {
    let body = l.strip_prefix('\t').unwrap_or(l);
    let Some((name, rest)) = body.split_once(": ") else {
        return false;
    };
    let name_ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    let state_ok = matches!(
        rest,
        "on" | "off" | "on [fixed]" | "off [fixed]" | "on [requested off]" | "off [requested on]"
    );
    name_ok && state_ok
}

#[test]
fn lspci_and_sys_show_the_profile_hardware() {
    let Some(lab) = Lab::up(
        "lspci_and_sys_show_the_profile_hardware",
        63,
        2,
        &["--profile", "pve2:bios,gpu=none,nic=igb,pve=9"],
    ) else {
        return;
    };
    let gpu = lab.sh("pve1", "lspci -nn | grep -E '\\[03(00|02|80)\\]'");
    // DOMAIN.md §4 quotes this line exactly.
    assert_eq!(
        gpu,
        "00:02.0 VGA compatible controller [0300]: Intel Corporation CoffeeLake-S GT2 [UHD Graphics 630] [8086:3e92]\n"
    );
    let k = lab.sh("pve1", "lspci -nnk -s 00:02.0");
    assert!(
        k.contains("\tKernel driver in use: i915\n\tKernel modules: i915\n"),
        "{k}"
    );
    assert!(lab
        .sh("pve1", "test -d /sys/firmware/efi && echo uefi")
        .contains("uefi"));
    assert!(lab
        .sh("pve1", "readlink -f /sys/class/net/eno1/device")
        .ends_with("0000:00:1f.6\n"));
    assert!(lab
        .sh("pve1", "ls /sys/class/net/vmbr0/brif")
        .contains("eno1"));
    assert_eq!(
        lab.sh("pve2", "lspci -nn | grep -c '\\[0300\\]' || true"),
        "0\n"
    );
    assert_eq!(
        lab.sh("pve2", "test -d /sys/firmware/efi || echo bios"),
        "bios\n"
    );
    assert!(lab
        .sh("pve2", "ethtool -i enp1s0")
        .starts_with("driver: igb\n"));
    assert!(lab.sh("pve2", "pveversion").starts_with("pve-manager/9."));
    assert!(lab
        .sh("pve2", "ls /var/lib/rrdcached/db")
        .contains("pve-node-9.0"));
    assert!(lab
        .sh("pve1", "ls /var/lib/rrdcached/db")
        .contains("pve2-node"));
}

#[test]
fn grub_edits_take_effect_only_after_update_grub_and_a_reboot() {
    let Some(lab) = Lab::up(
        "grub_edits_take_effect_only_after_update_grub_and_a_reboot",
        64,
        2,
        &[],
    ) else {
        return;
    };
    let before = lab.boot_id("pve1");
    lab.sh("pve1", "sed -i 's/^GRUB_CMDLINE_LINUX_DEFAULT=.*/GRUB_CMDLINE_LINUX_DEFAULT=\"quiet intel_iommu=on\"/' /etc/default/grub");
    lab.reboot_and_wait("pve1");
    let after = lab.boot_id("pve1");
    assert_ne!(before, after, "a reboot gives a new boot id");
    assert!(
        !lab.sh("pve1", "cat /proc/cmdline")
            .contains("intel_iommu=on"),
        "not without update-grub"
    );
    assert!(
        lab.sh("pve1", "cat /etc/default/grub")
            .contains("intel_iommu=on"),
        "the file survives the reboot"
    );
    assert!(
        !lab.sh("pve2", "cat /etc/default/grub")
            .contains("intel_iommu"),
        "pve2 is not touched"
    );
    assert!(!std::fs::read_to_string("/etc/default/grub")
        .unwrap_or_default()
        .contains("pvelab"));
    lab.sh("pve1", "update-grub 2>/dev/null");
    lab.reboot_and_wait("pve1");
    let cmdline = lab.sh("pve1", "cat /proc/cmdline");
    assert!(
        cmdline.starts_with("BOOT_IMAGE=/boot/vmlinuz-") && cmdline.contains(" intel_iommu=on"),
        "{cmdline}"
    );
    assert!(lab
        .sh("pve1", "journalctl -b -k -q -g 'DMAR: IOMMU enabled'")
        .contains("DMAR: IOMMU enabled"));
}

#[test]
fn systemd_boot_nodes_use_etc_kernel_cmdline_and_proxmox_boot_tool() {
    let Some(lab) = Lab::up(
        "systemd_boot_nodes_use_etc_kernel_cmdline_and_proxmox_boot_tool",
        65,
        2,
        &["--profile", "pve1:systemd-boot"],
    ) else {
        return;
    };
    let status = lab.sh("pve1", "proxmox-boot-tool status");
    assert!(
        status.contains("System currently booted with uefi"),
        "{status}"
    );
    let (code, _, err) = lab.ssh("pve2", "proxmox-boot-tool status");
    assert_eq!(code, 2);
    assert!(
        err.contains("E: /etc/kernel/proxmox-boot-uuids does not exist."),
        "{err}"
    );
    // Trap: editing /etc/default/grub does nothing on systemd-boot.
    lab.sh(
        "pve1",
        "sed -i 's/quiet/quiet intel_iommu=on/' /etc/default/grub && update-grub 2>/dev/null",
    );
    lab.reboot_and_wait("pve1");
    let cmdline = lab.sh("pve1", "cat /proc/cmdline");
    assert!(
        cmdline.starts_with("initrd=\\EFI\\proxmox\\") && !cmdline.contains("intel_iommu"),
        "{cmdline}"
    );
    lab.sh("pve1", "echo 'root=ZFS=rpool/ROOT/pve-1 boot=zfs intel_iommu=on' > /etc/kernel/cmdline && proxmox-boot-tool refresh");
    lab.reboot_and_wait("pve1");
    assert!(lab
        .sh("pve1", "cat /proc/cmdline")
        .contains("root=ZFS=rpool/ROOT/pve-1 boot=zfs intel_iommu=on"));
}

#[test]
fn vfio_binds_the_gpu_only_with_iommu_and_ids_in_the_initramfs() {
    let Some(lab) = Lab::up(
        "vfio_binds_the_gpu_only_with_iommu_and_ids_in_the_initramfs",
        66,
        1,
        &["--profile", "pve1:kernel=6.5.13-6-pve"],
    ) else {
        return;
    };
    let driver = |lab: &Lab| {
        lab.sh(
            "pve1",
            "lspci -nnk -s 00:02.0 | sed -n 's/.*Kernel driver in use: //p'",
        )
    };
    assert_eq!(
        lab.sh("pve1", "ls /sys/kernel/iommu_groups | wc -l"),
        "0\n",
        "6.5 kernel: IOMMU off by default"
    );
    lab.sh(
        "pve1",
        "printf 'vfio\\nvfio_iommu_type1\\nvfio_pci\\nvfio_virqfd\\n' >> /etc/modules; \
         echo 'options vfio-pci ids=8086:3e92' > /etc/modprobe.d/vfio.conf",
    );
    lab.reboot_and_wait("pve1");
    assert_eq!(driver(&lab), "i915\n", "no update-initramfs yet");
    lab.sh("pve1", "update-initramfs -u -k all");
    lab.reboot_and_wait("pve1");
    assert_eq!(driver(&lab), "i915\n", "IOMMU is still off");
    let err = lab.sh("pve1", "journalctl -b -p err -q -o cat");
    assert!(err.contains("Failed to find module 'vfio_virqfd'"), "{err}");
    lab.sh(
        "pve1",
        "sed -i 's/quiet/quiet intel_iommu=on/' /etc/default/grub && update-grub 2>/dev/null",
    );
    lab.reboot_and_wait("pve1");
    assert_eq!(driver(&lab), "vfio-pci\n");
    assert!(lab
        .sh("pve1", "ls /sys/kernel/iommu_groups/*/devices")
        .contains("0000:00:02.0"));
}

#[test]
fn ifupdown2_applies_post_up_and_its_own_keys_but_ignores_ifupdown1_keys() {
    let Some(lab) = Lab::up(
        "ifupdown2_applies_post_up_and_its_own_keys_but_ignores_ifupdown1_keys",
        67,
        3,
        &[],
    ) else {
        return;
    };
    let tso = |n: &str| lab.sh(n, "ethtool -k eno1 | grep '^tcp-seg'");
    lab.sh("pve1", "sed -i 's/^iface eno1 inet manual/iface eno1 inet manual\\n\\toffload-tso off\\n\\toffload-gso off/' /etc/network/interfaces");
    lab.sh("pve2", "sed -i 's/^iface eno1 inet manual/iface eno1 inet manual\\n\\tpost-up \\/usr\\/sbin\\/ethtool -K eno1 tso off gso off/' /etc/network/interfaces");
    lab.sh("pve3", "sed -i 's/^iface eno1 inet manual/iface eno1 inet manual\\n\\ttso-offload off/' /etc/network/interfaces");
    for n in ["pve1", "pve2", "pve3"] {
        lab.reboot_and_wait(n);
    }
    assert_eq!(
        tso("pve1"),
        "tcp-segmentation-offload: on\n",
        "ifupdown1 offload-* keys are ignored"
    );
    assert_eq!(tso("pve2"), "tcp-segmentation-offload: off\n");
    assert_eq!(tso("pve3"), "tcp-segmentation-offload: off\n");
    lab.sh("pve1", "sed -i 's/offload-tso off/post-up ethtool -K eno1 tso off/' /etc/network/interfaces && ifreload -a");
    assert_eq!(
        tso("pve1"),
        "tcp-segmentation-offload: off\n",
        "ifreload -a applies without a reboot"
    );
}

#[test]
fn faults_appear_and_clear() {
    let Some(lab) = Lab::up("faults_appear_and_clear", 68, 3, &[]) else {
        return;
    };
    // Clock: the node's clock is ahead for every new session; chronyc makestep fixes it.
    lab.fault("pve1", &["clock", "+90"]);
    let skew = |n: &str| -> i64 {
        let remote: i64 = lab.sh(n, "date +%s").trim().parse().unwrap();
        let local = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        remote - local
    };
    assert!((88..=92).contains(&skew("pve1")), "{}", skew("pve1"));
    assert!(skew("pve2").abs() <= 2);
    assert_eq!(
        lab.sh("pve1", "timedatectl show -p NTPSynchronized --value"),
        "no\n"
    );
    assert!(lab
        .sh("pve1", "chronyc tracking")
        .contains("System time     : 90.0"));
    assert_eq!(lab.sh("pve1", "chronyc makestep"), "200 OK\n");
    assert!(skew("pve1").abs() <= 2);

    // RRD 0-byte files: the journal lines keep coming while the files exist.
    lab.fault("pve2", &["rrd-zero", "2"]);
    crate::common::wait::wait_rrd_errors(&lab, &["pve2"]);
    let j = lab.sh(
        "pve2",
        "journalctl -u pve-cluster -u rrdcached --since -2min -o short-iso --no-pager -q",
    );
    assert!(j.contains("pmxcfs[4527]: [status] notice: RRD update error /var/lib/rrdcached/db/pve2-vm/900: mmaping file '/var/lib/rrdcached/db/pve2-vm/900': Invalid argument"), "{j}");
    assert!(
        j.contains("rrdcached[4513]: handle_request_update: Could not read RRD file."),
        "{j}"
    );
    assert!(lab
        .sh("pve2", "journalctl -p err -q -o cat --since -2min")
        .contains("Could not read RRD file"));
    assert!(
        !lab.sh("pve2", "journalctl -p err -q -o cat --since -2min")
            .contains("RRDC update error"),
        "pmxcfs lines are notice: -p err misses them"
    );
    lab.sh("pve2", "find /var/lib/rrdcached/db -size 0 -delete");
    assert_eq!(
        lab.sh(
            "pve2",
            "journalctl -u pve-cluster --since -5s -q -o cat | wc -l"
        ),
        "0\n"
    );

    // Offload hang lines in the kernel log while TSO is on (the fault dates them back 5 minutes).
    lab.fault("pve3", &["offload-hang"]);
    let hangs = lab.sh(
        "pve3",
        "journalctl -k -q -o short-iso -g 'Hardware Unit Hang'",
    );
    assert!(hangs.lines().count() >= 4, "{hangs}");
    assert!(
        hangs.contains(" pve3 kernel: e1000e 0000:00:1f.6 eno1: Detected Hardware Unit Hang:"),
        "{hangs}"
    );
    assert!(lab
        .sh("pve3", "journalctl -k -q -o cat")
        .contains("e1000e 0000:00:1f.6 eno1: Reset adapter unexpectedly"));
    lab.sh("pve3", "ethtool -K eno1 tso off");
    assert_eq!(
        lab.sh(
            "pve3",
            "journalctl -k -q -o cat -g 'Hardware Unit Hang' | wc -l"
        ),
        "0\n",
        "no hang lines with TSO off"
    );
    lab.clear("pve3", None);

    // Guests and HA.
    lab.fault("pve1", &["guests", "hostpci"]);
    let q = lab.sh("pve1", "qm list");
    assert!(
        q.starts_with("      VMID NAME                 STATUS     MEM(MB)    BOOTDISK(GB) PID"),
        "{q}"
    );
    assert!(
        q.contains("       102 media                running    4096"),
        "{q}"
    );
    assert!(lab
        .sh("pve1", "cat /etc/pve/qemu-server/102.conf")
        .contains("hostpci0: 0000:00:02.0"));
    assert_eq!(
        lab.sh("pve2", "ls /etc/pve/qemu-server | wc -l"),
        "0\n",
        "guests are per node"
    );
    lab.fault("pve1", &["ha"]);
    let ha = lab.sh("pve2", "ha-manager status");
    assert!(ha.starts_with("quorum OK\nmaster pve1 (active, "), "{ha}");
    assert!(ha.contains("service vm:100 (pve1, started)"), "{ha}");
    lab.sh(
        "pve2",
        "ha-manager crm-command node-maintenance enable pve1",
    );
    assert!(lab
        .sh("pve2", "ha-manager status")
        .contains("lrm pve1 (maintenance mode, "));
}

#[test]
fn a_reboot_drops_connections_and_no_return_keeps_the_node_down() {
    let Some(lab) = Lab::up(
        "a_reboot_drops_connections_and_no_return_keeps_the_node_down",
        69,
        3,
        &[],
    ) else {
        return;
    };
    lab.sh("pve2", "echo marker > /root/persist");
    let start = std::time::Instant::now();
    // A session that would run for 60 s ends when the node goes down.
    let (code, _, _) = lab.ssh("pve2", "(sleep 0.2; reboot) & sleep 60");
    assert_ne!(code, 0);
    assert!(start.elapsed() < std::time::Duration::from_secs(30));
    assert!(lab.wait("pve2", "up", 30));
    assert_eq!(
        lab.sh("pve2", "cat /root/persist"),
        "marker\n",
        "files survive a reboot"
    );
    assert_eq!(
        lab.sh("pve2", "systemctl is-active pve-cluster corosync"),
        "active\nactive\n"
    );

    lab.fault("pve3", &["no-return"]);
    lab.sh("pve3", "reboot");
    assert!(lab.wait("pve3", "down", 10));
    assert!(!lab.wait("pve3", "up", 5), "a no-return node stays down");
    assert!(lab
        .sh("pve1", "pvecm status")
        .contains("Total votes:      2"));
    lab.clear("pve3", Some("no-return"));
    assert!(
        lab.wait("pve3", "up", 30),
        "clearing no-return boots it again"
    );
}

#[test]
fn grub_managed_by_proxmox_boot_tool_boots_what_refresh_wrote_to_the_esp() {
    let Some(lab) = Lab::up(
        "grub_managed_by_proxmox_boot_tool_boots_what_refresh_wrote_to_the_esp",
        191,
        1,
        &["--profile", "pve1:grub-pbt,bios"],
    ) else {
        return;
    };
    // The status texts of proxmox-kernel-helper's `status` / `_status_detail`.
    let status = lab.sh("pve1", "proxmox-boot-tool status");
    assert!(
        status.contains("System currently booted with legacy bios\n")
            && status.contains("5D5C-1A2B is configured with: grub (versions: "),
        "{status}"
    );
    let (code, out, err) = lab.ssh("pve1", "proxmox-boot-tool status --quiet");
    assert_eq!((code, out.as_str(), err.as_str()), (0, "", ""));
    let cmdline = lab.sh("pve1", "cat /proc/cmdline").trim_end().to_string();
    assert!(
        cmdline.starts_with("BOOT_IMAGE=/vmlinuz-") && cmdline.contains("boot=zfs quiet"),
        "{cmdline}"
    );
    lab.sh(
        "pve1",
        "sed -i 's/^GRUB_CMDLINE_LINUX_DEFAULT=.*/GRUB_CMDLINE_LINUX_DEFAULT=\"quiet intel_iommu=on\"/' /etc/default/grub",
    );
    // Trap: update-grub run where the proxmox-boot header does not redirect (from a package
    // hook, dpkg sets DPKG_RUNNING_VERSION) regenerates /boot/grub/grub.cfg only, which the
    // ESP's GRUB never reads.
    let (code, _, err) = lab.ssh("pve1", "DPKG_RUNNING_VERSION=1 update-grub");
    assert_eq!(code, 0, "{err}");
    assert!(
        !err.contains("W: This system is booted via proxmox-boot-tool"),
        "{err}"
    );
    lab.reboot_and_wait("pve1");
    assert!(
        !lab.sh("pve1", "cat /proc/cmdline")
            .contains("intel_iommu=on"),
        "update-grub alone does not reach the next boot"
    );
    // proxmox-boot-tool refresh writes the ESP's grub.cfg: the next boot has it.
    let refresh = lab.sh("pve1", "proxmox-boot-tool refresh 2>&1");
    assert!(
        refresh.contains("Copying and configuring kernels on /dev/disk/by-uuid/5D5C-1A2B"),
        "{refresh}"
    );
    lab.reboot_and_wait("pve1");
    let cmdline = lab.sh("pve1", "cat /proc/cmdline").trim_end().to_string();
    assert!(
        cmdline.ends_with("boot=zfs quiet intel_iommu=on"),
        "{cmdline}"
    );
    // A hand-run update-grub is redirected by /etc/grub.d/000_proxmox_boot_header: it warns
    // and runs proxmox-boot-tool refresh itself.
    lab.sh(
        "pve1",
        "sed -i 's/ intel_iommu=on/ iommu=pt/' /etc/default/grub",
    );
    let (code, _, err) = lab.ssh("pve1", "update-grub");
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("W: This system is booted via proxmox-boot-tool:")
            && err.contains("W: Running: 'proxmox-boot-tool refresh'"),
        "{err}"
    );
    lab.reboot_and_wait("pve1");
    assert!(lab
        .sh("pve1", "cat /proc/cmdline")
        .trim_end()
        .ends_with("quiet iommu=pt"));
}

#[test]
fn grub_d_files_override_the_default_line_like_grub_mkconfig() {
    let Some(lab) = Lab::up(
        "grub_d_files_override_the_default_line_like_grub_mkconfig",
        192,
        1,
        &[],
    ) else {
        return;
    };
    lab.sh(
        "pve1",
        "mkdir -p /etc/default/grub.d && echo 'GRUB_CMDLINE_LINUX_DEFAULT=\"quiet splash\" # from grub.d' > /etc/default/grub.d/50-local.cfg \
         && sed -i 's/^GRUB_CMDLINE_LINUX_DEFAULT=.*/GRUB_CMDLINE_LINUX_DEFAULT=\"quiet intel_iommu=on\"/' /etc/default/grub \
         && update-grub 2>/dev/null",
    );
    lab.reboot_and_wait("pve1");
    let cmdline = lab.sh("pve1", "cat /proc/cmdline").trim_end().to_string();
    assert!(
        cmdline.ends_with("ro quiet splash") && !cmdline.contains("intel_iommu"),
        "the grub.d line wins: {cmdline}"
    );
}

/// `lab fault --help` (and `lab up --help`) print their help and touch nothing: no `lab-10`
/// directory appears where they are run (issue 17).
#[test]
fn the_labs_help_makes_no_lab() {
    if !crate::common::sshd::require_root("the_labs_help_makes_no_lab") {
        return;
    }
    let cwd = tempfile::tempdir().unwrap();
    let lab = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lab/lab");
    let out = std::process::Command::new(&lab)
        .args(["fault", "--help"])
        .current_dir(cwd.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let help = String::from_utf8_lossy(&out.stdout);
    for kind in ["no-return", "osd-stop", "vzdump", "cert-expires"] {
        assert!(help.contains(kind), "{kind} in:\n{help}");
    }
    let out = std::process::Command::new(&lab)
        .args(["up", "-h"])
        .current_dir(cwd.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("lab up N"));
    assert_eq!(
        std::fs::read_dir(cwd.path()).unwrap().count(),
        0,
        "nothing made where the help ran"
    );
}
