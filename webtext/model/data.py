"""Training windows streamed out of memory-mapped token shards.

A split's token stream is cut, shard by shard, into windows of `block_size + 1` tokens at a stride of
`block_size` (input and next-token target share all but one token; windows span document boundaries, which the
end-of-text id marks, as in GPT-2). Window ids number all windows of all shards of the split in manifest order.

Training reads an endless stream of window ids: global position g is window `perm(seed, g // N)[g % N]`, where
`perm` is a keyed pseudo-random permutation of the N windows, fresh each epoch. The permutation is computed, not
stored (a Feistel network with cycle walking), so memory does not grow with the corpus. Micro-batch b of rank r
holds positions `start + (b·W + r)·B ... + B - 1` (W ranks, B windows each); DataLoader worker k of K makes the
batches b ≡ k (mod K), which the loader hands out in order. So ranks and workers never overlap and leave no gaps,
the order does not depend on the number of workers, and the data position is a single integer, the global
position reached, which the checkpoint keeps.

Token buffers are views into the shards' memory maps; a batch copies only its own B·(T+1) tokens.
"""

from __future__ import annotations

import ctypes
import json
import math
import mmap
import os
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from webtext.encode import shards as shard_format

# Batches located per numpy pass: numpy's per-call overhead, not the arithmetic, is what a 12-window batch would
# otherwise pay for.
CHUNK_BATCHES = 64
# Reading one token of a mapped file maps its whole page-cache folio (up to 2 MB on recent kernels, plus
# fault-around), so under random access the process's resident memory climbs towards the corpus size. Dropping
# the pages of the shards just read every few batches keeps it flat; they stay in the page cache, so nothing is
# read from disk again. Cost: a few syscalls and re-faults, far less than recreating maps per batch.
RELEASE_EVERY_BATCHES = 2
FEISTEL_ROUNDS = 6


class TokenizerMismatch(ValueError):
    """The shards were made with another tokenizer than the model expects."""


def read_manifest(data_dir: str) -> dict:
    path = os.path.join(data_dir, shard_format.MANIFEST)
    try:
        with open(path, "rb") as f:
            manifest = json.loads(f.read())
    except FileNotFoundError:
        raise FileNotFoundError(f"{data_dir} is not a token shard directory: {shard_format.MANIFEST} missing "
                                f"(make one with `webtext encode`)") from None
    if manifest.get("format") != shard_format.FORMAT:
        raise ValueError(f"{path}: format {manifest.get('format')!r}, expected {shard_format.FORMAT!r}")
    if manifest.get("format_version") != shard_format.FORMAT_VERSION:
        raise ValueError(f"{path}: format_version {manifest.get('format_version')!r} is not supported "
                         f"(this webtext reads version {shard_format.FORMAT_VERSION})")
    return manifest


def check_tokenizer(manifest: dict, *, fingerprint: str | None = None, vocab_size: int | None = None,
                    expected_from: str = "the model") -> None:
    """Raise TokenizerMismatch unless the shards' tokenizer matches what `expected_from` was built with."""
    tok = manifest["tokenizer"]
    if fingerprint is not None and tok["fingerprint"] != fingerprint:
        raise TokenizerMismatch(
            f"the shards were encoded with tokenizer {tok['fingerprint'][:16]}…, but {expected_from} uses "
            f"tokenizer {fingerprint[:16]}…: token ids would mean different things. Re-encode the documents "
            f"with the model's tokenizer, or train a new model on these shards.")
    if vocab_size is not None and tok["vocab_size"] != vocab_size:
        raise TokenizerMismatch(
            f"the shards' tokenizer has {tok['vocab_size']} tokens, but {expected_from} has a vocabulary of "
            f"{vocab_size}: they were not made for each other.")


@dataclass(frozen=True)
class SplitFiles:
    """The shard files of one split and how many tokens each holds, from the manifest."""
    paths: tuple[str, ...]
    tokens: tuple[int, ...]

    @classmethod
    def from_manifest(cls, data_dir: str, manifest: dict, split: str) -> SplitFiles:
        if split not in manifest["splits"]:
            raise ValueError(f"{data_dir}: no split {split!r} (have {', '.join(manifest['splits'])})")
        entries = manifest["splits"][split]["shards"]
        return cls(tuple(shard_format.safe_member(data_dir, e["path"]) for e in entries),
                   tuple(int(e["tokens"]) for e in entries))


class Windows:
    """All windows of one split; shards are opened (memory-mapped) on first use in each process."""

    def __init__(self, files: SplitFiles, block_size: int):
        self.files = files
        self.block_size = block_size
        counts = [max(0, (n - 1) // block_size) for n in files.tokens]
        self.first = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)  # window id of each shard's first
        self.count = int(self.first[-1])
        if self.count == 0:
            raise ValueError(f"no window of {block_size + 1} tokens fits in any shard of this split "
                             f"({sum(files.tokens)} tokens in {len(files.paths)} shards)")
        self._shards: list[shard_format.Shard] | None = None

    def __getstate__(self):  # DataLoader workers map the files themselves rather than receive a copy
        return {**self.__dict__, "_shards": None}

    @property
    def shards(self) -> list[shard_format.Shard]:
        if self._shards is None:
            opened = []
            for path, expected in zip(self.files.paths, self.files.tokens):
                shard = shard_format.open_shard(path)
                if len(shard.tokens) != expected:
                    raise ValueError(f"{path} holds {len(shard.tokens)} tokens but the manifest says {expected}"
                                     f" (run `webtext verify`)")
                opened.append(shard)
            self._shards = opened
        return self._shards

    def locate(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(shard index, first token offset) of each window id."""
        which = np.searchsorted(self.first, ids, side="right") - 1
        return which, (ids - self.first[which]) * self.block_size

    def copy_rows(self, which: np.ndarray, starts: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Copy the located windows into `out` (n, block_size + 1), converting dtype on the way."""
        shards, span = self.shards, self.block_size + 1
        for row, (s, start) in enumerate(zip(which.tolist(), starts.tolist())):
            out[row] = shards[s].tokens[start:start + span]
        return out

    def gather(self, ids: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Copy windows `ids` into `out` (len(ids), block_size + 1)."""
        return self.copy_rows(*self.locate(ids), out)

    def release_pages(self, shard_indices=None) -> None:
        """Unmap the resident pages of these shards (default: all opened ones)."""
        if self._shards is not None:
            for i in range(len(self._shards)) if shard_indices is None else shard_indices:
                _madvise_dontneed(self._shards[i].tokens)


_libc = None


def _madvise_dontneed(view: np.ndarray) -> None:
    global _libc
    if not hasattr(mmap, "MADV_DONTNEED") or view.nbytes == 0:
        return
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    page = mmap.PAGESIZE
    start = view.ctypes.data // page * page
    end = (view.ctypes.data + view.nbytes + page - 1) // page * page
    _libc.madvise(start, end - start, mmap.MADV_DONTNEED)  # advice only: failure just leaves pages mapped


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a fast, well-mixing bijection on uint64."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


class Permutation:
    """A keyed pseudo-random permutation of range(n), evaluated pointwise in O(1) memory."""

    def __init__(self, n: int, seed: int, epoch: int):
        self.n = n
        bits = max(2, math.ceil(math.log2(max(n, 2))))
        self.half = (bits + 1) // 2
        self.mask = np.uint64((1 << self.half) - 1)
        self.keys = np.random.SeedSequence([seed, epoch]).generate_state(FEISTEL_ROUNDS, np.uint64)

    def _round_trip(self, x: np.ndarray) -> np.ndarray:
        h = np.uint64(self.half)
        left, right = x >> h, x & self.mask
        with np.errstate(over="ignore"):
            for key in self.keys:
                left, right = right, left ^ (_mix64(right ^ key) & self.mask)
        return (left << h) | right

    def __call__(self, i: np.ndarray) -> np.ndarray:
        # The network permutes [0, 4^half) ⊇ [0, n); walking the cycle until we land inside [0, n) again
        # restricts it to a permutation of [0, n). The domain is < 4n, so a few steps on average.
        x = self._round_trip(np.asarray(i, dtype=np.uint64))
        outside = x >= self.n
        while outside.any():
            x[outside] = self._round_trip(x[outside])
            outside = x >= self.n
        return x.astype(np.int64)


class WindowBatches(IterableDataset):
    """Micro-batches (x, y, window ids) for one rank; x and y are int64 (B, T) views of one (B, T+1) copy.

    `shuffle`: the endless epoch-by-epoch permuted stream from global position `start` (training). Otherwise
    windows in order from `start` to `stop` (evaluation), the last batch possibly short.
    """

    def __init__(self, windows: Windows, batch_size: int, *, seed: int = 0, shuffle: bool = True,
                 start: int = 0, stop: int | None = None, rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world of {world_size}")
        self.windows, self.batch_size, self.seed, self.shuffle = windows, batch_size, seed, shuffle
        self.start, self.rank, self.world_size = start, rank, world_size
        self.stop = stop if stop is not None or shuffle else windows.count

    def positions(self, batches: np.ndarray) -> np.ndarray:
        """Global stream positions (len(batches), B) of this rank's micro-batches; -1 past `stop`."""
        first = self.start + (batches * self.world_size + self.rank) * self.batch_size
        pos = first[:, None] + np.arange(self.batch_size, dtype=np.int64)[None, :]
        return pos if self.stop is None else np.where(pos < self.stop, pos, -1)

    def window_ids(self, positions: np.ndarray) -> np.ndarray:
        if not self.shuffle:
            return positions
        n = self.windows.count
        epochs, offsets = np.divmod(positions, n)
        ids = np.empty_like(positions)
        for epoch in np.unique(epochs).tolist():
            sel = epochs == epoch
            ids[sel] = Permutation(n, self.seed, epoch)(offsets[sel])
        return ids

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        windows, T = self.windows, self.windows.block_size
        b = worker
        while True:
            pos = self.positions(b + workers * np.arange(CHUNK_BATCHES, dtype=np.int64))
            valid = pos >= 0  # a prefix of each row
            ids = np.zeros_like(pos)
            ids[valid] = self.window_ids(pos[valid])
            which, starts = windows.locate(ids)
            for row in range(len(pos)):
                n = int(valid[row].sum())
                if n == 0:
                    return
                buf = windows.copy_rows(which[row, :n], starts[row, :n], np.empty((n, T + 1), dtype=np.int64))
                t = torch.from_numpy(buf)
                yield t[:, :-1], t[:, 1:], torch.from_numpy(ids[row, :n].copy())
                if (row + 1) % RELEASE_EVERY_BATCHES == 0:
                    windows.release_pages(np.unique(which[row + 1 - RELEASE_EVERY_BATCHES:row + 1]).tolist())
            b += workers * CHUNK_BATCHES


def loader(dataset: WindowBatches, num_workers: int = 0, pin_memory: bool = False) -> DataLoader:
    """Batches in order, made by `num_workers` processes (0: in this one)."""
    # Its own generator: the loader's seed draw must not move the global RNG that dropout uses, or a resumed
    # run would diverge from an uninterrupted one.
    return DataLoader(dataset, batch_size=None, num_workers=num_workers, pin_memory=pin_memory,
                      prefetch_factor=4 if num_workers else None, generator=torch.Generator())
