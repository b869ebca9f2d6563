"""The preprocessor's settings: TUBELENS_PREPROCESSOR__<FIELD>, e.g. TUBELENS_PREPROCESSOR__ALLOWED_HOSTS."""

from __future__ import annotations

from pydantic import BaseModel, Field

from tubelens.fetch import YOUTUBE_IMAGE_HOSTS
from tubelens.settings import HostList, TubelensSettings

MB = 1024 * 1024


class PreprocessorSettings(BaseModel):
    allowed_hosts: HostList = Field(
        default=YOUTUBE_IMAGE_HOSTS,
        min_length=1,
        description="hosts thumbnails and media may be fetched from (comma-separated); every redirect is checked too",
    )
    thumbnail_max_bytes: int = Field(default=2 * MB, ge=1)
    media_max_bytes: int = Field(default=64 * MB, ge=1)
    max_pixels: int = Field(default=40_000_000, ge=1, description="larger declared images or frames are TooLarge")
    connect_timeout_s: float = Field(default=3.0, gt=0)
    read_timeout_s: float = Field(default=10.0, gt=0, description="longest wait for the next bytes")
    thumbnail_deadline_s: float = Field(default=20.0, gt=0, description="longest a whole thumbnail fetch may take")
    media_deadline_s: float = Field(default=300.0, gt=0, description="longest a whole media fetch may take")
    max_redirects: int = Field(default=3, ge=0)
    frame_fps: float = Field(default=1.0, gt=0, le=60, description="frames sampled per second of video")
    frame_short_side: int = Field(default=224, ge=16, description="sampled frames are scaled down to this")
    max_frames: int = Field(default=3600, ge=1, description="a video that samples more frames is TooLarge")
    slate_tolerance: int = Field(
        default=12, ge=0, le=255, description="grey levels from the dominant one that still count as background"
    )
    slate_uniform_fraction: float = Field(
        default=0.85, gt=0, le=1, description="a frame this much background is a slate (a title on a plain card)"
    )
    slate_static_diff: float = Field(
        default=1.5, ge=0, description="mean grey-level change under which a frame is as still as a slate"
    )
    mel_bands: int = Field(default=64, ge=8, le=128)


class PreprocessorServiceSettings(TubelensSettings):
    service: str = "preprocessor"
    preprocessor: PreprocessorSettings = PreprocessorSettings()
