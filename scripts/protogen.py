"""Generate the Python stubs for protos/ into shared/ (or check that the committed ones are current).

python scripts/protogen.py shared           # regenerate
python scripts/protogen.py --check shared   # exit 1 when the committed stubs drift from the protos
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
PACKAGE_DIR = Path("tubelens") / "v1"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def generate(out_dir: Path) -> list[Path]:
    protos = sorted((PROTO_ROOT / PACKAGE_DIR).glob("*.proto"))
    if not protos:
        sys.exit(f"no .proto files under {PROTO_ROOT / PACKAGE_DIR}")
    well_known = resources.files("grpc_tools") / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *(str(p) for p in protos),
    ]
    if protoc.main(args) != 0:
        sys.exit("protoc failed")
    return sorted(generated_files(out_dir))


def generated_files(out_dir: Path) -> set[Path]:
    package = out_dir / PACKAGE_DIR
    if not package.is_dir():
        return set()
    return {p.relative_to(out_dir) for p in package.iterdir() if p.name.endswith(GENERATED_SUFFIXES)}


def check(out_dir: Path) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        generate(fresh)
        expected, committed = generated_files(fresh), generated_files(out_dir)
        drift = [f"missing: {p}" for p in sorted(expected - committed)]
        drift += [f"stale (no proto generates it): {p}" for p in sorted(committed - expected)]
        drift += [
            f"differs: {p}"
            for p in sorted(expected & committed)
            if not filecmp.cmp(fresh / p, out_dir / p, shallow=False)
        ]
    if drift:
        print("generated code has drifted from protos/ — run `make protos` and commit:", file=sys.stderr)
        print("\n".join(f"  {line}" for line in drift), file=sys.stderr)
        return 1
    print(f"generated stubs match protos/ ({len(expected)} files)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--check", action="store_true")
    ns = parser.parse_args()
    out_dir = ns.out_dir if ns.out_dir.is_absolute() else ROOT / ns.out_dir
    if ns.check:
        return check(out_dir)
    for stale in generated_files(out_dir):
        (out_dir / stale).unlink()
    for path in generate(out_dir):
        print(f"generated {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
