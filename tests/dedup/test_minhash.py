import numpy as np
import pytest
from conftest import shared_path
from datasketch import MinHash, MinHashLSH
from support_dedup import real_texts, shingle_set

from webtext.dedup import minhash


@pytest.fixture(scope="module")
def texts():
    return real_texts(shared_path("web", "trafilatura-eval"), 30, min_words=50)


ODD = ["", "   ", "!!! ...", "one", "Two words", "four words in all", "five words are here now",
       "Ünïcödé 日本語のテキスト and emoji 😀🎉 mixed — dashes… «quotes»", "हिन्दी पाठ में मात्राएँ हैं और विराम। चिह्न"]


def test_normalize_folds_case_whitespace_and_punctuation():
    assert minhash.normalize("  Hello,\tWORLD!!\n\n It's   “quoted” — ok.  ") == "hello world it s quoted ok"
    assert minhash.normalize("Straße ÉTÉ") == "strasse été"
    assert minhash.normalize("wow 😀🎉 yes") == "wow yes"           # astral symbols folded too
    assert minhash.normalize("...") == ""
    # combining marks belong to their words: Hindi words stay whole
    assert minhash.normalize("हिन्दी पाठ।") == "हिन्दी पाठ"
    assert minhash.normalize("a_b") == "a b"


def test_fold_table_is_folds_of_every_code_point():
    import sys

    table = minhash._FoldTable()
    some = np.array([ord(c) for c in "a, \u3000b\u0301"], np.uint32)
    assert table.lookup(some).tolist() == [minhash._folds(int(cp)) for cp in some]
    filled = table.table[::256] != table.UNKNOWN  # the first code point of each block of 256
    assert filled.sum() == 3  # only the blocks of those characters: U+00xx, U+03xx and U+30xx
    table = table.lookup(np.arange(sys.maxunicode + 1, dtype=np.uint32))  # every block filled
    expected = np.fromiter((minhash._folds(cp) for cp in range(sys.maxunicode + 1)), bool, sys.maxunicode + 1)
    assert table.shape == expected.shape and (table == expected).all()
    assert table[ord(" ")] and table[0x1C] and table[0x200B] and not table[ord("a")] and not table[0x0301]


def test_normalize_equals_its_per_character_definition(texts):
    def reference(text):
        folded = "".join(" " if minhash._folds(ord(c)) else c for c in text.casefold())
        return " ".join(w for w in folded.split(" ") if w)

    for text in texts + ODD + ["\x00a\u200bb\u3000c", "x\ud800y", " \t\n", "a\u0301 \U0001F600b"]:
        assert minhash.normalize(text) == reference(text), text[:60]


def test_shingles_are_word_ngrams_and_short_texts_are_one_shingle(texts):
    for text in texts[:10] + ODD:
        norm = minhash.normalize(text)
        got = [s.decode() for s in minhash.shingles(norm)]
        assert set(got) == shingle_set(text)
        words = norm.split(" ") if norm else []
        assert len(got) == (max(1, len(words) - 4) if words else 0)
    assert minhash.shingles("a b c") == [b"a b c"]


def _our_hashfunc(norms):
    """datasketch hashfunc giving our bulk hash of a shingle; asserts the hash is a function of the shingle
    alone (equal shingles, equal hashes, in any document)."""
    table = {}
    for norm in norms:
        for shingle, h in zip(minhash.shingles(norm), minhash.shingle_hashes(norm).tolist()):
            assert table.setdefault(shingle, h) == h, shingle
    return table.__getitem__


def test_shingle_hashes_depend_on_the_shingle_only_and_are_stable(texts):
    norms = [minhash.normalize(t) for t in texts + ODD]
    _our_hashfunc(norms + [n + " tail words" for n in norms] + ["lead " + n for n in norms])
    for norm in norms:
        assert len(minhash.shingle_hashes(norm)) == len(minhash.shingles(norm))
    # pinned values: a change of the hash changes every signature, and must be deliberate
    assert minhash.shingle_hashes("a b c d e f").tolist() == [3369243507, 343440031]
    assert minhash.shingle_hashes("a b c").tolist() == [1469543134]


def test_shingle_hashes_are_well_spread(texts):
    shingles = sorted({s for t in texts for s in minhash.shingles(minhash.normalize(t))})
    # also near-identical shingles: one character apart, and words swapped
    shingles += [b"w%d x y z q" % i for i in range(20000)] + [b"x y z q w%d" % i for i in range(20000)]
    hashes = np.array([minhash.shingle_hashes(s.decode())[0] for s in shingles], np.uint32)
    n = len(hashes)
    assert n > 45000
    # 32-bit birthday bound: about n^2 / 2^33 collisions expected
    assert n - len(np.unique(hashes)) <= 3 * n * n / 2**33 + 5
    bits = (hashes.reshape(-1, 1) >> np.arange(32, dtype=np.uint32)) & 1
    assert np.all(np.abs(bits.mean(axis=0) - 0.5) < 0.02)


@pytest.mark.parametrize("scheme", minhash.SCHEMES)
def test_signatures_identical_to_datasketch_update_batch_with_our_hash(texts, scheme):
    hasher = minhash.MinHasher(scheme=scheme)
    norms = [minhash.normalize(t) for t in texts + ODD]
    hashfunc = _our_hashfunc(norms)
    for norm in norms:
        reference = MinHash(num_perm=128, seed=1, scheme=scheme, hashfunc=hashfunc)
        reference.update_batch(minhash.shingles(norm))
        ours = hasher.signature_of_text(norm)
        assert ours.dtype == reference.hashvalues.dtype
        assert np.array_equal(ours, reference.hashvalues), norm[:60]


def test_signature_of_a_document_longer_than_one_permutation_chunk(texts):
    long_text = " ".join(texts) * 3
    norm = minhash.normalize(long_text)
    assert len(minhash.shingles(norm)) > 2 * minhash.PERMUTE_CHUNK
    reference = MinHash(num_perm=64, seed=7, hashfunc=_our_hashfunc([norm]))
    reference.update_batch(minhash.shingles(norm))
    assert np.array_equal(minhash.MinHasher(64, 7).signature_of_text(norm), reference.hashvalues)


@pytest.mark.parametrize("threshold", [0.5, 0.7, 0.8, 0.9])
@pytest.mark.parametrize("fn_weight", [0.5, 0.9])
def test_lsh_params_are_datasketchs_optimum(threshold, fn_weight):
    lsh = MinHashLSH(threshold=threshold, num_perm=128, weights=(1 - fn_weight, fn_weight))
    assert minhash.lsh_params(threshold, 128, fn_weight) == (lsh.b, lsh.r)


# (threshold, num_perm, fn_weight) -> (bands, rows), as computed with datasketch.lsh._optimal_param (what
# lsh_params called before it asked MinHashLSH) under datasketch 2.0: the LSH settings the stage chose then.
LSH_SETTINGS = {
    (0.5, 128, 0.9): (32, 4), (0.6, 128, 0.9): (25, 5), (0.7, 128, 0.9): (20, 6), (0.75, 128, 0.9): (16, 8),
    (0.8, 128, 0.9): (14, 9), (0.85, 128, 0.9): (11, 11), (0.9, 128, 0.9): (8, 16), (0.95, 128, 0.9): (5, 25),
    (0.5, 128, 0.5): (25, 5), (0.6, 128, 0.5): (18, 7), (0.7, 128, 0.5): (14, 9), (0.75, 128, 0.5): (11, 11),
    (0.8, 128, 0.5): (9, 13), (0.85, 128, 0.5): (8, 16), (0.9, 128, 0.5): (5, 25), (0.95, 128, 0.5): (3, 42),
    (0.5, 64, 0.9): (21, 3), (0.8, 64, 0.9): (9, 7), (0.95, 64, 0.9): (3, 19),
    (0.5, 64, 0.5): (14, 4), (0.8, 64, 0.5): (5, 11), (0.95, 64, 0.5): (2, 32),
    (0.5, 256, 0.9): (42, 4), (0.8, 256, 0.9): (23, 11), (0.95, 256, 0.9): (8, 32),
    (0.5, 256, 0.5): (42, 6), (0.8, 256, 0.5): (17, 15), (0.95, 256, 0.5): (5, 51),
    (0.99, 128, 0.9): (2, 64), (0.5, 2, 0.9): (2, 1),
}


def test_lsh_params_are_the_settings_chosen_before():
    assert minhash.lsh_params() == LSH_SETTINGS[(minhash.THRESHOLD, minhash.NUM_PERM, minhash.FN_WEIGHT)]
    for (threshold, num_perm, fn_weight), setting in LSH_SETTINGS.items():
        assert minhash.lsh_params(threshold, num_perm, fn_weight) == setting, (threshold, num_perm, fn_weight)


def test_lsh_params_given_where_datasketchs_minhashlsh_refuses_them():
    """MinHashLSH refuses an optimum of a single band and fewer than two permutations; the stage gives the
    setting the optimisation finds there, as it did before it asked MinHashLSH."""
    for (threshold, num_perm, fn_weight), setting in {(0.99, 128, 0.1): (1, 128), (0.8, 1, 0.9): (1, 1)}.items():
        with pytest.raises(ValueError):
            MinHashLSH(threshold=threshold, num_perm=num_perm, weights=(1 - fn_weight, fn_weight))
        assert minhash.lsh_params(threshold, num_perm, fn_weight) == setting


def test_s_curve():
    b, r = minhash.lsh_params(0.8, 128, 0.9)
    curve = minhash.s_curve(b, r)
    assert list(curve) == ["0.5", "0.7", "0.8", "0.9"]
    values = list(curve.values())
    assert values == sorted(values) and 0 < values[0] < 0.1 and values[-1] > 0.99
    assert minhash.candidate_probability(0.8, 1, 1) == pytest.approx(0.8)
    assert minhash.candidate_probability(0.5, 2, 1) == pytest.approx(0.75)


def test_band_keys_share_a_bucket_exactly_when_datasketch_lsh_finds_the_pair(texts):
    """Our bucket sharing equals datasketch's MinHashLSH candidate set on real and edited documents."""
    b, r = 8, 4
    docs = list(texts)
    for i, t in enumerate(texts[:15]):  # near copies, so that some pairs do collide
        words = t.split()
        docs.append(" ".join(words[: len(words) * (4 + i % 5) // 10] + ["x"] + words[len(words) // 2:]))
    sigs = [minhash.MinHasher().signature_of_text(minhash.normalize(t)) for t in docs]
    keys = minhash.band_keys(np.stack(sigs), b, r)
    lsh = MinHashLSH(num_perm=128, params=(b, r))
    for i, sig in enumerate(sigs):
        lsh.insert(i, MinHash(num_perm=128, hashvalues=sig, scheme="affine32"))
    pairs = 0
    for i, sig in enumerate(sigs):
        found = set(lsh.query(MinHash(num_perm=128, hashvalues=sig, scheme="affine32"))) - {i}
        ours = {j for j in range(len(sigs)) if j != i and np.any(keys[i] == keys[j])}
        assert ours == found
        pairs += len(found)
    assert pairs > 0


def test_band_keys_differ_between_bands_with_equal_values():
    sig = np.zeros((1, 16), np.uint32)
    keys = minhash.band_keys(sig, 4, 4)[0]
    assert len(set(keys.tolist())) == 4
    with pytest.raises(ValueError):
        minhash.band_keys(sig, 5, 4)


def test_jaccards(texts):
    a, b = minhash.normalize(texts[0]), minhash.normalize(texts[0] + " " + texts[1][:300])
    ha, hb = np.unique(minhash.shingle_hashes(a)), np.unique(minhash.shingle_hashes(b))
    exact = minhash.jaccard(minhash.shingles(a), minhash.shingles(b))
    assert minhash.jaccard_of_hashes(ha, hb) == pytest.approx(exact)
    assert minhash.jaccard_of_hashes(ha, hb, distinct=True) == pytest.approx(exact)
    assert minhash.jaccard_of_hashes(hb, ha, distinct=True) == pytest.approx(exact)
    raw_a, raw_b = minhash.shingle_hashes(a), minhash.shingle_hashes(b)   # repeats, unsorted
    assert minhash.jaccard_of_hashes(raw_a, raw_b) == pytest.approx(exact)
    assert minhash.jaccard_of_hashes(ha[:0], hb, distinct=True) == 0.0
    assert minhash.jaccard_of_hashes(ha[:0], hb[:0], distinct=True) == 1.0
    assert 0.3 < exact < 1
    hashfunc = _our_hashfunc([a, b])
    ma, mb = MinHash(hashfunc=hashfunc), MinHash(hashfunc=hashfunc)
    ma.update_batch(minhash.shingles(a))
    mb.update_batch(minhash.shingles(b))
    hasher = minhash.MinHasher()
    assert minhash.estimated_jaccard(hasher.signature(ha), hasher.signature(hb)) == pytest.approx(ma.jaccard(mb))
    assert minhash.jaccard([], []) == 1.0


@pytest.mark.parametrize("scheme", minhash.SCHEMES)
def test_batched_shingles_and_signatures_equal_one_text_at_a_time(texts, scheme, monkeypatch):
    long_text = " ".join(minhash.normalize(t) for t in texts)           # more shingles than PERMUTE_CHUNK
    norms = [minhash.normalize(t) for t in texts + ODD] + [long_text, "", "a b c d e"]
    norms = norms[::2] + norms[1::2]  # short, empty and long texts among the others
    assert len(minhash.shingle_hashes(long_text)) > minhash.PERMUTE_CHUNK
    hasher = minhash.MinHasher(scheme=scheme)
    for budget in (minhash.BATCH_BYTES, 5_000):  # one batch; many batches
        monkeypatch.setattr(minhash, "BATCH_BYTES", budget)
        monkeypatch.setattr(minhash, "SIGNATURE_BATCH", budget // 4)
        many = minhash.shingle_hashes_many(norms)
        assert len(many) == len(norms)
        for norm, got in zip(norms, many):
            assert got.dtype == np.uint32 and np.array_equal(got, minhash.shingle_hashes(norm)), norm[:40]
        sigs = hasher.signatures(many)
        assert sigs.shape == (len(norms), 128) and sigs.dtype == hasher.dtype
        for row, hashes in zip(sigs, many):
            assert np.array_equal(row, hasher.signature(hashes))
    assert hasher.signatures([]).shape == (0, 128)
