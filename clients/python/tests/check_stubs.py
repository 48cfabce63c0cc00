"""Fails (exit 1, naming the file) when the committed stubs in
sluice_client/_proto describe other files than proto/ does: compares each
file's descriptor as protoc reads proto/ now with the one the stub holds,
whatever protoc version made the stub. Run generate_stubs.py to fix."""

import importlib
import pathlib
import sys
import tempfile

from google.protobuf import descriptor_pb2
from grpc_tools import protoc

HERE = pathlib.Path(__file__).resolve().parent.parent
PROTO = HERE.parent.parent / "proto"
sys.path.insert(0, str(HERE))

files = sorted(str(p.relative_to(PROTO)) for p in (PROTO / "sluice" / "v1").glob("*.proto"))
with tempfile.TemporaryDirectory() as tmp:
    out = pathlib.Path(tmp) / "set.pb"
    args = ["protoc", f"-I{PROTO}", f"-I{pathlib.Path(protoc.__file__).parent / '_proto'}", f"--descriptor_set_out={out}", *files]
    if protoc.main(args) != 0:
        sys.exit("protoc failed")
    wanted = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def without_json_names(file: descriptor_pb2.FileDescriptorProto) -> descriptor_pb2.FileDescriptorProto:
    """protoc's descriptor set carries json_name on every field; the
    Python plugin leaves it out of the stubs (derived from the name)."""
    file = descriptor_pb2.FileDescriptorProto.FromString(file.SerializeToString())
    messages = list(file.message_type)
    while messages:
        message = messages.pop()
        for f in message.field:
            f.ClearField("json_name")
        messages.extend(message.nested_type)
    return file


stale = []
for file in wanted.file:
    module = importlib.import_module("sluice_client._proto." + file.name[: -len(".proto")].replace("/", ".") + "_pb2")
    committed = descriptor_pb2.FileDescriptorProto.FromString(module.DESCRIPTOR.serialized_pb)
    if committed != without_json_names(file):
        stale.append(file.name)
if stale:
    sys.exit(f"stale stubs for {', '.join(stale)}: run clients/python/generate_stubs.py")
print(f"{len(wanted.file)} stubs match proto/")
