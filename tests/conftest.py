"""Real servers for the whole test session, on free loopback ports, stopped by PID at the end."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tubelens.devtools.servers import S3_ACCESS_KEY, S3_SECRET_KEY, ServerProcess, start_broker, start_s3


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start_broker(tmp_path_factory.mktemp("broker"))
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start_s3(tmp_path_factory.mktemp("s3"))
    yield proc
    proc.stop()


@pytest.fixture
def s3_credentials() -> dict[str, str]:
    return {"access_key": S3_ACCESS_KEY, "secret_key": S3_SECRET_KEY}


@pytest.fixture
def unique() -> str:
    """A short random suffix so that each test owns its topics, groups and buckets."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No TUBELENS_* variable or stack env file of the developer's leaks into a settings test."""
    for name in list(os.environ):
        if name.startswith("TUBELENS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("TUBELENS_ENV_FILE", str(tmp_path / "absent.env"))


@pytest.fixture(scope="session")
def photos() -> dict:
    """Real photos shipped with scikit-image: a cat, an espresso, an astronaut, a rocket."""
    from PIL import Image
    from skimage import data

    return {name: Image.fromarray(getattr(data, name)()) for name in ("chelsea", "coffee", "astronaut", "rocket")}


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory, photos: dict):
    """The backbone exported to ONNX once per session, checked against torch on the real photos."""
    from tubelens.modelkit.export import export_onnx

    return export_onnx(tmp_path_factory.mktemp("models") / "backbone.onnx", check_images=list(photos.values()))


@pytest.fixture(scope="session")
def backbone(exported):
    from tubelens.modelkit.backbone import Backbone

    return Backbone(exported.path, intra_op_threads=2)


@pytest.fixture
def store(tmp_path: Path):
    """A local object store of the test's own; modules that test against the S3 server define their own `store`."""
    from tubelens.objects.local import LocalObjectStore

    local = LocalObjectStore(tmp_path / "objects", "tubelens")
    local.ensure_bucket()
    return local
