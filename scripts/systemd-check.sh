#!/usr/bin/env bash
# Checks deploy/systemd/ the way systemd would read it, without systemd running: `verify`
# (the test in tests/deploy.rs does the same) and `security --offline=yes`, the exposure
# score docs/install.md quotes, with each hardening setting it weighs.
#
# Writes scripts/results/systemd-security-<UTC time>.txt and prints its summary.
# Needs systemd-analyze (Debian package systemd) and a built sluice (cargo build).
set -euo pipefail
cd "$(dirname "$0")/.."

stamp=$(date -u +%Y%m%dT%H%M%SZ)
out="scripts/results/systemd-security-$stamp.txt"
bin="$PWD/target/debug/sluice"
[ -x "$bin" ] || { echo "build sluice first (cargo build)" >&2; exit 1; }
units=$(mktemp -d)
trap 'rm -rf "$units"' EXIT
# verify wants ExecStart's program to exist: the built one stands in for /usr/local/bin/sluice.
for unit in sluice.service sluice.socket; do
  sed "s#/usr/local/bin/sluice#$bin#g" "deploy/systemd/$unit" >"$units/$unit"
done

{
  echo "# systemd-check $stamp, $(systemd-analyze --version | head -1)"
  echo "## systemd-analyze verify sluice.socket sluice.service"
  (cd "$units" && systemd-analyze verify sluice.socket sluice.service 2>&1) && echo "OK (no complaint)"
  echo "## systemd-analyze security --offline=yes sluice.service"
  (cd "$units" && SYSTEMD_COLORS=0 systemd-analyze security --offline=yes --no-pager sluice.service 2>&1) || true
} >"$out"
grep -E '^(#|OK|→)|Overall exposure' "$out"
echo "written: $out"
