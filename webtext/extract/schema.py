"""What the extract stage writes: the `documents` dataset (one row per page whose main text survived) and the
reasons of its `errors` rows. It reads the fetch stage's `log` dataset."""

from __future__ import annotations

import pyarrow as pa

from webtext.fetch.schema import LOG as FETCH_LOG  # noqa: F401  (the dataset `--fetch` reads)

STAGE = "extract"
DOCUMENTS = "documents"
ROWS_PER_SHARD = 50_000          # documents per Parquet file by default: bounds the memory of a shard's sort

# The `reason` column of the errors dataset.
ERROR_REASONS = ("warc_damaged", "warc_missing", "warc_mismatch", "bad_url", "binary", "blank_page",
                 "extract_timeout", "extract_crash", "extract_memory", "extract_error", "extract_empty")

DOCUMENTS_SCHEMA = pa.schema([
    pa.field("doc_id", pa.string(), nullable=False),
    pa.field("url", pa.string(), nullable=False),
    pa.field("key", pa.string(), nullable=False),
    pa.field("host", pa.string(), nullable=False),
    pa.field("title", pa.string()),
    pa.field("date", pa.string()),
    pa.field("text", pa.string(), nullable=False),
    pa.field("language", pa.string()),
    pa.field("chars", pa.int64(), nullable=False),
    pa.field("words", pa.int64(), nullable=False),
    pa.field("score", pa.int64()),
    pa.field("num_submissions", pa.int64()),
    pa.field("subreddits", pa.list_(pa.string()), nullable=False),
    pa.field("first_created_utc", pa.int64()),
    pa.field("payload_digest", pa.string(), nullable=False),
])
