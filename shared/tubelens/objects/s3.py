"""Objects in an S3-compatible server (MinIO in a cluster, moto on loopback) through the minio client.

The sha256 of every object travels as user metadata (x-amz-meta-sha256) so that `stat` can return it: S3's
ETag is not a content hash for multipart uploads.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import BinaryIO

import urllib3
from minio import Minio
from minio.error import InvalidResponseError, S3Error, ServerError

from tubelens.errors import DependencyUnavailable, NotFound, TubelensError
from tubelens.objects.base import (
    Content,
    ObjectInfo,
    ObjectStore,
    Payload,
    not_found,
    validate_bucket,
    validate_key,
    validate_prefix,
)
from tubelens.settings import S3Settings

# A refused connection costs 0 + 0.4 + 0.8 s of backoff before Unavailable; a silent host about 4 x 2 s more.
RETRIES = 3
BACKOFF_S = 0.2
CONNECT_TIMEOUT_S = 2.0
# Long enough for the server to assemble a large multipart object after the last part.
READ_TIMEOUT_S = 120.0
# Threads of the calling service plus minio's parallel part uploads share the pool.
POOL_SIZE = 16
# put_contents uploads this many at once: a thumbnail's variants, a video's frames. Half the connection pool, so the
# service's own threads still find connections.
CONCURRENT_PUTS = 8
SHA256_HEADER = "x-amz-meta-sha256"


def http_client(ca_file: str | None = None) -> urllib3.PoolManager:
    """`ca_file`, when given, is the only CA trusted for the server's certificate (a private CA in a cluster)."""
    tls = {"cert_reqs": "CERT_REQUIRED", "ca_certs": ca_file} if ca_file else {}
    return urllib3.PoolManager(
        **tls,
        maxsize=POOL_SIZE,
        timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT_S, read=READ_TIMEOUT_S),
        retries=urllib3.Retry(total=RETRIES, backoff_factor=BACKOFF_S, status_forcelist=(500, 502, 503, 504)),
    )


class S3ObjectStore(ObjectStore):
    def __init__(self, settings: S3Settings) -> None:
        self.bucket = validate_bucket(settings.bucket)
        self._part_size = settings.part_size_mb * 1024 * 1024
        self._client = Minio(
            settings.endpoint,
            access_key=settings.access_key.get_secret_value(),
            secret_key=settings.secret_key.get_secret_value(),
            secure=settings.secure,
            region=settings.region,  # known up front, so no bucket-location round trip per bucket
            http_client=http_client(str(settings.ca_file) if settings.ca_file else None),
        )
        self._where = f"{'https' if settings.secure else 'http'}://{settings.endpoint}"
        self._uploads: ThreadPoolExecutor | None = None  # started by the first put_contents
        self._uploads_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"S3ObjectStore({self._where}/{self.bucket})"

    def ensure_bucket(self) -> None:
        with self._errors():
            if self._client.bucket_exists(self.bucket):
                return
            try:
                self._client.make_bucket(self.bucket)
            except S3Error as exc:
                # Another process created it between our check and our create.
                if exc.code != "BucketAlreadyOwnedByYou":
                    raise

    def _store(self, key: str, payload: Payload, content_type: str, *, only_if_absent: bool) -> ObjectInfo:
        if only_if_absent:
            try:
                return self.stat(key)
            except NotFound:
                pass  # two writers may both get here; they upload the same bytes, so either result is right
        with self._errors(key), payload.open() as body:
            # Bodies over part_size go up as a multipart upload. One part at a time: minio's parallel
            # uploader queues parts without bound, which would read a large object into memory whole.
            self._client.put_object(
                self.bucket,
                key,
                body,
                payload.size,
                content_type=content_type,
                metadata={SHA256_HEADER: payload.sha256},
                part_size=self._part_size,
                num_parallel_uploads=1,
            )
        return ObjectInfo(self.bucket, key, payload.size, payload.sha256, content_type, created=True)

    def put_contents(self, contents: Sequence[Content]) -> list[ObjectInfo]:
        """Concurrently: each put is a round trip or two (a HEAD to find it stored, else a PUT), and waiting on them
        one after the other is what a thumbnail's three objects would spend most of their time on."""
        if len(contents) < 2:
            return super().put_contents(contents)
        futures = [self._upload_pool().submit(self._put_one, content) for content in contents]
        wait(futures)
        return [future.result() for future in futures]

    def _upload_pool(self) -> ThreadPoolExecutor:
        with self._uploads_lock:
            if self._uploads is None:
                self._uploads = ThreadPoolExecutor(CONCURRENT_PUTS, thread_name_prefix="s3-put")
            return self._uploads

    def open(self, key: str) -> BinaryIO:
        validate_key(key)
        with self._errors(key):
            response = self._client.get_object(self.bucket, key)
        return io.BufferedReader(_ResponseStream(response, self._where))

    def stat(self, key: str) -> ObjectInfo:
        validate_key(key)
        with self._errors(key):
            obj = self._client.stat_object(self.bucket, key)
        return ObjectInfo(
            self.bucket,
            key,
            obj.size or 0,
            (obj.metadata or {}).get(SHA256_HEADER, ""),
            obj.content_type or "",
        )

    def delete(self, key: str) -> None:
        validate_key(key)
        with self._errors(key):
            self._client.remove_object(self.bucket, key)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        validate_prefix(prefix)  # now, not at the first next()
        return self._list(prefix)

    def _list(self, prefix: str) -> Iterator[ObjectInfo]:
        # S3 lists keys in UTF-8 byte order, which is the order of str comparison too.
        with self._errors():
            for obj in self._client.list_objects(self.bucket, prefix=prefix or None, recursive=True):
                yield ObjectInfo(self.bucket, obj.object_name or "", obj.size or 0)

    @contextmanager
    def _errors(self, key: str = "") -> Iterator[None]:
        """minio's and urllib3's exceptions as tubelens errors that name the bucket, key and endpoint."""
        try:
            yield
        except S3Error as exc:
            if exc.code == "NoSuchKey":
                raise not_found(self.bucket, key) from None
            if exc.code == "NoSuchBucket":
                so = f", so no object {key!r}" if key else ""
                raise NotFound(f"no bucket {self.bucket!r} at {self._where}{so}", field="bucket") from None
            raise TubelensError(f"{exc.code} from {self._where}/{self.bucket}/{key}: {exc.message}") from exc
        except (ServerError, InvalidResponseError, urllib3.exceptions.HTTPError) as exc:
            raise unavailable(self._where, exc) from exc


def unavailable(where: str, exc: Exception) -> DependencyUnavailable:
    """A transport failure: the store is down or unreachable, nothing is wrong with the request (the worker pauses)."""
    if isinstance(exc, urllib3.exceptions.MaxRetryError):
        # The last attempt's error says what went wrong; the wrapper only repeats the URL.
        return DependencyUnavailable(
            f"object store at {where} unreachable after {RETRIES} retries: {exc.reason}", dependency="object store"
        )
    return DependencyUnavailable(f"object store at {where} failed: {exc}", dependency="object store")


class _ResponseStream(io.RawIOBase):
    """An object's body as it arrives, releasing the pooled connection on close."""

    def __init__(self, response: urllib3.BaseHTTPResponse, where: str) -> None:
        self._response = response
        self._where = where

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        with self._errors():
            return self._response.readinto(buffer)

    def readall(self) -> bytes:
        # RawIOBase would gather the body 8 KiB at a time, at a third of the speed of one read.
        with self._errors():
            return self._response.read()

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except urllib3.exceptions.HTTPError as exc:
            raise unavailable(self._where, exc) from exc

    def close(self) -> None:
        if not self.closed:
            self._response.close()
            self._response.release_conn()
        super().close()
