"""`tubelens fake-youtube` as a user runs it: it says where it listens, serves, and stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path

from tests.fakeyoutubekit import get


def lines_of(stream) -> queue.Queue[str]:
    """The process's output lines as they come, so that a silent process fails the test instead of hanging it."""
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in stream], daemon=True).start()
    return lines


def test_fake_youtube_prints_its_address_and_channels_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "tubelens.cli", "fake-youtube", "--channels", "3", "--videos-per-channel", "6"]
    proc = subprocess.Popen([*argv, "--quota", "3"], cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    try:
        lines, printed = lines_of(proc.stdout), []
        while not printed or "Ctrl-C" not in printed[-1]:
            printed.append(lines.get(timeout=30))
        out = "".join(printed)
        base = re.search(r"fake YouTube at (http://127\.0\.0\.1:\d+)", out)
        assert base, out
        channel_ids = re.findall(r"UC[A-Za-z0-9_-]{22}", out)
        assert len(set(channel_ids)) == 3

        url = f"{base[1]}/youtube/v3/channels"
        params = {"part": "id", "id": ",".join(sorted(set(channel_ids))), "key": "cli"}
        answers = [get(url, params) for _ in range(4)]
        assert [a.status for a in answers] == [200, 200, 200, 403]  # --quota 3
        assert {item["id"] for item in json.loads(answers[0].data)["items"]} == set(channel_ids)
        curl = re.search(r"curl '([^']+)'", out)
        assert curl and len(json.loads(get(curl[1]).data)["items"]) == 1  # the example works (its own key's quota)

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_fake_youtube_prints_the_pipelines_settings_writes_them_and_takes_fault_flags(tmp_path: Path) -> None:
    env_file = tmp_path / "youtube.env"
    argv = [sys.executable, "-m", "tubelens.cli", "fake-youtube", "--channels", "4", "--videos-per-channel", "5"]
    faults = ["--server-errors", "2", "--fault-targets", "api,feeds", "--env-file", str(env_file)]
    proc = subprocess.Popen([*argv, *faults], cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    try:
        lines, printed = lines_of(proc.stdout), []
        while not printed or "Ctrl-C" not in printed[-1]:
            printed.append(lines.get(timeout=30))
        found = re.findall(r"^export (TUBELENS_[A-Z_]+)=(\S+)$", "".join(printed), re.MULTILINE)
        exports = {name: shlex.split(value)[0] for name, value in found}  # as a shell reads the line
        written = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
        assert exports == written
        assert {
            "TUBELENS_CRAWLER__API_KEY",
            "TUBELENS_CRAWLER__API_BASE",
            "TUBELENS_CRAWLER__RSS_BASE",
            "TUBELENS_CRAWLER__MEDIA_URL_TEMPLATE",
            "TUBELENS_CRAWLER__CHANNELS",
            "TUBELENS_PREPROCESSOR__ALLOWED_HOSTS",
            "TUBELENS_TRAINER__NEW_LABELS",
            "TUBELENS_TRAINER__REQUIRE_BEATING_BASELINES",
        } == set(written)
        assert len(written["TUBELENS_CRAWLER__CHANNELS"].split(",")) == 4
        api = written["TUBELENS_CRAWLER__API_BASE"]
        channel = written["TUBELENS_CRAWLER__CHANNELS"].split(",")[0]
        statuses = [get(f"{api}/channels", {"part": "id", "id": channel, "key": "k"}).status for _ in range(3)]
        assert statuses[0] in (500, 503) and statuses[1] in (500, 503) and statuses[2] == 200, statuses
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
