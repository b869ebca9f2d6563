"""The chart's training Job is the Job the trainer itself renders (services/trainer/tubelens/trainer/jobs.py) from the
settings the chart gives it: same name, labels, command, resources, GPU placement and security, to the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.deploy.chartkit import name_of, objects, one, render

SNAPSHOT = "20260301T120000Z-0123abcd"


def training_job(docs: list[dict]) -> dict:
    (job,) = [job for name, job in objects(docs, "Job").items() if name.startswith("train-")]
    return job


def trainer_settings(docs: list[dict], monkeypatch: pytest.MonkeyPatch):
    """The trainer's settings as its pod would load them: its ConfigMap plus the S3 Secret."""
    from tubelens.settings import load_settings
    from tubelens.trainer.settings import TrainerServiceSettings

    for key, value in one(docs, "ConfigMap", name_of("trainer"))["data"].items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("TUBELENS_S3__ACCESS_KEY", "key")
    monkeypatch.setenv("TUBELENS_S3__SECRET_KEY", "secret")
    return load_settings(TrainerServiceSettings)


def what_the_trainer_renders(docs: list[dict], run: dict, monkeypatch: pytest.MonkeyPatch) -> dict:
    from tubelens.trainer.jobs import JobSpec, render_training_job, to_manifest

    template = trainer_settings(docs, monkeypatch).trainer.kubernetes
    spec = JobSpec(run["snapshot"], tuple(run["tasks"]), template, seed=run["seed"], trigger="on_demand")
    return to_manifest(render_training_job(spec))


def values_file(tmp_path: Path, values: dict) -> Path:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


CASES = {
    "gpu, defaults": ("gpu", {}),
    "gpu, tasks, seed and tolerations of its own": (
        "gpu",
        {
            "trainer": {
                "run": {"tasks": ["popularity", "channel_finetuned"], "seed": 7},
                "job": {
                    "gpus": 2,
                    "tolerations": [
                        {"key": "gpu-type", "operator": "Equal", "value": "a100", "effect": "NoSchedule"},
                        {"key": "dedicated", "effect": ""},
                        {},
                    ],
                    "nodeSelector": {"cloud.google.com/gke-accelerator": "nvidia-tesla-a100"},
                },
            }
        },
    ),
    "cpu job on the trainer image": (
        "default",
        {"trainer": {"executor": "kubernetes", "job": {"gpus": 0, "cpu": "500m", "memory": "2Gi"}}},
    ),
    "a snapshot id that needs sanitizing and truncating": (
        "gpu",
        {"trainer": {"run": {"snapshot": "Nightly_Snapshot.2026-03-01T12.00.00Z-with-a-long-tail-0123abcdef"}}},
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_chart_renders_the_job_the_trainer_would(
    case: str, tmp_path: Path, clean_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    overlay, values = CASES[case]
    values.setdefault("trainer", {}).setdefault("run", {}).setdefault("snapshot", SNAPSHOT)
    docs = render(overlay, files=[values_file(tmp_path, values)])
    run = {"tasks": ["channel_finetuned"], "seed": 0, **values["trainer"]["run"]}
    assert training_job(docs) == what_the_trainer_renders(docs, run, monkeypatch)


def test_the_comparison_sees_a_difference(tmp_path: Path, clean_env, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = render("gpu", files=[values_file(tmp_path, {"trainer": {"run": {"snapshot": SNAPSHOT}}})])
    other_seed = {"snapshot": SNAPSHOT, "tasks": ["channel_finetuned"], "seed": 1}
    expected = what_the_trainer_renders(docs, other_seed, monkeypatch)
    assert training_job(docs) != expected  # another seed is another Job (name, command, annotations)


def test_gpu_jobs_run_the_cuda_image_on_gpu_nodes(clean_env, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = render("gpu", {"trainer.run.snapshot": SNAPSHOT})
    job = training_job(docs)
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"].startswith("tubelens-trainer-gpu:")
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    settings = trainer_settings(docs, monkeypatch)
    assert settings.trainer.executor == "kubernetes"
    assert settings.trainer.kubernetes.namespace == "tubelens"
    assert settings.trainer.kubernetes.service_account == pod["serviceAccountName"] == name_of("training-job")
    assert settings.trainer.kubernetes.config_map == name_of("trainer")
    assert settings.trainer.kubernetes.secret == name_of("s3")
    # The trainer's launcher runs every task, fine-tuning included.
    args = one(docs, "Deployment", name_of("trainer"))["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[0] == "--serve" and args[1::2] == ["--task"] * 4 and "channel_finetuned" in args


def test_no_one_off_job_without_a_snapshot() -> None:
    assert not [name for name in objects(render("gpu"), "Job") if name.startswith("train-")]
