"""The extract stage's Beam graph: read pages (from the fetch stage's log and WARC files, or from any WARC
files), extract their main text in a sandboxed extractor pool, clean it, and write `documents` and `errors`."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindows

from webtext.extract.filters import FilterConfig, clean_document, load_language_identifier
from webtext.extract.pages import (
    MAX_HTML_BYTES,
    OK_STATUSES,
    cap_body,
    decode_body,
    document_row,
    html_problem,
    keep_fetched,
    page,
)
from webtext.extract.sandbox import ExtractorPool, ExtractSettings, SandboxConfig
from webtext.extract.schema import DOCUMENTS, DOCUMENTS_SCHEMA, FETCH_LOG, STAGE
from webtext.links import urls
from webtext.runtime import fs, progress, stats, warc
from webtext.runtime.beam import ReadDataset, WriteDataset, local_processes
from webtext.runtime.errors import ERRORS, ERRORS_SCHEMA, error_row, error_sort_key

READ_SPAN_BYTES = 64 * 1024 * 1024  # a WARC file is read in spans this long: the unit of parallel work


def doc_sort_key(row: dict) -> str:
    return row["doc_id"]


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
        body = cap_body(response.body, self.max_bytes, self.count)
        problem = html_problem(body, content_type)
        if problem:
            yield from skip_or_error(row["url"], path, row["warc_offset"], problem, self.count)
            return
        html = decode_body(body, row.get("charset"), content_type)
        digest = row.get("payload_digest") or warc.payload_digest(response.body)
        yield page(row["url"], row["key"], row["host"], html, digest, path, row["warc_offset"], row)


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
        body = cap_body(response.body, self.max_bytes, self.count)
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
        load_language_identifier()  # on a remote worker; locally `command.run` has started it already
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
    _ = documents | "WriteDocuments" >> WriteDataset(output_dir, DOCUMENTS, DOCUMENTS_SCHEMA, doc_sort_key,
                                                     rows_per_shard)
    _ = ((read[ERRORS], extract_errors)
         | "AllErrors" >> beam.Flatten()
         | "WriteErrors" >> WriteDataset(output_dir, ERRORS, ERRORS_SCHEMA, error_sort_key))


def configs_from_args(args: argparse.Namespace) -> tuple[SandboxConfig, FilterConfig]:
    sandbox = SandboxConfig(processes=args.extract_processes or local_processes(args),
                            timeout_s=args.extract_timeout, recycle_after=args.recycle_after,
                            memory_mb=args.extract_memory_mb, max_html_chars=args.max_html_bytes,
                            settings=ExtractSettings(favor=args.favor, include_tables=not args.no_tables))
    filters = FilterConfig(min_words=args.min_words, max_words=args.max_words,
                           boilerplate_lines=not args.keep_boilerplate_lines, repetition=args.repetition,
                           max_symbol_ratio=args.max_symbol_ratio, languages=args.languages)
    return sandbox, filters


def graph(p: beam.Pipeline, args: argparse.Namespace) -> None:
    """The stage's pipeline, built from its flags without touching any output (`webtext build --dry-run`)."""
    sandbox, filters = configs_from_args(args)
    build_pipeline(p, args.output, fetch_dir=args.fetch, warc_paths=fs.glob(args.warc) if args.warc else None,
                   sandbox=sandbox, filters=filters, max_html_bytes=args.max_html_bytes,
                   rows_per_shard=args.rows_per_shard)
