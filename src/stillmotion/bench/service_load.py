"""Load on a running service from its own process: pollers and event streams, with latency figures.

``python -m stillmotion.bench.service_load --base http://127.0.0.1:7860 --jobs ID[,ID...]`` runs, until every
listed job has finished (or ``--duration`` seconds): ``--pollers`` clients each reading ``GET
/api/v1/jobs/{id}`` ``--rate`` times a second (the L3 case of RELIABILITY.md: 50 at 1 Hz), ``--streams``
clients following ``GET /api/v1/jobs/{id}/events`` to the end, and optionally ``--health`` clients polling
``/api/v1/health``. It prints the latency percentiles and writes everything (latencies, status codes, the
events each stream saw) as JSON to ``--out``.

Run in a process of its own: load generated inside the measuring process (as threads beside a test) competes
with it for the interpreter and inflates every figure; here only the service and this client share the CPUs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from stillmotion.jobs.store.states import TERMINAL

API = "/api/v1"


def percentiles(samples: Sequence[float]) -> dict[str, float | None]:
    """p50, p95, p99 and max in seconds (None without samples)."""
    if not samples:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "max": None}
    if len(samples) == 1:
        value = samples[0]
        return {"n": 1, "p50": value, "p95": value, "p99": value, "max": value}
    cuts = statistics.quantiles(samples, n=100)
    return {"n": len(samples), "p50": cuts[49], "p95": cuts[94], "p99": cuts[98], "max": max(samples)}


class Load:
    """The shared state of one run: what every client measured, and when to stop."""

    def __init__(self, jobs: list[str], deadline: float) -> None:
        self.jobs = jobs
        self.deadline = deadline
        self.done = asyncio.Event()
        self.poll_latencies: list[float] = []
        self.health_latencies: list[float] = []
        self.codes: dict[str, int] = {}
        self.errors: list[str] = []
        self.streams: list[list[dict[str, Any]]] = []

    def count(self, code: int | str) -> None:
        self.codes[str(code)] = self.codes.get(str(code), 0) + 1


async def _timed_get(client: httpx.AsyncClient, path: str, load: Load, into: list[float]) -> Any:
    started = time.perf_counter()
    try:
        response = await client.get(path)
    except httpx.HTTPError as exc:
        load.count(type(exc).__name__)
        load.errors.append(f"{path}: {type(exc).__name__}: {exc}")
        return None
    into.append(time.perf_counter() - started)
    load.count(response.status_code)
    return response.json() if response.status_code == 200 else None


async def _poller(client: httpx.AsyncClient, index: int, count: int, rate: float, load: Load) -> None:
    await asyncio.sleep(index / (count * rate))  # spread over the period, as independent clients are
    job = load.jobs[index % len(load.jobs)]
    while True:  # every poller asks at least once, even when the jobs end before its turn comes
        await _timed_get(client, f"{API}/jobs/{job}", load, load.poll_latencies)
        if load.done.is_set():
            break
        await _wait(load.done, 1.0 / rate)


async def _health(client: httpx.AsyncClient, index: int, count: int, rate: float, load: Load) -> None:
    await asyncio.sleep(index / (count * rate))
    while not load.done.is_set():
        await _timed_get(client, f"{API}/health", load, load.health_latencies)
        await _wait(load.done, 1.0 / rate)


async def _stream(client: httpx.AsyncClient, index: int, load: Load) -> None:
    seen: list[dict[str, Any]] = []
    load.streams.append(seen)
    job = load.jobs[index % len(load.jobs)]
    try:
        async with client.stream("GET", f"{API}/jobs/{job}/events") as response:
            load.count(f"stream-{response.status_code}")
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    seen.append(json.loads(line[6:]))
    except httpx.HTTPError as exc:
        load.errors.append(f"stream {job}: {type(exc).__name__}: {exc}")


async def _watch(client: httpx.AsyncClient, load: Load) -> None:
    """Stop everything once every job is terminal (or at the deadline)."""
    while time.monotonic() < load.deadline:
        states = []
        for job in load.jobs:
            try:
                response = await client.get(f"{API}/jobs/{job}")
                states.append(response.json().get("status") if response.status_code == 200 else None)
            except httpx.HTTPError:
                states.append(None)
        if all(state in TERMINAL for state in states):
            break
        await asyncio.sleep(0.5)
    load.done.set()


async def _wait(event: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(event.wait(), seconds)
    except TimeoutError:
        pass


async def run(
    base: str,
    jobs: list[str],
    *,
    pollers: int = 50,
    rate: float = 1.0,
    streams: int = 10,
    health: int = 0,
    duration_s: float = 600.0,
) -> dict[str, Any]:
    """Run the load until the jobs finish (or ``duration_s``); returns the figures."""
    load = Load(jobs, time.monotonic() + duration_s)
    limits = httpx.Limits(max_connections=pollers + streams + health + 8)
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
        tasks = [asyncio.create_task(_poller(client, i, pollers, rate, load)) for i in range(pollers)]
        tasks += [asyncio.create_task(_health(client, i, health, rate, load)) for i in range(health)]
        streams_tasks = [asyncio.create_task(_stream(client, i, load)) for i in range(streams)]
        await _watch(client, load)
        await asyncio.gather(*tasks)
        # Streams end by themselves after the terminal event; give them a little time, then stop.
        _, pending = await asyncio.wait(streams_tasks, timeout=30) if streams_tasks else (set(), set())
        for task in pending:
            task.cancel()
    return {
        "base": base,
        "jobs": jobs,
        "pollers": pollers,
        "rate_hz": rate,
        "streams": load.streams,
        "health_clients": health,
        "elapsed_s": round(time.monotonic() - started, 3),
        "codes": load.codes,
        "errors": load.errors[:20],
        "poll_latency_s": percentiles(load.poll_latencies),
        "health_latency_s": percentiles(load.health_latencies),
        "poll_latencies_s": load.poll_latencies,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stillmotion.bench.service_load", description=__doc__)
    parser.add_argument("--base", required=True, help="the service, e.g. http://127.0.0.1:7860")
    parser.add_argument("--jobs", required=True, help="comma-separated job ids to poll and follow")
    parser.add_argument("--pollers", type=int, default=50)
    parser.add_argument("--rate", type=float, default=1.0, help="requests per second per poller")
    parser.add_argument("--streams", type=int, default=10)
    parser.add_argument("--health", type=int, default=0, help="clients polling /health at --rate")
    parser.add_argument("--duration", type=float, default=600.0, help="stop after this many seconds")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    jobs = [job for job in args.jobs.split(",") if job]
    figures = asyncio.run(
        run(
            args.base,
            jobs,
            pollers=args.pollers,
            rate=args.rate,
            streams=args.streams,
            health=args.health,
            duration_s=args.duration,
        )
    )
    if args.out is not None:
        args.out.write_text(json.dumps(figures))
    summary = {k: v for k, v in figures.items() if k not in ("streams", "poll_latencies_s")}
    sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
