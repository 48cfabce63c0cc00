# A Sluice worker in Python: runs "hello" jobs until SIGTERM.
import logging

from sluice_client import Job, Worker

worker = Worker(queues=["default"], concurrency=4)


@worker.handler("hello")
async def hello(job: Job) -> None:
    print(f"hello, {job.payload.decode()}", flush=True)


logging.basicConfig(level=logging.INFO)
raise SystemExit(worker.run())
