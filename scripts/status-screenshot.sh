#!/usr/bin/env bash
# status-screenshot.sh: a screenshot of sluice's status page, rendered by headless Chromium.
#
# Usage: scripts/status-screenshot.sh [FILE]        (default FILE: status.png)
#
# Installs Debian's chromium with apt-get if it is missing (needs root), builds sluice if
# target/debug/sluice is missing, starts `sluice --demo` with the admin API on a temporary
# configuration, sends some traffic, drains one backend and adds a runtime one (so every
# state shows), then saves a 1200x800 screenshot of http://127.0.0.1:$ADMIN_PORT/.
#
# Environment: SLUICE_BIN (default target/debug/sluice), LB_PORT (28180), ADMIN_PORT (29100),
#   BACKEND_PORTS (25101,25102,25103).
set -euo pipefail
out=$(realpath -m "${1:-status.png}")
cd "$(dirname "$0")/.."

bin=${SLUICE_BIN:-target/debug/sluice}
lb_port=${LB_PORT:-28180}
admin_port=${ADMIN_PORT:-29100}
IFS=, read -r p1 p2 p3 <<<"${BACKEND_PORTS:-25101,25102,25103}"
token=screenshot

if ! command -v chromium >/dev/null 2>&1; then
  echo "== installing chromium"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
if [ ! -x "$bin" ]; then
  echo "== building sluice"
  cargo build -q
fi

tmp=$(mktemp -d)
cleanup() {
  [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT

cat >"$tmp/config.json" <<EOF
{
  "listen": "127.0.0.1:$lb_port",
  "healthCheckInterval": "1s",
  "servers": ["http://127.0.0.1:$p1", "http://127.0.0.1:$p2", {"url": "http://127.0.0.1:$p3", "weight": 2}],
  "admin": {"listen": "127.0.0.1:$admin_port", "token": "$token"}
}
EOF
RUST_LOG=warn "$bin" --demo --config "$tmp/config.json" >"$tmp/sluice.out" 2>&1 &
pid=$!
for _ in $(seq 50); do
  curl -fs "http://127.0.0.1:$admin_port/stats" >/dev/null 2>&1 && break
  sleep 0.1
done

echo "== traffic, a drain and a runtime addition"
for _ in $(seq 40); do curl -s "http://127.0.0.1:$lb_port/" >/dev/null; done
auth="Authorization: Bearer $token"
curl -fs -X POST -H "$auth" "http://127.0.0.1:$admin_port/servers/drain?url=http://127.0.0.1:$p2" >/dev/null
curl -s -X POST -H "$auth" "http://127.0.0.1:$admin_port/servers" \
  -d "{\"url\": \"http://127.0.0.1:$((p3 + 1))\", \"weight\": 1}" >/dev/null
for _ in $(seq 30); do curl -s "http://127.0.0.1:$lb_port/" >/dev/null; sleep 0.03; done

echo "== screenshot"
profile=$(mktemp -d)
timeout 60 chromium --headless --no-sandbox --disable-gpu --disable-background-networking \
  --disable-component-update --disable-sync --no-first-run --user-data-dir="$profile" \
  --screenshot="$out" --window-size=1200,800 "http://127.0.0.1:$admin_port/" >/dev/null 2>&1
rm -rf "$profile"
echo "saved $out"
