"""Hugging Face GPT-2 directories (config.json + model.safetensors + tokenizer.json), both ways.

Export writes what `transformers.GPT2LMHeadModel.from_pretrained` and `AutoTokenizer.from_pretrained` load; import
reads such a directory (ours or a published GPT-2) without needing `transformers` installed.
"""

from __future__ import annotations

import json
import os
import shutil

import torch
from safetensors.torch import load_file, save_file

from webtext.model.config import GPTConfig
from webtext.model.model import GPT

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
EOT_TOKEN = "<|endoftext|>"

# HF's Conv1D keeps (in, out) matrices; nn.Linear keeps (out, in).
_TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# Buffers some transformers versions save that carry no weights.
_IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias")


def to_hf_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    """Our weights under HF names, embeddings cut to the real vocabulary; lm_head is tied, so not stored."""
    vocab = model.config.vocab_size
    out = {}
    for name, t in model.state_dict().items():
        if name == "lm_head.weight":
            continue
        t = t.detach().to("cpu", torch.float32)
        if name == "transformer.wte.weight":
            t = t[:vocab]
        elif name.endswith(_TRANSPOSED):
            t = t.t()
        out[name] = t.contiguous()
    return out


def from_hf_state_dict(state: dict[str, torch.Tensor], config: GPTConfig) -> GPT:
    """A GPT holding the weights of a HF GPT-2 state dict (names with or without the `transformer.` prefix)."""
    model = GPT(config)
    ours = model.state_dict()
    loaded = set()
    for name, t in state.items():
        if name.endswith(_IGNORED_SUFFIXES) or name == "lm_head.weight":
            continue
        key = name if name.startswith("transformer.") else f"transformer.{name}"
        if key not in ours:
            raise ValueError(f"unexpected weight {name!r} in the Hugging Face checkpoint")
        t = t.t() if key.endswith(_TRANSPOSED) else t
        target = ours[key]
        with torch.no_grad():
            if key == "transformer.wte.weight":
                if t.shape[0] != config.vocab_size or t.shape[1] != target.shape[1]:
                    raise ValueError(f"wte has shape {tuple(t.shape)}, expected ({config.vocab_size}, "
                                     f"{target.shape[1]})")
                target[:config.vocab_size].copy_(t)
                target[config.vocab_size:].zero_()  # padding rows: never used, their logits are masked
            else:
                if t.shape != target.shape:
                    raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {tuple(target.shape)}")
                target.copy_(t)
        loaded.add(key)
    missing = sorted(set(ours) - loaded - {"lm_head.weight"})
    if missing:
        raise ValueError(f"the Hugging Face checkpoint lacks {', '.join(missing[:5])}"
                         + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    return model


def config_from_hf(hf: dict, **overrides) -> GPTConfig:
    if hf.get("model_type", "gpt2") != "gpt2":
        raise ValueError(f"model_type {hf.get('model_type')!r} is not GPT-2")
    if hf.get("activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"):
        raise ValueError(f"activation {hf['activation_function']!r}: GPT-2 uses the tanh GELU (gelu_new)")
    if hf.get("n_inner") not in (None, 4 * hf["n_embd"]):
        raise ValueError(f"n_inner {hf['n_inner']} is not 4 * n_embd")
    fields = dict(block_size=hf["n_positions"], vocab_size=hf["vocab_size"], n_layer=hf["n_layer"],
                  n_head=hf["n_head"], n_embd=hf["n_embd"], layer_norm_epsilon=hf.get("layer_norm_epsilon", 1e-5),
                  init_std=hf.get("initializer_range", 0.02))
    fields.update(overrides)
    return GPTConfig(**fields)


def hf_config(config: GPTConfig, eot_id: int) -> dict:
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": config.vocab_size,
        "n_positions": config.block_size,
        "n_ctx": config.block_size,
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_inner": None,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": config.layer_norm_epsilon,
        "initializer_range": config.init_std,
        "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout,
        "attn_pdrop": config.dropout,
        "scale_attn_weights": True,
        "tie_word_embeddings": True,
        "bos_token_id": eot_id,
        "eos_token_id": eot_id,
        "torch_dtype": "float32",
    }


def export_dir(model: GPT, tokenizer_path: str, eot_id: int, out_dir: str) -> None:
    """Write a HF GPT-2 directory; files appear complete or not at all."""
    if not model.config.bias:
        raise ValueError("Hugging Face GPT-2 always has biases; a bias=false model cannot be exported")
    os.makedirs(out_dir, exist_ok=True)

    def atomic(name: str, write) -> None:
        tmp = os.path.join(out_dir, f".{name}.tmp")
        write(tmp)
        os.replace(tmp, os.path.join(out_dir, name))

    atomic(WEIGHTS_FILE, lambda p: save_file(to_hf_state_dict(model), p, metadata={"format": "pt"}))
    atomic(TOKENIZER_FILE, lambda p: shutil.copyfile(tokenizer_path, p))
    _write_json(atomic, "tokenizer_config.json", {
        "tokenizer_class": "GPT2TokenizerFast", "bos_token": EOT_TOKEN, "eos_token": EOT_TOKEN,
        "unk_token": EOT_TOKEN, "model_max_length": model.config.block_size, "add_prefix_space": False})
    _write_json(atomic, "generation_config.json", {"bos_token_id": eot_id, "eos_token_id": eot_id})
    _write_json(atomic, CONFIG_FILE, hf_config(model.config, eot_id))  # last: marks the directory complete


def _write_json(atomic, name: str, obj: dict) -> None:
    def write(path: str) -> None:
        with open(path, "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")
    atomic(name, write)


def import_dir(hf_dir: str, **overrides) -> GPT:
    """A GPT from a local HF GPT-2 directory (config.json + model.safetensors)."""
    cfg_path, weights = os.path.join(hf_dir, CONFIG_FILE), os.path.join(hf_dir, WEIGHTS_FILE)
    for path in (cfg_path, weights):
        if not os.path.exists(path):
            raise FileNotFoundError(f"{hf_dir} is not a Hugging Face GPT-2 directory: {os.path.basename(path)} "
                                    f"missing (only safetensors weights are read)")
    with open(cfg_path) as f:
        config = config_from_hf(json.load(f), **overrides)
    return from_hf_state_dict(load_file(weights), config)


def tokenizer_path(hf_dir: str) -> str | None:
    path = os.path.join(hf_dir, TOKENIZER_FILE)
    return path if os.path.exists(path) else None
