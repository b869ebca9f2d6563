"""Write the API reference (docs/api.md) from the protos' own comments, or check that the committed one is current.

python scripts/apidoc.py docs/api.md           # regenerate (`make protos` does)
python scripts/apidoc.py --check docs/api.md   # exit 1 when it has drifted from protos/ (part of `make test`)

protoc parses the protos with their source info (every comment, tied to what it documents); this script only lays
that out: each service with its RPCs, then every message and enum of the API's files, fields in number order.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from importlib import resources
from pathlib import Path

from google.protobuf import descriptor_pb2
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
# The gRPC APIs and the types they share; events.proto is the bus's schema, not an API.
API_FILES = ("tubelens/v1/predictor.proto", "tubelens/v1/embedding.proto", "tubelens/v1/common.proto")
# SourceCodeInfo paths: FileDescriptorProto field numbers, then DescriptorProto's and ServiceDescriptorProto's.
MESSAGE, ENUM, SERVICE = 4, 5, 6
FIELD, NESTED, METHOD, ENUM_VALUE = 2, 3, 2, 2
SCALARS = {
    value: name.removeprefix("TYPE_").lower()
    for name, value in descriptor_pb2.FieldDescriptorProto.Type.items()
    if name not in ("TYPE_MESSAGE", "TYPE_ENUM", "TYPE_GROUP")
}


def parse() -> list[descriptor_pb2.FileDescriptorProto]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "api.binpb"
        args = [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{resources.files('grpc_tools') / '_proto'}",
            "--include_source_info",
            f"--descriptor_set_out={out}",
            *(str(PROTO_ROOT / name) for name in API_FILES),
        ]
        if protoc.main(args) != 0:
            sys.exit("protoc failed")
        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    return sorted(files, key=lambda file: API_FILES.index(file.name))


class Comments:
    def __init__(self, file: descriptor_pb2.FileDescriptorProto) -> None:
        self.by_path = {
            tuple(location.path): (location.leading_comments or location.trailing_comments).strip()
            for location in file.source_code_info.location
        }

    def __call__(self, *path: int) -> str:
        return self.by_path.get(path, "")


def render(files: list[descriptor_pb2.FileDescriptorProto]) -> str:
    lines = [
        "# tubelens API reference",
        "",
        "Generated from the comments in `protos/` by `scripts/apidoc.py` (`make protos`); edit the protos, not this",
        "file: `make test` fails when it drifts. Field paths in errors (`google.rpc.BadRequest`) use these names.",
    ]
    for file in files:
        comments = Comments(file)
        for s, service in enumerate(file.service):
            lines += _service(file.package, service, comments, s)
    lines += ["", "## Messages and enums"]
    for file in files:
        comments = Comments(file)
        for m, message in enumerate(file.message_type):
            lines += _message(file.package, message, comments, (MESSAGE, m))
        for e, enum in enumerate(file.enum_type):
            lines += _enum(file.package, enum, comments, (ENUM, e))
    return "\n".join(lines) + "\n"


def _service(package: str, service: descriptor_pb2.ServiceDescriptorProto, comments: Comments, s: int) -> list[str]:
    lines = ["", f"## {package}.{service.name}", "", _paragraph(comments(SERVICE, s)), ""]
    lines += ["| RPC | request | response | |", "|---|---|---|---|"]
    for m, method in enumerate(service.method):
        doc = _one_line(comments(SERVICE, s, METHOD, m))
        lines.append(f"| `{method.name}` | {_link(method.input_type)} | {_link(method.output_type)} | {doc} |")
    return lines


def _message(package: str, message: descriptor_pb2.DescriptorProto, comments: Comments, path: tuple) -> list[str]:
    if message.options.map_entry:
        return []
    name = f"{package}.{message.name}"
    lines = ["", f"### {name}", ""]
    if message.options.deprecated:
        lines += ["**Deprecated.**", ""]
    if doc := comments(*path):
        lines += [_paragraph(doc), ""]
    if not message.field:
        return [*lines, "No fields."]
    maps = {nested.name: nested for nested in message.nested_type if nested.options.map_entry}
    lines += ["| field | type | |", "|---|---|---|"]
    oneofs = [oneof.name for oneof in message.oneof_decl]
    for f, field in enumerate(message.field):
        kind = _type(field, maps)
        if field.HasField("oneof_index"):
            kind += f" (oneof `{oneofs[field.oneof_index]}`)"
        lines.append(f"| `{field.name}` | {kind} | {_one_line(comments(*path, FIELD, f))} |")
    return lines


def _enum(package: str, enum: descriptor_pb2.EnumDescriptorProto, comments: Comments, path: tuple) -> list[str]:
    lines = ["", f"### {package}.{enum.name}", ""]
    if doc := comments(*path):
        lines += [_paragraph(doc), ""]
    lines += ["| value | number | |", "|---|---|---|"]
    for v, value in enumerate(enum.value):
        lines.append(f"| `{value.name}` | {value.number} | {_one_line(comments(*path, ENUM_VALUE, v))} |")
    return lines


def _type(field: descriptor_pb2.FieldDescriptorProto, maps: dict[str, descriptor_pb2.DescriptorProto]) -> str:
    entry = maps.get(field.type_name.rsplit(".", 1)[-1]) if field.type_name else None
    if entry is not None:
        key, value = entry.field
        return f"map<{_type(key, {})}, {_type(value, {})}>"
    kind = _link(field.type_name) if field.type_name else f"`{SCALARS[field.type]}`"
    return f"repeated {kind}" if field.label == field.LABEL_REPEATED else kind


def _link(type_name: str) -> str:
    name = type_name.lstrip(".")
    if name.startswith("tubelens."):
        return f"[`{name.rsplit('.', 1)[-1]}`](#{name.replace('.', '').lower()})"
    return f"`{name}`"


def _paragraph(comment: str) -> str:
    return "\n".join(line.strip() for line in comment.splitlines())


def _one_line(comment: str) -> str:
    return " ".join(line.strip() for line in comment.splitlines()).replace("|", "\\|")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    out = args.out if args.out.is_absolute() else ROOT / args.out
    text = render(parse())
    if args.check:
        if not out.is_file() or out.read_text() != text:
            print(f"{out.relative_to(ROOT)} has drifted from protos/ — run `make protos` and commit", file=sys.stderr)
            return 1
        print(f"{out.relative_to(ROOT)} matches protos/")
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
