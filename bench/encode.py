"""Benchmark of the encode stage (issue 6): documents -> Arrow token shards, in MB of text per second.

The corpus is the main text of the real trafilatura-eval pages (../shared/data), repeated under fresh ids to
--mb megabytes and written as a documents dataset. Every method uses the same tokenizer.json (GPT-2 sized,
trained once on the pages) and runs --repeats times, interleaved (medians reported). The stage and the
ceiling run side by side in the benchmark's own process, in alternating order; nanoGPT and datatrove, tools
with process pools of their own, run in a fresh process each:

  webtext encode     the stage: Beam DirectRunner with --workers, Parquet in, shards + manifest out
  ceiling            encode_batch alone over the texts already in memory (ids as numpy, nothing written);
                     the faster of encode_batch and encode_batch_fast is the ceiling
  nanogpt            nanoGPT's prepare.py: a multiprocessing pool encodes each document, then one flat uint16
                     np.memmap file is filled (texts preloaded, untimed)
  datatrove          datatrove's DocumentTokenizer (ParquetReader -> DocumentTokenizer, LocalPipelineExecutor
                     with --workers tasks); pip-installed into the venv at run time if missing, skipped if not

Peak memory (summed RSS of a process tree) is measured apart, one run of each method in a process of its
own, and the stage's also at --mb / 4: it should not grow with the corpus.

    .venv/bin/python bench/encode.py                  # 200 MB, 3 repeats
    .venv/bin/python bench/encode.py --quick          # 20 MB, 2 repeats
    .venv/bin/python bench/encode.py --mb 50 --repeats 3 --skip-datatrove

Base texts, the tokenizer and corpora are cached under --cache-dir.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from rss import PeakRss  # noqa: E402  (bench/ is the script directory)

PAGES = os.path.join(REPO, "..", "shared", "data", "web", "trafilatura-eval")
SHARD_TOKENS = 10_000_000       # ~20 MB shards: several per corpus, so the memory comparison means something
CACHE_DIR = os.path.join(tempfile.gettempdir(), "webtext-bench-encode")
VOCAB_SIZE = 50257
ROWS_PER_FILE = 4_000           # documents per input file (one Parquet row group): the same at every --mb
GOAL_RATIO = 0.9
# Texts per encode call in the ceiling: large enough that the tokenizer's threads never wait between calls,
# and fixed, so the ceiling does not move when the stage's --batch-bytes default does.
CEILING_BATCH_BYTES = 4 << 20


# ---- inputs ---------------------------------------------------------------------------------------------

def _extract(path: str) -> str | None:
    import trafilatura

    with open(path, "rb") as f:
        return trafilatura.extract(gzip.decompress(f.read()))


def base_texts(cache_dir: str, pages_dir: str = PAGES) -> list[str]:
    path = os.path.join(cache_dir, "base_texts.json")
    if not os.path.exists(path):
        import multiprocessing

        pages = sorted(os.path.join(pages_dir, f) for f in os.listdir(pages_dir) if f.endswith(".html.gz"))
        print(f"extracting the text of {len(pages)} pages ...", file=sys.stderr, flush=True)
        with multiprocessing.Pool() as pool:
            texts = [t for t in pool.map(_extract, pages, chunksize=8) if t]
        with open(path + ".tmp", "w") as f:
            json.dump(texts, f)
        os.replace(path + ".tmp", path)
    with open(path) as f:
        return json.load(f)


def tokenizer_dir(cache_dir: str, texts: list[str]) -> str:
    from webtext.tokenizer import bpe

    out = os.path.join(cache_dir, f"tokenizer-{VOCAB_SIZE}")
    if not os.path.exists(os.path.join(out, bpe.META_FILE)):
        print(f"training a {VOCAB_SIZE}-token tokenizer on {sum(map(len, texts)):,} characters ...",
              file=sys.stderr, flush=True)
        bpe.write(bpe.train(texts, vocab_size=VOCAB_SIZE), out, {"source": "bench"})
    return out


def corpus_dir(cache_dir: str, texts: list[str], mb: float) -> str:
    """A documents dataset of the texts repeated (fresh ids) until at least `mb` MB of UTF-8 text."""
    import pyarrow as pa

    from webtext.runtime import datasets

    out = os.path.join(cache_dir, f"docs-{mb:g}mb-{ROWS_PER_FILE}")
    if os.path.exists(os.path.join(out, "_done")):
        return out
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    schema = pa.schema([("doc_id", pa.string()), ("text", pa.string())])
    sizes = [len(t.encode("utf-8")) for t in texts]
    rows, total, r = [], 0, 0
    while total < mb * 1e6:
        for i, (t, n) in enumerate(zip(texts, sizes)):
            rows.append({"doc_id": f"r{r:05d}-{i:05d}", "text": t})
            total += n
        r += 1
    files = max(1, -(-len(rows) // ROWS_PER_FILE))
    for k in range(files):
        part = rows[k::files]
        with open(os.path.join(out, datasets.shard_name("documents", k, files)), "wb") as f:
            f.write(datasets.table_bytes(part, schema))
    open(os.path.join(out, "_done"), "w").close()
    return out


def load_texts(docs: str) -> list[str]:
    from webtext.runtime import datasets

    return datasets.read_table(docs, "documents", ["text"]).column("text").to_pylist()


# ---- methods (each runs in a child process) -------------------------------------------------------------

def run_webtext(docs: str, tok: str, workers: int, shard_tokens: int) -> dict:
    from webtext.encode import pipeline as encode
    from webtext.encode.plan import EncodeConfig
    from webtext.runtime.beam import pipeline_options

    out = tempfile.mkdtemp(prefix="bench-encode-")
    args = argparse.Namespace(runner="direct", workers=workers, project=None, region=None, temp_location=None,
                              job_name=None, max_num_workers=None, machine_type=None, beam_option=[])
    try:
        t = time.perf_counter()
        manifest = encode.encode(docs, encode.read_tokenizer(tok), out, EncodeConfig(shard_tokens=shard_tokens),
                                 pipeline_options(args, "encode")).manifest
        return {"seconds": time.perf_counter() - t, "tokens": manifest["totals"]["tokens"]}
    finally:
        shutil.rmtree(out, ignore_errors=True)


def run_ceiling(docs: str, tok_dir: str, fast: bool) -> dict:
    import numpy as np

    from webtext.encode import pipeline as encode

    texts = load_texts(docs)
    # The stage's own per-process tokenizer: one made and dropped per repeat leaves ~50-90 MB behind once it
    # has encoded (tokenizers 0.23), and this process, which runs the stage too, slowed run after run
    # (ceiling_fast 4.5 -> 2.7 MB/s over 5 repeats while the methods in fresh processes held steady).
    tok = encode.encoding_tokenizer(tok_dir)
    batches, batch, size = [], [], 0
    for t in texts:
        batch.append(t)
        size += len(t) + 1
        if size >= CEILING_BATCH_BYTES:
            batches.append(batch)
            batch, size = [], 0
    batches.append(batch)
    call = tok.encode_batch_fast if fast else tok.encode_batch
    tokens = 0
    t0 = time.perf_counter()
    for b in batches:
        for e in call(b, add_special_tokens=False):
            tokens += len(np.array(e.ids, dtype=np.uint16)) + 1
    return {"seconds": time.perf_counter() - t0, "tokens": tokens}


_NANO_TOK = None


def _nano_init(tok_json: str):
    global _NANO_TOK
    from tokenizers import Tokenizer

    _NANO_TOK = Tokenizer.from_str(tok_json)
    _NANO_TOK.encode_special_tokens = True


def _nano_process(text: str):
    # nanoGPT: ids = enc.encode_ordinary(example['text']); ids.append(enc.eot_token)
    ids = _NANO_TOK.encode(text, add_special_tokens=False).ids
    ids.append(_NANO_EOT)
    return ids


_NANO_EOT = VOCAB_SIZE - 1


def run_nanogpt(docs: str, tok_dir: str, workers: int) -> dict:
    import multiprocessing

    import numpy as np

    texts = load_texts(docs)
    with open(os.path.join(tok_dir, "tokenizer.json")) as f:
        tok_json = f.read()
    out = tempfile.mkdtemp(prefix="bench-nanogpt-")
    try:
        t0 = time.perf_counter()
        with multiprocessing.get_context("fork").Pool(workers, _nano_init, (tok_json,)) as pool:
            tokenized = pool.map(_nano_process, texts, chunksize=64)
        total = sum(len(ids) for ids in tokenized)
        arr = np.memmap(os.path.join(out, "train.bin"), dtype=np.uint16, mode="w+", shape=(total,))
        idx = 0
        for ids in tokenized:
            arr[idx:idx + len(ids)] = ids
            idx += len(ids)
        arr.flush()
        return {"seconds": time.perf_counter() - t0, "tokens": total}
    finally:
        shutil.rmtree(out, ignore_errors=True)


def ensure_datatrove() -> str | None:
    """None when datatrove imports (installing it into this venv first if needed), else why not."""
    try:
        import datatrove  # noqa: F401
        return None
    except ImportError:
        pass
    print("datatrove is missing: pip install -c constraints.txt datatrove (benchmark only, not a dependency)",
          file=sys.stderr, flush=True)
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "-c", os.path.join(REPO, "constraints.txt"),
                        "datatrove"], capture_output=True, text=True)
    if r.returncode != 0:
        return "pip install datatrove failed: " + (r.stderr.strip().splitlines() or ["?"])[-1]
    check = subprocess.run([sys.executable, "-c", "import datatrove.pipeline.tokens"], capture_output=True, text=True)
    if check.returncode != 0:
        return "datatrove does not import: " + (check.stderr.strip().splitlines() or ["?"])[-1]
    return None


def run_datatrove(docs: str, tok_dir: str, workers: int) -> dict:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.readers import ParquetReader
    from datatrove.pipeline.tokens import DocumentTokenizer

    out = tempfile.mkdtemp(prefix="bench-datatrove-")
    try:
        t0 = time.perf_counter()
        LocalPipelineExecutor(
            pipeline=[
                ParquetReader(docs, glob_pattern="documents-*.parquet", text_key="text", id_key="doc_id"),
                DocumentTokenizer(os.path.join(out, "tokens"),
                                  tokenizer_name_or_path=os.path.join(tok_dir, "tokenizer.json"),
                                  eos_token="<|endoftext|>"),
            ],
            tasks=workers, workers=workers, logging_dir=os.path.join(out, "logs"),
        ).run()
        seconds = time.perf_counter() - t0
        tokens = sum(os.path.getsize(os.path.join(dp, f)) // 2 for dp, _, fs in os.walk(os.path.join(out, "tokens"))
                     for f in fs if f.endswith(".ds"))
        return {"seconds": seconds, "tokens": tokens}
    finally:
        shutil.rmtree(out, ignore_errors=True)



def child(method: str, docs: str, tok: str, workers: int, shard_tokens: int) -> None:
    with PeakRss() as peak:
        if method == "webtext":
            r = run_webtext(docs, tok, workers, shard_tokens)
        elif method in ("ceiling", "ceiling_fast"):
            r = run_ceiling(docs, tok, fast=method == "ceiling_fast")
        elif method == "nanogpt":
            r = run_nanogpt(docs, tok, workers)
        elif method == "datatrove":
            r = run_datatrove(docs, tok, workers)
        else:
            raise SystemExit(f"unknown method {method}")
    print(json.dumps({**r, "peak_rss": peak.peak}))


def run_here(method: str, docs: str, tok: str, workers: int, shard_tokens: int = SHARD_TOKENS) -> dict:
    """One timed run of the stage or of a ceiling in this process."""
    if method.startswith("webtext_w"):
        return run_webtext(docs, tok, int(method[len("webtext_w"):]), shard_tokens)
    return run_ceiling(docs, tok, fast=method == "ceiling_fast")


def measure(method: str, docs: str, tok: str, workers: int, shard_tokens: int = SHARD_TOKENS) -> dict:
    if method.startswith("webtext_w"):
        method, workers = "webtext", int(method[len("webtext_w"):])
    env = dict(os.environ, TOKENIZERS_PARALLELISM="true")
    cmd = [sys.executable, os.path.abspath(__file__), "--child", method, "--docs", docs, "--tokenizer", tok,
           "--workers", str(workers), "--shard-tokens", str(shard_tokens)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"{method} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def paired(ours: list[dict], theirs: list[dict]) -> str:
    """Speed ratios repeat by repeat (the two ran back to back, so a slow spell of the machine hits both)."""
    ratios = [b["seconds"] / a["seconds"] for a, b in zip(ours, theirs)]
    return f"per repeat: {', '.join(f'{x:.2f}' for x in ratios)}; median of those {statistics.median(ratios):.2f}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mb", type=float, default=200.0, help="corpus size in MB of text (default: 200)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, default=2, help="processes for nanogpt and datatrove (default: 2)")
    p.add_argument("--stage-workers", type=int, default=1,
                   help="Beam workers for webtext encode (default: 1: encode_batch already uses every core)")
    p.add_argument("--quick", action="store_true", help="--mb 20 --repeats 2")
    p.add_argument("--skip-datatrove", action="store_true")
    p.add_argument("--skip-memory", action="store_true", help="skip the second, smaller run for peak memory")
    p.add_argument("--cache-dir", default=CACHE_DIR)
    p.add_argument("--pages", default=PAGES, help="the trafilatura-eval pages (default: ../shared/data/web/...)")
    p.add_argument("--shard-tokens", type=int, default=SHARD_TOKENS,
                   help=f"webtext encode --shard-tokens (default: {SHARD_TOKENS:,})")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--docs", help=argparse.SUPPRESS)
    p.add_argument("--tokenizer", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child, args.docs, args.tokenizer, args.workers, args.shard_tokens)
        return 0
    if args.quick:
        args.mb, args.repeats = 20.0, 2
    if not os.path.isdir(args.pages):
        print(f"shared pages missing: {args.pages}", file=sys.stderr)
        return 2
    os.makedirs(args.cache_dir, exist_ok=True)
    texts = base_texts(args.cache_dir, args.pages)
    tok = tokenizer_dir(args.cache_dir, texts)
    docs = corpus_dir(args.cache_dir, texts, args.mb)
    mb = sum(len(t.encode("utf-8")) for t in load_texts(docs)) / 1e6
    print(f"corpus: {mb:,.1f} MB of text from {len(texts)} real pages (repeated), tokenizer vocab {VOCAB_SIZE:,}, "
          f"{args.workers} workers, {os.cpu_count()} cores, {args.repeats} repeats", flush=True)

    stage = f"webtext_w{args.stage_workers}"
    # The stage and its ceiling run side by side in this process, in alternating order; the baselines that
    # are tools of their own (process pools) run in child processes, as they would be run.
    here = [stage, "ceiling", "ceiling_fast"]
    methods = here + ["nanogpt"]
    skipped = {}
    if args.skip_datatrove:
        skipped["datatrove"] = "--skip-datatrove"
    else:
        why = ensure_datatrove()
        if why:
            skipped["datatrove"] = why
        else:
            methods.append("datatrove")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")  # as in the child processes
    results = collections.defaultdict(list)
    for rep in range(args.repeats):  # interleaved, so machine noise hits every method alike
        for m in (methods if rep % 2 == 0 else here[::-1] + methods[len(here):]):
            try:
                results[m].append(run_here(m, docs, tok, args.workers, args.shard_tokens) if m in here
                                  else measure(m, docs, tok, args.workers, args.shard_tokens))
            except RuntimeError as e:
                print(f"  {e}", file=sys.stderr)
                skipped[m] = "failed (see stderr)"
            last = results[m][-1] if results[m] else None
            if last:
                print(f"  repeat {rep + 1} {m:<13} {mb / last['seconds']:7.2f} MB/s  ({last['seconds']:.1f}s)",
                      file=sys.stderr, flush=True)

    med = {m: statistics.median(mb / r["seconds"] for r in rs) for m, rs in results.items() if rs}
    peak = {}
    if not args.skip_memory:
        # Peak memory (summed RSS of a process tree) needs a process of its own per method.
        for m in methods:
            if m in med:
                peak[m] = measure(m, docs, tok, args.workers, args.shard_tokens)["peak_rss"]
    ceiling = max(med.get("ceiling", 0), med.get("ceiling_fast", 0))
    w = med.get(stage, 0)
    print(f"\n{'method':<14}{'MB/s':>9}{'webtext/x':>11}{'peak MiB':>10}")
    for m in [stage, "ceiling", "ceiling_fast", "nanogpt", "datatrove"]:
        if m in med:
            mem = f"{peak[m] / 2**20:10,.0f}" if m in peak else f"{'-':>10}"
            print(f"{m:<14}{med[m]:9.2f}{w / med[m]:11.2f}{mem}")
        elif m in skipped:
            print(f"{m:<14}  skipped: {skipped[m]}")
    if ceiling and w:
        best = "ceiling_fast" if med.get("ceiling_fast", 0) >= med.get("ceiling", 0) else "ceiling"
        print(f"\nwebtext / ceiling (the faster encode call) = {w / ceiling:.2f} (goal >= {GOAL_RATIO}); "
              + paired(results[stage], results[best]))
        for m in ("nanogpt", "datatrove"):
            if m in med:
                print(f"webtext / {m} = {w / med[m]:.2f} (goal > 1); " + paired(results[stage], results[m]))
    if stage in peak:
        small = corpus_dir(args.cache_dir, texts, args.mb / 4)
        r = measure(stage, small, tok, args.workers, args.shard_tokens)
        print(f"peak memory of webtext encode (process tree RSS): {r['peak_rss'] / 2**20:,.0f} MiB at "
              f"{args.mb / 4:g} MB, {peak[stage] / 2**20:,.0f} MiB at {args.mb:g} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
