"""Making a tokenizer directory (`tokenizer.json` + `tokenizer_meta.json`): trained on a documents dataset,
or imported from a Hugging Face `tokenizer.json` or GPT-2's `vocab.json` + `merges.txt`."""

from __future__ import annotations

from dataclasses import dataclass

from webtext.runtime import datasets, fs, stats
from webtext.tokenizer import bpe

DOCUMENTS = "documents"


def _texts(docs_dir: str, chosen: set[str] | None, fingerprint: bpe.DataFingerprint, count):
    for row in datasets.iter_rows(docs_dir, DOCUMENTS, columns=["doc_id", "text"]):
        doc_id, text = row["doc_id"], row["text"]
        if not isinstance(text, str) or not isinstance(doc_id, str):
            count("skipped_missing_text_or_id")
            continue
        if chosen is not None and doc_id not in chosen:
            continue
        fingerprint.add(doc_id, text)
        yield text


def _text_sizes(docs_dir: str):
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    for path in datasets.shard_paths(docs_dir, DOCUMENTS):
        with fs.open_read(path) as f:
            for batch in pq.ParquetFile(f).iter_batches(columns=["doc_id", "text"]):
                sizes = pc.binary_length(pc.cast(batch.column("text"), "binary")).to_pylist()
                for doc_id, n in zip(batch.column("doc_id").to_pylist(), sizes, strict=True):
                    if doc_id is not None and n is not None:
                        yield doc_id, n


def train_tokenizer(docs_dir: str, output_dir: str, config: bpe.TrainConfig, show_progress: bool = False) -> dict:
    """Train on the documents dataset in `docs_dir` and save into `output_dir`; returns the metadata."""
    totals, count = stats.dict_counter()
    chosen = None
    if config.sample_bytes > 0:
        chosen = bpe.sample_ids(_text_sizes(docs_dir), config.sample_bytes, config.sample_seed)
    data = bpe.DataFingerprint()
    tok = bpe.train(_texts(docs_dir, chosen, data, count), vocab_size=config.vocab_size,
                    min_frequency=config.min_frequency, show_progress=show_progress)
    if data.documents == 0:
        raise ValueError(f"{docs_dir}: no document with text to train on")
    return bpe.write(tok, output_dir, {
        "source": "trained",
        "config": config.as_dict(),
        "requested_vocab_size": config.vocab_size,
        "data": {**data.as_dict(), "docs": docs_dir, "skipped": dict(totals)},
        "upstream": stats.read_stats(docs_dir) or {},
    })


@dataclass(frozen=True)
class ImportSource:
    """Where an imported tokenizer comes from: a `tokenizer.json`, or GPT-2's `vocab.json` + `merges.txt`."""
    tokenizer_json: str | None = None
    vocab: str | None = None
    merges: str | None = None

    def __post_init__(self):
        if not self.tokenizer_json and not (self.vocab and self.merges):
            raise ValueError("give --tokenizer-json, or both --vocab and --merges")


def import_tokenizer(output_dir: str, source: ImportSource) -> dict:
    """Save the tokenizer at `source` into `output_dir`; returns the metadata."""
    if source.tokenizer_json:
        tok, origin = bpe.load(source.tokenizer_json), {"tokenizer_json": source.tokenizer_json}
    else:
        tok, origin = bpe.from_gpt2_files(source.vocab, source.merges), {"vocab": source.vocab, "merges": source.merges}
    bpe.eot_id(tok)  # documents need the end-of-text token: refuse a tokenizer without it now, not later
    return bpe.write(tok, output_dir, {"source": "imported", "imported_from": origin})
