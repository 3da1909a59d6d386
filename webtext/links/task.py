"""The links stage's work on one dump file, run in its local processes (`PoolMap` in pipeline.py): every
line through the rules, the kept submissions and error rows returned to the parent. Imports no Beam, so a
local process starts without it.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator

import orjson

from webtext.links.dumps import DumpReadError, iter_lines
from webtext.links.rules import LinkRules, Rejected, check_submission
from webtext.links.schema import STAGE
from webtext.runtime import progress, stats
from webtext.runtime.errors import error_row

PROGRESS_LINES = 1 << 16


def file_links(path: str, rules: LinkRules, count: stats.Count,
               loads: Callable[[bytes], object] = orjson.loads,
               tick: Callable[[int], None] | None = None) -> Iterator[tuple[bool, object]]:
    """Every line of one dump through the rules: yields (True, (key, submission)) for each kept submission
    and (False, error row) for each line that cannot be used, and a last error row if the file is damaged.
    Counts are kept locally and reported through `count` once, at the end of the file; `tick(n)` (progress)
    hears of every PROGRESS_LINES lines, and of the rest at the end."""
    c: collections.Counter = collections.Counter()
    low = rules.min_karma if rules.karma == "per-submission" else None
    n_low = lineno = 0
    try:
        for lineno, line in enumerate(iter_lines(path), 1):
            if tick is not None and not lineno % PROGRESS_LINES:
                tick(PROGRESS_LINES)
            try:
                obj = loads(line)
            except ValueError as e:  # orjson.JSONDecodeError, json.JSONDecodeError, UnicodeDecodeError
                if not line or line.isspace():
                    c["blank_lines"] += 1
                    continue
                c["error_bad_json"] += 1
                yield False, error_row(STAGE, path, lineno, "bad_json", str(e), line)
                continue
            # The commonest outcome by far, decided inline exactly as check_submission decides it:
            # a well-formed submission below the karma threshold.
            if (low is not None and type(obj) is dict and type(score := obj.get("score")) is int and score < low
                    and type(obj.get("url")) is str and type(sid := obj.get("id")) is str and sid
                    and type(obj.get("created_utc")) is int):
                n_low += 1
                continue
            try:
                status, key, sub = check_submission(obj, rules)
            except Rejected as e:
                c["error_" + e.reason] += 1
                yield False, error_row(STAGE, path, lineno, e.reason, e.detail, line)
                continue
            if status == "keep":
                c["kept_submissions"] += 1
                yield True, (key, sub)
            else:
                c["drop_" + key] += 1
    except DumpReadError as e:
        c["error_damaged_file"] += 1
        yield False, error_row(STAGE, path, e.lines + 1, "damaged_file", str(e))
    finally:
        if tick is not None and lineno % PROGRESS_LINES:
            tick(lineno % PROGRESS_LINES)  # the lines since the last tick: the total is every line read
        c["drop_low_karma"] += n_low
        c["lines_read"] += lineno
        c["files_read"] += 1
        for name, n in c.items():
            if n:
                count(name, n)


def _tick(n: int) -> None:
    progress.tick(STAGE, n)


def links_of_file(path: str, rules: LinkRules) -> tuple[list, list, dict]:
    """(kept (key, submission) pairs, error rows, counts) of one dump: what a local process returns for it."""
    counts, count = stats.dict_counter()
    kept, errors = [], []
    for ok, item in file_links(path, rules, count, tick=_tick):
        (kept if ok else errors).append(item)
    progress.flush()
    return kept, errors, dict(counts)
