//! `updates`: pending package upgrades, whether the kernel that will boot differs from the
//! running one (a reboot is needed), and whether the APT repositories fit the subscription
//! status (DOMAIN.md §10). The upgrade playbook gathers these facts before and after
//! `dist-upgrade` to decide which nodes to drain and reboot.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use super::{marker, sub, Finding, Grade, ParseError, Thresholds};

/// Probe name.
pub const NAME: &str = "updates";

/// The snippet: read-only (`apt-get -s` simulates; no lists are downloaded here).
pub const SNIPPET: &str = r#"echo "@@running_kernel $(uname -r)"
echo "@@pve $(pveversion 2>/dev/null | head -n 1)"
echo "@@sub installed_kernels"; ls /boot 2>/dev/null | sed -n 's/^vmlinuz-\(.*-pve\)$/\1/p'
if command -v proxmox-boot-tool >/dev/null 2>&1; then echo "@@sub pbt_kernels"; proxmox-boot-tool kernel list 2>/dev/null; fi
echo "@@sub held"; apt-mark showhold 2>/dev/null
echo "@@sub dpkg_audit"; LC_ALL=C dpkg --audit 2>&1; echo "@@dpkg_audit_rc $?"
echo "@@sub pending"; LC_ALL=C apt-get -s -o Debug::NoLocking=true dist-upgrade 2>&1 | grep -E '^(Inst|Remv) ' ; echo "@@pending_rc $?"
echo "@@subscription $(pvesubscription get 2>/dev/null | sed -n 's/^status: //p' | head -n 1)"
echo "@@sub repos"
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
  [ -f "$f" ] || continue; echo "==> $f <=="; cat "$f"; echo
done
echo "@@sub end"
echo "@@root_free_kb $(df -Pk / 2>/dev/null | awk 'NR == 2 {print $4}')""#;

/// One pending change from `apt-get -s dist-upgrade`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// Package.
    pub name: String,
    /// Installed version (none for a new package).
    pub old: Option<String>,
    /// Version to install (none for a removal).
    pub new: Option<String>,
}

/// One APT source line (or deb822 stanza).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repo {
    /// File and line (`/etc/apt/sources.list.d/pve-enterprise.list:1`).
    pub at: String,
    /// URIs.
    pub uri: String,
    /// Suites.
    pub suites: Vec<String>,
    /// Components.
    pub components: Vec<String>,
    /// Not commented out / not `Enabled: no`.
    pub enabled: bool,
}

impl Repo {
    /// A Proxmox enterprise repository (needs an active subscription).
    pub fn enterprise(&self) -> bool {
        self.uri.contains("enterprise.proxmox.com")
    }
}

/// What the probe found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdatesFacts {
    /// `uname -r`.
    pub running_kernel: String,
    /// The kernel the next boot starts: the next-boot pin, else the permanent pin, else the
    /// newest installed.
    pub boot_kernel: Option<String>,
    /// Why that kernel boots: `next-boot pin`, `pin` or `newest`.
    pub boot_by: Option<String>,
    /// Packages on hold (`apt-mark showhold`): apt never upgrades them.
    pub held: Vec<String>,
    /// A kernel meta-package is on hold, so no new kernel comes with a dist-upgrade.
    pub kernel_held: bool,
    /// `dpkg --audit` findings: packages left half-way (unpacked, half-configured ...), each
    /// `PKG (state)`; empty when dpkg is consistent.
    pub dpkg_audit: Vec<String>,
    /// Proxmox VE packages the pending dist-upgrade would remove (`Remv` of `proxmox-ve` or
    /// `pve-manager`): such an upgrade is refused.
    pub removes_pve: Vec<String>,
    /// The next boot starts another kernel than the running one.
    pub reboot_needed: bool,
    /// Pending changes.
    pub pending: Vec<Pending>,
    /// Their count.
    pub pending_count: usize,
    /// A new kernel among them (its version, e.g. `6.8.12-9-pve`).
    pub new_kernel: Option<String>,
    /// `pve-manager` now and after the upgrade.
    pub pve_version: Option<String>,
    /// `pve-manager` version the upgrade installs, if it is pending.
    pub pve_version_after: Option<String>,
    /// The upgrade would change the major version (a different procedure).
    pub major_change: bool,
    /// `pvesubscription get` status (`active`, `notfound` ...), if known.
    pub subscription: Option<String>,
    /// Sources.
    pub repos: Vec<Repo>,
    /// What is wrong with them, each naming the file and the fix.
    pub repo_problems: Vec<String>,
    /// Free space on `/`, MiB.
    pub root_free_mib: Option<u64>,
}

/// Compare Debian-like versions by numeric and non-numeric runs (enough for kernel versions
/// such as `6.8.12-10-pve` vs `6.8.12-9-pve`, as `sort -V` orders them).
pub fn cmp_version(a: &str, b: &str) -> Ordering {
    fn runs(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let b = s.as_bytes();
        for i in 1..=b.len() {
            if i == b.len() || b[i].is_ascii_digit() != b[start].is_ascii_digit() {
                out.push((b[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    let (ra, rb) = (runs(a), runs(b));
    for (x, y) in ra.iter().zip(rb.iter()) {
        let o = match (x.0, y.0) {
            (true, true) => {
                x.1.parse::<u64>()
                    .unwrap_or(0)
                    .cmp(&y.1.parse::<u64>().unwrap_or(0))
            }
            _ => x.1.cmp(y.1),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    ra.len().cmp(&rb.len())
}

/// The kernel version a kernel package installs: `proxmox-kernel-6.8.12-9-pve-signed` or
/// `pve-kernel-6.2.16-3-pve` -> `6.8.12-9-pve`.
pub fn kernel_of_package(name: &str) -> Option<String> {
    let rest = name
        .strip_prefix("proxmox-kernel-")
        .or_else(|| name.strip_prefix("pve-kernel-"))?;
    let rest = rest.strip_suffix("-signed").unwrap_or(rest);
    (rest.ends_with("-pve") && rest.starts_with(|c: char| c.is_ascii_digit()))
        .then(|| rest.to_string())
}

/// Parse `Inst NAME [OLD] (NEW ...)` / `Remv NAME [OLD]` lines.
pub fn parse_pending(text: &str) -> Vec<Pending> {
    text.lines()
        .filter_map(|l| {
            let (kind, rest) = l.split_once(' ')?;
            let name = rest.split_whitespace().next()?.to_string();
            // `[OLD]` comes before `(NEW ...)`; the `[ARCH]` inside the parentheses is not it.
            let head = rest.split('(').next().unwrap_or(rest);
            let old = head
                .split_once('[')
                .and_then(|(_, r)| r.split_once(']'))
                .map(|(v, _)| v.to_string());
            let new = rest
                .split_once('(')
                .and_then(|(_, r)| r.split_whitespace().next())
                .map(|v| v.trim_end_matches(')').to_string());
            match kind {
                "Inst" => Some(Pending { name, old, new }),
                "Remv" => Some(Pending {
                    name,
                    old,
                    new: None,
                }),
                _ => None,
            }
        })
        .collect()
}

/// The kernel `proxmox-boot-tool kernel list` will boot, and why: the one pinned for the next
/// boot only (`kernel pin VERSION --next-boot`, section "Kernel pinned on next-boot:", file
/// /etc/kernel/next-boot-pin), else the permanently pinned one ("Pinned kernel:",
/// /etc/kernel/proxmox-boot-pin), else the newest of the manually and automatically selected
/// ones. Sections as `list_kernels` in proxmox-kernel-helper's src/bin/proxmox-boot-tool prints
/// them; the boot loader default follows the next-boot pin before the pin (zz-proxmox-boot,
/// `pin_kernel`), and proxmox-boot-cleanup.service drops the next-boot pin once booted.
pub fn pbt_boot_kernel(text: &str) -> Option<(String, &'static str)> {
    let mut section = "";
    let (mut pinned, mut next_boot) = (None, None);
    let mut all = Vec::new();
    for l in text.lines().map(str::trim) {
        if l.ends_with(':') {
            section = l;
            continue;
        }
        if l.is_empty() || l.eq_ignore_ascii_case("none.") {
            continue;
        }
        if section.starts_with("Kernel pinned on next-boot") {
            next_boot.get_or_insert_with(|| l.to_string());
        } else if section.starts_with("Pinned kernel") {
            pinned.get_or_insert_with(|| l.to_string());
        } else if section.contains("selected kernels") {
            all.push(l.to_string());
        }
    }
    next_boot
        .map(|k| (k, "next-boot pin"))
        .or_else(|| pinned.map(|k| (k, "pin")))
        .or_else(|| {
            all.into_iter()
                .max_by(|a, b| cmp_version(a, b))
                .map(|k| (k, "newest"))
        })
}

/// A kernel meta-package (`proxmox-default-kernel`, `proxmox-kernel-6.8`, `pve-kernel-6.2`):
/// held, it keeps every new kernel out (the new `proxmox-kernel-VERSION-signed` comes only as
/// its dependency).
pub fn is_kernel_meta(name: &str) -> bool {
    let name = name.split(':').next().unwrap_or(name);
    if name == "proxmox-default-kernel" || name == "pve-kernel" {
        return true;
    }
    let rest = name
        .strip_prefix("proxmox-kernel-")
        .or_else(|| name.strip_prefix("pve-kernel-"));
    rest.is_some_and(|r| {
        let mut it = r.split('.');
        matches!((it.next(), it.next(), it.next()), (Some(a), Some(b), None)
            if !a.is_empty() && !b.is_empty() && a.bytes().all(|c| c.is_ascii_digit()) && b.bytes().all(|c| c.is_ascii_digit()))
    })
}

/// What `dpkg --audit` output says is half-way: its packages ([`parse_dpkg_audit`]), or, when it
/// names none but is not empty, its first line (output that names no package is still not
/// "clean": unknown is not an answer). Empty only for empty output.
pub fn dpkg_audit_findings(text: &str) -> Vec<String> {
    let mut found = parse_dpkg_audit(text);
    if found.is_empty() && !text.trim().is_empty() {
        found.push(crate::sanitize::first_line(text.trim(), 160));
    }
    found
}

/// `dpkg --audit` output (dpkg's src/main/audit.c): per problem class a paragraph of
/// explanation, then the affected packages indented, one per line, as ` NAME  SUMMARY`
/// (`audit.c` `report_problems`, printed with `pkg_name` and the package's summary). The
/// packages are returned with the class they were listed under.
pub fn parse_dpkg_audit(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut class = String::new();
    let mut in_list = false;
    for l in text.lines() {
        if l.trim().is_empty() {
            in_list = false;
            continue;
        }
        if let Some(rest) = l.strip_prefix(' ') {
            if let Some(name) = rest.split_whitespace().next() {
                in_list = true;
                out.push(if class.is_empty() {
                    name.to_string()
                } else {
                    format!("{name} ({class})")
                });
            }
            continue;
        }
        if !in_list {
            // "The following packages are only half configured, probably due to problems
            // configuring them the first time. ..." -> "only half configured".
            let t = l.trim();
            if let Some(r) = t.strip_prefix("The following packages ") {
                class = r
                    .split([',', '.'])
                    .next()
                    .unwrap_or(r)
                    .trim_start_matches("are ")
                    .trim_start_matches("have been ")
                    .to_string();
            }
        }
    }
    out
}

/// Parse APT source files (one-line `.list` and deb822 `.sources`).
pub fn parse_repos(text: &str) -> Vec<Repo> {
    let mut out = Vec::new();
    let mut file = String::new();
    let mut stanza: Vec<(usize, String, String)> = Vec::new();
    let mut lineno = 0usize;
    let flush = |file: &str, stanza: &mut Vec<(usize, String, String)>, out: &mut Vec<Repo>| {
        if stanza.is_empty() {
            return;
        }
        let get = |k: &str| {
            stanza
                .iter()
                .find(|(_, key, _)| key.eq_ignore_ascii_case(k))
                .map(|(_, _, v)| v.clone())
        };
        if let Some(uri) = get("URIs") {
            out.push(Repo {
                at: format!("{file}:{}", stanza[0].0),
                uri,
                suites: get("Suites")
                    .unwrap_or_default()
                    .split_whitespace()
                    .map(str::to_string)
                    .collect(),
                components: get("Components")
                    .unwrap_or_default()
                    .split_whitespace()
                    .map(str::to_string)
                    .collect(),
                enabled: !get("Enabled").is_some_and(|e| e.trim().eq_ignore_ascii_case("no")),
            });
        }
        stanza.clear();
    };
    for l in text.lines() {
        if let Some(f) = l.strip_prefix("==> ").and_then(|f| f.strip_suffix(" <==")) {
            flush(&file, &mut stanza, &mut out);
            file = f.to_string();
            lineno = 0;
            continue;
        }
        lineno += 1;
        if file.ends_with(".sources") {
            let t = l.trim();
            if t.is_empty() {
                flush(&file, &mut stanza, &mut out);
            } else if !t.starts_with('#') {
                if let Some((k, v)) = t.split_once(':') {
                    stanza.push((lineno, k.trim().to_string(), v.trim().to_string()));
                }
            }
            continue;
        }
        let t = l.trim();
        let (enabled, body) = match t.strip_prefix('#') {
            Some(rest) => (false, rest.trim()),
            None => (true, t),
        };
        let mut w = body.split_whitespace();
        if w.next() != Some("deb") {
            continue;
        }
        let mut uri = w.next().unwrap_or("");
        if uri.starts_with('[') {
            // Options: `deb [arch=amd64 signed-by=...] URI ...`.
            uri = w.find(|x| x.ends_with(']')).and(w.next()).unwrap_or("");
        }
        let suite = w.next().unwrap_or("").to_string();
        out.push(Repo {
            at: format!("{file}:{lineno}"),
            uri: uri.to_string(),
            suites: vec![suite],
            components: w.map(str::to_string).collect(),
            enabled,
        });
    }
    flush(&file, &mut stanza, &mut out);
    out
}

fn perr(m: impl Into<String>) -> ParseError {
    ParseError {
        probe: NAME,
        message: m.into(),
    }
}

/// The suite a Proxmox VE major version runs on.
fn suite_of_major(major: u32) -> Option<&'static str> {
    match major {
        7 => Some("bullseye"),
        8 => Some("bookworm"),
        9 => Some("trixie"),
        _ => None,
    }
}

fn major_of(version: &str) -> Option<u32> {
    version.split('.').next()?.parse().ok()
}

/// Parse the snippet's output.
pub fn parse(text: &str) -> Result<UpdatesFacts, ParseError> {
    let running = marker(text, "running_kernel")
        .ok_or_else(|| perr("output cut short (no running kernel)"))?
        .trim()
        .to_string();
    if sub(text, "end").is_none() {
        return Err(perr("output cut short"));
    }
    let installed: Vec<String> = sub(text, "installed_kernels")
        .unwrap_or("")
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    let (boot_kernel, boot_by) = match sub(text, "pbt_kernels").and_then(pbt_boot_kernel) {
        Some((k, by)) => (Some(k), Some(by.to_string())),
        None => match installed.iter().max_by(|a, b| cmp_version(a, b)) {
            Some(k) => (Some(k.clone()), Some("newest".to_string())),
            None => (None, None),
        },
    };
    let held: Vec<String> = sub(text, "held")
        .unwrap_or("")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    let kernel_held = held.iter().any(|h| is_kernel_meta(h));
    let dpkg_audit = dpkg_audit_findings(sub(text, "dpkg_audit").unwrap_or(""));
    let pending = parse_pending(sub(text, "pending").unwrap_or(""));
    let new_kernel = pending
        .iter()
        .filter(|p| p.new.is_some())
        .filter_map(|p| kernel_of_package(&p.name))
        .max_by(|a, b| cmp_version(a, b));
    let pve_version = marker(text, "pve")
        .and_then(|l| l.strip_prefix("pve-manager/"))
        .and_then(|l| l.split('/').next())
        .map(str::to_string);
    let pve_version_after = pending
        .iter()
        .find(|p| p.name == "pve-manager")
        .and_then(|p| p.new.clone());
    let removes_pve: Vec<String> = pending
        .iter()
        .filter(|p| p.new.is_none() && matches!(p.name.as_str(), "proxmox-ve" | "pve-manager"))
        .map(|p| p.name.clone())
        .collect();
    let major_change = match (&pve_version, &pve_version_after) {
        (Some(a), Some(b)) => major_of(a) != major_of(b),
        _ => false,
    };
    let subscription = marker(text, "subscription")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let repos = parse_repos(sub(text, "repos").unwrap_or(""));
    let mut repo_problems = Vec::new();
    let active = subscription.as_deref() == Some("active");
    for r in repos.iter().filter(|r| r.enabled) {
        if r.enterprise() && !active {
            repo_problems.push(format!(
                "{}: enterprise repository {} without an active subscription (pvesubscription: {}); apt-get update fails with 401 Unauthorized. Disable it (comment the line out, or `Enabled: no` in a .sources file) and use the no-subscription repository, or add a subscription",
                r.at,
                r.uri,
                subscription.as_deref().unwrap_or("unknown")
            ));
        }
        if let Some(want) = pve_version
            .as_deref()
            .and_then(major_of)
            .and_then(suite_of_major)
        {
            let other = ["bullseye", "bookworm", "trixie"]
                .into_iter()
                .find(|s| *s != want && r.suites.iter().any(|x| x == s));
            if let Some(o) = other {
                repo_problems.push(format!(
                    "{}: suite {o} does not match this Proxmox VE major version ({want}): a routine upgrade must not change the major version",
                    r.at
                ));
            }
        }
    }
    let root_free_mib = marker(text, "root_free_kb")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|kb| kb / 1024);
    let reboot_needed = boot_kernel.as_ref().is_some_and(|k| k != &running);
    Ok(UpdatesFacts {
        running_kernel: running,
        boot_kernel,
        boot_by,
        held,
        kernel_held,
        dpkg_audit,
        removes_pve,
        reboot_needed,
        pending_count: pending.len(),
        pending,
        new_kernel,
        pve_version,
        pve_version_after,
        major_change,
        subscription,
        repos,
        repo_problems,
        root_free_mib,
    })
}

/// Grade: `updates.pending`, `updates.reboot`, `updates.dpkg`, `updates.repos`.
pub fn grade(f: &UpdatesFacts, _t: &Thresholds) -> Vec<Finding> {
    let mut out = Vec::new();
    out.push(if f.pending_count == 0 {
        Finding::new(
            "updates.pending",
            Grade::Pass,
            "no pending upgrades (as of the last apt-get update)",
        )
    } else {
        Finding::new(
            "updates.pending",
            Grade::Warn,
            format!(
                "{} pending{}",
                f.pending_count,
                f.new_kernel
                    .as_deref()
                    .map(|k| format!(", new kernel {k}"))
                    .unwrap_or_default()
            ),
        )
        .fix("pvefleet run playbooks/upgrade.toml")
    });
    out.push(if f.reboot_needed {
        Finding::new(
            "updates.reboot",
            Grade::Warn,
            format!(
                "running {}, the next boot starts {}: a reboot is needed",
                f.running_kernel,
                f.boot_kernel.as_deref().unwrap_or("?")
            ),
        )
        .fix("pvefleet run playbooks/upgrade.toml (drains and reboots only the nodes that need it)")
    } else {
        Finding::new(
            "updates.reboot",
            Grade::Pass,
            format!("running the kernel that boots next ({})", f.running_kernel),
        )
    });
    out.push(if f.dpkg_audit.is_empty() {
        Finding::new(
            "updates.dpkg",
            Grade::Pass,
            "dpkg --audit finds nothing half-way",
        )
    } else {
        Finding::new(
            "updates.dpkg",
            Grade::Fail,
            format!(
                "dpkg stopped half-way (dpkg --audit): {}; apt refuses to install until it is finished",
                f.dpkg_audit.join(", ")
            ),
        )
        .fix("find out why it stopped (/var/log/dpkg.log), then dpkg --configure -a")
    });
    out.push(if f.repo_problems.is_empty() {
        Finding::new(
            "updates.repos",
            Grade::Pass,
            format!(
                "{} repositories enabled, consistent with the subscription status",
                f.repos.iter().filter(|r| r.enabled).count()
            ),
        )
    } else {
        Finding::new("updates.repos", Grade::Fail, f.repo_problems.join("; "))
            .fix("edit the named file(s) as said")
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions_sort_like_sort_v() {
        assert_eq!(
            cmp_version("6.8.12-10-pve", "6.8.12-9-pve"),
            Ordering::Greater
        );
        assert_eq!(cmp_version("6.5.13-6-pve", "6.8.4-2-pve"), Ordering::Less);
        assert_eq!(cmp_version("6.8.12-9-pve", "6.8.12-9-pve"), Ordering::Equal);
    }

    #[test]
    fn pending_lines_and_the_new_kernel() {
        // `apt-get -s dist-upgrade` lines (apt's simulation output: Inst NAME [OLD] (NEW REL [ARCH])).
        let p = parse_pending("Inst pve-manager [8.3.2] (8.3.5 Proxmox:8.3/pve-no-subscription [amd64])\nInst proxmox-kernel-6.8.12-9-pve-signed (6.8.12-9 Proxmox:8.3/pve-no-subscription [amd64])\nRemv old-thing [1.0]\n");
        assert_eq!(p.len(), 3);
        assert_eq!(p[0].old.as_deref(), Some("8.3.2"));
        assert_eq!(p[0].new.as_deref(), Some("8.3.5"));
        assert_eq!(p[1].old, None);
        assert_eq!(p[2].new, None);
        assert_eq!(
            kernel_of_package("proxmox-kernel-6.8.12-9-pve-signed").as_deref(),
            Some("6.8.12-9-pve")
        );
        assert_eq!(kernel_of_package("proxmox-kernel-helper"), None);
        assert_eq!(kernel_of_package("proxmox-kernel-6.8"), None);
    }

    #[test]
    fn proxmox_boot_tool_kernel_list_prefers_the_pinned_kernel() {
        // Headers as printed by proxmox-boot-tool's `kernel list` (proxmox-kernel-helper).
        let list = "Manually selected kernels:\nNone.\n\nAutomatically selected kernels:\n6.8.12-4-pve\n6.8.12-10-pve\n\nPinned kernel:\n6.8.12-4-pve\n";
        assert_eq!(pbt_boot_kernel(list), Some(("6.8.12-4-pve".into(), "pin")));
        let unpinned = "Manually selected kernels:\nNone.\n\nAutomatically selected kernels:\n6.8.12-4-pve\n6.8.12-10-pve\n";
        assert_eq!(
            pbt_boot_kernel(unpinned),
            Some(("6.8.12-10-pve".into(), "newest"))
        );
    }

    #[test]
    fn a_next_boot_pin_wins_over_the_pin_and_the_newest() {
        let both = crate::probe::fixture("proxmox-boot-tool-kernel-list/pin-and-next-boot.txt");
        assert_eq!(
            pbt_boot_kernel(&both),
            Some(("6.8.12-4-pve".into(), "next-boot pin"))
        );
        let next = crate::probe::fixture("proxmox-boot-tool-kernel-list/next-boot-only.txt");
        assert_eq!(
            pbt_boot_kernel(&next),
            Some(("6.8.12-4-pve".into(), "next-boot pin"))
        );
        // Running the next-boot kernel: no reboot, although a newer kernel is installed.
        let text = format!(
            "@@running_kernel 6.8.12-4-pve\n@@sub installed_kernels\n6.8.12-4-pve\n6.8.12-9-pve\n@@sub pbt_kernels\n{next}@@sub held\nproxmox-kernel-6.8\n@@sub dpkg_audit\n@@dpkg_audit_rc 0\n@@sub pending\n@@pending_rc 1\n@@sub repos\n@@sub end\n"
        );
        let f = parse(&text).unwrap();
        assert!(!f.reboot_needed, "{f:?}");
        assert_eq!(f.boot_by.as_deref(), Some("next-boot pin"));
        assert!(f.kernel_held);
        assert_eq!(f.held, vec!["proxmox-kernel-6.8"]);
        assert!(f.dpkg_audit.is_empty());
    }

    #[test]
    fn kernel_meta_packages() {
        for m in [
            "proxmox-kernel-6.8",
            "proxmox-default-kernel",
            "pve-kernel-6.2",
            "proxmox-kernel-6.8:amd64",
        ] {
            assert!(is_kernel_meta(m), "{m}");
        }
        for m in [
            "proxmox-kernel-6.8.12-9-pve-signed",
            "proxmox-kernel-helper",
            "pve-manager",
        ] {
            assert!(!is_kernel_meta(m), "{m}");
        }
    }

    #[test]
    fn dpkg_audit_names_each_package_with_its_state() {
        let a = parse_dpkg_audit(&crate::probe::fixture(
            "dpkg-audit/unpacked-and-half-configured.txt",
        ));
        assert_eq!(a.len(), 6, "{a:?}");
        assert_eq!(a[0], "nagios3-common (unpacked but not yet configured)");
        assert_eq!(a[5], "postfix (only half configured)");
        assert!(parse_dpkg_audit("").is_empty());
        let fx = crate::probe::fixture("dpkg-audit/unpacked-and-half-configured.txt");
        let text = format!(
            "@@running_kernel 6.8.12-4-pve\n@@sub dpkg_audit\n{fx}@@dpkg_audit_rc 0\n@@sub pending\n@@pending_rc 1\n@@sub repos\n@@sub end\n"
        );
        let f = parse(&text).unwrap();
        assert_eq!(f.dpkg_audit.len(), 6);
        let g = grade(&f, &Thresholds::default());
        let d = g.iter().find(|x| x.check == "updates.dpkg").unwrap();
        assert_eq!(d.grade, Grade::Fail);
        assert!(
            d.detail.contains("postfix (only half configured)"),
            "{}",
            d.detail
        );
    }

    #[test]
    fn a_removal_of_proxmox_ve_is_named() {
        let f = parse(&sample(
            "active",
            "Remv proxmox-ve [8.3.0]\nRemv pve-manager [8.3.2]\nInst foo (1 x [amd64])\n",
            "6.8.12-9-pve",
        ))
        .unwrap();
        assert_eq!(f.removes_pve, vec!["proxmox-ve", "pve-manager"]);
    }

    #[test]
    fn repositories_list_and_deb822() {
        let text = "==> /etc/apt/sources.list.d/pve-enterprise.list <==\ndeb https://enterprise.proxmox.com/debian/pve bookworm pve-enterprise\n==> /etc/apt/sources.list.d/ceph.list <==\n# deb https://enterprise.proxmox.com/debian/ceph-quincy bookworm enterprise\n==> /etc/apt/sources.list.d/proxmox.sources <==\nTypes: deb\nURIs: http://download.proxmox.com/debian/pve\nSuites: trixie\nComponents: pve-no-subscription\nSigned-By: /usr/share/keyrings/proxmox-archive-keyring.gpg\n\nTypes: deb\nURIs: https://enterprise.proxmox.com/debian/pve\nSuites: trixie\nComponents: pve-enterprise\nEnabled: no\n";
        let r = parse_repos(text);
        assert_eq!(r.len(), 4);
        assert!(r[0].enabled && r[0].enterprise());
        assert_eq!(r[0].at, "/etc/apt/sources.list.d/pve-enterprise.list:1");
        assert!(!r[1].enabled);
        assert_eq!(r[2].suites, vec!["trixie"]);
        assert_eq!(r[2].at, "/etc/apt/sources.list.d/proxmox.sources:1");
        assert!(!r[3].enabled && r[3].enterprise());
    }

    fn sample(sub_status: &str, pending: &str, running: &str) -> String {
        format!(
            "@@running_kernel {running}\n@@pve pve-manager/8.3.2/3e76eec21c4a14a7 (running kernel: {running})\n@@sub installed_kernels\n6.8.12-5-pve\n6.8.12-9-pve\n@@sub pending\n{pending}@@pending_rc 0\n@@subscription {sub_status}\n@@sub repos\n==> /etc/apt/sources.list.d/pve-enterprise.list <==\ndeb https://enterprise.proxmox.com/debian/pve bookworm pve-enterprise\n\n@@sub end\n@@root_free_kb 2048000\n"
        )
    }

    #[test]
    fn a_new_kernel_installed_means_a_reboot_and_the_enterprise_repo_needs_a_subscription() {
        let f = parse(&sample("notfound", "", "6.8.12-5-pve")).unwrap();
        assert!(f.reboot_needed);
        assert_eq!(f.boot_kernel.as_deref(), Some("6.8.12-9-pve"));
        assert_eq!(f.repo_problems.len(), 1);
        assert!(
            f.repo_problems[0].contains("pve-enterprise.list:1"),
            "{:?}",
            f.repo_problems
        );
        assert_eq!(f.root_free_mib, Some(2000));
        let g = grade(&f, &Thresholds::default());
        assert_eq!(
            g.iter().find(|x| x.check == "updates.repos").unwrap().grade,
            Grade::Fail
        );
        let ok = parse(&sample(
            "active",
            "Inst pve-manager [8.3.2] (9.0.3 Proxmox [amd64])\n",
            "6.8.12-9-pve",
        ))
        .unwrap();
        assert!(!ok.reboot_needed);
        assert!(ok.repo_problems.is_empty());
        assert!(ok.major_change, "8 -> 9 is a major upgrade");
        assert!(parse("@@running_kernel 6.8\n").is_err(), "cut short");
    }
}
