"""The chart's rendered pod specs as podman flags: what a container runs with in the cluster (its image, arguments,
environment from the rendered ConfigMaps, UID/GID, read-only root, dropped capabilities, no privilege escalation,
writable emptyDirs only where the chart mounts them) is derived from `helm template`, never written down twice.
"""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path

from tests.deploy.chartkit import ROOT, container, objects, pod_spec

SCRIPTS = ROOT / "scripts"


def podman_env() -> dict[str, str]:
    """The environment scripts/podman-env.sh sets up: the project-local store, runc, no default ulimits."""
    done = subprocess.run(
        ["bash", "-c", f"source {SCRIPTS / 'podman-env.sh'} && env -0"],
        cwd=ROOT, capture_output=True, check=True, timeout=60,
    )
    return dict(line.split("=", 1) for line in done.stdout.decode().split("\0") if "=" in line)


def podman(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], cwd=ROOT, env=podman_env(), capture_output=True, text=True,
                          timeout=timeout, check=False)


def ensure_image(image: str) -> None:
    """Builds the image (scripts/images.sh, cached layers) when the local store lacks it."""
    if podman("image", "exists", image).returncode == 0:
        return
    name = image.split(":")[0].removeprefix("tubelens-")
    for script in ("ensure-podman.sh", "base-image.sh", "wheelhouse.sh"):
        subprocess.run(["bash", str(SCRIPTS / script)], cwd=ROOT, check=True, timeout=1800)
    subprocess.run(["bash", str(SCRIPTS / "images.sh"), name], cwd=ROOT, check=True, timeout=1800)


def env_of(docs: list[dict], spec: dict) -> dict[str, str]:
    """The container's environment: envFrom's rendered ConfigMaps and Secrets (those the chart renders), then env."""
    configmaps, secrets = objects(docs, "ConfigMap"), objects(docs, "Secret")
    env: dict[str, str] = {}
    for source in spec.get("envFrom", []):
        if "configMapRef" in source and source["configMapRef"]["name"] in configmaps:
            env.update(configmaps[source["configMapRef"]["name"]].get("data", {}))
        if "secretRef" in source and source["secretRef"]["name"] in secrets:
            secret = secrets[source["secretRef"]["name"]]
            env.update({key: base64.b64decode(value).decode() for key, value in secret.get("data", {}).items()})
            env.update(secret.get("stringData", {}))
    for item in spec.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
    return env


def run_flags(docs: list[dict], workload: dict, name: str, state: Path) -> list[str]:
    """`podman run` flags for one container of a rendered workload. emptyDirs become world-writable tmpfs (as
    an emptyDir is on a node); a PersistentVolumeClaim becomes a host folder under `state` owned by the pod's UID."""
    pod = pod_spec(workload)
    spec = container(workload, name)
    pod_security, security = pod.get("securityContext", {}), spec.get("securityContext", {})
    uid = security.get("runAsUser", pod_security.get("runAsUser"))
    gid = security.get("runAsGroup", pod_security.get("runAsGroup", uid))
    assert uid and int(uid) > 0, f"{name}: the chart must run it as a numeric non-root user"
    flags = ["--user", f"{uid}:{gid}", "--network", "host"]
    if pod_security.get("fsGroup"):
        flags += ["--group-add", str(pod_security["fsGroup"])]
    if security.get("readOnlyRootFilesystem"):
        flags.append("--read-only")
    for cap in security.get("capabilities", {}).get("drop", []):
        flags += ["--cap-drop", cap]
    if security.get("allowPrivilegeEscalation") is False:
        flags += ["--security-opt", "no-new-privileges"]
    volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
    owner = pod_security.get("fsGroup", gid)
    for mount in spec.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if "emptyDir" in volume:
            flags += ["--tmpfs", f"{mount['mountPath']}:rw,mode=1777"]
        else:
            host = state / mount["name"]
            host.mkdir(parents=True, exist_ok=True)
            os.chown(host, int(uid), int(owner))
            flags += ["--volume", f"{host}:{mount['mountPath']}{':ro' if mount.get('readOnly') else ''}"]
    for key, value in env_of(docs, spec).items():
        flags += ["--env", f"{key}={value}"]
    return flags
