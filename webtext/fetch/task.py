"""One host group of `webtext fetch`, as a local process runs it (`beam.PoolMap` hands it the groups): crawl
the group's links, commit its WARC files, write its log part. Imports no Beam, so neither do those processes."""

from __future__ import annotations

from webtext.fetch.crawler import CrawlConfig, GroupCrawler, RedirectFilter, WarcSink
from webtext.fetch.http import HttpClient
from webtext.fetch.schema import LOG_SCHEMA, PARTS_DIR, STAGE, log_sort_key, warc_prefix
from webtext.runtime import datasets, fs, progress, stats


def fetch_group(task, config: CrawlConfig, output_dir: str, run: int,
                link_filter: RedirectFilter) -> tuple[list, list, dict]:
    """Fetch one host group with a thread pool: (log rows, no errors, counts). Its WARC files and its log
    part are committed together (in a local process, see `beam.PoolMap`)."""
    group, links = task
    counts, count = stats.dict_counter()
    links = sorted(links, key=lambda r: (r["host"], r.get("key") or "", r["url"]))
    prefix = warc_prefix(run, group)
    sink = WarcSink(output_dir, prefix, config.warc_max_bytes, config.warc_gzip_level)
    client = HttpClient(config.client)
    crawler = GroupCrawler(client, config, count, link_filter, seed=datasets.stable_hash((run, group)))
    try:
        rows = crawler.crawl(links, sink, run, on_progress=lambda n: progress.tick(STAGE, n))
        sink.commit()
    except BaseException:
        sink.abort()
        raise
    finally:
        client.close()
        progress.flush()
    rows.sort(key=log_sort_key)
    # WARC files first, then the rows that point into them: a kill in between leaves unreferenced
    # records, never rows pointing at nothing.
    fs.write_atomic(fs.join(output_dir, PARTS_DIR, f"{prefix}.parquet"), datasets.table_bytes(rows, LOG_SCHEMA))
    counts["groups_done"] += 1
    return rows, [], dict(counts)
