"""Audio features: per-second log-mel rows in which a tone and noise look as different as they sound."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.preprocessorkit import sine, video
from tubelens.objects import LocalObjectStore
from tubelens.preprocessor.audio import (
    FFT_SIZE,
    SAMPLE_RATE,
    audio_features,
    mel_filterbank,
    per_second_log_mel,
    store_audio_features,
)
from tubelens.preprocessor.media import MP4

BANDS = 64


def bands_hearing(hz: float) -> set[int]:
    """The mel bands whose triangle covers `hz`."""
    response = mel_filterbank(BANDS)[round(hz * FFT_SIZE / SAMPLE_RATE)]
    return set(np.flatnonzero(response > 0).tolist())


def chunks(samples: np.ndarray, size: int = 1000) -> list[np.ndarray]:
    """As a decoder hands them over: in pieces that do not line up with seconds."""
    return [samples[start : start + size] for start in range(0, len(samples), size)]


def white_noise(seconds: float) -> np.ndarray:
    return np.random.default_rng(3).normal(0, 0.2, round(seconds * SAMPLE_RATE)).astype(np.float32)


def test_a_440_hz_tone_puts_its_energy_in_the_band_around_440_hz_and_noise_spreads_it() -> None:
    tone = per_second_log_mel(chunks(sine(440, 3, SAMPLE_RATE)), BANDS).mean(axis=0)
    noise = per_second_log_mel(chunks(white_noise(3)), BANDS).mean(axis=0)

    assert int(tone.argmax()) in bands_hearing(440)
    assert tone.max() - np.median(tone) > 5, "a tone towers over the other bands (e^5: 150 times)"
    assert noise.max() - np.median(noise) < 2, "noise is broadband"
    assert np.abs(tone - noise).mean() > 3


def test_a_tone_an_octave_higher_moves_up_the_bands() -> None:
    low = per_second_log_mel([sine(440, 1, SAMPLE_RATE)], BANDS).mean(axis=0).argmax()
    high = per_second_log_mel([sine(1760, 1, SAMPLE_RATE)], BANDS).mean(axis=0).argmax()
    assert int(high) in bands_hearing(1760) and high > low + 10


def test_there_is_one_row_per_second_and_a_last_partial_second_counts() -> None:
    features = per_second_log_mel(chunks(white_noise(2.5)), BANDS)
    assert features.shape == (3, BANDS) and features.dtype == np.float32
    assert per_second_log_mel([white_noise(0.01)], BANDS).shape == (0, BANDS), "shorter than one 25 ms window"


def test_each_second_describes_its_own_sound() -> None:
    samples = np.concatenate([sine(440, 1, SAMPLE_RATE), np.zeros(SAMPLE_RATE, np.float32), sine(3000, 1, SAMPLE_RATE)])
    features = per_second_log_mel(chunks(samples, 4096), BANDS)
    assert int(features[0].argmax()) in bands_hearing(440)
    # Silence sits near the log floor, log(0.01) = -4.6; its last windows reach 15 ms into the next second.
    assert features[1].max() < -3.5 < 0 < min(features[0].max(), features[2].max())
    assert int(features[2].argmax()) in bands_hearing(3000)


def test_the_mel_filterbank_covers_125_to_7500_hz_with_narrow_low_and_wide_high_bands() -> None:
    bank = mel_filterbank(BANDS)
    assert bank.shape == (FFT_SIZE // 2 + 1, BANDS)
    assert (bank.max(axis=0) > 0).all(), "no band falls between two FFT bins"
    widths = (bank > 0).sum(axis=0)
    assert widths[-1] > 5 * widths[0]
    assert not bands_hearing(60) and not bands_hearing(7900)


def test_features_of_a_video_come_from_its_audio_track_resampled_to_mono_16_khz(tmp_path: Path) -> None:
    path = tmp_path / "tone.mp4"
    path.write_bytes(video(title_s=1, content_s=2, end_s=1, tone_hz=1000))

    features = audio_features(path, MP4, BANDS)

    assert features.shape == (4, BANDS)
    assert all(int(second.argmax()) in bands_hearing(1000) for second in features)


def test_a_video_without_sound_has_zero_seconds_of_features(tmp_path: Path) -> None:
    path = tmp_path / "silent.mp4"
    path.write_bytes(video(tone_hz=None))
    assert audio_features(path, MP4, BANDS).shape == (0, BANDS)


def test_features_are_stored_as_npy_that_loads_back_unchanged(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path, "objects")
    store.ensure_bucket()
    features = per_second_log_mel([white_noise(2)], BANDS)

    ref = store_audio_features(store, features)

    assert ref.key.startswith("audio/logmel/") and ref.key.endswith(".npy")
    assert ref.content_type == "application/x-npy"
    loaded = np.load(tmp_path / "objects" / ref.key, allow_pickle=False)
    assert loaded.dtype == np.float32 and np.array_equal(loaded, features)
