"""Test helpers for the extract stage: real pages from ../shared, written into real WARC files and a fetch log
laid out as the fetch stage writes them (dataset `log`, WARC paths relative to the fetch directory)."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from pathlib import Path

from conftest import shared_path

from webtext.fetch.schema import LOG_SCHEMA
from webtext.links import urls
from webtext.runtime import datasets, stats, warc

EVAL_DIR = ("web", "trafilatura-eval")


def eval_pages(limit: int | None = None) -> list[dict]:
    """The trafilatura evaluation pages that exist on disk, sorted by file name: {url, file, body, with,
    without}. `limit` takes an evenly spread subset, so a small run still mixes sites and languages.
    A few entries are keyed by a label ("hard::site-name.html") or an odd scheme instead of a URL: they get
    the URL http://eval.invalid/FILE, since a page needs a URL to be crawled; spaces in URLs are percent-encoded,
    as a crawler sends them (a WARC-Target-URI cannot hold a space)."""
    root = shared_path(*EVAL_DIR)
    gold = json.loads((root / "evaldata.json").read_text(encoding="utf-8"))
    pages = []
    for url, item in sorted(gold.items(), key=lambda kv: kv[1]["file"]):
        path = root / (item["file"] + ".gz")
        if path.exists():
            if not url.startswith(("http://", "https://")):
                url = f"http://eval.invalid/{item['file']}"
            url = url.replace(" ", "%20")
            pages.append({"url": url, "file": item["file"], "path": path,
                          "with": item.get("with") or [], "without": item.get("without") or []})
    if limit is not None and limit < len(pages):
        step = len(pages) / limit
        pages = [pages[int(i * step)] for i in range(limit)]
    for p in pages:
        p["body"] = gzip.decompress(p.pop("path").read_bytes())
    return pages


def slow_page() -> str:
    """A page trafilatura spends seconds on: 60,000 short paragraphs, 1.85 MB (under the 2 MB cut), ~5 s
    on the 2-core dev machine, so well past a test's 1.5 s deadline on a faster one too."""
    return "<html><body>" + "".join(f"<p>Line {i}, short words.</p>" for i in range(60_000)) + "</body></html>"


def run_extract(output: Path, *flags, expect: int = 0) -> tuple[int, dict | None]:
    """`webtext extract --output OUTPUT FLAGS...` as the command line runs it, which must end with status
    `expect`: its exit status and the `_stats.json` it wrote."""
    from webtext import cli

    status = cli.main(["extract", "--output", str(output), *map(str, flags)])
    assert status == expect, f"webtext extract exited {status}, expected {expect}"
    return status, stats.read_stats(str(output))


def write_warc(path: Path, pages: list[dict]) -> list[warc.RecordLocation]:
    """Each page {url, body, content_type?, status?} as a request/response pair, like the fetcher."""
    locations = []
    with open(path, "wb") as f:
        writer = warc.RecordWriter(f, path.name)
        for p in pages:
            headers = [("Content-Type", p.get("content_type", "text/html"))]
            locations.append(writer.write_exchange(
                p["url"], request_headers=[("Host", urls.host_of(p["url"]))], status=p.get("status", 200),
                reason="OK", response_headers=headers, body=p["body"], date="2026-11-25T12:00:00Z"))
    return locations


def write_fetch_dir(fetch_dir: Path, pages: list[dict], not_fetched: list[str] = ()) -> list[dict]:
    """A fetch output directory: `warc/part-0.warc.gz` holding `pages`, and the `log` dataset with one row per
    page (charset and content type as given, else utf-8 and text/html) plus a failed row per `not_fetched`
    URL. Page keys: url, body, and optionally content_type, charset, status, score, subreddits, and
    offset_of (the index of another page whose record offset to log: a wrong offset on purpose). Returns the
    log rows."""
    (fetch_dir / "warc").mkdir(parents=True, exist_ok=True)
    locations = write_warc(fetch_dir / "warc" / "part-0.warc.gz", pages)
    rows = []
    for i, (p, loc) in enumerate(zip(pages, locations)):
        parsed = urls.parse_url(p["url"])
        rows.append(_log_row(
            url=p["url"], key=parsed.key, host=parsed.host, final_url=p["url"], status=p.get("status", 200),
            bytes=len(p["body"]), content_type=p.get("content_type", "text/html"),
            charset=p.get("charset", "utf-8"), charset_source="header", warc_file="warc/part-0.warc.gz",
            warc_offset=locations[p.get("offset_of", i)].offset, warc_length=loc.length, payload_digest=loc.digest,
            score=p.get("score", 3 + i), num_submissions=1, subreddits=p.get("subreddits", ["programming"]),
            first_created_utc=1_400_000_000 + i))
    for url in not_fetched:
        parsed = urls.parse_url(url)
        rows.append(_log_row(url=url, key=parsed.key, host=parsed.host, error="connect",
                             error_detail="connection refused", score=5, num_submissions=1, subreddits=["news"],
                             first_created_utc=1_300_000_000))
    (fetch_dir / datasets.shard_name("log", 0, 1)).write_bytes(datasets.table_bytes(rows, LOG_SCHEMA))
    return rows


def _log_row(**values) -> dict:
    row = {f.name: None for f in LOG_SCHEMA}
    row.update({"attempts": 1, "elapsed_s": 0.1, "fetched_at": "2026-11-25T12:00:00Z"})
    row.update(values)
    return row


def expected_doc_id(url: str) -> str:
    return hashlib.sha256(urls.normalize_url(url).encode("utf-8")).hexdigest()[:32]


def dataset_bytes(directory: Path, name: str) -> list[bytes]:
    return [open(p, "rb").read() for p in datasets.shard_paths(str(directory), name)]


def snippet_scores(texts: dict[str, str | None], pages: list[dict]) -> tuple[float, float]:
    """(share of `with` snippets found, share of `without` snippets avoided) over `pages`, texts by URL."""
    found = total_with = avoided = total_without = 0
    for p in pages:
        text = texts.get(p["url"]) or ""
        found += sum(s in text for s in p["with"])
        total_with += len(p["with"])
        avoided += sum(s not in text for s in p["without"])
        total_without += len(p["without"])
    return found / max(1, total_with), avoided / max(1, total_without)


def cpu_count() -> int:
    return os.cpu_count() or 1
