"""End-to-end benchmark: a whole `webtext build` over a loopback web of real pages, against the extraction
ceiling (trafilatura over the same pages in a 2-process pool), in the same run.

The web serves the real pages of ../shared/data/web/trafilatura-eval on 50 virtual hosts (plus --duplicates
of them again under second URLs) from its own process, with no added latency and host delay 0, so the build
is measured, not the politeness. The goal: whole-build wall time <= 1.3x the ceiling, i.e. every stage but
extraction is nearly free. Medians over --repeats; each build starts from an empty output root.

The stage does less extraction work than the ceiling, and the second ceiling does the same to show what the
other stages cost: its extractor children skip the metadata webtext does not keep (author, categories, tags,
license: ~30% of trafilatura's time), and the stage extracts a duplicate's HTML once (its title and date are
still worked out for its own URL); the second ceiling skips the metadata and extracts each distinct page once.

On Linux it also prints each stage's CPU-seconds (all cores busy time from /proc/stat, the web server's
included: nothing else should run) and the CPU floor: the build's CPU-seconds spread over every core with no
idle moment, the least wall time this machine could take for the build as written.

Each build runs in this process by default, so repeats after the first find the imports done and the
pool children of earlier stages started. `--fresh` runs every build as the command a user runs instead,
`webtext build --job FILE` in a new process, timed from its start to its exit: interpreter start, imports,
every pool's start-up and the exit included (per-stage CPU is then not shown).

    .venv/bin/python bench/e2e.py            # all pages, 5 repeats (single repeats swing ±10% on a 2-core VM)
    .venv/bin/python bench/e2e.py --fresh    # the same, each build a `webtext build` process
    .venv/bin/python bench/e2e.py --quick    # 200 pages, 1 repeat
    .venv/bin/python bench/e2e.py --fresh --baseline REV   # each build paired with one of git revision REV
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import trafilatura  # noqa: E402
from e2e_job import job_for, toml_of, write_dump  # noqa: E402

from webtext import build  # noqa: E402
from webtext.extract.sandbox import ExtractSettings, skip_unkept_metadata  # noqa: E402

HOSTS = 50
SETTINGS = ExtractSettings().kwargs()


def tree_environment(tree: Path) -> tuple[dict, Path]:
    """(environment, working directory) under which `python -m webtext.cli` runs the code of `tree`:
    `python -m` puts the working directory first on sys.path, before PYTHONPATH, so it runs in the tree."""
    return {**os.environ, "PYTHONPATH": str(tree)}, tree


def check_tree(tree: Path) -> None:
    """Fail unless a process started as `fresh_build` starts it imports `tree`'s webtext."""
    env, cwd = tree_environment(tree)
    found = subprocess.run([sys.executable, "-c", "import webtext; print(webtext.__file__)"], cwd=cwd, env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    if not Path(found).resolve().is_relative_to(tree.resolve()):
        raise RuntimeError(f"a build of {tree} would import {found}")
    print(f"{tree}: runs {found}", file=sys.stderr)


def fresh_build(job: dict, work: Path, tree: Path | None = None) -> dict:
    """`webtext build --job FILE` as a user runs it, in a new process: its report (funnel, stage timings).
    The output goes to files, so the time is the command's, as a shell waits for it. With `tree`, the code of
    that checkout runs (`python -m webtext.cli` with the tree first on PYTHONPATH), for a paired comparison."""
    job_file = work / "job.toml"
    job_file.write_text(toml_of(job))
    if tree is None:
        command, env, cwd = [str(Path(sys.executable).with_name("webtext"))], None, None
    else:
        command, env, cwd = [sys.executable, "-m", "webtext.cli"], *tree_environment(tree)
    with open(work / "build.out", "wb") as out, open(work / "build.err", "wb") as err:
        status = subprocess.run([*command, "build", "--job", str(job_file)], stdout=out, stderr=err,
                                env=env, cwd=cwd).returncode
    if status:
        raise RuntimeError(f"fresh build failed ({status}):\n{(work / 'build.err').read_text()[-3000:]}")
    return json.loads((Path(job["job"]["output"]) / "report.json").read_text())


def _extract(body: bytes) -> str | None:
    return trafilatura.extract(body.decode("utf-8", errors="replace"), **SETTINGS)


def _serve(pages: int, conn) -> None:
    from support_webserver import LoopbackWeb

    web = LoopbackWeb(pages=pages, bombs=False).warm().start()
    conn.send(web.port)
    conn.recv()  # until the benchmark is done
    web.close()


def ceiling(bodies: list[bytes], like_the_stage: bool = False) -> float:
    """trafilatura over the pages in a 2-process pool; `like_the_stage`: its children skip the metadata the
    stage does not keep, as the stage's extractor children do (sandbox.skip_unkept_metadata)."""
    start = time.perf_counter()
    with multiprocessing.Pool(2, initializer=skip_unkept_metadata if like_the_stage else None) as pool:
        for _ in pool.imap_unordered(_extract, bodies, chunksize=4):
            pass
    return time.perf_counter() - start


def busy_cpu_seconds() -> float | None:
    """CPU-seconds every core together has been busy since boot (Linux), None where unknown."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class StageCpu:
    """A `build` log callback that notes the busy CPU-seconds of the machine during each stage."""

    def __init__(self):
        self.cpu: dict[str, float] = {}
        self._start: tuple[str, float] | None = None

    def __call__(self, message: str) -> None:
        stage, _, rest = message.partition("] ")
        stage = stage.lstrip("[")
        now = busy_cpu_seconds()
        if now is None:
            return
        if rest.startswith("webtext "):
            self._start = (stage, now)
        elif rest.startswith("done") and self._start and self._start[0] == stage:
            self.cpu[stage] = now - self._start[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=None, help="real pages served (default: all)")
    parser.add_argument("--duplicates", type=int, default=50, help="pages also served under a second URL")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2, help="local processes per stage (--workers)")
    parser.add_argument("--quick", action="store_true", help="200 pages, 1 repeat")
    parser.add_argument("--fresh", action="store_true",
                        help="run each build in a new interpreter, timed from its start (as `webtext build`)")
    parser.add_argument("--keep", type=Path, default=None, help="copy the last build's output root here")
    parser.add_argument("--baseline", metavar="REV",
                        help="with --fresh: pair every build with one of git revision REV (a temporary worktree), "
                             "in alternating order, both run as `python -m webtext.cli` from their own tree, and "
                             "print the paired ratios (the cost of a change)")
    args = parser.parse_args()
    if args.baseline and not args.fresh:
        parser.error("--baseline needs --fresh (the baseline's code runs in its own process)")
    if args.quick:
        args.pages, args.repeats, args.duplicates = 200, 1, 20

    from support_webserver import LoopbackWeb, page_files

    n = args.pages or len(page_files())
    builds, ceilings, slim_ceilings, documents = [], [], [], None
    build_cpu, ceiling_cpu, stage_rows = [], [], []  # CPU-seconds per repeat; (stage, wall, cpu) per repeat
    # The web is served from its own process, as the real web is elsewhere: its threads must not share
    # this process's interpreter lock with the build (it still shares the cores).
    web = LoopbackWeb(pages=n, bombs=False)
    conn, child_conn = multiprocessing.Pipe()
    server = multiprocessing.get_context("fork").Process(target=_serve, args=(n, child_conn), daemon=True)
    server.start()
    web.port = conn.recv()
    baseline_builds: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        old_tree = None
        if args.baseline:
            old_tree = Path(tmp) / "baseline"
            subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(old_tree), args.baseline],
                           check=True, capture_output=True)
            check_tree(REPO)
            check_tree(old_tree)
        urls = [web.url(f"host{i % HOSTS}.test", web.page_path(i)) for i in range(n)]
        urls += [web.url(f"host{(i + 1) % HOSTS}.test", web.page_path(i)) for i in range(args.duplicates)]
        dump = Path(tmp) / "RS_bench.zst"
        write_dump(dump, urls)
        bodies = [web.page_bytes(i) for i in range(n)] + [web.page_bytes(i) for i in range(args.duplicates)]
        for r in range(args.repeats):
            cpu0 = busy_cpu_seconds()
            ceilings.append(ceiling(bodies))
            cpu1 = busy_cpu_seconds()
            slim_ceilings.append(ceiling(list(dict.fromkeys(bodies)), like_the_stage=True))
            cpu_build = busy_cpu_seconds()
            root = Path(tmp) / f"out{r}"
            stage_cpu = StageCpu()
            start = time.perf_counter()
            job = job_for(root, dump, web.address, args.workers)
            if args.baseline:
                # Alternate which side goes first, so neither always finds the machine's caches warmer.
                sides = [("new", REPO), ("old", old_tree)][:: 1 if r % 2 == 0 else -1]
                for side, tree in sides:
                    shutil.rmtree(root, ignore_errors=True)
                    t0 = time.perf_counter()
                    side_report = fresh_build(job, Path(tmp), tree)
                    took = time.perf_counter() - t0
                    if side == "new":
                        report = side_report
                        builds.append(took)
                    else:
                        baseline_builds.append(took)
            elif args.fresh:
                report = fresh_build(job, Path(tmp))
            else:
                report = build.build(job, runner_overrides={}, log=stage_cpu)
            if not args.baseline:
                builds.append(time.perf_counter() - start)
            cpu2 = busy_cpu_seconds()
            if cpu0 is not None and not args.baseline:  # a baseline build would count as this one's
                ceiling_cpu.append(cpu1 - cpu0)
                build_cpu.append(cpu2 - cpu_build)
            funnel = dict(report["funnel"])
            documents = funnel.get("documents after dedup")
            stage_seconds = {s: e["seconds"] for s, e in report["stages"].items() if e["seconds"] is not None}
            stage_rows.append({s: (v, stage_cpu.cpu.get(s)) for s, v in stage_seconds.items()})
            print(f"repeat {r + 1}: build {builds[-1]:.1f}s, ceiling {ceilings[-1]:.1f}s "
                  f"(like the stage {slim_ceilings[-1]:.1f}s); stages "
                  + ", ".join(f"{s} {v:.1f}s" for s, v in stage_seconds.items()), file=sys.stderr)
        if old_tree is not None:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(old_tree)], check=True)
        if args.keep:
            shutil.rmtree(args.keep, ignore_errors=True)
            shutil.copytree(root, args.keep)
            shutil.copy(dump, args.keep / dump.name)
    conn.send("stop")
    server.join(5)
    b, c, slim = statistics.median(builds), statistics.median(ceilings), statistics.median(slim_ceilings)
    pages = len(urls)
    print(f"pages: {pages:,} ({n:,} real + {args.duplicates} duplicates), documents kept: {documents:,}")
    how = "each in a fresh process" if args.fresh else "in this process"
    print(f"whole build   : {b:7.1f} s  {pages / b:7.1f} pages/s   (median of {args.repeats}, {how})")
    print(f"Pool(2) ceiling: {c:7.1f} s  {pages / c:7.1f} pages/s   (trafilatura only)")
    print(f"  the same work as the stage's extraction (unkept metadata skipped, each distinct page once): "
          f"{slim:.1f} s")
    paired = [x / y for x, y in zip(builds, ceilings)]
    print(f"build / ceiling wall time: {b / c:.2f}x   (goal <= 1.3x); per repeat "
          f"{', '.join(f'{x:.2f}' for x in paired)}, median of those {statistics.median(paired):.2f}")
    print(f"build / ceiling doing the stage's extraction work: {b / slim:.2f}x   (what the other stages cost)")
    if baseline_builds:
        old = statistics.median(baseline_builds)
        pairs = [x / y for x, y in zip(builds, baseline_builds)]
        print(f"baseline {args.baseline}: {old:7.1f} s  (median of {len(baseline_builds)}); this tree / baseline "
              f"{b / old:.3f}x; paired per repeat {', '.join(f'{x:.3f}' for x in pairs)}, median of those "
              f"{statistics.median(pairs):.3f}x")
    if build_cpu:
        cores = os.cpu_count() or 1
        print(f"\nCPU-seconds (all cores, web server included), medians; {cores} cores:")
        for stage in stage_rows[-1]:
            walls = [row[stage][0] for row in stage_rows if stage in row]
            cpus = [row[stage][1] for row in stage_rows if stage in row and row[stage][1] is not None]
            if cpus:
                w, u = statistics.median(walls), statistics.median(cpus)
                print(f"  {stage:<10} wall {w:5.1f} s  CPU {u:5.1f} s  ({u / w:.2f} cores busy)")
        bc, cc = statistics.median(build_cpu), statistics.median(ceiling_cpu)
        print(f"  ceiling    wall {c:5.1f} s  CPU {cc:5.1f} s  ({cc / c:.2f} cores busy)")
        print(f"CPU floor of the build: {bc:.1f} CPU-s / {cores} cores = {bc / cores:.1f} s = "
              f"{bc / cores / c:.2f}x the ceiling (no build as written can beat this on this machine)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
