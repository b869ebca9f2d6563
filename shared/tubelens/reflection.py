"""Server reflection in both versions: `grpc.reflection.v1` (what current clients ask first) and `v1alpha` (what
older ones speak, grpcurl 1.8 among them).

grpcio-reflection ships only v1alpha. The two protocols are the same messages under another package name, so the
v1 service is the same servicer behind a second method name, and its descriptor is v1alpha's file renamed: added to
the default pool, it lets a client describe the reflection service itself, as it can any other.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

V1_SERVICE = "grpc.reflection.v1.ServerReflection"
V1_FILE = "grpc/reflection/v1/reflection.proto"
_V1ALPHA_PACKAGE = reflection_pb2.DESCRIPTOR.package  # "grpc.reflection.v1alpha"
_V1_PACKAGE = "grpc.reflection.v1"


def enable_reflection(service_names: Sequence[str], server: grpc.Server) -> None:
    """Answer reflection in v1 and v1alpha for `service_names` and for reflection itself."""
    _add_v1_descriptor()
    servicer = reflection.ReflectionServicer((*service_names, V1_SERVICE, reflection.SERVICE_NAME))
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    info = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(V1_SERVICE, {"ServerReflectionInfo": info}),)
    )


def _add_v1_descriptor() -> None:
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(V1_FILE)
        return
    except KeyError:
        pass
    pool.Add(v1_file())


def v1_file() -> descriptor_pb2.FileDescriptorProto:
    """v1alpha's reflection.proto as v1: the same messages and service under the v1 package."""
    file = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(file)
    file.name, file.package = V1_FILE, _V1_PACKAGE
    file.ClearField("options")  # v1alpha's deprecation and language package options are not v1's
    old, new = f".{_V1ALPHA_PACKAGE}.", f".{_V1_PACKAGE}."
    for message in file.message_type:
        for field in message.field:
            if field.type_name.startswith(old):
                field.type_name = new + field.type_name[len(old) :]
    for service in file.service:
        for method in service.method:
            method.input_type = new + method.input_type[len(old) :]
            method.output_type = new + method.output_type[len(old) :]
    return file
