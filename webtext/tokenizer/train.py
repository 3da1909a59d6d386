"""Train a GPT-2-style byte-level BPE tokenizer on a documents dataset, or import one.

`train` streams the documents' text into Hugging Face `tokenizers` (memory bounded by the tokenizer's word
counts, not the corpus), optionally on a deterministic sample of about --sample-bytes of text. `import` brings
your own: a `tokenizer.json`, or GPT-2's released `vocab.json` + `merges.txt` (to tokenise the corpus for the
released GPT-2 models). Both write `tokenizer.json` and `tokenizer_meta.json` into --output.
"""

from __future__ import annotations

import argparse
import sys

from webtext.runtime import datasets, fs, stats
from webtext.tokenizer import bpe

EXAMPLE = """  webtext tokenizer train --docs out/dedup --output out/tokenizer --vocab-size 50257
  webtext tokenizer train --docs out/dedup --output out/tokenizer-small --vocab-size 8192 --sample-bytes 100000000
  webtext tokenizer import --vocab gpt2/vocab.json --merges gpt2/merges.txt --output out/tokenizer-gpt2
  webtext tokenizer import --tokenizer-json my/tokenizer.json --output out/tokenizer-mine"""

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
                for doc_id, n in zip(batch.column("doc_id").to_pylist(), sizes):
                    if doc_id is not None and n is not None:
                        yield doc_id, n


def train_tokenizer(docs_dir: str, output_dir: str, config: bpe.TrainConfig, show_progress: bool = False) -> dict:
    """Train on the documents dataset in `docs_dir` and save into `output_dir`; returns the metadata."""
    if not datasets.shard_paths(docs_dir, DOCUMENTS):
        raise FileNotFoundError(f"{docs_dir}: no dataset {DOCUMENTS!r} (run `webtext extract` or `webtext dedup`)")
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


def import_tokenizer(output_dir: str, tokenizer_json: str | None = None, vocab: str | None = None,
                     merges: str | None = None) -> dict:
    if tokenizer_json:
        tok, source = bpe.load(tokenizer_json), {"tokenizer_json": tokenizer_json}
    elif vocab and merges:
        tok, source = bpe.from_gpt2_files(vocab, merges), {"vocab": vocab, "merges": merges}
    else:
        raise ValueError("give --tokenizer-json, or both --vocab and --merges")
    bpe.eot_id(tok)  # documents need the end-of-text token: refuse a tokenizer without it now, not later
    return bpe.write(tok, output_dir, {"source": "imported", "imported_from": source})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="{train,import}")
    t = sub.add_parser("train", help="train on a documents dataset")
    t.add_argument("--docs", required=True, help="directory holding the `documents` dataset")
    t.add_argument("--output", required=True, help="directory for tokenizer.json and tokenizer_meta.json")
    t.add_argument("--vocab-size", type=int, default=bpe.GPT2_VOCAB_SIZE,
                   help=f"vocabulary size including <|endoftext|> (default: {bpe.GPT2_VOCAB_SIZE}, as GPT-2)")
    t.add_argument("--min-frequency", type=int, default=bpe.MIN_FREQUENCY,
                   help=f"fewest occurrences for a merge (default: {bpe.MIN_FREQUENCY})")
    t.add_argument("--sample-bytes", type=int, default=0,
                   help="train on a deterministic sample of about this much text (default: 0 = all)")
    t.add_argument("--sample-seed", type=int, default=bpe.SAMPLE_SEED,
                   help=f"seed of that sample (default: {bpe.SAMPLE_SEED})")
    i = sub.add_parser("import", help="bring your own tokenizer (tokenizer.json, or GPT-2 vocab.json + merges.txt)")
    i.add_argument("--tokenizer-json", help="a Hugging Face tokenizer.json")
    i.add_argument("--vocab", help="GPT-2's vocab.json")
    i.add_argument("--merges", help="GPT-2's merges.txt")
    i.add_argument("--output", required=True, help="directory for tokenizer.json and tokenizer_meta.json")


def main(args: argparse.Namespace) -> int:
    try:
        if args.action == "train":
            config = bpe.TrainConfig(vocab_size=args.vocab_size, min_frequency=args.min_frequency,
                                     sample_bytes=args.sample_bytes, sample_seed=args.sample_seed)
            meta = train_tokenizer(args.docs, args.output, config, show_progress=sys.stderr.isatty())
        else:
            meta = import_tokenizer(args.output, args.tokenizer_json, args.vocab, args.merges)
    except (ValueError, FileNotFoundError, OSError) as e:
        print(f"webtext tokenizer {args.action}: {e}", file=sys.stderr)
        return 1
    data = meta.get("data")
    trained_on = f", trained on {data['documents']:,} documents ({data['bytes']:,} bytes)" if data else ""
    print(f"tokenizer {meta['fingerprint'][:12]}: vocab {meta['vocab_size']:,}, eot id {meta['eot_id']}"
          f"{trained_on} -> {args.output}", file=sys.stderr)
    return 0
