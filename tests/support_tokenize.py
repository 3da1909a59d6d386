"""Test helpers for the tokenizer/encode/verify/inspect tests: real documents datasets from real pages."""

from __future__ import annotations

import functools
import gzip

import apache_beam as beam
import pyarrow as pa

from tests.conftest import shared_path
from webtext.runtime.beam import WriteDataset
from webtext.tokenizer import bpe

# The columns tokenization reads, plus a few of the documents schema's others (it ignores them).
DOCS_SCHEMA = pa.schema([
    pa.field("doc_id", pa.string()),
    pa.field("url", pa.string()),
    pa.field("host", pa.string()),
    pa.field("text", pa.string()),
    pa.field("chars", pa.int64()),
])


@functools.cache
def real_texts(n: int = 40) -> tuple[str, ...]:
    """Main text of the first `n` trafilatura-eval pages that have any (real, multilingual web text)."""
    import trafilatura

    pages = sorted(shared_path("web", "trafilatura-eval").glob("*.html.gz"))
    out = []
    for page in pages:
        text = trafilatura.extract(gzip.decompress(page.read_bytes()))
        if text:
            out.append(text)
        if len(out) >= n:
            break
    return tuple(out)


def doc_rows(texts) -> list[dict]:
    return [{"doc_id": f"doc-{i:05d}", "url": f"https://example.org/{i}", "host": "example.org",
             "text": t, "chars": None if t is None else len(t)} for i, t in enumerate(texts)]


def write_documents(directory, rows: list[dict], rows_per_shard: int = 16) -> str:
    """A documents dataset written the way the extract/dedup stages write theirs."""
    with beam.Pipeline() as p:
        (p | beam.Create(rows)
           | WriteDataset(str(directory), "documents", DOCS_SCHEMA, lambda r: r["doc_id"],
                                   rows_per_shard=rows_per_shard))
    return str(directory)


@functools.cache
def small_tokenizer_json(vocab_size: int = 600) -> str:
    """A byte-level BPE trained on the real texts (small vocabulary: fast)."""
    return bpe.train(real_texts(), vocab_size=vocab_size).to_str()


def write_tokenizer(directory, vocab_size: int = 600) -> str:
    from tokenizers import Tokenizer

    bpe.write(Tokenizer.from_str(small_tokenizer_json(vocab_size)), str(directory), {"source": "test"})
    return str(directory)
