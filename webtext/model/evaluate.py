"""Loss and perplexity of a checkpoint (or a Hugging Face GPT-2 directory) on one split of a shard directory.

Every window of the split is scored in order (or the first `--max-batches` batches); runs under `torchrun` split
the windows between processes. Shards made with another tokenizer than the model's are refused.
"""

from __future__ import annotations

import json
import math
import sys

from webtext.model import checkpoint, data
from webtext.model.train import autocast, evaluate, init_distributed, resolve_device

EXAMPLE = """  webtext eval --ckpt out/run-tiny --data out/shards --split val
  webtext eval --hf out/tiny-hf --data out/shards --split val --max-batches 20"""


def add_arguments(parser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--ckpt", help="run directory written by `webtext train`")
    src.add_argument("--hf", help="a local Hugging Face GPT-2 directory instead")
    parser.add_argument("--data", required=True, help="token shard directory")
    parser.add_argument("--split", default="val", help="split to score (default: val)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--block-size", type=int, default=0, help="window length (default: the model's)")
    parser.add_argument("--max-batches", type=int, default=0, help="score only this many batches (0 = all)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto", help="auto | float32 | bfloat16")


def evaluate_split(model, data_dir: str, split: str, tokenizer: dict, *, batch_size: int = 8,
                   block_size: int = 0, max_batches: int = 0, dtype: str = "auto", source: str = "the model",
                   rank: int = 0, world_size: int = 1) -> dict:
    """{"loss", "perplexity", "tokens", "windows"} of `model` on `split`, after checking the tokenizer."""
    manifest = data.read_manifest(data_dir)
    data.check_tokenizer(manifest, fingerprint=tokenizer.get("fingerprint"),
                         vocab_size=tokenizer.get("vocab_size", model.config.vocab_size), expected_from=source)
    T = block_size or model.config.block_size
    windows = data.Windows(data.SplitFiles.from_manifest(data_dir, manifest, split), T)
    stop = min(windows.count, max_batches * batch_size * world_size) if max_batches else windows.count
    batches = data.WindowBatches(windows, batch_size, shuffle=False, stop=stop, rank=rank, world_size=world_size)
    device = next(model.parameters()).device
    loss, tokens = evaluate(model, data.loader(batches), device, autocast(device, dtype))
    return {"split": split, "loss": loss, "perplexity": math.exp(min(loss, 700)), "tokens": tokens,
            "windows": stop, "block_size": T}


def main(args) -> int:
    device = resolve_device(args.device)
    world = init_distributed(device.type)
    try:
        model, _, info = checkpoint.load_any(args.ckpt, args.hf, resolve_device(args.device, world.local_rank))
        result = evaluate_split(model, args.data, args.split, info, batch_size=args.batch_size,
                                block_size=args.block_size, max_batches=args.max_batches, dtype=args.dtype,
                                source=args.ckpt or args.hf, rank=world.rank, world_size=world.world_size)
    except (data.TokenizerMismatch, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if world.main:
        print(f"{args.split}: loss {result['loss']:.4f}, perplexity {result['perplexity']:.2f} "
              f"over {result['tokens']:,} tokens")
        print(json.dumps(result))
    return 0
