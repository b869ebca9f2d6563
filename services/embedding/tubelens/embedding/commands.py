"""The embedding service's commands (registered under the `tubelens.commands` entry points)."""

from __future__ import annotations

from tubelens.cli import Commands, add_service_command


def add_commands(commands: Commands) -> None:
    add_service_command(commands, "embedding", "the embedding service: CNN embeddings, concepts, similarity index")
