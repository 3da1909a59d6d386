"""Generate text from a trained checkpoint (or a Hugging Face GPT-2 directory).

Sampling is seeded, so the same flags give the same text. Temperature 0 is greedy decoding. A sample ends at
`--max-new-tokens` or at the end-of-text token.
"""

from __future__ import annotations

import sys

import torch
from tokenizers import Tokenizer

from webtext.model import checkpoint
from webtext.model.train import resolve_device

EXAMPLE = """  webtext sample --ckpt out/run-tiny --prompt "The history of" --max-new-tokens 50
  webtext sample --ckpt out/run-tiny --prompt "Once" --temperature 0.8 --top-p 0.9 --num-samples 3 --seed 7"""


def add_arguments(parser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--ckpt", help="run directory written by `webtext train`")
    src.add_argument("--hf", help="a local Hugging Face GPT-2 directory instead")
    parser.add_argument("--prompt", default="", help="text to continue (empty: start a new document)")
    parser.add_argument("--max-new-tokens", type=int, default=100)
    parser.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    parser.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (0 = all)")
    parser.add_argument("--top-p", type=float, default=1.0, help="keep the smallest set of tokens with this mass")
    parser.add_argument("--num-samples", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--device", default="auto")


def sample(model, tok: Tokenizer, prompt: str, eot_id: int, *, max_new_tokens: int = 100,
           temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, num_samples: int = 1,
           seed: int = 1337) -> list[str]:
    """`num_samples` continuations of `prompt` (the prompt not included), each cut at end-of-text."""
    device = next(model.parameters()).device
    ids = tok.encode(prompt).ids if prompt else [eot_id]
    if not ids:
        ids = [eot_id]
    idx = torch.tensor([ids] * num_samples, dtype=torch.long, device=device)
    generator = torch.Generator(device=device).manual_seed(seed)
    out = model.generate(idx, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                         generator=generator, stop_id=eot_id)
    texts = []
    for row in out[:, len(ids):].tolist():
        if eot_id in row:
            row = row[:row.index(eot_id)]
        texts.append(tok.decode(row))
    return texts


def main(args) -> int:
    if args.temperature < 0 or not 0 < args.top_p <= 1 or args.top_k < 0 or args.max_new_tokens < 0:
        print("need --temperature >= 0, 0 < --top-p <= 1, --top-k >= 0, --max-new-tokens >= 0", file=sys.stderr)
        return 2
    device = resolve_device(args.device)
    model, tok_path, info = checkpoint.load_any(args.ckpt, args.hf, device)
    if tok_path is None:
        print(f"{args.hf} has no tokenizer.json: cannot turn text into tokens", file=sys.stderr)
        return 2
    tok = Tokenizer.from_file(tok_path)
    eot = info["eot_id"] if info["eot_id"] is not None else model.config.vocab_size - 1
    texts = sample(model, tok, args.prompt, eot, max_new_tokens=args.max_new_tokens,
                   temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                   num_samples=args.num_samples, seed=args.seed)
    for i, text in enumerate(texts):
        if args.num_samples > 1:
            print(f"--- sample {i + 1}")
        print(args.prompt + text)
    return 0
