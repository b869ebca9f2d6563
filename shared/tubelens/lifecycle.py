"""Process lifecycle shared by every service: what SIGTERM and SIGINT mean."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable, Sequence

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)  # Kubernetes stops pods with SIGTERM; a terminal sends SIGINT


def on_stop_signals(stop: Callable[[], None], signals: Sequence[signal.Signals] = STOP_SIGNALS) -> None:
    """Call `stop` (which must return promptly) on each stop signal. Python allows this from the main thread
    only; elsewhere `signal.signal` raises ValueError."""

    def handle(signum: int, _frame: object) -> None:
        log.info("stop requested", extra={"signal": signal.Signals(signum).name})
        stop()

    for sig in signals:
        signal.signal(sig, handle)
