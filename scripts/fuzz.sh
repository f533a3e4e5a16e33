#!/usr/bin/env bash
# fuzz.sh: builds sluice's fuzz targets (fuzz/, a workspace of its own) and runs each for a
# given time, one after another on one core, then prints executions and crashes per target.
#
# Usage:
#   scripts/fuzz.sh [SECONDS] [TARGET...]     # default: 600 s each, every target
#   scripts/fuzz.sh 60 body_framing           # one target for a minute
#
# Targets:
#   request_head  request and response heads: parse, check, framing decision, the rewritten
#                 head sluice forwards (which must parse again to the same framing)
#   body_framing  chunked decoding, Content-Length and until-close bodies through relay_body,
#                 read in pieces of every size
#   config        the config loader, Config::parse, on arbitrary text
#
# How it runs:
#   - cargo-fuzz (installed with `cargo install cargo-fuzz` if missing) needs nightly flags;
#     on the stable toolchain RUSTC_BOOTSTRAP=1 allows them.
#   - No sanitizer (--sanitizer none): the code under test is safe Rust, whose bounds checks
#     and the debug assertions cargo-fuzz turns on catch what AddressSanitizer would, at about
#     twice the executions per second.
#   - Each target runs in a network namespace of its own (unshare --net): the config loader
#     resolves host names, and names the fuzzer makes up must never reach a real resolver.
#     Needs root (or user namespaces); without it the script stops.
#   - The corpus grows in fuzz/corpus/TARGET (not committed), starting from fuzz/seeds/TARGET;
#     crashes go to fuzz/artifacts/TARGET; the full libFuzzer output to fuzz/fuzz-TARGET.log.
#     libFuzzer stops a target at its first crash; reproduce one with
#       RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none TARGET fuzz/artifacts/TARGET/FILE
#
# Exit status: 0 when no target crashed, 1 otherwise.
set -euo pipefail

seconds=${1:-600}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(request_head body_framing config)
fi

cd "$(dirname "$0")/../fuzz"

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz
fi
if ! unshare --net true 2>/dev/null; then
  echo "fuzz.sh: cannot make a network namespace (unshare --net); run as root" >&2
  exit 1
fi

export RUSTC_BOOTSTRAP=1
echo "== building the fuzz targets"
cargo fuzz build --sanitizer none
host=$(rustc -vV | sed -n 's/^host: //p')
bin_dir="target/$host/release"

dict_for() {
  case "$1" in
    config) echo dict/config.dict ;;
    *) echo dict/http.dict ;;
  esac
}

summary=()
crashed=0
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target" "artifacts/$target"
  before=$(ls "artifacts/$target" | wc -l)
  log="fuzz-$target.log"
  echo "== $target: ${seconds}s (log: fuzz/$log)"
  status=0
  unshare --net "$bin_dir/$target" \
    -dict="$(dict_for "$target")" \
    -max_total_time="$seconds" \
    -timeout=10 \
    -print_final_stats=1 \
    -artifact_prefix="artifacts/$target/" \
    "corpus/$target" "seeds/$target" >"$log" 2>&1 || status=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  if [ -z "$execs" ]; then
    execs=$(grep -o '^#[0-9]*' "$log" | tail -1 | tr -d '#')
  fi
  after=$(ls "artifacts/$target" | wc -l)
  crashes=$((after - before))
  corpus=$(grep -o 'corp: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  if [ "$status" -ne 0 ] || [ "$crashes" -ne 0 ]; then
    crashed=1
    grep -m1 -A3 'panicked at\|ERROR: libFuzzer' "$log" || true
    ls -t "artifacts/$target" | head -"$((crashes > 0 ? crashes : 1))" | sed "s|^|   artifact: fuzz/artifacts/$target/|"
  fi
  line=$(printf '%-14s %6ss  executions %12s  crashes %d  corpus %s inputs' \
    "$target" "$seconds" "${execs:-?}" "$crashes" "${corpus:-?}")
  echo "$line"
  summary+=("$line")
done

echo "== summary"
printf '%s\n' "${summary[@]}"
exit "$crashed"
