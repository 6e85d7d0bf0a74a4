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
svc_state() { local s; if read -r s < "$SIM/services/$1" 2>/dev/null; then printf '%s\n' "$s"; else echo inactive; fi; }
