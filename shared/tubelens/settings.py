"""Settings from the environment, validated at start-up.

Every variable starts with TUBELENS_ and nests with a double underscore: TUBELENS_KAFKA__BOOTSTRAP,
TUBELENS_OBJECTS__ENDPOINT. `tubelens stack up` writes the addresses of the local stack to an env file that
is read too (TUBELENS_ENV_FILE names it; real environment variables win over it).
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated, TypeVar

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


class BusKind(StrEnum):
    KAFKA = "kafka"
    MEMORY = "memory"


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


class ConsumerSettings(BaseModel):
    batch_size: int = Field(default=100, ge=1, description="messages handled between two commits")
    max_attempts: int = Field(default=5, ge=1, description="handler attempts before a message is dead-lettered")
    backoff_initial_s: float = Field(default=0.2, gt=0)
    backoff_max_s: float = Field(default=10.0, gt=0)


class S3Settings(BaseModel):
    endpoint: str = Field(description="host:port of the S3-compatible server")
    access_key: SecretStr
    secret_key: SecretStr
    bucket: str = "tubelens"
    secure: bool = False
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
    """Build settings or raise ConfigError whose message has one line per missing or invalid value."""
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
