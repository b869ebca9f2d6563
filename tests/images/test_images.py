"""The images built here (scripts/images.sh), run under podman with the chart's own pod settings (tests/images/
podkit.py derives the flags from `helm template`): each starts its service's entry point as the chart's UID with a
read-only root and no capabilities, can write only where the chart mounts a volume, and carries no compiler, test
dependency or dev tool. A missing image is built first (cached layers), so a fresh clone runs these too.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.deploy.chartkit import SERVICES, container, name_of, one, render
from tests.images.podkit import ensure_image, podman, run_flags


@pytest.fixture(scope="module")
def docs() -> list[dict]:
    return render()


def workload(docs: list[dict], service: str) -> dict:
    return one(docs, "Deployment", name_of(service))


def image_of(docs: list[dict], service: str) -> str:
    image = container(workload(docs, service), service)["image"]
    ensure_image(image)
    return image


@pytest.mark.parametrize("service", SERVICES)
def test_the_entry_point_starts_under_the_chart_security_context(docs, service: str, tmp_path: Path) -> None:
    """`tubelens <service> run` as the chart runs it: its arguments, its environment, its UID, read-only, capless.
    --help makes it stop after the imports and the settings' parse (an unknown TUBELENS_* variable is refused)."""
    image = image_of(docs, service)
    args = container(workload(docs, service), service).get("args", [])
    done = podman("run", "--rm", *run_flags(docs, workload(docs, service), service, tmp_path), image, *args, "--help")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"tubelens {service} run" in done.stdout


WRITES = """
import json, os, sys
result = {}
for path in sys.argv[1:]:
    try:
        with open(os.path.join(path, ".tubelens-write-check"), "w") as f:
            f.write("x")
        result[path] = True
    except OSError:
        result[path] = False
print(json.dumps(result))
"""


@pytest.mark.parametrize("service", SERVICES)
def test_only_the_chart_volumes_are_writable(docs, service: str, tmp_path: Path) -> None:
    """A service that writes outside its volumes dies in the cluster: the root is read-only there, and here."""
    image = image_of(docs, service)
    spec = container(workload(docs, service), service)
    mounts = [mount["mountPath"] for mount in spec.get("volumeMounts", []) if not mount.get("readOnly")]
    outside = ["/", "/opt/tubelens", "/opt/venv", "/etc"]
    flags = run_flags(docs, workload(docs, service), service, tmp_path)
    done = podman("run", "--rm", *flags, "--entrypoint", "python", image, "-c", WRITES, *mounts, *outside)
    assert done.returncode == 0, done.stderr[-3000:]
    writable = json.loads(done.stdout)
    assert {path: writable[path] for path in mounts} == dict.fromkeys(mounts, True)
    assert {path: writable[path] for path in outside} == dict.fromkeys(outside, False)


CONTENTS = """
import importlib.util, json, shutil
print(json.dumps({
    "tools": [tool for tool in ("gcc", "cc", "g++", "make", "pytest", "ruff", "pip") if shutil.which(tool)],
    "modules": [m for m in ("pytest", "tubelens.devtools", "tests", "moto", "ruff") if importlib.util.find_spec(m)],
    "torch": importlib.util.find_spec("torch") is not None,
}))
"""


@pytest.mark.parametrize("service", SERVICES)
def test_service_images_carry_no_compiler_test_dependency_or_dev_tool(docs, service: str) -> None:
    image = image_of(docs, service)
    done = podman("run", "--rm", "--read-only", "--entrypoint", "python", image, "-c", CONTENTS)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout)
    # pip stays in the venv (the upstream base brings it too); nothing that builds or tests code does.
    assert [tool for tool in found["tools"] if tool != "pip"] == []
    assert found["modules"] == []
    # After the three-floors split only the rooms with the model kit carry torch.
    assert found["torch"] == (service in {"embedding", "trainer", "predictor"})
