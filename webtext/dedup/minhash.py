"""Near-duplicate detection logic, free of Beam: text normalisation, word n-gram shingles, bulk MinHash
signatures with datasketch's permutations, LSH banding and its S-curve, and Jaccard similarities.

Shingles are hashed in bulk with numpy, not with one SHA-1 call per shingle (datasketch's default hashfunc,
whose Python call per shingle bounded a core's throughput): each word's UTF-8 bytes get a 64-bit polynomial
hash (one vectorised pass over the document's bytes), the `ngram` word hashes of every shingle are combined
polynomially and mixed with the SplitMix64 finalizer, and the top 32 bits are the shingle's hash. The hash is
a pure function of the shingle's bytes (stable across processes, platforms and numpy versions: only wrapping
uint64 arithmetic), never Python's salted `hash()`. From those 32-bit values on, signatures are bit-for-bit
datasketch's: `datasketch.MinHash(num_perm, seed, scheme, hashfunc=<our shingle hash>)
.update_batch(shingles)` gives the same signature (tests/dedup/test_minhash.py checks it), with the
permutations taken from a datasketch MinHash and applied as one (shingles x num_perm) matrix.
"""

from __future__ import annotations

import functools
import hashlib
import sys
import unicodedata
from collections.abc import Iterable

import numpy as np

NGRAM = 5                 # words per shingle (the issue's --ngram)
NUM_PERM = 128            # MinHash permutations
SEED = 1                  # datasketch's default seed: our signatures equal datasketch's own defaults
SCHEME = "affine32"       # datasketch 2.0's default permutation scheme; "legacy" = datasketch < 2.0
SCHEMES = ("affine32", "legacy")
THRESHOLD = 0.8           # Jaccard similarity at which two documents count as near duplicates
FN_WEIGHT = 0.9           # weight of false negatives in datasketch's optimisation (false positives: 1 - it)
S_CURVE_POINTS = (0.5, 0.7, 0.8, 0.9)
PERMUTE_CHUNK = 4096      # shingles per permutation matrix (CHUNK x num_perm values): bounds memory
SIGNATURE_BATCH = 8192    # shingles of several documents permuted together by MinHasher.signatures

_MAX_HASH32 = np.uint32((1 << 32) - 1)
_MERSENNE_PRIME = np.uint64((1 << 61) - 1)   # datasketch's _mersenne_prime (legacy scheme)
_LEGACY_MAX_HASH = np.uint64((1 << 32) - 1)  # datasketch's _max_hash (legacy scheme)


# ---------------------------------------------------------------------------------------------------------
# Normalisation

def _folds(cp: int) -> bool:
    """Whether normalisation folds this code point into a space: punctuation, symbols, separators,
    control and format characters, whitespace."""
    c = chr(cp)
    return _folded_category(unicodedata.category(c)) or c.isspace()


def _folded_category(cat: str) -> bool:
    return cat[0] in "PSZ" or cat in ("Cc", "Cf")


_BLOCK_BITS = 8   # the fold table is filled 256 code points at a time, as texts first use them


class _FoldTable:
    """Whether normalisation folds a code point (`_folds`), one byte per code point. Filled a block of 256
    code points at a time, the first time a text uses one: a process that normalises English pages fills a
    handful of blocks, not all 4,352 (which would cost every dedup run and each of its local processes a
    noticeable start). One numpy lookup per character then replaces a regex; the check for unfilled blocks
    is one pass more over the looked-up bytes."""

    UNKNOWN = 2   # a code point of a block not filled yet; otherwise 1 (folded) or 0 (kept)

    def __init__(self):
        self.table = np.full(sys.maxunicode + 1, self.UNKNOWN, np.uint8)

    def lookup(self, cps: np.ndarray) -> np.ndarray:
        """`_folds` of each code point of a uint32 array, as bools."""
        fold = self.table[cps]
        if len(fold) and fold.max() == self.UNKNOWN:
            for block in np.unique(cps[fold == self.UNKNOWN] >> _BLOCK_BITS).tolist():
                self._fill(block)
            fold = self.table[cps]
        return fold.view(bool)

    def _fill(self, block: int) -> None:
        start, end = block << _BLOCK_BITS, (block + 1) << _BLOCK_BITS
        self.table[start:end] = [_folds(cp) for cp in range(start, end)]


_FOLD = _FoldTable()


_SPACE = np.uint32(0x20)


def normalize(text: str) -> str:
    """Text as compared for duplicates: case folded, every run of punctuation, symbols and whitespace
    folded into one space, no space at either end. Letters, digits and combining marks stay."""
    # UTF-32 makes the text an array of code points; surrogatepass lets a lone surrogate (category Cs,
    # kept) through both ways.
    cps = np.frombuffer(text.casefold().encode("utf-32-le", "surrogatepass"), np.uint32)
    if not len(cps):
        return ""
    fold = _FOLD.lookup(cps)
    # Keep every kept character and the first of each run of folded ones; drop runs at either end.
    keep = ~fold
    keep[1:] |= ~fold[:-1]
    keep[0] = not fold[0]
    out = np.where(fold, _SPACE, cps)[keep]
    if len(out) and out[-1] == _SPACE:
        out = out[:-1]
    return out.tobytes().decode("utf-32-le", "surrogatepass")


BATCH_BYTES = 1 << 18         # bytes of text per numpy pass of shingle_hashes_many


def _batches(sizes: list[int], budget: int) -> Iterable[tuple[int, int]]:
    """Consecutive ranges [i, j) of items whose sizes add up to about `budget` (at least one item each)."""
    i, total = 0, 0
    for j, size in enumerate(sizes):
        if total and total + size > budget:
            yield i, j
            i, total = j, 0
        total += size
    if i < len(sizes):
        yield i, len(sizes)


def exact_key(normalized: str) -> str:
    """The exact-duplicate key: a 128-bit hash of the normalised text, as hex."""
    return hashlib.blake2b(normalized.encode("utf-8"), digest_size=16).hexdigest()


# ---------------------------------------------------------------------------------------------------------
# Shingles

def _shingle_spans(data: bytes, ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """Byte offsets (starts, ends) of the word n-grams of normalised text encoded as UTF-8. Words are
    separated by exactly one space, and a UTF-8 multi-byte sequence never contains the byte 0x20, so
    splitting the bytes at 0x20 splits the text at its spaces."""
    if not data:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    spaces = np.flatnonzero(np.frombuffer(data, np.uint8) == 0x20)
    starts = np.concatenate(([0], spaces + 1))
    ends = np.concatenate((spaces, [len(data)]))
    if len(starts) < ngram:  # shorter than one shingle: the whole text is the one shingle
        return starts[:1], ends[-1:]
    return starts[: len(starts) - ngram + 1], ends[ngram - 1:]


def shingles(normalized: str, ngram: int = NGRAM) -> list[bytes]:
    """The word n-grams of normalised text as UTF-8 bytes, in order (repeats included); a text of fewer
    than `ngram` words is one shingle; an empty text has none."""
    data = normalized.encode("utf-8")
    starts, ends = _shingle_spans(data, ngram)
    return [data[s:e] for s, e in zip(starts.tolist(), ends.tolist())]


_WORD_BASE = np.uint64(0x100000001B3)       # polynomial base over a word's bytes (the FNV-64 prime)
_SHINGLE_BASE = np.uint64(0x9E3779B97F4A7C15)  # polynomial base over a shingle's word hashes (odd, 2^64/phi)
_SPLITMIX = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB))


_WORD_BASE_INVERSE = pow(int(_WORD_BASE), -1, 1 << 64)  # the base is odd, so invertible mod 2^64


@functools.cache
def _powers_upto(size: int, base: int) -> np.ndarray:
    with np.errstate(over="ignore"):
        return np.concatenate(([np.uint64(1)], np.cumprod(np.full(size - 1, np.uint64(base), np.uint64))))


def _powers(n: int, base: int) -> np.ndarray:
    """base^0 .. base^(n-1) mod 2^64 (cached per power of two of n)."""
    return _powers_upto(max(256, 1 << (n - 1).bit_length()), base)[:n]


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The SplitMix64 finalizer: every input bit affects every output bit."""
    x = x + _SPLITMIX[0]
    x = (x ^ (x >> np.uint64(30))) * _SPLITMIX[1]
    x = (x ^ (x >> np.uint64(27))) * _SPLITMIX[2]
    return x ^ (x >> np.uint64(31))


def shingle_hashes(normalized: str, ngram: int = NGRAM) -> np.ndarray:
    """The 32-bit hash of every shingle (see the module docstring), as uint32 in shingle order: equal
    shingles get equal hashes wherever they occur; a text shorter than `ngram` words is one shingle."""
    data = normalized.encode("utf-8")
    if not data:
        return np.zeros(0, np.uint32)
    return _shingles_of_words(_word_hashes(np.frombuffer(data, np.uint8)), ngram)


def _word_hashes(b: np.ndarray) -> np.ndarray:
    """The mixed polynomial hash of every space-separated word of UTF-8 bytes `b` (not empty)."""
    starts = np.concatenate(([0], np.flatnonzero(b == 0x20) + 1))
    ends = np.append(starts[1:] - 1, len(b))
    with np.errstate(over="ignore"):  # the wraparound is the arithmetic (mod 2^64)
        # prefix[i] = sum of byte_k * base^k for k < i, so a word's polynomial is its prefix difference
        # shifted back to offset 0 by the inverse power of its start: one cumsum for all words.
        prefix = np.zeros(len(b) + 1, np.uint64)
        np.cumsum(b * _powers(len(b), _WORD_BASE), out=prefix[1:])
        words = (prefix[ends] - prefix[starts]) * _powers(len(b) + 1, _WORD_BASE_INVERSE)[starts]
        return _splitmix64(words)


def _shingles_of_words(words: np.ndarray, ngram: int) -> np.ndarray:
    """The 32-bit hash of every run of `ngram` consecutive word hashes (of all of them, when fewer)."""
    with np.errstate(over="ignore"):
        n = max(len(words) - ngram + 1, 1)
        acc = words[:n].copy()
        for j in range(1, min(ngram, len(words))):
            acc = acc * _SHINGLE_BASE + words[j:j + n]
        return (_splitmix64(acc) >> np.uint64(32)).astype(np.uint32)


def shingle_hashes_many(normalized: list[str], ngram: int = NGRAM) -> list[np.ndarray]:
    """`shingle_hashes` of each normalised text, equal arrays, computed a batch of texts at a time: the
    texts' words are hashed in one pass (fewer numpy calls than one call per page), and shingles are taken
    only within a text."""
    datas = [n.encode("utf-8") for n in normalized]
    words = [d.count(b" ") + 1 if d else 0 for d in datas]
    out = [np.zeros(0, np.uint32)] * len(datas)
    full = []  # texts of ngram words or more
    for i, n in enumerate(words):
        if n >= ngram:
            full.append(i)
        elif n:
            out[i] = shingle_hashes(normalized[i], ngram)  # shorter than a shingle: one shingle, of it all
    for a, z in _batches([len(datas[i]) for i in full], BATCH_BYTES):
        batch = full[a:z]
        word_hashes = _word_hashes(np.frombuffer(b" ".join(datas[i] for i in batch), np.uint8))
        shingles_all = _shingles_of_words(word_hashes, ngram)  # windows across two texts are never taken
        w = 0
        for i in batch:
            out[i] = shingles_all[w:w + words[i] - ngram + 1]
            w += words[i]
    return out


# ---------------------------------------------------------------------------------------------------------
# MinHash

def _fmix32(hv: np.ndarray) -> np.ndarray:
    """The MurmurHash3 32-bit finalizer, as datasketch applies it before the affine32 permutations."""
    hv = hv ^ (hv >> np.uint32(16))
    hv = hv * np.uint32(0x85EBCA6B)
    hv = hv ^ (hv >> np.uint32(13))
    hv = hv * np.uint32(0xC2B2AE35)
    return hv ^ (hv >> np.uint32(16))


class MinHasher:
    """Signatures of shingle hash arrays, equal to datasketch's MinHash with the same num_perm, seed and
    scheme. Holds only the permutation parameters, so it is cheap to pickle to workers."""

    def __init__(self, num_perm: int = NUM_PERM, seed: int = SEED, scheme: str = SCHEME):
        if scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
        from datasketch import MinHash

        self.num_perm, self.seed, self.scheme = num_perm, seed, scheme
        a, b = MinHash(num_perm=num_perm, seed=seed, scheme=scheme).permutations
        self.dtype = np.uint32 if scheme == "affine32" else np.uint64
        self.a = np.asarray(a, dtype=self.dtype)
        self.b = np.asarray(b, dtype=self.dtype)
        self.empty = np.full(num_perm, _MAX_HASH32 if scheme == "affine32" else _LEGACY_MAX_HASH, self.dtype)

    def signature(self, hashes: np.ndarray) -> np.ndarray:
        """The MinHash signature (num_perm values) of a document's shingle hashes; all-max when empty,
        like a datasketch MinHash that was never updated."""
        sig = self.empty.copy()
        with np.errstate(over="ignore"):  # the wraparound is the arithmetic (mod 2^32 / 2^64)
            for i in range(0, len(hashes), PERMUTE_CHUNK):
                chunk = hashes[i:i + PERMUTE_CHUNK]
                if self.scheme == "affine32":
                    np.minimum(sig, self._affine32(chunk).min(axis=1), out=sig)
                else:
                    hv = chunk.astype(np.uint64).reshape(-1, 1)
                    phv = np.bitwise_and((hv * self.a + self.b) % _MERSENNE_PRIME, _LEGACY_MAX_HASH)
                    np.minimum(sig, phv.min(axis=0), out=sig)
        return sig

    def _affine32(self, hashes: np.ndarray) -> np.ndarray:
        """The affine32 permutations of shingle hashes as a (num_perm, len(hashes)) matrix, built in place and
        reduced along its contiguous axis (faster than datasketch's (n, num_perm) expression), same
        values. Call under np.errstate(over="ignore"): the wraparound is the arithmetic."""
        phv = np.multiply.outer(self.a, _fmix32(hashes.astype(np.uint32)))
        phv += self.b[:, None]
        return phv

    def signatures(self, hashes: list[np.ndarray]) -> np.ndarray:
        """`signature` of each array of shingle hashes, as rows of one (n, num_perm) array, equal values.
        Documents are permuted together in blocks of about SIGNATURE_BATCH shingles (the minimum of each
        document's columns taken with `minimum.reduceat`), so numpy's per-call cost is paid per block, not
        per page. Empty and long documents (and the legacy scheme) go one at a time through `signature`."""
        out = np.empty((len(hashes), self.num_perm), self.dtype)
        together = []
        for i, h in enumerate(hashes):
            if self.scheme == "affine32" and 0 < len(h) <= PERMUTE_CHUNK:
                together.append(i)
            else:
                out[i] = self.signature(h)
        lens = [len(hashes[i]) for i in together]
        with np.errstate(over="ignore"):
            for a, z in _batches(lens, SIGNATURE_BATCH):
                offsets = np.zeros(z - a, np.int64)
                np.cumsum(lens[a:z - 1], out=offsets[1:])
                phv = self._affine32(np.concatenate([hashes[i] for i in together[a:z]]))
                out[together[a:z]] = np.minimum.reduceat(phv, offsets, axis=1).T
        return out

    def signature_of_text(self, normalized: str, ngram: int = NGRAM) -> np.ndarray:
        return self.signature(shingle_hashes(normalized, ngram))


# ---------------------------------------------------------------------------------------------------------
# LSH

@functools.cache  # the stage asks for its setting several times (its check, its pipelines, its stats)
def lsh_params(threshold: float = THRESHOLD, num_perm: int = NUM_PERM,
               fn_weight: float = FN_WEIGHT) -> tuple[int, int]:
    """(bands, rows) that minimise the weighted area of false positives below and false negatives above the
    threshold: datasketch's optimisation (the one MinHashLSH runs), computed here step for step, so that
    the settings MinHashLSH itself refuses (an optimum of a single band, fewer than two permutations) are
    still given. The range of threshold and fn_weight is DedupConfig's to check."""
    from scipy.integrate import quad

    fp_weight = 1.0 - fn_weight
    min_error = float("inf")
    opt = (0, 0)
    for b in range(1, num_perm + 1):
        for r in range(1, int(num_perm / b) + 1):
            fp, _ = quad(lambda s, b=b, r=r: 1 - (1 - s ** float(r)) ** float(b), 0.0, threshold)
            fn, _ = quad(lambda s, b=b, r=r: 1 - (1 - (1 - s ** float(r)) ** float(b)), threshold, 1.0)
            error = fp * fp_weight + fn * fn_weight
            if error < min_error:  # strictly less: the first minimum wins
                min_error = error
                opt = (b, r)
    return opt


def candidate_probability(similarity: float, bands: int, rows: int) -> float:
    """The S-curve: probability that two documents of this Jaccard similarity share at least one bucket."""
    return 1.0 - (1.0 - similarity ** rows) ** bands


def s_curve(bands: int, rows: int, points: Iterable[float] = S_CURVE_POINTS) -> dict[str, float]:
    return {f"{p:g}": round(candidate_probability(p, bands, rows), 4) for p in points}


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """For signatures of shape (n, num_perm): an (n, bands) uint64 array, one 64-bit BLAKE2b hash of each
    band's `rows` values salted with the band's index (band i = values [i*rows, (i+1)*rows), as datasketch's
    MinHashLSH slices them). Two documents share the bucket of band i exactly when their band values are
    equal, up to a 2^-64 chance of a hash collision (which --verify catches). One small hash call per band
    costs less than numpy arithmetic on arrays this small."""
    sigs = np.ascontiguousarray(signatures)
    if sigs.ndim != 2 or sigs.shape[1] < bands * rows:
        raise ValueError(f"signatures of shape {sigs.shape} cannot give {bands} bands x {rows} rows")
    width = rows * sigs.itemsize
    salts = [i.to_bytes(8, "little") for i in range(bands)]
    blake2b = hashlib.blake2b
    out = np.empty((len(sigs), bands), np.uint64)
    for n, sig in enumerate(sigs):
        data = sig.tobytes()
        out[n] = [int.from_bytes(blake2b(data[i * width:(i + 1) * width], digest_size=8, salt=salts[i]).digest(),
                                 "little") for i in range(bands)]
    return out


# ---------------------------------------------------------------------------------------------------------
# Similarities (for --verify and tests)

def jaccard(a: Iterable, b: Iterable) -> float:
    """Exact Jaccard similarity of two sets; 1.0 for two empty sets."""
    a, b = set(a), set(b)
    union = len(a | b)
    return len(a & b) / union if union else 1.0


def jaccard_of_hashes(a: np.ndarray, b: np.ndarray, distinct: bool = False) -> float:
    """Exact Jaccard similarity of the sets of values in two arrays of shingle hashes. `distinct`: both are
    already sorted without repeats (`np.unique`), as verification payloads are."""
    if not distinct:
        a, b = np.unique(a), np.unique(b)
    if not len(a) and not len(b):
        return 1.0
    if len(a) > len(b):
        a, b = b, a
    if not len(a):
        return 0.0
    at = np.searchsorted(b, a)  # binary search of the shorter in the longer: no sort of the union
    inter = int(np.count_nonzero(b[np.minimum(at, len(b) - 1)] == a))
    return inter / (len(a) + len(b) - inter)


def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    """MinHash's estimate: the share of equal signature values (datasketch's MinHash.jaccard)."""
    return float(np.count_nonzero(sig_a == sig_b)) / len(sig_a)
