"""The development verbs of the `tubelens` command: `stack`, `dev`, `demo` and `fake-youtube` (the
`tubelens.commands` entry point of the devtools room)."""

from __future__ import annotations

import argparse
import shlex
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
        description="Serve a seeded catalogue on loopback in YouTube's formats until Ctrl-C or SIGTERM, and print "
        "the TUBELENS_* lines that point the pipeline at it.",
        parents=[youtube_options()],
    )
    fake.add_argument("--port", type=int, default=0, help="port to listen on; 0 picks a free one (default)")
    fake.add_argument("--env-file", type=Path, help="also write those TUBELENS_* lines to this file")
    fake.set_defaults(run=_fake_youtube)


def youtube_options() -> argparse.ArgumentParser:
    """The stand-in's catalogue and its faults: shared by `fake-youtube` and `dev up`."""
    options = argparse.ArgumentParser(add_help=False)
    catalogue = options.add_argument_group("catalogue")
    catalogue.add_argument("--seed", type=int, default=7, help="catalogue seed (default: %(default)s)")
    catalogue.add_argument("--channels", type=int, default=8, help="(default: %(default)s)")
    catalogue.add_argument("--videos-per-channel", type=int, default=25, help="(default: %(default)s)")
    catalogue.add_argument(
        "--channels-per-genre", type=int, default=3, help="channels that share a genre (default: %(default)s)"
    )
    catalogue.add_argument(
        "--quota", type=int, default=10_000, help="API units per key per Pacific day (default: %(default)s)"
    )
    faults = options.add_argument_group("faults (also settable later: POST /_fake/faults)")
    faults.add_argument("--bad-inputs", type=int, default=0, help="videos with a bad thumbnail or media, of each kind")
    faults.add_argument("--server-errors", type=int, default=0, help="the next N requests answer 500/503")
    faults.add_argument("--server-error-rate", type=float, default=0.0, help="then this share of requests does")
    faults.add_argument("--rate-limits", type=int, default=0, help="the next N requests answer 429")
    faults.add_argument("--rate-limit-rate", type=float, default=0.0, help="then this share of requests does")
    faults.add_argument("--delay-ms", type=int, default=0, help="every faulted request waits this long first")
    faults.add_argument("--quota-exceeded", action="store_true", help="every API request answers quotaExceeded")
    faults.add_argument(
        "--fault-targets",
        default="api",
        help="comma-separated: which of api, feeds, thumbnails, media the faults touch (default: %(default)s)",
    )
    return options


def add_commands(commands: Commands) -> None:
    """The development verbs: the local stack, the whole system on it, the demo, the YouTube stand-in."""
    add_stack_commands(commands)
    add_dev_commands(commands)
    add_demo_command(commands)
    add_fake_youtube_command(commands)


def add_dev_commands(commands: Commands) -> None:
    group = commands.add_parser(
        "dev",
        help="the whole system on loopback: the stack, the YouTube stand-in and the five services",
        description="Start (or stop) the local stack, the YouTube stand-in and the five services as processes "
        "on free loopback ports, detached from this shell, with their settings in one env file.",
    )
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    state_dir = argparse.ArgumentParser(add_help=False)
    state_dir.add_argument(
        "--dir",
        type=Path,
        default=DEFAULT_ENV_FILE.parent / "dev",
        help="where it keeps its state, logs and env file (default: %(default)s)",
    )
    up = actions.add_parser(
        "up", parents=[state_dir, youtube_options()], help="start everything; print and write the env"
    )
    up.add_argument(
        "--new-labels",
        type=int,
        default=None,
        help="the trainer's first run after this many labelled videos (default: 80%% of the stand-in's videos)",
    )
    up.set_defaults(run=_dev_up)
    down = actions.add_parser("down", parents=[state_dir], help="stop everything `dev up` started, by PID")
    down.set_defaults(run=_dev_down)
    status = actions.add_parser(
        "status", parents=[state_dir], help="each process; exits 1 unless all are alive (and the predictor ready)"
    )
    status.set_defaults(run=_dev_status)


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
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

    from tubelens.devtools.demo_stack import report_stack, run_stack_demo
    from tubelens.progress import StageProgress

    columns = (TextColumn("{task.description:<40}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with StageProgress(*columns, console=console) as progress:
        result = run_stack_demo(args.workdir / "stack-demo", args.videos, args.channels, console, progress)
    report_stack(result, args.workdir / "stack-demo", console)
    return 0


def _fake_youtube(args: argparse.Namespace) -> int:
    from tubelens.devtools.fakeyoutube import FakeYouTube
    from tubelens.lifecycle import on_stop_signals

    catalogue, faults = youtube_catalogue(args), youtube_faults(args)
    stopped = threading.Event()
    on_stop_signals(stopped.set)
    with FakeYouTube(catalogue, port=args.port, quota_per_day=args.quota, faults=faults) as youtube:
        console = cli.console()
        _describe_fake_youtube(youtube, console)
        env = youtube.env()
        console.print("the pipeline's settings for it (paste into a shell, or use --env-file):")
        for key, value in env.items():
            console.print(f"export {key}={shlex.quote(value)}")
        if args.env_file is not None:
            # Atomically, once serving: whoever waits for the file (`dev up`) may read it as soon as it exists.
            args.env_file.parent.mkdir(parents=True, exist_ok=True)
            partial = args.env_file.with_name(args.env_file.name + ".partial")
            partial.write_text("".join(f"{key}={value}\n" for key, value in env.items()))
            partial.replace(args.env_file)
            console.print(f"written to {args.env_file}")
        console.print("Ctrl-C stops it")
        stopped.wait()
    return 0


def youtube_catalogue(args: argparse.Namespace):
    from tubelens.devtools.fakeyoutube import BadInput, Catalogue, InputFaults

    if args.channels < 1 or args.videos_per_channel < 1 or args.channels_per_genre < 1:
        raise InvalidInput("--channels, --videos-per-channel and --channels-per-genre must be at least 1")
    if args.bad_inputs < 0:
        raise InvalidInput("--bad-inputs cannot be negative")
    return Catalogue.generate(
        args.seed,
        args.channels,
        args.videos_per_channel,
        now=datetime.now(UTC).replace(microsecond=0),
        faults=InputFaults(counts=dict.fromkeys(BadInput, args.bad_inputs)),
        channels_per_genre=args.channels_per_genre,
    )


def youtube_faults(args: argparse.Namespace):
    from tubelens.devtools.fakeyoutube import ServerFaults

    faults = ServerFaults(
        server_errors=args.server_errors,
        server_error_rate=args.server_error_rate,
        rate_limits=args.rate_limits,
        rate_limit_rate=args.rate_limit_rate,
        delay_ms=args.delay_ms,
        quota_exceeded=args.quota_exceeded,
        targets=tuple(target.strip() for target in args.fault_targets.split(",") if target.strip()),
    )
    faults.validate()
    return faults


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
    console.print(f"faults: {youtube.base_url}/_fake/faults (GET; POST a JSON object to change them)")


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



def _dev_up(args: argparse.Namespace) -> int:
    from tubelens.devtools import dev

    youtube_catalogue(args)  # refuse bad catalogue options here, before anything starts
    youtube_faults(args)
    console = cli.console()
    state = dev.up(args.dir, youtube_args=dev.youtube_argv(args), new_labels=args.new_labels, console=console)
    dev.describe(state, console)
    return 0


def _dev_down(args: argparse.Namespace) -> int:
    from tubelens.devtools import dev

    stopped = dev.down(args.dir)
    cli.console().print(f"stopped {', '.join(stopped)}" if stopped else f"nothing was running in {args.dir}")
    return 0


def _dev_status(args: argparse.Namespace) -> int:
    from tubelens.devtools import dev

    return dev.show_status(args.dir, cli.console())
