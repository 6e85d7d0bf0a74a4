//! Run notifications (`run --notify URL`): a consumer of the run's journaled events.
//!
//! The run's event bus hands each journaled record to [`Feed`]'s consumer, which queues it on a
//! channel; [`start`] turns the ones worth telling (run start, a node done or failed, pause, halt, end) into notifications and sends them
//! from its own task, so a slow or dead receiver never slows the run. Targets:
//! `http://...` (a JSON POST), `text+http://...` (a plain text POST, as ntfy takes it) and
//! `mailto:ADDR` (a message piped to the controller's `sendmail -oi -t`). A failing notification
//! is said on stderr (once per target and kind of event) and never fails the run. Secrets in
//! URLs (userinfo, query values) are never printed: every message shows [`redact`]ed URLs.

use crate::journal::{Event, Record};
use crate::vocab::{MaintenanceState, NooutState};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// How long one notification may take (connect, send, answer; or sendmail).
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// How long the end of a run waits for the notifications still queued.
pub const DRAIN: Duration = Duration::from_secs(10);

/// Where notifications go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An HTTP POST (`text`: a plain text body instead of JSON).
    Http {
        /// The URL as given (secrets included: never print it, print `redact(url)`).
        url: String,
        /// `host:port` to connect to.
        authority: String,
        /// Host header.
        host: String,
        /// Path and query.
        path: String,
        /// `user:password` from the URL, sent as Basic authorization.
        userinfo: Option<String>,
        /// Plain text body.
        text: bool,
    },
    /// Mail through `sendmail`.
    Mail {
        /// Recipient.
        to: String,
    },
}

impl Target {
    /// Parse a `--notify` value.
    pub fn parse(s: &str) -> Result<Target, String> {
        if let Some(to) = s.strip_prefix("mailto:") {
            let ok = to.contains('@')
                && !to.starts_with('-')
                && to
                    .chars()
                    .all(|c| !c.is_whitespace() && !c.is_control() && c != ',' && c != ';');
            if !ok {
                return Err(format!("--notify {}: not one mail address", redact(s)));
            }
            return Ok(Target::Mail { to: to.to_string() });
        }
        let (text, rest) = match s.strip_prefix("text+") {
            Some(r) => (true, r),
            None => (false, s),
        };
        if rest.starts_with("https://") {
            return Err(format!(
                "--notify {}: https is not supported (pvefleet links no TLS library); post to an \
                 http:// relay on the controller or its network (a local ntfy or Gotify, or a \
                 reverse proxy that forwards to the https service)",
                redact(s)
            ));
        }
        let Some(after) = rest.strip_prefix("http://") else {
            return Err(format!(
                "--notify {}: expected http://..., text+http://... or mailto:ADDR",
                redact(s)
            ));
        };
        let (auth_part, path) = match after.find(['/', '?']) {
            Some(i) if after[i..].starts_with('?') => (&after[..i], format!("/{}", &after[i..])),
            Some(i) => (&after[..i], after[i..].to_string()),
            None => (after, "/".to_string()),
        };
        let (userinfo, hostport) = match auth_part.rsplit_once('@') {
            Some((u, h)) => (Some(u.to_string()), h),
            None => (None, auth_part),
        };
        if hostport.is_empty() || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("--notify {}: not a URL", redact(s)));
        }
        let authority = if hostport
            .rsplit_once(':')
            .is_some_and(|(_, p)| !p.contains(']'))
        {
            hostport.to_string()
        } else {
            format!("{hostport}:80")
        };
        Ok(Target::Http {
            url: s.to_string(),
            authority,
            host: hostport.to_string(),
            path,
            userinfo,
            text,
        })
    }

    /// The target as it may be shown (secrets redacted).
    pub fn shown(&self) -> String {
        match self {
            Target::Http { url, .. } => redact(url),
            Target::Mail { to } => format!("mailto:{to}"),
        }
    }
}

/// A URL with its secrets replaced by `***`: the userinfo and every query value.
pub fn redact(url: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (url, None),
    };
    let mut out = match head.split_once("://") {
        Some((scheme, rest)) => {
            let end = rest.find('/').unwrap_or(rest.len());
            let (auth, path) = rest.split_at(end);
            match auth.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://***@{host}{path}"),
                None => head.to_string(),
            }
        }
        None => head.to_string(),
    };
    if let Some(q) = query {
        let parts: Vec<String> = q
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) => format!("{k}=***"),
                None => kv.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&parts.join("&"));
    }
    out
}

/// One notification (the JSON body; `title` and `message` also make it a Gotify message).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Notification {
    /// Format version.
    pub version: u32,
    /// `run_started`, `node_done`, `node_failed`, `run_paused`, `run_halted` or `run_ended`.
    pub event: String,
    /// Run id.
    pub run: String,
    /// The node's cluster, or the run's clusters (comma-separated); null when unnamed.
    pub cluster: Option<String>,
    /// The node (null for the run's own events).
    pub node: Option<String>,
    /// `running`, `resumed`, `ok`, `failed`, or the run's final status.
    pub state: String,
    /// Seconds the node (or the run, from its start in this process) took.
    pub duration_s: Option<f64>,
    /// What the run left switched on (HA maintenance, Ceph noout), for the node or the run.
    pub left_on: Vec<String>,
    /// Why (a node's error; a node's reboot).
    pub detail: Option<String>,
    /// When, RFC 3339.
    pub time: String,
    /// A one-line title.
    pub title: String,
    /// The text body (also the plain text and mail body).
    pub message: String,
}

/// Turns the run's records into notifications.
pub struct Builder {
    run: String,
    clusters: BTreeMap<String, String>,
    run_started: Option<String>,
    node_started: BTreeMap<String, String>,
    left_on: BTreeMap<String, BTreeSet<String>>,
}

fn seconds(from: &str, to: &str) -> Option<f64> {
    let a = humantime::parse_rfc3339(from).ok()?;
    let b = humantime::parse_rfc3339(to).ok()?;
    let d = b.duration_since(a).ok()?;
    Some((d.as_millis() as f64 / 100.0).round() / 10.0)
}

impl Builder {
    /// A builder for run `run` whose nodes belong to these clusters (node -> cluster).
    pub fn new(run: &str, clusters: BTreeMap<String, String>) -> Builder {
        Builder {
            run: run.to_string(),
            clusters,
            run_started: None,
            node_started: BTreeMap::new(),
            left_on: BTreeMap::new(),
        }
    }

    /// The notification for a record, if it is one to tell.
    pub fn build(&mut self, r: &Record) -> Option<Notification> {
        let node = (r.node != "-").then(|| r.node.clone());
        let (event, state, detail, duration_s) = match &r.event {
            Event::RunStarted { resumed, .. } => {
                self.run_started = Some(r.time.clone());
                let state = if *resumed { "resumed" } else { "running" };
                ("run_started".to_string(), state.to_string(), None, None)
            }
            Event::NodeStarted {} => {
                self.node_started.insert(r.node.clone(), r.time.clone());
                return None;
            }
            Event::Maintenance {
                state: MaintenanceState::LeftOn,
                ..
            } => {
                self.left(&r.node, "HA maintenance".to_string());
                return None;
            }
            Event::Noout {
                state: NooutState::LeftSet,
                scope,
                ..
            } => {
                self.left(&r.node, format!("Ceph noout ({scope})"));
                return None;
            }
            Event::NodeDone { rebooted } => (
                "node_done".to_string(),
                "ok".to_string(),
                rebooted.then(|| "rebooted".to_string()),
                self.node_started
                    .get(&r.node)
                    .and_then(|t| seconds(t, &r.time)),
            ),
            Event::NodeFailed { error } => (
                "node_failed".to_string(),
                "failed".to_string(),
                Some(error.clone()),
                self.node_started
                    .get(&r.node)
                    .and_then(|t| seconds(t, &r.time)),
            ),
            Event::RunStopped { status } => {
                let event = if status.starts_with("paused") {
                    "run_paused"
                } else if status == "halted" {
                    "run_halted"
                } else {
                    "run_ended"
                };
                (
                    event.to_string(),
                    status.clone(),
                    None,
                    self.run_started.as_ref().and_then(|t| seconds(t, &r.time)),
                )
            }
            _ => return None,
        };
        let left_on: Vec<String> = match &node {
            Some(n) => self
                .left_on
                .get(n)
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default(),
            None => self
                .left_on
                .iter()
                .flat_map(|(n, s)| s.iter().map(move |what| format!("{what} on {n}")))
                .collect(),
        };
        let cluster = match &node {
            Some(n) => self.clusters.get(n).cloned(),
            None => {
                let all: BTreeSet<&String> = self.clusters.values().collect();
                (!all.is_empty()).then(|| all.into_iter().cloned().collect::<Vec<_>>().join(","))
            }
        };
        let what = event.replace('_', " ");
        let title = match &node {
            Some(n) => format!("pvefleet run {}: {n} {}", self.run, &what[5..]),
            None => format!("pvefleet run {}: {}", self.run, &what[4..]),
        };
        let mut message = format!("{title} ({state})");
        if let Some(c) = &cluster {
            message.push_str(&format!("; cluster {c}"));
        }
        if let Some(d) = duration_s {
            message.push_str(&format!("; {d} s"));
        }
        if let Some(d) = &detail {
            message.push_str(&format!("; {d}"));
        }
        if !left_on.is_empty() {
            message.push_str(&format!("; left on: {}", left_on.join(", ")));
        }
        Some(Notification {
            version: 1,
            event,
            run: self.run.clone(),
            cluster,
            node,
            state,
            duration_s,
            left_on,
            detail,
            time: r.time.clone(),
            title,
            message,
        })
    }

    fn left(&mut self, node: &str, what: String) {
        self.left_on
            .entry(node.to_string())
            .or_default()
            .insert(what);
    }
}

/// The notifications' end of the run's event bus: each journaled record is queued for the
/// task of [`start`] (never waited on), until [`Feed::close`].
pub struct Feed {
    tx: std::sync::Mutex<Option<mpsc::UnboundedSender<Record>>>,
}

impl Feed {
    /// A feed queuing on `tx` (the sender [`start`] returns).
    pub fn new(tx: mpsc::UnboundedSender<Record>) -> std::sync::Arc<Feed> {
        std::sync::Arc::new(Feed {
            tx: std::sync::Mutex::new(Some(tx)),
        })
    }

    /// The consumer to put on the run's event bus.
    pub fn consumer(self: &std::sync::Arc<Self>) -> crate::events::Consumer {
        let me = std::sync::Arc::clone(self);
        std::sync::Arc::new(move |e: &crate::events::RunEvent| {
            if let crate::events::RunEvent::Recorded(r) = e {
                if let Ok(tx) = me.tx.lock() {
                    if let Some(tx) = tx.as_ref() {
                        let _ = tx.send(r.clone());
                    }
                }
            }
        })
    }

    /// Queue nothing more: the task of [`start`] ends once it has sent what is queued.
    pub fn close(&self) {
        if let Ok(mut tx) = self.tx.lock() {
            *tx = None;
        }
    }
}

/// Send the notifications for the records received until the channel closes (every sender
/// dropped, or [`Feed::close`]). Run it on its own task.
pub fn start(
    targets: Vec<Target>,
    mut builder: Builder,
) -> (mpsc::UnboundedSender<Record>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Record>();
    let handle = tokio::spawn(async move {
        let mut said: HashSet<(usize, String)> = HashSet::new();
        while let Some(r) = rx.recv().await {
            let Some(n) = builder.build(&r) else { continue };
            let sends = targets.iter().map(|t| send(t, &n));
            let results = futures::future::join_all(sends).await;
            for (i, res) in results.into_iter().enumerate() {
                if let Err(e) = res {
                    if said.insert((i, n.event.clone())) {
                        eprintln!(
                            "pvefleet: notification {} to {} failed (the run goes on): {e}",
                            n.event,
                            targets[i].shown()
                        );
                    }
                }
            }
        }
    });
    (tx, handle)
}

/// Wait (at most [`DRAIN`]) for the notifications still queued once the journal stopped
/// sending to the channel.
pub async fn finish(handle: tokio::task::JoinHandle<()>) {
    if tokio::time::timeout(DRAIN, handle).await.is_err() {
        eprintln!(
            "pvefleet: notifications still queued after {} s were dropped",
            DRAIN.as_secs()
        );
    }
}

async fn send(t: &Target, n: &Notification) -> Result<(), String> {
    match tokio::time::timeout(TIMEOUT, send_now(t, n)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {} s", TIMEOUT.as_secs())),
    }
}

async fn send_now(t: &Target, n: &Notification) -> Result<(), String> {
    match t {
        Target::Http {
            authority,
            host,
            path,
            userinfo,
            text,
            ..
        } => {
            let (body, ctype) = if *text {
                (n.message.clone(), "text/plain; charset=utf-8")
            } else {
                (
                    serde_json::to_string(n).map_err(|e| e.to_string())?,
                    "application/json",
                )
            };
            let mut req = format!(
                "POST {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: pvefleet\r\n\
                 Content-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n",
                body.len()
            );
            if *text {
                req.push_str(&format!("Title: {}\r\n", header_safe(&n.title)));
            }
            if let Some(u) = userinfo {
                let b = data_encoding::BASE64.encode(u.as_bytes());
                req.push_str(&format!("Authorization: Basic {b}\r\n"));
            }
            req.push_str("\r\n");
            req.push_str(&body);
            let mut s = tokio::net::TcpStream::connect(authority.as_str())
                .await
                .map_err(|e| format!("cannot connect: {e}"))?;
            s.write_all(req.as_bytes())
                .await
                .map_err(|e| format!("cannot send: {e}"))?;
            let mut answer = Vec::new();
            let mut buf = [0u8; 512];
            while !answer.contains(&b'\n') && answer.len() < 4096 {
                let k = s
                    .read(&mut buf)
                    .await
                    .map_err(|e| format!("no answer: {e}"))?;
                if k == 0 {
                    break;
                }
                answer.extend_from_slice(&buf[..k]);
            }
            let line = String::from_utf8_lossy(&answer);
            let line = line.lines().next().unwrap_or("");
            let code = line.split_whitespace().nth(1).unwrap_or("");
            if code.starts_with('2') {
                Ok(())
            } else if code.is_empty() {
                Err("no HTTP answer".to_string())
            } else {
                Err(format!("HTTP {code}"))
            }
        }
        Target::Mail { to } => {
            let msg = mail(to, n);
            let mut child = tokio::process::Command::new(sendmail())
                .args(["-oi", "-t"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("cannot run sendmail: {e}"))?;
            if let Some(mut stdin) = child.stdin.take() {
                stdin
                    .write_all(msg.as_bytes())
                    .await
                    .map_err(|e| format!("cannot write to sendmail: {e}"))?;
            }
            let out = child
                .wait_with_output()
                .await
                .map_err(|e| format!("sendmail: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                let err = String::from_utf8_lossy(&out.stderr);
                Err(format!(
                    "sendmail {}: {}",
                    out.status,
                    err.lines().next().unwrap_or("")
                ))
            }
        }
    }
}

fn header_safe(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).collect()
}

/// `sendmail` on PATH, else `/usr/sbin/sendmail`.
fn sendmail() -> std::path::PathBuf {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("sendmail"))
                .find(|f| f.is_file())
        })
        .unwrap_or_else(|| "/usr/sbin/sendmail".into())
}

/// The RFC 5322 message for a notification (sendmail adds From, Date and Message-ID).
pub fn mail(to: &str, n: &Notification) -> String {
    let json = serde_json::to_string_pretty(n).unwrap_or_default();
    format!(
        "To: {to}\r\nSubject: {}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; \
         charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{}\r\n\r\n{}\r\n",
        header_safe(&n.title),
        n.message,
        json.replace('\n', "\r\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_feed_queues_every_journaled_record_and_nothing_else_until_closed() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let feed = Feed::new(tx);
        let bus = crate::events::EventBus::new(None).consumer(feed.consumer());
        bus.record("pve1", Event::NodeStarted {}).await;
        bus.said("pve1", "a note is not notified");
        bus.doing("pve1", crate::events::Activity::Step { step: "apt".into() });
        bus.record("pve1", Event::NodeDone { rebooted: true }).await;
        feed.close();
        bus.record(
            "-",
            Event::RunStopped {
                status: "ok".into(),
            },
        )
        .await;
        let mut got = Vec::new();
        while let Some(r) = rx.recv().await {
            got.push(r.event);
        }
        assert!(
            matches!(
                got.as_slice(),
                [Event::NodeStarted {}, Event::NodeDone { rebooted: true }]
            ),
            "{got:?}"
        );
    }

    #[test]
    fn redaction_hides_userinfo_and_query_values() {
        assert_eq!(
            redact("http://user:tok@host:8080/topic?token=s3&x=1"),
            "http://***@host:8080/topic?token=***&x=***"
        );
        assert_eq!(redact("http://h/p"), "http://h/p");
        assert_eq!(
            redact("text+http://h/m?auth=abc"),
            "text+http://h/m?auth=***"
        );
        let e = Target::parse("https://u:secret@h/?token=zz").unwrap_err();
        assert!(!e.contains("secret") && !e.contains("zz"), "{e}");
    }

    #[test]
    fn targets_parse() {
        match Target::parse("text+http://a:b@127.0.0.1:9/t?x=1").unwrap() {
            Target::Http {
                authority,
                path,
                userinfo,
                text,
                ..
            } => {
                assert_eq!(authority, "127.0.0.1:9");
                assert_eq!(path, "/t?x=1");
                assert_eq!(userinfo.as_deref(), Some("a:b"));
                assert!(text);
            }
            t => panic!("{t:?}"),
        }
        match Target::parse("http://ntfy.lan").unwrap() {
            Target::Http {
                authority, path, ..
            } => assert_eq!((authority.as_str(), path.as_str()), ("ntfy.lan:80", "/")),
            t => panic!("{t:?}"),
        }
        assert_eq!(
            Target::parse("mailto:ops@example.org").unwrap(),
            Target::Mail {
                to: "ops@example.org".into()
            }
        );
        assert!(Target::parse("mailto:a@b, c@d").is_err());
        assert!(Target::parse("ftp://x").is_err());
    }

    #[tokio::test]
    async fn a_receiver_that_never_answers_is_given_up_on_within_the_bound() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        // Accepts and holds each connection, answering nothing.
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for s in l.incoming().flatten() {
                held.push(s);
            }
        });
        let t = Target::parse(&format!("http://127.0.0.1:{port}/?token=x")).unwrap();
        let mut b = Builder::new("R", BTreeMap::new());
        let n = b
            .build(&rec(
                "2026-12-02T01:00:00.000Z",
                "-",
                Event::RunStarted {
                    pid: 1,
                    resumed: true,
                },
            ))
            .unwrap();
        assert_eq!(n.state, "resumed");
        let start = std::time::Instant::now();
        let e = send(&t, &n).await.unwrap_err();
        assert_eq!(e, "no answer within 5 s");
        assert!(start.elapsed() < TIMEOUT + Duration::from_secs(2));
    }

    fn rec(time: &str, node: &str, event: Event) -> Record {
        Record {
            time: time.into(),
            node: node.into(),
            event,
        }
    }

    #[test]
    fn payloads_carry_run_node_state_duration_and_left_on() {
        let clusters = BTreeMap::from([("pve1".to_string(), "lab".to_string())]);
        let mut b = Builder::new("R1", clusters);
        let start = b
            .build(&rec(
                "2026-12-02T01:00:00.000Z",
                "-",
                Event::RunStarted {
                    pid: 1,
                    resumed: false,
                },
            ))
            .unwrap();
        assert_eq!(start.event, "run_started");
        assert_eq!(start.cluster.as_deref(), Some("lab"));
        assert!(b
            .build(&rec(
                "2026-12-02T01:00:01.000Z",
                "pve1",
                Event::NodeStarted {}
            ))
            .is_none());
        assert!(b
            .build(&rec(
                "2026-12-02T01:00:02.000Z",
                "pve1",
                Event::Maintenance {
                    state: MaintenanceState::LeftOn,
                    why: None
                }
            ))
            .is_none());
        let failed = b
            .build(&rec(
                "2026-12-02T01:00:31.500Z",
                "pve1",
                Event::NodeFailed {
                    error: "did not come back".into(),
                },
            ))
            .unwrap();
        assert_eq!(failed.event, "node_failed");
        assert_eq!(failed.node.as_deref(), Some("pve1"));
        assert_eq!(failed.duration_s, Some(30.5));
        assert_eq!(failed.left_on, vec!["HA maintenance"]);
        let end = b
            .build(&rec(
                "2026-12-02T01:01:00.000Z",
                "-",
                Event::RunStopped {
                    status: "halted".into(),
                },
            ))
            .unwrap();
        assert_eq!(end.event, "run_halted");
        assert_eq!(end.duration_s, Some(60.0));
        assert_eq!(end.left_on, vec!["HA maintenance on pve1"]);
        let v = serde_json::to_value(&end).unwrap();
        assert_eq!(v["run"], "R1");
        assert_eq!(v["state"], "halted");
        assert!(
            end.message.contains("left on: HA maintenance on pve1"),
            "{}",
            end.message
        );
        let m = mail("ops@example.org", &end);
        assert!(
            m.starts_with("To: ops@example.org\r\nSubject: pvefleet run R1: halted\r\n"),
            "{m}"
        );
    }
}
