//! `pvefleet audit` and `pvefleet probe`: run probes, render reports.

use std::io::Write;
use std::path::Path;

use comfy_table::{presets, Cell, ContentArrangement, Table};

use super::{ctrl_c_token, load_inventory, print_json, targets, use_color, AppError};
use crate::audit::{self, AuditOptions};
use crate::cli::{AuditArgs, GlobalOpts, ProbeArgs};
use crate::exit;
use crate::probe::{self, Thresholds};
use crate::progress::Progress;
use crate::report::audit::{render, Format, TerminalOptions};
use crate::sanitize::sanitize_str;

fn load_thresholds(path: Option<&Path>) -> Result<Thresholds, AppError> {
    let Some(path) = path else {
        return Ok(Thresholds::default());
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| AppError::BadInput(format!("{}: {e}", path.display())))?;
    let t: Thresholds = toml::from_str(&text).map_err(|e| {
        AppError::BadInput(crate::inventory::SourceError::from_toml(path, &text, &e).to_string())
    })?;
    t.check_order().map_err(|e| {
        // Located at the key that is too high, where the file sets it.
        let at = text
            .lines()
            .position(|l| l.trim_start().starts_with(e.lower))
            .map(|i| format!(":{}:1", i + 1))
            .unwrap_or_default();
        AppError::BadInput(format!("{}{at}: {e}", path.display()))
    })?;
    Ok(t)
}

/// The acceptances of `--accept FILE` (file:line:column errors, exit 65).
fn load_acceptances(path: Option<&Path>) -> Result<Vec<audit::accept::Acceptance>, AppError> {
    let Some(path) = path else {
        return Ok(Vec::new());
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| AppError::BadInput(format!("{}: {e}", path.display())))?;
    audit::accept::parse(path, &text, &audit::accept::known_check)
        .map_err(|e| AppError::BadInput(e.to_string()))
}

fn probe_list(names: &[String]) -> Result<Vec<String>, AppError> {
    if names.is_empty() {
        return Ok(audit::probe_names());
    }
    for n in names {
        if probe::by_name(n).is_none() {
            return Err(AppError::Usage(format!(
                "unknown probe `{n}`; probes: {}",
                audit::probe_names().join(", ")
            )));
        }
    }
    Ok(names.to_vec())
}

async fn run_audit(
    g: &GlobalOpts,
    probes: Vec<String>,
    thresholds: Thresholds,
) -> Result<audit::AuditReport, AppError> {
    let inv = load_inventory(g)?;
    let nodes = targets(&inv, g)?;
    let cancel = ctrl_c_token();
    let progress = Progress::new("audit", nodes.len());
    let opts = AuditOptions {
        probes,
        thresholds,
        forks: usize::from(g.forks()),
        timeout: g.timeout,
        inventory: inv.source.clone(),
    };
    let report = audit::run(nodes, &opts, &cancel, progress.sink()).await;
    progress.finish();
    if cancel.is_cancelled() {
        eprintln!("pvefleet: interrupted; the report covers the nodes that finished");
    }
    Ok(report)
}

/// The terminal's width when stdout is one (what the matrix must fit), else none.
pub(super) fn terminal_width() -> Option<usize> {
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() {
        return None;
    }
    Table::new().width().map(usize::from)
}

/// The earlier report for `--compare`; `None` when the file does not exist yet (the first run
/// of the cron recipe: everything is new, and `--save-json` writes the file for the next one).
fn read_old_report(path: &Path) -> Result<Option<audit::AuditReport>, AppError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(AppError::BadInput(format!("{}: {e}", path.display()))),
    };
    let old: audit::AuditReport = serde_json::from_str(&text).map_err(|e| {
        AppError::BadInput(format!(
            "{}:{}:{}: not an audit JSON report (`pvefleet audit --format json`): {e}",
            path.display(),
            e.line(),
            e.column()
        ))
    })?;
    if old.version != audit::AUDIT_SCHEMA_VERSION {
        return Err(AppError::BadInput(format!(
            "{}: audit report version {}, this pvefleet reads version {}",
            path.display(),
            old.version,
            audit::AUDIT_SCHEMA_VERSION
        )));
    }
    Ok(Some(old))
}

/// Write `text` to `path` atomically: a temporary file beside it (a hidden name not ending in
/// `.prom`, which node_exporter's textfile collector would read), then a rename over `path`.
fn write_file(path: &Path, text: &str) -> Result<(), AppError> {
    let name = path.file_name().map_or_else(
        || "pvefleet-output".into(),
        |n| n.to_string_lossy().into_owned(),
    );
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let cannot =
        |e: std::io::Error| AppError::Internal(format!("cannot write {}: {e}", path.display()));
    std::fs::write(&tmp, text).map_err(cannot)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        cannot(e)
    })
}

fn write_stdout(text: &str) -> Result<(), AppError> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|_| {
            if text.ends_with('\n') {
                Ok(())
            } else {
                out.write_all(b"\n")
            }
        })
        .map_err(|e| AppError::Internal(format!("cannot write output: {e}")))
}

/// `pvefleet audit`.
pub async fn cmd_audit(g: &GlobalOpts, args: &AuditArgs) -> Result<u8, AppError> {
    if let Some(doc) = &args.print_schema {
        let doc = match doc.as_str() {
            "compare" => audit::schema::Document::Compare,
            _ => audit::schema::Document::Report,
        };
        print!("{}", doc.schema_text());
        return Ok(exit::OK);
    }
    let format = if g.json {
        Format::Json
    } else if let Some(f) = args.format {
        f.into()
    } else {
        // `-o report.html` means HTML, as the operator wrote it.
        match args
            .output
            .as_deref()
            .and_then(|p| p.extension())
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("json") => Format::Json,
            Some("md" | "markdown") => Format::Markdown,
            Some("html" | "htm") => Format::Html,
            Some("prom") => Format::OpenMetrics,
            _ => Format::Terminal,
        }
    };
    let old = match &args.compare {
        Some(path) => {
            if matches!(
                format,
                Format::Markdown | Format::Html | Format::OpenMetrics
            ) {
                return Err(AppError::Usage(
                    "--compare prints terminal text or JSON (--format terminal|json)".into(),
                ));
            }
            match read_old_report(path)? {
                Some(r) => Some(Some(r)),
                None => {
                    eprintln!(
                        "pvefleet: no earlier report {} yet: every finding counts as new",
                        path.display()
                    );
                    Some(None)
                }
            }
        }
        None => None,
    };
    let probes = probe_list(&args.probes)?;
    let thresholds = load_thresholds(args.thresholds.as_deref())?;
    let acceptances = load_acceptances(args.accept.as_deref())?;
    let mut report = run_audit(g, probes, thresholds).await?;
    if args.accept.is_some() {
        // Today in UTC, as the report's generated_at (YYYY-MM-DD sorts as text).
        let today = report
            .generated_at
            .get(..10)
            .unwrap_or_default()
            .to_string();
        audit::accept::apply(&mut report, &acceptances, &today);
    }
    if let Some(path) = &args.save_json {
        write_file(path, &crate::report::audit::render_json(&report))?;
    }
    let terminal = TerminalOptions {
        color: args.output.is_none() && use_color(),
        width: if args.output.is_none() {
            terminal_width()
        } else {
            None
        },
        wide: args.wide,
    };
    // No earlier report: an audit of nothing, so every finding of this one is new.
    let old = old.map(|o| {
        o.unwrap_or_else(|| audit::AuditReport {
            generated_at: String::new(),
            nodes: Vec::new(),
            cluster: Vec::new(),
            findings: Vec::new(),
            summary: Default::default(),
            ..report.clone()
        })
    });
    let (text, code) = match &old {
        Some(old) => {
            let c = audit::compare::compare(old, &report);
            let text = match format {
                Format::Json => crate::report::compare::render_json(&c),
                _ => crate::report::compare::render_terminal(&c, &terminal),
            };
            (text, c.exit_code())
        }
        None => (render(&report, format, &terminal), report.exit_code()),
    };
    match &args.output {
        Some(path) => {
            write_file(path, &text)?;
            eprintln!("wrote {} ({})", path.display(), audit_summary(&report));
        }
        None => write_stdout(&text)?,
    }
    Ok(code)
}

fn audit_summary(r: &audit::AuditReport) -> String {
    format!(
        "{} PASS, {} WARN, {} FAIL, {} SKIP, {} nodes not audited",
        r.summary.pass, r.summary.warn, r.summary.fail, r.summary.skip, r.summary.unreachable
    )
}

/// `pvefleet probe`.
pub async fn cmd_probe(g: &GlobalOpts, args: &ProbeArgs) -> Result<u8, AppError> {
    let names = &args.names;
    if args.script {
        print!("{}", probe::combined_script(&probe_list(names)?));
        return Ok(exit::OK);
    }
    if args.list {
        let mut t = Table::new();
        t.load_preset(presets::NOTHING)
            .set_content_arrangement(ContentArrangement::Dynamic);
        for p in probe::all() {
            t.add_row(vec![Cell::new(p.name), Cell::new(p.description)]);
        }
        println!("{t}");
        return Ok(exit::OK);
    }
    let probes = probe_list(names)?;
    let thresholds = load_thresholds(args.thresholds.as_deref())?;
    let report = run_audit(g, probes, thresholds).await?;
    if g.json {
        let nodes: Vec<serde_json::Value> = report
            .nodes
            .iter()
            .map(|n| {
                serde_json::json!({
                    "node": n.node, "status": n.status, "error": n.error,
                    "clock": n.clock, "facts": n.facts, "findings": n.findings,
                })
            })
            .collect();
        let doc = serde_json::json!({ "version": 1, "probes": report.checks, "nodes": nodes });
        print_json(&doc);
    } else {
        let mut t = Table::new();
        t.load_preset(presets::UTF8_FULL_CONDENSED)
            .set_content_arrangement(ContentArrangement::Dynamic)
            .set_header(vec!["node", "check", "grade", "detail"]);
        if !use_color() {
            t.force_no_tty();
        }
        for n in &report.nodes {
            if n.status != crate::exec::NodeStatus::Ok {
                t.add_row(vec![
                    n.node.clone(),
                    "-".into(),
                    n.status.as_str().to_uppercase(),
                    sanitize_str(n.error.as_deref().unwrap_or("")),
                ]);
            }
            for f in &n.findings {
                t.add_row(vec![
                    n.node.clone(),
                    f.check.clone(),
                    format!("{:?}", f.grade).to_uppercase(),
                    sanitize_str(&f.detail),
                ]);
            }
        }
        println!("{t}");
    }
    Ok(report.exit_code())
}
