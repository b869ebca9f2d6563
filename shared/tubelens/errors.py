"""One base exception and the typed errors every service raises.

Code raises these and nothing else for expected failures; `tubelens.rpc` maps them to gRPC status codes in one
place, and the bus worker decides from `retryable` whether a failed message is retried or dead-lettered at once.
"""

from __future__ import annotations


class TubelensError(Exception):
    """Base of every expected failure. `field` names the offending input when there is one."""

    retryable = False

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidInput(TubelensError):
    """The input can never succeed: a malformed event, an undecodable image, a bad argument."""


class TooLarge(InvalidInput):
    """The input is over a configured size cap."""


class NotFound(TubelensError):
    """A named thing (object key, model, video) does not exist."""


class Conflict(TubelensError):
    """The request contradicts current state (an existing version, a precondition)."""


class NotReady(TubelensError):
    """This process is up but cannot serve yet (model loading, index building)."""

    retryable = True


class Unavailable(TubelensError):
    """A dependency (broker, object store, model server) stayed unreachable after bounded retries."""

    retryable = True


class DependencyUnavailable(Unavailable):
    """A dependency's transport failed (the object store, the broker, TorchServe, the embedding service did not
    answer): nothing is wrong with the input. The bus worker pauses consuming and retries the message until the
    dependency is back, without spending the message's attempts; it never dead-letters for this."""

    def __init__(self, message: str, *, dependency: str, field: str = "") -> None:
        super().__init__(message, field=field)
        self.dependency = dependency


class ConfigError(TubelensError):
    """Settings are missing or invalid; the process cannot start."""
