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

import apache_beam as beam

from webtext.extract.filters import FILTERS, MAX_WORDS, MIN_WORDS, load_language_identifier
from webtext.extract.pages import MAX_HTML_BYTES
from webtext.extract.pipeline import build_pipeline, configs_from_args
from webtext.extract.sandbox import (
    FAVOR,
    MEMORY_MB,
    RECYCLE_AFTER,
    TIMEOUT_S,
    check_unkept_metadata,
)
from webtext.extract.schema import DOCUMENTS, FETCH_LOG, ROWS_PER_SHARD, STAGE
from webtext.runtime import fs, stats
from webtext.runtime.beam import add_runner_arguments, is_direct, pipeline_options
from webtext.runtime.errors import ERRORS
from webtext.runtime.stage import Plan, Result, StageError, require_dataset, run_command

EXAMPLE = """\
  webtext extract --fetch out/fetch --output out/documents
  webtext extract --warc '../shared/data/warc/*.warc.gz' --output /tmp/cc-documents --workers 1 --languages en,ru
"""


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
    add_runner_arguments(parser)


def check(args: argparse.Namespace) -> Plan:
    try:  # a trafilatura whose metadata helpers the children replace has changed: stop before writing anything
        check_unkept_metadata()
    except RuntimeError as e:
        raise StageError(str(e)) from None
    sandbox, filters = configs_from_args(args)
    warc_paths = fs.glob(args.warc) if args.warc else None
    if args.fetch:
        require_dataset(args.fetch, FETCH_LOG, "fetch")
    source = args.fetch or f"{len(warc_paths)} WARC files"
    return Plan(output=args.output, clear=(DOCUMENTS, ERRORS), unit="pages",
                title=f"extract: {source} -> {args.output}", data=(sandbox, filters, warc_paths))


def run(args: argparse.Namespace, plan: Plan) -> Result:
    sandbox, filters, warc_paths = plan.data
    if is_direct(args):
        # The language model loads while the pipeline reads and groups the fetch log.
        load_language_identifier()
    p = beam.Pipeline(options=pipeline_options(args, STAGE))
    build_pipeline(p, args.output, fetch_dir=args.fetch, warc_paths=warc_paths, sandbox=sandbox, filters=filters,
                   max_html_bytes=args.max_html_bytes, rows_per_shard=args.rows_per_shard)
    result = p.run()
    result.wait_until_finish()
    counters = stats.collect_counters(result, STAGE)
    config = {"fetch": args.fetch, "warc": warc_paths, "max_html_bytes": args.max_html_bytes,
              "extract_timeout_s": sandbox.timeout_s, "extract_processes": sandbox.processes,
              "recycle_after": sandbox.recycle_after, "extract_memory_mb": sandbox.memory_mb,
              "favor": sandbox.settings.favor, "include_tables": sandbox.settings.include_tables,
              "filters": filters.config(), "rows_per_shard": args.rows_per_shard}
    damaged = counters.get("error_warc_damaged", 0)
    return Result(counters, config, notes=notes(counters, args.output),
                  errors=[f"{damaged} damaged WARC records or files (their good records were used)"] if damaged else [])


def notes(counters: dict, output: str) -> list[str]:
    """What was not extracted, by reason."""
    errors = {k[len("error_"):]: v for k, v in counters.items() if k.startswith("error_")}
    failed = {k: v for k, v in counters.items() if k.startswith("extract_") and k != "extract_ok"}
    if not (errors or failed):
        return []
    listed = ", ".join(f"{k} {v:,}" for k, v in sorted({**errors, **failed}.items()))
    return [f"not extracted: {listed}: see the errors dataset in {output}"]


def funnel(written: dict) -> list[tuple[str, int]]:
    counters = written["counters"]
    rows = [("pages read", counters.get("pages_in", 0)),
            ("sent to extractor", counters.get("pages_extracted", 0))]
    if counters.get("pages_reused"):
        rows.append(("  of which same HTML as another page (text reused)", counters["pages_reused"]))
    rows.append(("main text found", counters.get("extract_ok", 0)))
    rows += [(f"  dropped: {name.replace('_', ' ')}", counters.get(f"dropped_{name}", 0)) for name in FILTERS
             if counters.get(f"dropped_{name}")]
    rows.append(("documents", counters.get("documents", 0)))
    return rows


def main(args: argparse.Namespace) -> int:
    return run_command(STAGE, args, check, run, funnel)
