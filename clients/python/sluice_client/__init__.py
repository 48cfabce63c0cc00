"""Sluice's Python client: producers (:class:`AsyncProducer`,
:class:`Producer`) and a worker (:class:`Worker`) that follows
docs/worker-protocol.md. Connection settings come from the same
environment variables as the Rust worker (:class:`Settings`)."""

from sluice_client.producer import AsyncProducer, BrokerError, EnqueueResult, EnqueueStream, JobSpec, Producer
from sluice_client.settings import Settings, SettingsError
from sluice_client.worker import Dead, Job, Retry, Worker

__all__ = [
    "AsyncProducer",
    "BrokerError",
    "Dead",
    "EnqueueResult",
    "EnqueueStream",
    "Job",
    "JobSpec",
    "Producer",
    "Retry",
    "Settings",
    "SettingsError",
    "Worker",
]
