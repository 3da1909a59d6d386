"""The model and training configurations, and the TOML job files that set them (`jobs/train-*.toml`).

A job file has two tables, `[model]` (fields of `GPTConfig`, or `preset = "gpt2"` plus overrides) and `[train]`
(fields of `TrainConfig`). Unknown fields are an error, so a typo never silently trains the wrong thing. The
vocabulary size comes from the shard manifest; a `vocab_size` in the job file is only checked against it.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from typing import Any


@dataclass
class GPTConfig:
    block_size: int = 1024  # context length (positions)
    vocab_size: int = 50257  # real tokens, from the tokenizer; ids >= vocab_size are padding, never produced
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0  # GPT-2 trained with 0.1; 0.0 is better for short single-epoch runs
    bias: bool = True  # biases in Linear and LayerNorm, as GPT-2
    layer_norm_epsilon: float = 1e-5
    init_std: float = 0.02
    # Rounding the embedding rows up to a multiple of 64 makes the largest matmul faster on GPUs; the extra
    # rows get -inf logits, so they never take probability mass, gradient, or a sample.
    pad_vocab_multiple: int = 64

    @property
    def padded_vocab_size(self) -> int:
        m = max(1, self.pad_vocab_multiple)
        return (self.vocab_size + m - 1) // m * m

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd {self.n_embd} is not divisible by n_head {self.n_head}")


# The published sizes (Radford et al. 2019) and small ones for tests and laptops.
PRESETS: dict[str, dict[str, int]] = {
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768),
    "gpt2-medium": dict(n_layer=24, n_head=16, n_embd=1024),
    "gpt2-large": dict(n_layer=36, n_head=20, n_embd=1280),
    "gpt2-xl": dict(n_layer=48, n_head=25, n_embd=1600),
    "gpt2-mini": dict(n_layer=6, n_head=6, n_embd=384, block_size=256),
    "gpt2-tiny": dict(n_layer=2, n_head=2, n_embd=64, block_size=64),
}


@dataclass
class TrainConfig:
    # batch: tokens per optimizer step = batch_size * block_size * grad_accum * world_size
    batch_size: int = 12  # windows per micro-batch per process
    grad_accum: int = 40
    max_steps: int = 600_000
    # AdamW, decoupled weight decay on matrices (embeddings included) only
    learning_rate: float = 6e-4
    min_learning_rate: float = 6e-5
    warmup_steps: int = 2000
    decay_steps: int = 600_000  # cosine from learning_rate down to min_learning_rate by this step
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # max global gradient norm; 0 disables
    # bookkeeping
    seed: int = 1337
    log_every: int = 10
    eval_every: int = 1000
    eval_batches: int = 100  # micro-batches per process per validation
    checkpoint_every: int = 1000
    # machinery
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto (bf16 autocast on GPUs that have it, else fp32) | float32 | bfloat16
    compile: bool = False  # torch.compile the model
    num_workers: int = 0  # DataLoader worker processes per training process
    # CPU threads for torch (0 = torch's default, one per core). On a busy machine, or for a tiny model, 1 is
    # often faster: spinning OpenMP threads that lose their core stall every matmul.
    cpu_threads: int = 0
    # A local Hugging Face GPT-2 directory to start from ("" = random init). Its config.json then fixes the
    # model's shape (and block_size); [model] still sets dropout and pad_vocab_multiple.
    init_from: str = ""
    record_windows: bool = False  # write each rank's window ids to RUN/windows-rankN.jsonl (audits, tests)

    def __post_init__(self) -> None:
        for name in ("batch_size", "grad_accum", "max_steps", "log_every", "eval_every", "eval_batches",
                     "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")


@dataclass
class JobConfig:
    model: GPTConfig = field(default_factory=GPTConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    vocab_size_given: bool = False  # the job file named a vocab_size that the manifest must match


def _build(cls, table: dict[str, Any], where: str):
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ValueError(f"unknown field(s) in [{where}]: {', '.join(unknown)} "
                         f"(known: {', '.join(known)})")
    for name, value in table.items():
        expected = type(known[name].default)
        ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            ok, table[name] = True, float(value)
        if not ok:
            raise ValueError(f"[{where}] {name} must be {expected.__name__}, got {value!r}")
    return cls(**table)


def model_config(preset: str = "", **overrides: Any) -> GPTConfig:
    """A GPTConfig from a preset name and field overrides."""
    fields: dict[str, Any] = {}
    if preset:
        if preset not in PRESETS:
            raise ValueError(f"unknown model preset {preset!r} (choose from {', '.join(PRESETS)})")
        fields.update(PRESETS[preset])
    fields.update(overrides)
    return _build(GPTConfig, fields, "model")


def parse_job(text: str, source: str = "<string>") -> JobConfig:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{source}: not valid TOML: {e}") from None
    unknown = sorted(set(doc) - {"model", "train"})
    if unknown:
        raise ValueError(f"{source}: unknown table(s) {', '.join(unknown)} (expected [model] and [train])")
    model_table = dict(doc.get("model", {}))
    preset = model_table.pop("preset", "")
    try:
        model = model_config(preset, **model_table)
        train = _build(TrainConfig, dict(doc.get("train", {})), "train")
    except (ValueError, TypeError) as e:
        raise ValueError(f"{source}: {e}") from None
    return JobConfig(model=model, train=train, vocab_size_given="vocab_size" in model_table)


def load_job(path: str) -> JobConfig:
    with open(path, "rb") as f:
        return parse_job(f.read().decode("utf-8"), path)
