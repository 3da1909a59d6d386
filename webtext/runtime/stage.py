"""The one way a stage command runs: check its flags and input, begin, show progress, run, write its counters
to `_stats.json`, print its funnel, and return its exit status.

A stage's `command.py` supplies three functions and its `main` hands them to `run_command`:

    check(args) -> Plan            flags and input checked before anything is written; a problem raises
                                   `StageError` (or ValueError / FileNotFoundError from a config's own checks)
    run(args, plan) -> Result      the work: builds and runs the stage's pipeline(s), returns its counters
    funnel(stats) -> [(step, n)]   the table printed at the end, from what was written to `_stats.json`

Every problem a stage reports before or instead of running is one line, `webtext STAGE: error: MESSAGE`, with
exit status 2; bad records never stop a stage (they are counted and written to its errors dataset).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from webtext.runtime import datasets, progress, stats


class StageError(Exception):
    """Flags or input a stage cannot run with (exit status 2)."""


def error(stage: str, message: object) -> None:
    """Print one of a stage's problems in the one format every stage uses."""
    print(f"webtext {stage}: error: {message}", file=sys.stderr)


def require_dataset(directory: str, name: str, made_by: str) -> list[str]:
    """The shard paths of dataset `name` in `directory` (an upstream stage's output), or a StageError that
    names the command that makes it."""
    paths = datasets.shard_paths(directory, name)
    if not paths:
        raise StageError(f"{directory}: no dataset {name!r} ({name}-*.parquet); run `webtext {made_by}` first")
    return paths


@dataclass
class Plan:
    """What `check` decided: where the stage writes and what it shows while it runs."""
    output: str                              # the stage's output directory
    clear: tuple[str, ...] = ()              # datasets of an earlier run removed before this one writes
    total: int | None = None                 # items the progress bar counts to (None: unknown)
    unit: str = "items"                      # what the progress bar counts
    title: str = ""                          # the funnel's title
    data: Any = None                         # the stage's own: its configs, its input paths
    started_at: str = ""                     # when the stage began (set by run_command, as in `_stats.json`)


@dataclass
class Result:
    """What `run` did: the `_stats.json` content and what to tell the user."""
    counters: dict
    config: dict
    extra: dict = field(default_factory=dict)    # further `_stats.json` fields
    notes: list[str] = field(default_factory=list)  # lines printed after the funnel
    errors: list[str] = field(default_factory=list)  # input lost (e.g. damaged files): printed as errors after
                                                     # the notes; any makes the exit status 1


INPUT_ERRORS = (StageError, ValueError, FileNotFoundError)


def run_command(stage: str, args, check: Callable[[Any], Plan], run: Callable[[Any, Plan], Result],
                funnel: Callable[[dict], list[tuple[str, int]]]) -> int:
    try:
        plan = check(args)
    except INPUT_ERRORS as e:
        error(stage, e)
        return 2
    timer = stats.begin_stage(plan.output, plan.clear)
    plan.started_at = timer.started_at
    try:
        with progress.Progress(stage, total=plan.total, unit=plan.unit):
            result = run(args, plan)
    except StageError as e:   # found only once the input is read (e.g. a dataset without a needed column)
        error(stage, e)
        return 2
    written = stats.write_stats(plan.output, stage, result.config, result.counters, timer, **result.extra)
    stats.print_funnel(plan.title or f"{stage} -> {plan.output}", funnel(written))
    for note in result.notes:
        print(note, file=sys.stderr)
    for problem in result.errors:
        error(stage, problem)
    return 1 if result.errors else 0
