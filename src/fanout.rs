//! Bounded concurrent work over nodes: one tokio task per node, at most `forks` at once,
//! cancellation through one token, progress reported as plain events.
//!
//! The fan-out knows nothing of SSH or of what the work is: it hands each node to a closure and
//! collects one outcome per node, in inventory order, whatever happened to the others. A node whose
//! work never started because the run was cancelled is reported as [`Outcome::Cancelled`]; a node
//! whose work was running when Ctrl-C came is dropped mid-flight (closing its SSH channel) and
//! reported as cancelled too.

use std::future::Future;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Something that happened during a fan-out, for progress displays and journals.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum FanoutEvent {
    /// Work on a node began.
    Started {
        /// Node name.
        node: String,
    },
    /// Work on a node ended; `ok` is the work's own verdict.
    Finished {
        /// Node name.
        node: String,
        /// Whether the node's outcome counts as a success.
        ok: bool,
    },
}

/// What became of one node's work.
#[derive(Debug)]
pub enum Outcome<T> {
    /// The work ran to its end (its value may itself describe a failure).
    Done(T),
    /// Ctrl-C (or another cancellation) came first.
    Cancelled,
    /// The task panicked: a bug, reported rather than lost.
    Panicked(String),
}

/// A receiver of fan-out events. Must be cheap: it is called from the tasks.
pub type EventSink = Arc<dyn Fn(FanoutEvent) + Send + Sync>;

/// Run `work` for every item (a node) with at most `forks` running at once.
///
/// `name` gives the node name of an item for events; `is_ok` judges a finished value for the
/// progress display. Results come back in the order of `items`.
pub async fn run<I, T, F, Fut>(
    items: Vec<I>,
    forks: usize,
    cancel: &CancellationToken,
    events: Option<EventSink>,
    name: impl Fn(&I) -> String,
    is_ok: impl Fn(&T) -> bool + Send + Sync + 'static,
    work: F,
) -> Vec<(I, Outcome<T>)>
where
    I: Clone + Send + 'static,
    T: Send + 'static,
    F: Fn(I) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(forks.max(1)));
    let is_ok = Arc::new(is_ok);
    let mut handles = Vec::with_capacity(items.len());
    for item in &items {
        let fut = work(item.clone());
        let node = name(item);
        let permits = Arc::clone(&permits);
        let cancel = cancel.clone();
        let events = events.clone();
        let is_ok = Arc::clone(&is_ok);
        handles.push(tokio::spawn(async move {
            let _permit = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Outcome::Cancelled,
                p = permits.acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return Outcome::Cancelled,
                },
            };
            if let Some(e) = &events {
                e(FanoutEvent::Started { node: node.clone() });
            }
            let outcome = tokio::select! {
                biased;
                _ = cancel.cancelled() => Outcome::Cancelled,
                v = fut => Outcome::Done(v),
            };
            if let Some(e) = &events {
                let ok = matches!(&outcome, Outcome::Done(v) if is_ok(v));
                e(FanoutEvent::Finished { node, ok });
            }
            outcome
        }));
    }
    let mut out = Vec::with_capacity(items.len());
    for (item, handle) in items.into_iter().zip(handles) {
        let outcome = match handle.await {
            Ok(o) => o,
            Err(e) if e.is_panic() => Outcome::Panicked(panic_message(e.into_panic())),
            Err(_) => Outcome::Cancelled,
        };
        out.push((item, outcome));
    }
    out
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "task panicked".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn concurrency_is_bounded_and_order_kept() {
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let cancel = CancellationToken::new();
        let items: Vec<u32> = (0..20).collect();
        let (r, p) = (running.clone(), peak.clone());
        let out = run(
            items,
            4,
            &cancel,
            None,
            |i| i.to_string(),
            |_| true,
            move |i| {
                let (r, p) = (r.clone(), p.clone());
                async move {
                    let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                    p.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    r.fetch_sub(1, Ordering::SeqCst);
                    i * 2
                }
            },
        )
        .await;
        assert_eq!(peak.load(Ordering::SeqCst), 4);
        let values: Vec<u32> = out
            .iter()
            .map(|(_, o)| match o {
                Outcome::Done(v) => *v,
                _ => panic!("not done"),
            })
            .collect();
        assert_eq!(values, (0..20).map(|i| i * 2).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn cancellation_stops_waiting_and_running_work() {
        let cancel = CancellationToken::new();
        let c2 = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            c2.cancel();
        });
        let out = run(
            (0..6).collect::<Vec<u32>>(),
            2,
            &cancel,
            None,
            |i| i.to_string(),
            |_| true,
            |i| async move {
                if i == 0 {
                    return i;
                }
                tokio::time::sleep(Duration::from_secs(30)).await;
                i
            },
        )
        .await;
        assert!(matches!(out[0].1, Outcome::Done(0)));
        assert!(out[1..]
            .iter()
            .all(|(_, o)| matches!(o, Outcome::Cancelled)));
    }

    #[tokio::test]
    async fn a_panicking_node_is_reported_not_lost() {
        let cancel = CancellationToken::new();
        let out = run(
            vec![1u32, 2],
            2,
            &cancel,
            None,
            |i| i.to_string(),
            |_| true,
            |i| async move {
                if i == 2 {
                    panic!("boom on {i}");
                }
                i
            },
        )
        .await;
        assert!(matches!(out[0].1, Outcome::Done(1)));
        assert!(matches!(&out[1].1, Outcome::Panicked(m) if m.contains("boom on 2")));
    }

    #[tokio::test]
    async fn events_report_start_and_verdict() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let sink: EventSink = Arc::new(move |e| s2.lock().unwrap().push(e));
        let cancel = CancellationToken::new();
        run(
            vec![1u32, 2],
            1,
            &cancel,
            Some(sink),
            |i| format!("n{i}"),
            |v: &u32| *v == 1,
            |i| async move { i },
        )
        .await;
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 4);
        assert!(matches!(&seen[1], FanoutEvent::Finished { node, ok: true } if node == "n1"));
        assert!(matches!(&seen[3], FanoutEvent::Finished { node, ok: false } if node == "n2"));
    }
}
