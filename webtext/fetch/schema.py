"""What `webtext fetch` writes: the fetch log (one row per link, every run) and its error classes, the reason
of its rows in the shared errors dataset (`webtext.runtime.errors`), and the layout of its output directory
(docs/formats.md, Fetch)."""

from __future__ import annotations

import pyarrow as pa

from webtext.links.schema import LINKS  # noqa: F401  (the dataset it reads)

STAGE = "fetch"
LOG = "log"                  # the fetch log
LINK_FIELDS = ("score", "num_submissions", "subreddits", "first_created_utc")  # passed through from the link

# Its output directory, besides `log-*.parquet` and `errors-*.parquet`.
WARC_DIR = "warc"            # the WARC files, named by `warc_prefix`
PARTS_DIR = "_parts"         # each finished host group's log rows, so a killed run keeps its work
STAGING_DIR = "_staging"     # the new log, written whole before it replaces the old one
RESUME_DIR = "_resume"       # a staging log left by a run killed while swapping logs
RUNS_DIR = "_runs"           # one marker per run: the run number names its WARC files

LOG_SCHEMA = pa.schema([
    pa.field("url", pa.string()),
    pa.field("key", pa.string()),
    pa.field("host", pa.string()),
    pa.field("final_url", pa.string()),
    pa.field("status", pa.int32()),
    pa.field("error", pa.string()),
    pa.field("error_detail", pa.string()),
    pa.field("transient", pa.bool_()),
    pa.field("attempts", pa.int32()),
    pa.field("redirects", pa.int32()),
    pa.field("bytes", pa.int64()),
    pa.field("content_type", pa.string()),
    pa.field("charset", pa.string()),
    pa.field("charset_source", pa.string()),
    pa.field("elapsed_s", pa.float64()),
    pa.field("fetched_at", pa.string()),
    pa.field("warc_file", pa.string()),
    pa.field("warc_offset", pa.int64()),
    pa.field("warc_length", pa.int64()),
    pa.field("payload_digest", pa.string()),
    pa.field("ip", pa.string()),
    pa.field("run", pa.int32()),
    pa.field("score", pa.int64()),
    pa.field("num_submissions", pa.int64()),
    pa.field("subreddits", pa.list_(pa.string())),
    pa.field("first_created_utc", pa.int64()),
])


def log_sort_key(row: dict):
    return (row["key"] or "", row["url"] or "")


# The closed set of the log's `error` classes (null: fetched and stored).
LOG_ERRORS = (
    "bad_url",          # unparseable, unsupported scheme, no host
    "filtered",         # a redirect target the link filters reject (extension, Wikipedia, ...)
    "dns",              # name does not resolve (transient when the resolver timed out or failed temporarily)
    "blocked_address",  # every address of the host is loopback/private/link-local/... (SSRF guard)
    "connect",          # refused, unreachable (transient)
    "tls",              # handshake or certificate failure
    "timeout",          # connect, idle or total deadline (transient)
    "reset",            # connection reset or closed early, mid-headers or mid-body (transient)
    "protocol",         # not a valid HTTP response
    "robots",           # robots.txt disallows (or its server failed: RFC 9309 says disallow; transient then)
    "crawl_delay",      # the host's Crawl-delay exceeds --max-crawl-delay
    "redirects",        # more than MAX_REDIRECTS hops, a loop, or a redirect without a usable Location
    "http_4xx",         # 4xx status (transient for 408 and 429)
    "http_5xx",         # 5xx status (transient for 500, 502, 503, 504)
    "http_other",       # 1xx/3xx without a redirect, or a status outside 100-599
    "too_large",        # Content-Length or decoded body above --max-bytes
    "content_type",     # not HTML (or text/plain when allowed), by header or by sniffing
    "decode",           # a broken or unsupported Content-Encoding
    "internal",         # a bug in the fetcher; the detail has the exception
)
FETCHED = "fetched"          # the outcome of a link logged without an error (`_stats.json` outcomes)

# The errors dataset's reason: a links row that cannot be fetched at all (it is logged as bad_url too).
BAD_LINK = "bad_link"


def warc_prefix(run: int, group: int) -> str:
    """The name of a host group's WARC files (`-PPPPP.warc.gz` added) and of its log part (`.parquet`)."""
    return f"webtext-r{run:04d}-g{group:05d}"
