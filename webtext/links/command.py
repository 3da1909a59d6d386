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

from webtext.links import urls
from webtext.links.pipeline import ROWS_PER_SHARD, run_pipeline
from webtext.links.rules import BEFORE, KARMA_RULES, MIN_KARMA, rules_from_args
from webtext.links.schema import DROP_REASONS, LINKS, STAGE
from webtext.runtime import datasets, fs
from webtext.runtime.beam import add_runner_arguments, local_processes, pipeline_options
from webtext.runtime.errors import ERRORS
from webtext.runtime.stage import Plan, Result, StageError, run_command

EXAMPLE = """\
  webtext links --input '../shared/data/reddit/RS_*.xz' --output /tmp/links --workers 2
"""


def _date(value: str) -> int | None:
    if value.lower() in ("", "none"):
        return None
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date: {value!r} (use YYYY-MM-DD, an ISO time, or none)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp())


def _extensions(value: str) -> frozenset[str]:
    if value.lower() in ("", "none"):
        return frozenset()
    return frozenset(e.strip().lstrip(".").lower() for e in value.split(",") if e.strip())


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
    add_runner_arguments(parser)


def check(args: argparse.Namespace) -> Plan:
    if args.rows_per_shard < 1:
        raise StageError("--rows-per-shard must be at least 1")
    paths = fs.glob(args.input)
    rules = rules_from_args(args)
    options = pipeline_options(args, STAGE)
    processes = min(local_processes(args), len(paths))
    return Plan(output=args.output, clear=(LINKS, ERRORS), unit="lines",
                title=f"links: {len(paths)} files -> {args.output}", data=(paths, rules, options, processes))


def run(args: argparse.Namespace, plan: Plan) -> Result:
    """Dumps read in local processes; damaged files are listed under `damaged_files` in `_stats.json` and
    make the exit status 1."""
    paths, rules, options, processes = plan.data
    counters = run_pipeline(paths, args.output, rules, options, args.rows_per_shard, processes)
    damaged = []
    if counters.get("error_damaged_file"):
        table = datasets.read_table(args.output, ERRORS, columns=["reason", "detail"])
        damaged = [d for r, d in zip(table["reason"].to_pylist(), table["detail"].to_pylist(), strict=True)
                   if r == "damaged_file"]
    notes = []
    errors = sum(v for k, v in counters.items() if k.startswith("error_"))
    if errors:
        notes.append(f"{errors:,} lines could not be used: see the errors dataset in {args.output}")
    return Result(counters, {"inputs": paths, **rules.config()}, extra={"damaged_files": damaged}, notes=notes,
                  errors=[f"damaged input: {detail}" for detail in damaged])


def funnel(stats: dict) -> list[tuple[str, int]]:
    """(step, remaining) rows: lines read, parsed submissions, then what is left after each rule that is on."""
    counters, rules = stats["counters"], stats["config"]
    errors = sum(v for k, v in counters.items() if k.startswith("error_") and k not in
                 ("error_bad_url", "error_damaged_file"))
    left = counters.get("lines_read", 0)
    rows = [("lines read", left)]
    left -= counters.get("blank_lines", 0) + errors
    rows.append(("submissions parsed", left))
    labels = {"low_karma": f"score >= {rules['min_karma']}", "self_post": "not a self post",
              "date": "in the date range", "subreddit": "subreddit not excluded", "nsfw": "not NSFW",
              "scheme": "/".join(sorted(rules["schemes"])) or "scheme", "extension": "not a non-HTML file",
              "wikipedia": "not Wikipedia", "domain": "domain not excluded"}
    active = {"low_karma": rules["karma"] == "per-submission", "self_post": rules["drop_self_posts"],
              "date": rules["before"] is not None or rules["after"] is not None,
              "subreddit": bool(rules["exclude_subreddits"]), "nsfw": rules["drop_nsfw"], "scheme": True,
              "extension": bool(rules["blocked_extensions"]), "wikipedia": rules["drop_wikipedia"],
              "domain": bool(rules["exclude_domains"])}
    for reason in DROP_REASONS:
        if active[reason]:
            left -= counters.get("drop_" + reason, 0)
            rows.append((labels[reason], left))
        if reason == "extension" and counters.get("error_bad_url"):
            left -= counters["error_bad_url"]
            rows.append(("URL parses", left))
    rows.append(("kept submissions", counters.get("kept_submissions", 0)))
    if rules["karma"] == "sum":
        rows.append((f"links with summed score >= {rules['min_karma']}", counters.get("links", 0)))
    else:
        rows.append(("unique links", counters.get("links", 0)))
    return rows


def main(args: argparse.Namespace) -> int:
    return run_command(STAGE, args, check, run, funnel)
