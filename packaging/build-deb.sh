#!/usr/bin/env bash
# Build the Debian package: target/debian/pvefleet_<version>-1_<arch>.deb (the path is printed
# last). Extra arguments go to `cargo deb` (e.g. `--deb-revision 2`, `-o DIR`).
#
# What goes in it is [package.metadata.deb] in Cargo.toml; this script first builds the release
# binary and generates, from the clap definitions, what cargo-deb packs besides it:
#   target/pvefleet-deb/man/*.1            examples/manpage.rs (clap_mangen, dev profile):
#                                          pvefleet(1) and one page per subcommand
#   target/pvefleet-deb/completions/*      the built binary's `completions bash|zsh|fish`
#
# Reproducible: cargo-deb is pinned (installed when missing or another version), Cargo.lock is
# enforced (--locked), file dates in the package are the last commit's (SOURCE_DATE_EPOCH), the
# generated pages carry no date, and the build directory and cargo home are remapped in the
# binary (--remap-path-prefix), so the same commit and toolchain give the same .deb anywhere.
set -euo pipefail

CARGO_DEB_VERSION=3.8.0

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

if [ "$(cargo deb --version 2>/dev/null)" != "cargo-deb $CARGO_DEB_VERSION" ]; then
  echo "build-deb: installing cargo-deb $CARGO_DEB_VERSION" >&2
  # CARGO_DEB_INSTALL_ARGS: e.g. --debug in CI, where building the tool fast matters more.
  # shellcheck disable=SC2086
  cargo install cargo-deb --version "=$CARGO_DEB_VERSION" --locked ${CARGO_DEB_INSTALL_ARGS:-}
fi

# cargo-deb computes Depends ($auto) with dpkg-shlibdeps; without it the package would depend on
# nothing.
command -v dpkg-shlibdeps >/dev/null || {
  echo "build-deb: dpkg-shlibdeps is missing: apt-get install dpkg-dev" >&2
  exit 1
}

if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
  SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || true)
  [ -n "$SOURCE_DATE_EPOCH" ] || {
    echo "build-deb: not a git checkout; set SOURCE_DATE_EPOCH for reproducible file dates" >&2
    SOURCE_DATE_EPOCH=$(date +%s)
  }
fi
export SOURCE_DATE_EPOCH

# The packaged binary: release profile, with the build paths remapped (only here, so that the
# dev-profile builds below and the test suite's keep sharing their artifacts).
cargo_home=${CARGO_HOME:-$HOME/.cargo}
RUSTFLAGS="${RUSTFLAGS:-} --remap-path-prefix=$root=/build/pvefleet --remap-path-prefix=$cargo_home=/cargo" \
  cargo build --release --locked --bin pvefleet

target_dir=$(cargo metadata --format-version 1 --no-deps --locked |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
bin="$target_dir/release/pvefleet"

# Cargo.toml's assets name this directory relative to the crate, whatever the target dir is.
gen="$root/target/pvefleet-deb"
rm -rf "$gen"
mkdir -p "$gen/man" "$gen/completions"
# The example links the dev-dependencies too, so it is built in the dev profile (where
# `cargo test` has built them already); the pages do not depend on the profile.
cargo run --quiet --locked --example manpage -- "$gen/man" >/dev/null
"$bin" completions bash >"$gen/completions/pvefleet.bash"
"$bin" completions zsh >"$gen/completions/_pvefleet"
"$bin" completions fish >"$gen/completions/pvefleet.fish"

cargo deb --no-build --locked "$@"
