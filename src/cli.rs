//! Command-line types (clap derive). No logic lives here: [`crate::app`] acts on them.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::ssh::HostKeyPolicy;

/// Look after a Proxmox VE cluster over SSH: run commands on every node at once, audit the
/// cluster, and apply playbooks with rolling reboots. No agent on the nodes.
#[derive(Debug, Parser)]
#[command(
    name = "pvefleet",
    version,
    propagate_version = true,
    max_term_width = 100
)]
#[command(
    after_help = "Inventory: -i FILE, else ./inventory/cluster.toml, else (on a Proxmox node) \
the cluster's own /etc/pve/.members.\nExit codes: 0 ok, 1 warnings, 2 failures, 3 unreachable \
nodes, 64 usage, 65 bad input file, 130 interrupted."
)]
pub struct Cli {
    /// Options shared by every command.
    #[command(flatten)]
    pub global: GlobalOpts,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options accepted before or after any subcommand.
#[derive(Debug, Args, Clone)]
pub struct GlobalOpts {
    /// Inventory file (TOML).
    #[arg(
        short = 'i',
        long,
        global = true,
        env = "PVEFLEET_INVENTORY",
        value_name = "FILE"
    )]
    pub inventory: Option<PathBuf>,
    /// Only these nodes: names, globs (pve*), ranges (pve[1-3]), groups (@gpu), negation
    /// (!pve2), comma-separated. An empty pattern is an error.
    #[arg(short = 'l', long, global = true, value_name = "PATTERN",
          value_parser = crate::inventory::limit::parse_pattern)]
    pub limit: Option<String>,
    /// How many nodes to work on at once [default: 64; a resumed run: the run's own].
    #[arg(short = 'f', long, global = true, value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..))]
    pub forks: Option<u16>,
    /// Per-command timeout, overriding the inventory's (e.g. 30s, 5m).
    #[arg(long, global = true, value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Option<Duration>,
    /// Host-key policy, overriding the inventory's. `insecure` accepts any key (labs only).
    #[arg(long, global = true, value_enum, value_name = "POLICY")]
    pub host_key_policy: Option<PolicyArg>,
    /// Print one machine-readable JSON document on stdout instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// More logging on stderr (-v info, -vv debug, -vvv trace). Secrets are never logged.
    #[arg(short = 'v', long = "verbose", global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// `--forks` when not given.
pub const DEFAULT_FORKS: u16 = 64;

impl GlobalOpts {
    /// `--forks`, or its default.
    pub fn forks(&self) -> u16 {
        self.forks.unwrap_or(DEFAULT_FORKS)
    }
}

/// `--host-key-policy` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PolicyArg {
    /// Key must be in known_hosts (default).
    Strict,
    /// Trust on first use; append unknown keys to known_hosts; changed keys still refused.
    AcceptNew,
    /// Accept any key (warns loudly).
    Insecure,
}

impl From<PolicyArg> for HostKeyPolicy {
    fn from(p: PolicyArg) -> Self {
        match p {
            PolicyArg::Strict => HostKeyPolicy::Strict,
            PolicyArg::AcceptNew => HostKeyPolicy::AcceptNew,
            PolicyArg::Insecure => HostKeyPolicy::Insecure,
        }
    }
}

/// Why a `--timeout` (or `--older-than`) duration was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DurationError {
    /// Zero: every deadline would pass at once.
    #[error("a timeout of 0 would time out every command at once; expected a duration above zero like 30s or 5m")]
    Zero,
    /// Below the millisecond every deadline counts in: no command or connection can finish.
    #[error("a timeout of {0:?} is below a millisecond: no SSH connection or command finishes in it; expected a duration like 30s or 5m")]
    TooShort(Duration),
    /// Not a duration humantime reads.
    #[error("expected a duration like 30s or 5m: {0}")]
    Invalid(humantime::DurationError),
}

/// Parse a timeout: `5s`, `2m`, `1h30m`, above zero (a zero deadline fails everything at once).
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => Err(DurationError::Zero),
        Ok(d) if d < Duration::from_millis(1) => Err(DurationError::TooShort(d)),
        Ok(d) => Ok(d),
        Err(e) => Err(DurationError::Invalid(e)),
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a shell command on every targeted node at once.
    ///
    /// Output is grouped: nodes with identical output and exit code appear once under a header
    /// such as `pve[1-3,5] (4)`, followed by a per-node status table.
    #[command(
        after_help = "Examples:\n  pvefleet exec -- uptime\n  pvefleet -l 'pve[1-3]' exec -- \
'journalctl -u pve-cluster --since -10min | tail -n 5'\n  pvefleet --json exec -- pveversion"
    )]
    Exec(ExecArgs),
    /// Run probes on every targeted node and show their facts and findings.
    #[command(
        after_help = "Examples:\n  pvefleet probe --list\n  pvefleet probe clock rrd\n  \
pvefleet -l pve2 --json probe gpu"
    )]
    Probe(ProbeArgs),
    /// Audit the cluster: every probe on every node, one round trip per node, graded
    /// PASS/WARN/FAIL/SKIP with the fix for each finding.
    #[command(
        after_help = "Exit codes: 0 all PASS, 1 warnings, 2 failures, 3 nodes unreachable; \
with --compare: 0 nothing new or worse, 1 a finding is new or worse; accepted findings \
(--accept) count for neither.\n\
Examples:\n  pvefleet audit\n  pvefleet audit -o audit.html\n  \
pvefleet audit --format json | jq '.summary'\n  \
pvefleet audit --compare last.json --save-json last.json --accept accepted.toml\n  \
pvefleet audit -o /var/lib/prometheus/node-exporter/pvefleet.prom"
    )]
    Audit(AuditArgs),
    /// Show what a playbook would change on each node (diffs, commands, reboots); changes nothing.
    #[command(
        after_help = "Example:\n  pvefleet plan playbooks/igpu-passthrough.toml -e gpu_mode=passthrough"
    )]
    Plan(PlanArgs),
    /// Apply a playbook: plan, confirm, then run with backups and a journal.
    #[command(after_help = "Examples:\n  pvefleet run playbooks/fix-rrd.toml\n  \
pvefleet run playbooks/igpu-passthrough.toml --yes\n  pvefleet run --resume 20261124T130501-1a2b\n  \
pvefleet run --resume 20261124T130501-1a2b --check\n\
Exit codes: 0 all nodes ok, 2 a node failed (or the run halted), 3 unreachable nodes, 130 interrupted.")]
    Run(RunArgs),
    /// Undo what a run changed: restore each file byte for byte (content, mode, owner) from the
    /// backup on its node, remove files the run created, run the playbook's `undo` commands, then
    /// re-run what makes the restored files take effect (update-grub, proxmox-boot-tool refresh,
    /// update-initramfs). Honours --limit. A file changed since the run is refused unless --force.
    #[command(after_help = "Example:\n  pvefleet rollback 20261124T130501-1a2b --yes")]
    Rollback(RollbackArgs),
    /// Switch HA node maintenance on or off by hand; e.g. after a run left it on for a node that
    /// did not come back (the run says so, and `pvefleet run --resume` also clears it).
    #[command(subcommand)]
    Maintenance(MaintenanceCommand),
    /// Show or break the cluster-wide lock a `run` holds (one driver per cluster).
    #[command(subcommand)]
    Lock(LockCommand),
    /// List recorded runs, or show one.
    Runs {
        /// `show RUN_ID`.
        #[command(subcommand)]
        action: Option<RunsCommand>,
    },
    /// Show or create inventories.
    #[command(subcommand)]
    Inventory(InventoryCommand),
    /// List the playbooks `plan`/`run` find by name: ./playbooks/ and the shipped ones (name,
    /// purpose, where found; a local one shadows a shipped one of the same name).
    #[command(after_help = "Example:\n  pvefleet playbooks")]
    Playbooks,
    /// Print shell completions for bash, zsh, fish, elvish or powershell.
    #[command(
        after_help = "Example:\n  pvefleet completions bash > /etc/bash_completion.d/pvefleet"
    )]
    Completions {
        /// Shell to generate for.
        shell: clap_complete::Shell,
    },
}

/// `pvefleet inventory ...`
#[derive(Debug, Subcommand)]
pub enum InventoryCommand {
    /// Print the resolved nodes (after defaults, groups and --limit).
    Show,
    /// Write an inventory from a Proxmox node's /etc/pve/.members, read over SSH, and record
    /// every node's host key from the cluster's own known_hosts (/etc/pve).
    ///
    /// An unknown host key of the node asked is shown and asked about on a terminal (refused
    /// without one, exit 3, unless --host-key-policy accept-new). The other nodes' keys are
    /// taken from /etc/pve/nodes/NODE/ssh_known_hosts or /etc/pve/priv/known_hosts over that
    /// connection and recorded in the inventory's known_hosts (else ~/.ssh/known_hosts); one
    /// differing from a key already recorded is refused (exit 3), naming both entries.
    #[command(
        after_help = "Example:\n  pvefleet inventory discover --from root@192.168.15.91 \
-o inventory/cluster.toml"
    )]
    Discover(DiscoverArgs),
}

/// `--guests` values (the clap face of [`crate::playbook::engine::GuestPolicy`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GuestsArg {
    /// Stop the node's run, listing them (default).
    Refuse,
    /// Shut them down, start them again once the node is back.
    Shutdown,
    /// Leave them running and reboot anyway.
    #[value(alias = "skip")]
    Ignore,
}

impl From<GuestsArg> for crate::playbook::engine::GuestPolicy {
    fn from(g: GuestsArg) -> Self {
        use crate::playbook::engine::GuestPolicy;
        match g {
            GuestsArg::Refuse => GuestPolicy::Refuse,
            GuestsArg::Shutdown => GuestPolicy::Shutdown,
            GuestsArg::Ignore => GuestPolicy::Ignore,
        }
    }
}

/// `pvefleet maintenance ...`
#[derive(Debug, Subcommand)]
pub enum MaintenanceCommand {
    /// `ha-manager crm-command node-maintenance disable NODE` for each node named, or each
    /// node `-l PATTERN` selects (with both: the named nodes the pattern matches).
    #[command(after_help = "Examples:\n  pvefleet maintenance off pve2\n  \
pvefleet -l 'pve[2-3]' maintenance off")]
    Off {
        /// Node names (from the inventory); without them, `-l PATTERN` selects the nodes.
        nodes: Vec<String>,
    },
    /// `ha-manager crm-command node-maintenance enable NODE` for each node named, or each node
    /// `-l PATTERN` selects (with both: the named nodes the pattern matches).
    #[command(after_help = "Examples:\n  pvefleet maintenance on pve2\n  \
pvefleet -l @ceph maintenance on")]
    On {
        /// Node names (from the inventory); without them, `-l PATTERN` selects the nodes.
        nodes: Vec<String>,
    },
}

/// `pvefleet lock ...`
#[derive(Debug, Subcommand)]
pub enum LockCommand {
    /// Who holds each targeted cluster's lock (run id, controller, pid, when, renewed or stale).
    #[command(after_help = "Example:\n  pvefleet lock show")]
    Show,
    /// Break the lock held by RUN_ID on each targeted cluster, once you are sure nothing drives
    /// it any more (a lock held by another run is left alone).
    #[command(after_help = "Example:\n  pvefleet lock break 20261201-220102-3fa9")]
    Break {
        /// The run id the lock names (`pvefleet lock show`).
        run_id: String,
    },
}

/// `pvefleet runs ...`
#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// Show one run: its nodes, steps (with their output) and backups. With `-l PATTERN`,
    /// only the matching nodes' sections and events (the run's own events stay).
    #[command(
        after_help = "Examples:\n  pvefleet runs show 20261124T130501-1a2b\n  \
pvefleet -l pve2 runs show 20261124T130501-1a2b"
    )]
    Show {
        /// Run id.
        run_id: String,
    },
    /// Remove old run journals and their backups on the nodes
    /// (`/var/lib/pvefleet/backups/RUN`). A run that can still be rolled back, or that a
    /// process still drives, is kept unless `--force` (a driven one always).
    #[command(
        after_help = "Examples:\n  pvefleet runs prune --keep 20\n  pvefleet runs prune --older-than 90d"
    )]
    Prune(PruneArgs),
}

/// `--format` values (the clap face of [`crate::report::audit::Format`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// Tables for a terminal (colour when stdout is a terminal and NO_COLOR is unset).
    Terminal,
    /// The versioned JSON document.
    Json,
    /// GitHub-flavoured Markdown.
    Markdown,
    /// One self-contained HTML page (no external assets), printable.
    Html,
    /// OpenMetrics text for Prometheus (node_exporter's textfile collector, a pushgateway).
    Openmetrics,
}

impl From<FormatArg> for crate::report::audit::Format {
    fn from(f: FormatArg) -> Self {
        use crate::report::audit::Format;
        match f {
            FormatArg::Terminal => Format::Terminal,
            FormatArg::Json => Format::Json,
            FormatArg::Markdown => Format::Markdown,
            FormatArg::Html => Format::Html,
            FormatArg::Openmetrics => Format::OpenMetrics,
        }
    }
}

/// Options of `pvefleet audit`.
#[derive(Debug, Args, Clone)]
pub struct AuditArgs {
    /// Output format (`--json` is the same as `--format json`) [default: from the extension of
    /// `-o FILE` (.json, .md, .markdown, .html, .htm, .prom), else terminal].
    #[arg(long, value_enum)]
    pub format: Option<FormatArg>,
    /// Write the report to FILE instead of stdout (atomically: a temporary file in the same
    /// directory, then renamed, so node_exporter's textfile collector never reads half a file).
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Only these probes (comma-separated; default: all).
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub probes: Vec<String>,
    /// Grading thresholds (TOML), overriding the defaults.
    #[arg(long, value_name = "FILE")]
    pub thresholds: Option<PathBuf>,
    /// Terminal matrix with each cell's full detail (wide), instead of grade and short value.
    #[arg(long)]
    pub wide: bool,
    /// Show only what changed since an earlier audit's JSON report: findings new, resolved and
    /// still open (terminal or JSON).
    #[arg(long, value_name = "OLD.json")]
    pub compare: Option<PathBuf>,
    /// Accepted findings (TOML, `[[accept]]` tables of check, node or "*", until YYYY-MM-DD,
    /// reason): an accepted WARN/FAIL is shown as accepted and counts neither for the exit code
    /// nor as new in --compare, up to its date; an expired acceptance is reported and ignored.
    #[arg(long, value_name = "FILE")]
    pub accept: Option<PathBuf>,
    /// Also write this audit's JSON report to FILE (e.g. for the next --compare).
    #[arg(long, value_name = "FILE")]
    pub save_json: Option<PathBuf>,
    /// Print the JSON Schema of the JSON report (`report`, the default) or of the comparison
    /// (`compare`) and exit: docs/audit-report.schema.json, docs/audit-compare.schema.json.
    #[arg(long, hide = true, value_name = "DOCUMENT", num_args = 0..=1,
          default_missing_value = "report", value_parser = ["report", "compare"])]
    pub print_schema: Option<String>,
}

/// Options of `pvefleet exec`.
#[derive(Debug, Args, Clone)]
pub struct ExecArgs {
    /// Keep at most SIZE bytes of each node's stdout, and as many of its stderr (the first
    /// bytes; the rest is counted and reported as truncated). Bytes, or K, M, G (binary).
    #[arg(long, value_name = "SIZE", default_value = "16M", value_parser = crate::exec::parse_size)]
    pub max_output: usize,
    /// Read the controller's standard input (at most 64 MiB) and send the same bytes to
    /// every node's command, then end of file. Without it the command's standard input is
    /// closed at once (as `ssh host cmd </dev/null`).
    #[arg(long)]
    pub stdin: bool,
    /// The command (run by the login shell on each node). Put it after `--`.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub command: Vec<String>,
}

/// Options of `pvefleet probe`.
#[derive(Debug, Args, Clone)]
pub struct ProbeArgs {
    /// List the probes and what each checks.
    #[arg(long)]
    pub list: bool,
    /// Print the shell script the probes run on each node (what `audit` sends), and exit.
    #[arg(long)]
    pub script: bool,
    /// Probes to run (default: all).
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,
    /// Grading thresholds (TOML), overriding the defaults.
    #[arg(long, value_name = "FILE")]
    pub thresholds: Option<PathBuf>,
}

/// Options of `pvefleet plan`.
#[derive(Debug, Args, Clone)]
pub struct PlanArgs {
    /// The playbook (TOML).
    pub playbook: PathBuf,
    /// Set a variable the playbook declares (`key=value`, read as the type of its default: bool
    /// true/false/yes/no/on/off/1/0, integer, number, list, string); repeatable.
    #[arg(short = 'e', long = "extra-var", value_name = "KEY=VALUE")]
    pub extra: Vec<String>,
    /// Exit 0 when nothing would change, 2 when something would, 1 when a node could not
    /// be planned (as terraform's), so a cron job can tell; input errors keep 64/65.
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// The guest policy the run will use (as `run --guests`): the plan says what it would
    /// do with each node's running guests, and which nodes it would refuse.
    #[arg(long, value_enum)]
    pub guests: Option<GuestsArg>,
}

impl PlanArgs {
    /// `--guests` as the engine's policy (refuse when not given).
    pub fn guest_policy(&self) -> crate::playbook::engine::GuestPolicy {
        self.guests
            .map_or(crate::playbook::engine::GuestPolicy::Refuse, Into::into)
    }
}

/// Options of `pvefleet run`.
#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    /// The playbook (TOML); not needed with --resume.
    #[arg(required_unless_present = "resume")]
    pub playbook: Option<PathBuf>,
    /// Plan only (same as `pvefleet plan`); with --resume, what the resume would do, from
    /// the run's journal (steps done before, the reboot it continues, the nodes left).
    #[arg(long)]
    pub check: bool,
    /// Do not ask for confirmation (required when stdin is not a terminal).
    #[arg(short = 'y', long)]
    pub yes: bool,
    /// Set a variable (`key=value`); repeatable.
    #[arg(short = 'e', long = "extra-var", value_name = "KEY=VALUE")]
    pub extra: Vec<String>,
    /// Running guests (not HA-managed) on a node about to reboot: refuse (the default),
    /// shut them down and start them again once the node is back, or ignore.
    #[arg(long, value_enum)]
    pub guests: Option<GuestsArg>,
    /// Go on with a node that is already in HA maintenance someone else switched on (refused
    /// by default); its maintenance is never switched off by the run.
    #[arg(long)]
    pub allow_maintained: bool,
    /// Continue an interrupted, halted or killed run with the parameters it was started with
    /// (playbook, -e, --guests, --limit, inventory); nodes already done are not redone, a
    /// reboot in progress is continued, not repeated.
    #[arg(long, value_name = "RUN_ID")]
    pub resume: Option<String>,
    /// With --resume: go on even though the playbook file changed since the run started.
    #[arg(long, requires = "resume")]
    pub force: bool,
    /// Start a node only when its predicted duration ends inside this window (local time of
    /// the controller): `02:00-05:00`, `22:00-04:00`, `"Mon-Fri 02:00-05:00"`,
    /// `"Sat,Sun 00:00-06:00"`; repeatable. Outside, the run pauses before its next node
    /// (exit 4); a resume keeps the run's windows unless given new ones.
    #[arg(long = "window", value_name = "[DAYS ]HH:MM-HH:MM")]
    pub windows: Vec<String>,
    /// With --resume: drop the run's recorded windows (start its nodes at any time).
    #[arg(long, requires = "resume", conflicts_with = "windows")]
    pub no_window: bool,
    /// Ask on the terminal before each node, showing its plan (guests, targets, predicted
    /// duration): y starts it, n or q pauses the run (exit 5, resumable).
    #[arg(long)]
    pub confirm_each_node: bool,
    /// Pause the run after N nodes (exit 5, resumable with --resume).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub pause_after: Option<u32>,
    /// Start even though backups (vzdump tasks) run on the cluster, and start nodes whose
    /// guests are being backed up.
    #[arg(long)]
    pub ignore_backups: bool,
    /// Drains run at most N migrations at once (over every drain step's `max_migrations`;
    /// default: the cluster's max_workers, else 4; at most 8 per node). A resume keeps the
    /// run's unless given again.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub max_migrations: Option<u32>,
    /// A bandwidth budget for a drain's migrations running at once, KiB/s, shared evenly
    /// among them as each one's `qm migrate --bwlimit` (over every drain step's `bwlimit`).
    /// A resume keeps the run's unless given again.
    #[arg(long, value_name = "KIB_PER_S", value_parser = clap::value_parser!(u64).range(1..=4294967295))]
    pub bwlimit: Option<u64>,
    /// Tell URL of the run's start, each node done or failed, a pause, a halt and the end;
    /// repeatable. `http://...` gets a JSON POST (also a Gotify message), `text+http://...`
    /// a plain text POST (ntfy), `mailto:ADDR` a mail through the controller's sendmail.
    /// A failing notification is said on stderr and never stops the run; secrets in the
    /// URL (user:password@, query values) are never shown. Not recorded: give it again
    /// to a resume.
    #[arg(long = "notify", value_name = "URL")]
    pub notify: Vec<String>,
}

impl RunArgs {
    /// `--guests` as the engine's policy (none given: the run's own on a resume, else refuse).
    pub fn guest_policy(&self) -> Option<crate::playbook::engine::GuestPolicy> {
        self.guests.map(Into::into)
    }

    /// `--pause-after N` as a count of nodes.
    pub fn pause_after(&self) -> Option<usize> {
        self.pause_after.map(|n| n as usize)
    }
}

/// Options of `pvefleet rollback`.
#[derive(Debug, Args, Clone)]
pub struct RollbackArgs {
    /// The run id (`pvefleet runs`).
    pub run_id: String,
    /// Do not ask for confirmation.
    #[arg(short = 'y', long)]
    pub yes: bool,
    /// Restore files that changed since the run too (their current content is lost).
    #[arg(long)]
    pub force: bool,
}

/// Options of `pvefleet inventory discover`.
#[derive(Debug, Args, Clone)]
pub struct DiscoverArgs {
    /// The node to ask: `[user@]host[:port]`, or a node name of the current inventory (then
    /// reached, and the written inventory's defaults set, as that inventory reaches it).
    #[arg(long, value_name = "HOST")]
    pub from: String,
    /// Write here instead of stdout (refuses to overwrite without --force); its directory
    /// is created.
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Overwrite --output if it exists.
    #[arg(long, conflicts_with = "append")]
    pub force: bool,
    /// Add this cluster's nodes (with `cluster = "NAME"`) to the existing --output
    /// inventory, e.g. a second cluster; node names must not be there already.
    #[arg(long, requires = "output")]
    pub append: bool,
    /// Identity file to use (and to record in the written inventory).
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// known_hosts file to use (and to record in the written inventory; the cluster's keys
    /// are recorded in it).
    #[arg(long, value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,
}

/// Options of `pvefleet runs prune`.
#[derive(Debug, Args, Clone)]
pub struct PruneArgs {
    /// Keep the N newest runs.
    #[arg(long, value_name = "N")]
    pub keep: Option<usize>,
    /// Only runs started longer ago than this (e.g. 90d, 2w).
    #[arg(long, value_parser = parse_duration, value_name = "AGE")]
    pub older_than: Option<Duration>,
    /// Prune runs that could still be rolled back too.
    #[arg(long)]
    pub force: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_above_zero_are_read_and_the_rest_refused_with_the_reason() {
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(
            parse_duration("0s").unwrap_err().to_string(),
            "a timeout of 0 would time out every command at once; expected a duration above zero like 30s or 5m"
        );
        assert!(matches!(
            parse_duration("1ns"),
            Err(DurationError::TooShort(_))
        ));
        assert_eq!(parse_duration("1ms"), Ok(Duration::from_millis(1)));
        let e = parse_duration("soon").unwrap_err();
        assert!(matches!(e, DurationError::Invalid(_)), "{e:?}");
        assert!(
            e.to_string()
                .starts_with("expected a duration like 30s or 5m: "),
            "{e}"
        );
    }
}
