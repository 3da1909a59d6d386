"""`webtext inspect` on token shards, a tokenizer, and earlier stages' datasets."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from tests.support_tokenize import doc_rows, real_texts, write_documents, write_tokenizer
from webtext import cli, inspect
from webtext.encode import pipeline as encode
from webtext.encode.plan import EncodeConfig
from webtext.runtime import stats
from webtext.runtime.beam import WriteDataset
from webtext.runtime.errors import ERRORS_SCHEMA, error_row, error_sort_key


@pytest.fixture(scope="module")
def stage_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("inspect")
    texts = real_texts()[:12]
    rows = doc_rows(texts)
    for i, r in enumerate(rows):
        r["host"] = ["news.example", "blog.example", "news.example"][i % 3]
    docs = write_documents(root / "docs", rows)
    errors = [error_row("extract", f"https://bad.example/{i}", i, reason, "why it failed")
              for i, reason in enumerate(["no_text", "no_text", "too_short"])]
    with beam.Pipeline() as p:
        p | beam.Create(errors) | WriteDataset(docs, "errors", ERRORS_SCHEMA, error_sort_key)
    stats.write_stats(docs, "extract", {"min_words": 5}, {"pages": 15, "documents": 12}, stats.Timer())
    tokenizer = write_tokenizer(root / "tokenizer")
    shards_dir = root / "shards"
    encode.encode(docs, encode.read_tokenizer(tokenizer), str(shards_dir),
                  EncodeConfig(val_fraction=0.2, shard_tokens=4000),
                  PipelineOptions(["--direct_num_workers=1", "--direct_running_mode=in_memory"]))
    return {"docs": docs, "tokenizer": tokenizer, "shards": str(shards_dir), "texts": texts, "rows": rows}


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = cli.main(["inspect", *argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_shards_summary_and_percentiles(stage_dirs, capsys):
    rc, out, _ = run(capsys, stage_dirs["shards"])
    assert rc == 0
    manifest = inspect.fs.read_json(stage_dirs["shards"] + "/manifest.json")
    assert f"{manifest['totals']['tokens']:,}" in out
    assert "uint16" in out and manifest["tokenizer"]["fingerprint"][:16] in out
    assert "tokens per document" in out and "p50" in out
    lengths = inspect.doc_lengths(inspect.load_shards(stage_dirs["shards"])[1])
    assert f"{int(lengths.max()):,}" in out  # p100 is the longest document


def test_doc_decodes_a_document(stage_dirs, capsys):
    _, opened = inspect.load_shards(stage_dirs["shards"])
    doc_id, _ = inspect.split_document(opened, "val", 0)
    text = {r["doc_id"]: r["text"] for r in stage_dirs["rows"]}[doc_id]
    rc, out, _ = run(capsys, stage_dirs["shards"], "--split", "val", "--doc", "0", "--full")
    assert rc == 0
    assert doc_id in out
    assert " ".join(text.split()) in " ".join(out.split())
    rc, _, err = run(capsys, stage_dirs["shards"], "--doc", "100000")
    assert rc == 2 and "split 'train' has" in err


def test_sample_and_plot(stage_dirs, capsys, tmp_path):
    png = tmp_path / "hist.png"
    rc, out, _ = run(capsys, stage_dirs["shards"], "--sample", "2", "--plot", str(png))
    assert rc == 0
    assert out.count("train document") == 2
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_documents_dataset_with_errors_and_stats(stage_dirs, capsys):
    rc, out, _ = run(capsys, stage_dirs["docs"], "--sample", "1")
    assert rc == 0
    assert "documents: 12 rows" in out
    assert "news.example" in out and "blog.example" in out
    # top hosts with their counts: news.example is 8 of 12
    assert any("news.example" in line and "8" in line and "66.7%" in line for line in out.splitlines())
    assert "errors: 3 rows" in out
    assert any("no_text" in line and "66.7%" in line for line in out.splitlines())
    assert "documents row" in out
    assert "pages" in out and "15" in out  # _stats.json counters
    # the extract stage's own funnel, from the registry: its rows with the counts the stats give them
    assert "funnel" in out
    assert any(line.split()[:3] == ["│", "pages", "read"] and line.split()[-2] == "0" for line in out.splitlines())
    assert any(line.split()[:2] == ["│", "documents"] and line.split()[-2] == "12" for line in out.splitlines())


def test_links_like_dataset_numeric_and_list_columns(tmp_path, capsys):
    schema = pa.schema([("url", pa.string()), ("host", pa.string()), ("score", pa.int64()),
                        ("subreddits", pa.list_(pa.string()))])
    rows = [{"url": f"https://h{i % 2}.example/{i}", "host": f"h{i % 2}.example", "score": i,
             "subreddits": ["python", "news"] if i % 2 else ["python"]} for i in range(1, 11)]
    with beam.Pipeline() as p:
        p | beam.Create(rows) | WriteDataset(str(tmp_path), "links", schema, lambda r: r["url"])
    rc, out, _ = run(capsys, str(tmp_path))
    assert rc == 0
    assert "links: 10 rows" in out
    assert any(line.count("python") and "10" in line for line in out.splitlines())
    median = float(np.percentile(np.arange(1, 11), 50))
    assert any(line.strip().startswith("│ score") and f"{median:,.2f}" in line for line in out.splitlines())


def test_tokenizer_directory(stage_dirs, capsys):
    rc, out, _ = run(capsys, stage_dirs["tokenizer"])
    assert rc == 0
    assert "vocab 600" in out and "<|endoftext|> = 599" in out


def test_nothing_to_inspect(tmp_path, capsys):
    rc, _, err = run(capsys, str(tmp_path))
    assert rc == 2 and "no token shards" in err


def test_fetch_log_statuses_and_errors_are_tabulated(tmp_path, capsys):
    schema = pa.schema([("url", pa.string()), ("host", pa.string()), ("status", pa.int32()),
                        ("error", pa.string()), ("fetched_at", pa.string()), ("bytes", pa.int64())])
    rows = [{"url": f"http://h.example/{i}", "host": "h.example", "status": 200 if i < 7 else 404,
             "error": None if i < 7 else "http_status", "fetched_at": f"2026-01-01T00:00:{i:02d}",
             "bytes": 1000 * i} for i in range(10)]
    with beam.Pipeline() as p:
        p | beam.Create(rows) | WriteDataset(str(tmp_path), "log", schema, lambda r: r["url"])
    rc, out, _ = run(capsys, str(tmp_path))
    assert rc == 0
    assert "log.status: top values" in out and "log.error: top values" in out
    assert any("404" in line and "30.0%" in line for line in out.splitlines())
    assert any("http_status" in line and "30.0%" in line for line in out.splitlines())
    assert "log.fetched_at" not in out  # timestamps are not categories
    assert any(line.strip().startswith("│ bytes") for line in out.splitlines())
