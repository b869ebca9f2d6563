"""The stand-in's HTTP server: YouTube's Data API v3, channel feeds, thumbnails and media files on loopback.

Paths (GET unless said):
    /youtube/v3/{videos,channels,playlistItems,search,videoCategories}   the Data API; needs key=
    /feeds/videos.xml?channel_id=UC...                                  channel Atom feed, no key, no quota
    /vi/<video id>/{default,mqdefault,hqdefault,sddefault,maxresdefault}.jpg
    /avatar/<channel id>/s{88,240,800}.jpg                              channel pictures named by channels.list
    /media/<video id>.mp4                                               MEDIA_URL_TEMPLATE; 404 without media
    /_fake/stats, /_fake/catalogue, GET|POST /_fake/clock, GET|POST /_fake/faults   the stand-in's own controls

Quota: each key's units are counted per Pacific-time day of the server clock, at the documented cost per method.
Every keyed request that is not answered quotaExceeded pays, including those that fail validation or meet an
injected 429/5xx, since Google charges invalid requests too; a request that would pass the daily limit is answered
quotaExceeded and not charged.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import re
import sys
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tubelens.devtools.fakeyoutube import api
from tubelens.devtools.fakeyoutube.catalogue import BadInput, Catalogue, rfc3339
from tubelens.devtools.fakeyoutube.feeds import channel_feed
from tubelens.devtools.fakeyoutube.media import MEDIA_URL_TEMPLATE, media_mp4, undecodable_mp4
from tubelens.devtools.fakeyoutube.thumbnails import (
    BY_FILE,
    available_thumbnails,
    avatar_jpeg,
    bad_thumbnail,
    missing_thumbnail_jpeg,
    thumbnail_jpeg,
)
from tubelens.devtools.servers import LOOPBACK
from tubelens.errors import InvalidInput, NotReady

log = logging.getLogger(__name__)

try:
    PACIFIC: timezone | ZoneInfo = ZoneInfo("America/Los_Angeles")
except ZoneInfoNotFoundError:  # images without tzdata: standard time all year is close enough for a stand-in
    PACIFIC = timezone(timedelta(hours=-8))

TARGETS = ("api", "feeds", "thumbnails", "media")
CACHE_BYTES = 256 * 1024 * 1024
_THUMBNAIL_PATH = re.compile(r"/vi/([A-Za-z0-9_-]{11})/([a-z]+\.jpg)")
_AVATAR_PATH = re.compile(r"/avatar/(UC[A-Za-z0-9_-]{22})/s(\d+)\.jpg")
_MEDIA_PATH = re.compile(r"/media/([A-Za-z0-9_-]{11})\.mp4")
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
_NOT_FOUND_PAGE = b"<!DOCTYPE html>\n<html lang=en><title>Error 404 (Not Found)!!1</title><p>Not Found</html>\n"
_ERROR_PAGE = b"<!DOCTYPE html>\n<html lang=en><title>Error {code}</title><p>Please try again later.</html>\n"


@dataclass
class ServerFaults:
    """Misbehaviour injected into answers: counts apply to the next requests, then rates draw from a seeded RNG.
    Only requests to `targets` (api, feeds, thumbnails, media) are touched; /_fake/ never is."""

    server_errors: int = 0  # the next N requests answer 500 or 503 backendError
    server_error_rate: float = 0.0
    rate_limits: int = 0  # the next N requests answer 429 rateLimitExceeded
    rate_limit_rate: float = 0.0
    delay_ms: int = 0  # every targeted request waits this long first
    quota_exceeded: bool = False  # every API request answers quotaExceeded, whatever the units used
    targets: tuple[str, ...] = ("api",)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ServerFaults:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise InvalidInput(f"unknown fault settings: {', '.join(sorted(unknown))}; known: {', '.join(names)}")
        faults = cls(**{**data, "targets": tuple(data.get("targets", cls.targets))})
        faults.validate()
        return faults

    def validate(self) -> None:
        if not set(self.targets) <= set(TARGETS):
            raise InvalidInput(f"fault targets must be among {', '.join(TARGETS)}")
        if min(self.server_errors, self.rate_limits, self.delay_ms) < 0:
            raise InvalidInput("fault counts and delays cannot be negative")
        if not (0 <= self.server_error_rate <= 1 and 0 <= self.rate_limit_rate <= 1):
            raise InvalidInput("fault rates are between 0 and 1")


_FAULT_NAMES = ("server_error", "rate_limited", "quota_exceeded", "delayed")


@dataclass
class _Ledger:
    """Counters behind /_fake/stats; callers hold the server's lock."""

    requests: Counter[str] = field(default_factory=Counter)
    units: dict[tuple[date, str], int] = field(default_factory=dict)
    faults: Counter[str] = field(default_factory=lambda: Counter(dict.fromkeys(_FAULT_NAMES, 0)))
    quota_refused: int = 0
    bad_inputs_served: Counter[str] = field(default_factory=Counter)


class _BytesCache:
    """Rendered bytes, least recently used out first; one render per key even under concurrent requests."""

    def __init__(self, budget: int) -> None:
        self._budget, self._size = budget, 0
        self._items: OrderedDict[object, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self._making: dict[object, threading.Lock] = {}

    def get(self, key: object, make: Callable[[], bytes]) -> bytes:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            key_lock = self._making.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in self._items:
                    return self._items[key]
            value = make()
            with self._lock:
                self._items[key] = value
                self._size += len(value)
                self._making.pop(key, None)
                while self._size > self._budget and len(self._items) > 1:
                    self._size -= len(self._items.popitem(last=False)[1])
        return value


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-request (a crawler timing out, a pool closing a kept-alive socket) is routine
        # for a web server: log it in one line instead of the socketserver default, a traceback on stderr.
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError):
            log.debug("client went away", extra={"client": client_address[0], "error": type(error).__name__})
            return
        log.exception("request failed", extra={"client": client_address[0]})


class FakeYouTube:
    """A YouTube stand-in for one catalogue, on a loopback port picked at start.

    The clock starts at `catalogue.now` and, with `tick`, runs with real time from start(); advance() moves it
    forward. Videos published after the clock are invisible everywhere, so advancing reveals new uploads.
    `api_keys`, when given, are the only keys accepted; otherwise any non-empty key is.
    """

    def __init__(
        self,
        catalogue: Catalogue,
        host: str = LOOPBACK,
        port: int = 0,
        quota_per_day: int = 10_000,
        faults: ServerFaults | None = None,
        *,
        api_keys: Collection[str] | None = None,
        tick: bool = True,
    ) -> None:
        self.catalogue = catalogue
        self.quota_per_day = quota_per_day
        self.api_keys = frozenset(api_keys) if api_keys is not None else None
        self.tick = tick
        self._address = (host, port)
        self._faults = faults or ServerFaults()
        self._faults.validate()
        self._rng = random.Random(f"{catalogue.seed}:faults")
        self._lock = threading.Lock()
        self._ledger = _Ledger()
        self._offset_s = 0.0
        self._started_at: float | None = None
        self._cache = _BytesCache(CACHE_BYTES)
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle

    def start(self) -> FakeYouTube:
        httpd = _Server(self._address, _Handler)
        httpd.daemon_threads = True
        httpd.fake = self  # type: ignore[attr-defined]
        self._httpd = httpd
        with self._lock:
            self._started_at = time.monotonic()
        # A short poll interval: stop() returns within it.
        self._thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), name="fake-youtube", daemon=True)
        self._thread.start()
        log.info("fake youtube serving", extra={"base_url": self.base_url, "channels": len(self.catalogue.channels)})
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = self._thread = None

    def __enter__(self) -> FakeYouTube:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # addresses

    @property
    def base_url(self) -> str:
        if self._httpd is None:
            raise NotReady("the fake YouTube has no address until start()")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def api_base(self) -> str:
        return f"{self.base_url}/youtube/v3"

    @property
    def feed_url(self) -> str:
        return f"{self.base_url}/feeds/videos.xml"

    @property
    def media_url_template(self) -> str:
        """The media URL with the base filled in and {video_id} left for the caller."""
        return MEDIA_URL_TEMPLATE.replace("{base}", self.base_url)

    def env(self, api_key: str = "dev-key") -> dict[str, str]:
        """The TUBELENS_* settings that point the pipeline at this stand-in: the crawler's addresses and channels, the
        preprocessor's allowed host, and a trainer threshold this catalogue reaches (80 % of its visible videos
        labelled: a few bad inputs never are, and the trainer's default of 500 is more than a stand-in holds)."""
        visible = len(self.catalogue.visible(self.now()))
        return {
            "TUBELENS_CRAWLER__API_KEY": api_key,
            "TUBELENS_CRAWLER__API_BASE": self.api_base,
            "TUBELENS_CRAWLER__RSS_BASE": self.feed_url,
            "TUBELENS_CRAWLER__MEDIA_URL_TEMPLATE": self.media_url_template,
            "TUBELENS_CRAWLER__CHANNELS": ",".join(channel.id for channel in self.catalogue.channels),
            "TUBELENS_PREPROCESSOR__ALLOWED_HOSTS": self._address[0],
            "TUBELENS_TRAINER__NEW_LABELS": str(max(1, int(0.8 * visible))),
            # The stand-in's worlds are small (a few test rows a channel): there the popularity ridge loses to the
            # channel-mean baseline (MAE 0.59 against 0.52 on one dev up), so the gate would leave the predictor
            # without a popularity model; the verdict is still recorded with every version.
            "TUBELENS_TRAINER__REQUIRE_BEATING_BASELINES": "false",
        }

    # clock

    def now(self) -> datetime:
        with self._lock:
            return self._now()

    def _now(self) -> datetime:
        running = time.monotonic() - self._started_at if self.tick and self._started_at is not None else 0.0
        return self.catalogue.now + timedelta(seconds=running + self._offset_s)

    def advance(self, seconds: float) -> datetime:
        """Moves the clock forward (never back: views never decrease) and returns the new time."""
        if seconds < 0:
            raise InvalidInput("the clock only moves forward")
        with self._lock:
            self._offset_s += seconds
            return self._now()

    # faults and stats

    @property
    def faults(self) -> ServerFaults:
        with self._lock:
            return dataclasses.replace(self._faults)

    def set_faults(self, faults: ServerFaults) -> None:
        faults.validate()
        with self._lock:
            self._faults = dataclasses.replace(faults)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            ledger, today = self._ledger, self._quota_day()
            return {
                "now": rfc3339(self._now()),
                "quota_day": today.isoformat(),
                "quota_per_day": self.quota_per_day,
                "requests": dict(ledger.requests),
                "units": {key: units for (day, key), units in ledger.units.items() if day == today},
                "units_total": _units_per_key(ledger.units),
                "quota_refused": ledger.quota_refused,
                "faults": dict(ledger.faults),
                "bad_inputs_served": dict(ledger.bad_inputs_served),
            }

    def _quota_day(self) -> date:
        return self._now().astimezone(PACIFIC).date()

    def _count(self, endpoint: str) -> None:
        with self._lock:
            self._ledger.requests[endpoint] += 1

    def _charge(self, key: str, method: str) -> bool:
        """Pays for one call; False (nothing charged) when it would pass today's limit."""
        cost = api.QUOTA_COSTS[method]
        with self._lock:
            slot = (self._quota_day(), key)
            used = self._ledger.units.get(slot, 0)
            if used + cost > self.quota_per_day:
                self._ledger.quota_refused += 1
                return False
            self._ledger.units[slot] = used + cost
            return True

    def _draw_fault(self, target: str) -> tuple[str | None, float]:
        """(fault to answer with or None, seconds to wait first) for one request to `target`."""
        with self._lock:
            faults = self._faults
            if target not in faults.targets:
                return None, 0.0
            delay = faults.delay_ms / 1000
            if delay:
                self._ledger.faults["delayed"] += 1
            fault = None
            if target == "api" and faults.quota_exceeded:
                fault = "quota_exceeded"
            elif faults.server_errors > 0:
                faults.server_errors -= 1
                fault = "server_error"
            elif faults.rate_limits > 0:
                faults.rate_limits -= 1
                fault = "rate_limited"
            elif self._rng.random() < faults.server_error_rate:
                fault = "server_error"
            elif self._rng.random() < faults.rate_limit_rate:
                fault = "rate_limited"
            if fault:
                self._ledger.faults[fault] += 1
            return fault, delay

    def _server_error_code(self) -> int:
        with self._lock:
            return self._rng.choice((500, 503))

    def _served_bad_input(self, kind: BadInput) -> None:
        with self._lock:
            self._ledger.bad_inputs_served[str(kind)] += 1

    def _cached(self, key: object, make: Callable[[], bytes]) -> bytes:
        return self._cache.get(key, make)


def _units_per_key(units: dict[tuple[date, str], int]) -> dict[str, int]:
    totals: Counter[str] = Counter()
    for (_, key), used in units.items():
        totals[key] += used
    return dict(totals)


@dataclass
class _Answer:
    status: int
    content_type: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def _json(status: int, body: dict) -> _Answer:
    return _Answer(status, "application/json; charset=UTF-8", json.dumps(body, indent=2, ensure_ascii=False).encode())


def _not_found() -> _Answer:
    return _Answer(404, "text/html; charset=UTF-8", _NOT_FOUND_PAGE)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so that clients' connection pools are exercised
    # Headers and body go out in two writes; with Nagle on, each keep-alive answer waits for a delayed ACK (40 ms).
    disable_nagle_algorithm = True
    server_version = "tubelens-fake-youtube"

    @property
    def fake(self) -> FakeYouTube:
        return self.server.fake  # type: ignore[attr-defined]

    def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
        self._answer(self._route_get)

    def do_POST(self) -> None:  # noqa: N802
        self._answer(self._route_post)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the signature http.server calls)
        log.debug("request", extra={"line": format % args})

    def _answer(self, route: Callable[[str, dict[str, str]], _Answer]) -> None:
        url = urlsplit(self.path)
        params = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        try:
            answer = route(url.path, params)
        except Exception:
            log.exception("fake youtube failed", extra={"path": self.path})
            answer = _Answer(500, "text/plain", b"the stand-in failed; see its log\n")
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.content_type)
        self.send_header("Content-Length", str(len(answer.body)))
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(answer.body)

    # GET routes

    def _route_get(self, path: str, params: dict[str, str]) -> _Answer:
        if path.startswith("/youtube/v3/"):
            return self._api(path.removeprefix("/youtube/v3/"), params)
        if path == "/feeds/videos.xml":
            return self._faulty("feeds", "rss", lambda: self._feed(params))
        if match := _THUMBNAIL_PATH.fullmatch(path):
            return self._faulty("thumbnails", "thumbnails", lambda: self._thumbnail(*match.groups()))
        if match := _AVATAR_PATH.fullmatch(path):
            return self._faulty("thumbnails", "avatars", lambda: self._avatar(match[1], int(match[2])))
        if match := _MEDIA_PATH.fullmatch(path):
            return self._faulty("media", "media", lambda: self._media(match[1]))
        if path.startswith("/_fake/"):
            return self._control_get(path.removeprefix("/_fake/"))
        self.fake._count("not_found")
        return _not_found()

    def _faulty(self, target: str, endpoint: str, serve: Callable[[], _Answer]) -> _Answer:
        self.fake._count(endpoint)
        fault, delay = self.fake._draw_fault(target)
        time.sleep(delay)
        if fault == "server_error":
            code = self.fake._server_error_code()
            return _Answer(code, "text/html; charset=UTF-8", _ERROR_PAGE.replace(b"{code}", str(code).encode()))
        if fault == "rate_limited":
            return _Answer(429, "text/html; charset=UTF-8", _ERROR_PAGE.replace(b"{code}", b"429"))
        return serve()

    def _api(self, resource: str, params: dict[str, str]) -> _Answer:
        fake = self.fake
        if resource not in api.METHODS:
            fake._count("not_found")
            return _json(404, api.method_not_found().body())
        method, handler = api.METHODS[resource]
        fake._count(method)
        try:
            key = params.get("key")
            if not key:
                raise api.missing_key()
            if fake.api_keys is not None and key not in fake.api_keys:
                raise api.invalid_key()
            fault, delay = fake._draw_fault("api")
            time.sleep(delay)
            if fault == "quota_exceeded" or not fake._charge(key, method):
                raise api.quota_exceeded()
            if fault == "server_error":
                raise api.backend_error(fake._server_error_code())
            if fault == "rate_limited":
                raise api.rate_limited()
            context = api.Context(fake.catalogue, fake.base_url, fake.now())
            return _json(200, handler(context, api.Query(params)))
        except api.ApiError as error:
            return _json(error.code, error.body())

    def _feed(self, params: dict[str, str]) -> _Answer:
        channel = self.fake.catalogue.channel(params.get("channel_id", ""))
        if channel is None:
            return _not_found()
        body = channel_feed(self.fake.catalogue, channel, self.fake.base_url, self.fake.now())
        return _Answer(200, "text/xml; charset=UTF-8", body)

    def _thumbnail(self, video_id: str, file: str) -> _Answer:
        fake = self.fake
        video = fake.catalogue.video(video_id)
        size = BY_FILE.get(file)
        if video is None or size is None or video.published_at > fake.now() or size not in available_thumbnails(video):
            # i.ytimg.com answers 404 with a placeholder picture rather than an empty body.
            return _Answer(404, "image/jpeg", fake._cached("missing", missing_thumbnail_jpeg))
        channel = fake.catalogue.channel(video.channel_id)
        assert channel is not None
        good = fake._cached((video_id, file), lambda: thumbnail_jpeg(channel, video, size))
        if video.bad_input is None or video.bad_input is BadInput.UNDECODABLE_MEDIA:
            return _Answer(200, "image/jpeg", good)
        fake._served_bad_input(video.bad_input)
        content_type, body = bad_thumbnail(video.bad_input, good)
        return _Answer(200, content_type, body)

    def _avatar(self, channel_id: str, side: int) -> _Answer:
        channel = self.fake.catalogue.channel(channel_id)
        if channel is None or side not in dict(api.AVATAR_SIZES).values():
            return _not_found()
        return _Answer(200, "image/jpeg", self.fake._cached((channel_id, side), lambda: avatar_jpeg(channel, side)))

    def _media(self, video_id: str) -> _Answer:
        fake = self.fake
        video = fake.catalogue.video(video_id)
        if video is None or not video.has_media or video.published_at > fake.now():
            return _not_found()
        if video.bad_input is BadInput.UNDECODABLE_MEDIA:
            fake._served_bad_input(video.bad_input)
            body = undecodable_mp4(video)
        else:
            channel = fake.catalogue.channel(video.channel_id)
            assert channel is not None
            body = fake._cached(video_id, lambda: media_mp4(channel, video))
        return _ranged(body, self.headers.get("Range"))

    # control API

    def _control_get(self, name: str) -> _Answer:
        fake = self.fake
        fake._count("_fake")
        if name == "stats":
            return _json(200, fake.stats())
        if name == "clock":
            return _json(200, {"now": rfc3339(fake.now())})
        if name == "faults":
            return _json(200, dataclasses.asdict(fake.faults))
        if name == "catalogue":
            return _json(200, fake.catalogue.summary())
        return _not_found()

    def _route_post(self, path: str, params: dict[str, str]) -> _Answer:
        fake = self.fake
        fake._count("_fake")
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
            if not isinstance(body, dict):
                raise InvalidInput("the body must be a JSON object")
            if path == "/_fake/clock":
                return _json(200, {"now": rfc3339(fake.advance(float(body.get("advance_seconds", 0))))})
            if path == "/_fake/faults":
                fake.set_faults(ServerFaults.from_json(body))
                return _json(200, dataclasses.asdict(fake.faults))
        except (InvalidInput, ValueError, TypeError) as exc:
            return _json(400, {"error": {"code": 400, "message": str(exc)}})
        return _not_found()


def _ranged(body: bytes, range_header: str | None) -> _Answer:
    """video/mp4 with single-range support: decoders reading over HTTP seek to the index at the end of the file."""
    headers = {"Accept-Ranges": "bytes"}
    match = _RANGE.fullmatch(range_header.strip()) if range_header else None
    if match is None or not any(match.groups()):
        return _Answer(200, "video/mp4", body, headers)
    first, last = match.groups()
    if first:
        start, end = int(first), min(int(last) if last else len(body) - 1, len(body) - 1)
    else:
        start, end = max(0, len(body) - int(last)), len(body) - 1
    if start >= len(body) or start > end:
        return _Answer(416, "video/mp4", b"", {**headers, "Content-Range": f"bytes */{len(body)}"})
    headers["Content-Range"] = f"bytes {start}-{end}/{len(body)}"
    return _Answer(206, "video/mp4", body[start : end + 1], headers)
