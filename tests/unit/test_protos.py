"""The protos by the book: `buf lint` clean (with the exceptions buf.yaml gives reasons for), and no breaking change
against the last release, whose image is committed (protos/releases/v0.1.0.binpb: the protos at main before the
Open Inference Protocol readiness and the rich errors, built with `buf build`). The check really fails on a break."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.deploy.chartkit import ROOT, run_tool

RELEASE = ROOT / "protos" / "releases" / "v0.1.0.binpb"


def test_buf_lint_passes() -> None:
    done = run_tool("buf", "lint")
    assert done.returncode == 0, done.stdout + done.stderr


def test_nothing_breaks_clients_of_the_last_release() -> None:
    done = run_tool("buf", "breaking", "--against", str(RELEASE))
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_breaking_check_catches_a_renamed_field(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "protos" / "tubelens", tmp_path / "tubelens")
    shutil.copy(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    (tmp_path / "buf.yaml").write_text((tmp_path / "buf.yaml").read_text().replace("path: protos", "path: ."))
    predictor = tmp_path / "tubelens" / "v1" / "predictor.proto"
    predictor.write_text(predictor.read_text().replace("uint32 top_k = 4;", "uint32 limit = 4;"))
    done = run_tool("buf", "breaking", "--against", str(RELEASE), cwd=tmp_path)
    assert done.returncode != 0 and 'changed name from "top_k" to "limit"' in done.stdout + done.stderr
