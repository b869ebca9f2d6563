"""Logs are one JSON object per line, carrying bound context such as the video id."""

from __future__ import annotations

import io
import json
import logging

import pytest

from tubelens.logs import configure_logging, log_context


@pytest.fixture
def stream() -> io.StringIO:
    out = io.StringIO()
    configure_logging("crawler", "INFO", stream=out)
    yield out
    logging.getLogger().handlers.clear()


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_every_line_is_a_json_event_with_service_level_and_message(stream: io.StringIO) -> None:
    logging.getLogger("tubelens.test").info("discovered %d videos", 3)
    [event] = lines(stream)
    assert event["service"] == "crawler"
    assert event["level"] == "info"
    assert event["msg"] == "discovered 3 videos"
    assert event["logger"] == "tubelens.test"
    assert event["ts"].endswith("Z")


def test_bound_context_and_extra_fields_land_on_the_line(stream: io.StringIO) -> None:
    with log_context(video_id="abc123XYZ_-"), log_context(request_id="r-1"):
        logging.getLogger("t").warning("slow fetch", extra={"seconds": 2.5})
    logging.getLogger("t").warning("outside")
    inside, outside = lines(stream)
    assert inside["video_id"] == "abc123XYZ_-" and inside["request_id"] == "r-1" and inside["seconds"] == 2.5
    assert "video_id" not in outside


def test_exceptions_are_kept_on_one_line(stream: io.StringIO) -> None:
    try:
        raise ValueError("bad thumbnail")
    except ValueError:
        logging.getLogger("t").exception("failed")
    [event] = lines(stream)
    assert "ValueError: bad thumbnail" in event["exc"]
    assert len(stream.getvalue().splitlines()) == 1


def test_debug_lines_are_dropped_at_info_level(stream: io.StringIO) -> None:
    logging.getLogger("t").debug("noise")
    assert lines(stream) == []
