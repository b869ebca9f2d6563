"""The `tubelens` command.

Each command group is one `add_*_commands(commands)` function listed in COMMAND_GROUPS; it adds its parsers
and sets `run`, the function that carries the command out and returns the exit status. Expected failures
(TubelensError) print one line, `tubelens: <message>`, and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from tubelens import stack
from tubelens.errors import ConfigError, InvalidInput, TubelensError
from tubelens.servers import LOOPBACK
from tubelens.settings import DEFAULT_ENV_FILE

if TYPE_CHECKING:
    from tubelens.fakeyoutube import FakeYouTube

Commands = argparse._SubParsersAction  # argparse exposes no public name for what add_subparsers returns


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


# Each service's package provides `tubelens.<service>.main.run(args) -> int` once it is built.
SERVICES = ("crawler", "preprocessor", "embedding", "trainer", "predictor")


def add_service_commands(commands: Commands) -> None:
    for name in SERVICES:
        service = commands.add_parser(name, help=f"the {name} service")
        actions = service.add_subparsers(dest="action", required=True, metavar="ACTION")
        run = actions.add_parser("run", help=f"run the {name} from TUBELENS_* settings")
        run.set_defaults(run=_run_service, service=name)
        if name == "crawler":
            run.add_argument("--once", action="store_true", help="one crawl cycle (a backfill), then exit")
        if name == "trainer":
            _add_trainer_run_arguments(run)


def _add_trainer_run_arguments(run: argparse.ArgumentParser) -> None:
    """On demand by default: catch up on the events, snapshot, train, exit. `--snapshot` and `--serve` are the other
    two modes; `tubelens.trainer.main` describes all three."""
    run.add_argument(
        "--task",
        action="append",
        help="a task to train, e.g. channel (repeatable; default: every task but channel_finetuned, a GPU job)",
    )
    mode = run.add_mutually_exclusive_group()
    mode.add_argument(
        "--snapshot", metavar="ID", help="train on this stored dataset snapshot, consuming no events (a training Job)"
    )
    mode.add_argument(
        "--serve",
        action="store_true",
        help="run until SIGTERM, training whenever the schedule or the new-labels trigger fires "
        "(TUBELENS_TRAINER__SCHEDULE_S, __NEW_LABELS, __MIN_INTERVAL_S)",
    )
    run.add_argument(
        "--executor",
        choices=("local", "kubernetes"),
        help="train in this process or as a Kubernetes Job (default: TUBELENS_TRAINER__EXECUTOR, else local)",
    )
    run.add_argument("--seed", type=int, help="training seed (default: TUBELENS_TRAINER__SEED, else 0)")
    run.add_argument(
        "--trigger",
        choices=("on_demand", "schedule", "new_labels"),
        help="with --snapshot: what the run is recorded as started by (set by the launcher of a Job; default: "
        "on_demand)",
    )
    run.add_argument("--run-id", help="with --snapshot: the id to record the run under (set by the launcher of a Job)")


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


COMMAND_GROUPS: tuple[Callable[[Commands], None], ...] = (
    add_stack_commands,
    add_demo_command,
    add_service_commands,
    add_fake_youtube_command,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tubelens", description="tubelens command line")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_commands in COMMAND_GROUPS:
        add_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except TubelensError as exc:
        print(f"tubelens: {exc.message}", file=sys.stderr)
        return 2


def _console() -> Console:
    # Paths and addresses print verbatim (no markup, no highlighting), and the hints a reader copies into a
    # shell are never broken across lines. Piped into a file or a CI log, rich would assume 80 columns and squeeze
    # the metric tables; 132 keeps them readable.
    console = Console(markup=False, highlight=False, soft_wrap=True)
    return console if console.is_terminal else Console(markup=False, highlight=False, soft_wrap=True, width=132)


def _demo(args: argparse.Namespace) -> int:
    from tubelens.demo import report, run_demo

    if args.videos < 1:
        raise InvalidInput("--videos must be at least 1")
    if args.channels < 2:
        raise InvalidInput("--channels must be at least 2: the channel classifier needs two to tell apart")
    console = _console()
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

    from tubelens.demo_stack import report_stack, run_stack_demo

    columns = (TextColumn("{task.description:<40}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        result = run_stack_demo(args.workdir / "stack-demo", args.videos, args.channels, console, progress)
    report_stack(result, args.workdir / "stack-demo", console)
    return 0


def _fake_youtube(args: argparse.Namespace) -> int:
    from tubelens.fakeyoutube import Catalogue, FakeYouTube
    from tubelens.lifecycle import on_stop_signals

    if args.channels < 1 or args.videos_per_channel < 1:
        raise InvalidInput("--channels and --videos-per-channel must be at least 1")
    catalogue = Catalogue.generate(
        args.seed, args.channels, args.videos_per_channel, now=datetime.now(UTC).replace(microsecond=0)
    )
    stopped = threading.Event()
    on_stop_signals(stopped.set)
    with FakeYouTube(catalogue, port=args.port, quota_per_day=args.quota) as youtube:
        _describe_fake_youtube(youtube, _console())
        stopped.wait()
    return 0


def _describe_fake_youtube(youtube: FakeYouTube, console: Console) -> None:
    from tubelens.fakeyoutube.catalogue import PROFILES

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


def _run_service(args: argparse.Namespace) -> int:
    try:
        module = importlib.import_module(f"tubelens.{args.service}.main")
    except ModuleNotFoundError as exc:
        if exc.name not in (f"tubelens.{args.service}", f"tubelens.{args.service}.main"):
            raise
        raise ConfigError(
            f"the {args.service} service is not built yet; services/{args.service}/README.md says what it will do"
        ) from None
    return module.run(args)


def _stack_up(args: argparse.Namespace) -> int:
    began = time.monotonic()
    state = stack.up(args.dir, torchserve=args.torchserve)
    console = _console()
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
    _console().print(message)
    return 0


def _stack_status(args: argparse.Namespace) -> int:
    servers = stack.status(args.dir)
    console = _console()
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


if __name__ == "__main__":
    sys.exit(main())
