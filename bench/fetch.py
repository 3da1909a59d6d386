"""Benchmark of the fetch stage's crawler against a naive `requests.get` thread pool.

A loopback web (tests/support_webserver.py, real pages, in its own process so its CPU is not counted) adds
--latency seconds to every response. Both sides fetch the same --urls URLs spread over --hosts virtual hosts
with --threads threads, in this one process, alternating, --repeats times:
  baseline  requests.get per URL, no robots, no politeness, no guards, nothing stored
  guards    the fetch stage's GroupCrawler: robots.txt per host, one request in flight per host (host delay 0),
            SSRF guard on the connected address, total deadline watchdog, capped decoding, type sniffing,
            charset decision; pages kept in memory like the baseline's
  warc      the same, and every page also written to a WARC file (gzip, --warc-gzip-level)
Prints median pages/s and CPU seconds per page (process CPU over all threads), the ratios, and the most
requests the server saw in flight per host for webtext (must be 1). Goal: guards/baseline >= 0.8.

    .venv/bin/python bench/fetch.py            # 2,000 URLs over 200 hosts, 100 ms latency, 64 threads
    .venv/bin/python bench/fetch.py --quick    # 500 URLs over 50 hosts, one repeat
    .venv/bin/python bench/fetch.py --beam     # also time the whole `webtext fetch` command (Beam, 1 worker)
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]


def _serve(conn, latency: float) -> None:
    from support_webserver import LoopbackWeb

    with LoopbackWeb(latency=latency, bombs=False) as web:
        for i in range(len(web.files)):  # load every page before timing starts
            web.page_bytes(i)
        conn.send((web.port, len(web.files), [web.page_path(i) for i in range(len(web.files))]))
        while True:
            msg = conn.recv()
            if msg == "stop":
                return
            if msg == "reset":
                with web.lock:
                    web.log.clear()
                conn.send(True)
            elif msg == "concurrency":
                conn.send(web.max_concurrent_per_host())


def run_baseline(urls: list[tuple[str, str]], port: int, threads: int) -> int:
    import requests

    def get(item):
        host, path = item
        r = requests.get(f"http://127.0.0.1:{port}{path}", headers={"Host": f"{host}:{port}"}, timeout=30)
        return r.status_code == 200 and len(r.content) > 0

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        return sum(pool.map(get, urls))


def run_webtext(urls: list[tuple[str, str]], port: int, threads: int, out: str | None) -> int:
    from webtext.fetch.crawler import CrawlConfig, GroupCrawler, WarcSink
    from webtext.fetch.http import ClientConfig, HttpClient
    from webtext.runtime.stats import dict_counter

    config = CrawlConfig(client=ClientConfig(allow_networks=("127.0.0.1/32",), resolve=(("*.test", "127.0.0.1"),)),
                         per_host=1, host_delay=0.0, concurrency=threads)
    client = HttpClient(config.client)
    _, count = dict_counter()
    links = [{"url": f"http://{h}:{port}{p}", "key": f"{h}{p}", "host": h} for h, p in urls]
    sink = WarcSink(out, "bench", config.warc_max_bytes, config.warc_gzip_level) if out else None
    rows = GroupCrawler(client, config, count).crawl(links, sink)
    if sink:
        sink.commit()
    client.close()
    return sum(r["error"] is None for r in rows)


def run_beam(urls: list[tuple[str, str]], port: int, threads: int, tmp: str) -> int:
    from support_webserver import write_links

    from webtext.cli import main
    from webtext.runtime import datasets

    write_links(f"{tmp}/links", [f"http://{h}:{port}{p}" for h, p in urls])
    rc = main(["fetch", "--links", f"{tmp}/links", "--output", f"{tmp}/fetch", "--resolve", "*.test=127.0.0.1",
               "--allow-network", "127.0.0.1/32", "--host-delay", "0", "--concurrency", str(threads),
               "--workers", "1"])
    assert rc == 0
    return sum(r["error"] is None for r in datasets.read_rows(f"{tmp}/fetch", "log", columns=["error"]))


def timed(fn, *args) -> tuple[int, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    n = fn(*args)
    return n, time.perf_counter() - wall, time.process_time() - cpu


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--urls", type=int, default=2000)
    ap.add_argument("--hosts", type=int, default=200)
    ap.add_argument("--threads", type=int, default=64)
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="500 URLs over 50 hosts, one repeat")
    ap.add_argument("--beam", action="store_true", help="also time the whole `webtext fetch` command once")
    args = ap.parse_args()
    if args.quick:
        args.urls, args.hosts, args.repeats = 500, 50, 1

    parent, child = multiprocessing.Pipe()
    server = multiprocessing.get_context("spawn").Process(target=_serve, args=(child, args.latency), daemon=True)
    server.start()
    port, n_pages, paths = parent.recv()
    per_host = args.urls // args.hosts
    urls = [(f"host{h}.test", paths[(h * per_host + i) % n_pages]) for h in range(args.hosts) for i in range(per_host)]
    print(f"fetch bench: {len(urls)} URLs over {args.hosts} hosts, {args.latency * 1000:.0f} ms latency, "
          f"{args.threads} threads, {args.repeats} repeats (server in its own process)")

    names = ["baseline", "guards", "warc"]
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    worst_per_host = 0
    for rep in range(args.repeats):
        for name in names[rep % 3:] + names[:rep % 3]:  # rotate the order: the machine is noisy
            parent.send("reset")
            parent.recv()
            with tempfile.TemporaryDirectory() as tmp:
                if name == "baseline":
                    n, wall, cpu = timed(run_baseline, urls, port, args.threads)
                else:
                    n, wall, cpu = timed(run_webtext, urls, port, args.threads, tmp if name == "warc" else None)
                    parent.send("concurrency")
                    worst_per_host = max(worst_per_host, max(parent.recv().values()))
            if n != len(urls):
                print(f"  {name}: only {n} of {len(urls)} pages fetched", file=sys.stderr)
            results[name].append((n / wall, cpu / max(n, 1)))
            print(f"  repeat {rep + 1} {name:<8} {n / wall:8.1f} pages/s  {cpu / max(n, 1) * 1000:6.2f} ms CPU/page")

    med = {k: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v)) for k, v in results.items()}
    labels = {"baseline": "baseline (requests.get pool)", "guards": "webtext, every guard on",
              "warc": "webtext, every guard + WARC"}
    for name in names:
        print(f"{labels[name]:<30} {med[name][0]:8.1f} pages/s  {med[name][1] * 1000:6.2f} ms CPU/page"
              + (f"  ratio {med[name][0] / med['baseline'][0]:.2f}" if name != "baseline" else ""))
    print(f"goal: guards/baseline >= 0.8 -> {med['guards'][0] / med['baseline'][0]:.2f}; "
          f"max requests in flight per host (server log): {worst_per_host} (limit 1)")
    if args.beam:
        parent.send("reset")
        parent.recv()
        with tempfile.TemporaryDirectory() as tmp:
            n, wall, cpu = timed(run_beam, urls, port, args.threads, tmp)
        parent.send("concurrency")
        beam_worst = max(parent.recv().values())
        print(f"webtext fetch command (Beam DirectRunner, 1 worker, startup included): {n / wall:8.1f} pages/s, "
              f"{wall:.1f} s, max in flight per host {beam_worst}")
    parent.send("stop")
    server.join(5)
    return 0 if worst_per_host <= 1 else 1


if __name__ == "__main__":
    sys.exit(main())
