"""`webtext verify`: every kind of damage gets its own one-line message naming the file, and exit 1."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from tests.support_tokenize import doc_rows, real_texts, write_documents, write_tokenizer
from webtext import cli
from webtext.encode import pipeline, shards
from webtext.encode.plan import EncodeConfig


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    root = tmp_path_factory.mktemp("verify")
    docs = write_documents(root / "docs", doc_rows(real_texts()[:20]))
    tokenizer = write_tokenizer(root / "tokenizer")
    out = root / "shards"
    pipeline.encode(docs, pipeline.read_tokenizer(tokenizer), str(out),
                    EncodeConfig(val_fraction=0.1, shard_tokens=5000),
                    PipelineOptions(["--direct_num_workers=1", "--direct_running_mode=in_memory"]))
    return out


@pytest.fixture
def shard_dir(good, tmp_path):
    d = tmp_path / "shards"
    shutil.copytree(good, d)
    return d


def manifest_of(d):
    return json.loads((d / "manifest.json").read_text())


def save_manifest(d, m):
    (d / "manifest.json").write_text(json.dumps(m))


def first_train(d):
    return manifest_of(d)["splits"]["train"]["shards"][0]["path"]


def replace_shard(d, name, data: bytes):
    """Put new bytes in place of a shard and record their true size and checksum in the manifest, so only the
    content checks can catch what is wrong with them."""
    (d / name).write_bytes(data)
    m = manifest_of(d)
    for e in m["splits"]["train"]["shards"]:
        if e["path"] == name:
            m["totals"]["bytes"] += len(data) - e["bytes"]
            e["bytes"], e["sha256"] = len(data), hashlib.sha256(data).hexdigest()
    save_manifest(d, m)


def run_verify(d, capsys) -> tuple[int, list[str]]:
    rc = cli.main(["verify", str(d)])
    err = capsys.readouterr().err.strip().splitlines()
    return rc, err


def assert_one_problem(d, capsys, fragment: str, where: str):
    rc, lines = run_verify(d, capsys)
    assert rc == 1
    problems = lines[:-1]
    assert lines[-1].startswith("FAILED: 1 problem")
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{where}: ") and fragment in problems[0], problems[0]


def test_good_directory_passes(shard_dir, capsys):
    rc = cli.main(["verify", str(shard_dir)])
    assert rc == 0
    m = manifest_of(shard_dir)
    assert f"{m['totals']['tokens']:,} tokens" in capsys.readouterr().out


def test_truncated_shard(shard_dir, capsys):
    name = first_train(shard_dir)
    data = (shard_dir / name).read_bytes()
    (shard_dir / name).write_bytes(data[: len(data) // 2])
    assert_one_problem(shard_dir, capsys, "truncated", name)


def test_flipped_byte(shard_dir, capsys):
    name = first_train(shard_dir)
    data = bytearray((shard_dir / name).read_bytes())
    data[len(data) // 2] ^= 0x01
    (shard_dir / name).write_bytes(bytes(data))
    assert_one_problem(shard_dir, capsys, "sha256 mismatch", name)


def test_token_id_out_of_range(shard_dir, capsys):
    name = first_train(shard_dir)
    shard = shards.open_shard(str(shard_dir / name))
    tokens = shard.tokens.copy()
    tokens[3] = 600  # the vocabulary is 0..599
    data = shards.shard_buffer(shard.table.column("doc_id").to_pylist(), tokens, shard.offsets, "uint16")
    replace_shard(shard_dir, name, data.to_pybytes())
    assert_one_problem(shard_dir, capsys, "token id 600 out of range (vocab size 600)", name)


def test_manifest_path_outside_the_directory_is_refused(shard_dir, capsys):
    m = manifest_of(shard_dir)
    name = m["splits"]["train"]["shards"][0]["path"]
    shutil.copy(shard_dir / name, shard_dir.parent / name)
    m["splits"]["train"]["shards"][0]["path"] = f"../{name}"
    save_manifest(shard_dir, m)
    rc, lines = run_verify(shard_dir, capsys)
    assert rc == 1
    assert any(line.startswith("manifest.json: refused:") and "points outside" in line for line in lines), lines
    assert any(line.startswith(f"{name}: not listed in the manifest") for line in lines), lines


def test_decreasing_offsets(shard_dir, capsys):
    name = first_train(shard_dir)
    shard = shards.open_shard(str(shard_dir / name))
    offsets = shard.offsets.copy()
    assert len(offsets) >= 3
    offsets[1], offsets[2] = offsets[2], offsets[1]
    # Arrow's builders refuse such offsets; from_buffers builds the array a corrupt writer would have written.
    tokens = pa.Array.from_buffers(pa.list_(pa.uint16()), len(offsets) - 1,
                                   [None, pa.py_buffer(offsets.astype(np.int32).tobytes())],
                                   children=[pa.array(shard.tokens, pa.uint16())])
    table = pa.Table.from_arrays([shard.table.column("doc_id").combine_chunks(), tokens],
                                 schema=shards.schema("uint16"))
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)
    replace_shard(shard_dir, name, sink.getvalue().to_pybytes())
    assert_one_problem(shard_dir, capsys, "document offsets decrease at document 1", name)


def test_document_without_end_of_text(shard_dir, capsys):
    name = first_train(shard_dir)
    shard = shards.open_shard(str(shard_dir / name))
    tokens = shard.tokens.copy()
    tokens[shard.offsets[1] - 1] = 5
    data = shards.shard_buffer(shard.table.column("doc_id").to_pylist(), tokens, shard.offsets, "uint16")
    replace_shard(shard_dir, name, data.to_pybytes())
    assert_one_problem(shard_dir, capsys, "document 0 does not end with the end-of-text id 599", name)


def test_foreign_file_in_place_of_a_shard(shard_dir, capsys):
    name = first_train(shard_dir)
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"x": [1, 2, 3]}), sink)
    replace_shard(shard_dir, name, sink.getvalue().to_pybytes())
    assert_one_problem(shard_dir, capsys, "not a readable Arrow shard", name)


def test_wrong_schema(shard_dir, capsys):
    name = first_train(shard_dir)
    sink = pa.BufferOutputStream()
    table = pa.table({"doc_id": ["a"], "tokens": pa.array([[1, 2]], pa.list_(pa.int64()))})
    with pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)
    replace_shard(shard_dir, name, sink.getvalue().to_pybytes())
    assert_one_problem(shard_dir, capsys, "is not the shard schema for uint16", name)


def test_manifest_totals_that_disagree_with_the_files(shard_dir, capsys):
    m = manifest_of(shard_dir)
    m["totals"]["tokens"] += 1
    save_manifest(shard_dir, m)
    assert_one_problem(shard_dir, capsys, "totals.tokens", "manifest.json")


def test_shard_counts_that_disagree_with_the_manifest(shard_dir, capsys):
    m = manifest_of(shard_dir)
    e = m["splits"]["train"]["shards"][0]
    e["tokens"] += 1
    m["splits"]["train"]["tokens"] += 1
    m["totals"]["tokens"] += 1
    save_manifest(shard_dir, m)
    assert_one_problem(shard_dir, capsys, "the manifest says", e["path"])


def test_missing_shard_and_missing_manifest(shard_dir, capsys):
    name = first_train(shard_dir)
    (shard_dir / name).unlink()
    assert_one_problem(shard_dir, capsys, "missing", name)
    (shard_dir / "manifest.json").unlink()
    rc, lines = run_verify(shard_dir, capsys)
    assert rc == 1 and "manifest.json: missing" in lines[0]


def test_different_tokenizer_copy(shard_dir, capsys):
    tok = json.loads((shard_dir / "tokenizer.json").read_text())
    tok["model"]["vocab"]["zzz-extra"] = 10_000
    (shard_dir / "tokenizer.json").write_text(json.dumps(tok))
    rc, lines = run_verify(shard_dir, capsys)
    assert rc == 1 and any(line.startswith(f"{shard_dir}/tokenizer.json: fingerprint differs") for line in lines)
