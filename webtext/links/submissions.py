"""The links stage's rules and its work on one dump file, free of Beam: `links_of_file` runs in the stage's
local processes (`pool.TaskPool`), which then never import Beam, and `check_submission` and `merge_link` are
the pure functions the stage's transforms (webtext.links.pipeline) are built on.
"""

from __future__ import annotations

import calendar
import collections
import datetime as dt
from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Iterator

import orjson
import pyarrow as pa

from webtext.runtime import progress, stats
from webtext.links import urls
from webtext.links.dumps import DumpReadError, iter_lines
from webtext.runtime.errors import error_row

STAGE = "links"
LINKS = "links"

MIN_KARMA = 3                    # GPT-2: "at least 3 karma"
KARMA_RULES = ("per-submission", "sum")
BEFORE = "2018-01-01"            # WebText "does not include links created after Dec 2017"
PROGRESS_LINES = 1 << 16



LINKS_SCHEMA = pa.schema([
    pa.field("url", pa.string(), nullable=False),
    pa.field("key", pa.string(), nullable=False),
    pa.field("host", pa.string(), nullable=False),
    pa.field("score", pa.int64(), nullable=False),
    pa.field("num_submissions", pa.int64(), nullable=False),
    pa.field("subreddits", pa.list_(pa.string()), nullable=False),
    pa.field("first_created_utc", pa.int64(), nullable=False),
    pa.field("submission_ids", pa.list_(pa.string()), nullable=False),
])

# Drop reasons in the order the rules are applied: each submission is counted under the first rule it fails.
DROP_REASONS = ("low_karma", "self_post", "date", "subreddit", "nsfw", "scheme", "extension", "wikipedia",
                "domain")
# Error reasons (the `reason` column of the errors dataset).
ERROR_REASONS = ("bad_json", "not_object", "missing_field", "bad_type", "bad_url", "damaged_file")


@dataclass(frozen=True)
class LinkRules:
    """Every rule of the stage, with the GPT-2 recipe as default."""
    min_karma: int = MIN_KARMA
    karma: str = "per-submission"                 # or "sum": applied after merging by key
    drop_self_posts: bool = True
    schemes: frozenset[str] = urls.SCHEMES
    drop_wikipedia: bool = True
    before: int | None = calendar.timegm(dt.date.fromisoformat(BEFORE).timetuple())  # created_utc < before
    after: int | None = None                      # created_utc >= after
    exclude_domains: frozenset[str] = frozenset()
    exclude_subreddits: frozenset[str] = frozenset()  # lowercase
    drop_nsfw: bool = False
    blocked_extensions: frozenset[str] = urls.BLOCKED_EXTENSIONS

    def __post_init__(self):
        if self.karma not in KARMA_RULES:
            raise ValueError(f"karma rule must be one of {KARMA_RULES}, not {self.karma!r}")

    def config(self) -> dict:
        out = asdict(self)
        for k, v in out.items():
            if isinstance(v, frozenset):
                out[k] = sorted(v)
        return out


# What one kept submission contributes to its link: (score, created_utc, id, subreddit, url).
Submission = tuple


class Rejected(Exception):
    """A line that cannot be used: `reason` from ERROR_REASONS, `detail` one line for a human."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def _int_field(obj: dict, name: str) -> int:
    value = obj.get(name)
    if value is None:
        raise Rejected("missing_field", f"no {name}")
    if type(value) is int:
        return value
    if type(value) is float and value.is_integer():
        return int(value)
    if type(value) is str:  # early dumps wrote some numbers as strings
        try:
            return int(value)
        except ValueError:
            pass
    raise Rejected("bad_type", f"{name} is {type(value).__name__}: {str(value)[:80]}")


def check_submission(obj, rules: LinkRules) -> tuple[str, str | None, Submission | None]:
    """Apply the rules to one parsed submission: ("keep", key, submission) or ("drop", reason, None).
    Raises Rejected if the submission lacks a field the stage needs or has one of the wrong type."""
    if type(obj) is not dict:
        raise Rejected("not_object", f"a JSON {type(obj).__name__}, not an object")
    url = obj.get("url")
    if url is None:
        raise Rejected("missing_field", "no url")
    if type(url) is not str:
        raise Rejected("bad_type", f"url is {type(url).__name__}")
    score = obj.get("score")
    if score is None:
        raise Rejected("missing_field", "no score")
    if type(score) is not int:  # a bool is not a score
        raise Rejected("bad_type", f"score is {type(score).__name__}: {str(score)[:80]}")
    sid = obj.get("id")
    if type(sid) is not str or not sid:
        raise Rejected("missing_field" if sid is None else "bad_type", f"id is {sid!r}"[:100])
    created = obj.get("created_utc")
    if type(created) is not int:
        created = _int_field(obj, "created_utc")

    if rules.karma == "per-submission" and score < rules.min_karma:
        return "drop", "low_karma", None
    if rules.drop_self_posts and obj.get("is_self") is True:
        return "drop", "self_post", None
    if (rules.before is not None and created >= rules.before) or (rules.after is not None and created < rules.after):
        return "drop", "date", None
    subreddit = obj.get("subreddit")
    subreddit = subreddit if type(subreddit) is str else ""
    if rules.exclude_subreddits and subreddit.lower() in rules.exclude_subreddits:
        return "drop", "subreddit", None
    if rules.drop_nsfw and obj.get("over_18") is True:
        return "drop", "nsfw", None
    if urls.scheme_of(url) not in rules.schemes:
        return "drop", "scheme", None
    if rules.blocked_extensions and urls.blocked_extension(urls.path_of(url), rules.blocked_extensions):
        return "drop", "extension", None  # before parse_url, which costs ~100x more
    try:
        parsed = urls.parse_url(url)
    except urls.UrlError as e:
        raise Rejected("bad_url", f"url {url[:200]!r}: {e}") from None
    if rules.drop_wikipedia and urls.is_wikipedia(parsed.host):
        return "drop", "wikipedia", None
    if urls.host_in(parsed.host, rules.exclude_domains):
        return "drop", "domain", None
    return "keep", parsed.key, (score, created, sid, subreddit, url.strip())


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
            # The commonest outcome (~90% of lines), decided inline exactly as check_submission decides it:
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


def merge_link(key: str, submissions: Iterable[Submission], rules: LinkRules,
               count: stats.Count) -> dict | None:
    """One row of the link table from every kept submission of `key`, or None if the summed karma is too
    low. The row's url is a real submitted URL: from the highest-scored submission, ties to the earliest."""
    by_id: dict[str, Submission] = {}
    n = 0
    for s in submissions:
        n += 1
        prev = by_id.get(s[2])
        if prev is None or s > prev:  # the same submission in two dumps: keep its latest (highest) score
            by_id[s[2]] = s
    if n > len(by_id):
        count("duplicate_submission_ids", n - len(by_id))
    subs = list(by_id.values())
    best = min(subs, key=lambda s: (-s[0], s[1], s[2]))
    score = best[0] if rules.karma == "per-submission" else sum(s[0] for s in subs)
    if score < rules.min_karma:
        count("drop_low_karma_sum")
        return None
    count("links")
    return {
        "url": best[4],
        "key": key,
        "host": urls.host_of(best[4]),
        "score": score,
        "num_submissions": len(subs),
        "subreddits": sorted({s[3] for s in subs if s[3]}),
        "first_created_utc": min(s[1] for s in subs),
        "submission_ids": sorted(by_id),
    }


# ---------------------------------------------------------------------------------------------- Beam layer

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
