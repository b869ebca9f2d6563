"""The crawler's commands (registered under the `tubelens.commands` entry points)."""

from __future__ import annotations

from tubelens.cli import Commands, add_service_action, add_service_command


def add_commands(commands: Commands) -> None:
    run = add_service_command(commands, "crawler", "the crawler: discovers uploads and refreshes their counters")
    run.add_argument("--once", action="store_true", help="one crawl cycle (a backfill), then exit")
    again = add_service_action(
        commands,
        "crawler",
        "reannounce",
        "announce again the videos first announced since a date (after a broker lost data)",
        "tubelens.crawler.main:reannounce",
    )
    again.add_argument(
        "--since", required=True, help="ISO date or time (UTC unless it says otherwise), e.g. 2026-12-01"
    )
