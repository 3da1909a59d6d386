"""The Beam graph of `webtext fetch`: check the links, join them with the log rows of earlier runs (resume),
group the links to fetch by host, fetch the groups in local processes (`task.fetch_group`), and write the new
log (to the staging directory: `resume.swap_in_log` puts it in place) and the errors."""

from __future__ import annotations

import argparse
import dataclasses
import math

import apache_beam as beam

from webtext.fetch import resume
from webtext.fetch.crawler import CrawlConfig, RedirectFilter
from webtext.fetch.http import AddressPolicy, ClientConfig, parse_resolve_overrides
from webtext.fetch.schema import BAD_LINK, LINK_FIELDS, LINKS, LOG, LOG_SCHEMA, STAGE, STAGING_DIR, log_sort_key
from webtext.fetch.task import fetch_group
from webtext.runtime import datasets, fs, progress, stats
from webtext.runtime.beam import PoolMap, ReadDataset, UnpackResults, WriteDataset, local_processes
from webtext.runtime.errors import ERRORS, ERRORS_SCHEMA, error_row, error_sort_key

HOSTS_PER_GROUP = 256        # hosts fetched by one worker call: enough to keep `--concurrency` threads busy
LOG_ROWS_PER_SHARD = 500_000


@dataclasses.dataclass(frozen=True)
class FetchConfig:
    """The stage's settings: where it reads and writes, the crawl, how links are grouped and the log sharded."""
    links: str
    output: str
    crawl: CrawlConfig = CrawlConfig()
    hosts_per_group: int = HOSTS_PER_GROUP
    rows_per_shard: int = LOG_ROWS_PER_SHARD
    processes: int = 1       # local processes that fetch host groups side by side (each with its own threads)

    def __post_init__(self):
        if self.hosts_per_group < 1:
            raise ValueError("--hosts-per-group must be at least 1")
        try:  # a bad range fails here, before the run, not in a worker
            AddressPolicy.from_cidrs(self.crawl.client.allow_networks)
        except ValueError as e:
            raise ValueError(f"--allow-network: {e}") from None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> FetchConfig:
        client = ClientConfig(user_agent=args.user_agent, connect_timeout=args.connect_timeout,
                              read_timeout=args.read_timeout, total_timeout=args.timeout,
                              dns_timeout=args.dns_timeout, max_bytes=args.max_bytes,
                              allow_text_plain=args.allow_text_plain, allow_networks=tuple(args.allow_network),
                              resolve=parse_resolve_overrides(args.resolve))
        crawl = CrawlConfig(client=client, per_host=args.per_host, host_delay=args.host_delay,
                            concurrency=args.concurrency, robots=not args.no_robots,
                            max_crawl_delay=args.max_crawl_delay, retries=args.retries, backoff=args.backoff,
                            max_retry_after=args.max_retry_after, max_redirects=args.max_redirects,
                            warc_max_bytes=args.warc_max_bytes, warc_gzip_level=args.warc_gzip_level)
        return cls(args.links, args.output, crawl, args.hosts_per_group, args.rows_per_shard, local_processes(args))


def check_link(link: dict) -> str | None:
    """Why a links row cannot be fetched at all, or None."""
    url = link.get("url")
    if not isinstance(url, str) or not url.strip():
        return "no url"
    if not link.get("host"):
        return "no host"
    return None


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
        yield beam.pvalue.TaggedOutput("errors", error_row(STAGE, str(link.get("url")), None, BAD_LINK, why,
                                                           repr(link)))


class PlanLinks(beam.DoFn):
    """A link joined with its earlier log rows: kept as logged (tagged `logged`) or fetched (`resume.plan_link`)."""

    def __init__(self):
        self.count = stats.BeamCounters(STAGE)

    def process(self, element):
        _, grouped = element
        links = sorted(grouped["link"], key=lambda r: repr(sorted(r.items())))
        for action, row in resume.plan_link(links, list(grouped["prev"]), self.count):
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


def build_pipeline(p, config: FetchConfig, run: int, previous_files: list[str]) -> None:
    """Run `run`'s graph; `previous_files` hold the log rows of earlier runs (`resume.prepare_resume`)."""
    links = p | "ReadLinks" >> ReadDataset(config.links, LINKS)
    checked = links | "CheckLinks" >> beam.ParDo(CheckLinks()).with_outputs("logged", "errors", main="ok")
    ident = lambda r: (r.get("key") or "", r["url"])  # noqa: E731
    keyed_links = checked.ok | "KeyLinks" >> beam.Map(lambda r: (ident(r), r))
    if previous_files:
        prev = (p | "PreviousFiles" >> beam.Create(sorted(previous_files))
                | "ReadPrevious" >> beam.FlatMap(resume.read_log_file)
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
                  | "NumGroups" >> beam.Map(num_host_groups, config.hosts_per_group, config.processes))
    fetched = (to_fetch
               | "KeyByHostGroup" >> beam.Map(lambda r, n: (group_of(r["host"], n), r),
                                              n=beam.pvalue.AsSingleton(num_groups))
               | "GroupByHostGroup" >> beam.GroupByKey()
               | "AsLists" >> beam.MapTuple(lambda group, links: (group, list(links)))
               | "Fetch" >> PoolMap(fetch_group, config.processes, config.crawl, config.output, run,
                                    RedirectFilter.from_links_dir(config.links))
               | "Unpack" >> beam.ParDo(UnpackResults(stats.BeamCounters(STAGE))))
    _ = ((fetched, planned.logged, checked.logged)
         | "AllRows" >> beam.Flatten()
         | WriteDataset(fs.join(config.output, STAGING_DIR), LOG, LOG_SCHEMA, log_sort_key, config.rows_per_shard))
    _ = checked.errors | WriteDataset(config.output, ERRORS, ERRORS_SCHEMA, error_sort_key)


def graph(p: beam.Pipeline, args: argparse.Namespace) -> None:
    """The stage's pipeline, built from its flags without touching any output (`webtext build --dry-run`):
    the graph of a first run, with no earlier log to resume from."""
    build_pipeline(p, FetchConfig.from_args(args), 1, [])
