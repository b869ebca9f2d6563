"""The preprocessor's settings come from TUBELENS_PREPROCESSOR__* and reach the handler the service builds."""

from __future__ import annotations

from pathlib import Path

import pytest

from tubelens.bus.memory import MemoryBus
from tubelens.errors import ConfigError
from tubelens.objects import LocalObjectStore
from tubelens.preprocessor.main import build_handler
from tubelens.preprocessor.settings import YOUTUBE_IMAGE_HOSTS, PreprocessorServiceSettings
from tubelens.service import Runtime
from tubelens.settings import load_settings


@pytest.fixture(autouse=True)
def embedded_env(clean_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUBELENS_BUS", "memory")
    monkeypatch.setenv("TUBELENS_OBJECTS", "local")


def test_by_default_only_youtubes_image_hosts_are_allowed() -> None:
    settings = load_settings(PreprocessorServiceSettings)
    assert settings.service == "preprocessor"
    assert settings.preprocessor.allowed_hosts == YOUTUBE_IMAGE_HOSTS
    assert "i.ytimg.com" in YOUTUBE_IMAGE_HOSTS
    assert settings.preprocessor.thumbnail_max_bytes == 2 * 1024 * 1024
    assert settings.preprocessor.media_max_bytes == 64 * 1024 * 1024
    assert settings.preprocessor.frame_fps == 1.0


def test_allowed_hosts_are_a_comma_separated_list_compared_case_insensitively(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUBELENS_PREPROCESSOR__ALLOWED_HOSTS", " 127.0.0.1, Images.Example.ORG. ,")
    monkeypatch.setenv("TUBELENS_PREPROCESSOR__FRAME_FPS", "24")
    settings = load_settings(PreprocessorServiceSettings).preprocessor
    assert settings.allowed_hosts == ("127.0.0.1", "images.example.org")
    assert settings.frame_fps == 24.0


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TUBELENS_PREPROCESSOR__ALLOWED_HOSTS", " , "),
        ("TUBELENS_PREPROCESSOR__FRAME_FPS", "0"),
        ("TUBELENS_PREPROCESSOR__THUMBNAIL_MAX_BYTES", "lots"),
    ],
)
def test_an_invalid_value_stops_the_service_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings(PreprocessorServiceSettings)
    assert caught.value.message.startswith(f"{variable}:")


def test_the_service_builds_its_handler_from_the_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TUBELENS_PREPROCESSOR__ALLOWED_HOSTS", "127.0.0.1")
    settings = load_settings(PreprocessorServiceSettings)
    bus = MemoryBus()
    runtime = Runtime(settings, bus, bus.producer(), LocalObjectStore(tmp_path, "tubelens"))

    handler = build_handler(runtime)

    assert handler.fetcher.allowed_hosts == frozenset({"127.0.0.1"})
    assert (handler.store, handler.producer, handler.service) == (runtime.objects, runtime.producer, "preprocessor")
