"""The gRPC server bootstrap: typed errors become statuses with the standard rich details, request ids travel, RED
metrics count every call, health and reflection (v1 and v1alpha) answer, size limits hold, and stopping is graceful.

Every test talks to a real server over loopback on a port picked at run time.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import REGISTRY

from tubelens.errors import ConfigError, Conflict, InvalidInput, NotFound, NotReady, TooLarge, Unavailable
from tubelens.logs import JsonFormatter
from tubelens.reflection import V1_SERVICE
from tubelens.rpc import (
    LIVENESS,
    FieldViolation,
    FinishedCall,
    RpcServer,
    annotate,
    current_request_id,
    error_details,
    serve,
    stop_on_signals,
    typed_error,
)
from tubelens.v1 import predictor_pb2, predictor_pb2_grpc

SERVICE = "rpc-test"
PREDICTOR = predictor_pb2.DESCRIPTOR.services_by_name["Predictor"].full_name
LIST_MODELS = f"{PREDICTOR}/ListModels"
MAX_MESSAGE_BYTES = 64 * 1024
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

# ListModels fails on these tasks with a fresh error each time.
FAILING_TASKS: dict[str, Callable[[], Exception]] = {
    "invalid": lambda: InvalidInput("task must be one of popularity, channel, genre", field="task"),
    "big": lambda: TooLarge("thumbnail is over 2 MiB", field="thumbnail"),
    "missing": lambda: NotFound("no model for task 'missing'"),
    "taken": lambda: Conflict("version 3 already exists"),
    "busy": lambda: NotReady("model is still loading"),
    "down": lambda: Unavailable("model server unreachable after 5 attempts"),
    "bug": lambda: RuntimeError("secret internals"),
}


class ScriptedPredictor(predictor_pb2_grpc.PredictorServicer):
    def __init__(self) -> None:
        self.slow_call_started = threading.Event()

    def ListModels(self, request, context):
        if request.task in FAILING_TASKS:
            raise FAILING_TASKS[request.task]()
        if request.task == "flood":
            return predictor_pb2.ListModelsResponse(
                models=[predictor_pb2.ModelVersion(name="x" * MAX_MESSAGE_BYTES)]
            )
        return predictor_pb2.ListModelsResponse(
            models=[predictor_pb2.ModelVersion(name="popularity", version="3", task=request.task)]
        )

    def PredictPopularity(self, request, context):
        annotate(task="popularity")
        if request.model.version == "gone":
            raise NotFound("popularity version 'gone' is not loaded", field="model.version")
        annotate(version="7")
        return predictor_pb2.PredictPopularityResponse(id=current_request_id())

    def ClassifyChannel(self, request, context):
        self.slow_call_started.set()
        time.sleep(0.5)
        return predictor_pb2.ClassifyChannelResponse(id=current_request_id())

    def GetModelMetadata(self, request, context):
        context.abort(grpc.StatusCode.PERMISSION_DENIED, "not your model")


# A raw-bytes service for the streaming shapes the Predictor does not have (yet).
STREAMS = "tubelens.test.Streams"


def spell(word: bytes, context) -> Iterator[bytes]:
    """One message per letter; a '!' fails the stream after the letters before it."""
    for letter in word:
        if letter == ord("!"):
            raise NotFound("no letter after this one")
        yield bytes([letter])


def join(chunks: Iterator[bytes], context) -> bytes:
    return b"".join(chunks) + current_request_id().encode()


def shout(chunks: Iterator[bytes], context) -> Iterator[bytes]:
    for chunk in chunks:
        yield chunk.upper()


def add_streams(server: grpc.Server) -> None:
    handlers = {
        "Spell": grpc.unary_stream_rpc_method_handler(spell),
        "Join": grpc.stream_unary_rpc_method_handler(join),
        "Shout": grpc.stream_stream_rpc_method_handler(shout),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(STREAMS, handlers),))


@pytest.fixture
def predictor() -> ScriptedPredictor:
    return ScriptedPredictor()


@pytest.fixture
def finished() -> list[FinishedCall]:
    return []


@pytest.fixture
def server(predictor: ScriptedPredictor, finished: list[FinishedCall]) -> Iterator[RpcServer]:
    started = serve(
        SERVICE,
        [(predictor_pb2_grpc.add_PredictorServicer_to_server, predictor), add_streams],
        service_names=[PREDICTOR],
        max_message_bytes=MAX_MESSAGE_BYTES,
        workers=4,
        observers=[finished.append],
    )
    yield started
    started.stop(grace=0)


@pytest.fixture
def channel(server: RpcServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as opened:
        yield opened


@pytest.fixture
def stub(channel: grpc.Channel) -> predictor_pb2_grpc.PredictorStub:
    return predictor_pb2_grpc.PredictorStub(channel)


def failure_of(rpc: Callable, request: object, **kwargs: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        rpc(request, timeout=5, **kwargs)
    return raised.value


def trailer(call: grpc.Call, key: str) -> str | bytes:
    return dict(call.trailing_metadata() or ())[key]


def requests_counted(method: str, code: str) -> float:
    labels = {"service": SERVICE, "method": method, "code": code}
    return REGISTRY.get_sample_value("tubelens_grpc_requests_total", labels) or 0.0


def durations_observed(method: str) -> float:
    labels = {"service": SERVICE, "method": method}
    return REGISTRY.get_sample_value("tubelens_grpc_request_duration_seconds_count", labels) or 0.0


def health_of(channel: grpc.Channel, service: str) -> int:
    request = health_pb2.HealthCheckRequest(service=service)
    return health_pb2_grpc.HealthStub(channel).Check(request, timeout=5).status


# --- typed errors -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "code", "reason", "message", "field"),
    [
        pytest.param(
            "invalid",
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_INPUT",
            "task must be one of popularity, channel, genre",
            "task",
            id="InvalidInput",
        ),
        pytest.param(
            "big",
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "TOO_LARGE",
            "thumbnail is over 2 MiB",
            "thumbnail",
            id="TooLarge-beats-its-base-InvalidInput",
        ),
        pytest.param(
            "missing",
            grpc.StatusCode.NOT_FOUND,
            "NOT_FOUND",
            "no model for task 'missing'",
            "",
            id="NotFound",
        ),
        pytest.param(
            "taken",
            grpc.StatusCode.FAILED_PRECONDITION,
            "CONFLICT",
            "version 3 already exists",
            "",
            id="Conflict",
        ),
        pytest.param(
            "busy",
            grpc.StatusCode.UNAVAILABLE,
            "NOT_READY",
            "model is still loading",
            "",
            id="NotReady",
        ),
        pytest.param(
            "down",
            grpc.StatusCode.UNAVAILABLE,
            "UNAVAILABLE",
            "model server unreachable after 5 attempts",
            "",
            id="Unavailable",
        ),
    ],
)
def test_a_typed_error_becomes_its_status_with_standard_rich_details(stub, task, code, reason, message, field):
    failure = failure_of(stub.ListModels, predictor_pb2.ListModelsRequest(task=task))

    assert failure.code() is code
    assert failure.details() == message
    details = error_details(failure)
    assert (details.reason, details.domain, details.message) == (reason, "tubelens", message)
    assert details.field_violations == ((FieldViolation(field, message),) if field else ())
    assert details.request_id == trailer(failure, "x-request-id")
    assert "tubelens-error-bin" not in dict(failure.trailing_metadata())
    rebuilt = typed_error(failure)
    assert (type(rebuilt), rebuilt.message, rebuilt.field) == (type(FAILING_TASKS[task]()), message, field)


def test_the_details_are_a_google_rpc_status_any_client_decodes(stub):
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    failure = failure_of(stub.ListModels, predictor_pb2.ListModelsRequest(task="invalid"))
    status = rpc_status.from_call(failure)

    assert status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    kinds = {detail.TypeName() for detail in status.details}
    assert kinds == {"google.rpc.ErrorInfo", "google.rpc.BadRequest", "google.rpc.RequestInfo"}
    bad = error_details_pb2.BadRequest()
    next(d for d in status.details if d.Is(bad.DESCRIPTOR)).Unpack(bad)
    assert [(v.field, v.description) for v in bad.field_violations] == [
        ("task", "task must be one of popularity, channel, genre")
    ]


def test_an_unexpected_exception_is_internal_and_keeps_its_internals_to_the_logs(stub):
    lines = io.StringIO()
    capture = logging.StreamHandler(lines)
    capture.setFormatter(JsonFormatter(SERVICE))
    logging.getLogger("tubelens.rpc").addHandler(capture)
    try:
        failure = failure_of(
            stub.ListModels, predictor_pb2.ListModelsRequest(task="bug"), metadata=[("x-request-id", "bug-1")]
        )
    finally:
        logging.getLogger("tubelens.rpc").removeHandler(capture)

    assert failure.code() is grpc.StatusCode.INTERNAL
    assert failure.details() == "internal error"
    details = error_details(failure)
    assert (details.reason, details.message) == ("INTERNAL", "internal error")
    assert details.request_id == "bug-1"
    assert "secret internals" not in str(failure.trailing_metadata())
    logged = [json.loads(line) for line in lines.getvalue().splitlines()]
    assert len(logged) == 1
    assert logged[0]["request_id"] == "bug-1"
    assert logged[0]["level"] == "error"
    assert "RuntimeError: secret internals" in logged[0]["exc"]


def test_a_status_the_handler_aborted_with_is_kept_and_gets_its_request_id(stub):
    failure = failure_of(stub.GetModelMetadata, predictor_pb2.GetModelMetadataRequest())

    assert failure.code() is grpc.StatusCode.PERMISSION_DENIED
    assert failure.details() == "not your model"
    details = error_details(failure)
    assert (details.reason, details.message) == ("", "not your model")
    assert details.request_id == trailer(failure, "x-request-id")
    assert typed_error(failure) is None
    assert requests_counted(f"{PREDICTOR}/GetModelMetadata", "PERMISSION_DENIED") >= 1


def test_a_failure_without_details_has_only_its_code_and_message():
    with grpc.insecure_channel("127.0.0.1:1") as nowhere:
        stub = predictor_pb2_grpc.PredictorStub(nowhere)
        failure = failure_of(stub.ListModels, predictor_pb2.ListModelsRequest())

    assert failure.code() is grpc.StatusCode.UNAVAILABLE
    details = error_details(failure)
    assert (details.code, details.reason, details.field_violations) == (grpc.StatusCode.UNAVAILABLE, "", ())
    assert typed_error(failure) is None


# --- request ids --------------------------------------------------------------------------------------------


def test_the_request_id_field_is_echoed_in_the_response_and_trailer(stub):
    response, call = stub.PredictPopularity.with_call(
        predictor_pb2.PredictPopularityRequest(id="req-42"),
        metadata=[("x-request-id", "from-metadata")],
        timeout=5,
    )

    assert response.id == "req-42"
    assert trailer(call, "x-request-id") == "req-42"


def test_a_request_without_an_id_field_takes_the_id_from_metadata(stub):
    _, call = stub.ListModels.with_call(
        predictor_pb2.ListModelsRequest(), metadata=[("x-request-id", "trace-7")], timeout=5
    )
    failing = predictor_pb2.ListModelsRequest(task="missing")
    failure = failure_of(stub.ListModels, failing, metadata=[("x-request-id", "trace-8")])

    assert trailer(call, "x-request-id") == "trace-7"
    assert trailer(failure, "x-request-id") == "trace-8"
    assert error_details(failure).request_id == "trace-8"


def test_a_request_without_any_id_gets_a_fresh_one(stub):
    first, first_call = stub.PredictPopularity.with_call(predictor_pb2.PredictPopularityRequest(), timeout=5)
    _, second_call = stub.PredictPopularity.with_call(predictor_pb2.PredictPopularityRequest(), timeout=5)

    generated = trailer(first_call, "x-request-id")
    assert len(generated) == 32 and int(generated, 16) >= 0
    assert first.id == generated
    assert trailer(second_call, "x-request-id") != generated


@pytest.mark.parametrize(
    "bad_id", ["naïve-id", "x" * 129, "line\nbreak"], ids=["non-ascii", "too-long", "control"]
)
def test_a_request_id_that_cannot_be_echoed_is_invalid_input(stub, bad_id):
    failure = failure_of(stub.PredictPopularity, predictor_pb2.PredictPopularityRequest(id=bad_id))

    assert failure.code() is grpc.StatusCode.INVALID_ARGUMENT
    details = error_details(failure)
    assert (details.reason, details.field) == ("INVALID_INPUT", "id")
    assert details.request_id == trailer(failure, "x-request-id") != bad_id


# --- metrics ------------------------------------------------------------------------------------------------


def test_every_call_is_counted_by_method_and_final_code_and_timed(stub, channel):
    codes = ("OK", "NOT_FOUND", "INTERNAL")
    before = {code: requests_counted(LIST_MODELS, code) for code in codes}
    timed_before = durations_observed(LIST_MODELS)

    stub.ListModels(predictor_pb2.ListModelsRequest(task="popularity"), timeout=5)
    stub.ListModels(predictor_pb2.ListModelsRequest(), timeout=5)
    failure_of(stub.ListModels, predictor_pb2.ListModelsRequest(task="missing"))
    failure_of(stub.ListModels, predictor_pb2.ListModelsRequest(task="bug"))

    after = {code: requests_counted(LIST_MODELS, code) for code in codes}
    assert {code: after[code] - before[code] for code in codes} == {"OK": 2, "NOT_FOUND": 1, "INTERNAL": 1}
    assert durations_observed(LIST_MODELS) - timed_before == 4


def test_observers_see_every_call_end_with_the_labels_its_handler_gave(stub, finished):
    stub.PredictPopularity(predictor_pb2.PredictPopularityRequest(), timeout=5)
    refused = predictor_pb2.PredictPopularityRequest(model={"name": "popularity", "version": "gone"})
    failure_of(stub.PredictPopularity, refused)
    failure_of(stub.PredictPopularity, predictor_pb2.PredictPopularityRequest(id="naïve"))

    method = f"{PREDICTOR}/PredictPopularity"
    assert [(call.method, call.code, dict(call.labels)) for call in finished] == [
        (method, "OK", {"task": "popularity", "version": "7"}),
        (method, "NOT_FOUND", {"task": "popularity"}),  # refused by the handler before any model answered
        (method, "INVALID_ARGUMENT", {}),  # refused by the interceptor before the handler ran
    ]
    assert all(call.service == SERVICE and call.seconds >= 0 for call in finished)


def test_health_probes_are_not_counted_as_requests(channel):
    health_of(channel, "")

    assert requests_counted("grpc.health.v1.Health/Check", "OK") == 0


# --- streaming handlers pass through ------------------------------------------------------------------------


def test_a_server_stream_passes_through_and_is_counted(channel):
    before = requests_counted(f"{STREAMS}/Spell", "OK")
    responses = channel.unary_stream(f"/{STREAMS}/Spell")(b"abc", timeout=5)

    assert list(responses) == [b"a", b"b", b"c"]
    assert trailer(responses, "x-request-id")
    assert requests_counted(f"{STREAMS}/Spell", "OK") - before == 1


def test_a_typed_error_in_the_middle_of_a_stream_ends_it_with_its_status(channel):
    responses = channel.unary_stream(f"/{STREAMS}/Spell")(b"ab!c", timeout=5)
    received = []
    with pytest.raises(grpc.RpcError) as raised:
        received.extend(responses)

    assert received == [b"a", b"b"]
    assert raised.value.code() is grpc.StatusCode.NOT_FOUND
    assert error_details(raised.value).reason == "NOT_FOUND"


def test_client_and_bidirectional_streams_pass_through_with_the_metadata_request_id(channel):
    metadata = [("x-request-id", "stream-9")]
    joined = channel.stream_unary(f"/{STREAMS}/Join")(iter([b"a", b"b", b"-"]), timeout=5, metadata=metadata)
    shouted = channel.stream_stream(f"/{STREAMS}/Shout")(iter([b"hi", b"there"]), timeout=5)

    assert joined == b"ab-stream-9"
    assert list(shouted) == [b"HI", b"THERE"]


# --- health and reflection ----------------------------------------------------------------------------------


def test_health_reports_serving_for_the_server_and_each_service_and_can_be_flipped(server, channel):
    assert (health_of(channel, ""), health_of(channel, PREDICTOR)) == (SERVING, SERVING)

    server.set_serving(False)
    assert (health_of(channel, ""), health_of(channel, PREDICTOR)) == (NOT_SERVING, NOT_SERVING)

    server.set_serving(True)
    assert (health_of(channel, ""), health_of(channel, PREDICTOR)) == (SERVING, SERVING)


def test_liveness_serves_while_the_server_is_not_ready_and_ends_with_it(server, channel):
    server.set_serving(False)
    assert (health_of(channel, LIVENESS), health_of(channel, PREDICTOR)) == (SERVING, NOT_SERVING)

    server.stop(grace=0)
    assert server.health.Check(health_pb2.HealthCheckRequest(service=LIVENESS), None).status == NOT_SERVING


def test_a_server_can_start_not_serving_until_it_is_ready(predictor):
    warming = serve(
        SERVICE,
        [(predictor_pb2_grpc.add_PredictorServicer_to_server, predictor)],
        service_names=[PREDICTOR],
        serving=False,
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{warming.port}") as channel:
            assert health_of(channel, PREDICTOR) == NOT_SERVING
            warming.set_serving(True)
            assert health_of(channel, PREDICTOR) == SERVING
    finally:
        warming.stop(grace=0)


def test_health_watchers_see_not_serving_as_soon_as_stop_begins(server, channel):
    watch = health_pb2_grpc.HealthStub(channel).Watch
    updates = watch(health_pb2.HealthCheckRequest(service=PREDICTOR), timeout=10)
    assert next(updates).status == SERVING

    stopping = threading.Thread(target=server.stop, kwargs={"grace": 5})
    stopping.start()
    assert next(updates).status == NOT_SERVING
    updates.cancel()
    stopping.join(timeout=10)

    assert not stopping.is_alive()


def test_reflection_lists_the_registered_services_and_describes_them(channel):
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    asks = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol=PREDICTOR),
    ]
    listing, described = list(reflection.ServerReflectionInfo(iter(asks), timeout=5))

    assert {service.name for service in listing.list_services_response.service} == {
        PREDICTOR,
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    }
    assert described.file_descriptor_response.file_descriptor_proto


def test_reflection_v1_answers_the_same_and_describes_itself(channel):
    from google.protobuf import descriptor_pb2

    info = channel.stream_stream(
        f"/{V1_SERVICE}/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    asks = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol=PREDICTOR),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol=V1_SERVICE),
    ]
    listing, predictor, itself = list(info(iter(asks), timeout=5))

    assert PREDICTOR in {service.name for service in listing.list_services_response.service}
    names = [
        descriptor_pb2.FileDescriptorProto.FromString(raw).name
        for raw in predictor.file_descriptor_response.file_descriptor_proto
    ]
    assert "tubelens/v1/predictor.proto" in names
    [v1] = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in itself.file_descriptor_response.file_descriptor_proto
    ]
    assert (v1.package, [s.name for s in v1.service]) == ("grpc.reflection.v1", ["ServerReflection"])


# --- message size limits ------------------------------------------------------------------------------------


def test_a_request_over_the_size_limit_is_refused_by_grpc_and_one_under_it_is_served(stub):
    def request_of(size: int) -> predictor_pb2.PredictPopularityRequest:
        thumbnail = predictor_pb2.ImageInput(image_bytes=b"\0" * size)
        return predictor_pb2.PredictPopularityRequest(thumbnail=thumbnail)

    assert stub.PredictPopularity(request_of(MAX_MESSAGE_BYTES // 2), timeout=5).id
    failure = failure_of(stub.PredictPopularity, request_of(MAX_MESSAGE_BYTES + 1))

    assert failure.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


def test_a_response_over_the_size_limit_is_not_sent(stub):
    failure = failure_of(stub.ListModels, predictor_pb2.ListModelsRequest(task="flood"))

    assert failure.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


# --- ports and shutdown -------------------------------------------------------------------------------------


def test_a_port_already_in_use_is_refused_rather_than_shared(server, predictor):
    with pytest.raises(ConfigError, match=f"127.0.0.1:{server.port}"):
        serve(SERVICE, [], service_names=[], port=server.port)


def test_stop_lets_an_in_flight_call_finish_then_refuses_new_ones(server, stub, predictor):
    in_flight = stub.ClassifyChannel.future(predictor_pb2.ClassifyChannelRequest(id="slow-1"), timeout=10)
    assert predictor.slow_call_started.wait(timeout=5)

    began = time.monotonic()
    server.stop(grace=5)
    stopped_after = time.monotonic() - began

    assert in_flight.result(timeout=5).id == "slow-1"
    assert stopped_after < 4, "stop should return once in-flight calls are done, not wait out the grace"
    assert server.wait(timeout=0)
    refused = failure_of(stub.ListModels, predictor_pb2.ListModelsRequest())
    assert refused.code() is grpc.StatusCode.UNAVAILABLE


def test_sigterm_stops_the_server_gracefully(server):
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        stop_on_signals(server, grace=5)
        os.kill(os.getpid(), signal.SIGTERM)
        assert server.wait(timeout=10)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    assert server.health.Check(health_pb2.HealthCheckRequest(service=PREDICTOR), None).status == NOT_SERVING


def test_signal_handlers_can_only_be_installed_from_the_main_thread(server):
    before = signal.getsignal(signal.SIGTERM)
    raised: list[BaseException] = []

    def install() -> None:
        try:
            stop_on_signals(server, grace=1)
        except BaseException as exc:
            raised.append(exc)

    worker = threading.Thread(target=install)
    worker.start()
    worker.join(timeout=5)

    assert [type(exc) for exc in raised] == [ValueError]
    assert signal.getsignal(signal.SIGTERM) is before
