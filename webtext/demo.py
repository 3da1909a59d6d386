"""Run every stage that exists on a built-in offline sample, and show what each one did.

Generates a small Reddit submission dump (monthly .zst files with the real field mix, scores around the
3-karma line, some malformed lines; see webtext/sample_dump.py) and runs the links stage on it. Nothing is
downloaded.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

EXAMPLE = """\
  webtext demo
  webtext demo --output /tmp/webtext-demo --lines 20000
"""

DEMO_LINES = 6000
DEMO_MONTHS = ("2017-11", 3)   # the last month, 2018-01, shows the "created before 2018" rule at work
DEMO_MALFORMED_EVERY = 500


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", metavar="DIR",
                        help="where the sample dumps and every stage's output go (default: a new temp directory)")
    parser.add_argument("--lines", type=int, default=DEMO_LINES,
                        help=f"submissions in the sample dump (default: {DEMO_LINES:,})")
    parser.add_argument("--workers", type=int, default=1, help="local worker processes per stage (default: 1)")


def run_links(root: str, lines: int, workers: int) -> dict:
    from webtext.pipeline import links, stats
    from webtext.pipeline.beam import pipeline_options
    from webtext.sample_dump import write_sample_dumps

    first, count = DEMO_MONTHS
    dumps = write_sample_dumps(os.path.join(root, "dumps"), lines, files=count, first_month=first,
                               malformed_every=DEMO_MALFORMED_EVERY)
    print(f"sample dump: {lines:,} submissions in {', '.join(os.path.basename(p) for p in dumps)}", file=sys.stderr)
    out = os.path.join(root, "links")
    args = argparse.Namespace(runner="direct", workers=workers, project=None, region=None, temp_location=None,
                              job_name=None, max_num_workers=None, machine_type=None, beam_option=[])
    rules = links.LinkRules()
    result = links.run(dumps, out, rules, pipeline_options(args, "links"))
    stats.print_funnel(f"links -> {out}", links.funnel(result["counters"], rules))
    return result


def main(args: argparse.Namespace) -> int:
    root = args.output or tempfile.mkdtemp(prefix="webtext-demo-")
    os.makedirs(root, exist_ok=True)
    result = run_links(root, args.lines, args.workers)
    errors = sum(v for k, v in result["counters"].items() if k.startswith("error_"))
    print(f"{errors} malformed lines went to {os.path.join(root, 'links')}/errors-*.parquet", file=sys.stderr)
    print(f"demo output: {root}", file=sys.stderr)
    return 0
