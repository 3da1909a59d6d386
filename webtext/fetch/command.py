"""Download every link of the links stage politely and safely into WARC files, with a fetch log in Parquet.

Links are grouped by host so one worker fetches all of a host's URLs (one request in flight per host and a
pause between requests by default), while many hosts run at once on threads. robots.txt is obeyed; every
hop of a redirect is checked again; a guard keeps fetches off loopback, private and link-local addresses
(`--allow-network` opens a range on purpose). Rerunning into the same output resumes: links already fetched
or failed for good are kept, transient failures are tried again. Output: `log-*.parquet` (one row per link),
`warc/*.warc.gz`, `errors-*.parquet` and `_stats.json` (see docs/formats.md, Fetch).
"""

from __future__ import annotations

import argparse
import dataclasses

import apache_beam as beam

from webtext.fetch import resume
from webtext.fetch.crawler import (
    BACKOFF_S,
    CONCURRENCY,
    HOST_DELAY_S,
    MAX_CRAWL_DELAY_S,
    MAX_RETRY_AFTER_S,
    PER_HOST,
    RETRIES,
    WARC_MAX_BYTES,
    CrawlConfig,
)
from webtext.fetch.http import (
    CONNECT_TIMEOUT_S,
    DEFAULT_USER_AGENT,
    DNS_TIMEOUT_S,
    MAX_BYTES,
    MAX_REDIRECTS,
    READ_TIMEOUT_S,
    TOTAL_TIMEOUT_S,
)
from webtext.fetch.pipeline import (
    HOSTS_PER_GROUP,
    LOG_ROWS_PER_SHARD,
    FetchConfig,
    build_pipeline,
)
from webtext.fetch.schema import FETCHED, LINKS, PARTS_DIR, RUNS_DIR, STAGE, WARC_DIR
from webtext.runtime import datasets, fs, stats, warc
from webtext.runtime.beam import add_runner_arguments, pipeline_options
from webtext.runtime.errors import ERRORS
from webtext.runtime.stage import Plan, Result, require_dataset, run_command

EXAMPLE = """\
  webtext fetch --links out/links --output out/fetch
  webtext fetch --links out/links --output out/fetch --per-host 2 --host-delay 0.5 --concurrency 128
  # a test web on loopback, its *.test names served by 127.0.0.1:
  webtext fetch --links out/links --output out/fetch --resolve '*.test=127.0.0.1' --allow-network 127.0.0.1/32
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--links", required=True, help="output directory of `webtext links`")
    parser.add_argument("--output", required=True, help="output directory (rerun into it to resume)")
    g = parser.add_argument_group("politeness")
    g.add_argument("--per-host", type=int, default=PER_HOST, help=f"requests in flight per host (default: {PER_HOST})")
    g.add_argument("--host-delay", type=float, default=HOST_DELAY_S,
                   help=f"seconds between two requests to one host (default: {HOST_DELAY_S:g})")
    g.add_argument("--concurrency", type=int, default=CONCURRENCY,
                   help=f"fetch threads per host group (default: {CONCURRENCY})")
    g.add_argument("--user-agent", default=DEFAULT_USER_AGENT, help=f"(default: {DEFAULT_USER_AGENT})")
    g.add_argument("--no-robots", action="store_true", help="ignore robots.txt (default: obey it)")
    g.add_argument("--max-crawl-delay", type=float, default=MAX_CRAWL_DELAY_S,
                   help=f"skip hosts whose robots.txt Crawl-delay is longer (default: {MAX_CRAWL_DELAY_S:g}s)")
    g.add_argument("--hosts-per-group", type=int, default=HOSTS_PER_GROUP,
                   help=f"hosts handed to one worker call (default: {HOSTS_PER_GROUP})")
    g = parser.add_argument_group("limits")
    g.add_argument("--connect-timeout", type=float, default=CONNECT_TIMEOUT_S,
                   help=f"seconds (default: {CONNECT_TIMEOUT_S:g})")
    g.add_argument("--read-timeout", type=float, default=READ_TIMEOUT_S,
                   help=f"longest silence while reading, seconds (default: {READ_TIMEOUT_S:g})")
    g.add_argument("--timeout", type=float, default=TOTAL_TIMEOUT_S,
                   help=f"total seconds for one attempt at a URL, redirects and body included "
                        f"(default: {TOTAL_TIMEOUT_S:g})")
    g.add_argument("--dns-timeout", type=float, default=DNS_TIMEOUT_S, help=f"seconds (default: {DNS_TIMEOUT_S:g})")
    g.add_argument("--max-bytes", type=int, default=MAX_BYTES,
                   help=f"decoded body limit; larger pages are errors (default: {MAX_BYTES})")
    g.add_argument("--max-redirects", type=int, default=MAX_REDIRECTS, help=f"(default: {MAX_REDIRECTS})")
    g.add_argument("--retries", type=int, default=RETRIES,
                   help=f"extra attempts on 408/429/5xx, connection errors and timeouts (default: {RETRIES})")
    g.add_argument("--backoff", type=float, default=BACKOFF_S,
                   help=f"first retry delay in seconds, doubled each time, with jitter (default: {BACKOFF_S:g})")
    g.add_argument("--max-retry-after", type=float, default=MAX_RETRY_AFTER_S,
                   help=f"longest Retry-After waited for in this run (default: {MAX_RETRY_AFTER_S:g}s)")
    g.add_argument("--allow-text-plain", action="store_true", help="keep text/plain pages too (default: HTML only)")
    g = parser.add_argument_group("network safety")
    g.add_argument("--allow-network", action="append", default=[], metavar="CIDR",
                   help="let fetches reach this otherwise blocked range, e.g. 127.0.0.1/32 (repeatable; default: "
                        "none: loopback, private, link-local, CGNAT, multicast and reserved are blocked)")
    g.add_argument("--resolve", action="append", default=[], metavar="HOST=IP",
                   help="answer this name (wildcards allowed, e.g. '*.test=127.0.0.1') without DNS; the address "
                        "is still checked (repeatable)")
    g = parser.add_argument_group("output")
    g.add_argument("--warc-max-bytes", type=int, default=WARC_MAX_BYTES,
                   help=f"start a new WARC file past this size (default: {WARC_MAX_BYTES})")
    g.add_argument("--warc-gzip-level", type=int, default=warc.GZIP_LEVEL, choices=warc.GZIP_LEVELS, metavar="0-3",
                   help=f"ISA-L gzip level of WARC records, 3 = smallest (default: {warc.GZIP_LEVEL})")
    g.add_argument("--rows-per-shard", type=int, default=LOG_ROWS_PER_SHARD,
                   help=f"log rows per Parquet shard (default: {LOG_ROWS_PER_SHARD})")
    add_runner_arguments(parser)


@dataclasses.dataclass(frozen=True)
class Fetch:
    """What `check` decided: the stage's settings and this run's number (it names the run's WARC files)."""
    config: FetchConfig
    run: int


def check(args: argparse.Namespace) -> Plan:
    config = FetchConfig.from_args(args)
    require_dataset(args.links, LINKS, "links")
    number = resume.next_run(args.output)
    # The log is kept (rerunning resumes from it); the errors are this run's alone.
    return Plan(output=args.output, clear=(ERRORS,), total=datasets.count_rows(args.links, LINKS), unit="links",
                title=f"fetch run {number}: {args.output}", data=Fetch(config, number))


def run(args: argparse.Namespace, plan: Plan) -> Result:
    config, number, out = plan.data.config, plan.data.run, plan.output
    for d in (fs.join(out, WARC_DIR), fs.join(out, PARTS_DIR), fs.join(out, RUNS_DIR)):
        fs.makedirs(d)
    previous = resume.prepare_resume(out)
    fs.write_json(fs.join(out, RUNS_DIR, f"r{number:04d}.json"),
                  {"run": number, "started_at": plan.started_at, "config": _config_dict(config.crawl)})

    with beam.Pipeline(options=pipeline_options(args, STAGE)) as p:
        build_pipeline(p, config, number, previous)
    result = p.result
    resume.swap_in_log(out, previous)
    return Result(counters=stats.collect_counters(result, STAGE),
                  config={"links": args.links, "run": number, **_config_dict(config.crawl)},
                  extra={"outcomes": resume.summarize(out)})


def funnel(written: dict) -> list[tuple[str, int]]:
    """Links per outcome in the whole log (all runs): fetched first, then each error class."""
    totals = written["outcomes"]
    order = ["links", FETCHED] + sorted(k for k in totals if k not in ("links", FETCHED))
    return [(k, totals.get(k, 0)) for k in order]


def _config_dict(config: CrawlConfig) -> dict:
    d = dataclasses.asdict(config)
    d["client"]["resolve"] = [list(x) for x in d["client"]["resolve"]]
    return d


def main(args: argparse.Namespace) -> int:
    return run_command(STAGE, args, check, run, funnel)
