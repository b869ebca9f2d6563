"""Thumbnails drawn with Pillow from a channel's style and a video's latent visual features.

Each channel has its own hues, background pattern, face side, text-banner side and logo corner, so thumbnails
tell channels apart; each video varies brightness, saturation, contrast, face size, text bars and clutter around
the channel's habits, so they are not trivial. The same drawing with a time offset gives media.py its moving frames.

Sizes and paths are YouTube's; default, hqdefault and sddefault are 4:3 with the 16:9 picture letterboxed between
black bars, as YouTube serves them.
"""

from __future__ import annotations

import colorsys
import io
import math
import random
import struct
import zlib
from dataclasses import dataclass

from PIL import Image, ImageDraw

from tubelens.devtools.fakeyoutube.catalogue import RGB, BadInput, Channel, Video

JPEG_QUALITY = 85
BOMB_SIDE = 30_000


@dataclass(frozen=True)
class ThumbnailSize:
    name: str  # the key in snippet.thumbnails
    file: str  # the file name under /vi/<id>/
    width: int
    height: int
    letterboxed: bool


THUMBNAILS = (
    ThumbnailSize("default", "default.jpg", 120, 90, True),
    ThumbnailSize("medium", "mqdefault.jpg", 320, 180, False),
    ThumbnailSize("high", "hqdefault.jpg", 480, 360, True),
    ThumbnailSize("standard", "sddefault.jpg", 640, 480, True),
    ThumbnailSize("maxres", "maxresdefault.jpg", 1280, 720, False),
)
BY_FILE = {size.file: size for size in THUMBNAILS}


def available_thumbnails(video: Video) -> list[ThumbnailSize]:
    """The sizes YouTube has for this video: sddefault and maxresdefault are missing for some, as on YouTube."""
    present = {"standard": video.has_standard, "maxres": video.has_maxres}
    return [size for size in THUMBNAILS if present.get(size.name, True)]


def thumbnail_jpeg(channel: Channel, video: Video, size: ThumbnailSize) -> bytes:
    if not size.letterboxed:
        return _jpeg(render_scene(channel, video, size.width, size.height))
    picture_height = round(size.width * 9 / 16)
    canvas = Image.new("RGB", (size.width, size.height))
    canvas.paste(render_scene(channel, video, size.width, picture_height), (0, (size.height - picture_height) // 2))
    return _jpeg(canvas)


def render_scene(channel: Channel, video: Video, width: int, height: int, t: float = 0.0) -> Image.Image:
    """The 16:9 picture at `width` x `height`; `t` (seconds) moves the pattern, clutter, face and banners."""
    palette = _palette(channel, video)
    image = Image.new("RGB", (width, height), palette.background)
    draw = ImageDraw.Draw(image)
    rng = random.Random(video.render_seed)  # the same layout in every frame and size
    _PATTERNS[channel.style.pattern](draw, width, height, palette, t)
    _clutter(draw, rng, width, height, palette, t)
    if video.features.face:
        _face(draw, rng, channel, video, width, height, t)
    _text_bars(draw, rng, channel, video.features.text_bars, width, height, palette, t)
    _logo(draw, channel.style.logo_corner, width, height, palette)
    return image


@dataclass(frozen=True)
class Palette:
    background: RGB
    second: RGB
    accent: RGB
    muted: RGB


def _palette(channel: Channel, video: Video) -> Palette:
    style, f = channel.style, video.features
    jitter = random.Random(video.render_seed ^ 0x5EED).uniform(-0.025, 0.025)
    # Saturation never drops so low that the channel's hue is lost; brightness scales both background colours,
    # so that it shows in the mean luminance; contrast darkens the second one against the first.
    sat = 0.4 + 0.6 * f.saturation
    value = 0.25 + 0.7 * f.brightness
    second_value = value * (0.8 - 0.55 * f.contrast)
    return Palette(
        background=hsv_colour(style.hue + jitter, sat, value),
        second=hsv_colour(style.hue2 + jitter, sat, second_value),
        accent=hsv_colour(style.accent_hue, 0.5 + 0.5 * f.saturation, 0.55 + 0.45 * f.brightness),
        muted=hsv_colour(style.hue + 0.5, sat * 0.5, (value + second_value) / 2),
    )


def hsv_colour(hue: float, saturation: float, value: float) -> RGB:
    r, g, b = colorsys.hsv_to_rgb(hue % 1.0, min(1.0, max(0.0, saturation)), min(1.0, max(0.0, value)))
    return round(r * 255), round(g * 255), round(b * 255)


def _scale(colour: RGB, factor: float) -> RGB:
    return tuple(min(255, round(c * factor)) for c in colour)  # type: ignore[return-value]


# Background patterns, one per channel; `t` slides them so that media frames move.


def _gradient(draw: ImageDraw.ImageDraw, w: int, h: int, p: Palette, t: float) -> None:
    steps = 24
    for i in range(steps):
        phase = (i / steps + 0.3 * t) % 1.0
        mix = 1 - abs(2 * phase - 1)  # first colour, second, first again: the bands roll without a seam
        colour = tuple(round(a + (b - a) * mix) for a, b in zip(p.background, p.second, strict=True))
        draw.rectangle((0, i * h // steps, w, (i + 1) * h // steps), fill=colour)


def _stripes(draw: ImageDraw.ImageDraw, w: int, h: int, p: Palette, t: float) -> None:
    step = max(2, w // 8)
    shift = int(t * step) % (2 * step)
    for x in range(-2 * step + shift, w, 2 * step):
        draw.rectangle((x, 0, x + step - 1, h), fill=p.second)


def _checker(draw: ImageDraw.ImageDraw, w: int, h: int, p: Palette, t: float) -> None:
    step = max(2, h // 4)
    shift = int(t * step / 2) % (2 * step)
    for row, y in enumerate(range(0, h, step)):
        for col, x in enumerate(range(-2 * step + shift, w, step)):
            if (row + col) % 2:
                draw.rectangle((x, y, x + step - 1, y + step - 1), fill=p.second)


def _rings(draw: ImageDraw.ImageDraw, w: int, h: int, p: Palette, t: float) -> None:
    step = max(2, h // 6)
    cx, cy = int(w * (0.15 + 0.15 * math.sin(t))), h
    for i, radius in enumerate(range(int(1.3 * w), 0, -step)):
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=p.second if i % 2 else p.background)


def _diagonal(draw: ImageDraw.ImageDraw, w: int, h: int, p: Palette, t: float) -> None:
    step = max(2, w // 6)
    shift = int(t * step) % (2 * step)
    for x in range(-h - 2 * step + shift, w + h, 2 * step):
        draw.polygon(((x, h), (x + step, h), (x + step + h, 0), (x + h, 0)), fill=p.second)


def _dots(draw: ImageDraw.ImageDraw, w: int, h: int, p: Palette, t: float) -> None:
    step = max(4, h // 5)
    radius = step // 3
    shift = int(t * step / 2) % step
    for row, y in enumerate(range(step // 2, h + step, step)):
        for x in range(-step + shift + (row % 2) * step // 2, w + step, step):
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=p.second)


_PATTERNS = {
    "gradient": _gradient,
    "stripes": _stripes,
    "checker": _checker,
    "rings": _rings,
    "diagonal": _diagonal,
    "dots": _dots,
}


def _clutter(draw: ImageDraw.ImageDraw, rng: random.Random, w: int, h: int, p: Palette, t: float) -> None:
    """A few props per video, so that two thumbnails of one channel are never the same picture."""
    for _ in range(rng.randint(1, 4)):
        cx, cy = rng.uniform(0, 1), rng.uniform(0.2, 1)
        size, speed = rng.uniform(0.08, 0.25), rng.choice((-1, 1)) * rng.uniform(0.05, 0.12)
        x, y = (cx + speed * t) % 1.0 * w, cy * h
        box = (x - size * h, y - size * h, x + size * h, y + size * h * rng.uniform(0.5, 1.5))
        colour = rng.choice((p.muted, _scale(p.accent, 0.7), _scale(p.second, 1.2)))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)


def _face(
    draw: ImageDraw.ImageDraw, rng: random.Random, channel: Channel, video: Video, w: int, h: int, t: float
) -> None:
    f = video.features
    centre_x = {"left": 0.27, "right": 0.73, "center": 0.5}[channel.style.face_side] + rng.uniform(-0.05, 0.05)
    cx = (centre_x + 0.02 * math.sin(2 * t)) * w
    cy = (0.58 + rng.uniform(-0.05, 0.05) + 0.015 * math.sin(3 * t)) * h
    r = f.face_size * 0.45 * h
    skin = _scale(channel.style.skin, 0.6 + 0.5 * f.brightness)
    draw.ellipse((cx - r, cy - r * 1.15, cx + r, cy + r * 1.15), fill=skin)
    draw.chord((cx - r, cy - r * 1.25, cx + r, cy + r * 0.2), 180, 360, fill=_scale(skin, 0.35))  # hair
    eye, dark = max(1.0, r * 0.13), (30, 25, 25)
    for side in (-1, 1):
        ex, ey = cx + side * r * 0.38, cy - r * 0.1
        draw.ellipse((ex - eye, ey - eye, ex + eye, ey + eye), fill=dark)
    # Clickbait videos make the "shocked" open-mouth face; the rest smile.
    if video.clickbait:
        m = r * 0.22
        draw.ellipse((cx - m, cy + r * 0.35 - m, cx + m, cy + r * 0.35 + m * 1.3), fill=dark)
    else:
        draw.arc((cx - r * 0.4, cy, cx + r * 0.4, cy + r * 0.6), 20, 160, fill=dark, width=max(1, round(r * 0.06)))


def _text_bars(
    draw: ImageDraw.ImageDraw, rng: random.Random, channel: Channel, bars: int, w: int, h: int, p: Palette, t: float
) -> None:
    """Banners with word-like dark blocks: what big thumbnail text looks like at a glance."""
    bar_h = 0.13 * h
    for i in range(bars):
        y0 = (0.05 + i * 0.16) * h if channel.style.banner == "top" else (0.82 - i * 0.16) * h
        x0 = rng.uniform(0.03, 0.2) * w + 0.03 * w * math.sin(t + i)
        x1 = min(w * 0.97, x0 + rng.uniform(0.45, 0.75) * w)
        draw.rectangle((x0, y0, x1, y0 + bar_h), fill=p.accent if i % 2 == 0 else (250, 245, 235))
        x = x0 + 0.02 * w
        while x < x1 - 0.04 * w:
            word = rng.uniform(0.03, 0.1) * w
            draw.rectangle((x, y0 + bar_h * 0.25, min(x + word, x1 - 0.02 * w), y0 + bar_h * 0.75), fill=(20, 20, 20))
            x += word + 0.02 * w


def _logo(draw: ImageDraw.ImageDraw, corner: str, w: int, h: int, p: Palette) -> None:
    side = 0.14 * h
    x = 0.02 * w if corner[1] == "l" else w - 0.02 * w - side
    y = 0.03 * h if corner[0] == "t" else h - 0.03 * h - side
    draw.rectangle((x, y, x + side, y + side), fill=p.accent)
    draw.ellipse((x + side * 0.25, y + side * 0.25, x + side * 0.75, y + side * 0.75), fill=(255, 255, 255))


def _jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


# What YouTube-like servers send besides good thumbnails.


def missing_thumbnail_jpeg() -> bytes:
    """i.ytimg.com answers a missing size with 404 and a grey 120x90 placeholder, not an empty body."""
    image = Image.new("RGB", (120, 90), (204, 204, 204))
    ImageDraw.Draw(image).rectangle((45, 32, 75, 58), fill=(160, 160, 160))
    return _jpeg(image)


def avatar_jpeg(channel: Channel, side: int) -> bytes:
    """The channel's profile picture (snippet.thumbnails of channels.list): its accent disc on its hue."""
    style = channel.style
    image = Image.new("RGB", (side, side), hsv_colour(style.hue, 0.6, 0.6))
    disc = (side * 0.2, side * 0.2, side * 0.8, side * 0.8)
    ImageDraw.Draw(image).ellipse(disc, fill=hsv_colour(style.accent_hue, 0.7, 0.9))
    return _jpeg(image)


def bad_thumbnail(kind: BadInput, good_jpeg: bytes) -> tuple[str, bytes]:
    """(Content-Type, body) served in place of a good thumbnail for a video with a thumbnail fault."""
    if kind is BadInput.CORRUPT_JPEG:
        return "image/jpeg", good_jpeg[: len(good_jpeg) // 3]
    if kind is BadInput.HTML_THUMBNAIL:
        return "text/html; charset=UTF-8", _ERROR_PAGE
    if kind is BadInput.EMPTY_THUMBNAIL:
        return "image/jpeg", b""
    if kind is BadInput.BOMB_THUMBNAIL:
        return "image/png", bomb_png()
    raise ValueError(f"{kind} is not a thumbnail fault")


_ERROR_PAGE = (
    b"<!DOCTYPE html>\n<html lang=en><meta charset=utf-8><title>Error 404 (Not Found)!!1</title>"
    b"<p><b>404.</b> <ins>That\xe2\x80\x99s an error.</ins><p>The requested URL was not found on this server.</html>\n"
)


def bomb_png(width: int = BOMB_SIDE, height: int = BOMB_SIDE) -> bytes:
    """A well-formed PNG header declaring `width` x `height` grey pixels with only a few rows of data: decoders that
    trust the header allocate gigabytes; Pillow refuses it as a decompression bomb."""
    rows = zlib.compress(b"\x00" * (width + 1) * 4, 9)
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", rows) + _chunk(b"IEND", b"")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
