#!/usr/bin/env bash
# The lab's Ceph (sourced by tests/lab/node on the host; see tests/lab/README.md, "Ceph").
#
# Profile ceph=yes: Debian's real Ceph 16 daemons run inside the node. ceph=standin: the old
# stand-in sim/bin/ceph (Reef's output format), no daemons. Otherwise the node has no Ceph at all,
# even when the host has Debian's packages installed: whiteouts hide them in the node's layer.

# Every Ceph command and directory the host's packages (ceph-common, ceph-base, ceph-mon, ceph-mgr,
# ceph-osd) put where a node would see them.
ceph_host_paths() {
  local p
  for p in /usr/bin/ceph /usr/bin/ceph-* /usr/sbin/ceph-* /usr/bin/cephfs-* /usr/bin/rados \
    /usr/bin/radosgw* /usr/bin/rbd /usr/bin/rbd-* /usr/bin/rbdmap /usr/bin/crushtool \
    /usr/bin/monmaptool /usr/bin/osdmaptool /usr/sbin/mount.ceph /etc/ceph; do
    [ -e "$p" ] || [ -L "$p" ] && echo "$p"
  done
  return 0
}

# ceph_hide UPPER [KEEP...]: an overlayfs whiteout (a 0/0 character device) in the upper layer
# for each host Ceph path except the ones named.
ceph_hide() {
  local u=$1 p k skip; shift
  for p in $(ceph_host_paths); do
    skip=0; for k in "$@"; do [ "$p" = "$k" ] && skip=1; done
    [ $skip = 1 ] && continue
    mkdir -p "$u$(dirname "$p")"
    rm -rf "${u:?}$p"
    mknod "$u$p" c 0 0
  done
}

# ---- The real Ceph (profile ceph=yes) ----
# Layout: each Ceph node's persistent state DIR/nodes/NODE/sim/ceph is its /var/lib/ceph
# (mon/ceph-NODE, mgr/ceph-NODE, osd/ceph-ID with a sparse 1 GiB bluestore file `block`, log/).
# Daemons run inside the node (its PID namespace; its own 127.x address, given on the command
# line, as all nodes share the host's network namespace), started by the node's boot
# (`ceph-lab.sh boot`) and stopped by its reboot (`ceph_lab_stop`, SIGTERM as systemd would).

# ceph_lab_conf HOSTS...: /etc/pve/ceph.conf as pveceph writes it (mon_host the monitors'
# addresses), with auth none and the lab's small caches and fast failure detection.
ceph_lab_conf() {
  local fsid=$1 mh=$2
  cat <<EOT
[global]
	auth_client_required = none
	auth_cluster_required = none
	auth_service_required = none
	cluster_network = 127.$NET.0.0/16
	fsid = $fsid
	mon_allow_pool_delete = true
	mon_host = $mh
	ms_bind_ipv4 = true
	ms_bind_ipv6 = false
	osd_pool_default_min_size = 2
	osd_pool_default_size = 3
	public_network = 127.$NET.0.0/16
	# pvefleet lab: fixed PG counts, failures seen in seconds, little memory.
	osd_pool_default_pg_autoscale_mode = off
	mon_osd_min_down_reporters = 1
	mon_osd_adjust_heartbeat_grace = false
	osd_heartbeat_interval = 1
	osd_heartbeat_grace = 6
	mon_data_avail_warn = 5
	mon_warn_on_pool_no_redundancy = false
	mgr_stats_period = 1
	# mgr failover: MgrMonitor::tick forgets the beacons when its own ticks are further apart than
	# the grace (it assumes it was not leader), so the grace must be well above the tick.
	mon_tick_interval = 2
	mon_mgr_beacon_grace = 10
	mon_lease = 3
	mon_client_ping_interval = 2
	mon_client_ping_timeout = 6
	mon_client_hunt_interval = 1
	mgr_connect_retry_interval = 1
	mon_warn_on_insecure_global_id_reclaim = false
	mon_warn_on_insecure_global_id_reclaim_allowed = false
	mgr_initial_modules = iostat

[client]
	keyring = /etc/pve/priv/\$cluster.\$name.keyring

[mon]
	log_file = /var/lib/ceph/log/\$cluster-\$name.log
	mon_cluster_log_file = /var/lib/ceph/log/\$cluster.log

[mgr]
	log_file = /var/lib/ceph/log/\$cluster-\$name.log

[osd]
	log_file = /var/lib/ceph/log/\$cluster-\$name.log
	bluestore_block_create = true
	bluestore_block_size = 1073741824
	bluestore_cache_autotune = false
	bluestore_cache_size = 33554432
	osd_memory_target = 939524096
	osd_op_num_shards_hdd = 1
	osd_op_num_shards_ssd = 1
	osd_recovery_sleep_hdd = 0
	osd_recovery_sleep_ssd = 0
	osd_recovery_sleep_hybrid = 0
	osd_mon_report_interval = 1
	osd_fast_shutdown_notify_mon = true
EOT
}

# Host side, at `lab up` (DIR, NET set; DIR/cluster/ceph/{osds,mons} written): fsid, ceph.conf,
# monmap, and every monitor's store (ceph-mon --mkfs). OSDs are created at their node's first
# boot (they need the monitors); `ceph_lab_ready` then creates the pool.
ceph_lab_bootstrap() {
  local C="$DIR/cluster/ceph" n ip mh="" fsid args=()
  fsid=$(cat /proc/sys/kernel/random/uuid); echo "$fsid" > "$C/fsid"
  while read -r n; do
    ip=$(awk -v n="$n" '$1 == n {print $3}' "$DIR/cluster/nodes")
    mh="$mh${mh:+ }$ip"
    args+=(--addv "$n" "[v2:$ip:3300,v1:$ip:6789]")
  done < "$C/mons"
  ceph_lab_conf "$fsid" "$mh" > "$DIR/pve/ceph.conf"
  touch "$C/real"
  monmaptool --create --fsid "$fsid" --enable-all-features --set-min-mon-release pacific \
    "${args[@]}" "$C/monmap" >/dev/null
  ceph-authtool --create-keyring "$C/mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
  while read -r n; do
    local d="$DIR/nodes/$n/sim/ceph"
    mkdir -p "$d/mon" "$d/log"
    ip=$(awk -v n="$n" '$1 == n {print $3}' "$DIR/cluster/nodes")
    ceph-mon -c "$DIR/pve/ceph.conf" --cluster ceph --mkfs -i "$n" --monmap "$C/monmap" --public-addr "$ip" \
      --keyring "$C/mon.keyring" --mon-data "$d/mon/ceph-$n" --log-file "$d/log/mkfs-mon.log" \
      || { echo "lab: ceph-mon --mkfs for $n failed (see $d/log/mkfs-mon.log)" >&2; return 1; }
  done < "$C/mons"
  local i=0
  while read -r id n; do mkdir -p "$DIR/nodes/$n/sim/ceph/osd" "$DIR/nodes/$n/sim/ceph/log"; done < "$C/osds"
  for n in $(awk '{print $2}' "$C/osds" | awk '!s[$0]++'); do
    i=$((i + 1)); [ $i -le 2 ] || break
    echo "$n" >> "$C/mgrs"; mkdir -p "$DIR/nodes/$n/sim/ceph/mgr/ceph-$n"
  done
}

hceph() { timeout "${CEPH_T:-15}" ceph -c "$DIR/pve/ceph.conf" --connect-timeout 10 "$@"; }

# Host side, end of `lab up`: wait (bounded) for every OSD up, create pool ceph-pool once (size 3,
# min_size 2, fewer hosts: size = hosts; 32 PGs; application rbd), wait for all PGs active+clean.
ceph_lab_ready() {
  # 300 s: three real-Ceph labs starting among eight tests at once on 2 cores (load average
  # 14) once took longer than 180 s.
  local C="$DIR/cluster/ceph" t=${1:-300} want hosts size end st
  [ -f "$C/real" ] || return 0
  want=$(wc -l < "$C/osds"); hosts=$(awk '{print $2}' "$C/osds" | sort -u | wc -l)
  size=3; [ "$hosts" -lt 3 ] && size=$hosts
  end=$(( $(date +%s) + t ))
  until [ "$(hceph osd stat -f json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["num_up_osds"])' 2>/dev/null)" = "$want" ]; do
    [ "$(date +%s)" -lt "$end" ] || { echo "lab: Ceph: not all $want OSDs up after ${t}s (see DIR/nodes/*/sim/ceph/log)" >&2; hceph -s >&2; return 1; }
    sleep 1
  done
  # Each pool command is tried again until the deadline: under load a monitor command can time
  # out (hceph's 15 s) or answer EBUSY, and `node` runs with set -e, which made such a failure
  # end `lab up` with no word of why.
  pool_cmd() {
    local err
    until err=$(hceph osd pool "$@" 2>&1 >/dev/null); do
      [ "$(date +%s)" -lt "$end" ] || { echo "lab: Ceph: ceph osd pool $* failed: $err" >&2; return 1; }
      sleep 1
    done
  }
  if ! hceph osd pool ls 2>/dev/null | grep -qx ceph-pool; then
    pool_cmd create ceph-pool 32 32 replicated || return 1
    pool_cmd set ceph-pool size "$size" --yes-i-really-mean-it || return 1
    pool_cmd set ceph-pool min_size $(( size > 1 ? 2 : 1 )) || return 1
    if [ "$size" -lt 2 ]; then pool_cmd set ceph-pool min_size 1 || return 1; fi
    pool_cmd application enable ceph-pool rbd || return 1
  fi
  until st=$(hceph status -f json 2>/dev/null) && python3 -c '
import json, sys
s = json.loads(sys.argv[1]); p = s["pgmap"]; st = p.get("pgs_by_state", [])
ok = p["num_pgs"] > 0 and len(st) == 1 and st[0]["state_name"] == "active+clean" and st[0]["count"] == p["num_pgs"]
sys.exit(0 if ok and s.get("mgrmap", {}).get("available", True) else 1)' "$st"; do
    [ "$(date +%s)" -lt "$end" ] || { echo "lab: Ceph: PGs not active+clean after ${t}s" >&2; hceph -s >&2; return 1; }
    sleep 1
  done
}

# Inside the node, at boot (sim/boot, with lib.sh): start this node's monitor, mgr and OSDs;
# OSDs not yet created are created first (`ceph osd new`, `ceph-osd --mkfs`, bluestore).
# One daemon of the node, inside it: `mon`, `mgr` or `osd ID` (an OSD already created), started
# as the boot starts it (the daemons fork into the background; pid files in /run/ceph).
ceph_lab_start() {
  local ip; ip=$(prof ip)
  mkdir -p /run/ceph /var/lib/ceph/log
  case "$1" in
    mon) ceph-mon -i "$NODE" --public-addr "$ip" --pid-file "/run/ceph/mon.$NODE.pid" </dev/null >>/var/lib/ceph/log/boot.log 2>&1 ;;
    mgr) ceph-mgr -i "$NODE" --public-addr "$ip" --pid-file "/run/ceph/mgr.$NODE.pid" </dev/null >>/var/lib/ceph/log/boot.log 2>&1 ;;
    osd) ceph-osd -i "$2" --osd-data "/var/lib/ceph/osd/ceph-$2" --public-addr "$ip" --cluster-addr "$ip" \
           --crush-location "root=default host=$NODE" --pid-file "/run/ceph/osd.$2.pid" </dev/null >>/var/lib/ceph/log/boot.log 2>&1 ;;
  esac
}

ceph_lab_boot() {
  local ip id n
  ip=$(prof ip)
  mkdir -p /run/ceph /var/lib/ceph/log
  [ -d "/var/lib/ceph/mon/ceph-$NODE" ] && ceph_lab_start mon
  [ -d "/var/lib/ceph/mgr/ceph-$NODE" ] && ceph_lab_start mgr
  # OSDs in the background: a new one needs the monitors, which may still be starting.
  (
    while read -r id n; do
      [ "$n" = "$NODE" ] || continue
      local d=/var/lib/ceph/osd/ceph-$id
      if [ ! -f "$d/lab-ready" ]; then
        local uuid; uuid=$(cat /proc/sys/kernel/random/uuid)
        mkdir -p "$d"
        until timeout 20 ceph --connect-timeout 15 osd new "$uuid" "$id" >/dev/null 2>&1; do sleep 1; done
        ceph-osd -i "$id" --mkfs --osd-uuid "$uuid" --osd-data "$d" --public-addr "$ip" --cluster-addr "$ip" >>/var/lib/ceph/log/boot.log 2>&1 || continue
        touch "$d/lab-ready"
      fi
      # Fault osd-no-return: this OSD is not started by the boot (as a dead disk's would not).
      [ -f "$CL/ceph/osd-stopped-$id" ] && continue
      ceph_lab_start osd "$id"
    done < "$CL/ceph/osds"
  ) </dev/null >/dev/null 2>&1 &
}

# Host side, from the node's PID 1 as the node goes down (M: the node's root): SIGTERM to its Ceph
# daemons, as systemd's shutdown does; at most 5 s.
ceph_lab_stop() {
  local m=$1 f pids=""
  for f in "$m"/run/ceph/*.pid; do [ -f "$f" ] && pids="$pids $(cat "$f")"; done
  [ -n "$pids" ] || return 0
  kill -TERM $pids 2>/dev/null || true
  local p alive
  for _ in $(seq 1 50); do
    alive=0; for p in $pids; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 1 ] || return 0
    sleep 0.1
  done
}

if [ "${BASH_SOURCE[0]}" = "$0" ] && [ "${1:-}" = boot ]; then
  . /usr/lib/pvelab/lib.sh
  ceph_lab_boot
fi
if [ "${BASH_SOURCE[0]}" = "$0" ] && [ "${1:-}" = start ]; then
  . /usr/lib/pvelab/lib.sh
  ceph_lab_start "$2" "${3:-}"
fi

# ---- Faults on the real Ceph (host side; `lab fault NODE KIND ...`) ----
# ceph-health SEV CODE: a real, unrelated health check. Real Ceph raises only what really happens:
#   WARN POOL_APP_NOT_ENABLED  a pool `lab-noapp` (1 PG, one object) without an application
#   WARN OSD_NEARFULL          `ceph osd set-nearfull-ratio 0.01`
#   ERR  OSD_FULL              nearfull/backfillfull/full ratios 0.01/0.015/0.02
# Others (MON_CLOCK_SKEW: the nodes share one clock; PG_DAMAGED: needs a scrub error) are refused.
# ceph-slow-recovery SECONDS: `osd_recovery_sleep` SECONDS/16, one recovery op per OSD, and a writer
#   on the host putting small objects into ceph-pool (10 a second) so that a node that was down has
#   objects to recover: recovery then lasts about SECONDS (depends on how long the node was down).
ceph_lab_wait_check() { # CODE present|absent
  local end=$(( $(date +%s) + 40 ))
  while [ "$(date +%s)" -lt "$end" ]; do
    if hceph health -f json 2>/dev/null | grep -q "\"$1\""; then [ "$2" = present ] && return 0
    else [ "$2" = absent ] && return 0; fi
    sleep 0.5
  done
  echo "lab: Ceph health check $1 still not $2 after 40 s" >&2; return 1
}

# Daemons stopped without their node (host side, in the node's namespaces): SIGTERM, as
# `systemctl stop ceph-osd@ID` (ceph-mon@, ceph-mgr@) sends; then waited for until the cluster
# says so, as real Ceph does (a cleanly stopping OSD tells the monitors it goes down; a mgr is
# replaced by a standby after mon_mgr_beacon_grace; a monitor leaves the quorum at the next
# election).
# osd-stop [ID]       stop the OSD (the node's first by default), now
# osd-no-return [ID]  the OSD is not started by the node's next boots (clear: started again)
# mgr-stop            stop the node's mgr and `ceph mgr fail` it (no other mgr: no PG statistics)
# mon-stop            stop the node's monitor
ceph_lab_osd_of() { # NODE [ID]: the ID given (checked to be the node's) or the node's first OSD
  local C="$DIR/cluster/ceph"
  if [ -n "${2:-}" ]; then
    awk -v n="$1" -v i="$2" '$1 == i && $2 == n {print $1; f=1} END {exit !f}' "$C/osds" ||
      { echo "lab: osd.$2 is not an OSD of $1 ($(awk -v n="$1" '$2 == n {printf "osd.%s ", $1}' "$C/osds"))" >&2; return 1; }
  else
    awk -v n="$1" '$2 == n {print $1; exit}' "$C/osds" | grep . || { echo "lab: $1 has no OSD" >&2; return 1; }
  fi
}

ceph_lab_wait() { # SECONDS PYTHON-CONDITION-ON-s (the JSON of `ceph CMD -f json`) CMD...
  local t=$1 cond=$2; shift 2
  local end=$(( $(date +%s) + t )) out
  while [ "$(date +%s)" -lt "$end" ]; do
    if out=$(hceph "$@" -f json 2>/dev/null) && python3 -c "import json, sys; s = json.loads(sys.argv[1]); sys.exit(0 if ($cond) else 1)" "$out" 2>/dev/null; then
      return 0
    fi
    sleep 0.5
  done
  echo "lab: Ceph did not reach ($cond) on 'ceph $*' in ${t} s" >&2; return 1
}

ceph_lab_kill() { # PIDFILE inside the node
  in_node "[ -f $1 ] && kill -TERM \$(cat $1) 2>/dev/null; for i in \$(seq 1 100); do [ -f $1 ] && kill -0 \$(cat $1) 2>/dev/null || exit 0; sleep 0.1; done" || true
}

ceph_lab_fault() {
  local kind=$1; shift
  local C="$DIR/cluster/ceph"
  case "$kind" in
    osd-stop)
      local id; id=$(ceph_lab_osd_of "$NAME" "${1:-}") || return 1
      ceph_lab_kill "/run/ceph/osd.$id.pid"
      ceph_lab_wait 40 "any(o['osd'] == $id and o['up'] == 0 for o in s['osds'])" osd dump
      echo "$id" ;;
    osd-no-return)
      local id; id=$(ceph_lab_osd_of "$NAME" "${1:-}") || return 1
      touch "$C/osd-stopped-$id"; echo "$id" ;;
    mgr-stop)
      [ -d "$DIR/nodes/$NAME/sim/ceph/mgr/ceph-$NAME" ] || { echo "lab: $NAME runs no mgr ($(tr '\n' ' ' < "$C/mgrs"))" >&2; return 1; }
      ceph_lab_kill "/run/ceph/mgr.$NAME.pid"
      # What an operator does after stopping the active mgr, so the monitors need not wait for
      # mon_mgr_beacon_grace to notice (a standby, if any, takes over at once).
      hceph mgr fail "$NAME" >/dev/null 2>&1 || true
      ceph_lab_wait 60 "s.get('active_name') != '$NAME' or not s.get('available')" mgr stat
      echo "$NAME" ;;
    mon-stop)
      grep -qx "$NAME" "$C/mons" 2>/dev/null || { echo "lab: $NAME runs no monitor" >&2; return 1; }
      ceph_lab_kill "/run/ceph/mon.$NAME.pid"
      ceph_lab_wait 60 "'$NAME' not in s['quorum_names']" quorum_status
      echo "$NAME" ;;
    ceph-health)
      case "$1 $2" in
        "WARN POOL_APP_NOT_ENABLED")
          local hosts size; hosts=$(awk '{print $2}' "$C/osds" | sort -u | wc -l); size=$(( hosts < 3 ? hosts : 3 ))
          hceph osd pool create lab-noapp 1 1 replicated >/dev/null 2>&1
          hceph osd pool set lab-noapp size "$size" --yes-i-really-mean-it >/dev/null 2>&1
          timeout 30 rados -c "$DIR/pve/ceph.conf" -p lab-noapp put lab-object /etc/hostname ;;
        "WARN OSD_NEARFULL") hceph osd set-nearfull-ratio 0.01 >/dev/null ;;
        "ERR OSD_FULL")
          hceph osd set-nearfull-ratio 0.01 >/dev/null; hceph osd set-backfillfull-ratio 0.015 >/dev/null
          hceph osd set-full-ratio 0.02 >/dev/null ;;
        *) echo "lab: the lab's real Ceph cannot be made to raise HEALTH_$1 $2; it can: WARN POOL_APP_NOT_ENABLED, WARN OSD_NEARFULL, ERR OSD_FULL (profile ceph=standin fakes any code)" >&2
          return 1 ;;
      esac
      ceph_lab_wait_check "$2" present ;;
    ceph-slow-recovery)
      local secs=$1
      hceph config set osd osd_recovery_sleep "$(echo "scale=3; $secs / 16" | bc)" >/dev/null
      hceph config set osd osd_recovery_max_active 1 >/dev/null
      hceph config set osd osd_max_backfills 1 >/dev/null
      [ -f "$C/slow-writer.pid" ] && return 0
      head -c 65536 /dev/urandom > "$C/slow-object"
      setsid bash -c 'i=0; while :; do i=$((i + 1)); timeout 5 rados -c "$1/pve/ceph.conf" -p ceph-pool put "lab-slow-$i" "$1/cluster/ceph/slow-object" >/dev/null 2>&1; sleep 0.1; done' \
        lab-slow-writer "$DIR" </dev/null >/dev/null 2>&1 &
      echo $! > "$C/slow-writer.pid" ;;
  esac
}

ceph_lab_clear() {
  local kind=$1 C="$DIR/cluster/ceph"
  case "$kind" in
    osd-stop|osd-no-return) # the IDs the fault recorded, one a line on stdin
      local id
      while read -r id; do
        [ -n "$id" ] || continue
        rm -f "$C/osd-stopped-$id"
        in_node "[ -f /run/ceph/osd.$id.pid ] && kill -0 \$(cat /run/ceph/osd.$id.pid) 2>/dev/null || bash /usr/lib/pvelab/ceph-lab.sh start osd $id" 2>/dev/null || true
      done ;;
    mgr-stop) in_node "[ -f /run/ceph/mgr.$NAME.pid ] && kill -0 \$(cat /run/ceph/mgr.$NAME.pid) 2>/dev/null || bash /usr/lib/pvelab/ceph-lab.sh start mgr" 2>/dev/null || true ;;
    mon-stop) in_node "[ -f /run/ceph/mon.$NAME.pid ] && kill -0 \$(cat /run/ceph/mon.$NAME.pid) 2>/dev/null || bash /usr/lib/pvelab/ceph-lab.sh start mon" 2>/dev/null || true ;;
    ceph-health)
      hceph osd set-full-ratio 0.95 >/dev/null 2>&1; hceph osd set-backfillfull-ratio 0.90 >/dev/null 2>&1
      hceph osd set-nearfull-ratio 0.85 >/dev/null 2>&1
      if hceph osd pool ls 2>/dev/null | grep -qx lab-noapp; then
        hceph osd pool rm lab-noapp lab-noapp --yes-i-really-really-mean-it >/dev/null 2>&1
      fi
      local code; for code in POOL_APP_NOT_ENABLED OSD_NEARFULL OSD_FULL; do ceph_lab_wait_check $code absent || true; done ;;
    ceph-slow-recovery)
      ceph_lab_stop_writer
      hceph config rm osd osd_recovery_sleep >/dev/null 2>&1
      hceph config rm osd osd_recovery_max_active >/dev/null 2>&1
      hceph config rm osd osd_max_backfills >/dev/null 2>&1 ;;
  esac
  return 0
}

ceph_lab_stop_writer() { # the slow-recovery writer this lab started (its pid file), if any
  local C="$DIR/cluster/ceph" pid
  [ -f "$C/slow-writer.pid" ] || return 0
  pid=$(cat "$C/slow-writer.pid"); rm -f "$C/slow-writer.pid"
  kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
}
