"""Reddit submission dumps -> one row per outbound link: the link table every later stage starts from.

Reads pushshift / Arctic Shift NDJSON dumps (plain, .zst, .xz, .bz2, .gz; local or gs://), keeps the
submissions that pass the GPT-2 (WebText) rules, and merges them by normalised URL into the dataset `links`
(docs/formats.md). Lines that cannot be used go to the dataset `errors` with their file and line number;
every drop is counted by reason, printed as a funnel and saved in `_stats.json`.

Rules (defaults = the GPT-2 recipe): score >= --min-karma 3, per submission (the paper) or summed over all
submissions of a URL (OpenWebText2); no self posts; http/https only; no Wikipedia (any language, mobile);
created before 2018; no links to non-HTML files by extension. Optional: --after, --exclude-domains FILE,
--exclude-subreddits FILE, --drop-nsfw.

The same command runs on Google Cloud with gs:// paths and `--runner dataflow --project P --region R
--temp-location gs://BUCKET/tmp`.
"""

from __future__ import annotations

import argparse
import calendar
import collections
import datetime as dt
import sys
from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Iterator

import apache_beam as beam
import orjson
import pyarrow as pa

from webtext.pipeline import datasets, fs, progress, stats, urls
from webtext.pipeline.beam import PoolMap, UnpackResults, WriteDataset, local_processes, pipeline_options
from webtext.pipeline.dumps import DumpReadError, iter_lines
from webtext.pipeline.errors import ERRORS, ERRORS_SCHEMA, error_row, error_sort_key

STAGE = "links"
LINKS = "links"

MIN_KARMA = 3                    # GPT-2: "at least 3 karma"
KARMA_RULES = ("per-submission", "sum")
BEFORE = "2018-01-01"            # WebText "does not include links created after Dec 2017"
ROWS_PER_SHARD = 1_000_000
PROGRESS_LINES = 1 << 16

EXAMPLE = """\
  webtext links --input '../shared/data/reddit/RS_*.xz' --output /tmp/links --workers 2
"""

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


class ReadSubmissionLinks(beam.PTransform):
    """Dump paths -> (key, submission) for each kept submission, plus tagged output `errors`. One task per
    file, reshuffled and run in `processes` local processes, so files are read in parallel; lines never
    become elements (only the ~8% of submissions that are kept do)."""

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


# ---------------------------------------------------------------------------------------------- CLI

def funnel(counters: dict, rules: LinkRules) -> list[tuple[str, int]]:
    """(step, remaining) rows: lines read, parsed submissions, then what is left after each rule."""
    errors = sum(v for k, v in counters.items() if k.startswith("error_") and k not in
                 ("error_bad_url", "error_damaged_file"))
    left = counters.get("lines_read", 0)
    rows = [("lines read", left)]
    left -= counters.get("blank_lines", 0) + errors
    rows.append(("submissions parsed", left))
    labels = {"low_karma": f"score >= {rules.min_karma}", "self_post": "not a self post",
              "date": "in the date range", "subreddit": "subreddit not excluded", "nsfw": "not NSFW",
              "scheme": "/".join(sorted(rules.schemes)) or "scheme", "extension": "not a non-HTML file",
              "wikipedia": "not Wikipedia", "domain": "domain not excluded"}
    active = {"low_karma": rules.karma == "per-submission", "self_post": rules.drop_self_posts,
              "date": rules.before is not None or rules.after is not None,
              "subreddit": bool(rules.exclude_subreddits), "nsfw": rules.drop_nsfw, "scheme": True,
              "extension": bool(rules.blocked_extensions), "wikipedia": rules.drop_wikipedia,
              "domain": bool(rules.exclude_domains)}
    for reason in DROP_REASONS:
        if active[reason]:
            left -= counters.get("drop_" + reason, 0)
            rows.append((labels[reason], left))
        if reason == "extension" and counters.get("error_bad_url"):
            left -= counters["error_bad_url"]
            rows.append(("URL parses", left))
    rows.append(("kept submissions", counters.get("kept_submissions", 0)))
    if rules.karma == "sum":
        rows.append((f"links with summed score >= {rules.min_karma}", counters.get("links", 0)))
    else:
        rows.append(("unique links", counters.get("links", 0)))
    return rows


def _date(value: str) -> int | None:
    if value.lower() in ("", "none"):
        return None
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date: {value!r} (use YYYY-MM-DD, an ISO time, or none)")
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return int(when.timestamp())


def _extensions(value: str) -> frozenset[str]:
    if value.lower() in ("", "none"):
        return frozenset()
    return frozenset(e.strip().lstrip(".").lower() for e in value.split(",") if e.strip())


def _read_list(path: str | None) -> list[str]:
    return fs.read_bytes(path).decode("utf-8").splitlines() if path else []


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", nargs="+", required=True, metavar="GLOB",
                        help="dump files or globs (local or gs://): NDJSON, plain or .zst/.xz/.bz2/.gz")
    parser.add_argument("--output", required=True, metavar="DIR", help="output directory (local or gs://)")
    r = parser.add_argument_group("rules (defaults: the GPT-2 recipe)")
    r.add_argument("--min-karma", type=int, default=MIN_KARMA, help=f"minimum score (default: {MIN_KARMA})")
    r.add_argument("--karma", choices=KARMA_RULES, default="per-submission",
                   help="per-submission (GPT-2) or sum over all submissions of a URL (OpenWebText2) "
                        "(default: per-submission)")
    r.add_argument("--keep-self-posts", action="store_true", help="keep self posts (default: dropped)")
    r.add_argument("--schemes", default="http,https", help="URL schemes kept (default: http,https)")
    r.add_argument("--keep-wikipedia", action="store_true",
                   help="keep Wikipedia links (default: every Wikipedia domain dropped, as in the paper)")
    r.add_argument("--before", type=_date, default=_date(BEFORE), metavar="DATE",
                   help=f"keep submissions created before DATE, UTC, or 'none' (default: {BEFORE})")
    r.add_argument("--after", type=_date, default=None, metavar="DATE",
                   help="keep submissions created at or after DATE, UTC (default: none)")
    r.add_argument("--exclude-domains", metavar="FILE",
                   help="drop links to these domains and their subdomains (one per line, # comments)")
    r.add_argument("--exclude-subreddits", metavar="FILE", help="drop submissions to these subreddits (one per line)")
    r.add_argument("--drop-nsfw", action="store_true", help="drop submissions marked over_18 (default: kept)")
    r.add_argument("--blocked-extensions", type=_extensions, default=urls.BLOCKED_EXTENSIONS, metavar="EXT,...",
                   help="file extensions of non-HTML targets to drop, or 'none' (default: images, video, audio, "
                        "archives, office files, PDF, code; see webtext/pipeline/urls.py)")
    parser.add_argument("--rows-per-shard", type=int, default=ROWS_PER_SHARD,
                        help=f"rows per Parquet file (default: {ROWS_PER_SHARD:,})")
    from webtext.pipeline.beam import add_runner_arguments
    add_runner_arguments(parser)


def rules_from_args(args: argparse.Namespace) -> LinkRules:
    return LinkRules(
        min_karma=args.min_karma, karma=args.karma, drop_self_posts=not args.keep_self_posts,
        schemes=frozenset(s.strip().lower() for s in args.schemes.split(",") if s.strip()),
        drop_wikipedia=not args.keep_wikipedia, before=args.before, after=args.after,
        exclude_domains=urls.read_domain_list(_read_list(args.exclude_domains)),
        exclude_subreddits=frozenset(s.strip().lower().removeprefix("r/") for s in _read_list(args.exclude_subreddits)
                                     if s.strip() and not s.lstrip().startswith("#")),
        drop_nsfw=args.drop_nsfw, blocked_extensions=args.blocked_extensions)


def graph(p: beam.Pipeline, args: argparse.Namespace) -> None:
    """The stage's pipeline, built from its flags without touching any output (`webtext build --dry-run`)."""
    _ = (p | "Paths" >> beam.Create(fs.glob(args.input))
         | "Links" >> BuildLinks(rules_from_args(args), args.output, args.rows_per_shard, local_processes(args)))


def run(paths: list[str], output_dir: str, rules: LinkRules, options, rows_per_shard: int = ROWS_PER_SHARD,
        processes: int = 1) -> dict:
    """Run the stage (dumps read in `processes` local processes); returns the `_stats.json` content.
    Damaged files are listed under `damaged_files`."""
    timer = stats.begin_stage(output_dir, (LINKS, ERRORS))
    p = beam.Pipeline(options=options)
    _ = p | "Paths" >> beam.Create(paths) | "Links" >> BuildLinks(rules, output_dir, rows_per_shard, processes)
    result = p.run()
    result.wait_until_finish()
    counters = stats.collect_counters(result, STAGE)
    damaged = []
    if counters.get("error_damaged_file"):
        table = datasets.read_table(output_dir, ERRORS, columns=["reason", "detail"])
        damaged = [d for r, d in zip(table["reason"].to_pylist(), table["detail"].to_pylist()) if r == "damaged_file"]
    return stats.write_stats(output_dir, STAGE, {"inputs": paths, **rules.config()}, counters, timer,
                             damaged_files=damaged)


def main(args: argparse.Namespace) -> int:
    try:
        paths = fs.glob(args.input)
        rules = rules_from_args(args)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    with progress.Progress(STAGE, unit="lines"):
        result = run(paths, args.output, rules, pipeline_options(args, STAGE), args.rows_per_shard,
                     min(local_processes(args), len(paths)))
    counters = result["counters"]
    stats.print_funnel(f"links: {len(paths)} files -> {args.output}", funnel(counters, rules))
    errors = sum(v for k, v in counters.items() if k.startswith("error_"))
    if errors:
        print(f"{errors:,} lines could not be used: see the errors dataset in {args.output}", file=sys.stderr)
    for detail in result["damaged_files"]:
        print(f"error: damaged input: {detail}", file=sys.stderr)
    return 1 if result["damaged_files"] else 0
