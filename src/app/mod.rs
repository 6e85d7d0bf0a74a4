//! The application layer: turns a parsed command line into library calls and an exit code.
//!
//! This is where the inventory is chosen, targets selected, Ctrl-C wired to the cancellation
//! token, and results handed to the report renderers. It holds no protocol or parsing logic.

use std::io::{IsTerminal, Write};
use std::path::Path;

use clap::{CommandFactory, Parser};
use tokio_util::sync::CancellationToken;

use crate::cli::{Cli, Command, ExecArgs, GlobalOpts, InventoryCommand};
use crate::exec::{self, ExecOptions};
use crate::exit;
use crate::inventory::{limit, members, Inventory, Node, DEFAULT_INVENTORY};
use crate::progress::Progress;
use crate::report;

mod audit;
mod discover;
pub mod manpage;
mod playbook;
mod rollback;
mod runs;
pub mod shipped;
pub mod signals;

/// Where a Proxmox node keeps its cluster membership (read when no inventory is given).
pub const LOCAL_MEMBERS: &str = "/etc/pve/.members";

/// A command could not run at all (as opposed to per-node failures, which are results).
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Wrong command-line usage.
    #[error("{0}")]
    Usage(String),
    /// An input file is invalid (message carries file:line:col).
    #[error("{0}")]
    BadInput(String),
    /// A node could not be reached: unreachable, host key (unknown, changed, not accepted),
    /// authentication.
    #[error("{0}")]
    Unreachable(String),
    /// Something failed on the local side.
    #[error("{0}")]
    Internal(String),
}

impl AppError {
    fn code(&self) -> u8 {
        match self {
            AppError::Usage(_) => exit::USAGE,
            AppError::BadInput(_) => exit::BAD_INPUT,
            AppError::Unreachable(_) => exit::UNREACHABLE,
            AppError::Internal(_) => exit::INTERNAL,
        }
    }
}

/// Entry point of the binary: parse `std::env::args`, run, return the exit code.
pub fn main() -> u8 {
    // Die quietly on a closed pipe (`pvefleet runs | head`), like other command-line tools,
    // instead of panicking in println!.
    // SAFETY: setting a signal disposition to its default at start-up, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = e.print();
            return code;
        }
    };
    init_logging(cli.global.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pvefleet: cannot start the async runtime: {e}");
            return exit::INTERNAL;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            // Errors quote input (inventory names, file text, remote answers): escaped.
            eprintln!(
                "pvefleet: {}",
                crate::sanitize::sanitize_str(&e.to_string())
            );
            e.code()
        }
    }
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("PVEFLEET_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("pvefleet={level},russh=warn"))
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only on a terminal, and never with NO_COLOR: no escape codes in files, pipes
        // and cron mail.
        .with_ansi(
            std::io::stderr().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        )
        .with_target(false)
        .try_init();
}

/// Run a parsed command line.
pub async fn run(cli: Cli) -> Result<u8, AppError> {
    let g = &cli.global;
    match &cli.command {
        Command::Exec(args) => cmd_exec(g, args).await,
        Command::Inventory(InventoryCommand::Show) => cmd_inventory_show(g),
        Command::Inventory(InventoryCommand::Discover(args)) => {
            discover::cmd_discover(g, args).await
        }
        Command::Audit(args) => audit::cmd_audit(g, args).await,
        Command::Probe(args) => audit::cmd_probe(g, args).await,
        Command::Plan(args) => playbook::cmd_plan(g, args).await,
        Command::Run(args) => playbook::cmd_run(g, args).await,
        Command::Rollback(args) => rollback::cmd_rollback(g, args).await,
        Command::Maintenance(m) => match m {
            crate::cli::MaintenanceCommand::Off { nodes } => {
                runs::cmd_maintenance(g, nodes, false).await
            }
            crate::cli::MaintenanceCommand::On { nodes } => {
                runs::cmd_maintenance(g, nodes, true).await
            }
        },
        Command::Lock(l) => match l {
            crate::cli::LockCommand::Show => runs::cmd_lock(g, None).await,
            crate::cli::LockCommand::Break { run_id } => runs::cmd_lock(g, Some(run_id)).await,
        },
        Command::Runs { action } => match action {
            Some(crate::cli::RunsCommand::Show { run_id }) => runs::cmd_runs(g, Some(run_id)),
            Some(crate::cli::RunsCommand::Prune(args)) => runs::cmd_prune(g, args).await,
            None => runs::cmd_runs(g, None),
        },
        Command::Playbooks => shipped::cmd_playbooks(g),
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(*shell, &mut cmd, "pvefleet", &mut std::io::stdout());
            Ok(exit::OK)
        }
    }
}

/// Load the inventory the operator meant: `-i FILE`, else `./inventory/cluster.toml`, else the
/// local cluster's `/etc/pve/.members` when running on a Proxmox node.
pub fn load_inventory(g: &GlobalOpts) -> Result<Inventory, AppError> {
    let mut inv = if let Some(path) = &g.inventory {
        Inventory::load(path).map_err(|e| AppError::BadInput(e.to_string()))?
    } else if Path::new(DEFAULT_INVENTORY).exists() {
        Inventory::load(Path::new(DEFAULT_INVENTORY))
            .map_err(|e| AppError::BadInput(e.to_string()))?
    } else if Path::new(LOCAL_MEMBERS).exists() {
        let text = std::fs::read_to_string(LOCAL_MEMBERS)
            .map_err(|e| AppError::BadInput(format!("{LOCAL_MEMBERS}: {e}")))?;
        let m = members::parse_members(&text).map_err(|e| AppError::BadInput(e.to_string()))?;
        m.to_inventory(LOCAL_MEMBERS)
            .map_err(|e| AppError::BadInput(e.to_string()))?
    } else {
        return Err(AppError::Usage(format!(
            "no inventory: pass -i FILE, create {DEFAULT_INVENTORY} (see inventory/example.toml), \
             or run on a Proxmox node (reads {LOCAL_MEMBERS})"
        )));
    };
    if let Some(p) = g.host_key_policy {
        for n in &mut inv.nodes {
            n.host_key_policy = p.into();
        }
    }
    Ok(inv)
}

/// The nodes `--limit` selects.
pub fn targets(inv: &Inventory, g: &GlobalOpts) -> Result<Vec<Node>, AppError> {
    limit::select(inv, g.limit.as_deref())
        .map(|v| v.into_iter().cloned().collect())
        .map_err(|e| AppError::Usage(e.to_string()))
}

/// A token cancelled by the first Ctrl-C, SIGTERM or SIGHUP; a second one runs the registered
/// last-words hooks (the run journal) and exits at once (see [`signals`]).
pub fn ctrl_c_token() -> CancellationToken {
    signals::token()
}

/// Print a JSON document (the `--json` output of a command) on stdout.
pub fn print_json<T: serde::Serialize>(doc: &T) {
    let text = serde_json::to_string_pretty(doc).expect("results serialise");
    println!("{}", crate::sanitize::escape_json_controls(&text));
}

/// Colour in tables: stdout is a terminal and `NO_COLOR` is unset.
pub fn use_color() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

async fn cmd_exec(g: &GlobalOpts, args: &ExecArgs) -> Result<u8, AppError> {
    let command = &args.command.join(" ");
    let inv = load_inventory(g)?;
    let nodes = targets(&inv, g)?;
    // Read before connecting: the input is the same for every node, and a refused one costs
    // no connection.
    let stdin = if args.stdin {
        let input =
            exec::read_stdin(std::io::stdin().lock(), exec::MAX_STDIN).map_err(|e| match e {
                exec::StdinError::TooLarge => AppError::Usage(e.to_string()),
                exec::StdinError::Read(_) => AppError::Internal(e.to_string()),
            })?;
        Some(std::sync::Arc::from(input))
    } else {
        None
    };
    let cancel = ctrl_c_token();
    let progress = Progress::new("exec", nodes.len());
    let opts = ExecOptions {
        forks: usize::from(g.forks()),
        timeout: g.timeout,
        max_output: args.max_output,
        stdin,
    };
    let results = exec::exec_all(nodes, command, &opts, &cancel, progress.sink()).await;
    progress.finish();
    let mut out = std::io::stdout().lock();
    let text = if g.json {
        report::exec::render_json(command, &results) + "\n"
    } else {
        format!(
            "{}{}\n{}\n",
            report::exec::render_groups(&results),
            report::exec::render_table(&results, use_color()),
            report::exec::summary(&results)
        )
    };
    out.write_all(text.as_bytes())
        .map_err(|e| AppError::Internal(format!("cannot write output: {e}")))?;
    Ok(exec::exit_code(&results))
}

fn cmd_inventory_show(g: &GlobalOpts) -> Result<u8, AppError> {
    let inv = load_inventory(g)?;
    let nodes = targets(&inv, g)?;
    let text = if g.json {
        serde_json::to_string_pretty(&serde_json::json!({
            "version": 1,
            "source": inv.source,
            "nodes": nodes,
        }))
        .expect("serialisable")
    } else {
        report::inventory::render_nodes(&inv.source, &nodes, use_color())
    };
    println!("{text}");
    Ok(exit::OK)
}
