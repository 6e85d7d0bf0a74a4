#!/usr/bin/env bash
# Benchmark: peak memory of `pvefleet exec` when nodes print far more than anyone reads. Two
# loopback sshd nodes (bench/fleet.sh) each print 300 MiB of text; pvefleet runs the command
# ROUNDS times (default 3) with --json and with the table output (both to /dev/null), and the
# peak RSS (`/usr/bin/time -f %M`) and wall time of each run are recorded. The median wall time
# and the highest peak RSS go into a Markdown table (also written to bench/results/output-cap.md).
#
#   bench/output-cap.sh                          the release build of this checkout
#   BEFORE=/path/to/old/pvefleet bench/output-cap.sh   also measure an older binary, first
#
# Needs root (sshd nodes), GNU time (/usr/bin/time, package `time`) and a release build
# (`cargo build --release`; PVEFLEET=path overrides).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
bin=${PVEFLEET:-$root/target/release/pvefleet}
before=${BEFORE:-}
rounds=${ROUNDS:-3}
bytes=${BYTES:-314572800}   # 300 MiB per node
work=$(mktemp -d /tmp/pvefleet-bench.XXXXXX)
cmd="yes 'pvefleet output cap benchmark line 0123456789' | head -c $bytes"
unset SSH_AUTH_SOCK
[ -x "$bin" ] || { echo "bench: build first: cargo build --release" >&2; exit 1; }
[ -z "$before" ] || [ -x "$before" ] || { echo "bench: BEFORE=$before is not executable" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "bench: needs GNU time (/usr/bin/time)" >&2; exit 1; }
trap '"$here/fleet.sh" down "$work/fleet" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

one_run() { # $1 = binary, $2 = json|table; appends "rss_kib wall_s" to $work/runs
  local json=()
  [ "$2" = json ] && json=(--json)
  /usr/bin/time -f '%M %e' -o "$work/time.one" "$1" -i "$work/fleet/inventory.toml" \
    "${json[@]}" exec -- "$cmd" > "$work/out" || { echo "bench: $1 exec failed" >&2; exit 1; }
  grep -q '2 nodes: 2 ok' "$work/out" || { echo "bench: $1 did not run on both nodes" >&2; exit 1; }
  cat "$work/time.one" >> "$work/runs"
}

measure() { # $1 = label, $2 = binary
  for mode in json table; do
    : > "$work/runs"
    one_run "$2" "$mode"   # warm-up (page cache, sshd's first fork)
    : > "$work/runs"
    for _ in $(seq 1 "$rounds"); do one_run "$2" "$mode"; done
    rss=$(cut -d' ' -f1 "$work/runs" | sort -n | tail -n 1)
    wall=$(cut -d' ' -f2 "$work/runs" | median)
    printf '| %s | %s | %.1f | %.1f |\n' "$1" "$mode" "$(echo "$rss / 1024" | bc -l)" "$wall" \
      >> "$work/table"
  done
}

"$here/fleet.sh" up 2 "$work/fleet" >/dev/null
{
  echo "| binary | output | peak RSS (MiB) | wall time (s) |"
  echo "|---|---|---:|---:|"
} > "$work/table"
[ -z "$before" ] || measure "before (keeps everything)" "$before"
measure "after (default --max-output 16M)" "$bin"
mkdir -p "$here/results"
{
  echo "pvefleet exec, 2 nodes printing $((bytes / 1048576)) MiB each ($(date -u +%Y-%m-%d), $(nproc) cores," \
    "highest peak RSS and median wall time of $rounds rounds, output to /dev/null)"
  echo
  cat "$work/table"
} | tee "$here/results/output-cap.md"
