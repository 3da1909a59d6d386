"""Encode a documents dataset into sharded Arrow token files (train/val) with a manifest.

Every document becomes its byte-level BPE ids followed by <|endoftext|>. Documents are split into train and
val by a hash of their id (independent of --seed), put in the order of a seeded permutation (a hash of seed and
id), and cut into shards of about --shard-tokens tokens along that order. The shards, manifest.json and a
copy of tokenizer.json are byte-identical for the same documents and flags whatever the runner or worker
count. Documents without an id or text go to the `errors` dataset.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import os
import sys
import uuid
from dataclasses import asdict, dataclass
from typing import NamedTuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tokenizers import Tokenizer

from webtext.runtime import datasets, fs, progress, stats
from webtext.runtime.beam import WriteDataset, add_runner_arguments, pipeline_options
from webtext.runtime.errors import ERRORS, ERRORS_SCHEMA, error_row, error_sort_key
from webtext.tokenizer import bpe
from webtext.encode import shards

EXAMPLE = """  webtext encode --docs out/dedup --tokenizer out/tokenizer --output out/shards
  webtext encode --docs out/dedup --tokenizer gpt2/tokenizer.json --output out/shards-gpt2 --shard-tokens 50000000"""

STAGE = "encode"
DOCUMENTS = "documents"
VAL_FRACTION = 0.0005           # nanoGPT's OpenWebText split
SHARD_TOKENS = 100_000_000      # ~200 MB uint16 files: a few hundred shards for a WebText-sized corpus
SEED = 1337                     # seed of the document permutation
BATCH_BYTES = 1 << 20           # text per encode_batch call: ~170 web pages keep every core busy, and one
                                # batch's Encoding objects (~20x the text) stay a small part of memory
# encode_batch calls in flight: while one call's Encoding objects become numpy arrays (Python, holding the
# GIL), the next call's texts already keep the tokenizer's threads busy.
ENCODE_CALLS = 2
READ_ROWS = 256                 # documents decoded from Parquet at a time (a row group holds thousands)
ORDER_BITS = 16                 # resolution of the token histogram that places shard boundaries ...
ORDER_BUCKETS = 1 << ORDER_BITS  # ... in buckets of the permutation order
RUNS_DIR = "_tmp-encode"        # encoded batches waiting to be gathered into shards; deleted at the end
SPLIT_SALT = "webtext-split"    # the train/val split hashes this with the id, never the permutation seed
# How tokens travel from encoding to shard writing. "files": run files beside the output, read by the shard
# writers with pread, so the shuffle moves ~40 bytes per document (in one element per batch and shard) and
# local memory stays flat (the direct runner holds every shuffled element in memory). "shuffle": the tokens ride the shuffle, which Dataflow keeps on disk,
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


def val_rows(hashes: np.ndarray, doc_ids: pa.Array, threshold: int, first: tuple[int, str] | None,
             documents: int) -> np.ndarray:
    """Which documents are val: those whose id hash falls below the threshold. When val_fraction > 0 and
    there are two or more documents, the document with the smallest (hash, id) is val too, so a small corpus
    still gets a val split (it is the one the threshold would admit first)."""
    val = hashes < np.uint64(threshold)
    if threshold > 0 and documents >= 2 and first is not None:
        for i in np.flatnonzero(hashes == np.uint64(first[0])).tolist():
            val[i] |= doc_ids[i].as_py() == first[1]
    return val


def buckets_of(orders: np.ndarray) -> np.ndarray:
    """Order bucket of each permutation key (its top ORDER_BITS bits)."""
    return (orders >> np.uint64(64 - ORDER_BITS)).astype(np.int64)


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


def shard_order(orders: np.ndarray, doc_ids: pa.Array, digests: np.ndarray) -> np.ndarray:
    """The permutation that sorts a shard's documents by (order key, doc_id, token digest): the order key
    alone almost always decides; equal keys (a repeated id, or a 64-bit collision) fall back to the id and
    then the content, so the result never depends on arrival order."""
    perm = np.lexsort((digests, orders))
    ordered = orders[perm]
    ties = np.flatnonzero(ordered[1:] == ordered[:-1])
    if len(ties) == 0:
        return perm
    # Maximal ranges of equal keys, re-sorted by (doc_id, digest).
    starts = ties[np.r_[True, np.diff(ties) > 1]]
    ends = ties[np.r_[np.diff(ties) > 1, True]] + 2
    for a, b in zip(starts.tolist(), ends.tolist()):
        group = perm[a:b].tolist()
        perm[a:b] = sorted(group, key=lambda k: (doc_ids[k].as_py(), int(digests[k])))
    return perm


class Run(NamedTuple):
    """One encoded batch of documents, as arrays in the batch's order. Its tokens wait in run file `path`
    (shard format, row i = document i, the flat token values from byte `values_at` on), or, when the shuffle
    carries them, are `tokens` (flat, each document ending with eot). Per document only ~32 bytes of numbers
    and the id travel, not a Beam element."""
    path: str
    values_at: int
    doc_ids: pa.Array        # string
    split_hash: np.ndarray   # uint64
    order: np.ndarray        # uint64
    digest: np.ndarray       # uint64: 8-byte blake2b of the tokens, big-endian (compares as the bytes do)
    lengths: np.ndarray      # int64: tokens, eot included
    tokens: np.ndarray | None = None


class Piece(NamedTuple):
    """The documents of one run that belong to one shard: in run file `path`, each document's tokens start at
    token `starts` of the values at byte `values_at`; or, carried by the shuffle, their `tokens`."""
    path: str
    values_at: int
    starts: np.ndarray       # int64
    doc_ids: pa.Array
    order: np.ndarray
    digest: np.ndarray
    lengths: np.ndarray
    tokens: np.ndarray | None = None


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
        if self.batch_bytes < 1:
            raise ValueError(f"--batch-bytes {self.batch_bytes} must be at least 1")


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


def split_errors(table: pa.Table, count) -> tuple[pa.Table, list[dict]]:
    """(the rows that can be encoded, error rows for the others). Arrow finds the suspects; `check_row`
    explains each one."""
    doc_id, text = table.column("doc_id"), table.column("text")
    suspect = pc.or_(pc.or_(pc.is_null(doc_id), pc.equal(pc.binary_length(doc_id), 0)), pc.is_null(text))
    suspect = pc.fill_null(suspect, True)
    if not pc.any(suspect).as_py():
        return table, []
    errors = [e for e in map(lambda r: check_row(r, count), table.filter(suspect).to_pylist()) if e is not None]
    return table.filter(pc.invert(suspect)), errors


def text_batches(tables, batch_bytes: int):
    """Tables of consecutive rows of the `tables` (a stream of Arrow tables with a `text` column), each closed
    as soon as it holds `batch_bytes` (its texts' UTF-8 bytes plus one per document). Zero-copy slices."""
    held, size = [], 0
    for table in tables:
        ends = np.cumsum(pc.binary_length(table.column("text")).to_numpy(zero_copy_only=False).astype(np.int64) + 1)
        start = 0
        while start < table.num_rows:
            base = int(ends[start - 1]) if start else 0
            stop = int(np.searchsorted(ends, base + batch_bytes - size, side="left")) + 1
            if stop > table.num_rows:
                held.append(table.slice(start))
                size += int(ends[-1]) - base
                break
            held.append(table.slice(start, stop - start))
            yield pa.concat_tables(held)
            held, size, start = [], 0, stop
    if held:
        yield pa.concat_tables(held)


def _hashes(fn, values: list) -> np.ndarray:
    return np.fromiter((fn(v) for v in values), dtype=np.uint64, count=len(values))


_encoding_tokenizer: tuple[str, Tokenizer] | None = None   # (sha256 of its tokenizer.json, the tokenizer)


def encoding_tokenizer(path: str):
    """The tokenizer at `path` (a tokenizer.json or its directory) set up for encoding (`bpe.for_encoding`),
    one per process: kept for the next run while the file's content is the same, wherever it lies (every run
    reads the copy in its own output directory). A tokenizer made anew for every run of a long-lived process
    (`webtext build`, tests, benchmarks, a notebook) leaves ~50-90 MB behind once it has encoded (tokenizers
    0.23), and the process slows as it grows."""
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
        """The row group's encodable rows, READ_ROWS at a time (a row group is tens of MB of text: read
        whole, it and its decoding buffers would be the stage's largest allocation); error rows are appended
        to `errors`."""
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
        return Run(path, values_at, doc_ids, _hashes(split_hash, ids), _hashes(lambda d: order_key(self.seed, d), ids),
                   digests, lengths, None if path else flat)


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


def tokens_via(config: EncodeConfig, output_dir: str) -> str:
    if config.tokens_via != "auto":
        return config.tokens_via
    return "shuffle" if fs.is_remote(output_dir) else "files"


def plan_shards(totals: dict, shard_tokens: int, threshold: int) -> dict:
    """{"shards": {split: (bucket -> shard index, shard count)}, "first": the (split hash, doc_id) that goes
    to val whatever the threshold, or None, "documents": n}. An empty split gets one empty shard."""
    hist = {split: np.array(totals["hist"].get(split, np.zeros(ORDER_BUCKETS, dtype=np.int64)), dtype=np.int64)
            for split in shards.SPLITS}
    first = totals["first"]
    documents = totals["documents"]
    if first is not None and first[0] >= threshold and threshold > 0 and documents >= 2:
        h, _, bucket, tokens = first
        hist["train"][bucket] -= tokens
        hist["val"][bucket] += tokens
    return {"shards": {split: shard_plan(hist[split], shard_tokens) for split in shards.SPLITS},
            "first": None if first is None else first[:2], "documents": documents}


def route(run: Run, plan: dict, threshold: int) -> list:
    """A Run -> ((split, shard index), Piece) for every shard it has documents for."""
    if len(run.lengths) == 0:
        return []
    val = val_rows(run.split_hash, run.doc_ids, threshold, plan["first"], plan["documents"])
    buckets = buckets_of(run.order)
    out = []
    offsets = np.zeros(len(run.lengths) + 1, dtype=np.int64)
    np.cumsum(run.lengths, out=offsets[1:])
    for split, mask in (("train", ~val), ("val", val)):
        if not mask.any():
            continue
        index = plan["shards"][split][0][buckets]
        for shard in np.unique(index[mask]).tolist():
            rows = np.flatnonzero(mask & (index == shard))
            tokens = None
            if run.tokens is not None:
                tokens = np.concatenate([run.tokens[offsets[r]:offsets[r + 1]] for r in rows.tolist()])
            out.append(((split, shard), Piece(run.path, run.values_at, offsets[rows], run.doc_ids.take(pa.array(rows)), run.order[rows],
                                              run.digest[rows], run.lengths[rows], tokens)))
    return out


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
        fs.write_atomic(fs.join(self.output_dir, name), memoryview(data))  # no copy of a ~200 MB buffer
        yield split, {"path": name, "tokens": int(offsets[-1]), "documents": len(perm),
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
                   | "Paths" >> beam.FlatMap(existing_documents)
                   | "RowGroups" >> beam.FlatMap(datasets.row_groups)
                   | "Reshuffle" >> beam.Reshuffle()
                   | "Encode" >> beam.ParDo(EncodeRowGroups(self.tokenizer_path, runs_dir, cfg.seed,
                                                            cfg.batch_bytes)).with_outputs(ERRORS, main="runs"))
        runs = encoded.runs
        plan = (runs
                | "Totals" >> beam.CombineGlobally(Totals(threshold))
                | "Plan" >> beam.Map(plan_shards, cfg.shard_tokens, threshold))
        plan_side = beam.pvalue.AsSingleton(plan)
        pieces = runs | "Route" >> beam.FlatMap(route, plan_side, threshold)
        every_shard = plan | "EveryShard" >> beam.FlatMap(
            lambda p: [((split, i), None) for split, (_, n) in sorted(p["shards"].items()) for i in range(n)])
        written = ((pieces, every_shard)
                   | "FlattenShards" >> beam.Flatten()
                   | "GroupByShard" >> beam.GroupByKey()
                   | "WriteShards" >> beam.ParDo(WriteShard(self.output_dir, self.dtype), plan=plan_side))
        return written, encoded[ERRORS]


def existing_documents(docs_dir: str) -> list[str]:
    paths = datasets.shard_paths(docs_dir, DOCUMENTS)
    if not paths:
        raise FileNotFoundError(f"{docs_dir}: no dataset {DOCUMENTS!r} (run `webtext extract` or `webtext dedup`)")
    return paths


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
    written, errors = pipeline | EncodeShards(docs_dir, output_dir, tokenizer_path, dtype, config)
    (written
     | "AllShards" >> beam.combiners.ToList()
     | "Manifest" >> beam.Map(write_manifest))
    errors | WriteDataset(output_dir, ERRORS, ERRORS_SCHEMA, error_sort_key)


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
