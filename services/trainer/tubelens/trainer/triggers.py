"""When a long-running trainer starts a run: on a schedule, or once enough newly labelled videos arrived, never more
often than a minimum interval.

`decide` is a pure function of the policy, the persisted state, the time and the labelled-video count, so every rule
is testable without a clock or a broker. `TrainingTrigger` wraps it with an injected clock and counter, and keeps its
state in the object store (`runs/trigger_state.json`): a restarted trainer neither retrains at once nor forgets how
many labelled videos it had trained on.

The count is of videos that ever became complete (discovered, with a stats snapshot and a thumbnail embedding: a row
of the next snapshot). The trainer replays the topics into memory on every start, so after a restart the count climbs
back to the total it had; only what lies beyond the persisted count at the last run is new. Should the broker's
retention have dropped old events, the count stays below that mark for longer and the trigger fires later, never
sooner.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import IntFlag
from typing import Any

from tubelens.errors import InvalidInput, NotFound
from tubelens.objects import ObjectStore
from tubelens.trainer.provenance import RUNS_PREFIX, Trigger, utc_iso
from tubelens.v1 import events_pb2

STATE_KEY = f"{RUNS_PREFIX}/trigger_state.json"


@dataclass(frozen=True)
class TriggerPolicy:
    schedule_s: float = 24 * 3600  # a run this long after the last one; 0 turns the schedule off
    new_labels: int = 500  # a run once this many videos became labelled since the last one; 0 turns it off
    min_interval_s: float = 3600  # never two attempts closer than this, whatever asks for them

    def __post_init__(self) -> None:
        if self.schedule_s < 0 or self.new_labels < 0 or self.min_interval_s < 0:
            raise InvalidInput("schedule_s, new_labels and min_interval_s must not be negative")


@dataclass(frozen=True)
class TriggerState:
    """What survives a restart. Times are timezone-aware UTC."""

    schedule_from: datetime  # the last successful run's start, or the trainer's first start before any run
    labelled_at_last_run: int = 0  # labelled videos when the last successful run took its snapshot
    last_run_at: datetime | None = None  # the last successful run's start
    last_attempt_at: datetime | None = None  # the last attempt's start, successful or not: what min_interval_s spaces

    def to_dict(self) -> dict[str, Any]:
        return {key: utc_iso(value) if isinstance(value, datetime) else value for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TriggerState:
        return cls(
            schedule_from=_parse_time(data["schedule_from"]),
            labelled_at_last_run=int(data.get("labelled_at_last_run", 0)),
            last_run_at=_parse_time(data.get("last_run_at")),
            last_attempt_at=_parse_time(data.get("last_attempt_at")),
        )


@dataclass(frozen=True)
class Decision:
    fire: bool
    reason: Trigger | None  # what fired; None when nothing did
    detail: str  # a sentence for the log: why it fired, or what it waits for
    labelled_since_last_run: int


def decide(policy: TriggerPolicy, state: TriggerState, now: datetime, labelled: int) -> Decision:
    """Whether to start a run now. New labels are checked before the schedule, so a run that both would start is
    named after the data that asked for it."""
    since = max(0, labelled - state.labelled_at_last_run)
    if state.last_attempt_at is not None:
        earliest = state.last_attempt_at + timedelta(seconds=policy.min_interval_s)
        if now < earliest:
            return Decision(False, None, f"min interval: not before {utc_iso(earliest)}", since)
    if policy.new_labels and since >= policy.new_labels:
        return Decision(
            True, Trigger.NEW_LABELS, f"{since} newly labelled videos (threshold {policy.new_labels})", since
        )
    if policy.schedule_s:
        due = state.schedule_from + timedelta(seconds=policy.schedule_s)
        if now >= due:
            return Decision(
                True, Trigger.SCHEDULE, f"scheduled every {policy.schedule_s:g}s, due {utc_iso(due)}", since
            )
    return Decision(False, None, _waiting_for(policy, state, since), since)


def _waiting_for(policy: TriggerPolicy, state: TriggerState, since: int) -> str:
    waits = []
    if policy.new_labels:
        waits.append(f"{policy.new_labels - since} more labelled videos")
    if policy.schedule_s:
        waits.append(f"the schedule at {utc_iso(state.schedule_from + timedelta(seconds=policy.schedule_s))}")
    return "waiting for " + (" or ".join(waits) if waits else "nothing: both triggers are off")


def utc_now() -> datetime:
    return datetime.now(UTC)


class TrainingTrigger:
    """The policy applied to persisted state, an injected clock and an injected labelled-video count.

    A run is bracketed by `attempt_started` (persisted first, so that a crash mid-run still spaces the next attempt)
    and `run_succeeded`; a failed run leaves the label count and the schedule where they were, so the next attempt
    comes after `min_interval_s`.
    """

    def __init__(
        self,
        policy: TriggerPolicy,
        store: ObjectStore,
        *,
        labelled_count: Callable[[], int],
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.policy = policy
        self.store = store
        self.labelled_count = labelled_count
        self.clock = clock
        self.state = load_state(store) or TriggerState(schedule_from=_aware(clock()))
        save_state(store, self.state)  # a first start fixes when the schedule counts from

    def check(self) -> Decision:
        return decide(self.policy, self.state, _aware(self.clock()), self.labelled_count())

    def attempt_started(self) -> tuple[datetime, int]:
        """Mark an attempt as started now; returns its start time and the labelled count it trains on."""
        started, labelled = _aware(self.clock()), self.labelled_count()
        self._save(replace(self.state, last_attempt_at=started))
        return started, labelled

    def run_succeeded(self, started: datetime, labelled: int) -> None:
        self._save(replace(self.state, schedule_from=started, last_run_at=started, labelled_at_last_run=labelled))

    def _save(self, state: TriggerState) -> None:
        save_state(self.store, state)
        self.state = state


def load_state(store: ObjectStore) -> TriggerState | None:
    try:
        data = json.loads(store.get(STATE_KEY))
    except NotFound:
        return None
    try:
        return TriggerState.from_dict(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInput(f"{STATE_KEY} is not a trigger state: {exc}", field="trigger_state") from None


def save_state(store: ObjectStore, state: TriggerState) -> None:
    data = json.dumps(state.to_dict(), indent=2, sort_keys=True).encode()
    store.put(STATE_KEY, data, content_type="application/json")


def _parse_time(value: str | None) -> datetime | None:
    return None if value is None else _aware(datetime.fromisoformat(value))


def _aware(when: datetime) -> datetime:
    if when.tzinfo is None:
        raise InvalidInput("trigger times must be timezone-aware", field="clock")
    return when.astimezone(UTC)


# counting labelled videos


class _Fact(IntFlag):
    DISCOVERED = 1
    STATS = 2
    THUMBNAIL_EMBEDDING = 4


_COMPLETE = _Fact.DISCOVERED | _Fact.STATS | _Fact.THUMBNAIL_EMBEDDING


class LabelledVideos:
    """Counts videos that became complete for the first time, from the envelopes the dataset builder folded.

    The builder has no public count of its complete records, so this follows the same three facts its
    `_Record.skip_reason` checks (a discovery, a stats snapshot, a thumbnail embedding). Call `note` only after the
    builder folded the envelope without error, so that an event it rejected does not count. Facts only accumulate
    and are kept per video id, so redeliveries and reordering change nothing. Thread-safe.
    """

    def __init__(self) -> None:
        self._facts: dict[str, _Fact] = {}
        self._complete = 0
        self._lock = threading.Lock()

    def note(self, envelope: events_pb2.Envelope) -> None:
        found = _fact_of(envelope)
        if found is None:
            return
        video_id, fact = found
        with self._lock:
            before = self._facts.get(video_id, _Fact(0))
            after = before | fact
            self._facts[video_id] = after
            if after == _COMPLETE and before != _COMPLETE:
                self._complete += 1

    def count(self) -> int:
        with self._lock:
            return self._complete


def _fact_of(envelope: events_pb2.Envelope) -> tuple[str, _Fact] | None:
    which = envelope.WhichOneof("payload")
    if which == "video_discovered":
        return envelope.video_discovered.video_id, _Fact.DISCOVERED
    if which == "stats_snapshot":
        return envelope.stats_snapshot.video_id, _Fact.STATS
    if which == "embedding_computed" and envelope.embedding_computed.source == events_pb2.EMBEDDING_SOURCE_THUMBNAIL:
        return envelope.embedding_computed.video_id, _Fact.THUMBNAIL_EMBEDDING
    return None
