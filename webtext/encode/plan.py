"""Which document goes where: the train/val split by id hash, the seeded permutation, shard boundaries from a
token histogram of the permutation order, the order inside a shard, and the manifest; the stage's config,
which rows cannot be encoded, and the batches of text handed to the tokenizer. No Beam."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from webtext.encode import shards
from webtext.encode.schema import (
    DOCUMENTS,
    MAX_HASH,
    MISSING_DOC_ID,
    MISSING_TEXT,
    ORDER_BITS,
    ORDER_BUCKETS,
    SEED,
    SHARD_TOKENS,
    SPLIT_SALT,
    STAGE,
    VAL_FRACTION,
)
from webtext.runtime import fs
from webtext.runtime.errors import error_row

# Text per encode_batch call: enough pages to keep every tokenizer thread busy, few enough that one batch's
# Encoding objects (many times the text) stay a small part of memory.
BATCH_BYTES = 1 << 20
# How tokens travel from encoding to shard writing. "files": run files beside the output, read by the shard
# writers with pread, so the shuffle moves a few numbers per document (in one element per batch and shard) and
# local memory stays flat (the direct runner holds every shuffled element in memory). "shuffle": the tokens
# ride the shuffle, which Dataflow keeps on disk, and no shard writer reads every run file from an object
# store. "auto": files locally, shuffle for gs://.
TOKENS_VIA = ("auto", "files", "shuffle")


@dataclass(frozen=True)
class EncodeConfig:
    val_fraction: float = VAL_FRACTION
    shard_tokens: int = SHARD_TOKENS
    seed: int = SEED
    batch_bytes: int = BATCH_BYTES
    tokens_via: str = "auto"

    def __post_init__(self):
        if self.tokens_via not in TOKENS_VIA:
            raise ValueError(f"--tokens-via {self.tokens_via!r}: choose from {', '.join(TOKENS_VIA)}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"--val-fraction {self.val_fraction} must be in [0, 1)")
        if not 0 < self.shard_tokens <= shards.MAX_SHARD_TOKENS:
            raise ValueError(f"--shard-tokens {self.shard_tokens} must be in 1..{shards.MAX_SHARD_TOKENS}")
        if self.batch_bytes < 1:
            raise ValueError(f"--batch-bytes {self.batch_bytes} must be at least 1")

    @classmethod
    def of(cls, args) -> EncodeConfig:
        """The config the command's flags ask for."""
        return cls(val_fraction=args.val_fraction, shard_tokens=args.shard_tokens, seed=args.seed,
                   batch_bytes=args.batch_bytes, tokens_via=args.tokens_via)

    def manifest_config(self) -> dict:
        """The config manifest.json records: how tokens travel changes no byte of the output, so it stays out."""
        return {k: v for k, v in asdict(self).items() if k != "tokens_via"} | {"docs_dataset": DOCUMENTS}


def tokens_via(config: EncodeConfig, output_dir: str) -> str:
    if config.tokens_via != "auto":
        return config.tokens_via
    return "shuffle" if fs.is_remote(output_dir) else "files"


# ---------------------------------------------------------------------------------------------------------
# Split and order

def _hash64(*parts: str) -> int:
    data = "\0".join(parts).encode("utf-8", errors="surrogatepass")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def split_hash(doc_id: str) -> int:
    return _hash64(SPLIT_SALT, doc_id)


def order_key(seed: int, doc_id: str) -> int:
    """The document's place in the seeded permutation (ties, i.e. repeated ids, are broken by content)."""
    return _hash64(str(seed), doc_id)


def hashes_of(fn, values: list) -> np.ndarray:
    """`fn` (split_hash, or an order_key) of each value, as uint64."""
    return np.fromiter((fn(v) for v in values), dtype=np.uint64, count=len(values))


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


# ---------------------------------------------------------------------------------------------------------
# Shards

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


def plan_shards(totals: dict, shard_tokens: int, threshold: int) -> dict:
    """{"shards": {split: (bucket -> shard index, shard count)}, "first": the (split hash, doc_id) that goes
    to val whatever the threshold, or None, "documents": n}, from the totals over every Run (the pipeline's
    `Totals`). An empty split gets one empty shard."""
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
    carries them, are `tokens` (flat, each document ending with eot). Per document only a few numbers and
    the id travel, not a Beam element."""
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
            out.append(((split, shard), Piece(run.path, run.values_at, offsets[rows], run.doc_ids.take(pa.array(rows)),
                                              run.order[rows], run.digest[rows], run.lengths[rows], tokens)))
    return out


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


# ---------------------------------------------------------------------------------------------------------
# Documents

def check_row(row: dict, count) -> dict | None:
    """An error row for a document that cannot be encoded, else None."""
    doc_id, text = row.get("doc_id"), row.get("text")
    if not isinstance(doc_id, str) or not doc_id:
        count(f"error_{MISSING_DOC_ID}")
        return error_row(STAGE, DOCUMENTS, None, MISSING_DOC_ID, "document without a doc_id", text)
    if not isinstance(text, str):
        count(f"error_{MISSING_TEXT}")
        return error_row(STAGE, doc_id, None, MISSING_TEXT, "document without text")
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
