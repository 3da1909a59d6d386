"""GPT-2's byte-level BPE, trained or imported, via Hugging Face `tokenizers`.

The tokenizer is GPT-2's recipe: GPT-2's pre-tokenisation regex, all 256 byte values in the initial alphabet
(so no text is ever unknown), no prefix space, and `<|endoftext|>` as the one special token, given the last id
(50256 in a 50257-token vocabulary, as in GPT-2). A tokenizer directory holds `tokenizer.json` and
`tokenizer_meta.json` (how it was made and what it was trained on).

Fingerprints: `tokenizer_fingerprint` is the sha256 of the tokenizer's canonical JSON (HF `tokenizers`'
serialisation, parsed and re-dumped with sorted keys and no whitespace), so two files that load as the same
tokenizer get the same fingerprint; `DataFingerprint` is the sha256 of the sorted per-document digests of
(doc_id, text), so it names the training documents whatever order they were read in.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field

import numpy as np
import orjson
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

from webtext import __version__
from webtext.runtime import fs

EOT_TOKEN = "<|endoftext|>"
TOKENIZER_FILE = "tokenizer.json"
META_FILE = "tokenizer_meta.json"
META_FORMAT = "webtext-tokenizer"

GPT2_VOCAB_SIZE = 50257       # 256 bytes + 50,000 merges + <|endoftext|>
MIN_FREQUENCY = 2             # a pair seen once is noise, not a merge worth a token
TRAIN_BATCH_DOCS = 1000       # documents handed to the trainer at a time (bounds the iterator's memory)
SAMPLE_SEED = 0               # seed of the deterministic document sample behind --sample-bytes
# Pre-tokens ("words") whose BPE result the encoder keeps. `tokenizers` keeps 10,000 by default and stops
# adding once full, so on web text every word past the first 10,000 distinct ones is merged again each time
# it occurs. 2^16 words hold most occurrences of web text's words; the ids do not change (a cache), only the
# time (docs/performance.md).
ENCODE_CACHE_WORDS = 1 << 16
_BPE_OPTIONS = ("unk_token", "continuing_subword_prefix", "end_of_word_suffix", "fuse_unk", "byte_fallback",
                "ignore_merges")


def _doc_hash(seed: int, doc_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}:{doc_id}".encode(), digest_size=8).digest(), "little")


def byte_level_tokenizer() -> Tokenizer:
    """An untrained GPT-2-style byte-level BPE pipeline: no normaliser, GPT-2 regex, byte-level decoder."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    return tok


def _register_eot(tok: Tokenizer, eot_token: str = EOT_TOKEN) -> int:
    tok.add_special_tokens([AddedToken(eot_token, special=True, normalized=False)])
    eot = tok.token_to_id(eot_token)
    if eot is None:
        raise ValueError(f"tokenizer has no {eot_token!r} token")
    return eot


def train(texts: Iterable[str], vocab_size: int = GPT2_VOCAB_SIZE, min_frequency: int = MIN_FREQUENCY,
          length: int | None = None, show_progress: bool = False) -> Tokenizer:
    """Train on a stream of texts. Memory grows with the distinct pre-tokens ("words") seen, not the corpus.
    `<|endoftext|>` is added after training so that it takes the last id, as in GPT-2."""
    if vocab_size < 257:
        raise ValueError(f"vocab size {vocab_size} < 257: the 256 bytes and <|endoftext|> need ids")
    tok = byte_level_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - 1, min_frequency=min_frequency, show_progress=show_progress,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    tok.train_from_iterator(_batched(texts), trainer=trainer, length=length)
    _register_eot(tok)
    return tok


def _batched(texts: Iterable[str], n: int = TRAIN_BATCH_DOCS) -> Iterator[list[str]]:
    batch: list[str] = []
    for t in texts:
        batch.append(t)
        if len(batch) >= n:
            yield batch
            batch = []
    if batch:
        yield batch


def from_gpt2_files(vocab_json: str, merges_txt: str) -> Tokenizer:
    """GPT-2's released `vocab.json` + `merges.txt` as the same byte-level pipeline."""
    with fs.open_read(vocab_json) as f:
        vocab = orjson.loads(f.read())
    with fs.open_read(merges_txt) as f:
        lines = f.read().decode("utf-8").splitlines()
    merges = [tuple(line.split(" ")) for line in lines if line and not line.startswith("#version")]
    bad = [m for m in merges if len(m) != 2]
    if bad:
        raise ValueError(f"{merges_txt}: malformed merge line {' '.join(bad[0])!r}")
    tok = byte_level_tokenizer()
    tok.model = models.BPE(vocab=vocab, merges=merges)
    _register_eot(tok)
    return tok


def parse(text: str | bytes, source: str) -> Tokenizer:
    """The tokenizer a tokenizer.json's text (or its UTF-8 bytes) describes, or a one-line ValueError that names
    `source` (the file, or what the user gave for it)."""
    try:
        return Tokenizer.from_str(text if isinstance(text, str) else text.decode("utf-8"))
    except Exception as e:  # noqa: BLE001 - `tokenizers` raises a bare Exception for a file it cannot read
        detail = (str(e).splitlines() or [""])[0][:200]
        raise ValueError(f"{source}: not a readable tokenizer (not a tokenizer.json: {detail})") from None


def load(path: str) -> Tokenizer:
    """A tokenizer from `tokenizer.json`, or from a directory holding one."""
    if not path.endswith(".json"):
        path = fs.join(path, TOKENIZER_FILE)
    with fs.open_read(path) as f:
        return parse(f.read(), path)


def canonical_json(tok: Tokenizer) -> bytes:
    return orjson.dumps(json.loads(tok.to_str()), option=orjson.OPT_SORT_KEYS)


def tokenizer_fingerprint(tok: Tokenizer) -> str:
    """sha256 of the canonical JSON (see the module docstring); the shards' manifest carries it."""
    return hashlib.sha256(canonical_json(tok)).hexdigest()


def eot_id(tok: Tokenizer, eot_token: str = EOT_TOKEN) -> int:
    i = tok.token_to_id(eot_token)
    if i is None:
        raise ValueError(f"tokenizer has no {eot_token!r} token: documents need an end-of-text marker")
    return i


def vocab_size(tok: Tokenizer) -> int:
    """Ids run from 0 to vocab_size - 1 (added tokens included)."""
    return tok.get_vocab_size(with_added_tokens=True)


def for_encoding(tok: Tokenizer) -> Tokenizer:
    """The tokenizer as documents are encoded: a literal "<|endoftext|>" inside a text is ordinary text (as
    tiktoken's encode_ordinary), so only the stage's own end-of-text ids mark document boundaries."""
    tok.encode_special_tokens = True
    tok.no_padding()
    tok.no_truncation()
    _enlarge_cache(tok, ENCODE_CACHE_WORDS)
    return tok


def _enlarge_cache(tok: Tokenizer, words: int) -> None:
    """Give a BPE model a word cache of `words` entries (`tokenizers` exposes the capacity only when a model is
    built, so the model is rebuilt from its own vocabulary, merges and options). Other models, and BPE with
    dropout (which bypasses the cache), are left as they are."""
    spec = json.loads(tok.to_str())["model"]
    if spec.get("type") != "BPE" or spec.get("dropout"):
        return
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in spec["merges"]]
    if any(len(m) != 2 for m in merges):
        return
    options = {k: spec[k] for k in _BPE_OPTIONS if spec.get(k) is not None}
    tok.model = models.BPE(spec["vocab"], merges, cache_capacity=words, **options)


def encode_texts(tok: Tokenizer, texts: list[str], dtype: str) -> list[np.ndarray]:
    """Each text's ids as a numpy array (no end-of-text appended). `tok` must come from `for_encoding`."""
    # encode_batch_fast skips the character offsets nobody here uses; encode_batch is the same ids, slower.
    encodings = tok.encode_batch_fast(texts, add_special_tokens=False)
    np_dtype = np.dtype(dtype)
    return [np.array(e.ids, dtype=np_dtype) for e in encodings]


def decode(tok: Tokenizer, ids) -> str:
    return tok.decode([int(i) for i in ids], skip_special_tokens=False)


@dataclass
class DataFingerprint:
    """Order-independent digest of the (doc_id, text) pairs a tokenizer was trained on."""
    documents: int = 0
    bytes: int = 0
    _digests: list = field(default_factory=list, repr=False)

    def add(self, doc_id: str, text: str) -> None:
        data = text.encode("utf-8", errors="surrogatepass")
        self.documents += 1
        self.bytes += len(data)
        h = hashlib.blake2b(doc_id.encode("utf-8", errors="surrogatepass"), digest_size=16)
        h.update(b"\0")
        h.update(data)
        self._digests.append(h.digest())

    def hexdigest(self) -> str:
        return hashlib.sha256(b"".join(sorted(self._digests))).hexdigest()

    def as_dict(self) -> dict:
        return {"documents": self.documents, "bytes": self.bytes, "fingerprint": self.hexdigest()}


def sample_ids(index: Iterable[tuple[str, int]], sample_bytes: int, seed: int = SAMPLE_SEED) -> set[str]:
    """A deterministic sample of documents totalling at least `sample_bytes` (or all of them): documents in
    the order of a seeded hash of their id, taken until the budget is met. `index` is (doc_id, text bytes)."""
    ordered = sorted((_doc_hash(seed, d), d, n) for d, n in index)
    chosen, total = set(), 0
    for _, d, n in ordered:
        if total >= sample_bytes:
            break
        chosen.add(d)
        total += n
    return chosen


def write(tok: Tokenizer, output_dir: str, meta: dict) -> dict:
    """Save `tokenizer.json` and `tokenizer_meta.json` (atomically) into `output_dir`; returns the metadata."""
    fs.makedirs(output_dir)
    full = {
        "format": META_FORMAT,
        "webtext_version": __version__,
        "file": TOKENIZER_FILE,
        "fingerprint": tokenizer_fingerprint(tok),
        "vocab_size": vocab_size(tok),
        "eot_token": EOT_TOKEN,
        "eot_id": eot_id(tok),
        "dtype": "uint16" if vocab_size(tok) <= 1 << 16 else "uint32",
        **meta,
    }
    fs.write_atomic(fs.join(output_dir, TOKENIZER_FILE), tok.to_str(pretty=True).encode("utf-8"))
    fs.write_json(fs.join(output_dir, META_FILE), full)
    return full


@dataclass(frozen=True)
class TrainConfig:
    vocab_size: int = GPT2_VOCAB_SIZE
    min_frequency: int = MIN_FREQUENCY
    sample_bytes: int = 0          # 0 = every document
    sample_seed: int = SAMPLE_SEED

    def __post_init__(self):
        if self.vocab_size < 257:
            raise ValueError(f"--vocab-size {self.vocab_size} < 257: the 256 bytes and {EOT_TOKEN} need ids")
        if self.min_frequency < 0:
            raise ValueError(f"--min-frequency must be at least 0, not {self.min_frequency}")
        if self.sample_bytes < 0:
            raise ValueError(f"--sample-bytes must be at least 0 (0 = every document), not {self.sample_bytes}")

    def as_dict(self) -> dict:
        return asdict(self)
