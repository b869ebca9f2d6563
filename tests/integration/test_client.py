"""The Python client's own behaviour against scripted servers over real gRPC on loopback: retries with backoff on
UNAVAILABLE only, within the call's deadline; deadlines; TLS with a certificate made on the spot; the bearer token;
and failures decoded into typed exceptions. (Every RPC against a real predictor: tests/integration/
test_predictor_api.py.)"""

from __future__ import annotations

import datetime
import threading
import time
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tubelens.client import (
    NO_RETRIES,
    ApiError,
    DeadlineExceededError,
    InternalError,
    InvalidInputError,
    NotFoundError,
    NotReadyError,
    PredictorClient,
    RetryPolicy,
    Tls,
    TooLargeError,
    UnavailableError,
    image,
)
from tubelens.errors import InvalidInput, NotFound, NotReady, TooLarge
from tubelens.rpc import RpcServer, serve
from tubelens.v1 import predictor_pb2, predictor_pb2_grpc

PREDICTOR = "tubelens.v1.Predictor"
FAST = RetryPolicy(attempts=4, initial_backoff_s=0.01, max_backoff_s=0.05)
SERVER_NAME = "predictor.tubelens.test"


class Scripted(predictor_pb2_grpc.PredictorServicer):
    """ServerLive fails NotReady `not_ready` times first; ListModels fails as its task says; ClassifyChannel sleeps."""

    def __init__(self, not_ready: int = 0) -> None:
        self.not_ready = not_ready
        self.live_calls = 0
        self.metadata: list[tuple] = []
        self.lock = threading.Lock()

    def ServerLive(self, request, context):  # noqa: N802
        with self.lock:
            self.live_calls += 1
            self.metadata.append(tuple(context.invocation_metadata()))
            if self.live_calls <= self.not_ready:
                raise NotReady("still warming the models")
        return predictor_pb2.ServerLiveResponse(live=True)

    def ListModels(self, request, context):  # noqa: N802
        failures = {
            "invalid": InvalidInput("task must be one of popularity, channel, genre", field="task"),
            "big": TooLarge("thumbnail.image_bytes is over the cap", field="thumbnail.image_bytes"),
            "missing": NotFound("popularity has no version 'nope' loaded", field="model.version"),
            "bug": RuntimeError("internals"),
        }
        if request.task in failures:
            with self.lock:
                self.live_calls += 1
            raise failures[request.task]
        return predictor_pb2.ListModelsResponse()

    def ClassifyChannel(self, request, context):  # noqa: N802
        time.sleep(1.0)
        return predictor_pb2.ClassifyChannelResponse()


@pytest.fixture
def scripted() -> Scripted:
    return Scripted(not_ready=2)


@pytest.fixture
def server(scripted: Scripted) -> Iterator[RpcServer]:
    started = serve("client-test", [(predictor_pb2_grpc.add_PredictorServicer_to_server, scripted)],
                    service_names=[PREDICTOR])  # fmt: skip
    yield started
    started.stop(grace=0)


def client_of(server: RpcServer, **kwargs) -> PredictorClient:
    return PredictorClient(f"127.0.0.1:{server.port}", **kwargs)


def test_unavailable_is_retried_with_backoff_until_the_server_answers(server: RpcServer, scripted: Scripted) -> None:
    with client_of(server, retry=FAST) as client:
        assert client.server_live()
    assert scripted.live_calls == 3, "two NOT_READY answers, then the third try succeeds"


def test_without_retries_the_not_ready_answer_is_a_typed_exception(server: RpcServer, scripted: Scripted) -> None:
    with client_of(server, retry=NO_RETRIES) as client, pytest.raises(NotReadyError) as raised:
        client.server_live()
    error = raised.value
    assert isinstance(error, UnavailableError) and error.retryable
    assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "NOT_READY")
    assert error.message == "still warming the models"
    assert len(error.request_id) == 32 and scripted.live_calls == 1


def test_a_server_that_is_not_listening_yet_is_waited_for_within_the_deadline(scripted: Scripted) -> None:
    scripted.not_ready = 0
    placeholder = serve("client-test", [], service_names=[])
    port = placeholder.port
    placeholder.stop(grace=0)  # the port is free again: nothing listens there for now
    late: list[RpcServer] = []

    def come_up() -> None:
        time.sleep(0.3)
        late.append(serve("client-test", [(predictor_pb2_grpc.add_PredictorServicer_to_server, scripted)],
                          service_names=[PREDICTOR], port=port))  # fmt: skip

    starter = threading.Thread(target=come_up)
    starter.start()
    try:
        retry = RetryPolicy(attempts=20, initial_backoff_s=0.05, max_backoff_s=0.2)
        with PredictorClient(f"127.0.0.1:{port}", retry=retry, timeout_s=10) as client:
            assert client.server_live()
    finally:
        starter.join()
        for started in late:
            started.stop(grace=0)


@pytest.mark.parametrize(
    ("task", "kind", "reason", "field"),
    [
        ("invalid", InvalidInputError, "INVALID_INPUT", "task"),
        ("big", TooLargeError, "TOO_LARGE", "thumbnail.image_bytes"),
        ("missing", NotFoundError, "NOT_FOUND", "model.version"),
        ("bug", InternalError, "INTERNAL", ""),
    ],
)
def test_failures_are_typed_exceptions_with_reason_field_and_request_id(
    server: RpcServer, scripted: Scripted, task: str, kind: type[ApiError], reason: str, field: str
) -> None:
    with client_of(server, retry=FAST) as client, pytest.raises(kind) as raised:
        client.list_models(task)
    error = raised.value
    assert (error.reason, error.field, error.retryable) == (reason, field, False)
    assert error.request_id and error.request_id in str(error)
    assert scripted.live_calls == 1, "a failure that cannot succeed is not retried"


def test_a_call_past_its_deadline_raises_deadline_exceeded(server: RpcServer) -> None:
    with client_of(server, timeout_s=0.2) as client:
        began = time.monotonic()
        with pytest.raises(DeadlineExceededError) as raised:
            client.classify_channel(image(b"\xff\xd8"))
    assert raised.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - began < 0.9, "the deadline is the call's, not the server's pace"


def test_retries_never_outlast_the_deadline(server: RpcServer, scripted: Scripted) -> None:
    scripted.not_ready = 10**6
    slow = RetryPolicy(attempts=100, initial_backoff_s=0.2, max_backoff_s=0.2)
    with client_of(server, retry=slow, timeout_s=0.5) as client:
        began = time.monotonic()
        with pytest.raises(NotReadyError):
            client.server_live()
    assert time.monotonic() - began < 1.0


def test_the_token_travels_as_a_bearer_authorization(server: RpcServer, scripted: Scripted) -> None:
    scripted.not_ready = 0
    with client_of(server, token="s3cret") as client:
        client.server_live()
    assert ("authorization", "Bearer s3cret") in scripted.metadata[-1]


# --- TLS -------------------------------------------------------------------------------------------------------------


def self_signed(name: str) -> tuple[bytes, bytes]:
    """(certificate PEM, private key PEM) for `name`, valid for an hour."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return certificate.public_bytes(serialization.Encoding.PEM), pem_key


def test_tls_checks_the_server_certificate() -> None:
    certificate, key = self_signed(SERVER_NAME)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    predictor_pb2_grpc.add_PredictorServicer_to_server(Scripted(), server)
    port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(key, certificate)]))
    server.start()
    try:
        trusted = Tls(root_certificates=certificate, server_name=SERVER_NAME)
        with PredictorClient(f"127.0.0.1:{port}", tls=trusted) as client:
            assert client.server_live()
        other, _ = self_signed("someone-else.test")
        untrusted = Tls(root_certificates=other, server_name=SERVER_NAME)
        untrusting = PredictorClient(f"127.0.0.1:{port}", tls=untrusted, retry=NO_RETRIES, timeout_s=3)
        with untrusting, pytest.raises(UnavailableError):
            untrusting.server_live()
    finally:
        server.stop(0)
