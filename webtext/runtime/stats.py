"""Counters and `_stats.json`.

Pure functions report *why* they drop a record through an injected counter function (`Count`): under Beam
it increments a `Metrics.counter` in the stage's namespace, in tests it is a `collections.Counter`. After
the run, `collect_counters` reads the totals back from the pipeline result and `write_stats` saves them
with the stage's configuration as `DIR/_stats.json`, the file whose presence marks the stage as finished.
Beam is imported only by those two: plain code (a stage's local processes) counts without it.
"""

from __future__ import annotations

import collections
import datetime as _dt
import sys
import time
from collections.abc import Callable, Iterable

from webtext import __version__
from webtext.runtime import fs

Count = Callable[..., None]  # count(name, n=1)

STATS_FILE = "_stats.json"


def namespace(stage: str) -> str:
    return f"webtext.{stage}"


class BeamCounters:
    """A picklable `Count` for DoFns: creates each Beam counter on first use, on the worker."""

    def __init__(self, stage: str):
        self.ns = namespace(stage)
        self._counters: dict = {}

    def __call__(self, name: str, n: int = 1) -> None:
        c = self._counters.get(name)
        if c is None:
            from apache_beam.metrics import Metrics

            c = self._counters[name] = Metrics.counter(self.ns, name)
        c.inc(n)

    def __getstate__(self):
        return {"ns": self.ns}

    def __setstate__(self, state):
        self.ns = state["ns"]
        self._counters = {}


def dict_counter() -> tuple[collections.Counter, Count]:
    """A `Count` for plain code and tests, and the Counter it fills."""
    totals: collections.Counter = collections.Counter()

    def count(name: str, n: int = 1) -> None:
        totals[name] += n

    return totals, count


def collect_counters(result, stage: str) -> dict[str, int]:
    """Totals of the stage's counters from a finished PipelineResult, summed over steps, sorted by name."""
    from apache_beam.metrics.metric import MetricsFilter

    query = result.metrics().query(MetricsFilter().with_namespace(namespace(stage)))
    totals: collections.Counter = collections.Counter()
    for c in query["counters"]:
        value = c.committed if c.committed is not None else c.attempted
        totals[c.key.metric.name] += int(value or 0)
    return dict(sorted(totals.items()))


class Timer:
    def __init__(self):
        self.start = time.time()

    @property
    def started_at(self) -> str:
        return _dt.datetime.fromtimestamp(self.start, _dt.UTC).isoformat(timespec="seconds")

    @property
    def seconds(self) -> float:
        return round(time.time() - self.start, 3)


def begin_stage(output_dir: str, datasets_to_rewrite: tuple[str, ...] = ()) -> Timer:
    """Mark a stage's output as unfinished (no `_stats.json` until this run writes it) and remove the datasets
    it is about to rewrite, so no stale shard of an earlier run survives. Returns the run's timer."""
    from webtext.runtime import datasets

    timer = Timer()
    fs.makedirs(output_dir)
    path = fs.join(output_dir, STATS_FILE)
    if fs.exists(path):
        fs.delete([path])
    for name in datasets_to_rewrite:
        datasets.remove_dataset(output_dir, name)
    return timer


def write_stats(output_dir: str, stage: str, config: dict, counters: dict, timer: Timer, **extra) -> dict:
    stats = {
        "stage": stage,
        "webtext_version": __version__,
        "config": config,
        "counters": counters,
        "started_at": timer.started_at,
        "duration_s": timer.seconds,
        **extra,
    }
    fs.write_json(fs.join(output_dir, STATS_FILE), stats)
    return stats


def read_stats(output_dir: str) -> dict | None:
    path = fs.join(output_dir, STATS_FILE)
    return fs.read_json(path) if fs.exists(path) else None


def print_funnel(title: str, rows: Iterable[tuple[str, int]], file=None) -> None:
    """A two-column table (step, count) with the share of the first row, via rich."""
    from rich.console import Console
    from rich.table import Table

    rows = list(rows)
    table = Table(title=title, title_justify="left")
    table.add_column("step")
    table.add_column("count", justify="right")
    table.add_column("share", justify="right")
    first = rows[0][1] if rows and rows[0][1] else 0
    for name, value in rows:
        share = f"{100.0 * value / first:.1f}%" if first else ""
        table.add_row(name, f"{value:,}", share)
    Console(file=file or sys.stderr, soft_wrap=True).print(table)
