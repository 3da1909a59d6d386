"""Benchmark of the dedup stage against datasketch's in-memory MinHashLSH and datatrove's MinHash stages 1-3.

The corpus: documents made of real page text (the main text of ../shared/data/web/trafilatura-eval, extracted
once with trafilatura and cached), each drawn to the length of a real page from the paragraphs of all
pages, plus planted near duplicates (a variant of an earlier document at an exact Jaccard similarity
spread over 0.5-1.0) and exact copies under other URLs. Every method runs in its own child process (so
that its peak memory, summed over its process tree, is its own) on the same documents, `--repeats` times;
the table shows medians, and ratios against datasketch.

Quality is measured the same way for every method: recall = share of planted pairs with Jaccard >=
threshold + 0.05 that end in one cluster; precision = share of removed documents whose exact Jaccard with
the document kept in their cluster is >= threshold - 0.05.

    .venv/bin/python bench/dedup.py                      # 50,000 documents, 3 repeats, 2 workers
    .venv/bin/python bench/dedup.py --quick              # 3,000 documents, 1 repeat
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rss import tree_rss  # noqa: E402  (bench/ is the script directory)

PAGES = REPO.parent / "shared" / "data" / "web" / "trafilatura-eval"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "webtext" / "bench-dedup-texts.json"
DOCS = 50_000
REPEATS = 3
WORKERS = 2
VARIANT_SHARE = 0.20     # documents that are near-duplicate variants of an earlier one
COPY_SHARE = 0.05        # documents that are exact copies (case/punctuation changed) under another URL
J_RANGE = (0.5, 1.0)     # planted similarities, uniform
SAMPLE_EVERY_S = 0.1     # memory sampling period


# --------------------------------------------------------------------------------------------------------
# Corpus

def page_texts() -> list[str]:
    if CACHE.exists():
        return json.loads(CACHE.read_text())
    import trafilatura

    print(f"extracting {PAGES} once (cached in {CACHE}) ...", file=sys.stderr)
    texts = []
    for name in sorted(os.listdir(PAGES)):
        if name.endswith(".html.gz"):
            text = trafilatura.extract(gzip.open(PAGES / name).read()) or ""
            if len(text.split()) >= 20:
                texts.append(text)
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    CACHE.write_text(json.dumps(texts))
    return texts


def edit(words: list[str], target: float, rng: random.Random, tag: str, ngram: int = 5) -> list[str]:
    """Replace words at least `ngram` apart so that the shingle Jaccard is about `target`."""
    shingles = max(1, len(words) - ngram + 1)
    k = max(1, round(shingles * (1 - target) / (ngram * (1 + target))))
    slots = list(range(ngram, max(ngram, len(words) - ngram), ngram))
    out = list(words)
    for i, pos in enumerate(rng.sample(slots, min(k, len(slots)))):
        out[pos] = f"{tag}x{i}"
    return out


def make_corpus(n: int, seed: int = 1):
    """(rows, planted) where rows are documents dicts and planted (base id, copy id, kind)."""
    from webtext.dedup import minhash

    rng = random.Random(seed)
    texts = page_texts()
    paragraphs = [p for t in texts for p in t.split("\n") if len(p.split()) >= 5]
    lengths = [len(t.split()) for t in texts]
    rows, planted = [], []

    def new_id(i):
        return f"{rng.getrandbits(64):016x}{i:08d}"

    for i in range(n):
        r = rng.random()
        if rows and r < VARIANT_SHARE + COPY_SHARE:
            base = rows[rng.randrange(len(rows))]
            if r < VARIANT_SHARE:
                words = minhash.normalize(base["text"]).split(" ")
                if len(words) < 40:
                    continue
                text = " ".join(edit(words, rng.uniform(*J_RANGE), rng, f"v{i}"))
                kind = "near"
            else:
                text = base["text"].upper().replace(".", " ! ")
                kind = "exact"
            row = {"doc_id": new_id(i), "text": text, "score": rng.choice([None, 1, 3, 10, 50])}
            planted.append((base["doc_id"], row["doc_id"], kind))
        else:
            target = rng.choice(lengths)
            parts, words = [], 0
            while words < target:
                p = paragraphs[rng.randrange(len(paragraphs))]
                parts.append(p)
                words += len(p.split())
            row = {"doc_id": new_id(i), "text": "\n".join(parts), "score": rng.choice([None, 1, 3, 10, 50])}
        rows.append(row)
    return rows, planted


def write_inputs(rows, folder: Path):
    """The documents dataset (extract's schema and shard size) and a JSONL copy split in 2 for datatrove."""
    from webtext.extract.schema import DOCUMENTS_SCHEMA, ROWS_PER_SHARD
    from webtext.runtime import datasets

    docs = folder / "documents"
    docs.mkdir(parents=True)
    full = [{"doc_id": r["doc_id"], "url": f"https://bench.example/{r['doc_id']}", "key": r["doc_id"],
             "host": "bench.example", "title": None, "date": None, "text": r["text"], "language": "en",
             "chars": len(r["text"]), "words": len(r["text"].split()), "score": r["score"],
             "num_submissions": 1, "subreddits": ["bench"], "first_created_utc": 0, "payload_digest": "x"}
            for r in rows]
    count = datasets.num_shards_for(len(full), ROWS_PER_SHARD)
    for i in range(count):
        (docs / datasets.shard_name("documents", i, count)).write_bytes(
            datasets.table_bytes(full[i * ROWS_PER_SHARD:(i + 1) * ROWS_PER_SHARD], DOCUMENTS_SCHEMA))
    jsonl = folder / "jsonl"
    jsonl.mkdir()
    for part in range(2):
        with open(jsonl / f"part{part}.jsonl", "w") as f:
            for r in rows[part::2]:
                f.write(json.dumps({"id": r["doc_id"], "text": r["text"]}) + "\n")
    return str(docs), str(jsonl)


# --------------------------------------------------------------------------------------------------------
# Methods (each runs in a child process and writes {doc_id: [cluster_id, kept]} for clustered documents)

def lsh_setting():
    from webtext.dedup import minhash
    return minhash.lsh_params(minhash.THRESHOLD, minhash.NUM_PERM, minhash.FN_WEIGHT)


def run_webtext(folder: Path, workers: int, verify: str) -> dict:
    from webtext import cli
    from webtext.dedup.schema import CLUSTERS
    from webtext.runtime import datasets

    out = str(folder / f"out-webtext-{workers}-{verify}")
    start = time.perf_counter()
    # `webtext dedup --workers N`: the runner in memory, the text work in N local processes
    status = cli.main(["dedup", "--docs", str(folder / "documents"), "--output", out, "--workers", str(workers),
                       "--verify", verify])
    seconds = time.perf_counter() - start
    if status:
        raise RuntimeError(f"webtext dedup exited with {status}")
    clusters = {r["doc_id"]: [r["cluster_id"], r["kept"]] for r in datasets.read_rows(out, CLUSTERS)}
    return {"seconds": seconds, "clusters": clusters}


def _score_key(doc_id, score):
    return (score is None, -(score or 0), doc_id)


def clusters_from_edges(edges, scores) -> dict:
    from webtext.dedup.components import components_in_memory

    roots = components_in_memory(edges)
    members: dict = {}
    for node, root in roots.items():
        members.setdefault(root, []).append(node)
    out = {}
    for root, ms in members.items():
        kept = min(ms, key=lambda d: _score_key(d, scores[d]))
        for m in ms:
            out[m] = [root, m == kept]
    return out


def run_datasketch(folder: Path) -> dict:
    """datasketch as documented: MinHash.update_batch per document, MinHashLSH insert then query, and
    union-find over the query results (single process)."""
    import pyarrow.parquet as pq
    from datasketch import MinHash, MinHashLSH

    from webtext.dedup import minhash
    from webtext.runtime import datasets

    start = time.perf_counter()
    bands, rows = lsh_setting()
    lsh = MinHashLSH(num_perm=minhash.NUM_PERM, params=(bands, rows))
    sigs, scores = {}, {}
    for path in datasets.shard_paths(str(folder / "documents"), "documents"):
        for batch in pq.ParquetFile(path).iter_batches(columns=["doc_id", "text", "score"]):
            for r in batch.to_pylist():
                m = MinHash(num_perm=minhash.NUM_PERM, seed=minhash.SEED)
                m.update_batch(minhash.shingles(minhash.normalize(r["text"])))
                lsh.insert(r["doc_id"], m)
                sigs[r["doc_id"]], scores[r["doc_id"]] = m, r["score"]
    edges = [(d, other) for d, m in sigs.items() for other in lsh.query(m) if other != d]
    clusters = clusters_from_edges(edges, scores)
    return {"seconds": time.perf_counter() - start, "clusters": clusters}


def run_datatrove(folder: Path, workers: int) -> dict:
    """datatrove's MinhashDedupSignature, MinhashDedupBuckets and MinhashDedupCluster (stages 1-3) with the
    same bands x rows and n-gram size, run by its LocalPipelineExecutor on `workers` processes."""
    import logging

    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.utils.hashing import HashConfig
    from loguru import logger

    logger.remove()
    logging.disable(logging.WARNING)
    bands, rows = lsh_setting()
    # sha1 32-bit shingle hashes as ours (its xxhash default refuses str with xxhash >= 4)
    config = MinhashConfig(n_grams=5, num_buckets=bands, hashes_per_bucket=rows, seed=1,
                           hash_config=HashConfig(precision=32, hash_fc="sha1"))
    work = folder / f"datatrove-{time.time_ns()}"
    start = time.perf_counter()
    LocalPipelineExecutor(pipeline=[JsonlReader(str(folder / "jsonl")),
                                    MinhashDedupSignature(output_folder=str(work / "sigs"), config=config)],
                          tasks=2, workers=workers, logging_dir=str(work / "logs1")).run()
    LocalPipelineExecutor(pipeline=[MinhashDedupBuckets(input_folder=str(work / "sigs"),
                                                        output_folder=str(work / "buckets"), config=config)],
                          tasks=bands, workers=workers, logging_dir=str(work / "logs2")).run()
    LocalPipelineExecutor(pipeline=[MinhashDedupCluster(input_folder=str(work / "buckets"),
                                                        output_folder=str(work / "remove"), config=config,
                                                        save_cluster_id=True)],
                          tasks=1, logging_dir=str(work / "logs3")).run()
    seconds = time.perf_counter() - start
    # Map datatrove's (file, position) back to our ids: rank r read part{r}.jsonl in order.
    ids = [[json.loads(line)["id"] for line in open(folder / "jsonl" / f"part{part}.jsonl")] for part in range(2)]
    clusters = {}
    for part in range(2):
        removed = set()
        rm = work / "remove" / f"{part:06d}.remove"
        if rm.exists():
            data = rm.read_bytes()
            removed = {int.from_bytes(data[i:i + 4], "little") for i in range(0, len(data), 4)}
        cl = work / "remove" / f"{part:06d}.clusters"
        if cl.exists():
            data = cl.read_bytes()
            for i in range(0, len(data), 8):
                doc = int.from_bytes(data[i:i + 4], "little")
                cid = int.from_bytes(data[i + 4:i + 8], "little")
                clusters[ids[part][doc]] = [f"dt{cid}", doc not in removed]
    return {"seconds": seconds, "clusters": clusters}


# --------------------------------------------------------------------------------------------------------
# Measuring



def measure(method: str, folder: Path, args) -> dict:
    result_file = folder / f"result-{method}.json"
    cmd = [sys.executable, __file__, "--child", method, "--folder", str(folder), "--workers", str(args.workers),
           "--result", str(result_file)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = 0
    stderr = []
    reader = threading.Thread(target=lambda: stderr.extend(proc.stderr), daemon=True)
    reader.start()
    while True:
        # wait4 rather than poll: its rusage is the CPU time of the child and the workers it waited for
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        peak = max(peak, tree_rss(proc.pid))
        time.sleep(SAMPLE_EVERY_S)
    proc.returncode = os.waitstatus_to_exitcode(status)
    reader.join(5)
    if proc.returncode != 0:
        raise RuntimeError(f"{method} failed:\n{''.join(stderr[-30:])}")
    result = json.loads(result_file.read_text())
    result["peak_mb"] = peak / 2**20
    result["cpu_s"] = usage.ru_utime + usage.ru_stime
    return result


def evaluate(clusters: dict, planted, texts: dict, threshold: float) -> tuple[float, float, int]:
    from webtext.dedup import minhash

    def shingle_set(doc_id):
        return set(minhash.shingles(minhash.normalize(texts[doc_id])))

    cache: dict = {}

    def jac(a, b):
        key = (a, b) if a < b else (b, a)
        if key not in cache:
            cache[key] = minhash.jaccard(shingle_set(a), shingle_set(b))
        return cache[key]

    high = [(a, b) for a, b, _ in planted if jac(a, b) >= threshold + 0.05]
    same = sum(a in clusters and b in clusters and clusters[a][0] == clusters[b][0] for a, b in high)
    kept = {c[0]: d for d, c in clusters.items() if c[1]}
    removed = [(d, kept.get(c[0])) for d, c in clusters.items() if not c[1]]
    good = sum(k is not None and jac(d, k) >= threshold - 0.05 for d, k in removed)
    return same / max(1, len(high)), good / max(1, len(removed)), len(removed)


def child(args) -> None:
    folder = Path(args.folder)
    if args.child.startswith("webtext"):
        _, workers, verify = args.child.split(":")
        result = run_webtext(folder, int(workers), verify)
    elif args.child == "datasketch":
        result = run_datasketch(folder)
    else:
        result = run_datatrove(folder, args.workers)
    Path(args.result).write_text(json.dumps(result))


def ensure_datatrove() -> bool:
    try:
        import datatrove  # noqa: F401
        import spacy  # noqa: F401  (its English word tokenizer)
        return True
    except ImportError:
        pass
    print("datatrove missing: pip install datatrove spacy (benchmark only, not project dependencies) ...",
          file=sys.stderr)
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "datatrove", "spacy"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        print(f"SKIPPING the datatrove baseline: pip install failed: {done.stderr.strip()[-300:]}", file=sys.stderr)
        return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=DOCS, help=f"documents in the corpus (default: {DOCS})")
    parser.add_argument("--repeats", type=int, default=REPEATS, help=f"runs per method (default: {REPEATS})")
    parser.add_argument("--workers", type=int, default=WORKERS, help=f"worker processes (default: {WORKERS})")
    parser.add_argument("--quick", action="store_true", help="3,000 documents, 1 repeat")
    parser.add_argument("--methods", default="webtext:2:exact,webtext:2:none,webtext:1:exact,datasketch,datatrove",
                        help="comma-separated: webtext:WORKERS:VERIFY, datasketch, datatrove")
    parser.add_argument("--datatrove-repeats", type=int, default=1,
                        help="runs of the (slow) datatrove baseline (default: 1)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return 0
    if args.quick:
        args.docs, args.repeats = 3000, 1

    from webtext.dedup import minhash

    methods = args.methods.split(",")
    if "datatrove" in methods and not ensure_datatrove():
        methods.remove("datatrove")
    rows, planted = make_corpus(args.docs)
    texts = {r["doc_id"]: r["text"] for r in rows}
    words = sum(len(t.split()) for t in texts.values()) / len(rows)
    bands, r = lsh_setting()
    print(f"corpus: {len(rows):,} documents ({words:.0f} words on average), {len(planted):,} planted "
          f"duplicates; LSH {bands} x {r}, threshold {minhash.THRESHOLD}; {args.workers} workers, "
          f"{os.cpu_count()} cores", flush=True)
    table = []
    with tempfile.TemporaryDirectory(prefix="bench-dedup-") as tmp:
        folder = Path(tmp)
        write_inputs(rows, folder)
        for method in methods:
            repeats = args.datatrove_repeats if method == "datatrove" else args.repeats
            runs = [measure(method, folder, args) for _ in range(repeats)]
            secs = statistics.median(x["seconds"] for x in runs)
            cpu = statistics.median(x["cpu_s"] for x in runs)
            peak = statistics.median(x["peak_mb"] for x in runs)
            recall, precision, removed = evaluate(runs[-1]["clusters"], planted, texts, minhash.THRESHOLD)
            table.append((method, len(rows) / secs, len(rows) / cpu, peak, recall, precision, removed))
            each = ", ".join(f"{x['seconds']:.1f}" for x in runs)
            print(f"  {method:<18} {len(rows) / secs:8,.0f} docs/s  ({each} s; {cpu:.1f} CPU s)"
                  f"  peak {peak:7,.0f} MB  recall {recall:.3f}  precision {precision:.3f}  removed {removed:,}",
                  flush=True)
    base = next((t for t in table if t[0] == "datasketch"), None)
    print(f"\n{'method':<18} {'docs/s':>9} {'docs/CPU-s':>10} {'peak MB':>9} {'recall':>7} {'precision':>9} "
          f"{'removed':>8} {'x datasketch (docs/s, docs/CPU-s)':>34}")
    for name, rate, per_cpu, peak, recall, precision, removed in table:
        if name == "datatrove":  # its pool processes are not reaped through the child: CPU time not seen
            per_cpu_text, ratio = "n/a", f"{rate / base[1]:.2f}, n/a" if base else "-"
        else:
            per_cpu_text, ratio = f"{per_cpu:,.0f}", f"{rate / base[1]:.2f}, {per_cpu / base[2]:.2f}" if base else "-"
        print(f"{name:<18} {rate:9,.0f} {per_cpu_text:>10} {peak:9,.0f} {recall:7.3f} {precision:9.3f} {removed:8,} "
              f"{ratio:>34}")
    print(f"load average now: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (other work on the machine "
          "slows every method; docs/CPU-s is the steadier figure)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
