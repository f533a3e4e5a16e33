#!/usr/bin/env python3
"""profile_tools.py: the two small programs behind scripts/profile.sh (standard library only).

  profile_tools.py load HOST:PORT --connections C --requests R [--path /] [--body BYTES]
      Opens C keep-alive connections and sends exactly R requests on each, one at a time
      (no pipelining), reading every response in full: GETs, or with --body POSTs of that
      many bytes, sent together with the head. Exits 1 unless every answer is a 200
      and every connection stayed open. Prints the count and the wall time.

  profile_tools.py counts CALLGRIND_FILE... --requests N
      Reads callgrind output files (as written by a dump) and prints the instructions (Ir)
      and the calls to malloc, calloc, realloc and free, in total and per request.
"""

import argparse
import re
import socket
import sys
import threading
import time


# ---------------------------------------------------------------------------- load

def read_response(sock: socket.socket, buf: bytearray) -> tuple[int, bytearray]:
    """Reads one response with a Content-Length body; returns its status and what is left."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed inside a head after {bytes(buf)!r}")
        buf += chunk
    head_end = buf.index(b"\r\n\r\n") + 4
    head = bytes(buf[:head_end]).decode("latin-1")
    status = int(head.split(" ", 2)[1])
    match = re.search(r"(?im)^content-length:\s*(\d+)\s*$", head)
    if match is None:
        raise ValueError(f"response without Content-Length: {head!r}")
    end = head_end + int(match.group(1))
    while len(buf) < end:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed inside a body")
        buf += chunk
    return status, buf[end:]


def request_bytes(path: str, body: int | None) -> bytes:
    head = "Host: profile\r\nUser-Agent: profile_tools\r\n"
    if body is None:
        return f"GET {path} HTTP/1.1\r\n{head}\r\n".encode()
    return f"POST {path} HTTP/1.1\r\n{head}Content-Length: {body}\r\n\r\n".encode() + b"x" * body


def one_connection(addr: tuple[str, int], request: bytes, requests: int, failures: list[str]) -> None:
    try:
        with socket.create_connection(addr, timeout=120) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            buf = bytearray()
            for i in range(requests):
                sock.sendall(request)
                status, buf = read_response(sock, buf)
                if status != 200:
                    failures.append(f"request {i}: status {status}")
                    return
    except (OSError, ValueError) as e:
        failures.append(f"{type(e).__name__}: {e}")


def load(args: argparse.Namespace) -> int:
    host, _, port = args.target.rpartition(":")
    failures: list[str] = []
    request = request_bytes(args.path, args.body)
    threads = [threading.Thread(target=one_connection, args=((host, int(port)), request, args.requests, failures))
               for _ in range(args.connections)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    total = args.connections * args.requests
    if failures:
        print(f"load: FAILED: {failures[:3]}", file=sys.stderr)
        return 1
    print(f"load: {total} requests on {args.connections} connections in {elapsed:.1f} s")
    return 0


# ---------------------------------------------------------------------------- counts

# The allocator's entry points under the names glibc's symbols may carry.
ALLOCATOR = {"malloc": "malloc", "__libc_malloc": "malloc", "calloc": "calloc", "__libc_calloc": "calloc",
             "realloc": "realloc", "__libc_realloc": "realloc", "free": "free", "cfree": "free",
             "__libc_free": "free"}
NAMED = re.compile(r"^(c?fn)=(?:\((\d+)\))? ?(.*)$")


def count_file(path: str, totals: dict[str, int]) -> None:
    """Adds a callgrind file's instructions and its calls to the allocator to `totals`.

    `fn=`/`cfn=` lines name the current function and the callee of the next `calls=` line;
    a name is written once as `(id) name` and later as `(id)` alone."""
    names: dict[str, str] = {}
    callee = ""
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("totals:"):
                totals["Ir"] = totals.get("Ir", 0) + int(line.split()[1])
            elif line.startswith("calls="):
                kind = ALLOCATOR.get(callee)
                if kind:
                    totals[kind] = totals.get(kind, 0) + int(line[6:].split()[0])
            elif line.startswith(("fn=", "cfn=")):
                kind, ident, name = NAMED.match(line.rstrip("\n")).groups()
                if ident is not None:
                    name = names.setdefault(ident, name) if name else names.get(ident, "")
                callee = name if kind == "cfn" else ""


def counts(args: argparse.Namespace) -> int:
    totals: dict[str, int] = {}
    for path in args.files:
        count_file(path, totals)
    instructions = totals.get("Ir", 0)
    n = args.requests
    print(f"requests                {n}")
    print(f"instructions (Ir)       {instructions:>14,}   {instructions / n:>10,.0f} per request")
    for name in ("malloc", "calloc", "realloc", "free"):
        calls = totals.get(name, 0)
        print(f"calls to {name:<14} {calls:>14,}   {calls / n:>10.2f} per request")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    lp = sub.add_parser("load", help="send an exact number of keep-alive requests")
    lp.add_argument("target", help="HOST:PORT")
    lp.add_argument("--connections", type=int, default=4)
    lp.add_argument("--requests", type=int, default=5000, help="per connection")
    lp.add_argument("--path", default="/")
    lp.add_argument("--body", type=int, help="send POSTs with a body of this many bytes")
    cp = sub.add_parser("counts", help="instructions and allocator calls from callgrind files")
    cp.add_argument("files", nargs="+")
    cp.add_argument("--requests", type=int, required=True, help="requests the files cover")
    args = ap.parse_args()
    return load(args) if args.command == "load" else counts(args)


if __name__ == "__main__":
    sys.exit(main())
