"""Encode a documents dataset into sharded Arrow token files (train/val) with a manifest.

Every document becomes its byte-level BPE ids followed by <|endoftext|>. Documents are split into train and
val by a hash of their id (independent of --seed), put in the order of a seeded permutation (a hash of seed and
id), and cut into shards of about --shard-tokens tokens along that order. The shards, manifest.json and a
copy of tokenizer.json are byte-identical for the same documents and flags whatever the runner or worker
count. Documents without an id or text go to the `errors` dataset.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from webtext.encode import shards
from webtext.encode.pipeline import encode, read_tokenizer
from webtext.encode.plan import BATCH_BYTES, TOKENS_VIA, EncodeConfig, tokens_via
from webtext.encode.schema import DOCUMENTS, SEED, SHARD_TOKENS, STAGE, VAL_FRACTION
from webtext.runtime import datasets, fs, stats
from webtext.runtime.beam import add_runner_arguments, pipeline_options
from webtext.runtime.errors import ERRORS
from webtext.runtime.stage import Plan, Result, StageError, require_dataset, run_command
from webtext.tokenizer import bpe

EXAMPLE = """  webtext encode --docs out/dedup --tokenizer out/tokenizer --output out/shards
  webtext encode --docs out/dedup --tokenizer gpt2/tokenizer.json --output out/shards-gpt2 --shard-tokens 50000000"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--docs", required=True,
                        help="directory holding the `documents` dataset (extract/dedup output)")
    parser.add_argument("--tokenizer", required=True, help="tokenizer directory or tokenizer.json")
    parser.add_argument("--output", required=True, help="directory for the shards, manifest.json and tokenizer.json")
    parser.add_argument("--val-fraction", type=float, default=VAL_FRACTION,
                        help=f"share of documents (by id hash) in the val split (default: {VAL_FRACTION})")
    parser.add_argument("--shard-tokens", type=int, default=SHARD_TOKENS,
                        help=f"about this many tokens per shard (default: {SHARD_TOKENS:,})")
    parser.add_argument("--seed", type=int, default=SEED, help=f"seed of the document permutation (default: {SEED})")
    parser.add_argument("--batch-bytes", type=int, default=BATCH_BYTES,
                        help=f"text per encode_batch call (default: {BATCH_BYTES:,})")
    parser.add_argument("--tokens-via", choices=TOKENS_VIA, default="auto",
                        help="how tokens reach the shard writers: run files (local) or the shuffle (Dataflow) "
                             "(default: auto)")
    add_runner_arguments(parser)


@dataclass(frozen=True)
class Inputs:
    """What check read, so that nothing the run needs depends on the output directory it clears."""
    config: EncodeConfig
    options: Any                # PipelineOptions
    tokenizer_json: str         # copied into the output as is
    upstream: dict | None       # the documents' `_stats.json`, recorded in manifest.json


def check(args: argparse.Namespace) -> Plan:
    config = EncodeConfig.of(args)
    try:
        total = datasets.count_rows(args.docs, DOCUMENTS)  # from the footers; None: no such dataset
        if total is None:
            require_dataset(args.docs, DOCUMENTS, "dedup")  # raises the StageError that names dedup
        options = pipeline_options(args, STAGE)
        tokenizer_json = read_tokenizer(args.tokenizer)  # not UTF-8: a ValueError that says so
    except OSError as e:
        raise StageError(e) from e
    bpe.eot_id(bpe.parse(tokenizer_json, args.tokenizer))
    # Read before the run begins: `--docs` may be the output directory, whose `_stats.json` the run removes.
    upstream = stats.read_stats(args.docs)
    return Plan(output=args.output, clear=(ERRORS,), total=total, unit="docs",
                data=Inputs(config, options, tokenizer_json, upstream))


def run(args: argparse.Namespace, plan: Plan) -> Result:
    inputs: Inputs = plan.data
    manifest, counters = encode(args.docs, inputs.tokenizer_json, args.output, inputs.config, inputs.options,
                                inputs.upstream)
    config = {**inputs.config.manifest_config(), "docs": args.docs, "tokenizer": args.tokenizer,
              "tokens_via": tokens_via(inputs.config, args.output)}
    errors = sum(v for k, v in counters.items() if k.startswith("error_"))
    note = (f"{manifest['totals']['tokens']:,} tokens in "
            f"{sum(len(manifest['splits'][sp]['shards']) for sp in shards.SPLITS)} shards ({manifest['dtype']}), "
            f"{errors:,} documents in errors -> {args.output}")
    return Result(counters, config, extra={"totals": manifest["totals"], "tokenizer": manifest["tokenizer"]},
                  notes=[note])


def funnel(stats_json: dict, manifest: dict | None = None) -> list[tuple[str, int]]:
    """Documents encoded and, from the manifest when at hand, per split (`_stats.json` counts only the
    total)."""
    rows = [("documents", stats_json["totals"]["documents"])]
    if manifest is not None:
        rows += [(f"{split} documents", manifest["splits"][split]["documents"]) for split in shards.SPLITS]
    return rows


def main(args: argparse.Namespace) -> int:
    return run_command(STAGE, args, check, run,
                       lambda written: funnel(written, fs.read_json(fs.join(args.output, shards.MANIFEST))))
