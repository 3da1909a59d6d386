"""Test helpers of the dedup stage: real page text, documents datasets, planted near duplicates."""

from __future__ import annotations

import gzip
import hashlib
import os
import random

import pyarrow as pa

from webtext.dedup import minhash
from webtext.extract.schema import DOCUMENTS_SCHEMA
from webtext.runtime import datasets


def real_texts(folder, count: int, min_words: int = 250) -> list[str]:
    """Main text of the first `count` pages (in file-name order) that have at least `min_words` words,
    extracted with trafilatura, with pages whose text repeats an earlier one's left out."""
    import trafilatura

    texts, seen = [], set()
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".html.gz"):
            continue
        text = trafilatura.extract(gzip.open(folder / name).read()) or ""
        key = minhash.exact_key(minhash.normalize(text))
        if len(text.split()) >= min_words and key not in seen:
            seen.add(key)
            texts.append(text)
            if len(texts) == count:
                break
    return texts


def doc_row(url: str, text: str, score: int | None = 1, **extra) -> dict:
    row = {"doc_id": hashlib.sha256(url.encode()).hexdigest()[:32], "url": url, "key": url,
           "host": url.split("/")[2], "title": None, "date": None, "text": text, "language": "en",
           "chars": len(text or ""), "words": len((text or "").split()), "score": score, "num_submissions": 1,
           "subreddits": ["test"], "first_created_utc": 1_120_000_000, "payload_digest": "sha1:" + url}
    row.update(extra)
    return row


def write_documents(folder, rows: list[dict], shards: int = 1, schema: pa.Schema = DOCUMENTS_SCHEMA) -> str:
    """Rows as a documents dataset in the shared layout (rows dealt over `shards` files in their order)."""
    os.makedirs(folder, exist_ok=True)
    for i in range(shards):
        path = os.path.join(folder, datasets.shard_name("documents", i, shards))
        with open(path, "wb") as f:
            f.write(datasets.table_bytes(rows[i::shards], schema))
    return str(folder)


def shingle_set(text: str, ngram: int = minhash.NGRAM) -> set[str]:
    """The shingles as the test sees them, written independently of minhash.shingles."""
    words = minhash.normalize(text).split(" ")
    if len(words) < ngram:
        return {" ".join(words)} if words != [""] else set()
    return {" ".join(words[i:i + ngram]) for i in range(len(words) - ngram + 1)}


def exact_jaccard(a: str, b: str) -> float:
    sa, sb = shingle_set(a), shingle_set(b)
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


def edit_to_jaccard(text: str, target: float, tag: str, ngram: int = minhash.NGRAM, seed: int = 0) -> str:
    """The normalised words of `text` with k of them, at least `ngram` apart (in an order shuffled by
    `seed`), replaced by new words. Each replacement swaps up to `ngram` shingles, so J is about
    (S - ngram*k) / (S + ngram*k) for S shingles; k is the count whose exact Jaccard is nearest `target`."""
    words = minhash.normalize(text).split(" ")
    slots = list(range(ngram, len(words) - ngram, ngram))
    random.Random(f"{seed}{tag}").shuffle(slots)

    def edited(k):
        out = list(words)
        for i, pos in enumerate(slots[:k]):
            out[pos] = f"edit{tag}w{i}"
        return " ".join(out)

    shingles = len(shingle_set(text, ngram))
    guess = max(1, round(shingles * (1 - target) / (ngram * (1 + target))))
    candidates = [k for k in range(max(1, guess - 3), guess + 4) if k <= len(slots)]
    if not candidates:
        raise ValueError(f"text too short for Jaccard {target}")
    return min((edited(k) for k in candidates), key=lambda t: abs(exact_jaccard(text, t) - target))


def shuffled(rows: list, seed: int = 7) -> list:
    out = list(rows)
    random.Random(seed).shuffle(out)
    return out
