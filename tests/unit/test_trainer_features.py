"""The title block: MiniLM vectors of each row's title, cached by title string, loaded only by feature sets using it."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pytest

from tests.unit.test_trainer_models import synthetic_table
from tubelens.modelkit import features as features_module
from tubelens.modelkit import text
from tubelens.modelkit.features import (
    FEATURE_SETS,
    IMAGE,
    METADATA,
    METADATA_FEATURES,
    MULTIMODAL,
    TITLE,
    TitleVectors,
    features,
)
from tubelens.modelkit.schema import EMBEDDING_DIM
from tubelens.modelkit.text import TEXT_DIM, TextEncoder, default_text_encoder


class CountingEncoder:
    """The real encoder, counting the titles it is asked to encode."""

    dim = TEXT_DIM

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        self.calls.append(list(texts))
        return default_text_encoder().encode(texts, batch_size)


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return synthetic_table(channels=4, per_channel=25, seed=3)


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> CountingEncoder:
    """A fresh, empty title cache in the module, backed by a counting encoder."""
    encoder = CountingEncoder()
    monkeypatch.setattr(features_module, "TITLE_VECTORS", TitleVectors(lambda: encoder))
    return encoder


def test_title_block_is_the_minilm_vector_of_each_title(table: pa.Table) -> None:
    block = features(table, TITLE)
    assert block.blocks == [(TITLE, 384)] and block.matrix.shape == (len(table), 384)
    assert block.matrix.dtype == np.float32
    expected = default_text_encoder().encode(table.column("title").to_pylist())
    np.testing.assert_allclose(block.matrix, expected, atol=1e-5)


def test_a_missing_title_is_the_empty_title(table: pa.Table) -> None:
    titles = pa.array([None, "ramen review", ""], type=pa.string())
    rows = table.slice(0, 3).set_column(table.schema.get_field_index("title"), "title", titles)
    matrix = features(rows, TITLE).matrix
    np.testing.assert_allclose(matrix[0], matrix[2], atol=1e-6)
    np.testing.assert_allclose(matrix[0], default_text_encoder().empty_vector(), atol=1e-5)
    assert matrix[0] @ matrix[1] < 0.9


def test_each_distinct_title_is_encoded_once_across_feature_sets_and_splits(
    table: pa.Table, counting: CountingEncoder
) -> None:
    distinct = len(set(table.column("title").to_pylist()))
    assert distinct < len(table)  # the synthetic titles repeat, so a per-row encoder would do more work
    first = features(table, TITLE).matrix
    assert len(counting.calls) == 1 and sorted(counting.calls[0]) == sorted(set(table.column("title").to_pylist()))
    again = features(table, MULTIMODAL).matrix
    half = features(table.slice(10, 40), TITLE).matrix
    assert len(counting.calls) == 1
    cache = features_module.TITLE_VECTORS
    assert cache.misses == distinct and cache.hits == 2 * len(table) - distinct + 40
    np.testing.assert_array_equal(again[:, EMBEDDING_DIM : EMBEDDING_DIM + TEXT_DIM], first)
    np.testing.assert_array_equal(half, first[10:50])


def test_the_cache_drops_the_least_recently_used_titles_past_its_size() -> None:
    encoder = CountingEncoder()
    cache = TitleVectors(lambda: encoder, max_titles=2)
    everything = cache(["a", "b", "c"])  # more distinct titles than fit: all come back, then the oldest go
    assert everything.shape == (3, TEXT_DIM) and len(cache) == 2
    cache(["b"])  # "b" is now the most recently used, so "c" goes next
    cache(["a"])
    assert encoder.calls == [["a", "b", "c"], ["a"]] and len(cache) == 2
    cache(["b"])
    assert encoder.calls[-1] == ["a"]  # "b" stayed: no new call
    cache(["c"])
    assert encoder.calls[-1] == ["c"]


def test_metadata_and_image_never_load_the_text_model(table: pa.Table, monkeypatch: pytest.MonkeyPatch) -> None:
    loads = []

    def refuse(path=None):
        loads.append(path)
        raise AssertionError("the text model was loaded")

    # A fresh encoder behind an empty cache, so that a model loaded by an earlier test cannot hide a load.
    monkeypatch.setattr(text, "load_model", refuse)
    monkeypatch.setattr(features_module, "TITLE_VECTORS", TitleVectors(TextEncoder))
    for feature_set in (METADATA, IMAGE):
        assert TITLE not in FEATURE_SETS[feature_set]
        features(table, feature_set)
    assert loads == []
    with pytest.raises(AssertionError, match="was loaded"):
        features(table, MULTIMODAL)
    assert len(loads) == 1


def test_multimodal_is_image_then_title_then_metadata(table: pa.Table) -> None:
    multimodal = features(table, MULTIMODAL)
    width = 1280 + 384 + len(METADATA_FEATURES)
    assert multimodal.matrix.shape == (len(table), width) and multimodal.matrix.dtype == np.float32
    assert multimodal.blocks == [(IMAGE, EMBEDDING_DIM), (TITLE, TEXT_DIM), (METADATA, len(METADATA_FEATURES))]
    parts = [features(table, block).matrix for block in (IMAGE, TITLE, METADATA)]
    np.testing.assert_array_equal(multimodal.matrix, np.hstack(parts))
