"""Sample a video's frames at a fixed rate, drop the title and end slates, store the rest as small JPEGs.

A slate is a sampled frame that is mostly one flat colour (a title card: a plain background with a few words) or
that hardly differs from a neighbouring sample (a frozen logo or end card). Only runs of slates at the very start
and at the very end are dropped; the middle is content however still it is. A video that is slates from end to
end keeps every frame: it has no other content to offer.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import av
import av.container
import numpy as np
from PIL import Image

from tubelens.errors import InvalidInput, TooLarge
from tubelens.objects import ObjectStore
from tubelens.preprocessor.media import MediaFormat, open_media
from tubelens.preprocessor.settings import PreprocessorSettings
from tubelens.v1 import events_pb2

PREFIX = "frames"
JPEG_QUALITY = 90
# Slate tests run on a small greyscale copy: cheap, and blind to compression noise.
PROBE_SIZE = (64, 64)
# Frame timestamps are floats from rational time bases; this absorbs their rounding.
EPSILON_S = 1e-6


@dataclass(frozen=True)
class SampledFrame:
    index: int  # position among the sampled frames, counted from the first frame of the video
    timestamp_seconds: float
    jpeg: bytes
    probe: np.ndarray  # PROBE_SIZE greyscale, uint8


@dataclass(frozen=True)
class SampledVideo:
    duration_seconds: float
    sample_fps: float
    frames: list[SampledFrame]  # slates removed
    dropped_leading: int
    dropped_trailing: int


def extract_frames(path: Path, media_format: MediaFormat, settings: PreprocessorSettings) -> SampledVideo:
    """Frames sampled at `settings.frame_fps`, scaled down and JPEG-encoded, slates removed."""
    with open_media(path, media_format) as container:
        if not container.streams.video:
            raise InvalidInput("media has no video stream", field="media_url")
        stream = container.streams.video[0]
        _check_pixels(stream.codec_context.width, stream.codec_context.height, settings.max_pixels)
        stream.thread_type = "AUTO"
        sampled = _sample(container, stream, settings)
        duration = _duration_seconds(container, sampled)
    leading, trailing = slate_runs([frame.probe for frame in sampled], settings)
    return SampledVideo(
        duration_seconds=duration,
        sample_fps=settings.frame_fps,
        frames=sampled[leading : len(sampled) - trailing],
        dropped_leading=leading,
        dropped_trailing=trailing,
    )


def _sample(
    container: av.container.InputContainer, stream: av.VideoStream, settings: PreprocessorSettings
) -> list[SampledFrame]:
    step = 1.0 / settings.frame_fps
    sampled: list[SampledFrame] = []
    origin: float | None = None
    next_at = 0.0
    for frame in container.decode(stream):
        if frame.time is None:
            raise InvalidInput("video frames carry no timestamps", field="media_url")
        # Timestamps count from the first frame: containers may start their clock anywhere.
        origin = frame.time if origin is None else origin
        at = frame.time - origin
        if at + EPSILON_S < next_at:
            continue
        if len(sampled) == settings.max_frames:
            raise TooLarge(
                f"video samples more than {settings.max_frames} frames at {settings.frame_fps} fps", field="media_url"
            )
        _check_pixels(frame.width, frame.height, settings.max_pixels)
        sampled.append(_encode(frame, len(sampled), at, settings.frame_short_side))
        next_at = (math.floor(at / step + EPSILON_S) + 1) * step
    if not sampled:
        raise InvalidInput("video stream has no decodable frames", field="media_url")
    return sampled


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise TooLarge(f"video frames are {width}x{height}, over the limit of {max_pixels} pixels", field="media_url")


def _encode(frame: av.VideoFrame, index: int, at: float, short_side: int) -> SampledFrame:
    width, height = _scaled(frame.width, frame.height, short_side)
    image = frame.to_image(width=width, height=height, interpolation="AREA")
    out = io.BytesIO()
    image.save(out, "JPEG", quality=JPEG_QUALITY)
    probe = np.asarray(image.convert("L").resize(PROBE_SIZE, Image.Resampling.BOX))
    return SampledFrame(index, at, out.getvalue(), probe)


def _scaled(width: int, height: int, short_side: int) -> tuple[int, int]:
    """The frame size with its shorter side at most `short_side`, aspect kept; never scaled up."""
    scale = min(1.0, short_side / min(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _duration_seconds(container: av.container.InputContainer, sampled: list[SampledFrame]) -> float:
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    return sampled[-1].timestamp_seconds


def slate_runs(probes: list[np.ndarray], settings: PreprocessorSettings) -> tuple[int, int]:
    """How many slate frames lead and trail the sequence of greyscale probes."""
    slate = [_mostly_one_tone(probe, settings.slate_tolerance, settings.slate_uniform_fraction) for probe in probes]
    for i in range(len(probes) - 1):
        if _mean_change(probes[i], probes[i + 1]) < settings.slate_static_diff:
            slate[i] = slate[i + 1] = True
    leading = _run_length(slate)
    if leading == len(slate):
        return 0, 0
    return leading, _run_length(slate[::-1])


def _mostly_one_tone(probe: np.ndarray, tolerance: int, fraction: float) -> bool:
    """True when the densest band of 2*tolerance+1 grey levels holds at least `fraction` of the pixels."""
    histogram = np.bincount(probe.ravel(), minlength=256)
    densest = np.convolve(histogram, np.ones(2 * tolerance + 1, dtype=np.int64), mode="same").max()
    return densest >= fraction * probe.size


def _mean_change(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def _run_length(flags: list[bool]) -> int:
    run = 0
    for flag in flags:
        if not flag:
            break
        run += 1
    return run


def store_frames(store: ObjectStore, frames: list[SampledFrame]) -> list[events_pb2.Frame]:
    """Each frame as a content-addressed JPEG under `frames/`."""
    stored = []
    for frame in frames:
        info = store.put_content(frame.jpeg, prefix=PREFIX, content_type="image/jpeg", suffix=".jpg")
        stored.append(events_pb2.Frame(index=frame.index, timestamp_seconds=frame.timestamp_seconds, ref=info.to_ref()))
    return stored
