#!/usr/bin/env bash
# profile.sh: what one small keep-alive request costs sluice, measured the same way every time.
#
# Usage:
#   scripts/profile.sh [--sluice-bin PATH] [--connections C] [--requests R] [--body BYTES] [MODE...]
#
#   MODE is any of (default: callgrind strace):
#     callgrind  sluice under `valgrind --tool=callgrind`: after a warm-up the counters are
#                zeroed, exactly C x R requests are sent (C keep-alive connections, R requests
#                each, one at a time), the counters are dumped, and the script prints the
#                instructions (Ir) and the calls to malloc/calloc/realloc/free per request.
#                Instruction counts are stable on a noisy machine; wall time is not. The
#                few allocations left in a steady state are first-use buffers of workers
#                that had not served before, and sluice's background threads.
#     strace     sluice natively; after a warm-up `strace -f -c` is attached for C x R
#                requests and prints system calls per request, then `strace -f` shows the
#                calls of two single requests, to see that a head and a small body leave in
#                one write.
#     wrk        sluice natively; `wrk -t1 -c64 -d5s`, with sluice's voluntary and
#                involuntary context switches and its user and system CPU time per request
#                (req/s is noisy on a shared host; CPU per request less so).
#
#   --body BYTES makes every request a POST with a body of that size, sent with its head
#   (wrk mode stays GET).
#
#   Defaults: C=4, R=5000 (20,000 requests; seconds, even under callgrind). Needs nginx,
#   valgrind, strace, wrk and python3 (standard library). The sluice binary defaults to
#   target/release/sluice (build it with `cargo build --release`; the release profile keeps
#   line tables, so callgrind output can be read with callgrind_annotate).
#
# Environment: PROFILE_BACKEND_PORTS (default 26001,26002,26003), PROFILE_LB_PORT (default
#   26080), PROFILE_RUST_LOG (sluice's RUST_LOG, default warn: no access log; "info" adds
#   the access log, on stderr into a file), PROFILE_KEEP=1 keeps the work directory
#   (callgrind files, logs).
#
# Setup: one nginx with three backends answering `GET /` with 13 bytes ("hello from N\n"),
# sluice in front, round robin, access log off (RUST_LOG=warn, as scripts/bench.sh runs it),
# health checks every minute so probes stay out of the counts. Everything binds 127.0.0.1 and
# everything started is stopped by PID.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS="$ROOT/scripts/profile_tools.py"
SLUICE_BIN=$ROOT/target/release/sluice
CONNECTIONS=4
REQUESTS=5000
MODES=()
LOAD_ARGS=()
REQUEST="GET /"
IFS=, read -r -a BACKEND_PORTS <<<"${PROFILE_BACKEND_PORTS:-26001,26002,26003}"
LB_PORT=${PROFILE_LB_PORT:-26080}
WARMUP_REQUESTS=250

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

while (($#)); do
    case $1 in
        --sluice-bin) SLUICE_BIN=$2; shift 2 ;;
        --connections) CONNECTIONS=$2; shift 2 ;;
        --requests) REQUESTS=$2; shift 2 ;;
        --body) LOAD_ARGS+=(--body "$2"); REQUEST="POST / with $2 bytes"; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        callgrind | strace | wrk) MODES+=("$1"); shift ;;
        *) echo "profile.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done
((${#MODES[@]})) || MODES=(callgrind strace)
[[ -x $SLUICE_BIN ]] || { echo "profile.sh: no sluice binary at $SLUICE_BIN (cargo build --release)" >&2; exit 2; }
for tool in nginx python3; do
    command -v "$tool" >/dev/null || { echo "profile.sh: needs $tool" >&2; exit 2; }
done

WORK=$(mktemp -d /tmp/sluice-profile.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    if [[ ${PROFILE_KEEP:-0} == 1 ]]; then echo "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

start_backends() {
    local user="" servers="" i=1
    [[ $(id -u) == 0 ]] && user="user nobody nogroup;"
    for port in "${BACKEND_PORTS[@]}"; do
        servers+="server { listen 127.0.0.1:$port; location = / { default_type text/plain; return 200 \"hello from $i\\n\"; } }"$'\n'
        i=$((i + 1))
    done
    mkdir -p "$WORK/nginx"
    cat >"$WORK/nginx/nginx.conf" <<EOF
$user
daemon off;
worker_processes 1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $WORK/nginx/body;
  proxy_temp_path $WORK/nginx/proxy;
  fastcgi_temp_path $WORK/nginx/fastcgi;
  uwsgi_temp_path $WORK/nginx/uwsgi;
  scgi_temp_path $WORK/nginx/scgi;
$servers}
EOF
    nginx -p "$WORK/nginx" -e "$WORK/nginx/error.log" -c "$WORK/nginx/nginx.conf" &
    PIDS+=($!)
    local servers_json
    servers_json=$(printf '"http://127.0.0.1:%s",' "${BACKEND_PORTS[@]}")
    cat >"$WORK/sluice.json" <<EOF
{"listen": "127.0.0.1:$LB_PORT", "healthCheckInterval": "1m", "servers": [${servers_json%,}]}
EOF
    wait_for "127.0.0.1:${BACKEND_PORTS[0]}"
}

# Waits (up to a minute: valgrind starts slowly) until one request through ADDR succeeds.
wait_for() {
    for _ in $(seq 1 120); do
        python3 "$TOOLS" load "$1" --connections 1 --requests 1 >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    echo "profile.sh: nothing answers on $1" >&2
    exit 1
}

# Starts sluice (prefixed by the command in "$@", if any) and waits until it answers.
start_sluice() {
    RUST_LOG=${PROFILE_RUST_LOG:-warn} "$@" "$SLUICE_BIN" --config "$WORK/sluice.json" 2>"$WORK/sluice.log" &
    SLUICE_PID=$!
    PIDS+=("$SLUICE_PID")
    wait_for "127.0.0.1:$LB_PORT"
    python3 "$TOOLS" load "127.0.0.1:$LB_PORT" --connections "$CONNECTIONS" --requests "$WARMUP_REQUESTS" \
        "${LOAD_ARGS[@]}" >/dev/null
}

stop_sluice() {
    kill -TERM "$SLUICE_PID"
    wait "$SLUICE_PID" || true
}

measured_load() {
    python3 "$TOOLS" load "127.0.0.1:$LB_PORT" --connections "$CONNECTIONS" --requests "$REQUESTS" "${LOAD_ARGS[@]}"
}

run_callgrind() {
    echo "== callgrind: $CONNECTIONS x $REQUESTS keep-alive $REQUEST after $CONNECTIONS x $WARMUP_REQUESTS warm-up"
    start_sluice valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.out" --dump-instr=no
    callgrind_control -z "$SLUICE_PID" >/dev/null 2>&1
    measured_load
    callgrind_control -d "$SLUICE_PID" >/dev/null 2>&1
    stop_sluice
    local dumps=("$WORK"/callgrind.out.*)
    python3 "$TOOLS" counts "${dumps[0]}" --requests $((CONNECTIONS * REQUESTS))
    if [[ ${PROFILE_KEEP:-0} == 1 ]]; then echo "callgrind_annotate --inclusive=yes ${dumps[0]} | head -60"; fi
}

run_strace() {
    command -v strace >/dev/null || { echo "profile.sh: strace mode needs strace" >&2; exit 2; }
    echo "== strace -f -c: $CONNECTIONS x $REQUESTS keep-alive $REQUEST after warm-up"
    start_sluice
    strace -f -c -p "$SLUICE_PID" -o "$WORK/strace-summary" 2>"$WORK/strace.err" &
    local strace_pid=$!
    sleep 1 # attaching to every thread takes a moment
    measured_load
    kill -INT "$strace_pid"
    wait "$strace_pid" || true
    python3 - "$WORK/strace-summary" $((CONNECTIONS * REQUESTS)) <<'EOF'
import sys
path, n = sys.argv[1], int(sys.argv[2])
rows = []
for line in open(path):
    parts = line.split()
    if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] != "total":
        calls = int(parts[3])
        rows.append((calls, parts[-1]))
total = sum(c for c, _ in rows)
print(f"system calls per request: {total / n:.2f}")
for calls, name in sorted(rows, reverse=True):
    if calls / n >= 0.01:
        print(f"  {name:<16} {calls / n:6.2f}")
EOF
    echo "== strace -f: the system calls of two single requests on one connection"
    strace -f -p "$SLUICE_PID" -e trace=read,write,writev,sendto,recvfrom,setsockopt,ioctl,fcntl \
        -e signal=none -s 40 -o "$WORK/strace-two" 2>>"$WORK/strace.err" &
    strace_pid=$!
    sleep 1
    python3 "$TOOLS" load "127.0.0.1:$LB_PORT" --connections 1 --requests 2 "${LOAD_ARGS[@]}" >/dev/null
    sleep 0.2
    kill -INT "$strace_pid"
    wait "$strace_pid" || true
    grep -v -e 'resumed>.*= -1 EAGAIN' -e '^[0-9]* *+++' "$WORK/strace-two" | sed 's/^/  /' || true
    stop_sluice
}

# Voluntary and involuntary context switches of every sluice thread so far, then sluice's
# user and system CPU time in clock ticks.
sluice_counters() {
    cat /proc/"$SLUICE_PID"/task/*/status 2>/dev/null |
        awk '/^voluntary_ctxt_switches/ {v += $2} /^nonvoluntary_ctxt_switches/ {n += $2} END {printf "%d %d ", v, n}'
    sed 's/.*) //' /proc/"$SLUICE_PID"/stat | awk '{print $12, $13}'
}

run_wrk() {
    command -v wrk >/dev/null || { echo "profile.sh: wrk mode needs wrk" >&2; exit 2; }
    echo "== wrk -t1 -c64 -d5s (req/s varies with whatever else runs on this machine)"
    start_sluice
    local before after
    before=$(sluice_counters)
    wrk -t1 -c64 -d5s "http://127.0.0.1:$LB_PORT/" >"$WORK/wrk.out"
    after=$(sluice_counters)
    grep -E 'Requests/sec|Latency|requests in|Non-2xx|Socket errors' "$WORK/wrk.out" | sed 's/^ */  /'
    local requests
    requests=$(awk '/requests in/ {print $1}' "$WORK/wrk.out")
    read -r v0 n0 u0 s0 <<<"$before"
    read -r v1 n1 u1 s1 <<<"$after"
    awk -v v=$((v1 - v0)) -v n=$((n1 - n0)) -v r="$requests" \
        'BEGIN {printf "  context switches per request: %.2f voluntary, %.2f involuntary\n", v / r, n / r}'
    awk -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v r="$requests" -v hz="$(getconf CLK_TCK)" \
        'BEGIN {printf "  sluice CPU per request: %.1f us user, %.1f us system\n", u / hz / r * 1e6, s / hz / r * 1e6}'
    stop_sluice
}

start_backends
for mode in "${MODES[@]}"; do
    "run_$mode"
done
