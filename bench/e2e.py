"""End-to-end benchmark: a whole `webtext build` over a loopback web of real pages, against the extraction
ceiling (trafilatura over the same pages in a 2-process pool), in the same run.

The web serves the real pages of ../shared/data/web/trafilatura-eval on 50 virtual hosts (plus planted
duplicates under second URLs) from its own process, with no added latency and host delay 0, so the build is measured, not the
politeness. The goal: whole-build wall time <= 1.3x the ceiling, i.e. every stage but extraction is nearly
free. Medians over --repeats; each build starts from an empty output root.

    .venv/bin/python bench/e2e.py            # all pages, 3 repeats
    .venv/bin/python bench/e2e.py --quick    # 200 pages, 1 repeat
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import orjson  # noqa: E402
import trafilatura  # noqa: E402
import zstandard  # noqa: E402

from webtext import build  # noqa: E402
from webtext.pipeline.sandbox import ExtractSettings  # noqa: E402

HOSTS = 50
SETTINGS = ExtractSettings().kwargs()


def write_dump(path: Path, urls: list[str]) -> None:
    lines = [orjson.dumps({"id": f"b{i:06x}", "url": u, "score": 5, "is_self": False, "over_18": False,
                           "subreddit": "bench", "created_utc": 1_420_070_400 + i, "title": "t"})
             for i, u in enumerate(urls)]
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=31)
    path.write_bytes(zstandard.ZstdCompressor(compression_params=params).compress(b"\n".join(lines) + b"\n"))


def job_for(root: Path, dump: Path, address: str, workers: int) -> dict:
    return {
        "job": {"output": str(root), "runner": "direct", "workers": workers},
        "links": {"input": [str(dump)], "before": "none"},
        "fetch": {"allow_network": [f"{address}/32"], "resolve": [f"*.test={address}"], "host_delay": 0,
                  "timeout": 10, "retries": 0},
        "extract": {},
        "dedup": {},
        "tokenizer": {"vocab_size": 4096},
        "encode": {"val_fraction": 0.01},
    }


def _extract(body: bytes) -> str | None:
    return trafilatura.extract(body.decode("utf-8", errors="replace"), **SETTINGS)


def _serve(pages: int, conn) -> None:
    from support_webserver import LoopbackWeb

    web = LoopbackWeb(pages=pages, bombs=False).start()
    conn.send(web.port)
    conn.recv()  # until the benchmark is done
    web.close()


def ceiling(bodies: list[bytes]) -> float:
    start = time.perf_counter()
    with multiprocessing.Pool(2) as pool:
        for _ in pool.imap_unordered(_extract, bodies, chunksize=4):
            pass
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=None, help="real pages served (default: all)")
    parser.add_argument("--duplicates", type=int, default=50, help="pages also served under a second URL")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="local processes per stage (--workers)")
    parser.add_argument("--quick", action="store_true", help="200 pages, 1 repeat")
    parser.add_argument("--keep", type=Path, default=None, help="copy the last build's output root here")
    args = parser.parse_args()
    if args.quick:
        args.pages, args.repeats, args.duplicates = 200, 1, 20

    from support_webserver import LoopbackWeb, page_files

    n = args.pages or len(page_files())
    builds, ceilings, documents = [], [], None
    # The web is served from its own process, as the real web is elsewhere: its threads must not share
    # this process's interpreter lock with the build (it still shares the cores).
    web = LoopbackWeb(pages=n, bombs=False)
    conn, child_conn = multiprocessing.Pipe()
    server = multiprocessing.get_context("fork").Process(target=_serve, args=(n, child_conn), daemon=True)
    server.start()
    web.port = conn.recv()
    with tempfile.TemporaryDirectory() as tmp:
        urls = [web.url(f"host{i % HOSTS}.test", web.page_path(i)) for i in range(n)]
        urls += [web.url(f"host{(i + 1) % HOSTS}.test", web.page_path(i)) for i in range(args.duplicates)]
        dump = Path(tmp) / "RS_bench.zst"
        write_dump(dump, urls)
        bodies = [web.page_bytes(i) for i in range(n)] + [web.page_bytes(i) for i in range(args.duplicates)]
        for r in range(args.repeats):
            ceilings.append(ceiling(bodies))
            root = Path(tmp) / f"out{r}"
            start = time.perf_counter()
            report = build.build(job_for(root, dump, web.address, args.workers), runner_overrides={},
                                 log=lambda m: None)
            builds.append(time.perf_counter() - start)
            funnel = dict(report["funnel"])
            documents = funnel.get("documents after dedup")
            stage_seconds = {s: e["seconds"] for s, e in report["stages"].items() if e["seconds"] is not None}
            print(f"repeat {r + 1}: build {builds[-1]:.1f}s, ceiling {ceilings[-1]:.1f}s; stages "
                  + ", ".join(f"{s} {v:.1f}s" for s, v in stage_seconds.items()), file=sys.stderr)
        if args.keep:
            shutil.rmtree(args.keep, ignore_errors=True)
            shutil.copytree(root, args.keep)
            shutil.copy(dump, args.keep / dump.name)
    conn.send("stop")
    server.join(5)
    b, c = statistics.median(builds), statistics.median(ceilings)
    pages = len(urls)
    print(f"pages: {pages:,} ({n:,} real + {args.duplicates} duplicates), documents kept: {documents:,}")
    print(f"whole build   : {b:7.1f} s  {pages / b:7.1f} pages/s   (median of {args.repeats})")
    print(f"Pool(2) ceiling: {c:7.1f} s  {pages / c:7.1f} pages/s   (trafilatura only)")
    print(f"build / ceiling wall time: {b / c:.2f}x   (goal <= 1.3x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
