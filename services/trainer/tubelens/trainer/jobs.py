"""Training runs as Kubernetes Jobs: rendered with the `kubernetes` client's model classes, created through the batch
API and watched until they complete or fail.

A Job runs `tubelens trainer run --snapshot <id> --task <t>... --seed <s> --executor local`: it trains on a snapshot
the launching trainer already wrote to the object store, publishes to the registry, announces `models.trained` and
records its run under the run id it was given (annotation `tubelens.io/run-id`), all with the settings its ConfigMap
and Secret provide. The pod runs as a non-root user on a read-only root filesystem with a writable emptyDir at /tmp,
and asks for `nvidia.com/gpu` (none for a CPU job), tolerating the taint GPU nodes usually carry.

The name is deterministic (snapshot id, tasks and seed, plus a short hash of them that keeps names distinct after
sanitizing and truncation), so a trainer restarted mid-run finds its Job already created and watches it instead of
training twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

import urllib3
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from pydantic import BaseModel, Field, field_validator

from tubelens.bus import RetryPolicy
from tubelens.errors import ConfigError, InvalidInput, TubelensError, Unavailable

log = logging.getLogger(__name__)

GPU_RESOURCE = "nvidia.com/gpu"
NAME_PREFIX = "train-"
MAX_NAME = 63  # Job names become the `job-name` label of their pods: a DNS-1123 label
MAX_LABEL_VALUE = 63
HASH_CHARS = 8
CONTAINER = "trainer"
TMP_VOLUME = "tmp"
ANNOTATION_PREFIX = "tubelens.io"
RUN_ID_ANNOTATION = f"{ANNOTATION_PREFIX}/run-id"
WATCH_CHUNK_S = 20  # one watch request at most this long; stop requests and the deadline are checked between them
CONNECT_TIMEOUT_S = 10
READ_SLACK_S = 15  # beyond the watch's own timeoutSeconds: a server silent for longer is treated as gone
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
DEFAULT_API_RETRY = RetryPolicy(max_attempts=5, backoff_initial_s=0.5, backoff_max_s=10.0)
# The Kubernetes quantity grammar ("500m", "16Gi", "1e3"), so that a typo stops the trainer at start-up.
_QUANTITY = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|[numkMGTPE]|[KMGTPE]i)?")

T = TypeVar("T")


class JobFailed(TubelensError):
    """The training Job ended without completing: its Failed condition's reason, or that it was deleted."""

    def __init__(self, job_name: str, reason: str, message: str) -> None:
        super().__init__(f"training job {job_name} failed: {reason}: {message}")
        self.job_name = job_name
        self.reason = reason


class JobTimedOut(TubelensError):
    """The Job had not finished when the launcher stopped waiting; it may still be running in the cluster."""

    def __init__(self, job_name: str, timeout_s: float) -> None:
        super().__init__(f"training job {job_name} did not finish within {timeout_s:g}s; it may still be running")
        self.job_name = job_name
        self.reason = "Timeout"


class JobWatchStopped(TubelensError):
    """The launcher was asked to stop while watching; the Job itself keeps running and records its own run."""


# what a cluster decides


class Toleration(BaseModel):
    key: str = GPU_RESOURCE
    operator: Literal["Exists", "Equal"] = "Exists"
    value: str = ""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute", ""] = "NoSchedule"


class JobTemplate(BaseModel):
    """What every training Job of one cluster shares; the settings section `TUBELENS_TRAINER__KUBERNETES__*`."""

    image: str = Field(default="", description="the trainer image; required by the kubernetes executor")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    gpus: int = Field(default=1, ge=0, description="nvidia.com/gpu per Job; 0 makes a CPU Job")
    cpu: str = "4"
    memory: str = "16Gi"
    tmp_size: str = Field(default="20Gi", description="the /tmp emptyDir: archives and production heads are unpacked")
    config_map: str = Field(default="", description="ConfigMap whose keys become the Job's environment")
    secret: str = Field(default="", description="Secret whose keys become the Job's environment (S3, Kafka)")
    service_account: str = ""
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] | None = Field(
        default=None, description="None: tolerate the nvidia.com/gpu taint when the Job asks for a GPU"
    )
    backoff_limit: int = Field(default=1, ge=0)
    ttl_seconds_after_finished: int = Field(default=24 * 3600, ge=0)
    active_deadline_seconds: int = Field(default=6 * 3600, ge=1)
    run_as_user: int = Field(default=10001, ge=1)

    @field_validator("cpu", "memory", "tmp_size")
    @classmethod
    def _quantity(cls, value: str) -> str:
        if not _QUANTITY.fullmatch(value):
            raise ValueError(f"{value!r} is not a Kubernetes quantity (e.g. 500m, 4, 16Gi)")
        return value


@dataclass(frozen=True)
class JobSpec:
    """One training Job: what to train, and the cluster's template."""

    snapshot_id: str
    tasks: tuple[str, ...]
    template: JobTemplate
    seed: int = 0
    run_id: str = ""  # the run the Job records; "" lets the Job pick one
    trigger: str = "on_demand"

    def __post_init__(self) -> None:
        if not self.snapshot_id or not self.tasks:
            raise InvalidInput("a training job needs a snapshot id and at least one task")
        if not self.template.image:
            raise ConfigError("TUBELENS_TRAINER__KUBERNETES__IMAGE: required by the kubernetes executor")


# rendering


def render_training_job(spec: JobSpec) -> client.V1Job:
    name = job_name(spec.snapshot_id, spec.tasks, spec.seed)
    labels = job_labels(spec)
    annotations = {
        f"{ANNOTATION_PREFIX}/snapshot-id": spec.snapshot_id,
        f"{ANNOTATION_PREFIX}/tasks": ",".join(spec.tasks),
        f"{ANNOTATION_PREFIX}/seed": str(spec.seed),
    }
    if spec.run_id:
        annotations[RUN_ID_ANNOTATION] = spec.run_id
    pod = client.V1PodTemplateSpec(
        metadata=client.V1ObjectMeta(labels=labels, annotations=annotations), spec=_pod_spec(spec)
    )
    return client.V1Job(
        api_version="batch/v1",
        kind="Job",
        metadata=client.V1ObjectMeta(name=name, labels=labels, annotations=annotations),
        spec=client.V1JobSpec(
            backoff_limit=spec.template.backoff_limit,
            ttl_seconds_after_finished=spec.template.ttl_seconds_after_finished,
            active_deadline_seconds=spec.template.active_deadline_seconds,
            template=pod,
        ),
    )


def job_command(spec: JobSpec) -> list[str]:
    """`--executor local` explicitly: the Job's environment may name the kubernetes executor for its launcher."""
    command = ["tubelens", "trainer", "run", "--snapshot", spec.snapshot_id]
    for task in spec.tasks:
        command += ["--task", task]
    command += ["--seed", str(spec.seed), "--executor", "local", "--trigger", spec.trigger]
    return command + (["--run-id", spec.run_id] if spec.run_id else [])


def _pod_spec(spec: JobSpec) -> client.V1PodSpec:
    template = spec.template
    return client.V1PodSpec(
        restart_policy="Never",
        containers=[_container(spec)],
        volumes=[
            client.V1Volume(name=TMP_VOLUME, empty_dir=client.V1EmptyDirVolumeSource(size_limit=template.tmp_size))
        ],
        node_selector=dict(template.node_selector) or None,
        tolerations=_tolerations(template) or None,
        service_account_name=template.service_account or None,
        automount_service_account_token=False,  # the Job talks to S3 and Kafka, never to the Kubernetes API
        security_context=client.V1PodSecurityContext(
            run_as_non_root=True,
            run_as_user=template.run_as_user,
            run_as_group=template.run_as_user,
            fs_group=template.run_as_user,
            seccomp_profile=client.V1SeccompProfile(type="RuntimeDefault"),
        ),
    )


def _container(spec: JobSpec) -> client.V1Container:
    template = spec.template
    limits = {"memory": template.memory}
    if template.gpus:
        limits[GPU_RESOURCE] = str(template.gpus)
    return client.V1Container(
        name=CONTAINER,
        image=template.image,
        image_pull_policy=template.image_pull_policy,
        command=job_command(spec),
        # Everything that writes (torch-model-archiver, temp files, caches keyed off HOME) writes under /tmp.
        env=[
            client.V1EnvVar(name="HOME", value="/tmp"),
            client.V1EnvVar(name="TMPDIR", value="/tmp"),
            client.V1EnvVar(name="PYTHONDONTWRITEBYTECODE", value="1"),
        ],
        env_from=_env_from(template) or None,
        resources=client.V1ResourceRequirements(
            requests={"cpu": template.cpu, "memory": template.memory}, limits=limits
        ),
        volume_mounts=[client.V1VolumeMount(name=TMP_VOLUME, mount_path="/tmp")],
        security_context=client.V1SecurityContext(
            allow_privilege_escalation=False,
            read_only_root_filesystem=True,
            run_as_non_root=True,
            capabilities=client.V1Capabilities(drop=["ALL"]),
        ),
    )


def _env_from(template: JobTemplate) -> list[client.V1EnvFromSource]:
    sources = []
    if template.config_map:
        sources.append(client.V1EnvFromSource(config_map_ref=client.V1ConfigMapEnvSource(name=template.config_map)))
    if template.secret:
        sources.append(client.V1EnvFromSource(secret_ref=client.V1SecretEnvSource(name=template.secret)))
    return sources


def _tolerations(template: JobTemplate) -> list[client.V1Toleration]:
    tolerations = template.tolerations
    if tolerations is None:
        tolerations = [Toleration()] if template.gpus else []
    return [
        client.V1Toleration(key=t.key, operator=t.operator, value=t.value or None, effect=t.effect or None)
        for t in tolerations
    ]


def job_labels(spec: JobSpec) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "tubelens-trainer",
        "app.kubernetes.io/component": "training-job",
        "app.kubernetes.io/part-of": "tubelens",
        "app.kubernetes.io/managed-by": "tubelens-trainer",
        f"{ANNOTATION_PREFIX}/snapshot-id": label_value(spec.snapshot_id),
        f"{ANNOTATION_PREFIX}/tasks": label_value(".".join(spec.tasks)),
        f"{ANNOTATION_PREFIX}/trigger": label_value(spec.trigger),
    }


def job_name(snapshot_id: str, tasks: tuple[str, ...], seed: int) -> str:
    """`train-<snapshot>-<tasks>-<hash>` as a DNS-1123 label of at most 63 characters; the hash is of the unsanitized
    inputs, so two snapshots that sanitize alike still get two names."""
    digest = hashlib.sha256(json.dumps([snapshot_id, list(tasks), seed]).encode()).hexdigest()[:HASH_CHARS]
    room = MAX_NAME - len(NAME_PREFIX) - len(digest) - 1
    body = _dns_label(f"{snapshot_id}-{'-'.join(tasks)}")[:room].rstrip("-")
    return f"{NAME_PREFIX}{body}-{digest}" if body else f"{NAME_PREFIX}{digest}"


def label_value(text: str) -> str:
    """At most 63 of [A-Za-z0-9._-], beginning and ending with a letter or digit (or empty)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", text)[:MAX_LABEL_VALUE]
    return re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", cleaned)


def _dns_label(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def to_manifest(job: client.V1Job) -> dict:
    """The Job as the API server receives it: camelCase keys, no nulls."""
    with client.ApiClient() as api:
        return api.sanitize_for_serialization(job)


# launching


def batch_api_from_environment() -> client.BatchV1Api:
    """In a pod, its service account; elsewhere the kubeconfig ($KUBECONFIG or ~/.kube/config)."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        try:
            config.load_kube_config(client_configuration=configuration)
        except (config.ConfigException, OSError) as exc:
            raise ConfigError(f"the kubernetes executor needs in-cluster credentials or a kubeconfig: {exc}") from None
    return client.BatchV1Api(client.ApiClient(configuration))


def launch_and_watch(
    job: client.V1Job,
    namespace: str,
    batch_api: client.BatchV1Api | None = None,
    *,
    timeout_s: float = 7 * 3600,
    retry: RetryPolicy = DEFAULT_API_RETRY,
    stop: threading.Event | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> client.V1Job:
    """Create `job` (or find it already created) and watch it until it completes; returns it as last seen.

    Raises JobFailed with the Failed condition's reason, JobTimedOut after `timeout_s`, JobWatchStopped when `stop`
    is set, Unavailable when the API stayed unreachable through `retry`, and InvalidInput or ConfigError when it
    refused the request."""
    api = batch_api or batch_api_from_environment()
    name = job.metadata.name
    deadline = clock() + timeout_s
    _create(api, job, namespace, retry)
    failures = 0
    while True:
        if stop is not None and stop.is_set():
            raise JobWatchStopped(f"stopped watching training job {name}; it keeps running and records its run")
        remaining = deadline - clock()
        if remaining <= 0:
            raise JobTimedOut(name, timeout_s)
        try:
            finished = _watch_once(api, name, namespace, max(1, min(WATCH_CHUNK_S, math.ceil(remaining))), stop)
            failures = 0
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
            failures += 1
            _raise_unless_transient(exc, f"watching training job {name}", failures, retry)
            time.sleep(retry.delay(failures))
            continue
        if finished is not None:
            log.info("training job completed", extra={"job": name, "namespace": namespace})
            return finished


def _create(api: client.BatchV1Api, job: client.V1Job, namespace: str, retry: RetryPolicy) -> None:
    name = job.metadata.name
    try:
        _with_retries(f"creating training job {name}", lambda: api.create_namespaced_job(namespace, job), retry)
    except _AlreadyExists:
        log.info("training job already exists; watching it", extra={"job": name, "namespace": namespace})
        return
    log.info("training job created", extra={"job": name, "namespace": namespace})


def _watch_once(
    api: client.BatchV1Api, name: str, namespace: str, seconds: int, stop: threading.Event | None
) -> client.V1Job | None:
    """One watch request of at most `seconds`: the Job once it completed, None when the request ended first."""
    watcher = watch.Watch()
    stream = watcher.stream(
        api.list_namespaced_job,
        namespace,
        field_selector=f"metadata.name={name}",
        timeout_seconds=seconds,
        _request_timeout=(CONNECT_TIMEOUT_S, seconds + READ_SLACK_S),
    )
    try:
        for event in stream:
            job = event["object"]
            if event["type"] == "DELETED":
                raise JobFailed(name, "Deleted", "the job was deleted before it finished")
            if _condition(job, "Complete") is not None:
                return job
            failed = _condition(job, "Failed")
            if failed is not None:
                raise JobFailed(name, failed.reason or "Failed", failed.message or "no message")
            if stop is not None and stop.is_set():
                return None
    finally:
        stream.close()  # releases the connection now rather than when the generator is collected
    return None


def _condition(job: client.V1Job, kind: str) -> client.V1JobCondition | None:
    conditions = (job.status.conditions if job.status else None) or []
    return next((c for c in conditions if c.type == kind and c.status == "True"), None)


class _AlreadyExists(Exception):
    pass


def _with_retries(what: str, call: Callable[[], T], retry: RetryPolicy) -> T:
    attempt = 0
    while True:
        attempt += 1
        try:
            return call()
        except ApiException as exc:
            if exc.status == 409:
                raise _AlreadyExists from None
            _raise_unless_transient(exc, what, attempt, retry)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            _raise_unless_transient(exc, what, attempt, retry)
        time.sleep(retry.delay(attempt))


def _raise_unless_transient(exc: Exception, what: str, attempt: int, retry: RetryPolicy) -> None:
    """Return to retry; raise the typed error when the failure is permanent or the attempts are spent."""
    status = exc.status if isinstance(exc, ApiException) else None
    if status is not None and status not in TRANSIENT_STATUSES:
        raise _rejected(what, exc) from None
    if attempt >= retry.max_attempts:
        raise Unavailable(f"{what}: gave up after {attempt} attempts: {_describe(exc)}") from None
    log.warning("kubernetes API failed; retrying", extra={"what": what, "attempt": attempt, "error": _describe(exc)})


def _rejected(what: str, exc: ApiException) -> TubelensError:
    message = f"{what}: the API server refused it: {_describe(exc)}"
    if exc.status in (400, 422):
        return InvalidInput(message)
    return ConfigError(message)  # 401, 403, 404: credentials, RBAC, or a namespace that does not exist


def _describe(exc: Exception) -> str:
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status} {exc.reason}: {_api_message(exc.body)}"
    return repr(exc)


def _api_message(body: object) -> str:
    """The message of a Kubernetes Status body, else the body itself, shortened."""
    text = body.decode(errors="replace") if isinstance(body, bytes) else str(body or "")
    try:
        return str(json.loads(text).get("message", text))[:500]
    except (ValueError, AttributeError):
        return text[:500]
