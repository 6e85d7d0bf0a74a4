#!/usr/bin/env bash
# Benchmark: pvefleet's own overhead in a rolling reboot. On N lab nodes (default 4) with a
# boot delay of BOOT seconds (default 5), a rolling playbook (batch 1) changes one line and
# reboots each node; the wall time of `pvefleet run` minus the time the nodes themselves spent
# rebooting (from the reboot command to sshd answering again, recorded by the lab in ms) is
# pvefleet's overhead: the plan, connections, the drain checks, noticing the node is down and
# back, the health and quorum gates. Per node, median of ROUNDS rounds (default 3). With
# BEFORE=/path/to/old/pvefleet the old binary is measured in the same run, alternating.
# Writes bench/results/rolling.md. Needs root (the lab) and `cargo build --release`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
bin=${PVEFLEET:-$root/target/release/pvefleet}
before=${BEFORE:-}
rounds=${ROUNDS:-3}
n=${NODES:-4}
boot=${BOOT:-5}
dir=$(mktemp -d /tmp/pvefleet-bench-rolling.XXXXXX)
unset SSH_AUTH_SOCK
[ -x "$bin" ] || { echo "bench: build first: cargo build --release" >&2; exit 1; }
trap '"$root/tests/lab/lab" down --dir "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
now_ms() { date +%s%3N; }
median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print int((a[NR/2]+a[NR/2+1])/2)}'; }
"$root/tests/lab/lab" up "$n" --dir "$dir" --net 98 --boot-delay "$boot" >/dev/null
inv="$dir/inventory.toml"
cat > "$dir/pb.toml" <<'PB'
name = "bench-rolling"
[vars]
marker = "x"
[strategy]
mode = "rolling"
batch = 1
[[step]]
name = "mark"
kind = "line"
path = "/etc/pvefleet-bench"
line = "{{ marker }}"
[[step]]
name = "reboot"
kind = "reboot"
timeout = "5m"
on_change = ["mark"]
PB
# Sum over nodes of (ready - reboot asked), ms, for reboots after $1 (ms).
downtime_since() {
  local since=$1 total=0 nd r d
  for nd in "$dir"/nodes/*; do
    paste -d' ' <(awk -v s="$since" '$1 > s' "$nd/sim/reboot_times" 2>/dev/null) \
                <(awk -v s="$since" '$1 > s' "$nd/sim/ready_times" 2>/dev/null) |
      while read -r r d; do [ -n "$d" ] && echo $((d - r)); done
  done | awk '{t += $1} END {print t + 0}'
}
measure() { # BIN ROUND -> overhead per node (ms) on stdout
  local b=$1 round=$2 t0 t1 down
  t0=$(now_ms)
  PVEFLEET_STATE_DIR="$dir/state" "$b" -i "$inv" run --yes -e "marker=$round-$(basename "$b")" "$dir/pb.toml" > "$dir/out.txt" 2>&1 \
    || { cat "$dir/out.txt" >&2; echo "bench: the run failed" >&2; exit 1; }
  t1=$(now_ms)
  down=$(downtime_since "$t0")
  echo "$(( (t1 - t0 - down) / n )) $(( (t1 - t0) / n )) $(( down / n ))"
}
: > "$dir/after"; : > "$dir/before"
for r in $(seq 1 "$rounds"); do
  measure "$bin" "$r" >> "$dir/after"
  if [ -n "$before" ]; then measure "$before" "$r" >> "$dir/before"; fi
done
col() { awk -v c="$1" '{print $c}' "$2" | median; }
mkdir -p "$here/results"
{
  echo "pvefleet's overhead in a rolling reboot of $n lab nodes, boot delay ${boot} s ($(date -u +%Y-%m-%d), $(nproc) cores, median of $rounds rounds)"
  echo
  echo "| binary | wall per node (ms) | node reboot time per node (ms) | pvefleet overhead per node (ms) |"
  echo "|---|---:|---:|---:|"
  echo "| this build | $(col 2 "$dir/after") | $(col 3 "$dir/after") | $(col 1 "$dir/after") |"
  if [ -n "$before" ]; then
    echo "| before ($(basename "$before")) | $(col 2 "$dir/before") | $(col 3 "$dir/before") | $(col 1 "$dir/before") |"
  fi
} | tee "$here/results/rolling.md"
