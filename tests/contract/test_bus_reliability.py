"""Issue 13 on every bus backend: no poison pills (size limits, claim-checked dead letters), outages pause instead
of dead-lettering, derived event ids make redeliveries recognisable, a dead consume loop is reported."""

from __future__ import annotations

import threading

import pytest
from prometheus_client import REGISTRY

from tests.buskit import FAST_RETRY, Recorder, discovered, publish_discovered, running, wait_until
from tubelens import events
from tubelens.bus import Bus, Message, Worker, dlq_topic
from tubelens.bus.confluent import ConfluentBus
from tubelens.bus.kafka import KafkaBus
from tubelens.bus.memory import MemoryBus
from tubelens.errors import DependencyUnavailable, InvalidInput
from tubelens.settings import KafkaSettings

LIMIT = 1_048_576  # the default TUBELENS_KAFKA__MAX_MESSAGE_BYTES


def make_bus(kind: str, request: pytest.FixtureRequest, limit: int) -> Bus:
    if kind == "memory":
        return MemoryBus(partitions=2, max_message_bytes=limit)
    broker = request.getfixturevalue("broker")
    settings = KafkaSettings(bootstrap=broker.address, partitions=2, session_timeout_ms=6000, max_message_bytes=limit)
    return KafkaBus(settings) if kind == "kafka" else ConfluentBus(settings)


@pytest.fixture(params=["memory", "kafka", "confluent"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def bus(kind: str, request: pytest.FixtureRequest) -> Bus:
    made = make_bus(kind, request, LIMIT)
    yield made
    made.close()


def dead_letters(bus: Bus, topic: str, group: str, expected: int) -> list:
    recorder = Recorder()
    with running(Worker(bus, [dlq_topic(topic)], group + "-dlq", recorder.handler("dlq"), service="test")):
        recorder.wait_for(expected)
    return [(env.dead_letter, message) for _, env, message in recorder.seen]


def sample(name: str, labels: dict) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_3_mb_message_is_dead_lettered_with_a_claim_check_and_the_next_message_is_processed(
    kind: str, bus: Bus, request: pytest.FixtureRequest, store, unique: str
) -> None:
    topic, group = f"big-{unique}", f"g-{unique}"
    bus.ensure_topics([topic])
    # Published past a producer configured with a larger limit: what a misconfigured client could do.
    roomy = make_bus(kind, request, 8 * LIMIT) if kind != "memory" else MemoryBus(broker=bus.broker)
    huge = b"\x00garbage" * (3 * LIMIT // 8)
    big_producer = roomy.producer()
    big_producer.publish(topic, huge, key="v-big")
    big_producer.flush()
    publish_discovered(bus, topic, "v-after", 1)
    recorder = Recorder()
    with running(Worker(bus, [topic], group, recorder.handler("w"), service="test", retry=FAST_RETRY, claims=store)):
        recorder.wait_for(1)
        [(letter, message)] = dead_letters(bus, topic, group, 1)
    assert recorder.titles() == ["video v-after #1"]
    assert "over the 1048576-byte message limit" in letter.reason and letter.error_type == "TooLarge"
    assert letter.value == b"" and letter.value_size == len(huge)
    assert store.get(letter.value_ref.key) == huge  # the claim check holds the original bytes
    assert len(message.value) < 4096  # the dead letter itself stays small
    if roomy is not bus:
        roomy.close()


def test_a_handler_publishing_an_event_over_the_limit_fails_that_message_only(
    bus: Bus, store, unique: str
) -> None:
    topic, out, group = f"in-{unique}", f"out-{unique}", f"g-{unique}"
    for seq in range(3):
        publish_discovered(bus, topic, f"v{seq}", seq)
    producer = bus.producer()

    def handle(message: Message) -> None:
        envelope = events.decode(message.value)
        size = 2 * LIMIT if envelope.video_discovered.title.endswith("#1") else 10
        producer.publish(out, b"x" * size, key=message.key)

    recorder = Recorder()
    with running(
        Worker(bus, [topic], group, handle, service="test", producer=producer, retry=FAST_RETRY, claims=store),
        Worker(bus, [out], group + "-out", recorder.handler("out"), service="test", retry=FAST_RETRY),
    ):
        [(letter, _)] = dead_letters(bus, topic, group, 1)
        wait_until(lambda: sample("tubelens_bus_messages_processed_total",
                                  {"service": "test", "topic": topic, "group": group}) == 2, what="2 processed")
    assert letter.error_type == "TooLarge" and "TUBELENS_KAFKA__MAX_MESSAGE_BYTES" in letter.reason
    assert events.decode(store.get(letter.value_ref.key)).video_discovered.title == "video v1 #1"


def test_an_outage_pauses_consuming_and_dead_letters_nothing(bus: Bus, store, unique: str) -> None:
    topic, group = f"outage-{unique}", f"g-{unique}"
    for seq in range(4):
        publish_discovered(bus, topic, f"v{seq}", seq)
    outage = threading.Event()
    outage.set()
    readiness: list[bool] = []
    recorder = Recorder()
    record = recorder.handler("w")
    calls = 0

    def handle(message: Message) -> None:
        nonlocal calls
        calls += 1
        if outage.is_set():
            raise DependencyUnavailable("object store at http://s3 unreachable", dependency="object store")
        record(message)

    work = Worker(bus, [topic], group, handle, service="test", retry=FAST_RETRY, claims=store,
                  on_readiness=readiness.append)
    labels = {"service": "test", "group": group}
    with running(work):
        # Many more failures than max_attempts (3): an outage does not spend the message's attempts.
        wait_until(lambda: calls > 3 * FAST_RETRY.max_attempts, timeout=60, what="retries during the outage")
        assert work.paused and not work.serving
        assert sample("tubelens_bus_consumer_paused", labels) == 1
        assert recorder.count() == 0
        outage.clear()
        recorder.wait_for(4)
        wait_until(lambda: work.serving, what="serving again")
    assert sorted(recorder.titles()) == [f"video v{i} #{i}" for i in range(4)]
    assert sample("tubelens_bus_consumer_paused", labels) == 0
    assert sample("tubelens_bus_consumer_pauses_total", {**labels, "dependency": "object store"}) >= 1
    assert sample("tubelens_bus_messages_dead_lettered_total",
                  {"service": "test", "topic": topic, "group": group, "error": "UNAVAILABLE"}) == 0
    assert readiness[0] is True and False in readiness and readiness[-1] is True


def test_a_redelivered_input_republishes_the_same_ids_and_the_duplicates_are_skipped(bus: Bus, unique: str) -> None:
    topic, out, group = f"src-{unique}", f"dst-{unique}", f"g-{unique}"
    source = events.wrap(discovered("v1"), producer="test", cause="discovered", key="v1")
    producer = bus.producer()
    for _ in range(2):  # the input delivered twice, as after a SIGKILL before the commit
        producer.publish(topic, events.encode(source), key="v1", headers=events.headers_of(source))
    producer.flush()
    relay_producer = bus.producer()

    def relay(message: Message) -> None:
        envelope = events.decode(message.value)
        output = events.wrap(envelope.video_discovered, producer="test", cause=envelope.event_id, key="v1")
        relay_producer.publish(out, events.encode(output), key="v1", headers=events.headers_of(output))

    published, applied = Recorder(), Recorder()
    with running(
        # Neither keeps a seen-set: the relay re-publishes, the watcher sees every copy.
        Worker(bus, [topic], group + "-relay", relay, service="test", producer=relay_producer, seen_ids=0),
        Worker(bus, [out], group + "-watch", published.handler("watch"), service="test", seen_ids=0),
        Worker(bus, [out], group + "-apply", applied.handler("apply"), service="test"),
    ):
        published.wait_for(2)
        wait_until(
            lambda: sample("tubelens_bus_duplicates_skipped_total",
                           {"service": "test", "topic": out, "group": group + "-apply"}) == 1,
            what="one duplicate skipped",
        )
    [first, second] = [env.event_id for _, env, _ in published.seen]
    assert first == second == events.derived_id(source.event_id, "tubelens.v1.VideoDiscovered", "v1")
    assert applied.count() == 1


def test_derived_ids_depend_on_cause_type_and_key_only() -> None:
    a = events.wrap(discovered("v1"), producer="x", cause="e1", key="v1")
    b = events.wrap(discovered("v1", 5), producer="y", cause="e1", key="v1")
    assert a.event_id == b.event_id == events.derived_id("e1", "tubelens.v1.VideoDiscovered", "v1")
    assert events.wrap(discovered("v1"), producer="x", cause="e2", key="v1").event_id != a.event_id
    assert events.wrap(discovered("v2"), producer="x", cause="e1", key="v2").event_id != a.event_id
    with pytest.raises(ValueError, match="cause"):
        events.publish(MemoryBus().producer(), discovered("v1"), key="v1", service="x", cause="")


def test_a_dead_consume_loop_is_reported_not_hidden(unique: str) -> None:
    class Broken(MemoryBus):
        def consumer(self, topics, group):
            raise RuntimeError("the consumer could not start")

    work = Worker(Broken(), [f"t-{unique}"], f"g-{unique}", lambda m: None, service="test")
    thread = work.start_thread()
    thread.join(timeout=30)
    assert not thread.is_alive() and not work.serving
    with pytest.raises(RuntimeError, match="consume loop .* died"):
        work.raise_if_dead()


def test_an_input_fault_still_spends_its_attempts(bus: Bus, store, unique: str) -> None:
    topic, group = f"bad-{unique}", f"g-{unique}"
    publish_discovered(bus, topic, "v1", 1)

    def handle(message: Message) -> None:
        raise InvalidInput("not a video")

    with running(Worker(bus, [topic], group, handle, service="test", retry=FAST_RETRY, claims=store)):
        [(letter, _)] = dead_letters(bus, topic, group, 1)
    assert letter.reason == "not a video" and letter.attempts == 1
