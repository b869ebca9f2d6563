"""Dataset snapshots in the real S3 server: vectors fetched from it, Parquet and manifest written there, read back."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.datasetkit import NOW, make_world
from tubelens.devtools.servers import ServerProcess
from tubelens.errors import NotFound
from tubelens.modelkit.schema import SCHEMA
from tubelens.modelkit.snapshots import load_snapshot, manifest_key
from tubelens.objects import S3ObjectStore
from tubelens.settings import S3Settings
from tubelens.trainer.dataset import DatasetBuilder


@pytest.fixture
def store(s3_server: ServerProcess, s3_credentials: dict, unique: str) -> S3ObjectStore:
    store = S3ObjectStore(S3Settings(endpoint=s3_server.address, bucket=f"trainer-{unique}", **s3_credentials))
    store.ensure_bucket()
    return store


def test_a_snapshot_is_written_to_and_read_back_from_s3(store: S3ObjectStore) -> None:
    world = make_world(store, channels=4, videos_per_channel=10)
    builder = DatasetBuilder(store)
    for envelope in world.events:
        builder.handle(envelope)

    snapshot = builder.snapshot(seed=3, now=NOW)
    again = builder.snapshot(seed=3, now=NOW + timedelta(hours=1))
    loaded = load_snapshot(store, snapshot.id)

    assert snapshot.table.num_rows == len(world.videos) > 0
    assert again.id.split("-")[1] == snapshot.id.split("-")[1]
    assert loaded.table.equals(snapshot.table)
    assert loaded.table.schema.equals(SCHEMA, check_metadata=False)
    assert loaded.manifest == snapshot.manifest
    assert store.stat(snapshot.key).sha256 == snapshot.manifest["parquet_sha256"]
    assert store.exists(manifest_key(again.id))
    with pytest.raises(NotFound):
        load_snapshot(store, "20250602T120000Z-ffffffff")
