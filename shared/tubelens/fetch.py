"""Fetch thumbnails and media from an allowlist of hosts, with a size cap enforced while the bytes arrive: the
preprocessor's inputs and the image URLs callers hand the predictor.

The URLs come from events and requests, so from the outside world: every URL and every redirect hop is checked
before a connection is opened (no SSRF into the cluster):
  - only http and https, no credentials (`user@host`), no whitespace, control characters or backslashes;
  - the host must be on the allowlist; an IP address only in its canonical spelling (a dotted quad or a bracketed
    IPv6 address), since `2130706433`, `0x7f.1`, `0177.0.0.1` and `127.1` all reach 127.0.0.1 through the resolver;
  - a host name is resolved once, here, and every address it resolves to must be public (not loopback, private,
    link-local such as 169.254.169.254, shared, reserved or multicast); the connection goes to the address that was
    checked, with the name as Host and TLS server name, so a DNS answer that changes in between (rebinding) cannot
    send it elsewhere. An address the operator listed itself (the local stack's `127.0.0.1`) is trusted as listed;
    link-local addresses never are.
Bodies are streamed into a sink and cut off past the cap, and every failure becomes a typed error that tells the bus
worker whether a retry can help:
  - NotFound (404, 410): the thumbnail of a deleted or private video does not come back; dead-lettered at once,
    and a DLQ replay covers the rare video that reappears.
  - Unavailable (429, 408, 5xx, connection errors, timeouts, a truncated transfer): retried with backoff.
  - InvalidInput / TooLarge (a refused URL or redirect, other 4xx, a body over the cap): never retried.
"""

from __future__ import annotations

import io
import ipaddress
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
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
# What a resolver could read as an IPv4 address in a spelling other than the dotted quad: digits, hex, dots only.
NUMERIC_HOST = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]*))*$")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# host, port -> the addresses it resolves to (socket.getaddrinfo's, by default)
Resolver = Callable[[str, int], list[str]]


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True)
class Target:
    """A checked URL and the one address to connect to for it."""

    url: str
    scheme: str
    host: str  # as written (lower case): the Host header and the TLS server name
    port: int
    address: str


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
        resolve: Resolver = system_resolver,
        trusted_addresses: Iterable[str] = (),
    ) -> None:
        self.allowed_hosts = frozenset(host.lower() for host in allowed_hosts)
        self.max_redirects = max_redirects
        self.user_agent = user_agent
        self.resolve = resolve
        # The addresses the operator listed themselves: trusted even when not public (never when link-local), but only
        # when the URL names them; a name must resolve to public addresses, or to one of `trusted_addresses`.
        self._listed_addresses = frozenset(
            _unmapped(address) for host in self.allowed_hosts if (address := _ip_literal(host)) is not None
        )
        self._trusted_addresses = frozenset(_unmapped(ipaddress.ip_address(a)) for a in trusted_addresses)
        self._timeout = urllib3.Timeout(connect=connect_timeout_s, read=read_timeout_s)
        # One keep-alive pool per checked (scheme, address, port, host): the connection goes to the checked address.
        # Redirects and retries are ours: urllib3 would follow a redirect to any host, and the bus worker already
        # retries a failed message with backoff.
        self._pools: dict[tuple[str, str, int, str], urllib3.HTTPConnectionPool] = {}
        self._pools_lock = threading.Lock()

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
        if _ip_literal(host) is None and NUMERIC_HOST.match(host):
            raise InvalidInput(f"refused URL {url!r}: write an IP address as a dotted quad", field="url")
        if host not in self.allowed_hosts:
            raise InvalidInput(f"refused URL {url!r}: host {host!r} is not on the allowlist", field="url")
        return url

    def target(self, url: str) -> Target:
        """The checked URL and the address to connect to: its host resolved once, every address checked."""
        self.check_url(url)
        parts = parse_url(url)
        host = (parts.host or "").lower().rstrip(".")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        literal = _ip_literal(host)
        if literal is not None:
            addresses = [literal]
        else:
            try:
                addresses = [ipaddress.ip_address(address.split("%")[0]) for address in self.resolve(host, port)]
            except UnicodeError:
                raise InvalidInput(f"refused URL {url!r}: the host name is not a valid name", field="url") from None
            except (OSError, ValueError) as exc:
                log.info("fetch: name not resolved", extra={"host": host, "error": f"{type(exc).__name__}: {exc}"})
                raise Unavailable(f"{url}: the host name does not resolve; try again later") from None
            if not addresses:
                raise Unavailable(f"{url}: the host name does not resolve; try again later")
        trusted = self._listed_addresses if literal is not None else self._trusted_addresses
        for address in addresses:
            if not _may_connect(address, trusted):
                # The address is not shown: it would tell the caller what the cluster's names resolve to.
                raise InvalidInput(
                    f"refused URL {url!r}: host {host!r} is, or resolves to, an address that is not public",
                    field="url",
                )
        return Target(url, str(parts.scheme), host, port, str(_unmapped(addresses[0])))


    def fetch(self, url: str, sink: BinaryIO, *, max_bytes: int, deadline_s: float) -> Fetched:
        """Write the body of `url` into `sink`, following allowlisted redirects, within `max_bytes` and `deadline_s`."""
        deadline = time.monotonic() + deadline_s
        target = self.target(url)
        for _hop in range(self.max_redirects + 1):
            with self._response(target) as response:
                if response.status in REDIRECTS:
                    target = self._redirect_checked(url, self._redirect_target(url, response))
                    url = target.url
                    continue
                _raise_for_status(url, response.status)
                size = _stream_capped(url, response, sink, max_bytes, deadline)
                return Fetched(url=url, size=size)
        raise InvalidInput(f"more than {self.max_redirects} redirects; the next one was to {url}", field="url")

    def fetch_bytes(self, url: str, *, max_bytes: int, deadline_s: float) -> tuple[bytes, Fetched]:
        sink = io.BytesIO()
        fetched = self.fetch(url, sink, max_bytes=max_bytes, deadline_s=deadline_s)
        return sink.getvalue(), fetched

    def close(self) -> None:
        with self._pools_lock:
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.close()

    def _pool_for(self, target: Target) -> urllib3.HTTPConnectionPool:
        key = (target.scheme, target.address, target.port, target.host)
        with self._pools_lock:
            pool = self._pools.get(key)
            if pool is None:
                common = {"port": target.port, "timeout": self._timeout, "retries": False, "maxsize": 4}
                if target.scheme == "https":
                    # Certificate checked against the name, not the address the connection goes to.
                    pool = urllib3.HTTPSConnectionPool(
                        target.address, server_hostname=target.host, assert_hostname=target.host, **common
                    )
                else:
                    pool = urllib3.HTTPConnectionPool(target.address, **common)
                self._pools[key] = pool
            return pool

    @contextmanager
    def _response(self, target: Target) -> Iterator[urllib3.BaseHTTPResponse]:
        """The response to a GET of the target, body unread; transport failures become Unavailable."""
        url = target.url
        parts = parse_url(url)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        default_port = 443 if target.scheme == "https" else 80
        host_header = _host_header(target.host) + ("" if target.port == default_port else f":{target.port}")
        with _transport_errors(url):
            response = self._pool_for(target).urlopen(
                "GET",
                path,
                # Compressed bodies are not decoded: a gzip bomb would pass the cap only after decompression.
                headers={"Host": host_header, "User-Agent": self.user_agent, "Accept-Encoding": "identity"},
                preload_content=False,
                redirect=False,
                assert_same_host=False,
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
        return urljoin(url, location)

    def _redirect_checked(self, url: str, location: str) -> Target:
        try:
            return self.target(location)
        except InvalidInput as exc:
            raise InvalidInput(f"{url}: redirected to a {exc.message}", field="url") from None


def _ip_literal(host: str) -> IPAddress | None:
    """The address of a host written as a canonical IP literal (`127.0.0.1`, `[::1]`), else None."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _may_connect(address: IPAddress, trusted: frozenset[IPAddress]) -> bool:
    address = _unmapped(address)
    if address.is_link_local:  # the cloud metadata service (169.254.169.254) among them: never
        return False
    return address.is_global or address in trusted


def _unmapped(address: IPAddress) -> IPAddress:
    """`::ffff:127.0.0.1` is 127.0.0.1: judged, and connected to, as the IPv4 address it carries."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _host_header(host: str) -> str:
    literal = _ip_literal(host)
    return f"[{literal}]" if isinstance(literal, ipaddress.IPv6Address) else host


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
