"""The object-store interface every backend implements, and the helpers they share.

Keys are S3-style: `/`-separated segments, no leading or trailing slash. Content-addressed objects live at
`<prefix>/<sha[:2]>/<sha><suffix>`, so a redelivered event stores nothing new, and the two-character shard
keeps directories short on file systems.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import tempfile
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from tubelens.errors import InvalidInput, NotFound
from tubelens.v1 import common_pb2

CHUNK_BYTES = 1024 * 1024
MAX_KEY_BYTES = 1024  # the S3 limit, applied everywhere so that a key valid here is valid on every backend
DEFAULT_CONTENT_TYPE = "application/octet-stream"
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class ObjectInfo:
    """What a store knows about one object.

    `sha256` and `content_type` are empty where the backend cannot tell cheaply (listings). `created` is True
    only on the result of a put that wrote the object; a put_content that found it already stored says False.
    """

    bucket: str
    key: str
    size: int
    sha256: str = ""
    content_type: str = ""
    created: bool = False

    def to_ref(self) -> common_pb2.ObjectRef:
        return common_pb2.ObjectRef(
            bucket=self.bucket,
            key=self.key,
            sha256=self.sha256,
            size_bytes=self.size,
            content_type=self.content_type,
        )


@dataclass(frozen=True)
class Payload:
    """Bytes about to be stored, already hashed: in memory, or spooled to a temp file if given as a stream."""

    sha256: str
    size: int
    data: bytes | None = None
    path: Path | None = None

    def open(self) -> BinaryIO:
        return io.BytesIO(self.data or b"") if self.path is None else self.path.open("rb")


@dataclass(frozen=True)
class Content:
    """The arguments of one `put_content`, for `put_contents`."""

    data: bytes
    prefix: str
    content_type: str
    suffix: str = ""


def key_problem(key: str) -> str | None:
    """Why `key` cannot name an object, or None when it can."""
    if not isinstance(key, str) or not key:
        return "must be a non-empty string"
    if len(key.encode()) > MAX_KEY_BYTES:
        return f"is longer than {MAX_KEY_BYTES} bytes"
    if key.startswith("/") or key.endswith("/"):
        return "must not start or end with '/'"
    if "\\" in key:
        return "must not contain a backslash"
    if _CONTROL.search(key):
        return "must not contain control characters"
    if any(segment in ("", ".", "..") for segment in key.split("/")):
        return "must not contain empty, '.' or '..' segments"
    return None


def validate_key(key: str) -> str:
    problem = key_problem(key)
    if problem:
        raise InvalidInput(f"invalid object key {key!r}: {problem}", field="key")
    return key


def validate_prefix(prefix: str) -> str:
    """A listing prefix is valid when some valid key starts with it; the empty prefix lists everything."""
    problem = key_problem(prefix + "x") if prefix else None
    if problem:
        raise InvalidInput(f"invalid key prefix {prefix!r}: {problem}", field="prefix")
    return prefix


def validate_bucket(bucket: str) -> str:
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise InvalidInput(
            f"invalid bucket name {bucket!r}: 3-63 lowercase letters, digits, '.' or '-', "
            "starting and ending with a letter or digit",
            field="bucket",
        )
    return bucket


def content_key(prefix: str, sha256: str, suffix: str = "") -> str:
    if "/" in suffix:
        raise InvalidInput(f"invalid key suffix {suffix!r}: must not contain '/'", field="suffix")
    return validate_key(f"{prefix}/{sha256[:2]}/{sha256}{suffix}")


def copy_hashing(source: BinaryIO, target: BinaryIO) -> tuple[str, int]:
    """Copy in fixed-size chunks, so memory stays flat at any size; returns (sha256 hex, bytes copied)."""
    digest = hashlib.sha256()
    size = 0
    while chunk := source.read(CHUNK_BYTES):
        digest.update(chunk)
        target.write(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


@contextmanager
def payload_of(data: bytes | BinaryIO, spool_dir: Path | None = None) -> Iterator[Payload]:
    """Hash `data`; a stream is spooled to a temp file in `spool_dir` on the way, removed afterwards."""
    if isinstance(data, bytes | bytearray | memoryview):
        data = bytes(data)
        yield Payload(sha256=hashlib.sha256(data).hexdigest(), size=len(data), data=data)
        return
    fd, name = tempfile.mkstemp(prefix="spool-", dir=spool_dir)
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as spool:
            sha256, size = copy_hashing(data, spool)
        yield Payload(sha256=sha256, size=size, path=path)
    finally:
        # A backend may have renamed the spool into place already.
        path.unlink(missing_ok=True)


def not_found(bucket: str, key: str) -> NotFound:
    return NotFound(f"no object {key!r} in bucket {bucket!r}", field="key")


class ObjectStore(ABC):
    """A bucket of objects. Implementations are safe to share between threads."""

    bucket: str
    # Where streams are spooled before upload; None means the system temp directory.
    spool_dir: Path | None = None

    @abstractmethod
    def ensure_bucket(self) -> None:
        """Create the bucket unless it exists; safe to call from several processes at once."""

    @abstractmethod
    def _store(self, key: str, payload: Payload, content_type: str, *, only_if_absent: bool) -> ObjectInfo:
        """Write `payload` at a validated `key`; with `only_if_absent`, leave an existing object alone."""

    @abstractmethod
    def open(self, key: str) -> BinaryIO:
        """A readable stream of the object, to use as a context manager; NotFound when it does not exist."""

    @abstractmethod
    def stat(self, key: str) -> ObjectInfo:
        """Size, sha256 and content type as recorded by the put; NotFound when the object does not exist."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; removing a missing object is not an error, so deletes can be retried."""

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects whose key starts with `prefix`, sorted by key, with key and size (stat tells the rest)."""

    def put_content(
        self, data: bytes | BinaryIO, *, prefix: str, content_type: str, suffix: str = ""
    ) -> ObjectInfo:
        """Store under `<prefix>/<sha[:2]>/<sha><suffix>`; storing the same bytes again writes nothing."""
        validate_prefix(prefix)
        with payload_of(data, self.spool_dir) as payload:
            key = content_key(prefix, payload.sha256, suffix)
            return self._store(key, payload, content_type or DEFAULT_CONTENT_TYPE, only_if_absent=True)

    def put_contents(self, contents: Sequence[Content]) -> list[ObjectInfo]:
        """`put_content` of each, results in the same order. Here one after the other; a backend that waits on the
        network for each puts them concurrently. Every put is attempted; a failure is raised once all are done, and
        the objects that were stored stay (they are content-addressed, so a retry finds them)."""
        infos: list[ObjectInfo] = []
        failure: BaseException | None = None
        for content in contents:
            try:
                infos.append(self._put_one(content))
            except Exception as error:  # noqa: BLE001 - raised below, once the others had their turn
                failure = failure or error
        if failure is not None:
            raise failure
        return infos

    def _put_one(self, content: Content) -> ObjectInfo:
        return self.put_content(
            content.data, prefix=content.prefix, content_type=content.content_type, suffix=content.suffix
        )

    def put(
        self, key: str, data: bytes | BinaryIO, *, content_type: str, length: int | None = None
    ) -> ObjectInfo:
        """Store under a chosen key, replacing what was there. `length`, when given, must match the data."""
        validate_key(key)
        with payload_of(data, self.spool_dir) as payload:
            if length is not None and payload.size != length:
                raise InvalidInput(f"{key!r}: expected {length} bytes, got {payload.size}", field="length")
            return self._store(key, payload, content_type or DEFAULT_CONTENT_TYPE, only_if_absent=False)

    def get(self, key: str) -> bytes:
        with self.open(key) as stream:
            return stream.read()

    def download(self, key: str, path: str | os.PathLike[str]) -> None:
        """Write the object to `path`, which never holds a partial copy: it appears complete or not at all."""
        target = Path(path)
        partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")
        try:
            with self.open(key) as source, partial.open("xb") as out:
                shutil.copyfileobj(source, out, CHUNK_BYTES)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        try:
            self.stat(key)
        except NotFound:
            return False
        return True
