//! Validation of a playbook before anything runs, as the one conversion of the file serde read
//! ([`super::raw`]) into the typed [`super::model`]: each step's kind and its fields (which it
//! takes, which it needs, their values), unique names, `on_change` references, probe names,
//! template syntax; and (per node, once the inventory is known) that every variable a template
//! uses is defined.

use std::collections::HashSet;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::model::{
    Action, AddRemove, AssertStep, BlockStep, Detach, Drain, FileStep, LineStep, LinesStep,
    Playbook, PlaybookFile, Presence, ProbeStep, ReadOnly, RebootStep, RunStep, ServiceState,
    ServiceStep, Step, StepKind, WaitForStep,
};
use super::raw::{RawPlaybookFile, RawStep};
use super::template::Templates;
use crate::inventory::SourceError;

impl Playbook {
    /// Read, parse and validate.
    pub fn load(path: &Path) -> Result<Playbook, SourceError> {
        let text = std::fs::read_to_string(path).map_err(|e| SourceError::io(path, e))?;
        Playbook::parse(&text, path)
    }

    /// Parse and validate `text`.
    pub fn parse(text: &str, path: &Path) -> Result<Playbook, SourceError> {
        let raw: RawPlaybookFile =
            toml::from_str(text).map_err(|e| SourceError::from_toml(path, text, &e))?;
        let mut pb = Playbook {
            path: path.to_path_buf(),
            text: text.to_string(),
            file: PlaybookFile {
                name: raw.name,
                description: raw.description,
                vars: raw.vars,
                gather: raw.gather,
                strategy: raw.strategy,
                steps: Vec::new(),
            },
        };
        pb.file.steps = validate(&pb, raw.steps)?;
        Ok(pb)
    }
}

/// Structural validation (no inventory needed): the strategy and `gather` of `pb`, then each
/// raw step converted into its typed [`Step`].
fn validate(pb: &Playbook, raw: Vec<RawStep>) -> Result<Vec<Step>, SourceError> {
    let t = Templates::new();
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
    let mut steps: Vec<Step> = Vec::new();
    for s in raw {
        let name = s.name.get_ref();
        if steps.iter().any(|e| e.name.get_ref() == name) {
            return Err(pb.error_at(s.name.span(), format!("duplicate step name `{name}`")));
        }
        let step = Convert::new(pb, s).step(&steps)?;
        for tpl in step.templates() {
            if let Err(e) = t.variables(tpl.text.get_ref(), tpl.expression) {
                return Err(pb.error_at(tpl.text.span(), format!("template error: {e}")));
            }
        }
        steps.push(step);
    }
    Ok(steps)
}

/// Takes a raw step apart into its typed [`Step`]: the one place that knows which fields each
/// kind takes, which it needs, and what their values may be. Each kind takes its fields out of
/// the raw step (recording their names, for the error that lists them); a field still set
/// afterwards does not apply to the kind.
struct Convert<'a> {
    pb: &'a Playbook,
    raw: RawStep,
    kind: StepKind,
    kind_span: Range<usize>,
    /// The fields the kind takes, in the order it takes them.
    takes: Vec<&'static str>,
}

/// Take field `$f` out of the raw step of `$c`, noting that the kind takes it.
macro_rules! take {
    ($c:ident . $f:ident) => {{
        $c.takes.push(stringify!($f));
        std::mem::take(&mut $c.raw.$f)
    }};
}

impl<'a> Convert<'a> {
    fn new(pb: &'a Playbook, raw: RawStep) -> Self {
        Convert {
            pb,
            kind: *raw.kind.get_ref(),
            kind_span: raw.kind.span(),
            raw,
            takes: Vec::new(),
        }
    }

    fn err(&self, span: Range<usize>, message: impl Into<String>) -> SourceError {
        self.pb.error_at(span, message.into())
    }

    /// The checks made in this order, the first failing one reported: the kind's fields (none
    /// that does not apply, every required one), their values, `on_change`, and for
    /// `kernel_cmdline` / `modules` that something is added or removed.
    fn step(mut self, earlier: &[Step]) -> Result<Step, SourceError> {
        use StepKind as K;
        let action = match self.kind {
            K::Run => self.run()?,
            K::WaitFor => {
                let (command, timeout) = (take!(self.command), take!(self.timeout));
                self.no_others()?;
                Action::WaitFor(WaitForStep {
                    command: self.need(command, "command")?,
                    timeout: timeout.map(|t| t.into_inner().0),
                })
            }
            K::Line => {
                let (path, line, regexp) = (take!(self.path), take!(self.line), take!(self.regexp));
                let (after, state) = (take!(self.after), take!(self.state));
                self.no_others()?;
                let (path, line) = (self.need(path, "path")?, self.need(line, "line")?);
                let state = self.presence(state)?;
                let regexp = regexp
                    .map(|r| {
                        regex::Regex::new(r.get_ref())
                            .map_err(|e| self.err(r.span(), format!("bad regexp: {e}")))
                    })
                    .transpose()?;
                Action::Line(LineStep {
                    path,
                    line,
                    regexp,
                    after,
                    state,
                })
            }
            K::Lines => {
                let (path, lines, state) = (take!(self.path), take!(self.lines), take!(self.state));
                self.no_others()?;
                let (path, lines) = (self.need(path, "path")?, self.need(lines, "lines")?);
                let state = self.presence(state)?;
                Action::Lines(LinesStep { path, lines, state })
            }
            K::Block => {
                let (path, block, state) = (take!(self.path), take!(self.block), take!(self.state));
                self.no_others()?;
                let (path, block) = (self.need(path, "path")?, self.need(block, "block")?);
                let state = self.presence(state)?;
                Action::Block(BlockStep { path, block, state })
            }
            K::File => {
                let (path, content, mode) =
                    (take!(self.path), take!(self.content), take!(self.mode));
                let (owner, state) = (take!(self.owner), take!(self.state));
                self.no_others()?;
                let path = self.need(path, "path")?;
                let state = self.presence(state)?;
                Action::File(FileStep {
                    path,
                    content,
                    mode,
                    owner,
                    state,
                })
            }
            K::KernelCmdline | K::Modules => {
                let (add, remove) = (take!(self.add), take!(self.remove));
                self.no_others()?;
                let lists = AddRemove { add, remove };
                match self.kind {
                    K::Modules => Action::Modules(lists),
                    _ => Action::KernelCmdline(lists),
                }
            }
            K::Service => {
                let (service, state) = (take!(self.service), take!(self.state));
                self.no_others()?;
                let service = self.need(service, "service")?;
                let state = self.need(state, "state")?;
                let state = ServiceState::parse(state.get_ref())
                    .ok_or_else(|| self.bad_state(&state, &ServiceState::NAMES))?;
                Action::Service(ServiceStep { service, state })
            }
            K::Reboot => {
                let (timeout, drain) = (take!(self.timeout), take!(self.drain));
                let (local_disks, return_guests) =
                    (take!(self.local_disks), take!(self.return_guests));
                let (max_migrations, bwlimit) = (take!(self.max_migrations), take!(self.bwlimit));
                let accept = take!(self.ceph_accept_warnings);
                let pg_timeout = take!(self.pg_timeout);
                self.no_others()?;
                let max_migrations = self.positive(max_migrations, "max_migrations", 64)?;
                let bwlimit = self.positive(bwlimit, "bwlimit", i64::from(u32::MAX))?;
                Action::Reboot(RebootStep {
                    timeout: timeout.map(|t| t.into_inner().0),
                    drain: flag(drain, false).then(|| Drain {
                        local_disks: flag(local_disks, false),
                        return_guests: flag(return_guests, true),
                        pace: crate::maintenance::drain::MigrationPace {
                            max: max_migrations.map(|n| n as u32),
                            bwlimit_kib: bwlimit.map(|n| n as u64),
                        },
                    }),
                    ceph_accept_warnings: accept,
                    pg_timeout: pg_timeout.map_or(Duration::from_secs(1800), |t| t.into_inner().0),
                })
            }
            K::Probe => {
                let probes = take!(self.probes);
                self.no_others()?;
                if probes.is_empty() {
                    return Err(self.needs("probes"));
                }
                if let Some(p) = probes
                    .iter()
                    .find(|p| crate::probe::by_name(p.get_ref()).is_none())
                {
                    return Err(self.err(p.span(), format!("unknown probe `{}`", p.get_ref())));
                }
                Action::Probe(ProbeStep { probes })
            }
            K::Assert => {
                let (that, message) = (take!(self.that), take!(self.message));
                self.no_others()?;
                Action::Assert(AssertStep {
                    that: self.need(that, "that")?,
                    message,
                })
            }
        };
        for c in &self.raw.on_change {
            if !earlier.iter().any(|e| e.name.get_ref() == c.get_ref()) {
                return Err(self.err(
                    c.span(),
                    format!(
                        "on_change names `{}`, which is not an earlier step",
                        c.get_ref()
                    ),
                ));
            }
        }
        if let Action::KernelCmdline(l) | Action::Modules(l) = &action {
            if l.add.is_empty() && l.remove.is_empty() {
                return Err(self.err(
                    self.kind_span.clone(),
                    format!("a `{}` step needs `add` or `remove`", kind_name(self.kind)),
                ));
            }
        }
        if let (Some(n), None) = (&self.raw.skip_note, &self.raw.when) {
            return Err(self.err(
                n.span(),
                "`skip_note` needs a `when` (it is the detail of the skip `when` decides)",
            ));
        }
        Ok(Step {
            name: self.raw.name,
            when: self.raw.when,
            skip_note: self.raw.skip_note,
            on_change: self.raw.on_change,
            action,
        })
    }

    fn run(&mut self) -> Result<Action, SourceError> {
        let (command, creates) = (take!(self.command), take!(self.creates));
        let (unless, only_if) = (take!(self.unless), take!(self.only_if));
        let (changed_when, failed_when) = (take!(self.changed_when), take!(self.failed_when));
        let (undo, read_only) = (take!(self.undo), take!(self.read_only));
        let (detach, repair) = (take!(self.detach), take!(self.repair));
        self.no_others()?;
        let command = self.need(command, "command")?;
        let read_only = match read_only {
            None => ReadOnly::Nothing,
            Some(ro) => match ro.get_ref().as_str() {
                "all" => ReadOnly::All,
                "guards" if unless.is_some() || only_if.is_some() => ReadOnly::Guards,
                "guards" => {
                    return Err(self.err(
                        ro.span(),
                        "read_only = \"guards\" needs an `unless` or `only_if` guard",
                    ))
                }
                other => {
                    return Err(self.err(
                        ro.span(),
                        format!("read_only `{other}`: expected \"guards\" (unless / only_if only read the node) or \"all\" (the command too)"),
                    ))
                }
            },
        };
        let detach = match (flag(detach, false), repair) {
            (true, repair) => Some(Detach { repair }),
            (false, None) => None,
            (false, Some(rep)) => return Err(self.err(
                rep.span(),
                "`repair` needs `detach = true` (it repairs a detached command cut off halfway)",
            )),
        };
        Ok(Action::Run(RunStep {
            command,
            creates,
            unless,
            only_if,
            changed_when,
            failed_when,
            undo,
            read_only,
            detach,
        }))
    }

    /// After the kind took its fields: the first field still set does not apply to the kind.
    fn no_others(&self) -> Result<(), SourceError> {
        match self.raw.set_fields().into_iter().next() {
            None => Ok(()),
            Some((field, span)) => Err(self.err(
                span,
                format!(
                    "`{field}` does not apply to a `{}` step; it takes: {}",
                    kind_name(self.kind),
                    self.takes.join(", ")
                ),
            )),
        }
    }

    /// An integer field that must be 1 ..= `max` when set.
    fn positive(
        &self,
        field: Option<Spanned<i64>>,
        name: &str,
        max: i64,
    ) -> Result<Option<i64>, SourceError> {
        match field {
            None => Ok(None),
            Some(v) if (1..=max).contains(v.get_ref()) => Ok(Some(v.into_inner())),
            Some(v) => Err(self.err(
                v.span(),
                format!(
                    "`{name}` {}: expected an integer from 1 to {max}",
                    v.get_ref()
                ),
            )),
        }
    }

    /// A required field's value.
    fn need<T>(&self, field: Option<T>, name: &str) -> Result<T, SourceError> {
        field.ok_or_else(|| self.needs(name))
    }

    fn needs(&self, name: &str) -> SourceError {
        self.err(
            self.kind_span.clone(),
            format!("a `{}` step needs `{name}`", kind_name(self.kind)),
        )
    }

    /// `state` of a file edit: present (the default) or absent.
    fn presence(&self, state: Option<Spanned<String>>) -> Result<Presence, SourceError> {
        let Some(state) = state else {
            return Ok(Presence::Present);
        };
        match state.get_ref().as_str() {
            "present" => Ok(Presence::Present),
            "absent" => Ok(Presence::Absent),
            _ => Err(self.bad_state(&state, &["present", "absent"])),
        }
    }

    fn bad_state(&self, state: &Spanned<String>, valid: &[&str]) -> SourceError {
        self.err(
            state.span(),
            format!(
                "state `{}`: expected one of {}",
                state.get_ref(),
                valid.join(", ")
            ),
        )
    }
}

/// A boolean field's value, or `default`.
fn flag(field: Option<Spanned<bool>>, default: bool) -> bool {
    field.map_or(default, Spanned::into_inner)
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
        for tpl in s.templates() {
            let used = t
                .variables(tpl.text.get_ref(), tpl.expression)
                .map_err(|e| pb.error_at(tpl.text.span(), e.to_string()))?;
            for v in used {
                let result_var =
                    tpl.sees_result && ["rc", "stdout", "stderr"].contains(&v.as_str());
                if !known.contains(&v) && !result_var {
                    return Err(pb.error_at(tpl.text.span(), format!("undefined variable `{v}` (define it in [vars], the inventory, or with -e)")));
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
    fn a_field_of_another_kind_is_refused_naming_what_the_kind_takes() {
        let cases = [
            ("run", "path = \"/x\"", "`path` does not apply to a `run` step; it takes: command, creates, unless, only_if, changed_when, failed_when, undo, read_only, detach, repair"),
            ("reboot", "probes = [\"gpu\"]", "`probes` does not apply to a `reboot` step; it takes: timeout, drain, local_disks, return_guests, max_migrations, bwlimit, ceph_accept_warnings, pg_timeout"),
            ("lines", "line = \"a\"", "`line` does not apply to a `lines` step; it takes: path, lines, state"),
            ("kernel_cmdline", "state = \"absent\"", "`state` does not apply to a `kernel_cmdline` step; it takes: add, remove"),
        ];
        for (kind, field, want) in cases {
            let text =
                format!("name = \"x\"\n[[step]]\nname = \"a\"\nkind = \"{kind}\"\n{field}\n");
            let e = parse(&text).unwrap_err().to_string();
            assert!(
                e.starts_with("pb.toml:5:") && e.contains(want),
                "want {want:?}, got {e:?}"
            );
        }
    }

    #[test]
    fn a_drain_s_pace_is_read_and_bounded() {
        let rb = |extra: &str| {
            parse(&format!(
                "name = \"x\"\n[[step]]\nname = \"rb\"\nkind = \"reboot\"\ndrain = true\n{extra}\n"
            ))
        };
        let pb = rb("max_migrations = 6\nbwlimit = 500000").unwrap();
        let d = pb.file.steps[0].reboot().and_then(|r| r.drain).unwrap();
        assert_eq!(d.pace.max, Some(6));
        assert_eq!(d.pace.bwlimit_kib, Some(500000));
        let d = rb("").unwrap().file.steps[0]
            .reboot()
            .and_then(|r| r.drain)
            .unwrap();
        assert_eq!(d.pace, Default::default());
        for (bad, want) in [
            (
                "max_migrations = 0",
                "pb.toml:6:18: `max_migrations` 0: expected an integer from 1 to 64",
            ),
            (
                "max_migrations = 65",
                "`max_migrations` 65: expected an integer from 1 to 64",
            ),
            (
                "bwlimit = -1",
                "`bwlimit` -1: expected an integer from 1 to",
            ),
        ] {
            let e = rb(bad).unwrap_err().to_string();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }

    #[test]
    fn steps_load_as_one_typed_value_per_kind() {
        let pb = parse("name = \"x\"\n[[step]]\nname = \"up\"\nkind = \"run\"\ncommand = \"apt-get -y dist-upgrade\"\ndetach = true\nrepair = \"dpkg --configure -a\"\nunless = \"true\"\nread_only = \"guards\"\n[[step]]\nname = \"svc\"\nkind = \"service\"\nservice = \"rrdcached\"\nstate = \"restarted\"\n[[step]]\nname = \"rb\"\nkind = \"reboot\"\ndrain = true\nlocal_disks = true\ntimeout = \"5m\"\n[[step]]\nname = \"ln\"\nkind = \"line\"\npath = \"/etc/x\"\nline = \"a\"\nstate = \"absent\"\n").unwrap();
        let steps = &pb.file.steps;
        let Action::Run(run) = &steps[0].action else {
            panic!("{:?}", steps[0].action)
        };
        assert_eq!(run.read_only, ReadOnly::Guards);
        let repair = run.detach.as_ref().and_then(|d| d.repair.as_ref());
        assert_eq!(
            repair.map(|r| r.get_ref().as_str()),
            Some("dpkg --configure -a")
        );
        let Action::Service(svc) = &steps[1].action else {
            panic!("{:?}", steps[1].action)
        };
        assert_eq!(svc.state, ServiceState::Restarted);
        let reboot = steps[2].reboot().expect("a reboot step");
        let drain = Drain {
            local_disks: true,
            return_guests: true,
            pace: Default::default(),
        };
        assert_eq!(reboot.drain, Some(drain));
        assert_eq!(reboot.pg_timeout, Duration::from_secs(1800));
        assert_eq!(
            steps[2].timeout_or(Duration::ZERO),
            Duration::from_secs(300)
        );
        assert!(pb.drains() && pb.reboots());
        let Action::Line(line) = &steps[3].action else {
            panic!("{:?}", steps[3].action)
        };
        assert_eq!(line.state, Presence::Absent);
        assert_eq!(steps[3].kind(), StepKind::Line);
    }

    #[test]
    fn a_kernel_cmdline_or_modules_step_needs_something_to_add_or_remove() {
        for kind in ["modules", "kernel_cmdline"] {
            let text =
                format!("name = \"x\"\n[[step]]\nname = \"a\"\nkind = \"{kind}\"\nadd = []\n");
            let e = parse(&text).unwrap_err().to_string();
            let want = format!("pb.toml:4:8: a `{kind}` step needs `add` or `remove`");
            assert!(e.starts_with(&want), "want {want:?}, got {e:?}");
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
