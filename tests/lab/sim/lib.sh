# Shared by the lab's stand-in commands (sourced; POSIX sh + bash features used by bash scripts).
# Node state lives in /var/lib/pvelab (the lab's per-node sim directory, bind-mounted), cluster
# state in /var/lib/pvelab-cluster (shared by all nodes of the lab).
SIM=/var/lib/pvelab
CL=/var/lib/pvelab-cluster
# The profile, read once with shell builtins (no process per lookup: the audit runs many stand-ins).
declare -A PROFILE 2>/dev/null
while IFS='=' read -r _k _v; do PROFILE[$_k]=$_v; done < "$SIM/profile"
prof() { printf '%s\n' "${PROFILE[$1]}"; }
NODE=${PROFILE[name]}
KERNEL=${PROFILE[kernel]}
nic_name() { case "$(prof nic)" in virtio) echo ens18 ;; igb) echo enp1s0 ;; *) echo eno1 ;; esac; }
# The physical ports of vmbr0: the profile's NIC, and with ports=2 an Intel I210 (igb) enp2s0.
nic_names() { nic_name; [ "${PROFILE[ports]:-1}" = 2 ] && echo enp2s0; return 0; }
boot_id() { local b; read -r b < "$SIM/boot_id"; printf '%s\n' "$b"; }
# journal_add PRIORITY UNIT IDENTIFIER MESSAGE  (priority 0 emerg .. 7 debug)
journal_add() {
  printf '%s|%s|%s|%s|%s|%s|%s\n' "$(date +%s.%6N)" "$(boot_id)" "$1" "$2" "$3" "${JPID:-$$}" "$4" >> "$SIM/journal"
}
# Kernel version as a comparable number: 6.8.12-5-pve -> 608
kver_num() { echo "$KERNEL" | awk -F'[.-]' '{print $1 * 100 + $2}'; }
svc_state() {
  local s
  if ! read -r s < "$SIM/services/$1" 2>/dev/null; then echo inactive; return; fi
  # The real corosync (corosync-lab.sh): active while its process runs; gone without being
  # stopped, the unit failed (as systemd marks a Type=notify service whose process died).
  if [ "$1" = corosync ] && [ "$COROSYNC_MODE" = real ]; then
    if corosync_running; then s=active; elif [ "$s" = active ]; then s=failed; fi
  fi
  printf '%s\n' "$s"
}
# The lab's corosync: "real" (every cluster node runs corosync), "standalone" (no cluster), or
# empty (an older lab directory: the up markers stand in for the membership).
COROSYNC_MODE=
[ -f "$CL/corosync" ] && { read -r COROSYNC_MODE < "$CL/corosync"; COROSYNC_MODE=${COROSYNC_MODE#mode=}; }
corosync_running() { # builtins only: the audit asks often
  local p c
  { read -r p < /run/corosync.pid; } 2>/dev/null || return 1
  { read -r c < "/proc/$p/comm"; } 2>/dev/null || return 1
  [ "$c" = corosync ]
}
# The running kernel: chosen at boot (sim/boot writes it), else the profile's.
[ -s "$SIM/running_kernel" ] && read -r KERNEL < "$SIM/running_kernel"

# ---- Guests, cluster-wide as with pmxcfs ----
# A guest's owner is the node whose directory holds its config: /etc/pve/nodes/NODE/qemu-server/ID.conf
# (VMs) or /etc/pve/nodes/NODE/lxc/ID.conf (containers). Its run state is shared:
# $CL/guests/ID (running|stopped). HA resources: $CL/ha-resources, one `vm:ID` / `ct:ID` a line.
PVE=/etc/pve
guest_conf() { # ID -> the config's path on any node (exit 1 when there is none)
  local f
  for f in "$PVE"/nodes/*/qemu-server/"$1".conf "$PVE"/nodes/*/lxc/"$1".conf; do
    [ -f "$f" ] && { printf '%s\n' "$f"; return 0; }
  done
  return 1
}
conf_node() { local p=${1#"$PVE"/nodes/}; printf '%s\n' "${p%%/*}"; }
conf_kind() { case "$1" in */lxc/*) echo lxc ;; *) echo qemu ;; esac; }
conf_get() { # FILE KEY -> value (the current config, before any [snapshot] section)
  awk -v k="$2" '/^\[/ {exit} { i = index($0, ":"); if (i && substr($0, 1, i - 1) == k) { v = substr($0, i + 1); sub(/^ +/, "", v); print v; exit } }' "$1"
}
guest_state() { local s=stopped; [ -f "$CL/guests/$1" ] && read -r s < "$CL/guests/$1"; printf '%s\n' "$s"; }
# A start or stop ends the VM's QEMU process: the next one runs the installed QEMU (ID.qemu holds
# the release an older process still runs, lab fault qemu-upgrade).
guest_set_state() { mkdir -p "$CL/guests"; printf '%s\n' "$2" > "$CL/guests/$1"; rm -f "$CL/guests/$1.qemu"; }
# pve-qemu-kvm replaced on disk (OLD_VERSION was installed): the node's running VMs keep the QEMU
# process they started with, so they go on running OLD_VERSION's release (qm status --verbose's
# running-qemu) until stopped, started or migrated.
qemu_keep_running() {
  local c id
  for c in "$PVE/nodes/$NODE/qemu-server/"*.conf; do
    [ -f "$c" ] || continue
    id=${c##*/}; id=${id%.conf}
    [ "$(guest_state "$id")" = running ] || continue
    [ -f "$CL/guests/$id.qemu" ] || printf '%s\n' "${1%-*}" > "$CL/guests/$id.qemu"
  done
}
ha_sid() { if [ "$2" = lxc ]; then echo "ct:$1"; else echo "vm:$1"; fi; }
ha_managed() { [ -f "$CL/ha-resources" ] && grep -qx "$1" "$CL/ha-resources"; }
# Online and quorate as this node's pmxcfs sees them: /etc/pve/.members, which follows the real
# corosync's membership and quorum (corosync-lab.sh).
node_online() {
  if [ "$COROSYNC_MODE" = real ]; then
    grep -q "\"$1\": { \"id\": [0-9]*, \"online\": 1" /etc/pve/.members 2>/dev/null
  else [ -f "$CL/up/$1" ]; fi
}
cluster_quorate() {
  if [ "$COROSYNC_MODE" = real ]; then grep -q '"quorate": 1 }' /etc/pve/.members 2>/dev/null; return; fi
  local expected total
  expected=$(wc -l < "$CL/nodes"); total=$(find "$CL/up" -type f | wc -l)
  [ "$total" -ge $((expected / 2 + 1)) ]
}
node_known() { awk -v n="$1" '$1 == n {f = 1} END {exit !f}' "$CL/nodes"; }
node_ip() { awk -v n="$1" '$1 == n {print $3}' "$CL/nodes"; }
in_maintenance() { [ -f "$CL/maintenance-$1" ]; }
# Local devices that block a migration (qemu-server PVE/QemuServer.pm check_local_resources:
# hostpciN, usbN with a host device, not `spice`).
local_devices() {
  awk '/^\[/ {exit} /^hostpci[0-9]+:/ {sub(":.*", ""); print; next}
       /^usb[0-9]+:/ { if ($0 !~ /spice/) {sub(":.*", ""); print} }' "$1" | paste -sd, - | sed 's/,/, /g'
}
# Local disks: volumes on the node-local storages `local` and `local-lvm` (ceph-pool is shared).
local_disks() {
  awk '/^\[/ {exit} /^(scsi|virtio|sata|ide|efidisk|tpmstate|rootfs|mp)[0-9]*:/ {
         v = $0; sub(/^[^:]*: */, "", v); sub(/,.*/, "", v);
         if (v ~ /^(local|local-lvm):/) print v }' "$1"
}
# A migration's task log line (pve-guest-common PVE/AbstractMigrate.pm `log`: "%F %H:%M:%S" and
# "ERROR: " before error lines).
mlog() { printf '%s %s\n' "$(date '+%F %H:%M:%S')" "$*"; }
# Tasks (pve-common PVE/RESTEnvironment.pm fork_worker, PVE/UPID.pm, PVE/INotify.pm active
# workers): a worker is named by its UPID "UPID:NODE:PID:PSTART:STARTTIME:TYPE:ID:USER:" (PID,
# PSTART and STARTTIME as %08X; PSTART is field 22 of /proc/PID/stat) and listed in
# /var/log/pve/tasks/active, one line each: "UPID 0" while it runs, "UPID 0 ENDTIME(%08X) STATUS"
# once it ended (STATUS "OK" or the error, as upid_read_status gives it). Here the worker is the
# calling process itself.
TASKS_ACTIVE=/var/log/pve/tasks/active
proc_starttime() { # PID: its start time (field 22 of /proc/PID/stat), nothing when it is gone
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
  stat=${stat##*) }  # past the command name, which may hold spaces and parentheses
  awk '{ print $20 }' <<<"$stat"
}
# The cluster's task list (pve-cluster PVE/Cluster.pm broadcast_tasklist / get_tasklist): each
# node's active list shared through pmxcfs's kvstore, which pve-common's RESTEnvironment
# fork_worker and log_task_result broadcast at once at a worker's start and end (pvestatd also
# every 10 s, not simulated). Here: a copy of the node's active file in the cluster directory,
# read by `pvesh get /cluster/tasks`.
tasks_broadcast() { # (called holding the active file's lock)
  mkdir -p "$CL/tasklist"
  cp "$TASKS_ACTIVE" "$CL/tasklist/.$NODE.$$" && mv -f "$CL/tasklist/.$NODE.$$" "$CL/tasklist/$NODE"
}
task_begin() { # TYPE ID: sets TASK_UPID
  TASK_UPID=$(printf 'UPID:%s:%08X:%08X:%08X:%s:%s:root@pam:' "$NODE" $$ "$(proc_starttime $$)" "$(date +%s)" "$1" "$2")
  mkdir -p "${TASKS_ACTIVE%/*}"
  ( flock 9; echo "$TASK_UPID 0" >> "$TASKS_ACTIVE"; tasks_broadcast ) 9>"$TASKS_ACTIVE.lock"
}
task_end() { # STATUS
  [ -n "${TASK_UPID:-}" ] || return 0
  local line; line=$(printf '%s 0 %08X %s' "$TASK_UPID" "$(date +%s)" "$1")
  ( flock 9; sed -i "s|^$TASK_UPID 0\$|$line|" "$TASKS_ACTIVE"; tasks_broadcast ) 9>"$TASKS_ACTIVE.lock"
  TASK_UPID=""
}
mduration() { local d=$(( $(date +%s) - $1 )); printf '%02d:%02d:%02d' $((d / 3600)) $((d % 3600 / 60)) $((d % 60)); }
# Move a guest's config to another node (pmxcfs: a rename between the nodes' directories).
guest_move() { # ID TARGET
  local f; f=$(guest_conf "$1") || return 1
  local sub=qemu-server; [ "$(conf_kind "$f")" = lxc ] && sub=lxc
  mkdir -p "$PVE/nodes/$2/$sub"
  mv "$f" "$PVE/nodes/$2/$sub/$1.conf"
  # A (live) migration starts a new QEMU process on the target (qemu-server QemuMigrate.pm).
  rm -f "$CL/guests/$1.qemu"
}
# HA moves a service by itself a moment after it is asked (pve-ha-manager: the CRM schedules the
# migration on its next round, about every 10 s on a real cluster; the lab takes ~1.5 s). A VM with
# local devices cannot migrate: the HA migration fails and the service stays where it is.
# ha_move_later SID TARGET [FORGET_ORIGIN] [start]
ha_move_later() {
  setsid bash -c '
    . /usr/lib/pvelab/lib.sh
    sleep 1.5
    id=${1#*:}; f=$(guest_conf "$id") || exit 0
    [ "$(conf_node "$f")" = "$2" ] && exit 0
    if [ "$(conf_kind "$f")" = qemu ] && [ -n "$(local_devices "$f")" ]; then exit 0; fi
    from=$(conf_node "$f")
    ( flock 9; guest_move "$id" "$2" ) 9>"$CL/.guests.lock"
    lab_event ha-moved "$1" "$from" "$2"
    [ -n "${3:-}" ] && rm -f "$CL/ha-origin-$1"
    if [ "${4:-}" = start ] && [ "$(guest_state "$id")" != running ]; then
      guest_set_state "$id" running; lab_event guest-started "$id" ha
    fi
    exit 0' ha-move "$1" "$2" "${3:-}" "${4:-}" </dev/null >/dev/null 2>&1 &
}
# Node maintenance as the CRM handles it (pve-ha-manager src/PVE/HA/Manager.pm
# next_state_started): on each round it selects a started service's node from the nodes' states
# at that moment, not from the request that woke it. A service on a node in maintenance moves
# to another node and remembers its own as `maintenance_node`; one whose `maintenance_node` is
# online and out of maintenance again moves back (and is started) and forgets it; one that is
# already there just forgets it. So maintenance enabled and disabled again before the round
# moves nothing, and a node put back into maintenance before the round gets nothing back.
# ha_settle_later SID: that round for SID, ~1.5 s later (as ha_move_later), decided and done
# under the guests' lock so that two rounds for one service never interleave.
ha_settle_later() {
  setsid bash -c '
    . /usr/lib/pvelab/lib.sh
    sleep 1.5
    sid=$1; id=${sid#*:}
    exec 9>"$CL/.guests.lock"; flock 9
    ha_managed "$sid" || exit 0
    f=$(guest_conf "$id") || exit 0
    from=$(conf_node "$f") origin=""
    [ -f "$CL/ha-origin-$sid" ] && origin=$(cat "$CL/ha-origin-$sid")
    if in_maintenance "$from"; then
      if [ "$(conf_kind "$f")" = qemu ] && [ -n "$(local_devices "$f")" ]; then exit 0; fi
      to=$(ha_pick_target "$from") || exit 0
      [ -n "$origin" ] || echo "$from" > "$CL/ha-origin-$sid"
      guest_move "$id" "$to"
      lab_event ha-moved "$sid" "$from" "$to"
    elif [ -n "$origin" ] && [ "$origin" != "$from" ]; then
      node_online "$origin" && ! in_maintenance "$origin" || exit 0
      guest_move "$id" "$origin"
      lab_event ha-moved "$sid" "$from" "$origin"
      rm -f "$CL/ha-origin-$sid"
      if [ "$(guest_state "$id")" != running ]; then
        guest_set_state "$id" running; lab_event guest-started "$id" ha
      fi
    elif [ -n "$origin" ]; then
      rm -f "$CL/ha-origin-$sid"
    fi
    exit 0' ha-settle "$1" </dev/null >/dev/null 2>&1 &
}
# Where HA puts a service leaving NODE: an online node not in maintenance, the one with the fewest
# HA services (the CRM's basic scheduler), never NODE itself.
ha_pick_target() {
  local n id ip best="" bestc=999999 c f
  while read -r n id ip; do
    [ "$n" = "$1" ] && continue
    node_online "$n" || continue
    in_maintenance "$n" && continue
    c=0
    for f in "$PVE"/nodes/"$n"/qemu-server/*.conf "$PVE"/nodes/"$n"/lxc/*.conf; do [ -f "$f" ] && c=$((c + 1)); done
    [ "$c" -lt "$bestc" ] && { best=$n; bestc=$c; }
  done < "$CL/nodes"
  [ -n "$best" ] && printf '%s\n' "$best"
}
# The lab's record of what happened to guests and Ceph flags (for tests; not a Proxmox file):
# $CL/events, one line each "EPOCH.MICROS NODE EVENT ARGS...", e.g. `guest-stopped 101 qm-shutdown`,
# `guest-started 101 qm-start`, `migrated 101 pve1 pve2 qm`, `ha-moved vm:100 pve1 pve2`,
# `ceph osd set-group noout pve2`.
lab_event() { printf '%s %s %s\n' "$(date +%s.%6N)" "$NODE" "$*" >> "$CL/events"; }
# The dpkg frontend lock is a POSIX (fcntl) lock, as apt and dpkg take it (apt-pkg/contrib/
# fileutl.cc GetLock: F_SETLK): the holder's pid from /proc/locks (flock(1) does not see it).
DPKG_FRONTEND=/var/lib/dpkg/lock-frontend
dpkg_lock_holder() {
  local ino; ino=$(stat -c %i "$DPKG_FRONTEND" 2>/dev/null) || return 0
  awk -v ino=":$ino" '$2 == "POSIX" && substr($6, length($6) - length(ino) + 1) == ino { print $5; exit }' /proc/locks
}

# dpkg's configure step for one package of the lab (apt-get dist-upgrade, dpkg --configure -a):
# "Setting up NAME (VER) ...", the package installed at VER, its pending upgrade and its entry in
# the unpacked/half-configured list (/var/lib/pvelab/pkgs/half, "NAME STATE VERSION") gone; a
# kernel package adds the kernel (/boot/vmlinuz-K, `proxmox-boot-tool kernel list`) with its
# postinst hooks' output (/etc/kernel/postinst.d).
pkg_setup() {
  local name=$1 new=$2 P=$SIM/pkgs
  echo "Setting up $name ($new) ..."
  sed -i "/^$name /d" "$P/installed"; echo "$name $new" >> "$P/installed"
  sed -i "/^$name /d" "$P/pending"
  sed -i "/^$name /d" "$P/half" 2>/dev/null || true
  if [[ $name =~ ^proxmox-kernel-(.*-pve)-signed$ ]]; then
    local k=${BASH_REMATCH[1]}
    grep -qx "$k" "$SIM/kernels" || echo "$k" >> "$SIM/kernels"
    : > "/boot/vmlinuz-$k"; : > "/boot/initrd.img-$k"
    echo "Examining /etc/kernel/postinst.d."
    echo "run-parts: executing /etc/kernel/postinst.d/initramfs-tools $k /boot/vmlinuz-$k"
    echo "update-initramfs: Generating /boot/initrd.img-$k"
    echo "run-parts: executing /etc/kernel/postinst.d/proxmox-auto-removal $k /boot/vmlinuz-$k"
    echo "run-parts: executing /etc/kernel/postinst.d/zz-proxmox-boot $k /boot/vmlinuz-$k"
    echo "Re-executing '/etc/kernel/postinst.d/zz-proxmox-boot' in new private mount namespace.."
    echo "No /etc/kernel/proxmox-boot-uuids found, skipping ESP sync."
    echo "run-parts: executing /etc/kernel/postinst.d/zz-update-grub $k /boot/vmlinuz-$k"
    echo "Generating grub configuration file ..."
    echo "done"
  fi
}
