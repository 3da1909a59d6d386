"""The whole path on a built-in offline sample: Reddit dump → links → fetch → extract → dedup → tokenizer →
shards → a tiny GPT-2 trained for about a minute → the build report and a sample of its text.

The sample is a small web made from real text that ships with Python (its documentation and module
docstrings; see webtext/demo/web.py), in varied page templates with boilerplate, with planted duplicates,
failing and hostile URLs and a robots.txt, served from 127.0.0.1. A submissions dump links to it with scores
around the 3-karma line. The corpus is built with jobs/sample-local.toml and the model trained with
jobs/train-demo.toml. Nothing is downloaded; every figure printed is read from this run's output.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import orjson
import zstandard

EXAMPLE = """\
  webtext demo
  webtext demo --output /tmp/webtext-demo --train-seconds 30
"""

DEMO_JOB = "sample-local.toml"
DEMO_TRAIN = "train-demo.toml"
DEMO_PORT = 8765          # a fixed port keeps the dump (and so every stage) unchanged between runs
TRAIN_SECONDS = 60
SAMPLE_PROMPT = "The"


def _jobs_dir() -> str:
    return os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "jobs")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", default="demo-out", metavar="DIR",
                        help="root of every stage's output, the report and the model run (default: demo-out)")
    parser.add_argument("--job", default=os.path.join(_jobs_dir(), DEMO_JOB),
                        help=f"the build job (default: jobs/{DEMO_JOB})")
    parser.add_argument("--train-config", default=os.path.join(_jobs_dir(), DEMO_TRAIN),
                        help=f"the training config (default: jobs/{DEMO_TRAIN})")
    parser.add_argument("--train-seconds", type=float, default=TRAIN_SECONDS,
                        help=f"wall-clock budget of the training run (default: {TRAIN_SECONDS})")
    parser.add_argument("--workers", type=int, help="local worker processes per stage (default: the job's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample web and dump (default: 0)")


def write_dump(path: str, submissions: list[dict]) -> bool:
    """The sample dump as a .zst with a 2^31 window like the published ones, plus three malformed lines.
    Rewritten only when its content changes, so a rerun of the demo skips finished stages."""
    lines = [orjson.dumps(s) for s in submissions]
    lines[len(lines) // 3:len(lines) // 3] = [b'{"id": "broken", "url": ', b'{"id": "nourl", "score": 5}',
                                              b'{"id": "badscore", "url": "http://x.test/", "score": "many"}']
    raw = b"\n".join(lines) + b"\n"
    if os.path.exists(path):
        with open(path, "rb") as f:
            if zstandard.ZstdDecompressor(max_window_size=2**31).decompress(f.read()) == raw:
                return False
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=31)
    data = zstandard.ZstdCompressor(compression_params=params).compress(raw)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "wb") as f:
        f.write(data)
    os.replace(path + ".tmp", path)
    return True


def _free_port(preferred: int) -> int:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            return 0


def main(args: argparse.Namespace) -> int:
    from webtext import build
    from webtext.demo import web as sample_web

    t0 = time.time()
    root = args.output
    os.makedirs(root, exist_ok=True)
    job = build.load_job(args.job)
    job.setdefault("job", {})["output"] = root
    web = sample_web.make_sample_web(seed=args.seed)
    with sample_web.SampleServer(web, port=_free_port(DEMO_PORT)) as server:
        subs = sample_web.submissions(web, server.port, seed=args.seed)
        dump = os.path.join(root, "dumps", "RS_2015-01.zst")
        write_dump(dump, subs)
        job.setdefault("links", {})["input"] = [dump]
        print(f"sample web: {len(web.pages)} pages on {len(web.robots)} hosts at 127.0.0.1:{server.port}; "
              f"dump: {len(subs)} submissions in {dump}", file=sys.stderr)
        report = build.build(job, runner_overrides={"workers": args.workers},
                             log=lambda m: print(m, file=sys.stderr, flush=True))
    print(report["markdown"])
    run_dir = os.path.join(root, "run-demo")
    text = train_and_sample(os.path.join(root, "shards"), args.train_config, run_dir, args.train_seconds)
    print(f"## A sample from the model ({run_dir})\n\n{text}\n")
    print(f"demo finished in {time.time() - t0:.0f}s; outputs under {root}/ (try `webtext inspect {root}/shards`)",
          file=sys.stderr)
    return 0


def train_and_sample(shards_dir: str, config: str, run_dir: str, seconds: float) -> str:
    """Train from scratch (a rerun of the demo starts a fresh run) and sample from the checkpoint."""
    import shutil

    from webtext.model import checkpoint, sample, train
    from webtext.model.config import load_job as load_train_job

    shutil.rmtree(run_dir, ignore_errors=True)
    summary = train.train(shards_dir, load_train_job(config), run_dir, max_seconds=seconds)
    model, tok_path, info = checkpoint.load_any(run_dir)
    from tokenizers import Tokenizer

    text = sample.sample(model, Tokenizer.from_file(tok_path), SAMPLE_PROMPT, info["eot_id"],
                         max_new_tokens=80, temperature=0.8, top_k=40, seed=0)[0]
    loss = f"{summary['best_val_loss']:.3f}" if summary.get("best_val_loss") is not None else "n/a"
    print(f"trained {summary['step']} steps; best validation loss {loss}", file=sys.stderr)
    return SAMPLE_PROMPT + text
