"""Reruns into the same output resume: the bookkeeping around the fetch pipeline.

A run takes the next run number (it names the run's WARC files), reads every file that may hold log rows of
earlier runs (`prepare_resume`), keeps per link the best earlier row if it is final and fetches the link again
otherwise (`plan_link`), writes the new log whole to a staging directory and then swaps it in
(`swap_in_log`). Every row is in some file at every moment, so a run killed anywhere loses nothing.
"""

from __future__ import annotations

import posixpath
import re

import pyarrow.parquet as pq

from webtext.fetch.schema import (
    FETCHED,
    LINK_FIELDS,
    LOG,
    LOG_SCHEMA,
    PARTS_DIR,
    RESUME_DIR,
    RUNS_DIR,
    STAGING_DIR,
    WARC_DIR,
)
from webtext.runtime import datasets, fs, stats

_RUN_RE = re.compile(r"r(\d{4,})")


def next_run(output_dir: str) -> int:
    """1 + the highest run number seen in run markers, WARC names or part files: deterministic, and never
    reusing a number whose files exist."""
    names = (fs.glob_or_empty(fs.join(output_dir, RUNS_DIR, "r*.json"))
             + fs.glob_or_empty(fs.join(output_dir, WARC_DIR, "webtext-r*"))
             + fs.glob_or_empty(fs.join(output_dir, PARTS_DIR, "webtext-r*")))
    runs = [int(m.group(1)) for n in names if (m := _RUN_RE.search(posixpath.basename(n).replace("webtext-", "")))]
    return max(runs, default=0) + 1


def prepare_resume(output_dir: str) -> list[str]:
    """Every file that may hold log rows of earlier runs: the log, finished groups of killed runs, and a
    new log a killed run had staged. Stale temporary files are removed."""
    fs.delete(fs.glob_or_empty(fs.join(output_dir, WARC_DIR, ".tmp-*")))
    fs.delete(fs.glob_or_empty(fs.join(output_dir, PARTS_DIR, ".tmp-*")))
    fs.delete(fs.glob_or_empty(fs.join(output_dir, STAGING_DIR, ".tmp-*")))
    staged = fs.glob_or_empty(datasets.shard_pattern(fs.join(output_dir, STAGING_DIR), LOG))
    if staged:
        fs.makedirs(fs.join(output_dir, RESUME_DIR))
        run = next_run(output_dir)
        for path in staged:
            fs.rename(path, fs.join(output_dir, RESUME_DIR, f"r{run:04d}-{posixpath.basename(path)}"))
    return (fs.glob_or_empty(datasets.shard_pattern(output_dir, LOG))
            + fs.glob_or_empty(fs.join(output_dir, RESUME_DIR, "*.parquet"))
            + fs.glob_or_empty(fs.join(output_dir, PARTS_DIR, "*.parquet")))


def read_log_file(path: str):
    """The log rows of one of the files `prepare_resume` found, with exactly the log's columns."""
    with fs.open_read(path) as f:
        table = pq.read_table(f)
    for row in table.to_pylist():
        yield {f.name: row.get(f.name) for f in LOG_SCHEMA}


def is_final(row: dict) -> bool:
    """A logged link that a rerun keeps: fetched, or failed for a reason that will not change."""
    return row["error"] is None or not row["transient"]


def _rank(row: dict):
    return (row["error"] is None, is_final(row), row.get("run") or 0, row.get("fetched_at") or "")


def plan_link(links: list[dict], previous: list[dict], count: stats.Count):
    """For one (key, url): ("keep", row) to keep a final logged row, or ("fetch", link)."""
    if not links:
        count("stale_log_rows", len(previous))
        return []
    out = []
    best = max(previous, key=_rank) if previous else None
    for link in links:  # more than one only if the links table repeats a link
        if best is not None and is_final(best):
            count("resume_kept")
            out.append(("keep", {**best, **{f: link.get(f) for f in LINK_FIELDS}}))
        else:
            if best is not None:
                count("resume_retried")
            out.append(("fetch", link))
    return out


def swap_in_log(output_dir: str, consumed: list[str]) -> None:
    """Replace the log with the staged one, then drop the files it supersedes. Every row is in some file at
    every moment, so a kill anywhere here loses nothing (the next run reads them all)."""
    staging = fs.join(output_dir, STAGING_DIR)
    new = datasets.shard_paths(staging, LOG)
    datasets.remove_dataset(output_dir, LOG)
    for path in new:
        fs.rename(path, fs.join(output_dir, posixpath.basename(path)))
    old_parts = [p for p in consumed if f"/{PARTS_DIR}/" in p or f"/{RESUME_DIR}/" in p]
    this_run = fs.glob_or_empty(fs.join(output_dir, PARTS_DIR, "*.parquet"))
    fs.delete(sorted(set(old_parts) | set(this_run)))


def summarize(output_dir: str) -> dict[str, int]:
    """Links per outcome in the whole log (all runs)."""
    table = datasets.read_table(output_dir, LOG, columns=["error"])
    counts: dict[str, int] = {"links": table.num_rows}
    for value in table.column("error").to_pylist():
        name = FETCHED if value is None else value
        counts[name] = counts.get(name, 0) + 1
    return counts
