"""The `tubelens` command as a user runs it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from tubelens.objects.local import LocalObjectStore


def tubelens(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tubelens.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def row(table: str, label: str) -> int:
    match = re.search(rf"{re.escape(label)}\s*│\s*(\d+)", table)
    assert match, f"no row {label!r} in:\n{table}"
    return int(match.group(1))


def test_demo_crawls_the_stand_in_preprocesses_every_video_and_dead_letters_each_bad_input(tmp_path: Path) -> None:
    done = tubelens(
        "demo", "--videos", "40", "--channels", "8",
        "--workdir", str(tmp_path / "demo"), "--report", str(tmp_path / "report"),
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert row(out, "videos discovered") == 40
    assert row(out, "stats snapshots") == 40
    assert row(out, "thumbnails stored") == 40 - 4, "four of the five bad inputs are thumbnails"
    assert row(out, "videos with frames and audio") > 0
    assert row(out, "dead-lettered") == 5
    assert row(out, "thumbnails embedded and indexed") == 40 - 4
    assert row(out, "frames embedded") == row(out, "frames kept (slates dropped)") > 0
    assert "ImageNet concepts seen most in frames:" in out
    assert out.count("most similar to ") == 3
    assert row(out, "dataset snapshot") > 0 and "videos" in out
    for task in ("popularity_bucket", "popularity_regression", "channel"):
        assert f"{task} · time split" in out
    # The models went into the registry and the predictor answered a real gRPC call before the demo ended.
    assert "models in the registry" in out and re.search(r"│ popularity\s+│ \S+-s7\s+│ yes", out)
    assert re.search(r"predictor \(gRPC, tubelens.v1.Predictor\) at 127\.0\.0\.1:\d+", out)
    assert "PredictPopularity of a known thumbnail, answered by popularity" in out
    assert "tubelens.v1.Predictor/PredictPopularity" in out
    # The HTML report: present, self-contained, and counting the dead letters.
    page = (tmp_path / "report" / "index.html").read_text()
    assert f"HTML report: {tmp_path / 'report' / 'index.html'}" in out
    for section in (
        "Predicted vs actual views",
        "Confusion matrices",
        "Similar thumbnails",
        "drives its predicted views",
    ):
        assert section in page
    assert re.search(r"5\s*(</[a-z]+>\s*)*inputs dead-lettered", page)
    assert "http://" not in page.replace("http://127.0.0.1", "") and "<script src" not in page
    metrics = json.loads((tmp_path / "demo" / "metrics.json").read_text())
    assert metrics["seed"] == 7 and metrics["split_order"] == ["split_time", "split_channel", "split_random"]
    assert {t["task"] for t in metrics["tasks"]} == {"popularity_bucket", "popularity_regression", "channel", "genre"}
    # Even on 40 videos the channel classifier beats its baseline on the time split.
    [channel] = [t for t in metrics["tasks"] if t["task"] == "channel" and t["split_column"] == "split_time"]
    scores = {result["name"]: result["metrics"]["accuracy"] for result in channel["results"]}
    assert scores["image"] > scores["majority"] + 0.3, scores
    for reason in (
        "thumbnail body is empty",
        "an HTML page, not an image",
        "corrupt or truncated JPEG",
        "PNG declares too many pixels",
        "media could not be decoded",
    ):
        assert reason in out
    store = LocalObjectStore(tmp_path / "demo" / "objects", "tubelens")
    assert row(out, "objects in the store") == sum(1 for _ in store.list()) > 0
    assert '"msg": "dead-lettered"' in (tmp_path / "demo" / "demo.log").read_text()


def test_a_service_without_its_settings_names_what_is_missing(tmp_path: Path) -> None:
    done = tubelens("predictor", "run", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "tubelens: TUBELENS_KAFKA__BOOTSTRAP: required when TUBELENS_BUS=kafka",
        "TUBELENS_S3__ENDPOINT, TUBELENS_S3__ACCESS_KEY, TUBELENS_S3__SECRET_KEY: required when TUBELENS_OBJECTS=s3",
    ]


def test_a_bad_argument_is_a_clear_error(tmp_path: Path) -> None:
    done = tubelens("demo", "--videos", "0", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == "tubelens: --videos must be at least 1"
