"""When a long-running trainer starts a run: on its schedule, after N newly labelled videos, never closer than the
minimum interval, with the reason named, and the same after a restart; and the run records kept beside the trigger's
state under `runs/`."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from tests.datasetkit import NOW, make_world
from tubelens.errors import InvalidInput
from tubelens.objects.local import LocalObjectStore
from tubelens.trainer import provenance
from tubelens.trainer.dataset import DatasetBuilder
from tubelens.trainer.provenance import (
    Outcome,
    RunRecord,
    TaskResult,
    Trigger,
    check_run_id,
    list_runs,
    new_run_id,
    record_run,
)
from tubelens.trainer.triggers import (
    STATE_KEY,
    LabelledVideos,
    TrainingTrigger,
    TriggerPolicy,
    TriggerState,
    decide,
    load_state,
)

HOUR = timedelta(hours=1)
DAILY = TriggerPolicy(schedule_s=24 * 3600, new_labels=0, min_interval_s=3600)
AFTER_100 = TriggerPolicy(schedule_s=0, new_labels=100, min_interval_s=3600)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, by: timedelta) -> None:
        self.now += by


class Labelled:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> int:
        return self.count


def make_trigger(store: LocalObjectStore, policy: TriggerPolicy, clock: Clock, labelled: Labelled) -> TrainingTrigger:
    return TrainingTrigger(policy, store, labelled_count=labelled, clock=clock)


def test_the_schedule_fires_once_its_period_has_passed_since_the_last_run() -> None:
    ran = TriggerState(schedule_from=NOW, last_run_at=NOW, last_attempt_at=NOW)
    assert not decide(DAILY, ran, NOW + 23 * HOUR, labelled=0).fire
    due = decide(DAILY, ran, NOW + 24 * HOUR, labelled=0)
    assert due.fire and due.reason is Trigger.SCHEDULE
    assert "2025-06-03T12:00:00Z" in due.detail


def test_new_labels_fire_at_the_threshold_counted_from_the_last_run() -> None:
    ran = TriggerState(schedule_from=NOW, labelled_at_last_run=250, last_run_at=NOW, last_attempt_at=NOW)
    later = NOW + 2 * HOUR
    waiting = decide(AFTER_100, ran, later, labelled=349)
    assert not waiting.fire and waiting.labelled_since_last_run == 99
    assert "1 more labelled videos" in waiting.detail
    fired = decide(AFTER_100, ran, later, labelled=350)
    assert fired.fire and fired.reason is Trigger.NEW_LABELS and fired.labelled_since_last_run == 100


def test_nothing_fires_within_the_minimum_interval_of_the_last_attempt() -> None:
    both = TriggerPolicy(schedule_s=60, new_labels=1, min_interval_s=3600)
    attempted = TriggerState(schedule_from=NOW - 48 * HOUR, last_attempt_at=NOW)
    early = decide(both, attempted, NOW + 59 * timedelta(minutes=1), labelled=10_000)
    assert not early.fire and early.reason is None and "min interval" in early.detail
    assert decide(both, attempted, NOW + HOUR, labelled=10_000).fire


def test_when_both_would_fire_the_run_is_named_after_the_new_labels() -> None:
    both = TriggerPolicy(schedule_s=3600, new_labels=10, min_interval_s=0)
    decision = decide(both, TriggerState(schedule_from=NOW), NOW + 2 * HOUR, labelled=10)
    assert decision.reason is Trigger.NEW_LABELS


def test_with_both_triggers_off_nothing_ever_fires() -> None:
    off = TriggerPolicy(schedule_s=0, new_labels=0, min_interval_s=0)
    decision = decide(off, TriggerState(schedule_from=NOW), NOW + 1000 * HOUR, labelled=10**6)
    assert not decision.fire and "both triggers are off" in decision.detail


def test_a_negative_policy_is_refused() -> None:
    with pytest.raises(InvalidInput):
        TriggerPolicy(schedule_s=-1)


def test_a_first_start_counts_the_schedule_from_now_rather_than_training_at_once(store: LocalObjectStore) -> None:
    clock, labelled = Clock(NOW), Labelled()
    trigger = make_trigger(store, DAILY, clock, labelled)
    assert not trigger.check().fire
    clock.advance(24 * HOUR)
    assert trigger.check().reason is Trigger.SCHEDULE


def test_a_restart_neither_retrains_at_once_nor_forgets_the_label_count(store: LocalObjectStore) -> None:
    clock, labelled = Clock(NOW), Labelled()
    policy = TriggerPolicy(schedule_s=24 * 3600, new_labels=100, min_interval_s=3600)
    first = make_trigger(store, policy, clock, labelled)
    labelled.count = 120
    assert first.check().reason is Trigger.NEW_LABELS
    started, count = first.attempt_started()
    first.run_succeeded(started, count)

    # A new process: the replay brings the count back to 120, then 60 more videos arrive.
    clock.advance(2 * HOUR)
    restarted_count = Labelled()
    restarted = make_trigger(store, policy, clock, restarted_count)
    assert restarted.state == first.state
    restarted_count.count = 120
    assert not restarted.check().fire, "what was trained on before the restart is not new"
    restarted_count.count = 180
    assert restarted.check().labelled_since_last_run == 60 and not restarted.check().fire
    restarted_count.count = 220
    assert restarted.check().reason is Trigger.NEW_LABELS
    clock.advance(22 * HOUR)
    restarted_count.count = 120
    assert make_trigger(store, policy, clock, restarted_count).check().reason is Trigger.SCHEDULE


def test_a_failed_attempt_is_spaced_by_the_minimum_interval_and_keeps_the_count(store: LocalObjectStore) -> None:
    clock, labelled = Clock(NOW), Labelled()
    trigger = make_trigger(store, AFTER_100, clock, labelled)
    labelled.count = 100
    trigger.attempt_started()  # and the run fails: no run_succeeded
    assert not trigger.check().fire
    # Even a process restarted straight after the failure waits out the interval.
    assert not make_trigger(store, AFTER_100, clock, labelled).check().fire
    clock.advance(HOUR)
    retry = trigger.check()
    assert retry.fire and retry.labelled_since_last_run == 100


def test_the_state_is_json_in_the_store_and_a_corrupt_one_is_a_clear_error(store: LocalObjectStore) -> None:
    clock, labelled = Clock(NOW), Labelled()
    trigger = make_trigger(store, DAILY, clock, labelled)
    labelled.count = 7
    started, count = trigger.attempt_started()
    trigger.run_succeeded(started, count)
    assert load_state(store) == TriggerState(
        schedule_from=NOW, labelled_at_last_run=7, last_run_at=NOW, last_attempt_at=NOW
    )
    assert b'"last_run_at": "2025-06-02T12:00:00Z"' in store.get(STATE_KEY)
    store.put(STATE_KEY, b'{"labelled_at_last_run": 3}', content_type="application/json")
    with pytest.raises(InvalidInput, match="trigger_state.json"):
        load_state(store)


def test_labelled_videos_count_each_video_once_when_it_first_becomes_a_row(store: LocalObjectStore) -> None:
    world = make_world(store, channels=2, videos_per_channel=5)
    builder, labelled = DatasetBuilder(store), LabelledVideos()
    counts = []
    for envelope in world.events:
        builder.handle(envelope)
        labelled.note(envelope)
        counts.append(labelled.count())
    for envelope in world.events:  # a redelivery of everything
        builder.handle(envelope)
        labelled.note(envelope)
    snapshot = builder.snapshot(seed=0, now=NOW)
    assert labelled.count() == snapshot.table.num_rows == len(world.videos)
    # Each video is counted at its thumbnail embedding, the last of the three facts the pipeline reports.
    kinds = [envelope.WhichOneof("payload") for envelope in world.events]
    steps = [i for i in range(1, len(counts)) if counts[i] > counts[i - 1]]
    assert all(kinds[i] == "embedding_computed" for i in steps) and len(steps) == len(world.videos)


def test_a_video_without_stats_is_not_labelled(store: LocalObjectStore) -> None:
    world = make_world(store, channels=1, videos_per_channel=3)
    labelled = LabelledVideos()
    for envelope in world.events:
        if envelope.WhichOneof("payload") != "stats_snapshot":
            labelled.note(envelope)
    assert labelled.count() == 0


# run records share the trigger's prefix


def record(run_id: str, **changes) -> RunRecord:
    fields = dict(
        run_id=run_id,
        trigger=Trigger.NEW_LABELS,
        tasks=("channel",),
        seed=0,
        snapshot_id="20250602T120000Z-0a1b2c3d",
        code_version="tubelens-trainer 0.1.0+abc1234",
        host="trainer-0",
        device="cpu",
        executor="local",
        started_at="2025-06-02T12:00:00Z",
        finished_at="2025-06-02T12:03:00Z",
        outcome=Outcome.SUCCEEDED,
        results=(TaskResult("channel", "v1", True, "", {"accuracy": 0.9}),),
    )
    return RunRecord(**{**fields, **changes})


def test_runs_are_listed_oldest_first_and_the_trigger_state_is_not_a_run(store: LocalObjectStore) -> None:
    make_trigger(store, DAILY, Clock(NOW), Labelled())
    later, earlier = record("20250602T130000Z-00000002"), record("20250602T120000Z-00000001", outcome=Outcome.FAILED)
    for run in (later, earlier):
        record_run(store, run)
    assert store.exists(STATE_KEY)
    assert list_runs(store) == [earlier, later]
    assert json.loads(store.get(f"runs/{later.run_id}.json"))["results"][0]["metrics"] == {"accuracy": 0.9}


def test_a_run_id_must_be_a_timestamp_and_a_short_hex_id() -> None:
    assert check_run_id(new_run_id(NOW)).startswith("20250602T120000Z-")
    for bad in ("../../models/channel/production", "20250602T120000Z-XYZ", ""):
        with pytest.raises(InvalidInput):
            check_run_id(bad)


def test_the_code_version_names_the_commit_of_a_checkout_else_the_image_build_else_the_package(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    checkout = provenance._git_describe(Path(provenance.__file__).resolve().parent)
    assert re.fullmatch(r"[0-9a-f]{7,}(-dirty)?", checkout), "this test runs from a git checkout"
    assert provenance._git_describe(tmp_path) == "", "not a checkout"
    monkeypatch.setattr(provenance, "_git_describe", lambda _directory: "")
    monkeypatch.setenv(provenance.CODE_VERSION_ENV, "9f8e7d6")
    assert provenance.code_version.__wrapped__() == "tubelens-trainer 0.1.0+9f8e7d6"
    monkeypatch.delenv(provenance.CODE_VERSION_ENV)
    assert provenance.code_version.__wrapped__() == "tubelens-trainer 0.1.0"
