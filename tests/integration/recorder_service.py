"""A consuming service for the crash tests: records every event it handles, durably, before the commit.

TUBELENS_KAFKA__BOOTSTRAP=... RECORDER_TOPIC=t RECORDER_OUT=/tmp/seen python -m tests.integration.recorder_service
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from pydantic import Field

from tubelens import events
from tubelens.bus import Handler, Message
from tubelens.service import Runtime, run_worker_service
from tubelens.settings import TubelensSettings, load_settings


class RecorderSettings(TubelensSettings):
    recorder_topic: str = Field(validation_alias="RECORDER_TOPIC")
    recorder_out: Path = Field(validation_alias="RECORDER_OUT")
    recorder_delay_ms: int = Field(default=0, validation_alias="RECORDER_DELAY_MS")


def build_handler(runtime: Runtime) -> Handler:
    settings: RecorderSettings = runtime.settings  # type: ignore[assignment]
    out = open(settings.recorder_out, "a", buffering=1)  # noqa: SIM115 - open for the life of the process

    def handle(message: Message) -> None:
        envelope = events.decode(message.value)
        time.sleep(settings.recorder_delay_ms / 1000)
        out.write(f"{envelope.video_discovered.title}\n")
        out.flush()
        os.fsync(out.fileno())

    return handle


def main() -> int:
    settings = load_settings(RecorderSettings)
    return run_worker_service(
        settings,
        topics=[settings.recorder_topic],
        group=f"{settings.recorder_topic}-recorder",
        build_handler=build_handler,
    )


if __name__ == "__main__":
    sys.exit(main())
