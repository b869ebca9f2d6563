"""The stand-in's world: a seeded, deterministic catalogue of channels and videos.

Everything is drawn from `random.Random` instances seeded with strings (stable across processes and Python hash
seeds), one per channel and per video, so the same seed and sizes give a byte-identical catalogue.

Popularity is a planted, learnable signal: a video's final view count is set by its channel's subscribers, its
thumbnail's latent visual features and its title's clickbait words, times log-normal noise. Views at a given age
grow towards that final count and saturate; they never decrease.
"""

from __future__ import annotations

import base64
import math
import random
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from statistics import NormalDist

from tubelens.errors import InvalidInput

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class CategoryProfile:
    title: str
    audio: str  # the character of the sound track media.py synthesises: music, beeps, speech, crowd, engine, mixed
    minutes: tuple[int, int]  # the range of durations the API reports
    topics: tuple[str, ...]
    nouns: tuple[str, ...]


# The categories channels are drawn from, with the real ids and titles of videoCategories.list (regionCode=US).
PROFILES: dict[str, CategoryProfile] = {
    "10": CategoryProfile(
        "Music",
        "music",
        (2, 6),
        ("Lofi", "Piano", "Synthwave", "Acoustic", "Jazz", "Remix", "Cover", "Ballad"),
        ("Mix", "Session", "Track", "Playlist", "Jam", "Medley"),
    ),
    "17": CategoryProfile(
        "Sports",
        "crowd",
        (3, 15),
        ("Football", "Basketball", "Tennis", "Cycling", "Marathon", "Skate", "Surf", "Boxing"),
        ("Highlights", "Match", "Training", "Drills", "Final", "Comeback"),
    ),
    "20": CategoryProfile(
        "Gaming",
        "beeps",
        (8, 40),
        ("Speedrun", "Survival", "Boss Fight", "Roguelike", "Sandbox", "Strategy", "Pixel", "Co-op"),
        ("Playthrough", "Run", "Build", "Challenge", "Guide", "Stream"),
    ),
    "22": CategoryProfile(
        "People & Blogs",
        "speech",
        (4, 20),
        ("Morning Routine", "Travel Day", "Apartment", "Road Trip", "Family", "City Walk", "Weekend", "Storytime"),
        ("Vlog", "Diary", "Day", "Update", "Story", "Chat"),
    ),
    "24": CategoryProfile(
        "Entertainment",
        "mixed",
        (3, 15),
        ("Prank", "Reaction", "Sketch", "Trailer", "Talent", "Magic", "Comedy", "Quiz"),
        ("Show", "Special", "Episode", "Moments", "Compilation", "Night"),
    ),
    "27": CategoryProfile(
        "Education",
        "speech",
        (5, 30),
        ("History", "Math", "Grammar", "Biology", "Geography", "Economics", "Philosophy", "Chemistry"),
        ("Lesson", "Explained", "Lecture", "Course", "Basics", "Revision"),
    ),
    "28": CategoryProfile(
        "Science & Technology",
        "speech",
        (4, 25),
        ("Robot", "Battery", "Laptop", "Quantum", "Rocket", "Smartphone", "Solar", "3D Printer"),
        ("Review", "Teardown", "Explained", "Test", "Benchmark", "Prototype"),
    ),
    "2": CategoryProfile(
        "Autos & Vehicles",
        "engine",
        (5, 20),
        ("EV", "Supercar", "Pickup", "Drift", "Restoration", "Off-road", "Motorbike", "Hybrid"),
        ("Review", "Test Drive", "Build", "Drag Race", "Walkaround", "Road Trip"),
    ),
}

ADJECTIVES = ("Quick", "Complete", "Relaxing", "Honest", "Late Night", "Beginner", "Advanced", "Weekly", "Rainy Day")
# Words that raise views in the popularity model; "Won't" also makes search.list escape an apostrophe (&#39;).
CLICKBAIT = ("INSANE", "SHOCKING", "You Won't Believe This", "EXPOSED", "(GONE WRONG)", "SECRET", "CRAZY", "!!!")
NAME_FIRST = ("Nova", "Pixel", "Kelp", "Atlas", "Echo", "Copper", "Lumen", "Orbit", "Maple", "Quartz", "Vivid", "Ember")
NAME_SECOND = ("Lab", "Studio", "Works", "Club", "Corner", "House", "Channel", "Crew", "Zone", "Factory")
PATTERNS = ("gradient", "stripes", "checker", "rings", "diagonal", "dots")
FACE_SIDES = ("left", "right", "center")
BANNERS = ("top", "bottom")
CORNERS = ("tl", "tr", "bl", "br")
SKIN_TONES: tuple[RGB, ...] = ((241, 194, 125), (224, 172, 105), (198, 134, 66), (141, 85, 36), (255, 219, 172))

ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


class BadInput(StrEnum):
    """What a video's thumbnail or media file is, when it is not what it claims to be."""

    CORRUPT_JPEG = "corrupt_jpeg"  # a JPEG cut short: the header parses, decoding fails
    HTML_THUMBNAIL = "html_thumbnail"  # an HTML error page with Content-Type text/html
    EMPTY_THUMBNAIL = "empty_thumbnail"  # 200 with an empty body
    BOMB_THUMBNAIL = "bomb_thumbnail"  # a PNG that declares 30000x30000 pixels in a few hundred bytes
    UNDECODABLE_MEDIA = "undecodable_media"  # video/mp4 whose bytes are no decodable video (only media videos)


THUMBNAIL_FAULTS = frozenset(BadInput) - {BadInput.UNDECODABLE_MEDIA}


@dataclass(frozen=True)
class InputFaults:
    """Which videos get a bad thumbnail or media file: `counts` picks an exact number per kind; `fraction` of the
    videos visible at `now` more, spread over `kinds` in turn. Victims are chosen deterministically from the seed."""

    fraction: float = 0.0
    kinds: tuple[BadInput, ...] = tuple(BadInput)
    counts: Mapping[BadInput, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ChannelStyle:
    """How a channel's thumbnails look, so that a classifier can tell channels apart."""

    hue: float  # 0..1, the dominant hue
    hue2: float  # the second background hue
    accent_hue: float
    pattern: str
    face_side: str
    banner: str
    logo_corner: str
    skin: RGB
    brightness: float  # the channel's typical visual features; each video varies around them
    saturation: float
    contrast: float
    face_rate: float
    text_rate: float


@dataclass(frozen=True)
class Channel:
    id: str
    title: str
    handle: str
    description: str
    published_at: datetime
    subscribers: int
    category_id: str
    style: ChannelStyle
    clickbait_rate: float
    # Some real feeds write the feed-level <yt:channelId> (and <id>) without the "UC" prefix.
    feed_id_without_uc: bool

    @property
    def uploads_playlist_id(self) -> str:
        return "UU" + self.id[2:]


@dataclass(frozen=True)
class VisualFeatures:
    """Latent features that drive thumbnail rendering and, through `appeal`, popularity. All in 0..1 but text_bars."""

    brightness: float
    saturation: float
    contrast: float
    face: bool
    face_size: float
    text_bars: int  # 0..3 text-like banners

    @property
    def appeal(self) -> float:
        """The thumbnail's contribution to log10 views: brighter, more colourful, contrasty images with a big
        face and a little text do better. A planted signal for the models to find, not a claim about YouTube."""
        face = 0.7 * self.face_size - 0.1 if self.face else -0.2
        return (
            0.8 * (self.brightness - 0.5)
            + 0.8 * (self.saturation - 0.5)
            + 0.5 * (self.contrast - 0.5)
            + face
            + 0.08 * self.text_bars
        )


@dataclass(frozen=True)
class Video:
    id: str
    channel_id: str
    title: str
    description: str
    tags: tuple[str, ...]
    category_id: str
    published_at: datetime
    duration_s: int
    definition: str
    caption: bool
    licensed: bool
    features: VisualFeatures
    clickbait: int  # how many clickbait words the title carries
    final_views: int
    tau_s: float  # the time constant of view growth
    like_rate: float
    comment_rate: float
    has_standard: bool  # sddefault.jpg exists
    has_maxres: bool  # maxresdefault.jpg exists
    has_media: bool
    render_seed: int  # per-video layout variation in thumbnails and media
    bad_input: BadInput | None = None


class Catalogue:
    """Channels and videos, with look-ups by id and views as of any moment."""

    def __init__(self, seed: int, now: datetime, channels: Sequence[Channel], videos: Sequence[Video]) -> None:
        self.seed = seed
        self.now = now
        self.channels = tuple(channels)
        self.videos = tuple(sorted(videos, key=lambda v: (v.published_at, v.id), reverse=True))
        self._channels = {c.id: c for c in self.channels}
        self._by_handle = {c.handle.lower(): c for c in self.channels}
        self._by_playlist = {c.uploads_playlist_id: c for c in self.channels}
        self._videos = {v.id: v for v in self.videos}
        # Oldest first, so that "published by t" is a prefix found by bisection.
        self._uploads: dict[str, list[Video]] = {c.id: [] for c in self.channels}
        for video in reversed(self.videos):
            self._uploads[video.channel_id].append(video)
        self._upload_times = {cid: [v.published_at for v in vs] for cid, vs in self._uploads.items()}

    @classmethod
    def generate(
        cls,
        seed: int,
        channels: int = 8,
        videos_per_channel: int = 25,
        *,
        now: datetime,
        span_days: float = 60.0,
        media_fraction: float = 0.3,
        upcoming_fraction: float = 0.1,
        upcoming_days: float = 7.0,
        faults: InputFaults = InputFaults(),
        channels_per_genre: int = 3,
    ) -> Catalogue:
        """`upcoming_fraction` of each channel's videos are published in the `upcoming_days` after `now`, so that
        advancing the clock reveals new uploads; the rest spread over the `span_days` before `now`.

        Channels share genres, `channels_per_genre` to a genre (at least two genres, at most one per category): a
        model judged on held-out channels must meet genres it saw on other channels, or genre cannot be trained."""
        if channels < 1 or videos_per_channel < 1 or channels_per_genre < 1:
            raise InvalidInput("a catalogue needs at least one channel, one video per channel, one channel per genre")
        if now.tzinfo is None:
            raise InvalidInput("`now` must be timezone-aware")
        now = now.astimezone(UTC).replace(microsecond=0)
        made = _channels(seed, channels, now, channels_per_genre)
        videos = [
            video
            for channel in made
            for video in _videos(seed, channel, videos_per_channel, now, span_days, upcoming_fraction, upcoming_days)
        ]
        videos = _with_media(seed, videos, media_fraction)
        videos = _with_faults(seed, videos, now, faults)
        return cls(seed, now, made, videos)

    # look-ups

    def channel(self, channel_id: str) -> Channel | None:
        return self._channels.get(channel_id)

    def channel_by_handle(self, handle: str) -> Channel | None:
        return self._by_handle.get(handle.lower() if handle.startswith("@") else "@" + handle.lower())

    def channel_by_playlist(self, playlist_id: str) -> Channel | None:
        return self._by_playlist.get(playlist_id)

    def video(self, video_id: str) -> Video | None:
        return self._videos.get(video_id)

    def visible(self, when: datetime) -> list[Video]:
        """Videos published by `when`, newest first."""
        return [v for v in self.videos if v.published_at <= when]

    def uploads(self, channel_id: str, when: datetime) -> list[Video]:
        """A channel's videos published by `when`, newest first (the uploads playlist's order)."""
        cut = bisect_right(self._upload_times[channel_id], when)
        return self._uploads[channel_id][:cut][::-1]

    # statistics as of a moment

    def views_at(self, video: Video, when: datetime) -> int:
        age = (when - video.published_at).total_seconds()
        if age <= 0:
            return 0
        return int(video.final_views * -math.expm1(-age / video.tau_s))

    def likes_at(self, video: Video, when: datetime) -> int:
        return int(self.views_at(video, when) * video.like_rate)

    def comments_at(self, video: Video, when: datetime) -> int:
        return int(self.views_at(video, when) * video.comment_rate)

    # what tests and the demo predict from

    @property
    def bad_inputs(self) -> dict[str, BadInput]:
        return {v.id: v.bad_input for v in self.videos if v.bad_input is not None}

    @property
    def media_video_ids(self) -> list[str]:
        return [v.id for v in self.videos if v.has_media]

    def summary(self) -> dict:
        return {
            "seed": self.seed,
            "now": rfc3339(self.now),
            "channels": [
                {"id": c.id, "title": c.title, "categoryId": c.category_id, "subscribers": c.subscribers}
                for c in self.channels
            ],
            "videos": len(self.videos),
            "mediaVideoIds": self.media_video_ids,
            "badInputs": {vid: str(kind) for vid, kind in self.bad_inputs.items()},
        }


def rfc3339(when: datetime) -> str:
    """The API's timestamp form: UTC, seconds, Z."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_duration(seconds: int) -> str:
    """contentDetails.duration as the API writes it: PT#H#M#S, leaving out zero parts."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{n}{unit}" for n, unit in ((hours, "H"), (minutes, "M"), (secs, "S")) if n]
    return "PT" + ("".join(parts) or "0S")


def _rng(seed: int, *scope: object) -> random.Random:
    return random.Random(":".join(map(str, (seed, *scope))))


def _youtube_id(rng: random.Random, n_bytes: int, n_chars: int) -> str:
    """Base64url of random bytes, as YouTube's ids are: the last character only takes the values its bits allow."""
    return base64.urlsafe_b64encode(rng.randbytes(n_bytes)).decode()[:n_chars]


def _channels(seed: int, count: int, now: datetime, per_genre: int) -> list[Channel]:
    rng = _rng(seed, "channels")
    categories = list(PROFILES)
    rng.shuffle(categories)
    categories = categories[: min(len(categories), max(2, math.ceil(count / per_genre)))]
    ranks = rng.sample(range(count), count)  # subscriber ranks: stratified so every catalogue spans the range
    hue_slots = rng.sample(range(count), count)
    hue_offset = rng.random()
    names = rng.sample([(a, b) for a in NAME_FIRST for b in NAME_SECOND], count)
    channels, ids = [], set()
    for index in range(count):
        crng = _rng(seed, "channel", index)
        channel_id = "UC" + _youtube_id(crng, 16, 22)
        while channel_id in ids:
            channel_id = "UC" + _youtube_id(crng, 16, 22)
        ids.add(channel_id)
        category_id = categories[index % len(categories)]
        log_subs = 5.0 + 1.3 * NormalDist().inv_cdf((ranks[index] + 0.5) / count) + crng.gauss(0, 0.1)
        title = f"{names[index][0]} {PROFILES[category_id].title.split()[0]} {names[index][1]}"
        channels.append(
            Channel(
                id=channel_id,
                title=title,
                handle="@" + title.replace(" ", "").replace("&", "and").lower(),
                description=f"{title}: {PROFILES[category_id].title.lower()} videos every week.",
                published_at=now - timedelta(days=crng.uniform(400, 4000), seconds=crng.randrange(86400)),
                subscribers=max(100, round(10**log_subs)),
                category_id=category_id,
                style=_style(crng, index, (hue_offset + hue_slots[index] / count) % 1.0),
                clickbait_rate=crng.uniform(0.05, 0.5),
                feed_id_without_uc=index % 2 == 1,
            )
        )
    return channels


def _style(rng: random.Random, index: int, hue: float) -> ChannelStyle:
    return ChannelStyle(
        hue=hue,
        hue2=(hue + rng.choice((0.06, -0.06, 0.5, 0.33))) % 1.0,
        accent_hue=(hue + rng.uniform(0.35, 0.65)) % 1.0,
        pattern=PATTERNS[index % len(PATTERNS)],
        face_side=FACE_SIDES[index % len(FACE_SIDES)],
        banner=BANNERS[(index // len(FACE_SIDES)) % len(BANNERS)],
        logo_corner=CORNERS[index % len(CORNERS)],
        skin=rng.choice(SKIN_TONES),
        brightness=rng.uniform(0.3, 0.75),
        saturation=rng.uniform(0.3, 0.8),
        contrast=rng.uniform(0.3, 0.8),
        face_rate=rng.uniform(0.3, 0.95),
        text_rate=rng.uniform(0.2, 0.8),
    )


def _videos(
    seed: int,
    channel: Channel,
    count: int,
    now: datetime,
    span_days: float,
    upcoming_fraction: float,
    upcoming_days: float,
) -> list[Video]:
    rng = _rng(seed, "uploads", channel.id)
    upcoming = round(count * upcoming_fraction)
    offsets = [rng.uniform(-span_days, 0) for _ in range(count - upcoming)]
    offsets += [rng.uniform(0, upcoming_days) for _ in range(upcoming)]
    return [_video(seed, channel, i, now + timedelta(days=offset)) for i, offset in enumerate(offsets)]


def _video(seed: int, channel: Channel, index: int, published_at: datetime) -> Video:
    rng = _rng(seed, "video", channel.id, index)
    video_id = _youtube_id(rng, 8, 11)
    category_id = channel.category_id if rng.random() < 0.95 else rng.choice(list(PROFILES))
    profile = PROFILES[category_id]
    topic, noun = rng.choice(profile.topics), rng.choice(profile.nouns)
    title, clickbait = _title(rng, topic, noun, channel.clickbait_rate)
    features = _features(rng, channel.style, clickbait)
    log_views = math.log10(channel.subscribers) + 0.1 + features.appeal + 0.25 * clickbait + rng.gauss(0, 0.45)
    has_standard = rng.random() < 0.85
    return Video(
        id=video_id,
        channel_id=channel.id,
        title=title,
        description=_description(rng, channel, topic, noun),
        tags=_tags(rng, channel, profile, topic, noun),
        category_id=category_id,
        published_at=published_at.replace(microsecond=0),
        duration_s=rng.randint(profile.minutes[0] * 60, profile.minutes[1] * 60),
        definition="hd" if rng.random() < 0.9 else "sd",
        caption=rng.random() < 0.3,
        licensed=rng.random() < 0.5,
        features=features,
        clickbait=clickbait,
        final_views=max(10, round(10 ** max(1.0, log_views))),
        tau_s=86400 * math.exp(rng.gauss(math.log(3.0), 0.4)),
        like_rate=math.exp(rng.gauss(math.log(0.03), 0.4)),
        comment_rate=math.exp(rng.gauss(math.log(0.003), 0.5)),
        has_standard=has_standard,
        has_maxres=has_standard and rng.random() < 0.75,
        has_media=False,
        render_seed=rng.getrandbits(32),
    )


def _title(rng: random.Random, topic: str, noun: str, clickbait_rate: float) -> tuple[str, int]:
    templates = (
        "{topic} {noun}",
        "{adj} {topic} {noun}",
        "My First {topic} {noun}",
        "{topic} {noun} #{n}",
        "{topic} in {n} Minutes",
        "Why {topic} Matters",
    )
    title = rng.choice(templates).format(topic=topic, noun=noun, adj=rng.choice(ADJECTIVES), n=rng.randint(2, 20))
    words = rng.sample(CLICKBAIT, sum(rng.random() < clickbait_rate for _ in range(3)))
    for word in words:
        title = f"{word} {title}" if rng.random() < 0.5 else f"{title} {word}"
    return title, len(words)


def _features(rng: random.Random, style: ChannelStyle, clickbait: int) -> VisualFeatures:
    def around(mean: float) -> float:
        return min(1.0, max(0.0, rng.gauss(mean, 0.15)))

    face = rng.random() < style.face_rate
    # Clickbait titles come with busier thumbnails, as they tend to on YouTube.
    text_bars = min(3, sum(rng.random() < style.text_rate for _ in range(2)) + (clickbait > 0))
    return VisualFeatures(
        brightness=around(style.brightness),
        saturation=around(style.saturation),
        contrast=around(style.contrast),
        face=face,
        face_size=rng.uniform(0.35, 1.0) if face else 0.0,
        text_bars=text_bars,
    )


def _description(rng: random.Random, channel: Channel, topic: str, noun: str) -> str:
    opening = rng.choice(
        (
            f"Everything about {topic.lower()} in one {noun.lower()}.",
            f"This week: {topic.lower()}, start to finish.",
            f"A {noun.lower()} on {topic.lower()} we have wanted to make for a long time.",
        )
    )
    return f"{opening}\n\nNew videos every week on {channel.title}. Subscribe for more!"


def _tags(rng: random.Random, channel: Channel, profile: CategoryProfile, topic: str, noun: str) -> tuple[str, ...]:
    if rng.random() < 0.1:
        return ()  # the API leaves `tags` out for such videos
    extra = rng.sample(profile.topics, rng.randint(1, 4))
    tags = [topic.lower(), noun.lower(), channel.title.lower(), *(t.lower() for t in extra)]
    return tuple(dict.fromkeys(tags))


def _with_media(seed: int, videos: list[Video], fraction: float) -> list[Video]:
    count = round(len(videos) * fraction)
    chosen = set(_rng(seed, "media").sample(sorted(v.id for v in videos), count))
    return [replace(v, has_media=v.id in chosen) for v in videos]


def _with_faults(seed: int, videos: list[Video], now: datetime, faults: InputFaults) -> list[Video]:
    visible = sorted((v for v in videos if v.published_at <= now), key=lambda v: v.id)
    wanted = dict(faults.counts)
    spread = round(len(visible) * faults.fraction)
    for i in range(spread):
        kind = faults.kinds[i % len(faults.kinds)]
        wanted[kind] = wanted.get(kind, 0) + 1
    rng = _rng(seed, "faults")
    rng.shuffle(visible)
    assigned: dict[str, BadInput] = {}
    # Media faults first: they can only go to the fewer videos that have media.
    for kind in sorted(wanted, key=lambda k: k is not BadInput.UNDECODABLE_MEDIA):
        pool = [v for v in visible if v.id not in assigned and (kind is not BadInput.UNDECODABLE_MEDIA or v.has_media)]
        if wanted[kind] > len(pool):
            raise InvalidInput(f"{wanted[kind]} videos with {kind} asked for, only {len(pool)} can have it")
        assigned.update((v.id, kind) for v in pool[: wanted[kind]])
    return [replace(v, bad_input=assigned.get(v.id)) for v in videos]
