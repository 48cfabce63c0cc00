"""One ``Broker.Work`` session (docs/worker-protocol.md, section 2): the
``open`` message, then reports and credit written one at a time, each with a
``seq`` whose result a reader task hands back; jobs and the broker's
``draining`` go to the worker's callbacks. When the session ends, every
report still waiting fails with :class:`SessionEnded`, which callers treat
as unavailability (and retry by the unary calls).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable, List, Optional, Tuple

import grpc
import grpc.aio

from sluice_client._proto.sluice.v1 import broker_pb2, broker_pb2_grpc
from sluice_client.producer import BrokerError, _code
from sluice_client.waiters import Waiters

log = logging.getLogger("sluice_client")

#: How long a report waits for its result before it counts as unavailable.
RESULT_TIMEOUT = 5.0
#: grpc core's words for an error of its own (a stream reset it saw).
GRPC_CORE_INTERNAL = "Internal error from Core"


class SessionEnded(Exception):
    """The session ended before a report's result came."""


class Session:
    """An open Work session; see the module doc."""

    def __init__(
        self,
        call: grpc.aio.StreamStreamCall,
        on_jobs: Callable[[List[broker_pb2.LeasedJob]], None],
        on_draining: Callable[[], None],
    ) -> None:
        self._call = call
        self._on_jobs = on_jobs
        self._on_draining = on_draining
        self._waiters: Waiters[broker_pb2.WorkResult] = Waiters()
        self._write_lock = asyncio.Lock()
        self.ended = asyncio.Event()
        self._reader: Optional["asyncio.Task[None]"] = None

    @classmethod
    async def open(
        cls,
        stub: broker_pb2_grpc.BrokerStub,
        metadata: Tuple[Tuple[str, str], ...],
        request: broker_pb2.LeaseRequest,
        on_jobs: Callable[[List[broker_pb2.LeasedJob]], None],
        on_draining: Callable[[], None],
    ) -> "Session":
        """Opens a session; raises :class:`BrokerError` when the broker
        refuses it (its headers come once it has read ``open``)."""
        call = stub.Work(metadata=metadata)
        failed = False
        try:
            await call.write(broker_pb2.WorkRequest(seq=0, open=request))
            await call.initial_metadata()
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            # A refusal can end the call while `open` is being written: the
            # write then fails in grpc's own words (INTERNAL); the call's
            # status, awaited below, is the broker's.
            failed = True
        if failed or call.done():
            code = await call.code()
            details = await call.details() or "the session ended as it opened"
            # grpc's core sometimes reports a refusal that raced the write of
            # `open` as its own INTERNAL (not the broker's, whose INTERNAL
            # says otherwise): a try like any unavailability, whose next
            # attempt hears the broker's status.
            if code == grpc.StatusCode.OK or (code == grpc.StatusCode.INTERNAL and details == GRPC_CORE_INTERNAL):
                code = grpc.StatusCode.UNAVAILABLE
            raise BrokerError(code, details)
        session = cls(call, on_jobs, on_draining)
        session._reader = asyncio.create_task(session._read())
        return session

    async def _read(self) -> None:
        try:
            while True:
                response = await self._call.read()
                if response is grpc.aio.EOF:
                    break
                for result in response.results:
                    self._waiters.resolve(result.seq, result)
                if response.jobs:
                    self._on_jobs(list(response.jobs))
                if response.draining:
                    log.info("the broker drains: the session takes no more jobs")
                    self._on_draining()
        except grpc.aio.AioRpcError as e:
            log.warning("the session broke: %s: %s", e.code().name, e.details())
        except asyncio.CancelledError:
            pass
        finally:
            self.ended.set()
            self._waiters.fail_all(SessionEnded())

    async def _write(self, request: broker_pb2.WorkRequest) -> None:
        if self.ended.is_set():
            raise SessionEnded()
        async with self._write_lock:
            try:
                await self._call.write(request)
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as e:
                raise SessionEnded() from e

    async def report(self, **kind: object) -> broker_pb2.WorkResult:
        """Sends one report (``ack=``, ``nack=``, ``extend=``, ``release=``,
        ``progress=`` or ``credit=``) and returns its result; raises :class:`BrokerError` for a
        refusal, :class:`SessionEnded` when no result can come."""
        seq, waiter = self._waiters.add()
        try:
            await self._write(broker_pb2.WorkRequest(seq=seq, **kind))  # type: ignore[arg-type]
            result = await asyncio.wait_for(waiter, RESULT_TIMEOUT)
        except asyncio.TimeoutError:
            raise SessionEnded() from None
        finally:
            self._waiters.forget(seq)
        if result.code != 0:
            raise BrokerError(_code(result.code), result.message)
        return result

    async def close(self) -> None:
        """Closes the worker's side and waits for the broker to end the call."""
        if not self.ended.is_set():
            async with self._write_lock:
                try:
                    await self._call.done_writing()
                except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                    pass
            try:
                await asyncio.wait_for(self.ended.wait(), RESULT_TIMEOUT)
            except asyncio.TimeoutError:
                pass
        self.cancel()

    def cancel(self) -> None:
        """Ends the session at once."""
        self._call.cancel()
        if self._reader is not None:
            self._reader.cancel()
