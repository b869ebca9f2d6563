"""The in-process runner of the embedded demo: the same archives and handlers as TorchServe, no server.

Each version is unpacked into a private directory and its handler file imported under a module name of its own,
so two versions of one task (each handler keeps its loaded model in a module global) live side by side. Handlers
are written for TorchServe's worker, which calls them one request batch at a time: each version gets a lock that
keeps it so, while different versions answer in parallel.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import re
import shutil
import sys
import threading
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from tubelens.errors import InvalidInput, NotFound, TubelensError
from tubelens.predictor.runtime import Body, ModelServerError, answer_rows, archive_manifest

log = logging.getLogger(__name__)

DEFAULT_ENTRY = "handle"
MODULE_PREFIX = "tubelens_inprocess_handler"


@dataclass
class HandlerContext:
    """The part of TorchServe's `ts.context.Context` that handlers use; one per call, as TorchServe makes one per
    batch, so that per-request statuses of concurrent calls never mix."""

    model_name: str
    manifest: dict[str, Any]
    system_properties: dict[str, Any]
    statuses: dict[int, tuple[int, str]] = field(default_factory=dict)

    def set_response_status(self, code: int = 200, phrase: str = "", idx: int = 0) -> None:
        self.statuses[idx] = (code, phrase)

    def get_request_header(self, idx: int, key: str) -> str | None:
        return None


@dataclass
class _Version:
    task: str
    version: str
    directory: Path
    module: ModuleType
    handle: Callable[[list[dict[str, Any]] | None, Any], Any]
    manifest: dict[str, Any]
    lock: threading.Lock = field(default_factory=threading.Lock)

    def context(self) -> HandlerContext:
        properties = {"model_dir": str(self.directory), "gpu_id": None, "batch_size": 1}
        return HandlerContext(self.task, {"model": self.manifest}, properties)

    @property
    def what(self) -> str:
        return f"{self.task} {self.version}"


class InProcessRuntime:
    platform = "in-process"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._versions: dict[tuple[str, str], _Version] = {}
        self._lock = threading.Lock()

    def load(self, task: str, version: str, archive: Path, *, warmup: Body | None = None) -> None:
        with self._lock:
            if (task, version) in self._versions:
                return
        loaded = self._import(task, version, archive)
        try:
            self._call(loaded, None)  # TorchServe's first call: the handler loads its model
            if warmup is not None:
                self._predict(loaded, warmup)
        except Exception:
            _discard(loaded)
            raise
        with self._lock:
            if (task, version) in self._versions:  # loaded by a concurrent caller meanwhile: keep theirs
                _discard(loaded)
                return
            self._versions[(task, version)] = loaded
        log.info("version loaded in process", extra={"task": task, "version": version})

    def set_default(self, task: str, version: str) -> None:
        self._get(task, version)  # the predictor names a version in every request: only existence matters here

    def unload(self, task: str, version: str) -> None:
        with self._lock:
            loaded = self._versions.pop((task, version), None)
        if loaded is None:
            raise NotFound(f"{task} {version} is not loaded in process", field="model.version")
        with loaded.lock:  # a call in progress finishes first
            _discard(loaded)
        log.info("version unloaded from process", extra={"task": task, "version": version})

    def predict(self, task: str, version: str, body: Body) -> list[Body]:
        return self._predict(self._get(task, version), body)

    def loaded(self) -> list[tuple[str, str]]:
        with self._lock:
            return sorted(self._versions)

    def close(self) -> None:
        for task, version in self.loaded():
            self.unload(task, version)

    # --- internals --------------------------------------------------------------------------------------------------

    def _get(self, task: str, version: str) -> _Version:
        with self._lock:
            loaded = self._versions.get((task, version))
        if loaded is None:
            raise NotFound(f"{task} {version} is not loaded in process", field="model.version")
        return loaded

    def _import(self, task: str, version: str, archive: Path) -> _Version:
        """Unpack the archive privately and import its handler under a module name no other version shares."""
        manifest = archive_manifest(archive)
        file_name, _, entry = str(manifest["handler"]).partition(":")
        directory = self.workdir / f"{task}-{version}-{uuid.uuid4().hex[:8]}"
        directory.mkdir(parents=True)
        try:
            with zipfile.ZipFile(archive) as mar:
                mar.extractall(directory)  # zipfile drops absolute paths and `..`: nothing lands outside
            module = _import_file(directory / file_name, _module_name(task, version))
        except Exception as exc:
            shutil.rmtree(directory, ignore_errors=True)
            if isinstance(exc, TubelensError):
                raise
            raise ModelServerError(f"{task} {version}: cannot import its handler: {exc}", status=500) from exc
        handle = getattr(module, entry or DEFAULT_ENTRY, None)
        if not callable(handle):
            sys.modules.pop(module.__name__, None)
            shutil.rmtree(directory, ignore_errors=True)
            name = entry or DEFAULT_ENTRY
            raise InvalidInput(f"{archive.name}: {file_name} has no function {name}()", field="archive")
        return _Version(task, version, directory, module, handle, manifest)

    def _predict(self, loaded: _Version, body: Body) -> list[Body]:
        # Through JSON, as TorchServe hands it over: what fails there fails here, and the caller's dict stays theirs.
        try:
            request = json.loads(json.dumps(body))
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"the request is not JSON: {exc}", field="body") from None
        context = loaded.context()
        answers = self._call(loaded, [{"body": request}], context)
        if not isinstance(answers, list) or len(answers) != 1:
            raise ModelServerError(f"{loaded.what}: the handler answered one request with {answers!r:.200}", status=500)
        code, _phrase = context.statuses.get(0, (200, ""))
        if 400 <= code < 500:  # a batch handler failing one request alone (see ts_image_handler)
            answer = answers[0]
            raise InvalidInput(str(answer.get("message", answer)) if isinstance(answer, dict) else str(answer))
        return answer_rows(answers[0], what=f"predict {loaded.what}")

    def _call(self, loaded: _Version, data: list[dict[str, Any]] | None, context: HandlerContext | None = None) -> Any:
        with loaded.lock:
            try:
                return loaded.handle(data, context or loaded.context())
            except Exception as exc:  # noqa: BLE001 - every handler failure becomes a typed error
                raise _handler_error(exc, loaded, loading=data is None) from exc


def _handler_error(exc: Exception, loaded: _Version, *, loading: bool) -> TubelensError:
    """A request the handler rejects is InvalidInput with its message, as TorchServe's 400 is; the rest is a
    server error, as TorchServe's 500 is."""
    code = getattr(exc, "error_code", None)  # ts.utils.util.PredictionException, when TorchServe is installed
    if isinstance(code, int) and 400 <= code < 500 and not loading:
        return InvalidInput(str(getattr(exc, "message", exc)))
    # Without TorchServe installed the handlers raise their own ValueError subclass (BadRequest, BadImage).
    if isinstance(exc, ValueError) and type(exc).__module__ == loaded.module.__name__ and not loading:
        return InvalidInput(str(exc))
    step = "failed to load" if loading else "failed"
    return ModelServerError(f"{loaded.what}: the handler {step}: {type(exc).__name__}: {exc}", status=500)


def _import_file(path: Path, name: str) -> ModuleType:
    if not path.is_file():
        raise InvalidInput(f"the archive's handler {path.name} is not a file in it", field="archive")
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise InvalidInput(f"cannot import the archive's handler {path.name}", field="archive")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look their module up here
    try:
        spec.loader.exec_module(module)
    except Exception:
        del sys.modules[name]
        raise
    return module


def _module_name(task: str, version: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_]", "_", f"{task}_{version}")
    return f"{MODULE_PREFIX}_{safe}_{uuid.uuid4().hex[:8]}"


def _discard(loaded: _Version) -> None:
    sys.modules.pop(loaded.module.__name__, None)
    shutil.rmtree(loaded.directory, ignore_errors=True)
