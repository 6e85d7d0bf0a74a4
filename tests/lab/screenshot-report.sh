#!/usr/bin/env bash
# Render an HTML audit report in headless Chromium and save a PNG screenshot of it, to check by
# eye that the page is readable (and, with --print, that it prints). Installs Debian's chromium
# when missing.
#
#   tests/lab/screenshot-report.sh REPORT.html OUT.png [--print OUT.pdf]
set -euo pipefail
html=${1:?REPORT.html}; png=${2:?OUT.png}
if ! command -v chromium >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
flags=(--headless --no-sandbox --disable-gpu --disable-quic --no-first-run
       --disable-background-networking --disable-component-update --disable-sync
       --user-data-dir="$profile" --hide-scrollbars)
chromium "${flags[@]}" --window-size=1400,1000 --screenshot="$png" "file://$(realpath "$html")" 2>/dev/null
[ -s "$png" ] || { echo "screenshot-report: no screenshot written" >&2; exit 1; }
if [ "${3:-}" = "--print" ]; then
  chromium "${flags[@]}" --print-to-pdf="${4:?OUT.pdf}" --no-pdf-header-footer "file://$(realpath "$html")" 2>/dev/null
  [ -s "$4" ] || { echo "screenshot-report: no PDF written" >&2; exit 1; }
fi
echo "screenshot-report: wrote $png${4:+ and $4}"
