#!/bin/sh
# check_sluice.sh: keepalived's health check for sluice on this host.
#
# Usage: check_sluice.sh [ADMIN_URL] [POOL]
#   ADMIN_URL  sluice's admin API (default http://127.0.0.1:9000)
#   POOL       count only this pool's backends (default: every pool)
#
# Asks the admin API for /metrics and counts the backends that are up
# (sluice_backend_up ... 1). Exit 0 when the admin API answered within 2 s and at least one
# backend is up; 1 when the admin API did not answer (sluice is down or stuck); 2 when it
# answered but no backend is up (this host cannot serve, so the address should move).
# Needs only curl and awk.
set -u
ADMIN_URL=${1:-http://127.0.0.1:9000}
POOL=${2:-}

metrics=$(curl --silent --show-error --fail --max-time 2 "$ADMIN_URL/metrics") || {
  echo "check_sluice: the admin API at $ADMIN_URL did not answer" >&2
  exit 1
}
up=$(printf '%s\n' "$metrics" | awk -v pool="$POOL" '
  /^sluice_backend_up\{/ {
    if (pool != "" && index($0, "pool=\"" pool "\"") == 0) next
    if ($NF == 1) n++
  }
  END { print n + 0 }')
if [ "$up" -eq 0 ]; then
  echo "check_sluice: no backend is up${POOL:+ in pool $POOL}" >&2
  exit 2
fi
exit 0
