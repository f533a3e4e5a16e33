# processes.sh: what the scripts that start servers share (sourced, never run): installing
# missing tools, finding sluice, a work folder, and starting processes that are stopped by
# PID on exit. The sourcing script defines log() first and calls make_work once.

# Installs the Debian packages named like the missing tools in "$@" (needs root and apt-get).
need_tools() {
    local missing=() tool
    for tool in "$@"; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
    ((${#missing[@]})) || return 0
    log "missing: ${missing[*]}; installing with apt-get"
    if [[ $EUID -ne 0 ]] || ! command -v apt-get >/dev/null; then
        log "cannot install (need root and apt-get): apt-get install -y ${missing[*]}"
        exit 2
    fi
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
}

# Sets SLUICE_BIN to a built sluice, building the release binary when it is missing.
need_sluice() {
    [[ -x $SLUICE_BIN ]] && return 0
    log "building sluice (cargo build --release)"
    (cd "$ROOT" && cargo build --release)
    SLUICE_BIN=$ROOT/target/release/sluice
}

PIDS=()

# Makes the work folder WORK (named after $1, removed on exit) and sets the exit traps.
make_work() {
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
    chmod 755 "$WORK"
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    trap 'exit 129' HUP
}

# Stops one process: TERM, and TERM again after 3 s (sluice drains on the first and exits at
# once on the second), then KILL after 3 s more.
stop_pid() {
    local pid=$1
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# shellcheck disable=SC2317  # runs from the trap
cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM HUP
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    [[ -n ${WORK:-} ]] && rm -rf -- "$WORK"
    exit "$rc"
}

# Starts "$@" in the background and remembers its PID in STARTED (and in PIDS for cleanup).
start() {
    "$@" &
    STARTED=$!
    PIDS+=("$STARTED")
}

# Takes a PID stopped already off the cleanup list.
forget() {
    local gone=$1 kept=() pid
    for pid in "${PIDS[@]}"; do [[ $pid == "$gone" ]] || kept+=("$pid"); done
    PIDS=("${kept[@]}")
}

answers_200() { [[ $(curl -s -o /dev/null -m 1 -w '%{http_code}' "http://$1/" || true) == 200 ]]; }

# Waits up to 10 s for http://$1/ to answer 200.
wait_for_200() {
    for _ in $(seq 100); do answers_200 "$1" && return 0; sleep 0.1; done
    log "nothing answers 200 on $1"
    return 1
}
