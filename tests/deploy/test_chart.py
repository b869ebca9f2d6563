"""The Helm chart: it lints, renders with every example overlay into objects Kubernetes 1.34 accepts, and those
objects say what the services need (settings under their real names, probes, ports, security, network paths)."""

from __future__ import annotations

import json
import os

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.deploy.chartkit import (
    CHART,
    KUBERNETES_VERSION,
    OVERLAYS,
    RELEASE,
    ROOT,
    SERVICES,
    VALUES,
    container,
    containers,
    matches,
    name_of,
    objects,
    one,
    pod_spec,
    render,
    run_tool,
)
from tubelens import events
from tubelens.bus.base import dlq_topic
from tubelens.rpc import LIVENESS

CUSTOM_RESOURCES = {"ServiceMonitor", "PrometheusRule"}
# Everything the Prometheus Operator is asked to create, so that every template renders at least once.
EVERYTHING = {"metrics.serviceMonitor.enabled": True, "metrics.prometheusRule.enabled": True}
GRPC = {"embedding": "tubelens.v1.Embedder", "predictor": "tubelens.v1.Predictor"}


def all_overlays() -> list[tuple[str, list[dict]]]:
    return [(overlay, render(overlay, EVERYTHING)) for overlay in OVERLAYS]


# lint and render


@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_the_chart_lints_strictly_with_each_overlay(overlay: str) -> None:
    files = [arg for name in OVERLAYS[overlay] for arg in ("--values", str(VALUES / name))]
    done = run_tool("helm", "lint", "--strict", str(CHART), *files)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_every_rendered_object_is_valid_kubernetes(overlay: str) -> None:
    docs = render(overlay, EVERYTHING)
    kinds = {doc["kind"] for doc in docs}
    assert {"Deployment", "Service", "ConfigMap", "ServiceAccount", "NetworkPolicy"} <= kinds
    for doc in docs:
        if doc["kind"] in CUSTOM_RESOURCES:
            continue
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_gpu_overlay_with_a_one_off_run_renders_the_training_job_validly() -> None:
    docs = render("gpu", {"trainer.run.snapshot": "20260301T120000Z-0123abcd"})
    (job,) = [doc for doc in docs if doc["kind"] == "Job" and doc["metadata"]["name"].startswith("train-")]
    kubernetes_validate.validate(job, KUBERNETES_VERSION, strict=True)
    assert job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_kubernetes_validate_would_catch_a_broken_object() -> None:
    deployment = one(render(), "Deployment", name_of("crawler"))
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["pat"] = "/metrics"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_the_prometheus_rule_follows_the_operators_crd() -> None:
    crd = yaml.safe_load((ROOT / "deploy" / "schemas" / "monitoring.coreos.com_prometheusrules.yaml").read_text())
    schema = strict(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    # Not check_schema: one of its patterns is Go's regex dialect ((?i) after ^), which Python's re refuses.
    validator = jsonschema.Draft7Validator(schema)
    rule = one(render("default", EVERYTHING), "PrometheusRule", RELEASE)
    validator.validate(rule)
    rule["spec"]["groups"][0]["rules"][0]["for_"] = "5m"
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(rule)


def strict(schema: object) -> object:
    """The CRD's schema with unknown fields refused, as kubernetes-validate --strict treats built-in kinds."""
    if isinstance(schema, dict):
        out = {key: strict(value) for key, value in schema.items() if not key.startswith("x-kubernetes")}
        if "properties" in out and "additionalProperties" not in out and out.get("properties"):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    return schema


@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_every_service_monitor_scrapes_named_ports_of_a_service(overlay: str) -> None:
    docs = render(overlay, EVERYTHING)
    services = objects(docs, "Service")
    monitors = objects(docs, "ServiceMonitor")
    assert set(monitors) == {name_of(service) for service in SERVICES}
    for name, monitor in monitors.items():
        (service,) = [s for s in services.values() if matches(monitor["spec"]["selector"], s["metadata"]["labels"])]
        port_names = {port["name"] for port in service["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            assert set(endpoint) <= {"port", "path", "interval", "honorLabels"}, name
            assert endpoint["port"] in port_names, (name, endpoint["port"])
            # The metrics' own `service` label (crawler, embedding, ...) must win over the Service's name.
            assert endpoint["honorLabels"] is True


# what each service gets


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_has_its_deployment_service_account_config_and_service(service: str) -> None:
    docs = render()
    name = name_of(service)
    deployment = one(docs, "Deployment", name)
    one(docs, "ServiceAccount", name)
    one(docs, "ConfigMap", name)
    svc = one(docs, "Service", name)
    spec = pod_spec(deployment)
    assert spec["serviceAccountName"] == name
    main = container(deployment, service)
    sources = [next(iter(source.values()))["name"] for source in main["envFrom"]]
    assert sources[0] == name  # the ConfigMap, then the Secret
    assert matches({"matchLabels": svc["spec"]["selector"]}, deployment["spec"]["template"]["metadata"]["labels"])
    assert {"metrics"} <= {port["name"] for port in svc["spec"]["ports"]}


@pytest.mark.parametrize("service", sorted(GRPC))
def test_grpc_services_have_a_named_grpc_port_and_native_grpc_probes(service: str) -> None:
    docs = render()
    deployment = one(docs, "Deployment", name_of(service))
    main = container(deployment, service)
    ports = {port["name"]: port["containerPort"] for port in main["ports"]}
    assert set(ports) == {"grpc", "metrics"}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert main[probe]["grpc"]["port"] == ports["grpc"], probe
    # Ready means the API's own health entry is SERVING (the predictor's: its models loaded and warm); alive means
    # the process serves at all, so a server still loading is not restarted for it.
    assert main["readinessProbe"]["grpc"]["service"] == GRPC[service]
    assert main["startupProbe"]["grpc"]["service"] == main["livenessProbe"]["grpc"]["service"] == LIVENESS
    svc = one(docs, "Service", name_of(service))
    grpc_port = next(port for port in svc["spec"]["ports"] if port["name"] == "grpc")
    assert grpc_port["appProtocol"] == "grpc"


@pytest.mark.parametrize("service", sorted(set(SERVICES) - set(GRPC)))
def test_services_without_grpc_are_probed_on_metrics(service: str) -> None:
    main = container(one(render(), "Deployment", name_of(service)), service)
    assert [port["name"] for port in main["ports"]] == ["metrics"]
    assert main["livenessProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}
    assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}


@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_every_pod_is_non_root_with_a_read_only_root_and_no_capabilities(overlay: str) -> None:
    docs = render(overlay, EVERYTHING)
    workloads = [*objects(docs, "Deployment").values(), *objects(docs, "Job").values()]
    # The bundled dev broker's image writes its generated config into its own tree (kafka.yaml says so).
    writable_root = {name_of("kafka")}
    for workload in workloads:
        name = workload["metadata"]["name"]
        spec = pod_spec(workload)
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] > 0, name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is (name == name_of("trainer") and overlay == "gpu"), name
        for c in containers(workload):
            context = c["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"] == {"drop": ["ALL"]}, name
            assert context["readOnlyRootFilesystem"] is (name not in writable_root), name
            assert c["resources"]["requests"] and c["resources"]["limits"]["memory"], name
            if name not in writable_root:
                mounts = {mount["mountPath"]: mount["name"] for mount in c.get("volumeMounts", [])}
                volumes = {volume["name"]: volume for volume in spec["volumes"]}
                assert "emptyDir" in volumes[mounts["/tmp"]], (name, c["name"])


def test_images_are_tagged_and_never_latest() -> None:
    for overlay, docs in all_overlays():
        for doc in docs:
            if doc["kind"] in {"Deployment", "Job"}:
                for c in containers(doc):
                    repository, _, tag = c["image"].split("@")[0].rpartition(":")
                    assert repository and tag and tag != "latest", (overlay, c["image"])


# settings


def settings_classes() -> dict:
    from tubelens.crawler.settings import CrawlerServiceSettings
    from tubelens.embedding.settings import EmbeddingServiceSettings
    from tubelens.predictor.settings import PredictorServiceSettings
    from tubelens.preprocessor.settings import PreprocessorServiceSettings
    from tubelens.trainer.settings import TrainerServiceSettings

    return {
        "crawler": CrawlerServiceSettings,
        "preprocessor": PreprocessorServiceSettings,
        "embedding": EmbeddingServiceSettings,
        "trainer": TrainerServiceSettings,
        "predictor": PredictorServiceSettings,
    }


# The keys values.yaml documents for the Secrets a user creates (s3.existingSecret, youtube.existingSecret).
USER_SECRETS = {
    "s3": ("TUBELENS_S3__ACCESS_KEY", "TUBELENS_S3__SECRET_KEY"),
    "youtube": ("TUBELENS_CRAWLER__API_KEY",),
}


def secret_env(docs: list[dict], overlay: str, workload: dict, service: str) -> dict[str, str]:
    """What the pod's Secret references give it: the chart's own Secrets, else those a user creates."""
    values = [yaml.safe_load((VALUES / name).read_text()) for name in OVERLAYS[overlay]]
    created = {
        part: next((v[part]["existingSecret"] for v in values if v.get(part, {}).get("existingSecret")), name_of(part))
        for part in USER_SECRETS
    }
    env = {}
    for source in container(workload, service)["envFrom"]:
        if "secretRef" in source:
            name = source["secretRef"]["name"]
            secret = objects(docs, "Secret").get(name)
            keys = secret["data"] if secret else next(USER_SECRETS[part] for part, n in created.items() if n == name)
            env.update({key: "a-secret" for key in keys})
    return env


def names_a_field(model: type, variable: str) -> bool:
    """TUBELENS_A__B__C names field a.b.c of the settings model (pydantic would ignore an unknown one)."""
    annotation: object = model
    for part in variable.removeprefix("TUBELENS_").lower().split("__"):
        fields = getattr(annotation, "model_fields", None)
        if fields is None or part not in fields:
            return False
        annotation = fields[part].annotation
        if getattr(annotation, "__args__", None) and not hasattr(annotation, "model_fields"):
            annotation = next((a for a in annotation.__args__ if hasattr(a, "model_fields")), annotation)
    return True


@pytest.mark.parametrize("overlay", list(OVERLAYS))
@pytest.mark.parametrize("service", SERVICES)
def test_each_service_loads_its_settings_from_what_the_chart_gives_it(
    overlay: str, service: str, clean_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tubelens.settings import load_settings

    docs = render(overlay)
    workload = one(docs, "Deployment", name_of(service))
    config = one(docs, "ConfigMap", name_of(service))["data"]
    env = {**config, **secret_env(docs, overlay, workload, service)}
    model = settings_classes()[service]
    unknown = [name for name in env if not names_a_field(model, name)]
    assert not unknown, f"{service} has no setting for {unknown}"
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings(model)  # raises ConfigError with one line per missing or invalid value
    assert settings.metrics_port == container(workload, service)["ports"][-1]["containerPort"]


def test_ports_and_addresses_in_the_settings_match_the_services() -> None:
    docs = render()
    predictor = one(docs, "ConfigMap", name_of("predictor"))["data"]
    embedding_service = one(docs, "Service", name_of("embedding"))
    grpc = next(p for p in embedding_service["spec"]["ports"] if p["name"] == "grpc")
    assert predictor["TUBELENS_PREDICTOR__API__EMBEDDING_ADDRESS"] == f"{name_of('embedding')}:{grpc['port']}"
    assert one(docs, "ConfigMap", name_of("embedding"))["data"]["TUBELENS_EMBEDDING__GRPC_PORT"] == str(grpc["port"])
    assert predictor["TUBELENS_KAFKA__BOOTSTRAP"] == f"{name_of('kafka')}:9092"
    assert predictor["TUBELENS_S3__ENDPOINT"] == f"{name_of('minio')}:9000"


def test_the_crawler_gets_the_youtube_key_and_no_s3_credentials() -> None:
    docs = render("default", {"youtube.apiKey": "AIza-test"})
    crawler = one(docs, "Deployment", name_of("crawler"))
    refs = [source["secretRef"]["name"] for source in container(crawler, "crawler")["envFrom"] if "secretRef" in source]
    assert refs == [name_of("youtube")]
    assert set(one(docs, "Secret", name_of("youtube"))["data"]) == {"TUBELENS_CRAWLER__API_KEY"}
    assert one(docs, "ConfigMap", name_of("crawler"))["data"]["TUBELENS_OBJECTS"] == "local"
    for service in ("preprocessor", "embedding", "trainer", "predictor"):
        sources = container(one(docs, "Deployment", name_of(service)), service)["envFrom"]
        assert [source["secretRef"]["name"] for source in sources if "secretRef" in source] == [name_of("s3")]
    assert set(one(docs, "Secret", name_of("s3"))["data"]) == {"TUBELENS_S3__ACCESS_KEY", "TUBELENS_S3__SECRET_KEY"}


def test_existing_secrets_are_referenced_and_not_created() -> None:
    docs = render("production")
    assert "Secret" not in {doc["kind"] for doc in docs}
    predictor = container(one(docs, "Deployment", name_of("predictor")), "predictor")
    assert {"secretRef": {"name": "tubelens-s3"}} in predictor["envFrom"]
    crawler = container(one(docs, "Deployment", name_of("crawler")), "crawler")
    assert {"secretRef": {"name": "tubelens-youtube"}} in crawler["envFrom"]


def test_a_service_env_adds_settings_and_cannot_override_the_wired_ones() -> None:
    env = {"preprocessor.env.TUBELENS_PREPROCESSOR__FRAME_FPS": "2", "env.TUBELENS_CONSUMER__MAX_ATTEMPTS": "8"}
    docs = render("default", env)
    config = one(docs, "ConfigMap", name_of("preprocessor"))["data"]
    assert config["TUBELENS_PREPROCESSOR__FRAME_FPS"] == "2" and config["TUBELENS_CONSUMER__MAX_ATTEMPTS"] == "8"
    assert one(docs, "ConfigMap", name_of("crawler"))["data"]["TUBELENS_CONSUMER__MAX_ATTEMPTS"] == "8"
    from tests.deploy.chartkit import RenderError

    with pytest.raises(RenderError, match="TUBELENS_METRICS_PORT is set by the chart"):
        render("default", {"crawler.env.TUBELENS_METRICS_PORT": "9999"})


# the predictor and TorchServe


def test_torchserve_runs_as_a_native_sidecar_sharing_the_model_store() -> None:
    docs = render()
    deployment = one(docs, "Deployment", name_of("predictor"))
    spec = pod_spec(deployment)
    (sidecar,) = spec["initContainers"]
    assert sidecar["name"] == "torchserve" and sidecar["restartPolicy"] == "Always"
    assert sidecar["startupProbe"]["httpGet"]["path"] == "/ping"
    predictor = container(deployment, "predictor")
    config = one(docs, "ConfigMap", name_of("predictor"))["data"]
    store = config["TUBELENS_PREDICTOR__TORCHSERVE__MODEL_STORE"]
    mounts = {c["name"]: {m["mountPath"]: m["name"] for m in c["volumeMounts"]} for c in (sidecar, predictor)}
    assert mounts["torchserve"][store] == mounts["predictor"][store] == "model-store"
    properties = one(docs, "ConfigMap", name_of("predictor") + "-torchserve")["data"]["config.properties"]
    props = dict(line.split("=", 1) for line in properties.splitlines())
    # Management (load, unload, set-default) only from inside the pod; the predictor's URLs point there.
    assert props["management_address"] == config["TUBELENS_PREDICTOR__TORCHSERVE__MANAGEMENT_URL"]
    assert props["management_address"].startswith("http://127.0.0.1:")
    inference_port = props["inference_address"].rpartition(":")[2]
    assert config["TUBELENS_PREDICTOR__TORCHSERVE__INFERENCE_URL"] == f"http://127.0.0.1:{inference_port}"
    assert props["enable_model_api"] == "true"
    assert "--model-store" in (ROOT / "deploy" / "torchserve" / "Dockerfile").read_text()


# network policies


def policies_for(docs: list[dict], labels: dict) -> list[dict]:
    return [p for p in objects(docs, "NetworkPolicy").values() if matches(p["spec"]["podSelector"], labels)]


def egress_ports(policies: list[dict]) -> set[int]:
    return {port["port"] for p in policies for rule in p["spec"].get("egress", []) for port in rule.get("ports", [])}


@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_every_pod_is_behind_a_default_deny_and_a_policy_of_its_own(overlay: str) -> None:
    docs = render(overlay)
    deny = one(docs, "NetworkPolicy", name_of("default-deny"))
    assert deny["spec"]["policyTypes"] == ["Ingress", "Egress"] and "ingress" not in deny["spec"]
    for workload in [*objects(docs, "Deployment").values(), *objects(docs, "Job").values()]:
        labels = workload["spec"]["template"]["metadata"]["labels"]
        policies = policies_for(docs, labels)
        assert deny in policies, workload["metadata"]["name"]
        assert len(policies) == 2, workload["metadata"]["name"]
        assert 53 in egress_ports(policies), workload["metadata"]["name"]


def test_network_paths_follow_what_each_service_talks_to() -> None:
    docs = render()
    labels = {s: one(docs, "Deployment", name_of(s))["spec"]["template"]["metadata"]["labels"] for s in SERVICES}
    own = {s: next(p for p in policies_for(docs, labels[s]) if p["metadata"]["name"] == name_of(s)) for s in SERVICES}
    for service in SERVICES:
        assert 9092 in egress_ports([own[service]]), service
        assert (9000 in egress_ports([own[service]])) is (service != "crawler"), service
        scrape = [rule for rule in own[service]["spec"]["ingress"] if 9100 in [p["port"] for p in rule["ports"]]]
        assert scrape and scrape[0]["from"][0]["namespaceSelector"], service
    # Only the predictor may call the embedding API.
    (grpc_rule,) = [r for r in own["embedding"]["spec"]["ingress"] if r["ports"][0]["port"] == 50061]
    assert [matches(peer["podSelector"], labels["predictor"]) for peer in grpc_rule["from"]] == [True]
    assert 50061 in egress_ports([own["predictor"]])
    # The public API is open to every caller unless predictor.clients narrows it.
    (api_rule,) = [r for r in own["predictor"]["spec"]["ingress"] if r["ports"][0]["port"] == 50051]
    assert "from" not in api_rule
    # The internet, private ranges excluded, for the fetchers only.
    for service in SERVICES:
        blocks = [peer.get("ipBlock") for rule in own[service]["spec"]["egress"] for peer in rule.get("to", [])]
        internet = [block for block in blocks if block and block["cidr"] == "0.0.0.0/0"]
        assert bool(internet) is (service in {"crawler", "preprocessor"}), service
        assert all("10.0.0.0/8" in block["except"] for block in internet)


def test_the_trainer_reaches_the_api_server_only_when_it_launches_jobs() -> None:
    docs = render("gpu")
    role = one(docs, "Role", name_of("trainer"))
    (rule,) = role["rules"]
    assert rule == {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "get", "list", "watch"]}
    assert 6443 in egress_ports([one(docs, "NetworkPolicy", name_of("trainer"))])
    assert "Role" not in {doc["kind"] for doc in render()}
    assert 6443 not in egress_ports([one(render(), "NetworkPolicy", name_of("trainer"))])


def test_training_jobs_get_their_own_policy_by_the_labels_the_trainer_gives_them(clean_env) -> None:
    from tubelens.trainer.jobs import JobSpec, JobTemplate, job_labels

    labels = job_labels(JobSpec("s", ("channel",), JobTemplate(image="x")))
    (policy,) = policies_for(render(), labels)
    assert policy["metadata"]["name"] == name_of("training-job")
    assert {9092, 9000, 53} <= egress_ports([policy]) and "ingress" not in policy["spec"]


def test_external_endpoints_set_the_addresses_ports_and_peers() -> None:
    docs = render("production")
    assert not objects(docs, "Deployment").keys() & {name_of("kafka"), name_of("minio")}
    config = one(docs, "ConfigMap", name_of("embedding"))["data"]
    assert config["TUBELENS_KAFKA__BOOTSTRAP"] == "kafka-kafka-bootstrap.kafka.svc:9092"
    assert config["TUBELENS_S3__ENDPOINT"] == "minio.minio-tenant.svc:443" and config["TUBELENS_S3__SECURE"] == "true"
    egress = one(docs, "NetworkPolicy", name_of("embedding"))["spec"]["egress"]
    kafka = next(rule for rule in egress if rule["ports"][0]["port"] == 9092)
    assert kafka["to"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "kafka"}
    assert any(rule["ports"][0]["port"] == 443 for rule in egress)


# scaling and disruption


def test_predictor_and_embedding_scale_with_hpas_and_keep_pdbs() -> None:
    docs = render()
    hpas = objects(docs, "HorizontalPodAutoscaler")
    assert set(hpas) == {name_of("predictor"), name_of("embedding")}
    for name, hpa in hpas.items():
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        assert "replicas" not in one(docs, "Deployment", name)["spec"]  # the HPA owns it
    pdbs = objects(docs, "PodDisruptionBudget")
    assert set(pdbs) == {name_of(s) for s in ("preprocessor", "embedding", "predictor")}
    for name, pdb in pdbs.items():
        labels = one(docs, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
        assert matches(pdb["spec"]["selector"], labels)
    for singleton in ("crawler", "trainer"):
        deployment = one(docs, "Deployment", name_of(singleton))
        assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}


# topics


@pytest.mark.parametrize(
    ("overlay", "phase"), [("default", "post-install,post-upgrade"), ("production", "pre-install,pre-upgrade")]
)
def test_the_topics_job_creates_every_topic_and_its_dead_letter_twin(overlay: str, phase: str) -> None:
    job = one(render(overlay), "Job", name_of("topics"))
    assert job["metadata"]["annotations"]["helm.sh/hook"] == phase
    script = job["spec"]["template"]["spec"]["containers"][0]["command"][-1]
    loop = script.split("for topic in ", 1)[1].split(";", 1)[0].split()
    assert loop == list(events.TOPICS)
    assert '"$topic.dlq"' in script and dlq_topic("x") == "x.dlq"
    env = {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["REPLICATION_FACTOR"] == ("3" if overlay == "production" else "1")
    config = one(render(overlay), "ConfigMap", name_of("trainer"))["data"]
    assert env["PARTITIONS"] == config["TUBELENS_KAFKA__PARTITIONS"]
    # One message size limit for the topics, the services and the bundled broker.
    assert '--config "max.message.bytes=$MAX_MESSAGE_BYTES"' in script
    assert env["MAX_MESSAGE_BYTES"] == config["TUBELENS_KAFKA__MAX_MESSAGE_BYTES"] == "1048576"
    if overlay == "default":
        kafka = container(one(render(), "Deployment", name_of("kafka")), "kafka")
        broker = {e["name"]: e.get("value") for e in kafka["env"]}
        assert broker["KAFKA_MESSAGE_MAX_BYTES"] == env["MAX_MESSAGE_BYTES"]


def test_generated_s3_keys_are_kept_for_the_bundled_minio_only() -> None:
    docs = render()
    minio = container(one(docs, "Deployment", name_of("minio")), "minio")
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in minio["env"] if "valueFrom" in e}
    assert refs["MINIO_ROOT_USER"] == {"name": name_of("s3"), "key": "TUBELENS_S3__ACCESS_KEY"}
    assert refs["MINIO_ROOT_PASSWORD"] == {"name": name_of("s3"), "key": "TUBELENS_S3__SECRET_KEY"}
    assert "lookup" in (CHART / "templates" / "secrets.yaml").read_text()  # read back on upgrade, not regenerated


def test_no_object_name_is_longer_than_kubernetes_allows() -> None:
    for overlay, docs in all_overlays():
        for doc in docs:
            limit = 63 if doc["kind"] in {"Service", "Job"} else 253
            assert len(doc["metadata"]["name"]) <= limit, (overlay, doc["metadata"]["name"])
    long = "a-release-name-that-is-quite-long-indeed"
    for doc in render("default", release=long):
        assert len(doc["metadata"]["name"]) <= 63, doc["metadata"]["name"]


def test_the_tools_are_the_pinned_versions() -> None:
    assert "v3.19.0" in run_tool("helm", "version", "--short").stdout
    assert "2.42.0" in run_tool("promtool", "--version").stdout
    assert os.access(ROOT / ".tubelens" / "tools" / "bin" / "kubectl", os.X_OK)


def test_pull_secrets_and_placement_reach_the_pods(tmp_path) -> None:
    values = {
        "image": {"pullSecrets": ["registry"]},
        "predictor": {
            "nodeSelector": {"pool": "serving"},
            "tolerations": [{"key": "serving", "operator": "Exists", "effect": "NoSchedule"}],
            "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}},
        },
    }
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    docs = render("gpu", files=[path])
    for doc in docs:
        if doc["kind"] not in CUSTOM_RESOURCES:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    for name, deployment in objects(docs, "Deployment").items():
        assert pod_spec(deployment)["imagePullSecrets"] == [{"name": "registry"}], name
    # Training Jobs get them through their ServiceAccount (the trainer's Job spec has no field for them).
    assert one(docs, "ServiceAccount", name_of("training-job"))["imagePullSecrets"] == [{"name": "registry"}]
    predictor = pod_spec(one(docs, "Deployment", name_of("predictor")))
    assert predictor["nodeSelector"] == {"pool": "serving"} and predictor["tolerations"][0]["key"] == "serving"
    assert "affinity" in predictor and "nodeSelector" not in pod_spec(one(docs, "Deployment", name_of("embedding")))
