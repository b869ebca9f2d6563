"""Object storage behind one small interface: S3/MinIO for the stack and the cluster, a directory embedded.

Services get a store from `open_store(settings)` and never learn which backend it is.
"""

from __future__ import annotations

from tubelens.errors import ConfigError
from tubelens.objects.base import Content, ObjectInfo, ObjectStore, content_key, validate_key, validate_prefix
from tubelens.objects.local import LocalObjectStore
from tubelens.objects.s3 import S3ObjectStore
from tubelens.settings import ObjectsKind, TubelensSettings

__all__ = [
    "Content",
    "LocalObjectStore",
    "ObjectInfo",
    "ObjectStore",
    "S3ObjectStore",
    "content_key",
    "open_store",
    "validate_key",
    "validate_prefix",
]


def open_store(settings: TubelensSettings) -> ObjectStore:
    """The store `settings.objects` names, with its bucket created if it was missing."""
    store: ObjectStore
    if settings.objects is ObjectsKind.LOCAL:
        store = LocalObjectStore(settings.local.root, settings.local.bucket)
    elif settings.s3 is None:
        raise ConfigError("TUBELENS_S3__ENDPOINT, TUBELENS_S3__ACCESS_KEY, TUBELENS_S3__SECRET_KEY: "
                          "required when TUBELENS_OBJECTS=s3")
    else:
        store = S3ObjectStore(settings.s3)
    store.ensure_bucket()
    return store
