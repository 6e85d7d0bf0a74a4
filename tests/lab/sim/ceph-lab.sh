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
