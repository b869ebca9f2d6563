"""`tubelens demo --stack`: the demo's pipeline as separate service processes over the local stack (a real broker,
S3 server and TorchServe), printing the same tables as the embedded demo, and leaving nothing running."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def count(out: str, label: str) -> int:
    match = re.search(rf"{re.escape(label)}\s*│\s*(\d+)", out)
    assert match, f"no row {label!r} in:\n{out[-4000:]}"
    return int(match.group(1))


def test_the_stack_demo_runs_every_service_as_a_process_and_serves_over_torchserve(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tubelens.cli", "demo", "--stack", "--videos", "40", "--channels", "8"]
        + ["--workdir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = done.stdout
    assert done.returncode == 0, done.stderr[-4000:] + out[-4000:]
    assert count(out, "videos discovered") == 40
    assert count(out, "dead-lettered") == 5, "one bad input of each kind, each in the dead-letter topic"
    assert count(out, "thumbnails embedded and indexed") == 40 - 4
    for task in ("popularity_bucket", "popularity_regression", "channel"):
        assert f"{task} · time split" in out, "the same evaluation tables as the embedded demo"
    assert re.search(r"│ popularity\s+│ \S+-s7\s+│ yes", out) and re.search(r"│ channel\s+│ \S+-s7\s+│ yes", out)
    assert re.search(r"predictor process \(TorchServe behind it\) at 127\.0\.0\.1:\d+: PredictPopularity answered", out)
    logs = tmp_path / "stack-demo" / "logs"
    assert {path.stem for path in logs.glob("*.log")} >= {
        "crawler",
        "preprocessor",
        "embedding",
        "trainer",
        "predictor",
    }
    assert "the stack was stopped" in out
