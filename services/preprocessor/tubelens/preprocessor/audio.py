"""Per-second log-mel audio features, in the spirit of YouTube-8M's audio track.

The sound is resampled to mono 16 kHz and cut into 25 ms windows every 10 ms (VGGish's front end: periodic Hann
window, 512-point FFT, magnitude spectrum, mel bands between 125 and 7500 Hz, log(mel + 0.01)). Each second's 100
windows are averaged into one row, so a video yields float32 [seconds, bands]: small enough to keep for every
video, and what an audio embedding or a classifier reads. Audio is processed one second at a time, so an hour of
sound needs no more memory than a second of it.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from pathlib import Path

import av
import av.container
import numpy as np

from tubelens.objects import ObjectStore
from tubelens.preprocessor.media import MediaFormat, open_media
from tubelens.v1 import common_pb2

SAMPLE_RATE = 16_000
WINDOW = 400  # 25 ms
HOP = 160  # 10 ms
FFT_SIZE = 512
WINDOWS_PER_SECOND = SAMPLE_RATE // HOP
# The samples that hold one second's windows: the last one starts at 990 ms and ends 15 ms into the next second.
SPAN = (WINDOWS_PER_SECOND - 1) * HOP + WINDOW
MIN_HZ = 125.0
MAX_HZ = 7500.0
LOG_OFFSET = 0.01
PREFIX = "audio/logmel"

_HANN = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WINDOW) / WINDOW)).astype(np.float32)


def audio_features(path: Path, media_format: MediaFormat, bands: int) -> np.ndarray:
    """float32 [seconds, bands] for the first audio stream; [0, bands] when the media has no sound."""
    with open_media(path, media_format) as container:
        if not container.streams.audio:
            return np.zeros((0, bands), dtype=np.float32)
        return per_second_log_mel(_mono_16k(container), bands)


def _mono_16k(container: av.container.InputContainer) -> Iterator[np.ndarray]:
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    for frame in container.decode(container.streams.audio[0]):
        for resampled in resampler.resample(frame):
            yield resampled.to_ndarray().reshape(-1)
    for resampled in resampler.resample(None):
        yield resampled.to_ndarray().reshape(-1)


def per_second_log_mel(chunks: Iterable[np.ndarray], bands: int) -> np.ndarray:
    """Mean log-mel per band for each second of 16 kHz mono samples; a last partial second counts if it holds a
    whole window."""
    filterbank = mel_filterbank(bands)
    rows = []
    pending = np.zeros(0, dtype=np.float32)
    for chunk in chunks:
        pending = np.concatenate([pending, chunk.astype(np.float32, copy=False)])
        while len(pending) >= SPAN:
            rows.append(_second_profile(pending[:SPAN], filterbank))
            pending = pending[SAMPLE_RATE:]
    if len(pending) >= WINDOW:
        rows.append(_second_profile(pending, filterbank))
    return np.array(rows, dtype=np.float32).reshape(len(rows), bands)


def _second_profile(samples: np.ndarray, filterbank: np.ndarray) -> np.ndarray:
    windows = np.lib.stride_tricks.sliding_window_view(samples, WINDOW)[::HOP][:WINDOWS_PER_SECOND]
    magnitude = np.abs(np.fft.rfft(windows * _HANN, n=FFT_SIZE))
    return np.log(magnitude @ filterbank + LOG_OFFSET).mean(axis=0)


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    return 1127.0 * np.log1p(np.asarray(hz) / 700.0)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    return 700.0 * np.expm1(np.asarray(mel) / 1127.0)


def mel_filterbank(bands: int, min_hz: float = MIN_HZ, max_hz: float = MAX_HZ) -> np.ndarray:
    """[FFT_SIZE // 2 + 1, bands] triangles, evenly spaced on the mel scale, each peaking at 1 on its centre."""
    bin_hz = np.fft.rfftfreq(FFT_SIZE, d=1.0 / SAMPLE_RATE)
    edges = mel_to_hz(np.linspace(hz_to_mel(min_hz), hz_to_mel(max_hz), bands + 2))
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bin_hz[:, None] - lower) / (centre - lower)
    falling = (upper - bin_hz[:, None]) / (upper - centre)
    return np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)


def store_audio_features(store: ObjectStore, features: np.ndarray) -> common_pb2.ObjectRef:
    """The features as a content-addressed .npy (numpy's own format: dtype and shape travel with the bytes)."""
    out = io.BytesIO()
    np.save(out, features, allow_pickle=False)
    info = store.put_content(out.getvalue(), prefix=PREFIX, content_type="application/x-npy", suffix=".npy")
    return info.to_ref()
