"""The worker the suite drives (tests/tests/clients.rs): one handler
per scenario, each recording what it saw in the directory OUT.

    python3 scenario_worker.py OUT [LEASE_SECONDS]
"""

import asyncio
import logging
import pathlib
import sys
import threading
import time

from sluice_client import Dead, Job, Retry, Worker

out = pathlib.Path(sys.argv[1])
lease = float(sys.argv[2]) if len(sys.argv) > 2 else 30.0
worker = Worker(concurrency=4, lease_duration=lease, drain_timeout=20)


def record(name: str, job: Job) -> None:
    with open(out / name, "a") as f:
        f.write(f"{job.id} {job.attempt}\n")


@worker.handler("ok")
async def ok(job: Job) -> None:
    record("ok", job)


@worker.handler("sync")
def sync(job: Job) -> None:
    # A plain function: runs in the pool, the loop goes on meanwhile.
    time.sleep(0.2)
    (out / "sync-thread").write_text(threading.current_thread().name)
    record("sync", job)


@worker.handler("flaky")
async def flaky(job: Job) -> None:
    record("flaky", job)
    if job.attempt == 1:
        raise Retry("not yet", after=0)


@worker.handler("boom")
def boom(job: Job) -> None:
    raise RuntimeError("boom")


@worker.handler("dead")
async def dead(job: Job) -> None:
    raise Dead("no retry can help")


@worker.handler("slow")
async def slow(job: Job) -> None:
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        record("slow-stopped", job)
        raise


@worker.handler("hold")
async def hold(job: Job) -> None:
    # Runs until the test creates OUT/go (or the attempt is stopped).
    record("started", job)
    try:
        while not (out / "go").exists():
            await asyncio.sleep(0.05)
    except asyncio.CancelledError:
        record("hold-stopped", job)
        raise
    record("held", job)


@worker.handler("size")
async def size(job: Job) -> None:
    with open(out / "size", "a") as f:
        f.write(f"{job.id} {len(job.payload)}\n")


@worker.handler("report")
def report(job: Job) -> str:
    # From the pool's thread: progress, then a wait for OUT/go-report, then
    # the result.
    job.progress(50, f"half of {job.payload.decode()}")
    record("report-started", job)
    while not (out / "go-report").exists():
        time.sleep(0.05)
    return f"done: {job.payload.decode()}"


logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
sys.exit(worker.run())
