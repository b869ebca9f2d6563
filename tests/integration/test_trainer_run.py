"""A training run: heads on a snapshot, packaged into the registry, promoted only when better, announced."""

from __future__ import annotations

import json
import zipfile

import pytest

from tests.datasetkit import NOW, make_world
from tubelens import events
from tubelens.bus.memory import MemoryBus
from tubelens.errors import InvalidInput
from tubelens.modelkit.registry import ModelRegistry
from tubelens.objects.local import LocalObjectStore
from tubelens.trainer.dataset import DatasetBuilder
from tubelens.trainer.finetune import FineTuneConfig
from tubelens.trainer.train import CHANNEL_FINETUNED, DEFAULT_TASKS, SPECS, run_training


@pytest.fixture
def snapshot(store: LocalObjectStore):
    world = make_world(store, channels=6, videos_per_channel=20)
    builder = DatasetBuilder(store)
    for envelope in world.events:
        builder.handle(envelope)
    return store, builder.snapshot(seed=1, now=NOW)


def announced(bus: MemoryBus) -> list:
    return [events.decode(m.value).model_trained for m in bus.broker.read_all(events.MODELS_TRAINED)]


def test_a_first_run_publishes_promotes_and_announces_every_task(snapshot) -> None:
    store, snap = snapshot
    bus, registry = MemoryBus(), ModelRegistry(store)
    # Genre trains in its own tests (tests/integration/test_trainer_genre_serving.py); here the other tasks.
    tasks = [task for task in DEFAULT_TASKS if task != "genre"]
    results = run_training(snap.table, snap.id, tasks, registry=registry, producer=bus.producer(), seed=0)
    assert [r.entry.task for r in results] == tasks
    assert all(r.promoted for r in results), "with no production version, the first candidate is promoted"
    for result in results:
        assert registry.production(result.entry.task).version == result.entry.version
        assert result.entry.snapshot_id == snap.id and result.entry.code_version.startswith("tubelens-trainer")
        assert SPECS[result.entry.task].metric in result.metrics
        with zipfile.ZipFile(store.open(result.entry.archive.key)) as mar:
            assert {"head.pt", "head.json"} <= set(mar.namelist())
    trained = announced(bus)
    assert [(e.task, e.promoted) for e in trained] == [(task, True) for task in tasks]
    assert all(e.dataset_snapshot_id == snap.id and e.archive.key for e in trained)


def test_a_candidate_that_does_not_beat_production_on_the_same_rows_is_not_promoted(snapshot) -> None:
    store, snap = snapshot
    bus, registry = MemoryBus(), ModelRegistry(store)
    first = run_training(snap.table, snap.id, ["channel"], registry=registry, producer=bus.producer(), seed=0)
    second = run_training(snap.table, snap.id, ["channel"], registry=registry, producer=bus.producer(), seed=1)
    production = registry.production("channel")
    beats = second[0].metrics["accuracy"] > first[0].metrics["accuracy"]
    assert second[0].promoted == beats
    assert production.version == (second if beats else first)[0].entry.version
    assert [e.promoted for e in announced(bus)] == [True, beats]


def test_an_unknown_task_is_a_clear_error(snapshot) -> None:
    store, snap = snapshot
    with pytest.raises(InvalidInput, match="unknown task 'no_such_task'"):
        run_training(
            snap.table, snap.id, ["no_such_task"], registry=ModelRegistry(store), producer=MemoryBus().producer()
        )


def test_the_fine_tuned_cnn_is_a_task_of_its_own_served_by_the_image_handler(snapshot) -> None:
    store, snap = snapshot
    bus, registry = MemoryBus(), ModelRegistry(store)
    short = FineTuneConfig(trainable_blocks=1, epochs=1, batch_size=16)

    [result] = run_training(
        snap.table, snap.id, [CHANNEL_FINETUNED], registry=registry, producer=bus.producer(), finetune=short
    )

    assert result.promoted and result.entry.task == CHANNEL_FINETUNED
    assert 0 <= result.metrics["accuracy"] <= 1 and "macro_f1" in result.metrics
    with zipfile.ZipFile(store.open(result.entry.archive.key)) as mar:
        names = set(mar.namelist())
        assert {"image_classifier.pt", "image_classifier.json"} <= names
        assert json.loads(mar.read("MAR-INF/MANIFEST.json"))["model"]["handler"] == "ts_image_handler.py"
    assert CHANNEL_FINETUNED not in DEFAULT_TASKS, "a plain run leaves the GPU task to a Job"
