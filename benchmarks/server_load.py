"""A bounded hostile load against the server on 127.0.0.1 (issue 13). Not a CI test.

Starts ``dlbacktrace serve --model demo`` in a child process on a free loopback port, sends ``--requests``
requests from ``--clients`` concurrent clients (a fixed mix: valid images, valid tensors, oversized bodies, image
bombs, malformed / NaN / deeply nested JSON, bad targets) while one more client polls /health every 50 ms, then
prints requests per second, p50/p95 latency of /explain (valid requests) and /health, counts by status, and the
server's RSS before, at its peak and after the run. Everything stays on this machine and stops by itself.

    python benchmarks/server_load.py [--requests 600] [--clients 50]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import multiprocessing
import multiprocessing.synchronize
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np


def _rss(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def _png(w: int, h: int, mode: str = "L", noise: bool = False) -> bytes:
    from PIL import Image

    img = Image.fromarray((np.random.rand(h, w) * 255).astype("uint8")) if noise else Image.new(mode, (w, h))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _mix() -> list[tuple[str, dict]]:
    """(kind, httpx request kwargs), one of each kind; the load cycles through them."""
    digit = _png(16, 16, noise=True)
    tensor = {"input": np.random.rand(1, 8, 8).tolist()}
    return [
        ("valid image", {"files": {"file": ("d.png", digit, "image/png")}}),
        ("valid tensor", {"json": tensor}),
        ("valid image", {"files": {"file": ("d.png", digit, "image/png")}, "data": {"mode": "contrast"}}),
        ("valid tensor", {"json": {**tensor, "target": 3}}),
        ("oversized", {"content": b" " * (11 * 2**20), "headers": {"content-type": "application/json"}}),
        ("bomb", {"files": {"file": ("b.png", _png(20000, 20000, "1"), "image/png")}}),
        ("malformed", {"content": b"{broken", "headers": {"content-type": "application/json"}}),
        ("nan", {"content": b'{"input": [[NaN]]}', "headers": {"content-type": "application/json"}}),
        ("nested", {"content": b'{"input": ' + b"[" * 5000 + b"]" * 5000 + b"}",
                    "headers": {"content-type": "application/json"}}),
        ("bad target", {"json": {**tensor, "target": 3.7}}),
    ]


async def _client(c: httpx.AsyncClient, jobs: asyncio.Queue, out: list) -> None:
    while True:
        try:
            kind, kwargs = jobs.get_nowait()
        except asyncio.QueueEmpty:
            return
        t0 = time.perf_counter()
        try:
            r = await c.post("/explain", **kwargs)
            status = r.status_code
        except httpx.HTTPError as e:
            status = type(e).__name__
        out.append((kind, status, time.perf_counter() - t0))


def _health(url: str, stop: multiprocessing.synchronize.Event, out: multiprocessing.Queue) -> None:
    """Polls /health every 50 ms from its own process, so the load generator's busy event loop does not add
    its own delay to what is measured."""
    polls = []
    with httpx.Client(base_url=url, timeout=30) as c:
        while not stop.is_set():
            t0 = time.perf_counter()
            r = c.get("/health")
            polls.append((r.status_code, time.perf_counter() - t0))
            time.sleep(0.05)
    out.put(polls)


async def _load(url: str, requests: int, clients: int, pid: int) -> dict:
    mix = _mix()
    jobs: asyncio.Queue = asyncio.Queue()
    for i in range(requests):
        jobs.put_nowait(mix[i % len(mix)])
    results: list = []
    peak = [0.0]
    stop = asyncio.Event()

    async def watch() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss(pid)[0])
            await asyncio.sleep(0.05)

    limits = httpx.Limits(max_connections=clients + 2)
    ctx = multiprocessing.get_context("spawn")
    poll_stop, poll_out = ctx.Event(), ctx.Queue()
    poller = ctx.Process(target=_health, args=(url, poll_stop, poll_out))
    poller.start()
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as c:
        t0 = time.perf_counter()
        side = asyncio.create_task(watch())
        await asyncio.gather(*(_client(c, jobs, results) for _ in range(clients)))
        wall = time.perf_counter() - t0
        stop.set()
        await side
    poll_stop.set()
    health = poll_out.get(timeout=60)
    poller.join(timeout=30)
    return {"results": results, "health": health, "wall": wall, "peak": peak[0]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] * 1e3 if len(values) > 1 else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=600)
    ap.add_argument("--clients", type=int, default=50)
    args = ap.parse_args()
    port = _free_port()
    exe = str(Path(sys.executable).parent / "dlbacktrace")
    proc = subprocess.Popen([exe, "serve", "--model", "demo", "--port", str(port)], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        warm = httpx.post(url + "/explain", json={"input": np.random.rand(1, 8, 8).tolist()}, timeout=60)
        assert warm.status_code == 200, warm.text
        start_rss = _rss(proc.pid)[0]
        run = asyncio.run(_load(url, args.requests, args.clients, proc.pid))
        time.sleep(2.0)
        after_rss = _rss(proc.pid)[0]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    res = run["results"]
    valid = [t for kind, status, t in res if kind.startswith("valid") and status == 200]
    health = [t for status, t in run["health"]]
    by_status = Counter(str(status) for _, status, _ in res)
    by_kind = Counter(f"{kind} -> {status}" for kind, status, _ in res)
    print(f"{len(res)} requests from {args.clients} clients in {run['wall']:.1f} s: "
          f"{len(res) / run['wall']:.1f} requests/s")
    print(f"/explain (valid, 200) p50 {_p(valid, 50):.0f} ms, p95 {_p(valid, 95):.0f} ms ({len(valid)} requests)")
    print(f"/health p50 {_p(health, 50):.1f} ms, p95 {_p(health, 95):.1f} ms, max {max(health) * 1e3:.1f} ms "
          f"({len(health)} polls, all 200: {all(s == 200 for s, _ in run['health'])})")
    print("status counts:", json.dumps(dict(sorted(by_status.items()))))
    print("by kind:", json.dumps(dict(sorted(by_kind.items()))))
    print(f"server RSS: start {start_rss:.0f} MiB, peak {run['peak']:.0f} MiB, after {after_rss:.0f} MiB")
    return 0 if "500" not in by_status else 1


if __name__ == "__main__":
    sys.exit(main())
