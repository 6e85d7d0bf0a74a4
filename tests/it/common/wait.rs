//! Waiting on conditions, never on fixed times: a fixed sleep fires early on a loaded machine
//! and wastes time on an idle one.

use std::time::{Duration, Instant};

use super::lab::Lab;

/// Poll `f` every 100 ms until it returns true or `secs` pass; whether it did.
pub fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        if f() {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether pmxcfs has logged an `RRD update error` on `node` (the lab's journal gives one every
/// 10 s while an RRD fault lasts, as pmxcfs does).
pub fn rrd_errors_logged(lab: &Lab, node: &str) -> bool {
    let (_, out, _) = lab.ssh(
        node,
        "journalctl -u pve-cluster --since -1h -o short-iso --no-pager -q | grep -c 'RRD update error'",
    );
    out.trim().parse::<u32>().is_ok_and(|n| n > 0)
}

/// Wait (up to 40 s) until each of `nodes` has logged its RRD fault's errors; panic if not.
pub fn wait_rrd_errors(lab: &Lab, nodes: &[&str]) {
    assert!(
        eventually(40, || nodes.iter().all(|n| rrd_errors_logged(lab, n))),
        "no RRD update error logged on {nodes:?} within 40 s"
    );
}
