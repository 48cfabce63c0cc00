"""The worker: handlers registered by job type, run on one Work session
with the slots the session's credit grants (docs/worker-protocol.md).

- Async handlers run on the event loop; plain functions in a thread pool
  of ``concurrency`` threads, so the loop is never blocked.
- Each running job's lease is extended from a task of its own every third
  of the lease duration; an Extend answered ``cancel_requested`` cancels the
  handler (async: ``CancelledError``; plain: ``job.cancelled`` is set) and
  the job is Nacked dead (the broker records it CANCELLED); a lost lease
  cancels it without a report.
- The job's ``timeout`` cancels the handler the same way; after a 3 s grace
  the job is Nacked ``timed out after ...`` whether or not it stopped.
- A handler that returns is Acked, carrying what it returned as the job's
  result (``bytes`` as they are, ``str`` as UTF-8, anything else but
  ``None`` as JSON; at most 64 KiB and JSON-able, or the job is Nacked
  dead saying so);
  one that raises :class:`Retry` is Nacked with its delay, :class:`Dead`
  dead, anything else with the exception.
- ``job.progress(percent, message)`` reports how far the job has come, from
  a handler on the loop or in a thread alike, without waiting: a task of
  the job's own sends the latest report (one at a time), and the Ack waits
  for it.
- SIGTERM or SIGINT drains: credit 0, running jobs finish within
  ``drain_timeout`` (their leases still extended), those still running then
  are cancelled and Released; exit 0. A second signal exits 130 at once.
- The session reconnects with backoff (100 ms doubling to 5 s, +-25%),
  naming the leases it still holds; reports go on the session, or by the
  unary calls while there is none, retried until the lease would expire.
  Acks go in batches by ``AckBatch`` (:mod:`sluice_client.acks`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import json
import logging
import os
import random
import signal
import socket
import threading
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Coroutine, Dict, List, Optional, Sequence, Tuple, Union, cast

import grpc
import grpc.aio
from google.protobuf import duration_pb2

from sluice_client._proto.sluice.v1 import broker_pb2, broker_pb2_grpc
from sluice_client.acks import AckBatches
from sluice_client.producer import BrokerError
from sluice_client.session import RESULT_TIMEOUT, Session, SessionEnded
from sluice_client.settings import Settings

log = logging.getLogger("sluice_client")

#: How long a handler has to stop once cancelled (timeout, cancel, drain).
STOP_GRACE = 3.0
#: How long a Release of a job that never started is retried.
RELEASE_RETRY = 2.0
#: Codes that mean the lease is gone: stop, never report.
LEASE_LOST = frozenset({grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND})
#: Codes a later try may cure (RESOURCE_EXHAUSTED: every stream taken, or
#: a full store); the rest refuse for good.
UNAVAILABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)


class Retry(Exception):
    """Raise from a handler to have the job retried after ``after`` seconds
    (instead of the broker's backoff)."""

    def __init__(self, error: str, after: Optional[float] = None) -> None:
        super().__init__(error)
        self.after = after


class Dead(Exception):
    """Raise from a handler when no retry can help: the job is DEAD at once."""


#: Guards the making of a job's `cancelled` event, which a handler's
#: thread and the loop may both ask for first.
_CANCELLED_LOCK = threading.Lock()


@dataclass
class Job:
    """A leased job, as a handler sees it."""

    id: str
    queue: str
    type: str
    payload: bytes
    headers: Dict[str, str]
    attempt: int
    max_attempts: int
    timeout: float
    _cancelled: Optional[threading.Event] = field(default=None, repr=False)
    _on_progress: Optional[Callable[[int, str], None]] = field(default=None, repr=False)

    @property
    def cancelled(self) -> threading.Event:
        """Set when the attempt must stop (timeout, cancel, lost lease,
        drain): plain handlers poll it; async ones are cancelled as well.
        Made on first use: most handlers never look, and an Event costs
        more than a no-op job."""
        event = self._cancelled
        if event is None:
            with _CANCELLED_LOCK:
                if self._cancelled is None:
                    self._cancelled = threading.Event()
                event = self._cancelled
        return event

    def progress(self, percent: int, message: Any = "") -> None:
        """Reports how far the job has come: ``percent`` (0 to 100) and a
        short text, or anything else as JSON (at most 1 KiB). Returns at
        once, from the loop or a handler's thread; the broker shows the
        latest report (``sluice jobs get``, the dashboard)."""
        if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= MAX_PROGRESS_PERCENT:
            raise ValueError(f"percent must be an integer from 0 to {MAX_PROGRESS_PERCENT}, not {percent!r}")
        text = message if isinstance(message, str) else json.dumps(message)
        if len(text.encode()) > MAX_PROGRESS_MESSAGE_BYTES:
            raise ValueError(f"a progress message is at most {MAX_PROGRESS_MESSAGE_BYTES} bytes")
        if self._on_progress is not None:
            self._on_progress(percent, text)


#: A handler takes the job and returns its result (or an awaitable of it).
Handler = Callable[[Job], Any]

#: The largest result an Ack carries, and a progress report's bounds: the
#: broker's (its limits crate).
MAX_RESULT_BYTES = 64 * 1024
MAX_PROGRESS_MESSAGE_BYTES = 1024
MAX_PROGRESS_PERCENT = 100


def result_bytes(value: Any) -> bytes:
    """What a handler returned, as the bytes of its result: ``bytes`` as
    they are, ``str`` as UTF-8, ``None`` as none, anything else as JSON
    (``TypeError`` or ``ValueError`` when it is not JSON-able)."""
    if value is None:
        return b""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode()
    return json.dumps(value).encode()


class _Progress:
    """Sends a job's latest progress, one report at a time, from a task of
    its own: the handler's :meth:`Job.progress` only hands it over."""

    def __init__(self, worker: "Worker", running: "_Running") -> None:
        self._worker = worker
        self._running = running
        self._latest: Optional[Tuple[int, str]] = None
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task = asyncio.create_task(self._send())

    def hand_over(self, percent: int, message: str) -> None:
        """On the loop: ``percent`` and ``message`` are the latest report."""
        self._latest = (percent, message)
        self._idle.clear()
        self._wake.set()

    async def _send(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            latest, self._latest = self._latest, None
            if latest is not None:
                request = broker_pb2.ProgressRequest(
                    job_id=self._running.job.id,
                    lease_id=self._running.lease_id,
                    percent=latest[0],
                    message=latest[1],
                )
                try:
                    await self._worker._report(progress=request)
                except Exception as e:  # noqa: BLE001: the task must outlive any one report
                    log.debug("a progress report was not taken: %s", e, extra=self._worker._fields(self._running.job))
            if self._latest is None:
                self._idle.set()

    async def flush(self) -> None:
        """Waits (a bounded time) until the latest report was answered."""
        try:
            await asyncio.wait_for(self._idle.wait(), RESULT_TIMEOUT)
        except asyncio.TimeoutError:
            pass

    def stop(self) -> None:
        self._task.cancel()


def backoff(failures: int) -> float:
    """The delay before reconnect attempt ``failures`` (from 0)."""
    base: float = min(0.1 * 2.0**failures, 5.0)
    return base * random.uniform(0.75, 1.25)


def _duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


def _humantime(seconds: float) -> str:
    whole = int(seconds)
    if whole != seconds:
        return f"{int(seconds * 1000)}ms"
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else "", f"{secs}s" if secs else ""]
    return " ".join(p for p in parts if p) or "0s"


@dataclass
class _Running:
    job: Job
    lease_id: str
    #: By the loop's clock: when the lease runs out unless extended.
    expiry: float
    task: "Optional[asyncio.Task[None]]" = None
    #: Stops the attempt, saying why (set once it runs).
    halt: Callable[[str], None] = lambda reason: None
    #: The next heartbeat: its timer, or the extend under way.
    beat: "Union[asyncio.TimerHandle, asyncio.Future[None], None]" = None
    #: The attempt is over (reported, or given up).
    ended: bool = False


class Worker:
    """See the module doc. Register handlers with :meth:`handler` or
    :meth:`register`, then :meth:`run` (blocking, with signal handling) or
    ``await`` :meth:`serve`."""

    def __init__(
        self,
        *,
        queues: Sequence[str] = ("default",),
        concurrency: int = 1,
        lease_duration: float = 30.0,
        drain_timeout: float = 25.0,
        worker_id: Optional[str] = None,
        broker: Optional[str] = None,
        settings: Optional[Settings] = None,
    ) -> None:
        if not 1 <= concurrency <= 65_536:
            raise ValueError("concurrency must be 1 to 65536")
        if not 1 <= lease_duration <= 86_400:
            raise ValueError("lease_duration must be 1s to 24h")
        self.settings = settings or Settings.from_env(broker=broker)
        self.queues = list(queues)
        self.concurrency = concurrency
        self.lease_duration = lease_duration
        self.drain_timeout = drain_timeout
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self._handlers: Dict[str, Handler] = {}
        self._running: Dict[str, _Running] = {}
        self._session: Optional[Session] = None
        self._stub: Optional[broker_pb2_grpc.BrokerStub] = None
        self._draining = False
        #: Releases of jobs that never started, awaited by the drain.
        self._releases: "set[asyncio.Task[None]]" = set()
        self._acks = AckBatches(lambda: self._stub, self.settings.metadata)
        #: Why the broker refused the session for good, if it did.
        self._refusal: Optional[BrokerError] = None
        self._pool = concurrent.futures.ThreadPoolExecutor(concurrency, thread_name_prefix="sluice-job")
        self.processed = self.failed = self.released = 0

    def handler(self, job_type: str) -> Callable[[Handler], Handler]:
        """Registers the decorated function for ``job_type``."""

        def register(fn: Handler) -> Handler:
            self.register(job_type, fn)
            return fn

        return register

    def register(self, job_type: str, fn: Handler) -> None:
        self._handlers[job_type] = fn

    # -- running -------------------------------------------------------

    def run(self) -> int:
        """Runs until SIGTERM or SIGINT and the drain; returns 0, or 1 when
        the broker refused the session for good (a token, a role, a
        setting). A second signal exits the process with status 130 at
        once."""
        return asyncio.run(self._run_with_signals())

    async def _run_with_signals(self) -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal(name: str) -> None:
            if stop.is_set():
                log.warning("second %s: exiting at once", name)
                os._exit(130)
            log.info("%s: draining", name)
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig.name)
        try:
            await self.serve(stop)
        except BrokerError:
            return 1
        return 0

    async def serve(self, stop: asyncio.Event) -> None:
        """Runs jobs until ``stop`` is set, then drains (see the module doc).
        Raises :class:`BrokerError` when the broker refused the session for
        good."""
        if not self._handlers:
            raise ValueError("no handler is registered")
        channel = self.settings.aio_channel()
        self._stub = broker_pb2_grpc.BrokerStub(channel)
        sessions = asyncio.create_task(self._sessions(stop))

        def sessions_ended(task: "asyncio.Task[None]") -> None:
            # A bug, never a refusal: say so and stop, rather than idle.
            if not task.cancelled() and task.exception() is not None:
                log.error("the session loop failed: %r", task.exception())
                stop.set()

        sessions.add_done_callback(sessions_ended)
        await stop.wait()
        await self._drain()
        sessions.cancel()
        if self._session is not None:
            await self._session.close()
        await channel.close()
        self._pool.shutdown(wait=False)
        log.info(
            "worker stopped processed=%d failed=%d released=%d",
            self.processed,
            self.failed,
            self.released,
        )
        if self._refusal is not None:
            raise self._refusal

    async def _sessions(self, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            assert self._stub is not None
            request = broker_pb2.LeaseRequest(
                worker_id=self.worker_id,
                queues=self.queues,
                job_types=sorted(self._handlers),
                max_in_flight=self.concurrency,
                lease_duration=_duration(self.lease_duration),
                held_leases=[broker_pb2.HeldLease(job_id=i, lease_id=r.lease_id) for i, r in self._running.items()],
            )
            draining = asyncio.Event()
            try:
                session = await Session.open(
                    self._stub, self.settings.metadata(), request, self._on_jobs, draining.set
                )
            except BrokerError as e:
                if e.code not in UNAVAILABLE:
                    log.error("the broker refuses the session: %s", e)
                    self._refusal = e
                    stop.set()
                    return
                log.warning("could not open the session (attempt %d): %s", failures + 1, e)
            else:
                log.info("session open")
                failures = 0
                if self._draining:
                    # Opened while the drain began: it takes no job either.
                    try:
                        await session.report(credit=broker_pb2.WorkCredit(window=0))
                    except (BrokerError, SessionEnded):
                        pass
                old, self._session = self._session, session
                if old is not None:
                    # A draining broker's session answers what it read.
                    self._track(old.close())
                done = {asyncio.create_task(session.ended.wait()), asyncio.create_task(draining.wait())}
                _, waiting = await asyncio.wait(done, return_when=asyncio.FIRST_COMPLETED)
                for task in waiting:
                    task.cancel()
                if stop.is_set():
                    return
                # A draining broker's session keeps taking reports until a
                # new one opens; an ended one takes none.
                if session.ended.is_set():
                    self._session = None
            delay = backoff(failures)
            failures += 1
            log.info("reconnecting to the broker attempt=%d delay=%.3fs", failures, delay)
            try:
                await asyncio.wait_for(stop.wait(), delay)
            except asyncio.TimeoutError:
                pass

    def _on_jobs(self, leased: List[broker_pb2.LeasedJob]) -> None:
        loop = asyncio.get_running_loop()
        for lj in leased:
            j = lj.job
            job = Job(
                id=j.id,
                queue=j.queue,
                type=j.job_type,
                payload=j.payload,
                headers=dict(j.headers),
                attempt=j.attempt,
                max_attempts=j.max_attempts,
                timeout=j.timeout.ToNanoseconds() / 1e9,
            )
            running = _Running(job, lj.lease_id, loop.time() + self.lease_duration)
            if self._draining or job.type not in self._handlers:
                self._track(self._release(running, retry_for=RELEASE_RETRY))
                continue
            self._running[job.id] = running
            running.task = loop.create_task(self._run_job(running))

    def _track(self, coroutine: Awaitable[None]) -> None:
        """Runs ``coroutine`` as a task the drain waits for."""
        task = asyncio.ensure_future(coroutine)
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    def _fields(self, job: Job) -> Dict[str, Any]:
        return {
            "job_id": job.id,
            "job_type": job.type,
            "queue": job.queue,
            "attempt": job.attempt,
            "worker_id": self.worker_id,
        }

    async def _run_job(self, running: _Running) -> None:
        job = running.job
        fields = self._fields(job)
        handler = self._handlers[job.type]
        loop = asyncio.get_running_loop()
        # Its result is why the attempt must stop; the first reason wins.
        # Timers and one future rather than a task each: per job, the
        # loop's work is most of a no-op handler's cost.
        stopped: "asyncio.Future[str]" = loop.create_future()

        def halt(reason: str) -> None:
            job.cancelled.set()
            if not stopped.done():
                stopped.set_result(reason)

        running.halt = halt
        running.beat = loop.call_later(self.lease_duration / 3, self._beat, running)
        timeout = loop.call_later(job.timeout, halt, "timeout")
        progress: Optional[_Progress] = None

        def hand_over(percent: int, message: str) -> None:
            nonlocal progress
            if running.ended:
                # From a thread that outlived its attempt: nothing to report.
                return
            if progress is None:
                progress = _Progress(self, running)
            progress.hand_over(percent, message)

        def on_progress(percent: int, message: str) -> None:
            loop.call_soon_threadsafe(hand_over, percent, message)

        job._on_progress = on_progress
        work: "asyncio.Future[Any]"
        if inspect.iscoroutinefunction(handler):
            work = loop.create_task(cast(Coroutine[Any, Any, Any], handler(job)))
        else:
            work = loop.run_in_executor(self._pool, handler, job)
        log.info("job started", extra=fields)
        try:
            await asyncio.wait({work, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not work.done():
                if inspect.iscoroutinefunction(handler):
                    work.cancel()
                # A plain function's thread cannot be cancelled: it has the
                # grace to see job.cancelled and return.
                await asyncio.wait({work}, timeout=STOP_GRACE)
            reason = stopped.result() if stopped.done() else None
            if reason == "lost":
                log.warning("lease lost: the job was stopped and is not reported", extra=fields)
                return
            if reason == "drain":
                await self._release(running)
                return
            if reason == "cancel":
                await self._resolve(running, nack=broker_pb2.NackRequest(error="cancelled", dead=True))
                return
            if reason == "timeout":
                error = f"timed out after {_humantime(job.timeout)}"
                await self._resolve(running, nack=broker_pb2.NackRequest(error=error))
                return
            error_of = work.exception() if not work.cancelled() else None
            if progress is not None:
                await progress.flush()
            if error_of is None:
                try:
                    result = result_bytes(work.result())
                except (TypeError, ValueError) as e:
                    error = f"the handler's return value cannot be a result: {type(e).__name__}: {e}"
                    await self._resolve(running, nack=broker_pb2.NackRequest(error=error, dead=True))
                    return
                if len(result) > MAX_RESULT_BYTES:
                    error = f"the result is {len(result)} bytes, over the limit of {MAX_RESULT_BYTES} bytes"
                    await self._resolve(running, nack=broker_pb2.NackRequest(error=error, dead=True))
                else:
                    await self._resolve(running, ack=broker_pb2.AckRequest(result=result))
            elif isinstance(error_of, Retry):
                nack = broker_pb2.NackRequest(error=str(error_of))
                if error_of.after is not None:
                    nack.retry_after.CopyFrom(_duration(error_of.after))
                await self._resolve(running, nack=nack)
            elif isinstance(error_of, Dead):
                await self._resolve(running, nack=broker_pb2.NackRequest(error=str(error_of), dead=True))
            else:
                message = f"{type(error_of).__name__}: {error_of}"
                await self._resolve(running, nack=broker_pb2.NackRequest(error=message))
        finally:
            running.ended = True
            running.beat.cancel()
            timeout.cancel()
            if progress is not None:
                progress.stop()
            # The same job may run again here under a new lease.
            if self._running.get(job.id) is running:
                del self._running[job.id]

    def _beat(self, running: _Running) -> None:
        """A heartbeat is due: extends the lease from a task of its own."""
        running.beat = asyncio.ensure_future(self._extend(running))

    async def _extend(self, running: _Running) -> None:
        loop = asyncio.get_running_loop()
        sent = loop.time()
        extend = broker_pb2.ExtendRequest(
            job_id=running.job.id,
            lease_id=running.lease_id,
            extend_by=_duration(self.lease_duration),
        )
        try:
            result = await self._report(extend=extend)
        except BrokerError as e:
            if e.code in LEASE_LOST:
                running.halt("lost")
                return
            log.warning("heartbeat failed; the job keeps running: %s", e, extra=self._fields(running.job))
        else:
            running.expiry = sent + self.lease_duration
            if result.extend.cancel_requested:
                log.info("the job was cancelled", extra=self._fields(running.job))
                running.halt("cancel")
                return
        if loop.time() >= running.expiry:
            running.halt("lost")
            return
        running.beat = loop.call_later(self.lease_duration / 3, self._beat, running)

    async def _report(self, **kind: Any) -> broker_pb2.WorkResult:
        """One report on the session, or by its unary call between
        sessions (an Ack in this turn's batch, always); raises
        :class:`BrokerError` (UNAVAILABLE when neither answered)."""
        if "ack" in kind:
            await self._acks.ack(kind["ack"])
            return broker_pb2.WorkResult()
        session = self._session
        if session is not None and not session.ended.is_set():
            try:
                return await session.report(**kind)
            except SessionEnded:
                pass
        assert self._stub is not None
        metadata = self.settings.metadata()
        try:
            if "nack" in kind:
                return broker_pb2.WorkResult(nack=await self._stub.Nack(kind["nack"], metadata=metadata, timeout=5))
            if "progress" in kind:
                return broker_pb2.WorkResult(
                    progress=await self._stub.Progress(kind["progress"], metadata=metadata, timeout=5)
                )
            if "extend" in kind:
                return broker_pb2.WorkResult(
                    extend=await self._stub.Extend(kind["extend"], metadata=metadata, timeout=5)
                )
            return broker_pb2.WorkResult(
                release=await self._stub.Release(kind["release"], metadata=metadata, timeout=5)
            )
        except grpc.aio.AioRpcError as e:
            raise BrokerError.of(e) from None

    async def _resolve(self, running: _Running, **kind: Any) -> None:
        """Acks or Nacks ``running``, retrying unavailability until its
        lease would have expired."""
        job = running.job
        (name, request), = kind.items()
        request.job_id = job.id
        request.lease_id = running.lease_id
        loop = asyncio.get_running_loop()
        failures = 0
        while True:
            try:
                await self._report(**{name: request})
            except BrokerError as e:
                if e.code in UNAVAILABLE and loop.time() < running.expiry:
                    await asyncio.sleep(backoff(failures))
                    failures += 1
                    continue
                log.warning(
                    "could not report the job's outcome; its lease will expire: %s", e, extra=self._fields(job)
                )
                return
            break
        if name == "ack":
            self.processed += 1
            log.info("job succeeded", extra=self._fields(job))
        else:
            self.failed += 1
            log.info("job failed: %s", request.error, extra=self._fields(job))

    async def _release(self, running: _Running, retry_for: float = 0.0) -> None:
        release = broker_pb2.ReleaseRequest(job_id=running.job.id, lease_id=running.lease_id)
        loop = asyncio.get_running_loop()
        until = loop.time() + retry_for
        failures = 0
        while True:
            try:
                await self._report(release=release)
                self.released += 1
                return
            except BrokerError as e:
                if e.code in UNAVAILABLE and loop.time() < until:
                    await asyncio.sleep(backoff(failures))
                    failures += 1
                    continue
                log.warning("could not release the job: %s", e, extra=self._fields(running.job))
                return

    async def _drain(self) -> None:
        self._draining = True
        session = self._session
        if session is not None:
            try:
                await session.report(credit=broker_pb2.WorkCredit(window=0))
            except (BrokerError, SessionEnded):
                pass
        tasks = [r.task for r in self._running.values() if r.task is not None]
        if tasks:
            log.info("draining: stopped leasing, waiting for %d running jobs", len(tasks))
            _, still = await asyncio.wait(tasks, timeout=self.drain_timeout)
            if still:
                for running in list(self._running.values()):
                    running.halt("drain")
                # Their stop, then their Release (a session result, or a
                # unary call after it): bounded, never forever.
                await asyncio.wait(still, timeout=STOP_GRACE + 2 * RESULT_TIMEOUT)
        if self._releases:
            await asyncio.wait(set(self._releases), timeout=RELEASE_RETRY + RESULT_TIMEOUT)
