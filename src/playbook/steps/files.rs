//! File steps: `line`, `lines`, `block`, `file`, `kernel_cmdline` (boot-loader aware) and
//! `modules`. Every write is journaled intent first (path, backup location, whether the file
//! existed), then backed up on the node (the first backup of a path in a run is never replaced),
//! written atomically (temporary file + rename, mode and owner kept), and journaled again with
//! the SHA-1 of what was written, which rollback uses to detect drift.

use super::super::context::{backup_dir, result, NodeState};
use super::super::edit;
use super::super::error::StepError;
use super::super::model::{AddRemove, BlockStep, FileStep, LineStep, LinesStep, Presence, Step};
use crate::journal::{sha1_hex, BackupRecord};
use crate::maintenance::remote::{first_line, NodeShell};
use crate::outcome::{StepResult, StepStatus};
use crate::quote::shell_quote;
use crate::ssh::ExitStatus;

/// The command that makes a change to `path` take effect, when the path alone says it:
/// files read into the initramfs need `update-initramfs` (DOMAIN.md §4).
pub fn refresh_for(path: &str) -> Option<&'static str> {
    if path == "/etc/modules"
        || path.starts_with("/etc/modprobe.d/")
        || path.starts_with("/etc/initramfs-tools/")
    {
        Some("update-initramfs -u -k all")
    } else {
        None
    }
}

/// What a write is.
enum Change<'a> {
    Write(&'a str),
    Remove,
}

/// Journal the intent, back up the original (once per run), apply the change, journal it.
async fn apply(
    r: &dyn NodeShell,
    st: &mut NodeState<'_>,
    path: &str,
    existed_now: bool,
    change: Change<'_>,
    refresh: Option<&str>,
) -> Result<(), StepError> {
    let dir = backup_dir(&st.s.run_id);
    let backup = format!("{dir}{path}");
    let refresh = refresh.or_else(|| refresh_for(path)).map(str::to_string);
    // The first record of a path in this run defines the original.
    let existed = match st.backed_up.get(path) {
        Some(e) => *e,
        None => {
            if let Some(j) = &st.s.journal {
                j.backup(BackupRecord {
                    node: r.node().name.clone(),
                    path: path.to_string(),
                    backup: backup.clone(),
                    existed: existed_now,
                    refresh: refresh.clone(),
                    phase: crate::vocab::Phase::Intent,
                    written_sha1: None,
                })
                .await;
            }
            st.backed_up.insert(path.to_string(), existed_now);
            existed_now
        }
    };
    let (p, b) = (shell_quote(path), shell_quote(&backup));
    // Copy the original only if the run found it (a file the run created has no original) and
    // no copy exists yet (never replace the first backup).
    let save = if existed {
        format!("if [ -e {p} ] && [ ! -e {b} ]; then mkdir -p \"$(dirname {b})\" && cp -a {p} {b}; fi; ")
    } else {
        String::new()
    };
    // The content goes on standard input (`cat > TMP`), not in an argument: files of any size
    // (an argument is limited to about 128 KiB by the kernel).
    let out = match change {
        Change::Write(content) => {
            let tmp = shell_quote(&format!("{path}.pvefleet-tmp"));
            let cmd = format!(
                "set -e; {save}mkdir -p \"$(dirname {p})\"; cat > {tmp}; \
                 if [ -e {p} ]; then chmod --reference={p} {tmp}; chown --reference={p} {tmp}; fi; mv {tmp} {p}"
            );
            r.sh_stdin(&cmd, content.as_bytes()).await?
        }
        Change::Remove => r.sh(&format!("set -e; {save}rm -f {p}")).await?,
    };
    if out.exit != ExitStatus::Code(0) {
        return Err(StepError::Remote(format!(
            "cannot write {path}: {}",
            first_line(&out.stderr)
        )));
    }
    if let Some(j) = &st.s.journal {
        j.backup(BackupRecord {
            node: r.node().name.clone(),
            path: path.to_string(),
            backup,
            existed,
            refresh,
            phase: crate::vocab::Phase::Written,
            written_sha1: match change {
                Change::Write(c) => Some(sha1_hex(c.as_bytes())),
                Change::Remove => None,
            },
        })
        .await;
    }
    Ok(())
}

async fn file_step(
    r: &dyn NodeShell,
    st: &mut NodeState<'_>,
    step: &Step,
    path: &str,
    new_of: impl Fn(&str) -> String,
    refresh: Option<&str>,
) -> Result<StepResult, StepError> {
    let current = r.read(path).await?;
    let old = current.clone().unwrap_or_default();
    let new = new_of(&old);
    if new == old && current.is_some() {
        return Ok(result(
            step,
            StepStatus::Ok,
            format!("{path} already as wanted"),
        ));
    }
    let mut res = result(
        step,
        StepStatus::Changed,
        format!(
            "{path} {}",
            if st.s.check {
                "would change"
            } else {
                "changed"
            }
        ),
    );
    res.diff = Some(edit::diff(path, &old, &new));
    if let Some(cmd) = refresh {
        res.commands.push(cmd.to_string());
    }
    if !st.s.check {
        apply(r, st, path, current.is_some(), Change::Write(&new), refresh).await?;
        if let Some(cmd) = refresh {
            let out = r.sh(cmd).await?;
            if out.exit != ExitStatus::Code(0) {
                return Ok(StepResult {
                    status: StepStatus::Failed,
                    detail: format!("{cmd} failed: {}", first_line(&out.stderr)),
                    ..res
                });
            }
        }
    }
    Ok(res)
}

fn regex(x: Option<String>, what: &str) -> Result<Option<regex::Regex>, StepError> {
    x.map(|a| regex::Regex::new(&a).map_err(|e| StepError::Template(format!("{what}: {e}"))))
        .transpose()
}

pub(super) async fn line(
    r: &mut dyn NodeShell,
    st: &mut NodeState<'_>,
    step: &Step,
    line: &LineStep,
) -> Result<StepResult, StepError> {
    let path = st.render_one(&line.path, false)?;
    let lines = vec![st.render_one(&line.line, false)?];
    let after = regex(st.render(&line.after, false)?, "after")?;
    let how = LineEdit {
        regexp: line.regexp.as_ref(),
        after: after.as_ref(),
        state: line.state,
    };
    edit_lines(r, st, step, &path, &lines, how).await
}

pub(super) async fn lines(
    r: &mut dyn NodeShell,
    st: &mut NodeState<'_>,
    step: &Step,
    lines: &LinesStep,
) -> Result<StepResult, StepError> {
    let path = st.render_one(&lines.path, false)?;
    let rendered = st.render_list(&lines.lines)?;
    let how = LineEdit {
        regexp: None,
        after: None,
        state: lines.state,
    };
    edit_lines(r, st, step, &path, &rendered, how).await
}

/// How each line of a `line` / `lines` step is put in its file.
struct LineEdit<'a> {
    regexp: Option<&'a regex::Regex>,
    after: Option<&'a regex::Regex>,
    state: Presence,
}

async fn edit_lines(
    r: &mut dyn NodeShell,
    st: &mut NodeState<'_>,
    step: &Step,
    path: &str,
    lines: &[String],
    how: LineEdit<'_>,
) -> Result<StepResult, StepError> {
    file_step(
        r,
        st,
        step,
        path,
        |old| {
            lines.iter().fold(old.to_string(), |acc, l| {
                edit::ensure_line_after(&acc, l, how.regexp, how.after, how.state)
            })
        },
        None,
    )
    .await
}

pub(super) async fn block(
    r: &mut dyn NodeShell,
    st: &mut NodeState<'_>,
    step: &Step,
    block: &BlockStep,
) -> Result<StepResult, StepError> {
    let path = st.render_one(&block.path, false)?;
    let body = st.render_one(&block.block, false)?;
    let name = step.name.get_ref().clone();
    let state = block.state;
    file_step(
        r,
        st,
        step,
        &path,
        |old| edit::ensure_block(old, &name, &body, state),
        None,
    )
    .await
}

pub(super) async fn file(
    r: &mut dyn NodeShell,
    st: &mut NodeState<'_>,
    step: &Step,
    file: &FileStep,
) -> Result<StepResult, StepError> {
    let path = st.render_one(&file.path, false)?;
    if file.state == Presence::Absent {
        let exists = r.read(&path).await?.is_some();
        if !exists {
            return Ok(result(step, StepStatus::Ok, format!("{path} absent")));
        }
        let mut res = result(step, StepStatus::Changed, format!("{path} removed"));
        if let Some(cmd) = refresh_for(&path) {
            res.commands.push(cmd.to_string());
        }
        if !st.s.check {
            apply(r, st, &path, true, Change::Remove, None).await?;
        }
        return Ok(res);
    }
    let content = st.render(&file.content, false)?.unwrap_or_default();
    let mut res = file_step(r, st, step, &path, |_| content.clone(), None).await?;
    if res.status != StepStatus::Failed {
        let mut fix = Vec::new();
        if let Some(m) = &file.mode {
            fix.push(format!(
                "chmod {} {}",
                shell_quote(m.get_ref()),
                shell_quote(&path)
            ));
        }
        if let Some(o) = &file.owner {
            fix.push(format!(
                "chown {} {}",
                shell_quote(o.get_ref()),
                shell_quote(&path)
            ));
        }
        if !fix.is_empty() && !st.s.check {
            r.sh(&fix.join(" && ")).await?;
        }
    }
    if res.status == StepStatus::Ok && (file.mode.is_some() || file.owner.is_some()) {
        res.detail.push_str(" (mode/owner enforced)");
    }
    Ok(res)
}

/// How this node boots: the one boot-loader detection shared with the gpu probe
/// (`crate::bootloader`, DOMAIN.md §4 and §11).
pub(crate) async fn boot_setup(
    r: &dyn NodeShell,
) -> Result<crate::bootloader::BootSetup, StepError> {
    let out = r.sh(crate::bootloader::SNIPPET).await?;
    crate::bootloader::parse(&String::from_utf8_lossy(&out.stdout))
        .map_err(|e| StepError::Remote(format!("boot loader: {e}")))
}

pub(super) async fn kernel_cmdline(
    r: &mut dyn NodeShell,
    st: &mut NodeState<'_>,
    step: &Step,
    lists: &AddRemove,
) -> Result<StepResult, StepError> {
    let add = st.render_list(&lists.add)?;
    let remove = st.render_list(&lists.remove)?;
    // The file the boot loader reads (a grub.d file that replaces the line wins over
    // /etc/default/grub) and what makes an edit reach the next boot: update-grub on plain GRUB,
    // proxmox-boot-tool refresh on systemd-boot and on GRUB managed by proxmox-boot-tool.
    let target = boot_setup(r).await?.cmdline_target();
    let refresh = target.refresh.join(" && ");
    file_step(
        r,
        st,
        step,
        &target.path,
        |old| edit::kernel_cmdline(target.format, old, &add, &remove),
        (!refresh.is_empty()).then_some(refresh.as_str()),
    )
    .await
}

pub(super) async fn modules(
    r: &mut dyn NodeShell,
    st: &mut NodeState<'_>,
    step: &Step,
    lists: &AddRemove,
) -> Result<StepResult, StepError> {
    let add = st.render_list(&lists.add)?;
    let remove = st.render_list(&lists.remove)?;
    file_step(
        r,
        st,
        step,
        "/etc/modules",
        |old| edit::modules(old, &add, &remove),
        Some("update-initramfs -u -k all"),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initramfs_inputs_need_update_initramfs() {
        assert_eq!(
            refresh_for("/etc/modprobe.d/vfio.conf"),
            Some("update-initramfs -u -k all")
        );
        assert_eq!(
            refresh_for("/etc/modules"),
            Some("update-initramfs -u -k all")
        );
        assert_eq!(refresh_for("/etc/network/interfaces"), None);
    }
}
