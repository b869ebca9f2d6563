"""How every tubelens gRPC server is built: one interceptor, health, reflection, size limits, graceful stop.

Servicers raise the typed errors of `tubelens.errors` and nothing else; the interceptor here is the one
place that turns them into gRPC statuses, attaches an `ErrorInfo` in the `tubelens-error-bin` trailer, binds
the request id into the logs and records the RED metrics. Clients read the trailer with `error_info(...)`.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from tubelens.errors import ConfigError, Conflict, InvalidInput, NotFound, NotReady, TooLarge, Unavailable
from tubelens.lifecycle import STOP_SIGNALS, on_stop_signals
from tubelens.logs import log_context
from tubelens.metrics import GRPC_REQUESTS, GRPC_SECONDS
from tubelens.v1 import common_pb2

log = logging.getLogger(__name__)

ERROR_TRAILER = "tubelens-error-bin"
REQUEST_ID_KEY = "x-request-id"
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # gRPC's own default for received messages
MAX_REQUEST_ID_CHARS = 128
INTERNAL_MESSAGE = "internal error"

_Reason = common_pb2.ErrorReason
Status = tuple[grpc.StatusCode, int]  # (status code, ErrorReason value)

# The one table from typed errors to statuses. Looked up along the exception's MRO, so the most specific class
# wins whatever the order here (TooLarge is an InvalidInput but is RESOURCE_EXHAUSTED).
ERROR_STATUS: dict[type[Exception], Status] = {
    InvalidInput: (grpc.StatusCode.INVALID_ARGUMENT, _Reason.ERROR_REASON_INVALID_INPUT),
    TooLarge: (grpc.StatusCode.RESOURCE_EXHAUSTED, _Reason.ERROR_REASON_TOO_LARGE),
    NotFound: (grpc.StatusCode.NOT_FOUND, _Reason.ERROR_REASON_NOT_FOUND),
    Conflict: (grpc.StatusCode.FAILED_PRECONDITION, _Reason.ERROR_REASON_CONFLICT),
    NotReady: (grpc.StatusCode.UNAVAILABLE, _Reason.ERROR_REASON_NOT_READY),
    Unavailable: (grpc.StatusCode.UNAVAILABLE, _Reason.ERROR_REASON_UNAVAILABLE),
}
INTERNAL_STATUS: Status = (grpc.StatusCode.INTERNAL, _Reason.ERROR_REASON_INTERNAL)

# Probes and reflection are plumbing: counting them would drown the RED metrics, and the health Watch relies
# on a non-blocking behaviour flag that a wrapper would hide.
_PASS_THROUGH_PREFIX = "/grpc."

_END = object()  # marks an exhausted response stream

_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("tubelens_request_id", default="")

# A generated `add_XServicer_to_server` with its servicer, or a function that registers handlers itself.
Registration = tuple[Callable[[Any, grpc.Server], None], object] | Callable[[grpc.Server], None]


def current_request_id() -> str:
    """The id of the RPC handled on this thread ("" outside one); servicers echo it in their responses."""
    return _request_id.get()


def status_for(exc: BaseException) -> Status | None:
    """The status a typed error maps to; None for anything the table does not know."""
    for cls in type(exc).__mro__:
        if cls in ERROR_STATUS:
            return ERROR_STATUS[cls]
    return None


def error_info(rpc_error: grpc.RpcError) -> common_pb2.ErrorInfo | None:
    """The ErrorInfo a tubelens server attached to a failed call; None without one (a transport error)."""
    trailing = getattr(rpc_error, "trailing_metadata", None)
    for key, value in (trailing() if trailing else None) or ():
        if key == ERROR_TRAILER:
            return common_pb2.ErrorInfo.FromString(value)
    return None


class _Call:
    """One RPC's bookkeeping: its request id, clock and the status it ends with."""

    def __init__(self, service: str, method: str, context: grpc.ServicerContext, request: Any) -> None:
        self.service = service
        self.method = method
        self.context = context
        self.request = request
        self.request_id = uuid.uuid4().hex
        self.started = time.perf_counter()

    def adopt_request_id(self) -> None:
        """Take the caller's id (request field, else metadata); InvalidInput for one that cannot be echoed."""
        field, given = _given_request_id(self.request, self.context)
        if not given:
            return
        # Ids travel back as ASCII header values and land in every log line: refuse what would break either.
        if len(given) > MAX_REQUEST_ID_CHARS or not (given.isascii() and given.isprintable()):
            raise InvalidInput(
                f"request id must be at most {MAX_REQUEST_ID_CHARS} printable ASCII characters", field=field
            )
        self.request_id = given

    @contextlib.contextmanager
    def bound(self) -> Iterator[None]:
        token = _request_id.set(self.request_id)
        try:
            with log_context(request_id=self.request_id, rpc=self.method):
                yield
        finally:
            _request_id.reset(token)

    def succeed(self) -> None:
        self._add_trailers((REQUEST_ID_KEY, self.request_id))
        # A handler may have set a status without raising; count what the client will see.
        self._record(self.context.code() or grpc.StatusCode.OK)

    def fail(self, exc: Exception) -> None:
        """End the call with the status `exc` maps to; always raises (ServicerContext.abort does)."""
        code, info = self._answer_to(exc)
        self._add_trailers((REQUEST_ID_KEY, self.request_id), (ERROR_TRAILER, info.SerializeToString()))
        self._record(code)
        self.context.abort(code, info.message)

    def _answer_to(self, exc: Exception) -> tuple[grpc.StatusCode, common_pb2.ErrorInfo]:
        info = common_pb2.ErrorInfo(request_id=self.request_id)
        status = status_for(exc)
        if status is not None:
            code, info.reason = status
            info.message, info.field = exc.message, exc.field  # type: ignore[attr-defined]
        elif self._aborted_by_handler(exc):
            code, info.message = self.context.code(), _text(self.context.details())
        else:
            log.exception("unhandled error in %s", self.method)
            code, info.reason = INTERNAL_STATUS
            info.message = INTERNAL_MESSAGE
        return code, info

    def _aborted_by_handler(self, exc: Exception) -> bool:
        # ServicerContext.abort sets the status, then raises a bare Exception(): keep that answer. Anything
        # else must become INTERNAL, or gRPC would send "Exception calling application: <internals>".
        code = self.context.code()
        return type(exc) is Exception and not exc.args and code not in (None, grpc.StatusCode.OK)

    def _add_trailers(self, *pairs: tuple[str, str | bytes]) -> None:
        self.context.set_trailing_metadata((*(self.context.trailing_metadata() or ()), *pairs))

    def _record(self, code: grpc.StatusCode) -> None:
        GRPC_REQUESTS.labels(self.service, self.method, code.name).inc()
        GRPC_SECONDS.labels(self.service, self.method).observe(time.perf_counter() - self.started)


def _text(details: str | bytes | None) -> str:
    # The servicer context hands back details as it stores them: bytes in grpcio's own server.
    return details.decode(errors="replace") if isinstance(details, bytes) else details or ""


def _given_request_id(request: Any, context: grpc.ServicerContext) -> tuple[str, str]:
    """(where it came from, the id) as the caller sent it, or ("", "")."""
    from_request = getattr(request, "id", "")
    if isinstance(from_request, str) and from_request:
        return "id", from_request
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_KEY and value:
            return REQUEST_ID_KEY, value
    return "", ""


class TubelensInterceptor(grpc.ServerInterceptor):
    """Typed errors → statuses with an ErrorInfo trailer, request ids in logs and trailers, RED metrics."""

    def __init__(self, service: str) -> None:
        self.service = service

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(details)
        if handler is None or details.method.startswith(_PASS_THROUGH_PREFIX):
            return handler
        return self._wrap(handler, details.method.lstrip("/"))

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        serializers = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.request_streaming and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(self._streaming(handler.stream_stream, method), **serializers)
        if handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(self._unary(handler.stream_unary, method), **serializers)
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(self._streaming(handler.unary_stream, method), **serializers)
        return grpc.unary_unary_rpc_method_handler(self._unary(handler.unary_unary, method), **serializers)

    def _unary(self, behavior: Callable, method: str) -> Callable:
        def handle(request: Any, context: grpc.ServicerContext) -> Any:
            call = _Call(self.service, method, context, request)
            try:
                call.adopt_request_id()
                with call.bound():
                    response = behavior(request, context)
            except Exception as exc:
                with call.bound():
                    call.fail(exc)
            call.succeed()
            return response

        return handle

    def _streaming(self, behavior: Callable, method: str) -> Callable:
        def handle(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            call = _Call(self.service, method, context, request)
            try:
                call.adopt_request_id()
                # Bound around each step only: between yields this thread runs gRPC, not the handler.
                with call.bound():
                    responses = iter(behavior(request, context))
                while True:
                    with call.bound():
                        response = next(responses, _END)
                    if response is _END:
                        break
                    yield response
            except Exception as exc:
                with call.bound():
                    call.fail(exc)
            call.succeed()

        return handle


@dataclass
class RpcServer:
    """A started gRPC server. `health` is exposed so the service can report readiness per service name."""

    server: grpc.Server
    port: int
    health: health.HealthServicer
    service_names: tuple[str, ...]

    def set_serving(self, serving: bool) -> None:
        """Flip readiness of the overall server ("") and every registered service at once."""
        status = _health_status(serving)
        for name in ("", *self.service_names):
            self.health.set(name, status)

    def stop(self, grace: float = 5.0) -> None:
        """Report NOT_SERVING, refuse new calls, let in-flight ones finish for up to `grace` seconds."""
        # Readiness goes first so health watchers (load balancers, probes) move away before connections close.
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the server has stopped; False if `timeout` passed first."""
        timed_out = self.server.wait_for_termination(timeout)
        return not timed_out


def serve(
    service_name: str,
    register: Sequence[Registration],
    *,
    service_names: Sequence[str],
    port: int = 0,
    host: str = "127.0.0.1",
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    workers: int = 8,
    serving: bool = True,
) -> RpcServer:
    """Build, bind and start a gRPC server with the tubelens interceptor, health and reflection.

    `service_name` labels metrics (e.g. "predictor"); `service_names` are the full proto names registered
    (e.g. "tubelens.v1.Predictor") and get health entries and reflection. `port` 0 picks a free port; use host
    "[::]" to listen on every interface. `serving=False` starts NOT_SERVING until `set_serving(True)`, for
    services that must load something first.
    """
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"{service_name}-grpc"),
        interceptors=[TubelensInterceptor(service_name)],
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            # gRPC enables SO_REUSEPORT by default, which lets a second process silently share a taken port.
            ("grpc.so_reuseport", 0),
        ],
    )
    for registration in register:
        _register(server, registration)
    health_servicer = _add_health(server, service_names, serving)
    reflection.enable_server_reflection((*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    bound = _bind(server, f"{host}:{port}")
    server.start()
    log.info("grpc server listening", extra={"host": host, "port": bound, "services": list(service_names)})
    return RpcServer(server=server, port=bound, health=health_servicer, service_names=tuple(service_names))


def stop_on_signals(server: RpcServer, grace: float, signals: Sequence[signal.Signals] = STOP_SIGNALS) -> None:
    """Stop `server` gracefully on SIGTERM and SIGINT (main thread only)."""
    # stop() blocks for up to `grace`: run it aside so the handler returns at once and the main thread's
    # wait() ends as soon as the server has stopped.
    on_stop_signals(
        lambda: threading.Thread(target=server.stop, args=(grace,), name="grpc-stop", daemon=True).start(), signals
    )


def _register(server: grpc.Server, registration: Registration) -> None:
    if callable(registration):
        registration(server)
    else:
        add_to_server, servicer = registration
        add_to_server(servicer, server)


def _add_health(server: grpc.Server, service_names: Sequence[str], serving: bool) -> health.HealthServicer:
    servicer = health.HealthServicer()
    for name in ("", *service_names):
        servicer.set(name, _health_status(serving))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    return servicer


def _health_status(serving: bool) -> int:
    return health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING


def _bind(server: grpc.Server, address: str) -> int:
    try:
        return server.add_insecure_port(address)
    except RuntimeError:
        raise ConfigError(f"cannot listen on {address}: address in use or not local") from None
