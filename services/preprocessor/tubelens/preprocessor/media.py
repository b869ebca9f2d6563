"""Recognize a fetched media file and open it with PyAV, with FFmpeg's failures as InvalidInput.

Only MP4/QuickTime and Matroska/WebM are opened, each with its demuxer named explicitly: FFmpeg's format probing
would otherwise hand bytes from the internet to any of its demuxers, some of which (HLS, concat) open further
files or URLs on their own.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import av
import av.container

from tubelens.errors import InvalidInput

log = logging.getLogger(__name__)

# ISO base media boxes a QuickTime or MP4 file may start with.
_MP4_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip")
_EBML = b"\x1a\x45\xdf\xa3"
HEAD_BYTES = 64


@dataclass(frozen=True)
class MediaFormat:
    demuxer: str
    content_type: str
    suffix: str


MP4 = MediaFormat("mp4", "video/mp4", ".mp4")
WEBM = MediaFormat("matroska", "video/webm", ".webm")
MATROSKA = MediaFormat("matroska", "video/x-matroska", ".mkv")


def sniff_media(head: bytes) -> MediaFormat:
    """The container the first bytes announce; InvalidInput for anything that is not a supported one."""
    if not head:
        raise InvalidInput("media file is empty", field="media_url")
    if head[4:8] in _MP4_BOXES:
        return MP4
    if head.startswith(_EBML):
        return WEBM if b"webm" in head[:HEAD_BYTES] else MATROSKA
    raise InvalidInput(f"not a media file: expected MP4 or WebM/Matroska, got bytes {head[:12]!r}", field="media_url")


@contextmanager
def open_media(path: Path, media_format: MediaFormat) -> Iterator[av.container.InputContainer]:
    """The container, read only from the local file; decoding errors inside the block become InvalidInput."""
    with media_errors():
        container = av.open(
            str(path),
            format=media_format.demuxer,
            options={"protocol_whitelist": "file"},
            metadata_errors="replace",
        )
    try:
        with media_errors():
            yield container
    finally:
        container.close()


@contextmanager
def media_errors() -> Iterator[None]:
    try:
        yield
    except av.FFmpegError as exc:
        # str(exc) names the local temporary file; the reason (dead letters, logs downstream) carries FFmpeg's own
        # words only, and the full error stays in this process's log.
        log.info("media decoding failed", extra={"error": str(exc)})
        reason = exc.strerror or type(exc).__name__
        raise InvalidInput(f"media could not be decoded: {reason}", field="media_url") from None
