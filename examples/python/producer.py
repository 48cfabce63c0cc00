#!/usr/bin/env python3
"""Enqueue jobs into Sluice from Python with grpcio.

The stubs are generated at run time from the repository's proto/ directory
with grpcio-tools, so nothing generated is checked in:

    pip install grpcio grpcio-tools
    python3 examples/python/producer.py --broker 127.0.0.1:50051 \
        --job-type email --count 3 --payload '{"to": "ada@example.com"}'

It prints one line per job: the job id, then "duplicate" if the
idempotency key matched a job the broker already knew.
"""

import argparse
import importlib
import importlib.resources
import pathlib
import sys
import tempfile

import grpc
from grpc_tools import protoc

PROTO_DIR = pathlib.Path(__file__).resolve().parents[2] / "proto"


def load_stubs(out_dir: pathlib.Path):
    """Compiles proto/sluice/v1/*.proto into out_dir and imports the modules."""
    well_known = importlib.resources.files("grpc_tools") / "_proto"
    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.glob("sluice/v1/*.proto"))
    status = protoc.main(
        ["grpc_tools.protoc", f"-I{PROTO_DIR}", f"-I{well_known}",
         f"--python_out={out_dir}", f"--grpc_python_out={out_dir}", *protos]
    )
    if status != 0:
        sys.exit(f"protoc failed on {protos} (status {status})")
    sys.path.insert(0, str(out_dir))
    return (importlib.import_module("sluice.v1.broker_pb2"),
            importlib.import_module("sluice.v1.broker_pb2_grpc"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", default="127.0.0.1:50051", help="host:port of the broker")
    parser.add_argument("--queue", default="", help="queue (default: the broker's 'default')")
    parser.add_argument("--job-type", required=True)
    parser.add_argument("--payload", default="", help="payload text, sent as UTF-8 bytes")
    parser.add_argument("--count", type=int, default=1, help="how many jobs to enqueue")
    parser.add_argument("--header", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--idempotency-key", default="", help="with --count 1: deduplicate")
    args = parser.parse_args()

    headers = dict(h.split("=", 1) for h in args.header)
    with tempfile.TemporaryDirectory() as tmp:
        broker_pb2, broker_pb2_grpc = load_stubs(pathlib.Path(tmp))
        with grpc.insecure_channel(args.broker) as channel:
            broker = broker_pb2_grpc.BrokerStub(channel)
            for i in range(args.count):
                request = broker_pb2.EnqueueRequest(
                    queue=args.queue,
                    job_type=args.job_type,
                    payload=args.payload.encode(),
                    headers=headers,
                    idempotency_key=args.idempotency_key,
                )
                try:
                    reply = broker.Enqueue(request, timeout=10)
                except grpc.RpcError as err:
                    print(f"enqueue {i} failed: {err.code().name}: {err.details()}", file=sys.stderr)
                    return 1
                print(reply.job_id + (" duplicate" if reply.duplicate else ""), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
