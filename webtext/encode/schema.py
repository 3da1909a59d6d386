"""What encode writes: the token shards, manifest.json and the tokenizer copy (their format is `shards`), and
the `errors` dataset; the constants that decide which document lands in which shard, and its error reasons."""

from __future__ import annotations

STAGE = "encode"
DOCUMENTS = "documents"         # the dataset it reads (extract's or dedup's)
MISSING_DOC_ID = "missing_doc_id"  # the error reasons: a document without an id ...
MISSING_TEXT = "missing_text"      # ... or without text
ERROR_REASONS = (MISSING_DOC_ID, MISSING_TEXT)

VAL_FRACTION = 0.0005           # nanoGPT's OpenWebText split
SHARD_TOKENS = 100_000_000      # a few hundred shards for a WebText-sized corpus
SEED = 1337                     # seed of the document permutation
SPLIT_SALT = "webtext-split"    # the train/val split hashes this with the id, never the permutation seed
ORDER_BITS = 16                 # resolution of the token histogram that places shard boundaries ...
ORDER_BUCKETS = 1 << ORDER_BITS  # ... in buckets of the permutation order
MAX_HASH = 1 << 64
RUNS_DIR = "_tmp-encode"        # encoded batches waiting to be gathered into shards; deleted at the end
