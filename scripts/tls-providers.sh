#!/usr/bin/env bash
# Measures rustls' two crypto providers, ring and aws-lc-rs, as sluice uses them (full and
# resumed TLS 1.3 handshakes with an ECDSA P-256 certificate, bulk data in 16 KiB records),
# in memory on one thread, and writes the result to scripts/results/tls-providers-<date>.json.
# sluice uses the faster one; the README's "HTTPS" section quotes the file.
#
#   scripts/tls-providers.sh            # build (release), measure, write the JSON, print it
set -euo pipefail
cd "$(dirname "$0")/tls-providers"
cargo build --release --quiet
out="../results/tls-providers-$(date -u +%Y%m%dT%H%M%SZ).json"
mkdir -p ../results
./target/release/tls-providers | tee "$out"
echo "written: scripts/results/$(basename "$out")"
