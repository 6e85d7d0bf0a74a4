#!/usr/bin/env bash
# Install what pvefleet's tests and the lab need on a Debian machine (idempotent; needs root).
# python3: the lab's ceph and pvesh stand-ins print JSON with it.
set -euo pipefail
pkgs=(openssh-server openssh-client sudo iptables iproute2 procps util-linux psmisc time bc tmux python3)
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
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
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
echo "setup.sh: test dependencies present (${pkgs[*]} corosync)"
