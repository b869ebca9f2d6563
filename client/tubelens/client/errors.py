"""Failed calls as typed exceptions, decoded from the standard rich error details a tubelens server sends
(`google.rpc.ErrorInfo` for the reason, `BadRequest` for the field at fault, `RequestInfo` for the request id).

The reason decides the class when there is one (`ErrorInfo.reason`, the server's typed error); a failure without
details (the connection, a proxy, a deadline) is classed by its status code.
"""

from __future__ import annotations

import grpc

from tubelens.rpc import FieldViolation, error_details


class ApiError(Exception):
    """A failed call: its status code, the server's reason and message, the fields at fault, the request id."""

    retryable = False

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str = "",
        field_violations: tuple[FieldViolation, ...] = (),
        request_id: str = "",
    ) -> None:
        super().__init__(f"{code.name}: {message}" + (f" (request {request_id})" if request_id else ""))
        self.code = code
        self.message = message
        self.reason = reason
        self.field_violations = field_violations
        self.request_id = request_id

    @property
    def field(self) -> str:
        """The first request field at fault (`model.version`, `candidates[2].image`); "" when none is named."""
        return self.field_violations[0].field if self.field_violations else ""


class InvalidInputError(ApiError):
    """The request can never succeed as it is (INVALID_ARGUMENT)."""


class TooLargeError(InvalidInputError):
    """A part of the request is over a size cap (RESOURCE_EXHAUSTED)."""


class NotFoundError(ApiError):
    """A named model, version or video is not there (NOT_FOUND)."""


class ConflictError(ApiError):
    """The request contradicts the server's state (FAILED_PRECONDITION)."""


class UnavailableError(ApiError):
    """The server or one of its dependencies cannot answer now (UNAVAILABLE): worth a retry later."""

    retryable = True


class NotReadyError(UnavailableError):
    """The server is up but still loading or warming its models."""


class DeadlineExceededError(ApiError):
    """No answer within the call's deadline."""


class InternalError(ApiError):
    """The server failed; its log has the details under the request id."""


BY_REASON: dict[str, type[ApiError]] = {
    "INVALID_INPUT": InvalidInputError,
    "TOO_LARGE": TooLargeError,
    "NOT_FOUND": NotFoundError,
    "CONFLICT": ConflictError,
    "NOT_READY": NotReadyError,
    "UNAVAILABLE": UnavailableError,
    "INTERNAL": InternalError,
}
BY_CODE: dict[grpc.StatusCode, type[ApiError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidInputError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: TooLargeError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.FAILED_PRECONDITION: ConflictError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.INTERNAL: InternalError,
}


def api_error(rpc_error: grpc.RpcError) -> ApiError:
    """The typed exception of a failed call."""
    details = error_details(rpc_error)
    cls = BY_REASON.get(details.reason) or BY_CODE.get(details.code, ApiError)
    return cls(
        details.code,
        details.message,
        reason=details.reason,
        field_violations=details.field_violations,
        request_id=details.request_id,
    )
