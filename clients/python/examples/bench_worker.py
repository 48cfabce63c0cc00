"""A worker with a no-op handler, for `sluice-bench clients`:

    python3 examples/bench_worker.py QUEUE CONCURRENCY

Logs only warnings: a record per job would cost more than the job.
"""

import logging
import sys

from sluice_client import Job, Worker

worker = Worker(queues=[sys.argv[1]], concurrency=int(sys.argv[2]), worker_id="bench-python")


@worker.handler("noop")
async def noop(job: Job) -> None:
    pass


logging.basicConfig(level=logging.WARNING)
raise SystemExit(worker.run())
