#!/usr/bin/env bash
# pg-through-sluice.sh: real PostgreSQL clients through sluice in TCP mode, in front of two
# throwaway PostgreSQL servers on loopback.
#
# Usage:
#   scripts/pg-through-sluice.sh [--duration S] [--clients N] [--sluice-bin PATH] [--keep-tmp]
#
# Environment: SLUICE_BIN (default target/debug/sluice under the repo root, built with
#   `cargo build` if missing).
#
# What it does:
#   - installs PostgreSQL with apt-get if initdb is not found under /usr/lib/postgresql (root);
#   - starts two PostgreSQL servers on free loopback ports, in a temporary directory
#     (initdb and the servers run as the `postgres` user when this script runs as root);
#   - starts sluice with one tcp listener in front of both (round robin, TCP health checks);
#   - through sluice: `psql -c 'select 1'` (twice, showing that both servers answer),
#     `pgbench -i` (twice, so both servers get the tables), `pgbench -c N -T S`, and
#     `pgbench -C -c N -T 2` (a new connection for every transaction);
#   - prints the transactions and failures of each run. The failures must be 0.
#
# Everything started is stopped by PID on exit (sluice, then each postmaster).
# Exit status: 0 when every step succeeded with no failed transaction, 1 otherwise,
# 2 on usage or setup errors.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SLUICE_BIN=${SLUICE_BIN:-$ROOT/target/debug/sluice}
DURATION=5
CLIENTS=8
KEEP_TMP=0

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

while (($#)); do
    case $1 in
        --duration) DURATION=${2:?--duration needs seconds}; shift 2 ;;
        --clients) CLIENTS=${2:?--clients needs a number}; shift 2 ;;
        --sluice-bin) SLUICE_BIN=${2:?--sluice-bin needs a path}; shift 2 ;;
        --keep-tmp) KEEP_TMP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done

say() { printf '== %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

pg_bin_dir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

if [[ -z $(pg_bin_dir) || ! -x $(pg_bin_dir)/initdb ]]; then
    if [[ $(id -u) -ne 0 ]]; then
        echo "PostgreSQL is not installed and installing it needs root (apt-get install postgresql)" >&2
        exit 2
    fi
    say "installing postgresql with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql >/dev/null
fi
PG_BIN=$(pg_bin_dir)
[[ -x $PG_BIN/initdb && -x $PG_BIN/pg_ctl && -x $PG_BIN/pgbench && -x $PG_BIN/psql ]] ||
    { echo "no initdb, pg_ctl, psql and pgbench under $PG_BIN" >&2; exit 2; }

if [[ ! -x $SLUICE_BIN ]]; then
    say "building sluice (cargo build)"
    (cd "$ROOT" && cargo build --quiet) || { echo "cargo build failed" >&2; exit 2; }
    SLUICE_BIN=$ROOT/target/debug/sluice
fi

WORK=$(mktemp -d /tmp/sluice-pg.XXXXXX)
SLUICE_PID=
POSTMASTER_PIDS=()

# Runs a command as the postgres user when we are root (initdb refuses to run as root).
as_pg() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

stop_pid() {
    local pid=$1 signal=$2
    kill -0 "$pid" 2>/dev/null || return 0
    kill "-$signal" "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
    local status=$?
    [[ -n $SLUICE_PID ]] && stop_pid "$SLUICE_PID" TERM
    for pid in "${POSTMASTER_PIDS[@]}"; do
        stop_pid "$pid" INT   # SIGINT is PostgreSQL's "fast" shutdown
    done
    if ((KEEP_TMP)); then
        echo "kept $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for_port() {
    local port=$1
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

[[ $(id -u) -eq 0 ]] && chown postgres: "$WORK"
PORTS=()
for i in 1 2; do
    port=$(free_port)
    data=$WORK/pg$i
    say "starting PostgreSQL $i on 127.0.0.1:$port"
    as_pg "$PG_BIN/initdb" -D "$data" -A trust -U postgres --no-sync >"$WORK/initdb$i.log" 2>&1 ||
        { cat "$WORK/initdb$i.log" >&2; exit 2; }
    as_pg "$PG_BIN/pg_ctl" -D "$data" -l "$WORK/pg$i.log" -w -t 30 \
        -o "-p $port -k $WORK -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50" start >/dev/null ||
        { cat "$WORK/pg$i.log" >&2; exit 2; }
    POSTMASTER_PIDS+=("$(head -n 1 "$data/postmaster.pid")")
    PORTS+=("$port")
done

LB_PORT=$(free_port)
cat >"$WORK/sluice.json" <<JSON
{
  "listeners": [{"listen": "127.0.0.1:$LB_PORT", "mode": "tcp", "pool": "db"}],
  "pools": {"db": {"servers": ["tcp://127.0.0.1:${PORTS[0]}", "tcp://127.0.0.1:${PORTS[1]}"],
                   "healthCheckInterval": "1s"}}
}
JSON
say "starting sluice on 127.0.0.1:$LB_PORT (tcp mode, round robin over both servers)"
RUST_LOG=${RUST_LOG:-warn} "$SLUICE_BIN" -c "$WORK/sluice.json" >"$WORK/sluice.log" 2>&1 &
SLUICE_PID=$!
wait_for_port "$LB_PORT" || { cat "$WORK/sluice.log" >&2; fail "sluice did not start"; }

export PGHOST=127.0.0.1 PGPORT=$LB_PORT PGUSER=postgres PGDATABASE=postgres PGCONNECT_TIMEOUT=10

say "psql -c 'select 1' through sluice, twice"
answered=()
for _ in 1 2; do
    answer=$("$PG_BIN/psql" -X -A -t -F ' ' -c 'select 1, inet_server_port()') || fail "psql failed"
    [[ $answer == "1 "* ]] || fail "psql select 1 answered ${answer@Q}"
    answered+=("${answer#1 }")
done
echo "select 1: ok; answered by the servers on ports ${answered[*]}"
[[ ${answered[0]} != "${answered[1]}" ]] || fail "both connections went to the same server"

say "pgbench -i through sluice, twice (round robin: once per server)"
for _ in 1 2; do
    "$PG_BIN/pgbench" -i -q -s 1 >>"$WORK/pgbench-init.log" 2>&1 ||
        { cat "$WORK/pgbench-init.log" >&2; fail "pgbench -i failed"; }
done
for port in "${PORTS[@]}"; do
    tables=$("$PG_BIN/psql" -X -A -t -p "$port" -c "select count(*) from pg_tables where tablename like 'pgbench_%'")
    [[ $tables == 4 ]] || fail "the server on port $port has $tables pgbench tables, not 4"
done
echo "both servers have the pgbench tables"

errors=0
# Runs pgbench with the given arguments, prints its summary, and adds its failures to $errors.
bench() {
    local name=$1; shift
    local log=$WORK/$name.log
    say "pgbench $* through sluice"
    if ! "$PG_BIN/pgbench" "$@" >"$log" 2>&1; then
        cat "$log" >&2
        errors=$((errors + 1))
        echo "pgbench $name exited with an error"
        return
    fi
    local processed failed
    processed=$(sed -n 's/^number of transactions actually processed: //p' "$log")
    failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$log")
    failed=${failed:-0}
    grep -E '^(tps|latency average)' "$log" || true
    echo "transactions: $processed, failed: $failed"
    errors=$((errors + failed))
}
bench steady -c "$CLIENTS" -j 2 -T "$DURATION"
bench reconnecting -C -c "$CLIENTS" -j 2 -T 2

say "result"
kill -0 "$SLUICE_PID" 2>/dev/null || fail "sluice is no longer running"
echo "errors: $errors"
((errors == 0)) || exit 1
