"""Every TUBELENS_* variable the project tells people about (READMEs, docs, error messages, the chart) is one that
some room reads: a renamed setting cannot leave a stale name behind."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tubelens.settings import installed_settings, known_variables

ROOT = Path(__file__).resolve().parents[2]
NAME = re.compile(r"TUBELENS_[A-Z0-9_]*[A-Z0-9]")
# Where names are told to people. Tests are left out: they name wrong variables on purpose.
TOLD = re.compile(r"(\.md|\.py|\.yaml|\.tpl|\.txt|Makefile|Dockerfile[^/]*)$")


def told_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [
        ROOT / name
        for name in listed.split()
        if TOLD.search(name) and not name.startswith(("tests/", "shared/tubelens/v1/"))
    ]


def test_every_variable_named_anywhere_is_read_by_some_room() -> None:
    exact, prefixes = known_variables(*installed_settings())
    stale = {}
    for path in told_files():
        text = path.read_text(errors="replace")
        for found in NAME.finditer(text):
            name = found.group(0)
            if name in exact or name.startswith(tuple(prefixes)):
                continue
            # A family written as a prefix ("TUBELENS_PREDICTOR__TORCHSERVE__*", "TUBELENS_CRAWLER__..."):
            if text[found.end() : found.end() + 2] in ("__", "_*") and any(e.startswith(name + "_") for e in exact):
                continue
            stale.setdefault(name, []).append(str(path.relative_to(ROOT)))
    assert not stale, f"named but read by no room: {stale}"


def test_the_scan_sees_the_readmes() -> None:
    names = {str(path.relative_to(ROOT)) for path in told_files()}
    assert {"README.md", "services/predictor/README.md", "charts/tubelens/templates/_helpers.tpl"} <= names
