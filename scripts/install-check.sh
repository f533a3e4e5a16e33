#!/usr/bin/env bash
# Checks that `cargo install --path .` works as the README says: installs into a fresh root
# with the committed Cargo.lock (--locked), from the crates already in cargo's cache when
# there are (no network needed then), and the installed binary runs.
#
# Too slow for the tests (a release build). Writes scripts/results/cargo-install-<UTC time>.txt
# and prints it. Run from anywhere:
#   bash scripts/install-check.sh          # as the README says (cargo install --path builds in
#                                          # target/, so quick after cargo build --release)
#   bash scripts/install-check.sh --fresh  # a whole build in a folder of its own, --offline
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
# Fresh: an empty target folder, and the crates in cargo's cache only (no network).
options=()
[ "${1:-}" = --fresh ] && options=(--offline --target-dir "$root/target")
if ! cargo install --path . --root "$root" --locked "${options[@]}" >"$root.log" 2>&1; then
  say "cargo install: FAILED"
  tail -20 "$root.log" | tee -a "$out"
  rm -f "$root.log"
  exit 1
fi
say "cargo install --path . --root <fresh folder> --locked ${options[*]}: OK in $(($(date +%s) - start)) s"
say "installed: $(cd "$root" && find . -path ./target -prune -o -type f -print | sort | tr '\n' ' ')"
say "\$ sluice --version: $("$root/bin/sluice" --version)"
say "\$ sluice --schema: $("$root/bin/sluice" --schema | wc -c) bytes of JSON Schema"
say "\$ sluice --check --config config.json: $("$root/bin/sluice" --check --config config.json | head -1)"
rm -f "$root.log"
echo "written: $out"
