"""What the dedup stage writes: the `documents` it keeps (with its input's schema, unchanged), the `clusters`
table (every member of every cluster, with the reason it was kept or removed), the reasons of its `errors`
rows, and the edge sets of further clustering passes under its work directory. It reads the extract
stage's `documents` dataset."""

from __future__ import annotations

import pyarrow as pa

STAGE = "dedup"
DOCUMENTS = "documents"            # the dataset `--docs` names (extract's) and the one this stage writes
CLUSTERS = "clusters"
INPUT_COLUMNS = ("doc_id", "url", "text", "score")   # what the stage needs of its input documents

# The `reason` column of the clusters table.
KEPT, EXACT, NEAR = "kept", "exact_duplicate", "near_duplicate"
# The `reason` column of the errors dataset.
ERROR_REASONS = ("missing_doc_id", "missing_text", "duplicate_doc_id")

CLUSTERS_SCHEMA = pa.schema([
    pa.field("doc_id", pa.string(), nullable=False),
    pa.field("cluster_id", pa.string(), nullable=False),   # the smallest doc_id in the cluster
    pa.field("cluster_size", pa.int64(), nullable=False),
    pa.field("kept", pa.bool_(), nullable=False),
    pa.field("reason", pa.string(), nullable=False),       # kept / exact_duplicate / near_duplicate
])

WORK_DIR = "_work"                 # edge sets of extra clustering passes; removed when the stage finishes
EDGES = "edges"                    # a clustering pass's star edges, under WORK_DIR/pass<i>
EDGES_SCHEMA = pa.schema([
    pa.field("child", pa.string(), nullable=False),
    pa.field("parent", pa.string(), nullable=False),
])
