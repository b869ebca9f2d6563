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
    # With no production version, a first candidate is promoted when it beats its baselines on the held-out rows:
    # popularity does; this small world's thumbnails carry no channel signal, so the channel head may not.
    assert all(r.promoted == bool(r.metrics["beats_baselines"]) for r in results)
    assert results[tasks.index("popularity")].promoted
    for result in results:
        production = registry.production(result.entry.task)
        assert (production is not None and production.version == result.entry.version) == result.promoted
        assert result.entry.snapshot_id == snap.id and result.entry.code_version.startswith("tubelens-trainer")
        assert SPECS[result.entry.task].metric in result.metrics
        with zipfile.ZipFile(store.open(result.entry.archive.key)) as mar:
            assert {"head.pt", "head.json"} <= set(mar.namelist())
    trained = announced(bus)
    assert [(e.task, e.promoted) for e in trained] == [(r.entry.task, r.promoted) for r in results]
    assert all(e.dataset_snapshot_id == snap.id and e.archive.key for e in trained)


def test_a_candidate_that_does_not_beat_production_on_the_same_rows_is_not_promoted(snapshot) -> None:
    store, snap = snapshot
    bus, registry = MemoryBus(), ModelRegistry(store)
    # Popularity: its first version beats its baselines on this world, so there is a production to beat.
    first = run_training(snap.table, snap.id, ["popularity"], registry=registry, producer=bus.producer(), seed=0)
    second = run_training(snap.table, snap.id, ["popularity"], registry=registry, producer=bus.producer(), seed=1)
    production = registry.production("popularity")
    assert first[0].promoted
    beats = second[0].metrics["mae"] < first[0].metrics["mae"]
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


def _with_column(table, name: str, values):
    import pyarrow as pa

    index = table.schema.get_field_index(name)
    return table.set_column(index, table.schema.field(name), pa.array(values, type=table.schema.field(name).type))


def test_a_first_version_that_does_not_beat_its_baselines_is_not_promoted(snapshot) -> None:
    store, snap = snapshot
    # Every video of a channel has its channel's views: the channel-mean baseline is exact and cannot be beaten.
    channels = snap.table.column("channel").to_pylist()
    by_channel = {channel: 10 ** (3 + index) for index, channel in enumerate(sorted(set(channels)))}
    table = _with_column(snap.table, "views", [by_channel[channel] for channel in channels])
    bus, registry = MemoryBus(), ModelRegistry(store)

    [result] = run_training(table, snap.id, ["popularity"], registry=registry, producer=bus.producer(), seed=0)

    assert not result.promoted and registry.production("popularity") is None
    assert result.metrics["beats_baselines"] == 0.0
    assert result.metrics["baseline_channel_mean_mae"] < result.metrics["mae"]
    assert registry.entry("popularity", result.entry.version).metrics["baseline_channel_mean_mae"] == pytest.approx(0)
    assert [e.promoted for e in announced(bus)] == [False]


def test_a_first_version_that_beats_its_baselines_says_so_in_production(snapshot) -> None:
    store, snap = snapshot
    registry = ModelRegistry(store)
    [result] = run_training(snap.table, snap.id, ["popularity"], registry=registry, producer=MemoryBus().producer())
    assert result.promoted
    assert result.metrics["mae"] < min(
        result.metrics["baseline_channel_mean_mae"], result.metrics["baseline_global_mean_mae"]
    )
    reason = json.loads(store.get("models/popularity/production.json"))["reason"]
    assert "beats its baselines" in reason and "first version" in reason


def test_a_catalogue_without_dates_trains_what_it_supports(snapshot) -> None:
    store, snap = snapshot
    # Without publish dates every video is in one date block, so the time split trains on all of them.
    table = _with_column(snap.table, "split_time", ["train"] * snap.table.num_rows)
    registry = ModelRegistry(store)
    with pytest.raises(InvalidInput, match="popularity: the snapshot's split_time has no validation rows"):
        run_training(table, snap.id, ["popularity"], registry=registry, producer=MemoryBus().producer())

    results = run_training(
        table, snap.id, ["popularity", "channel"], registry=registry, producer=MemoryBus().producer(),
        skip_unsupported=True,
    )  # fmt: skip
    assert [r.entry.task for r in results] == ["channel"]
