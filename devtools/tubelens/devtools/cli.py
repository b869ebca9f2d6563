"""The development verbs of the `tubelens` command: `stack`, `demo` and `fake-youtube` (the `tubelens.commands`
entry point of the devtools room)."""

from __future__ import annotations

import argparse
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from tubelens import cli
from tubelens.cli import Commands
from tubelens.devtools import stack
from tubelens.devtools.servers import LOOPBACK
from tubelens.errors import InvalidInput
from tubelens.settings import DEFAULT_ENV_FILE

if TYPE_CHECKING:
    from tubelens.devtools.fakeyoutube import FakeYouTube


def add_stack_commands(commands: Commands) -> None:
    group = commands.add_parser(
        "stack",
        help="the local stack: Kafka-protocol broker, S3-compatible server, TorchServe",
        description="Run the local stack on loopback ports, detached from this shell.",
    )
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    state_dir = argparse.ArgumentParser(add_help=False)
    state_dir.add_argument(
        "--dir",
        type=Path,
        default=DEFAULT_ENV_FILE.parent,
        help="where the stack keeps its state, logs and env file (default: %(default)s)",
    )

    up = actions.add_parser("up", parents=[state_dir], help="start the stack and write its env file")
    up.add_argument(
        "--torchserve",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="include TorchServe (default: when TorchServe and Java are installed)",
    )
    up.set_defaults(run=_stack_up)
    down = actions.add_parser("down", parents=[state_dir], help="stop the stack and remove its env file")
    down.set_defaults(run=_stack_down)
    status = actions.add_parser(
        "status", parents=[state_dir], help="show each server; exits 1 unless all are alive and answering"
    )
    status.set_defaults(run=_stack_status)


def add_demo_command(commands: Commands) -> None:
    demo = commands.add_parser("demo", help="the whole pipeline in one process, no servers")
    demo.add_argument("--videos", type=int, default=720, help="how many videos flow through (default: %(default)s)")
    demo.add_argument(
        "--channels", type=int, default=24, help="channels they come from, three per genre (default: %(default)s)"
    )
    demo.add_argument(
        "--report", type=Path, default=Path("report"), help="where the HTML report goes (default: %(default)s/)"
    )
    demo.add_argument(
        "--serve", action="store_true", help="keep the predictor serving after the report, until Ctrl-C or SIGTERM"
    )
    demo.add_argument(
        "--stack",
        action="store_true",
        help="run every service as its own process over the local stack (broker, S3 server, TorchServe) instead",
    )
    demo.add_argument(
        "--workdir", type=Path, default=Path(".tubelens") / "demo", help="where objects go (default: %(default)s)"
    )
    demo.set_defaults(run=_demo)


def add_fake_youtube_command(commands: Commands) -> None:
    fake = commands.add_parser(
        "fake-youtube",
        help="a local YouTube stand-in: Data API v3, channel feeds, thumbnails and media of a generated catalogue",
        description="Serve a seeded catalogue on loopback in YouTube's formats until Ctrl-C or SIGTERM.",
    )
    fake.add_argument("--port", type=int, default=0, help="port to listen on; 0 picks a free one (default)")
    fake.add_argument("--seed", type=int, default=7, help="catalogue seed (default: %(default)s)")
    fake.add_argument("--channels", type=int, default=8, help="(default: %(default)s)")
    fake.add_argument("--videos-per-channel", type=int, default=25, help="(default: %(default)s)")
    fake.add_argument(
        "--quota", type=int, default=10_000, help="API units per key per Pacific day (default: %(default)s)"
    )
    fake.set_defaults(run=_fake_youtube)


def add_commands(commands: Commands) -> None:
    """The development verbs: the local stack, the demo, the YouTube stand-in."""
    add_stack_commands(commands)
    add_demo_command(commands)
    add_fake_youtube_command(commands)


def _demo(args: argparse.Namespace) -> int:
    from tubelens.devtools.demo import report, run_demo

    if args.videos < 1:
        raise InvalidInput("--videos must be at least 1")
    if args.channels < 2:
        raise InvalidInput("--channels must be at least 2: the channel classifier needs two to tell apart")
    console = cli.console()
    if args.stack:
        return _demo_stack(args, console)
    result = run_demo(args.workdir, args.videos, console, channels=args.channels, report_dir=args.report)
    try:
        report(result, args.workdir, console)
        if args.serve and result.serving is not None:
            from tubelens.lifecycle import on_stop_signals

            stopped = threading.Event()
            on_stop_signals(stopped.set)
            console.print(f"serving at {result.serving.address} until Ctrl-C")
            stopped.wait()
    finally:
        if result.serving is not None:
            result.serving.stop()
    return 0


def _demo_stack(args: argparse.Namespace, console: Console) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from tubelens.devtools.demo_stack import report_stack, run_stack_demo

    columns = (TextColumn("{task.description:<40}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        result = run_stack_demo(args.workdir / "stack-demo", args.videos, args.channels, console, progress)
    report_stack(result, args.workdir / "stack-demo", console)
    return 0


def _fake_youtube(args: argparse.Namespace) -> int:
    from tubelens.devtools.fakeyoutube import Catalogue, FakeYouTube
    from tubelens.lifecycle import on_stop_signals

    if args.channels < 1 or args.videos_per_channel < 1:
        raise InvalidInput("--channels and --videos-per-channel must be at least 1")
    catalogue = Catalogue.generate(
        args.seed, args.channels, args.videos_per_channel, now=datetime.now(UTC).replace(microsecond=0)
    )
    stopped = threading.Event()
    on_stop_signals(stopped.set)
    with FakeYouTube(catalogue, port=args.port, quota_per_day=args.quota) as youtube:
        _describe_fake_youtube(youtube, cli.console())
        stopped.wait()
    return 0


def _describe_fake_youtube(youtube: FakeYouTube, console: Console) -> None:
    from tubelens.devtools.fakeyoutube.catalogue import PROFILES

    catalogue = youtube.catalogue
    console.print(
        f"fake YouTube at {youtube.base_url} (seed {catalogue.seed}, clock starts {catalogue.now:%Y-%m-%d %H:%M:%SZ})"
    )
    table = Table("title", "category", "subscribers")
    table.add_column("channel id", no_wrap=True, min_width=24)  # copied into commands: never cut
    for channel in catalogue.channels:
        category = f"{channel.category_id} {PROFILES[channel.category_id].title}"
        table.add_row(channel.title, category, f"{channel.subscribers:,}", channel.id)
    console.print(table)
    video = catalogue.visible(catalogue.now)[0]
    console.print(f"API base: {youtube.api_base}   (any key= works; quota {youtube.quota_per_day} units a day)")
    console.print(f"try:  curl '{youtube.api_base}/videos?part=snippet,statistics&id={video.id}&key=demo'")
    console.print(f"feed: curl '{youtube.feed_url}?channel_id={catalogue.channels[0].id}'")
    console.print(f"media URL template: {youtube.media_url_template}   controls: {youtube.base_url}/_fake/stats")
    console.print("Ctrl-C stops it")


def _stack_up(args: argparse.Namespace) -> int:
    began = time.monotonic()
    state = stack.up(args.dir, torchserve=args.torchserve)
    console = cli.console()
    console.print(f"stack up in {time.monotonic() - began:.1f}s, state in {state.state_dir}")
    table = Table("server", "pid", "addresses")
    for record in state.servers:
        table.add_row(record.name, str(record.pid), _addresses(record.ports))
    console.print(table)
    console.print(f"logs: {state.state_dir}/<server>/<server>.log")
    console.print(f"env file: {state.env_file}")
    shown = args.dir / stack.ENV_FILE
    console.print(f"load it into your shell:  set -a; . {shown}; set +a    (or: export $(cat {shown}))")
    if state.env_file != DEFAULT_ENV_FILE.resolve():
        console.print(f"or point services at it:  export TUBELENS_ENV_FILE={state.env_file}")
    console.print(f"stop it with:  tubelens stack down --dir {args.dir}")
    return 0


def _stack_down(args: argparse.Namespace) -> int:
    stopped = stack.down(args.dir)
    message = f"stopped {', '.join(stopped)}" if stopped else f"nothing was running in {args.dir}"
    cli.console().print(message)
    return 0


def _stack_status(args: argparse.Namespace) -> int:
    servers = stack.status(args.dir)
    console = cli.console()
    if not servers:
        console.print(f"no stack recorded in {args.dir}")
        return 1
    table = Table("server", "pid", "addresses", "alive", "answering")
    for server in servers:
        table.add_row(
            server.name, str(server.pid), _addresses(server.ports), _yes_no(server.alive), _yes_no(server.answering)
        )
    console.print(table)
    return 0 if all(server.alive and server.answering for server in servers) else 1


def _addresses(ports: dict[str, int]) -> str:
    return "\n".join(f"{name} {LOOPBACK}:{port}" for name, port in ports.items())


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "NO"

