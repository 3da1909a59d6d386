"""Train a GPT-2-style byte-level BPE tokenizer on a documents dataset, or import one.

`train` streams the documents' text into Hugging Face `tokenizers` (memory bounded by the tokenizer's word
counts, not the corpus), optionally on a deterministic sample of about --sample-bytes of text. `import` brings
your own: a `tokenizer.json`, or GPT-2's released `vocab.json` + `merges.txt` (to tokenise the corpus for the
released GPT-2 models). Both write `tokenizer.json` and `tokenizer_meta.json` into --output.
"""

from __future__ import annotations

import argparse
import sys

from webtext.runtime.stage import INPUT_ERRORS, error, require_dataset
from webtext.tokenizer import bpe, training

STAGE = "tokenizer"
EXAMPLE = """  webtext tokenizer train --docs out/dedup --output out/tokenizer --vocab-size 50257
  webtext tokenizer train --docs out/dedup --output out/tokenizer-small --vocab-size 8192 --sample-bytes 100000000
  webtext tokenizer import --vocab gpt2/vocab.json --merges gpt2/merges.txt --output out/tokenizer-gpt2
  webtext tokenizer import --tokenizer-json my/tokenizer.json --output out/tokenizer-mine"""


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


def train(args: argparse.Namespace) -> dict:
    config = bpe.TrainConfig(vocab_size=args.vocab_size, min_frequency=args.min_frequency,
                             sample_bytes=args.sample_bytes, sample_seed=args.sample_seed)
    require_dataset(args.docs, training.DOCUMENTS, made_by="dedup")
    return training.train_tokenizer(args.docs, args.output, config, show_progress=sys.stderr.isatty())


def import_(args: argparse.Namespace) -> dict:
    source = training.ImportSource(args.tokenizer_json, args.vocab, args.merges)
    return training.import_tokenizer(args.output, source)


def main(args: argparse.Namespace) -> int:
    """Not a Beam stage and writes no `_stats.json`, so not `run_command`; its problems are reported the same
    way: bad flags or input exit 2, a failure to read or write files exits 1."""
    try:
        meta = train(args) if args.action == "train" else import_(args)
    except INPUT_ERRORS as e:
        error(STAGE, e)
        return 2
    except OSError as e:
        error(STAGE, e)
        return 1
    data = meta.get("data")
    trained_on = f", trained on {data['documents']:,} documents ({data['bytes']:,} bytes)" if data else ""
    print(f"tokenizer {meta['fingerprint'][:12]}: vocab {meta['vocab_size']:,}, eot id {meta['eot_id']}"
          f"{trained_on} -> {args.output}", file=sys.stderr)
    return 0
