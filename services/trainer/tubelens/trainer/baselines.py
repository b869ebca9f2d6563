"""The baselines every table carries, so that a model's number always has something to be compared with.

- Majority class (view buckets, channels): the most frequent training label for every row. Its scores are the
  training class frequencies, so its top-k accuracy is that of always answering the k most frequent classes.
- Channel mean (popularity regression): the mean training target of the video's channel, the global training mean for
  a channel never seen in training. On the held-out-channel split no test channel was seen, so it degenerates to the
  global mean, as it should: it knows channels, not videos.
- Metadata-only (popularity): the popularity head itself trained on `features.METADATA`. What the thumbnail adds is
  the gap between it and the image and multimodal models; evaluation trains it beside them under this name.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tubelens.modelkit.features import METADATA

MAJORITY = "majority"
CHANNEL_MEAN = "channel_mean"
METADATA_ONLY = METADATA


@dataclass(frozen=True)
class MajorityClass:
    label: str
    frequencies: dict[str, float]

    @classmethod
    def fit(cls, y_train: Sequence) -> MajorityClass:
        counts = Counter(str(label) for label in y_train)
        if not counts:
            raise ValueError("a majority class needs at least one training label")
        total = sum(counts.values())
        # Ties go to the smallest label, so the baseline is the same on every run.
        label = min(counts, key=lambda name: (-counts[name], name))
        return cls(label, {name: count / total for name, count in sorted(counts.items())})

    def predict(self, rows: int) -> np.ndarray:
        return np.full(rows, self.label, dtype=object)

    def scores(self, rows: int, labels: Sequence[str]) -> np.ndarray:
        """Training frequency of each of `labels` (0 for one never seen), the same for every row."""
        prior = np.array([self.frequencies.get(str(label), 0.0) for label in labels], dtype=np.float64)
        return np.tile(prior, (rows, 1))


@dataclass(frozen=True)
class ChannelMean:
    means: dict[str, float]
    global_mean: float

    @classmethod
    def fit(cls, channels: Sequence, y_train: Sequence[float]) -> ChannelMean:
        channels = np.asarray(channels, dtype=object)
        y_train = np.asarray(y_train, dtype=np.float64)
        if len(y_train) == 0:
            raise ValueError("a channel mean needs at least one training row")
        means = {str(channel): float(y_train[channels == channel].mean()) for channel in np.unique(channels)}
        return cls(means, float(y_train.mean()))

    def predict(self, channels: Sequence) -> np.ndarray:
        return np.array([self.means.get(str(channel), self.global_mean) for channel in channels], dtype=np.float64)

    def seen_fraction(self, channels: Sequence) -> float:
        """Share of rows whose channel was seen in training: 0 means this baseline is the global mean."""
        channels = list(channels)
        return sum(str(channel) in self.means for channel in channels) / len(channels) if channels else 0.0
