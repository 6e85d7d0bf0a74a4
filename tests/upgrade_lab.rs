//! The upgrade playbook against what really boots next and what apt and dpkg really do: a
//! next-boot pin or a held kernel means no reboot; a dist-upgrade outlives a killed controller.

mod common;

use common::lab::Lab;
use common::runs::{shipped, Env};

/// An operator pinned the running kernel for the next boot (`proxmox-boot-tool kernel pin
/// VERSION --next-boot`); the upgrade installs a newer kernel, but the next boot starts the
/// pinned one: no drain, no reboot. Another node holds the kernel meta-package: no new kernel
/// comes, the plan names the hold, no reboot. On the old code the next-boot section was
/// dropped: pve1 was drained and rebooted, came back on the pinned kernel, and the run failed
/// "running the kernel meant to boot".
#[test]
fn a_next_boot_pin_or_a_held_kernel_means_no_reboot() {
    let Some(lab) = Lab::up("upgrade_next_boot_pin", 230, 3, &[]) else {
        return;
    };
    let env = Env::new();
    for n in ["pve1", "pve2"] {
        lab.fault(n, &["pending-kernel", "6.8.12-9-pve"]);
        lab.fault(n, &["pending", "pve-manager=8.3.5"]);
    }
    let pin = lab.sh(
        "pve1",
        "proxmox-boot-tool kernel pin 6.8.12-5-pve --next-boot; proxmox-boot-tool kernel list",
    );
    assert!(pin.contains("Pinned for next boot only."), "{pin}");
    assert!(
        pin.contains("\nKernel pinned on next-boot:\n6.8.12-5-pve\n"),
        "{pin}"
    );
    let hold = lab.sh(
        "pve2",
        "apt-mark hold proxmox-kernel-6.8; apt-mark showhold",
    );
    assert_eq!(
        hold,
        "proxmox-kernel-6.8 set on hold.\nproxmox-kernel-6.8\n"
    );
    let sim = lab.sh("pve2", "apt-get -s dist-upgrade");
    assert!(
        sim.contains("The following packages have been kept back:\n  proxmox-kernel-6.8\n"),
        "{sim}"
    );
    assert!(!sim.contains("Inst proxmox-kernel-6.8.12-9"), "{sim}");

    let (code, plan) = env.json(
        &lab,
        &["plan", "-e", "min_free_mib=64", &shipped("upgrade.toml")],
    );
    assert_eq!(code, Some(0), "{plan}");
    let steps = plan["nodes"][1]["steps"].to_string();
    assert!(steps.contains("held: proxmox-kernel-6.8"), "{steps}");
    assert!(steps.contains("new kernel: no"), "{steps}");

    let (code, v) = env.json(
        &lab,
        &[
            "run",
            "--yes",
            "-e",
            "min_free_mib=64",
            &shipped("upgrade.toml"),
        ],
    );
    assert_eq!(code, Some(0), "{v}");
    for n in ["pve1", "pve2"] {
        assert_eq!(lab.boots(n), 1, "{n} was not rebooted: {v}");
        assert_eq!(lab.sh(n, "uname -r"), "6.8.12-5-pve\n");
        assert!(lab.sh(n, "pveversion").contains("pve-manager/8.3.5"));
    }
    // pve1 got the new kernel, which boots after the one pinned for the next boot.
    assert!(lab.sh("pve1", "ls /boot").contains("vmlinuz-6.8.12-9-pve"));
    assert!(!lab.sh("pve2", "ls /boot").contains("vmlinuz-6.8.12-9-pve"));
}
