"""The errors output every stage writes: one row per record that could not be used, never dropped silently.

Rows go to the dataset `errors` in the stage's output directory (see docs/formats.md), sorted by
(source, position). `reason` is a short name from the stage's closed set; `detail` is one human line.
"""

from __future__ import annotations

import pyarrow as pa

ERRORS = "errors"
MAX_RAW_BYTES = 64 * 1024

ERRORS_SCHEMA = pa.schema([
    pa.field("stage", pa.string(), nullable=False),
    pa.field("source", pa.string(), nullable=False),   # file, URL or record the problem came from
    pa.field("position", pa.int64()),                   # line number (1-based), byte offset or record index
    pa.field("reason", pa.string(), nullable=False),    # a name from the stage's closed set
    pa.field("detail", pa.string()),                    # one line for a human
    pa.field("raw", pa.string()),                       # the offending input, cut to MAX_RAW_BYTES
])


def error_row(stage: str, source: str, position: int | None, reason: str, detail: str = "",
              raw: str | bytes | None = None) -> dict:
    if isinstance(raw, bytes):
        raw = raw[:MAX_RAW_BYTES].decode("utf-8", errors="replace")
    elif raw is not None and len(raw) > MAX_RAW_BYTES:
        raw = raw[:MAX_RAW_BYTES]
    return {
        "stage": stage,
        "source": source,
        "position": position,
        "reason": reason,
        "detail": " ".join(str(detail).split())[:1000],
        "raw": raw,
    }


def error_sort_key(row: dict):
    return (row["source"], row["position"] if row["position"] is not None else -1, row["reason"],
            row["raw"] or "")
