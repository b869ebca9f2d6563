"""`tubelens preprocessor run`: consume videos.discovered, emit thumbnails.stored and frames.extracted."""

from __future__ import annotations

import argparse

from tubelens import events
from tubelens.bus import Handler
from tubelens.preprocessor.handler import PreprocessorHandler
from tubelens.preprocessor.settings import PreprocessorServiceSettings
from tubelens.service import Runtime, run_worker_service
from tubelens.settings import load_settings

GROUP = "preprocessor"


def build_handler(runtime: Runtime) -> Handler:
    settings: PreprocessorServiceSettings = runtime.settings  # type: ignore[assignment]
    return PreprocessorHandler(
        settings.preprocessor, store=runtime.objects, producer=runtime.producer, service=settings.service
    )


def run(args: argparse.Namespace) -> int:
    return run_worker_service(
        load_settings(PreprocessorServiceSettings),
        topics=[events.VIDEOS_DISCOVERED],
        group=GROUP,
        build_handler=build_handler,
        needs_objects=True,
    )
