import random

import apache_beam as beam
import pyarrow as pa

from webtext.runtime import datasets
from webtext.runtime.beam import ReadDataset, WriteDataset, WriteRuns

SCHEMA = pa.schema([("key", pa.string()), ("value", pa.int64())])


def _write(tmp_path, rows, name, workers):
    from apache_beam.options.pipeline_options import PipelineOptions
    mode = "multi_processing" if workers > 1 else "in_memory"
    opts = PipelineOptions([f"--direct_num_workers={workers}", f"--direct_running_mode={mode}"])
    with beam.Pipeline(options=opts) as p:
        (p | beam.Create(rows) | WriteDataset(str(tmp_path), name, SCHEMA, lambda r: r["key"],
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
        (p | ReadDataset(str(tmp_path), "items")
           | WriteDataset(str(out), "items", SCHEMA, lambda r: r["key"], rows_per_shard=40))
    assert sorted(r["value"] for r in datasets.read_rows(str(out), "items")) == list(range(50))


ROWS_SCHEMA = pa.schema([("doc_id", pa.string()), ("text", pa.string()), ("score", pa.int64())])


def _rows(n):
    rng = random.Random(3)
    return [{"doc_id": f"d{rng.getrandbits(40):010x}é{i}",
             "text": None if i % 7 == 0 else "wörd " * rng.randrange(1, 50),
             "score": None if i % 5 == 0 else i} for i in range(n)]


def test_runs_written_by_tasks_give_the_files_write_dataset_gives(tmp_path):
    """Rows that travel as sorted run files (split by row-group tasks, merged per shard in local
    processes) end in the same bytes as rows written by WriteDataset, nulls and non-ASCII keys included."""
    rows = _rows(230)
    opts = ["--direct_num_workers=1", "--direct_running_mode=in_memory"]
    from apache_beam.options.pipeline_options import PipelineOptions
    with beam.Pipeline(options=PipelineOptions(opts)) as p:
        (p | beam.Create(rows) | WriteDataset(str(tmp_path / "a"), "items", ROWS_SCHEMA,
                                                      lambda r: r["doc_id"], rows_per_shard=60))
    num_shards = datasets.num_shards_for(len(rows), 60)
    table = pa.Table.from_pylist(shuffled_rows := random.Random(5).sample(rows, len(rows)), schema=ROWS_SCHEMA)
    runs = []
    for i, start in enumerate(range(0, len(shuffled_rows), 50)):   # five tasks, each with its own runs
        runs += datasets.split_into_runs(table.slice(start, 50), "doc_id", num_shards, str(tmp_path / "runs"),
                                         f"task{i}")
    assert len(runs) > num_shards
    for processes in (1, 2):
        with beam.Pipeline(options=PipelineOptions(opts)) as p:
            n = p | "N" >> beam.Create([num_shards])
            (p | beam.Create(runs) | WriteRuns(str(tmp_path / f"b{processes}"), "items", ROWS_SCHEMA,
                                                       "doc_id", n, processes))
        a = datasets.shard_paths(str(tmp_path / "a"), "items")
        b = datasets.shard_paths(str(tmp_path / f"b{processes}"), "items")
        assert [p.rsplit("/", 1)[1] for p in a] == [p.rsplit("/", 1)[1] for p in b] and len(a) == num_shards
        assert [open(p, "rb").read() for p in a] == [open(p, "rb").read() for p in b]
        assert not list((tmp_path / "runs").rglob("*.arrow"))  # merged runs are deleted
        runs = [(i, p) for i, p in runs]  # the same run list again: recreate the files for the next round
        for i, start in enumerate(range(0, len(shuffled_rows), 50)):
            datasets.split_into_runs(table.slice(start, 50), "doc_id", num_shards, str(tmp_path / "runs"),
                                     f"task{i}")


def test_row_groups_are_bounded_in_bytes_and_read_back_as_tasks(tmp_path):
    big = [{"doc_id": f"d{i:06d}", "text": "x" * 20_000, "score": i} for i in range(4000)]   # ~80 MB of text
    path = tmp_path / "items-00000-of-00001.parquet"
    path.write_bytes(datasets.table_bytes(big, ROWS_SCHEMA))
    tasks = datasets.row_groups(str(path))
    per_group = datasets.ROW_GROUP_BYTES // (20_000 + len("d000000") + 8)   # text, doc_id, score bytes per row
    assert len(tasks) == -(-4000 // per_group) >= 3
    got = [r for t in tasks for r in datasets.read_row_group(t, ["doc_id"]).to_pylist()]
    assert [r["doc_id"] for r in got] == [r["doc_id"] for r in big]
    small = [{"doc_id": f"d{i}", "text": "short", "score": i} for i in range(5000)]
    path.write_bytes(datasets.table_bytes(small, ROWS_SCHEMA))
    assert len(datasets.row_groups(str(path))) == 1
