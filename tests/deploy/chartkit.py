"""Render the chart with the fetched helm and look at what came out.

The tools live in .tubelens/tools/bin (`make tools`, which `make test` runs first); a missing tool fails the test
that needs it, with the command that fetches it, rather than skipping it.
"""

from __future__ import annotations

import functools
import re
import subprocess
from collections.abc import Iterable
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "tubelens"
VALUES = ROOT / "deploy" / "values"
TOOLS = ROOT / ".tubelens" / "tools" / "bin"
KUBERNETES_VERSION = "1.34"
NAMESPACE = "tubelens"
RELEASE = "tubelens"
SERVICES = ("crawler", "preprocessor", "embedding", "trainer", "predictor")
# The example overlays, each rendered on top of the chart's defaults.
OVERLAYS = {"default": (), "dev": ("dev.yaml",), "gpu": ("gpu.yaml",), "production": ("production.yaml",)}


class RenderError(Exception):
    pass


def tool(name: str) -> str:
    path = TOOLS / name
    if not path.is_file():
        pytest.fail(f"{path} is missing: run `make tools` (part of `make test`)")
    return str(path)


def run_tool(name: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool(name), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


@functools.lru_cache(maxsize=64)
def _render(values_files: tuple[str, ...], settings: tuple[tuple[str, str, str], ...], release: str) -> str:
    args = ["template", release, str(CHART), "--namespace", NAMESPACE, "--kube-version", f"{KUBERNETES_VERSION}.0"]
    for path in values_files:
        args += ["--values", path]
    for key, flag, value in settings:
        args += [flag, f"{key}={value}"]
    done = run_tool("helm", *args)
    if done.returncode != 0:
        raise RenderError(done.stderr.strip())
    return done.stdout


def render(
    overlay: str = "default", settings: dict[str, object] | None = None, *, files: Iterable[Path] = (), release=RELEASE
) -> list[dict]:
    """The chart's objects for one of OVERLAYS plus `--set` settings (and more values files)."""
    values_files = tuple(str(VALUES / name) for name in OVERLAYS[overlay]) + tuple(str(f) for f in files)
    pairs = tuple(sorted((key, *_set_value(value)) for key, value in (settings or {}).items()))
    return [doc for doc in yaml.safe_load_all(_render(values_files, pairs, release)) if doc]


def _set_value(value: object) -> tuple[str, str]:
    """A Python value as helm's --set (numbers, booleans, lists) or --set-string (strings stay strings)."""
    if isinstance(value, str):
        return "--set-string", _escaped(value)
    if isinstance(value, bool):
        return "--set", str(value).lower()
    if isinstance(value, list | tuple):
        return "--set", "{" + ",".join(_escaped(str(item)) for item in value) + "}"
    return "--set", str(value)


def _escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace(",", "\\,")


def objects(docs: list[dict], kind: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def one(docs: list[dict], kind: str, name: str) -> dict:
    found = objects(docs, kind)
    assert name in found, f"no {kind} {name}; there are {sorted(found)}"
    return found[name]


def name_of(component: str) -> str:
    return f"{RELEASE}-{component}"


def pod_spec(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def containers(workload: dict) -> list[dict]:
    spec = pod_spec(workload)
    return [*spec.get("initContainers", []), *spec["containers"]]


def container(workload: dict, name: str) -> dict:
    return next(c for c in containers(workload) if c["name"] == name)


def matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(key) == value for key, value in selector.get("matchLabels", {}).items())


def metric_families() -> dict[str, str]:
    """Every tubelens_* metric the code defines, name -> type (counter, gauge, histogram)."""
    pattern = re.compile(r"\b(Counter|Gauge|Histogram)\(\s*\"(tubelens_[a-z0-9_]+)\"")
    families: dict[str, str] = {}
    rooms = ("shared/tubelens", "modelkit/tubelens", "services/*/tubelens")
    for path in [file for room in rooms for file in ROOT.glob(f"{room}/**/*.py")]:
        for kind, name in pattern.findall(path.read_text()):
            families[name.removesuffix("_total") if kind == "Counter" else name] = kind.lower()
    return families


def series_names(families: dict[str, str]) -> set[str]:
    """The series names Prometheus scrapes for those families."""
    suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum")}
    return {name + suffix for name, kind in families.items() for suffix in suffixes[kind]}


def metrics_in(expr: str) -> set[str]:
    return set(re.findall(r"\btubelens_[a-z0-9_]+", expr))
