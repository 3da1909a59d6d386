"""The dedup stage's work on one row group of its input documents: sketching (exact keys and LSH band
keys), verification payloads, and the rows kept. Plain functions that run in the stage's local processes
(`processes.TaskPool`, see `webtext.dedup.pipeline` for the stage): this module imports no Beam, so such a
process starts with numpy, pyarrow and `minhash` only, and never imports datasketch either (the hasher and
the LSH setting come made).
"""

from __future__ import annotations

import collections
import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from webtext.dedup import minhash
from webtext.dedup.schema import STAGE
from webtext.runtime import datasets, progress
from webtext.runtime.errors import error_row

SKETCH_COLUMNS = ["doc_id", "text", "score"]


def check_document(row: dict) -> str | None:
    """The error reason of a row that cannot be deduplicated, or None."""
    if not row.get("doc_id"):
        return "missing_doc_id"
    if row.get("text") is None:
        return "missing_text"
    return None



def _valid_mask(table: pa.Table) -> pa.ChunkedArray:
    ids = table.column("doc_id")
    return pc.and_(pc.fill_null(pc.not_equal(ids, ""), False), pc.is_valid(table.column("text")))


def _input_errors(table: pa.Table) -> list[dict]:
    """Error rows for the rows that cannot be deduplicated (no doc_id, no text)."""
    bad = table.filter(pc.invert(_valid_mask(table)))
    errors = []
    for row in bad.to_pylist():
        reason = check_document(row)
        errors.append(error_row(STAGE, row.get("url") or row.get("doc_id") or "", None, reason,
                                f"document row without {reason.removeprefix('missing_')}", repr(row)[:1000]))
    return errors


def sketch_row_group(task, ngram: int, hasher: minhash.MinHasher, lsh: tuple[int, int],
                     signatures: bool = True) -> tuple[list, list, dict]:
    """([sketches], errors, counts) of one row group of a documents file. Its sketches are one columnar
    batch (doc_ids, scores, exact_keys, band_keys), a list each, in row order; a document's band keys are
    bytes, or None when it stays out of LSH (or `signatures` is false). A batch, not an element per
    document: the runner's cost is per element. `hasher` and `lsh` (bands, rows) come made: a local process
    then never imports datasketch."""
    table = datasets.read_row_group(task, SKETCH_COLUMNS + ["url"])
    counts = collections.Counter()
    errors = _input_errors(table)
    for e in errors:
        counts[f"error_{e['reason']}"] += 1
    valid = table.filter(_valid_mask(table))
    bands, rows = lsh
    doc_ids, scores = valid.column("doc_id").to_pylist(), valid.column("score").to_pylist()
    normalized = [minhash.normalize(text) for text in valid.column("text").to_pylist()]
    keys = [minhash.exact_key(n) for n in normalized]
    band_keys = [None] * len(doc_ids)
    if signatures:
        with_sig = [i for i, n in enumerate(normalized) if n]
        empty = len(doc_ids) - len(with_sig)  # kept out of LSH: exact duplicates of each other only
        shorter = sum(1 for i in with_sig if normalized[i].count(" ") + 1 < ngram)
        for name, n in (("empty_after_normalisation", empty), ("shorter_than_shingle", shorter)):
            if n:
                counts[name] += n
        if with_sig:
            sigs = hasher.signatures(minhash.shingle_hashes_many([normalized[i] for i in with_sig], ngram))
            for i, k in zip(with_sig, minhash.band_keys(sigs, bands, rows)):
                band_keys[i] = k.tobytes()
    counts["documents_in"] += len(doc_ids)
    if signatures:  # the progress bar counts the first read; a later clustering pass reads the input again
        progress.tick(STAGE, table.num_rows)
        progress.flush()  # now: a local process may get no further task to report it with
    return [(doc_ids, scores, keys, band_keys)], errors, dict(counts)


def payload_row_group(task, ngram: int, verify: str, hasher: minhash.MinHasher,
                      wanted: frozenset) -> list[tuple[str, bytes]]:
    """(doc_id, verification payload) of the documents of one row group that are in `wanted` (the
    candidates): their shingle hashes (--verify exact) or MinHash signature (estimate)."""
    table = datasets.read_row_group(task, ["doc_id", "text"])
    table = table.filter(pc.and_(_valid_mask(table), pc.is_in(table.column("doc_id"),
                                                               pa.array(sorted(wanted), pa.string()))))
    doc_ids = table.column("doc_id").to_pylist()
    hashes = minhash.shingle_hashes_many([minhash.normalize(t) for t in table.column("text").to_pylist()], ngram)
    if verify == "exact":
        return [(d, np.unique(h).tobytes()) for d, h in zip(doc_ids, hashes)]  # sorted and distinct, once each
    return [(d, sig.tobytes()) for d, sig in zip(doc_ids, hasher.signatures(hashes))]


def keep_row_group(task, schema: pa.Schema, run_dir: str, dropped: dict[str, str],
                   num_shards: int) -> tuple[list, list, dict]:
    """(runs, errors, counts) of one row group: its valid rows whose doc_id was not removed, written as
    sorted runs per output shard (`datasets.split_into_runs`). Rows removed because several rows share
    their doc_id are errors (one per row)."""
    table = datasets.read_row_group(task)
    table = table.filter(_valid_mask(table))
    ids = table.column("doc_id").to_pylist()
    keep = [doc_id not in dropped for doc_id in ids]
    errors = []
    for row_index in (i for i, k in enumerate(keep) if not k and dropped[ids[i]] == "duplicate_doc_id"):
        row = table.slice(row_index, 1).to_pylist()[0]
        errors.append(error_row(
            STAGE, row["url"] or row["doc_id"], None, "duplicate_doc_id",
            f"doc_id {row['doc_id']} appears in more than one input row; doc_ids must be unique", row["url"]))
    kept = table.filter(pa.array(keep, pa.bool_())).cast(schema)
    path, index = task
    run_name = f"{hashlib.blake2b(path.encode(), digest_size=8).hexdigest()}-{index:05d}"
    runs = datasets.split_into_runs(kept, "doc_id", num_shards, run_dir, run_name)
    return runs, errors, {"kept": kept.num_rows}
