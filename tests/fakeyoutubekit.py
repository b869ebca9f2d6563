"""What the fake YouTube tests share: a fixed clock, a catalogue with one video per bad input, and HTTP helpers."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import urllib3

from tubelens.devtools.fakeyoutube import BadInput, Catalogue, FakeYouTube, InputFaults

NOW = datetime(2025, 6, 2, 12, 0, 0, tzinfo=UTC)
KEY = "test-key"
HTTP = urllib3.PoolManager(retries=False, timeout=10.0)


def make_catalogue(seed: int = 7, **kwargs: Any) -> Catalogue:
    kwargs.setdefault("faults", InputFaults(counts=dict.fromkeys(BadInput, 1)))
    return Catalogue.generate(seed, now=NOW, **kwargs)


def get(url: str, params: dict[str, Any] | None = None, **headers: str) -> urllib3.BaseHTTPResponse:
    fields = {k: str(v) for k, v in (params or {}).items() if v is not None}
    return HTTP.request("GET", url, fields=fields, headers=headers or None)


def post(url: str, body: dict) -> urllib3.BaseHTTPResponse:
    return HTTP.request("POST", url, body=json.dumps(body), headers={"Content-Type": "application/json"})


def call(youtube: FakeYouTube, resource: str, **params: Any) -> tuple[int, dict]:
    """One Data API call with the test key unless `key=None` leaves it out."""
    params = {"key": KEY, **params}
    response = get(f"{youtube.api_base}/{resource}", params)
    return response.status, json.loads(response.data)


def ok(youtube: FakeYouTube, resource: str, **params: Any) -> dict:
    status, body = call(youtube, resource, **params)
    assert status == 200, body
    return body
