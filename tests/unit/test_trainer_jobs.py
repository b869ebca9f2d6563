"""Training Jobs: the rendered Job is valid Kubernetes (strict schemas of 1.34 and of the newest version the validator
ships), with GPU or CPU resources, safe names and labels; launching one creates it through the batch API and watches
it to its end, against a real HTTP server that speaks the slice of the Kubernetes API the launcher uses."""

from __future__ import annotations

import copy
import json
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import kubernetes_validate
import pydantic
import pytest
from kubernetes import client
from kubernetes_validate.utils import all_versions

from tubelens.bus import RetryPolicy
from tubelens.errors import ConfigError, Unavailable
from tubelens.trainer.jobs import (
    GPU_RESOURCE,
    RUN_ID_ANNOTATION,
    JobFailed,
    JobSpec,
    JobTemplate,
    JobTimedOut,
    JobWatchStopped,
    Toleration,
    job_command,
    launch_and_watch,
    render_training_job,
    to_manifest,
)

SNAPSHOT = "20250602T120000Z-0a1b2c3d"
RUN_ID = "20250602T120500Z-deadbeef"
IMAGE = "registry.example/tubelens-trainer:0.1.0"
NAMESPACE = "training"
# The cluster version the chart targets, and the newest whose schemas the validator ships.
KUBERNETES_VERSIONS = ("1.34", ".".join(kubernetes_validate.latest_version().split(".")[:2]))
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
FAST_RETRY = RetryPolicy(max_attempts=3, backoff_initial_s=0.01, backoff_max_s=0.02)

GPU_TEMPLATE = JobTemplate(
    image=IMAGE,
    gpus=2,
    config_map="tubelens-env",
    secret="tubelens-credentials",
    node_selector={"nvidia.com/gpu.present": "true"},
)
CPU_TEMPLATE = JobTemplate(image=IMAGE, gpus=0, cpu="2", memory="4Gi")


def gpu_spec(**changes) -> JobSpec:
    fields = dict(
        snapshot_id=SNAPSHOT, tasks=("channel", "popularity_bucket"), template=GPU_TEMPLATE, seed=3, run_id=RUN_ID
    )
    return JobSpec(**{**fields, **changes})


def validate(manifest: dict, version: str) -> str:
    return kubernetes_validate.validate(manifest, version, strict=True)


def pod_spec(manifest: dict) -> dict:
    return manifest["spec"]["template"]["spec"]


# rendering


def test_the_validator_ships_the_kubernetes_versions_the_tests_name() -> None:
    assert "1.34.0" in all_versions(), "else 1.34 would silently be checked against an older schema"
    assert all(tuple(map(int, v.split(".")[:2])) >= (1, 34) for v in KUBERNETES_VERSIONS)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_a_gpu_job_is_valid_kubernetes(version: str) -> None:
    manifest = to_manifest(render_training_job(gpu_spec()))
    assert validate(manifest, version) == version
    pod = pod_spec(manifest)
    [container] = pod["containers"]
    assert container["resources"]["limits"] == {"memory": "16Gi", GPU_RESOURCE: "2"}
    assert pod["tolerations"] == [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert container["envFrom"] == [
        {"configMapRef": {"name": "tubelens-env"}},
        {"secretRef": {"name": "tubelens-credentials"}},
    ]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_a_cpu_job_asks_for_no_gpu_and_tolerates_no_gpu_taint(version: str) -> None:
    manifest = to_manifest(render_training_job(gpu_spec(template=CPU_TEMPLATE)))
    assert validate(manifest, version) == version
    pod = pod_spec(manifest)
    assert pod["containers"][0]["resources"] == {"limits": {"memory": "4Gi"}, "requests": {"cpu": "2", "memory": "4Gi"}}
    assert "tolerations" not in pod and "nodeSelector" not in pod and "envFrom" not in pod["containers"][0]


def test_the_job_runs_the_snapshot_once_as_a_non_root_read_only_pod() -> None:
    manifest = to_manifest(render_training_job(gpu_spec(trigger="new_labels")))
    spec, pod = manifest["spec"], pod_spec(manifest)
    [container] = pod["containers"]
    assert container["command"] == [
        "tubelens", "trainer", "run", "--snapshot", SNAPSHOT, "--task", "channel", "--task", "popularity_bucket",
        "--seed", "3", "--executor", "local", "--trigger", "new_labels", "--run-id", RUN_ID,
    ]  # fmt: skip
    assert (spec["backoffLimit"], spec["ttlSecondsAfterFinished"], spec["activeDeadlineSeconds"]) == (1, 86400, 21600)
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] > 0
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
    }
    assert container["volumeMounts"] == [{"mountPath": "/tmp", "name": "tmp"}]
    assert pod["volumes"] == [{"emptyDir": {"sizeLimit": "20Gi"}, "name": "tmp"}]
    assert manifest["metadata"]["annotations"][RUN_ID_ANNOTATION] == RUN_ID
    assert manifest["metadata"]["labels"]["tubelens.io/snapshot-id"] == SNAPSHOT
    assert manifest["metadata"]["labels"]["tubelens.io/tasks"] == "channel.popularity_bucket"
    assert manifest["spec"]["template"]["metadata"]["labels"] == manifest["metadata"]["labels"]


@pytest.mark.parametrize(
    ("snapshot_id", "tasks"),
    [
        (SNAPSHOT, ("popularity_bucket", "popularity_regression", "channel", "genre")),
        ("X" * 300, ("channel",)),
        ("Ünïcødé snapshot/with spaces & symbols!", ("Popularity_Bucket",)),
        ("---", ("___",)),
        ("-leading-and-trailing-", ("channel-",)),
    ],
)
def test_names_and_labels_follow_the_kubernetes_rules_whatever_the_snapshot_and_tasks(snapshot_id, tasks) -> None:
    job = render_training_job(gpu_spec(snapshot_id=snapshot_id, tasks=tasks))
    name = job.metadata.name
    assert DNS_LABEL.fullmatch(name) and len(name) <= 63 and name.startswith("train-")
    for value in job.metadata.labels.values():
        assert LABEL_VALUE.fullmatch(value) and len(value) <= 63, value
    assert job.metadata.annotations["tubelens.io/snapshot-id"] == snapshot_id, "annotations keep what labels cannot"
    assert validate(to_manifest(job), "1.34") == "1.34"
    assert render_training_job(gpu_spec(snapshot_id=snapshot_id, tasks=tasks)).metadata.name == name


def test_names_are_deterministic_yet_distinct_for_what_sanitizes_alike() -> None:
    names = {
        render_training_job(gpu_spec(snapshot_id=snapshot_id, tasks=tasks, seed=seed)).metadata.name
        for snapshot_id, tasks, seed in [
            ("Snap_1", ("channel",), 0),
            ("snap-1", ("channel",), 0),
            ("Snap_1", ("channel",), 1),
            ("Snap_1", ("channel", "genre"), 0),
        ]
    }
    assert len(names) == 4
    same = gpu_spec(run_id="20250602T130000Z-00000000", trigger="schedule")
    assert render_training_job(same).metadata.name == render_training_job(gpu_spec()).metadata.name, (
        "one Job per snapshot, tasks and seed, so that a restarted launcher finds the one it created"
    )


def test_a_broken_manifest_fails_strict_validation() -> None:
    manifest = to_manifest(render_training_job(gpu_spec()))
    unknown_field = copy.deepcopy(manifest)
    pod_spec(unknown_field)["containers"][0]["gpus"] = 1
    wrong_type = copy.deepcopy(manifest)
    wrong_type["spec"]["backoffLimit"] = "once"
    no_containers = copy.deepcopy(manifest)
    del pod_spec(no_containers)["containers"]
    for broken in (unknown_field, wrong_type, no_containers):
        with pytest.raises(kubernetes_validate.ValidationError):
            validate(broken, "1.34")


def test_templates_refuse_what_the_cluster_would() -> None:
    with pytest.raises(pydantic.ValidationError, match="not a Kubernetes quantity"):
        JobTemplate(image=IMAGE, memory="16 GB")
    with pytest.raises(pydantic.ValidationError):
        JobTemplate(image=IMAGE, gpus=-1)
    with pytest.raises(ConfigError, match="IMAGE"):
        JobSpec(SNAPSHOT, ("channel",), JobTemplate())


def test_tolerations_can_be_replaced() -> None:
    template = GPU_TEMPLATE.model_copy(
        update={"tolerations": [Toleration(key="dedicated", operator="Equal", value="ml")]}
    )
    pod = pod_spec(to_manifest(render_training_job(gpu_spec(template=template))))
    assert pod["tolerations"] == [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}]
    assert job_command(gpu_spec())[:5] == ["tubelens", "trainer", "run", "--snapshot", SNAPSHOT]


# launching, against a real HTTP server


class FakeKubernetes:
    """Jobs in one namespace: POST creates one, GET ?watch=true streams its events as JSON lines. `post_errors` and
    `watch_errors` are statuses answered before the real answer; `finish` sets the condition the Job reaches, which
    open watches then report (until then a watch lasts its timeoutSeconds). `on_create` runs for each Job created."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict] = {}
        self.posts: list[dict] = []
        self.watches: list[dict[str, list[str]]] = []
        self.post_errors: list[int] = []
        self.watch_errors: list[int] = []
        self.outcome: dict | None = None
        self.finished = threading.Event()
        self.on_create: Callable[[dict], None] = lambda _job: None
        self.lock = threading.Lock()

    def finish(self, kind: str, reason: str = "", message: str = "") -> None:
        self.outcome = {"type": kind, "status": "True", "reason": reason, "message": message}
        self.finished.set()


def status_body(code: int, reason: str, message: str) -> bytes:
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "message": message}
    return json.dumps({**body, "code": code}).encode()


class Handler(BaseHTTPRequestHandler):
    server: ThreadingHTTPServer  # with .fake

    def log_message(self, *_args) -> None:
        pass

    def do_POST(self) -> None:
        fake: FakeKubernetes = self.server.fake
        job = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with fake.lock:
            fake.posts.append(job)
        if self.path != f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs":
            return self.reply(404, status_body(404, "NotFound", f"no route {self.path}"))
        with fake.lock:
            error = fake.post_errors.pop(0) if fake.post_errors else None
            exists = job["metadata"]["name"] in fake.jobs
            if error is None and not exists:
                fake.jobs[job["metadata"]["name"]] = job
        if error is not None:
            return self.reply(error, status_body(error, "InternalError", "etcd is having a moment"))
        if exists:
            return self.reply(409, status_body(409, "AlreadyExists", f"jobs.batch {job['metadata']['name']} exists"))
        self.reply(201, json.dumps(self.stored(job)).encode())
        fake.on_create(job)

    def do_GET(self) -> None:
        fake: FakeKubernetes = self.server.fake
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        with fake.lock:
            fake.watches.append(query)
            error = fake.watch_errors.pop(0) if fake.watch_errors else None
        if url.path != f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs" or query.get("watch") != ["True"]:
            return self.reply(404, status_body(404, "NotFound", f"no route {self.path}"))
        if error is not None:
            return self.reply(error, status_body(error, "ServiceUnavailable", "apiserver is restarting"))
        name = query["fieldSelector"][0].removeprefix("metadata.name=")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        job = self.stored(fake.jobs[name])
        self.event("ADDED", job)
        if fake.finished.wait(int(query["timeoutSeconds"][0])):
            self.event("MODIFIED", {**job, "status": {"conditions": [fake.outcome]}})

    def stored(self, job: dict) -> dict:
        metadata = {**job["metadata"], "namespace": NAMESPACE, "uid": "0000-1111", "resourceVersion": "7"}
        return {**job, "metadata": metadata}

    def event(self, kind: str, job: dict) -> None:
        self.wfile.write(json.dumps({"type": kind, "object": job}).encode() + b"\n")
        self.wfile.flush()

    def reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextmanager
def fake_kubernetes() -> Iterator[tuple[FakeKubernetes, str]]:
    """The fake API server on a free loopback port, and its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.fake = FakeKubernetes()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.fake, f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def kubernetes_api() -> Iterator[tuple[FakeKubernetes, client.BatchV1Api]]:
    with fake_kubernetes() as (fake, host), client.ApiClient(client.Configuration(host=host)) as api_client:
        yield fake, client.BatchV1Api(api_client)


def launch(api: client.BatchV1Api, job: client.V1Job, **options) -> client.V1Job:
    return launch_and_watch(job, NAMESPACE, api, retry=FAST_RETRY, **{"timeout_s": 30, **options})


def test_a_job_that_completes_is_created_once_and_returned_as_last_seen(kubernetes_api) -> None:
    fake, api = kubernetes_api
    fake.finish("Complete")
    job = render_training_job(gpu_spec())
    done = launch(api, job)
    assert fake.posts == [to_manifest(job)]
    assert [w["fieldSelector"] for w in fake.watches] == [[f"metadata.name={job.metadata.name}"]]
    assert done.metadata.name == job.metadata.name and done.metadata.annotations[RUN_ID_ANNOTATION] == RUN_ID
    assert [(c.type, c.status) for c in done.status.conditions] == [("Complete", "True")]


def test_a_failed_job_raises_with_its_reason(kubernetes_api) -> None:
    fake, api = kubernetes_api
    fake.finish("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")
    with pytest.raises(JobFailed, match="BackoffLimitExceeded: Job has reached the specified backoff limit") as caught:
        launch(api, render_training_job(gpu_spec()))
    assert caught.value.reason == "BackoffLimitExceeded"


def test_transient_api_errors_are_retried(kubernetes_api) -> None:
    fake, api = kubernetes_api
    fake.post_errors = [500]
    fake.watch_errors = [503]
    fake.finish("Complete")
    done = launch(api, render_training_job(gpu_spec()))
    assert len(fake.posts) == 2 and len(fake.watches) == 2 and len(fake.jobs) == 1
    assert done.status.conditions[0].type == "Complete"


def test_an_api_that_stays_down_is_unavailable_after_bounded_retries(kubernetes_api) -> None:
    fake, api = kubernetes_api
    fake.post_errors = [500] * 10
    with pytest.raises(Unavailable, match="gave up after 3 attempts: HTTP 500 .*etcd is having a moment"):
        launch(api, render_training_job(gpu_spec()))
    assert len(fake.posts) == FAST_RETRY.max_attempts


def test_a_refused_request_is_not_retried(kubernetes_api) -> None:
    fake, api = kubernetes_api
    with pytest.raises(ConfigError, match="HTTP 404"):
        launch_and_watch(render_training_job(gpu_spec()), "no-such-namespace", api, retry=FAST_RETRY)
    assert len(fake.posts) == 1


def test_a_job_already_created_is_watched_rather_than_created_again(kubernetes_api) -> None:
    fake, api = kubernetes_api
    fake.finish("Complete")
    job = render_training_job(gpu_spec())
    launch(api, job)
    again = launch(api, render_training_job(gpu_spec(run_id="20250602T130000Z-00000000")))
    assert len(fake.posts) == 2 and len(fake.jobs) == 1
    assert again.metadata.annotations[RUN_ID_ANNOTATION] == RUN_ID, "the first launch's run, whose record it writes"


def test_a_job_that_does_not_finish_in_time_times_out(kubernetes_api) -> None:
    _fake, api = kubernetes_api
    with pytest.raises(JobTimedOut, match="did not finish within 1s"):
        launch(api, render_training_job(gpu_spec()), timeout_s=1)


def test_a_stop_request_ends_the_watch(kubernetes_api) -> None:
    _fake, api = kubernetes_api
    stop = threading.Event()
    stop.set()
    with pytest.raises(JobWatchStopped):
        launch(api, render_training_job(gpu_spec()), stop=stop)
