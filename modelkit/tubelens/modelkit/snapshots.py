"""Reading dataset snapshots: where they live in the object store and how one is checked when it is read back.

The trainer writes snapshots (`tubelens.trainer.dataset`); the trainer and the predictor both read them, so the
layout and the check live here, once. A snapshot is `datasets/<id>/videos.parquet` (rows of `SCHEMA`) beside
`datasets/<id>/manifest.json`, which carries the Parquet bytes' sha256.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tubelens.errors import InvalidInput
from tubelens.modelkit.schema import SCHEMA
from tubelens.objects import ObjectStore

DATASETS_PREFIX = "datasets"
PARQUET_NAME = "videos.parquet"
MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True)
class Snapshot:
    id: str
    key: str  # the Parquet object; the manifest lies beside it
    manifest: dict[str, Any]
    table: pa.Table


def parquet_key(snapshot_id: str) -> str:
    return f"{DATASETS_PREFIX}/{snapshot_id}/{PARQUET_NAME}"


def manifest_key(snapshot_id: str) -> str:
    return f"{DATASETS_PREFIX}/{snapshot_id}/{MANIFEST_NAME}"


def load_snapshot(store: ObjectStore, snapshot_id: str) -> Snapshot:
    """A written snapshot, checked: its bytes must hash to what the manifest says and match SCHEMA."""
    manifest = json.loads(store.get(manifest_key(snapshot_id)))
    data = store.get(parquet_key(snapshot_id))
    if hashlib.sha256(data).hexdigest() != manifest["parquet_sha256"]:
        raise InvalidInput(f"dataset snapshot {snapshot_id}: the Parquet bytes do not match the manifest's sha256")
    table = pq.read_table(io.BytesIO(data))
    if not table.schema.equals(SCHEMA, check_metadata=False):
        raise InvalidInput(f"dataset snapshot {snapshot_id}: its schema is not the trainer's SCHEMA")
    return Snapshot(snapshot_id, parquet_key(snapshot_id), manifest, table)
