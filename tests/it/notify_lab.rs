//! `run --notify`: a rolling run with a reboot on the lab tells a loopback receiver every event
//! in order (JSON and plain text), mails through a fake `sendmail` on PATH (a target from the inventory's `notify`), and goes on, ending
//! ok, while one receiver refuses the connection and another answers 500 (both said on stderr,
//! their URLs' secrets redacted).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use crate::common::bin::text;
use crate::common::lab::Lab;
use crate::common::runs::Env;

/// One request a receiver got: path, headers (lowercased names), body.
#[derive(Debug, Clone)]
struct Got {
    path: String,
    headers: String,
    body: String,
}

/// A loopback HTTP receiver answering `status` to every request; returns its port and what it
/// got.
fn receiver(status: &'static str) -> (u16, Arc<Mutex<Vec<Got>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let got: Arc<Mutex<Vec<Got>>> = Arc::default();
    let g = Arc::clone(&got);
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let head_end = loop {
                let k = s.read(&mut chunk).unwrap_or(0);
                if k == 0 {
                    break None;
                }
                buf.extend_from_slice(&chunk[..k]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break Some(i + 4);
                }
            };
            let Some(head_end) = head_end else { continue };
            let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap_or(0))
                })
                .unwrap_or(0);
            while buf.len() < head_end + len {
                let k = s.read(&mut chunk).unwrap_or(0);
                if k == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..k]);
            }
            let body = String::from_utf8_lossy(&buf[head_end..]).to_string();
            let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
            let _ = s.write_all(
                format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            );
            g.lock().unwrap().push(Got {
                path,
                headers: head.to_ascii_lowercase(),
                body,
            });
        }
    });
    (port, got)
}

#[test]
fn notifications_follow_a_rolling_run_and_never_stop_it() {
    let Some(lab) = Lab::up("notify", 170, 3, &[]) else {
        return;
    };
    let env = Env::new();
    let pb = env.playbook("touch-and-reboot.toml");
    let (ok_port, ok_got) = receiver("200 OK");
    let (err_port, err_got) = receiver("500 Internal Server Error");
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    // A fake sendmail on PATH recording each message it is given.
    let bin = env.state.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let mails = env.state.path().join("mails");
    let fake = bin.join("sendmail");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\necho \"ARGS $*\" >> {m}\ncat >> {m}\necho '--END--' >> {m}\n",
            m = mails.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let json_url = format!("http://hook:s3cretpw@127.0.0.1:{ok_port}/hook?token=s3cret1");
    let text_url = format!("text+http://127.0.0.1:{ok_port}/ntfy-topic");
    let refused_url = format!("http://127.0.0.1:{closed}/x?auth=s3cret2");
    let err_url = format!("http://127.0.0.1:{err_port}/gotify/message?token=s3cret3");
    // The mail target comes from the inventory's top-level `notify`.
    let inv = std::fs::read_to_string(lab.inventory()).unwrap();
    std::fs::write(
        lab.inventory(),
        format!("notify = [\"mailto:ops@example.org\"]\n{inv}"),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = env
        .cmd(
            &lab,
            &[
                "--json",
                "run",
                "--yes",
                "--notify",
                &json_url,
                "--notify",
                &text_url,
                "--notify",
                &refused_url,
                "--notify",
                &err_url,
                pb.to_str().unwrap(),
            ],
        )
        .env("PATH", path)
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let run = env.run_id();

    // The JSON receiver: every event, in order, with the fields.
    let got = ok_got.lock().unwrap().clone();
    let json: Vec<serde_json::Value> = got
        .iter()
        .filter(|g| g.path.starts_with("/hook"))
        .map(|g| serde_json::from_str(&g.body).unwrap())
        .collect();
    let kinds: Vec<(String, String)> = json
        .iter()
        .map(|v| {
            (
                v["event"].as_str().unwrap().to_string(),
                v["node"].as_str().unwrap_or("-").to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("run_started", "-"),
        ("node_done", "pve1"),
        ("node_done", "pve2"),
        ("node_done", "pve3"),
        ("run_ended", "-"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(kinds, want, "{json:?}");
    for v in &json {
        assert_eq!(v["run"], run.as_str(), "{v}");
        assert!(v["left_on"].as_array().unwrap().is_empty(), "{v}");
    }
    assert_eq!(json[0]["state"], "running");
    assert_eq!(json[1]["state"], "ok");
    assert_eq!(json[1]["detail"], "rebooted");
    assert!(json[1]["duration_s"].as_f64().unwrap() > 0.0, "{}", json[1]);
    assert_eq!(json[4]["state"], "ok");
    assert!(json[4]["duration_s"].as_f64().unwrap() >= json[1]["duration_s"].as_f64().unwrap());
    // The URL's userinfo became Basic authorization; the query went as it was.
    let hook = got.iter().find(|g| g.path.starts_with("/hook")).unwrap();
    assert_eq!(hook.path, "/hook?token=s3cret1");
    assert!(
        hook.headers.contains("authorization: basic "),
        "{}",
        hook.headers
    );
    assert!(hook.headers.contains("content-type: application/json"));

    // The plain text receiver (ntfy): the same five, as text with a title.
    let texts: Vec<&Got> = got.iter().filter(|g| g.path == "/ntfy-topic").collect();
    assert_eq!(texts.len(), 5, "{texts:?}");
    assert!(texts[0].headers.contains("content-type: text/plain"));
    assert!(texts[0].headers.contains("title: pvefleet run"));
    assert!(
        texts[1]
            .body
            .starts_with(&format!("pvefleet run {run}: pve1 done (ok)")),
        "{}",
        texts[1].body
    );

    // The receiver answering 500 got them all too (each failed, the run went on).
    assert_eq!(err_got.lock().unwrap().len(), 5);

    // Failures said on stderr, once per target and event, with no secret shown.
    assert!(
        stderr.contains(&format!(
            "notification run_started to http://127.0.0.1:{closed}/x?auth=*** failed"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "to http://127.0.0.1:{err_port}/gotify/message?token=*** failed (the run goes on): HTTP 500"
        )),
        "{stderr}"
    );
    assert_eq!(
        stderr
            .matches(&format!("node_done to http://127.0.0.1:{closed}"))
            .count(),
        1,
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret"), "{stderr}");
    let journal = std::fs::read_to_string(env.run_dir().join("events.jsonl")).unwrap();
    assert!(!journal.contains("s3cret"));
    assert!(!std::fs::read_to_string(env.run_dir().join("run.json"))
        .unwrap()
        .contains("s3cret"));

    // The mails: one per event, an RFC 5322 message to sendmail -oi -t.
    let m = std::fs::read_to_string(&mails).unwrap();
    assert_eq!(m.matches("--END--").count(), 5, "{m}");
    assert_eq!(m.matches("ARGS -oi -t").count(), 5, "{m}");
    assert!(m.contains("To: ops@example.org\r\n"), "{m}");
    assert!(
        m.contains(&format!("Subject: pvefleet run {run}: ended\r\n")),
        "{m}"
    );
}
