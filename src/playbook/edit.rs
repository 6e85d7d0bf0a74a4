//! Pure file edits: lines, marked blocks, kernel command lines, /etc/modules. Each takes the
//! current content and returns the new content; equal content means "nothing to do".

use regex::Regex;

use super::model::Presence;

/// Ensure `line` is present after the first line `after` matches (else at the end), unless it is
/// there already; see [`ensure_line`] for `regexp` and `state`.
pub fn ensure_line_after(
    content: &str,
    line: &str,
    regexp: Option<&Regex>,
    after: Option<&Regex>,
    state: Presence,
) -> String {
    let Some(after) = after else {
        return ensure_line(content, line, regexp, state);
    };
    let lines: Vec<&str> = content.lines().collect();
    let present =
        lines.contains(&line) || regexp.is_some_and(|re| lines.iter().any(|l| re.is_match(l)));
    if state == Presence::Absent || present {
        return ensure_line(content, line, regexp, state);
    }
    match lines.iter().position(|l| after.is_match(l)) {
        Some(i) => {
            let mut out: Vec<&str> = lines[..=i].to_vec();
            out.push(line);
            out.extend_from_slice(&lines[i + 1..]);
            join(&out)
        }
        None => ensure_line(content, line, regexp, state),
    }
}

/// Ensure `line` is present (replacing the last line `regexp` matches, else appended) or absent
/// (every line equal to it, or matching `regexp`, removed).
pub fn ensure_line(content: &str, line: &str, regexp: Option<&Regex>, state: Presence) -> String {
    let mut lines: Vec<&str> = content.lines().collect();
    match state {
        Presence::Present => {
            if let Some(re) = regexp {
                if let Some(i) = lines.iter().rposition(|l| re.is_match(l)) {
                    lines[i] = line;
                    return join(&lines);
                }
            }
            if !lines.contains(&line) {
                lines.push(line);
            }
        }
        Presence::Absent => {
            lines.retain(|l| *l != line && !regexp.is_some_and(|re| re.is_match(l)));
        }
    }
    join(&lines)
}

fn join(lines: &[&str]) -> String {
    if lines.is_empty() {
        String::new()
    } else {
        let mut s = lines.join("\n");
        s.push('\n');
        s
    }
}

/// The begin and end markers of a managed block.
pub fn markers(name: &str) -> (String, String) {
    (
        format!("# BEGIN pvefleet: {name}"),
        format!("# END pvefleet: {name}"),
    )
}

/// Ensure the block named `name` holds exactly `body` (or is absent).
pub fn ensure_block(content: &str, name: &str, body: &str, state: Presence) -> String {
    let (begin, end) = markers(name);
    let lines: Vec<&str> = content.lines().collect();
    let start = lines.iter().position(|l| l.trim() == begin);
    let stop = start.and_then(|s| {
        lines[s..]
            .iter()
            .position(|l| l.trim() == end)
            .map(|e| s + e)
    });
    let mut out: Vec<String> = Vec::new();
    let block: Vec<String> = std::iter::once(begin.clone())
        .chain(body.lines().map(str::to_string))
        .chain(std::iter::once(end.clone()))
        .collect();
    match (start, stop) {
        (Some(s), Some(e)) => {
            out.extend(lines[..s].iter().map(|l| l.to_string()));
            if state == Presence::Present {
                out.extend(block);
            }
            out.extend(lines[e + 1..].iter().map(|l| l.to_string()));
        }
        _ => {
            out.extend(lines.iter().map(|l| l.to_string()));
            if state == Presence::Present {
                out.extend(block);
            }
        }
    }
    let refs: Vec<&str> = out.iter().map(String::as_str).collect();
    join(&refs)
}

fn edit_params(current: &str, add: &[String], remove: &[String]) -> String {
    let mut params: Vec<String> = current.split_whitespace().map(str::to_string).collect();
    for r in remove {
        // `foo` removes `foo` and `foo=...`; `foo=bar` removes exactly that.
        let bare_key = !r.contains('=');
        params.retain(|p| p != r && !(bare_key && p.split('=').next() == Some(r.as_str())));
    }
    for a in add {
        let key = a.split('=').next().unwrap_or(a);
        if let Some(p) = params
            .iter_mut()
            .find(|p| p.split('=').next() == Some(key) && a.contains('='))
        {
            *p = a.clone();
        } else if !params.contains(a) {
            params.push(a.clone());
        }
    }
    params.join(" ")
}

/// Edit `GRUB_CMDLINE_LINUX_DEFAULT` in /etc/default/grub content.
pub fn grub_cmdline(content: &str, add: &[String], remove: &[String]) -> String {
    let key = "GRUB_CMDLINE_LINUX_DEFAULT=";
    let mut found = false;
    let mut lines: Vec<String> = Vec::new();
    for l in content.lines() {
        if let Some(v) = l.trim_start().strip_prefix(key) {
            found = true;
            let quote = v.chars().next().filter(|c| *c == '"' || *c == '\'');
            let inner = v.trim_matches(|c| c == '"' || c == '\'');
            let q = quote.unwrap_or('"');
            lines.push(format!("{key}{q}{}{q}", edit_params(inner, add, remove)));
        } else {
            lines.push(l.to_string());
        }
    }
    if !found {
        lines.push(format!("{key}\"{}\"", edit_params("", add, remove)));
    }
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    join(&refs)
}

/// Edit the one line of /etc/kernel/cmdline (systemd-boot).
pub fn kernel_cmdline_file(content: &str, add: &[String], remove: &[String]) -> String {
    let first = content.lines().next().unwrap_or("");
    format!("{}\n", edit_params(first, add, remove))
}

/// Ensure modules are listed (or not) in /etc/modules content.
pub fn modules(content: &str, add: &[String], remove: &[String]) -> String {
    let mut lines: Vec<&str> = content.lines().collect();
    lines.retain(|l| {
        let m = l.split('#').next().unwrap_or("").split_whitespace().next();
        !m.is_some_and(|m| remove.iter().any(|r| r == m))
    });
    for a in add {
        let present = lines.iter().any(|l| {
            l.split('#').next().unwrap_or("").split_whitespace().next() == Some(a.as_str())
        });
        if !present {
            lines.push(a);
        }
    }
    join(&lines)
}

/// A unified diff of `old` -> `new` for `path` (empty when equal).
pub fn diff(path: &str, old: &str, new: &str) -> String {
    if old == new {
        return String::new();
    }
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(&format!("{path} (before)"), &format!("{path} (after)"))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRUB: &str =
        "GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\nGRUB_CMDLINE_LINUX=\"\"\n";

    #[test]
    fn grub_parameters_are_added_once_and_removed() {
        let add = vec!["intel_iommu=on".to_string(), "iommu=pt".to_string()];
        let once = grub_cmdline(GRUB, &add, &[]);
        assert!(once.contains("GRUB_CMDLINE_LINUX_DEFAULT=\"quiet intel_iommu=on iommu=pt\"\n"));
        assert_eq!(grub_cmdline(&once, &add, &[]), once, "idempotent");
        let back = grub_cmdline(&once, &[], &["intel_iommu".into(), "iommu=pt".into()]);
        assert_eq!(back, GRUB);
        let changed = grub_cmdline(&once, &["intel_iommu=off".into()], &[]);
        assert!(
            changed.contains("\"quiet intel_iommu=off iommu=pt\""),
            "{changed}"
        );
    }

    #[test]
    fn systemd_boot_cmdline_is_one_line() {
        let c = kernel_cmdline_file(
            "root=ZFS=rpool/ROOT/pve-1 boot=zfs\n",
            &["intel_iommu=on".into()],
            &[],
        );
        assert_eq!(c, "root=ZFS=rpool/ROOT/pve-1 boot=zfs intel_iommu=on\n");
    }

    #[test]
    fn modules_lines_and_blocks() {
        let m = modules(
            "# comment\nloop\nvfio_virqfd\n",
            &["vfio".into(), "vfio_pci".into()],
            &["vfio_virqfd".into()],
        );
        assert_eq!(m, "# comment\nloop\nvfio\nvfio_pci\n");
        assert_eq!(modules(&m, &["vfio".into()], &[]), m);
        let re = Regex::new("^options vfio-pci").unwrap();
        let l = ensure_line(
            "a\noptions vfio-pci ids=1:2\n",
            "options vfio-pci ids=8086:3e92",
            Some(&re),
            Presence::Present,
        );
        assert_eq!(l, "a\noptions vfio-pci ids=8086:3e92\n");
        assert_eq!(
            ensure_line(&l, "a", None, Presence::Absent),
            "options vfio-pci ids=8086:3e92\n"
        );
        let b = ensure_block(
            "x\n",
            "offload",
            "\tpost-up ethtool -K eno1 tso off",
            Presence::Present,
        );
        assert_eq!(b, "x\n# BEGIN pvefleet: offload\n\tpost-up ethtool -K eno1 tso off\n# END pvefleet: offload\n");
        assert_eq!(
            ensure_block(
                &b,
                "offload",
                "\tpost-up ethtool -K eno1 tso off",
                Presence::Present
            ),
            b
        );
        assert_eq!(ensure_block(&b, "offload", "", Presence::Absent), "x\n");
    }

    #[test]
    fn lines_go_into_their_stanza() {
        let ifaces = "auto lo\niface lo inet loopback\n\niface eno1 inet manual\n\nauto vmbr0\n";
        let after = Regex::new("^iface eno1 inet").unwrap();
        let l = "\tpost-up /usr/sbin/ethtool -K eno1 tso off gso off";
        let once = ensure_line_after(ifaces, l, None, Some(&after), Presence::Present);
        assert_eq!(once, "auto lo\niface lo inet loopback\n\niface eno1 inet manual\n\tpost-up /usr/sbin/ethtool -K eno1 tso off gso off\n\nauto vmbr0\n");
        assert_eq!(
            ensure_line_after(&once, l, None, Some(&after), Presence::Present),
            once
        );
    }

    #[test]
    fn diffs_are_unified() {
        let d = diff(
            "/etc/default/grub",
            GRUB,
            &grub_cmdline(GRUB, &["intel_iommu=on".into()], &[]),
        );
        assert!(d.contains("-GRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\n+GRUB_CMDLINE_LINUX_DEFAULT=\"quiet intel_iommu=on\""), "{d}");
        assert!(d.starts_with("--- /etc/default/grub (before)"));
        assert_eq!(diff("x", "a", "a"), "");
    }
}
