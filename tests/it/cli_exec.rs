//! `pvefleet exec` end to end: the real binary against real sshd servers.

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::bin::{command, json_of, pvefleet, text};
use crate::common::sshd::{require_root, BlackHole, Fleet};

#[test]
fn identical_output_is_grouped_and_every_node_has_a_row() {
    if !require_root("identical_output_is_grouped_and_every_node_has_a_row") {
        return;
    }
    let fleet = Fleet::start(20, 4);
    let inv = fleet.inventory("");
    let inv = inv.to_str().unwrap();
    let cmd =
        "case \"$SSH_CONNECTION\" in *127.77.20.4\\ 22) echo different; exit 3;; esac; echo same";
    let out = pvefleet(&["-i", inv, "exec", "--", cmd]);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a failed node gives exit 2: {stdout}"
    );
    assert!(stdout.contains("node[1-3] (3)\n"), "{stdout}");
    assert!(stdout.contains("node4 (1)\n"), "{stdout}");
    assert!(stdout.contains("[exit 3]"), "{stdout}");
    for n in 1..=4 {
        assert!(
            stdout.lines().any(|l| l.contains(&format!("node{n} "))),
            "row for node{n}: {stdout}"
        );
    }
    assert!(stdout.contains("4 nodes: 3 ok, 1 failed"), "{stdout}");

    let out = pvefleet(&[
        "-i",
        inv,
        "--limit",
        "node[1-2]",
        "exec",
        "--",
        "echo",
        "a",
        "b",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("node[1-2] (2)\n---"),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("a b\n"),
        "arguments are joined with spaces"
    );
}

#[test]
fn json_carries_each_nodes_full_result() {
    if !require_root("json_carries_each_nodes_full_result") {
        return;
    }
    let mut fleet = Fleet::start(21, 3);
    let inv = fleet.inventory("");
    fleet.servers[2].stop();
    let out = pvefleet(&[
        "-i",
        inv.to_str().unwrap(),
        "--json",
        "exec",
        "--",
        "echo hi; echo oops >&2",
    ]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "an unreachable node gives exit 3"
    );
    let v = json_of(&out);
    assert_eq!(v["version"], 1);
    let nodes = v["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    assert_eq!(nodes[0]["status"], "ok");
    assert_eq!(nodes[0]["stdout"], "hi\n");
    assert_eq!(nodes[0]["stderr"], "oops\n");
    assert_eq!(nodes[0]["exit"]["code"], 0);
    assert_eq!(nodes[2]["status"], "unreachable");
    assert!(nodes[2]["error"].as_str().unwrap().contains("refused"));
    assert_eq!(v["summary"], "3 nodes: 2 ok, 1 unreachable");
}

#[test]
fn a_black_holed_node_is_unreachable_within_the_connect_timeout_while_others_finish() {
    if !require_root(
        "a_black_holed_node_is_unreachable_within_the_connect_timeout_while_others_finish",
    ) {
        return;
    }
    let fleet = Fleet::start(22, 3);
    let inv = fleet.inventory("connect_timeout = \"2s\"");
    let _hole = BlackHole::new(&fleet.servers[1].addr);
    let start = Instant::now();
    let out = pvefleet(&[
        "-i",
        inv.to_str().unwrap(),
        "--json",
        "exec",
        "--",
        "echo up",
    ]);
    let took = start.elapsed();
    assert_eq!(out.status.code(), Some(3));
    let v = json_of(&out);
    assert_eq!(v["nodes"][1]["status"], "unreachable");
    assert_eq!(v["nodes"][0]["status"], "ok");
    assert_eq!(v["nodes"][2]["stdout"], "up\n");
    // Within the 2 s connect timeout plus a loaded machine's margin; without it a black-holed
    // SYN is retried for about two minutes (tcp_syn_retries).
    assert!(took < Duration::from_secs(15), "took {took:?}");
}

#[test]
fn escape_sequences_from_a_node_never_reach_the_terminal_raw() {
    if !require_root("escape_sequences_from_a_node_never_reach_the_terminal_raw") {
        return;
    }
    let fleet = Fleet::start(23, 1);
    let inv = fleet.inventory("");
    let out = pvefleet(&[
        "-i",
        inv.to_str().unwrap(),
        "exec",
        "--",
        "printf 'a\\033[2J\\033]0;pwned\\007b\\n'; printf 'e\\033[31m\\n' >&2; exit 1",
    ]);
    let stdout = text(&out.stdout);
    assert!(
        !stdout.contains('\u{1b}') && !stdout.contains('\u{7}'),
        "{stdout:?}"
    );
    assert!(stdout.contains("a\\x1b[2J\\x1b]0;pwned\\x07b"), "{stdout}");
    assert!(stdout.contains("stderr: e\\x1b[31m"), "{stdout}");
}

#[test]
fn a_command_over_its_timeout_is_reported_as_timeout() {
    if !require_root("a_command_over_its_timeout_is_reported_as_timeout") {
        return;
    }
    let fleet = Fleet::start(24, 2);
    let inv = fleet.inventory("");
    let start = Instant::now();
    let out = pvefleet(&[
        "-i",
        inv.to_str().unwrap(),
        "--timeout",
        "1s",
        "--json",
        "exec",
        "--",
        "sleep 20",
    ]);
    // Well before the 20 s the command would take.
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(out.status.code(), Some(2));
    let v = json_of(&out);
    assert_eq!(v["nodes"][0]["status"], "timeout");
    assert_eq!(v["nodes"][1]["status"], "timeout");
}

#[test]
fn a_changed_host_key_stops_only_that_node() {
    if !require_root("a_changed_host_key_stops_only_that_node") {
        return;
    }
    let mut fleet = Fleet::start(25, 3);
    let inv = fleet.inventory("");
    fleet.servers[0].change_host_key();
    let out = pvefleet(&["-i", inv.to_str().unwrap(), "exec", "--", "echo fine"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(3));
    assert!(stdout.contains("node[2-3] (2)"), "{stdout}");
    let row = stdout.lines().find(|l| l.contains("node1 ")).unwrap();
    assert!(
        row.contains("host-key") && row.contains("known_hosts:1"),
        "{row}"
    );
}

#[test]
fn ctrl_c_prints_what_finished_and_exits_130() {
    if !require_root("ctrl_c_prints_what_finished_and_exits_130") {
        return;
    }
    let fleet = Fleet::start(26, 3);
    let inv = fleet.inventory("");
    // `sleep 30.026PID`: a process name no other test's command has (nor this test's in
    // another checkout running at the same time), to wait for below.
    let sleep = format!("sleep 30.026{}", std::process::id());
    // The quick node leaves a marker once it ran (the Fleet's sshds share this machine's files):
    // it may connect after the slow ones have started.
    let marker = tempfile::tempdir().unwrap();
    let quick = marker.path().join("quick");
    let cmd = format!(
        "case \"$SSH_CONNECTION\" in *127.77.26.1\\ 22) echo quick; : > {};; *) {sleep};; esac",
        quick.display()
    );
    let child = command()
        .args(["-i", inv.to_str().unwrap(), "--json", "exec", "--", &cmd])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupted once the two slow nodes run their command.
    assert!(crate::common::wait::eventually(20, || {
        quick.exists()
            && crate::common::sshd::sh(&format!("pgrep -xfc '{sleep}' || true")).trim() == "2"
    }));
    // The quick node's exit status is one round trip behind its marker.
    std::thread::sleep(Duration::from_millis(500));
    crate::common::sshd::sh(&format!("kill -INT {}", child.id()));
    let start = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "must stop promptly, not wait for the 30 s command"
    );
    assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
    let v = json_of(&out);
    assert_eq!(v["nodes"][0]["stdout"], "quick\n");
    assert_eq!(v["nodes"][1]["status"], "cancelled");
    assert_eq!(v["nodes"][2]["status"], "cancelled");
    assert!(text(&out.stderr).contains("interrupted"));
}

/// Issue 8 item 11 through the binary: a node black-holed while its command runs ends as
/// `unreachable` (exit 3) within its connect timeout, while the other node finishes normally.
#[test]
fn a_node_lost_mid_command_is_unreachable_within_the_connect_timeout() {
    if !require_root("a_node_lost_mid_command_is_unreachable_within_the_connect_timeout") {
        return;
    }
    let fleet = Fleet::start(30, 2);
    let inv = fleet.inventory("connect_timeout = \"2s\"");
    let mut child = command()
        .args([
            "-i",
            inv.to_str().unwrap(),
            "--timeout",
            "120s",
            "--json",
            "exec",
            "--",
            "sleep 4.030; echo done",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Black-holed once both nodes run the command (`sleep 4.030`: no other test's).
    assert!(crate::common::wait::eventually(20, || {
        crate::common::sshd::sh("pgrep -xfc 'sleep 4.030' || true").trim() == "2"
    }));
    let _hole = BlackHole::both_ways(&fleet.servers[1].addr);
    let dropped = Instant::now();
    let deadline = dropped + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("pvefleet still running 20 s after the node went dark");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = dropped.elapsed();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let v = json_of(&out);
    assert_eq!(v["nodes"][0]["status"], "ok");
    assert_eq!(v["nodes"][0]["stdout"], "done\n");
    assert_eq!(v["nodes"][1]["status"], "unreachable");
    assert!(
        v["nodes"][1]["error"]
            .as_str()
            .unwrap()
            .contains("connection lost"),
        "{}",
        v["nodes"][1]["error"]
    );
    // node1 finishes at ~4 s (2.5 s after the drop); node2 must be given up within its 2 s
    // connect timeout plus a loaded machine's margin, long before the 120 s command timeout.
    assert!(
        took < Duration::from_secs(15),
        "took {took:?} after the drop"
    );
}

/// Issue 9: output past `--max-output` is not kept. A node printing 3 MiB + 1234 bytes with a
/// 1 MiB cap keeps exactly the first 1 MiB (byte-exact) and reports the rest as dropped, in the
/// JSON and in the table; a node under the cap is complete and not marked.
#[test]
fn output_past_max_output_is_cut_at_the_cap_and_the_dropped_bytes_are_reported() {
    if !require_root("output_past_max_output_is_cut_at_the_cap_and_the_dropped_bytes_are_reported")
    {
        return;
    }
    let fleet = Fleet::start(31, 2);
    let inv = fleet.inventory("");
    let inv = inv.to_str().unwrap();
    let total: u64 = 3 * 1048576 + 1234;
    let cmd = format!(
        "case \"$SSH_CONNECTION\" in *127.77.31.1\\ 22) seq 1 1000000 | head -c {total};; \
         *) echo small;; esac; echo warn >&2"
    );
    let out = pvefleet(&[
        "-i",
        inv,
        "--json",
        "exec",
        "--max-output",
        "1M",
        "--",
        &cmd,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v = json_of(&out);
    let big = &v["nodes"][0];
    let expected = crate::common::sshd::sh("seq 1 1000000 | head -c 1048576");
    assert_eq!(big["stdout"].as_str().unwrap().len(), 1048576);
    assert!(
        big["stdout"].as_str().unwrap() == expected,
        "the head, byte-exact"
    );
    assert_eq!(big["stdout_truncated_bytes"], total - 1048576);
    assert_eq!(big["stderr"], "warn\n");
    assert_eq!(big["stderr_truncated_bytes"], 0);
    assert_eq!(v["nodes"][1]["stdout"], "small\n");
    assert_eq!(v["nodes"][1]["stdout_truncated_bytes"], 0);

    let out = pvefleet(&["-i", inv, "exec", "--max-output", "1M", "--", &cmd]);
    let stdout = text(&out.stdout);
    let note = format!(
        "[stdout truncated: 1048576 bytes shown, {} more dropped (--max-output)]",
        total - 1048576
    );
    assert!(
        stdout.contains(&format!("{note}\n")),
        "note under the output"
    );
    let row = stdout
        .lines()
        .find(|l| l.starts_with('│') && l.contains("node1 "))
        .unwrap();
    assert!(row.contains("stdout truncated"), "{row}");
    let row2 = stdout.lines().find(|l| l.contains("node2 ")).unwrap();
    assert!(!row2.contains("truncated"), "{row2}");
}

/// A command that reads its standard input gets end of file at once, as `ssh host cmd
/// </dev/null` gives it, instead of waiting for the command's deadline.
#[test]
fn a_command_that_reads_stdin_gets_end_of_file_at_once() {
    if !require_root("a_command_that_reads_stdin_gets_end_of_file_at_once") {
        return;
    }
    let fleet = Fleet::start(40, 2);
    let inv = fleet.inventory("");
    let out = pvefleet(&[
        "-i",
        inv.to_str().unwrap(),
        "--timeout",
        "60s",
        "--json",
        "exec",
        "--",
        "cat; read x || echo eof",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v = json_of(&out);
    for n in 0..2 {
        assert_eq!(v["nodes"][n]["status"], "ok", "{v}");
        assert_eq!(v["nodes"][n]["stdout"], "eof\n", "{v}");
    }
}

/// Warnings on stderr carry no colour codes into a pipe (a file, cron mail): the
/// `--host-key-policy insecure` warning is written plain.
#[test]
fn warnings_piped_to_a_file_have_no_escape_codes() {
    if !require_root("warnings_piped_to_a_file_have_no_escape_codes") {
        return;
    }
    let fleet = Fleet::start(41, 1);
    let inv = fleet.inventory("");
    let out = pvefleet(&[
        "-i",
        inv.to_str().unwrap(),
        "--host-key-policy",
        "insecure",
        "exec",
        "--",
        "true",
    ]);
    let err = text(&out.stderr);
    assert!(err.contains("INSECURE: accepting host key"), "{err}");
    assert!(!err.contains('\u{1b}'), "{err:?}");
}

/// `pvefleet ARGS` with `input` on its standard input, waited for.
fn pvefleet_fed(args: &[&str], input: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut child = command()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run pvefleet");
    let mut pipe = child.stdin.take().expect("stdin piped");
    let input = input.to_vec();
    // Written from a thread: the binary may stop reading (a refused input) before the end.
    let writer = std::thread::spawn(move || {
        let _ = pipe.write_all(&input);
    });
    let out = child.wait_with_output().expect("wait for pvefleet");
    writer.join().expect("writer thread");
    out
}

/// What a run said about each node, its output cut to 200 bytes (a failed 5 MB echo would
/// otherwise print 15 MB), and its stderr.
fn nodes_in_short(out: &Output) -> String {
    let mut v = json_of(out);
    for n in v["nodes"].as_array_mut().into_iter().flatten() {
        for stream in ["stdout", "stderr"] {
            if let Some(s) = n[stream].as_str() {
                let cut: String = s.chars().take(200).collect();
                n[stream] = serde_json::Value::String(cut);
            }
        }
    }
    format!("{v}\n{}", text(&out.stderr))
}

/// `exec --stdin` sends the controller's standard input to every node's command, the same
/// bytes to each, then end of file; without it the command's input is closed at once.
#[test]
fn stdin_is_forwarded_to_every_node_byte_exact() {
    if !require_root("stdin_is_forwarded_to_every_node_byte_exact") {
        return;
    }
    let fleet = Fleet::start(46, 3);
    let inv = fleet.inventory("");
    let inv = inv.to_str().unwrap();
    let out = pvefleet_fed(
        &["-i", inv, "--json", "exec", "--stdin", "--", "wc -l"],
        b"a\nb\n",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v = json_of(&out);
    for n in 0..3 {
        assert_eq!(
            v["nodes"][n]["stdout"].as_str().map(str::trim),
            Some("2"),
            "{v}"
        );
    }

    // Without --stdin, the controller's input is not read and `cat` ends at once.
    let started = Instant::now();
    let out = pvefleet_fed(
        &["-i", inv, "--timeout", "60s", "--json", "exec", "--", "cat"],
        b"not for the nodes\n",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(json_of(&out)["nodes"][0]["stdout"], "");

    // 5 MB, printed back as it is read (`cat`) and summed: byte-exact on every node.
    let big: Vec<u8> = (0..5_000_000u32)
        .map(|i| b"abcdefghijklmnopqrstuvwxyz\n"[(i % 27) as usize])
        .collect();
    let out = pvefleet_fed(&["-i", inv, "--json", "exec", "--stdin", "--", "cat"], &big);
    assert_eq!(out.status.code(), Some(0), "{}", nodes_in_short(&out));
    let v = json_of(&out);
    for n in 0..3 {
        let got = v["nodes"][n]["stdout"].as_str().unwrap_or_default();
        assert!(
            got.as_bytes() == big.as_slice(),
            "node {n}: {} bytes back",
            got.len()
        );
    }
    let sum = sha256_hex(&big);
    let out = pvefleet_fed(
        &["-i", inv, "--json", "exec", "--stdin", "--", "sha256sum"],
        &big,
    );
    assert_eq!(out.status.code(), Some(0), "{}", nodes_in_short(&out));
    let v = json_of(&out);
    for n in 0..3 {
        let got = v["nodes"][n]["stdout"].as_str().unwrap_or_default();
        assert!(got.starts_with(&sum), "node {n}: {got} (want {sum})");
    }
}

/// More than the documented 64 MiB of input is refused as a usage error, before any node is
/// contacted.
#[test]
fn stdin_past_64_mib_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let inv = dir.path().join("inv.toml");
    std::fs::write(&inv, "[nodes.a]\naddress = \"127.77.47.1\"\n").unwrap();
    let out = pvefleet_fed(
        &[
            "-i",
            inv.to_str().unwrap(),
            "exec",
            "--stdin",
            "--",
            "wc -c",
        ],
        &vec![b'x'; (64 << 20) + 1],
    );
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("at most 64 MiB"),
        "{}",
        text(&out.stderr)
    );
}

/// SHA-256 of `data` in hex, by the system's `sha256sum`.
fn sha256_hex(data: &[u8]) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum");
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = text(&child.wait_with_output().unwrap().stdout);
    out.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}
