"""The bus side of zero-downtime swaps: `models.trained` messages into `ModelManager.on_model_trained`.

Run it in a Worker (`Worker(bus, [events.MODELS_TRAINED], group, swap_handler(manager), ...)`): a malformed message
is InvalidInput and goes to the dead-letter topic at once; a swap that failed for a reason that may pass (TorchServe
unreachable) is retried by the Worker; a redelivered event is a no-op.
"""

from __future__ import annotations

from tubelens import events
from tubelens.bus import Handler, Message
from tubelens.errors import InvalidInput
from tubelens.predictor.models import ModelManager

PAYLOAD = "model_trained"


def swap_handler(manager: ModelManager) -> Handler:
    def handle(message: Message) -> None:
        envelope = events.decode(message.value)
        payload = envelope.WhichOneof("payload")
        if payload != PAYLOAD:
            raise InvalidInput(f"{message.topic} carries {payload}, not {PAYLOAD}")
        event = envelope.model_trained
        if not event.task or not event.version:
            raise InvalidInput("a models.trained event without task or version", field="task")
        manager.on_model_trained(event)

    return handle
