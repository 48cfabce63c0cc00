"""Regenerates the gRPC stubs in sluice_client/_proto from the repository's
proto/ directory (needs grpcio-tools):

    python3 generate_stubs.py

The generated modules import each other as ``sluice.v1``; they are
rewritten to import from ``sluice_client._proto.sluice.v1`` so that the
package does not claim a top-level ``sluice`` module. The suite checks that
the committed stubs describe the same files as proto/
(tests/tests/clients.rs).
"""

import pathlib
import re
import shutil
import sys

from grpc_tools import protoc

HERE = pathlib.Path(__file__).resolve().parent
PROTO = HERE.parent.parent / "proto"
OUT = HERE / "sluice_client" / "_proto"


def main() -> int:
    target = OUT / "sluice" / "v1"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    files = sorted(str(p.relative_to(PROTO)) for p in (PROTO / "sluice" / "v1").glob("*.proto"))
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTO}",
            f"-I{pathlib.Path(protoc.__file__).parent / '_proto'}",
            f"--python_out={OUT}",
            f"--pyi_out={OUT}",
            f"--grpc_python_out={OUT}",
            *files,
        ]
    )
    if code != 0:
        return code
    for path in target.iterdir():
        text = path.read_text()
        text = re.sub(r"^from sluice\.v1 import", "from sluice_client._proto.sluice.v1 import", text, flags=re.M)
        path.write_text(text)
    for package in (OUT, OUT / "sluice", target):
        (package / "__init__.py").write_text('"""Generated from proto/ by generate_stubs.py: do not edit."""\n')
    return 0


if __name__ == "__main__":
    sys.exit(main())
