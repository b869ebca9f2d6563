"""The house on three floors: the ground floor (`shared/`, the library) imports no room above it, the model kit
stands on the ground floor only, no service imports another service, and nothing but the dev tools (and the tests)
imports the dev tools. Checked on every import statement, lazy ones inside functions included."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("crawler", "preprocessor", "embedding", "trainer", "predictor")
ROOMS = {
    "ground": ROOT / "shared" / "tubelens",
    "modelkit": ROOT / "modelkit" / "tubelens" / "modelkit",
    "devtools": ROOT / "devtools" / "tubelens" / "devtools",
    "client": ROOT / "client" / "tubelens" / "client",
    **{name: ROOT / "services" / name / "tubelens" / name for name in SERVICES},
}
# What each room may import of the `tubelens` namespace, beyond the ground floor, which every room may use.
ALLOWED = {
    "ground": set(),
    "modelkit": {"modelkit"},
    "devtools": {"devtools", "modelkit", "client", *SERVICES},
    # What platform teams install: the ground floor's stubs and error decoding, nothing of the services.
    "client": {"client"},
    "crawler": {"crawler"},
    "preprocessor": {"preprocessor"},
    "embedding": {"embedding", "modelkit"},
    "trainer": {"trainer", "modelkit"},
    "predictor": {"predictor", "modelkit"},
}
ABOVE_GROUND = {"modelkit", "devtools", "client", *SERVICES}


def tubelens_imports(path: Path) -> list[tuple[int, str]]:
    """(line, room) for every `tubelens.<room>` an import statement names."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        modules = []
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules = [node.module]
            if node.module == "tubelens":  # from tubelens import trainer
                modules += [f"tubelens.{alias.name}" for alias in node.names]
        for module in modules:
            parts = module.split(".")
            if parts[0] == "tubelens" and len(parts) > 1 and parts[1] in ABOVE_GROUND:
                found.append((node.lineno, parts[1]))
    return found


@pytest.mark.parametrize("room", sorted(ROOMS))
def test_a_room_imports_only_the_floors_beneath_it(room: str) -> None:
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports tubelens.{target}"
        for path in sorted(ROOMS[room].rglob("*.py"))
        for line, target in tubelens_imports(path)
        if target not in ALLOWED[room]
    ]
    assert not wrong, "\n".join(wrong)


def test_the_checker_sees_a_lazy_import_inside_a_function(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from tubelens.trainer.dataset import Builder\n    import tubelens.devtools.demo\n")
    assert tubelens_imports(module) == [(2, "trainer"), (3, "devtools")]


def test_the_ground_floor_dependencies_carry_no_torch_and_no_plotting() -> None:
    import tomllib

    ground = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for room in ("crawler", "preprocessor"):
        ground += tomllib.loads((ROOT / "services" / room / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {requirement.split("==")[0].split("[")[0] for requirement in ground}
    assert not names & {"torch", "matplotlib", "onnxruntime", "tubelens-modelkit", "tubelens-devtools"}
