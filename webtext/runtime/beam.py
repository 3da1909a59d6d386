"""Runner flags shared by every Beam stage, the one way a stage builds its PipelineOptions, and the Beam
transforms the stages share (`PoolMap`, and `WriteDataset`, `WriteRuns`, `ReadDataset` for the dataset
layout of `webtext.runtime.datasets`).

Locally the DirectRunner (Beam's FnApiRunner) runs in memory and each stage spreads its heavy step over
`--workers` local processes (`PoolMap`); on Google Cloud the same pipeline runs on Dataflow. Google
modules are imported only by Beam itself, only when Dataflow is used.
"""

from __future__ import annotations

import argparse
import os
import typing
from collections.abc import Callable, Iterable
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms.window import GlobalWindows

from webtext.runtime import datasets, fs
from webtext.runtime.processes import TaskPool

RUNNERS = {"direct": "DirectRunner", "dataflow": "DataflowRunner", "prism": "PrismRunner"}


def add_runner_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("runner")
    g.add_argument("--runner", default="direct",
                   help="direct (this machine), dataflow (Google Cloud), or any Beam runner name (default: direct)")
    g.add_argument("--workers", type=int, default=0,
                   help="local processes for a stage's heavy work on this machine (the direct runner itself runs "
                        "in memory); 0 = one per core (default: 0)")
    g.add_argument("--project", help="Google Cloud project (dataflow)")
    g.add_argument("--region", help="Google Cloud region (dataflow)")
    g.add_argument("--temp-location", help="gs:// path for temporary files (dataflow)")
    g.add_argument("--job-name", help="Dataflow job name (default: derived from the stage)")
    g.add_argument("--max-num-workers", type=int, help="Dataflow autoscaling limit")
    g.add_argument("--machine-type", help="Dataflow worker machine type, e.g. n2-standard-4")
    g.add_argument("--beam-option", action="append", default=[], metavar="--NAME=VALUE",
                   help="any other Beam pipeline option, passed through as written (repeatable)")


def local_workers(requested: int) -> int:
    return requested if requested > 0 else max(1, os.cpu_count() or 1)


def is_direct(args: argparse.Namespace) -> bool:
    return RUNNERS.get(args.runner.lower(), args.runner) == "DirectRunner"


def local_processes(args: argparse.Namespace) -> int:
    """Processes a stage that fans out its heavy step itself (`processes.TaskPool`) gives that step: `--workers`
    on this machine; one on a remote runner, which already runs one SDK process per core."""
    return local_workers(args.workers) if is_direct(args) else 1


def pipeline_options(args: argparse.Namespace, stage: str) -> PipelineOptions:
    """Locally the DirectRunner runs in memory, in this process: each stage parallelises its heavy step
    itself over `local_processes` (`PoolMap`, the extractor sandbox, the tokenizer's threads), with none
    of the runner's multi-processing start-up and gRPC exchange of every element. Nor does it infer element
    types from the bytecode of every function in the graph (`--no_pipeline_type_check`, ~0.1 s per stage):
    the types would only pick coders, the generic one encodes this project's elements (dicts, str and int
    keys) as well in one process, and webtext declares no types to check. Dataflow keeps Beam's inference."""
    runner = RUNNERS.get(args.runner.lower(), args.runner)
    flags = [f"--runner={runner}"]
    if runner == "DirectRunner":
        flags += ["--direct_num_workers=1", "--direct_running_mode=in_memory",
                  "--default_sdk_harness_log_level=WARNING", "--no_pipeline_type_check"]
    else:
        if runner == "DataflowRunner":
            check_dataflow_arguments(args)
        for name, value in (("project", args.project), ("region", args.region),
                            ("temp_location", args.temp_location), ("max_num_workers", args.max_num_workers),
                            ("machine_type", args.machine_type)):
            if value is not None:
                flags.append(f"--{name}={value}")
        flags.append(f"--job_name={args.job_name or 'webtext-' + stage.replace('_', '-')}")
        flags.append("--no_save_main_session")
        if not any(o.startswith(("--extra_package", "--setup_file", "--sdk_container_image"))
                   for o in args.beam_option):
            # Workers get this package as a wheel; pip installs its dependencies there (never torch:
            # the model is the `train` extra).
            flags.append(f"--extra_package={worker_wheel()}")
    flags += list(args.beam_option)
    return PipelineOptions(flags)


class RunnerArgumentError(ValueError):
    pass


def check_dataflow_arguments(args: argparse.Namespace) -> None:
    """Fail before building anything when Dataflow cannot run the job as asked."""
    missing = [flag for flag, value in (("--project", args.project), ("--region", args.region),
                                        ("--temp-location", args.temp_location)) if not value]
    if missing:
        raise RunnerArgumentError(f"--runner dataflow needs {', '.join(missing)}")
    if not str(args.temp_location).startswith("gs://"):
        raise RunnerArgumentError(f"--temp-location must be a gs:// path for Dataflow, got {args.temp_location!r}")
    if args.max_num_workers is not None and args.max_num_workers < 1:
        raise RunnerArgumentError("--max-num-workers must be at least 1")


def worker_wheel(dist_dir: str | None = None) -> str:
    """Build (once per process) the wheel of this package that Dataflow stages to its workers."""
    global _WHEEL
    if _WHEEL is None:
        import glob
        import subprocess
        import sys
        import tempfile

        from webtext import __version__

        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        out = dist_dir or tempfile.mkdtemp(prefix="webtext-wheel-")
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                        "--wheel-dir", out, root], check=True)
        _WHEEL = glob.glob(os.path.join(out, f"webtext-{__version__}-*.whl"))[0]
    return _WHEEL


_WHEEL: str | None = None


class _PoolMap(beam.DoFn):
    """The DoFn of `PoolMap`. Its pool lives for one bundle: made at the bundle's first task (an empty bundle
    starts no process), drained and closed (its children stopped and reaped) when the bundle finishes, so a
    finished step holds no idle processes and their memory while the pipeline's later steps run;
    `teardown`, which Beam's in-memory DirectRunner calls for every DoFn when the pipeline ends, failed or
    not, closes a pool a failed bundle left."""

    def __init__(self, fn, processes: int, args: tuple, prepare):
        self.fn, self.processes, self.args, self.prepare = fn, processes, args, prepare
        self.pool = None

    def process(self, task, *side):
        if self.pool is None:
            self.pool = TaskPool(self.processes)
            # Side inputs are the same for every task of a batch pipeline's bundle: prepared once.
            self.side_args = (self.prepare(*side),) if self.prepare else side
        yield from self.pool.submit(self.fn, task, *self.args, *self.side_args)

    def finish_bundle(self):
        if self.pool is None:
            return
        results = self.pool.drain()
        self.pool.close()
        self.pool = None
        for result in results:
            yield GlobalWindows.windowed_value(result)

    def teardown(self):
        if self.pool is not None:
            self.pool.close()


class PoolMap(beam.PTransform):
    """task -> fn(task, *args, *side) over a `TaskPool` of `processes`: a Map whose calls run in parallel
    local processes (a bundle of one task runs inline). Side inputs (Beam's AsDict, AsList, ...) follow
    `args`; `prepare(*side_values)`, when given, turns them into the one argument `fn` receives instead (e.g.
    a list into a frozenset). Batch pipelines only (results finished at the end of a bundle go out in the
    global window)."""

    def __init__(self, fn: Callable[..., Any], processes: int, *args, side: tuple = (), prepare=None):
        super().__init__()
        self.fn, self.processes, self.args, self.side, self.prepare = fn, processes, args, side, prepare

    def expand(self, tasks):
        return tasks | beam.ParDo(_PoolMap(self.fn, self.processes, self.args, self.prepare), *self.side)


@beam.typehints.with_output_types(typing.Any)  # main and tagged outputs mixed
class UnpackResults(beam.DoFn):
    """A task's (items, error rows, counts) -> its items, its error rows (tagged `errors`), and its counts
    added to the stage's counters (`count(name, n)`): how a `PoolMap` task reports back."""

    def __init__(self, count):
        self.count = count

    def process(self, result):
        items, errors, counts = result
        for name, n in sorted(counts.items()):
            self.count(name, n)
        for e in errors:
            yield beam.pvalue.TaggedOutput("errors", e)
        yield from items


# ---------------------------------------------------------------------------------------------------------
# Datasets (the layout: webtext.runtime.datasets)

class GroupByShard(beam.PTransform):
    """(shard, value) pairs -> (shard, values) for every shard key that `keys_of(shards)` gives, `shards` being
    a singleton PCollection (by default a shard count: keys 0..n-1), empty shards included, so that every
    shard's file is written even when no row falls in it. Each shard's values include one None placeholder,
    which the caller skips."""

    def __init__(self, shards, keys_of: Callable[[Any], Iterable] = range):
        super().__init__()
        self.shards, self.keys_of = shards, keys_of

    def expand(self, keyed):
        keys_of = self.keys_of
        every_shard = self.shards | "EveryShard" >> beam.FlatMap(lambda shards: [(k, None)
                                                                                 for k in keys_of(shards)])
        return (keyed, every_shard) | "Flatten" >> beam.Flatten() | "Group" >> beam.GroupByKey()


class _WriteShard(beam.DoFn):
    def __init__(self, output_dir: str, name: str, schema: pa.Schema, sort_key: Callable[[dict], Any]):
        self.output_dir, self.name, self.schema, self.sort_key = output_dir, name, schema, sort_key

    def process(self, element, num_shards):
        index, rows = element
        rows = sorted((r for r in rows if r is not None), key=self.sort_key)
        path = fs.join(self.output_dir, datasets.shard_name(self.name, index, num_shards))
        fs.write_atomic(path, datasets.table_bytes(rows, self.schema))
        yield path


class WriteDataset(beam.PTransform):
    """Write dict rows as the dataset `name` under `output_dir`: hash-sharded by `sort_key`, sorted within
    each shard, one file per shard (empty shards included), written atomically. Returns the file paths.

    Each shard is sorted in one worker's memory: choose `rows_per_shard` so a shard stays in the low
    hundreds of MB (links: ~1M rows; documents: ~50k)."""

    def __init__(self, output_dir: str, name: str, schema: pa.Schema, sort_key: Callable[[dict], Any],
                 rows_per_shard: int = 1_000_000):
        super().__init__(f"Write_{name}")
        self.output_dir, self.name, self.schema = output_dir, name, schema
        self.sort_key, self.rows_per_shard = sort_key, rows_per_shard

    def expand(self, rows):
        per_shard, sort_key = self.rows_per_shard, self.sort_key
        n = (rows
             | "Count" >> beam.combiners.Count.Globally()
             | "NumShards" >> beam.Map(datasets.num_shards_for, per_shard))
        n_side = beam.pvalue.AsSingleton(n)
        keyed = rows | "KeyByShard" >> beam.Map(lambda r, k: (datasets.stable_hash(sort_key(r)) % k, r),
                                                k=n_side)
        return (keyed
                | "GroupByShard" >> GroupByShard(n)
                | "WriteShards" >> beam.ParDo(_WriteShard(self.output_dir, self.name, self.schema, sort_key),
                                              num_shards=n_side))


class WriteRuns(beam.PTransform):
    """The dataset `name` from runs written by `datasets.split_into_runs`: (shard, run path) elements in,
    `num_shards` (a singleton PCollection) files out, each merged, sorted and written in one of `processes`
    local processes (every shard, empty ones included). Rows travel as files, not as Beam elements."""

    def __init__(self, output_dir: str, name: str, schema: pa.Schema, key: str, num_shards, processes: int = 1):
        super().__init__(f"WriteRuns_{name}")
        self.output_dir, self.name, self.schema, self.key = output_dir, name, schema, key
        self.num_shards, self.processes = num_shards, processes

    def expand(self, runs):
        return (runs
                | "GroupByShard" >> GroupByShard(self.num_shards)
                | "AsLists" >> beam.MapTuple(lambda index, paths: (index, list(paths)))
                | "WriteShards" >> PoolMap(datasets.write_shard_from_runs, self.processes, self.output_dir,
                                           self.name, self.schema, self.key,
                                           side=(beam.pvalue.AsSingleton(self.num_shards),)))


class ReadDataset(beam.PTransform):
    """Rows of a dataset written by `WriteDataset` as dicts. Files are listed when the pipeline runs, not when
    it is built, so a whole build's graph can be constructed (and checked) before any upstream output exists."""

    def __init__(self, input_dir: str, name: str, columns: list[str] | None = None):
        super().__init__(f"Read_{name}")
        self.input_dir, self.name, self.columns = input_dir, name, columns

    def expand(self, pbegin):
        return (pbegin
                | "Dir" >> beam.Create([self.input_dir])
                | "Paths" >> beam.FlatMap(existing_shards, self.name)
                | "RowGroups" >> beam.FlatMap(datasets.row_groups)
                | "Reshuffle" >> beam.Reshuffle()
                | "Rows" >> beam.FlatMap(_rows_of_row_group, self.columns))


def existing_shards(input_dir: str, name: str) -> list[str]:
    """The shard paths of a dataset, or FileNotFoundError: an input that is missing is an error, never an empty
    output."""
    paths = datasets.shard_paths(input_dir, name)
    if not paths:
        raise FileNotFoundError(f"{input_dir}: no dataset {name!r} ({datasets.shard_pattern(input_dir, name)})")
    return paths


def _rows_of_row_group(task: tuple[str, int], columns):
    for batch in datasets.read_row_group(task, columns).to_batches(max_chunksize=2048):
        yield from batch.to_pylist()
