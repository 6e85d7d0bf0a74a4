# The lab's real corosync (Debian's corosync 3.1.7: knet, votequorum), sourced by tests/lab/lab and
# tests/lab/node on the host side, and by the stand-ins (systemctl, lib.sh) inside a node.
#
# A cluster lab runs one real corosync in every node, inside the node's namespaces (so the node's
# reboot ends it and its boot starts it again), on knet over the node's 127.NET.x.y address (all
# nodes share the host's network namespace; each binds its own address, port 5405). corosync
# finds its own nodelist entry by the node's hostname (its UTS namespace). libqb's IPC would use
# abstract unix sockets, which are per network namespace and so shared by every node: each node
# has /etc/libqb/force-filesystem-sockets in its layer (libqb 2.0.6 lib/ipc_us.c
# use_filesystem_sockets() stats that file), so corosync's sockets are files in the node's own /run,
# and its shared-memory rings are in the node's own /dev/shm (a tmpfs of the node).
#
# Layout as pve-cluster writes it (PVE/Corosync.pm create_conf): /etc/pve/corosync.conf (the
# lab's shared DIR/pve), copied to /etc/corosync/corosync.conf by the node's boot (pmxcfs does
# that), the key in /etc/pve/priv/authkey and /etc/corosync/authkey, `secauth: on`. Lab
# additions, marked in the file: short totem timeouts (token 600 ms, no token_coefficient, so a
# lost node leaves the membership in about 1.5 s), a log file, and no realtime scheduling
# requests beyond corosync's own (move_to_root_cgroup: no: never touch the host's cgroups).
#
# /etc/pve/.members follows corosync (pmxcfs builds it from corosync's membership and quorum): a
# small loop of each node's PID 1 reads `corosync-quorumtool -m` (one block per change) and
# rewrites the node's own .members.
#
# A standalone lab (`lab up --standalone`) has no corosync.conf, no corosync unit and no corosync
# binaries: whiteouts in each node's layer hide the host's. `lab up --corosync sim` (for labs too
# large to run one corosync per node: each costs ~90 MB, and knet pings every other node) keeps the
# older model: no daemon, quorum computed from which nodes are up (pvecm-sim).

# Host paths of the corosync package that a standalone node must not see (usr-merged Debian 12).
COROSYNC_LAB_HIDE="/usr/sbin/corosync /usr/sbin/corosync-cfgtool /usr/sbin/corosync-cmapctl
/usr/sbin/corosync-cpgtool /usr/sbin/corosync-keygen /usr/sbin/corosync-quorumtool
/usr/bin/corosync-blackbox /usr/bin/corosync-xmlproc /usr/lib/systemd/system/corosync.service
/etc/systemd/system/multi-user.target.wants/corosync.service /etc/init.d/corosync
/etc/default/corosync /etc/corosync /var/lib/corosync /var/log/corosync"

# ---- host side: lab up ----

# corosync_lab_setup N STANDALONE QUORUM_SPEC: the cluster's corosync.conf and key (DIR/pve), and
# DIR/cluster/corosync (the lab's mode and options, read by nodes and stand-ins).
# QUORUM_SPEC: comma-separated votequorum(5) options two_node, wait_for_all, last_man_standing,
# auto_tie_breaker, expected_votes=N, last_man_standing_window=MS (KEY or KEY=VALUE).
corosync_lab_setup() {
  local n=$1 standalone=$2 spec=$3 i kv k v quorum_opts=""
  if [ "$standalone" = 1 ]; then
    echo "mode=standalone" > "$DIR/cluster/corosync"
    return 0
  fi
  if [ "$(corosync_lab_mode)" = sim ]; then
    # No corosync: a corosync.conf that says "cluster" (pvecm checks it), quorum from up markers.
    {
      echo "totem {"; echo "  cluster_name: $(cat "$DIR/cluster/name")"; echo "  config_version: $n"; echo "}"
      echo "nodelist {"
      local name id ip
      while read -r name id ip; do
        printf '  node {\n    name: %s\n    nodeid: %s\n    quorum_votes: 1\n    ring0_addr: %s\n  }\n' "$name" "$id" "$ip"
      done < "$DIR/cluster/nodes"
      echo "}"
    } > "$DIR/pve/corosync.conf"
    return 0
  fi
  command -v corosync >/dev/null || [ -x /usr/sbin/corosync ] || { echo "lab: corosync is not installed (tests/lab/setup.sh)" >&2; return 1; }
  IFS=, read -r -a kvs <<< "$spec"
  for kv in "${kvs[@]+"${kvs[@]}"}"; do
    [ -n "$kv" ] || continue
    k=${kv%%=*}; v=1; [[ $kv == *=* ]] && v=${kv#*=}
    case "$k" in
      two_node|wait_for_all|last_man_standing|auto_tie_breaker)
        [[ $v =~ ^[01]$ ]] || { echo "lab: --quorum $k=$v: expected 0 or 1" >&2; return 1; } ;;
      expected_votes|last_man_standing_window)
        [[ $v =~ ^[1-9][0-9]*$ ]] || { echo "lab: --quorum $k=$v: expected a number" >&2; return 1; } ;;
      *) echo "lab: --quorum: unknown votequorum option '$k' (two_node, wait_for_all, last_man_standing, auto_tie_breaker, expected_votes=N, last_man_standing_window=MS)" >&2; return 1 ;;
    esac
    quorum_opts="$quorum_opts  $k: $v"$'\n'
  done
  echo "mode=real" > "$DIR/cluster/corosync"
  mkdir -p "$DIR/pve/priv"
  head -c 256 /dev/urandom > "$DIR/pve/priv/authkey"; chmod 400 "$DIR/pve/priv/authkey"
  {
    echo "logging {"
    echo "  debug: off"
    echo "  to_syslog: yes"
    echo "  # lab: no syslog in a node; corosync's log is /var/log/corosync/corosync.log"
    echo "  to_logfile: yes"
    echo "  logfile: /var/log/corosync/corosync.log"
    echo "  timestamp: on"
    echo "}"
    echo
    echo "nodelist {"
    local name id ip votes
    while read -r name id ip; do
      votes=$(sed -n 's/^votes=//p' "$DIR/cluster/profiles/$name" 2>/dev/null); votes=${votes:-1}
      printf '  node {\n    name: %s\n    nodeid: %s\n    quorum_votes: %s\n    ring0_addr: %s\n  }\n' "$name" "$id" "$votes" "$ip"
    done < "$DIR/cluster/nodes"
    echo "}"
    echo
    echo "quorum {"
    echo "  provider: corosync_votequorum"
    printf '%s' "$quorum_opts"
    echo "}"
    echo
    echo "# lab: corosync must not move itself out of the host's cgroup"
    echo "system {"
    echo "  move_to_root_cgroup: no"
    echo "}"
    echo
    echo "totem {"
    echo "  cluster_name: $(cat "$DIR/cluster/name")"
    echo "  config_version: 1"
    echo "  interface {"
    echo "    linknumber: 0"
    echo "  }"
    echo "  ip_version: ipv4-6"
    echo "  link_mode: passive"
    echo "  secauth: on"
    echo "  # lab: short timeouts, so a lost node leaves the membership in about 1.5 s"
    echo "  token: 600"
    echo "  token_coefficient: 0"
    echo "  version: 2"
    echo "}"
  } > "$DIR/pve/corosync.conf"
}

corosync_lab_mode() { sed -n 's/^mode=//p' "$DIR/cluster/corosync" 2>/dev/null; }
corosync_lab_real() { [ "$(corosync_lab_mode)" = real ]; }

# corosync_lab_online_in NODE_DIR NAME: is NAME online in that node's .members (1/0)?
corosync_lab_online_in() {
  grep -q "\"$2\": { \"id\": [0-9]*, \"online\": 1" "$1/run/members" 2>/dev/null
}

# corosync_lab_wait_view NAME online|offline TIMEOUT: until every running node (but NAME itself
# for offline) sees NAME that way in its .members, i.e. corosync's membership changed.
corosync_lab_wait_view() {
  corosync_lab_real || return 0
  local name=$1 want=$2 end=$(( $(date +%s) + $3 )) nd ok
  while :; do
    ok=1
    for nd in "$DIR"/nodes/*; do
      [ -f "$nd/run/ready" ] || continue
      [ "${nd##*/}" = "$name" ] && [ "$want" = offline ] && continue
      if [ "$want" = online ]; then corosync_lab_online_in "$nd" "$name" || ok=0
      else ! corosync_lab_online_in "$nd" "$name" || ok=0; fi
    done
    [ $ok = 1 ] && return 0
    [ "$(date +%s)" -lt "$end" ] || return 1
    sleep 0.1
  done
}

# corosync_lab_wait_formed TIMEOUT: until every node's .members has every node online.
corosync_lab_wait_formed() {
  corosync_lab_real || return 0
  local end=$(( $(date +%s) + $1 )) nd name id ip ok
  while :; do
    ok=1
    for nd in "$DIR"/nodes/*; do
      while read -r name id ip; do corosync_lab_online_in "$nd" "$name" || { ok=0; break; }; done < "$DIR/cluster/nodes"
      [ $ok = 1 ] || break
    done
    [ $ok = 1 ] && return 0
    [ "$(date +%s)" -lt "$end" ] || return 1
    sleep 0.1
  done
}

# ---- host side: a node (provision, and its PID 1 at boot and shutdown) ----

# corosync_lab_provision UPPER SIM: the node's layer for its lab mode.
corosync_lab_provision() {
  local u=$1 sim=$2 p
  if [ "$(corosync_lab_mode)" = standalone ]; then
    # No corosync unit, no corosync.conf, no corosync binaries (whiteouts hide the host's).
    for p in $COROSYNC_LAB_HIDE; do
      [ -e "$p" ] || [ -L "$p" ] || continue
      mkdir -p "$u$(dirname "$p")"; rm -rf "${u:?}$p"; mknod "$u$p" c 0 0
    done
    rm -f "$sim/services/corosync"
    return 0
  fi
  if [ "$(corosync_lab_mode)" = sim ]; then
    # The stand-in at corosync-quorumtool's path; no corosync daemon to run.
    for p in $COROSYNC_LAB_HIDE; do
      [ -e "$p" ] || [ -L "$p" ] || continue
      case "$p" in /etc/corosync|/var/lib/corosync|/var/log/corosync) continue ;; esac
      mkdir -p "$u$(dirname "$p")"; rm -rf "${u:?}$p"; mknod "$u$p" c 0 0
    done
    rm -f "$u/usr/sbin/corosync-quorumtool"; ln -s /usr/lib/pvelab/pvecm-sim "$u/usr/sbin/corosync-quorumtool"
    return 0
  fi
  corosync_lab_real || return 0
  mkdir -p "$u/etc/libqb" "$u/etc/corosync" "$u/var/log/corosync" "$u/var/lib/corosync"
  : > "$u/etc/libqb/force-filesystem-sockets"
  # Until the first boot copies the cluster's, the host package's example config must not show.
  rm -f "$u/etc/corosync/corosync.conf"; mknod "$u/etc/corosync/corosync.conf" c 0 0
}

# The bounding set every daemon of a node runs with (as sshd: nothing may touch the host).
COROSYNC_LAB_SETPRIV="setpriv --bounding-set -sys_boot,-sys_time,-sys_module,-sys_admin,-net_admin,-sys_rawio,-sys_ptrace,-wake_alarm"

# corosync_lab_members OUT [QUORATE ID...]: write a .members (the lab's JSON layout) with
# the given node ids online; no ids: corosync is not running (nobody online, not quorate).
corosync_lab_members() {
  local out=$1 quorate=${2:-0} n id ip online list="" sep="" expected now
  shift 2 2>/dev/null || shift $#
  local ids=" $* "
  expected=$(wc -l < "$DIR/cluster/nodes")
  while read -r n id ip; do
    online=0; [[ $ids == *" $id "* ]] && online=1
    list="$list$sep\"$n\": { \"id\": $id, \"online\": $online, \"ip\": \"$ip\"}"
    sep=","$'\n'
  done < "$DIR/cluster/nodes"
  now=$(date +%s)
  local cv; cv=$(sed -n 's/^[[:space:]]*config_version:[[:space:]]*//p' "$DIR/pve/corosync.conf" 2>/dev/null | head -n 1)
  printf '{\n"nodename": "%s",\n"version": %s,\n"cluster": { "name": "%s", "version": %s, "nodes": %s, "quorate": %s },\n"nodelist": {\n%s\n}\n}\n' \
    "$NAME" "$now" "$(cat "$DIR/cluster/name")" "${cv:-1}" "$expected" "$quorate" "$list" > "$out"
}

# corosync_lab_pve_rw 0|1: pmxcfs makes /etc/pve read-only while the node is not quorate
# (pve-cluster src/pmxcfs: writes fail until quorum); here the node's bind mounts of the shared
# /etc/pve are remounted read-only (writes fail with EROFS, not pmxcfs's EACCES). .members is a
# mount of its own and stays writable for the loop.
corosync_lab_pve_rw() {
  local m opt=ro; [ "$1" = 1 ] && opt=rw
  for m in "$M/etc/pve" "$M/etc/pve/qemu-server" "$M/etc/pve/lxc"; do
    mount -o "remount,bind,$opt" "$m" 2>/dev/null || true
  done
}

# The members loop (in the node's PID 1, outside its chroot): one block of `corosync-quorumtool
# -m -H` per membership or quorum change, and `corosync-quorumtool -s -H` after 2 s without one
# (the monitor misses changes that come only from votequorum, e.g. `pvecm expected 1`); between
# runs of corosync, nobody is online. /etc/pve follows the quorum (corosync_lab_pve_rw).
corosync_lab_members_loop() {
  local out=$ND/run/members line quorate ids inrows rw=1 applied="" rc
  set +e   # a background loop of `node init` (set -e): a failing read or query must not end it
  view_line() { # one line of quorumtool's status output; a blank line ends a block
    case "$1" in
      "Quorate:"*Yes*) quorate=1 ;;
      "Quorate:"*) quorate=0 ;;
      *Nodeid*) inrows=1; ids="" ;;
      0x*) [ "$inrows" = 1 ] && ids="$ids $(( ${1%% *} ))" ;;
      "")
        [ "$inrows" = 1 ] || return 0
        inrows=0
        [ "$applied" = "$quorate:$ids" ] && return 0
        # shellcheck disable=SC2086
        corosync_lab_members "$out" "$quorate" $ids
        applied="$quorate:$ids"
        [ "$quorate" = "$rw" ] || { corosync_lab_pve_rw "$quorate"; rw=$quorate; }
        : > "$ND/run/corosync-view" ;;
    esac
  }
  while :; do
    quorate=0; ids=""; inrows=0
    while :; do
      rc=0; IFS= read -r -t 2 line || rc=$?
      if [ $rc = 0 ]; then view_line "$line"
      elif [ $rc -gt 128 ]; then
        # No change for 2 s: ask for the status once (a block of its own).
        local st; st=$(chroot "$M" /usr/sbin/corosync-quorumtool -s -H 2>/dev/null)
        if [ -n "$st" ] && [ "$inrows" = 0 ]; then
          while IFS= read -r line; do view_line "$line"; done <<< "$st"
          view_line ""
        fi
      else break; fi
    done < <(chroot "$M" stdbuf -oL /usr/sbin/corosync-quorumtool -m -H 2>/dev/null)
    corosync_lab_members "$out" 0; applied=""
    [ "$rw" = 0 ] || { corosync_lab_pve_rw 0; rw=0; }
    rm -f "$ND/run/corosync-view"
    sleep 0.3
  done
}

# corosync_lab_boot: in the node's PID 1 after the boot (sim/boot decided the units' states):
# pmxcfs's copy of the cluster's corosync.conf and key, corosync itself when its unit is active,
# and the members loop. Waits (at most 10 s) until corosync's membership holds every node that is
# up, so a node that is `ready` has joined the cluster.
corosync_lab_boot() {
  corosync_lab_real || return 0
  mount -t tmpfs -o mode=1777,size=64m shm "$M/dev/shm"
  if [ -f "$DIR/pve/corosync.conf" ]; then
    cp "$DIR/pve/corosync.conf" "$M/etc/corosync/corosync.conf"
    cp "$DIR/pve/priv/authkey" "$M/etc/corosync/authkey"; chmod 400 "$M/etc/corosync/authkey"
  fi
  corosync_lab_members "$ND/run/members" 0
  rm -f "$ND/run/corosync-view"
  if [ "$(cat "$SIM/services/corosync" 2>/dev/null)" = active ]; then
    if chroot "$M" /usr/lib/pvelab/corosync-ctl start >/dev/null 2>&1; then
      chroot "$M" /usr/lib/pvelab/corosync-ctl running || echo inactive > "$SIM/services/corosync"
    else
      echo failed > "$SIM/services/corosync"
    fi
  fi
  corosync_lab_members_loop </dev/null >/dev/null 2>&1 &
  [ "$(cat "$SIM/services/corosync" 2>/dev/null)" = active ] || return 0
  local end=$(( $(date +%s) + 10 )) nd ok
  while [ "$(date +%s)" -lt "$end" ]; do
    ok=1
    [ -f "$ND/run/corosync-view" ] || ok=0
    for nd in "$DIR"/nodes/*; do
      [ $ok = 1 ] || break
      [ "$nd" = "$ND" ] || [ -f "$nd/run/ready" ] || continue
      corosync_lab_online_in "$ND" "${nd##*/}" || ok=0
    done
    [ $ok = 1 ] && return 0
    sleep 0.1
  done
  return 0
}

# corosync_lab_shutdown: the node's PID 1 was told to end (reboot, poweroff): corosync leaves the
# cluster as systemd's ExecStop does (`corosync-cfgtool -H --force`), so the others see it go at
# once instead of after the token timeout.
corosync_lab_shutdown() {
  corosync_lab_real || return 0
  timeout 3 chroot "$M" /usr/lib/pvelab/corosync-ctl stop >/dev/null 2>&1 || true
}
