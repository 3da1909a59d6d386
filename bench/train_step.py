"""Benchmark: milliseconds per training step of our GPT-2 against transformers' GPT2LMHeadModel, same process.

Same config (vocabulary 50257, unpadded, so the two do the same arithmetic; the padded-to-64 variant is reported
too), the same weights, the same batch; a step is forward, loss, backward, AdamW update. The two alternate in
rounds and the medians are compared (goal: ours <= 1.0x their time). On a GPU it runs under bf16 autocast and also
reports tokens/s and model FLOPs utilisation (6N + 12·L·H·Q·T FLOPs per token against the card's dense bf16 peak).

    .venv/bin/python bench/train_step.py                 # gpt2-mini and gpt2 on CPU
    .venv/bin/python bench/train_step.py --quick         # gpt2-mini only, fewer steps
    .venv/bin/python bench/train_step.py --configs gpt2 --batch-size 12 --block-size 1024   # on a GPU
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from webtext.model.config import model_config  # noqa: E402
from webtext.model.hf import to_hf_state_dict  # noqa: E402
from webtext.model.model import GPT  # noqa: E402

VOCAB = 50257
# Dense bf16 peak FLOP/s by device name, for MFU.
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12}


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_FLOPS.items() if k in name), None)


def make_pair(preset: str, block_size: int, device: torch.device):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    ours = GPT(model_config(preset, vocab_size=VOCAB, block_size=block_size, pad_vocab_multiple=1)).to(device)
    padded = GPT(model_config(preset, vocab_size=VOCAB, block_size=block_size, pad_vocab_multiple=64)).to(device)
    c = ours.config
    theirs = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_positions=block_size, n_embd=c.n_embd, n_layer=c.n_layer,
                                        n_head=c.n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0),
                             ).to(device)
    assert theirs.config._attn_implementation == "sdpa"  # transformers' default: the same attention kernel as ours
    theirs.load_state_dict(to_hf_state_dict(ours), strict=False)
    theirs.tie_weights()
    return {"ours": ours, "ours (vocab padded to 64)": padded, "transformers": theirs}


def step_fn(name: str, model, x, amp):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=x.device.type == "cuda")

    def step():
        with amp:
            if name == "transformers":
                loss = model(input_ids=x, labels=x).loss
            else:
                _, loss = model(x[:, :-1], x[:, 1:])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    return step


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="gpt2-mini,gpt2", help="comma-separated presets")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--block-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=2, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="gpt2-mini only, batch 2 x 128, 3 rounds of 2 steps")
    args = parser.parse_args()
    if args.quick:
        args.configs, args.batch_size, args.block_size, args.rounds, args.steps = "gpt2-mini", 2, 128, 3, 2
    device = torch.device(args.device)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} CPU threads"
    print(f"device {device} ({where}), "
          f"batch {args.batch_size} x {args.block_size} tokens, {args.rounds} rounds of {args.steps} steps")
    results = []
    for preset in args.configs.split(","):
        models = make_pair(preset, args.block_size + 1, device)  # +1: a window holds inputs and targets
        x = torch.randint(0, VOCAB, (args.batch_size, args.block_size + 1), device=device)
        x_hf = x[:, :-1].contiguous()  # transformers shifts internally: the same T positions, T-1 scored
        steps = {name: step_fn(name, m, x_hf if name == "transformers" else x, amp) for name, m in models.items()}
        for fn in steps.values():  # warm up: allocator, kernels, optimizer state
            fn()
        times = {name: [] for name in steps}
        for r in range(args.rounds):
            order = list(steps) if r % 2 == 0 else list(reversed(steps))
            for name in order:
                sync()
                start = time.perf_counter()
                for _ in range(args.steps):
                    steps[name]()
                sync()
                times[name].append((time.perf_counter() - start) / args.steps * 1000)
        base = statistics.median(times["transformers"])
        n_params = models["ours"].num_params()
        flops_token = 6 * n_params + 12 * models["ours"].config.n_layer * models["ours"].config.n_embd * args.block_size
        print(f"\n{preset}: {n_params / 1e6:.1f}M non-embedding-position parameters")
        for name, ts in times.items():
            ms = statistics.median(ts)
            tokens_s = args.batch_size * args.block_size / (ms / 1000)
            line = (f"  {name:<28} {ms:9.1f} ms/step  {ms / base:5.2f}x transformers  {tokens_s:10,.0f} tok/s"
                    f"  (rounds: {', '.join(f'{t:.0f}' for t in ts)})")
            peak = peak_flops(device)
            mfu = flops_token * tokens_s / peak if peak else None
            if mfu is not None:
                line += f"  MFU {mfu:.1%}"
            print(line)
            results.append({"config": preset, "model": name, "ms_per_step": ms, "ratio": ms / base,
                            "tokens_per_s": tokens_s, "mfu": mfu})
    print(json.dumps({"bench": "train_step", "device": str(device), "batch_size": args.batch_size,
                      "block_size": args.block_size, "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
