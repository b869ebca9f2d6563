"""The tubelens Predictor API for platform teams: a typed client with retries, deadlines, TLS and typed errors."""

from tubelens.client.errors import (
    ApiError,
    ConflictError,
    DeadlineExceededError,
    InternalError,
    InvalidInputError,
    NotFoundError,
    NotReadyError,
    TooLargeError,
    UnavailableError,
)
from tubelens.client.predictor import NO_RETRIES, PredictorClient, RetryPolicy, Tls, image, image_url, video
from tubelens.rpc import FieldViolation

__all__ = [
    "NO_RETRIES",
    "ApiError",
    "ConflictError",
    "DeadlineExceededError",
    "FieldViolation",
    "InternalError",
    "InvalidInputError",
    "NotFoundError",
    "NotReadyError",
    "PredictorClient",
    "RetryPolicy",
    "Tls",
    "TooLargeError",
    "UnavailableError",
    "image",
    "image_url",
    "video",
]
