#!/usr/bin/env bash
# Benchmark: `pvefleet exec` against the OpenSSH client fanned out with xargs -P, side by side on
# the same loopback sshd nodes, in the same run, alternating, for N = 10, 50, 200 (override with
# NODES="10 50"). Prints a Markdown table (also written to bench/results/exec.md): median wall time
# of ROUNDS rounds (default 7), ratios, and pvefleet's peak RSS.
#
# Needs root (it starts sshd nodes with bench/fleet.sh) and a release build of pvefleet
# (`cargo build --release`; PVEFLEET=path overrides).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
bin=${PVEFLEET:-$root/target/release/pvefleet}
rounds=${ROUNDS:-7}
nodes_list=${NODES:-"10 50 200"}
work=$(mktemp -d /tmp/pvefleet-bench.XXXXXX)
cmd='uname -r; date +%s'
unset SSH_AUTH_SOCK
[ -x "$bin" ] || { echo "bench: build first: cargo build --release" >&2; exit 1; }
trap '"$here/fleet.sh" down "$work/fleet" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

now_ms() { date +%s%3N; }
median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print int((a[NR/2]+a[NR/2+1])/2)}'; }

ssh_fanout() { # $1 = N, rest = extra ssh options
  local n=$1; shift
  xargs -P "$n" -I{} ssh -F /dev/null -i "$work/fleet/id_ed25519" -o IdentitiesOnly=yes \
    -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$work/fleet/known_hosts" \
    -o ConnectTimeout=20 "$@" pvefleet-bench@{} "$cmd" < "$work/fleet/hosts" > "$work/ssh.out"
  [ "$(wc -l < "$work/ssh.out")" -eq $((2 * n)) ] || { echo "bench: ssh fan-out lost output" >&2; exit 1; }
}

run_pvefleet() { # $1 = N; records peak RSS (KiB) in $work/rss
  /usr/bin/time -f '%M' -o "$work/rss.one" "$bin" -i "$work/fleet/inventory.toml" -f "$1" \
    --json exec -- "$cmd" > "$work/pf.out"
  cat "$work/rss.one" >> "$work/rss"
  grep -q "\"summary\": \"$1 nodes: $1 ok\"" "$work/pf.out" || { echo "bench: pvefleet run failed" >&2; head -c 2000 "$work/pf.out" >&2; exit 1; }
}

mkdir -p "$here/results"
out="$here/results/exec.md"
{
  echo "| nodes | pvefleet exec (ms) | ssh fan-out, default kex (ms) | ssh fan-out, curve25519 (ms) | pvefleet / fastest ssh | pvefleet peak RSS (MiB) |"
  echo "|---:|---:|---:|---:|---:|---:|"
} > "$work/table"
for n in $nodes_list; do
  "$here/fleet.sh" up "$n" "$work/fleet" >/dev/null
  : > "$work/rss"; : > "$work/t.pf"; : > "$work/t.ssh"; : > "$work/t.curve"
  run_pvefleet "$n"; ssh_fanout "$n"   # warm-up (page cache, sshd first fork)
  for _ in $(seq 1 "$rounds"); do
    t0=$(now_ms); run_pvefleet "$n"; t1=$(now_ms); echo $((t1 - t0)) >> "$work/t.pf"
    t0=$(now_ms); ssh_fanout "$n"; t1=$(now_ms); echo $((t1 - t0)) >> "$work/t.ssh"
    t0=$(now_ms); ssh_fanout "$n" -o KexAlgorithms=curve25519-sha256; t1=$(now_ms); echo $((t1 - t0)) >> "$work/t.curve"
  done
  pf=$(median < "$work/t.pf"); ss=$(median < "$work/t.ssh"); cv=$(median < "$work/t.curve")
  best=$(( ss < cv ? ss : cv ))
  rss=$(sort -n "$work/rss" | tail -n 1)
  printf '| %d | %d | %d | %d | %.2fx | %.1f |\n' "$n" "$pf" "$ss" "$cv" \
    "$(echo "$pf / $best" | bc -l)" "$(echo "$rss / 1024" | bc -l)" >> "$work/table"
  "$here/fleet.sh" down "$work/fleet" >/dev/null
  sleep 1
done
{
  echo "pvefleet exec vs OpenSSH fan-out ($(date -u +%Y-%m-%d), $(nproc) cores, median of $rounds rounds, command: \`$cmd\`)"
  echo
  cat "$work/table"
} | tee "$out"
