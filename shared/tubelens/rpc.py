"""How every tubelens gRPC server is built: one interceptor, health, reflection, size limits, graceful stop.

Servicers raise the typed errors of `tubelens.errors` and nothing else; the interceptor here is the one place that
turns them into gRPC statuses with the standard rich error details (a `google.rpc.Status` in
`grpc-status-details-bin`: ErrorInfo with the reason, BadRequest naming the field at fault, RequestInfo with the
request id), binds the request id into the logs and records the RED metrics of every call, refused ones included.
Clients decode the details with `error_details(...)`; `typed_error(...)` turns them back into the typed error.

Health: "" and every registered service name report readiness (`set_serving`); "liveness" is SERVING for as long
as the process serves, so a liveness probe never restarts a server that is only still loading.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from tubelens.errors import (
    ConfigError,
    Conflict,
    InvalidInput,
    NotFound,
    NotReady,
    TooLarge,
    TubelensError,
    Unavailable,
)
from tubelens.lifecycle import STOP_SIGNALS, on_stop_signals
from tubelens.logs import log_context
from tubelens.metrics import GRPC_REQUESTS, GRPC_SECONDS
from tubelens.reflection import enable_reflection
from tubelens.v1 import common_pb2

log = logging.getLogger(__name__)

REQUEST_ID_KEY = "x-request-id"
ERROR_DOMAIN = "tubelens"  # google.rpc.ErrorInfo.domain of every error a tubelens server gives
LIVENESS = "liveness"  # the health service name that answers SERVING while the process serves
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



def reason_name(reason: int) -> str:
    """The ErrorInfo.reason string of an ErrorReason value: its name without the prefix ("NOT_READY")."""
    return common_pb2.ErrorReason.Name(reason).removeprefix("ERROR_REASON_")


# The same table read backwards, for callers of another tubelens service: reason -> typed error.
REASON_ERROR: dict[str, type[TubelensError]] = {
    reason_name(reason): error for error, (_, reason) in ERROR_STATUS.items()
}

# Probes and reflection are plumbing: counting them would drown the RED metrics, and the health Watch relies
# on a non-blocking behaviour flag that a wrapper would hide.
_PASS_THROUGH_PREFIX = "/grpc."

_END = object()  # marks an exhausted response stream

_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("tubelens_request_id", default="")
_labels: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("tubelens_call_labels", default=None)

# A generated `add_XServicer_to_server` with its servicer, or a function that registers handlers itself.
Registration = tuple[Callable[[Any, grpc.Server], None], object] | Callable[[grpc.Server], None]


@dataclass(frozen=True)
class FinishedCall:
    """One RPC as the interceptor saw it end: what a service's own request metrics are made of."""

    service: str
    method: str  # "tubelens.v1.Predictor/PredictPopularity"
    code: str  # the final status code's name: "OK", "NOT_FOUND"
    seconds: float
    labels: Mapping[str, str]  # what the handler said with `annotate` before it answered or failed


CallObserver = Callable[[FinishedCall], None]


def current_request_id() -> str:
    """The id of the RPC handled on this thread ("" outside one); servicers echo it in their responses."""
    return _request_id.get()


def annotate(**labels: str) -> None:
    """Label the RPC handled on this thread (e.g. the model task and version), for the call observers; the labels
    stay even when the call fails afterwards. A no-op outside an RPC."""
    current = _labels.get()
    if current is not None:
        current.update(labels)


def status_for(exc: BaseException) -> Status | None:
    """The status a typed error maps to; None for anything the table does not know."""
    for cls in type(exc).__mro__:
        if cls in ERROR_STATUS:
            return ERROR_STATUS[cls]
    return None


def reason_of(exc: BaseException) -> str:
    """The reason a failure is reported under ("NOT_FOUND"; "INTERNAL" for what the table does not know): the label
    value of every error-counting metric, so that dashboards read one vocabulary with the gRPC codes."""
    _, reason = status_for(exc) or INTERNAL_STATUS
    return reason_name(reason)


@dataclass(frozen=True)
class FieldViolation:
    field: str  # its path in the request: "model.version", "candidates[2].image"
    description: str


@dataclass(frozen=True)
class ErrorDetails:
    """A failed call as its status and standard details say."""

    code: grpc.StatusCode
    message: str
    reason: str = ""  # google.rpc.ErrorInfo.reason ("NOT_FOUND"); "" without one (a transport error)
    domain: str = ""  # "tubelens" for errors a tubelens server gave
    metadata: Mapping[str, str] = field(default_factory=dict)
    field_violations: tuple[FieldViolation, ...] = ()
    request_id: str = ""

    @property
    def field(self) -> str:
        """The first field at fault, "" when none is named."""
        return self.field_violations[0].field if self.field_violations else ""


def error_details(rpc_error: grpc.RpcError) -> ErrorDetails:
    """The code, message and rich details of a failed call (empty details for one without them)."""
    code = _call_part(rpc_error, "code") or grpc.StatusCode.UNKNOWN
    message = _call_part(rpc_error, "details") or ""
    trailing = dict(_call_part(rpc_error, "trailing_metadata") or ())
    request_id = str(trailing.get(REQUEST_ID_KEY, ""))
    try:
        status = rpc_status.from_call(rpc_error) if trailing else None
    except ValueError:  # details that contradict the status line: trust neither half of them
        status = None
    if status is None:
        return ErrorDetails(code, message, request_id=request_id)
    reason, domain, metadata, violations = "", "", {}, []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, domain, metadata = info.reason, info.domain, dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations += [FieldViolation(v.field, v.description) for v in bad.field_violations]
        elif detail.Is(error_details_pb2.RequestInfo.DESCRIPTOR):
            info_request = error_details_pb2.RequestInfo()
            detail.Unpack(info_request)
            request_id = info_request.request_id or request_id
    return ErrorDetails(code, status.message, reason, domain, metadata, tuple(violations), request_id)


def _call_part(rpc_error: grpc.RpcError, name: str) -> Any:
    # Errors raised by stubs are also grpc.Call objects; a bare RpcError (a test double, a future) has none of it.
    part = getattr(rpc_error, name, None)
    return part() if callable(part) else None


def typed_error(rpc_error: grpc.RpcError) -> TubelensError | None:
    """The typed error a tubelens server raised for this call, rebuilt from its details; None when the failure
    carries no tubelens reason (a transport error, another server's status)."""
    details = error_details(rpc_error)
    cls = REASON_ERROR.get(details.reason) if details.domain == ERROR_DOMAIN else None
    return cls(details.message, field=details.field) if cls is not None else None


class _Status(NamedTuple):
    """A grpc.Status: what `ServicerContext.abort_with_status` takes."""

    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


def rich_status(code: grpc.StatusCode, message: str, *, reason: str, field: str, request_id: str) -> status_pb2.Status:
    """The google.rpc.Status of a failure: ErrorInfo (when the reason is known), BadRequest (when a field is at
    fault) and RequestInfo."""
    details: list[Any] = []
    if reason:
        details.append(error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN))
    if field:
        violation = error_details_pb2.BadRequest.FieldViolation(field=field, description=message)
        details.append(error_details_pb2.BadRequest(field_violations=[violation]))
    details.append(error_details_pb2.RequestInfo(request_id=request_id))
    status = status_pb2.Status(code=code.value[0], message=message)
    for detail in details:
        status.details.add().Pack(detail)
    return status


class _Call:
    """One RPC's bookkeeping: its request id, clock and the status it ends with."""

    def __init__(
        self,
        service: str,
        method: str,
        context: grpc.ServicerContext,
        request: Any,
        observers: Sequence[CallObserver] = (),
    ) -> None:
        self.service = service
        self.method = method
        self.context = context
        self.request = request
        self.observers = observers
        self.request_id = uuid.uuid4().hex
        self.labels: dict[str, str] = {}
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
        token, labels_token = _request_id.set(self.request_id), _labels.set(self.labels)
        try:
            with log_context(request_id=self.request_id, rpc=self.method):
                yield
        finally:
            _labels.reset(labels_token)
            _request_id.reset(token)

    def succeed(self) -> None:
        self._add_trailers((REQUEST_ID_KEY, self.request_id))
        # A handler may have set a status without raising; count what the client will see.
        self._record(self.context.code() or grpc.StatusCode.OK)

    def fail(self, exc: Exception) -> None:
        """End the call with the status `exc` maps to and its rich details; always raises (abort does)."""
        code, message, reason, field_path = self._answer_to(exc)
        details = rich_status(code, message, reason=reason, field=field_path, request_id=self.request_id)
        trailers = (
            *(self.context.trailing_metadata() or ()),
            (REQUEST_ID_KEY, self.request_id),
            *rpc_status.to_status(details).trailing_metadata,
        )
        self._record(code)
        self.context.abort_with_status(_Status(code, message, trailers))

    def _answer_to(self, exc: Exception) -> tuple[grpc.StatusCode, str, str, str]:
        """(code, message, ErrorInfo reason, field path) of the failure."""
        status = status_for(exc)
        if status is not None:
            code, reason = status
            return code, exc.message, reason_name(reason), exc.field  # type: ignore[attr-defined]
        if self._aborted_by_handler(exc):
            return self.context.code(), _text(self.context.details()), "", ""
        log.exception("unhandled error in %s", self.method)
        code, reason = INTERNAL_STATUS
        return code, INTERNAL_MESSAGE, reason_name(reason), ""

    def _aborted_by_handler(self, exc: Exception) -> bool:
        # ServicerContext.abort sets the status, then raises a bare Exception(): keep that answer. Anything
        # else must become INTERNAL, or gRPC would send "Exception calling application: <internals>".
        code = self.context.code()
        return type(exc) is Exception and not exc.args and code not in (None, grpc.StatusCode.OK)

    def _add_trailers(self, *pairs: tuple[str, str | bytes]) -> None:
        self.context.set_trailing_metadata((*(self.context.trailing_metadata() or ()), *pairs))

    def _record(self, code: grpc.StatusCode) -> None:
        seconds = time.perf_counter() - self.started
        GRPC_REQUESTS.labels(self.service, self.method, code.name).inc()
        GRPC_SECONDS.labels(self.service, self.method).observe(seconds)
        finished = FinishedCall(self.service, self.method, code.name, seconds, dict(self.labels))
        for observe in self.observers:
            try:
                observe(finished)
            except Exception:  # noqa: BLE001 - a metrics hook must never change the answer a caller gets
                log.exception("call observer failed", extra={"rpc": self.method})


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
    """Typed errors → statuses with rich details, request ids in logs and trailers, RED metrics, call observers."""

    def __init__(self, service: str, observers: Sequence[CallObserver] = ()) -> None:
        self.service = service
        self.observers = tuple(observers)

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
            call = _Call(self.service, method, context, request, self.observers)
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
            call = _Call(self.service, method, context, request, self.observers)
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
        """Flip readiness of the overall server ("") and every registered service at once ("liveness" stays)."""
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
    observers: Sequence[CallObserver] = (),
) -> RpcServer:
    """Build, bind and start a gRPC server with the tubelens interceptor, health and reflection (v1 and v1alpha).

    `service_name` labels metrics (e.g. "predictor"); `service_names` are the full proto names registered
    (e.g. "tubelens.v1.Predictor") and get health entries and reflection. `port` 0 picks a free port; use host
    "[::]" to listen on every interface. `serving=False` starts NOT_SERVING until `set_serving(True)`, for
    services that must load something first. `observers` see every call end (a service's own request metrics).
    """
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"{service_name}-grpc"),
        interceptors=[TubelensInterceptor(service_name, observers)],
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
    enable_reflection((*service_names, health.SERVICE_NAME), server)
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
    servicer.set(LIVENESS, _health_status(True))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    return servicer


def _health_status(serving: bool) -> int:
    return health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING


def _bind(server: grpc.Server, address: str) -> int:
    try:
        return server.add_insecure_port(address)
    except RuntimeError:
        raise ConfigError(f"cannot listen on {address}: address in use or not local") from None
