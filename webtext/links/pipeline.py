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
import datetime as dt
import sys

import apache_beam as beam

from webtext.runtime import datasets, fs, progress, stats
from webtext.links import urls
from webtext.runtime.beam import PoolMap, UnpackResults, WriteDataset, local_processes, pipeline_options
from webtext.runtime.errors import ERRORS, ERRORS_SCHEMA, error_sort_key
from webtext.links.submissions import (BEFORE, DROP_REASONS, KARMA_RULES, LINKS, LINKS_SCHEMA, MIN_KARMA, STAGE,
                                         LinkRules, links_of_file, merge_link)

EXAMPLE = """\
  webtext links --input '../shared/data/reddit/RS_*.xz' --output /tmp/links --workers 2
"""
ROWS_PER_SHARD = 1_000_000


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
                        "archives, office files, PDF, code; see webtext/links/urls.py)")
    parser.add_argument("--rows-per-shard", type=int, default=ROWS_PER_SHARD,
                        help=f"rows per Parquet file (default: {ROWS_PER_SHARD:,})")
    from webtext.runtime.beam import add_runner_arguments
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
