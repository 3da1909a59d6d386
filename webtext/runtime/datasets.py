"""The on-disk layout shared by every stage's tabular output.

A stage's output directory holds one or more named datasets, each a set of Parquet files
`NAME-SSSSS-of-NNNNN.parquet`, plus `_stats.json`. Rows are assigned to shards by a stable hash of their
sort key and sorted within each shard, and the shard count follows from the row count alone, so the same
rows give byte-identical files whatever the runner, the worker count or the input order.

Plain functions, free of Beam (a stage's local processes read and write through them); the Beam transforms
that write and read datasets (`WriteDataset`, `WriteRuns`, `ReadDataset`) are in `webtext.runtime.beam`.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from webtext.runtime import fs

SHARD_RE = re.compile(r"^(?P<name>[a-z_]+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.parquet$")


def shard_name(name: str, index: int, count: int) -> str:
    return f"{name}-{index:05d}-of-{count:05d}.parquet"


def shard_pattern(output_dir: str, name: str) -> str:
    return fs.join(output_dir, f"{name}-*-of-*.parquet")


def shard_paths(output_dir: str, name: str) -> list[str]:
    """The dataset's files in shard order; an error if the set is incomplete or mixes two shard counts."""
    paths = fs.glob_or_empty(shard_pattern(output_dir, name))
    found = []
    for p in paths:
        m = SHARD_RE.match(p.rsplit("/", 1)[-1])
        if m and m["name"] == name:
            found.append((int(m["index"]), int(m["count"]), p))
    counts = {c for _, c, _ in found}
    if len(counts) > 1:
        raise ValueError(f"{output_dir}: dataset {name!r} mixes shard counts {sorted(counts)}: stale files?")
    if found and len(found) != next(iter(counts)):
        raise ValueError(f"{output_dir}: dataset {name!r} has {len(found)} of {next(iter(counts))} shards")
    return [p for _, _, p in sorted(found)]


def remove_dataset(output_dir: str, name: str) -> None:
    """Delete a dataset's shards before rewriting it, so no stale shard of an older run survives."""
    fs.delete(fs.glob_or_empty(shard_pattern(output_dir, name)))


def stable_hash(value: Any) -> int:
    """A 64-bit hash that is the same in every process and on every machine (unlike `hash`)."""
    return int.from_bytes(hashlib.blake2b(repr(value).encode("utf-8"), digest_size=8).digest(), "little")


def num_shards_for(rows: int, rows_per_shard: int) -> int:
    return max(1, -(-rows // rows_per_shard))


ROW_GROUP_BYTES = 32 << 20     # Arrow bytes per Parquet row group: the unit a reader decodes and a task gets
ROW_GROUP_ROWS = (1024, 65536)  # ... within these row counts


def row_group_rows(table: pa.Table) -> int:
    """Rows per row group for this table: about ROW_GROUP_BYTES each (a few thousand documents, tens of
    thousands of link rows), so readers can split a file into tasks without decoding it more than once."""
    per_row = _value_bytes(table) / max(table.num_rows, 1)
    return int(min(max(ROW_GROUP_BYTES // max(per_row, 1), ROW_GROUP_ROWS[0]), ROW_GROUP_ROWS[1]))


def _value_bytes(table: pa.Table) -> int:
    """The table's size from its values alone (string and binary lengths, 8 bytes for anything else), so
    that equal rows give equal sizes however their Arrow buffers were built."""
    total = 0
    for column in table.columns:
        if pa.types.is_string(column.type) or pa.types.is_binary(column.type) or \
                pa.types.is_large_string(column.type) or pa.types.is_large_binary(column.type):
            total += pc.sum(pc.binary_length(column)).as_py() or 0
        else:
            total += 8 * len(column)
    return total


def table_bytes(rows: list[dict] | pa.Table, schema: pa.Schema) -> bytes:
    """One Parquet file's bytes; the same rows always give the same bytes (as dicts or as a table)."""
    if isinstance(rows, pa.Table):
        table = rows.cast(schema).combine_chunks()
    else:
        table = pa.Table.from_pylist(rows, schema=schema)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", row_group_size=row_group_rows(table), write_statistics=True)
    return buf.getvalue()


def split_into_runs(table: pa.Table, key: str, num_shards: int, run_dir: str, run_name: str) -> list[tuple[int, str]]:
    """Write `table`'s rows as sorted runs, one Arrow IPC file per output shard they fall in (the shard of
    `beam.WriteDataset` with `sort_key=lambda r: r[key]`), at `run_dir/SSSSS/run_name.arrow`. Returns
    (shard, path) for each run. A retried task rewrites the same files (atomically)."""
    if not table.num_rows:
        return []
    shard = np.array([stable_hash(v) % num_shards for v in table.column(key).to_pylist()], np.int64)
    # One sort by (shard, key), then each shard's run is a contiguous slice: no pass over the rows per shard.
    order = pc.sort_indices(table.append_column("_shard", pa.array(shard)), [("_shard", "ascending"),
                                                                             (key, "ascending")])
    table, shard = table.take(order), shard[order.to_numpy()]
    starts = np.flatnonzero(np.diff(shard, prepend=-1))
    runs = []
    for start, end in zip(starts.tolist(), np.append(starts[1:], len(shard)).tolist()):
        index, part = int(shard[start]), table.slice(start, end - start)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_file(sink, part.schema) as writer:
            writer.write_table(part)
        path = fs.join(run_dir, f"{index:05d}", f"{run_name}.arrow")
        fs.write_atomic(path, sink.getvalue().to_pybytes())
        runs.append((index, path))
    return runs


def write_shard_from_runs(task: tuple[int, list], output_dir: str, name: str, schema: pa.Schema, key: str,
                          num_shards: int) -> str:
    """Merge one shard's runs (`split_into_runs`) into its Parquet file, byte for byte what
    `beam.WriteDataset` writes for the same rows; then delete the runs.
    `task` is (shard, run paths; None entries ignored)."""
    index, paths = task
    paths = sorted(p for p in paths if p is not None)
    tables = []
    for path in paths:
        with fs.open_read(path) as f:
            tables.append(pa.ipc.open_file(pa.py_buffer(f.read())).read_all())
    table = pa.concat_tables(tables).combine_chunks() if tables else schema.empty_table()
    table = table.take(pc.sort_indices(table, [(key, "ascending")]))
    path = fs.join(output_dir, shard_name(name, index, num_shards))
    fs.write_atomic(path, table_bytes(table, schema))
    fs.delete(paths)
    return path


def count_rows(output_dir: str, name: str) -> int | None:
    """Rows of a dataset from its Parquet footers alone (no data read); None when there is no such dataset."""
    paths = shard_paths(output_dir, name)
    if not paths:
        return None
    total = 0
    for path in paths:
        with fs.open_read(path) as f:
            total += pq.ParquetFile(f).metadata.num_rows
    return total


def row_groups(path: str) -> list[tuple[str, int]]:
    """A Parquet file's reading tasks: (path, row group index), one per row group (see `row_group_rows`)."""
    with fs.open_read(path) as f:
        return [(path, i) for i in range(pq.ParquetFile(f).metadata.num_row_groups)]


def read_row_group(task: tuple[str, int], columns: list[str] | None = None) -> pa.Table:
    path, index = task
    with fs.open_read(path) as f:
        return pq.ParquetFile(f).read_row_group(index, columns=columns)


def read_table(output_dir: str, name: str, columns: list[str] | None = None) -> pa.Table:
    """A whole dataset as one Arrow table, in shard order (for tests, inspect and small datasets)."""
    paths = shard_paths(output_dir, name)
    if not paths:
        raise FileNotFoundError(f"{output_dir}: no dataset {name!r} ({shard_pattern(output_dir, name)})")
    tables = []
    for p in paths:
        with fs.open_read(p) as f:
            tables.append(pq.read_table(f, columns=columns))
    return pa.concat_tables(tables)


def read_rows(output_dir: str, name: str, columns: list[str] | None = None) -> list[dict]:
    return read_table(output_dir, name, columns).to_pylist()


def iter_rows(output_dir: str, name: str, columns: list[str] | None = None,
              batch_size: int = 4096) -> Iterable[dict]:
    """Stream a dataset's rows in shard order with bounded memory."""
    for p in shard_paths(output_dir, name):
        with fs.open_read(p) as f:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=batch_size, columns=columns):
                yield from batch.to_pylist()
