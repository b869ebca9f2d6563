"""The trainer's commands (registered under the `tubelens.commands` entry points)."""

from __future__ import annotations

from tubelens.cli import Commands, add_service_command


def add_commands(commands: Commands) -> None:
    """On demand by default: catch up on the events, snapshot, train, exit. `--snapshot` and `--serve` are the other
    two modes; `tubelens.trainer.main` describes all three."""
    run = add_service_command(commands, "trainer", "the trainer: datasets, models, evaluation, the model registry")
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
