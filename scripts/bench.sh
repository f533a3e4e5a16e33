#!/usr/bin/env bash
# bench.sh: sluice side by side with nginx, HAProxy and pen on this machine (127.0.0.1 only).
#
# Usage:
#   scripts/bench.sh [--quick] [--reps N] [--duration S] [--warmup S]
#                    [--systems direct,nginx,haproxy,pen,sluice]
#                    [--scenarios ka_small,close_small,big_1mib,c1000,tls_ka,tls_handshake]
#                    [--sluice-bin PATH] [--build] [--json FILE] [--keep-tmp]
#                    [--backend-ports 25001,25002,25003] [--lb-port 28080]
#   scripts/bench.sh --table FILE              # print the README's comparison table from a run
#   scripts/bench.sh --workers-table FILE...   # print the README's workers table, a run per size
#
#   scripts/bench.sh --quick                                   # smoke run: 1 rep x 2 s
#   scripts/bench.sh                                           # full run: 3 reps x 5 s (~11 min)
#   scripts/bench.sh --systems nginx,sluice --scenarios c1000 --reps 5
#   scripts/bench.sh --scenarios tls_ka,tls_handshake          # only the TLS rows
#   SLUICE_EXTRA_JSON='{"workers": 16}' scripts/bench.sh --systems sluice   # one workers row
#
# Environment: SLUICE_BIN (default target/release/sluice under the repo root),
#   BENCH_BACKEND_PORTS (default 25001,25002,25003), BENCH_LB_PORT (default 28080),
#   SLUICE_EXTRA_JSON (JSON object merged into sluice's config, default {}).
#
# What it does:
#   - installs nginx, haproxy, pen, wrk and openssl with apt-get if any is missing (needs root);
#   - if the sluice binary is missing: builds it with `cargo build --release` only when
#     --build is given, otherwise skips the sluice system with a message;
#   - runs scripts/bench.py (Python 3 standard library only), which starts one nginx with
#     three backends, then each balancer in turn on the same scenarios (wrk -t1):
#       ka_small       keep-alive, c=64,   GET /
#       close_small    Connection: close, c=32, GET /
#       big_1mib       keep-alive, c=8,    GET /big (1 MiB)
#       c1000          keep-alive, c=1000, GET /
#       tls_ka         keep-alive over TLS, c=64, GET /         (nginx, haproxy, sluice only)
#       tls_handshake  Connection: close over TLS, c=32, GET /  (nginx, haproxy, sluice only)
#     systems: direct (wrk straight at backend 1), nginx, haproxy, pen, sluice, all round robin;
#     the TLS rows terminate TLS at the balancer (backends stay plain) with one ECDSA P-256
#     certificate for 127.0.0.1 that openssl makes per run, the same for every system; pen and
#     direct do not terminate TLS and have no TLS rows;
#     systems alternate within every rep; each run is a fresh balancer, a 200-from-all-three-
#     backends check, a warm-up and one measured run with a starvation probe beside it;
#   - prints per scenario x system: median req/s, p50, p99, errors, starved probes, peak RSS,
#     context switches per request, balancer CPU, backend connections per 1,000 requests;
#     then sluice/peer ratios;
#   - writes every run, the summary, the machine, the tools' versions and the command as JSON
#     to scripts/results/bench-<UTC date and time>.json (or --json FILE). Commit that file with
#     the README table printed from it by --table.
#
# Everything started is stopped by PID: bench.py stops what it started, and the EXIT trap
# below stops bench.py and anything bench.py recorded in WORKDIR/pids that is still alive.
# Exit status: 0 if every run succeeded, 1 if some run failed, 2 on usage/setup errors.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SLUICE_BIN=${SLUICE_BIN:-$ROOT/target/release/sluice}
BUILD=0
KEEP_TMP=0
PY_ARGS=()

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

while (($#)); do
    case $1 in
        -h|--help) usage; exit 0 ;;
        --table|--workers-table)
            [[ $# -ge 2 ]] || { echo "bench.sh: $1 needs a results file" >&2; exit 2; }
            command=${1#--}; shift
            exec python3 "$ROOT/scripts/bench.py" "$command" "$@" ;;
        --build) BUILD=1 ;;
        --keep-tmp) KEEP_TMP=1 ;;
        --sluice-bin) [[ $# -ge 2 ]] || { echo "bench.sh: --sluice-bin needs a value" >&2; exit 2; }
                      SLUICE_BIN=$2; shift ;;
        --sluice-bin=*) SLUICE_BIN=${1#*=} ;;
        *) PY_ARGS+=("$1") ;;   # everything else is bench.py's (it validates them)
    esac
    shift
done

log() { printf '[bench.sh %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

# ---------------------------------------------------------------- tools
missing=()
for tool in nginx haproxy pen wrk openssl python3; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
    log "missing: ${missing[*]}; installing with apt-get"
    if [[ $EUID -ne 0 ]] || ! command -v apt-get >/dev/null; then
        log "cannot install (need root and apt-get): apt-get install -y nginx haproxy pen wrk openssl"
        exit 2
    fi
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y nginx haproxy pen wrk openssl python3
fi

# ---------------------------------------------------------------- sluice binary
[[ $SLUICE_BIN == /* ]] || SLUICE_BIN=$PWD/$SLUICE_BIN
if [[ ! -x $SLUICE_BIN ]]; then
    if ((BUILD)); then
        log "building sluice (cargo build --release)"
        (cd "$ROOT" && cargo build --release)
        SLUICE_BIN=$ROOT/target/release/sluice
    else
        log "sluice binary not found at $SLUICE_BIN: the sluice row is skipped" \
            "(pass --build, or set SLUICE_BIN / --sluice-bin)"
    fi
fi

# ---------------------------------------------------------------- run, with cleanup by PID
WORKDIR=$(mktemp -d "${TMPDIR:-/tmp}/sluice-bench.XXXXXX")
PY_PID=""

# (the two functions below run only from traps, which shellcheck cannot see: SC2317)
# starttime (field 22 of /proc/PID/stat) of a live PID, empty if it is gone
# shellcheck disable=SC2317
starttime() {
    local stat rest f
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
    rest=${stat##*) }
    read -ra f <<<"$rest"
    echo "${f[19]}"
}

# shellcheck disable=SC2317
cleanup() {
    local rc=$? pid start name
    trap - EXIT INT TERM HUP
    if [[ -n $PY_PID ]] && kill -0 "$PY_PID" 2>/dev/null; then
        kill -TERM "$PY_PID" 2>/dev/null || true      # bench.py stops its own children
        for _ in $(seq 100); do kill -0 "$PY_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$PY_PID" 2>/dev/null || true
    fi
    # anything bench.py started and could not stop: each runs as its own process group
    if [[ -f $WORKDIR/pids ]]; then
        while read -r pid start name; do
            if [[ $(starttime "$pid") == "$start" ]]; then
                log "stopping leftover $name (pid $pid)"
                kill -TERM -- "-$pid" 2>/dev/null || true
                sleep 1
                [[ $(starttime "$pid") == "$start" ]] && kill -KILL -- "-$pid" 2>/dev/null
            fi
        done <"$WORKDIR/pids"
    fi
    if ((KEEP_TMP)); then log "kept $WORKDIR"; else rm -rf -- "$WORKDIR"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

python3 "$ROOT/scripts/bench.py" --workdir "$WORKDIR" --sluice-bin "$SLUICE_BIN" "${PY_ARGS[@]}" &
PY_PID=$!
rc=0
wait "$PY_PID" || rc=$?
PY_PID=""
exit "$rc"
