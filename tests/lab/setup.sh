#!/usr/bin/env bash
# Install what pvefleet's tests and the lab need on a Debian machine (idempotent; needs root).
# python3: the lab's ceph and pvesh stand-ins print JSON with it.
# python3-prometheus-client: its OpenMetrics parser checks `audit --format openmetrics` (tests).
# ceph-*: Debian 12's Ceph 16 (Pacific) daemons, which the lab's nodes with profile ceph=yes run.
set -euo pipefail
pkgs=(openssh-server openssh-client sudo iptables iproute2 procps util-linux psmisc time bc tmux python3 python3-prometheus-client
  ceph-mon ceph-mgr ceph-osd ceph-common)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" != 0 ]; then
    echo "setup.sh: need root to install: ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # No service may start on the host while installing (invoke-rc.d asks policy-rc.d: 101 = no).
  rc=/usr/sbin/policy-rc.d; made_rc=0
  if [ ! -e $rc ]; then printf '#!/bin/sh\nexit 101\n' > $rc; chmod 755 $rc; made_rc=1; fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" || { [ $made_rc = 0 ] || rm -f $rc; exit 1; }
  [ $made_rc = 0 ] || rm -f $rc
fi
# The Debian package may start a system sshd; the lab never uses it, and it must not hold the
# ports the lab nodes listen on.
# corosync: the lab runs Debian's real corosync inside each cluster node (sim/corosync-lab.sh),
# never on the host. Installed under a policy-rc.d that denies every start (invoke-rc.d and
# deb-systemd-invoke honour it), then its unit disabled and any host corosync stopped: the
# package's example /etc/corosync/corosync.conf would otherwise make it run on the host.
if ! dpkg-query -W -f='${Status}' corosync 2>/dev/null | grep -q "ok installed"; then
  [ "$(id -u)" = 0 ] || { echo "setup.sh: need root to install: corosync" >&2; exit 1; }
  export DEBIAN_FRONTEND=noninteractive
  own_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\n# pvefleet tests/lab/setup.sh: no service starts while corosync installs\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d; own_policy=1
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends corosync || { [ $own_policy = 0 ] || rm -f /usr/sbin/policy-rc.d; exit 1; }
  [ $own_policy = 0 ] || rm -f /usr/sbin/policy-rc.d
  if [ -d /run/systemd/system ]; then
    systemctl disable --now corosync.service >/dev/null 2>&1 || true
  else
    update-rc.d corosync disable >/dev/null 2>&1 || true
  fi
fi
# No Ceph daemon of the host's own should run (systemd is not PID 1 here and policy-rc.d keeps
# the packages from starting any): the lab's daemons run inside the nodes, in their own mount
# namespaces. One in the host's mount namespace is reported, never killed: it may be someone's.
host_mnt=$(readlink /proc/$$/ns/mnt)
for pid in $(for d in ceph-mon ceph-mgr ceph-osd ceph-crash; do pgrep -x "$d"; done || true); do
  if [ "$(readlink "/proc/$pid/ns/mnt" 2>/dev/null)" = "$host_mnt" ]; then
    echo "setup.sh: warning: a $(cat "/proc/$pid/comm" 2>/dev/null) runs in the host's mount namespace (pid $pid): not the lab's" >&2
  fi
done
echo "setup.sh: test dependencies present (${pkgs[*]} corosync)"
