"""The parts of the client that need no broker, checked by the suite
(tests/tests/clients.rs): how Acks are cut into batches, how a handler's
value becomes a result, and which progress reports are refused.

    python3 tests/check_units.py
"""

import asyncio
import datetime

from sluice_client._proto.sluice.v1 import broker_pb2
from sluice_client.acks import ACK_OVERHEAD, MAX_ACKS, MAX_BATCH_BYTES, batches
from sluice_client.worker import Job, result_bytes


async def check_batches() -> None:
    loop = asyncio.get_running_loop()

    def acks(n: int, result: bytes = b""):  # type: ignore[no-untyped-def]
        return [(broker_pb2.AckRequest(job_id=str(i), result=result), loop.create_future()) for i in range(n)]

    assert batches([]) == []
    cut = batches(acks(MAX_ACKS + 1))
    most = min(MAX_ACKS, MAX_BATCH_BYTES // ACK_OVERHEAD)
    assert all(len(b) <= most for b in cut) and sum(map(len, cut)) == MAX_ACKS + 1, [len(b) for b in cut]
    big = 64 * 1024
    per_batch = MAX_BATCH_BYTES // (big + ACK_OVERHEAD)
    cut = batches(acks(2 * per_batch + 1, b"x" * big))
    assert [len(b) for b in cut] == [per_batch, per_batch, 1], [len(b) for b in cut]
    order = [r.job_id for b in cut for r, _ in b]
    assert order == [str(i) for i in range(2 * per_batch + 1)], "in order"


def check_results() -> None:
    assert result_bytes(None) == b""
    assert result_bytes(b"\x00\xff") == b"\x00\xff"
    assert result_bytes("h\u00e9") == "h\u00e9".encode()
    assert result_bytes({"sent": 3}) == b'{"sent": 3}'
    for bad in (datetime.datetime.now(), {1, 2}):
        try:
            result_bytes(bad)
        except (TypeError, ValueError):
            continue
        raise AssertionError(f"{bad!r} became a result")


def check_progress() -> None:
    seen = []
    job = Job("j", "q", "t", b"", {}, 1, 1, 1.0, _on_progress=lambda p, m: seen.append((p, m)))
    job.progress(40, {"rows": 400})
    assert seen == [(40, '{"rows": 400}')], seen
    for percent in (101, -1, 33.3, True):
        try:
            job.progress(percent)  # type: ignore[arg-type]
        except ValueError:
            continue
        raise AssertionError(f"percent {percent!r} was taken")
    try:
        job.progress(1, "x" * 1025)
    except ValueError:
        pass
    else:
        raise AssertionError("a 1025-byte message was taken")
    assert not job.cancelled.is_set()


asyncio.run(check_batches())
check_results()
check_progress()
print("units pass")
