"""Where a model came from: the code that trained it, and one record per training run in the object store.

Each run leaves `runs/<run_id>.json`: why it ran (its trigger), on which snapshot, tasks and seed, with which code on
which host and device, when, and what each task produced (the registry version, whether it was promoted and whom it
replaced, its held-out metrics). Failed runs are recorded too, with their error, so that the history answers "why is
there no new model" as well as "where did this model come from". Run ids begin with their UTC start time, so listing
the prefix lists the runs in the order they started.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

from tubelens.errors import InvalidInput
from tubelens.objects import ObjectInfo, ObjectStore

DISTRIBUTION = "tubelens-trainer"
# Set by the image build (`--build-arg`), where the source tree and its .git are not part of the image.
CODE_VERSION_ENV = "TUBELENS_CODE_VERSION"
RUNS_PREFIX = "runs"
GIT_TIMEOUT_S = 5
# `<UTC start, to the second>-<8 hex>`: sortable, and safe as an object key segment and a command-line argument.
_RUN_ID = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{8}")


class Trigger(StrEnum):
    """Why a run happened."""

    ON_DEMAND = "on_demand"
    SCHEDULE = "schedule"
    NEW_LABELS = "new_labels"


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"


# the code


@cache
def code_version() -> str:
    """`tubelens-trainer <version>+<commit>[-dirty]` from a git checkout, `tubelens-trainer <version>+<$TUBELENS_
    CODE_VERSION>` in an image built with it, else `tubelens-trainer <version>`. Never raises: provenance must not
    be the reason a run fails."""
    base = f"{DISTRIBUTION} {_package_version()}"
    build = _git_describe(Path(__file__).resolve().parent) or os.environ.get(CODE_VERSION_ENV, "").strip()
    return f"{base}+{build}" if build else base


def _package_version() -> str:
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown"


def _git_describe(directory: Path) -> str:
    """The short commit of the checkout holding `directory`, `-dirty` when it has changes; "" outside a checkout
    or without git. An installed copy (site-packages) is not the checkout it may happen to lie in, e.g. a venv."""
    if "site-packages" in directory.parts:
        return ""
    commit = _git(directory, "rev-parse", "--short", "HEAD")
    if not commit:
        return ""
    changes = _git(directory, "status", "--porcelain")
    return f"{commit}-dirty" if changes else commit


def _git(directory: Path, *args: str) -> str:
    try:
        done = subprocess.run(
            ["git", *args], cwd=directory, capture_output=True, text=True, timeout=GIT_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def host_name() -> str:
    """The pod name in a cluster (Kubernetes sets the hostname to it)."""
    return socket.gethostname()


def device_name() -> str:
    """What the heads train on: `cuda:<name>` when a GPU is visible, else `cpu`."""
    import torch  # deferred: the record module is imported by tools that never train

    if torch.cuda.is_available():
        return f"cuda:{torch.cuda.get_device_name(0)}"
    return "cpu"


# run records


def new_run_id(now: datetime | None = None) -> str:
    started = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{started:%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


def check_run_id(run_id: str) -> str:
    if not _RUN_ID.fullmatch(run_id):
        raise InvalidInput(f"run id {run_id!r} is not <yyyymmddThhmmssZ>-<8 hex digits>", field="run_id")
    return run_id


def run_key(run_id: str) -> str:
    return f"{RUNS_PREFIX}/{check_run_id(run_id)}.json"


@dataclass(frozen=True)
class TaskResult:
    task: str
    version: str
    promoted: bool
    replaced: str  # the production version it replaced; "" when not promoted or there was none
    metrics: dict[str, float]


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    trigger: Trigger
    tasks: tuple[str, ...]
    seed: int
    snapshot_id: str
    code_version: str
    host: str
    device: str
    executor: str  # "local" or "kubernetes": where the heads were trained
    started_at: str  # ISO 8601, UTC
    finished_at: str
    outcome: Outcome
    error: str = ""
    results: tuple[TaskResult, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        return cls(
            **{
                **data,
                "trigger": Trigger(data["trigger"]),
                "outcome": Outcome(data["outcome"]),
                "tasks": tuple(data["tasks"]),
                "results": tuple(TaskResult(**result) for result in data.get("results", ())),
            }
        )


def utc_iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def record_run(store: ObjectStore, record: RunRecord) -> ObjectInfo:
    """Write (or rewrite: a run's outcome may be recorded by the Job and then looked up) `runs/<run_id>.json`."""
    data = json.dumps(record.to_dict(), indent=2, sort_keys=True).encode()
    return store.put(run_key(record.run_id), data, content_type="application/json")


def load_run(store: ObjectStore, run_id: str) -> RunRecord:
    """The recorded run; NotFound when it was never recorded."""
    return RunRecord.from_dict(json.loads(store.get(run_key(run_id))))


def list_runs(store: ObjectStore) -> list[RunRecord]:
    """Every recorded run, oldest first. Other objects under `runs/` (the trigger's state) are not runs."""
    names = (info.key.removeprefix(f"{RUNS_PREFIX}/").removesuffix(".json") for info in store.list(f"{RUNS_PREFIX}/"))
    return [load_run(store, name) for name in names if _RUN_ID.fullmatch(name)]
