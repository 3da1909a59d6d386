"""Benchmark of the links stage (issue 2): generated monthly .zst dumps -> link table.

Runs the stage (Beam DirectRunner, --workers processes) and, in the same process, the baseline the issue
names: a plain single-process Python loop with the stdlib `json` and the same rules over the same files
(plus the same loop with orjson, a stricter reference). Prints lines/s (median of --repeats), the ratios, and
the peak memory (RSS of the process tree, sampled) of the stage for --lines and --big-lines, each measured in
a fresh process so one run's peak does not hide the other's. On a shared machine wall times swing with the
load; the CPU seconds (this process and its workers) are printed beside them.

    .venv/bin/python bench/links.py                 # 1M lines over 4 files; memory at 1M and 4M
    .venv/bin/python bench/links.py --quick         # 100k lines, memory at 100k and 400k
    .venv/bin/python bench/links.py --lines 200000 --big-lines 0 --repeats 3

Generated dumps are cached under --cache-dir (same arguments, same bytes).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import orjson
from rss import PeakRss  # noqa: E402  (bench/ is the script directory)

from webtext.demo.dump import write_sample_dumps
from webtext.links import rules as link_rules
from webtext.links import task as links_task
from webtext.links.pipeline import run_pipeline
from webtext.links.schema import LINKS_SCHEMA
from webtext.runtime import datasets, stats
from webtext.runtime.beam import local_processes, pipeline_options

CACHE_DIR = os.path.join(tempfile.gettempdir(), "webtext-bench-links")
GOAL_LINES_PER_S = 150_000
GOAL_RATIO = 1.5


def dumps(cache_dir: str, lines: int, files: int) -> list[str]:
    out = os.path.join(cache_dir, f"{lines}-{files}")
    done = os.path.join(out, "_done")
    if not os.path.exists(done):
        t = time.time()
        print(f"generating {lines:,} lines over {files} .zst files in {out} ...", file=sys.stderr, flush=True)
        write_sample_dumps(out, lines, files)
        open(done, "w").close()
        print(f"  generated in {time.time() - t:.0f}s", file=sys.stderr)
    return sorted(os.path.join(out, f) for f in os.listdir(out) if f.endswith(".zst"))


def plain_loop(paths: list[str], rules: link_rules.LinkRules, loads, output_dir: str) -> dict:
    """The baseline: one process, one loop over every line, the same rules, one sorted Parquet file."""
    counts, count = stats.dict_counter()
    grouped: dict[str, list] = collections.defaultdict(list)
    errors = []
    for path in paths:
        for ok, item in links_task.file_links(path, rules, count, loads=loads):
            if ok:
                grouped[item[0]].append(item[1])
            else:
                errors.append(item)
    rows = [r for r in (link_rules.merge_link(k, v, rules, count) for k, v in grouped.items()) if r is not None]
    rows.sort(key=lambda r: r["key"])
    with open(os.path.join(output_dir, "plain-links.parquet"), "wb") as f:
        f.write(datasets.table_bytes(rows, LINKS_SCHEMA))
    return dict(counts)


def run_stage(paths: list[str], output_dir: str, workers: int) -> dict:
    args = argparse.Namespace(runner="direct", workers=workers, project=None, region=None, temp_location=None,
                              job_name=None, max_num_workers=None, machine_type=None, beam_option=[])
    # as `webtext links --workers N` runs: the runner in memory, the dumps read in N local processes, which
    # the pipeline reaps as it ends (its PoolMap's teardown), so their CPU time is counted with this run
    return run_pipeline(paths, output_dir, link_rules.LinkRules(), pipeline_options(args, "links"),
                        processes=min(local_processes(args), len(paths)))


def _cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system



def memory_child(paths: list[str], workers: int) -> None:
    import logging

    logging.getLogger().setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as out, PeakRss() as peak:
        t = time.perf_counter()
        counters = run_stage(paths, out, workers)
        seconds = time.perf_counter() - t
    print(json.dumps({"peak_rss": peak.peak, "seconds": seconds, "lines": counters.get("lines_read", 0)}))


def measure_memory(paths: list[str], workers: int) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--memory-child", "--workers", str(workers), *paths]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    import logging

    logging.getLogger().setLevel(logging.ERROR)  # Beam's per-worker start-up warnings
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lines", type=int, default=1_000_000)
    p.add_argument("--big-lines", type=int, default=4_000_000, help="second size for the memory comparison (0: skip)")
    p.add_argument("--files", type=int, default=4)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="--lines 100000 --big-lines 400000 --repeats 2")
    p.add_argument("--cache-dir", default=CACHE_DIR)
    p.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("paths", nargs="*", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.memory_child:
        memory_child(a.paths, a.workers)
        return 0
    if a.quick:
        a.lines, a.big_lines, a.repeats = 100_000, 400_000, 2

    paths = dumps(a.cache_dir, a.lines, a.files)
    mb = sum(os.path.getsize(x) for x in paths) / 1e6
    print(f"{a.lines:,} lines, {a.files} .zst files, {mb:.1f} MB compressed; {os.cpu_count()} cores; "
          f"stage with --workers {a.workers}; median of {a.repeats}", flush=True)

    times: dict[str, list[float]] = collections.defaultdict(list)
    cpu: dict[str, list[float]] = collections.defaultdict(list)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.repeats):  # interleaved, so machine noise hits every contender alike
            for name, fn in (("stage", lambda: run_stage(paths, os.path.join(tmp, "stage"), a.workers)),
                             ("plain json", lambda: plain_loop(paths, link_rules.LinkRules(), json.loads, tmp)),
                             ("plain orjson", lambda: plain_loop(paths, link_rules.LinkRules(), orjson.loads, tmp))):
                t, c = time.perf_counter(), _cpu()
                results[name] = fn()
                times[name].append(time.perf_counter() - t)
                cpu[name].append(_cpu() - c)
                print(f"  run {r + 1} {name:<13} {times[name][-1]:6.2f}s wall {cpu[name][-1]:6.2f}s cpu",
                      file=sys.stderr, flush=True)

    base = {k: v for k, v in results["plain json"].items()}
    if {k: v for k, v in results["stage"].items() if k not in ("links", "duplicate_submission_ids")} != \
            {k: v for k, v in base.items() if k not in ("links", "duplicate_submission_ids")} \
            or results["stage"].get("links") != base.get("links"):
        print(f"MISMATCH stage {results['stage']} vs plain {base}", file=sys.stderr)
        return 1
    lines = results["stage"]["lines_read"]
    med = {k: statistics.median(v) for k, v in times.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    print(f"\n{'':<14}{'median s':>10}{'lines/s':>12}{'stage is':>10}{'cpu s':>9}{'cpu us/line':>13}")
    for name in ("stage", "plain json", "plain orjson"):
        print(f"{name:<14}{med[name]:>10.2f}{lines / med[name]:>12,.0f}{med[name] / med['stage']:>9.2f}x"
              f"{med_cpu[name]:>9.2f}{1e6 * med_cpu[name] / lines:>13.2f}")
    print(f"load average during the runs: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores "
          f"(cpu s = user+sys of this process and its workers)")
    kept = results["stage"].get("kept_submissions", 0)
    print(f"kept {kept:,} submissions ({100 * kept / lines:.1f}%), {results['stage'].get('links', 0):,} links; "
          f"counts identical to the plain loop")
    speed, ratio = lines / med["stage"], med["plain json"] / med["stage"]
    print(f"goal >= {GOAL_LINES_PER_S:,} lines/s: {'met' if speed >= GOAL_LINES_PER_S else 'MISSED'} "
          f"({speed:,.0f}); goal >= {GOAL_RATIO}x plain json loop: {'met' if ratio >= GOAL_RATIO else 'MISSED'} "
          f"({ratio:.2f}x)")

    # A .zst made with --long=31 makes its decoder keep up to 2 GiB of decoded history, so a worker's memory
    # follows the size of the file it is decoding (capped at 2 GiB), not the size of the dump: compare more
    # files of the same size (the dump grows) apart from larger files.
    runs = [(a.lines, a.files, "")]
    if a.big_lines:
        growth = a.big_lines // a.lines
        runs += [(a.big_lines, a.files * growth, f"{growth}x the files, same size"),
                 (a.big_lines, a.files, f"{growth}x larger files")]
    print("\npeak memory of the stage (RSS of the process tree, sampled; fresh process each):")
    for n, files, note in runs:
        m = measure_memory(dumps(a.cache_dir, n, files), a.workers)
        print(f"  {n:>10,} lines in {files:>2} files: {m['peak_rss'] / 2**20:7.0f} MiB  "
              f"({m['lines'] / m['seconds']:,.0f} lines/s)  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
