"""The token shard format: the one place that defines it (docs/formats.md describes it for users).

A shard directory holds:
  train-00000-of-00012.arrow ...   Arrow IPC *file* format, uncompressed, memory-mappable
  val-00000-of-00001.arrow ...
  manifest.json                    what the shards are and how to check them
  tokenizer.json                   a copy of the tokenizer that made them (the directory is self-contained)

Each shard has two columns: `doc_id` (string) and `tokens` (list<uint16>, or list<uint32> when the vocabulary
does not fit in 16 bits). Every document's tokens end with the end-of-text id. Read zero-copy: the flat token
buffer is the list column's child values and the document boundaries are its offsets.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

FORMAT = "webtext-token-shards"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
TOKENIZER_FILE = "tokenizer.json"
SPLITS = ("train", "val")
EOT_TOKEN = "<|endoftext|>"
# Arrow list offsets are int32: one shard holds at most this many tokens.
MAX_SHARD_TOKENS = (1 << 31) - 1
SHARD_RE = re.compile(r"^(?P<split>[a-z]+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.arrow$")


def dtype_for_vocab(vocab_size: int) -> str:
    return "uint16" if vocab_size <= 1 << 16 else "uint32"


def arrow_type(dtype: str) -> pa.DataType:
    return {"uint16": pa.uint16(), "uint32": pa.uint32()}[dtype]


def schema(dtype: str) -> pa.Schema:
    return pa.schema([
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("tokens", pa.list_(arrow_type(dtype)), nullable=False),
    ], metadata={b"format": FORMAT.encode(), b"format_version": str(FORMAT_VERSION).encode(),
                 b"dtype": dtype.encode()})


def shard_name(split: str, index: int, count: int) -> str:
    return f"{split}-{index:05d}-of-{count:05d}.arrow"


def shard_bytes(doc_ids: list[str], tokens: list[np.ndarray], dtype: str) -> bytes:
    """One shard file's bytes from documents' token arrays (each already ending with the eot id)."""
    np_dtype = np.dtype(dtype)
    flat = np.concatenate(tokens).astype(np_dtype, copy=False) if tokens else np.zeros(0, np_dtype)
    offsets = np.zeros(len(tokens) + 1, dtype=np.int64)
    if tokens:
        np.cumsum([len(t) for t in tokens], out=offsets[1:])
    return shard_buffer(doc_ids, flat, offsets, dtype).to_pybytes()


def shard_buffer(doc_ids: list[str] | pa.Array, flat: np.ndarray, offsets: np.ndarray, dtype: str) -> pa.Buffer:
    """One shard file's bytes (as an Arrow buffer, no extra copy) from the ids (a list or an Arrow string
    array), the flat token buffer and the document offsets (len(doc_ids) + 1 of them, starting at 0).
    One record batch, so readers get one contiguous token buffer. The same input always gives the same bytes."""
    if len(offsets) != len(doc_ids) + 1 or (len(offsets) and offsets[0] != 0) or offsets[-1] != len(flat):
        raise ValueError("offsets must start at 0, end at the token count and have one more entry than doc_ids")
    if len(flat) > MAX_SHARD_TOKENS:
        raise ValueError(f"{len(flat):,} tokens do not fit one shard (Arrow int32 offsets: at most "
                         f"{MAX_SHARD_TOKENS:,}); use smaller --shard-tokens")
    values = pa.array(np.ascontiguousarray(flat, dtype=np.dtype(dtype)), arrow_type(dtype))
    column = pa.ListArray.from_arrays(pa.array(np.asarray(offsets, dtype=np.int32), pa.int32()), values)
    ids = doc_ids if isinstance(doc_ids, pa.Array) else pa.array(doc_ids, pa.string())
    table = pa.table({"doc_id": ids, "tokens": column}, schema=schema(dtype))
    # Written twice: once to learn the size (no data copied), then into a buffer of exactly that size (a
    # growing BufferOutputStream would hold up to twice a ~200 MB shard while it doubles).
    size = pa.MockOutputStream()
    _write_ipc(size, table)
    out = pa.allocate_buffer(size.size())
    _write_ipc(pa.FixedSizeBufferWriter(out), table)
    return out


def _write_ipc(sink, table: pa.Table) -> None:
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=max(1, table.num_rows))


@dataclass
class Shard:
    """A memory-mapped shard: `tokens` is a numpy view of the flat token buffer (no copy), `offsets[i]` ..
    `offsets[i+1]` the span of document i, `doc_ids` an Arrow array."""
    path: str
    table: pa.Table
    tokens: np.ndarray
    offsets: np.ndarray
    dtype: str

    @property
    def num_documents(self) -> int:
        return len(self.offsets) - 1

    def document(self, i: int) -> np.ndarray:
        return self.tokens[self.offsets[i]:self.offsets[i + 1]]


def open_shard(path: str, source: pa.MemoryMappedFile | None = None) -> Shard:
    """Memory-map a local shard (or use the map `source`); the token buffer and offsets are views into the
    map (zero-copy)."""
    return _shard_of(path, pa.ipc.open_file(source or pa.memory_map(path, "r")).read_all())


def open_shard_bytes(data, path: str = "<memory>") -> Shard:
    """A shard from bytes already in memory (e.g. read from an object store); zero-copy over `data`."""
    return _shard_of(path, pa.ipc.open_file(pa.BufferReader(data)).read_all())


def _shard_of(path: str, table: pa.Table) -> Shard:
    dtype = ((table.schema.metadata or {}).get(b"dtype", b"").decode()
             or str(table.schema.field("tokens").type.value_type))
    column = table.column("tokens")
    if column.num_chunks == 0:
        return Shard(path, table, np.zeros(0, np.dtype(dtype)), np.zeros(1, np.int32), dtype)
    if column.num_chunks != 1:
        column = pa.chunked_array([pa.concat_arrays(column.chunks)])  # copies; only for foreign files
    chunk = column.chunk(0)
    offsets = np.frombuffer(chunk.buffers()[1], dtype=np.int32)[chunk.offset:chunk.offset + len(chunk) + 1]
    values = chunk.values
    tokens = np.frombuffer(values.buffers()[1], dtype=np.dtype(dtype))[values.offset:values.offset + len(values)]
    return Shard(path, table, tokens, offsets, dtype)


def sha256_file(path: str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def safe_member(directory: str, relative: str) -> str:
    """A manifest path resolved inside `directory`; paths that escape it (absolute, `..`) are refused."""
    if relative.startswith("/") or "\\" in relative or ".." in relative.split("/") or "://" in relative:
        raise ValueError(f"manifest path {relative!r} points outside {directory}")
    return posixpath.join(directory, relative)
