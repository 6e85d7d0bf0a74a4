#!/usr/bin/env bash
# Benchmark: `pvefleet audit` (every probe, one remote script per node plus the clock samples)
# against `pvefleet exec -- true` on the same N lab nodes, in the same run, alternating; median
# wall time of ROUNDS rounds (default 5) and the ratio. N defaults to 50 (NODES=...).
# Writes bench/results/audit.md. Needs root (the lab) and `cargo build --release`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
bin=${PVEFLEET:-$root/target/release/pvefleet}
rounds=${ROUNDS:-5}
n=${NODES:-50}
dir=$(mktemp -d /tmp/pvefleet-bench-audit.XXXXXX)
unset SSH_AUTH_SOCK
[ -x "$bin" ] || { echo "bench: build first: cargo build --release" >&2; exit 1; }
trap '"$root/tests/lab/lab" down --dir "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
now_ms() { date +%s%3N; }
median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print int((a[NR/2]+a[NR/2+1])/2)}'; }
# --corosync sim: 50 real corosyncs (~90 MB each, knet pinging every other node) would not fit a
# small machine; the audit reads quorum the same way either way.
"$root/tests/lab/lab" up "$n" --dir "$dir" --net 99 --corosync sim >/dev/null
inv="$dir/inventory.toml"
"$bin" -i "$inv" -f "$n" exec -- true >/dev/null   # warm-up
: > "$dir/t.audit"; : > "$dir/t.exec"; : > "$dir/t.script"
"$bin" probe --script > "$dir/probes.sh"
for _ in $(seq 1 "$rounds"); do
  t0=$(now_ms); "$bin" -i "$inv" -f "$n" audit --format json > "$dir/audit.json" || true; t1=$(now_ms)
  echo $((t1 - t0)) >> "$dir/t.audit"
  grep -q "\"unreachable\": 0" "$dir/audit.json" || { echo "bench: audit did not reach every node" >&2; exit 1; }
  t0=$(now_ms); "$bin" -i "$inv" -f "$n" exec -- true > /dev/null; t1=$(now_ms)
  echo $((t1 - t0)) >> "$dir/t.exec"
  t0=$(now_ms); "$bin" -i "$inv" -f "$n" exec -- "$(cat "$dir/probes.sh")" > /dev/null || true; t1=$(now_ms)
  echo $((t1 - t0)) >> "$dir/t.script"
done
a=$(median < "$dir/t.audit"); e=$(median < "$dir/t.exec"); x=$(median < "$dir/t.script")
mkdir -p "$here/results"
{
  echo "pvefleet audit vs exec of a trivial command on $n lab nodes ($(date -u +%Y-%m-%d), $(nproc) cores, median of $rounds rounds)"
  echo
  echo "| nodes | audit (ms) | exec -- true (ms) | exec of the probe script (ms) | audit / exec true | audit / exec of the same script |"
  echo "|---:|---:|---:|---:|---:|---:|"
  printf '| %d | %d | %d | %d | %.2fx | %.2fx |\n' "$n" "$a" "$e" "$x" "$(echo "$a / $e" | bc -l)" "$(echo "$a / $x" | bc -l)"
} | tee "$here/results/audit.md"
