"""Fetched pages (or any WARC files) -> documents: main text by trafilatura, sandboxed, then cleaned.

`--fetch DIR` reads the fetch stage's log and WARC files and decodes each page with the charset the fetch
stage decided; `--warc GLOB` reads any WARC files (Common Crawl, ClueWeb, ...) and decides the charset
itself (BOM, then Content-Type, then <meta>, then a detector). trafilatura runs in a pool of killable child
processes with a per-page deadline (webtext/extract/sandbox.py): comments excluded, no cross-page
deduplication, title and date kept. The text then goes through the cleaning filters
(webtext/extract/filters.py). Output: the dataset `documents` (one row per page, id from the normalised
URL, carrying the link's Reddit metadata) and `errors` (pages that could not be read or extracted, with the
reason); every skip and drop is counted in `_stats.json`.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from typing import Iterator

import apache_beam as beam
import pyarrow as pa
from apache_beam.transforms.window import GlobalWindows

from webtext.runtime import datasets, fs, progress, stats, warc
from webtext.links import urls
from webtext.runtime.beam import ReadDataset, WriteDataset, is_direct, local_processes, pipeline_options
from webtext.runtime.errors import ERRORS, ERRORS_SCHEMA, error_row, error_sort_key
from webtext.extract.filters import (FILTERS, MAX_WORDS, MIN_WORDS, FilterConfig, clean_document,
                                      load_language_identifier)
from webtext.extract.sandbox import (FAVOR, MAX_HTML_CHARS, MEMORY_MB, RECYCLE_AFTER, TIMEOUT_S,
                                      ExtractorPool, ExtractSettings, SandboxConfig, start_fork_server)

STAGE = "extract"
DOCUMENTS = "documents"
FETCH_LOG = "log"
ROWS_PER_SHARD = 50_000          # WriteDataset: keeps a shard's sort in the low hundreds of MB
MAX_HTML_BYTES = MAX_HTML_CHARS  # body bytes read per page; the rest is cut before decoding (counted)
SNIFF_BYTES = 1024               # body prefix checked for binary signatures
READ_SPAN_BYTES = 64 * 1024 * 1024  # a WARC file is read in spans this long: the unit of parallel work
OK_STATUSES = range(200, 300)

# The `reason` column of the errors dataset.
ERROR_REASONS = ("warc_damaged", "warc_missing", "warc_mismatch", "bad_url", "binary", "blank_page",
                 "extract_timeout", "extract_crash", "extract_memory", "extract_error", "extract_empty")

EXAMPLE = """\
  webtext extract --fetch out/fetch --output out/documents
  webtext extract --warc '../shared/data/warc/*.warc.gz' --output /tmp/cc-documents --workers 1 --languages en,ru
"""

DOCUMENTS_SCHEMA = pa.schema([
    pa.field("doc_id", pa.string(), nullable=False),
    pa.field("url", pa.string(), nullable=False),
    pa.field("key", pa.string(), nullable=False),
    pa.field("host", pa.string(), nullable=False),
    pa.field("title", pa.string()),
    pa.field("date", pa.string()),
    pa.field("text", pa.string(), nullable=False),
    pa.field("language", pa.string()),
    pa.field("chars", pa.int64(), nullable=False),
    pa.field("words", pa.int64(), nullable=False),
    pa.field("score", pa.int64()),
    pa.field("num_submissions", pa.int64()),
    pa.field("subreddits", pa.list_(pa.string()), nullable=False),
    pa.field("first_created_utc", pa.int64()),
    pa.field("payload_digest", pa.string(), nullable=False),
])

_LINK_FIELDS = ("score", "num_submissions", "subreddits", "first_created_utc")


def doc_id(key: str) -> str:
    """The document id: first 16 bytes of sha256 of the normalised URL key, in hex."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


def doc_sort_key(row: dict) -> str:
    return row["doc_id"]


# -- pages: plain functions

def cap_body(body: bytes, max_bytes: int, count) -> tuple[bytes, bool]:
    if len(body) > max_bytes:
        count("html_truncated")
        return body[:max_bytes], True
    return body, False


def decode_body(body: bytes, charset: str | None, content_type: str | None) -> str:
    """The page as text: with the charset the fetch stage recorded, else (or if Python does not know it)
    with the charset decided here exactly as the fetch stage decides it."""
    from webtext.fetch.http import decide_charset

    if charset:
        try:
            return body.decode(charset, errors="replace")
        except LookupError:
            pass
    return body.decode(decide_charset(content_type, body)[0], errors="replace")


def html_problem(body: bytes, content_type: str | None) -> str | None:
    """Why this body is not an HTML page to extract ("not_html", "binary", "blank_page"), or None."""
    from webtext.fetch.http import HTML_TYPES, binary_signature, looks_like_html, media_type

    mt = media_type(content_type)
    if mt and mt not in HTML_TYPES and not (mt in ("text/plain", "application/octet-stream")
                                            and looks_like_html(body[:SNIFF_BYTES])):
        return "not_html"
    if binary_signature(body[:SNIFF_BYTES]):
        return "binary"
    if not body.strip():
        return "blank_page"
    return None


def page(url: str, key: str, host: str, html: str, payload_digest: str, source: str, offset: int | None,
         link: dict | None = None) -> dict:
    """One page on its way to extraction: the document's identity and link metadata, and its HTML."""
    link = link or {}
    return {"url": url, "key": key, "host": host, "html": html, "payload_digest": payload_digest,
            "source": source, "offset": offset, "score": link.get("score"),
            "num_submissions": link.get("num_submissions"), "subreddits": list(link.get("subreddits") or []),
            "first_created_utc": link.get("first_created_utc")}


def document_row(pg: dict, text: str, chars: int, words: int, language: str | None, title: str | None,
                 date: str | None) -> dict:
    return {"doc_id": doc_id(pg["key"]), "url": pg["url"], "key": pg["key"], "host": pg["host"],
            "title": title, "date": date, "text": text, "language": language, "chars": chars, "words": words,
            "score": pg["score"], "num_submissions": pg["num_submissions"], "subreddits": pg["subreddits"],
            "first_created_utc": pg["first_created_utc"], "payload_digest": pg["payload_digest"]}


def skip_or_error(pg_url: str, source: str, offset: int | None, problem: str, count) -> Iterator:
    """Count a page that is not extracted; problems other than "not_html" also get an errors row."""
    if problem == "not_html":
        count("skipped_not_html")
        return
    count(f"error_{problem}")
    yield beam.pvalue.TaggedOutput(ERRORS, error_row(STAGE, pg_url, None, problem, f"{source} @ {offset}"))


# -- reading

class _ReadFetchedPages(beam.DoFn):
    """((warc_file, span), log rows) -> pages, reading the span's records in offset order."""

    def __init__(self, fetch_dir: str, max_bytes: int):
        self.fetch_dir, self.max_bytes = fetch_dir, max_bytes

    def setup(self):
        self.count = stats.BeamCounters(STAGE)

    def process(self, element):
        (warc_file, _), rows = element
        path = fs.join(self.fetch_dir, warc_file)
        rows = sorted(rows, key=lambda r: r["warc_offset"])
        try:
            stream = fs.open_read(path)
        except Exception as e:  # a missing file must not end the run: every page in it is an error
            for row in rows:
                self.count("error_warc_missing")
                yield beam.pvalue.TaggedOutput(ERRORS, error_row(STAGE, row["url"], None, "warc_missing",
                                                                 f"{path}: {type(e).__name__}: {e}"))
            return
        with stream:
            for row in rows:
                yield from self._page(stream, path, row)

    def _page(self, stream, path: str, row: dict):
        self.count("pages_in")
        try:
            stream.seek(row["warc_offset"])
            response = warc.read_response_at(stream, path, max_body=self.max_bytes + 1)
        except (warc.WarcReadError, OSError) as e:
            self.count("error_warc_damaged")
            yield beam.pvalue.TaggedOutput(ERRORS, error_row(STAGE, path, row["warc_offset"], "warc_damaged",
                                                             f"{row['url']}: {e}"))
            return
        if response.url not in (row["url"], row.get("final_url")):
            self.count("error_warc_mismatch")
            yield beam.pvalue.TaggedOutput(ERRORS, error_row(
                STAGE, path, row["warc_offset"], "warc_mismatch",
                f"log says {row['url']}, the record there is {response.url}"))
            return
        content_type = row.get("content_type") or response.header("content-type")
        body, _ = cap_body(response.body, self.max_bytes, self.count)
        problem = html_problem(body, content_type)
        if problem:
            yield from skip_or_error(row["url"], path, row["warc_offset"], problem, self.count)
            return
        html = decode_body(body, row.get("charset"), content_type)
        digest = row.get("payload_digest") or warc.payload_digest(response.body)
        yield page(row["url"], row["key"], row["host"], html, digest, path, row["warc_offset"], row)


def keep_fetched(row: dict, count) -> bool:
    """Log rows that point at a stored successful response."""
    if not row.get("warc_file"):
        count("skipped_not_fetched")
        return False
    if row.get("status") not in OK_STATUSES:
        count("skipped_status")
        return False
    return True


def warc_span(row: dict, span_bytes: int = READ_SPAN_BYTES) -> tuple[str, int]:
    return row["warc_file"], row["warc_offset"] // span_bytes


class ReadFetchedPages(beam.PTransform):
    """The fetch stage's log -> pages (main output) and errors (tagged `errors`). Log rows are grouped by
    span of WARC file, so each worker reads a span sequentially and spans spread over workers; reading is
    fused with extraction, so the extractor children are busy while the next record is read."""

    def __init__(self, fetch_dir: str, max_bytes: int = MAX_HTML_BYTES):
        super().__init__()
        self.fetch_dir, self.max_bytes = fetch_dir, max_bytes

    def expand(self, pbegin):
        count = stats.BeamCounters(STAGE)
        return (pbegin
                | "ReadLog" >> ReadDataset(self.fetch_dir, FETCH_LOG)
                | "Stored" >> beam.Filter(keep_fetched, count)
                | "BySpan" >> beam.Map(lambda r: (warc_span(r), r))
                | "GroupBySpan" >> beam.GroupByKey()
                | "ReadRecords" >> beam.ParDo(_ReadFetchedPages(self.fetch_dir, self.max_bytes))
                .with_outputs(ERRORS, main="pages"))


class _ReadWarcPages(beam.DoFn):
    """A WARC file path -> its HTML responses as pages; the charset decided here."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes

    def setup(self):
        self.count = stats.BeamCounters(STAGE)

    def process(self, path: str):
        skipped: dict = {}
        try:
            with fs.open_read(path) as stream:
                for response in warc.iter_responses(stream, path, max_body=self.max_bytes + 1,
                                                    skipped=skipped):
                    yield from self._page(path, response)
        except (warc.WarcReadError, OSError) as e:
            self.count("error_warc_damaged")
            yield beam.pvalue.TaggedOutput(ERRORS, error_row(STAGE, path, getattr(e, "offset", None),
                                                             "warc_damaged", str(e)))
        for record_type, n in sorted(skipped.items()):
            self.count(f"skipped_record_{record_type}", n)

    def _page(self, path: str, response: warc.WarcResponse):
        self.count("pages_in")
        if response.status not in OK_STATUSES:
            self.count("skipped_status")
            return
        try:
            parsed = urls.parse_url(response.url)
        except urls.UrlError as e:
            self.count("error_bad_url")
            yield beam.pvalue.TaggedOutput(ERRORS, error_row(STAGE, path, response.offset, "bad_url", str(e),
                                                             response.url))
            return
        content_type = response.header("content-type")
        body, _ = cap_body(response.body, self.max_bytes, self.count)
        problem = html_problem(body, content_type)
        if problem:
            yield from skip_or_error(response.url, path, response.offset, problem, self.count)
            return
        html = decode_body(body, None, content_type)
        yield page(response.url, parsed.key, parsed.host, html, warc.payload_digest(response.body), path,
                   response.offset)


class ReadWarcPages(beam.PTransform):
    def __init__(self, paths: list[str], max_bytes: int = MAX_HTML_BYTES):
        super().__init__()
        self.paths, self.max_bytes = paths, max_bytes

    def expand(self, pbegin):
        return (pbegin
                | "Paths" >> beam.Create(self.paths)
                | "OneFileEach" >> beam.Reshuffle()
                | "ReadRecords" >> beam.ParDo(_ReadWarcPages(self.max_bytes)).with_outputs(ERRORS, main="pages"))


# -- extraction

class _ExtractDocuments(beam.DoFn):
    """Pages -> documents (main) and errors, through a sandboxed extractor pool created per DoFn instance.
    Several pages are in flight at once (one per child), so outputs come in completion order and the
    last ones from finish_bundle; the datasets are sorted on write, so order does not matter."""

    def __init__(self, sandbox: SandboxConfig, filters: FilterConfig):
        self.sandbox, self.filters = sandbox, filters

    def setup(self):
        load_language_identifier()  # on a remote worker; locally `main` has started it already
        self.count = stats.BeamCounters(STAGE)
        self.pool = ExtractorPool(self.sandbox, self.count)
        self.pool.start()
        self.pending: dict[int, dict] = {}
        self.next_task = 0

    def process(self, pg: dict):
        meta = {k: v for k, v in pg.items() if k != "html"}
        task = self.next_task
        self.next_task += 1
        self.pending[task] = meta
        self.count("pages_extracted")
        for outcome in self.pool.submit(task, pg["html"], pg["url"]):
            yield from self._finish(outcome)

    def finish_bundle(self):
        for outcome in self.pool.drain():
            for out in self._finish(outcome):
                if isinstance(out, beam.pvalue.TaggedOutput):
                    yield beam.pvalue.TaggedOutput(out.tag, GlobalWindows.windowed_value(out.value))
                else:
                    yield GlobalWindows.windowed_value(out)

    def teardown(self):
        pool = getattr(self, "pool", None)
        if pool is not None:
            pool.close()

    def _finish(self, outcome) -> Iterator:
        pg = self.pending.pop(outcome.task_id)
        progress.tick(STAGE)
        self.count(f"extract_{outcome.reason}")
        if outcome.reason != "ok":
            detail = f"{outcome.detail} ({pg['source']} @ {pg['offset']})"
            yield beam.pvalue.TaggedOutput(ERRORS, error_row(STAGE, pg["url"], None, f"extract_{outcome.reason}",
                                                             detail))
            return
        cleaned = clean_document(outcome.text, self.filters, self.count)
        if cleaned is None:
            return
        yield document_row(pg, cleaned.text, cleaned.chars, cleaned.words, cleaned.language, outcome.title,
                           outcome.date)


def first_per_doc_id(element, count) -> Iterator[dict]:
    """One document per id (a WARC may hold the same URL twice): the smallest by (url, digest, text)."""
    _, docs = element
    docs = sorted(docs, key=lambda d: (d["url"], d["payload_digest"], d["text"]))
    if len(docs) > 1:
        count("duplicate_key", len(docs) - 1)
    yield docs[0]


class ExtractDocuments(beam.PTransform):
    """Pages -> (documents, errors). `one_per_id` keeps one document per id, for inputs that may hold a URL
    twice (any WARC file); the fetch log holds each key once already."""

    def __init__(self, sandbox: SandboxConfig, filters: FilterConfig, one_per_id: bool):
        super().__init__()
        self.sandbox, self.filters, self.one_per_id = sandbox, filters, one_per_id

    def expand(self, pages):
        count = stats.BeamCounters(STAGE)
        out = (pages
               | "Extract" >> beam.ParDo(_ExtractDocuments(self.sandbox, self.filters))
               .with_outputs(ERRORS, main=DOCUMENTS))
        documents = out[DOCUMENTS]
        if self.one_per_id:
            documents = (documents
                         | "ById" >> beam.Map(lambda d: (d["doc_id"], d))
                         | "GroupById" >> beam.GroupByKey()
                         | "OnePerId" >> beam.FlatMap(first_per_doc_id, count))
        return documents | "Count" >> beam.Map(_counted, count, "documents"), out[ERRORS]


def _counted(x, count, name):
    count(name)
    return x


# -- the stage

def build_pipeline(p: beam.Pipeline, output_dir: str, *, fetch_dir: str | None, warc_paths: list[str] | None,
                   sandbox: SandboxConfig, filters: FilterConfig, max_html_bytes: int, rows_per_shard: int) -> None:
    if fetch_dir is not None:
        read = p | "ReadFetched" >> ReadFetchedPages(fetch_dir, max_html_bytes)
    else:
        read = p | "ReadWarc" >> ReadWarcPages(warc_paths, max_html_bytes)
    documents, extract_errors = read.pages | "Extract" >> ExtractDocuments(sandbox, filters,
                                                                          one_per_id=warc_paths is not None)
    _ = documents | "WriteDocuments" >> WriteDataset(output_dir, DOCUMENTS, DOCUMENTS_SCHEMA,
                                                              doc_sort_key, rows_per_shard)
    _ = ((read[ERRORS], extract_errors)
         | "AllErrors" >> beam.Flatten()
         | "WriteErrors" >> WriteDataset(output_dir, ERRORS, ERRORS_SCHEMA, error_sort_key))


def graph(p: beam.Pipeline, args: argparse.Namespace) -> None:
    """The stage's pipeline, built from its flags without touching any output (`webtext build --dry-run`)."""
    sandbox, filters = configs_from_args(args)
    build_pipeline(p, args.output, fetch_dir=args.fetch, warc_paths=fs.glob(args.warc) if args.warc else None,
                   sandbox=sandbox, filters=filters, max_html_bytes=args.max_html_bytes,
                   rows_per_shard=args.rows_per_shard)


def run(output_dir: str, options, *, fetch_dir: str | None = None, warc_paths: list[str] | None = None,
        sandbox: SandboxConfig = SandboxConfig(), filters: FilterConfig = FilterConfig(),
        max_html_bytes: int = MAX_HTML_BYTES, rows_per_shard: int = ROWS_PER_SHARD) -> dict:
    """Run the stage over a fetch directory or WARC files; returns the `_stats.json` content."""
    if (fetch_dir is None) == (warc_paths is None):
        raise ValueError("give exactly one of fetch_dir and warc_paths")
    timer = stats.begin_stage(output_dir, (DOCUMENTS, ERRORS))
    p = beam.Pipeline(options=options)
    build_pipeline(p, output_dir, fetch_dir=fetch_dir, warc_paths=warc_paths, sandbox=sandbox, filters=filters,
                   max_html_bytes=max_html_bytes, rows_per_shard=rows_per_shard)
    result = p.run()
    result.wait_until_finish()
    counters = stats.collect_counters(result, STAGE)
    config = {"fetch": fetch_dir, "warc": warc_paths, "max_html_bytes": max_html_bytes,
              "extract_timeout_s": sandbox.timeout_s, "extract_processes": sandbox.processes,
              "recycle_after": sandbox.recycle_after, "extract_memory_mb": sandbox.memory_mb,
              "favor": sandbox.settings.favor, "include_tables": sandbox.settings.include_tables,
              "filters": filters.config(), "rows_per_shard": rows_per_shard}
    return stats.write_stats(output_dir, STAGE, config, counters, timer)


def funnel(counters: dict) -> list[tuple[str, int]]:
    rows = [("pages read", counters.get("pages_in", 0)),
            ("sent to extractor", counters.get("pages_extracted", 0))]
    if counters.get("pages_reused"):
        rows.append(("  of which same HTML as another page (text reused)", counters["pages_reused"]))
    rows.append(("main text found", counters.get("extract_ok", 0)))
    rows += [(f"  dropped: {name.replace('_', ' ')}", counters.get(f"dropped_{name}", 0)) for name in FILTERS
             if counters.get(f"dropped_{name}")]
    rows.append(("documents", counters.get("documents", 0)))
    return rows


def _languages(value: str) -> frozenset[str]:
    return frozenset(x.strip().lower() for x in value.split(",") if x.strip())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--fetch", metavar="DIR", help="the fetch stage's output directory (log + WARC files)")
    source.add_argument("--warc", nargs="+", metavar="GLOB", help="any WARC files (plain or .gz; local or gs://)")
    parser.add_argument("--output", required=True, metavar="DIR", help="output directory (local or gs://)")
    x = parser.add_argument_group("extraction (trafilatura in a sandbox)")
    x.add_argument("--extract-timeout", type=float, default=TIMEOUT_S, metavar="SECONDS",
                   help=f"per-page deadline; the child is killed past it (default: {TIMEOUT_S:g})")
    x.add_argument("--extract-processes", type=int, default=0, metavar="N",
                   help="extractor children per Beam worker; 0 = --workers on this machine (the runner itself "
                        "runs in memory, in one process), 1 per SDK process elsewhere (default: 0)")
    x.add_argument("--recycle-after", type=int, default=RECYCLE_AFTER, metavar="PAGES",
                   help=f"replace a child after this many pages (default: {RECYCLE_AFTER})")
    x.add_argument("--extract-memory-mb", type=int, default=MEMORY_MB,
                   help=f"address-space limit of a child in MB, 0 = none (default: {MEMORY_MB})")
    x.add_argument("--max-html-bytes", type=int, default=MAX_HTML_BYTES,
                   help=f"page bytes kept before decoding and parsing (default: {MAX_HTML_BYTES:,})")
    x.add_argument("--favor", choices=FAVOR, default="balanced",
                   help="trafilatura's precision/recall preference (default: balanced)")
    x.add_argument("--no-tables", action="store_true", help="leave out text in <table> (default: kept)")
    f = parser.add_argument_group("cleaning filters (defaults and sources: webtext/extract/filters.py)")
    f.add_argument("--min-words", type=int, default=MIN_WORDS,
                   help=f"drop documents with fewer words, ~128 GPT-2 tokens (default: {MIN_WORDS})")
    f.add_argument("--max-words", type=int, default=MAX_WORDS,
                   help=f"drop documents with more words, 0 = no limit (default: {MAX_WORDS:,}, Gopher)")
    f.add_argument("--keep-boilerplate-lines", action="store_true",
                   help="keep short cookie/policy/JavaScript notice and lorem ipsum lines (default: "
                        "removed, C4's rules)")
    f.add_argument("--repetition", action="store_true",
                   help="drop documents with Gopher's line/paragraph repetition (default: off)")
    f.add_argument("--max-symbol-ratio", type=float, default=0.0, metavar="RATIO",
                   help="drop documents with more '#' and '...' per word, e.g. 0.1 (Gopher); 0 = off (default)")
    f.add_argument("--languages", type=_languages, default=frozenset(), metavar="CODE,...",
                   help="keep only these py3langid languages, e.g. en (default: all)")
    parser.add_argument("--rows-per-shard", type=int, default=ROWS_PER_SHARD,
                        help=f"documents per Parquet file (default: {ROWS_PER_SHARD:,})")
    from webtext.runtime.beam import add_runner_arguments
    add_runner_arguments(parser)


def configs_from_args(args: argparse.Namespace) -> tuple[SandboxConfig, FilterConfig]:
    sandbox = SandboxConfig(processes=args.extract_processes or local_processes(args),
                            timeout_s=args.extract_timeout, recycle_after=args.recycle_after,
                            memory_mb=args.extract_memory_mb, max_html_chars=args.max_html_bytes,
                            settings=ExtractSettings(favor=args.favor, include_tables=not args.no_tables))
    filters = FilterConfig(min_words=args.min_words, max_words=args.max_words,
                           boilerplate_lines=not args.keep_boilerplate_lines, repetition=args.repetition,
                           max_symbol_ratio=args.max_symbol_ratio, languages=args.languages)
    return sandbox, filters


def main(args: argparse.Namespace) -> int:

    try:
        sandbox, filters = configs_from_args(args)
        warc_paths = fs.glob(args.warc) if args.warc else None
        if args.fetch and not datasets.shard_paths(args.fetch, FETCH_LOG):
            raise FileNotFoundError(f"{args.fetch}: no fetch log (dataset {FETCH_LOG!r}); run `webtext fetch`")
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if is_direct(args):
        # What the first pages would wait for gets ready while the pipeline reads and groups the fetch log
        # (~0.3 s): the extractor children's fork server imports trafilatura, and the language model loads.
        start_fork_server()
        load_language_identifier()
    with progress.Progress(STAGE, unit="pages"):
        result = run(args.output, pipeline_options(args, STAGE), fetch_dir=args.fetch,
                     warc_paths=warc_paths,
                     sandbox=sandbox, filters=filters, max_html_bytes=args.max_html_bytes,
                     rows_per_shard=args.rows_per_shard)
    counters = result["counters"]
    source = args.fetch or f"{len(warc_paths)} WARC files"
    stats.print_funnel(f"extract: {source} -> {args.output}", funnel(counters))
    errors = {k[len("error_"):]: v for k, v in counters.items() if k.startswith("error_")}
    failed = {k: v for k, v in counters.items() if k.startswith("extract_") and k != "extract_ok"}
    if errors or failed:
        listed = ", ".join(f"{k} {v:,}" for k, v in sorted({**errors, **failed}.items()))
        print(f"not extracted: {listed}: see the errors dataset in {args.output}", file=sys.stderr)
    damaged = counters.get("error_warc_damaged", 0)
    if damaged:
        print(f"error: {damaged} damaged WARC records or files (their good records were used)", file=sys.stderr)
    return 1 if damaged else 0
