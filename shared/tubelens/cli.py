"""The `tubelens` command: one entry point for whatever rooms are installed.

Each room adds its own command group through the `tubelens.commands` entry-point group: a function
`add_commands(commands)` that adds its parsers and sets `run`, the function that carries the command out and returns
the exit status. A service image installs only its own room, so its `tubelens` knows only its own commands; a
development install knows them all. Expected failures (TubelensError) print one line, `tubelens: <message>`, and
exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from importlib.metadata import entry_points

from rich.console import Console

from tubelens.errors import TubelensError

COMMANDS_GROUP = "tubelens.commands"
Commands = argparse._SubParsersAction  # argparse exposes no public name for what add_subparsers returns


def installed_command_groups() -> list[Callable[[Commands], None]]:
    """Every installed room's `add_commands`, in the order of their entry-point names (stable help output)."""
    return [point.load() for point in sorted(entry_points(group=COMMANDS_GROUP), key=lambda point: point.name)]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tubelens", description="tubelens command line")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_commands in installed_command_groups():
        add_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except TubelensError as exc:
        print(f"tubelens: {exc.message}", file=sys.stderr)
        return 2


def add_service_command(commands: Commands, name: str, help_text: str) -> argparse.ArgumentParser:
    """`tubelens <name> run`, which calls `tubelens.<name>.main.run(args)`; returns the `run` parser for the
    service's own options. The service module is imported only when the command runs, so `--help` stays fast."""
    service = commands.add_parser(name, help=help_text)
    actions = service.add_subparsers(dest="action", required=True, metavar="ACTION")
    run = actions.add_parser("run", help=f"run the {name} from TUBELENS_* settings")
    run.set_defaults(run=lambda args: importlib.import_module(f"tubelens.{name}.main").run(args))
    return run


def add_service_action(
    commands: Commands, name: str, action: str, help_text: str, target: str
) -> argparse.ArgumentParser:
    """Another verb beside `run` for `tubelens <name>` (added after `add_service_command`): `target` is
    "module:function", imported only when the verb runs and called with the parsed arguments; returns its parser."""
    service = commands.choices[name]
    actions = next(a for a in service._actions if isinstance(a, argparse._SubParsersAction))
    parser = actions.add_parser(action, help=help_text)
    module, function = target.split(":")
    parser.set_defaults(run=lambda args: getattr(importlib.import_module(module), function)(args))
    return parser


def console() -> Console:
    """A console for people: paths and addresses print verbatim (no markup, no highlighting), and the hints a reader
    copies into a shell are never broken across lines. Piped into a file or a CI log, rich would assume 80 columns
    and squeeze tables; 132 keeps them readable."""
    plain = Console(markup=False, highlight=False, soft_wrap=True)
    return plain if plain.is_terminal else Console(markup=False, highlight=False, soft_wrap=True, width=132)


if __name__ == "__main__":
    sys.exit(main())
