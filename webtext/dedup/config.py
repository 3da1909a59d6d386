"""The dedup stage's settings (its flags), checked when they are made."""

from __future__ import annotations

import argparse
import dataclasses
import functools

from webtext.dedup import components, minhash

VERIFY_CHOICES = ("exact", "estimate", "none")
VERIFY = "exact"                   # candidate pairs below the threshold never join a cluster
LSH_PARTITIONS = 256               # buckets are spread over this many groups (the LSH work per task)


@dataclasses.dataclass(frozen=True)
class DedupConfig:
    ngram: int = minhash.NGRAM
    num_perm: int = minhash.NUM_PERM
    seed: int = minhash.SEED
    scheme: str = minhash.SCHEME
    threshold: float = minhash.THRESHOLD
    fn_weight: float = minhash.FN_WEIGHT
    bands: int | None = None        # with rows: the LSH setting as given; else optimised for the threshold
    rows: int | None = None
    verify: str = VERIFY
    cc_rounds: int = components.ROUNDS
    lsh_partitions: int = LSH_PARTITIONS

    def __post_init__(self):
        for flag, value in (("--ngram", self.ngram), ("--num-perm", self.num_perm),
                            ("--lsh-partitions", self.lsh_partitions), ("--cc-rounds", self.cc_rounds)):
            if value < 1:
                raise ValueError(f"{flag} must be positive, got {value}")
        if self.scheme not in minhash.SCHEMES:
            raise ValueError(f"--scheme must be one of {minhash.SCHEMES}, got {self.scheme!r}")
        if self.verify not in VERIFY_CHOICES:
            raise ValueError(f"--verify must be one of {VERIFY_CHOICES}, got {self.verify!r}")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"--threshold must be in (0, 1), got {self.threshold}")
        if not 0.0 <= self.fn_weight <= 1.0:
            raise ValueError(f"--fn-weight must be in [0, 1], got {self.fn_weight}")
        if (self.bands is None) != (self.rows is None):
            raise ValueError("give --bands and --rows together, or neither (then --threshold decides them)")
        if self.bands is not None and (self.bands < 1 or self.rows < 1 or self.bands * self.rows > self.num_perm):
            raise ValueError(f"--bands x --rows must be at most --num-perm ({self.num_perm}), got "
                             f"{self.bands} x {self.rows}")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> DedupConfig:
        return cls(ngram=args.ngram, num_perm=args.num_perm, seed=args.seed, scheme=args.scheme,
                   threshold=args.threshold, fn_weight=args.fn_weight, bands=args.bands, rows=args.rows,
                   verify=args.verify, cc_rounds=args.cc_rounds, lsh_partitions=args.lsh_partitions)

    def lsh(self) -> tuple[int, int]:
        """(bands, rows): as given, or the setting datasketch's optimisation chooses for the threshold."""
        if self.bands is not None:
            return self.bands, self.rows
        return minhash.lsh_params(self.threshold, self.num_perm, self.fn_weight)

    def hasher(self) -> minhash.MinHasher:
        """The MinHasher of these settings, made once (the sketching and the verification both ask)."""
        return _hasher(self.num_perm, self.seed, self.scheme)


@functools.cache  # its permutations made once per setting, not once per caller
def _hasher(num_perm: int, seed: int, scheme: str) -> minhash.MinHasher:
    return minhash.MinHasher(num_perm, seed, scheme)
