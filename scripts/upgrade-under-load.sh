#!/usr/bin/env bash
# upgrade-under-load.sh: wrk at 50 keep-alive connections through a sluice binary upgrade
# (SIGUSR2), through a sluice reload that adds and removes listeners (SIGHUP), and through
# nginx's own binary upgrade (USR2, WINCH, QUIT) as the reference; counts what wrk saw.
#
# Usage:
#   scripts/upgrade-under-load.sh [--duration S] [--json FILE]
#   scripts/upgrade-under-load.sh --table FILE      # print the table of a results file again
#
# Environment: SLUICE_BIN (default target/release/sluice under the repo root; built with
#   `cargo build --release` when missing).
#
# What it does (loopback only):
#   - installs wrk, nginx and curl with apt-get if any is missing (root);
#   - starts one nginx backend on 127.0.0.1:27001 (GET / answers "ok");
#   - sluice USR2: copies the sluice binary to a work directory, starts it on
#     127.0.0.1:27080 in front of the backend, runs wrk -t2 -c50 for --duration seconds
#     (10 by default), and a third of the way in sends SIGUSR2; checks that the pid file
#     names a new process and that the old one exited;
#   - sluice SIGHUP: sluice with listeners :27080 and :27081, wrk on :27080, and a third of
#     the way in the file is changed to :27080 and :27082 and SIGHUP sent; checks that
#     :27082 answers and :27081 refuses;
#   - nginx USR2: nginx as a reverse proxy on :27080 in front of the same backend (client
#     keep-alive on), wrk the same way, and a third of the way in USR2 to the master, then
#     WINCH and QUIT to the old master once the new one runs;
#   - prints a table (requests, socket errors by kind, non-2xx answers) and writes every
#     number as JSON to --json (default scripts/results/upgrade-<UTC time>.json).
#
# Every process started here is stopped by its PID (also on Ctrl-C).
# Exit status: 0 when the sluice runs saw no socket error and no non-2xx answer, 1 when
# they did, 2 on setup errors.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SLUICE_BIN=${SLUICE_BIN:-$ROOT/target/release/sluice}
DURATION=10
JSON=$ROOT/scripts/results/upgrade-$(date -u +%Y%m%dT%H%M%SZ).json
BACKEND=127.0.0.1:27001
LB=127.0.0.1:27080
REMOVED=127.0.0.1:27081
ADDED=127.0.0.1:27082

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

# Prints the table of results file $1.
table() {
    python3 - "$1" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
print(f"wrk -t2 -c{report['connections']} for {report['duration_s']} s per run; {report['date']}, "
      f"sluice {report['sluice_commit']}, {report['nginx_version']}, {report['cpus']} CPUs")
print()
print("| run | requests | socket errors (connect / read / write / timeout) | non-2xx | checks |")
print("|---|---:|---|---:|---|")
for run in report["runs"]:
    e = run["socket_errors"]
    total = sum(e.values())
    kinds = f"{e['connect']} / {e['read']} / {e['write']} / {e['timeout']}"
    checks = ", ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in run["checks"].items())
    print(f"| {run['name']} | {run['requests']} | {total} ({kinds}) | {run['non_2xx']} | {checks} |")
PY
}

while (($#)); do
    case $1 in
        -h|--help) usage; exit 0 ;;
        --duration) DURATION=${2:?--duration needs seconds}; shift ;;
        --json) JSON=${2:?--json needs a file}; shift ;;
        --table) table "${2:?--table needs a results file}"; exit 0 ;;
        *) echo "upgrade-under-load.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
[[ $DURATION =~ ^[0-9]+$ ]] && ((DURATION >= 3 && DURATION <= 60)) \
    || { echo "upgrade-under-load.sh: --duration must be 3 to 60 seconds" >&2; exit 2; }

log() { printf '[upgrade %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

# ---------------------------------------------------------------- tools and processes
# shellcheck source=scripts/lib/processes.sh
source "$ROOT/scripts/lib/processes.sh"
need_tools wrk nginx curl python3
need_sluice
NGINX_BIN=$(command -v nginx)
ulimit -n "$(ulimit -Hn)"
make_work upgrade

# Waits up to 10 s until file $1 holds a pid other than $2; prints it.
wait_for_new_pid() {
    local pid
    for _ in $(seq 100); do
        pid=$(cat "$1" 2>/dev/null || true)
        [[ -n $pid && $pid != "$2" ]] && { echo "$pid"; return 0; }
        sleep 0.1
    done
    return 1
}

# Waits up to 40 s for process $1 (not necessarily our child) to be gone.
wait_gone() {
    for _ in $(seq 400); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
    return 1
}

# ---------------------------------------------------------------- the backend
cat >"$WORK/backend.conf" <<EOF
worker_processes 1; pid $WORK/backend.pid; error_log $WORK/backend-error.log;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  client_body_temp_path $WORK/b-body; proxy_temp_path $WORK/b-proxy; fastcgi_temp_path $WORK/b-fcgi;
  uwsgi_temp_path $WORK/b-uwsgi; scgi_temp_path $WORK/b-scgi;
  server { listen $BACKEND; location / { return 200 "ok\n"; } } }
EOF
start "$NGINX_BIN" -c "$WORK/backend.conf" -g 'daemon off;'
wait_for_200 "$BACKEND" || exit 2

# Runs wrk against $1 in the background for $DURATION seconds; output in $WORK/wrk-$2.txt.
start_wrk() {
    start wrk -t2 -c50 -d"${DURATION}s" "http://$1/" >"$WORK/wrk-$2.txt" 2>&1
    WRK_PID=$STARTED
}

CHECKS=()
check() { CHECKS+=("$1=$2"); }
# Records run $1 from wrk's output file and the checks made meanwhile.
record() {
    wait "$WRK_PID" || true
    printf '%s\n' "${CHECKS[@]}" >"$WORK/checks-$1.txt"
    CHECKS=()
}

sluice_config() {
    local listeners="" addr
    for addr in "$@"; do listeners+="{\"listen\": \"$addr\", \"pool\": \"web\"},"; done
    printf '{"listeners": [%s], "pools": {"web": {"servers": ["http://%s"]}}, "pidFile": "%s"}\n' \
        "${listeners%,}" "$BACKEND" "$WORK/sluice.pid" >"$WORK/sluice.json"
}

ONE_THIRD=$(python3 -c "print(round($DURATION / 3, 1))")

# ---------------------------------------------------------------- sluice USR2
cp "$SLUICE_BIN" "$WORK/sluice"
sluice_config "$LB"
RUST_LOG=warn start "$WORK/sluice" --config "$WORK/sluice.json" 2>>"$WORK/sluice.log"
OLD=$STARTED
wait_for_200 "$LB" || { tail -5 "$WORK/sluice.log" >&2; exit 2; }
log "sluice USR2: wrk for ${DURATION}s, SIGUSR2 at ${ONE_THIRD}s"
start_wrk "$LB" sluice-usr2
sleep "$ONE_THIRD"
kill -USR2 "$OLD"
if NEW=$(wait_for_new_pid "$WORK/sluice.pid" "$OLD"); then check pid_file_names_new_process true; else check pid_file_names_new_process false; fi
PIDS+=("${NEW:-0}")
if wait_gone "$OLD"; then check old_process_exited true; else check old_process_exited false; fi
wait "$OLD" 2>/dev/null || true
record sluice-usr2
stop_pid "${NEW:-0}"

# ---------------------------------------------------------------- sluice SIGHUP
sluice_config "$LB" "$REMOVED"
RUST_LOG=warn start "$WORK/sluice" --config "$WORK/sluice.json" 2>>"$WORK/sluice.log"
SLUICE=$STARTED
wait_for_200 "$LB" && wait_for_200 "$REMOVED" || { tail -5 "$WORK/sluice.log" >&2; exit 2; }
log "sluice SIGHUP: wrk for ${DURATION}s, listeners changed at ${ONE_THIRD}s"
start_wrk "$LB" sluice-sighup
sleep "$ONE_THIRD"
sluice_config "$LB" "$ADDED"
kill -HUP "$SLUICE"
if wait_for_200 "$ADDED"; then check added_listener_answers true; else check added_listener_answers false; fi
if curl -s -o /dev/null -m 1 "http://$REMOVED/"; then check removed_listener_refuses false; else check removed_listener_refuses true; fi
record sluice-sighup
stop_pid "$SLUICE"

# ---------------------------------------------------------------- nginx USR2 + WINCH + QUIT
cat >"$WORK/lb.conf" <<EOF
worker_processes 2; pid $WORK/lb.pid; error_log $WORK/lb-error.log;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  client_body_temp_path $WORK/l-body; proxy_temp_path $WORK/l-proxy; fastcgi_temp_path $WORK/l-fcgi;
  uwsgi_temp_path $WORK/l-uwsgi; scgi_temp_path $WORK/l-scgi;
  upstream web { server $BACKEND; keepalive 64; }
  server { listen $LB; location / { proxy_pass http://web; proxy_http_version 1.1;
           proxy_set_header Connection ""; } } }
EOF
"$NGINX_BIN" -c "$WORK/lb.conf"
NGINX_OLD=$(cat "$WORK/lb.pid")
PIDS+=("$NGINX_OLD")
wait_for_200 "$LB" || exit 2
log "nginx USR2: wrk for ${DURATION}s, USR2 at ${ONE_THIRD}s, then WINCH and QUIT"
start_wrk "$LB" nginx-usr2
sleep "$ONE_THIRD"
kill -USR2 "$NGINX_OLD"
if NGINX_NEW=$(wait_for_new_pid "$WORK/lb.pid" "$NGINX_OLD"); then check new_master_runs true; else check new_master_runs false; fi
PIDS+=("${NGINX_NEW:-0}")
kill -WINCH "$NGINX_OLD"
kill -QUIT "$NGINX_OLD"
if wait_gone "$NGINX_OLD"; then check old_master_exited true; else check old_master_exited false; fi
record nginx-usr2
kill -QUIT "${NGINX_NEW:-0}" 2>/dev/null || true
wait_gone "${NGINX_NEW:-0}" || true

# ---------------------------------------------------------------- results
mkdir -p "$(dirname "$JSON")"
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
NGINX_VERSION=$("$NGINX_BIN" -v 2>&1 | sed 's/^nginx version: //')
python3 - "$WORK" "$JSON" "$DURATION" "$COMMIT" "$NGINX_VERSION" <<'PY'
import json, os, re, sys, datetime
work, out, duration, commit, nginx = sys.argv[1:6]
names = {"sluice-usr2": "sluice: SIGUSR2 binary upgrade",
         "sluice-sighup": "sluice: SIGHUP adding and removing listeners",
         "nginx-usr2": "nginx: USR2 + WINCH + QUIT binary upgrade"}
runs = []
for key, name in names.items():
    text = open(os.path.join(work, f"wrk-{key}.txt")).read()
    requests = int(re.search(r"(\d+) requests in", text).group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    errors = dict(zip(["connect", "read", "write", "timeout"], map(int, m.groups()))) if m else \
        {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    checks = dict(line.strip().split("=") for line in open(os.path.join(work, f"checks-{key}.txt")) if "=" in line)
    runs.append({"name": name, "requests": requests, "socket_errors": errors,
                 "non_2xx": int(m.group(1)) if m else 0,
                 "checks": {k: v == "true" for k, v in checks.items()}, "wrk_output": text})
report = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
          "duration_s": int(duration), "connections": 50, "cpus": os.cpu_count(),
          "sluice_commit": commit, "nginx_version": nginx,
          "command": "scripts/upgrade-under-load.sh --duration " + duration, "runs": runs}
with open(out, "w") as f:
    json.dump(report, f, indent=2)
PY
log "wrote $JSON"
table "$JSON"
python3 - "$JSON" <<'PY'
import json, sys
runs = [r for r in json.load(open(sys.argv[1]))["runs"] if r["name"].startswith("sluice")]
bad = any(sum(r["socket_errors"].values()) or r["non_2xx"] or not all(r["checks"].values()) for r in runs)
sys.exit(1 if bad else 0)
PY
