#!/usr/bin/env bash
# Benchmark: how fast a drain empties a node. On 3 lab nodes, pve1 holds 12 running VMs of
# mixed sizes (3 each of 512, 1024, 2048 and 4096 MiB: 22.5 GiB) and the lab's migration model
# (tests/lab/README.md, "Migrations") gives every node a link of LINK MiB/s (default 1024,
# about 10 GbE) and a fixed cost of FIXED ms per migration (default 3000: the target's QEMU, the
# tunnel, the switch-over). One draining reboot of pve1 is run with migrations one at a time
# (`--max-migrations 1`: the loop of the release before this one, which moved one guest at a
# time), then with the default (the cluster's max_workers, else 4), then with MAX (default 8),
# in the same run on the same nodes. The drain's time is the journal's, from the first
# `guest_moved` intent to the last `guest_moved` done (away), and from the first
# `guest_returning` to the last `guest_returned` (back). The model's limit is one fixed cost
# plus the total memory over the link: no drain can be faster. Writes bench/results/drain.md.
# Needs root (the lab), python3 and `cargo build --release`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
bin=${PVEFLEET:-$root/target/release/pvefleet}
link=${LINK:-1024}
fixed=${FIXED:-3000}
max=${MAX:-8}
dir=$(mktemp -d /tmp/pvefleet-bench-drain.XXXXXX)
unset SSH_AUTH_SOCK
[ -x "$bin" ] || { echo "bench: build first: cargo build --release" >&2; exit 1; }
command -v python3 >/dev/null || { echo "bench: needs python3" >&2; exit 1; }
lab="$root/tests/lab/lab"
trap '"$lab" down --dir "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
"$lab" up 3 --dir "$dir" --net 155 --boot-delay 2 >/dev/null
id=100 total=0
for mem in 512 1024 2048 4096; do
  for _ in 1 2 3; do
    id=$((id + 1)); total=$((total + mem))
    "$lab" fault pve1 guest "$id" "name=g$id" "mem=$mem" --dir "$dir" >/dev/null
  done
done
for n in pve1 pve2 pve3; do "$lab" fault "$n" migration-link "$link" "$fixed" --dir "$dir" >/dev/null; done
cat > "$dir/pb.toml" <<'PB'
name = "bench-drain"
[vars]
marker = "x"
[[step]]
name = "mark"
kind = "line"
path = "/etc/pvefleet-bench"
line = "{{ marker }}"
[[step]]
name = "reboot"
kind = "reboot"
drain = true
timeout = "5m"
on_change = ["mark"]
PB
# The drain's times in the newest run's journal: "AWAY_S BACK_S MOST_AT_ONCE".
times() {
  python3 - "$dir/state/runs" <<'PY'
import json, os, sys, datetime
runs = sys.argv[1]
newest = sorted(os.listdir(runs))[-1]
ev = [json.loads(l) for l in open(os.path.join(runs, newest, "events.jsonl"))]
t = lambda e: datetime.datetime.fromisoformat(e["time"].replace("Z", "+00:00")).timestamp()
mine = [e for e in ev if e["node"] == "pve1"]
def span(start, end):
    s = [t(e) for e in mine if start(e)]
    d = [t(e) for e in mine if end(e)]
    return max(d) - min(s)
moved = lambda e: e["event"] == "guest_moved"
away = span(lambda e: moved(e) and e["data"]["phase"] == "intent",
            lambda e: moved(e) and e["data"]["phase"] == "done")
back = span(lambda e: e["event"] == "guest_returning", lambda e: e["event"] == "guest_returned")
live, most = set(), 0
for e in mine:
    if moved(e):
        v = e["data"]["guest"]["vmid"]
        (live.add if e["data"]["phase"] == "intent" else live.discard)(v)
        most = max(most, len(live))
print(f"{away:.1f} {back:.1f} {most}")
PY
}
run() { # LABEL ARGS...
  local label=$1; shift
  PVEFLEET_STATE_DIR="$dir/state" "$bin" -i "$dir/inventory.toml" -l pve1 run --yes \
    -e "marker=$label" "$@" "$dir/pb.toml" > "$dir/out.txt" 2>&1 \
    || { cat "$dir/out.txt" >&2; echo "bench: the $label run failed" >&2; exit 1; }
  times
}
seq_t=$(run sequential --max-migrations 1)
def_t=$(run default)
max_t=$(run "max$max" --max-migrations "$max")
limit=$(python3 -c "print(f'{$fixed / 1000 + $total / $link:.1f}')")
row() { # LABEL "AWAY BACK MOST"
  read -r away back most <<<"$2"
  python3 -c "print(f'| $1 | $most | $away | {$away / $limit:.2f}x | $back | {$back / $limit:.2f}x |')"
}
mkdir -p "$here/results"
{
  echo "Draining a lab node of 12 VMs ($((total / 1024)).$(( (total % 1024) * 10 / 1024 )) GiB: 3 each of 512, 1024, 2048, 4096 MiB), link $link MiB/s, fixed cost $fixed ms per migration ($(date -u +%Y-%m-%d), $(nproc) cores, one run each, the same nodes)"
  echo
  echo "Model's limit (one fixed cost + total memory / link): $limit s"
  echo
  echo "| drain | at once | away (s) | vs limit | back (s) | vs limit |"
  echo "|---|---:|---:|---:|---:|---:|"
  row "one at a time (--max-migrations 1, as the release before)" "$seq_t"
  row "default (max_workers unset: 4)" "$def_t"
  row "--max-migrations $max" "$max_t"
} | tee "$here/results/drain.md"
