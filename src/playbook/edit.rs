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

/// A `KEY=VALUE` assignment of a shell-sourced GRUB file, split so the value can be edited
/// and everything around it kept: `GRUB_CMDLINE_LINUX_DEFAULT="quiet" # note` has the value
/// `quiet`, the quote `"` and the tail ` # note`.
struct GrubAssignment<'a> {
    /// Up to and including `=` (indentation, `export ` and the key).
    head: &'a str,
    quote: Option<char>,
    value: &'a str,
    /// After the closing quote (or after an unquoted value): a comment, spaces.
    tail: &'a str,
}

fn grub_assignment<'a>(line: &'a str, key: &str) -> Option<GrubAssignment<'a>> {
    let body = line.trim_start();
    let body = body
        .strip_prefix("export")
        .filter(|r| r.starts_with(char::is_whitespace))
        .map_or(body, str::trim_start);
    let rest = body.strip_prefix(key)?.strip_prefix('=')?;
    let head = &line[..line.len() - rest.len()];
    match rest.chars().next() {
        Some(q @ ('"' | '\'')) => {
            let inner = &rest[1..];
            // An unterminated quote: leave the line alone rather than guess.
            let close = inner.find(q)?;
            Some(GrubAssignment {
                head,
                quote: Some(q),
                value: &inner[..close],
                tail: &inner[close + 1..],
            })
        }
        _ => {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            Some(GrubAssignment {
                head,
                quote: None,
                value: &rest[..end],
                tail: &rest[end..],
            })
        }
    }
}

/// Edit `GRUB_CMDLINE_LINUX_DEFAULT` in /etc/default/grub content (or a
/// `/etc/default/grub.d/*.cfg` file): the last assignment is the one GRUB uses, so that one is
/// edited; its quote style, indentation, `export` and a trailing comment are kept. Without one,
/// a line is appended.
pub fn grub_cmdline(content: &str, add: &[String], remove: &[String]) -> String {
    let key = "GRUB_CMDLINE_LINUX_DEFAULT";
    let mut lines: Vec<String> = content.lines().map(str::to_string).collect();
    let last = lines
        .iter()
        .rposition(|l| grub_assignment(l, key).is_some());
    match last {
        Some(i) => {
            let a = grub_assignment(&lines[i], key).expect("matched above");
            let q = a.quote.unwrap_or('"');
            let new = format!(
                "{}{q}{}{q}{}",
                a.head,
                edit_params(a.value, add, remove),
                a.tail
            );
            lines[i] = new;
        }
        None => lines.push(format!("{key}=\"{}\"", edit_params("", add, remove))),
    }
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    join(&refs)
}

/// Edit the kernel command line in a file written the way `format` says: the one call the
/// playbook engine needs after [`crate::bootloader::BootSetup::cmdline_target`] told it which
/// file to edit.
pub fn kernel_cmdline(
    format: crate::bootloader::CmdlineFormat,
    content: &str,
    add: &[String],
    remove: &[String],
) -> String {
    match format {
        crate::bootloader::CmdlineFormat::GrubDefault => grub_cmdline(content, add, remove),
        crate::bootloader::CmdlineFormat::KernelCmdline => {
            kernel_cmdline_file(content, add, remove)
        }
    }
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
    fn a_trailing_comment_and_the_quote_style_survive_the_edit() {
        let with_comment =
            "GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet\" # keep the console quiet\n";
        let add = vec!["intel_iommu=on".to_string()];
        let once = grub_cmdline(with_comment, &add, &[]);
        assert_eq!(
            once,
            "GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet intel_iommu=on\" # keep the console quiet\n"
        );
        assert_eq!(grub_cmdline(&once, &add, &[]), once, "idempotent");
        assert_eq!(
            grub_cmdline(&once, &[], &["intel_iommu".into()]),
            with_comment
        );
        let single = "  export GRUB_CMDLINE_LINUX_DEFAULT='quiet splash'#x\n";
        assert_eq!(
            grub_cmdline(single, &add, &[]),
            "  export GRUB_CMDLINE_LINUX_DEFAULT='quiet splash intel_iommu=on'#x\n"
        );
        let bare = "GRUB_CMDLINE_LINUX_DEFAULT=quiet # bare word\n";
        assert_eq!(
            grub_cmdline(bare, &add, &[]),
            "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet intel_iommu=on\" # bare word\n"
        );
    }

    #[test]
    fn the_last_assignment_is_the_one_edited() {
        let twice = "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\n#GRUB_CMDLINE_LINUX_DEFAULT=\"old\"\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet splash\"\n";
        let out = grub_cmdline(twice, &["iommu=pt".into()], &[]);
        assert_eq!(
            out,
            "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\n#GRUB_CMDLINE_LINUX_DEFAULT=\"old\"\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet splash iommu=pt\"\n"
        );
        // GRUB_CMDLINE_LINUX is a different key.
        let linux_only = "GRUB_CMDLINE_LINUX=\"console=ttyS0\"\n";
        assert_eq!(
            grub_cmdline(linux_only, &["iommu=pt".into()], &[]),
            "GRUB_CMDLINE_LINUX=\"console=ttyS0\"\nGRUB_CMDLINE_LINUX_DEFAULT=\"iommu=pt\"\n"
        );
    }

    #[test]
    fn the_format_picks_the_edit() {
        use crate::bootloader::CmdlineFormat;
        let add = vec!["intel_iommu=on".to_string()];
        assert_eq!(
            kernel_cmdline(CmdlineFormat::GrubDefault, GRUB, &add, &[]),
            grub_cmdline(GRUB, &add, &[])
        );
        assert_eq!(
            kernel_cmdline(
                CmdlineFormat::KernelCmdline,
                "root=ZFS=rpool/ROOT/pve-1 boot=zfs\n",
                &add,
                &[]
            ),
            "root=ZFS=rpool/ROOT/pve-1 boot=zfs intel_iommu=on\n"
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
