#!/usr/bin/env bash
# Checks the binary deploy/container/Containerfile puts in its image, built here the same way:
# that it is static, how big it is, and that it runs as a non-root uid in a root that holds
# nothing but itself (what FROM scratch gives it): --check, one real request through it,
# binding port 80 without root, and what name lookups do without glibc's NSS libraries.
# Builds the image too when a container engine answers here.
#
# Writes scripts/results/container-check-<UTC time>.txt and prints it. Needs root (chroot,
# a network namespace), curl and python3 (a backend). Run from anywhere:
#   bash scripts/container-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."

target=x86_64-unknown-linux-gnu
stamp=$(date -u +%Y%m%dT%H%M%SZ)
out="scripts/results/container-check-$stamp.txt"
uid=65532
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
say() { echo "$*" | tee -a "$out"; }
: >"$out"

say "# container-check $stamp on $(uname -m), $(rustc --version)"

# The recipe's build command, word for word (tests/deploy.rs checks that both say it).
start=$(date +%s)
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked --target x86_64-unknown-linux-gnu \
  2>"$work/build.log" || { cat "$work/build.log"; exit 1; }
say "build: $(($(date +%s) - start)) s (cargo build --release --locked --target $target, +crt-static; 0 when already built)"

bin="target/$target/release/sluice"
cp "$bin" "$work/sluice" && strip "$work/sluice"
say "file: $(file -b "$bin" | cut -d, -f1-5)"
say "ldd: $(ldd "$bin" 2>&1 | head -1 | sed 's/^[[:space:]]*//')"
say "size: $(stat -c %s "$bin") bytes as built (debug = 1 in the release profile), $(stat -c %s "$work/sluice") bytes stripped (the image's)"

# A root as FROM scratch leaves it: the binary, the CA bundle, the configuration; no shell,
# no libraries, no /etc/passwd.
root="$work/root"
mkdir -p "$root/usr/local/bin" "$root/etc/sluice" "$root/etc/ssl/certs"
cp "$work/sluice" "$root/usr/local/bin/sluice"
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
chmod -R a+rX "$root"
in_image() { chroot --userspec=$uid:$uid "$root" /usr/local/bin/sluice "$@"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

backend_port=$(free_port)
listen_port=$(free_port)
admin_port=$(free_port)
mkdir -p "$work/www" && echo "hello from the backend" >"$work/www/index.html"
python3 -m http.server "$backend_port" --bind 127.0.0.1 --directory "$work/www" >/dev/null 2>&1 &
pids+=($!)

write_config() { # listen address, backend host
  cat >"$root/etc/sluice/config.json" <<EOF
{"listen": "$1", "servers": ["http://$2:$backend_port"], "healthCheckInterval": "250ms",
 "admin": {"listen": "127.0.0.1:$admin_port"}}
EOF
}

write_config "127.0.0.1:$listen_port" 127.0.0.1
if in_image --check --config /etc/sluice/config.json >"$work/check.txt" 2>&1; then
  say "check as uid $uid in the scratch-like root: OK ($(head -1 "$work/check.txt"))"
else
  say "check as uid $uid: FAILED: $(cat "$work/check.txt")"
fi

# One real request through it, as uid 65532 (chroot sets the user, then becomes sluice: the
# pid is sluice's).
chroot --userspec=$uid:$uid "$root" /usr/local/bin/sluice --config /etc/sluice/config.json >"$work/serve.log" 2>&1 &
sluice_pid=$!
pids+=($sluice_pid)
status=none
for _ in $(seq 1 100); do
  status=$(curl -s -o "$work/body" -w '%{http_code}' "http://127.0.0.1:$listen_port/" || true)
  [ "$status" = 200 ] && break
  sleep 0.1
done
say "serve as uid $(ps -o uid= -p "$sluice_pid" | tr -d ' '): GET / -> $status, body: $(cat "$work/body" 2>/dev/null)"
say "health check by the admin API: GET /stats -> $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$admin_port/stats")"
kill -TERM "$sluice_pid"
wait "$sluice_pid" && stopped=0 || stopped=$?
say "SIGTERM: exit code $stopped"

# Port 80 without root: a container engine gives each container its own network namespace
# with net.ipv4.ip_unprivileged_port_start=0 (Docker does since 20.10). The same, here:
write_config "127.0.0.1:80" 127.0.0.1
bind80=$(unshare --net sh -c "ip link set lo up && sysctl -qw net.ipv4.ip_unprivileged_port_start=0 &&
  timeout 3 chroot --userspec=$uid:$uid '$root' /usr/local/bin/sluice --config /etc/sluice/config.json 2>&1 | grep -m1 -o 'listening on [^ ]*' || true")
say "port 80 as uid $uid, in a network namespace with ip_unprivileged_port_start=0: ${bind80:-did not bind}"

# Names: glibc's lookup in a static binary, in a root without glibc's NSS libraries. A
# container engine mounts /etc/hosts and /etc/resolv.conf into every container, scratch too.
lookup() { # a host name: what sluice --check says of a backend so named
  write_config "127.0.0.1:$listen_port" "$1"
  in_image --check --config /etc/sluice/config.json 2>&1 | head -1 || true
}
say "backend named localhost, root without /etc/hosts or resolv.conf: $(lookup localhost)"
printf '127.0.0.1 localhost\n127.0.0.1 backend.internal\n' >"$root/etc/hosts"
say "backend named backend.internal, with the engine's /etc/hosts (no nsswitch.conf): $(lookup backend.internal)"

# The image itself, when an engine answers.
engine=""
for candidate in docker podman; do
  if command -v "$candidate" >/dev/null && "$candidate" info >/dev/null 2>&1; then engine=$candidate; break; fi
done
if [ -n "$engine" ]; then
  if "$engine" build -f deploy/container/Containerfile -t sluice:check . >"$work/image.log" 2>&1; then
    say "image: built with $engine, $("$engine" image inspect sluice:check --format '{{.Size}}') bytes"
  else
    say "image: $engine build failed: $(tail -3 "$work/image.log")"
  fi
else
  why="docker and podman are not installed"
  command -v docker >/dev/null && why="docker is installed, but no docker daemon runs"
  say "image: not built: no container engine answers here ($why)"
fi
echo "written: $out"
