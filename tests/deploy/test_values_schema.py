"""values.schema.json: a valid schema that describes every value, accepts the shipped values and refuses wrong ones
(helm template stops with the schema's message before anything is rendered)."""

from __future__ import annotations

import json

import jsonschema
import pytest
import yaml

from tests.deploy.chartkit import CHART, OVERLAYS, VALUES, RenderError, render

SCHEMA = json.loads((CHART / "values.schema.json").read_text())


def test_the_schema_is_valid_draft_7() -> None:
    jsonschema.Draft7Validator.check_schema(SCHEMA)


def test_every_value_has_a_description() -> None:
    missing = []

    def walk(node: dict, path: str) -> None:
        for name, child in node.get("properties", {}).items():
            resolved = child
            if "$ref" in child:
                resolved = SCHEMA["definitions"][child["$ref"].rsplit("/", 1)[1]]
            if "description" not in child and "description" not in resolved:
                missing.append(f"{path}.{name}")
            walk(resolved, f"{path}.{name}")

    walk(SCHEMA, "")
    assert not missing


@pytest.mark.parametrize("overlay", [name for names in OVERLAYS.values() for name in names])
def test_the_shipped_values_pass(overlay: str) -> None:
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    values = merge(defaults, yaml.safe_load((VALUES / overlay).read_text()))
    jsonschema.Draft7Validator(SCHEMA).validate(values)


def merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return out


BAD = {
    "a key no one reads": ({"replicaCount": 3}, "additional properties 'replicaCount' not allowed"),
    "a typo in a section": ({"predictor.replica": 3}, "additional properties 'replica' not allowed"),
    "a negative replica count": ({"predictor.replicas": -1}, "/predictor/replicas"),
    "the latest tag": ({"images.embedding.tag": "latest"}, "/images/embedding/tag"),
    "a digest that is not one": ({"images.kafka.digest": "sha256:abc"}, "/images/kafka/digest"),
    "a string where a boolean goes": ({"networkPolicy.enabled": "yes"}, "/networkPolicy/enabled"),
    "an unknown executor": ({"trainer.executor": "slurm"}, "/trainer/executor"),
    "an unknown task": ({"trainer.tasks": ["views"]}, "/trainer/tasks"),
    "a quantity Kubernetes would refuse": ({"trainer.job.memory": "16 GB"}, "/trainer/job/memory"),
    "a negative GPU count": ({"trainer.job.gpus": -1}, "/trainer/job/gpus"),
    "a toleration field the trainer does not take": (
        {"trainer.job.tolerations[0].tolerationSeconds": 30},
        "/trainer/job/tolerations",
    ),
    "a port out of range": ({"predictor.grpcPort": 70000}, "/predictor/grpcPort"),
    "an env name that is not a tubelens setting": ({"crawler.env.API_KEY": "x"}, "/crawler/env"),
    "an unknown log level": ({"logLevel": "VERBOSE"}, "/logLevel"),
    "a ratio over one": ({"metrics.prometheusRule.errorRatio.ratio": 1.5}, "/metrics/prometheusRule/errorRatio"),
    "a duration Prometheus cannot read": ({"metrics.prometheusRule.consumerLag.for": "15 minutes"}, "consumerLag"),
    "an autoscaler target over 100 %": ({"embedding.autoscaling.targetCPUUtilizationPercentage": 150}, "autoscaling"),
    "external Kafka without an address": ({"kafka.broker.enabled": False}, "/kafka/bootstrap"),
    "a bootstrap address without a port": (
        {"kafka.broker.enabled": False, "kafka.bootstrap": "kafka.example.com"},
        "/kafka/bootstrap",
    ),
    "external S3 without an endpoint": ({"s3.minio.enabled": False, "s3.existingSecret": "s3"}, "/s3/endpoint"),
    "external S3 without keys or a Secret": ({"s3.minio.enabled": False, "s3.endpoint": "s3:9000"}, "/s3/accessKey"),
    "a channel id with a comma": ({"crawler.channels": ["UCa,UCb"]}, "/crawler/channels"),
    "a snapshot id with a slash": ({"trainer.run.snapshot": "../etc"}, "/trainer/run/snapshot"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_wrong_values_are_refused_before_anything_renders(case: str) -> None:
    settings, where = BAD[case]
    with pytest.raises(RenderError) as refused:
        render("default", settings)
    message = str(refused.value)
    assert "values don't meet the specifications of the schema" in message
    assert where in message, message


def test_the_same_values_corrected_render() -> None:
    """The refusals above are the schema's doing: the nearest correct values pass."""
    render("default", {"kafka.broker.enabled": False, "kafka.bootstrap": "kafka-0.kafka:9092,kafka-1.kafka:9092"})
    render("default", {"s3.minio.enabled": False, "s3.endpoint": "s3.example.com", "s3.existingSecret": "mine"})
    render("default", {"trainer.job.memory": "16Gi", "trainer.job.gpus": 0, "images.embedding.tag": "0.1.0"})
