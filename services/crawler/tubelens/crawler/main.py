"""`tubelens crawler run [--once]`: crawl continuously, or one cycle (a backfill) and exit; `tubelens crawler
reannounce --since DATE`: announce again what a broker lost."""

from __future__ import annotations

import argparse
import json
import logging
import threading
import time
from datetime import UTC, datetime

from tubelens.bus import counted, open_bus
from tubelens.crawler.crawler import Crawler
from tubelens.crawler.quota import QuotaBudget
from tubelens.crawler.settings import CrawlerServiceSettings
from tubelens.crawler.state import CrawlerState
from tubelens.crawler.youtube import YouTubeClient
from tubelens.lifecycle import on_stop_signals
from tubelens.logs import configure_logging
from tubelens.metrics import serve_metrics
from tubelens.settings import load_settings

log = logging.getLogger(__name__)


def build_crawler(settings: CrawlerServiceSettings, producer, clock=time.time) -> tuple[Crawler, CrawlerState]:
    c = settings.crawler
    state = CrawlerState(c.state_path)
    client = YouTubeClient(
        api_base=c.api_base,
        rss_base=c.rss_base,
        api_key=c.api_key.get_secret_value(),
        quota=QuotaBudget(state, c.quota_per_day, c.quota_reserve, clock),
        timeout_s=c.timeout_s,
        max_attempts=c.max_attempts,
        backoff_initial_s=c.backoff_initial_s,
        backoff_max_s=c.backoff_max_s,
    )
    return Crawler(c, client, state, producer, clock), state


def reannounce(args: argparse.Namespace) -> int:
    """`tubelens crawler reannounce --since DATE`: one pass over the seen-set, then exit (0 when it finished)."""
    since = parse_since(args.since)
    settings = load_settings(CrawlerServiceSettings)
    configure_logging(settings.service, settings.log_level)
    bus = open_bus(settings)
    producer = counted(bus.producer(), settings.service)
    crawler, state = build_crawler(settings, producer)
    try:
        count = crawler.reannounce(since)
        print(json.dumps({"since": datetime.fromtimestamp(since, UTC).isoformat(), "reannounced": count}))
        return 0
    finally:
        producer.close()
        bus.close()
        state.close()


def parse_since(text: str) -> float:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise SystemExit(f"--since: not an ISO date or time: {text!r} (e.g. 2026-12-01 or 2026-12-01T06:00)") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def run(args: argparse.Namespace) -> int:
    settings = load_settings(CrawlerServiceSettings)
    configure_logging(settings.service, settings.log_level)
    metrics = serve_metrics(settings.metrics_port, service=settings.service)
    log.info("metrics listening", extra={"port": metrics.port})
    bus = open_bus(settings)
    producer = counted(bus.producer(), settings.service)
    crawler, state = build_crawler(settings, producer)
    stop = threading.Event()
    on_stop_signals(stop.set)
    try:
        if getattr(args, "once", False):
            report = crawler.run_once()
            return 1 if report.errors else 0
        crawler.run_forever(stop)
        return 0
    finally:
        producer.close()
        bus.close()
        state.close()
        metrics.stop()
