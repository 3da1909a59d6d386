"""The links stage's Beam graph: dump paths -> kept submissions (read in local processes) -> one row per
normalised URL, written as the datasets `links` and `errors`."""

from __future__ import annotations

import argparse

import apache_beam as beam

from webtext.links.rules import LinkRules, merge_link, rules_from_args
from webtext.links.schema import LINKS, LINKS_SCHEMA, STAGE
from webtext.links.task import links_of_file
from webtext.runtime import fs, stats
from webtext.runtime.beam import PoolMap, UnpackResults, WriteDataset, local_processes
from webtext.runtime.errors import ERRORS, ERRORS_SCHEMA, error_sort_key

ROWS_PER_SHARD = 1_000_000


class ReadSubmissionLinks(beam.PTransform):
    """Dump paths -> (key, submission) for each kept submission, plus tagged output `errors`. One task per
    file, reshuffled and run in `processes` local processes, so files are read in parallel; lines never
    become elements (only the submissions that are kept do)."""

    def __init__(self, rules: LinkRules, processes: int = 1):
        super().__init__()
        self.rules, self.processes = rules, processes

    def expand(self, paths):
        return (paths
                | "Reshuffle" >> beam.Reshuffle()
                | "ReadFiles" >> PoolMap(links_of_file, self.processes, self.rules)
                | "Unpack" >> beam.ParDo(UnpackResults(stats.BeamCounters(STAGE))).with_outputs(ERRORS, main=LINKS))


class _Merge(beam.DoFn):
    def __init__(self, rules: LinkRules):
        self.rules = rules
        self.count = stats.BeamCounters(STAGE)

    def process(self, element):
        row = merge_link(element[0], element[1], self.rules, self.count)
        if row is not None:
            yield row


class MergeLinks(beam.PTransform):
    """(key, submission) -> one link row per key."""

    def __init__(self, rules: LinkRules):
        super().__init__()
        self.rules = rules

    def expand(self, keyed):
        return keyed | "GroupByKey" >> beam.GroupByKey() | "Merge" >> beam.ParDo(_Merge(self.rules))


def _link_sort_key(row: dict) -> str:
    return row["key"]


class BuildLinks(beam.PTransform):
    """Dump paths -> the datasets `links` and `errors` under `output_dir`."""

    def __init__(self, rules: LinkRules, output_dir: str, rows_per_shard: int = ROWS_PER_SHARD, processes: int = 1):
        super().__init__()
        self.rules, self.output_dir, self.rows_per_shard, self.processes = rules, output_dir, rows_per_shard, processes

    def expand(self, paths):
        read = paths | "Read" >> ReadSubmissionLinks(self.rules, self.processes)
        links = (read[LINKS]
                 | "Merge" >> MergeLinks(self.rules)
                 | "WriteLinks" >> WriteDataset(self.output_dir, LINKS, LINKS_SCHEMA, _link_sort_key,
                                                self.rows_per_shard))
        errors = read[ERRORS] | "WriteErrors" >> WriteDataset(self.output_dir, ERRORS, ERRORS_SCHEMA,
                                                              error_sort_key, self.rows_per_shard)
        return links, errors


def build_pipeline(p: beam.Pipeline, paths: list[str], output_dir: str, rules: LinkRules,
                   rows_per_shard: int = ROWS_PER_SHARD, processes: int = 1) -> None:
    """The stage's graph in `p`: the dumps at `paths` (read in `processes` local processes) -> `output_dir`."""
    _ = p | "Paths" >> beam.Create(paths) | "Links" >> BuildLinks(rules, output_dir, rows_per_shard, processes)


def run_pipeline(paths: list[str], output_dir: str, rules: LinkRules, options, rows_per_shard: int = ROWS_PER_SHARD,
                 processes: int = 1) -> dict:
    """Run the stage's graph to the end; its counters."""
    p = beam.Pipeline(options=options)
    build_pipeline(p, paths, output_dir, rules, rows_per_shard, processes)
    result = p.run()
    result.wait_until_finish()
    return stats.collect_counters(result, STAGE)


def graph(p: beam.Pipeline, args: argparse.Namespace) -> None:
    """The stage's pipeline, built from its flags without touching any output (`webtext build --dry-run`)."""
    build_pipeline(p, fs.glob(args.input), args.output, rules_from_args(args), args.rows_per_shard,
                   local_processes(args))
