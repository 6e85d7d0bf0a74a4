//! Stopping: Ctrl-C (SIGINT), SIGTERM and SIGHUP are handled alike. The first one cancels one
//! token that every task sees (nodes stop at their next safe point and the run journal says
//! where); a second one runs the registered last-words hooks (they mark the run journal
//! `interrupted` with where each node was) and exits at once with 130.

use std::sync::{Mutex, OnceLock};

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio_util::sync::CancellationToken;

use crate::exit;

static TOKEN: OnceLock<CancellationToken> = OnceLock::new();
type Hook = Box<dyn Fn() + Send>;
static HOOKS: Mutex<Vec<Hook>> = Mutex::new(Vec::new());

async fn next(
    int: &mut Option<Signal>,
    term: &mut Option<Signal>,
    hup: &mut Option<Signal>,
) -> &'static str {
    async fn recv(s: &mut Option<Signal>) {
        match s {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    }
    tokio::select! {
        _ = recv(int) => "interrupt (Ctrl-C)",
        _ = recv(term) => "SIGTERM",
        _ = recv(hup) => "SIGHUP",
    }
}

/// The process-wide stop token (the handlers are installed on first use; call from async code).
pub fn token() -> CancellationToken {
    TOKEN
        .get_or_init(|| {
            let token = CancellationToken::new();
            let t = token.clone();
            let mut int = signal(SignalKind::interrupt()).ok();
            let mut term = signal(SignalKind::terminate()).ok();
            let mut hup = signal(SignalKind::hangup()).ok();
            tokio::spawn(async move {
                let what = next(&mut int, &mut term, &mut hup).await;
                eprintln!(
                    "\npvefleet: interrupted ({what}); stopping at the next safe point (send it again to quit at once)"
                );
                t.cancel();
                let what = next(&mut int, &mut term, &mut hup).await;
                eprintln!("pvefleet: {what} again: quitting now");
                run_hooks();
                std::process::exit(i32::from(exit::INTERRUPTED));
            });
            token
        })
        .clone()
}

/// Register something to do before a forced exit (keep it short and synchronous).
pub fn on_forced_exit(f: impl Fn() + Send + 'static) {
    HOOKS.lock().expect("signal hooks").push(Box::new(f));
}

/// Forget the registered hooks (the run they protect has ended normally).
pub fn clear_hooks() {
    HOOKS.lock().expect("signal hooks").clear();
}

fn run_hooks() {
    if let Ok(hooks) = HOOKS.lock() {
        for h in hooks.iter() {
            h();
        }
    }
}

/// Ask a yes/no question on the terminal; a stop signal while waiting aborts (`None`).
pub async fn confirm(question: &str) -> Option<bool> {
    use std::io::{BufRead, Write};
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let stop = token();
    let (tx, rx) = tokio::sync::oneshot::channel();
    // A plain thread: a read blocked on the terminal must not keep the runtime from ending.
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
        let _ = tx.send(line);
    });
    tokio::select! {
        _ = stop.cancelled() => None,
        line = rx => Some(matches!(line.unwrap_or_default().trim(), "y" | "Y" | "yes")),
    }
}
