"""Benchmark: training batches per second out of token shards, against nanoGPT's loader, in one process.

Ours: `webtext.model.data.WindowBatches` over Arrow shards (memory-mapped once, a keyed permutation of all
windows, one copy per batch). Baseline: nanoGPT's `get_batch` (np.memmap of one flat uint16 file recreated every
batch, random offsets, x and y stacked from int64 copies). Both make 12 x 1024-token (x, y) pairs from the same
tokens, written here once (>= 1 GB by default); both files are read into the page cache first, so the figures
compare the loaders, not the disk. Also reports the peak resident memory growth over a run (goal < 100 MB).

    .venv/bin/python bench/loader.py              # 1 GB, 10,000 batches, 3 repeats
    .venv/bin/python bench/loader.py --quick      # 0.05 GB, 1,000 batches
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from webtext.encode import shards  # noqa: E402
from webtext.model import data  # noqa: E402

VOCAB = 50257
MEAN_DOC_TOKENS = 1000


def rss() -> dict[str, int]:
    """Resident memory in bytes: total, anonymous (heap) and file-backed (mapped shards)."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) * 1024
    return out


def write_corpus(directory: str, gigabytes: float, num_shards: int, seed: int = 0) -> tuple[str, list[str]]:
    """Random documents as shards (ours) and as one flat uint16 file (nanoGPT's train.bin), the same tokens."""
    rng = np.random.default_rng(seed)
    total = int(gigabytes * 1e9 / 2)
    flat_path = os.path.join(directory, "train.bin")
    paths = []
    with open(flat_path, "wb") as flat:
        for index in range(num_shards):
            n = total // num_shards
            tokens = rng.integers(0, VOCAB - 1, n, dtype=np.uint16)
            cuts = np.cumsum(rng.geometric(1 / MEAN_DOC_TOKENS, n // MEAN_DOC_TOKENS * 2))
            cuts = cuts[cuts < n]
            tokens[cuts - 1] = VOCAB - 1  # end-of-text closes each document
            docs = np.split(tokens, cuts)
            docs = [d for d in docs if len(d)]
            path = os.path.join(directory, shards.shard_name("train", index, num_shards))
            with open(path, "wb") as f:
                f.write(shards.shard_bytes([str(i) for i in range(len(docs))], docs, "uint16"))
            flat.write(tokens.tobytes())
            paths.append(path)
            del tokens, docs
    return flat_path, paths


def warm_page_cache(paths: list[str]) -> None:
    for path in paths:
        with open(path, "rb") as f:
            while f.read(1 << 24):
                pass


def nanogpt_batches(path: str, batch_size: int, block_size: int, count: int, seed: int):
    torch.manual_seed(seed)
    for _ in range(count):
        # nanoGPT: "We recreate np.memmap every batch to avoid a memory leak"
        tokens = np.memmap(path, dtype=np.uint16, mode="r")
        ix = torch.randint(len(tokens) - block_size, (batch_size,))
        x = torch.stack([torch.from_numpy(tokens[i:i + block_size].astype(np.int64)) for i in ix])
        y = torch.stack([torch.from_numpy(tokens[i + 1:i + 1 + block_size].astype(np.int64)) for i in ix])
        yield x, y


def our_batches(windows: data.Windows, batch_size: int, count: int, seed: int):
    for i, batch in enumerate(data.WindowBatches(windows, batch_size, seed=seed)):
        if i == count:
            return
        yield batch


def timed(batches) -> float:
    """Batches per second; sums a token of each batch so nothing is optimised away."""
    start = time.perf_counter()
    n, check = 0, 0
    for x, y, *_ in batches:
        check += int(x[0, 0]) + int(y[-1, -1])
        n += 1
    return n / (time.perf_counter() - start)


def peak_growth(batches, every: int = 97) -> dict[str, int]:
    """Largest resident memory growth seen while consuming `batches` (sampled every `every` batches, a number
    prime to the loader's release cadence so the samples fall at every phase of it)."""
    before = rss()
    peak = {k: 0 for k in before}
    for i, _ in enumerate(batches):
        if i % every == 0:
            now = rss()
            peak = {k: max(peak[k], now[k] - before[k]) for k in before}
    now = rss()
    return {k: max(peak[k], now[k] - before[k]) for k in before}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gb", type=float, default=1.0, help="corpus size in GB of uint16 tokens")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--batches", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=12)
    parser.add_argument("--block-size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", default=None, help="scratch directory (default: a temporary one, removed)")
    parser.add_argument("--quick", action="store_true", help="--gb 0.05 --batches 1000")
    args = parser.parse_args()
    if args.quick:
        args.gb, args.batches = 0.05, 1000
    torch.set_num_threads(1)
    scratch = args.dir or tempfile.mkdtemp(prefix="webtext-bench-loader-")
    os.makedirs(scratch, exist_ok=True)
    try:
        t0 = time.perf_counter()
        flat, paths = write_corpus(scratch, args.gb, args.shards)
        tokens = [len(shards.open_shard(p).tokens) for p in paths]
        print(f"corpus: {sum(tokens):,} tokens in {len(paths)} shards ({sum(map(os.path.getsize, paths)) / 1e9:.2f} "
              f"GB) + flat baseline file, written in {time.perf_counter() - t0:.1f}s")
        warm_page_cache(paths + [flat])
        windows = data.Windows(data.SplitFiles(tuple(paths), tuple(tokens)), args.block_size)

        ours, base = [], []
        for r in range(args.repeats):
            ours.append(timed(our_batches(windows, args.batch_size, args.batches, seed=r)))
            base.append(timed(nanogpt_batches(flat, args.batch_size, args.block_size, args.batches, seed=r)))
        med_ours, med_base = statistics.median(ours), statistics.median(base)
        worst = peak_growth(our_batches(windows, args.batch_size, args.batches, seed=args.repeats))
        worst_base = peak_growth(nanogpt_batches(flat, args.batch_size, args.block_size, args.batches, seed=0))
        print(f"ours      {med_ours:10,.0f} batches/s  (runs: {', '.join(f'{v:,.0f}' for v in ours)})")
        print(f"nanoGPT   {med_base:10,.0f} batches/s  (runs: {', '.join(f'{v:,.0f}' for v in base)})")
        print(f"ratio     {med_ours / med_base:10.2f}x  (goal >= 1.0x)")
        for name, g in (("ours", worst), ("nanoGPT", worst_base)):
            print(f"{name:<9} peak RSS growth over {args.batches:,} batches: total {g['VmRSS'] / 1e6:+.1f} MB, "
                  f"anonymous {g['RssAnon'] / 1e6:+.1f} MB, file-backed {g['RssFile'] / 1e6:+.1f} MB (goal < 100 MB)")
        print(json.dumps({"bench": "loader", "gb": args.gb, "batches": args.batches, "batch_size": args.batch_size,
                          "block_size": args.block_size, "ours_batches_per_s": med_ours,
                          "nanogpt_batches_per_s": med_base, "ratio": med_ours / med_base,
                          "rss_peak_growth_bytes": worst,
                          "nanogpt_rss_peak_growth_bytes": worst_base}))
    finally:
        if args.dir is None:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
