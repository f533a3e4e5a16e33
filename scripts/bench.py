#!/usr/bin/env python3
"""bench.py: the heavy lifting behind scripts/bench.sh (sluice's own load-balancer benchmark).

Normally started by scripts/bench.sh, which installs the tools and cleans up after a crash;
it can also be run by hand:

    python3 scripts/bench.py [--quick] [--reps N] [--duration S] [--warmup S]
                             [--systems direct,nginx,haproxy,pen,sluice]
                             [--scenarios ka_small,close_small,big_1mib,c1000,tls_ka,tls_handshake]
                             [--sluice-bin PATH] [--json FILE]
                             [--backend-ports 25001,25002,25003] [--lb-port 28080]
                             [--workdir DIR] [--keep-tmp] [--front haproxy|haproxy-v2]
    python3 scripts/bench.py table FILE             # the comparison table of docs/performance.md
    python3 scripts/bench.py workers-table FILE...  # the workers table of docs/performance.md, a run per size
    python3 scripts/bench.py front-table FILE...    # the PROXY header table: --front runs, round by round
    python3 scripts/bench.py builds-table FILE...   # same-session runs of sluice builds, round by round

Every run is written as JSON (all runs, the summary, the machine, the tools' versions and
the command) to scripts/results/bench-<UTC date and time>.json, or to --json FILE; the
The tables of docs/performance.md are printed from those files, never typed in.

What it does, in order:
  1. One nginx process with three `server` blocks = three backends on 127.0.0.1
     (`/` answers "hello from N\\n", `/big` answers exactly 1 MiB, `/__stub` is stub_status).
  2. For every rep, for every scenario, for every system that takes part in it (the system
     order is rotated each rep so slow drift hits all systems alike): start that balancer
     on 127.0.0.1:LB_PORT (fresh process per run), check it answers 200 from all three
     backends, warm up with wrk, then one measured wrk run (-t1 --latency) while
       - a starvation probe opens a fresh connection every 0.25 s, sends `GET /` with
         `Connection: close`, and must get a complete 2xx answer within 2 s;
       - a sampler sums VmRSS over the balancer's process tree every 100 ms (peak kept);
     and, around the measured run, deltas of the balancer's context switches (all threads
     of all its processes), its CPU time, and the backends' stub_status `accepts` counter.
  3. Prints one row per scenario x system (medians over reps), then sluice/peer ratios,
     and writes everything as JSON.

The TLS rows (tls_ka, tls_handshake) measure what terminating TLS at the front costs each
balancer; the backends stay plain HTTP. Once per run, `openssl` makes one self-signed ECDSA
P-256 certificate for 127.0.0.1 (CN localhost, SAN IP:127.0.0.1) in the work dir, and nginx,
HAProxy and sluice all serve that same certificate and key, TLS 1.2 and 1.3, ALPN http/1.1,
with their default session resumption on. wrk speaks https:// to them (it does not verify
certificates); the pre-run check and the starvation probe speak TLS too and do verify against
the generated certificate, so a row also proves the balancer served that very certificate.
  tls_ka         keep-alive over TLS, c=64, GET /: the cost of record encryption per small
                 request, handshakes amortised away (the TLS twin of ka_small);
  tls_handshake  `Connection: close` over TLS, c=32, GET /: one TLS handshake per request
                 (the twin of close_small). wrk keeps a closed connection's TLS session and
                 offers it on the next connect, so most of these are resumed handshakes
                 (TLS 1.3 PSK with a fresh ECDHE exchange, no certificate signature), as a
                 returning browser's would be; each probe is a full handshake.
pen (a TCP relay without TLS) and `direct` (a plain backend) take no part in the TLS rows:
those combinations are not run and have no row, and the printed output says so.

--front puts HAProxy (tcp mode, one process) in front of sluice, on LB_PORT, with sluice on
LB_PORT+1: `haproxy` relays plainly, `haproxy-v2` opens each connection to sluice with a PROXY
v2 header (`send-proxy-v2`) and sluice gets `"acceptProxy": true`. Both arms pay for the same
front, so the pair measures what reading the header costs sluice. The measured process
(CPU, context switches, memory) is still sluice alone.

Only the Python 3 standard library. Every address is 127.0.0.1. Every process started here
is stopped by PID (SIGTERM, then SIGKILL to any leftover member of its process group); each
is also listed in WORKDIR/pids so bench.sh's EXIT trap can stop it if this program dies.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import NamedTuple

HOST = "127.0.0.1"
RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
BIG_BYTES = 1 << 20
ALL_SYSTEMS = ("direct", "nginx", "haproxy", "pen", "sluice")


class Scenario(NamedTuple):
    path: str  # what wrk asks for
    conns: int  # wrk connections
    headers: list[str]  # extra request headers
    tls: bool = False  # the balancer's front speaks TLS (https:// for wrk and the probes)


SCENARIOS = {
    "ka_small": Scenario("/", 64, []),
    "close_small": Scenario("/", 32, ["Connection: close"]),
    "big_1mib": Scenario("/big", 8, []),
    "c1000": Scenario("/", 1000, []),
    "tls_ka": Scenario("/", 64, [], tls=True),
    "tls_handshake": Scenario("/", 32, ["Connection: close"], tls=True),
}
# the systems that terminate TLS; pen relays TCP and `direct` is a plain backend
TLS_SYSTEMS = ("nginx", "haproxy", "sluice")


def takes_part(system: str, scenario: str) -> bool:
    """Whether `system` is measured in `scenario` (TLS scenarios: only TLS_SYSTEMS)."""
    return not SCENARIOS[scenario].tls or system in TLS_SYSTEMS


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ============================================================================ /proc helpers

def read_text(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat fields after "comm)": [0] state, [1] ppid, [2] pgrp,
    [11] utime, [12] stime, [19] starttime (clock ticks since boot)."""
    s = read_text(f"/proc/{pid}/stat")
    return s[s.rfind(")") + 2:].split() if s else None


def process_tree(root: int) -> list[int]:
    """root and all its live descendants (one scan of /proc)."""
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            f = stat_fields(int(name))
            if f:
                kids.setdefault(int(f[1]), []).append(int(name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        if os.path.isdir(f"/proc/{pid}"):
            out.append(pid)
            todo.extend(kids.get(pid, []))
    return out


def status_field_kib(pid: int, field: str) -> int:
    m = re.search(rf"^{field}:\s+(\d+)", read_text(f"/proc/{pid}/status") or "", re.M)
    return int(m.group(1)) if m else 0


def ctx_switches(pids: list[int]) -> dict[tuple[int, int], int]:
    """(pid, tid) -> voluntary + involuntary context switches of that thread. The counters in
    /proc/PID/status are the leader thread's only, so every /proc/PID/task/TID is read."""
    out = {}
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            s = read_text(f"/proc/{pid}/task/{tid}/status") or ""
            v = re.search(r"^voluntary_ctxt_switches:\s+(\d+)", s, re.M)
            n = re.search(r"^nonvoluntary_ctxt_switches:\s+(\d+)", s, re.M)
            if v and n:
                out[(pid, int(tid))] = int(v.group(1)) + int(n.group(1))
    return out


def cs_delta(before: dict, after: dict) -> int:
    """Switches between two ctx_switches() snapshots; threads born in between count from 0
    (threads that died in between are lost; pools here are long-lived)."""
    return sum(v - before.get(k, 0) for k, v in after.items())


def cpu_ticks(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        f = stat_fields(pid)
        if f:
            total += int(f[11]) + int(f[12])
    return total


def machine_busy_ticks() -> int:
    vals = [int(x) for x in (read_text("/proc/stat") or "cpu 0 0 0 0").split("\n")[0].split()[1:]]
    return sum(vals) - vals[3] - (vals[4] if len(vals) > 4 else 0)  # minus idle and iowait


CLK_TCK = os.sysconf("SC_CLK_TCK")


class RssSampler(threading.Thread):
    """Peak of summed VmRSS over a process tree, sampled every `every` s; the tree itself is
    rescanned once a second (nginx workers, forks)."""

    def __init__(self, root: int, every: float = 0.1):
        super().__init__(daemon=True)
        self.root, self.every = root, every
        self.peak_kib = 0
        self.pids_seen: set[int] = set()
        self._halt = threading.Event()

    def run(self) -> None:
        pids, scanned = process_tree(self.root), time.monotonic()
        while not self._halt.is_set():
            if time.monotonic() - scanned >= 1.0:
                pids, scanned = process_tree(self.root), time.monotonic()
            self.pids_seen.update(pids)
            self.peak_kib = max(self.peak_kib, sum(status_field_kib(p, "VmRSS") for p in pids))
            self._halt.wait(self.every)

    def stop(self) -> int:
        self._halt.set()
        self.join(timeout=5)
        return self.peak_kib


# ============================================================================ processes

class Proc:
    """A process started here, in its own session (so it is its own process group).
    stop(): SIGTERM to it, wait, then SIGKILL to whatever is left of its group."""

    live: list["Proc"] = []
    pidfile: str | None = None  # WORKDIR/pids, read by bench.sh's EXIT trap

    def __init__(self, name: str, argv: list[str], logpath: str, env: dict | None = None):
        self.name, self.logpath = name, logpath
        self._log = open(logpath, "ab")
        self.p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._log,
                                  stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.pid = self.p.pid
        f = stat_fields(self.pid)
        self.start = f[19] if f else "?"
        Proc.live.append(self)
        if Proc.pidfile:
            with open(Proc.pidfile, "a") as pf:
                pf.write(f"{self.pid} {self.start} {name}\n")

    def alive(self) -> bool:
        return self.p.poll() is None

    def _group_members(self) -> list[int]:
        """Live processes in our process group started no earlier than our root."""
        out = []
        for name in os.listdir("/proc"):
            if name.isdigit():
                f = stat_fields(int(name))
                if f and int(f[2]) == self.pid and f[0] != "Z" and \
                        (self.start == "?" or int(f[19]) >= int(self.start)):
                    out.append(int(name))
        return out

    def stop(self, grace: float = 5.0) -> None:
        if self.alive():
            try:
                self.p.send_signal(signal.SIGTERM)
                self.p.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                log(f"{self.name} (pid {self.pid}) ignored SIGTERM for {grace:g}s: SIGKILL")
                self.p.kill()
                self.p.wait(timeout=grace)
        deadline = time.monotonic() + grace
        while self._group_members() and time.monotonic() < deadline:
            time.sleep(0.05)  # e.g. nginx workers finishing after their master
        for pid in self._group_members():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._log.close()
        if self in Proc.live:
            Proc.live.remove(self)

    @classmethod
    def stop_all(cls) -> None:
        for proc in reversed(list(cls.live)):
            try:
                proc.stop()
            except Exception as e:  # keep going: stop everything we can
                log(f"cleanup of {proc.name} (pid {proc.pid}) failed: {e}")


def port_open(port: int, timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_port(port: int, proc: Proc | None, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited with status {proc.p.returncode} "
                               f"before {HOST}:{port} accepted")
        if port_open(port):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing accepted on {HOST}:{port} within {timeout:g}s")


def wait_port_closed(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while port_open(port):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{HOST}:{port} still accepts after the balancer stopped")
        time.sleep(0.05)


# ============================================================================ HTTP helpers

def body_of(idx: int) -> bytes:
    return f"hello from {idx}\n".encode()


def get(port: int, path: str, timeout: float = 5.0,
        ctx: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    """One GET on a fresh connection with Connection: close (so per-connection balancers
    such as pen rotate too); over TLS when `ctx` is given."""
    if ctx is None:
        c = http.client.HTTPConnection(HOST, port, timeout=timeout)
    else:
        c = http.client.HTTPSConnection(HOST, port, timeout=timeout, context=ctx)
    try:
        c.request("GET", path, headers={"Connection": "close"})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def backend_accepts(port: int) -> int | None:
    """stub_status `accepts` of the backend nginx (all three server blocks share it)."""
    try:
        st, body = get(port, "/__stub")
    except (OSError, http.client.HTTPException):
        return None
    m = re.search(rb"server accepts handled requests\s+(\d+)", body)
    return int(m.group(1)) if st == 200 and m else None


def check_system(port: int, want: set[bytes], timeout: float = 10.0,
                 ctx: ssl.SSLContext | None = None) -> str:
    """Gate before measuring: every answer 200, and the set `want` of backend bodies seen
    within 30 requests (retried until `timeout`: health checks may need a moment). Over TLS
    (`ctx`), the certificate must verify and ALPN must pick http/1.1; the answer names the
    negotiated version and cipher."""
    deadline = time.monotonic() + timeout
    err = "no attempt"
    while time.monotonic() < deadline:
        seen: set[bytes] = set()
        try:
            for _ in range(30):
                st, body = get(port, "/", ctx=ctx)
                if st != 200:
                    raise RuntimeError(f"GET / answered {st} {body[:60]!r}")
                seen.add(body)
                if want <= seen:
                    tls = f" over {tls_session(port, ctx)}" if ctx else ""
                    return f"200 from {len(seen)} distinct backend(s){tls}"
            err = f"30 requests saw only {sorted(b.decode().strip() for b in seen)}"
        except (OSError, RuntimeError, http.client.HTTPException) as e:
            err = f"{type(e).__name__}: {e}"
        time.sleep(0.25)
    raise RuntimeError(f"check failed: {err}")


# ============================================================================ TLS

TLS_CERT_DESCRIPTION = (f"self-signed ECDSA P-256 (prime256v1), CN localhost, SAN IP:{HOST}, "
                        "made per run by openssl req -x509")


class TlsFiles(NamedTuple):
    """The one certificate every system serves in the TLS scenarios, made per bench run."""
    cert: str  # PEM certificate (self-signed, ECDSA P-256)
    key: str  # PEM private key
    combined: str  # certificate then key in one PEM file, as HAProxy's `crt` takes them
    client: ssl.SSLContext  # trusts only `cert`; checks 127.0.0.1 against its SAN


def make_certificate(work: str) -> TlsFiles:
    """`openssl req -x509` into WORK/tls: ECDSA P-256, CN localhost, SAN IP:127.0.0.1."""
    d = os.path.join(work, "tls")
    os.makedirs(d, mode=0o755)
    cert, key, combined = (os.path.join(d, n) for n in ("cert.pem", "key.pem", "combined.pem"))
    argv = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "2", "-subj", "/CN=localhost", "-addext", f"subjectAltName=IP:{HOST}",
            "-keyout", key, "-out", cert]
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    if p.returncode != 0:
        raise RuntimeError(f"openssl could not make the certificate: {(p.stdout + p.stderr).strip()[-300:]}")
    write(combined, (read_text(cert) or "") + (read_text(key) or ""))
    os.chmod(combined, 0o600)
    return TlsFiles(cert, key, combined, client_context(cert))


def client_context(cert: str) -> ssl.SSLContext:
    """What the check and the probes speak: verification on, against the generated
    certificate only; ALPN http/1.1 like wrk's requests."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and check_hostname
    ctx.load_verify_locations(cert)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def tls_session(port: int, ctx: ssl.SSLContext, timeout: float = 5.0) -> str:
    """One handshake: `TLSv1.3 TLS_AES_256_GCM_SHA384` as negotiated; ALPN must be http/1.1."""
    with socket.create_connection((HOST, port), timeout=timeout) as raw:
        with ctx.wrap_socket(raw, server_hostname=HOST) as s:
            alpn, version, cipher = s.selected_alpn_protocol(), s.version(), s.cipher()
    if alpn != "http/1.1":
        raise RuntimeError(f"ALPN chose {alpn!r}, not http/1.1")
    return f"{version} {cipher[0] if cipher else '?'}"


def open_client(port: int, deadline: float, ctx: ssl.SSLContext | None) -> socket.socket:
    """A fresh connection to the balancer, with its TLS handshake done when `ctx` is given;
    connect and handshake together end by `deadline` (time.monotonic()) or raise TimeoutError."""
    def left() -> float:
        t = deadline - time.monotonic()
        if t <= 0:
            raise TimeoutError
        return t

    raw = socket.create_connection((HOST, port), timeout=left())
    if ctx is None:
        return raw
    try:
        raw.settimeout(left())
        return ctx.wrap_socket(raw, server_hostname=HOST)  # (takes over raw's descriptor)
    except BaseException:
        raw.close()
        raise


# ============================================================================ starvation probe

PROBE_REQ = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


def response_complete(buf: bytes, eof: bool) -> tuple[bool, int | None]:
    """(complete?, status) for an HTTP/1.x response in buf; knows Content-Length, chunked
    and close-delimited bodies."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return False, None
    head = buf[:end].decode("latin-1").split("\r\n")
    m = re.match(r"HTTP/1\.[01] (\d{3})", head[0])
    if not m:
        return eof, None
    status, body = int(m.group(1)), buf[end + 4:]
    hdr = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:])}
    if "chunked" in hdr.get("transfer-encoding", "").lower():
        i = 0
        while True:  # walk chunk headers; each pass advances i or returns
            j = body.find(b"\r\n", i)
            if j < 0:
                return False, status
            try:
                n = int(body[i:j].split(b";")[0], 16)
            except ValueError:
                return True, None
            if n == 0:
                return body.find(b"\r\n", j + 2) >= 0, status  # (no trailers expected)
            if len(body) < j + 2 + n + 2:
                return False, status
            i = j + 2 + n + 2
    if "content-length" in hdr:
        return len(body) >= int(hdr["content-length"]), status
    return eof, status


def probe_once(port: int, timeout: float, ctx: ssl.SSLContext | None = None) -> dict:
    """outcome: ok (complete 2xx in time) | starved (no complete answer within `timeout`,
    connect and TLS handshake included) | failed (refused, reset, closed early, non-2xx, a
    TLS error such as a certificate that does not verify)."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    rec = {"sent": t0, "done": None, "outcome": "failed", "detail": ""}
    try:
        with open_client(port, deadline, ctx) as s:
            s.sendall(PROBE_REQ)
            buf = b""
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                s.settimeout(left)
                chunk = s.recv(65536)
                buf += chunk
                done, status = response_complete(buf, not chunk)
                if done or not chunk:
                    break
        rec["done"] = time.monotonic()
        if not done or status is None:
            rec["detail"] = f"closed after {len(buf)} bytes, response incomplete"
        elif not 200 <= status < 300:
            rec["detail"] = f"status {status}"
        else:
            rec["outcome"] = "ok"
    except (TimeoutError, socket.timeout):
        rec["outcome"], rec["detail"] = "starved", f"no complete answer within {timeout:g}s"
    except OSError as e:
        rec["detail"] = f"{type(e).__name__}: {e}"
    if rec["done"] is None:
        rec["done"] = time.monotonic()
    return rec


class Prober(threading.Thread):
    """While wrk runs, starts probe_once() every `every` s, each in its own thread (so a
    starved probe does not delay the next). finish() joins them (each bounded by `timeout`)."""

    def __init__(self, port: int, every: float, timeout: float, ctx: ssl.SSLContext | None = None):
        super().__init__(daemon=True)
        self.port, self.every, self.timeout, self.ctx = port, every, timeout, ctx
        self.recs: list[dict] = []
        self.threads: list[threading.Thread] = []
        self.lock = threading.Lock()
        self.halted = threading.Event()
        self.load_end: float | None = None

    def _one(self) -> None:
        r = probe_once(self.port, self.timeout, self.ctx)
        with self.lock:
            self.recs.append(r)

    def run(self) -> None:
        t0 = time.monotonic()
        k = 1
        while not self.halted.wait(max(0.0, t0 + k * self.every - time.monotonic())):
            t = threading.Thread(target=self._one, daemon=True)
            t.start()
            self.threads.append(t)
            k += 1

    def halt(self) -> None:
        """Call as soon as wrk has exited: the load is over, send no more probes."""
        if self.load_end is None:
            self.load_end = time.monotonic()
        self.halted.set()

    def finish(self) -> dict:
        """Waits for the pending probes and judges them. A probe answered OK only after wrk
        exited is not judged: a starving balancer serves its queue as soon as the load goes away."""
        self.halt()
        self.join(timeout=5)
        for t in self.threads:
            t.join(timeout=self.timeout + 2)
        ok = [r for r in self.recs if r["outcome"] == "ok" and r["done"] <= self.load_end]
        late = [r for r in self.recs if r["outcome"] == "ok" and r["done"] > self.load_end]
        starved = [r for r in self.recs if r["outcome"] == "starved"]
        failed = [r for r in self.recs if r["outcome"] == "failed"]
        ms = sorted((r["done"] - r["sent"]) * 1e3 for r in ok)
        return {"probes": len(self.recs), "probes_ok": len(ok), "probes_unjudged": len(late),
                "starved": len(starved), "probe_failed": len(failed),
                "probe_max_ms": round(ms[-1], 1) if ms else None,
                "probe_failures": sorted({r["detail"] for r in failed})[:3]}


# ============================================================================ wrk

UNIT_S = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_wrk(out: str) -> dict:
    """Requests/sec, request count, latency percentiles (from --latency), socket errors and
    non-2xx/3xx responses from wrk's text output."""
    def num(pattern: str) -> float | None:
        m = re.search(pattern, out, re.M)
        return float(m.group(1)) if m else None

    pct = {m.group(1): float(m.group(2)) * UNIT_S[m.group(3)] * 1e3
           for m in re.finditer(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s|m|h)\s*$", out, re.M)}
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    socket_errors = sum(map(int, sock.groups())) if sock else 0
    non2xx = int(num(r"Non-2xx or 3xx responses: (\d+)") or 0)
    reqs = num(r"^\s*(\d+) requests in ")
    return {"rps": num(r"^Requests/sec:\s+([\d.]+)"), "requests": int(reqs) if reqs is not None else None,
            "p50_ms": pct.get("50"), "p99_ms": pct.get("99"), "socket_errors": socket_errors,
            "socket_errors_detail": sock.group(0) if sock else None, "non_2xx_3xx": non2xx}


def run_wrk(args, scenario: str, port: int, seconds: float) -> tuple[dict, str]:
    sc = SCENARIOS[scenario]
    argv = ["wrk", "-t1", f"-c{sc.conns}", f"-d{seconds:g}s", "--latency", f"--timeout={args.wrk_timeout:g}s"]
    for h in sc.headers:
        argv += ["-H", h]
    argv.append(f"{'https' if sc.tls else 'http'}://{HOST}:{port}{sc.path}")
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=seconds + 20)
    out = p.stdout + p.stderr
    if p.returncode != 0:
        raise RuntimeError(f"wrk exited {p.returncode}: {out.strip()[-200:]}")
    res = parse_wrk(out)
    if res["rps"] is None or res["requests"] is None:
        raise RuntimeError(f"could not parse wrk output: {out.strip()[-200:]}")
    return res, out


# ============================================================================ configs

def nginx_head(d: str, workers: str) -> str:
    user = "user nobody nogroup;\n" if os.geteuid() == 0 else ""
    temps = "".join(f"  {k}_temp_path {d}/{k}_temp;\n"
                    for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return (f"{user}daemon off;\nworker_processes {workers};\nworker_rlimit_nofile 16384;\n"
            f"pid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n"
            f"events {{ worker_connections 8192; }}\n"
            f"http {{\n  access_log off;\n  keepalive_requests 1000000;\n{temps}")


def backend_nginx_conf(d: str, www: str, ports: list[int]) -> str:
    servers = "".join(f"""  server {{
    listen {HOST}:{port} backlog=4096;
    root {www};
    location = / {{ default_type text/plain; return 200 "hello from {i}\\n"; }}
    location = /big {{ default_type application/octet-stream; }}
    location = /__stub {{ stub_status; }}
    location / {{ return 404; }}
  }}
""" for i, port in enumerate(ports, 1))
    # sendfile with tcp_nopush, as ../shared/bench/lbbench.py's backends (and many production
    # nginx configurations) have it: the last partial segment of a large answer then waits for
    # the proxy's acknowledgement of the ones before it.
    return nginx_head(d, "1") + "  sendfile on;\n  tcp_nopush on;\n" + servers + "}\n"


def nginx_tls_lines(tls: TlsFiles | None) -> str:
    """The TLS part of the balancer's `server` block: the bench certificate, TLS 1.2 and 1.3,
    a session cache beside the default tickets (sluice and HAProxy resume sessions too)."""
    if tls is None:
        return ""
    return (f"    ssl_certificate {tls.cert};\n    ssl_certificate_key {tls.key};\n"
            f"    ssl_protocols TLSv1.2 TLSv1.3;\n    ssl_session_cache shared:bench_tls:10m;\n")


def lb_nginx_conf(d: str, lb_port: int, ports: list[int], tls: TlsFiles | None = None) -> str:
    ups = "".join(f"    server {HOST}:{p};\n" for p in ports)  # default method: round robin
    ssl_flag = " ssl" if tls else ""
    return nginx_head(d, "auto") + f"""  upstream backends {{
{ups}    keepalive 64;
    keepalive_requests 1000000;
  }}
  server {{
    listen {HOST}:{lb_port}{ssl_flag} backlog=4096;
{nginx_tls_lines(tls)}    location / {{
      proxy_pass http://backends;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"""


def haproxy_conf(lb_port: int, ports: list[int], tls: TlsFiles | None = None) -> str:
    srv = "".join(f"    server s{i} {HOST}:{p} check inter 2s\n" for i, p in enumerate(ports, 1))
    # HAProxy takes certificate and key from one file; its TLS session cache is on by default
    ssl_opts = f" ssl crt {tls.combined} alpn http/1.1 ssl-min-ver TLSv1.2" if tls else ""
    return f"""global
    nbthread 2
    maxconn 4096

defaults
    mode http
    option http-keep-alive
    http-reuse safe
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout http-request 10s
    timeout http-keep-alive 30s
    timeout queue 10s
    maxconn 4096

frontend fe
    bind {HOST}:{lb_port}{ssl_opts}
    backlog 4096
    default_backend be

backend be
    balance roundrobin
{srv}"""


def front_haproxy_conf(lb_port: int, sluice_port: int, proxy_v2: bool) -> str:
    """HAProxy as a plain TCP relay to sluice, sending a PROXY v2 header when `proxy_v2`."""
    send = " send-proxy-v2" if proxy_v2 else ""
    return f"""global
    nbthread 1
    maxconn 4096

defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    maxconn 4096

frontend fe
    bind {HOST}:{lb_port}
    backlog 4096
    default_backend be

backend be
    server sluice {HOST}:{sluice_port}{send}
"""


def start_front(args, d: str) -> Proc:
    """Starts HAProxy on LB_PORT in front of sluice on LB_PORT+1 (see --front)."""
    cfg = f"{d}/front-haproxy.cfg"
    write(cfg, front_haproxy_conf(args.lb_port, args.lb_port + 1, args.front == "haproxy-v2"))
    return Proc("front-haproxy", ["haproxy", "-db", "-f", cfg], f"{d}/front-haproxy.log")


def start_balancer(args, system: str, d: str, tls: TlsFiles | None = None) -> Proc:
    """Starts `system` on LB_PORT in front of the backends; with `tls`, its front speaks TLS."""
    ports, lb = args.ports, args.lb_port
    log_path = f"{d}/{system}.log"
    if system == "nginx":
        cfg = f"{d}/nginx.conf"
        write(cfg, lb_nginx_conf(d, lb, ports, tls))
        return Proc("nginx-lb", ["nginx", "-p", d, "-e", f"{d}/error.log", "-c", cfg], log_path)
    if system == "haproxy":
        cfg = f"{d}/haproxy.cfg"
        write(cfg, haproxy_conf(lb, ports, tls))
        return Proc("haproxy", ["haproxy", "-db", "-f", cfg], log_path)
    if system == "pen":
        # -f foreground, -r round robin without client-IP stickiness, -x/-c lift the
        # 500-connection / 2048-client defaults so c1000 fits; TCP_NODELAY like the others.
        return Proc("pen", ["pen", "-f", "-r", "-x", "4096", "-c", "4096", "-O", "tcp_nodelay",
                            f"{HOST}:{lb}"] + [f"{HOST}:{p}" for p in ports], log_path)
    if system == "sluice":
        listen = lb + 1 if args.front else lb  # behind the --front HAProxy
        cfg = {"listen": f"{HOST}:{listen}", "healthCheckInterval": "2s",
               "servers": [f"http://{HOST}:{p}" for p in ports], "algorithm": "round-robin"}
        if args.front == "haproxy-v2":
            cfg["acceptProxy"] = True
        if tls is not None:  # the short form's listener takes `tls` at the top level
            cfg["tls"] = {"cert": tls.cert, "key": tls.key}
        cfg.update(json.loads(args.sluice_extra_json))
        write(f"{d}/sluice.json", json.dumps(cfg, indent=2) + "\n")
        env = dict(os.environ, RUST_LOG="warn")
        return Proc("sluice", [args.sluice_bin, "--config", f"{d}/sluice.json"], log_path, env=env)
    raise ValueError(system)


def log_tail(path: str, n: int = 5) -> list[str]:
    lines = [ln.strip() for ln in (read_text(path) or "").splitlines() if ln.strip()]
    return lines[-n:]


def write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


# ============================================================================ one run

def measure(args, system: str, scenario: str, rep: int, work: str) -> dict:
    """Start `system`, check it, warm up, measure one wrk run; always stops what it started."""
    if not takes_part(system, scenario):
        raise ValueError(f"{system} takes no part in {scenario}")
    run = {"system": system, "scenario": scenario, "rep": rep, "ok": False, "error": None}
    tls = args.tls if SCENARIOS[scenario].tls else None
    ctx = tls.client if tls else None
    d = tempfile.mkdtemp(prefix=f"{system}-{scenario}-r{rep}-", dir=work)
    os.chmod(d, 0o755)
    lb: Proc | None = None
    front: Proc | None = None
    sampler: RssSampler | None = None
    try:
        if system == "direct":
            port, want = args.ports[0], {body_of(1)}
        else:
            port, want = args.lb_port, {body_of(i) for i in range(1, len(args.ports) + 1)}
            if port_open(port):
                raise RuntimeError(f"{HOST}:{port} is already in use by something else")
            lb = start_balancer(args, system, d, tls)
            if args.front:
                wait_port(port + 1, lb)
                front = start_front(args, d)
                wait_port(port, front)
            else:
                wait_port(port, lb)
            sampler = RssSampler(lb.pid)
            sampler.start()
        run["check"] = check_system(port, want, ctx=ctx)
        if args.warmup > 0:
            run_wrk(args, scenario, port, args.warmup)

        tree = process_tree(lb.pid) if lb else []
        cs0, cpu0 = ctx_switches(tree), cpu_ticks(tree)
        acc0 = backend_accepts(args.ports[0])
        busy0, own0, t0 = machine_busy_ticks(), os.times(), time.monotonic()
        btree = process_tree(args.backend.pid)
        bcpu0 = cpu_ticks(btree)

        prober = Prober(port, args.probe_every, args.probe_timeout, ctx)
        prober.start()
        try:
            wrk, _ = run_wrk(args, scenario, port, args.duration)
        finally:
            prober.halt()  # no new probes; pending ones end by their own 2 s deadline
        # the measured window ends when wrk exits: read the counters before the probe stragglers
        elapsed = time.monotonic() - t0
        tree = process_tree(lb.pid) if lb else []
        cs1, cpu1 = ctx_switches(tree), cpu_ticks(tree)
        busy1, own1 = machine_busy_ticks(), os.times()
        bcpu1 = cpu_ticks(process_tree(args.backend.pid))
        acc1 = backend_accepts(args.ports[0])  # (includes connections of still-pending probes)
        probes = prober.finish()

        if lb is not None and not lb.alive():
            raise RuntimeError(f"{system} died during the run (status {lb.p.returncode})")
        reqs = wrk["requests"] + probes["probes_ok"]
        run.update(wrk)
        run.update(probes)
        run["errors"] = wrk["socket_errors"] + wrk["non_2xx_3xx"] + probes["starved"] + probes["probe_failed"]
        run["elapsed_s"] = round(elapsed, 2)
        if lb is not None:
            run["cs_per_req"] = cs_delta(cs0, cs1) / max(1, reqs)
            run["lb_cores"] = (cpu1 - cpu0) / CLK_TCK / elapsed
        # -1: the stub_status request that read acc1 was itself accepted
        if acc0 is not None and acc1 is not None:
            run["backend_conns_per_1k"] = (acc1 - acc0 - 1) * 1000 / max(1, reqs)
        # CPU used by everything that is not ours (cargo builds...): a noise indicator
        ours = ((cpu1 - cpu0) + (bcpu1 - bcpu0)) / CLK_TCK + \
               (own1.user + own1.system + own1.children_user + own1.children_system
                - own0.user - own0.system - own0.children_user - own0.children_system)
        run["foreign_cores"] = round(max(0.0, (busy1 - busy0) / CLK_TCK - ours) / elapsed, 2)
        run["ok"] = True
    except Exception as e:  # noqa: BLE001 -- any failure fails this row, not the whole bench
        run["error"] = f"{type(e).__name__}: {e}" if not isinstance(e, RuntimeError) else str(e)
        if lb is not None:  # the work dir is deleted at exit: quote the log's last line
            run["log_tail"] = log_tail(lb.logpath)
            if run["log_tail"]:
                run["error"] += f" [log: {run['log_tail'][-1][:160]}]"
    finally:
        if sampler is not None:
            run["peak_rss_mib"] = sampler.stop() / 1024
        if front is not None:
            front.stop()
        if lb is not None:
            lb.stop()
            try:
                wait_port_closed(args.lb_port)
            except RuntimeError as e:
                run["ok"], run["error"] = False, str(e)
    return run


# ============================================================================ report

def med(vals: list) -> float | None:
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def summarize(runs: list[dict], systems: list[str], scenarios: list[str]) -> list[dict]:
    rows = []
    for sc in scenarios:
        for sy in (s for s in systems if takes_part(s, sc)):
            mine = [r for r in runs if r["system"] == sy and r["scenario"] == sc]
            good = [r for r in mine if r["ok"]]
            row = {"scenario": sc, "system": sy, "reps": len(mine), "reps_ok": len(good),
                   "failure": next((r["error"] for r in mine if not r["ok"]), None)}
            if good:
                row.update({
                    "rps": med([r["rps"] for r in good]),
                    "p50_ms": med([r["p50_ms"] for r in good]),
                    "p99_ms": med([r["p99_ms"] for r in good]),
                    "errors": sum(r["errors"] for r in good),
                    "starved": sum(r["starved"] for r in good),
                    "probes": sum(r["probes"] for r in good),
                    "probes_judged": sum(r["probes_ok"] + r["starved"] + r["probe_failed"] for r in good),
                    "probes_unjudged": sum(r["probes_unjudged"] for r in good),
                    "peak_rss_mib": max((r.get("peak_rss_mib") for r in good if r.get("peak_rss_mib") is not None),
                                        default=None),
                    "cs_per_req": med([r.get("cs_per_req") for r in good]),
                    "lb_cores": med([r.get("lb_cores") for r in good]),
                    "backend_conns_per_1k": med([r.get("backend_conns_per_1k") for r in good]),
                    "foreign_cores": max(r["foreign_cores"] for r in good),
                })
            rows.append(row)
    return rows


def not_run(systems: list[str], scenarios: list[str]) -> str | None:
    """Says which chosen systems sit out which chosen scenarios (pen and direct: TLS), or None."""
    out = [s for s in systems if not all(takes_part(s, sc) for sc in scenarios)]
    if not out:
        return None
    tls = [sc for sc in scenarios if SCENARIOS[sc].tls]
    return f"{', '.join(out)}: not run in {', '.join(tls)} (no TLS at their front; no row, no ratio)"


def fmt(v, spec: str, none: str = "-") -> str:
    return none if v is None else format(v, spec)


def print_table(rows: list[dict], args, skipped: dict[str, str]) -> None:
    cols = ["scenario", "system", "req/s", "p50 ms", "p99 ms", "errors", "starved",
            "RSS MiB", "cs/req", "cores", "bconn/1k", "noise"]
    lines = []
    for r in rows:
        if r["reps_ok"] == 0:
            lines.append([r["scenario"], r["system"], f"FAILED: {r['failure']}"])
            continue
        lines.append([r["scenario"], r["system"], fmt(r["rps"], ",.0f"), fmt(r["p50_ms"], ".2f"),
                      fmt(r["p99_ms"], ".2f"), str(r["errors"]), f"{r['starved']}/{r['probes_judged']}",
                      fmt(r["peak_rss_mib"], ".1f"), fmt(r["cs_per_req"], ".3f"), fmt(r["lb_cores"], ".2f"),
                      fmt(r["backend_conns_per_1k"], ".1f"), fmt(r["foreign_cores"], ".2f")]
                     + ([f"({r['reps_ok']}/{r['reps']} reps ok: {r['failure']})"]
                        if r["reps_ok"] < r["reps"] else []))
    full = [ln for ln in lines if len(ln) >= len(cols)]  # not the FAILED rows
    widths = [max([len(c)] + [len(ln[i]) for ln in (lines if i < 2 else full)])
              for i, c in enumerate(cols)]

    def render(cells: list[str]) -> str:
        out = []
        for i, c in enumerate(cells):
            if i >= len(widths) or (len(cells) == 3 and i == 2):
                out.append(c)
            else:
                out.append(c.ljust(widths[i]) if i < 2 else c.rjust(widths[i]))
        return "  ".join(out).rstrip()

    print()
    print(f"sluice bench: {args.reps} rep(s) x {args.duration:g} s (+{args.warmup:g} s warm-up), wrk -t1, "
          f"{os.cpu_count()} CPUs, load avg at start {args.loadavg}")
    print("medians over reps; errors and starved summed over reps; RSS = max peak")
    print()
    print(render(cols))
    print(render(["-" * w for w in widths]))
    prev = None
    for ln in lines:
        if prev is not None and ln[0] != prev:
            print()
        prev = ln[0]
        print(render(ln))
    print()
    print("errors  = wrk socket errors + non-2xx/3xx + starved/failed probes")
    print(f"starved = probes (fresh conn every {args.probe_every:g} s, Connection: close) without a complete"
          f" 2xx within {args.probe_timeout:g} s / probes judged;")
    print("          a probe answered only after wrk exited is not judged (a starving balancer catches up")
    print(f"          then), so only runs longer than {args.probe_timeout:g} s can show starvation")
    print("RSS     = peak summed VmRSS of the balancer's processes (sampled every 100 ms)")
    print("cs/req  = voluntary+involuntary context switches of all balancer threads per request")
    print("cores   = balancer CPU seconds per wall second; bconn/1k = backend connections accepted per")
    print("          1,000 requests (stub_status); noise = max CPU cores used by foreign processes")
    if any(SCENARIOS[sc].tls for sc in args.scenarios):
        print("tls_*   = TLS at the balancer's front (plain backends), one ECDSA P-256 certificate for all;")
        print("          wrk resumes TLS sessions on reconnect, the check and probes make full verified handshakes")
    for name, why in skipped.items():
        print(f"skipped {name}: {why}")
    sat_out = not_run(args.systems, args.scenarios)
    if sat_out:
        print(sat_out)
    noisy = [r for r in rows if (r.get("foreign_cores") or 0) > args.noise_warn]
    if noisy:
        worst = max(r["foreign_cores"] for r in noisy)
        print(f"WARNING: other processes used up to {worst:.2f} CPU cores during {len(noisy)} row(s) "
              f"(noise > {args.noise_warn:g}); on a small machine those numbers are unreliable")

    # ratios of sluice to each peer
    print()
    by = {(r["scenario"], r["system"]): r for r in rows if r["reps_ok"] > 0}
    peers = [s for s in args.systems if s != "sluice"]
    if not any(k[1] == "sluice" for k in by):
        print("ratios: no sluice results, nothing to compare")
        return
    print("sluice / peer   (req/s ratio > 1: sluice faster;  p99 ratio < 1: sluice's tail shorter)")
    head = ["scenario"] + [f"{p} req/s" for p in peers] + [f"{p} p99" for p in peers]
    body = []
    for sc in args.scenarios:
        s = by.get((sc, "sluice"))
        cells = [sc]
        for key in ("rps", "p99_ms"):
            for p in peers:
                o = by.get((sc, p))
                ok = s and o and s.get(key) and o.get(key)
                cells.append(f"{s[key] / o[key]:.2f}" if ok else "-")
        body.append(cells)
    w = [max([len(head[i])] + [len(b[i]) for b in body]) for i in range(len(head))]
    print("  ".join(h.ljust(w[0]) if i == 0 else h.rjust(w[i]) for i, h in enumerate(head)))
    for b in body:
        print("  ".join(c.ljust(w[0]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(b)))


# ============================================================================ results files

def command_output(argv: list[str]) -> str | None:
    """First line a program prints (stdout or stderr), or None if it cannot run."""
    try:
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = (p.stdout + p.stderr).strip().splitlines()
    return lines[0].strip() if lines else None


def environment(args) -> dict:
    """What a reader needs to judge the numbers: the machine and each program's version."""
    cpu = re.search(r"^model name\s*:\s*(.+)$", read_text("/proc/cpuinfo") or "", re.M)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    commit = command_output(["git", "-C", root, "describe", "--always", "--dirty"])
    haproxy = command_output(["haproxy", "-v"])
    versions = {"nginx": command_output(["nginx", "-v"]),
                "haproxy": " ".join(haproxy.split()[:3]) if haproxy else None,
                # pen prints no version of its own; Debian's package has it
                "pen": command_output(["dpkg-query", "-W", "-f", "pen ${Version}", "pen"]),
                "wrk": command_output(["wrk", "-v"])}
    if args.tls:
        versions["openssl"] = command_output(["openssl", "version"])
    if "sluice" in args.systems:
        versions["sluice"] = f"{command_output([args.sluice_bin, '--version'])} ({commit})"
    return {"cpus": os.cpu_count(), "cpu_model": cpu.group(1) if cpu else None,
            "kernel": os.uname().release, "versions": versions}


def write_results(args, skipped: dict, rows: list[dict], runs: list[dict]) -> str:
    now = time.gmtime()
    path = args.json or os.path.join(RESULTS_DIR, time.strftime("bench-%Y%m%d-%H%M%S.json", now))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", now), "command": sys.argv,
                   "loadavg_start": args.loadavg, "reps": args.reps, "duration_s": args.duration,
                   "warmup_s": args.warmup, "systems": args.systems, "scenarios": args.scenarios,
                   "sluice_extra_json": args.sluice_extra_json, "backend_ports": args.ports,
                   "lb_port": args.lb_port, "front": args.front, "environment": environment(args), "skipped": skipped,
                   "not_run": not_run(args.systems, args.scenarios),
                   "tls_certificate": TLS_CERT_DESCRIPTION if args.tls else None,
                   "summary": rows, "runs": runs}, f, indent=2)
        f.write("\n")
    return path


# ============================================================================ README tables

PEERS = ("nginx", "haproxy", "pen")
PEER_NAMES = {"nginx": "nginx", "haproxy": "HAProxy", "pen": "pen", "sluice": "sluice"}
TABLE_ROWS = [("ka_small", "keep-alive, c=64, small"), ("close_small", "`Connection: close`, c=32"),
              ("big_1mib", "1 MiB answers, c=8"), ("c1000", "keep-alive, c=1000"),
              ("tls_ka", "TLS, keep-alive, c=64, small"), ("tls_handshake", "TLS, a handshake per request, c=32")]


def load_results(path: str) -> tuple[dict, dict]:
    with open(path) as f:
        data = json.load(f)
    return data, {(r["scenario"], r["system"]): r for r in data["summary"] if r.get("reps_ok")}


def rate(row: dict | None) -> str:
    """`req/s (p99)` as docs/performance.md writes it."""
    if not row or row.get("rps") is None:
        return "-"
    p99 = row.get("p99_ms")
    tail = "-" if p99 is None else (f"{p99:.1f} ms" if p99 < 10 else f"{p99:.0f} ms")
    return f"{row['rps']:,.0f} ({tail})"


def versus(by: dict, scenario: str) -> str:
    """sluice's req/s over the best peer's; when sluice is behind it, also over the fastest
    peer sluice is ahead of, if any."""
    mine = (by.get((scenario, "sluice")) or {}).get("rps")
    peers = sorted(((by[(scenario, p)]["rps"], p) for p in PEERS if by.get((scenario, p), {}).get("rps")),
                   reverse=True)
    if not mine or not peers:
        return ""
    shown = [peers[0]]
    beaten = next((peer for peer in peers if peer[0] <= mine), None)
    if mine < peers[0][0] and beaten is not None:
        shown.append(beaten)
    return ", ".join(f"{mine / rps:.2f}× {PEER_NAMES[p]}" for rps, p in shown)


def describe_run(data: dict) -> str:
    env = data.get("environment", {})
    v = env.get("versions", {})
    return (f"From `{os.path.basename(data.get('_path', ''))}` ({data['when']}): {env.get('cpus')} CPUs "
            f"({env.get('cpu_model')}), Linux {env.get('kernel')}; {v.get('nginx')}; {v.get('haproxy')}; "
            f"{v.get('pen')}; {v.get('sluice')}; medians of {data['reps']} x {data['duration_s']:g} s.")


def print_comparison(path: str) -> None:
    data, by = load_results(path)
    data["_path"] = path
    systems = [s for s in ("nginx", "haproxy", "pen", "sluice") if any(k[1] == s for k in by)]
    print(describe_run(data))
    print()
    print("| scenario | " + " | ".join(PEER_NAMES[s] for s in systems) + " | sluice vs best peer |")
    print("|---|" + "---:|" * len(systems) + "---|")
    for scenario, label in TABLE_ROWS:
        if any((scenario, s) in by for s in systems):
            cells = [rate(by.get((scenario, s))) for s in systems]
            print(f"| {label}: req/s (p99) | " + " | ".join(cells) + f" | {versus(by, scenario)} |")
    extra = [("c1000", "peak_rss_mib", "peak RSS at c=1000", "{:.1f} MiB"),
             ("ka_small", "cpu_us_per_req", "balancer CPU per request, µs (c=64)", "{:.1f}"),
             ("big_1mib", "cpu_us_per_req", "balancer CPU per 1 MiB answer, µs", "{:,.0f}"),
             ("ka_small", "cs_per_req", "context switches per request (c=64)", "{:.2f}"),
             ("c1000", "cs_per_req", "context switches per request (c=1000)", "{:.2f}"),
             ("close_small", "backend_conns_per_1k", "backend connections per 1,000 requests (close)", "{:,.1f}"),
             ("c1000", "backend_conns_per_1k", "backend connections per 1,000 requests (c=1000)", "{:,.1f}")]
    for scenario, key, label, spec in extra:
        cells = [spec.format(v) if (v := summary_value(by.get((scenario, s)), key)) is not None else "-" for s in systems]
        if any(c != "-" for c in cells):
            print(f"| {label} | " + " | ".join(cells) + " | |")
    print_each_peer(by, [s for s in systems if s in PEERS])
    errors = sum(r.get("errors", 0) for r in by.values())
    starved = sum(r.get("starved", 0) for r in by.values())
    print()
    print(f"Errors over every row: {errors}; starved probes: {starved}.")


def print_front_pairs(paths: list[str]) -> None:
    """One row per --front arm, one column pair per scenario: req/s and sluice's CPU time per
    request, round by round (files given in round order, both arms in any order)."""
    arms: dict[str, list[dict]] = {}
    for path in paths:
        data, by = load_results(path)
        arms.setdefault(data.get("front") or "none", []).append(by)
    scenarios = [sc for sc, _ in TABLE_ROWS if any((sc, "sluice") in by for runs in arms.values() for by in runs)]
    label = {"haproxy": "plain relay", "haproxy-v2": "`send-proxy-v2`, `acceptProxy`", "none": "no front"}
    heads = [f"{sc} req/s" for sc in scenarios] + [f"{sc} sluice CPU µs/req" for sc in scenarios]
    print("| HAProxy in front | " + " | ".join(heads) + " |")
    print("|---|" + "---:|" * len(heads))
    for arm, runs in arms.items():
        def cell(sc: str, cpu: bool) -> str:
            vals = []
            for by in runs:
                row = by.get((sc, "sluice")) or {}
                if cpu:
                    ok = row.get("rps") and row.get("lb_cores") is not None
                    vals.append(f"{row['lb_cores'] / row['rps'] * 1e6:.0f}" if ok else "-")
                else:
                    vals.append(f"{row['rps']:,.0f}" if row.get("rps") else "-")
            return " / ".join(vals)
        cells = [cell(sc, False) for sc in scenarios] + [cell(sc, True) for sc in scenarios]
        print(f"| {label.get(arm, arm)} | " + " | ".join(cells) + " |")


def print_builds(paths: list[str]) -> None:
    """Same-session runs of two or more sluice builds or configurations: one row per arm (the
    file name without its -rN.json round suffix), per scenario req/s, p99 and sluice's CPU
    time per request, round by round (files given in round order)."""
    arms: dict[str, list[dict]] = {}
    for path in paths:
        _, by = load_results(path)
        arm = re.sub(r"-r\d+\.json$", "", os.path.basename(path))
        arms.setdefault(arm, []).append(by)
    scenarios = [sc for sc, _ in TABLE_ROWS if any((sc, "sluice") in by for runs in arms.values() for by in runs)]
    keys = [("rps", "req/s", "{:,.0f}"), ("p99_ms", "p99 ms", "{:.1f}"), ("cpu_us_per_req", "CPU µs/req", "{:.0f}")]
    heads = [f"{sc} {name}" for sc in scenarios for _, name, _ in keys]
    print("| build | " + " | ".join(heads) + " |")
    print("|---|" + "---:|" * len(heads))
    for arm, runs in arms.items():
        cells = []
        for sc in scenarios:
            for key, _, fmt in keys:
                vals = [summary_value(by.get((sc, "sluice")), key) for by in runs]
                cells.append(" / ".join("-" if v is None else fmt.format(v) for v in vals))
        print(f"| {arm} | " + " | ".join(cells) + " |")


def summary_value(row: dict | None, key: str) -> float | None:
    """A summary value, or one derived from it: CPU µs per request is cores over req/s."""
    if not row:
        return None
    if key == "cpu_us_per_req":
        cores, rps = row.get("lb_cores"), row.get("rps")
        return cores * 1e6 / rps if cores is not None and rps else None
    return row.get(key)


def print_each_peer(by: dict, peers: list[str]) -> None:
    """sluice against each peer, row by row: req/s ratio (above 1: sluice faster) and p99
    ratio (below 1: sluice's tail shorter)."""
    print()
    print("| sluice ÷ peer: req/s, p99 | " + " | ".join(PEER_NAMES[p] for p in peers) + " |")
    print("|---|" + "---:|" * len(peers))
    for scenario, label in TABLE_ROWS:
        mine = by.get((scenario, "sluice"))
        if not mine or not mine.get("rps"):
            continue
        cells = []
        for peer in peers:
            theirs = by.get((scenario, peer))
            if not theirs or not theirs.get("rps"):
                cells.append("-")
                continue
            p99 = (f", {mine['p99_ms'] / theirs['p99_ms']:.2f}×"
                   if mine.get("p99_ms") and theirs.get("p99_ms") else "")
            cells.append(f"{mine['rps'] / theirs['rps']:.2f}×{p99}")
        print(f"| {label} | " + " | ".join(cells) + " |")


def print_workers(paths: list[str]) -> None:
    """One row per file: sluice alone with {"workers": N} in SLUICE_EXTRA_JSON."""
    rows = []
    for path in paths:
        data, by = load_results(path)
        workers = json.loads(data.get("sluice_extra_json") or "{}").get("workers", "default")
        rss = [r["peak_rss_mib"] for (_, s), r in by.items() if s == "sluice" and r.get("peak_rss_mib") is not None]
        cells = [f"{by[(sc, 'sluice')]['rps']:,.0f}" if (sc, "sluice") in by else "-"
                 for sc in ("ka_small", "close_small", "big_1mib")]
        cells.append(rate(by.get(("c1000", "sluice"))))
        cells.append(f"{min(rss):.1f}–{max(rss):.1f} MiB" if rss else "-")
        rows.append((workers if isinstance(workers, int) else 0, f"| {workers} | " + " | ".join(cells) + " |",
                     os.path.basename(path)))
    print("| workers | ka_small req/s | close_small req/s | big_1mib req/s | c1000 req/s (p99) | peak RSS |")
    print("|---:|---:|---:|---:|---:|---:|")
    for _, line, _ in sorted(rows):
        print(line)
    print()
    print("From " + ", ".join(f"`{name}`" for _, _, name in sorted(rows)) + ".")


# ============================================================================ main

def parse_args() -> argparse.Namespace:
    env = os.environ.get
    ap = argparse.ArgumentParser(description="sluice vs nginx/HAProxy/pen on 127.0.0.1 (see scripts/bench.sh)")
    ap.add_argument("--systems", default=",".join(ALL_SYSTEMS), help="comma list, subset of " + ",".join(ALL_SYSTEMS))
    ap.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma list, subset of " + ",".join(SCENARIOS))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per measured wrk run")
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds of unmeasured wrk before each run")
    ap.add_argument("--quick", action="store_true", help="smoke test: --reps 1 --duration 2")
    ap.add_argument("--json", help="where to write all runs and the summary "
                                   "(default scripts/results/bench-<UTC date and time>.json)")
    ap.add_argument("--sluice-bin", default=env("SLUICE_BIN", "target/release/sluice"))
    ap.add_argument("--sluice-extra-json", default=env("SLUICE_EXTRA_JSON", "{}"),
                    help="JSON object merged into sluice's config, e.g. '{\"algorithm\": \"round-robin\"}'")
    ap.add_argument("--backend-ports", default=env("BENCH_BACKEND_PORTS", "25001,25002,25003"))
    ap.add_argument("--lb-port", type=int, default=int(env("BENCH_LB_PORT", "28080")))
    ap.add_argument("--wrk-timeout", type=float, default=2.0, help="wrk --timeout: slower answers are errors")
    ap.add_argument("--noise-warn", type=float, default=0.25,
                    help="warn when foreign processes used more CPU cores than this during a run")
    ap.add_argument("--probe-every", type=float, default=0.25)
    ap.add_argument("--probe-timeout", type=float, default=2.0)
    ap.add_argument("--workdir", help="directory for configs/logs (default: a new temp dir)")
    ap.add_argument("--keep-tmp", action="store_true", help="do not delete the temp dir at exit")
    ap.add_argument("--front", choices=["haproxy", "haproxy-v2"],
                    help="HAProxy in tcp mode in front of sluice (haproxy-v2: with a PROXY v2 header "
                         "and acceptProxy); only with --systems sluice")
    a = ap.parse_args()
    if a.quick:
        a.reps, a.duration = 1, 2.0
    a.systems = [s.strip() for s in a.systems.split(",") if s.strip()]
    a.scenarios = [s.strip() for s in a.scenarios.split(",") if s.strip()]
    bad = [s for s in a.systems if s not in ALL_SYSTEMS] + [s for s in a.scenarios if s not in SCENARIOS]
    if bad:
        ap.error(f"unknown system/scenario: {', '.join(bad)}")
    a.ports = [int(p) for p in a.backend_ports.split(",")]
    if len(a.ports) != 3 or a.lb_port in a.ports:
        ap.error("--backend-ports needs three ports, none equal to --lb-port")
    if a.front and a.systems != ["sluice"]:
        ap.error("--front goes with --systems sluice")
    if a.reps < 1 or a.duration <= 0:
        ap.error("--reps must be >= 1 and --duration > 0")
    return a


def main() -> int:
    if len(sys.argv) >= 3 and sys.argv[1] == "table":
        print_comparison(sys.argv[2])
        return 0
    if len(sys.argv) >= 3 and sys.argv[1] == "workers-table":
        print_workers(sys.argv[2:])
        return 0
    if len(sys.argv) >= 3 and sys.argv[1] == "front-table":
        print_front_pairs(sys.argv[2:])
        return 0
    if len(sys.argv) >= 3 and sys.argv[1] == "builds-table":
        print_builds(sys.argv[2:])
        return 0
    args = parse_args()
    signal.signal(signal.SIGTERM, lambda n, _f: sys.exit(128 + n))
    signal.signal(signal.SIGHUP, lambda n, _f: sys.exit(128 + n))
    args.loadavg = " ".join((read_text("/proc/loadavg") or "? ? ?").split()[:3])

    skipped: dict[str, str] = {}
    for tool in ("wrk", "nginx", "haproxy", "pen"):
        if not on_path(tool):
            if tool in ("wrk", "nginx"):
                sys.exit(f"bench: {tool} not found (scripts/bench.sh installs it)")
            if tool in args.systems:
                skipped[tool] = "binary not found"
    if "sluice" in args.systems:
        if not (os.path.isfile(args.sluice_bin) and os.access(args.sluice_bin, os.X_OK)):
            skipped["sluice"] = f"no executable at {args.sluice_bin} (build with cargo build --release)"
            log(f"sluice skipped: {skipped['sluice']}")
        else:
            args.sluice_bin = os.path.abspath(args.sluice_bin)
    args.systems = [s for s in args.systems if s not in skipped]
    if not args.systems:
        sys.exit("bench: no system left to measure")
    if not any(takes_part(sy, sc) for sy in args.systems for sc in args.scenarios):
        sys.exit(f"bench: none of {', '.join(args.systems)} takes part in {', '.join(args.scenarios)} "
                 f"(TLS scenarios run on {', '.join(TLS_SYSTEMS)} only)")
    wants_tls = any(SCENARIOS[sc].tls for sc in args.scenarios)
    if wants_tls and not on_path("openssl"):
        sys.exit("bench: openssl not found; the TLS scenarios need it (scripts/bench.sh installs it)")
    sat_out = not_run(args.systems, args.scenarios)
    if sat_out:
        log(sat_out)

    made_work = args.workdir is None
    work = args.workdir or tempfile.mkdtemp(prefix="sluice-bench-")
    os.makedirs(work, exist_ok=True)
    os.chmod(work, 0o755)  # nginx workers run as nobody
    Proc.pidfile = os.path.join(work, "pids")
    try:
        for port in args.ports + [args.lb_port] + ([args.lb_port + 1] if args.front else []):
            if port_open(port):
                sys.exit(f"bench: {HOST}:{port} is already in use; pick other ports "
                         f"(--backend-ports / --lb-port)")
        try:
            args.tls = make_certificate(work) if wants_tls else None
        except (OSError, RuntimeError, ssl.SSLError, subprocess.TimeoutExpired) as e:
            sys.exit(f"bench: {e}")
        start_backends(args, work)
        runs = run_all(args, work)
        rows = summarize(runs, args.systems, args.scenarios)
        print_table(rows, args, skipped)
        path = write_results(args, skipped, rows, runs)
        log(f"wrote {path}; docs/performance.md tables: python3 scripts/bench.py table {path}")
        return 0 if all(r["reps_ok"] == r["reps"] for r in rows) else 1
    finally:
        Proc.stop_all()
        if made_work and not args.keep_tmp:
            subprocess.run(["rm", "-rf", "--", work], check=False)
        elif made_work:
            log(f"kept {work}")


def on_path(tool: str) -> bool:
    return any(os.access(os.path.join(p, tool), os.X_OK) for p in os.environ.get("PATH", "").split(":"))


def start_backends(args, work: str) -> None:
    """The one nginx with three backends (args.backend), checked before any balancer runs."""
    www = os.path.join(work, "www")
    os.makedirs(www, mode=0o755)
    with open(os.path.join(www, "big"), "wb") as f:
        f.write(b"x" * BIG_BYTES)
    os.chmod(os.path.join(www, "big"), 0o644)
    bdir = os.path.join(work, "backends")
    os.makedirs(bdir, mode=0o755)
    write(f"{bdir}/nginx.conf", backend_nginx_conf(bdir, www, args.ports))
    args.backend = Proc("backends", ["nginx", "-p", bdir, "-e", f"{bdir}/error.log", "-c",
                                     f"{bdir}/nginx.conf"], f"{bdir}/stdout.log")
    for p in args.ports:
        wait_port(p, args.backend)
    for i, p in enumerate(args.ports, 1):
        st, body = get(p, "/")
        st2, big = get(p, "/big")
        if st != 200 or body != body_of(i) or st2 != 200 or len(big) != BIG_BYTES:
            sys.exit(f"bench: backend {p} misbehaves ({st} {body!r}, /big {st2} {len(big)} B)")
    log(f"backends up on {HOST}:{','.join(map(str, args.ports))}; balancer port {args.lb_port}; "
        f"work dir {work}")


def run_all(args, work: str) -> list[dict]:
    """Every rep x scenario x system that takes part; systems rotate each rep so slow drift
    hits all of them alike."""
    plan = []
    for rep in range(1, args.reps + 1):
        k = (rep - 1) % len(args.systems)
        order = args.systems[k:] + args.systems[:k]
        plan += [(rep, sc, sy) for sc in args.scenarios for sy in order if takes_part(sy, sc)]
    runs = []
    for n, (rep, sc, sy) in enumerate(plan, 1):
        r = measure(args, sy, sc, rep, work)
        runs.append(r)
        if r["ok"]:
            log(f"[{n}/{len(plan)}] rep {rep} {sc:<13} {sy:<7} {r['rps']:>10,.0f} req/s  "
                f"p99 {fmt(r['p99_ms'], '.2f')} ms  errors {r['errors']}  "
                f"starved {r['starved']}/{r['probes_ok'] + r['starved'] + r['probe_failed']}")
        else:
            log(f"[{n}/{len(plan)}] rep {rep} {sc:<13} {sy:<7} FAILED: {r['error']}")
    return runs


if __name__ == "__main__":
    sys.exit(main())
