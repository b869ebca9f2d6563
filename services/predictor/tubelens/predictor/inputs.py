"""A request's pictures, from whichever source the caller chose, as decoded images: bytes, an allowlisted URL, or a
video the catalogue knows.

Every failure names the request field it came from, so a caller with ten candidates learns which one was wrong:
  - no source, empty bytes, or not a JPEG/PNG/WebP image → InvalidInput (INVALID_ARGUMENT);
  - bytes over the size cap, or an image declaring more pixels than allowed → TooLarge (RESOURCE_EXHAUSTED);
  - a URL off the allowlist → InvalidInput; a URL that answers 404 → NotFound; a host that is down → Unavailable;
  - a video id the catalogue does not know → NotFound.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image

from tubelens.errors import InvalidInput, TooLarge, TubelensError
from tubelens.fetch import Fetcher
from tubelens.modelkit.preprocess import decode
from tubelens.objects import ObjectStore
from tubelens.predictor.catalogue import Catalogue
from tubelens.v1 import predictor_pb2

SOURCES = "image_bytes, image_url or video_id"


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int  # encoded size, for inline bytes and fetched URLs alike
    max_pixels: int  # declared width x height, checked before decoding
    fetch_deadline_s: float


class ImageResolver:
    def __init__(
        self,
        limits: ImageLimits,
        *,
        store: ObjectStore,
        catalogue: Callable[[], Catalogue],
        fetcher: Fetcher | None,
    ) -> None:
        """`fetcher` is None when no host is allowed: URLs are then refused with the setting to change."""
        self.limits = limits
        self.store = store
        self.catalogue = catalogue
        self.fetcher = fetcher

    def image(self, source: predictor_pb2.ImageInput, field: str) -> Image.Image:
        """The decoded picture of one ImageInput; errors name `field` (e.g. "candidates[2].image")."""
        data = self.encoded(source, field)
        try:
            return decode(data, max_pixels=self.limits.max_pixels)
        except TubelensError as exc:
            raise type(exc)(f"{field}: {exc.message}", field=field) from None

    def encoded(self, source: predictor_pb2.ImageInput, field: str) -> bytes:
        kind = source.WhichOneof("source")
        if kind == "image_bytes":
            return self._checked_size(source.image_bytes, f"{field}.image_bytes")
        if kind == "image_url":
            return self._fetched(source.image_url, f"{field}.image_url")
        if kind == "video_id":
            return self._stored(source.video_id, f"{field}.video_id")
        raise InvalidInput(f"{field}: give one of {SOURCES}", field=field)

    def _checked_size(self, data: bytes, field: str) -> bytes:
        if not data:
            raise InvalidInput(f"{field} is empty", field=field)
        if len(data) > self.limits.max_bytes:
            raise TooLarge(f"{field} is {len(data):,} bytes; the limit is {self.limits.max_bytes:,}", field=field)
        return data

    def _fetched(self, url: str, field: str) -> bytes:
        if self.fetcher is None:
            raise InvalidInput(
                f"{field}: image URLs are turned off; list their hosts in TUBELENS_PREDICTOR__API__ALLOWED_HOSTS",
                field=field,
            )
        try:
            data, _ = self.fetcher.fetch_bytes(
                url, max_bytes=self.limits.max_bytes, deadline_s=self.limits.fetch_deadline_s
            )
        except TubelensError as exc:
            raise type(exc)(f"{field}: {exc.message}", field=field) from None
        return data

    def _stored(self, video_id: str, field: str) -> bytes:
        if not video_id:
            raise InvalidInput(f"{field} is empty", field=field)
        try:
            known = self.catalogue().video(video_id)
        except TubelensError as exc:
            raise type(exc)(f"{field}: {exc.message}", field=field) from None
        if not known.thumbnail_key:
            raise InvalidInput(f"{field}: no stored thumbnail is known for video {video_id!r}", field=field)
        return self.store.get(known.thumbnail_key)


def too_many(count: int, limit: int, field: str) -> None:
    """TooLarge when a repeated field holds more items than the server takes in one request."""
    if count > limit:
        raise TooLarge(f"{field} has {count} items; at most {limit} per request", field=field)
