"""Benchmark the extract stage: docs/s over the ~900 real pages of ../shared/data/web/trafilatura-eval.

Side by side in this process, each a median of --repeats runs:
  loop      a plain loop calling trafilatura.extract (one core), same settings as the stage
  pool(2)   multiprocessing.Pool(2) mapping the same call (the ceiling on 2 cores)
  stage     `webtext extract --fetch` on the same pages stored as a fetch directory (WARC + log): reading,
            decoding, sandboxed extraction, filters, Beam and Parquet writing; direct runner, in-memory with
            2 extractor children (--workers 1) and, if --workers-2, multi-processing with 2 workers
The goal (issue 4) is stage >= 0.9x pool(2). CPU seconds (this process and its children) are printed too:
on a shared, busy machine they show the stage's overhead over the plain loop when wall times cannot.
Also prints extraction quality over every page with gold
snippets: the share of `with` snippets found and `without` avoided, for the stage and for trafilatura.extract
called directly (the stage runs with the length filters off so no page is dropped for being short).

  .venv/bin/python bench/extract.py            # all pages, 3 repeats
  .venv/bin/python bench/extract.py --quick    # 120 pages, 2 repeats
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import json
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trafilatura

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from support_extract import snippet_scores  # noqa: E402  (pages without gold have no snippets)

from webtext import cli  # noqa: E402
from webtext.extract.sandbox import ExtractSettings  # noqa: E402
from webtext.fetch.schema import LOG_SCHEMA  # noqa: E402
from webtext.links import urls  # noqa: E402
from webtext.runtime import datasets, stats, warc  # noqa: E402

EVAL = ROOT.parent / "shared" / "data" / "web" / "trafilatura-eval"
SETTINGS = ExtractSettings().kwargs()  # the stage's trafilatura settings, metadata (title, date) included


def load_pages(limit: int | None) -> list[dict]:
    """Every page file (sorted by name), with its gold snippets where evaldata.json has them."""
    gold = {item["file"]: (url, item) for url, item in json.loads((EVAL / "evaldata.json").read_text()).items()}
    files = sorted(p.name[:-3] for p in EVAL.glob("*.html.gz"))
    if limit and limit < len(files):
        step = len(files) / limit
        files = [files[int(i * step)] for i in range(limit)]
    pages = []
    for name in files:
        url, item = gold.get(name, (None, {}))
        if not url or not url.startswith(("http://", "https://")):
            url = f"http://eval.invalid/{name}"
        pages.append({"url": url.replace(" ", "%20"), "body": gzip.decompress((EVAL / (name + ".gz")).read_bytes()),
                      "with": item.get("with") or [], "without": item.get("without") or [], "gold": bool(item)})
    return pages


def write_fetch_dir(fetch_dir: Path, pages: list[dict]) -> None:
    """The pages as the fetch stage stores them: one WARC file and the `log` dataset."""
    from webtext.fetch.http import decide_charset

    (fetch_dir / "warc").mkdir(parents=True)
    rows = []
    with open(fetch_dir / "warc" / "bench.warc.gz", "wb") as f:
        writer = warc.RecordWriter(f, "bench.warc.gz")
        for i, p in enumerate(pages):
            parsed = urls.parse_url(p["url"])
            loc = writer.write_exchange(p["url"], request_headers=[("Host", parsed.host)], status=200, reason="OK",
                                        response_headers=[("Content-Type", "text/html")], body=p["body"])
            charset, source = decide_charset("text/html", p["body"])
            row = {f.name: None for f in LOG_SCHEMA}
            row.update(url=p["url"], key=parsed.key, host=parsed.host, final_url=p["url"], status=200, attempts=1,
                       bytes=len(p["body"]), content_type="text/html", charset=charset, charset_source=source,
                       warc_file="warc/bench.warc.gz", warc_offset=loc.offset, warc_length=loc.length,
                       payload_digest=loc.digest, score=3, num_submissions=1, subreddits=["bench"],
                       first_created_utc=1_500_000_000 + i)
            rows.append(row)
    (fetch_dir / datasets.shard_name("log", 0, 1)).write_bytes(datasets.table_bytes(rows, LOG_SCHEMA))


def _extract(args) -> str | None:
    body, url = args
    return trafilatura.extract(body, url=url, **SETTINGS)


def run_loop(pages) -> float:
    start = time.perf_counter()
    for p in pages:
        _extract((p["body"], p["url"]))
    return time.perf_counter() - start


def run_pool(pages) -> float:
    start = time.perf_counter()
    with multiprocessing.Pool(2) as pool:
        for _ in pool.imap_unordered(_extract, [(p["body"], p["url"]) for p in pages], chunksize=4):
            pass
    return time.perf_counter() - start


def cpu_seconds() -> float:
    """CPU time of this process and of its reaped children: less sensitive than wall time to a busy machine."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_stage(fetch_dir: Path, out: Path, workers: int) -> tuple[float, dict]:
    """`webtext extract` as the command line runs it, its funnel and progress kept out of the bench's output."""
    processes = max(1, 2 // workers)
    argv = ["extract", "--fetch", str(fetch_dir), "--output", str(out), "--workers", str(workers),
            "--extract-processes", str(processes), "--min-words", "0", "--max-words", "0"]
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
        status = cli.main(argv)
    elapsed = time.perf_counter() - start
    if status != 0:
        raise RuntimeError(f"webtext {' '.join(argv)} exited {status}: {err.getvalue()}")
    return elapsed, stats.read_stats(str(out))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="120 pages, 2 repeats")
    parser.add_argument("--pages", type=int, default=None, help="evenly spread subset of the pages (default: all)")
    parser.add_argument("--repeats", type=int, default=None, help="runs of each contender (default: 3; quick: 2)")
    parser.add_argument("--workers-2", action="store_true",
                        help="also time the stage on the multi-processing direct runner with 2 workers")
    args = parser.parse_args()
    if not EVAL.exists():
        print(f"missing shared data: {EVAL}", file=sys.stderr)
        return 2
    pages = load_pages(args.pages or (120 if args.quick else None))
    repeats = args.repeats or (2 if args.quick else 3)
    print(f"{len(pages)} pages ({sum(len(p['body']) for p in pages) / 1e6:.1f} MB of HTML), {repeats} repeats, "
          f"{os.cpu_count()} cores")

    with tempfile.TemporaryDirectory(prefix="bench-extract-") as tmp:
        tmp = Path(tmp)
        write_fetch_dir(tmp / "fetch", pages)
        _extract((pages[0]["body"], pages[0]["url"]))  # imports and first-use caches out of the timings
        contenders = {"loop": lambda: run_loop(pages), "pool(2)": lambda: run_pool(pages),
                      "stage --workers 1": lambda: run_stage(tmp / "fetch", tmp / "out1", 1)[0]}
        if args.workers_2:
            contenders["stage --workers 2"] = lambda: run_stage(tmp / "fetch", tmp / "out2", 2)[0]
        times: dict[str, list[float]] = {name: [] for name in contenders}
        cpus: dict[str, list[float]] = {name: [] for name in contenders}
        for r in range(repeats):  # interleaved, so a noisy spell hits every contender alike
            for name, fn in contenders.items():
                before = cpu_seconds()
                times[name].append(fn())
                cpus[name].append(cpu_seconds() - before)
                print(f"  repeat {r + 1}: {name:<18} {times[name][-1]:7.2f} s wall {cpus[name][-1]:7.2f} s cpu",
                      flush=True)

        medians = {name: statistics.median(t) for name, t in times.items()}
        pool = len(pages) / medians["pool(2)"]
        loop_cpu = statistics.median(cpus["loop"])
        print(f"\n{'contender':<20}{'median s':>10}{'docs/s':>10}{'x pool(2)':>11}{'cpu s':>9}{'cpu x loop':>12}")
        for name, m in medians.items():
            rate = len(pages) / m
            cpu = statistics.median(cpus[name])
            print(f"{name:<20}{m:>10.2f}{rate:>10.1f}{rate / pool:>11.2f}{cpu:>9.1f}{cpu / loop_cpu:>12.2f}")
        ratio = (len(pages) / medians["stage --workers 1"]) / pool
        print(f"\nstage (--workers 1) / pool(2) = {ratio:.2f} (goal >= 0.90)")

        ours = {d["url"]: d["text"] for d in datasets.read_rows(str(tmp / "out1"), "documents")}
        plain = {k: v for k, v in SETTINGS.items() if k not in ("with_metadata", "date_extraction_params")}
        direct = {p["url"]: trafilatura.extract(p["body"], url=p["url"], **plain) for p in pages if p["gold"]}
        n = sum(p["gold"] for p in pages)
        (ow, oa), (dw, da) = snippet_scores(ours, pages), snippet_scores(direct, pages)
        print(f"\nquality on {n} pages with gold snippets:")
        print(f"  stage                 `with` found {ow:.4f}   `without` avoided {oa:.4f}")
        print(f"  trafilatura.extract   `with` found {dw:.4f}   `without` avoided {da:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
