"""The Dockerfiles, read rather than built: one recipe builds every service (`--build-arg SERVICE=<name>`), the CUDA
trainer and TorchServe have their own; each is multi-stage, pinned by tag and digest, installs the pinned packages,
and ends as a numeric non-root user running `tubelens <service> run`.
"""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.deploy.chartkit import ROOT, SERVICES

SERVICE_IMAGES = ROOT / "Dockerfile"
TORCHSERVE = ROOT / "deploy" / "torchserve" / "Dockerfile"
GPU = ROOT / "services" / "trainer" / "Dockerfile.gpu"
DOCKERFILES = sorted([SERVICE_IMAGES, GPU, TORCHSERVE])
PINNED = re.compile(r"^[a-z0-9./-]+:[A-Za-z0-9._-]+@sha256:[a-f0-9]{64}$")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def stages(path: Path) -> list[Stage]:
    """FROM-delimited stages with their instructions; continuation lines joined, comments dropped. A base named by an
    ARG before the first FROM (`FROM ${BASE}`) reads as that ARG's default: what a build without --build-arg gets."""
    text = re.sub(r"\\\n", " ", path.read_text())
    found: list[Stage] = []
    defaults: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "ARG" and not found:
            name, _, default = args.partition("=")
            defaults[name.strip()] = default.strip()
        elif keyword == "FROM":
            base, _, name = args.partition(" AS ")
            base = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], base.strip())
            found.append(Stage(base, name.strip() or None))
        else:
            assert found, f"{path}: {keyword} before FROM"
            found[-1].instructions.append((keyword, " ".join(args.split())))
    return found


def pins() -> dict[str, str]:
    """name -> version of every `==` pin in the pyproject files (the root's extras included)."""
    found = {}
    rooms = [ROOT / "pyproject.toml", *ROOT.glob("*/pyproject.toml"), *ROOT.glob("services/*/pyproject.toml")]
    for path in rooms:
        project = tomllib.loads(path.read_text())["project"]
        requirements = [*project.get("dependencies", [])]
        for extra in project.get("optional-dependencies", {}).values():
            requirements += extra
        for requirement in requirements:
            name, sep, version = requirement.partition("==")
            if sep:
                found[name.strip().lower()] = version.strip()
    return found


def test_one_dockerfile_builds_every_service() -> None:
    rooms = sorted(path.parent.name for path in ROOT.glob("services/*/pyproject.toml"))
    assert rooms == sorted(SERVICES)
    assert not list(ROOT.glob("services/*/Dockerfile")), "one recipe with ARG SERVICE, not a copy per service"
    assert SERVICE_IMAGES.is_file() and GPU.is_file() and TORCHSERVE.is_file()
    assert "ARG SERVICE" in SERVICE_IMAGES.read_text()


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_multi_stage_pinned_and_never_latest(path: Path) -> None:
    found = stages(path)
    assert len(found) >= 2, "multi-stage: build tools stay out of the final image"
    names = {stage.name for stage in found if stage.name}
    for stage in found:
        if stage.base in names:
            continue
        assert PINNED.match(stage.base), f"{stage.base}: pin it by tag and digest"
        assert ":latest" not in stage.base
    assert "latest" not in path.read_text()
    for source in [args for stage in found for args in stage.all("COPY")]:
        if source.startswith("--from="):
            assert source.split()[0].removeprefix("--from=") in names, source


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_final_stage_runs_as_a_numeric_non_root_user(path: Path) -> None:
    final = stages(path)[-1]
    (user,) = final.all("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0 and gid.isdigit() and int(gid) > 0, user
    # The chart's runAsUser and the trainer's Job template (jobs.JobTemplate.run_as_user) assume this UID.
    assert int(uid) == 10001
    assert f"--uid {uid}" in " ".join(final.all("RUN"))
    # USER comes last among what runs as root.
    keywords = [kw for kw, _ in final.instructions]
    assert "RUN" not in keywords[keywords.index("USER") :]


def test_service_images_run_the_service_they_were_built_for() -> None:
    """The entry point is a launcher written at build time: `exec tubelens <SERVICE> run`, the arguments passed on."""
    build, final = stages(SERVICE_IMAGES)
    (entrypoint,) = final.all("ENTRYPOINT")
    launcher = json.loads(entrypoint)[0]
    (written,) = [run for run in build.all("RUN") if f"/opt/venv/bin/{launcher}" in run]
    assert 'exec /opt/venv/bin/tubelens %s run "$@"' in written and '"$SERVICE"' in written
    assert final.base.startswith("python:3.11.")
    assert "/opt/venv" in " ".join(final.all("COPY"))


def test_service_images_install_only_their_room_and_what_it_requires() -> None:
    runs = " ".join(stages(SERVICE_IMAGES)[0].all("RUN"))
    assert 'pip wheel --no-deps --wheel-dir /wheels . ./modelkit "./services/$SERVICE"' in runs
    assert '--constraint /wheels/local.txt' in runs and '"tubelens-$SERVICE"' in runs


def test_the_gpu_trainer_runs_the_trainer_on_a_cuda_image() -> None:
    final = stages(GPU)[-1]
    assert final.base.startswith("nvidia/cuda:") and "-runtime-" in final.base
    assert json.loads(final.all("ENTRYPOINT")[0]) == ["tubelens", "trainer", "run"]
    # No CPU index here: PyPI's torch is the CUDA build.
    assert "download.pytorch.org/whl/cpu" not in GPU.read_text()


def test_cpu_images_take_torch_from_the_cpu_index() -> None:
    runs = " ".join(stages(SERVICE_IMAGES)[0].all("RUN"))
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in runs
    runs = " ".join(stages(TORCHSERVE)[0].all("RUN"))
    assert f"--index-url https://download.pytorch.org/whl/cpu torch=={pins()['torch']}" in runs


def test_the_torchserve_image_has_java_17_and_the_pinned_server() -> None:
    found = stages(TORCHSERVE)
    runs = " ".join(args for stage in found for args in stage.all("RUN"))
    assert "openjdk-17-jre-headless" in runs
    entrypoint = json.loads(found[-1].all("ENTRYPOINT")[0])
    assert "torchserve" in entrypoint and "--foreground" in entrypoint


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_packages_installed_by_name_match_the_pyproject_pins(path: Path) -> None:
    known = pins()
    runs = " ".join(args for stage in stages(path) for args in stage.all("RUN"))
    for name, version in re.findall(r"\b([A-Za-z0-9_.-]+)==([A-Za-z0-9_.+-]+)", runs):
        if name.lower() == "uv":
            continue  # a build tool of the GPU image only
        assert known.get(name.lower()) == version, f"{name}=={version}: pyproject.toml pins {known.get(name.lower())}"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_what_is_copied_exists_and_reaches_the_build_context(path: Path) -> None:
    for stage in stages(path):
        for args in stage.all("COPY"):
            if args.startswith("--from="):
                continue
            *sources, _destination = args.split()
            for source in sources:
                assert (ROOT / source).exists(), f"{path.name}: COPY {source}: no such path"
                assert not ignored(source), f"{path.name}: COPY {source}: .dockerignore leaves it out"


def ignored(path: str) -> bool:
    """.dockerignore's verdict on a path (last matching pattern wins; `!` re-includes)."""
    verdict = False
    parts = path.rstrip("/").split("/")
    for pattern in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = pattern.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        pattern = pattern.removeprefix("!").rstrip("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if pattern == "**" or any(fnmatch.fnmatch(prefix, pattern.replace("**/", "*")) for prefix in prefixes):
            verdict = not negated
    return verdict


def test_the_build_context_leaves_out_the_workspace() -> None:
    for path in (".venv", ".git", ".tubelens", "tests", "charts", "shared/tubelens.egg-info"):
        assert ignored(path), path
    for path in ("pyproject.toml", "README.md", "shared/tubelens/cli.py", "services/trainer/tubelens"):
        assert not ignored(path), path


@pytest.mark.parametrize("path", [SERVICE_IMAGES, TORCHSERVE], ids=lambda p: str(p.relative_to(ROOT)))
def test_the_cpu_images_build_both_ways(path: Path) -> None:
    """Production by default (the pinned upstream base, the indexes); here with --build-arg BASE=<the debootstrap
    base> PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheelhouse (scripts/images.sh), the same recipe either way."""
    text = re.sub(r"\\\n", " ", path.read_text())
    (base,) = re.findall(r"^ARG BASE=(\S+)$", text, re.M)
    assert PINNED.match(base), "the default base stays the pinned upstream one"
    assert all(stage.base == base for stage in stages(path)[:1]) and "FROM ${BASE}" in text
    build = stages(path)[0]
    assert "PIP_NO_INDEX=0" in build.all("ARG") and "PIP_FIND_LINKS=" in build.all("ARG")
    assert any("PIP_NO_INDEX=$PIP_NO_INDEX PIP_FIND_LINKS=$PIP_FIND_LINKS" in env for env in build.all("ENV"))
    # Debian's python3.11 has no ensurepip: the venv then takes pip from the wheelhouse.
    assert any("--without-pip" in run and '"$PIP_FIND_LINKS"/pip-' in run for run in build.all("RUN"))
    script = (ROOT / "scripts" / "images.sh").read_text()
    for arg in ("BASE=$BASE", "PIP_NO_INDEX=1", "PIP_FIND_LINKS=/wheelhouse", ":/wheelhouse:ro"):
        assert arg in script, arg
