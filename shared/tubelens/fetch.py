"""Fetch thumbnails and media from an allowlist of hosts, with a size cap enforced while the bytes arrive: the
preprocessor's inputs and the image URLs callers hand the predictor.

The URLs come from events and requests, so from the outside world: every URL and every redirect hop is checked
against the allowlist before a connection is opened (no SSRF into the cluster), bodies are streamed into a sink and
cut off past the cap, and every failure becomes a typed error that tells the bus worker whether a retry can help:
  - NotFound (404, 410): the thumbnail of a deleted or private video does not come back; dead-lettered at once,
    and a DLQ replay covers the rare video that reappears.
  - Unavailable (429, 408, 5xx, connection errors, timeouts, a truncated transfer): retried with backoff.
  - InvalidInput / TooLarge (a refused URL or redirect, other 4xx, a body over the cap): never retried.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO
from urllib.parse import urljoin

import urllib3
from urllib3.util import parse_url

from tubelens.errors import InvalidInput, NotFound, TooLarge, Unavailable

log = logging.getLogger(__name__)

CHUNK_BYTES = 64 * 1024
DEFAULT_USER_AGENT = "tubelens"
REDIRECTS = frozenset({301, 302, 303, 307, 308})
GONE = frozenset({404, 410})
TRANSIENT = frozenset({408, 425, 429})


@dataclass(frozen=True)
class Fetched:
    """What was fetched. No Content-Type: what the bytes are is decided by their magic bytes, never by the server."""

    url: str  # after redirects
    size: int


# YouTube's thumbnail hosts: what the preprocessor fetches from by default, and what `tubelens import` accepts.
YOUTUBE_IMAGE_HOSTS = ("i.ytimg.com", "i1.ytimg.com", "i2.ytimg.com", "i3.ytimg.com", "i4.ytimg.com", "i9.ytimg.com")


class Fetcher:
    """GETs from allowlisted hosts only. Safe to share between threads (urllib3's pool is)."""

    def __init__(
        self,
        allowed_hosts: Iterable[str],
        *,
        connect_timeout_s: float,
        read_timeout_s: float,
        max_redirects: int = 3,
        user_agent: str = DEFAULT_USER_AGENT,
    ) -> None:
        self.allowed_hosts = frozenset(host.lower() for host in allowed_hosts)
        self.max_redirects = max_redirects
        self.user_agent = user_agent
        # Redirects and retries are ours: urllib3 would follow a redirect to any host, and the bus worker
        # already retries a failed message with backoff.
        self._pool = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=connect_timeout_s, read=read_timeout_s),
            retries=False,
        )

    def check_url(self, url: str) -> str:
        """The URL if it may be fetched; InvalidInput naming the reason otherwise. Never connects."""
        if any(ch.isspace() or ord(ch) < 0x20 or ch == "\\" for ch in url):
            raise InvalidInput(f"refused URL {url!r}: whitespace, control characters or backslashes", field="url")
        try:
            parts = parse_url(url)
        except urllib3.exceptions.LocationParseError:
            raise InvalidInput(f"refused URL {url!r}: not a URL", field="url") from None
        if parts.scheme not in ("http", "https"):
            raise InvalidInput(f"refused URL {url!r}: only http and https are fetched", field="url")
        if parts.auth is not None:
            raise InvalidInput(f"refused URL {url!r}: credentials in URLs are not allowed", field="url")
        host = (parts.host or "").lower().rstrip(".")
        if host not in self.allowed_hosts:
            raise InvalidInput(f"refused URL {url!r}: host {host!r} is not on the allowlist", field="url")
        return url

    def fetch(self, url: str, sink: BinaryIO, *, max_bytes: int, deadline_s: float) -> Fetched:
        """Write the body of `url` into `sink`, following allowlisted redirects, within `max_bytes` and `deadline_s`."""
        deadline = time.monotonic() + deadline_s
        self.check_url(url)
        for _hop in range(self.max_redirects + 1):
            with self._response(url) as response:
                if response.status in REDIRECTS:
                    url = self._redirect_target(url, response)
                    continue
                _raise_for_status(url, response.status)
                size = _stream_capped(url, response, sink, max_bytes, deadline)
                return Fetched(url=url, size=size)
        raise InvalidInput(f"more than {self.max_redirects} redirects; the next one was to {url}", field="url")

    def fetch_bytes(self, url: str, *, max_bytes: int, deadline_s: float) -> tuple[bytes, Fetched]:
        sink = io.BytesIO()
        fetched = self.fetch(url, sink, max_bytes=max_bytes, deadline_s=deadline_s)
        return sink.getvalue(), fetched

    @contextmanager
    def _response(self, url: str) -> Iterator[urllib3.BaseHTTPResponse]:
        """The response to a GET of `url`, body unread; transport failures become Unavailable."""
        with _transport_errors(url):
            response = self._pool.request(
                "GET",
                url,
                # Compressed bodies are not decoded: a gzip bomb would pass the cap only after decompression.
                headers={"User-Agent": self.user_agent, "Accept-Encoding": "identity"},
                preload_content=False,
                redirect=False,
            )
        try:
            yield response
        finally:
            # Closing instead of draining: an unread body past the cap is exactly what must not be read.
            response.close()

    def _redirect_target(self, url: str, response: urllib3.BaseHTTPResponse) -> str:
        location = response.headers.get("Location")
        if not location:
            raise InvalidInput(f"{url}: redirect {response.status} without a Location", field="url")
        target = urljoin(url, location)
        try:
            return self.check_url(target)
        except InvalidInput as exc:
            raise InvalidInput(f"{url}: redirected to a {exc.message}", field="url") from None


def _raise_for_status(url: str, status: int) -> None:
    if 200 <= status < 300:
        return
    if status in GONE:
        raise NotFound(f"{url}: HTTP {status}, nothing to fetch", field="url")
    if status in TRANSIENT or status >= 500:
        raise Unavailable(f"{url}: HTTP {status}, try again later")
    raise InvalidInput(f"{url}: HTTP {status}, refused", field="url")


def _stream_capped(
    url: str, response: urllib3.BaseHTTPResponse, sink: BinaryIO, max_bytes: int, deadline: float
) -> int:
    declared = response.headers.get("Content-Length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise TooLarge(f"{url}: Content-Length {declared} is over the {max_bytes}-byte cap", field="url")
    size = 0
    with _transport_errors(url):
        # read1, not read: it returns what has arrived instead of waiting for a whole chunk, so a body trickling
        # in is measured against the deadline as it comes.
        while chunk := response.read1(CHUNK_BYTES, decode_content=False):
            size += len(chunk)
            if size > max_bytes:
                raise TooLarge(f"{url}: body is over the {max_bytes}-byte cap", field="url")
            if time.monotonic() > deadline:
                # A server that trickles bytes just inside the read timeout would otherwise hold us forever.
                raise Unavailable(f"{url}: still downloading at the deadline ({size} bytes so far)")
            sink.write(chunk)
    return size


@contextmanager
def _transport_errors(url: str) -> Iterator[None]:
    """Transport failures as one Unavailable that does not say which: a refused connection, a timeout and a reset
    tell a caller which ports are open behind an allowlisted host. The log keeps the detail for operators."""
    try:
        yield
    except urllib3.exceptions.HTTPError as exc:
        log.info("fetch failed in transport", extra={"url": url, "error": f"{type(exc).__name__}: {exc}"})
        raise Unavailable(f"{url}: no answer (the connection failed or timed out); try again later") from exc
