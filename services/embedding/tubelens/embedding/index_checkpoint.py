"""Checkpoints of the similarity index: its HNSW graph and slot table, saved beside the shards, mapped at start.

The shards stay the source of truth; a checkpoint only saves rebuilding the graph from them (minutes at 100,000
vectors) and reading every shard. One checkpoint is four objects under `<prefix>/checkpoints/`:

  <taken_ns>/graph.usearch   the graph (usearch's own format), its keys the index's slots
  <taken_ns>/vectors.npy     float32 [slots, dim], the matrix the graph's candidates are rescored with
  <taken_ns>/slots.npz       the video id of each slot ("" for a free one) and its pHash
  <taken_ns>.json            the manifest, written last: the three files' sha256s, the quantization scale, and every
                             shard the checkpoint holds (shards written later are replayed on top of it)

A checkpoint that is missing a file, whose files differ from their sha256s, or that usearch or numpy cannot read
is skipped with a warning for the one before it, and without any for the shards alone: a corrupt checkpoint costs
start-up time, never vectors. The newest `KEEP` checkpoints stay in the store; older ones are deleted.

Files are mapped from a local cache directory, named by their sha256; a file found there is hashed before use (about
half a second per 650 MB), so a damaged cache is refetched rather than trusted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from usearch.index import Index

from tubelens.errors import NotFound, TubelensError
from tubelens.objects import ObjectStore

log = logging.getLogger(__name__)

FORMAT = 1
KEEP = 2
FOLDER = "checkpoints"
FILES = {"graph": "graph.usearch", "vectors": "vectors.npy", "slots": "slots.npz"}
_MANIFEST = re.compile(r"(\d{20})\.json")
_CACHED = re.compile(r"[0-9a-f]{64}-(" + "|".join(re.escape(name) for name in FILES.values()) + ")")
_HASH_CHUNK = 8 * 1024 * 1024


class CheckpointUnusable(Exception):
    """This checkpoint cannot be restored; the caller falls back to an older one, then to the shards."""


@dataclass(frozen=True)
class Restored:
    taken_ns: int
    graph: Index  # a read-only view of the cached file
    vectors: np.ndarray  # memory-mapped copy-on-write: writes stay in this process
    ids: np.ndarray  # str per slot, "" where free
    phashes: np.ndarray
    scale: float
    shards: frozenset[str]


def folder(prefix: str) -> str:
    return f"{prefix.rstrip('/')}/{FOLDER}/"


def write_files(directory: Path, graph: Index, vectors: np.ndarray, ids: list[str | None], phashes: np.ndarray):
    """The three data files of a checkpoint in `directory` (under the index's read lock); returns their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {name: directory / filename for name, filename in FILES.items()}
    graph.save(str(paths["graph"]))
    np.save(paths["vectors"], vectors, allow_pickle=False)
    slot_ids = np.array(["" if video_id is None else video_id for video_id in ids], dtype=np.str_)
    with paths["slots"].open("wb") as out:
        np.savez(out, ids=slot_ids, phashes=phashes)
    return paths


def publish(
    store: ObjectStore,
    prefix: str,
    paths: Mapping[str, Path],
    *,
    cache: Path,
    taken_ns: int,
    dim: int,
    live: int,
    scale: float,
    shards: Iterable[str],
) -> str:
    """Upload the files, then the manifest that makes them a checkpoint, and prune older checkpoints; the files
    move into `cache`, named by their sha256, for the next start on this machine. Returns the manifest's key."""
    base = f"{folder(prefix)}{taken_ns:020d}"
    files, cached = {}, {}
    try:
        for name, path in paths.items():
            with path.open("rb") as body:
                info = store.put(f"{base}/{FILES[name]}", body, content_type="application/octet-stream")
            files[name] = {"key": info.key, "sha256": info.sha256, "size": info.size}
            cached[name] = _cache_path(cache, info.sha256, name)
            os.replace(path, cached[name])
    except BaseException:
        # Without a manifest nothing would ever prune them: remove what went up, as far as the store lets us now.
        with suppress(Exception):
            for filename in FILES.values():
                store.delete(f"{base}/{filename}")
        raise
    tidy(cache, keep=cached.values())
    manifest = {
        "format": FORMAT,
        "taken_ns": taken_ns,
        "dim": dim,
        "live": live,
        "scale": scale,
        "files": files,
        "shards": sorted(shards),
    }
    key = f"{base}.json"
    store.put(key, json.dumps(manifest).encode(), content_type="application/json")
    _prune(store, prefix)
    return key


def manifests(store: ObjectStore, prefix: str) -> list[str]:
    """Checkpoint manifests under `prefix`, newest first."""
    found = [info.key for info in store.list(folder(prefix)) if _MANIFEST.fullmatch(info.key.rsplit("/", 1)[-1])]
    return sorted(found, reverse=True)


def restore(store: ObjectStore, key: str, *, dim: int, cache: Path, expansion_search: int) -> Restored:
    """The checkpoint `key` names, its files fetched into `cache` unless there already; CheckpointUnusable if not."""
    try:
        manifest = json.loads(store.get(key))
        if manifest.get("format") != FORMAT or manifest["dim"] != dim:
            raise CheckpointUnusable(f"format {manifest.get('format')} of dimension {manifest['dim']}, not {dim}")
        paths = {name: _fetched(store, manifest["files"][name], name, cache) for name in FILES}
        vectors = np.load(paths["vectors"], mmap_mode="c", allow_pickle=False)
        with np.load(paths["slots"], allow_pickle=False) as slots:
            ids, phashes = slots["ids"].astype(np.str_), slots["phashes"].astype(np.uint64)
        graph = Index.restore(str(paths["graph"]), view=True)
    except CheckpointUnusable:
        raise
    except (KeyError, TypeError, ValueError, OSError, RuntimeError, TubelensError) as error:
        raise CheckpointUnusable(f"{type(error).__name__}: {error}") from error
    if graph is None:
        raise CheckpointUnusable("usearch found no index in the graph file")
    live = int(np.count_nonzero(ids != ""))
    rows = len(ids)
    if vectors.shape != (rows, dim) or vectors.dtype != np.float32 or phashes.shape != (rows,):
        raise CheckpointUnusable(f"vectors {vectors.shape} {vectors.dtype}, phashes {phashes.shape}, {rows} slots")
    if graph.ndim != dim or len(graph) != live or manifest["live"] != live:
        raise CheckpointUnusable(f"a graph of {len(graph)} nodes of dimension {graph.ndim} for {live} live slots")
    graph.expansion_search = expansion_search  # a search-time setting usearch does not save
    return Restored(
        taken_ns=int(manifest["taken_ns"]),
        graph=graph,
        vectors=vectors,
        ids=ids,
        phashes=phashes,
        scale=float(manifest["scale"]),
        shards=frozenset(manifest["shards"]),
    )


def _fetched(store: ObjectStore, described: Mapping[str, object], name: str, cache: Path) -> Path:
    """The file in the cache, downloaded when missing or damaged; its sha256 is checked either way."""
    sha256, key = str(described["sha256"]), str(described["key"])
    path = _cache_path(cache, sha256, name)
    if path.exists() and _sha256(path) == sha256:
        return path
    cache.mkdir(parents=True, exist_ok=True)
    try:
        store.download(key, path)
    except NotFound as error:
        raise CheckpointUnusable(f"{key} is gone") from error
    if _sha256(path) != sha256:
        path.unlink(missing_ok=True)
        raise CheckpointUnusable(f"{key} does not match the sha256 its manifest records")
    return path


def tidy(cache: Path, *, keep: Iterable[Path]) -> None:
    """Remove cached files of other checkpoints. A process may still map one: its pages stay until it lets go."""
    kept = set(keep)
    for path in cache.iterdir() if cache.is_dir() else ():
        if _CACHED.fullmatch(path.name) and path not in kept:
            path.unlink(missing_ok=True)


def _cache_path(cache: Path, sha256: str, name: str) -> Path:
    return cache / f"{sha256}-{FILES[name]}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as data:
        while chunk := data.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _prune(store: ObjectStore, prefix: str) -> None:
    """Delete all but the newest KEEP checkpoints, manifest first, so none is ever half there."""
    for manifest in manifests(store, prefix)[KEEP:]:
        base = manifest.removesuffix(".json")
        store.delete(manifest)
        for filename in FILES.values():
            store.delete(f"{base}/{filename}")
        log.info("index checkpoint pruned", extra={"checkpoint": manifest})
