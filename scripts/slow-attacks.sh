#!/usr/bin/env bash
# slow-attacks.sh: three slow-client attacks from one address against sluice and HAProxy,
# each in front of two nginx backends, while an innocent client on another address asks.
#
# Usage:
#   scripts/slow-attacks.sh [--duration S] [--systems sluice,haproxy]
#                           [--attacks slowloris,slow_body,slow_read] [--json FILE]
#
# Environment: SLUICE_BIN (default target/release/sluice under the repo root; built with
#   `cargo build --release` when missing).
#
# What it does (loopback only: 127.0.0.1 for everything, 127.0.0.2 for the innocent client):
#   - installs slowhttptest, nginx, haproxy and curl with apt-get if any is missing (root);
#   - starts one nginx with two backends (127.0.0.1:26001 and :26002; GET / answers "ok",
#     GET /big a 1 MiB file);
#   - for each system and attack: starts the balancer afresh on 127.0.0.1:26080 with its
#     defaults (sluice: only listen, servers and the admin API on :26090; HAProxy: the
#     timeouts of Debian's stock haproxy.cfg), then runs slowhttptest from 127.0.0.1 with
#     1,000 connections opened at 200 a second for --duration seconds (25 by default):
#       slowloris  -H: heads trickled, a header line every 5 s
#       slow_body  -B: POST with Content-Length 8192, a few body bytes every 5 s
#       slow_read  -X: GET /big (1 MiB), read 32 bytes a second through a small window
#     and meanwhile asks GET / every 0.5-1 s with curl --interface 127.0.0.2 and a 3 s limit;
#   - prints per system and attack how many innocent requests were answered within 3 s, and
#     writes every count (and sluice's slowClients numbers from /stats) as JSON to --json
#     (default scripts/results/slow-attacks-<UTC time>.json).
#
# Every process started here is stopped by its PID (also on Ctrl-C).
# Exit status: 0 when every innocent request was answered, 1 when some were not, 2 on setup
# errors.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SLUICE_BIN=${SLUICE_BIN:-$ROOT/target/release/sluice}
DURATION=25
SYSTEMS=sluice,haproxy
ATTACKS=slowloris,slow_body,slow_read
JSON=$ROOT/scripts/results/slow-attacks-$(date -u +%Y%m%dT%H%M%SZ).json
LB=127.0.0.1:26080
ADMIN=127.0.0.1:26090
BACKENDS=(127.0.0.1:26001 127.0.0.1:26002)
INNOCENT=127.0.0.2

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

while (($#)); do
    case $1 in
        -h|--help) usage; exit 0 ;;
        --duration) DURATION=${2:?--duration needs seconds}; shift ;;
        --systems) SYSTEMS=${2:?--systems needs a list}; shift ;;
        --attacks) ATTACKS=${2:?--attacks needs a list}; shift ;;
        --json) JSON=${2:?--json needs a file}; shift ;;
        *) echo "slow-attacks.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
[[ $DURATION =~ ^[0-9]+$ ]] && ((DURATION >= 5 && DURATION <= 600)) \
    || { echo "slow-attacks.sh: --duration must be 5 to 600 seconds" >&2; exit 2; }

log() { printf '[slow-attacks %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

# ---------------------------------------------------------------- tools and processes
# shellcheck source=scripts/lib/processes.sh
source "$ROOT/scripts/lib/processes.sh"
need_tools slowhttptest nginx haproxy curl python3
need_sluice
# slowhttptest needs a descriptor per connection, and so do the balancers.
ulimit -n "$(ulimit -Hn)"
make_work slow-attacks

# ---------------------------------------------------------------- nginx with two backends
head -c $((1 << 20)) /dev/zero | tr '\0' 'x' >"$WORK/big"
chmod 644 "$WORK/big"
{
    echo "worker_processes 2; pid $WORK/nginx.pid; error_log $WORK/nginx-error.log;"
    echo "events { worker_connections 4096; }"
    echo "http { access_log off; client_body_temp_path $WORK/nginx-body;"
    echo "  proxy_temp_path $WORK/nginx-proxy; fastcgi_temp_path $WORK/nginx-fcgi;"
    echo "  uwsgi_temp_path $WORK/nginx-uwsgi; scgi_temp_path $WORK/nginx-scgi;"
    for backend in "${BACKENDS[@]}"; do
        echo "  server { listen $backend; location = /big { alias $WORK/big; }"
        echo "           location / { return 200 \"ok\\n\"; } }"
    done
    echo "}"
} >"$WORK/nginx.conf"
start nginx -c "$WORK/nginx.conf" -g 'daemon off;'
NGINX_PID=$STARTED
for backend in "${BACKENDS[@]}"; do wait_for_200 "$backend" || exit 2; done
log "nginx backends up (pid $NGINX_PID)"

# ---------------------------------------------------------------- the balancers
write_sluice_config() {
    local servers
    servers=$(printf '"http://%s",' "${BACKENDS[@]}")
    printf '{"listen": "%s", "servers": [%s], "admin": {"listen": "%s"}}\n' \
        "$LB" "${servers%,}" "$ADMIN" >"$WORK/sluice.json"
}

write_haproxy_config() {
    {
        printf 'defaults\n    mode http\n    option dontlognull\n'
        printf '    timeout connect 5000\n    timeout client 50000\n    timeout server 50000\n'
        printf 'frontend front\n    bind %s\n    default_backend two\n' "$LB"
        printf 'backend two\n    balance roundrobin\n'
        local i=0 backend
        for backend in "${BACKENDS[@]}"; do
            printf '    server b%d %s\n' "$i" "$backend"
            i=$((i + 1))
        done
    } >"$WORK/haproxy.cfg"
}

start_balancer() {
    case $1 in
        sluice)
            write_sluice_config
            RUST_LOG=warn start "$SLUICE_BIN" --config "$WORK/sluice.json" 2>>"$WORK/sluice.log" ;;
        haproxy)
            write_haproxy_config
            start haproxy -db -f "$WORK/haproxy.cfg" 2>>"$WORK/haproxy.log" ;;
    esac
    BALANCER_PID=$STARTED
    wait_for_200 "$LB" || { tail -5 "$WORK/$1.log" >&2; return 1; }
}

# ---------------------------------------------------------------- attacks
attack_args() {
    local common=(-c 1000 -r 200 -l "$DURATION" -p 3)
    case $1 in
        slowloris) echo "-H ${common[*]} -i 5 -x 24 -u http://$LB/" ;;
        slow_body) echo "-B ${common[*]} -i 5 -s 8192 -x 4 -u http://$LB/" ;;
        slow_read) echo "-X ${common[*]} -w 32 -y 64 -n 1 -z 32 -k 1 -u http://$LB/big" ;;
        *) log "unknown attack $1"; return 1 ;;
    esac
}

# The innocent client: GET / every 0.5-1 s from 127.0.0.2 with a 3 s limit, for $1 seconds;
# one line "status seconds" per request in $2.
innocent() {
    local until=$((SECONDS + $1))
    while ((SECONDS < until)); do
        curl --interface "$INNOCENT" -s -o /dev/null -m 3 -w '%{http_code} %{time_total}\n' \
            "http://$LB/" >>"$2" || true
        sleep "0.$((5 + RANDOM % 5))"
    done
}

RESULTS=$WORK/results.tsv
: >"$RESULTS"
failed=0
IFS=, read -ra systems <<<"$SYSTEMS"
IFS=, read -ra attacks <<<"$ATTACKS"
for system in "${systems[@]}"; do
    for attack in "${attacks[@]}"; do
        args=$(attack_args "$attack") || exit 2
        start_balancer "$system" || exit 2
        log "$system: $attack for ${DURATION}s (balancer pid $BALANCER_PID)"
        answers=$WORK/innocent-$system-$attack.txt
        : >"$answers"
        # shellcheck disable=SC2086  # the attack's arguments are words
        start slowhttptest $args >>"$WORK/slowhttptest.log" 2>&1
        ATTACK_PID=$STARTED
        innocent "$DURATION" "$answers"
        for _ in $(seq 100); do kill -0 "$ATTACK_PID" 2>/dev/null || break; sleep 0.1; done
        stats=null
        if [[ $system == sluice ]]; then
            stats=$(curl -s -m 3 "http://$ADMIN/stats" || echo null)
        fi
        stop_pid "$ATTACK_PID"; forget "$ATTACK_PID"
        stop_pid "$BALANCER_PID"; forget "$BALANCER_PID"
        asked=$(wc -l <"$answers")
        answered=$(awk '$1 == 200 && $2 <= 3 { n++ } END { print n + 0 }' "$answers")
        slowest=$(awk 'BEGIN { m = 0 } $2 > m { m = $2 } END { print m }' "$answers")
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$system" "$attack" "$asked" "$answered" "$slowest" \
            "$(tr -d '\n\t' <<<"$stats")" >>"$RESULTS"
        log "$system: $attack: $answered of $asked innocent requests answered within 3 s (slowest ${slowest}s)"
        ((answered == asked)) || failed=1
    done
done

# ---------------------------------------------------------------- report
mkdir -p "$(dirname "$JSON")"
python3 - "$RESULTS" "$JSON" "$DURATION" <<'PY'
import json, sys, datetime, platform
rows = []
for line in open(sys.argv[1]):
    system, attack, asked, answered, slowest, stats = line.rstrip("\n").split("\t")
    try:
        slow = json.loads(stats).get("slowClients") if stats not in ("", "null") else None
    except ValueError:
        slow = None
    rows.append({"system": system, "attack": attack, "innocentAsked": int(asked),
                 "innocentAnsweredWithin3s": int(answered), "slowestSeconds": float(slowest),
                 "sluiceSlowClients": slow})
report = {
    "script": "scripts/slow-attacks.sh",
    "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "host": platform.node(),
    "attackSeconds": int(sys.argv[3]),
    "attack": "slowhttptest from 127.0.0.1: 1000 connections at 200/s; innocent curl from 127.0.0.2 every 0.5-1 s, 3 s limit",
    "results": rows,
}
with open(sys.argv[2], "w") as out:
    json.dump(report, out, indent=2)
    out.write("\n")
print()
print(f"{'attack':<10} {'system':<8} innocent answered within 3 s")
for r in rows:
    print(f"{r['attack']:<10} {r['system']:<8} {r['innocentAnsweredWithin3s']} of {r['innocentAsked']}"
          f" (slowest {r['slowestSeconds']:.2f} s)")
PY
log "results written to $JSON"
exit "$failed"
