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
import math
import posixpath
import re
import sys

import apache_beam as beam
import pyarrow.parquet as pq

from webtext.runtime import datasets, fs, pool, progress, stats, warc
from webtext.runtime.beam import (PoolMap, ReadDataset, UnpackResults, WriteDataset, add_runner_arguments,
                                    local_processes, pipeline_options)
from webtext.fetch.crawler import (BACKOFF_S, CONCURRENCY, HOST_DELAY_S, LOG_SCHEMA, MAX_CRAWL_DELAY_S,
                                      MAX_RETRY_AFTER_S, PARTS_DIR, PER_HOST, RETRIES, STAGE, WARC_DIR,
                                      WARC_GZIP_LEVEL, WARC_MAX_BYTES, CrawlConfig, RedirectFilter, fetch_group,
                                      log_sort_key, warm_up)
from webtext.runtime.errors import ERRORS, ERRORS_SCHEMA, error_row, error_sort_key
from webtext.fetch.http import (CONNECT_TIMEOUT_S, DEFAULT_USER_AGENT, DNS_TIMEOUT_S, MAX_BYTES, MAX_REDIRECTS,
                                   READ_TIMEOUT_S, TOTAL_TIMEOUT_S, AddressPolicy, ClientConfig,
                                   parse_resolve_overrides)

LOG = "log"
LINKS = "links"
HOSTS_PER_GROUP = 256        # hosts fetched by one worker call: enough to keep `--concurrency` threads busy
LOG_ROWS_PER_SHARD = 500_000
STAGING_DIR = "_staging"     # the new log, written whole before it replaces the old one
RESUME_DIR = "_resume"       # a staging log left by a run killed while swapping logs
RUNS_DIR = "_runs"           # one marker per run: the run number names its WARC files

EXAMPLE = """\
  webtext fetch --links out/links --output out/fetch
  webtext fetch --links out/links --output out/fetch --per-host 2 --host-delay 0.5 --concurrency 128
  # a test web on loopback, its *.test names served by 127.0.0.1:
  webtext fetch --links out/links --output out/fetch --resolve '*.test=127.0.0.1' --allow-network 127.0.0.1/32
"""

LINK_FIELDS = ("score", "num_submissions", "subreddits", "first_created_utc")


# ---------------------------------------------------------------------------------------------------------
# Pure logic

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


def check_link(link: dict) -> str | None:
    url = link.get("url")
    if not isinstance(url, str) or not url.strip():
        return "no url"
    if not link.get("host"):
        return "no host"
    return None


# ---------------------------------------------------------------------------------------------------------
# Beam

class CheckLinks(beam.DoFn):
    """Links that cannot be fetched at all get their log row (bad_url) and an errors row here."""

    def __init__(self):
        self.count = stats.BeamCounters(STAGE)

    def process(self, link):
        self.count("links_in")
        why = check_link(link)
        if why is None:
            yield link
            return
        self.count("bad_links")
        progress.tick(STAGE)
        row = {f.name: None for f in LOG_SCHEMA}
        row.update(url=link.get("url") if isinstance(link.get("url"), str) else None, key=link.get("key"),
                   host=link.get("host"), error="bad_url", error_detail=why, transient=False, attempts=0,
                   **{f: link.get(f) for f in LINK_FIELDS})
        yield beam.pvalue.TaggedOutput("logged", row)
        yield beam.pvalue.TaggedOutput("errors", error_row(STAGE, str(link.get("url")), None, "bad_link", why,
                                                           repr(link)))


class PlanLinks(beam.DoFn):
    def __init__(self):
        self.count = stats.BeamCounters(STAGE)

    def process(self, element):
        _, grouped = element
        links = sorted(grouped["link"], key=lambda r: repr(sorted(r.items())))
        for action, row in plan_link(links, list(grouped["prev"]), self.count):
            if action == "fetch":
                yield row
            else:
                progress.tick(STAGE)
                yield beam.pvalue.TaggedOutput("logged", row)


def num_host_groups(hosts: int, hosts_per_group: int, processes: int = 1) -> int:
    """Host groups for `hosts` hosts: groups of at most `hosts_per_group`, and at least one per local process
    (while there are hosts), so a crawl of fewer hosts than one group still keeps every process busy. Each
    group keeps its hosts' politeness, and the records of a page do not depend on its group (only the WARC
    file that holds them does)."""
    return max(1, math.ceil(hosts / hosts_per_group), min(processes, hosts))


def group_of(host: str, num_groups: int) -> int:
    return datasets.stable_hash(host or "") % num_groups


def _read_log_file(path: str):
    with fs.open_read(path) as f:
        table = pq.read_table(f)
    for row in table.to_pylist():
        yield {f.name: row.get(f.name) for f in LOG_SCHEMA}


def build_pipeline(p, links_dir: str, output_dir: str, previous_files: list[str], config: CrawlConfig,
                   run: int, hosts_per_group: int = HOSTS_PER_GROUP, rows_per_shard: int = LOG_ROWS_PER_SHARD,
                   processes: int = 1):
    """`processes`: local processes that fetch host groups side by side (each with its own threads)."""
    links = p | "ReadLinks" >> ReadDataset(links_dir, LINKS)
    checked = links | "CheckLinks" >> beam.ParDo(CheckLinks()).with_outputs("logged", "errors", main="ok")
    ident = lambda r: (r.get("key") or "", r["url"])  # noqa: E731
    keyed_links = checked.ok | "KeyLinks" >> beam.Map(lambda r: (ident(r), r))
    if previous_files:
        prev = (p | "PreviousFiles" >> beam.Create(sorted(previous_files))
                | "ReadPrevious" >> beam.FlatMap(_read_log_file)
                | "KeyPrevious" >> beam.Map(lambda r: (ident(r), r)))
    else:
        prev = p | "NoPrevious" >> beam.Create([])
    planned = ({"link": keyed_links, "prev": prev}
               | "JoinPrevious" >> beam.CoGroupByKey()
               | "Plan" >> beam.ParDo(PlanLinks()).with_outputs("logged", main="fetch"))
    to_fetch = planned.fetch
    num_groups = (to_fetch
                  | "Hosts" >> beam.Map(lambda r: r["host"])
                  | "DistinctHosts" >> beam.Distinct()
                  | "CountHosts" >> beam.combiners.Count.Globally()
                  | "NumGroups" >> beam.Map(num_host_groups, hosts_per_group, processes))
    fetched = (to_fetch
               | "KeyByHostGroup" >> beam.Map(lambda r, n: (group_of(r["host"], n), r),
                                              n=beam.pvalue.AsSingleton(num_groups))
               | "GroupByHostGroup" >> beam.GroupByKey()
               | "AsLists" >> beam.MapTuple(lambda group, links: (group, list(links)))
               | "Fetch" >> PoolMap(fetch_group, processes, config, output_dir, run,
                                    RedirectFilter.from_links_dir(links_dir))
               | "Unpack" >> beam.ParDo(UnpackResults(stats.BeamCounters(STAGE))))
    _ = ((fetched, planned.logged, checked.logged)
         | "AllRows" >> beam.Flatten()
         | WriteDataset(fs.join(output_dir, STAGING_DIR), LOG, LOG_SCHEMA, log_sort_key, rows_per_shard))
    _ = checked.errors | WriteDataset(output_dir, ERRORS, ERRORS_SCHEMA, error_sort_key)


# ---------------------------------------------------------------------------------------------------------
# Resume bookkeeping around the pipeline

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


# ---------------------------------------------------------------------------------------------------------
# CLI

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
    g.add_argument("--warc-gzip-level", type=int, default=WARC_GZIP_LEVEL, choices=warc.GZIP_LEVELS, metavar="0-3",
                   help=f"ISA-L gzip level of WARC records, 3 = smallest (default: {WARC_GZIP_LEVEL})")
    g.add_argument("--rows-per-shard", type=int, default=LOG_ROWS_PER_SHARD,
                   help=f"log rows per Parquet shard (default: {LOG_ROWS_PER_SHARD})")
    add_runner_arguments(parser)


def config_from_args(args: argparse.Namespace) -> CrawlConfig:
    client = ClientConfig(user_agent=args.user_agent, connect_timeout=args.connect_timeout,
                          read_timeout=args.read_timeout, total_timeout=args.timeout, dns_timeout=args.dns_timeout,
                          max_bytes=args.max_bytes, allow_text_plain=args.allow_text_plain,
                          allow_networks=tuple(args.allow_network), resolve=parse_resolve_overrides(args.resolve))
    return CrawlConfig(client=client, per_host=args.per_host, host_delay=args.host_delay,
                       concurrency=args.concurrency, robots=not args.no_robots,
                       max_crawl_delay=args.max_crawl_delay, retries=args.retries, backoff=args.backoff,
                       max_retry_after=args.max_retry_after, max_redirects=args.max_redirects,
                       warc_max_bytes=args.warc_max_bytes, warc_gzip_level=args.warc_gzip_level)


def count_links(links_dir: str) -> int:
    """Rows of the links dataset, from the Parquet footers alone."""
    total = 0
    for path in datasets.shard_paths(links_dir, LINKS):
        with fs.open_read(path) as f:
            total += pq.ParquetFile(f).metadata.num_rows
    return total


def summarize(output_dir: str) -> dict[str, int]:
    """Links per outcome in the whole log (all runs)."""
    table = datasets.read_table(output_dir, LOG, columns=["error"])
    counts: dict[str, int] = {"links": table.num_rows}
    for value in table.column("error").to_pylist():
        name = "fetched" if value is None else value
        counts[name] = counts.get(name, 0) + 1
    return counts


def graph(p: beam.Pipeline, args: argparse.Namespace) -> None:
    """The stage's pipeline, built from its flags without touching any output (`webtext build --dry-run`):
    the graph of a first run, with no earlier log to resume from."""
    build_pipeline(p, args.links, args.output, [], config_from_args(args), 1, args.hosts_per_group,
                   args.rows_per_shard, local_processes(args))


def main(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
        AddressPolicy.from_cidrs(config.client.allow_networks)  # a bad CIDR fails here, not in a worker
        if config.per_host < 1 or config.concurrency < 1 or args.hosts_per_group < 1:
            raise ValueError("--per-host, --concurrency and --hosts-per-group must be at least 1")
        if not datasets.shard_paths(args.links, LINKS):
            raise FileNotFoundError(f"{args.links}: no links dataset ({LINKS}-*.parquet); run `webtext links`")
    except (ValueError, FileNotFoundError) as e:
        print(f"webtext fetch: error: {e}", file=sys.stderr)
        return 2
    out = args.output
    timer = stats.begin_stage(out)  # the log is kept: rerunning resumes from it
    for d in (fs.join(out, WARC_DIR), fs.join(out, PARTS_DIR), fs.join(out, RUNS_DIR)):
        fs.makedirs(d)
    previous = prepare_resume(out)
    run = next_run(out)
    fs.write_json(fs.join(out, RUNS_DIR, f"r{run:04d}.json"),
                  {"run": run, "started_at": timer.started_at, "config": _config_dict(config)})
    datasets.remove_dataset(out, ERRORS)
    datasets.remove_dataset(fs.join(out, STAGING_DIR), LOG)

    # The local processes import the crawler while this one builds the pipeline and reads the links.
    pool.prestart(local_processes(args), warm_up)
    with progress.Progress(STAGE, total=count_links(args.links), unit="links"):
        with beam.Pipeline(options=pipeline_options(args, STAGE)) as p:
            build_pipeline(p, args.links, out, previous, config, run, args.hosts_per_group, args.rows_per_shard,
                           local_processes(args))
    result = p.result
    swap_in_log(out, previous)
    counters = stats.collect_counters(result, STAGE)
    totals = summarize(out)
    stats.write_stats(out, STAGE, {"links": args.links, "run": run, **_config_dict(config)}, counters, timer,
                      outcomes=totals)
    order = ["links", "fetched"] + sorted(k for k in totals if k not in ("links", "fetched"))
    stats.print_funnel(f"fetch run {run}: {out}", [(k, totals.get(k, 0)) for k in order])
    return 0


def _config_dict(config: CrawlConfig) -> dict:
    d = dataclasses.asdict(config)
    d["client"]["resolve"] = [list(x) for x in d["client"]["resolve"]]
    return d
