"""The model registry: trained models packaged as TorchServe archives, kept in the object store by task and version,
with one production version per task that a candidate replaces only by beating it on the same held-out rows.

Two kinds of model share one packaging path (`package_model`): heads on frozen embeddings (`package_head`: handler
`ts_handler.py`, head.pt, head.json) and fine-tuned image classifiers (`package_finetuned`: handler
`ts_image_handler.py`, image_classifier.pt, image_classifier.json).

Layout in the store:

    models/<task>/<version>/model.mar       the TorchServe archive: its handler and the model's files
    models/<task>/<version>/metrics.json    the candidate's metrics on the held-out split used for promotion
    models/<task>/<version>/model_card.md
    models/<task>/<version>/entry.json      written last: a version is listed only once all of it is stored
    models/<task>/production.json           the promoted version, the one the predictor serves

Versions are immutable: publishing a version again with the same archive changes nothing, with another is a Conflict.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from google.protobuf.timestamp_pb2 import Timestamp

from tubelens.errors import ConfigError, Conflict, InvalidInput, NotFound, TubelensError
from tubelens.modelkit import ts_image_handler
from tubelens.modelkit.ts_handler import CONFIG_FILE, STATE_FILE
from tubelens.objects import ObjectInfo, ObjectStore
from tubelens.objects.base import CHUNK_BYTES
from tubelens.v1 import events_pb2

HANDLER = Path(__file__).with_name("ts_handler.py")
IMAGE_HANDLER = Path(__file__).with_name("ts_image_handler.py")
PREFIX = "models"
ARCHIVE_FILE = "model.mar"
METRICS_FILE = "metrics.json"
MODEL_CARD_FILE = "model_card.md"
ENTRY_FILE = "entry.json"
PRODUCTION_FILE = "production.json"
ARCHIVER_TIMEOUT_S = 120
# Task and version are key segments and TorchServe model names: keep them to a safe alphabet.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class PackagingError(TubelensError):
    """torch-model-archiver could not build the archive."""


@dataclass(frozen=True)
class RegistryEntry:
    task: str
    version: str
    archive: ObjectInfo
    metrics: dict[str, Any]
    snapshot_id: str
    code_version: str
    published_at: str  # ISO 8601, UTC
    model_card_key: str = ""
    metrics_key: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RegistryEntry:
        return cls(**{**data, "archive": ObjectInfo(**data["archive"])})


def package_head(head_dir: Path, *, task: str, version: str, out_dir: Path) -> Path:
    """Build `<out_dir>/<task>.mar` from a saved head (head.pt + head.json) and `ts_handler.py`, replacing an
    archive of the same task there."""
    files = _saved_files(head_dir, (STATE_FILE, CONFIG_FILE), what="head", field="head_dir")
    return package_model(files, HANDLER, task=task, version=version, out_dir=out_dir)


def package_finetuned(model_dir: Path, *, task: str, version: str, out_dir: Path) -> Path:
    """Build `<out_dir>/<task>.mar` from a saved fine-tuned image classifier (`finetune.FineTuned.save`) and
    `ts_image_handler.py`, replacing an archive of the same task there."""
    names = (ts_image_handler.MODEL_FILE, ts_image_handler.CONFIG_FILE)
    files = _saved_files(model_dir, names, what="fine-tuned image classifier", field="model_dir")
    return package_model(files, IMAGE_HANDLER, task=task, version=version, out_dir=out_dir)


def package_model(files: Sequence[Path], handler: Path, *, task: str, version: str, out_dir: Path) -> Path:
    """Build `<out_dir>/<task>.mar` with torch-model-archiver: `handler` as the entry point and `files` beside it
    (TorchServe unpacks them into the handler's model_dir), replacing an archive of the same task there."""
    _check_name(task, "task")
    _check_name(version, "version")
    out_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        _archiver(),
        "--model-name", task,
        "--version", version,
        "--handler", str(handler),
        "--extra-files", ",".join(str(path.resolve()) for path in files),
        "--export-path", str(out_dir.resolve()),
        "--archive-format", "default",
        "--force",
    ]  # fmt: skip
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=ARCHIVER_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise PackagingError(f"torch-model-archiver did not finish within {ARCHIVER_TIMEOUT_S}s") from None
    archive = out_dir / f"{task}.mar"
    if done.returncode != 0 or not archive.is_file():
        output = (done.stderr or done.stdout).strip()[-2000:]
        sources = ", ".join(str(path) for path in files)
        raise PackagingError(f"torch-model-archiver failed (exit {done.returncode}) for {sources}: {output}")
    return archive


def _saved_files(directory: Path, names: Sequence[str], *, what: str, field: str) -> list[Path]:
    files = [directory / name for name in names]
    missing = [str(path) for path in files if not path.is_file()]
    if missing:
        raise NotFound(f"not a saved {what}, missing: {', '.join(missing)}", field=field)
    return files


def _archiver() -> str:
    # Beside this interpreter first, so a virtual environment that is not activated still finds its own.
    beside = Path(sys.executable).with_name("torch-model-archiver")
    found = str(beside) if beside.is_file() else shutil.which("torch-model-archiver")
    if found is None:
        raise ConfigError("packaging models needs torch-model-archiver: pip install -e '.[stack]'")
    return found


class ModelRegistry:
    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def publish(
        self,
        task: str,
        version: str,
        mar_path: Path,
        metrics: dict[str, Any],
        snapshot_id: str,
        code_version: str,
        model_card: str,
    ) -> RegistryEntry:
        """Store one version's archive, metrics and model card, then its entry (which makes it visible)."""
        prefix = _version_prefix(task, version)
        existing = self._entry_or_none(task, version)
        with mar_path.open("rb") as archive:
            if existing is not None:
                return self._same_or_conflict(existing, archive)
            info = self.store.put(f"{prefix}/{ARCHIVE_FILE}", archive, content_type="application/zip")
        metrics_key, card_key = f"{prefix}/{METRICS_FILE}", f"{prefix}/{MODEL_CARD_FILE}"
        self.store.put(metrics_key, _json_bytes(metrics), content_type="application/json")
        self.store.put(card_key, model_card.encode(), content_type="text/markdown; charset=utf-8")
        entry = RegistryEntry(
            task=task,
            version=version,
            archive=info,
            metrics=metrics,
            snapshot_id=snapshot_id,
            code_version=code_version,
            published_at=datetime.now(UTC).isoformat(),
            model_card_key=card_key,
            metrics_key=metrics_key,
        )
        self.store.put(f"{prefix}/{ENTRY_FILE}", _json_bytes(entry.to_dict()), content_type="application/json")
        return entry

    def _same_or_conflict(self, existing: RegistryEntry, archive: BinaryIO) -> RegistryEntry:
        if _sha256(archive) != existing.archive.sha256:
            raise Conflict(
                f"{existing.task} {existing.version} is already published with another archive; "
                "versions are immutable, publish a new one",
                field="version",
            )
        return existing

    def entry(self, task: str, version: str) -> RegistryEntry:
        entry = self._entry_or_none(task, version)
        if entry is None:
            raise NotFound(f"no published version {version!r} of {task!r}", field="version")
        return entry

    def _entry_or_none(self, task: str, version: str) -> RegistryEntry | None:
        try:
            data = self.store.get(f"{_version_prefix(task, version)}/{ENTRY_FILE}")
        except NotFound:
            return None
        return RegistryEntry.from_dict(json.loads(data))

    def versions(self, task: str) -> list[str]:
        """Published versions of `task`, oldest first."""
        prefix = f"{PREFIX}/{_check_name(task, 'task')}/"
        entries = [
            RegistryEntry.from_dict(json.loads(self.store.get(info.key)))
            for info in self.store.list(prefix)
            if info.key.endswith(f"/{ENTRY_FILE}") and info.key.count("/") == 3
        ]
        return [entry.version for entry in sorted(entries, key=lambda entry: (entry.published_at, entry.version))]

    def production(self, task: str) -> RegistryEntry | None:
        try:
            pointer = json.loads(self.store.get(_production_key(task)))
        except NotFound:
            return None
        return self.entry(task, pointer["version"])

    def promote(self, task: str, version: str, *, reason: str = "") -> RegistryEntry:
        """Make `version` the production one, unconditionally (promote_if_better is the guarded way)."""
        entry = self.entry(task, version)
        current = self.production(task)
        pointer = {
            "version": version,
            "previous_version": current.version if current else "",
            "promoted_at": datetime.now(UTC).isoformat(),
            "reason": reason,
        }
        self.store.put(_production_key(task), _json_bytes(pointer), content_type="application/json")
        return entry

    def promote_if_better(
        self,
        task: str,
        candidate_version: str,
        *,
        metric: str,
        higher_is_better: bool,
        held_out_metrics_of_production: dict[str, Any] | None,
        held_out_metrics_of_candidate: dict[str, Any] | None = None,
        baselines: dict[str, float] | None = None,
    ) -> bool:
        """Promote the candidate only if it strictly beats every baseline and production on `metric`, all measured on
        the same held-out rows: the caller scores the baselines (`baselines`: name -> `metric` value) and re-scores
        production on the candidate's held-out set (the candidate's metrics default to its published ones). A first
        version is held to its baselines too: a model no better than a channel's mean or the commonest class is not
        worth serving."""
        candidate = self.entry(task, candidate_version)
        current = self.production(task)
        if current is not None and current.version == candidate_version:
            return False
        candidate_score = _score(held_out_metrics_of_candidate or candidate.metrics, metric, "candidate")
        if not _beats_all(candidate_score, baselines or {}, higher_is_better):
            return False
        versus = "".join(f", {name} {value:.6g}" for name, value in sorted((baselines or {}).items()))
        if current is None:
            reason = f"first version; {metric} {candidate_score:.6g} beats its baselines on held-out rows{versus}"
            self.promote(task, candidate_version, reason=reason)
            return True
        if held_out_metrics_of_production is None:
            raise InvalidInput(
                f"{task} has production version {current.version}: pass its metrics on the candidate's held-out set",
                field="held_out_metrics_of_production",
            )
        production_score = _score(held_out_metrics_of_production, metric, "production")
        better = candidate_score > production_score if higher_is_better else candidate_score < production_score
        if not better:
            return False
        reason = f"{metric} {candidate_score:.6g} vs {production_score:.6g} of {current.version}{versus}"
        self.promote(task, candidate_version, reason=reason)
        return True

    def fetch_archive(self, task: str, version: str, dest_dir: Path) -> Path:
        """Download one version's archive as `<dest_dir>/<task>-<version>.mar`, checked against its recorded sha256."""
        entry = self.entry(task, version)
        dest_dir.mkdir(parents=True, exist_ok=True)
        target = dest_dir / f"{task}-{version}.mar"
        self.store.download(entry.archive.key, target)
        with target.open("rb") as stream:
            sha256 = _sha256(stream)
        if entry.archive.sha256 and sha256 != entry.archive.sha256:
            target.unlink(missing_ok=True)
            raise InvalidInput(
                f"{entry.archive.key}: sha256 {sha256} does not match the registry's {entry.archive.sha256}"
            )
        return target


def _beats_all(score: float, baselines: dict[str, float], higher_is_better: bool) -> bool:
    """Strictly better than each baseline's score (no baselines: nothing to beat)."""
    return all(score > value if higher_is_better else score < value for value in baselines.values())


def model_trained_event(
    entry: RegistryEntry, promoted: bool, replaces: RegistryEntry | str | None
) -> events_pb2.ModelTrained:
    """The `models.trained` event for a published version; `replaces` is the production version it displaced."""
    trained_at = Timestamp()
    trained_at.FromDatetime(datetime.fromisoformat(entry.published_at))
    replaced = replaces.version if isinstance(replaces, RegistryEntry) else (replaces or "")
    return events_pb2.ModelTrained(
        task=entry.task,
        version=entry.version,
        archive=entry.archive.to_ref(),
        metrics=_numeric(entry.metrics),
        dataset_snapshot_id=entry.snapshot_id,
        code_version=entry.code_version,
        promoted=promoted,
        replaces_version=replaced,
        trained_at=trained_at,
    )


def _numeric(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Numbers only, nested dicts flattened with dots (`r2.low`): the event's map holds doubles."""
    flat: dict[str, float] = {}
    for name, value in metrics.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict):
            flat.update(_numeric(value, f"{key}."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[key] = float(value)
    return flat


def _score(metrics: dict[str, Any], metric: str, whose: str) -> float:
    value = metrics.get(metric)
    if not isinstance(value, int | float) or isinstance(value, bool) or math.isnan(value):
        raise InvalidInput(f"the {whose}'s metrics have no number {metric!r}", field="metric")
    return float(value)


def _check_name(name: str, what: str) -> str:
    if not _NAME.fullmatch(name):
        raise InvalidInput(f"{what} {name!r} must match {_NAME.pattern}", field=what)
    return name


def _version_prefix(task: str, version: str) -> str:
    return f"{PREFIX}/{_check_name(task, 'task')}/{_check_name(version, 'version')}"


def _production_key(task: str) -> str:
    return f"{PREFIX}/{_check_name(task, 'task')}/{PRODUCTION_FILE}"


def _json_bytes(data: Any) -> bytes:
    return json.dumps(data, indent=1, sort_keys=True).encode()


def _sha256(stream: BinaryIO) -> str:
    digest = hashlib.sha256()
    for chunk in iter(lambda: stream.read(CHUNK_BYTES), b""):
        digest.update(chunk)
    return digest.hexdigest()
