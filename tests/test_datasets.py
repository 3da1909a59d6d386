import random

import apache_beam as beam
import pyarrow as pa

from webtext.pipeline import datasets

SCHEMA = pa.schema([("key", pa.string()), ("value", pa.int64())])


def _write(tmp_path, rows, name, workers):
    from apache_beam.options.pipeline_options import PipelineOptions
    mode = "multi_processing" if workers > 1 else "in_memory"
    opts = PipelineOptions([f"--direct_num_workers={workers}", f"--direct_running_mode={mode}"])
    with beam.Pipeline(options=opts) as p:
        (p | beam.Create(rows) | datasets.WriteDataset(str(tmp_path), name, SCHEMA, lambda r: r["key"],
                                                      rows_per_shard=40))


def test_same_rows_give_identical_files_whatever_order_and_workers(tmp_path):
    rows = [{"key": f"k{i:04d}", "value": i} for i in range(100)]
    shuffled = rows[:]
    random.Random(1).shuffle(shuffled)
    _write(tmp_path / "a", rows, "items", 1)
    _write(tmp_path / "b", shuffled, "items", 2)
    a = datasets.shard_paths(str(tmp_path / "a"), "items")
    b = datasets.shard_paths(str(tmp_path / "b"), "items")
    assert [p.rsplit("/", 1)[1] for p in a] == [f"items-{i:05d}-of-00003.parquet" for i in range(3)]
    assert [open(p, "rb").read() for p in a] == [open(p, "rb").read() for p in b]
    got = datasets.read_rows(str(tmp_path / "a"), "items")
    assert sorted(r["value"] for r in got) == list(range(100))


def test_empty_input_writes_one_empty_shard(tmp_path):
    _write(tmp_path, [], "items", 1)
    assert datasets.read_rows(str(tmp_path), "items") == []


def test_stale_shard_set_is_refused(tmp_path):
    _write(tmp_path, [{"key": "a", "value": 1}], "items", 1)
    (tmp_path / "items-00000-of-00002.parquet").write_bytes(b"stale")
    try:
        datasets.shard_paths(str(tmp_path), "items")
    except ValueError as e:
        assert "mixes shard counts" in str(e)
    else:
        raise AssertionError("mixed shard counts accepted")


def test_read_dataset_reads_every_row_back(tmp_path):
    rows = [{"key": f"k{i}", "value": i} for i in range(50)]
    _write(tmp_path, rows, "items", 1)
    out = tmp_path / "copy"
    with beam.Pipeline() as p:
        (p | datasets.ReadDataset(str(tmp_path), "items")
           | datasets.WriteDataset(str(out), "items", SCHEMA, lambda r: r["key"], rows_per_shard=40))
    assert sorted(r["value"] for r in datasets.read_rows(str(out), "items")) == list(range(50))
