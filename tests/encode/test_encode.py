"""The encode stage on the real Beam runner: documents -> Arrow token shards -> the same text back."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from tokenizers import AddedToken, Tokenizer

from tests.support_tokenize import doc_rows, real_texts, small_tokenizer_json, write_documents, write_tokenizer
from webtext import cli
from webtext.encode import pipeline, plan, schema, shards
from webtext.encode.plan import EncodeConfig
from webtext.runtime import datasets
from webtext.tokenizer import bpe

EDGE_TEXTS = ("", "a literal <|endoftext|> inside", "emoji 🙂 and NUL \x00 and CRLF\r\n", " leading space")


def options(workers: int = 1) -> PipelineOptions:
    mode = "multi_processing" if workers > 1 else "in_memory"
    return PipelineOptions([f"--direct_num_workers={workers}", f"--direct_running_mode={mode}"])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    texts = real_texts() + EDGE_TEXTS
    docs = write_documents(root / "docs", doc_rows(texts) + [
        {"doc_id": "no-text", "url": "u", "host": "h", "text": None, "chars": None}])
    tokenizer = write_tokenizer(root / "tokenizer")
    return {"root": root, "docs": docs, "tokenizer": tokenizer,
            "texts": {r["doc_id"]: r["text"] for r in doc_rows(texts)}}


CONFIG = EncodeConfig(val_fraction=0.1, shard_tokens=6000, seed=7, batch_bytes=20_000)


def encode(docs: str, tokenizer: str, out: str, config: EncodeConfig, opts: PipelineOptions) -> pipeline.Encoded:
    """The stage's pipeline as `webtext encode` runs it, without the command around it (no `_stats.json`)."""
    return pipeline.encode(docs, pipeline.read_tokenizer(tokenizer), out, config, opts)


@pytest.fixture(scope="module")
def encoded(corpus):
    out = corpus["root"] / "shards"
    manifest, counters = encode(corpus["docs"], corpus["tokenizer"], str(out), CONFIG, options())
    return out, manifest, counters


def decoded_documents(out: Path) -> dict[str, tuple[str, str, list[int]]]:
    """doc_id -> (split, decoded text, tokens) over every shard in the manifest."""
    manifest = json.loads((out / shards.MANIFEST).read_text())
    tok = bpe.load(str(out / shards.TOKENIZER_FILE))
    found = {}
    for split, info in manifest["splits"].items():
        for entry in info["shards"]:
            shard = shards.open_shard(str(out / entry["path"]))
            for i, doc_id in enumerate(shard.table.column("doc_id").to_pylist()):
                ids = shard.document(i)
                assert ids[-1] == manifest["tokenizer"]["eot_id"]
                assert doc_id not in found
                found[doc_id] = (split, bpe.decode(tok, ids[:-1]), ids.tolist())
    return found


def test_round_trip_documents_to_shards_to_text(corpus, encoded):
    out, manifest, _ = encoded
    found = decoded_documents(out)
    assert {d: t for d, (_, t, _) in found.items()} == corpus["texts"]
    eot = manifest["tokenizer"]["eot_id"]
    assert all(eot not in ids[:-1] for _, _, ids in found.values())  # the literal marker stays text
    # The document without text is in the errors dataset, with its id and reason, not silently lost.
    errors = datasets.read_rows(str(out), "errors")
    assert [(e["source"], e["reason"]) for e in errors] == [("no-text", "missing_text")]
    assert all(e["reason"] in schema.ERROR_REASONS for e in errors)


def test_manifest_contract(corpus, encoded):
    out, manifest, counters = encoded
    tok = bpe.load(corpus["tokenizer"])
    assert manifest["format"] == "webtext-token-shards" and manifest["format_version"] == 1
    assert manifest["tokenizer"] == {"fingerprint": bpe.tokenizer_fingerprint(tok), "vocab_size": 600,
                                     "eot_id": 599, "eot_token": "<|endoftext|>", "file": "tokenizer.json"}
    assert manifest["dtype"] == "uint16"
    assert (out / "tokenizer.json").read_bytes() == (Path(corpus["tokenizer"]) / "tokenizer.json").read_bytes()
    total_tokens = 0
    for split in ("train", "val"):
        info = manifest["splits"][split]
        n = len(info["shards"])
        assert [e["path"] for e in info["shards"]] == [f"{split}-{i:05d}-of-{n:05d}.arrow" for i in range(n)]
        for e in info["shards"]:
            data = (out / e["path"]).read_bytes()
            assert e["bytes"] == len(data) and e["sha256"] == hashlib.sha256(data).hexdigest()
            shard = shards.open_shard(str(out / e["path"]))
            assert (e["tokens"], e["documents"]) == (len(shard.tokens), shard.num_documents) and e["documents"] > 0
            assert isinstance(shard.table.schema.field("tokens").type, pa.ListType)
            assert shard.tokens.dtype == np.uint16
        assert info["tokens"] == sum(e["tokens"] for e in info["shards"])
        total_tokens += info["tokens"]
    assert manifest["totals"]["tokens"] == total_tokens
    assert manifest["totals"]["documents"] == len(corpus["texts"])
    assert manifest["splits"]["train"]["documents"] > manifest["splits"]["val"]["documents"] > 0
    assert len(manifest["splits"]["train"]["shards"]) > 1
    assert counters["documents"] == len(corpus["texts"]) and counters["error_missing_text"] == 1
    assert counters["tokens"] == total_tokens


def test_split_by_id_and_seeded_order(corpus, encoded):
    out, manifest, _ = encoded
    found = decoded_documents(out)
    threshold = plan.val_threshold(CONFIG.val_fraction)
    for doc_id, (split, _, _) in found.items():
        assert (split == "val") == (plan.split_hash(doc_id) < threshold)
    for split in ("train", "val"):
        ids = [d for e in manifest["splits"][split]["shards"]
               for d in shards.open_shard(str(out / e["path"])).table.column("doc_id").to_pylist()]
        keys = [plan.order_key(CONFIG.seed, d) for d in ids]
        assert keys == sorted(keys)  # shards, concatenated in order, are the seeded permutation
        assert ids != sorted(ids)


def test_shards_are_byte_identical_across_runs_and_worker_counts(corpus, encoded):
    out, manifest, _ = encoded
    again = corpus["root"] / "again"
    two = corpus["root"] / "two-workers"
    shuffled = corpus["root"] / "tokens-via-shuffle"
    encode(corpus["docs"], corpus["tokenizer"], str(again), CONFIG, options(1))
    encode(corpus["docs"], corpus["tokenizer"], str(two), CONFIG, options(2))
    encode(corpus["docs"], corpus["tokenizer"], str(shuffled),
               dataclasses.replace(CONFIG, tokens_via="shuffle"), options(1))
    names = sorted(p.name for p in out.glob("*.arrow")) + ["manifest.json", "tokenizer.json"]
    for other in (again, two, shuffled):
        assert sorted(p.name for p in other.glob("*.arrow")) + ["manifest.json", "tokenizer.json"] == names
        for name in names:
            assert (other / name).read_bytes() == (out / name).read_bytes(), name
        assert not (other / schema.RUNS_DIR).exists()


def test_rerun_in_place_replaces_every_stale_shard(corpus, tmp_path):
    out = tmp_path / "out"
    encode(corpus["docs"], corpus["tokenizer"], str(out), CONFIG, options())
    fewer = EncodeConfig(val_fraction=0.1, shard_tokens=10**9, seed=7)
    manifest = encode(corpus["docs"], corpus["tokenizer"], str(out), fewer, options()).manifest
    assert sorted(p.name for p in out.glob("*.arrow")) == ["train-00000-of-00001.arrow", "val-00000-of-00001.arrow"]
    assert manifest["totals"]["documents"] == len(corpus["texts"])


def test_uint32_shards_for_a_vocabulary_above_65536(corpus, tmp_path):
    tok = Tokenizer.from_str(small_tokenizer_json())
    tok.add_tokens([AddedToken(f"\u2603{i:05d}", normalized=False) for i in range(65_000)])
    tok.add_tokens([AddedToken(w, normalized=False) for w in (" the", " und", " de")])  # ids above 65,535
    bpe.write(tok, str(tmp_path / "big"), {"source": "test"})
    out = tmp_path / "shards"
    manifest = encode(corpus["docs"], str(tmp_path / "big"), str(out), CONFIG, options()).manifest
    assert manifest["dtype"] == "uint32" and manifest["tokenizer"]["vocab_size"] == bpe.vocab_size(tok) > 65_536
    shard = shards.open_shard(str(out / manifest["splits"]["train"]["shards"][0]["path"]))
    assert shard.tokens.dtype == np.uint32
    found = decoded_documents(out)
    assert 65_535 < max(max(ids) for _, _, ids in found.values()) < manifest["tokenizer"]["vocab_size"]
    assert {d: t for d, (_, t, _) in found.items()} == corpus["texts"]


def test_encode_command_then_verify(corpus, tmp_path, capsys):
    out = tmp_path / "cli"
    tokenizer = corpus["tokenizer"] + "/tokenizer.json"
    assert cli.main(["encode", "--docs", corpus["docs"], "--tokenizer", tokenizer,
                     "--output", str(out), "--workers", "1", "--shard-tokens", "20000"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    # Default val fraction 0.0005 of ~45 documents admits none by hash: the smallest hash still makes val.
    assert manifest["splits"]["val"]["documents"] == 1
    assert manifest["config"]["val_fraction"] == schema.VAL_FRACTION
    err = capsys.readouterr().err
    assert "train documents" in err and "val documents" in err
    shard_count = len(manifest["splits"]["train"]["shards"]) + 1
    assert (f"{manifest['totals']['tokens']:,} tokens in {shard_count} shards (uint16), 1 documents in errors "
            f"-> {out}") in err
    stats = json.loads((out / "_stats.json").read_text())
    assert stats["stage"] == "encode"
    assert stats["config"] == {**manifest["config"], "docs": corpus["docs"], "tokenizer": tokenizer,
                               "tokens_via": "files"}
    assert stats["counters"]["documents"] == len(corpus["texts"]) and stats["counters"]["error_missing_text"] == 1
    assert stats["counters"]["tokens"] == manifest["totals"]["tokens"]
    assert (stats["totals"], stats["tokenizer"]) == (manifest["totals"], manifest["tokenizer"])
    assert cli.main(["verify", str(out)]) == 0
    assert "OK:" in capsys.readouterr().out
    assert cli.main(["encode", "--docs", corpus["docs"], "--tokenizer", corpus["tokenizer"],
                     "--output", str(out), "--val-fraction", "1.5"]) == 2
    assert capsys.readouterr().err == "webtext encode: error: --val-fraction 1.5 must be in [0, 1)\n"


@pytest.mark.parametrize("problem,message", [
    ("no documents", "no dataset 'documents'"),
    ("no tokenizer", "No such file or directory"),
    ("not a tokenizer", "not a readable tokenizer"),
    ("no end-of-text", "has no '<|endoftext|>' token"),
])
def test_encode_command_refuses_bad_input_before_writing(corpus, tmp_path, capsys, problem, message):
    docs, tokenizer = corpus["docs"], corpus["tokenizer"]
    if problem == "no documents":
        docs = str(tmp_path)
    elif problem == "no tokenizer":
        tokenizer = str(tmp_path)
    elif problem == "not a tokenizer":
        tokenizer = str(tmp_path / "tokenizer.json")
        (tmp_path / "tokenizer.json").write_text('{"model": 1}')
    else:
        tok = json.loads(small_tokenizer_json())
        tok["added_tokens"] = [t for t in tok["added_tokens"] if t["content"] != "<|endoftext|>"]
        tokenizer = str(tmp_path / "tokenizer.json")
        (tmp_path / "tokenizer.json").write_text(json.dumps(tok))
    out = tmp_path / "out"
    assert cli.main(["encode", "--docs", docs, "--tokenizer", tokenizer, "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("webtext encode: error: ") and message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_encode_command_refuses_an_unreadable_documents_file(corpus, tmp_path, capsys, monkeypatch):
    from webtext.runtime import fs

    open_read = fs.open_read

    def refuse_parquet(path):
        if path.endswith(".parquet"):
            raise PermissionError(13, "Permission denied", path)
        return open_read(path)

    monkeypatch.setattr(fs, "open_read", refuse_parquet)  # the documents' footers cannot be read
    out = tmp_path / "out"
    assert cli.main(["encode", "--docs", corpus["docs"], "--tokenizer", corpus["tokenizer"],
                     "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("webtext encode: error: ") and "Permission denied" in err and ".parquet" in err
    assert len(err.splitlines()) == 1 and not out.exists()


def test_encode_without_documents_is_an_error_not_an_empty_corpus(corpus, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(FileNotFoundError, match="no dataset 'documents'"):
        encode(str(tmp_path), corpus["tokenizer"], str(out), CONFIG, options())
    assert not (out / shards.MANIFEST).exists()


def test_encode_command_records_the_documents_stats_even_when_writing_beside_them(corpus, tmp_path):
    # `--docs` and `--output` may be one directory: the run begins by removing its `_stats.json`, which
    # manifest.json records as the upstream; the command reads it first.
    import shutil

    docs = tmp_path / "docs"
    shutil.copytree(corpus["docs"], docs)
    upstream = {"stage": "dedup", "counters": {"documents": len(corpus["texts"]) + 1}}
    (docs / "_stats.json").write_text(json.dumps(upstream))
    assert cli.main(["encode", "--docs", str(docs), "--tokenizer", corpus["tokenizer"], "--output", str(docs),
                     "--workers", "1"]) == 0
    manifest = json.loads((docs / "manifest.json").read_text())
    assert manifest["upstream"] == upstream
    assert json.loads((docs / "_stats.json").read_text())["stage"] == "encode"


def test_val_rows_guarantee_a_val_document_only_when_asked():
    ids = [f"d{i}" for i in range(50)]
    hashes = np.array([plan.split_hash(d) for d in ids], dtype=np.uint64)
    doc_ids = pa.array(ids)
    first = min((plan.split_hash(d), d) for d in ids)
    tiny = plan.val_threshold(1e-9)
    val = plan.val_rows(hashes, doc_ids, tiny, first, len(ids))
    assert val.sum() == 1 and ids[int(np.flatnonzero(val)[0])] == first[1]
    assert plan.val_rows(hashes, doc_ids, 0, first, len(ids)).sum() == 0
    lone = plan.val_rows(hashes[:1], doc_ids[:1], tiny, (int(hashes[0]), ids[0]), 1)
    assert lone.sum() == 0  # a lone document trains
    # A hash collision with another id does not pull that document into val.
    collided = plan.val_rows(np.array([first[0], first[0]], np.uint64), pa.array([first[1], "other"]), tiny,
                               first, 50)
    assert collided.tolist() == [True, False]
    half = plan.val_threshold(0.5)
    assert plan.val_rows(hashes, doc_ids, half, first, len(ids)).tolist() == [
        int(h) < half or d == first[1] for h, d in zip(hashes, ids)]


def test_shard_order_sorts_by_key_then_id_then_content():
    orders = np.array([5, 3, 5, 3, 9, 5], dtype=np.uint64)
    ids = pa.array(["b", "x", "a", "x", "c", "a"])
    digests = np.array([1, 7, 9, 2, 0, 4], dtype=np.uint64)
    perm = plan.shard_order(orders, ids, digests)
    expected = sorted(range(6), key=lambda k: (int(orders[k]), ids[k].as_py(), int(digests[k])))
    assert perm.tolist() == expected == [3, 1, 5, 2, 0, 4]


def test_text_batches_cover_every_row_once_in_order():
    texts = ["a" * n for n in (0, 5, 30, 1, 1, 1, 100, 2, 7, 7)]
    table = pa.table({"doc_id": [str(i) for i in range(len(texts))], "text": texts})
    for pieces in ([table], [table.slice(0, 3), table.slice(3, 0), table.slice(3, 4), table.slice(7)]):
        for batch_bytes in (1, 7, 40, 10**6):
            batches = list(plan.text_batches(pieces, batch_bytes))
            assert all(b.num_rows >= 1 for b in batches)
            assert [d for b in batches for d in b.column("doc_id").to_pylist()] == table.column("doc_id").to_pylist()
            # A batch closes as soon as it holds batch_bytes (texts + 1 per document), never before.
            for b in batches[:-1]:
                sizes = [len(t) + 1 for t in b.column("text").to_pylist()]
                assert sum(sizes) >= batch_bytes > sum(sizes[:-1])
    assert list(plan.text_batches([table.slice(0, 0)], 10)) == []


@pytest.mark.parametrize("sizes,shard_tokens", [
    ([0] * 10, 5), ([100] * 64, 1000), ([1, 5000, 1, 1, 1, 3000, 0, 7], 1000), ([3] * 1000, 1 << 40)])
def test_shard_plan_cuts_consecutive_ranges_of_about_the_target(sizes, shard_tokens):
    hist = np.zeros(schema.ORDER_BUCKETS, dtype=np.int64)
    hist[np.linspace(0, schema.ORDER_BUCKETS - 1, len(sizes)).astype(int)] = sizes
    shard_of, n = plan.shard_plan(hist, shard_tokens)
    assert np.all(np.diff(shard_of) >= 0) and shard_of[0] == 0 and shard_of.max() == n - 1
    per_shard = np.bincount(shard_of, weights=hist, minlength=n)
    assert per_shard.sum() == hist.sum()
    if hist.sum():
        assert np.all(per_shard > 0)  # no empty shard
        assert n <= max(1, -(-hist.sum() // shard_tokens))
    else:
        assert n == 1


def test_empty_corpus_gives_one_empty_shard_per_split(corpus, tmp_path):
    from webtext.encode import verify

    docs = write_documents(tmp_path / "docs", [])
    manifest = encode(docs, corpus["tokenizer"], str(tmp_path / "out"), CONFIG, options()).manifest
    assert manifest["totals"] == {"tokens": 0, "documents": 0, "bytes": manifest["totals"]["bytes"]}
    assert [e["path"] for s in ("train", "val") for e in manifest["splits"][s]["shards"]] == [
        "train-00000-of-00001.arrow", "val-00000-of-00001.arrow"]
    assert verify.verify(str(tmp_path / "out")).ok


def test_split_errors_explains_each_unencodable_row_and_keeps_the_rest():
    from webtext.runtime.stats import dict_counter

    table = pa.table({"doc_id": ["a", None, "", "d", "e"], "text": ["x", "lost id", "empty id", None, ""]})
    totals, count = dict_counter()
    good, errors = plan.split_errors(table, count)
    assert good.column("doc_id").to_pylist() == ["a", "e"] and good.column("text").to_pylist() == ["x", ""]
    assert sorted((e["source"], e["reason"]) for e in errors) == [
        ("d", "missing_text"), ("documents", "missing_doc_id"), ("documents", "missing_doc_id")]
    assert sorted(e["raw"] for e in errors if e["reason"] == "missing_doc_id") == ["empty id", "lost id"]
    assert totals == {"error_missing_doc_id": 2, "error_missing_text": 1}
    clean = table.slice(0, 1)
    assert plan.split_errors(clean, count)[0] is clean


def test_run_reader_reads_spans_by_byte_offset_and_refuses_a_short_read(tmp_path):
    tokens = [np.array([5, 6, 7, 9], np.uint16), np.array([1, 9], np.uint16)]
    data = shards.shard_bytes(["a", "b"], tokens, "uint16")
    path = tmp_path / "run.arrow"
    path.write_bytes(data)
    values_at = data.index(np.array([5, 6, 7, 9, 1, 9], np.uint16).tobytes())
    reader = pipeline.RunReader()
    try:
        out = np.empty(2, np.uint16)
        reader.read_into(str(path), values_at + 4 * 2, out)
        assert out.tolist() == [1, 9]
        with pytest.raises(OSError, match="short read"):
            reader.read_into(str(path), len(data) - 2, np.empty(2, np.uint16))
    finally:
        reader.close()
    assert reader.open == {}


def test_a_process_keeps_one_encoding_tokenizer_while_the_file_is_the_same(tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_text(small_tokenizer_json())
    first = pipeline.encoding_tokenizer(str(path))
    assert pipeline.encoding_tokenizer(str(path)) is first and first.encode_special_tokens
    assert pipeline.encoding_tokenizer(str(tmp_path)) is first  # its directory names the same file
    # Every run reads the copy in its own output directory: the same content elsewhere is the same tokenizer.
    (tmp_path / "run2").mkdir()
    (tmp_path / "run2" / "tokenizer.json").write_text(small_tokenizer_json())
    assert pipeline.encoding_tokenizer(str(tmp_path / "run2")) is first
    changed = Tokenizer.from_str(small_tokenizer_json())
    changed.add_tokens(["zzzextra"])
    path.write_text(changed.to_str())
    other = pipeline.encoding_tokenizer(str(path))
    assert other is not first and bpe.vocab_size(other) == bpe.vocab_size(first) + 1
