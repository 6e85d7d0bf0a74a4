//! Validation of a playbook before anything runs: step kinds and their fields, unique names,
//! `on_change` references, probe names, template syntax; and (per node, once the inventory is
//! known) that every variable a template uses is defined.

use std::collections::HashSet;

use toml::Spanned;

use std::path::Path;

use super::model::{Playbook, PlaybookFile, Step, StepKind};
use super::template::Templates;
use crate::inventory::SourceError;

/// Which fields each kind takes (besides name, kind, when, on_change).
fn allowed(kind: StepKind) -> &'static [&'static str] {
    use StepKind::*;
    match kind {
        Run => &[
            "command",
            "creates",
            "unless",
            "only_if",
            "changed_when",
            "failed_when",
            "undo",
            "read_only",
            "detach",
            "repair",
        ],
        Line => &["path", "line", "regexp", "after", "state"],
        Lines => &["path", "lines", "state"],
        Block => &["path", "block", "state"],
        File => &["path", "content", "mode", "owner", "state"],
        KernelCmdline => &["add", "remove"],
        Modules => &["add", "remove"],
        Service => &["service", "state"],
        Reboot => &[
            "timeout",
            "drain",
            "local_disks",
            "return_guests",
            "ceph_accept_warnings",
            "pg_timeout",
        ],
        WaitFor => &["command", "timeout"],
        Probe => &["probes"],
        Assert => &["that", "message"],
    }
}

fn required(kind: StepKind) -> &'static [&'static str] {
    use StepKind::*;
    match kind {
        Run | WaitFor => &["command"],
        Line => &["path", "line"],
        Lines => &["path", "lines"],
        Block => &["path", "block"],
        File => &["path"],
        Service => &["service", "state"],
        Probe => &["probes"],
        Assert => &["that"],
        KernelCmdline | Modules | Reboot => &[],
    }
}

/// The fields a step sets, with their spans.
fn set_fields(s: &Step) -> Vec<(&'static str, std::ops::Range<usize>)> {
    let mut v = Vec::new();
    macro_rules! opt {
        ($f:ident) => {
            if let Some(x) = &s.$f {
                v.push((stringify!($f), x.span()));
            }
        };
    }
    macro_rules! list {
        ($f:ident) => {
            if let Some(x) = s.$f.first() {
                v.push((stringify!($f), x.span()));
            }
        };
    }
    opt!(command);
    opt!(creates);
    opt!(unless);
    opt!(only_if);
    opt!(changed_when);
    opt!(failed_when);
    opt!(undo);
    opt!(read_only);
    opt!(detach);
    opt!(repair);
    opt!(path);
    opt!(line);
    if let Some(l) = &s.lines {
        v.push(("lines", l.first().map_or(s.name.span(), Spanned::span)));
    }
    opt!(regexp);
    opt!(after);
    opt!(state);
    opt!(block);
    opt!(content);
    opt!(mode);
    opt!(owner);
    list!(add);
    list!(remove);
    opt!(service);
    opt!(timeout);
    opt!(drain);
    opt!(local_disks);
    opt!(return_guests);
    list!(ceph_accept_warnings);
    opt!(pg_timeout);
    list!(probes);
    opt!(that);
    opt!(message);
    v
}

/// Every template string of a step: (text, span, is_expression).
pub fn templates_of(s: &Step) -> Vec<(&Spanned<String>, bool)> {
    let mut v: Vec<(&Spanned<String>, bool)> = Vec::new();
    for t in [
        &s.command,
        &s.creates,
        &s.unless,
        &s.only_if,
        &s.undo,
        &s.repair,
        &s.path,
        &s.line,
        &s.block,
        &s.content,
        &s.skip_note,
    ]
    .into_iter()
    .flatten()
    {
        v.push((t, false));
    }
    for t in s.lines.iter().flatten().chain(&s.add).chain(&s.remove) {
        v.push((t, false));
    }
    for t in [&s.when, &s.changed_when, &s.failed_when, &s.that]
        .into_iter()
        .flatten()
    {
        v.push((t, true));
    }
    v
}

impl Playbook {
    /// Read, parse and validate.
    pub fn load(path: &Path) -> Result<Playbook, SourceError> {
        let text = std::fs::read_to_string(path).map_err(|e| SourceError::io(path, e))?;
        Playbook::parse(&text, path)
    }

    /// Parse and validate `text`.
    pub fn parse(text: &str, path: &Path) -> Result<Playbook, SourceError> {
        let file: PlaybookFile =
            toml::from_str(text).map_err(|e| SourceError::from_toml(path, text, &e))?;
        let pb = Playbook {
            path: path.to_path_buf(),
            text: text.to_string(),
            file,
        };
        validate(&pb)?;
        Ok(pb)
    }
}

/// Structural validation (no inventory needed).
pub fn validate(pb: &Playbook) -> Result<(), SourceError> {
    let t = Templates::new();
    let mut names: Vec<&str> = Vec::new();
    if let Some(b) = pb
        .file
        .strategy
        .batch
        .as_ref()
        .filter(|b| !b.get_ref().is_auto())
    {
        // Any node count works for the check: a valid size resolves for every count.
        if let Err(e) = b.get_ref().resolve(100) {
            return Err(pb.error_at(b.span(), e.to_string()));
        }
    }
    for g in &pb.file.gather {
        if crate::probe::by_name(g.get_ref()).is_none() {
            return Err(pb.error_at(
                g.span(),
                format!(
                    "unknown probe `{}`; probes: {}",
                    g.get_ref(),
                    crate::audit::probe_names().join(", ")
                ),
            ));
        }
    }
    for s in &pb.file.steps {
        let name = s.name.get_ref();
        if names.contains(&name.as_str()) {
            return Err(pb.error_at(s.name.span(), format!("duplicate step name `{name}`")));
        }
        let kind = *s.kind.get_ref();
        let ok = allowed(kind);
        for (field, span) in set_fields(s) {
            if !ok.contains(&field) {
                return Err(pb.error_at(
                    span,
                    format!(
                        "`{field}` does not apply to a `{kind:?}` step; it takes: {}",
                        ok.join(", ")
                    )
                    .replace(&format!("{kind:?}"), &kind_name(kind)),
                ));
            }
        }
        let set: Vec<&str> = set_fields(s).into_iter().map(|(f, _)| f).collect();
        for r in required(kind) {
            if !set.contains(r) {
                return Err(pb.error_at(
                    s.kind.span(),
                    format!("a `{}` step needs `{r}`", kind_name(kind)),
                ));
            }
        }
        if let Some(st) = &s.state {
            let valid: &[&str] = match kind {
                StepKind::Service => &["started", "stopped", "restarted", "enabled", "disabled"],
                _ => &["present", "absent"],
            };
            if !valid.contains(&st.get_ref().as_str()) {
                return Err(pb.error_at(
                    st.span(),
                    format!(
                        "state `{}`: expected one of {}",
                        st.get_ref(),
                        valid.join(", ")
                    ),
                ));
            }
        }
        if let Some(ro) = &s.read_only {
            match ro.get_ref().as_str() {
                "all" => {}
                "guards" if s.unless.is_some() || s.only_if.is_some() => {}
                "guards" => {
                    return Err(pb.error_at(
                        ro.span(),
                        "read_only = \"guards\" needs an `unless` or `only_if` guard".into(),
                    ))
                }
                other => {
                    return Err(pb.error_at(
                        ro.span(),
                        format!("read_only `{other}`: expected \"guards\" (unless / only_if only read the node) or \"all\" (the command too)"),
                    ))
                }
            }
        }
        if let (Some(n), None) = (&s.skip_note, &s.when) {
            return Err(pb.error_at(
                n.span(),
                "`skip_note` needs a `when` (it is the detail of the skip `when` decides)".into(),
            ));
        }
        if let Some(rep) = &s.repair {
            if !Step::flag(&s.detach, false) {
                return Err(pb.error_at(
                    rep.span(),
                    "`repair` needs `detach = true` (it repairs a detached command cut off halfway)"
                        .into(),
                ));
            }
        }
        if matches!(kind, StepKind::Line) {
            if let Some(r) = &s.regexp {
                if let Err(e) = regex::Regex::new(r.get_ref()) {
                    return Err(pb.error_at(r.span(), format!("bad regexp: {e}")));
                }
            }
        }
        for p in &s.probes {
            if crate::probe::by_name(p.get_ref()).is_none() {
                return Err(pb.error_at(p.span(), format!("unknown probe `{}`", p.get_ref())));
            }
        }
        for c in &s.on_change {
            if !names.contains(&c.get_ref().as_str()) {
                return Err(pb.error_at(
                    c.span(),
                    format!(
                        "on_change names `{}`, which is not an earlier step",
                        c.get_ref()
                    ),
                ));
            }
        }
        if kind == StepKind::Modules && s.add.is_empty() && s.remove.is_empty() {
            return Err(pb.error_at(
                s.kind.span(),
                "a `modules` step needs `add` or `remove`".into(),
            ));
        }
        if kind == StepKind::KernelCmdline && s.add.is_empty() && s.remove.is_empty() {
            return Err(pb.error_at(
                s.kind.span(),
                "a `kernel_cmdline` step needs `add` or `remove`".into(),
            ));
        }
        for (tpl, expr) in templates_of(s) {
            if let Err(e) = t.variables(tpl.get_ref(), expr) {
                return Err(pb.error_at(tpl.span(), format!("template error: {e}")));
            }
        }
        names.push(name);
    }
    Ok(())
}

/// The name of a kind as written in files.
pub fn kind_name(k: StepKind) -> String {
    let dbg = format!("{k:?}");
    let mut out = String::new();
    for (i, c) in dbg.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// Check that every variable the templates use is defined, given the variables a node has.
/// `rc`, `stdout`, `stderr` are defined in `changed_when` / `failed_when`.
pub fn check_variables(pb: &Playbook, known: &HashSet<String>) -> Result<(), SourceError> {
    let t = Templates::new();
    for s in &pb.file.steps {
        for (tpl, expr) in templates_of(s) {
            let used = t
                .variables(tpl.get_ref(), expr)
                .map_err(|e| pb.error_at(tpl.span(), e.to_string()))?;
            let is_result_expr = [&s.changed_when, &s.failed_when]
                .iter()
                .any(|x| x.as_ref().is_some_and(|x| std::ptr::eq(x, tpl)));
            for v in used {
                let result_var = is_result_expr && ["rc", "stdout", "stderr"].contains(&v.as_str());
                if !known.contains(&v) && !result_var {
                    return Err(pb.error_at(tpl.span(), format!("undefined variable `{v}` (define it in [vars], the inventory, or with -e)")));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn parse(t: &str) -> Result<Playbook, SourceError> {
        Playbook::parse(t, Path::new("pb.toml"))
    }

    #[test]
    fn a_good_playbook_validates() {
        let pb = parse("name = \"x\"\n[[step]]\nname = \"a\"\nkind = \"run\"\ncommand = \"echo {{ node.name }}\"\n[[step]]\nname = \"b\"\nkind = \"service\"\nservice = \"rrdcached\"\nstate = \"restarted\"\non_change = [\"a\"]\n").unwrap();
        assert_eq!(pb.file.steps.len(), 2);
    }

    #[test]
    fn errors_are_located_and_say_what_was_expected() {
        let cases = [
            ("name = \"x\"\n[[step]]\nname = \"a\"\nkind = \"bogus\"\n", "pb.toml:4:8: unknown variant `bogus`"),
            ("name = \"x\"\n[[step]]\nname = \"a\"\nkind = \"run\"\npath = \"/x\"\n", "pb.toml:5:8: `path` does not apply to a `run` step"),
            ("name = \"x\"\n[[step]]\nname = \"a\"\nkind = \"line\"\npath = \"/x\"\n", "pb.toml:4:8: a `line` step needs `line`"),
            ("name = \"x\"\n[[step]]\nname = \"a\"\nkind = \"run\"\ncommand = \"x\"\non_change = [\"zzz\"]\n", "pb.toml:6:14: on_change names `zzz`"),
            ("name = \"x\"\n[[step]]\nname = \"a\"\nkind = \"run\"\ncommand = \"{{ oops\"\n", "pb.toml:5:11: template error"),
            ("name = \"x\"\n[[step]]\nname = \"a\"\nkind = \"run\"\ncommand = \"x\"\ncolour = 1\n", "pb.toml:6:1: unknown field `colour`"),
            ("name = \"x\"\n[[step]]\nname = \"a\"\nkind = \"service\"\nservice = \"x\"\nstate = \"on\"\n", "pb.toml:6:9: state `on`: expected one of started"),
            ("name = \"x\"\n[[step]]\nname = \"a\"\nkind = \"run\"\ncommand = \"x\"\n[[step]]\nname = \"a\"\nkind = \"reboot\"\n", "pb.toml:7:8: duplicate step name `a`"),
            ("name = \"x\"\n[strategy]\nmode = \"rolling\"\nbatch = 0\n", "pb.toml:4:9: batch = 0: expected at least 1 node"),
            ("name = \"x\"\n[strategy]\nmode = \"rolling\"\nbatch = -2\n", "pb.toml:4:9: batch = -2: expected at least 1 node"),
            ("name = \"x\"\n[strategy]\nmode = \"rolling\"\nbatch = \"150%\"\n", "pb.toml:4:9: batch = \"150%\": expected a number of nodes"),
            ("name = \"x\"\n[strategy]\nmode = \"rolling\"\nbatch = \"0%\"\n", "pb.toml:4:9: batch = \"0%\""),
            ("name = \"x\"\n[strategy]\nmode = \"rolling\"\nbatch = \"many\"\n", "pb.toml:4:9: batch = \"many\""),
            ("name = \"x\"\n[[step]]\nname = \"a\"\nkind = \"run\"\ncommand = \"x\"\nread_only = \"yes\"\n", "pb.toml:6:13: read_only `yes`: expected \"guards\""),
            ("name = \"x\"\n[[step]]\nname = \"a\"\nkind = \"run\"\ncommand = \"x\"\nread_only = \"guards\"\n", "pb.toml:6:13: read_only = \"guards\" needs an `unless` or `only_if` guard"),
            ("name = \"x\"\n[[step]]\nname = \"a\"\nkind = \"wait_for\"\ncommand = \"x\"\nread_only = \"all\"\n", "pb.toml:6:13: `read_only` does not apply to a `wait_for` step"),
            ("name = \"x\"\n[[step]]\nname = \"a\"\nkind = \"run\"\ncommand = \"x\"\nrepair = \"y\"\n", "pb.toml:6:10: `repair` needs `detach = true`"),
            ("name = \"x\"\n[[step]]\nname = \"a\"\nkind = \"reboot\"\nskip_note = \"y\"\n", "pb.toml:5:13: `skip_note` needs a `when`"),
        ];
        for (text, want) in cases {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.starts_with(want), "want {want:?}, got {e:?}");
        }
    }

    #[test]
    fn undefined_variables_are_found_before_running() {
        let pb = parse("name = \"x\"\n[vars]\na = 1\n[[step]]\nname = \"s\"\nkind = \"run\"\ncommand = \"echo {{ a }} {{ b }}\"\nchanged_when = \"rc == 0\"\n").unwrap();
        let known: HashSet<String> = ["a", "node", "facts", "vars"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let e = check_variables(&pb, &known).unwrap_err().to_string();
        assert!(e.starts_with("pb.toml:7:11: undefined variable `b`"), "{e}");
    }
}
