"""The bus contract: every backend (in-process, Kafka over kafka-python, Kafka over confluent-kafka) gives the same
delivery guarantees."""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest
from prometheus_client import REGISTRY

from tests.buskit import FAST_RETRY, Recorder, discovered, publish_discovered, running, wait_until
from tubelens import events
from tubelens.bus import Bus, Worker, counted, dlq_topic
from tubelens.bus.confluent import ConfluentBus
from tubelens.bus.kafka import KafkaBus
from tubelens.bus.memory import MemoryBus
from tubelens.errors import InvalidInput, Unavailable
from tubelens.settings import KafkaSettings


@pytest.fixture(params=["memory", "kafka", "confluent"])
def bus(request: pytest.FixtureRequest) -> Bus:
    if request.param == "memory":
        made: Bus = MemoryBus(partitions=4)
    else:
        broker = request.getfixturevalue("broker")
        settings = KafkaSettings(bootstrap=broker.address, partitions=4, session_timeout_ms=6000)
        made = KafkaBus(settings) if request.param == "kafka" else ConfluentBus(settings)
    yield made
    made.close()


def worker(bus: Bus, topic: str, group: str, recorder: Recorder, name: str = "w", **kw) -> Worker:
    return Worker(bus, [topic], group, recorder.handler(name), service="test", retry=FAST_RETRY, **kw)


def dead_letters(bus: Bus, topic: str, group: str, expected: int):
    recorder = Recorder()
    with running(Worker(bus, [dlq_topic(topic)], group + "-dlq", recorder.handler("dlq"), service="test")):
        recorder.wait_for(expected)
    return [env.dead_letter for _, env, _ in recorder.seen]


def test_messages_with_one_key_arrive_in_publish_order(bus: Bus, unique: str) -> None:
    topic, producer = f"order-{unique}", bus.producer()
    for seq in range(300):
        envelope = events.wrap(discovered(f"v{seq % 5}", seq), producer="test")
        producer.publish(topic, events.encode(envelope), key=f"v{seq % 5}")
    producer.flush()
    recorder = Recorder()
    with running(worker(bus, topic, f"g-{unique}", recorder)):
        recorder.wait_for(300)
    by_key = defaultdict(list)
    for _, envelope, message in recorder.seen:
        by_key[message.key].append(int(envelope.video_discovered.title.split("#")[1]))
    assert sorted(by_key) == [f"v{i}".encode() for i in range(5)]
    for key, seqs in by_key.items():
        assert seqs == sorted(seqs) and len(seqs) == 60, f"key {key!r} out of order: {seqs[:10]}"


def test_ten_thousand_keyed_events_are_consumed_exactly_once_by_a_two_member_group(bus: Bus, unique: str) -> None:
    topic, group = f"group-{unique}", f"g-{unique}"
    recorder = Recorder()
    first, second = (
        worker(bus, topic, group, recorder, "first"),
        worker(bus, topic, group, recorder, "second"),
    )
    with running(first, second):
        wait_until(lambda: first.assignment() and second.assignment(), timeout=30, what="both members assigned")
        assert first.assignment().isdisjoint(second.assignment())
        producer = bus.producer()
        for seq in range(10_000):
            envelope = events.wrap(discovered(f"video-{seq % 997}", seq), producer="test")
            producer.publish(topic, events.encode(envelope), key=f"video-{seq % 997}")
        producer.flush()
        recorder.wait_for(10_000, timeout=120)
    titles = Counter(recorder.titles())
    assert len(titles) == 10_000
    assert max(titles.values()) == 1, f"duplicates: {[t for t, n in titles.items() if n > 1][:5]}"
    shares = recorder.per_member()
    assert shares["first"] > 0 and shares["second"] > 0, f"one member did all the work: {shares}"


def test_a_malformed_payload_goes_to_the_dlq_with_its_reason_and_later_events_still_flow(bus: Bus, unique: str) -> None:
    topic = f"poison-{unique}"
    publish_discovered(bus, topic, "before", 1)
    producer = bus.producer()
    producer.publish(topic, b"\x00not-protobuf\xff", key="before")
    producer.flush()
    publish_discovered(bus, topic, "before", 2)
    recorder = Recorder()
    with running(worker(bus, topic, f"g-{unique}", recorder)):
        recorder.wait_for(2)
    assert recorder.titles() == ["video before #1", "video before #2"]
    [letter] = dead_letters(bus, topic, f"g-{unique}", 1)
    assert letter.value == b"\x00not-protobuf\xff"
    assert letter.key == b"before"
    assert letter.original_topic == topic
    assert letter.error_type == "InvalidInput"
    assert "not a tubelens.v1.Envelope" in letter.reason
    assert letter.attempts == 1, "a message that can never succeed is not retried"
    assert letter.consumer_group == f"g-{unique}"
    labels = {"service": "test", "topic": topic, "group": f"g-{unique}"}
    assert REGISTRY.get_sample_value("tubelens_bus_messages_processed_total", labels) == 2
    dead_lettered = {**labels, "error": "INVALID_INPUT"}
    assert REGISTRY.get_sample_value("tubelens_bus_messages_dead_lettered_total", dead_lettered) == 1


def test_published_messages_are_counted_by_service_and_topic_once_a_flush_confirms_them(bus: Bus, unique: str) -> None:
    topic = f"counted-{unique}"
    bus.ensure_topics([topic])
    producer = counted(bus.producer(), f"svc-{unique}")
    labels = {"service": f"svc-{unique}", "topic": topic}
    try:
        for number in range(3):
            producer.publish(topic, b"payload", key=f"v{number}")
        assert REGISTRY.get_sample_value("tubelens_bus_messages_published_total", labels) is None
        producer.flush()
        assert REGISTRY.get_sample_value("tubelens_bus_messages_published_total", labels) == 3
        producer.flush()  # nothing new: nothing counted twice
        assert REGISTRY.get_sample_value("tubelens_bus_messages_published_total", labels) == 3
    finally:
        producer.close()


def test_a_transient_failure_is_retried_with_backoff_and_then_handled_once(bus: Bus, unique: str) -> None:
    topic = f"flaky-{unique}"
    failures = Counter()

    def fail_twice(message, envelope) -> None:
        failures[envelope.event_id] += 1
        if failures[envelope.event_id] <= 2:
            raise Unavailable("object store is restarting")

    publish_discovered(bus, topic, "flaky", 1)
    recorder = Recorder(on_message=fail_twice)
    with running(worker(bus, topic, f"g-{unique}", recorder)):
        recorder.wait_for(1)
    assert recorder.titles() == ["video flaky #1"]
    assert list(failures.values()) == [3]


def test_retries_are_bounded_and_a_message_that_keeps_failing_is_dead_lettered(bus: Bus, unique: str) -> None:
    topic = f"failing-{unique}"

    def always_fail(message, envelope) -> None:
        if envelope.video_discovered.video_id == "bad":
            raise RuntimeError("dependency keeps timing out")

    publish_discovered(bus, topic, "bad", 1)
    publish_discovered(bus, topic, "good", 2)
    recorder = Recorder(on_message=always_fail)
    with running(worker(bus, topic, f"g-{unique}", recorder)):
        [letter] = dead_letters(bus, topic, f"g-{unique}", 1)
        recorder.wait_for(1)
    assert letter.reason == "gave up after 3 attempts: dependency keeps timing out"
    assert letter.attempts == FAST_RETRY.max_attempts
    assert events.decode(letter.value).video_discovered.video_id == "bad"
    assert recorder.titles() == ["video good #2"]


def test_stopping_commits_progress_and_the_next_member_resumes_without_loss_or_duplicates(
    bus: Bus, unique: str
) -> None:
    topic, group = f"resume-{unique}", f"g-{unique}"
    producer = bus.producer()
    for seq in range(200):
        producer.publish(topic, events.encode(events.wrap(discovered(f"k{seq % 7}", seq), producer="t")), key=f"k{seq}")
    producer.flush()
    recorder = Recorder()
    first = worker(bus, topic, group, recorder, "first", max_batch=10)
    recorder.on_message = lambda message, envelope: first.stop() if recorder.count() >= 49 else None
    with running(first):
        wait_until(lambda: first.stopping, what="first worker asked to stop")
    handled_by_first = recorder.count()
    assert 50 <= handled_by_first < 200
    recorder.on_message = None
    with running(worker(bus, topic, group, recorder, "second")):
        recorder.wait_for(200)
    titles = Counter(recorder.titles())
    assert len(titles) == 200 and max(titles.values()) == 1


def test_messages_polled_but_never_committed_are_delivered_again(bus: Bus, unique: str) -> None:
    topic, group = f"redeliver-{unique}", f"g-{unique}"
    for seq in range(3):
        publish_discovered(bus, topic, "same", seq)
    bus.ensure_topics([topic])
    consumer = bus.consumer([topic], group)
    first_read = []
    wait_until(lambda: first_read.extend(consumer.poll(0.5, 100)) or len(first_read) >= 3, what="first read")
    consumer.close()  # crashed before committing
    consumer = bus.consumer([topic], group)
    second_read = []
    wait_until(lambda: second_read.extend(consumer.poll(0.5, 100)) or len(second_read) >= 3, what="second read")
    consumer.close()
    assert [m.value for m in second_read] == [m.value for m in first_read]


def test_every_group_receives_every_message(bus: Bus, unique: str) -> None:
    topic = f"fanout-{unique}"
    for seq in range(20):
        publish_discovered(bus, topic, f"v{seq}", seq)
    a, b = Recorder(), Recorder()
    with running(worker(bus, topic, f"a-{unique}", a), worker(bus, topic, f"b-{unique}", b)):
        a.wait_for(20)
        b.wait_for(20)
    assert sorted(a.titles()) == sorted(b.titles())


def test_a_message_that_raises_invalid_input_is_not_retried(bus: Bus, unique: str) -> None:
    topic = f"invalid-{unique}"
    attempts = Counter()

    def reject(message, envelope) -> None:
        attempts[envelope.event_id] += 1
        raise InvalidInput("thumbnail is HTML, not an image", field="thumbnail")

    publish_discovered(bus, topic, "html", 1)
    with running(worker(bus, topic, f"g-{unique}", Recorder(on_message=reject))):
        [letter] = dead_letters(bus, topic, f"g-{unique}", 1)
    assert list(attempts.values()) == [1]
    assert letter.reason == "thumbnail is HTML, not an image"


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_batch_whose_before_commit_effects_fail_is_delivered_again(bus: Bus, unique: str) -> None:
    topic, group = f"hook-{unique}", f"g-{unique}"
    for seq in range(3):
        publish_discovered(bus, topic, "same", seq)
    first, hook_saw = Recorder(), []

    def index_store_down() -> None:
        hook_saw.append(first.count())
        raise Unavailable("index shard could not be written")

    crashing = worker(bus, topic, group, first, before_commit=index_store_down)
    thread = crashing.start_thread()
    thread.join(timeout=60)
    assert not thread.is_alive(), "the worker stops rather than commit past effects that are not durable"
    assert hook_saw and hook_saw[0] >= 1
    second = Recorder()
    with running(worker(bus, topic, group, second)):
        second.wait_for(3)
    assert sorted(second.titles()) == [f"video same #{seq}" for seq in range(3)]
    assert set(first.titles()) <= set(second.titles()), "what the first worker handled comes again"
