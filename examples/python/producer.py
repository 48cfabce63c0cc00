#!/usr/bin/env python3
"""Enqueue jobs into Sluice from Python with grpcio.

The stubs are generated at run time from the repository's proto/ directory
with grpcio-tools, so nothing generated is checked in:

    pip install grpcio grpcio-tools
    python3 examples/python/producer.py --broker 127.0.0.1:50051 \
        --job-type email --count 3 --payload '{"to": "ada@example.com"}'

It prints one line per job: the job id, then "duplicate" if the
idempotency key matched a job the broker already knew.

Plaintext by default. `--broker https://HOST:PORT` connects over TLS,
trusting the system's roots or only `--tls-ca FILE`; `--tls-cert FILE
--tls-key FILE` present a client certificate (mTLS). A token, sent as
`authorization: Bearer TOKEN` on every call, is read from the SLUICE_TOKEN
environment variable (kept out of `ps`) or from `--token-file FILE`.

Trace context: `--traceparent` and `--tracestate` (else the TRACEPARENT and
TRACESTATE environment variables, if set) become the jobs' `traceparent`
and `tracestate` headers, so the broker's and the worker's spans join the
producer's trace (W3C Trace Context).
"""

import argparse
import importlib
import importlib.resources
import os
import pathlib
import re
import sys
import tempfile

import grpc
from grpc_tools import protoc

PROTO_DIR = pathlib.Path(__file__).resolve().parents[2] / "proto"
# Version 00, trace id and parent id not all zero (W3C Trace Context).
TRACEPARENT = re.compile(r"00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}")


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


def read_file(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as err:
        sys.exit(f"cannot read the {what} {path}: {err.strerror}")


def token(args) -> str | None:
    """The token from SLUICE_TOKEN or --token-file; both is an error."""
    from_env = os.environ.get("SLUICE_TOKEN")
    if from_env is not None and args.token_file:
        sys.exit("two tokens: SLUICE_TOKEN is set and --token-file is given; give one")
    value = from_env if from_env is not None else (
        read_file(args.token_file, "token file").decode().strip() if args.token_file else None)
    if value is not None and (not value or not all("!" <= c <= "~" for c in value)):
        sys.exit("bad token: it must be visible ASCII without whitespace, and not empty")
    return value


def open_channel(args) -> grpc.Channel:
    """A plaintext channel to host:port, or TLS for https://host:port."""
    tls_given = args.tls_ca or args.tls_cert or args.tls_key
    if bool(args.tls_cert) != bool(args.tls_key):
        sys.exit("--tls-cert and --tls-key go together")
    if not args.broker.startswith("https://"):
        if tls_given:
            sys.exit(f"--tls-* options need an https:// --broker, not {args.broker!r}")
        target = args.broker.removeprefix("http://")
        return grpc.insecure_channel(target)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=read_file(args.tls_ca, "CA certificate") if args.tls_ca else None,
        private_key=read_file(args.tls_key, "client key") if args.tls_key else None,
        certificate_chain=read_file(args.tls_cert, "client certificate") if args.tls_cert else None,
    )
    return grpc.secure_channel(args.broker.removeprefix("https://").rstrip("/"), credentials)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", default="127.0.0.1:50051",
                        help="host:port (plaintext) or https://host:port (TLS)")
    parser.add_argument("--tls-ca", metavar="FILE", help="PEM CA to trust instead of the system's")
    parser.add_argument("--tls-cert", metavar="FILE", help="PEM client certificate (mTLS)")
    parser.add_argument("--tls-key", metavar="FILE", help="PEM key of --tls-cert")
    parser.add_argument("--token-file", metavar="FILE",
                        help="file holding the token (else env SLUICE_TOKEN)")
    parser.add_argument("--queue", default="", help="queue (default: the broker's 'default')")
    parser.add_argument("--job-type", required=True)
    parser.add_argument("--payload", default="", help="payload text, sent as UTF-8 bytes")
    parser.add_argument("--count", type=int, default=1, help="how many jobs to enqueue")
    parser.add_argument("--header", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--idempotency-key", default="", help="with --count 1: deduplicate")
    parser.add_argument("--traceparent", default=os.environ.get("TRACEPARENT"),
                        help="W3C traceparent of the producer's span (default: $TRACEPARENT)")
    parser.add_argument("--tracestate", default=os.environ.get("TRACESTATE"),
                        help="W3C tracestate that goes with it (default: $TRACESTATE)")
    args = parser.parse_args()

    headers = dict(h.split("=", 1) for h in args.header)
    if args.traceparent:
        if not TRACEPARENT.fullmatch(args.traceparent):
            parser.error(f"--traceparent {args.traceparent!r} is not a W3C traceparent "
                         "(00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>)")
        headers["traceparent"] = args.traceparent
        if args.tracestate:
            headers["tracestate"] = args.tracestate
    bearer = token(args)
    metadata = [("authorization", f"Bearer {bearer}")] if bearer is not None else None
    with tempfile.TemporaryDirectory() as tmp:
        broker_pb2, broker_pb2_grpc = load_stubs(pathlib.Path(tmp))
        with open_channel(args) as channel:
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
                    reply = broker.Enqueue(request, timeout=10, metadata=metadata)
                except grpc.RpcError as err:
                    print(f"enqueue {i} failed: {err.code().name}: {err.details()}", file=sys.stderr)
                    return 1
                print(reply.job_id + (" duplicate" if reply.duplicate else ""), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
