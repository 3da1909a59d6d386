"""The encode stage's Beam graph: row groups of documents -> encoded Runs -> token totals -> a shard plan ->
every shard written from its Pieces in permutation order -> manifest.json; and `encode`, which runs it."""

from __future__ import annotations

import argparse
import collections
import hashlib
import os
import uuid
from typing import NamedTuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tokenizers import Tokenizer

from webtext.encode import shards
from webtext.encode.plan import (
    EncodeConfig,
    Run,
    buckets_of,
    build_manifest,
    hashes_of,
    order_key,
    plan_shards,
    route,
    shard_order,
    split_errors,
    split_hash,
    text_batches,
    tokens_via,
    val_threshold,
)
from webtext.encode.schema import DOCUMENTS, ORDER_BUCKETS, RUNS_DIR, STAGE
from webtext.runtime import datasets, fs, progress, stats
from webtext.runtime.beam import GroupByShard, WriteDataset, existing_shards
from webtext.runtime.errors import ERRORS, ERRORS_SCHEMA, error_sort_key
from webtext.tokenizer import bpe

# encode_batch calls in flight: while one call's Encoding objects become numpy arrays (Python, holding the
# GIL), the next call's texts already keep the tokenizer's threads busy.
ENCODE_CALLS = 2
READ_ROWS = 256                 # documents decoded from Parquet at a time (a row group holds thousands)


def tokenizer_source(path: str) -> str:
    """The tokenizer.json that `path` (the file, or its directory) names."""
    return path if path.endswith(".json") else fs.join(path, bpe.TOKENIZER_FILE)


def read_tokenizer(path: str) -> str:
    """The text of the tokenizer.json that `path` names (copied byte for byte into the output)."""
    return fs.read_bytes(tokenizer_source(path)).decode("utf-8")


def manifest_tokenizer(tok: Tokenizer) -> dict:
    """The tokenizer as manifest.json (and `_stats.json`) describe it."""
    return {"fingerprint": bpe.tokenizer_fingerprint(tok), "vocab_size": bpe.vocab_size(tok),
            "eot_id": bpe.eot_id(tok), "eot_token": bpe.EOT_TOKEN, "file": shards.TOKENIZER_FILE}


_encoding_tokenizer: tuple[str, Tokenizer] | None = None   # (sha256 of its tokenizer.json, the tokenizer)


def encoding_tokenizer(path: str):
    """The tokenizer at `path` (a tokenizer.json or its directory) set up for encoding (`bpe.for_encoding`),
    one per process: kept for the next run while the file's content is the same, wherever it lies (every run
    reads the copy in its own output directory). A tokenizer made anew for every run of a long-lived process
    (`webtext build`, tests, benchmarks, a notebook) leaves memory behind once it has encoded, and the process
    slows as it grows."""
    global _encoding_tokenizer
    data = fs.read_bytes(tokenizer_source(path))
    key = hashlib.sha256(data).hexdigest()
    if _encoding_tokenizer is None or _encoding_tokenizer[0] != key:
        _encoding_tokenizer = (key, bpe.for_encoding(Tokenizer.from_str(data.decode("utf-8"))))
    return _encoding_tokenizer[1]


class EncodeRowGroups(beam.DoFn):
    """A Parquet row group of documents -> a Run per ~batch_bytes of text (its run file written, unless the
    shuffle carries the tokens), and an error row per document that cannot be encoded.

    Documents stay Arrow until encode_batch needs their text as str. encode_batch releases the GIL, so it
    runs in helper threads (ENCODE_CALLS of them): while later batches are encoded, this thread turns the
    oldest one into arrays and writes its run file."""

    def __init__(self, tokenizer_path: str, runs_dir: str | None, seed: int, batch_bytes: int):
        # The path, not the tokenizer: a GPT-2 vocabulary is megabytes that Beam would pickle and compress
        # again for every bundle.
        self.tokenizer_path, self.runs_dir, self.seed = tokenizer_path, runs_dir, seed
        self.batch_bytes = batch_bytes
        self.count = stats.BeamCounters(STAGE)

    def setup(self):
        from concurrent.futures import ThreadPoolExecutor

        self.tok = encoding_tokenizer(self.tokenizer_path)
        self.eot = bpe.eot_id(self.tok)
        self.dtype = shards.dtype_for_vocab(bpe.vocab_size(self.tok))
        self.encoder = ThreadPoolExecutor(max_workers=ENCODE_CALLS, thread_name_prefix="encode")

    def teardown(self):
        self.encoder.shutdown(wait=False)

    def start_bundle(self):
        self.pending = collections.deque()

    def process(self, task):
        errors = []
        for batch in text_batches(self.good_rows(task, errors), self.batch_bytes):
            texts = batch.column("text")
            future = self.encoder.submit(bpe.encode_texts, self.tok, texts.to_pylist(), self.dtype)
            # Only the ids wait with the encoding (not the batch, whose text would keep the whole row group
            # alive while the next one is read).
            chars = pc.sum(pc.utf8_length(texts)).as_py() or 0
            self.pending.append((batch.column("doc_id").combine_chunks(), chars, future))
            while len(self.pending) > ENCODE_CALLS:
                yield self.run_of(*self.pending.popleft())
            yield from self.errors_out(errors)
        yield from self.errors_out(errors)

    def good_rows(self, task, errors: list):
        """The row group's encodable rows, READ_ROWS at a time (read whole, a row group and its decoding
        buffers would be the stage's largest allocation); error rows are appended to `errors`."""
        path, index = task
        with fs.open_read(path) as f:
            for record_batch in pq.ParquetFile(f).iter_batches(batch_size=READ_ROWS, row_groups=[index],
                                                              columns=["doc_id", "text"]):
                table = pa.Table.from_batches([record_batch])
                self.count("documents_in", table.num_rows)
                progress.tick(STAGE, table.num_rows)
                good, bad = split_errors(table, self.count)
                errors += bad
                yield good

    @staticmethod
    def errors_out(errors: list):
        while errors:
            yield beam.pvalue.TaggedOutput(ERRORS, errors.pop())

    def finish_bundle(self):
        from apache_beam.transforms.window import GlobalWindow
        from apache_beam.utils.windowed_value import WindowedValue

        while self.pending:
            run = self.run_of(*self.pending.popleft())
            yield WindowedValue(run, GlobalWindow().max_timestamp(), [GlobalWindow()])

    def run_of(self, doc_ids: pa.Array, chars: int, future) -> Run:
        encoded = future.result()
        ids = doc_ids.to_pylist()
        lengths = np.fromiter((len(t) + 1 for t in encoded), dtype=np.int64, count=len(encoded))
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        eot = np.array([self.eot], dtype=np.dtype(self.dtype))
        flat = np.concatenate([part for t in encoded for part in (t, eot)])
        path, values_at = "", 0
        if self.runs_dir is not None:
            # A retried bundle writes a new run file; only the committed attempt's Run points at one.
            path = fs.join(self.runs_dir, f"run-{uuid.uuid4().hex}.arrow")
            data = shards.shard_buffer(doc_ids, flat, offsets, self.dtype)
            values_at = shards.open_shard_bytes(data).tokens.ctypes.data - data.address
            fs.write_atomic(path, memoryview(data))
        view = memoryview(flat).cast("B")
        size = flat.itemsize
        digests = np.fromiter(
            (int.from_bytes(hashlib.blake2b(view[a * size:b * size], digest_size=8).digest(), "big")
             for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())), dtype=np.uint64, count=len(ids))
        self.count("documents", len(ids))
        self.count("tokens", int(offsets[-1]))
        self.count("text_chars", chars)
        return Run(path, values_at, doc_ids, hashes_of(split_hash, ids),
                   hashes_of(lambda d: order_key(self.seed, d), ids), digests, lengths, None if path else flat)


class Totals(beam.CombineFn):
    """Over every Run: tokens per (split by hash alone, order bucket), the document count, and the smallest
    (split hash, doc_id) with its bucket and tokens (the document a small corpus moves into val)."""

    def __init__(self, threshold: int):
        self.threshold = threshold

    def create_accumulator(self):
        return {"hist": {}, "documents": 0, "first": None}

    def add_input(self, acc, run: Run):
        if len(run.lengths) == 0:
            return acc
        buckets = buckets_of(run.order)
        val = run.split_hash < np.uint64(self.threshold)
        for split, mask in (("val", val), ("train", ~val)):
            if mask.any():
                h = np.bincount(buckets[mask], weights=run.lengths[mask], minlength=ORDER_BUCKETS)
                acc["hist"][split] = acc["hist"].get(split, 0) + h.astype(np.int64)
        acc["documents"] += len(run.lengths)
        low = np.flatnonzero(run.split_hash == run.split_hash.min()).tolist()
        first_id = min(run.doc_ids[i].as_py() for i in low)
        same = [i for i in low if run.doc_ids[i].as_py() == first_id]
        mine = (int(run.split_hash[low[0]]), first_id, int(buckets[same[0]]), int(run.lengths[same].sum()))
        acc["first"] = self._min_first(acc["first"], mine)
        return acc

    @staticmethod
    def _min_first(a, b):
        if a is None or b is None:
            return a or b
        if a[:2] == b[:2]:
            return (*a[:3], a[3] + b[3])  # a repeated id: all its copies go together
        return min(a, b)

    def merge_accumulators(self, accs):
        out = self.create_accumulator()
        for acc in accs:
            for split, h in acc["hist"].items():
                out["hist"][split] = out["hist"].get(split, 0) + h
            out["documents"] += acc["documents"]
            out["first"] = self._min_first(out["first"], acc["first"])
        return out

    def extract_output(self, acc):
        return acc


class RunReader:
    """Token spans of run files, copied into a shard's buffer. Local files are read with pread at offsets the
    Pieces carry, never memory-mapped: a shard draws a few documents from every run file, and mapping them
    (the kernel reads around each fault) would make resident memory grow with the number of runs, i.e. with
    the corpus. Object-store files are read whole, once per shard."""

    def __init__(self):
        self.open: dict[str, int | bytes] = {}

    def close(self) -> None:
        for source in self.open.values():
            if isinstance(source, int):
                os.close(source)
        self.open.clear()

    def read_into(self, run: str, at: int, out: np.ndarray) -> None:
        """Fill `out` from run file `run`, starting at byte `at`."""
        source = self.open.get(run)
        if source is None:
            source = self.open[run] = fs.read_bytes(run) if fs.is_remote(run) else os.open(run, os.O_RDONLY)
        want = out.nbytes
        if isinstance(source, int):
            got = os.preadv(source, [memoryview(out).cast("B")], at)
        else:
            got = len(source[at:at + want])
            out[:] = np.frombuffer(source, dtype=out.dtype, count=got // out.itemsize, offset=at)
        if got != want:
            raise OSError(f"{run}: short read ({got} of {want} bytes) at byte {at}")


class WriteShard(beam.DoFn):
    """(split, index) and its Pieces -> the shard file, in permutation order; yields its manifest entry."""

    def __init__(self, output_dir: str, dtype: str):
        self.output_dir, self.dtype = output_dir, dtype

    def process(self, element, plan):
        (split, index), pieces = element
        pieces = [p for p in pieces if p is not None]
        np_dtype = np.dtype(self.dtype)
        if pieces:
            doc_ids = pa.concat_arrays([p.doc_ids for p in pieces])
            lengths = np.concatenate([p.lengths for p in pieces])
            perm = shard_order(np.concatenate([p.order for p in pieces]), doc_ids,
                               np.concatenate([p.digest for p in pieces]))
        else:
            doc_ids, lengths, perm = pa.array([], pa.string()), np.zeros(0, np.int64), np.zeros(0, np.int64)
        offsets = np.zeros(len(perm) + 1, dtype=np.int64)
        np.cumsum(lengths[perm], out=offsets[1:])
        flat = np.empty(int(offsets[-1]), dtype=np_dtype)
        # Where each document (in arrival order) comes from: its piece, and in it either a byte of the run
        # file or, for a piece that carries its tokens, a token of those.
        piece_of = np.repeat(np.arange(len(pieces)), [len(p.lengths) for p in pieces]).tolist()
        at = (np.concatenate([p.values_at + p.starts * np_dtype.itemsize if p.tokens is None
                              else np.cumsum(p.lengths) - p.lengths for p in pieces]).tolist() if pieces else [])
        reader = RunReader()
        try:
            for k, a, b in zip(perm.tolist(), offsets[:-1].tolist(), offsets[1:].tolist()):
                p = pieces[piece_of[k]]
                if p.tokens is None:
                    reader.read_into(p.path, at[k], flat[a:b])
                else:
                    flat[a:b] = p.tokens[at[k]:at[k] + b - a]
        finally:
            reader.close()
        data = shards.shard_buffer(doc_ids.take(pa.array(perm, pa.int64())), flat, offsets, self.dtype)
        name = shards.shard_name(split, index, plan["shards"][split][1])
        fs.write_atomic(fs.join(self.output_dir, name), memoryview(data))  # no copy of a shard-sized buffer
        yield split, {"path": name, "tokens": int(offsets[-1]), "documents": len(perm),
                      "bytes": data.size, "sha256": hashlib.sha256(memoryview(data)).hexdigest()}


def shard_keys(plan: dict) -> list[tuple[str, int]]:
    """(split, index) of every shard of the plan, empty ones included."""
    return [(split, i) for split, (_, n) in sorted(plan["shards"].items()) for i in range(n)]


class EncodeShards(beam.PTransform):
    """documents dataset -> shard files under output_dir; returns the manifest entries and the error rows."""

    def __init__(self, docs_dir: str, output_dir: str, tokenizer_path: str, dtype: str, config: EncodeConfig):
        super().__init__()
        self.docs_dir, self.output_dir, self.tokenizer_path = docs_dir, output_dir, tokenizer_path
        self.dtype, self.config = dtype, config

    def expand(self, pbegin):
        cfg = self.config
        runs_dir = fs.join(self.output_dir, RUNS_DIR) if tokens_via(cfg, self.output_dir) == "files" else None
        threshold = val_threshold(cfg.val_fraction)
        # Row groups, not rows, are the elements: a document never becomes a Beam element of its own.
        encoded = (pbegin
                   | "Dir" >> beam.Create([self.docs_dir])
                   | "Paths" >> beam.FlatMap(existing_shards, DOCUMENTS)
                   | "RowGroups" >> beam.FlatMap(datasets.row_groups)
                   | "Reshuffle" >> beam.Reshuffle()
                   | "Encode" >> beam.ParDo(EncodeRowGroups(self.tokenizer_path, runs_dir, cfg.seed,
                                                            cfg.batch_bytes)).with_outputs(ERRORS, main="runs"))
        runs = encoded.runs
        plan = (runs
                | "Totals" >> beam.CombineGlobally(Totals(threshold))
                | "Plan" >> beam.Map(plan_shards, cfg.shard_tokens, threshold))
        plan_side = beam.pvalue.AsSingleton(plan)
        written = (runs
                   | "Route" >> beam.FlatMap(route, plan_side, threshold)
                   | "GroupByShard" >> GroupByShard(plan, keys_of=shard_keys)
                   | "WriteShards" >> beam.ParDo(WriteShard(self.output_dir, self.dtype), plan=plan_side))
        return written, encoded[ERRORS]


def build_pipeline(pipeline: beam.Pipeline, docs_dir: str, output_dir: str, tokenizer_path: str, dtype: str,
                   config: EncodeConfig, write_manifest) -> None:
    written, errors = pipeline | EncodeShards(docs_dir, output_dir, tokenizer_path, dtype, config)
    (written
     | "AllShards" >> beam.combiners.ToList()
     | "Manifest" >> beam.Map(write_manifest))
    errors | WriteDataset(output_dir, ERRORS, ERRORS_SCHEMA, error_sort_key)


def graph(pipeline: beam.Pipeline, args: argparse.Namespace) -> None:
    """The stage's pipeline, built from its flags without touching any output (`webtext build --dry-run`).
    In a whole-build dry run the tokenizer does not exist yet: the graph is the same for either token
    width, so a missing tokenizer is taken as one that fits uint16."""
    config = EncodeConfig.of(args)
    try:
        dtype = shards.dtype_for_vocab(bpe.vocab_size(bpe.load(tokenizer_source(args.tokenizer))))
    except (FileNotFoundError, OSError):
        dtype = "uint16"
    build_pipeline(pipeline, args.docs, args.output, fs.join(args.output, shards.TOKENIZER_FILE), dtype, config,
                   _no_manifest)


def _no_manifest(entries) -> None:
    raise RuntimeError("a dry-run graph is not for running")


def remove_outputs(output_dir: str) -> None:
    """Delete an earlier run's outputs (manifest first: without it the directory reads as unfinished).
    `_stats.json` and the errors dataset too, which the command's `run_command` has removed already: `encode`
    is also called without it (tests, bench/encode.py), and then nothing else would."""
    fs.delete([p for p in [fs.join(output_dir, shards.MANIFEST)] if fs.exists(p)])
    stale = fs.glob_or_empty(fs.join(output_dir, "*.arrow"))
    fs.delete([p for p in stale if shards.SHARD_RE.match(p.rsplit("/", 1)[-1])])
    fs.delete([p for p in [fs.join(output_dir, stats.STATS_FILE)] if fs.exists(p)])
    fs.delete(fs.glob_or_empty(fs.join(output_dir, RUNS_DIR, "*")))
    datasets.remove_dataset(output_dir, ERRORS)


class Encoded(NamedTuple):
    manifest: dict    # manifest.json as written
    counters: dict    # the pipeline's counters


def encode(docs_dir: str, tokenizer_json: str, output_dir: str, config: EncodeConfig, options=None,
           upstream: dict | None = None) -> Encoded:
    """Encode the documents dataset in `docs_dir` with the tokenizer `tokenizer_json` (its text, copied into
    `output_dir` as is) into shards, manifest.json and the errors dataset under `output_dir`, replacing an
    earlier run's. `upstream` is the `_stats.json` of `docs_dir`, which manifest.json records."""
    tok = Tokenizer.from_str(tokenizer_json)
    tokenizer = manifest_tokenizer(tok)
    dtype = shards.dtype_for_vocab(tokenizer["vocab_size"])

    fs.makedirs(output_dir)
    remove_outputs(output_dir)
    fs.makedirs(fs.join(output_dir, RUNS_DIR))
    copied_tokenizer = fs.join(output_dir, shards.TOKENIZER_FILE)
    fs.write_atomic(copied_tokenizer, tokenizer_json.encode("utf-8"))

    manifest_path = fs.join(output_dir, shards.MANIFEST)
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, docs_dir, output_dir, copied_tokenizer, dtype, config,
                   lambda entries: fs.write_json(
                       manifest_path, build_manifest(entries, tokenizer, dtype, config.manifest_config(), upstream)))
    result = pipeline.run()
    result.wait_until_finish()

    fs.delete(fs.glob_or_empty(fs.join(output_dir, RUNS_DIR, "*")))
    if not fs.is_remote(output_dir):
        try:
            os.rmdir(fs.join(output_dir, RUNS_DIR))
        except OSError:
            pass
    return Encoded(fs.read_json(manifest_path), stats.collect_counters(result, STAGE))
