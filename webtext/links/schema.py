"""What the links stage writes: the dataset `links` (one row per normalised URL, docs/formats.md) and the
reasons its counters and errors dataset name."""

from __future__ import annotations

import pyarrow as pa

STAGE = "links"
LINKS = "links"

LINKS_SCHEMA = pa.schema([
    pa.field("url", pa.string(), nullable=False),
    pa.field("key", pa.string(), nullable=False),
    pa.field("host", pa.string(), nullable=False),
    pa.field("score", pa.int64(), nullable=False),
    pa.field("num_submissions", pa.int64(), nullable=False),
    pa.field("subreddits", pa.list_(pa.string()), nullable=False),
    pa.field("first_created_utc", pa.int64(), nullable=False),
    pa.field("submission_ids", pa.list_(pa.string()), nullable=False),
])

# Drop reasons in the order the rules are applied: each submission is counted under the first rule it fails.
DROP_REASONS = ("low_karma", "self_post", "date", "subreddit", "nsfw", "scheme", "extension", "wikipedia",
                "domain")
# Error reasons (the `reason` column of the errors dataset).
ERROR_REASONS = ("bad_json", "not_object", "missing_field", "bad_type", "bad_url", "damaged_file")
