#!/usr/bin/env bash
# Check a built pvefleet .deb: usage `packaging/check-deb.sh [--system] PACKAGE.deb`.
#
#   1. `dpkg-deb --contents` lists the binary, the man pages, the bash/zsh/fish completions and
#      every playbook of playbooks/ with its README, the systemd units of packaging/systemd/ in
#      /lib/systemd/system (and no maintainer script enabling them); the binary holds no build
#      path.
#   2. Installed with `dpkg --root` into an empty temporary root (the maintainer scripts run
#      chrootless with DPKG_ROOT; root needed for dpkg's chown): the postinst's directories exist
#      there (mode 0750; one made before keeps its mode), a purge removes
#      the state and the empty ones, the binary's --version is the package's,
#      `completions bash` is valid bash, pvefleet(1) renders with `man -l` (when man is
#      installed), and a playbook given by name is found in the root's shipped directory.
#   3. With --system (CI, as root, on a throwaway machine): `dpkg -i` on this machine, then from an
#      empty directory `/usr/bin/pvefleet run --check fix-rrd` finds the shipped playbook in
#      /usr/share/pvefleet/playbooks, and `man -w pvefleet` finds the page; the package is purged
#      again on exit. The test suite never depends on this: run it after the tests.
set -euo pipefail

system=false
if [ "${1:-}" = --system ]; then
  system=true
  shift
fi
deb=${1:?usage: check-deb.sh [--system] PACKAGE.deb}
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
cleanup() {
  if $system && dpkg-query -W -f='${Status}' pvefleet 2>/dev/null | grep -q 'ok installed'; then
    dpkg --purge pvefleet >/dev/null
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

fail() {
  echo "check-deb: FAIL: $*" >&2
  exit 1
}
say() { echo "check-deb: $*"; }

# 1. Contents.
contents=$(dpkg-deb --contents "$deb" | awk '{ print $NF }')
expect=(
  ./usr/bin/pvefleet
  ./usr/share/man/man1/pvefleet.1.gz
  ./usr/share/man/man1/pvefleet-run.1.gz
  ./usr/share/man/man1/pvefleet-plan.1.gz
  ./usr/share/bash-completion/completions/pvefleet
  ./usr/share/zsh/vendor-completions/_pvefleet
  ./usr/share/fish/vendor_completions.d/pvefleet.fish
  ./usr/share/pvefleet/playbooks/README.md
)
for u in "$root"/packaging/systemd/pvefleet-*; do
  expect+=("./lib/systemd/system/$(basename "$u")")
done
for p in "$root"/playbooks/*.toml; do
  expect+=("./usr/share/pvefleet/playbooks/$(basename "$p")")
done
for p in "${expect[@]}"; do
  grep -qxF "$p" <<<"$contents" || fail "$deb does not contain $p"
done
for script in postinst prerm postrm; do
  text=$(dpkg-deb --info "$deb" "$script" 2>/dev/null || true)
  if grep -q 'systemctl' <<<"$text"; then
    fail "$deb's $script calls systemctl: the units are shipped, not enabled"
  fi
done
say "contents: ${#expect[@]} expected paths present ($(grep -c . <<<"$contents") entries)"

# 2. A clean root.
r="$tmp/root"
mkdir -p "$r/var/lib/dpkg/info" "$r/var/lib/dpkg/updates"
touch "$r/var/lib/dpkg/status"
# The directories the postinst creates for the documented recipes (README "From the Debian
# package"). One the operator made before is theirs: its mode stays.
dirs=(/etc/pvefleet /etc/pvefleet/inventory /etc/pvefleet/playbooks /var/lib/pvefleet)
install -d -m 0700 "$r/var/lib/pvefleet"
# The empty root has no libc6 to satisfy Depends; nothing else is forced.
# The root has no shell to chroot into: the maintainer scripts run outside it with DPKG_ROOT set
# (--force-script-chrootless, dpkg(1)), which they honour.
dpkg --root="$r" --force-depends --force-script-chrootless -i "$deb" >"$tmp/dpkg.log" 2>&1 ||
  fail "dpkg --root: $(cat "$tmp/dpkg.log")"
dpkg-query --admindir="$r/var/lib/dpkg" -W -f='${Status}' pvefleet | grep -q 'ok installed' ||
  fail "not installed in $r"
bin="$r/usr/bin/pvefleet"
# The postinst made the directories, root only, in the root (not on this machine's own /etc and
# /var/lib); the operator's /var/lib/pvefleet kept its mode.
for d in "${dirs[@]}"; do
  [ -d "$r$d" ] || fail "postinst did not create $d in $r"
  want=750
  [ "$d" != /var/lib/pvefleet ] || want=700
  [ "$(stat -c %a "$r$d")" = "$want" ] || fail "$d in $r has mode $(stat -c %a "$r$d"), expected $want"
done
if grep -qaF "$root" "$bin"; then
  fail "the packaged binary holds the build path $root (not reproducible)"
fi
version=$(dpkg-deb --field "$deb" Version)
got=$("$bin" --version)
[ "$got" = "pvefleet ${version%-*}" ] || fail "--version says '$got', the package is $version"
"$bin" completions bash >"$tmp/pvefleet.bash"
bash -n "$tmp/pvefleet.bash" || fail "completions bash is not valid bash"
cmp -s "$tmp/pvefleet.bash" "$r/usr/share/bash-completion/completions/pvefleet" ||
  fail "the packaged bash completions differ from the binary's"
if command -v man >/dev/null; then
  MANWIDTH=80 man -l "$r/usr/share/man/man1/pvefleet.1.gz" >"$tmp/man.txt" 2>"$tmp/man.err" ||
    fail "man -l pvefleet.1.gz: $(cat "$tmp/man.err")"
  for section in NAME SYNOPSIS OPTIONS SUBCOMMANDS FILES ENVIRONMENT; do
    grep -q "^$section" "$tmp/man.txt" || fail "pvefleet(1) has no $section section"
  done
  say "man -l pvefleet.1.gz: $(wc -l <"$tmp/man.txt") lines"
else
  say "man not installed: pvefleet(1) not rendered"
fi
# A playbook by name, from the root's shipped directory (an empty current directory; the
# inventory is invalid, so the command stops there, after the playbook was found and parsed).
mkdir "$tmp/work"
printf '[nodes\n' >"$tmp/work/bad.toml"
out=$(cd "$tmp/work" && PVEFLEET_SHIPPED_PLAYBOOKS="$r/usr/share/pvefleet/playbooks" \
  "$bin" -i bad.toml run --check fix-rrd 2>&1) && fail "run --check with a bad inventory succeeded"
grep -q '^pvefleet: bad.toml:1:' <<<"$out" || fail "fix-rrd not found in $r: $out"
# A purge removes the state and the empty directories of /etc/pvefleet; an inventory stays.
echo '[nodes]' >"$r/etc/pvefleet/inventory/cluster.toml"
echo '{}' >"$r/var/lib/pvefleet/last.json"
dpkg --root="$r" --force-script-chrootless --purge pvefleet >"$tmp/dpkg.log" 2>&1 ||
  fail "dpkg --root --purge: $(cat "$tmp/dpkg.log")"
[ ! -e "$r/var/lib/pvefleet" ] || fail "purge left /var/lib/pvefleet in $r"
[ ! -e "$r/etc/pvefleet/playbooks" ] || fail "purge left the empty /etc/pvefleet/playbooks in $r"
[ -f "$r/etc/pvefleet/inventory/cluster.toml" ] || fail "purge removed the operator's inventory in $r"
say "clean root $r: --version, completions, playbook by name, directories, purge ok"

# 3. This machine.
$system || exit 0
[ "$(id -u)" = 0 ] || fail "--system needs root"
dpkg -i "$deb" >/dev/null
for d in "${dirs[@]}"; do
  [ -d "$d" ] || fail "dpkg -i: $d missing"
done
if command -v man >/dev/null; then
  where=$(man -w pvefleet 2>&1 || true)
  [ "$where" = /usr/share/man/man1/pvefleet.1.gz ] || fail "man -w pvefleet: $where"
fi
# One node that refuses connections: the run gets as far as connecting, so the playbook was
# found (in /usr/share: the directory is empty and PVEFLEET_SHIPPED_PLAYBOOKS unset), parsed
# and planned for it; exit 3 is "unreachable".
cat >"$tmp/work/inventory.toml" <<'EOF'
[defaults]
connect_timeout = "5s"
ssh_config = false
[nodes.refused]
address = "127.0.0.1"
port = 9
EOF
set +e
out=$(cd "$tmp/work" && env -u PVEFLEET_SHIPPED_PLAYBOOKS /usr/bin/pvefleet \
  -i inventory.toml --json run --check fix-rrd 2>&1)
code=$?
set -e
[ "$code" = 3 ] || fail "run --check fix-rrd: exit $code, expected 3 (unreachable): $out"
grep -q '"unreachable"' <<<"$out" || fail "run --check fix-rrd: no unreachable node: $out"
out=$(cd "$tmp/work" && env -u PVEFLEET_SHIPPED_PLAYBOOKS /usr/bin/pvefleet run --check no-such 2>&1) &&
  fail "run --check no-such succeeded"
grep -qF "shipped playbooks (in /usr/share/pvefleet/playbooks): " <<<"$out" ||
  fail "run --check no-such: $out"
grep -q 'fix-rrd' <<<"$out" || fail "run --check no-such does not name fix-rrd: $out"
say "dpkg -i: run --check fix-rrd found /usr/share/pvefleet/playbooks/fix-rrd.toml; man -w ok"
