"""Short MP4 files (H.264 video, AAC audio) for the videos that have media, encoded with PyAV.

The Data API gives no file URLs; the stand-in serves media at MEDIA_URL_TEMPLATE and crawlers build the URL from a
configured template. Each file opens with a one-second title slate (a uniform colour with the title in big letters)
and closes with a one-second static, near-uniform end slate, as uploads often do, so that frame samplers have
something to skip; between them the channel's thumbnail scene moves. The sound track's character follows the
category (harmonic music with a beat, game beeps, speech-like babble, crowd noise, engine drone), so genre can be
learnt from audio alone.
"""

from __future__ import annotations

import io
import math
import random
from collections.abc import Callable, Iterator

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from tubelens.devtools.fakeyoutube.catalogue import PROFILES, Channel, Video
from tubelens.devtools.fakeyoutube.thumbnails import hsv_colour, render_scene

MEDIA_URL_TEMPLATE = "{base}/media/{video_id}.mp4"
WIDTH, HEIGHT = 192, 108
SAMPLE_RATE = 22_050
SLATE_S = 1
FRAME_RATES = (12, 15, 24)


def media_mp4(channel: Channel, video: Video) -> bytes:
    rng = random.Random(video.render_seed)
    fps, seconds = rng.choice(FRAME_RATES), rng.randint(6, 10)
    audio = soundtrack(PROFILES[video.category_id].audio, seconds, np.random.default_rng(video.render_seed))
    out = io.BytesIO()
    # The same video must be the same bytes wherever it is generated: bitexact keeps version strings out of the
    # container, and one x264 thread keeps its rate control from depending on thread timing.
    with av.open(out, "w", format="mp4", container_options={"fflags": "+bitexact"}) as container:
        picture = container.add_stream("libx264", rate=fps, options={"preset": "veryfast", "crf": "28", "threads": "1"})
        picture.width, picture.height, picture.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        sound = container.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
        for frame in _frames(channel, video, fps, seconds):
            container.mux(picture.encode(frame))
        container.mux(picture.encode())
        for frame in _audio_frames(audio):
            container.mux(sound.encode(frame))
        container.mux(sound.encode())
    return out.getvalue()


def undecodable_mp4(video: Video) -> bytes:
    """An MP4 file-type box followed by noise: it sniffs as MP4 and no demuxer can read it."""
    noise = random.Random(video.render_seed).randbytes(16_384)
    return b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + noise


def _frames(channel: Channel, video: Video, fps: int, seconds: int) -> Iterator[av.VideoFrame]:
    total = fps * seconds
    title, end = _title_slate(channel, video), _end_slate(channel)
    for index in range(total):
        if index < fps * SLATE_S:
            image = title
        elif index >= total - fps * SLATE_S:
            image = end
        else:
            image = render_scene(channel, video, WIDTH, HEIGHT, t=index / fps)
        frame = av.VideoFrame.from_image(image)
        frame.pts = index
        yield frame


def _audio_frames(samples: np.ndarray) -> Iterator[av.AudioFrame]:
    size = 1024  # AAC's frame size
    for start in range(0, len(samples), size):
        frame = av.AudioFrame.from_ndarray(samples[None, start : start + size], format="fltp", layout="mono")
        frame.sample_rate, frame.pts = SAMPLE_RATE, start
        yield frame


def _title_slate(channel: Channel, video: Video) -> Image.Image:
    image = _solid(hsv_colour(channel.style.hue, 0.7, 0.35))
    words = video.title.split()
    text = " ".join(words[:2]) + ("\n" + " ".join(words[2:4]) if len(words) > 2 else "")
    font = ImageFont.load_default(18)
    ImageDraw.Draw(image).multiline_text((WIDTH / 2, HEIGHT / 2), text, (255, 255, 255), font, "mm", align="center")
    return image


def _end_slate(channel: Channel) -> Image.Image:
    image = _solid(hsv_colour(channel.style.hue, 0.5, 0.12))
    ImageDraw.Draw(image).rectangle((WIDTH - 22, HEIGHT - 22, WIDTH - 8, HEIGHT - 8), fill=(200, 200, 200))
    return image


def _solid(colour: tuple[int, int, int]) -> Image.Image:
    return Image.new("RGB", (WIDTH, HEIGHT), colour)


# Sound tracks: float32 mono in -1..1, one synthesiser per genre.


def soundtrack(genre: str, seconds: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(seconds * SAMPLE_RATE, dtype=np.float64) / SAMPLE_RATE
    signal = _GENRES[genre](t, rng)
    return (0.6 * signal / max(1e-9, float(np.abs(signal).max()))).astype(np.float32)


def _music(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Chords of harmonic tones, plucked on every beat, over a kick drum."""
    beat = 60 / rng.uniform(90, 130)
    beat_index = (t / beat).astype(int)
    root = 220 * 2 ** (rng.integers(0, 12) / 12)
    scale = np.array([0, 2, 4, 5, 7, 9, 11])
    bar_roots = root * 2 ** (scale[rng.choice([0, 3, 4, 5], size=beat_index[-1] // 4 + 1)] / 12)
    f0 = bar_roots[beat_index // 4]
    in_beat = (t % beat) / beat
    tones = sum(np.sin(2 * np.pi * f0 * ratio * k * t) / k for ratio in (1.0, 1.25, 1.5) for k in (1, 2, 3)) * np.exp(
        -3 * in_beat
    )
    kick = np.sin(2 * np.pi * 60 * (t % beat)) * np.exp(-25 * (t % beat))
    return tones + 2 * kick


def _beeps(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Square-wave beeps at game-like pitches, with the odd noise burst of an explosion."""
    out = np.zeros_like(t)
    position = 0
    while position < len(t):
        length = int(rng.uniform(0.05, 0.15) * SAMPLE_RATE)
        span = slice(position, position + length)
        if rng.random() < 0.1:
            out[span] = rng.standard_normal(len(t[span])) * np.exp(-np.linspace(0, 5, len(t[span])))
        else:
            out[span] = 0.5 * np.sign(np.sin(2 * np.pi * rng.choice([440, 523, 659, 784, 880, 1047, 1319]) * t[span]))
        position += length + int(rng.uniform(0.02, 0.2) * SAMPLE_RATE)
    return out


def _speech(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A voice-like buzz whose harmonics follow moving formants, chopped into syllables and phrases."""
    pitch = rng.uniform(100, 220) * (1 + 0.12 * np.sin(2 * np.pi * rng.uniform(0.2, 0.5) * t))
    phase = 2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE
    rate = rng.uniform(3.5, 5.5)  # syllables per second
    syllable = (t * rate).astype(int)
    f1 = rng.uniform(300, 800, size=syllable[-1] + 1)[syllable]
    f2 = rng.uniform(900, 2300, size=syllable[-1] + 1)[syllable]
    voice = np.zeros_like(t)
    for k in range(1, 16):
        freq = k * pitch
        weight = np.exp(-(((freq - f1) / 150) ** 2)) + 0.6 * np.exp(-(((freq - f2) / 250) ** 2)) + 0.02
        voice += weight * np.sin(k * phase)
    envelope = np.sin(np.pi * (t * rate % 1.0)) ** 2
    return voice * envelope * _phrases(t, rng) + 0.05 * rng.standard_normal(len(t)) * envelope


def _phrases(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    gate, position = np.zeros_like(t), 0.0
    while position < t[-1]:
        length = rng.uniform(1.2, 3.0)
        gate[(t >= position) & (t < position + length)] = 1.0
        position += length + rng.uniform(0.25, 0.6)
    return gate


def _crowd(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Pink-ish noise that swells and cheers, with a referee's whistle now and then."""
    noise = _coloured_noise(len(t), rng, exponent=0.5)
    swell = 0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(0.1, 0.3) * t + rng.uniform(0, 2 * np.pi))
    for _ in range(rng.integers(1, 3)):
        start = rng.uniform(0, t[-1])
        swell += 1.2 * np.exp(-(((t - start) / 0.6) ** 2))
    whistle_at = rng.uniform(1, max(1.5, t[-1] - 1))
    whistle = (np.abs(t - whistle_at) < 0.4) * np.sin(2 * np.pi * (2800 * t + 5 * np.sin(2 * np.pi * 30 * t)))
    return noise * swell / max(1e-9, float(np.abs(noise).max())) + 0.4 * whistle


def _engine(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A sawtooth drone that revs up and down, over low rumble."""
    revs = np.cumsum(rng.standard_normal(len(t))) / math.sqrt(SAMPLE_RATE)
    revs = (revs - revs.min()) / max(1e-9, float(np.ptp(revs)))
    frequency = 35 + 45 * revs
    cycles = np.cumsum(frequency) / SAMPLE_RATE
    saw = 2 * (cycles % 1.0) - 1
    rumble = _coloured_noise(len(t), rng, exponent=1.0)
    return saw + 0.5 * rumble / max(1e-9, float(np.abs(rumble).max()))


def _mixed(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A presenter talking over a music bed."""
    music, speech = _music(t, rng), _speech(t, rng)
    return 0.7 * music / max(1e-9, float(np.abs(music).max())) + speech / max(1e-9, float(np.abs(speech).max()))


def _coloured_noise(n: int, rng: np.random.Generator, exponent: float) -> np.ndarray:
    """White noise with its power falling as 1/f**(2*exponent): 0.5 is pink, 1.0 brown."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    spectrum /= np.maximum(np.arange(len(spectrum)), 1) ** exponent
    return np.fft.irfft(spectrum, n)


_GENRES: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "music": _music,
    "beeps": _beeps,
    "speech": _speech,
    "crowd": _crowd,
    "engine": _engine,
    "mixed": _mixed,
}
