"""Run directories and checkpoints (docs/formats.md, "Checkpoints").

RUN/checkpoint.pt holds plain tensors, numbers, strings, lists and dicts only, so it loads with
`torch.load(weights_only=True)`: no pickled code runs when a checkpoint is opened.
"""

from __future__ import annotations

import dataclasses
import os
import shutil

import torch

from webtext.model.config import GPTConfig, TrainConfig
from webtext.model.model import GPT

FORMAT = "webtext-checkpoint"
FORMAT_VERSION = 1
CHECKPOINT = "checkpoint.pt"
TOKENIZER = "tokenizer.json"
METRICS = "metrics.jsonl"


def checkpoint_path(run_dir: str) -> str:
    return os.path.join(run_dir, CHECKPOINT)


def save(run_dir: str, state: dict) -> str:
    """Write RUN/checkpoint.pt atomically: a crash leaves the previous checkpoint intact."""
    path = checkpoint_path(run_dir)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, **state}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def load(run_dir: str, map_location: str | torch.device = "cpu") -> dict:
    path = run_dir if run_dir.endswith(".pt") else checkpoint_path(run_dir)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint at {path} (train one with `webtext train`)")
    state = torch.load(path, map_location=map_location, weights_only=True)
    if state.get("format") != FORMAT or state.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path} is not a {FORMAT} v{FORMAT_VERSION} checkpoint")
    return state


def copy_tokenizer(src: str, run_dir: str) -> None:
    dst = os.path.join(run_dir, TOKENIZER)
    tmp = dst + ".tmp"
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def config_dict(config) -> dict:
    return dataclasses.asdict(config)


def model_config_of(state: dict) -> GPTConfig:
    return GPTConfig(**state["model_config"])


def train_config_of(state: dict) -> TrainConfig:
    return TrainConfig(**state["train_config"])


def load_model(run_dir: str, device: str | torch.device = "cpu") -> tuple[GPT, dict]:
    """The trained model of a run (eval mode) and its checkpoint's metadata (no weights or optimizer)."""
    state = load(run_dir)
    model = GPT(model_config_of(state))
    model.load_state_dict(state["model"])
    model.to(device).eval()
    meta = {k: v for k, v in state.items() if k not in ("model", "optimizer")}
    return model, meta


def run_tokenizer(run_dir: str) -> str:
    path = os.path.join(run_dir, TOKENIZER)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} missing: the run directory should hold the tokenizer it was trained with")
    return path


def load_any(ckpt: str | None = None, hf_dir: str | None = None, device: str | torch.device = "cpu",
             **hf_overrides) -> tuple[GPT, str | None, dict]:
    """A model (eval mode) from a run directory or a Hugging Face GPT-2 directory: (model, path of its
    tokenizer.json or None, {"fingerprint", "vocab_size", "eot_id"} with None where unknown). `hf_overrides`
    are GPTConfig fields that do not change the weights (dropout, pad_vocab_multiple)."""
    if (ckpt is None) == (hf_dir is None):
        raise ValueError("give exactly one of --ckpt RUN and --hf DIR")
    if ckpt is not None:
        model, meta = load_model(ckpt, device)
        return model, run_tokenizer(ckpt), dict(meta["tokenizer"])
    from tokenizers import Tokenizer

    from webtext.model import hf
    from webtext.tokenizer.bpe import EOT_TOKEN, tokenizer_fingerprint

    model = hf.import_dir(hf_dir, **hf_overrides).to(device).eval()
    tok_path = hf.tokenizer_path(hf_dir)
    info = {"fingerprint": None, "vocab_size": model.config.vocab_size, "eot_id": None}
    if tok_path is not None:
        tok = Tokenizer.from_file(tok_path)
        info.update(fingerprint=tokenizer_fingerprint(tok), eot_id=tok.token_to_id(EOT_TOKEN))
    return model, tok_path, info
