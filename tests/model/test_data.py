"""Windows over memory-mapped token shards: contents, order, rank/worker splitting, refusal of foreign shards."""

from __future__ import annotations

import numpy as np
import pytest
import support_shards
from hypothesis import given, settings
from hypothesis import strategies as st

from webtext.encode import shards
from webtext.model import data

T = 16


@pytest.fixture(scope="module")
def shard_dir():
    return support_shards.shard_dir(train_shards=3)


@pytest.fixture(scope="module")
def windows(shard_dir):
    manifest = data.read_manifest(shard_dir)
    return data.Windows(data.SplitFiles.from_manifest(shard_dir, manifest, "train"), T)


def stream(windows, batch_size, batches, **kw):
    ds = data.WindowBatches(windows, batch_size, seed=3, **kw)
    out = []
    for i, (x, y, ids) in enumerate(ds):
        out.append((x, y, ids))
        if i + 1 == batches:
            break
    return out


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 5000), st.integers(0, 2**32), st.integers(0, 50))
def test_permutation_is_a_bijection(n, seed, epoch):
    perm = data.Permutation(n, seed, epoch)(np.arange(n))
    assert sorted(perm.tolist()) == list(range(n))


def test_permutation_depends_on_seed_and_epoch():
    n = 1000
    a = data.Permutation(n, 1, 0)(np.arange(n))
    assert not np.array_equal(a, np.arange(n))
    assert not np.array_equal(a, data.Permutation(n, 1, 1)(np.arange(n)))
    assert not np.array_equal(a, data.Permutation(n, 2, 0)(np.arange(n)))
    assert np.array_equal(a, data.Permutation(n, 1, 0)(np.arange(n)))


def test_windows_are_consecutive_tokens_of_each_shard(shard_dir, windows):
    manifest = data.read_manifest(shard_dir)
    flat = [shards.open_shard(f"{shard_dir}/{e['path']}").tokens for e in manifest["splits"]["train"]["shards"]]
    expected = [s[i * T:i * T + T + 1] for s in flat for i in range((len(s) - 1) // T)]
    assert windows.count == len(expected)
    ids = np.array([0, 1, len(expected) // 2, windows.first[1], windows.first[1] - 1, len(expected) - 1])
    got = windows.gather(ids, np.empty((len(ids), T + 1), np.int64))
    for row, i in zip(got, ids):
        assert np.array_equal(row, expected[i])
    x, y, wid = next(iter(data.WindowBatches(windows, 4, seed=3)))
    assert x.dtype == y.dtype == wid.dtype == __import__("torch").int64
    for row_x, row_y, i in zip(x.numpy(), y.numpy(), wid.numpy()):
        assert np.array_equal(row_x, expected[i][:-1]) and np.array_equal(row_y, expected[i][1:])


def test_shard_tokens_are_views_of_the_memory_map(windows):
    for shard in windows.shards:
        assert not shard.tokens.flags.owndata and not shard.tokens.flags.writeable
    windows.release_pages()  # dropping the mapped pages keeps the data readable
    assert windows.gather(np.array([0]), np.empty((1, T + 1), np.int64))[0, 0] == windows.shards[0].tokens[0]


def test_each_epoch_visits_every_window_once(windows):
    n = windows.count
    batch = 7
    ids = np.concatenate([b[2].numpy() for b in stream(windows, batch, (2 * n) // batch + 1)])
    first, second = ids[:n], ids[n:2 * n]
    assert sorted(first.tolist()) == list(range(n)) and sorted(second.tolist()) == list(range(n))
    assert not np.array_equal(first, second)


def test_ranks_are_disjoint_and_together_are_the_single_process_stream(windows):
    single = np.concatenate([b[2].numpy() for b in stream(windows, 6, 10)])
    per_rank = [np.stack([b[2].numpy() for b in stream(windows, 2, 10, rank=r, world_size=3)]) for r in range(3)]
    # micro-batch b of the single process (6 windows) == micro-batch b of ranks 0, 1, 2 (2 each) together
    together = np.concatenate(per_rank, axis=1).reshape(-1)
    assert np.array_equal(together, single)
    assert len(set(together.tolist())) == len(together)


def test_resuming_from_a_position_continues_the_stream(windows):
    full = np.concatenate([b[2].numpy() for b in stream(windows, 4, 12)])
    later = np.concatenate([b[2].numpy() for b in stream(windows, 4, 7, start=20)])
    assert np.array_equal(later, full[20:48])


def test_dataloader_workers_give_the_same_order(windows):
    ds = data.WindowBatches(windows, 4, seed=3, rank=1, world_size=2)
    expected = [b[2] for b in stream(windows, 4, 9, rank=1, world_size=2)]
    got = []
    for _x, _y, ids in data.loader(ds, num_workers=2):
        got.append(ids)
        if len(got) == 9:
            break
    assert all(a.tolist() == b.tolist() for a, b in zip(got, expected))


def test_evaluation_order_covers_the_split_once_with_a_short_last_batch(windows):
    ranks = [list(data.WindowBatches(windows, 5, shuffle=False, rank=r, world_size=2)) for r in range(2)]
    ids = sorted(i for r in ranks for _, _, b in r for i in b.tolist())
    assert ids == list(range(windows.count))


def test_mismatched_tokenizer_is_refused(shard_dir):
    manifest = data.read_manifest(shard_dir)
    tok = manifest["tokenizer"]
    data.check_tokenizer(manifest, fingerprint=tok["fingerprint"], vocab_size=tok["vocab_size"])
    with pytest.raises(data.TokenizerMismatch, match="encoded with tokenizer .* but the model uses tokenizer"):
        data.check_tokenizer(manifest, fingerprint="0" * 64)
    with pytest.raises(data.TokenizerMismatch,
                       match=f"{tok['vocab_size']} tokens, but the model has a vocabulary of 50257"):
        data.check_tokenizer(manifest, vocab_size=50257)


def test_a_directory_without_manifest_or_with_a_foreign_format_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a token shard directory"):
        data.read_manifest(str(tmp_path))
    (tmp_path / shards.MANIFEST).write_text('{"format": "something-else", "format_version": 1}')
    with pytest.raises(ValueError, match="expected 'webtext-token-shards'"):
        data.read_manifest(str(tmp_path))
