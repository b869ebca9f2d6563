"""Settings from the environment, validated at start-up.

Every variable starts with TUBELENS_ and nests with a double underscore: TUBELENS_KAFKA__BOOTSTRAP,
TUBELENS_S3__ENDPOINT. `tubelens stack up` writes the addresses of the local stack to an env file that
is read too (TUBELENS_ENV_FILE names it; real environment variables win over it).

A TUBELENS_* variable that no installed room reads stops the service with one line naming it and the nearest valid
name: a typo must not silently leave a default in place. Each room registers its settings class under the
`tubelens.settings` entry points; the valid names are every field of every installed class.
"""

from __future__ import annotations

import difflib
import os
import types
import typing
from collections.abc import Iterator, Mapping
from enum import StrEnum
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, TypeVar

from dotenv import dotenv_values
from pydantic import BaseModel, BeforeValidator, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from tubelens.errors import ConfigError


def _host_list(value: object) -> object:
    """Allowlisted host names: comma-separated in the environment, compared case-insensitively as DNS names are."""
    if isinstance(value, str):
        return tuple(host.strip().lower().rstrip(".") for host in value.split(",") if host.strip())
    return value


HostList = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_host_list)]

DEFAULT_ENV_FILE = Path(".tubelens") / "stack.env"
PREFIX = "TUBELENS_"
SETTINGS_GROUP = "tubelens.settings"
# Read by name rather than through a settings class: where the env file is, and the build a Job records.
DIRECT_VARIABLES = frozenset({"TUBELENS_ENV_FILE", "TUBELENS_CODE_VERSION"})


class BusKind(StrEnum):
    KAFKA = "kafka"
    MEMORY = "memory"


class KafkaClient(StrEnum):
    KAFKA_PYTHON = "kafka-python"
    CONFLUENT = "confluent"


class ObjectsKind(StrEnum):
    S3 = "s3"
    LOCAL = "local"


class KafkaSettings(BaseModel):
    bootstrap: str = Field(description="host:port[,host:port]")
    client_id: str = "tubelens"
    partitions: int = Field(default=6, ge=1, description="partitions for topics this process creates")
    session_timeout_ms: int = Field(default=10_000, ge=1_000)
    request_timeout_ms: int = Field(default=30_000, ge=1_000)
    connect_timeout_ms: int = Field(default=15_000, ge=100, description="give up on an unreachable broker")
    delivery_timeout_ms: int = Field(default=60_000, ge=1_000)
    client: KafkaClient = Field(
        default=KafkaClient.KAFKA_PYTHON,
        description="kafka-python (pure Python, the default) or confluent (librdkafka: several times the throughput)",
    )
    max_message_bytes: int = Field(
        default=1_048_576,
        ge=65_536,
        description="the largest message on any topic: the producer's max_request_size, the consumer's fetch sizes "
        "and the broker's max.message.bytes (the chart's kafka.maxMessageBytes) are this one value",
    )
    security_protocol: str = Field(default="PLAINTEXT", pattern="^(PLAINTEXT|SSL|SASL_PLAINTEXT|SASL_SSL)$")
    sasl_mechanism: str = Field(default="PLAIN", pattern="^(PLAIN|SCRAM-SHA-256|SCRAM-SHA-512)$")
    sasl_username: str = ""
    sasl_password: SecretStr = SecretStr("")
    ssl_cafile: Path | None = Field(default=None, description="CA bundle that signed the brokers' certificates")


class ConsumerSettings(BaseModel):
    batch_size: int = Field(default=100, ge=1, description="messages handled between two commits")
    max_attempts: int = Field(default=5, ge=1, description="handler attempts before a message is dead-lettered")
    backoff_initial_s: float = Field(default=0.2, gt=0)
    backoff_max_s: float = Field(default=10.0, gt=0)
    outage_backoff_max_s: float = Field(
        default=30.0, gt=0, description="cap of the backoff while a dependency is unavailable (consuming is paused)"
    )
    seen_ids: int = Field(default=100_000, ge=0, description="event ids remembered to skip redelivered duplicates")


class S3Settings(BaseModel):
    endpoint: str = Field(description="host:port of the S3-compatible server")
    access_key: SecretStr
    secret_key: SecretStr
    bucket: str = "tubelens"
    secure: bool = False
    ca_file: Path | None = Field(default=None, description="CA bundle that signed the server's certificate (TLS)")
    region: str = "us-east-1"
    part_size_mb: int = Field(default=16, ge=5, description="multipart part size")


class LocalObjectsSettings(BaseModel):
    root: Path = Path(".tubelens") / "objects"
    bucket: str = "tubelens"


class TubelensSettings(BaseSettings):
    """What every service needs; a service subclasses it to add its own section."""

    model_config = SettingsConfigDict(
        env_prefix="TUBELENS_",
        env_nested_delimiter="__",
        env_file=None,
        extra="ignore",
    )

    service: str = "tubelens"
    log_level: str = "INFO"
    metrics_port: int = Field(default=9100, ge=0, le=65535, description="0 picks a free port")
    bus: BusKind = BusKind.KAFKA
    objects: ObjectsKind = ObjectsKind.S3
    kafka: KafkaSettings | None = None
    s3: S3Settings | None = None
    local: LocalObjectsSettings = LocalObjectsSettings()
    consumer: ConsumerSettings = ConsumerSettings()

    def require_backends(self) -> None:
        """The sections the chosen backends need must be present."""
        missing = []
        if self.bus is BusKind.KAFKA and self.kafka is None:
            missing.append("TUBELENS_KAFKA__BOOTSTRAP: required when TUBELENS_BUS=kafka")
        if self.objects is ObjectsKind.S3 and self.s3 is None:
            missing.append(
                "TUBELENS_S3__ENDPOINT, TUBELENS_S3__ACCESS_KEY, TUBELENS_S3__SECRET_KEY: "
                "required when TUBELENS_OBJECTS=s3"
            )
        if missing:
            raise ConfigError("\n".join(missing))


S = TypeVar("S", bound=TubelensSettings)


def env_file() -> Path | None:
    path = Path(os.environ.get("TUBELENS_ENV_FILE", DEFAULT_ENV_FILE))
    return path if path.is_file() else None


def load_settings(cls: type[S] = TubelensSettings, **overrides: object) -> S:  # type: ignore[assignment]
    """Build settings or raise ConfigError whose message has one line per missing, invalid or unknown value."""
    check_variables(_tubelens_variables(), known_variables(cls, *installed_settings()))
    try:
        settings = cls(_env_file=env_file(), **overrides)  # type: ignore[call-arg]
    except ValidationError as exc:
        raise ConfigError("\n".join(line for err in exc.errors() for line in _describe(cls, err))) from None
    except SettingsError as exc:  # a value the environment source could not even parse
        raise ConfigError(f"{exc}: {exc.__cause__}" if exc.__cause__ else str(exc)) from None
    settings.require_backends()
    return settings


def _describe(cls: type[BaseModel], err: dict) -> list[str]:
    path = [str(p) for p in err["loc"]]
    variable = "TUBELENS_" + "__".join(p.upper() for p in path)
    if err["type"] != "missing":
        return [f"{variable}: {err['msg']} (got {err.get('input')!r})"]
    section = _model_at(cls, path)
    if section is None:
        return [f"{variable}: required but not set"]
    # A whole section is missing: name the variables it needs, not the section.
    return [
        f"{variable}__{name.upper()}: required but not set"
        for name, f in section.model_fields.items()
        if f.is_required()
    ]


def _model_at(cls: type[BaseModel], path: list[str]) -> type[BaseModel] | None:
    """The settings model a missing location points at, when it is a section rather than a value."""
    annotation: object = cls
    for name in path:
        fields = getattr(annotation, "model_fields", None)
        if not fields or name not in fields:
            return None
        annotation = fields[name].annotation
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def installed_settings() -> list[type[BaseModel]]:
    """The settings class of every installed room (the `tubelens.settings` entry points)."""
    return [point.load() for point in entry_points(group=SETTINGS_GROUP)]


def known_variables(*classes: type[BaseModel]) -> tuple[frozenset[str], frozenset[str]]:
    """(exact names, prefixes): every leaf field as a variable; a mapping field also takes `<NAME>__<key>`."""
    exact, prefixes = set(DIRECT_VARIABLES), set()
    for cls in classes:
        for name, is_mapping in _leaves(cls, PREFIX):
            exact.add(name)
            if is_mapping:
                prefixes.add(name + "__")
    return frozenset(exact), frozenset(prefixes)


def check_variables(names: list[str], known: tuple[frozenset[str], frozenset[str]]) -> None:
    """ConfigError with one line per variable that no setting reads, with the nearest valid name."""
    exact, prefixes = known
    unknown = [name for name in names if name not in exact and not name.startswith(tuple(prefixes))]
    if unknown:
        raise ConfigError("\n".join(_unknown_line(name, exact) for name in sorted(unknown)))


def _unknown_line(name: str, exact: frozenset[str]) -> str:
    nearest = difflib.get_close_matches(name, sorted(exact), n=1, cutoff=0.5)
    hint = f"; did you mean {nearest[0]}?" if nearest else ""
    return f"{name}: no tubelens setting has this name{hint}"


def _tubelens_variables() -> list[str]:
    """TUBELENS_* names in the environment and in the env file."""
    names = {name for name in os.environ if name.startswith(PREFIX)}
    path = env_file()
    if path is not None:
        names |= {name for name in _env_file_names(path) if name.startswith(PREFIX)}
    return sorted(names)


def _env_file_names(path: Path) -> list[str]:
    return list(dotenv_values(path))  # python-dotenv: the parser pydantic-settings reads the file with


def _leaves(cls: type[BaseModel], prefix: str) -> Iterator[tuple[str, bool]]:
    for field_name, info in cls.model_fields.items():
        name = prefix + field_name.upper()
        section = _section(info.annotation)
        if section is not None:
            yield name, False  # a whole section may come as one JSON value
            yield from _leaves(section, name + "__")
        else:
            yield name, _is_mapping(info.annotation)


def _section(annotation: object) -> type[BaseModel] | None:
    """The settings model a field holds, through `X | None`."""
    for candidate in _alternatives(annotation):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _is_mapping(annotation: object) -> bool:
    return any(typing.get_origin(candidate) in (dict, Mapping) for candidate in _alternatives(annotation))


def _alternatives(annotation: object) -> tuple[object, ...]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)
