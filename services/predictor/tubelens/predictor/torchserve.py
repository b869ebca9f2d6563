"""The TorchServe adapter: versions registered through the management API, requests through the inference API.

TorchServe reads archives from its model store, so a version is copied there as `<task>-<version>.mar` and
registered under the task's name; the version TorchServe knows it by is the archive's own (`--version` when it was
packaged), which must equal the registry's. Every request names its version (`/predictions/<task>/<version>`): the
predictor decides which version answers, TorchServe's default only matters to whoever calls it directly, and it must
move before an old version can be deleted (TorchServe refuses to delete the default while others exist).

TorchServe serves its own Prometheus metrics (request counts, handler and queue times per model) on its metrics
port, `http://<host>:8082/metrics` by default; the predictor's own are separate.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import urllib.parse
from pathlib import Path
from typing import Any

import urllib3

from tubelens.errors import InvalidInput, NotFound, Unavailable
from tubelens.predictor.runtime import (
    Body,
    CallBudget,
    Transient,
    answer_rows,
    archive_manifest,
    error_for_status,
    with_retries,
)

log = logging.getLogger(__name__)

# Worth another attempt: a gateway in between, or TorchServe itself without a free worker (503) or too slow (504).
RETRY_STATUSES = frozenset({502, 503, 504})
JSON = "application/json"
READY = "READY"
POLL_S = 0.1
PAGE = 100


class TorchServeRuntime:
    platform = "torchserve"

    def __init__(
        self,
        inference_url: str,
        management_url: str,
        model_store: Path,
        *,
        budget: CallBudget = CallBudget(),  # noqa: B008 - frozen, so one shared default is safe
        initial_workers: int = 1,
        batch_size: int = 1,
        max_batch_delay_ms: int = 50,
        pool_size: int = 16,
        connect_timeout_s: float = 1.0,
        load_timeout_s: float = 180.0,
    ) -> None:
        self.model_store = model_store
        self.budget = budget
        # Registration and warm-up start a Python worker: the same attempts, a deadline long enough for that.
        self.load_budget = CallBudget(budget.attempts, load_timeout_s, budget.backoff_initial_s, budget.backoff_max_s)
        self.initial_workers = initial_workers
        self.batch_size = batch_size
        self.max_batch_delay_ms = max_batch_delay_ms
        self.connect_timeout_s = connect_timeout_s
        # Keep-alive pools: one TCP connection per concurrent caller, reused, instead of one per request.
        self._inference = urllib3.connection_from_url(inference_url, maxsize=pool_size, retries=False)
        self._management = urllib3.connection_from_url(management_url, maxsize=2, retries=False)

    # --- the runtime interface ------------------------------------------------------------------------------------

    def load(self, task: str, version: str, archive: Path, *, warmup: Body | None = None) -> None:
        declared = str(archive_manifest(archive).get("modelVersion", ""))
        if declared != version:
            raise InvalidInput(
                f"{archive.name} was packaged as version {declared!r}, not {version!r}: TorchServe would serve it "
                "under the wrong version",
                field="model.version",
            )
        if self._registered(task, version):
            # A predictor restarted beside a TorchServe that kept running: the version is there already.
            log.info("version already registered in TorchServe", extra={"task": task, "version": version})
            self._warm_up(task, version, warmup)
            return
        self._register(task, version, self._copy_to_store(task, version, archive))
        try:
            self._warm_up(task, version, warmup)
        except Exception:
            self._forget(task, version)
            raise
        log.info("version loaded in TorchServe", extra={"task": task, "version": version})

    def set_default(self, task: str, version: str) -> None:
        path = f"/models/{_quote(task)}/{_quote(version)}/set-default"
        self._expect_ok(self._management, "PUT", path, what=f"set {task} {version} as TorchServe's default")

    def unload(self, task: str, version: str) -> None:
        path = f"/models/{_quote(task)}/{_quote(version)}"
        self._expect_ok(self._management, "DELETE", path, what=f"unload {task} {version}")
        self._store_path(task, version).unlink(missing_ok=True)
        log.info("version unloaded from TorchServe", extra={"task": task, "version": version})

    def predict(self, task: str, version: str, body: Body) -> list[Body]:
        return self._predict(task, version, body, self.budget)

    def loaded(self) -> list[tuple[str, str]]:
        return sorted((task, version) for task in self._model_names() for version in self.versions(task))

    def close(self) -> None:
        self._inference.close()
        self._management.close()

    # --- beyond the interface ---------------------------------------------------------------------------------------

    def versions(self, task: str) -> list[str]:
        """The versions of `task` TorchServe has registered, as its management API lists them."""
        status, data = self._call_with_retries(self._management, "GET", f"/models/{_quote(task)}/all", self.budget)
        if status == 404:
            return []
        _raise_unless_ok(status, data, what=f"describe {task}")
        return [str(model["modelVersion"]) for model in json.loads(data)]

    # --- loading ----------------------------------------------------------------------------------------------------

    def _store_path(self, task: str, version: str) -> Path:
        return self.model_store / f"{task}-{version}.mar"

    def _copy_to_store(self, task: str, version: str, archive: Path) -> Path:
        target = self._store_path(task, version)
        self.model_store.mkdir(parents=True, exist_ok=True)
        if not (target.exists() and target.samefile(archive)):
            # Copied under a temporary name, then renamed: TorchServe never sees half an archive.
            partial = target.with_name(f".{target.name}.partial")
            shutil.copyfile(archive, partial)
            partial.replace(target)
        return target

    def _registered(self, task: str, version: str) -> bool:
        path = f"/models/{_quote(task)}/{_quote(version)}"
        status, data = self._call_with_retries(self._management, "GET", path, self.budget)
        if status == 404:
            return False
        _raise_unless_ok(status, data, what=f"describe {task} {version}")
        return True

    def _register(self, task: str, version: str, stored: Path) -> None:
        query = urllib.parse.urlencode(
            {
                "url": stored.name,
                "model_name": task,
                "initial_workers": self.initial_workers,
                "synchronous": "true",
                "batch_size": self.batch_size,
                "max_batch_delay": self.max_batch_delay_ms,
            }
        )
        # No body and no JSON content type: TorchServe 0.12 reads an empty JSON body as the request and answers 500.
        status, data = self._call_with_retries(self._management, "POST", f"/models?{query}", self.load_budget)
        if status == 409 and self._registered(task, version):
            return  # an earlier attempt got through before its answer was lost
        if status != 200:
            self._forget(task, version)
            _raise_unless_ok(status, data, what=f"register {task} {version}")

    def _warm_up(self, task: str, version: str, warmup: Body | None) -> None:
        """Returns once the version has answered: the caller's request when it gave one, else a ready worker."""
        if warmup is not None:
            self._predict(task, version, warmup, self.load_budget)
            return
        deadline = time.monotonic() + self.load_budget.deadline_s
        path = f"/models/{_quote(task)}/{_quote(version)}"
        while True:
            status, data = self._call_with_retries(self._management, "GET", path, self.budget)
            _raise_unless_ok(status, data, what=f"describe {task} {version}")
            if _has_ready_worker(json.loads(data)):
                return
            if time.monotonic() > deadline:
                waited = self.load_budget.deadline_s
                raise Unavailable(f"{task} {version}: no TorchServe worker became ready within {waited:g}s")
            time.sleep(POLL_S)

    def _forget(self, task: str, version: str) -> None:
        """Best effort after a failed load: nothing half-loaded stays registered or in the store."""
        path = f"/models/{_quote(task)}/{_quote(version)}"
        try:
            self._expect_ok(self._management, "DELETE", path, what=f"unload {task} {version}")
        except NotFound:
            pass  # it never got registered
        except Exception:  # noqa: BLE001 - the load's own error is the one to report
            log.warning("could not unregister a version that failed to load", extra={"task": task, "version": version})
        self._store_path(task, version).unlink(missing_ok=True)

    def _model_names(self) -> list[str]:
        names, token = [], ""
        while True:
            query = urllib.parse.urlencode({"limit": PAGE, **({"next_page_token": token} if token else {})})
            status, data = self._call_with_retries(self._management, "GET", f"/models?{query}", self.budget)
            _raise_unless_ok(status, data, what="list models")
            page = json.loads(data)
            names += [model["modelName"] for model in page.get("models", [])]
            token = page.get("nextPageToken", "")
            if not token:
                return names

    # --- requests ---------------------------------------------------------------------------------------------------

    def _predict(self, task: str, version: str, body: Body, budget: CallBudget) -> list[Body]:
        what = f"predict {task} {version}"
        try:
            payload = json.dumps(body).encode()
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"the request is not JSON: {exc}", field="body") from None
        path = f"/predictions/{_quote(task)}/{_quote(version)}"
        status, data = self._call_with_retries(self._inference, "POST", path, budget, payload)
        _raise_unless_ok(status, data, what=what)
        return answer_rows(json.loads(data), what=what)

    def _expect_ok(self, pool: urllib3.HTTPConnectionPool, method: str, path: str, *, what: str) -> None:
        status, data = self._call_with_retries(pool, method, path, self.budget)
        _raise_unless_ok(status, data, what=what)

    def _call_with_retries(
        self, pool: urllib3.HTTPConnectionPool, method: str, path: str, budget: CallBudget, body: bytes | None = None
    ) -> tuple[int, bytes]:
        what = f"TorchServe {method} {path.split('?')[0]}"
        return with_retries(lambda left: self._call(pool, method, path, body, left), budget, what)

    def _call(
        self, pool: urllib3.HTTPConnectionPool, method: str, path: str, body: bytes | None, left_s: float
    ) -> tuple[int, bytes]:
        """One attempt, bounded by the time left; connection failures, timeouts and 502-504 are Transient."""
        timeout = urllib3.Timeout(connect=min(self.connect_timeout_s, left_s), read=left_s)
        headers = {"Content-Type": JSON} if body is not None else {}
        try:
            response = pool.request(method, path, body=body, headers=headers, timeout=timeout, retries=False)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise Transient(f"{type(exc).__name__}: {exc}") from None
        if response.status in RETRY_STATUSES:
            raise Transient(f"status {response.status}: {_message(response.data)}")
        return response.status, response.data


def _raise_unless_ok(status: int, data: bytes, *, what: str) -> None:
    if status != 200:
        raise error_for_status(status, _message(data), what=what)


def _message(data: bytes) -> str:
    """TorchServe's errors are JSON `{"code", "type", "message"}`; keep the message, or the text as it came."""
    try:
        parsed: Any = json.loads(data)
    except ValueError:
        return data.decode(errors="replace").strip()[:500]
    if isinstance(parsed, dict) and "message" in parsed:
        return str(parsed["message"])
    return json.dumps(parsed)[:500]


def _has_ready_worker(described: list[dict[str, Any]]) -> bool:
    return any(worker.get("status") == READY for model in described for worker in model.get("workers", []))


def _quote(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")
