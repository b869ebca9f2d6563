"""Settings come from the environment (and the stack's env file) and fail fast with one line per problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from tubelens.errors import ConfigError
from tubelens.settings import BusKind, ObjectsKind, load_settings

pytestmark = pytest.mark.usefixtures("clean_env")


def test_kafka_and_s3_settings_are_read_from_nested_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUBELENS_KAFKA__BOOTSTRAP", "127.0.0.1:19092")
    monkeypatch.setenv("TUBELENS_KAFKA__PARTITIONS", "3")
    monkeypatch.setenv("TUBELENS_S3__ENDPOINT", "127.0.0.1:19000")
    monkeypatch.setenv("TUBELENS_S3__ACCESS_KEY", "key")
    monkeypatch.setenv("TUBELENS_S3__SECRET_KEY", "very-secret")
    settings = load_settings()
    assert settings.bus is BusKind.KAFKA and settings.objects is ObjectsKind.S3
    assert settings.kafka.bootstrap == "127.0.0.1:19092" and settings.kafka.partitions == 3
    assert settings.s3.secret_key.get_secret_value() == "very-secret"
    assert "very-secret" not in repr(settings), "secrets never show in logs or reprs"


def test_each_missing_value_gets_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUBELENS_S3__ENDPOINT", "127.0.0.1:19000")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert caught.value.message.splitlines() == [
        "TUBELENS_S3__ACCESS_KEY: required but not set",
        "TUBELENS_S3__SECRET_KEY: required but not set",
    ]


def test_the_chosen_backends_must_be_configured() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings()
    lines = caught.value.message.splitlines()
    assert lines[0] == "TUBELENS_KAFKA__BOOTSTRAP: required when TUBELENS_BUS=kafka"
    assert lines[1].endswith("required when TUBELENS_OBJECTS=s3")


def test_an_invalid_value_names_the_variable_and_what_was_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUBELENS_BUS", "rabbit")
    monkeypatch.setenv("TUBELENS_METRICS_PORT", "99999")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    lines = caught.value.message.splitlines()
    assert any(line.startswith("TUBELENS_BUS:") and "'rabbit'" in line for line in lines)
    assert any(line.startswith("TUBELENS_METRICS_PORT:") and "'99999'" in line for line in lines)


def test_the_embedded_mode_needs_no_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUBELENS_BUS", "memory")
    monkeypatch.setenv("TUBELENS_OBJECTS", "local")
    settings = load_settings()
    assert settings.kafka is None and settings.s3 is None


def test_the_stack_env_file_is_read_and_real_variables_win(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env_file = tmp_path / "stack.env"
    env_file.write_text("TUBELENS_KAFKA__BOOTSTRAP=127.0.0.1:1111\nTUBELENS_OBJECTS=local\nTUBELENS_LOG_LEVEL=DEBUG\n")
    monkeypatch.setenv("TUBELENS_ENV_FILE", str(env_file))
    monkeypatch.setenv("TUBELENS_LOG_LEVEL", "WARNING")
    settings = load_settings()
    assert settings.kafka.bootstrap == "127.0.0.1:1111"
    assert settings.log_level == "WARNING"


def test_a_missing_section_names_the_variables_it_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    from tubelens.crawler.settings import CrawlerServiceSettings

    monkeypatch.setenv("TUBELENS_BUS", "memory")
    monkeypatch.setenv("TUBELENS_OBJECTS", "local")
    with pytest.raises(ConfigError) as caught:
        load_settings(CrawlerServiceSettings)
    assert caught.value.message == "TUBELENS_CRAWLER__API_KEY: required but not set"


def test_comma_separated_lists_and_unparseable_values(monkeypatch: pytest.MonkeyPatch) -> None:
    from tubelens.crawler.settings import CrawlerServiceSettings

    monkeypatch.setenv("TUBELENS_BUS", "memory")
    monkeypatch.setenv("TUBELENS_OBJECTS", "local")
    monkeypatch.setenv("TUBELENS_CRAWLER__API_KEY", "k")
    monkeypatch.setenv("TUBELENS_CRAWLER__CHANNELS", "UCa, UCb")
    monkeypatch.setenv("TUBELENS_CRAWLER__REFRESH_SLOTS", "1h,2d")
    settings = load_settings(CrawlerServiceSettings)
    assert settings.crawler.channels == ["UCa", "UCb"]
    assert settings.crawler.slot_seconds() == {"1h": 3600, "2d": 172800}
    monkeypatch.setenv("TUBELENS_CRAWLER__REFRESH_SLOTS", "soon")
    with pytest.raises(ConfigError, match="TUBELENS_CRAWLER__REFRESH_SLOTS: .*not a positive number"):
        load_settings(CrawlerServiceSettings)


def test_an_unknown_variable_stops_start_up_naming_the_nearest_valid_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUBELENS_BUS", "memory")
    monkeypatch.setenv("TUBELENS_OBJECTS", "local")
    monkeypatch.setenv("TUBELENS_OBJECTS__ENDPOINT", "127.0.0.1:9000")
    monkeypatch.setenv("TUBELENS_PREDICTOR__ALLOWED_HOSTS", "i.ytimg.com")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert caught.value.message.splitlines() == [
        "TUBELENS_OBJECTS__ENDPOINT: no tubelens setting has this name; did you mean TUBELENS_S3__ENDPOINT?",
        "TUBELENS_PREDICTOR__ALLOWED_HOSTS: no tubelens setting has this name; "
        "did you mean TUBELENS_PREDICTOR__API__ALLOWED_HOSTS?",
    ]


def test_an_unknown_variable_in_the_env_file_is_refused_too(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env = tmp_path / "stack.env"
    env.write_text("TUBELENS_BUS=memory\nTUBELENS_OBJECTS=local\nTUBELENS_KAFKA__BOOTSTARP=127.0.0.1:1\n")
    monkeypatch.setenv("TUBELENS_ENV_FILE", str(env))
    with pytest.raises(ConfigError, match="TUBELENS_KAFKA__BOOTSTARP: .* did you mean TUBELENS_KAFKA__BOOTSTRAP"):
        load_settings()


def test_every_field_of_every_installed_room_is_a_known_name_and_mappings_take_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tubelens.settings import installed_settings, known_variables

    exact, prefixes = known_variables(*installed_settings())
    assert {"TUBELENS_KAFKA__BOOTSTRAP", "TUBELENS_PREDICTOR__API__ALLOWED_HOSTS", "TUBELENS_CRAWLER__CHANNELS"} <= set(
        exact
    )
    assert "TUBELENS_TRAINER__KUBERNETES__NODE_SELECTOR__" in prefixes
    monkeypatch.setenv("TUBELENS_BUS", "memory")
    monkeypatch.setenv("TUBELENS_OBJECTS", "local")
    monkeypatch.setenv("TUBELENS_TRAINER__KUBERNETES__NODE_SELECTOR__GPU", "a100")
    monkeypatch.setenv("TUBELENS_PREDICTOR__API__GRPC_PORT", "0")  # another room's setting: read by that room
    assert load_settings().bus is BusKind.MEMORY
