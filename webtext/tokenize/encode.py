"""Encode a documents dataset into sharded Arrow token files (train/val) with a manifest.

Every document becomes its byte-level BPE ids followed by <|endoftext|>. Documents are split into train and
val by a hash of their id (independent of --seed), put in the order of a seeded permutation (a hash of seed and
id), and cut into shards of about --shard-tokens tokens along that order. The shards, manifest.json and a
copy of tokenizer.json are byte-identical for the same documents and flags whatever the runner or worker
count. Documents without an id or text go to the `errors` dataset.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import uuid
from dataclasses import asdict, dataclass
from typing import NamedTuple

import apache_beam as beam
import numpy as np
import pyarrow as pa

from webtext.pipeline import datasets, fs, progress, stats
from webtext.pipeline.beam import add_runner_arguments, pipeline_options
from webtext.pipeline.errors import ERRORS, ERRORS_SCHEMA, error_row, error_sort_key
from webtext.tokenize import bpe, shards

EXAMPLE = """  webtext encode --docs out/dedup --tokenizer out/tokenizer --output out/shards
  webtext encode --docs out/dedup --tokenizer gpt2/tokenizer.json --output out/shards-gpt2 --shard-tokens 50000000"""

STAGE = "encode"
DOCUMENTS = "documents"
VAL_FRACTION = 0.0005           # nanoGPT's OpenWebText split
SHARD_TOKENS = 100_000_000      # ~200 MB uint16 files: a few hundred shards for a WebText-sized corpus
SEED = 1337                     # seed of the document permutation
BATCH_BYTES = 4 << 20           # text handed to encode_batch at once: enough to keep every core busy
ORDER_BUCKETS = 1 << 16         # resolution of the token histogram that places shard boundaries
RUNS_DIR = "_tmp-encode"        # encoded batches waiting to be gathered into shards; deleted at the end
SPLIT_SALT = "webtext-split"    # the train/val split hashes this with the id, never the permutation seed
# How tokens travel from encoding to shard writing. "files": run files beside the output, memory-mapped by the
# shard writers, so the shuffle moves ~100 bytes per document and local memory stays flat (the direct runner
# holds every shuffled element in memory). "shuffle": the tokens ride the shuffle, which Dataflow keeps on disk,
# and no shard writer reads every run file from an object store. "auto": files locally, shuffle for gs://.
TOKENS_VIA = ("auto", "files", "shuffle")

MAX_HASH = 1 << 64


def _hash64(*parts: str) -> int:
    data = "\0".join(parts).encode("utf-8", errors="surrogatepass")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def split_hash(doc_id: str) -> int:
    return _hash64(SPLIT_SALT, doc_id)


def order_key(seed: int, doc_id: str) -> int:
    """The document's place in the seeded permutation (ties, i.e. repeated ids, are broken by content)."""
    return _hash64(str(seed), doc_id)


def val_threshold(val_fraction: float) -> int:
    return int(val_fraction * MAX_HASH)


def choose_split(h: int, doc_id: str, threshold: int, first: tuple[int, str] | None, documents: int) -> str:
    """val when the id's hash falls below the threshold. When val_fraction > 0 and there are two or more
    documents, the document with the smallest hash is val too, so a small corpus still gets a val split
    (it is the one the threshold would admit first)."""
    if h < threshold:
        return "val"
    if threshold > 0 and documents >= 2 and first is not None and (h, doc_id) == tuple(first):
        return "val"
    return "train"


def smallest(keys):
    """min of the (split hash, doc_id) keys; None for none (partial results of empty bundles are None too)."""
    return min((k for k in keys if k is not None), default=None)


def bucket_of(key: int) -> int:
    return key * ORDER_BUCKETS >> 64


def shard_plan(histogram: np.ndarray, shard_tokens: int) -> tuple[np.ndarray, int]:
    """Shard index of each order bucket, and the shard count: shards are consecutive bucket ranges holding
    about `shard_tokens` tokens each (at least one shard, none empty unless the split is)."""
    total = int(histogram.sum())
    wanted = max(1, -(-total // shard_tokens))
    before = np.cumsum(histogram) - histogram
    raw = np.minimum(wanted - 1, (before * wanted) // max(total, 1))
    used = np.unique(raw[histogram > 0])
    if len(used) == 0:
        return np.zeros(len(histogram), dtype=np.int64), 1
    # Renumber so shards are 0..n-1 with no gaps (a bucket larger than a shard makes a gap).
    return np.searchsorted(used, raw, side="left").clip(0, len(used) - 1).astype(np.int64), len(used)


class Entry(NamedTuple):
    """One encoded document on its way to a shard: where its tokens wait (row `row` of run file `run`), or,
    when the shuffle carries them, the tokens themselves (`data`)."""
    doc_id: str
    split_hash: int
    order: int
    digest: bytes
    tokens: int
    run: str
    row: int
    data: bytes | None = None


@dataclass
class EncodeConfig:
    val_fraction: float = VAL_FRACTION
    shard_tokens: int = SHARD_TOKENS
    seed: int = SEED
    batch_bytes: int = BATCH_BYTES
    tokens_via: str = "auto"

    def check(self) -> None:
        if self.tokens_via not in TOKENS_VIA:
            raise ValueError(f"--tokens-via {self.tokens_via!r}: choose from {', '.join(TOKENS_VIA)}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"--val-fraction {self.val_fraction} must be in [0, 1)")
        if not 0 < self.shard_tokens <= shards.MAX_SHARD_TOKENS:
            raise ValueError(f"--shard-tokens {self.shard_tokens} must be in 1..{shards.MAX_SHARD_TOKENS}")


def check_row(row: dict, count) -> dict | None:
    """An error row for a document that cannot be encoded, else None."""
    doc_id, text = row.get("doc_id"), row.get("text")
    if not isinstance(doc_id, str) or not doc_id:
        count("error_missing_doc_id")
        return error_row(STAGE, DOCUMENTS, None, "missing_doc_id", "document without a doc_id", text)
    if not isinstance(text, str):
        count("error_missing_text")
        return error_row(STAGE, doc_id, None, "missing_text", "document without text")
    return None


class EncodeBatches(beam.DoFn):
    """A batch of documents -> one run file (shard format) of their ids + eot, and an Entry per document.

    encode_batch releases the GIL, so it runs in a helper thread: while batch k+1 is encoded, this thread
    turns batch k into arrays, writes its run file and emits its entries, and Beam reads the next rows."""

    def __init__(self, tokenizer_path: str, runs_dir: str | None, seed: int):
        # The path, not the tokenizer: a GPT-2 vocabulary is megabytes that Beam would pickle and compress
        # again for every bundle.
        self.tokenizer_path, self.runs_dir, self.seed = tokenizer_path, runs_dir, seed
        self.count = stats.BeamCounters(STAGE)

    def setup(self):
        from concurrent.futures import ThreadPoolExecutor

        self.tok = bpe.for_encoding(bpe.load(self.tokenizer_path))
        self.eot = bpe.eot_id(self.tok)
        self.dtype = shards.dtype_for_vocab(bpe.vocab_size(self.tok))
        self.encoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="encode")

    def teardown(self):
        self.encoder.shutdown(wait=False)

    def start_bundle(self):
        self.pending = None

    def process(self, batch):
        good = []
        for row in batch:
            self.count("documents_in")
            error = check_row(row, self.count)
            if error is not None:
                yield beam.pvalue.TaggedOutput(ERRORS, error)
            else:
                good.append(row)
        progress.tick(STAGE, len(batch))
        if not good:
            return
        future = self.encoder.submit(bpe.encode_texts, self.tok, [r["text"] for r in good], self.dtype)
        previous, self.pending = self.pending, (good, future)
        if previous is not None:
            yield from self.entries(*previous)

    def finish_bundle(self):
        from apache_beam.transforms.window import GlobalWindow
        from apache_beam.utils.windowed_value import WindowedValue

        if self.pending is not None:
            pending, self.pending = self.pending, None
            for entry in self.entries(*pending):
                yield WindowedValue(entry, GlobalWindow().max_timestamp(), [GlobalWindow()])

    def entries(self, good: list[dict], future):
        ids = [r["doc_id"] for r in good]
        np_dtype = np.dtype(self.dtype)
        encoded = future.result()
        lengths = np.fromiter((len(t) + 1 for t in encoded), dtype=np.int64, count=len(encoded))
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        flat = np.empty(int(offsets[-1]), dtype=np_dtype)
        for t, start, end in zip(encoded, offsets[:-1], offsets[1:]):
            flat[start:end - 1] = t
            flat[end - 1] = self.eot
        run = ""
        if self.runs_dir is not None:
            # A retried bundle writes a new run file; only the committed attempt's entries point at one.
            run = fs.join(self.runs_dir, f"run-{uuid.uuid4().hex}.arrow")
            fs.write_atomic(run, memoryview(shards.shard_buffer(ids, flat, offsets, self.dtype)))
        self.count("documents", len(good))
        self.count("tokens", int(offsets[-1]))
        self.count("text_chars", sum(len(r["text"]) for r in good))
        for i, doc_id in enumerate(ids):
            view = flat[offsets[i]:offsets[i + 1]]
            digest = hashlib.blake2b(memoryview(view), digest_size=8).digest()
            yield Entry(doc_id, split_hash(doc_id), order_key(self.seed, doc_id), digest,
                        int(lengths[i]), run, i, None if run else view.tobytes())


class TokenHistogram(beam.CombineFn):
    """Tokens per (split, order bucket): the only global view the shard boundaries need."""

    def create_accumulator(self):
        return {}

    def add_input(self, acc, element):
        split, entry = element
        h = acc.get(split)
        if h is None:
            h = acc[split] = np.zeros(ORDER_BUCKETS, dtype=np.int64)
        h[bucket_of(entry.order)] += entry.tokens
        return acc

    def merge_accumulators(self, accs):
        out = {}
        for acc in accs:
            for split, h in acc.items():
                out[split] = out[split] + h if split in out else h.copy()
        return out

    def extract_output(self, acc):
        return acc


def tokens_via(config: EncodeConfig, output_dir: str) -> str:
    if config.tokens_via != "auto":
        return config.tokens_via
    return "shuffle" if fs.is_remote(output_dir) else "files"


def plan_shards(histograms: dict, shard_tokens: int) -> dict:
    """{split: (bucket -> shard index, shard count)} for every split (an empty split gets one empty shard)."""
    out = {}
    for split in shards.SPLITS:
        h = histograms.get(split, np.zeros(ORDER_BUCKETS, dtype=np.int64))
        out[split] = shard_plan(h, shard_tokens)
    return out


class RunReader:
    """Documents of run files, copied into a shard's buffer. Local files are read with pread at the offsets
    their memory map reveals, without touching the mapped pages: a shard draws a few rows from every run file,
    and faulting those pages in (with the kernel's read-around) would make resident memory grow with the
    corpus. Object-store files are read whole, once per worker."""

    def __init__(self):
        self.open: dict[str, tuple] = {}

    def close(self) -> None:
        for fd, *_ in self.open.values():
            if fd is not None:
                os.close(fd)
        self.open.clear()

    def _open(self, run: str):
        if fs.is_remote(run):
            return None, shards.open_shard_bytes(fs.read_bytes(run), run), 0
        source = pa.memory_map(run, "r")
        base = source.read_buffer(1).address  # where the file starts in this process's memory
        shard = shards.open_shard(run, source)
        return os.open(run, os.O_RDONLY), shard, shard.tokens.ctypes.data - base

    def read_into(self, run: str, row: int, out: np.ndarray) -> None:
        opened = self.open.get(run)
        if opened is None:
            opened = self.open[run] = self._open(run)
        fd, shard, values_at = opened
        start, end = int(shard.offsets[row]), int(shard.offsets[row + 1])
        if end - start != len(out):
            raise ValueError(f"{run}: row {row} holds {end - start} tokens, the index says {len(out)}")
        if fd is None:
            out[:] = shard.tokens[start:end]
            return
        want = out.nbytes
        got = os.preadv(fd, [memoryview(out).cast("B")], values_at + start * out.itemsize)
        if got != want:
            raise OSError(f"{run}: short read ({got} of {want} bytes) at row {row}")


class WriteShard(beam.DoFn):
    """(split, index) and its entries -> the shard file, in permutation order; yields its manifest entry."""

    def __init__(self, output_dir: str, dtype: str):
        self.output_dir, self.dtype = output_dir, dtype

    def process(self, element, plan):
        (split, index), entries = element
        entries = sorted((e for e in entries if e is not None), key=lambda e: (e.order, e.doc_id, e.digest))
        reader = RunReader()
        offsets = np.zeros(len(entries) + 1, dtype=np.int64)
        np.cumsum([e.tokens for e in entries], out=offsets[1:])
        flat = np.empty(int(offsets[-1]), dtype=np.dtype(self.dtype))
        try:
            for e, start, end in zip(entries, offsets[:-1], offsets[1:]):
                if e.data is None:
                    reader.read_into(e.run, e.row, flat[start:end])
                else:
                    flat[start:end] = np.frombuffer(e.data, dtype=flat.dtype)
        finally:
            reader.close()
        data = shards.shard_buffer([e.doc_id for e in entries], flat, offsets, self.dtype)
        name = shards.shard_name(split, index, plan[split][1])
        fs.write_atomic(fs.join(self.output_dir, name), memoryview(data))  # no copy of a ~200 MB buffer
        yield split, {"path": name, "tokens": int(offsets[-1]), "documents": len(entries),
                      "bytes": data.size, "sha256": hashlib.sha256(memoryview(data)).hexdigest()}


def build_manifest(entries: list, tokenizer: dict, dtype: str, config: dict, upstream: dict | None) -> dict:
    """manifest.json's content from the shards' entries (the contract in docs/formats.md)."""
    splits = {}
    for split in shards.SPLITS:
        listed = sorted((e for s, e in entries if s == split), key=lambda e: e["path"])
        splits[split] = {"shards": listed, "tokens": sum(e["tokens"] for e in listed),
                         "documents": sum(e["documents"] for e in listed)}
    everything = [e for _, e in entries]
    return {
        "format": shards.FORMAT,
        "format_version": shards.FORMAT_VERSION,
        "tokenizer": tokenizer,
        "dtype": dtype,
        "splits": splits,
        "totals": {"tokens": sum(e["tokens"] for e in everything),
                   "documents": sum(e["documents"] for e in everything),
                   "bytes": sum(e["bytes"] for e in everything)},
        "config": config,
        "upstream": upstream or {},
    }


class EncodeShards(beam.PTransform):
    """documents -> shard files under output_dir; returns the manifest entries and the error rows."""

    def __init__(self, output_dir: str, tokenizer_path: str, dtype: str, config: EncodeConfig):
        super().__init__()
        self.output_dir, self.tokenizer_path, self.dtype, self.config = output_dir, tokenizer_path, dtype, config

    def expand(self, docs):
        cfg = self.config
        runs_dir = fs.join(self.output_dir, RUNS_DIR) if tokens_via(cfg, self.output_dir) == "files" else None
        encoded = (docs
                   | "Batch" >> beam.BatchElements(
                       min_batch_size=cfg.batch_bytes, max_batch_size=cfg.batch_bytes,
                       element_size_fn=lambda r: len(r.get("text") or "") + 1)
                   | "Encode" >> beam.ParDo(EncodeBatches(self.tokenizer_path, runs_dir, cfg.seed))
                   .with_outputs(ERRORS, main="entries"))
        entries = encoded.entries
        first = beam.pvalue.AsSingleton(
            entries
            | "SplitKeys" >> beam.Map(lambda e: (e.split_hash, e.doc_id))
            | "First" >> beam.CombineGlobally(smallest))
        documents = beam.pvalue.AsSingleton(entries | "CountDocs" >> beam.combiners.Count.Globally())
        threshold = val_threshold(cfg.val_fraction)
        with_split = entries | "Split" >> beam.Map(
            lambda e, first, n: (choose_split(e.split_hash, e.doc_id, threshold, first, n), e), first, documents)
        plan = (with_split
                | "Histogram" >> beam.CombineGlobally(TokenHistogram())
                | "Plan" >> beam.Map(plan_shards, cfg.shard_tokens))
        plan_side = beam.pvalue.AsSingleton(plan)
        keyed = with_split | "KeyByShard" >> beam.Map(
            lambda se, p: ((se[0], int(p[se[0]][0][bucket_of(se[1].order)])), se[1]), plan_side)
        every_shard = plan | "EveryShard" >> beam.FlatMap(
            lambda p: [((split, i), None) for split, (_, n) in sorted(p.items()) for i in range(n)])
        written = ((keyed, every_shard)
                   | "FlattenShards" >> beam.Flatten()
                   | "GroupByShard" >> beam.GroupByKey()
                   | "WriteShards" >> beam.ParDo(WriteShard(self.output_dir, self.dtype), plan=plan_side))
        return written, encoded[ERRORS]


def remove_outputs(output_dir: str) -> None:
    """Delete an earlier run's outputs (manifest first: without it the directory reads as unfinished)."""
    fs.delete([p for p in [fs.join(output_dir, shards.MANIFEST)] if fs.exists(p)])
    stale = fs.glob_or_empty(fs.join(output_dir, "*.arrow"))
    fs.delete([p for p in stale if shards.SHARD_RE.match(p.rsplit("/", 1)[-1])])
    fs.delete([p for p in [fs.join(output_dir, stats.STATS_FILE)] if fs.exists(p)])
    fs.delete(fs.glob_or_empty(fs.join(output_dir, RUNS_DIR, "*")))
    datasets.remove_dataset(output_dir, ERRORS)


def tokenizer_source(path: str) -> str:
    return path if path.endswith(".json") else fs.join(path, bpe.TOKENIZER_FILE)


def build_pipeline(pipeline: beam.Pipeline, docs_dir: str, output_dir: str, tokenizer_path: str, dtype: str,
                   config: EncodeConfig, write_manifest) -> None:
    docs = pipeline | datasets.ReadDataset(docs_dir, DOCUMENTS, columns=["doc_id", "text"])
    written, errors = docs | EncodeShards(output_dir, tokenizer_path, dtype, config)
    (written
     | "AllShards" >> beam.combiners.ToList()
     | "Manifest" >> beam.Map(write_manifest))
    errors | datasets.WriteDataset(output_dir, ERRORS, ERRORS_SCHEMA, error_sort_key)


def graph(pipeline: beam.Pipeline, args: argparse.Namespace) -> None:
    """The stage's pipeline, built from its flags without touching any output (`webtext build --dry-run`).
    In a whole-build dry run the tokenizer does not exist yet: the graph is the same for either token
    width, so a missing tokenizer is taken as one that fits uint16."""
    config = EncodeConfig(val_fraction=args.val_fraction, shard_tokens=args.shard_tokens, seed=args.seed,
                          batch_bytes=args.batch_bytes, tokens_via=args.tokens_via)
    config.check()
    try:
        dtype = shards.dtype_for_vocab(bpe.vocab_size(bpe.load(tokenizer_source(args.tokenizer))))
    except (FileNotFoundError, OSError):
        dtype = "uint16"
    build_pipeline(pipeline, args.docs, args.output, fs.join(args.output, shards.TOKENIZER_FILE), dtype, config,
                   _no_manifest)


def _no_manifest(entries) -> None:
    raise RuntimeError("a dry-run graph is not for running")


def run(docs_dir: str, tokenizer_path: str, output_dir: str, config: EncodeConfig,
        options=None) -> dict:
    """Run the stage; returns the manifest."""
    from tokenizers import Tokenizer

    config.check()
    if not datasets.shard_paths(docs_dir, DOCUMENTS):
        raise FileNotFoundError(f"{docs_dir}: no dataset {DOCUMENTS!r} (run `webtext extract` or `webtext dedup`)")
    timer = stats.Timer()
    tokenizer_json = fs.read_bytes(tokenizer_source(tokenizer_path)).decode("utf-8")
    tok = Tokenizer.from_str(tokenizer_json)
    vocab = bpe.vocab_size(tok)
    tokenizer = {"fingerprint": bpe.tokenizer_fingerprint(tok), "vocab_size": vocab,
                 "eot_id": bpe.eot_id(tok), "eot_token": bpe.EOT_TOKEN, "file": shards.TOKENIZER_FILE}
    dtype = shards.dtype_for_vocab(vocab)
    # How tokens travel changes no byte of the output, so it stays out of the manifest.
    manifest_config = {k: v for k, v in asdict(config).items() if k != "tokens_via"} | {"docs_dataset": DOCUMENTS}
    upstream = stats.read_stats(docs_dir)

    fs.makedirs(output_dir)
    remove_outputs(output_dir)
    fs.makedirs(fs.join(output_dir, RUNS_DIR))
    copied_tokenizer = fs.join(output_dir, shards.TOKENIZER_FILE)
    fs.write_atomic(copied_tokenizer, tokenizer_json.encode("utf-8"))

    manifest_path = fs.join(output_dir, shards.MANIFEST)
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, docs_dir, output_dir, copied_tokenizer, dtype, config,
                   lambda entries: fs.write_json(
                       manifest_path, build_manifest(entries, tokenizer, dtype, manifest_config, upstream)))
    result = pipeline.run()
    result.wait_until_finish()

    fs.delete(fs.glob_or_empty(fs.join(output_dir, RUNS_DIR, "*")))
    if not fs.is_remote(output_dir):
        try:
            os.rmdir(fs.join(output_dir, RUNS_DIR))
        except OSError:
            pass
    manifest = fs.read_json(manifest_path)
    counters = stats.collect_counters(result, STAGE)
    stats.write_stats(output_dir, STAGE, {**manifest_config, "docs": docs_dir, "tokenizer": tokenizer_path,
                                          "tokens_via": tokens_via(config, output_dir)},
                      counters, timer, totals=manifest["totals"], tokenizer=tokenizer)
    return manifest


def count_documents(docs_dir: str) -> int:
    """Rows of the documents dataset, from the Parquet footers (for the progress bar)."""
    import pyarrow.parquet as pq

    paths = datasets.shard_paths(docs_dir, DOCUMENTS)
    if not paths:
        raise FileNotFoundError(f"{docs_dir}: no dataset {DOCUMENTS!r} (run `webtext extract` or `webtext dedup`)")
    total = 0
    for p in paths:
        with fs.open_read(p) as f:
            total += pq.ParquetFile(f).metadata.num_rows
    return total


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--docs", required=True, help="directory holding the `documents` dataset (extract/dedup output)")
    parser.add_argument("--tokenizer", required=True, help="tokenizer directory or tokenizer.json")
    parser.add_argument("--output", required=True, help="directory for the shards, manifest.json and tokenizer.json")
    parser.add_argument("--val-fraction", type=float, default=VAL_FRACTION,
                        help=f"share of documents (by id hash) in the val split (default: {VAL_FRACTION})")
    parser.add_argument("--shard-tokens", type=int, default=SHARD_TOKENS,
                        help=f"about this many tokens per shard (default: {SHARD_TOKENS:,})")
    parser.add_argument("--seed", type=int, default=SEED, help=f"seed of the document permutation (default: {SEED})")
    parser.add_argument("--batch-bytes", type=int, default=BATCH_BYTES,
                        help=f"text per encode_batch call (default: {BATCH_BYTES:,})")
    parser.add_argument("--tokens-via", choices=TOKENS_VIA, default="auto",
                        help="how tokens reach the shard writers: run files (local) or the shuffle (Dataflow) "
                             "(default: auto)")
    add_runner_arguments(parser)


def main(args: argparse.Namespace) -> int:
    config = EncodeConfig(val_fraction=args.val_fraction, shard_tokens=args.shard_tokens, seed=args.seed,
                          batch_bytes=args.batch_bytes, tokens_via=args.tokens_via)
    try:
        config.check()
        total = count_documents(args.docs)
        options = pipeline_options(args, STAGE)
        bpe.eot_id(bpe.load(tokenizer_source(args.tokenizer)))
    except (ValueError, FileNotFoundError, OSError) as e:
        print(f"webtext encode: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # tokenizers raises a bare Exception for a file it cannot parse
        print(f"webtext encode: {args.tokenizer}: not a readable tokenizer ({str(e).splitlines()[0][:200]})",
              file=sys.stderr)
        return 2
    with progress.Progress(STAGE, total=total, unit="docs"):
        manifest = run(args.docs, args.tokenizer, args.output, config, options)
    rows = [("documents", manifest["totals"]["documents"])]
    for split in shards.SPLITS:
        rows.append((f"{split} documents", manifest["splits"][split]["documents"]))
    stats.print_funnel(f"encode -> {args.output}", rows)
    s = stats.read_stats(args.output) or {}
    errors = sum(v for k, v in s.get("counters", {}).items() if k.startswith("error_"))
    print(f"{manifest['totals']['tokens']:,} tokens in "
          f"{sum(len(manifest['splits'][sp]['shards']) for sp in shards.SPLITS)} shards ({manifest['dtype']}), "
          f"{errors:,} documents in errors -> {args.output}", file=sys.stderr)
    return 0
