"""The object-store contract: the S3 store and the local-directory store behave the same way.

Every test in the first part runs against both backends; the few at the end pin down what only one of them can
show (an unreachable server, a file system's path collisions).
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import random
import re
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from minio import Minio

from tubelens.devtools.servers import LOOPBACK, free_port
from tubelens.errors import Conflict, InvalidInput, NotFound, Unavailable
from tubelens.objects import Content, LocalObjectStore, ObjectInfo, ObjectStore, open_store
from tubelens.settings import LocalObjectsSettings, ObjectsKind, S3Settings, TubelensSettings
from tubelens.v1 import common_pb2

MB = 1024 * 1024


@dataclass
class Backend:
    settings: TubelensSettings
    store: ObjectStore
    # Changes whenever the backend physically writes `key`; unchanged across a call means it wrote nothing.
    write_mark: Callable[[str], object]

    @property
    def bucket(self) -> str:
        return self.store.bucket


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path, unique: str, monkeypatch) -> Backend:
    bucket = f"contract-{unique}"
    if request.param == "local":
        return _local_backend(tmp_path / "objects", bucket)
    return _s3_backend(request, bucket, monkeypatch)


def _local_backend(root: Path, bucket: str) -> Backend:
    local = LocalObjectsSettings(root=root, bucket=bucket)
    settings = TubelensSettings(objects=ObjectsKind.LOCAL, local=local)

    def write_mark(key: str) -> object:
        # A rename into place gives the object a new inode; an untouched object keeps inode and mtime.
        st = (root / bucket / key).stat()
        return st.st_ino, st.st_mtime_ns

    return Backend(settings, open_store(settings), write_mark)


def _s3_backend(request: pytest.FixtureRequest, bucket: str, monkeypatch) -> Backend:
    server = request.getfixturevalue("s3_server")
    credentials = request.getfixturevalue("s3_credentials")
    uploads: Counter[str] = Counter()
    real_put_object = Minio.put_object

    def counting_put_object(client, bucket_name, object_name, *args, **kwargs):
        uploads[object_name] += 1
        return real_put_object(client, bucket_name, object_name, *args, **kwargs)

    monkeypatch.setattr(Minio, "put_object", counting_put_object)
    # The smallest part size S3 allows, so that the 20 MB object below goes up in several parts.
    s3 = S3Settings(endpoint=server.address, bucket=bucket, part_size_mb=5, **credentials)
    settings = TubelensSettings(objects=ObjectsKind.S3, s3=s3)
    return Backend(settings, open_store(settings), lambda key: uploads[key])


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_small_bytes_round_trip_under_their_content_address_with_what_put_recorded(backend: Backend) -> None:
    data = b"\xff\xd8 a thumbnail's bytes"
    digest = sha256(data)

    info = backend.store.put_content(data, prefix="thumbnails/raw", content_type="image/jpeg", suffix=".jpg")

    key = f"thumbnails/raw/{digest[:2]}/{digest}.jpg"
    assert info == ObjectInfo(backend.bucket, key, len(data), digest, "image/jpeg", created=True)
    assert backend.store.get(key) == data
    assert backend.store.stat(key) == replace(info, created=False)
    assert backend.store.exists(key)


def test_an_empty_object_round_trips(backend: Backend) -> None:
    info = backend.store.put("markers/empty", b"", content_type="text/plain")

    assert backend.store.get(info.key) == b""
    assert backend.store.stat(info.key).size == 0
    assert backend.store.stat(info.key).sha256 == sha256(b"")


def test_a_20_mb_stream_is_stored_and_read_back_in_chunks_unchanged(backend: Backend, tmp_path: Path) -> None:
    source = tmp_path / "frames.bin"
    source.write_bytes(os.urandom(20 * MB))
    expected = sha256(source.read_bytes())

    with source.open("rb") as stream:
        info = backend.store.put_content(stream, prefix="frames", content_type="application/octet-stream")

    assert (info.size, info.sha256, info.created) == (20 * MB, expected, True)
    digest, chunks = hashlib.sha256(), 0
    with backend.store.open(info.key) as body:
        while chunk := body.read(MB):
            digest.update(chunk)
            chunks += 1
    assert digest.hexdigest() == expected
    assert chunks >= 20
    assert backend.store.stat(info.key).sha256 == expected


def test_putting_the_same_content_again_writes_nothing_and_says_it_was_not_created(backend: Backend) -> None:
    data = os.urandom(4096)
    first = backend.store.put_content(data, prefix="thumbnails/raw", content_type="image/png")
    mark = backend.write_mark(first.key)

    again = backend.store.put_content(io.BytesIO(data), prefix="thumbnails/raw", content_type="image/png")

    assert first.created is True
    assert again.created is False
    assert again.key == first.key
    assert again.sha256 == first.sha256
    assert backend.write_mark(first.key) == mark


def test_a_named_put_replaces_the_object_and_what_was_recorded_about_it(backend: Backend) -> None:
    key, second = "models/popularity/v1/model.mar", b"second, longer archive"
    backend.store.put(key, b"first archive", content_type="application/zip")
    mark = backend.write_mark(key)

    info = backend.store.put(key, io.BytesIO(second), content_type="application/x-mar")

    assert info.created is True
    assert backend.write_mark(key) != mark
    assert backend.store.get(key) == second
    assert backend.store.stat(key) == ObjectInfo(
        backend.bucket, key, len(second), sha256(second), "application/x-mar"
    )


def test_a_named_put_of_another_length_than_announced_is_rejected_and_stores_nothing(backend: Backend):
    with pytest.raises(InvalidInput, match="expected 4 bytes, got 3"):
        backend.store.put("datasets/snapshot.parquet", io.BytesIO(b"abc"), content_type="x", length=4)

    assert not backend.store.exists("datasets/snapshot.parquet")


def test_download_writes_the_object_to_a_file(backend: Backend, tmp_path: Path) -> None:
    data = os.urandom(3 * MB)
    info = backend.store.put_content(data, prefix="datasets", content_type="application/octet-stream")

    backend.store.download(info.key, tmp_path / "copy.bin")

    assert (tmp_path / "copy.bin").read_bytes() == data


MISSING_READS: dict[str, Callable[[ObjectStore, str, Path], object]] = {
    "get": lambda store, key, _dir: store.get(key),
    "stat": lambda store, key, _dir: store.stat(key),
    "open": lambda store, key, _dir: store.open(key),
    "download": lambda store, key, directory: store.download(key, directory / "out.bin"),
}


@pytest.mark.parametrize("read", MISSING_READS.values(), ids=MISSING_READS.keys())
def test_reading_a_missing_key_raises_not_found_naming_key_and_bucket(
    backend: Backend, read: Callable[[ObjectStore, str, Path], object], tmp_path: Path
) -> None:
    key = "thumbnails/raw/00/no-such-object.jpg"
    downloads = tmp_path / "downloads"
    downloads.mkdir()

    with pytest.raises(NotFound) as caught:
        read(backend.store, key, downloads)

    assert key in caught.value.message
    assert backend.bucket in caught.value.message
    assert not backend.store.exists(key)
    assert list(downloads.iterdir()) == []  # download left no partial file


INVALID_KEYS = {
    "empty": "",
    "absolute": "/etc/passwd",
    "trailing slash": "frames/",
    "empty segment": "frames//1",
    "parent segment": "../outside",
    "inner parent segment": "frames/../../outside",
    "dot segment": "frames/./1",
    "backslash": "frames\\1",
    "newline": "frames/1\n",
    "nul": "frames/\x001",
    "over 1024 bytes": "k" * 1025,
}
KEYED_OPERATIONS: dict[str, Callable[[ObjectStore, str], object]] = {
    "put": lambda store, key: store.put(key, b"x", content_type="text/plain"),
    "get": lambda store, key: store.get(key),
    "open": lambda store, key: store.open(key),
    "stat": lambda store, key: store.stat(key),
    "exists": lambda store, key: store.exists(key),
    "delete": lambda store, key: store.delete(key),
}


@pytest.mark.parametrize("key", INVALID_KEYS.values(), ids=INVALID_KEYS.keys())
def test_invalid_keys_are_rejected_by_every_operation(backend: Backend, key: str) -> None:
    for name, operation in KEYED_OPERATIONS.items():
        with pytest.raises(InvalidInput, match="invalid object key"):
            operation(backend.store, key)
            pytest.fail(f"{name} accepted {key!r}")

    assert list(backend.store.list()) == []


INVALID_CONTENT_ADDRESSES = [
    ("/thumbnails", ""),
    ("thumbnails/", ""),
    ("../thumbnails", ""),
    ("thumbnails\\raw", ""),
    ("frames", "/1"),
]


@pytest.mark.parametrize("prefix, suffix", INVALID_CONTENT_ADDRESSES)
def test_content_puts_reject_invalid_prefixes_and_suffixes(backend: Backend, prefix: str, suffix: str):
    with pytest.raises(InvalidInput):
        backend.store.put_content(b"x", prefix=prefix, content_type="text/plain", suffix=suffix)

    assert list(backend.store.list()) == []


@pytest.mark.parametrize("prefix", ["/frames", "../", "frames//", "frames\\"])
def test_listing_rejects_an_invalid_prefix_before_iterating(backend: Backend, prefix: str) -> None:
    with pytest.raises(InvalidInput, match="invalid key prefix"):
        backend.store.list(prefix)


def test_list_returns_the_objects_under_a_prefix_sorted_by_key_with_their_sizes(backend: Backend) -> None:
    # '-' sorts before '/', so a directory-by-directory walk would get "frames/a-b" wrong.
    keys = ["frames/b/2", "frames/a/1", "frames/a-b", "frames/a/0", "framesx/1", "thumbnails/1"]
    for key in random.sample(keys, len(keys)):
        backend.store.put(key, key.encode(), content_type="text/plain")

    def listed(prefix: str) -> list[tuple[str, int]]:
        return [(info.key, info.size) for info in backend.store.list(prefix)]

    def expected(prefix: str) -> list[tuple[str, int]]:
        return [(key, len(key)) for key in sorted(keys) if key.startswith(prefix)]

    assert listed("frames/") == expected("frames/")
    assert listed("frames/a") == [("frames/a-b", 10), ("frames/a/0", 10), ("frames/a/1", 10)]
    assert listed("frames") == expected("frames")
    assert listed("") == expected("")
    assert listed("models/") == []


def test_delete_removes_the_object_and_deleting_it_again_is_harmless(backend: Backend) -> None:
    info = backend.store.put_content(b"gone soon", prefix="frames", content_type="text/plain")

    backend.store.delete(info.key)
    backend.store.delete(info.key)

    assert backend.store.exists(info.key) is False
    with pytest.raises(NotFound):
        backend.store.get(info.key)
    assert list(backend.store.list()) == []


def test_a_key_freed_by_delete_can_become_a_prefix_of_other_keys_and_back(backend: Backend) -> None:
    backend.store.put("runs/1/metrics.json", b"{}", content_type="application/json")
    backend.store.delete("runs/1/metrics.json")
    backend.store.put("runs/1", b"a file now", content_type="text/plain")
    backend.store.delete("runs/1")
    backend.store.put("runs/1/metrics.json", b"{}", content_type="application/json")

    assert [info.key for info in backend.store.list()] == ["runs/1/metrics.json"]


def test_a_fresh_bucket_is_created_on_open_and_opening_it_again_keeps_its_objects(backend: Backend) -> None:
    # The fixture opened a bucket name no test used before, without creating anything by hand.
    info = backend.store.put_content(b"first object", prefix="frames", content_type="text/plain")

    reopened = open_store(backend.settings)

    assert reopened.get(info.key) == b"first object"


class FailingStream(io.RawIOBase):
    """Yields a few megabytes, then fails like a dropped upstream connection."""

    def __init__(self, good_bytes: int) -> None:
        self.left = good_bytes

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self.left <= 0:
            raise ConnectionResetError("upstream went away")
        n = min(len(buffer), self.left)
        buffer[:n] = b"\x01" * n
        self.left -= n
        return n


def test_a_stream_that_fails_midway_leaves_no_object_behind(backend: Backend) -> None:
    with pytest.raises(ConnectionResetError):
        backend.store.put_content(FailingStream(3 * MB), prefix="frames", content_type="application/x-frames")
    with pytest.raises(ConnectionResetError):
        backend.store.put("datasets/snapshot.parquet", FailingStream(3 * MB), content_type="application/x-pq")

    assert list(backend.store.list()) == []


def test_one_store_serves_many_threads_at_once(backend: Backend) -> None:
    shared = os.urandom(64 * 1024)

    def work(worker: int) -> tuple[str, list[str]]:
        same = backend.store.put_content(shared, prefix="shared", content_type="application/octet-stream")
        own = []
        for i in range(5):
            data = f"worker {worker} object {i}".encode() * 1000
            info = backend.store.put_content(data, prefix=f"workers/{worker}", content_type="text/plain")
            assert backend.store.get(info.key) == data
            own.append(info.key)
        backend.store.put(f"named/{worker}", str(worker).encode(), content_type="text/plain")
        return same.key, own

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(work, range(8)))

    assert len({shared_key for shared_key, _own in results}) == 1
    assert backend.store.get(results[0][0]) == shared
    assert [backend.store.get(f"named/{w}") for w in range(8)] == [str(w).encode() for w in range(8)]
    assert len(list(backend.store.list())) == 1 + 8 * 5 + 8


def test_put_contents_stores_each_as_put_content_would_in_order(backend: Backend) -> None:
    contents = [Content(f"variant {n}".encode() * 100, f"thumbnails/v{n}", "image/jpeg", ".jpg") for n in range(5)]
    already = backend.store.put_content(
        contents[2].data, prefix="thumbnails/v2", content_type="image/jpeg", suffix=".jpg"
    )

    infos = backend.store.put_contents(contents)

    for content, info in zip(contents, infos, strict=True):
        digest = sha256(content.data)
        assert info.key == f"{content.prefix}/{digest[:2]}/{digest}.jpg"
        assert backend.store.get(info.key) == content.data
    assert [info.created for info in infos] == [True, True, False, True, True]
    assert infos[2] == replace(already, created=False)
    assert backend.store.put_contents([]) == []


def test_put_contents_raises_a_failed_put_and_keeps_the_others(backend: Backend) -> None:
    good = [Content(b"first", "frames", "image/jpeg"), Content(b"third", "frames", "image/jpeg")]

    with pytest.raises(InvalidInput, match="invalid object key 'frames//"):
        backend.store.put_contents([good[0], Content(b"second", "frames/", "image/jpeg"), good[1]])

    assert sorted(backend.store.get(info.key) for info in backend.store.list("frames")) == [b"first", b"third"]


def test_object_info_converts_to_the_protobuf_object_ref(backend: Backend) -> None:
    info = backend.store.put_content(b"ref me", prefix="thumbs", content_type="image/webp", suffix=".webp")

    assert info.to_ref() == common_pb2.ObjectRef(
        bucket=backend.bucket,
        key=info.key,
        sha256=sha256(b"ref me"),
        size_bytes=len(b"ref me"),
        content_type="image/webp",
    )


def test_s3_store_behind_a_closed_port_gives_up_within_seconds_with_unavailable_naming_the_endpoint(
    s3_credentials: dict[str, str], unique: str
) -> None:
    endpoint = f"{LOOPBACK}:{free_port()}"  # nothing listens there
    s3 = S3Settings(endpoint=endpoint, bucket=f"contract-{unique}", **s3_credentials)
    started = time.monotonic()

    with pytest.raises(Unavailable, match=re.escape(endpoint)) as caught:
        open_store(TubelensSettings(objects=ObjectsKind.S3, s3=s3))

    assert time.monotonic() - started < 10
    assert "retries" in caught.value.message


def test_local_store_reports_a_key_that_needs_an_existing_object_as_its_directory_as_conflict(
    tmp_path: Path,
) -> None:
    # S3 lets "a" and "a/b" coexist; one file system path cannot be both a file and a directory.
    settings = TubelensSettings(
        objects=ObjectsKind.LOCAL, local=LocalObjectsSettings(root=tmp_path, bucket="contract")
    )
    store = open_store(settings)
    store.put("runs/1", b"a file", content_type="text/plain")

    with pytest.raises(Conflict, match="runs/1/metrics.json"):
        store.put("runs/1/metrics.json", b"{}", content_type="application/json")

    assert [info.key for info in store.list()] == ["runs/1"]


def test_local_store_keeps_what_a_put_recorded_in_the_file_itself(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path, "contract")
    store.ensure_bucket()

    info = store.put_content(b"a thumbnail", prefix="thumbnails", content_type="image/jpeg", suffix=".jpg")

    recorded = json.loads(os.getxattr(tmp_path / "contract" / info.key, "user.tubelens.object"))
    assert recorded == {"sha256": info.sha256, "size": info.size, "content_type": "image/jpeg"}
    assert not (tmp_path / ".meta" / "contract" / info.key).exists(), "no second file per object"
    assert list((tmp_path / ".tmp").iterdir()) == []


def test_local_store_without_extended_attributes_records_in_sidecar_files(tmp_path: Path, monkeypatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOTSUP, "Operation not supported")

    monkeypatch.setattr(os, "setxattr", refuse)
    store = LocalObjectStore(tmp_path, "contract")
    store.ensure_bucket()

    info = store.put_content(b"a thumbnail", prefix="thumbnails", content_type="image/jpeg", suffix=".jpg")
    named = store.put("runs/1/metrics.json", b"{}", content_type="application/json")

    assert store.stat(info.key) == replace(info, created=False)
    assert store.stat(named.key).content_type == "application/json"
    assert json.loads((tmp_path / ".meta" / "contract" / info.key).read_text())["content_type"] == "image/jpeg"
    again = store.put_content(b"a thumbnail", prefix="thumbnails", content_type="image/jpeg", suffix=".jpg")
    assert again.created is False


def test_local_store_writes_again_an_object_a_power_cut_left_short(tmp_path: Path) -> None:
    # Without an fsync per put, a power cut can leave a just-written file empty; its record still says its size.
    store = LocalObjectStore(tmp_path, "contract")
    store.ensure_bucket()
    info = store.put_content(b"a whole thumbnail", prefix="thumbnails", content_type="image/jpeg", suffix=".jpg")
    path = tmp_path / "contract" / info.key
    os.truncate(path, 0)

    assert store.stat(info.key).sha256 == "", "a short object is not reported as the bytes its put recorded"
    again = store.put_content(b"a whole thumbnail", prefix="thumbnails", content_type="image/jpeg", suffix=".jpg")

    assert again == info
    assert store.get(info.key) == b"a whole thumbnail"
