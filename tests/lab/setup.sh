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
echo "setup.sh: test dependencies present (${pkgs[*]})"
