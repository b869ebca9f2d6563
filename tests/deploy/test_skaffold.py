"""skaffold.yaml against the skaffold/v4beta13 JSON schema (deploy/schemas/), with each profile applied: an artifact
for every image the chart runs, the chart deployed with Helm, and values files that exist."""

from __future__ import annotations

import copy
import json
import re

import jsonschema
import pytest
import yaml

from tests.deploy.chartkit import CHART, ROOT, SERVICES

SCHEMA_FILE = ROOT / "deploy" / "schemas" / "skaffold-v4beta13.json"
SCHEMA = json.loads(SCHEMA_FILE.read_text())
CONFIG = yaml.safe_load((ROOT / "skaffold.yaml").read_text())
PROFILES = ["dev", "gpu"]


def with_profile(name: str | None) -> dict:
    """The config as skaffold sees it with profile `name` on (its JSON patches applied; they are all `add`)."""
    config = copy.deepcopy(CONFIG)
    if name is None:
        return config
    (profile,) = [p for p in config["profiles"] if p["name"] == name]
    for patch in profile.get("patches", []):
        assert patch["op"] == "add", patch
        *parents, last = [part.replace("~1", "/").replace("~0", "~") for part in patch["path"].split("/")[1:]]
        target = config
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if isinstance(target, list):
            target.insert(len(target) if last == "-" else int(last), patch["value"])
        else:
            target[last] = patch["value"]
    return config


def test_the_schema_is_the_one_for_this_api_version() -> None:
    assert CONFIG["apiVersion"] == "skaffold/v4beta13"
    assert SCHEMA_FILE.stem == "skaffold-" + CONFIG["apiVersion"].split("/")[1]


@pytest.mark.parametrize("profile", [None, *PROFILES])
def test_skaffold_yaml_is_valid_with_each_profile(profile: str | None) -> None:
    jsonschema.Draft7Validator(SCHEMA).validate(with_profile(profile))


def test_the_schema_refuses_what_skaffold_would() -> None:
    broken = copy.deepcopy(CONFIG)
    broken["build"]["artifacts"][0]["docker"]["dockerFile"] = "Dockerfile"  # skaffold spells it dockerfile
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(SCHEMA).validate(broken)


@pytest.mark.parametrize("profile", [None, *PROFILES])
def test_every_artifact_builds_from_a_dockerfile_and_reaches_the_chart(profile: str | None) -> None:
    config = with_profile(profile)
    (release,) = config["deploy"]["helm"]["releases"]
    assert (ROOT / release["chartPath"]).resolve() == CHART
    for path in release["valuesFiles"]:
        assert (ROOT / path).is_file(), path
    templates = release["setValueTemplates"]
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for artifact in config["build"]["artifacts"]:
        assert (ROOT / artifact["context"] / artifact["docker"]["dockerfile"]).is_file(), artifact["image"]
        variable = re.sub(r"[^A-Za-z0-9]", "_", artifact["image"])
        image_keys = {key.rsplit(".", 1)[0] for key, value in templates.items() if variable + "}}" in value}
        assert len(image_keys) == 1, artifact["image"]
        (key,) = image_keys
        assert templates[f"{key}.repository"] == f"{{{{.IMAGE_REPO_{variable}}}}}"
        assert templates[f"{key}.tag"] == f"{{{{.IMAGE_TAG_{variable}}}}}"
        assert key.split(".")[1] in values["images"], key


def test_every_service_image_is_built_and_the_cuda_one_only_for_gpu() -> None:
    dockerfiles = {artifact["docker"]["dockerfile"] for artifact in CONFIG["build"]["artifacts"]}
    assert dockerfiles == {"Dockerfile", "deploy/torchserve/Dockerfile"}
    services = {
        artifact["docker"]["buildArgs"]["SERVICE"]: artifact["image"]
        for artifact in CONFIG["build"]["artifacts"]
        if artifact["docker"]["dockerfile"] == "Dockerfile"
    }
    assert services == {name: f"tubelens-{name}" for name in SERVICES}
    gpu = {artifact["docker"]["dockerfile"] for artifact in with_profile("gpu")["build"]["artifacts"]}
    assert gpu - dockerfiles == {"services/trainer/Dockerfile.gpu"}
    assert "deploy/values/gpu.yaml" in with_profile("gpu")["deploy"]["helm"]["releases"][0]["valuesFiles"]
