#!/usr/bin/env bash
# autoscale-example.sh: a small autoscaler that adds and removes sluice backends through the
# admin API, as the seed's scale_servers() does: read the load, decide, change.
#
# Usage: scripts/autoscale-example.sh [--once] [--dry-run]
#
# Each round it reads GET /stats, sums the recent requests per second of one pool and divides
# by the backends available (healthy, not draining), then:
#   - above HIGH requests/s per backend: adds the first SPARE backend not yet listed
#     (POST /servers); sluice probes it and puts it in rotation when the probe passes;
#   - below LOW requests/s per backend, with more than MIN available: removes the newest
#     backend that was added at run time (DELETE /servers?url=); sluice drains it and takes it
#     out once its in-flight requests have finished;
#   - otherwise it holds. It never removes the backends the configuration file lists.
# A real autoscaler would start and stop machines where this one only picks from SPARE.
#
# Environment:
#   ADMIN     the admin API              (default http://127.0.0.1:9000)
#   TOKEN     admin.token                (required for changes)
#   POOL      the pool to scale          (default: the first pool)
#   SPARE     space-separated backend URLs that may be added
#             (default "http://127.0.0.1:5004 http://127.0.0.1:5005")
#   HIGH, LOW requests/s per available backend to scale up / down at (default 50 and 5)
#   MIN       fewest backends to keep available (default 2)
#   INTERVAL  seconds between rounds     (default 10)
#
# Try it with the demo: `sluice --demo` with "admin": {"token": "s3cret"} in config.json, two
# more backends on :5004 and :5005 (for example `python3 -m http.server 5004`), then
#   TOKEN=s3cret HIGH=1 scripts/autoscale-example.sh
# and put load on :8080 (`while true; do curl -s localhost:8080 >/dev/null; done`).
# Needs curl and python3 (only to read the JSON).
set -euo pipefail

ADMIN=${ADMIN:-http://127.0.0.1:9000}
TOKEN=${TOKEN:-}
POOL=${POOL:-}
SPARE=${SPARE:-"http://127.0.0.1:5004 http://127.0.0.1:5005"}
HIGH=${HIGH:-50}
LOW=${LOW:-5}
MIN=${MIN:-2}
INTERVAL=${INTERVAL:-10}
once=false
dry_run=false
for arg in "$@"; do
  case "$arg" in
    --once) once=true ;;
    --dry-run) dry_run=true ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument $arg (try --help)" >&2; exit 2 ;;
  esac
done

# Prints three lines: "<available> <requests per second> <pool>", the URLs listed in the
# pool, and the URLs in it that were added at run time and are not being removed.
read_stats() {
  curl -fsS --max-time 5 "$ADMIN/stats" | POOL="$POOL" python3 -c '
import json, os, sys
stats = json.load(sys.stdin)
pool = os.environ["POOL"] or stats["pools"][0]["name"]
servers = [s for s in stats["servers"] if s["pool"] == pool]
available = [s for s in servers if s["healthy"] and not s["draining"]]
rate = sum((s["recent"] or {}).get("requestsPerSecond", 0) for s in servers)
print(len(available), round(rate, 2), pool)
print(" ".join(s["url"] for s in servers))
print(" ".join(s["url"] for s in servers if s["addedAtRuntime"] and not s["removing"]))
'
}

# Sends one change; prints sluice's answer.
change() {
  local method=$1 path=$2 body=${3:-}
  if $dry_run; then
    echo "  (dry run) $method $path $body"
    return
  fi
  curl -sS --max-time 10 -X "$method" -H "Authorization: Bearer $TOKEN" \
    -H "Content-Type: application/json" ${body:+-d "$body"} -w '  -> HTTP %{http_code}\n' "$ADMIN$path"
}

# One round: read, decide, change.
scale_servers() {
  local available rate pool listed added
  { read -r available rate pool; read -r listed; read -r added; } < <(read_stats)
  local per_backend
  per_backend=$(awk -v r="$rate" -v n="$available" 'BEGIN { printf "%.2f", (n > 0 ? r / n : r) }')
  echo "$(date +%T) pool $pool: $available available, $rate req/s, $per_backend req/s per backend"
  if awk -v x="$per_backend" -v t="$HIGH" 'BEGIN { exit !(x > t) }'; then
    for url in $SPARE; do
      if [[ " $listed " != *" $url "* ]]; then
        echo "  above $HIGH: adding $url"
        change POST /servers "{\"url\": \"$url\", \"pool\": \"$pool\"}"
        return
      fi
    done
    echo "  above $HIGH, but every spare backend is in use"
  elif awk -v x="$per_backend" -v t="$LOW" 'BEGIN { exit !(x < t) }' && [ "$available" -gt "$MIN" ]; then
    local newest=${added##* }
    if [ -n "$newest" ]; then
      echo "  below $LOW: removing $newest (drained first, removed when idle)"
      change DELETE "/servers?url=$newest&pool=$pool"
      return
    fi
    echo "  below $LOW, but nothing added at run time is left to remove"
  fi
}

if [ -z "$TOKEN" ] && ! $dry_run; then
  echo "set TOKEN to admin.token (or use --dry-run)" >&2
  exit 2
fi
while true; do
  scale_servers || echo "  cannot read $ADMIN/stats; trying again next round" >&2
  $once && break
  sleep "$INTERVAL"
done
