#!/usr/bin/env bash
# dns-cost.sh: what does re-resolution cost? sluice against itself on the benchmark rows,
# its three backends listed in the file (static) or found by DNS (an SRV record, looked up
# again every second from a local dnsmasq whose answers have a TTL of 1 s).
#
# Usage:
#   scripts/dns-cost.sh [--rounds N] [--duration S]   # runs, writes scripts/results/dns-*.json
#   scripts/dns-cost.sh --thread-only                 # only the sluice-dns thread's CPU time
#   scripts/dns-cost.sh --table FILE...               # the docs/performance.md rows from runs
#
# Each round runs scripts/bench.sh --systems sluice --scenarios ka_small,c1000 --reps 1 twice,
# static then DNS, writing scripts/results/dns-static-rN.json and dns-srv-rN.json. Defaults:
# 2 rounds of 4 s runs (about 50 s of load in all). Then, since throughput on a shared
# 2-core machine moves by more than re-resolution could cost, it measures the cost itself:
# an idle sluice following the same SRV record every second for 20 s, and the CPU time of its
# `sluice-dns` thread from /proc (schedstat, in nanoseconds), written to scripts/results/dns-thread.json. Needs dnsmasq (apt-get install
# dnsmasq-base) and what bench.sh needs; uses target/release/sluice (SLUICE_BIN to change).
# dnsmasq is stopped by its PID on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RESULTS=$ROOT/scripts/results
DNS_PORT=${DNS_PORT:-25353}
ROUNDS=2
DURATION=4

table() {
    python3 - "$@" <<'EOF'
import json, sys
rows = {}
for path in sys.argv[1:]:
    d = json.load(open(path))
    extra = json.loads(d.get("sluice_extra_json") or "{}")
    kind = "found by DNS (SRV, every 1 s)" if "resolvers" in extra else "listed in the file"
    row = rows.setdefault(kind, {"files": [], "noise": 0.0})
    row["files"].append(path.split("/")[-1])
    for s in d["summary"]:
        row.setdefault(s["scenario"], []).append(f"{s['rps']:,.0f}")
        row["noise"] = max(row["noise"], s.get("foreign_cores") or 0.0)
print("| backends | ka_small req/s, round 1 / 2 | c1000 req/s, round 1 / 2 | other processes' CPU (max cores) | files |")
print("|---|---:|---:|---:|---|")
for kind, row in rows.items():
    ka, c = " / ".join(row.get("ka_small", [])), " / ".join(row.get("c1000", []))
    files = ", ".join(f"`{f}`" for f in row["files"])
    print(f"| {kind} | {ka} | {c} | {row['noise']:.2f} | {files} |")
EOF
}

# The CPU time of the sluice-dns thread of process $1, in nanoseconds (the first field of
# its schedstat: time spent running).
dns_thread_cpu_ns() {
    local task
    for task in /proc/"$1"/task/*; do
        if [[ $(cat "$task/comm") == sluice-dns ]]; then
            awk '{print $1}' "$task/schedstat"
            return
        fi
    done
    echo "dns-cost.sh: no sluice-dns thread in process $1" >&2
    return 1
}

if [[ ${1:-} == --table ]]; then
    shift
    table "$@"
    exit 0
fi
THREAD_ONLY=0
while [[ $# -gt 0 ]]; do
    case $1 in
        --rounds) ROUNDS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --thread-only) THREAD_ONLY=1; shift ;;
        *) echo "dns-cost.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

command -v dnsmasq >/dev/null || { echo "dns-cost.sh: dnsmasq is missing (apt-get install dnsmasq-base)" >&2; exit 2; }
WORK=$(mktemp -d /tmp/sluice-dns-cost.XXXXXX)
DNS_PID=
cleanup() {
    [[ -n $DNS_PID ]] && kill "$DNS_PID" 2>/dev/null && wait "$DNS_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

# bench.sh's backends listen on 127.0.0.1:25001-25003 (its default --backend-ports).
{
    for port in 25001 25002 25003; do echo "srv-host=_http._tcp.bench.test,bench.test,$port,1,1"; done
} >"$WORK/dnsmasq.conf"
echo "127.0.0.1 bench.test" >"$WORK/hosts"
dnsmasq --no-daemon --listen-address=127.0.0.1 --bind-interfaces --no-resolv --no-hosts \
    --local=/test/ --local-ttl=1 --pid-file= --user=root --port="$DNS_PORT" \
    --conf-file="$WORK/dnsmasq.conf" --addn-hosts="$WORK/hosts" 2>"$WORK/dnsmasq.log" &
DNS_PID=$!

DNS_JSON="{\"servers\": [{\"dnsSrv\": \"_http._tcp.bench.test\"}], \"resolvers\": [\"127.0.0.1:$DNS_PORT\"], \"resolveInterval\": \"1s\"}"
bench() {
    "$ROOT/scripts/bench.sh" --systems sluice --scenarios ka_small,c1000 --reps 1 \
        --duration "$DURATION" --json "$1"
}
if [[ $THREAD_ONLY == 0 ]]; then
    files=()
    for round in $(seq 1 "$ROUNDS"); do
        SLUICE_EXTRA_JSON='{}' bench "$RESULTS/dns-static-r$round.json"
        SLUICE_EXTRA_JSON=$DNS_JSON bench "$RESULTS/dns-srv-r$round.json"
        files+=("$RESULTS/dns-static-r$round.json" "$RESULTS/dns-srv-r$round.json")
    done
    table "${files[@]}"
fi

# The thread's own cost: an idle sluice following the SRV record every second.
SLUICE_BIN=${SLUICE_BIN:-$ROOT/target/release/sluice}
cat >"$WORK/idle.json" <<JSON
{"listen": "127.0.0.1:0", "servers": [{"dnsSrv": "_http._tcp.bench.test"}],
 "resolvers": ["127.0.0.1:$DNS_PORT"], "resolveInterval": "1s", "healthCheckInterval": "1m"}
JSON
RUST_LOG=warn "$SLUICE_BIN" --config "$WORK/idle.json" 2>"$WORK/idle.log" &
IDLE_PID=$!
sleep 2
before=$(dns_thread_cpu_ns "$IDLE_PID")
sleep 20
after=$(dns_thread_cpu_ns "$IDLE_PID")
kill "$IDLE_PID"
wait "$IDLE_PID" 2>/dev/null || true
python3 - "$before" "$after" "$RESULTS/dns-thread.json" <<'PY'
import json, sys, time, platform
before, after, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
seconds = 20
cpu_ms = (after - before) / 1e6
out = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": platform.machine(),
       "what": "CPU time of the sluice-dns thread while it follows one SRV record (3 targets) every 1 s",
       "seconds": seconds, "lookups": seconds, "source": "/proc/PID/task/TID/schedstat", "cpu_ms": cpu_ms,
       "cpu_ms_per_lookup": cpu_ms / seconds, "cpu_share_of_one_core": cpu_ms / (seconds * 1000)}
json.dump(out, open(path, "w"), indent=2)
print(f"sluice-dns thread: {cpu_ms:.1f} ms of CPU in {seconds} s ({cpu_ms / seconds:.2f} ms a lookup, "
      f"{100 * cpu_ms / (seconds * 1000):.3f} % of one core); written to {path}")
PY
