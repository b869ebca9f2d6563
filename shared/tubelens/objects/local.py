"""Objects as files under a local directory, for the one-process embedded mode.

Layout under `root`: `<bucket>/<key>` holds the bytes, so the store can be browsed by hand;
`.meta/<bucket>/<key>` holds what the put recorded (sha256, size, content type) as JSON; `.tmp/` holds files
being written. Bucket names never start with a dot, so neither can collide with a bucket. Every write lands in
`.tmp/` first and is renamed into place, so a crash leaves the old object or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import BinaryIO

from tubelens.errors import Conflict
from tubelens.objects.base import (
    DEFAULT_CONTENT_TYPE,
    ObjectInfo,
    ObjectStore,
    Payload,
    not_found,
    validate_bucket,
    validate_key,
    validate_prefix,
)


class LocalObjectStore(ObjectStore):
    def __init__(self, root: str | os.PathLike[str], bucket: str) -> None:
        self.bucket = validate_bucket(bucket)
        self.root = Path(root)
        self._objects = self.root / bucket
        self._meta = self.root / ".meta" / bucket
        self.spool_dir = self.root / ".tmp"
        # Guards the pair of renames (bytes, then metadata) so that readers never see one without the other.
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LocalObjectStore({str(self._objects)!r})"

    def ensure_bucket(self) -> None:
        for directory in (self._objects, self._meta, self.spool_dir):
            directory.mkdir(parents=True, exist_ok=True)

    def _store(self, key: str, payload: Payload, content_type: str, *, only_if_absent: bool) -> ObjectInfo:
        target = self._objects / key
        if only_if_absent and target.is_file():  # the usual redelivery: skip staging; checked again below
            return self.stat(key)
        info = ObjectInfo(self.bucket, key, payload.size, payload.sha256, content_type, created=True)
        with self._staged(payload) as bytes_file, self._staged_meta(info) as meta_file, self._lock:
            if only_if_absent and target.is_file():
                return self._stat_locked(key)
            try:
                for staged, final in ((bytes_file, target), (meta_file, self._meta / key)):
                    final.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(staged, final)
            except (NotADirectoryError, IsADirectoryError, FileExistsError):
                # S3 lets "a" and "a/b" coexist; a file system cannot.
                raise Conflict(
                    f"key {key!r} collides with another object's path in {self._objects}", field="key"
                ) from None
        return info

    @contextmanager
    def _staged(self, payload: Payload) -> Iterator[Path]:
        """A temp file holding the payload, on disk for good, ready to be renamed into place."""
        # A stream was spooled into spool_dir by payload_of already; bytes still need a file.
        staged = (
            nullcontext(payload.path) if payload.path is not None else self._temp_file(payload.data or b"")
        )
        with staged as path:
            _fsync(path)
            yield path

    @contextmanager
    def _staged_meta(self, info: ObjectInfo) -> Iterator[Path]:
        # Not fsynced: if a power cut loses it, stat falls back to what the bytes themselves tell.
        record = {"sha256": info.sha256, "size": info.size, "content_type": info.content_type}
        with self._temp_file(json.dumps(record).encode()) as path:
            yield path

    @contextmanager
    def _temp_file(self, data: bytes) -> Iterator[Path]:
        fd, name = tempfile.mkstemp(prefix="put-", dir=self.spool_dir)
        path = Path(name)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            yield path
        finally:
            path.unlink(missing_ok=True)

    def open(self, key: str) -> BinaryIO:
        try:
            return (self._objects / validate_key(key)).open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise not_found(self.bucket, key) from None

    def stat(self, key: str) -> ObjectInfo:
        validate_key(key)
        with self._lock:
            return self._stat_locked(key)

    def _stat_locked(self, key: str) -> ObjectInfo:
        path = self._objects / key
        if not path.is_file():
            raise not_found(self.bucket, key)
        size = path.stat().st_size
        try:
            record = json.loads((self._meta / key).read_text())
        except (OSError, ValueError):
            record = {}
        if record.get("size") != size:
            # Lost to a crash between the two renames, or stale: report what the bytes themselves tell.
            record = {"content_type": DEFAULT_CONTENT_TYPE}
        return ObjectInfo(self.bucket, key, size, record.get("sha256", ""), record["content_type"])

    def delete(self, key: str) -> None:
        validate_key(key)
        with self._lock:
            for tree in (self._objects, self._meta):
                (tree / key).unlink(missing_ok=True)
                _remove_empty_parents(tree / key, stop=tree)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        validate_prefix(prefix)
        # Walk only the deepest directory the prefix names in full; the rest of the prefix filters names.
        start = self._objects.joinpath(*prefix.split("/")[:-1])
        found = []
        for directory, _dirs, files in os.walk(start):
            for name in files:
                path = Path(directory, name)
                key = path.relative_to(self._objects).as_posix()
                if key.startswith(prefix) and (size := _size_if_present(path)) is not None:
                    found.append(ObjectInfo(self.bucket, key, size))
        return iter(sorted(found, key=lambda info: info.key))


def _size_if_present(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:  # deleted while we walked
        return None


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_empty_parents(path: Path, *, stop: Path) -> None:
    """Drop directories a delete left empty, so that a later key may use their name for a file."""
    for parent in path.parents:
        if parent == stop:
            return
        try:
            parent.rmdir()
        except OSError:  # not empty (or already gone): everything above is in use too
            return
