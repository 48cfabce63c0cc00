"""Producers: :class:`AsyncProducer` (asyncio) and :class:`Producer`
(blocking), each with ``enqueue`` and ``enqueue_batch``; and
:meth:`AsyncProducer.stream`, many jobs on one ``EnqueueStream``, a result
per job as the broker makes it durable.

A refused call raises :class:`BrokerError` with the broker's status code
and message; in a batch each job gets its own result, refused jobs
included (``EnqueueResult.error``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from typing import Dict, List, Optional, Sequence

import grpc
import grpc.aio
from google.protobuf import duration_pb2, timestamp_pb2

from sluice_client._proto.sluice.v1 import broker_pb2, broker_pb2_grpc
from sluice_client.settings import Settings
from sluice_client.waiters import Waiters


class BrokerError(Exception):
    """The broker refused a call: its gRPC status code and message."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message

    @classmethod
    def of(cls, error: grpc.RpcError) -> "BrokerError":
        code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        details = error.details() if hasattr(error, "details") else str(error)
        return cls(code, details or "")


@dataclass
class JobSpec:
    """A job to enqueue. ``timeout`` is in seconds (the broker's default
    when ``None``); ``run_at`` a timezone-aware time to start it at."""

    job_type: str
    payload: bytes = b""
    queue: str = ""
    headers: Dict[str, str] = field(default_factory=dict)
    priority: int = 0
    max_attempts: int = 0
    timeout: Optional[float] = None
    run_at: Optional[datetime] = None
    idempotency_key: str = ""

    def request(self) -> broker_pb2.EnqueueRequest:
        req = broker_pb2.EnqueueRequest(
            queue=self.queue,
            job_type=self.job_type,
            payload=self.payload,
            headers=self.headers,
            priority=self.priority,
            max_attempts=self.max_attempts,
            idempotency_key=self.idempotency_key,
        )
        if self.timeout is not None:
            timeout = duration_pb2.Duration()
            timeout.FromNanoseconds(int(self.timeout * 1e9))
            req.timeout.CopyFrom(timeout)
        if self.run_at is not None:
            run_at = timestamp_pb2.Timestamp()
            run_at.FromDatetime(self.run_at)
            req.run_at.CopyFrom(run_at)
        return req


@dataclass(frozen=True)
class EnqueueResult:
    """One job's result: its id and whether an idempotency key matched an
    earlier job; or, in a batch, the error that refused it."""

    job_id: str = ""
    duplicate: bool = False
    error: Optional[BrokerError] = None


def _batch_results(response: broker_pb2.EnqueueBatchResponse) -> List[EnqueueResult]:
    return [
        EnqueueResult(r.job_id, r.duplicate)
        if r.code == 0
        else EnqueueResult(error=BrokerError(_code(r.code), r.message))
        for r in response.results
    ]


def _code(number: int) -> grpc.StatusCode:
    for code in grpc.StatusCode:
        if code.value[0] == number:
            return code
    return grpc.StatusCode.UNKNOWN


class EnqueueStream:
    """Jobs sent on one ``Broker.EnqueueStream``: :meth:`enqueue` returns a
    job's result once the broker made it durable, and many may be awaited
    at once (the broker reads up to 1,024 ahead). A refused job raises
    :class:`BrokerError` alone; the stream goes on. If the stream breaks,
    every job still waiting raises UNAVAILABLE: send it again, with its
    idempotency key, and it is enqueued once."""

    def __init__(self, call: grpc.aio.StreamStreamCall) -> None:
        self._call = call
        self._waiters: Waiters[broker_pb2.EnqueueStreamResult] = Waiters()
        self._write_lock = asyncio.Lock()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        error = BrokerError(grpc.StatusCode.UNAVAILABLE, "the stream ended")
        try:
            while True:
                response = await self._call.read()
                if response is grpc.aio.EOF:
                    break
                for result in response.results:
                    self._waiters.resolve(result.seq, result)
        except grpc.aio.AioRpcError as e:
            error = BrokerError.of(e)
        finally:
            self._waiters.fail_all(error)

    async def enqueue(self, job_type: str, payload: bytes = b"", **fields: object) -> EnqueueResult:
        """Enqueues one job (``fields`` as :class:`JobSpec`'s) on the stream."""
        spec = JobSpec(job_type, payload, **fields)  # type: ignore[arg-type]
        if self._reader.done():
            raise BrokerError(grpc.StatusCode.UNAVAILABLE, "the stream ended")
        seq, waiter = self._waiters.add()
        async with self._write_lock:
            await self._call.write(broker_pb2.EnqueueStreamRequest(seq=seq, job=spec.request()))
        result = await waiter
        if result.code != 0:
            raise BrokerError(_code(result.code), result.message)
        return EnqueueResult(result.job_id, result.duplicate)

    async def close(self) -> None:
        """Ends the stream once every job sent has its result."""
        async with self._write_lock:
            await self._call.done_writing()
        await self._reader

    async def __aenter__(self) -> "EnqueueStream":
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()


class AsyncProducer:
    """Enqueues from asyncio code. Use as ``async with AsyncProducer() as p``
    (or call :meth:`close`)."""

    def __init__(self, broker: Optional[str] = None, settings: Optional[Settings] = None) -> None:
        self._settings = settings or Settings.from_env(broker=broker)
        self._channel = self._settings.aio_channel()
        self._stub = broker_pb2_grpc.BrokerStub(self._channel)

    async def enqueue(self, job_type: str, payload: bytes = b"", **fields: object) -> EnqueueResult:
        """Enqueues one job (``fields`` as :class:`JobSpec`'s)."""
        spec = JobSpec(job_type, payload, **fields)  # type: ignore[arg-type]
        try:
            r = await self._stub.Enqueue(spec.request(), metadata=self._settings.metadata())
        except grpc.aio.AioRpcError as e:
            raise BrokerError.of(e) from None
        return EnqueueResult(r.job_id, r.duplicate)

    async def enqueue_batch(self, jobs: Sequence[JobSpec]) -> List[EnqueueResult]:
        """Enqueues many jobs in one call: a result per job, in order."""
        req = broker_pb2.EnqueueBatchRequest(jobs=[j.request() for j in jobs])
        try:
            response = await self._stub.EnqueueBatch(req, metadata=self._settings.metadata())
        except grpc.aio.AioRpcError as e:
            raise BrokerError.of(e) from None
        return _batch_results(response)

    def stream(self) -> EnqueueStream:
        """A stream for many jobs, each with its own result:
        ``async with producer.stream() as s: await s.enqueue(...)``."""
        return EnqueueStream(self._stub.EnqueueStream(metadata=self._settings.metadata()))

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> "AsyncProducer":
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()


class Producer:
    """Enqueues from blocking code. Use as ``with Producer() as p`` (or call
    :meth:`close`)."""

    def __init__(self, broker: Optional[str] = None, settings: Optional[Settings] = None) -> None:
        self._settings = settings or Settings.from_env(broker=broker)
        self._channel = self._settings.channel()
        self._stub = broker_pb2_grpc.BrokerStub(self._channel)

    def enqueue(self, job_type: str, payload: bytes = b"", **fields: object) -> EnqueueResult:
        """Enqueues one job (``fields`` as :class:`JobSpec`'s)."""
        spec = JobSpec(job_type, payload, **fields)  # type: ignore[arg-type]
        try:
            r = self._stub.Enqueue(spec.request(), metadata=self._settings.metadata())
        except grpc.RpcError as e:
            raise BrokerError.of(e) from None
        return EnqueueResult(r.job_id, r.duplicate)

    def enqueue_batch(self, jobs: Sequence[JobSpec]) -> List[EnqueueResult]:
        """Enqueues many jobs in one call: a result per job, in order."""
        req = broker_pb2.EnqueueBatchRequest(jobs=[j.request() for j in jobs])
        try:
            response = self._stub.EnqueueBatch(req, metadata=self._settings.metadata())
        except grpc.RpcError as e:
            raise BrokerError.of(e) from None
        return _batch_results(response)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Producer":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
