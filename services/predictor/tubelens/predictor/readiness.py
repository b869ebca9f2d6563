"""Readiness that reflects the models: each served task's default version loaded *and warm*.

A version is warm once one request has gone all the way through it: a synthetic picture (and, for popularity, a
title) through the same `PredictorCore` call a client makes. That first request is where the cold costs were, each
paid once per process or per version, and the first client request paid them all (38 s on the local stack):
  - the MiniLM title encoder: sentence-transformers imported and its weights read, on the first title;
  - the head's config (`head.json`), read from its archive fetched out of the registry, once per version;
  - the backbone's first onnxruntime run (its memory arena), and the model runtime's first call of the handler
    (a TorchServe worker's first torch forward);
  - the catalogue is read at start-up already.
So health stays NOT_SERVING until every served task is warm, and a client's first request is as fast as its next.

A version swapped in later is warmed as soon as it serves (its first request may still pay its head's fetch). The
task stays ready meanwhile: it was warm, it answers, and a server that flipped to NOT_SERVING on every swap would
be taken out of its load balancer each time. ModelReady about that very version says whether it is warm yet.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from tubelens.modelkit.preprocess import decode
from tubelens.predictor.core import CHANNEL, GENRE, POPULARITY, PredictorCore, VideoContext, audio_bands

log = logging.getLogger(__name__)

WARMUP_TITLES = ("warm-up", "a second warm-up title!")  # two requests: lazy paths of the second call run too
WARMUP_FRAMES = 2  # frames (and seconds of audio) of the genre warm-up: a sequence, not a single step


@dataclass(frozen=True)
class ModelState:
    task: str
    version: str  # the default version; "" when none is loaded
    ready: bool
    detail: str = ""  # why it is not ready


def warmup_picture() -> Image.Image:
    """A 16:9 gradient as a client would send it: JPEG bytes, decoded the way requests are (the decoder warms too)."""
    ramp = np.linspace(0, 255, 320, dtype=np.uint8)
    rgb = np.stack([np.tile(ramp, (180, 1)), np.tile(ramp[::-1], (180, 1)), np.full((180, 320), 128, np.uint8)], -1)
    encoded = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(encoded, "JPEG", quality=90)
    return decode(encoded.getvalue())


class Readiness:
    """Which (task, version) pairs are warm; `on_change(ready)` is told whenever the whole server's readiness flips
    (the gRPC health service follows it)."""

    def __init__(self, core: PredictorCore, on_change: Callable[[bool], None] | None = None) -> None:
        self.core = core
        self.on_change = on_change
        self._warm: set[tuple[str, str]] = set()
        self._tasks_warmed: set[str] = set()  # tasks that have had a warm default: they stay ready through swaps
        self._failed: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()
        self._last: bool | None = None

    def warm_defaults(self) -> None:
        """Warm every task's default version that is not warm yet (a swapped-in one too, though its task stays
        ready meanwhile); then report readiness."""
        for status in self.core.manager.status():
            with self._lock:
                cold = status.version is not None and (status.task, status.version) not in self._warm
            if cold:
                self.warm(status.task, status.version)
        self._report()

    def warm(self, task: str, version: str) -> None:
        """One full request through `version` of `task`; a failure leaves it not ready, with the reason."""
        started = time.perf_counter()
        recipe = _WARMUPS.get(task, _loaded_is_warm)
        try:
            recipe(self.core, version)
        except Exception as exc:  # noqa: BLE001 - a version that cannot answer is not ready; say why, keep going
            with self._lock:
                self._failed[(task, version)] = f"its warm-up request failed: {exc}"
            log.error("warm-up failed", extra={"task": task, "version": version, "error": str(exc)})
            return
        with self._lock:
            self._warm.add((task, version))
            self._tasks_warmed.add(task)
            self._failed.pop((task, version), None)
        seconds = round(time.perf_counter() - started, 3)
        log.info("model warm", extra={"task": task, "version": version, "seconds": seconds})

    def states(self) -> list[ModelState]:
        """Each served task: its default version and whether it is warm (or why not)."""
        with self._lock:
            warm, failed, tasks_warmed = set(self._warm), dict(self._failed), set(self._tasks_warmed)
        states = []
        for status in self.core.manager.status():
            version = status.version or ""
            if not version:
                states.append(ModelState(status.task, "", False, status.detail or "no version loaded"))
            elif (status.task, version) in warm or status.task in tasks_warmed:
                states.append(ModelState(status.task, version, True))
            else:
                why = failed.get((status.task, version), "warming up")
                states.append(ModelState(status.task, version, False, why))
        return states

    def model(self, task: str, version: str | None) -> ModelState:
        """One task's version (its default when None), warm or not; NotFound for a task this predictor does not
        serve. Unlike the task's state in `states()`, a just-swapped-in default is not ready until it is warm."""
        self.core.check_known(task)
        default = next(state for state in self.states() if state.task == task)
        version = version or default.version
        if not version:
            return default
        if version not in {served.version for served in self.core.manager.models(task)}:
            return ModelState(task, version, False, f"version {version!r} is not loaded")
        with self._lock:
            ready, failed = (task, version) in self._warm, self._failed.get((task, version))
        if ready:
            return ModelState(task, version, True)
        why = failed or ("warming up" if version == default.version else "loaded beside the default, not warmed")
        return ModelState(task, version, False, why)

    @property
    def ready(self) -> bool:
        states = self.states()
        return bool(states) and all(state.ready for state in states)

    def _report(self) -> None:
        ready = self.ready
        if ready != self._last:
            self._last = ready
            log.info("readiness", extra={"ready": ready, "models": [s.__dict__ for s in self.states()]})
            if self.on_change is not None:
                self.on_change(ready)


def _warm_popularity(core: PredictorCore, version: str) -> None:
    for title in WARMUP_TITLES:
        core.popularity(warmup_picture(), VideoContext(title=title, channel_subscribers=1000), version)


def _warm_channel(core: PredictorCore, version: str) -> None:
    for _ in WARMUP_TITLES:
        core.channel(warmup_picture(), version=version)


def _warm_genre(core: PredictorCore, version: str) -> None:
    bands = max(audio_bands(core.head_info(GENRE, version)), 1)
    frames = [warmup_picture()] * WARMUP_FRAMES
    for _ in WARMUP_TITLES:
        core.genre_of_frames(frames, np.zeros((WARMUP_FRAMES, bands), np.float32), version=version)


def _loaded_is_warm(core: PredictorCore, version: str) -> None:
    """A task no RPC asks (none of the above): nothing a client could call to warm, so loaded is ready."""


_WARMUPS: dict[str, Callable[[PredictorCore, str], None]] = {
    POPULARITY: _warm_popularity,
    CHANNEL: _warm_channel,
    GENRE: _warm_genre,
}
