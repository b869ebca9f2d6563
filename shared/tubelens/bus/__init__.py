"""The event bus: key-ordered publishing, consumer groups, at-least-once delivery with a dead-letter queue.

Two backends behind one interface — Kafka for the stack and the cluster (over kafka-python or confluent-kafka),
in-process for the embedded mode — and
one worker loop that gives both the same delivery semantics.
"""

from tubelens.bus.base import Bus, ConsumerClient, Message, Producer, dlq_topic
from tubelens.bus.counted import counted
from tubelens.bus.worker import Handler, RetryPolicy, Worker
from tubelens.settings import BusKind, KafkaClient, TubelensSettings


def open_bus(settings: TubelensSettings) -> Bus:
    if settings.bus is BusKind.MEMORY:
        from tubelens.bus.memory import MemoryBus

        return MemoryBus()
    settings.require_backends()
    if settings.kafka.client is KafkaClient.CONFLUENT:
        from tubelens.bus.confluent import ConfluentBus

        return ConfluentBus(settings.kafka)
    from tubelens.bus.kafka import KafkaBus

    return KafkaBus(settings.kafka)


def retry_policy(settings: TubelensSettings) -> RetryPolicy:
    c = settings.consumer
    return RetryPolicy(c.max_attempts, c.backoff_initial_s, c.backoff_max_s, c.outage_backoff_max_s)


__all__ = [
    "Bus",
    "ConsumerClient",
    "Handler",
    "Message",
    "Producer",
    "RetryPolicy",
    "Worker",
    "counted",
    "dlq_topic",
    "open_bus",
    "retry_policy",
]
