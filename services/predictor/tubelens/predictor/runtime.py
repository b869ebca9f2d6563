"""The one interface every model runtime implements, and the failure rules they share.

The predictor never talks to TorchServe directly: TorchServe is archived upstream (last release 0.12.0), so it sits
behind this adapter and another server (or the in-process runner of the embedded demo) can take its place. A
runtime serves versions of tasks; each answers JSON requests in the handler contract of
`tubelens.modelkit.ts_handler` (a dict in, a list of answer rows out).

Failures are typed: a request the handler rejects is InvalidInput with the handler's message, an unknown task or
version NotFound, a server that stays down or silent Unavailable after a bounded number of attempts within a
deadline, and anything else a ModelServerError carrying the server's status and message.
"""

from __future__ import annotations

import json
import random
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from tubelens.errors import (
    Conflict,
    DependencyUnavailable,
    InvalidInput,
    NotFound,
    TooLarge,
    TubelensError,
)
from tubelens.predictor.settings import PredictorSettings

T = TypeVar("T")
MANIFEST = "MAR-INF/MANIFEST.json"
Body = dict[str, Any]


class ModelServerError(TubelensError):
    """The model server failed in a way no other typed error describes (a handler crash is a 500)."""

    def __init__(self, message: str, *, status: int, field: str = "") -> None:
        super().__init__(message, field=field)
        self.status = status


class Transient(Exception):
    """One attempt failed in a way that another attempt may not: connection refused or reset, a timeout, a 503."""


class ModelRuntime(Protocol):
    """Serves model versions. Implementations are thread-safe: predict runs from many threads at once."""

    platform: str  # "torchserve", "in-process": reported by GetModelMetadata

    def load(self, task: str, version: str, archive: Path, *, warmup: Body | None = None) -> None:
        """Load one version from its archive; returns once it has answered (`warmup`, when given, is asked)."""

    def set_default(self, task: str, version: str) -> None:
        """The version the runtime itself answers with when none is named (the predictor always names one)."""

    def unload(self, task: str, version: str) -> None:
        """Free one version; NotFound when it is not loaded."""

    def predict(self, task: str, version: str, body: Body) -> list[Body]:
        """One request to the version's handler; the handler's answer rows."""

    def loaded(self) -> list[tuple[str, str]]:
        """(task, version) of everything loaded, sorted."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class CallBudget:
    """How long one call to a model server may take in all: at most `attempts` tries within `deadline_s`."""

    attempts: int = 3
    deadline_s: float = 10.0
    backoff_initial_s: float = 0.05
    backoff_max_s: float = 1.0

    def delay(self, attempt: int) -> float:
        """Full jitter: anywhere from nothing to the exponential ceiling, so clients retrying a server that just
        came back do not arrive in lockstep."""
        return random.uniform(0, min(self.backoff_max_s, self.backoff_initial_s * 2 ** (attempt - 1)))

    @classmethod
    def from_settings(cls, settings: PredictorSettings) -> CallBudget:
        return cls(settings.attempts, settings.deadline_s, settings.backoff_initial_s, settings.backoff_max_s)


def with_retries(call: Callable[[float], T], budget: CallBudget, what: str) -> T:
    """`call(seconds_left)` until it returns; Transient failures are retried with backoff while attempts and the
    deadline last, then become Unavailable. Any other exception passes straight through."""
    deadline = time.monotonic() + budget.deadline_s
    attempts, last = 0, "no attempt made"
    while attempts < budget.attempts:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        attempts += 1
        try:
            return call(left)
        except Transient as exc:
            last = str(exc)
        if attempts < budget.attempts:
            time.sleep(max(0.0, min(budget.delay(attempts), deadline - time.monotonic())))
    raise DependencyUnavailable(
        f"{what}: no answer after {attempts} attempt(s) within {budget.deadline_s:g}s; last: {last}",
        dependency="torchserve",
    )


def error_for_status(status: int, message: str, *, what: str) -> TubelensError:
    """The typed error for a model server's error status; `message` is the server's (the handler's, for a 400)."""
    text = f"{what}: {message}"
    if status == 404:
        return NotFound(text, field="model.version")
    if status in (403, 409):  # TorchServe: 403 refuses to remove a default version, 409 a duplicate version
        return Conflict(text, field="model.version")
    if status == 413:
        return TooLarge(text)
    if 400 <= status < 500:
        return InvalidInput(message)  # the handler's own words: they name what is wrong with the request
    return ModelServerError(f"{text} (status {status})", status=status)


def answer_rows(answer: Any, *, what: str) -> list[Body]:
    """A handler answers one request with a list of rows (heads) or one object (genre, images): always rows here."""
    if isinstance(answer, dict):
        return [answer]
    if isinstance(answer, list) and all(isinstance(row, dict) for row in answer):
        return answer
    raise ModelServerError(f"{what}: expected JSON objects from the handler, got {type(answer).__name__}", status=200)


def archive_manifest(archive: Path) -> dict[str, Any]:
    """The `model` section of a .mar's MAR-INF/MANIFEST.json: its handler, name and version."""
    try:
        with zipfile.ZipFile(archive) as mar:
            manifest = json.loads(mar.read(MANIFEST))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise InvalidInput(f"{archive.name} is not a model archive with {MANIFEST}: {exc}", field="archive") from None
    model = manifest.get("model") if isinstance(manifest, dict) else None
    if not isinstance(model, dict) or not model.get("handler"):
        raise InvalidInput(f"{archive.name}: {MANIFEST} names no handler", field="archive")
    return model
