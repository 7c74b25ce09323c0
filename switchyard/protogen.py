"""Compile protos/ into switchyard/v1 with grpcio-tools.

The folder layout mirrors the Python package (protos/switchyard/v1/x.proto), so generated
imports read `from switchyard.v1 import x_pb2` and work inside the package.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"


def proto_files() -> list[Path]:
    return sorted((PROTO_ROOT / "switchyard" / "v1").glob("*.proto"))


def generate(out_dir: Path) -> list[Path]:
    """Generate *_pb2.py, *_pb2.pyi and *_pb2_grpc.py for every proto into out_dir."""
    import grpc_tools
    from grpc_tools import protoc

    include = Path(grpc_tools.__file__).parent / "_proto"
    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *[str(p.relative_to(PROTO_ROOT)) for p in proto_files()],
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed")
    return sorted((out_dir / "switchyard" / "v1").glob("*_pb2*.py*"))


def main() -> int:
    generated = generate(ROOT)
    print("\n".join(str(p.relative_to(ROOT)) for p in generated))
    return 0


if __name__ == "__main__":
    sys.exit(main())
