"""Small real token shard directories for the model tests.

Text: Python's own documentation topics (`pydoc_data.topics`, shipped with the standard library), tokenized by a
byte-level BPE trained on it with Hugging Face `tokenizers`, written with the shard format module and a manifest
per the contract in docs/formats.md (fingerprint: `bpe.tokenizer_fingerprint`, as `webtext encode` writes).
Built once per test session per parameter set.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import pydoc_data.topics
import shutil
import tempfile

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from webtext.encode import shards
from webtext.tokenizer.bpe import tokenizer_fingerprint

EOT = "<|endoftext|>"
_CACHE: dict[tuple, str] = {}
_ROOT = tempfile.mkdtemp(prefix="webtext-test-shards-")
atexit.register(shutil.rmtree, _ROOT, True)


def documents() -> list[tuple[str, str]]:
    """(doc_id, text) of every stdlib documentation topic, in a fixed order."""
    return sorted(pydoc_data.topics.topics.items())


def train_tokenizer(vocab_size: int) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator((text for _, text in documents()), trainer)
    return tok


def write_shard_dir(out_dir: str, tok: Tokenizer, docs: list[tuple[str, str]], *, train_shards: int = 2,
                    val_every: int = 8) -> str:
    """Encode `docs` (every `val_every`-th document to val) and write shards, tokenizer.json and manifest."""
    os.makedirs(out_dir, exist_ok=True)
    tok_path = os.path.join(out_dir, shards.TOKENIZER_FILE)
    tok.save(tok_path)
    fingerprint = tokenizer_fingerprint(tok)
    vocab, eot = tok.get_vocab_size(), tok.token_to_id(EOT)
    dtype = shards.dtype_for_vocab(vocab)
    encoded = [(doc_id, np.array(tok.encode(text).ids + [eot], dtype=dtype)) for doc_id, text in docs]
    by_split = {"train": [d for i, d in enumerate(encoded) if i % val_every],
                "val": [d for i, d in enumerate(encoded) if i % val_every == 0]}
    manifest_splits = {}
    for split, items in by_split.items():
        count = train_shards if split == "train" else 1
        entries = []
        for index in range(count):
            part = items[index::count]
            data = shards.shard_bytes([d for d, _ in part], [t for _, t in part], dtype)
            name = shards.shard_name(split, index, count)
            with open(os.path.join(out_dir, name), "wb") as f:
                f.write(data)
            entries.append({"path": name, "tokens": int(sum(len(t) for _, t in part)), "documents": len(part),
                            "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
        manifest_splits[split] = {"shards": entries, "tokens": sum(e["tokens"] for e in entries),
                                  "documents": sum(e["documents"] for e in entries)}
    manifest = {
        "format": shards.FORMAT, "format_version": shards.FORMAT_VERSION,
        "tokenizer": {"fingerprint": fingerprint, "vocab_size": vocab, "eot_id": eot, "eot_token": EOT,
                      "file": shards.TOKENIZER_FILE},
        "dtype": dtype, "splits": manifest_splits,
        "totals": {k: sum(s[k] for s in manifest_splits.values()) for k in ("tokens", "documents")},
        "config": {"source": "pydoc_data.topics", "val_every": val_every},
    }
    with open(os.path.join(out_dir, shards.MANIFEST), "w") as f:
        json.dump(manifest, f, indent=2)
    return out_dir


def shard_dir(vocab_size: int = 512, train_shards: int = 2) -> str:
    """A shard directory of all stdlib doc topics with a BPE of `vocab_size` (cached for the session)."""
    key = (vocab_size, train_shards)
    if key not in _CACHE:
        out = os.path.join(_ROOT, f"v{vocab_size}-s{train_shards}")
        _CACHE[key] = write_shard_dir(out, train_tokenizer(vocab_size), documents(), train_shards=train_shards)
    return _CACHE[key]


def unigram_entropy(data_dir: str, split: str = "train") -> float:
    """Entropy (nats per token) of the split's token frequencies: the loss of the best context-free model."""
    with open(os.path.join(data_dir, shards.MANIFEST)) as f:
        manifest = json.load(f)
    counts = np.zeros(manifest["tokenizer"]["vocab_size"], dtype=np.int64)
    for entry in manifest["splits"][split]["shards"]:
        counts += np.bincount(shards.open_shard(os.path.join(data_dir, entry["path"])).tokens,
                              minlength=len(counts))
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def write_job(path: str, model: dict, train: dict) -> str:
    def value(v):
        return json.dumps(v) if not isinstance(v, bool) else str(v).lower()
    lines = ["[model]"] + [f"{k} = {value(v)}" for k, v in model.items()]
    lines += ["", "[train]"] + [f"{k} = {value(v)}" for k, v in train.items()]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


TINY_MODEL = dict(n_layer=2, n_head=2, n_embd=32, block_size=32)
TINY_TRAIN = dict(batch_size=4, grad_accum=1, max_steps=8, learning_rate=3e-3, min_learning_rate=3e-4,
                  warmup_steps=2, decay_steps=8, log_every=1, eval_every=4, eval_batches=2,
                  checkpoint_every=4, device="cpu")
