"""Acks in batches (docs/worker-protocol.md, S7): the Acks a worker makes
in one turn of the event loop go in one ``AckBatch`` call, each answered as
its own Ack would be (fenced by its lease alike). One message per Ack on
the session costs a write each, and gRPC allows one write in flight per
call: with many short jobs the writes, not the jobs, set the pace (about
7,700 jobs/s against 19,000 batched, measured with ``sluice-bench
clients``). Several batches may be in flight at once.
"""

from __future__ import annotations

import asyncio
from typing import Callable, List, Optional, Set, Tuple

import grpc
import grpc.aio

from sluice_client._proto.sluice.v1 import broker_pb2, broker_pb2_grpc
from sluice_client.producer import BrokerError, _code

#: How long a batch waits for its answer before its Acks count as unavailable.
ACK_TIMEOUT = 5.0
#: Most Acks in one AckBatch (the broker's limit).
MAX_ACKS = 10_000
#: Most bytes of results in one AckBatch: the broker takes a message of at
#: most its --max-payload + 512 KiB, and a result may be 64 KiB.
MAX_BATCH_BYTES = 512 * 1024
#: What an Ack costs in a batch besides its result (two ids, framing).
ACK_OVERHEAD = 100

Pending = Tuple[broker_pb2.AckRequest, "asyncio.Future[None]"]


class AckBatches:
    """Sends Acks in batches; see the module doc."""

    def __init__(
        self,
        stub: Callable[[], Optional[broker_pb2_grpc.BrokerStub]],
        metadata: Callable[[], Tuple[Tuple[str, str], ...]],
    ) -> None:
        self._stub = stub
        self._metadata = metadata
        self._pending: List[Pending] = []
        #: Batches under way (the loop keeps only weak references to tasks).
        self._sending: "Set[asyncio.Task[None]]" = set()

    def ack(self, request: broker_pb2.AckRequest) -> "asyncio.Future[None]":
        """Queues ``request`` for this turn's batch; the future fails with
        :class:`BrokerError` when the broker refuses it or cannot be reached."""
        loop = asyncio.get_running_loop()
        answered: "asyncio.Future[None]" = loop.create_future()
        self._pending.append((request, answered))
        if len(self._pending) == 1:
            loop.call_soon(self._flush)
        return answered

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        for batch in batches(pending):
            task = asyncio.ensure_future(self._send(batch))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, batch: List[Pending]) -> None:
        stub = self._stub()
        try:
            if stub is None:
                raise BrokerError(grpc.StatusCode.UNAVAILABLE, "no channel to the broker")
            try:
                answer = await stub.AckBatch(
                    broker_pb2.AckBatchRequest(acks=[request for request, _ in batch]),
                    metadata=self._metadata(),
                    timeout=ACK_TIMEOUT,
                )
            except grpc.aio.AioRpcError as e:
                raise BrokerError.of(e) from None
        except BrokerError as e:
            for _, answered in batch:
                if not answered.done():
                    answered.set_exception(e)
            return
        results = list(answer.results)
        for index, (_, answered) in enumerate(batch):
            if answered.done():
                continue
            if index >= len(results):
                answered.set_exception(BrokerError(grpc.StatusCode.INTERNAL, "the broker answered fewer Acks than sent"))
            elif results[index].code:
                answered.set_exception(BrokerError(_code(results[index].code), results[index].message))
            else:
                answered.set_result(None)


def batches(pending: List[Pending]) -> List[List[Pending]]:
    """``pending`` in order, cut into batches the broker takes: at most
    :data:`MAX_ACKS` Acks and :data:`MAX_BATCH_BYTES` of results each."""
    out: List[List[Pending]] = []
    size = 0
    for item in pending:
        cost = len(item[0].result) + ACK_OVERHEAD
        if not out or len(out[-1]) >= MAX_ACKS or size + cost > MAX_BATCH_BYTES:
            out.append([])
            size = 0
        out[-1].append(item)
        size += cost
    return out
