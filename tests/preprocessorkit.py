"""Inputs for the preprocessor's tests and benchmark: a local origin server, synthetic thumbnails and videos.

Everything is made on the spot: pictures with Pillow, MP4s with PyAV, served from a real HTTP server on a port the
system picks, so tests exercise the same sockets, status codes and byte streams a real image host produces.
"""

from __future__ import annotations

import io
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from tubelens.devtools.servers import LOOPBACK
from tubelens.preprocessor.settings import PreprocessorSettings


def loopback_settings(**overrides: object) -> PreprocessorSettings:
    """Settings that allow the loopback origin and keep timeouts short."""
    defaults: dict[str, object] = {
        "allowed_hosts": (LOOPBACK,),
        "connect_timeout_s": 2.0,
        "read_timeout_s": 2.0,
        "thumbnail_deadline_s": 5.0,
        "media_deadline_s": 20.0,
    }
    return PreprocessorSettings(**{**defaults, **overrides})


# --- an origin server ----------------------------------------------------------------------------------------------


@dataclass
class Route:
    body: bytes = b""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    send_length: bool = True  # False: no Content-Length, the body ends when the connection closes
    chunk_bytes: int = 64 * 1024
    chunk_delay_s: float = 0.0  # a pause before each chunk, to trickle a body out slowly
    delay_s: float = 0.0  # a pause before the status line


class Origin:
    """An HTTP/1.0 server on loopback serving fixed routes; it records every path asked for."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[str] = []
        self.hosts: list[str] = []  # the Host header of each request, in order
        self.bytes_sent: dict[str, int] = {}
        self.disconnected: set[str] = set()  # paths whose client hung up before the whole body was sent
        self._server = ThreadingHTTPServer((LOOPBACK, 0), self._handler_class())
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]

    def serve(self, path: str, body: bytes = b"", **route: object) -> str:
        self.routes[path] = Route(body=body, **route)
        return self.url(path)

    def redirect(self, path: str, location: str, status: int = 302) -> str:
        return self.serve(path, status=status, headers={"Location": location})

    def url(self, path: str, host: str = LOOPBACK) -> str:
        return f"http://{host}:{self.port}{path}"

    def start(self) -> Origin:
        # A short poll interval: stopping waits for the serving loop's next look at the shutdown flag.
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="origin", daemon=True
        ).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        origin = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the name http.server dispatches to
                origin.requests.append(self.path)
                origin.hosts.append(self.headers.get("Host", ""))
                route = origin.routes.get(self.path, Route(b"no such path", status=404))
                time.sleep(route.delay_s)
                self.send_response(route.status)
                for name, value in route.headers.items():
                    self.send_header(name, value)
                if route.send_length:
                    self.send_header("Content-Length", str(len(route.body)))
                self.end_headers()
                self._send_body(route)

            def _send_body(self, route: Route) -> None:
                sent = 0
                try:
                    for start in range(0, len(route.body), route.chunk_bytes):
                        time.sleep(route.chunk_delay_s)
                        chunk = route.body[start : start + route.chunk_bytes]
                        self.wfile.write(chunk)
                        sent += len(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    origin.disconnected.add(self.path)
                finally:
                    origin.bytes_sent[self.path] = sent

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's signature
                pass

        return Handler


@contextmanager
def running_origin() -> Iterator[Origin]:
    origin = Origin().start()
    try:
        yield origin
    finally:
        origin.stop()


# --- pictures ------------------------------------------------------------------------------------------------------


def picture(seed: int, size: tuple[int, int] = (320, 180)) -> Image.Image:
    """A thumbnail-like picture: a gradient, a few bold shapes and a caption, all derived from `seed`."""
    rng = np.random.default_rng(seed)
    width, height = size
    ramp = np.linspace(0, 1, width)[None, :, None] * rng.integers(60, 200, 3) + rng.integers(0, 50, 3)
    image = Image.fromarray(np.broadcast_to(ramp, (height, width, 3)).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(5):
        x, y = rng.integers(0, width), rng.integers(0, height)
        w, h = rng.integers(width // 8, width // 2), rng.integers(height // 8, height // 2)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x - w // 2, y - h // 2, x + w // 2, y + h // 2), fill=colour)
    draw.text((width // 10, height // 10), f"#{seed}", fill=(255, 255, 255), font=_font(height // 5))
    return image


def encoded(image: Image.Image, image_format: str = "JPEG", **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, image_format, **options)
    return out.getvalue()


def jpeg(seed: int, size: tuple[int, int] = (320, 180), quality: int = 85) -> bytes:
    return encoded(picture(seed, size), "JPEG", quality=quality)


def png_declaring(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR declaring `width` x `height` RGB pixels, followed by a few bytes of data.

    Tiny on the wire, gigabytes once decoded: a decompression bomb that only a header check stops cheaply.
    """

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=max(10, size))


# --- videos --------------------------------------------------------------------------------------------------------


# Stereo at 44.1 kHz, so that the preprocessor's resampling to mono 16 kHz is exercised.
AUDIO_RATE = 44_100


def slate(text: str, size: tuple[int, int], background: tuple[int, int, int]) -> np.ndarray:
    """A title or end card: a plain background with one line of text."""
    image = Image.new("RGB", size, background)
    ImageDraw.Draw(image).text((size[0] // 6, size[1] // 3), text, fill=(255, 255, 255), font=_font(size[1] // 6))
    return np.asarray(image)


def content_frame(n: int, size: tuple[int, int]) -> np.ndarray:
    """Frame `n` of a moving scene: a textured picture panning sideways with a ball crossing it."""
    width, height = size
    scene = np.roll(np.asarray(picture(7, size)), 6 * n, axis=1).copy()
    image = Image.fromarray(scene)
    x = (9 * n) % width
    ImageDraw.Draw(image).ellipse((x, height // 3, x + height // 3, 2 * height // 3), fill=(250, 220, 30))
    return np.asarray(image)


def video(
    *,
    title_s: float = 1.0,
    content_s: float = 3.0,
    end_s: float = 1.0,
    fps: int = 24,
    size: tuple[int, int] = (320, 180),
    tone_hz: float | None = 440.0,
) -> bytes:
    """An H.264 MP4: a title slate, moving content, an end slate; with a sine tone (AAC) unless `tone_hz` is None."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        # Every stream must exist before the first packet is written.
        audio = None if tone_hz is None else container.add_stream("aac", rate=AUDIO_RATE, layout="stereo")
        title, end = slate("MY VIDEO", size, (20, 30, 120)), slate("THE END", size, (0, 0, 0))
        frames = (
            [title] * round(title_s * fps)
            + [content_frame(n, size) for n in range(round(content_s * fps))]
            + [end] * round(end_s * fps)
        )
        for array in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
        container.mux(stream.encode())
        if audio is not None:
            _encode_tone(container, audio, tone_hz, title_s + content_s + end_s)
    return buffer.getvalue()


def sine(hz: float, seconds: float, rate: int) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (0.4 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def _encode_tone(container: av.container.OutputContainer, stream: av.AudioStream, hz: float, seconds: float) -> None:
    rate = AUDIO_RATE
    samples = sine(hz, seconds, rate)
    step = 1024
    for start in range(0, len(samples), step):
        chunk = samples[start : start + step]
        frame = av.AudioFrame.from_ndarray(np.stack([chunk, chunk]), format="fltp", layout="stereo")
        frame.sample_rate, frame.pts = rate, start
        container.mux(stream.encode(frame))
    container.mux(stream.encode())


def sound_only(hz: float = 440.0, seconds: float = 2.0) -> bytes:
    """An MP4 with an AAC tone and no video stream."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        audio = container.add_stream("aac", rate=AUDIO_RATE, layout="stereo")
        _encode_tone(container, audio, hz, seconds)
    return buffer.getvalue()
