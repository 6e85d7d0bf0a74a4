#!/usr/bin/env bash
# Start or stop N plain OpenSSH sshd "nodes" on loopback addresses for benchmarks.
#
#   bench/fleet.sh up N DIR     start sshd on 127.91.<i/250>.<i%250+1>:22, write DIR/inventory.toml,
#                               DIR/known_hosts, DIR/id_ed25519, DIR/hosts (one address a line)
#   bench/fleet.sh down DIR     stop them
#
# The login user is `pvefleet-bench` with /bin/sh as its shell and no startup files, so what is
# measured is SSH, not a shell's start-up scripts. Needs root (sshd, useradd).
set -euo pipefail
cmd=${1:?usage: fleet.sh up N DIR | down DIR}
user=pvefleet-bench

addr_of() { local i=$(( $1 - 1 )); echo "127.91.$(( i / 250 )).$(( i % 250 + 1 ))"; }

case "$cmd" in
up)
  n=${2:?N}; dir=${3:?DIR}
  [ "$(id -u)" = 0 ] || { echo "fleet.sh: needs root" >&2; exit 1; }
  mkdir -p "$dir"; dir=$(cd "$dir" && pwd)
  id "$user" >/dev/null 2>&1 || useradd --system --create-home --home-dir "/var/lib/$user" --shell /bin/sh "$user"
  usermod -p '*' "$user"   # not locked ('!'): sshd without PAM refuses locked accounts
  home=$(getent passwd "$user" | cut -d: -f6)
  rm -f "$home"/.profile "$home"/.bashrc
  install -d -m 700 -o "$user" "$home/.ssh"
  [ -f "$dir/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -f "$dir/id_ed25519" -C bench
  install -m 600 -o "$user" "$dir/id_ed25519.pub" "$home/.ssh/authorized_keys"
  [ -f "$dir/host_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -f "$dir/host_ed25519" -C benchhost
  mkdir -p /run/sshd
  cat > "$dir/sshd_config" <<CFG
HostKey $dir/host_ed25519
PidFile none
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin no
AllowUsers $user
MaxStartups 1000
MaxSessions 10
LogLevel ERROR
UseDNS no
StrictModes no
PrintMotd no
PrintLastLog no
Subsystem sftp internal-sftp
CFG
  : > "$dir/hosts"; : > "$dir/known_hosts"; : > "$dir/pids"
  hostkey=$(cut -d' ' -f1,2 "$dir/host_ed25519.pub")
  {
    echo "[defaults]"
    echo "user = \"$user\""
    echo "identity_files = [\"id_ed25519\"]"
    echo "known_hosts = [\"known_hosts\"]"
    echo "ssh_config = false"
    echo "connect_timeout = \"20s\""
  } > "$dir/inventory.toml"
  for i in $(seq 1 "$n"); do
    a=$(addr_of "$i")
    /usr/sbin/sshd -D -f "$dir/sshd_config" -o "ListenAddress=$a:22" -E "$dir/sshd.log" &
    echo $! >> "$dir/pids"
    echo "$a" >> "$dir/hosts"
    echo "$a $hostkey" >> "$dir/known_hosts"
    printf '[nodes.node%d]\naddress = "%s"\n' "$i" "$a" >> "$dir/inventory.toml"
  done
  # Wait until every node accepts connections.
  for a in $(cat "$dir/hosts"); do
    for _ in $(seq 1 200); do
      (exec 3<>"/dev/tcp/$a/22") 2>/dev/null && break
      sleep 0.05
    done
  done
  echo "fleet.sh: $n sshd nodes up in $dir"
  ;;
down)
  dir=${2:?DIR}
  if [ -f "$dir/pids" ]; then
    xargs -r kill < "$dir/pids" 2>/dev/null || true
    rm -f "$dir/pids"
  fi
  ;;
*) echo "usage: fleet.sh up N DIR | down DIR" >&2; exit 2 ;;
esac
