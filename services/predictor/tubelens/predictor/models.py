"""Which model versions are loaded, which one answers each task, and how a promoted version replaces it.

The swap protocol, for a `models.trained` event with promoted=true (a version already default is a no-op):

1. check the registry still names that version as production (a late, redelivered event must not roll back);
2. fetch its archive from the registry and load it in the runtime, which returns only once it has answered;
3. make it the runtime's own default too (TorchServe will not delete a default version);
4. switch the task's default here, under one lock: from this instant every new request goes to the new version;
5. wait until every lease on the old version has ended (reference counts, bounded);
6. unload the old version.

A request leases the version it resolved (`lease()`) and holds it until it is answered, however much work it does
between resolving and asking (a popularity request reads the version's head config and embeds its pictures first):
the version it resolved is the version that answers, and it is never unloaded under it.

A failure in steps 2-3 unloads whatever was half loaded and leaves the old default serving; the error says so.
A failure in step 6 leaves the old version loaded but unused, and is logged.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tubelens.bus.worker import is_retryable
from tubelens.errors import Conflict, NotFound, TubelensError
from tubelens.logs import log_context
from tubelens.modelkit.registry import ModelRegistry, RegistryEntry
from tubelens.predictor.metrics import DEFAULT_VERSION, INFERENCE_ERRORS, INFERENCE_SECONDS, MODEL_SWAPS
from tubelens.predictor.runtime import Body, ModelRuntime
from tubelens.rpc import reason_of
from tubelens.v1 import events_pb2

log = logging.getLogger(__name__)

# A warm-up request per task (a mapping, or a function of the task); None: the runtime waits for a ready worker.
Warmups = Mapping[str, Body] | Callable[[str], Body | None] | None

SWAPPED, FAILED, NOOP, IGNORED, STALE = "swapped", "failed", "noop", "ignored", "stale"
NO_PRODUCTION = "no production version in the registry"


class SwapFailed(TubelensError):
    """A promoted version could not replace the default; the old one still serves. Retryable when its cause is."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message, field="model.version")
        self.retryable = retryable


@dataclass(frozen=True)
class Prediction:
    task: str
    version: str  # the version that answered
    rows: list[Body]


@dataclass(frozen=True)
class ServedModel:
    """One loaded version, with what the registry knows of it (for ListModels and GetModelMetadata)."""

    task: str
    version: str
    is_default: bool
    platform: str
    metrics: dict[str, Any]
    snapshot_id: str
    code_version: str
    published_at: str


@dataclass(frozen=True)
class TaskStatus:
    task: str
    version: str | None  # the default version; None when the task is not served
    detail: str = ""  # why it is not served

    @property
    def serving(self) -> bool:
        return self.version is not None


@dataclass
class _Served:
    entry: RegistryEntry
    in_flight: int = 0  # leases held on this version


@dataclass(frozen=True)
class Lease:
    """A version held for one request: it stays loaded until the lease ends (see `ModelManager.lease`)."""

    task: str
    version: str
    _served: _Served = field(repr=False, compare=False)


@dataclass
class _State:
    """Everything requests read; guarded by ModelManager._lock."""

    served: dict[tuple[str, str], _Served] = field(default_factory=dict)
    default: dict[str, str] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)


class ModelManager:
    def __init__(
        self,
        registry: ModelRegistry,
        runtime: ModelRuntime,
        workdir: Path,
        warmups: Warmups = None,
        *,
        drain_timeout_s: float = 60.0,
    ) -> None:
        self.registry = registry
        self.runtime = runtime
        self.workdir = workdir
        self.warmups = warmups
        self.drain_timeout_s = drain_timeout_s
        self._tasks: tuple[str, ...] = ()
        self._state = _State()
        # Requests take this only to pick a version and count themselves in or out: never while a model runs.
        self._lock = threading.Condition()
        # One change (start, swap, load, unload) at a time, so two events for one task cannot interleave.
        self._changes = threading.RLock()

    # --- serving ----------------------------------------------------------------------------------------------------

    def start(self, tasks: Iterable[str]) -> None:
        """Load each task's production version; a task without one (or whose load fails) is reported by status()."""
        self._tasks = tuple(dict.fromkeys(tasks))
        for task in self._tasks:
            entry = self.registry.production(task)
            if entry is None:
                self._set_problem(task, NO_PRODUCTION)
                log.warning("no production version; task not served", extra={"task": task})
                continue
            try:
                with self._changes:
                    self._switch(entry)
            except TubelensError as exc:
                self._set_problem(task, f"version {entry.version} failed to load: {exc}")
                log.error("production version failed to load", extra={"task": task, "version": entry.version,
                                                                       "error": str(exc)})  # fmt: skip

    @contextlib.contextmanager
    def lease(self, task: str, version: str | None = None) -> Iterator[Lease]:
        """Resolve `version` of `task` (None: its default) and hold it until the block ends: a swap meanwhile moves
        the default for new requests, but unloads this version only after the block. NotFound names what is loaded."""
        chosen, served = self._acquire(task, version)
        try:
            yield Lease(task, chosen, served)
        finally:
            self._release(served)

    def predict(self, task: str, body: Body, version: str | None = None, *, lease: Lease | None = None) -> Prediction:
        """Ask `version` of `task`, or its default, or the version `lease` holds; NotFound names what is loaded."""
        if lease is None:
            with self.lease(task, version) as held:
                return self._ask(held, body)
        if lease.task != task or (version is not None and version != lease.version):
            raise ValueError(f"a lease on {lease.task} {lease.version} cannot ask {task} {version or 'default'}")
        return self._ask(lease, body)

    def _ask(self, lease: Lease, body: Body) -> Prediction:
        task, chosen = lease.task, lease.version
        started = time.perf_counter()
        try:
            rows = self.runtime.predict(task, chosen, body)
        except Exception as exc:
            INFERENCE_ERRORS.labels(task, chosen, reason_of(exc)).inc()
            raise
        finally:
            INFERENCE_SECONDS.labels(task, chosen, self.runtime.platform).observe(time.perf_counter() - started)
        return Prediction(task, chosen, rows)

    def default_version(self, task: str) -> str | None:
        with self._lock:
            return self._state.default.get(task)

    def models(self, task: str = "") -> list[ServedModel]:
        """What is loaded (of one task, or all), defaults flagged, with the registry's metadata."""
        with self._lock:
            served = sorted(self._state.served.items())
            defaults = dict(self._state.default)
        return [
            self._described(item.entry, is_default=defaults.get(name) == version)
            for (name, version), item in served
            if not task or name == task
        ]

    def leased_model(self, lease: Lease) -> ServedModel:
        """The version a lease holds, described as `models()` does (it may be retiring, so no longer listed)."""
        return self._described(lease._served.entry, is_default=self.default_version(lease.task) == lease.version)

    def _described(self, entry: RegistryEntry, *, is_default: bool) -> ServedModel:
        return ServedModel(
            task=entry.task,
            version=entry.version,
            is_default=is_default,
            platform=self.runtime.platform,
            metrics=entry.metrics,
            snapshot_id=entry.snapshot_id,
            code_version=entry.code_version,
            published_at=entry.published_at,
        )

    def status(self) -> list[TaskStatus]:
        """Each started task: the version that serves it, or why none does (readiness reads this)."""
        with self._lock:
            return [
                TaskStatus(task, self._state.default.get(task), self._state.problems.get(task, ""))
                for task in self._tasks
            ]

    # --- changes ----------------------------------------------------------------------------------------------------

    def on_model_trained(self, event: events_pb2.ModelTrained) -> str:
        """Swap to a promoted version (see the module's docstring); returns the outcome, raises SwapFailed."""
        with log_context(task=event.task, version=event.version):
            outcome = self._on_model_trained(event)
        MODEL_SWAPS.labels(event.task, outcome).inc()
        return outcome

    def load_version(self, task: str, version: str) -> None:
        """Load a published version beside the default, to be asked by name; the default does not change."""
        with self._changes:
            if self._is_loaded(task, version):
                return
            entry = self.registry.entry(task, version)
            self._load(entry)
            with self._lock:
                self._state.served[(task, version)] = _Served(entry)

    def unload_version(self, task: str, version: str) -> None:
        """Unload a version that is not the default, once its requests in flight are done."""
        with self._changes:
            with self._lock:
                if self._state.default.get(task) == version:
                    raise Conflict(
                        f"{task} {version} is the default version; promote another first", field="model.version"
                    )
                served = self._state.served.pop((task, version), None)
            if served is None:
                raise NotFound(f"{task} {version} is not loaded", field="model.version")
            self._retire(task, version, served)

    # --- internals --------------------------------------------------------------------------------------------------

    def _on_model_trained(self, event: events_pb2.ModelTrained) -> str:
        task, version = event.task, event.version
        if not event.promoted or task not in self._tasks:
            log.info("models.trained ignored", extra={"promoted": event.promoted, "served_tasks": self._tasks})
            return IGNORED
        with self._changes:
            old = self.default_version(task)
            if old == version:
                return NOOP
            production = self.registry.production(task)
            if production is None or production.version != version:
                current = production.version if production else None
                log.warning("models.trained is stale: the registry's production is another", extra={"now": current})
                return STALE
            try:
                self._switch(production)
            except Exception as exc:  # noqa: BLE001 - every failure is reported the same way, then re-raised
                message = f"swap of {task} to {version} failed, {old or 'no version'} still serves: {exc}"
                log.error(message, extra={"old_version": old}, exc_info=not isinstance(exc, TubelensError))
                MODEL_SWAPS.labels(task, FAILED).inc()
                raise SwapFailed(message, retryable=is_retryable(exc)) from exc
        log.info("default version swapped", extra={"old_version": old})
        return SWAPPED

    def _switch(self, entry: RegistryEntry) -> None:
        """Make `entry` its task's default: load it unless loaded, switch atomically, retire the old default."""
        task, version = entry.task, entry.version
        newly_loaded = not self._is_loaded(task, version)
        if newly_loaded:
            self._load(entry)
        try:
            self.runtime.set_default(task, version)
        except Exception:
            if newly_loaded:
                self._unload_quietly(task, version)
            raise
        with self._lock:
            old = self._state.default.get(task)
            self._state.served.setdefault((task, version), _Served(entry))
            retiring = self._state.served.pop((task, old), None) if old not in (None, version) else None
            self._state.default[task] = version
            self._state.problems.pop(task, None)
        _report_default(task, old, version)
        if retiring is not None and old is not None:
            self._retire(task, old, retiring)

    def _load(self, entry: RegistryEntry) -> None:
        """Fetch the archive (checked against its sha256) and load it; the fetched copy is not kept."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.workdir, prefix="fetch-") as tmp:
            archive = self.registry.fetch_archive(entry.task, entry.version, Path(tmp))
            self.runtime.load(entry.task, entry.version, archive, warmup=self._warmup(entry.task))

    def _retire(self, task: str, version: str, served: _Served) -> None:
        """Wait for the version's leases to end (bounded), then unload it."""
        with self._lock:
            drained = self._lock.wait_for(lambda: served.in_flight == 0, timeout=self.drain_timeout_s)
        if not drained:
            log.warning(
                "leases still held on a retired version after the drain timeout; unloading it anyway",
                extra={"task": task, "version": version, "in_flight": served.in_flight},
            )
        try:
            self.runtime.unload(task, version)
        except Exception as exc:  # noqa: BLE001 - the new default serves; this one must stay visible to retry
            log.error(
                "retired version could not be unloaded; it stays loaded, not default",
                extra={"task": task, "version": version, "error": str(exc)},
            )
            with self._lock:
                self._state.served.setdefault((task, version), served)

    def _unload_quietly(self, task: str, version: str) -> None:
        try:
            self.runtime.unload(task, version)
        except Exception as exc:  # noqa: BLE001 - the caller is already reporting the failure that led here
            log.warning("could not unload a half-loaded version", extra={"task": task, "version": version,
                                                                          "error": str(exc)})  # fmt: skip

    def _acquire(self, task: str, version: str | None) -> tuple[str, _Served]:
        with self._lock:
            chosen = version or self._state.default.get(task)
            served = self._state.served.get((task, chosen)) if chosen else None
            if served is None or chosen is None:
                raise NotFound(self._not_served(task, version), field="model.version" if version else "model.name")
            served.in_flight += 1
            return chosen, served

    def _release(self, served: _Served) -> None:
        with self._lock:
            served.in_flight -= 1
            if served.in_flight == 0:
                self._lock.notify_all()

    def _not_served(self, task: str, version: str | None) -> str:
        """Called with the lock held."""
        loaded = ", ".join(f"{name} {number}" for name, number in sorted(self._state.served)) or "nothing"
        asked = f"version {version!r} of {task!r}" if version else f"{task!r}"
        why = self._state.problems.get(task)
        return f"no model serves {asked}{f' ({why})' if why else ''}; loaded: {loaded}"

    def _is_loaded(self, task: str, version: str) -> bool:
        with self._lock:
            return (task, version) in self._state.served

    def _set_problem(self, task: str, problem: str) -> None:
        with self._lock:
            self._state.problems[task] = problem

    def _warmup(self, task: str) -> Body | None:
        if callable(self.warmups):
            return self.warmups(task)
        return self.warmups.get(task) if self.warmups is not None else None


def _report_default(task: str, old: str | None, new: str) -> None:
    if old is not None and old != new:
        with contextlib.suppress(KeyError):  # another manager in this process (tests) already cleared it
            DEFAULT_VERSION.remove(task, old)
    DEFAULT_VERSION.labels(task, new).set(1)
