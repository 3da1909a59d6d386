"""The byte-level BPE tokenizer: GPT-2's recipe, lossless, importable, fingerprinted; the `tokenizer` command."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, models, pre_tokenizers

from tests.support_tokenize import doc_rows, real_texts, small_tokenizer_json, write_documents
from webtext import cli
from webtext.tokenizer import bpe


@pytest.fixture(scope="module")
def tok():
    return bpe.for_encoding(Tokenizer.from_str(small_tokenizer_json()))


def test_trained_vocabulary_is_gpt2_shaped(tok):
    assert bpe.vocab_size(tok) == 600
    assert bpe.eot_id(tok) == 599  # <|endoftext|> last, as 50256 in GPT-2
    vocab = tok.get_vocab()
    # Every one of the 256 bytes is a token of its own: no input is ever unknown.
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    assert len(alphabet) == 256 and all(vocab[c] < 599 for c in alphabet)
    assert bpe.decode(tok, tok.encode(bytes(range(256)).decode("latin-1")).ids) == bytes(range(256)).decode("latin-1")
    assert tok.pre_tokenizer.pre_tokenize_str("Hello world's 12345  x") == [
        ("Hello", (0, 5)), ("Ġworld", (5, 11)), ("'s", (11, 13)), ("Ġ12345", (13, 19)), ("Ġ", (19, 20)),
        ("Ġx", (20, 22))]
    # No prefix space: a text's first word is not encoded as if a space preceded it.
    assert not tok.encode("Hello").tokens[0].startswith("Ġ")


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_decode_encode_is_identity_for_any_unicode(tok, text):
    ids = tok.encode(text, add_special_tokens=False).ids
    assert bpe.decode(tok, ids) == text


@settings(max_examples=50, deadline=None)
@given(st.lists(st.text(max_size=50), max_size=8))
def test_encode_texts_matches_encode(tok, texts):
    arrays = bpe.encode_texts(tok, texts, "uint16")
    assert [a.tolist() for a in arrays] == [tok.encode(t).ids for t in texts]


def test_the_encoders_larger_word_cache_changes_no_id(tok):
    loaded = Tokenizer.from_str(small_tokenizer_json())
    loaded.encode_special_tokens = True
    # The rebuilt model is the same tokenizer: same serialisation, hence the same fingerprint ...
    assert bpe.tokenizer_fingerprint(tok) == bpe.tokenizer_fingerprint(loaded)
    assert json.loads(tok.to_str())["model"] == json.loads(loaded.to_str())["model"]
    # ... and the same ids, on real text (twice: the second pass is served by the cache) and a literal eot.
    texts = list(real_texts()[:40]) + ["x <|endoftext|> y"]
    for _ in range(2):
        assert [a.tolist() for a in bpe.encode_texts(tok, texts, "uint16")] == [
            e.ids for e in loaded.encode_batch(texts, add_special_tokens=False)]


def test_literal_end_of_text_in_a_document_is_ordinary_text(tok):
    text = "before <|endoftext|> after"
    ids = tok.encode(text).ids
    assert bpe.eot_id(tok) not in ids
    assert bpe.decode(tok, ids) == text


def test_real_text_round_trip_and_compression(tok):
    for text in real_texts()[:10]:
        ids = tok.encode(text).ids
        assert bpe.decode(tok, ids) == text
        assert len(ids) < len(text.encode("utf-8"))  # merges learned from the same text do compress it


def test_import_gpt2_vocab_and_merges_gives_the_same_tokenizer(tmp_path, tok):
    tok.model.save(str(tmp_path))  # GPT-2's release layout: vocab.json + merges.txt
    imported = bpe.for_encoding(bpe.from_gpt2_files(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt")))
    text = "\n".join(real_texts()[:5])
    assert imported.encode(text).ids == tok.encode(text).ids
    assert bpe.eot_id(imported) == bpe.eot_id(tok)
    assert bpe.tokenizer_fingerprint(imported) == bpe.tokenizer_fingerprint(tok)


def test_fingerprint_ignores_formatting_but_not_content(tok):
    pretty = Tokenizer.from_str(json.dumps(json.loads(tok.to_str()), indent=3))
    assert bpe.tokenizer_fingerprint(pretty) == bpe.tokenizer_fingerprint(tok)
    changed = Tokenizer.from_str(tok.to_str())
    changed.add_tokens(["zzzextra"])
    assert bpe.tokenizer_fingerprint(changed) != bpe.tokenizer_fingerprint(tok)


def test_sample_is_deterministic_order_free_and_meets_the_budget():
    index = [(f"d{i}", 100 + i) for i in range(200)]
    a = bpe.sample_ids(index, 5000)
    assert a == bpe.sample_ids(list(reversed(index)), 5000)
    assert 5000 <= sum(n for d, n in index if d in a) < 5000 + 300
    assert a != bpe.sample_ids(index, 5000, seed=1)
    assert bpe.sample_ids(index, 10**9) == {d for d, _ in index}


def test_data_fingerprint_is_order_free():
    a, b = bpe.DataFingerprint(), bpe.DataFingerprint()
    for d, t in [("x", "one"), ("y", "two")]:
        a.add(d, t)
    for d, t in [("y", "two"), ("x", "one")]:
        b.add(d, t)
    assert a.as_dict() == b.as_dict()
    b.add("z", "three")
    assert a.hexdigest() != b.hexdigest()


def test_train_command_is_deterministic_and_samples(tmp_path):
    docs = write_documents(tmp_path / "docs", doc_rows(real_texts()[:20] + (None,)))
    outs = []
    for name, extra in (("a", []), ("b", []), ("s", ["--sample-bytes", "20000"])):
        out = tmp_path / name
        assert cli.main(["tokenizer", "train", "--docs", docs, "--output", str(out), "--vocab-size", "400",
                         *extra]) == 0
        outs.append(out)
    a, b, s = outs
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()
    assert (a / "tokenizer_meta.json").read_bytes() == (b / "tokenizer_meta.json").read_bytes()
    meta, sampled = (json.loads((d / "tokenizer_meta.json").read_text()) for d in (a, s))
    assert meta["vocab_size"] == 400 and meta["eot_id"] == 399 and meta["source"] == "trained"
    assert meta["data"]["documents"] == 20 and meta["data"]["skipped"] == {"skipped_missing_text_or_id": 1}
    assert meta["fingerprint"] == bpe.tokenizer_fingerprint(bpe.load(str(a)))
    assert 20000 <= sampled["data"]["bytes"] < meta["data"]["bytes"]
    assert sampled["data"]["fingerprint"] != meta["data"]["fingerprint"]


def test_import_command(tmp_path, tok, capsys):
    src = tmp_path / "src"
    src.mkdir()
    tok.model.save(str(src))
    assert cli.main(["tokenizer", "import", "--vocab", str(src / "vocab.json"), "--merges", str(src / "merges.txt"),
                     "--output", str(tmp_path / "gpt2")]) == 0
    assert cli.main(["tokenizer", "import", "--tokenizer-json", str(tmp_path / "gpt2" / "tokenizer.json"),
                     "--output", str(tmp_path / "again")]) == 0
    first, again = (json.loads((tmp_path / d / "tokenizer_meta.json").read_text()) for d in ("gpt2", "again"))
    assert first["fingerprint"] == again["fingerprint"] == bpe.tokenizer_fingerprint(tok)
    assert again["source"] == "imported"


def test_import_refuses_a_tokenizer_without_end_of_text(tmp_path, capsys):
    (tmp_path / "t.json").write_text(Tokenizer(models.BPE()).to_str())
    assert cli.main(["tokenizer", "import", "--tokenizer-json", str(tmp_path / "t.json"),
                     "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("webtext tokenizer: error: ") and "no '<|endoftext|>' token" in err
    assert not (tmp_path / "out" / "tokenizer.json").exists()


def test_train_refuses_missing_documents(tmp_path, capsys):
    assert cli.main(["tokenizer", "train", "--docs", str(tmp_path), "--output", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("webtext tokenizer: error: ") and "no dataset 'documents'" in err
    assert "run `webtext dedup` first" in err


@pytest.mark.parametrize("argv,message", [
    (["train", "--vocab-size", "256"], "--vocab-size 256 < 257"),
    (["train", "--min-frequency", "-1"], "--min-frequency must be at least 0"),
    (["train", "--sample-bytes", "-5"], "--sample-bytes must be at least 0"),
    (["import", "--vocab", "v.json"], "give --tokenizer-json, or both --vocab and --merges"),
    (["import", "--tokenizer-json", "missing.json"], "missing.json"),
    (["import", "--tokenizer-json", "{not.json"], "not a tokenizer.json"),
])
def test_bad_flags_and_input_are_one_line_errors_with_status_2(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "{not.json").write_text("{not json")
    docs = ["--docs", write_documents(tmp_path / "docs", doc_rows(real_texts()[:2]))] if argv[0] == "train" else []
    assert cli.main(["tokenizer", *argv, *docs, "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("webtext tokenizer: error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()
