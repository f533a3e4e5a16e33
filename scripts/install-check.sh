#!/usr/bin/env bash
# Checks that `cargo install --path .` works as the README says: installs into a fresh root
# with the committed Cargo.lock (--locked), from the crates already in cargo's cache when
# there are (no network needed then), and the installed binary runs.
#
# Too slow for the tests (a release build). Writes scripts/results/cargo-install-<UTC time>.txt
# and prints it. Run from anywhere: bash scripts/install-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."

stamp=$(date -u +%Y%m%dT%H%M%SZ)
out="scripts/results/cargo-install-$stamp.txt"
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
say() { echo "$*" | tee -a "$out"; }
: >"$out"

say "# install-check $stamp, $(cargo --version)"
start=$(date +%s)
# Its own target folder, so that a second run is quick and the main one is left alone.
if ! cargo install --path . --root "$root" --locked --target-dir target/install-check >"$root.log" 2>&1; then
  say "cargo install: FAILED"
  tail -20 "$root.log" | tee -a "$out"
  rm -f "$root.log"
  exit 1
fi
say "cargo install --path . --root <fresh folder> --locked: OK in $(($(date +%s) - start)) s"
say "installed: $(cd "$root" && find . -type f | sort | tr '\n' ' ')"
say "\$ sluice --version: $("$root/bin/sluice" --version)"
say "\$ sluice --schema: $("$root/bin/sluice" --schema | grep -c '"description"') keys described"
say "\$ sluice --check --config config.json: $("$root/bin/sluice" --check --config config.json | head -1)"
rm -f "$root.log"
echo "written: $out"
