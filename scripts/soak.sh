#!/usr/bin/env bash
# soak.sh: a bounded soak of sluice (release build) under wrk, c=200, in front of three nginx
# backends, one of which is killed in the middle and started again. Everything on 127.0.0.1.
#
# Usage:
#   scripts/soak.sh [SECONDS]          # default 600 (10 minutes)
#   scripts/soak.sh --summary FILE     # the README's soak sentence from a result file
#
# Environment: SOAK_PORTS (default 27101,27102,27103,27180: three backends, then sluice),
#   SLUICE_BIN (default target/release/sluice under the repo root, built if missing),
#   SOAK_CONNECTIONS (default 200), SOAK_THREADS (wrk threads, default 2),
#   SOAK_JSON (where to write the result, default scripts/results/soak-<UTC date and time>.json).
#
# What it does:
#   - installs wrk and nginx with apt-get if either is missing (needs root);
#   - starts three single-process nginx backends (master_process off, so one pid each) and
#     sluice with the default settings but for a 1 s health-check interval;
#   - runs wrk -c200 for SECONDS; at half time it kills backend 2 with SIGKILL and starts it
#     again after a tenth of the run (at most 30 s);
#   - every 10 s records sluice's RSS (VmRSS in /proc/PID/status), threads and open file
#     descriptors (entries in /proc/PID/fd) in samples.csv;
#   - prints wrk's totals, the first sample taken under load (10 s in, after the warm-up)
#     and the last one, and samples at idle before the load and after it (once idle backend
#     connections have expired), and a verdict: RSS under load must not grow from the first
#     sample to the last (allowed: +10% + 4 MiB), and the descriptors open at idle after the
#     load must be those open before it (+2, for a health check in flight). Descriptors under
#     load are reported but not judged: they swing with how many backend connections are in
#     flight or idle at the moment of sampling (each client connection holds two: its stream
#     and the waiting room's handle);
#   - fails as well when any request failed: a wrk socket error (connect, read, write,
#     timeout) or a response other than 2xx/3xx, or when wrk reported no requests at all;
#   - writes the result (the numbers above, the samples, the verdict, the machine and the
#     sluice commit) as JSON to scripts/results/soak-<UTC date and time>.json; commit it with
#     the README sentence printed from it by --summary.
#
# Every process it starts is stopped by its pid on exit; wrk runs under `timeout`. Logs and
# samples stay in a directory under /tmp, printed at the end. Exit status: 0 when nothing
# grew and no request failed, 1 otherwise.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)

# The README's sentence about the latest soak, from a result file this script wrote.
summary() {
  python3 - "$1" <<'PY'
import json, os, sys
r = json.load(open(sys.argv[1]))
failed = r["socket_errors"] + r["non_2xx"]
errors = "no errors" if failed == 0 else f"{failed:,} failed requests"
mib = lambda kib: f"{kib / 1024:.1f}"
print(f"The latest soak (`scripts/results/{os.path.basename(sys.argv[1])}`, {r['when']}, "
      f"{r['seconds']} s at c={r['connections']}): {r['requests'] / 1e6:.1f} M requests, {errors}, "
      f"RSS {mib(r['rss_kib']['start'])} → {mib(r['rss_kib']['end'])} MiB, "
      f"idle descriptors {r['idle_fds']['before']} → {r['idle_fds']['after']}; verdict: {r['verdict']}.")
PY
}
if [ "${1:-}" = "--summary" ]; then
  [ -n "${2:-}" ] || { echo "soak.sh: --summary needs a result file" >&2; exit 2; }
  summary "$2"
  exit 0
fi

seconds=${1:-600}
connections=${SOAK_CONNECTIONS:-200}
threads=${SOAK_THREADS:-2}
IFS=, read -r port1 port2 port3 lb_port <<<"${SOAK_PORTS:-27101,27102,27103,27180}"
ports=("$port1" "$port2" "$port3")
started_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)
json_out=${SOAK_JSON:-$root/scripts/results/soak-$(date -u +%Y%m%d-%H%M%S).json}
sluice_bin=${SLUICE_BIN:-$root/target/release/sluice}
SAMPLE_EVERY=10

if ! command -v wrk >/dev/null || ! command -v nginx >/dev/null; then
  apt-get update -qq && apt-get install -y -qq wrk nginx >/dev/null
fi
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
if [ ! -x "$sluice_bin" ]; then
  (cd "$root" && cargo build --release)
fi
for port in "${ports[@]}" "$lb_port"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "soak.sh: port $port is in use; set SOAK_PORTS" >&2
    exit 1
  fi
done

dir=$(mktemp -d /tmp/sluice-soak.XXXXXX)
pids=()
stop_all() {
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
}
trap stop_all EXIT

# Drops a pid that has been waited for, so that stop_all never signals a reused pid.
forget_pid() {
  local keep=() pid
  for pid in "${pids[@]}"; do
    [ "$pid" = "$1" ] || keep+=("$pid")
  done
  pids=("${keep[@]}")
}

# ---- backends ----
backend_pid=()
start_backend() {
  local i=$1 port=${ports[$1]}
  mkdir -p "$dir/nginx$i"
  cat >"$dir/nginx$i/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $dir/nginx$i/nginx.pid;
error_log $dir/nginx$i/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $dir/nginx$i;
  proxy_temp_path $dir/nginx$i;
  fastcgi_temp_path $dir/nginx$i;
  uwsgi_temp_path $dir/nginx$i;
  scgi_temp_path $dir/nginx$i;
  keepalive_requests 100000;
  server {
    listen 127.0.0.1:$port;
    location / { return 200 "backend $((i + 1))\n"; }
  }
}
EOF
  "$nginx_bin" -p "$dir/nginx$i" -e "$dir/nginx$i/error.log" -c "$dir/nginx$i/nginx.conf" &
  backend_pid[$i]=$!
  pids+=("$!")
}

wait_for_port() {
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "soak.sh: nothing listens on port $1" >&2
  return 1
}

for i in 0 1 2; do start_backend "$i"; done
for port in "${ports[@]}"; do wait_for_port "$port"; done

# ---- sluice ----
cat >"$dir/sluice.json" <<EOF
{"listen": "127.0.0.1:$lb_port", "healthCheckInterval": "1s",
 "servers": ["http://127.0.0.1:$port1", "http://127.0.0.1:$port2", "http://127.0.0.1:$port3"]}
EOF
RUST_LOG=${RUST_LOG:-warn} "$sluice_bin" --config "$dir/sluice.json" 2>"$dir/sluice.log" &
sluice_pid=$!
pids+=("$sluice_pid")
wait_for_port "$lb_port"

sample() {
  local rss threads fds
  rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$sluice_pid/status")
  threads=$(awk '/^Threads:/ {print $2}' "/proc/$sluice_pid/status")
  fds=$(find "/proc/$sluice_pid/fd" -mindepth 1 -maxdepth 1 | wc -l)
  echo "$1,$rss,$threads,$fds"
}
echo "seconds,rss_kib,threads,fds" >"$dir/samples.csv"
idle_before=$(sample idle)
echo "sluice pid $sluice_pid, idle before load: rss_kib,threads,fds = ${idle_before#idle,}"

# ---- load, with a backend killed and restarted half-way ----
echo "wrk -t$threads -c$connections -d${seconds}s against sluice on 127.0.0.1:$lb_port (logs: $dir)"
timeout $((seconds + 60)) wrk -t"$threads" -c"$connections" -d"${seconds}s" --timeout 10s \
  "http://127.0.0.1:$lb_port/" >"$dir/wrk.txt" 2>&1 &
wrk_pid=$!
pids+=("$wrk_pid")

kill_at=$((seconds / 2))
down_for=$((seconds / 10 < 30 ? seconds / 10 : 30))
down_for=$((down_for < 1 ? 1 : down_for))
start=$(date +%s)
killed=no
restarted=no
next_sample=$SAMPLE_EVERY
while kill -0 "$wrk_pid" 2>/dev/null; do
  sleep 1
  now=$(($(date +%s) - start))
  if [ "$killed" = no ] && [ "$now" -ge "$kill_at" ]; then
    kill -KILL "${backend_pid[1]}"
    wait "${backend_pid[1]}" 2>/dev/null || true
    forget_pid "${backend_pid[1]}"
    echo "[$now s] killed backend 2 (pid ${backend_pid[1]}, port $port2)"
    killed=yes
  fi
  if [ "$killed" = yes ] && [ "$restarted" = no ] && [ "$now" -ge $((kill_at + down_for)) ]; then
    start_backend 1
    echo "[$now s] started backend 2 again (pid ${backend_pid[1]})"
    restarted=yes
  fi
  if [ "$now" -ge "$next_sample" ] && [ "$now" -lt "$seconds" ] && kill -0 "$sluice_pid" 2>/dev/null; then
    sample "$now" >>"$dir/samples.csv"
    next_sample=$((next_sample + SAMPLE_EVERY))
  fi
done
wait "$wrk_pid" || true
forget_pid "$wrk_pid"

# ---- report ----
echo "== wrk"
cat "$dir/wrk.txt"
if ! kill -0 "$sluice_pid" 2>/dev/null; then
  echo "soak.sh: sluice is not running any more (see $dir/sluice.log)" >&2
  exit 1
fi
# Idle backend connections are closed by the health thread once older than backendIdle
# (default 4 s); wait for that (at most 20 s) before the idle sample after the load.
idle_fds_before=$(echo "$idle_before" | cut -d, -f4)
for _ in $(seq 40); do
  idle_after=$(sample idle)
  [ "$(echo "$idle_after" | cut -d, -f4)" -le $((idle_fds_before + 2)) ] && break
  sleep 0.5
done
requests=$(awk '/requests in/ {print $1}' "$dir/wrk.txt")
socket_errors=$(sed -n 's/.*Socket errors: connect \([0-9]*\), read \([0-9]*\), write \([0-9]*\), timeout \([0-9]*\).*/\1 \2 \3 \4/p' "$dir/wrk.txt" |
  awk '{print $1 + $2 + $3 + $4}')
non_2xx=$(awk '/Non-2xx or 3xx responses/ {print $NF}' "$dir/wrk.txt")
first=$(sed -n 2p "$dir/samples.csv")
last=$(tail -1 "$dir/samples.csv")
IFS=, read -r t0 rss0 threads0 fds0 <<<"$first"
IFS=, read -r t1 rss1 threads1 fds1 <<<"$last"
echo "== sluice under load (samples: $dir/samples.csv)"
printf '%-22s %10s %8s %6s\n' "" "rss_kib" "threads" "fds"
printf '%-22s %10s %8s %6s\n' "start (at ${t0} s)" "$rss0" "$threads0" "$fds0"
printf '%-22s %10s %8s %6s\n' "end (at ${t1} s)" "$rss1" "$threads1" "$fds1"
printf '%-22s %10s %8s %6s\n' "max" \
  "$(tail -n +2 "$dir/samples.csv" | cut -d, -f2 | sort -n | tail -1)" \
  "$(tail -n +2 "$dir/samples.csv" | cut -d, -f3 | sort -n | tail -1)" \
  "$(tail -n +2 "$dir/samples.csv" | cut -d, -f4 | sort -n | tail -1)"
echo "idle before load: ${idle_before#idle,}; idle after load: ${idle_after#idle,} (rss_kib,threads,fds)"
echo "== result"
echo "requests ${requests:-?}; socket errors ${socket_errors:-0}; non-2xx responses ${non_2xx:-0}"
echo "backend 2 killed at ${kill_at} s, started again at $((kill_at + down_for)) s"
IFS=, read -r _ _ _ idle_fds_after <<<"$idle_after"
grown=no
if [ "$rss1" -gt $((rss0 + rss0 / 10 + 4096)) ]; then
  echo "RSS grew under load: ${rss0} KiB -> ${rss1} KiB"
  grown=yes
fi
if [ "$idle_fds_after" -gt $((idle_fds_before + 2)) ]; then
  echo "open file descriptors at idle grew: ${idle_fds_before} -> ${idle_fds_after}"
  grown=yes
fi
if [ "$grown" = no ]; then
  echo "no growth: RSS under load ${rss0} -> ${rss1} KiB; file descriptors at idle ${idle_fds_before} -> ${idle_fds_after}"
fi
failed=$((${socket_errors:-0} + ${non_2xx:-0}))
if [ -z "${requests:-}" ]; then
  echo "wrk reported no requests (see $dir/wrk.txt)"
  failed=1
elif [ "$failed" -gt 0 ]; then
  echo "requests failed: ${socket_errors:-0} socket errors, ${non_2xx:-0} responses other than 2xx/3xx"
fi
verdict=passed
if [ "$grown" = yes ] || [ "$failed" -gt 0 ]; then verdict=failed; fi

# ---- result file ----
samples_json=$(tail -n +2 "$dir/samples.csv" |
  awk -F, '{printf "%s{\"seconds\": %s, \"rss_kib\": %s, \"threads\": %s, \"fds\": %s}", (NR > 1 ? ", " : ""), $1, $2, $3, $4}')
max_rss=$(tail -n +2 "$dir/samples.csv" | cut -d, -f2 | sort -n | tail -1)
grew_json=false
[ "$grown" = yes ] && grew_json=true
mkdir -p "$(dirname "$json_out")"
cat >"$json_out" <<JSON
{
  "when": "$started_at",
  "command": "scripts/soak.sh $seconds",
  "seconds": $seconds,
  "connections": $connections,
  "wrk_threads": $threads,
  "machine": {"cpus": $(nproc), "kernel": "$(uname -r)"},
  "sluice": "$("$sluice_bin" --version) ($(git -C "$root" describe --always --dirty 2>/dev/null || echo unknown))",
  "requests": ${requests:-0},
  "socket_errors": ${socket_errors:-0},
  "non_2xx": ${non_2xx:-0},
  "backend_2_killed_at_s": $kill_at,
  "backend_2_restarted_at_s": $((kill_at + down_for)),
  "rss_kib": {"start": $rss0, "end": $rss1, "max": $max_rss},
  "threads": {"start": $threads0, "end": $threads1},
  "idle_fds": {"before": $idle_fds_before, "after": $idle_fds_after},
  "grew": $grew_json,
  "verdict": "$verdict",
  "samples": [$samples_json]
}
JSON
echo "result: $json_out"
summary "$json_out"
echo "logs: $dir"
[ "$verdict" = passed ]
