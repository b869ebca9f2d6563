"""The title encoder: all-MiniLM-L6-v2 from the weights its package ships, offline, unit vectors on CPU."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from tubelens.modelkit import text
from tubelens.modelkit.text import TEXT_DIM, TextEncoder, default_text_encoder, model_spec

REPO = Path(__file__).resolve().parents[2]
CLOSED_PORT = "http://127.0.0.1:9"  # the discard port: nothing listens, so any request fails at once

TITLES = [
    "INSANE supercar crash!!!",
    "INSANE sports car wreck",
    "Grammar lesson: the subjunctive",
    "How I built a robot in 7 days",
    "ramen review",
]


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return default_text_encoder()


def test_titles_become_float32_unit_vectors_of_384(encoder: TextEncoder) -> None:
    vectors = encoder.encode(TITLES)
    assert encoder.dim == TEXT_DIM == 384
    assert vectors.shape == (len(TITLES), 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.isfinite(vectors).all()
    assert encoder.encode([]).shape == (0, 384)


def test_encoding_is_deterministic_and_independent_of_batching(encoder: TextEncoder) -> None:
    once = encoder.encode(TITLES)
    np.testing.assert_array_equal(once, encoder.encode(TITLES))
    # Batches pad to their longest title; the attention mask keeps padding out of each vector.
    np.testing.assert_allclose(once, encoder.encode(TITLES, batch_size=1), atol=1e-5)
    np.testing.assert_allclose(once[2], encoder.encode([TITLES[2]])[0], atol=1e-5)


def test_close_titles_are_closer_than_unrelated_ones(encoder: TextEncoder) -> None:
    crash, wreck, grammar = encoder.encode(TITLES[:3])
    assert crash @ wreck > 0.4
    assert crash @ wreck > crash @ grammar + 0.3
    assert crash @ wreck > wreck @ grammar + 0.3


def test_empty_and_whitespace_titles_share_one_defined_unit_vector(encoder: TextEncoder) -> None:
    vectors = encoder.encode(["", " ", "\n\t ", "a real title"])
    for row in vectors[:3]:
        np.testing.assert_allclose(row, encoder.empty_vector(), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[3] < 0.9


def test_titles_past_the_window_are_truncated_not_refused(encoder: TextEncoder) -> None:
    long = "supercar " * 2000
    a, b = encoder.encode([long + "grammar lesson", long + "ramen review"])
    # 2,000 words are far past the 256 word pieces the model reads: the different tails are never seen.
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert abs(np.linalg.norm(a) - 1) < 1e-5


def test_encoding_bounds_torch_threads_and_restores_them() -> None:
    before = torch.get_num_threads()
    seen = []
    encoder = TextEncoder(threads=1)
    original = encoder.model().encode

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return original(*args, **kwargs)

    encoder.model().encode = spy
    encoder.encode(["a title"])
    assert seen == [1] and torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads"):
        TextEncoder(threads=0)


def test_the_model_loads_once_on_first_use_however_many_threads_ask(monkeypatch: pytest.MonkeyPatch) -> None:
    loads = []
    real = text.load_model

    def counting(path=None):
        loads.append(path)
        return real(path)

    monkeypatch.setattr(text, "load_model", counting)
    encoder = TextEncoder()
    assert not encoder.loaded and loads == []
    results: list[np.ndarray] = []
    threads = [threading.Thread(target=lambda: results.append(encoder.encode(TITLES[:2]))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(loads) == 1 and encoder.loaded and len(results) == 4
    for result in results[1:]:
        np.testing.assert_array_equal(result, results[0])


def test_a_single_string_is_refused_rather_than_split_into_characters(encoder: TextEncoder) -> None:
    with pytest.raises(TypeError, match="sequence of titles"):
        encoder.encode("one title")  # type: ignore[arg-type]


def test_progress_is_drawn_only_when_asked_and_only_for_several_batches(
    encoder: TextEncoder, capfd: pytest.CaptureFixture[str]
) -> None:
    titles = [f"video number {n}" for n in range(10)]
    capfd.readouterr()
    encoder.encode(titles, batch_size=4)
    encoder.encode(titles[:4], batch_size=4, progress=True)
    assert "Batches" not in "".join(capfd.readouterr())
    encoder.encode(titles, batch_size=4, progress=True)
    assert "Batches" in "".join(capfd.readouterr())


def test_a_model_of_another_width_is_refused_at_load(monkeypatch: pytest.MonkeyPatch) -> None:
    from sentence_transformers import SentenceTransformer

    monkeypatch.setattr(SentenceTransformer, "get_embedding_dimension", lambda self: 768)
    with pytest.raises(RuntimeError, match="makes 768-d vectors, not 384"):
        TextEncoder().encode(["a title"])


def test_model_spec_names_the_model_and_its_package_version() -> None:
    spec = model_spec()
    assert (spec.name, spec.version) == ("all-minilm-l6-v2", "0.1.0")


def test_the_model_loads_and_encodes_offline_with_no_network(tmp_path: Path) -> None:
    """A fresh interpreter with every proxy pointing at a closed port: a request to a hub would fail (or hang)."""
    script = textwrap.dedent(
        """
        import os, socket
        import numpy as np

        def refuse(*args, **kwargs):
            raise AssertionError("a network connection was attempted")

        socket.create_connection = refuse  # anything reaching past the proxies fails loudly
        from tubelens.modelkit.text import TextEncoder
        assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["TRANSFORMERS_OFFLINE"] == "1"
        vectors = TextEncoder().encode(["INSANE supercar crash!!!", ""])
        assert vectors.shape == (2, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
        import huggingface_hub.constants as hub
        assert hub.HF_HUB_OFFLINE
        print("offline ok")
        """
    )
    env = {name: value for name, value in os.environ.items() if not name.startswith(("HF_", "TRANSFORMERS_"))}
    env |= {
        "HF_HUB_OFFLINE": "1",
        "HTTP_PROXY": CLOSED_PORT,
        "HTTPS_PROXY": CLOSED_PORT,
        "http_proxy": CLOSED_PORT,
        "https_proxy": CLOSED_PORT,
        "NO_PROXY": "",
        "HF_HOME": str(tmp_path / "hf-home"),  # an empty cache: nothing to fall back on
    }
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "offline ok" in result.stdout
